/* lock.c — run-directory locks with flock(2): released by the kernel when the holder dies. */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static long read_pid(int fd)
{
    char buf[32] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    return n > 0 ? strtol(buf, NULL, 10) : 0;
}

kn_status kn_lock_acquire(const char *path, int *fd_out, long *holder)
{
    if (holder) *holder = 0;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return kn_fail(KN_ERR_IO, "cannot open lock file '%s': %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long pid = e == EWOULDBLOCK ? read_pid(fd) : 0;
        close(fd);
        if (holder) *holder = pid;
        if (e != EWOULDBLOCK) return kn_fail(KN_ERR_IO, "cannot lock '%s': %s", path, strerror(e));
        return kn_fail(KN_ERR_IO, "'%s' is locked by process %ld (another run is using this "
                       "directory)", path, pid);
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return kn_fail(KN_ERR_IO, "cannot write the pid into lock file '%s': %s", path, strerror(e));
    }
    *fd_out = fd;
    return KN_OK;
}

void kn_lock_release(int fd)
{
    if (fd < 0) return;
    if (ftruncate(fd, 0) != 0) { /* the kernel lock goes with close either way */ }
    close(fd);
}

long kn_lock_holder(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    long pid = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK && (pid = read_pid(fd)) <= 0) pid = -1;
    } else {
        flock(fd, LOCK_UN);
    }
    close(fd);
    return pid;
}
