/* fsio.h — how the core opens and replaces files. Inputs are opened without ever blocking
 * (a FIFO or device given as a data file is refused, not waited on); outputs are replaced
 * atomically (a temporary file beside the target, fsync, rename, fsync of the directory), so
 * a crash or a full disk never leaves a half-written file under the real name. */
#ifndef KN_FSIO_H
#define KN_FSIO_H

#include "kn.h"

#include <sys/types.h>

/* Open path read-only, refusing anything but a regular file without blocking on it. who
 * prefixes messages ("data", "ckpt"); expected says what the file should be ("a safetensors
 * file"). On success *fd (O_CLOEXEC, blocking) and *size are set; the caller closes *fd. */
kn_status kn_file_open_read(const char *path, const char *who, const char *expected, int *fd, uint64_t *size);

/* "a regular file", "a directory", "a FIFO (named pipe)", ... for a st_mode. */
const char *kn_file_type_name(mode_t mode);

/* Read exactly n bytes at offset off. A short read means the file shrank: the message says
 * "'path': file shrank from <expected_size> to <now> bytes while reading" (who-prefixed). */
kn_status kn_file_read_at(int fd, const char *path, const char *who, void *buf, size_t n, uint64_t off,
                          uint64_t expected_size);

/* A cheap identity of a file's content: its size and modification time. */
typedef struct {
    uint64_t size;
    int64_t mtime_sec;
    long mtime_nsec;
} kn_file_stamp;

/* The stamp of the open file fd (who and path name it in a failure message). */
kn_status kn_file_stamp_of(int fd, const char *path, const char *who, kn_file_stamp *out);

/* KN_OK if fd's file still has stamp s; otherwise an error naming path and how it changed
 * ("file shrank from N to M bytes while reading", "grew", or "was modified"). */
kn_status kn_file_check_stamp(int fd, const char *path, const char *who, const kn_file_stamp *s);

/* The temporary file being filled by kn_file_write_atomic. */
typedef struct kn_file_out kn_file_out;

/* Append n bytes. After a failure (message names the target and the bytes written so far)
 * every later call returns the same status without writing. */
kn_status kn_file_out_write(kn_file_out *out, const void *p, size_t n);

/* Fills the temporary file; returns KN_OK or a status with its own message. */
typedef kn_status (*kn_file_writer)(kn_file_out *out, void *ctx);

/* Replace path with what fill writes: temp file "<path>.tmp.<pid>" in the same directory,
 * created with the mode fopen would give (0666 minus the umask), then fsync, rename over path,
 * fsync of the directory. On any failure the temp file is removed, path is untouched (old
 * content or absent), and the message names path. One writer per path at a time. */
kn_status kn_file_write_atomic(const char *path, kn_file_writer fill, void *ctx);

/* The same with the whole content in one buffer. */
kn_status kn_file_write_atomic_buffer(const char *path, const void *buf, size_t n);

/* Remove dir/<basename>.tmp.<pid> files whose pid is no live process (left by a crash);
 * basename NULL matches any name. Files of this process and of live ones are kept. Pids
 * are this machine's: do not share a directory with writers on other hosts. *removed (if not
 * NULL) gets the count. */
kn_status kn_file_remove_stale_temps(const char *dir, const char *basename, int *removed);

#endif
