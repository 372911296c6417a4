/* lock.h — an advisory lock on a file (a run directory's "lock"), held by an open file
 * descriptor: the kernel drops it when the holder exits, even on kill -9, so a lock is never
 * stale. The file holds the holder's pid so that a refusal can name it. Locks are per open
 * file: a second acquire in the same process is refused like one from another process. */
#ifndef KN_LOCK_H
#define KN_LOCK_H

#include "kn.h"

/* Create path if needed and lock it exclusively without waiting. On success *fd is the
 * holder's descriptor (keep it open while holding). When another holder has it, the message
 * names path and that holder's pid, and *holder (if not NULL) gets the pid (0 if unknown). */
kn_status kn_lock_acquire(const char *path, int *fd, long *holder);

/* Release a lock taken by kn_lock_acquire (the file stays; its pid is cleared). */
void kn_lock_release(int fd);

/* The pid holding path's lock: 0 when nobody holds it or the file does not exist, -1 when
 * it is held but the pid is not (yet) written. */
long kn_lock_holder(const char *path);

#endif
