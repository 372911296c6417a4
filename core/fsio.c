/* fsio.c — non-blocking opening of input files, atomic replacement of output files, and the
 * cleanup of temporary files that crashed writers left behind. */
#include "fsio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IO_CHUNK ((size_t)1 << 30)   /* Linux moves at most ~2 GiB per read/write call */

const char *kn_file_type_name(mode_t mode)
{
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISLNK(mode)) return "a symbolic link";
    return "not a regular file";
}

kn_status kn_file_open_read(const char *path, const char *who, const char *expected, int *fd, uint64_t *size)
{
    *fd = -1;
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. It
     * has no effect on regular files and is cleared below before any read. */
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) return kn_fail(KN_ERR_IO, "%s: cannot open '%s': %s", who, path, strerror(errno));
    struct stat sb;
    if (fstat(f, &sb) != 0) {
        int err = errno;
        close(f);
        return kn_fail(KN_ERR_IO, "%s: cannot stat '%s': %s", who, path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(f);
        return kn_fail(KN_ERR_IO, "%s: '%s' is %s, expected %s", who, path, kn_file_type_name(sb.st_mode),
                       expected);
    }
    int flags = fcntl(f, F_GETFL);
    if (flags < 0 || fcntl(f, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int err = errno;
        close(f);
        return kn_fail(KN_ERR_IO, "%s: cannot set up reading '%s': %s", who, path, strerror(err));
    }
    *fd = f;
    *size = (uint64_t)sb.st_size;
    return KN_OK;
}

kn_status kn_file_read_at(int fd, const char *path, const char *who, void *buf, size_t n, uint64_t off,
                          uint64_t expected_size)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n < IO_CHUNK ? n : IO_CHUNK, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return kn_fail(KN_ERR_IO, "%s: cannot read '%s': %s", who, path, strerror(errno));
        if (r == 0) {
            struct stat sb;
            long long now = fstat(fd, &sb) == 0 ? (long long)sb.st_size : -1;
            return kn_fail(KN_ERR_IO, "%s: '%s': file shrank from %" PRIu64 " to %lld bytes while reading "
                           "(was it overwritten or truncated during the run?)", who, path, expected_size, now);
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return KN_OK;
}

kn_status kn_file_stamp_of(int fd, const char *path, const char *who, kn_file_stamp *out)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) return kn_fail(KN_ERR_IO, "%s: cannot stat '%s': %s", who, path, strerror(errno));
    *out = (kn_file_stamp){(uint64_t)sb.st_size, (int64_t)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec};
    return KN_OK;
}

kn_status kn_file_check_stamp(int fd, const char *path, const char *who, const kn_file_stamp *s)
{
    kn_file_stamp now;
    kn_status st = kn_file_stamp_of(fd, path, who, &now);
    if (st) return st;
    if (now.size < s->size)
        return kn_fail(KN_ERR_IO, "%s: '%s': file shrank from %" PRIu64 " to %" PRIu64 " bytes while reading "
                       "(was it overwritten or truncated during the run?)", who, path, s->size, now.size);
    if (now.size > s->size)
        return kn_fail(KN_ERR_IO, "%s: '%s': file grew from %" PRIu64 " to %" PRIu64 " bytes while reading "
                       "(was it rewritten during the run?)", who, path, s->size, now.size);
    if (now.mtime_sec != s->mtime_sec || now.mtime_nsec != s->mtime_nsec)
        return kn_fail(KN_ERR_IO, "%s: '%s' was modified while reading (same size, %" PRIu64 " bytes, but a "
                       "new modification time): its tokens may have changed under the run", who, path, s->size);
    return KN_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Atomic replacement                                                                   */

struct kn_file_out {
    int fd;
    const char *path, *tmp;
    uint64_t written;
    kn_status st;        /* sticky: the first failure */
};

kn_status kn_file_out_write(kn_file_out *out, const void *p, size_t n)
{
    if (out->st) return out->st;
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(out->fd, c, n < IO_CHUNK ? n : IO_CHUNK);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            /* write() returning 0 for a non-zero request is a full device in all but name. */
            int err = w < 0 ? errno : ENOSPC;
            return out->st = kn_fail(KN_ERR_IO, "cannot write '%s': writing '%s' failed after %" PRIu64
                                     " bytes: %s (the previous file, if any, is untouched)", out->path,
                                     out->tmp, out->written, strerror(err));
        }
        c += w;
        n -= (size_t)w;
        out->written += (uint64_t)w;
    }
    return KN_OK;
}

/* fsync the directory holding path, so that the rename itself survives a power cut. */
static kn_status sync_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return kn_fail(KN_ERR_NOMEM, "'%s' was written, but out of memory syncing its directory", path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    kn_status st = KN_OK;
    /* Some file systems cannot fsync a directory (EINVAL); the rename is then as durable as
     * that file system makes it, which is not an error of ours. */
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        st = kn_fail(KN_ERR_IO, "'%s' was written, but syncing its directory '%s' failed: %s", path, dir,
                     strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return st;
}

/* After the content is written: fsync, close, rename. Closes out->fd in every case. */
static kn_status commit_temp(kn_file_out *out)
{
    const char *what = NULL;
    int err = 0;
    if (fsync(out->fd) != 0) { what = "syncing"; err = errno; }
    if (close(out->fd) != 0 && !what) { what = "closing"; err = errno; }
    out->fd = -1;
    if (!what && rename(out->tmp, out->path) != 0) { what = "renaming it over the target"; err = errno; }
    if (!what) return KN_OK;
    /* ENOSPC and EIO can surface only now (delayed allocation, network file systems). */
    return kn_fail(KN_ERR_IO, "cannot write '%s': %s '%s' failed: %s (the previous file, if any, is "
                   "untouched)", out->path, what, out->tmp, strerror(err));
}

kn_status kn_file_write_atomic(const char *path, kn_file_writer fill, void *ctx)
{
    if (!path || !*path) return kn_fail(KN_ERR_ARG, "write: empty path");
    if (path[strlen(path) - 1] == '/') return kn_fail(KN_ERR_ARG, "cannot write '%s': it names a directory", path);
    if (!fill) return kn_fail(KN_ERR_ARG, "cannot write '%s': no writer function", path);
    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) return kn_fail(KN_ERR_NOMEM, "cannot write '%s': out of memory", path);
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());

    /* 0666: the kernel applies the umask, exactly as for fopen(path, "w"). O_NOFOLLOW: a
     * symlink planted at the temp name is not written through. */
    kn_file_out out = {.path = path, .tmp = tmp};
    out.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (out.fd < 0) {
        kn_status st = kn_fail(KN_ERR_IO, "cannot write '%s': cannot create '%s' (its temporary file): %s",
                               path, tmp, strerror(errno));
        free(tmp);
        return st;
    }
    kn_status st = fill(&out, ctx);
    if (!st) st = out.st;   /* a writer that ignored a failed write */
    if (st) close(out.fd);
    else st = commit_temp(&out);
    if (st) unlink(tmp);
    else st = sync_dir_of(path);
    free(tmp);
    return st;
}

typedef struct { const void *buf; size_t n; } buffer_ctx;

static kn_status write_buffer(kn_file_out *out, void *ctx)
{
    const buffer_ctx *b = ctx;
    return kn_file_out_write(out, b->buf, b->n);
}

kn_status kn_file_write_atomic_buffer(const char *path, const void *buf, size_t n)
{
    if (n > 0 && !buf) return kn_fail(KN_ERR_ARG, "cannot write '%s': %zu bytes but no buffer", path ? path : "?", n);
    buffer_ctx b = {buf, n};
    return kn_file_write_atomic(path, write_buffer, &b);
}

/* ------------------------------------------------------------------------------------ */
/* Stale temporary files                                                                */

/* The pid of a name "<basename>.tmp.<digits>" (any basename if NULL), or 0 if it is not one. */
static long temp_pid(const char *name, const char *basename)
{
    const char *tail;
    if (basename) {
        size_t bl = strlen(basename);
        if (strncmp(name, basename, bl) != 0 || strncmp(name + bl, ".tmp.", 5) != 0) return 0;
        tail = name + bl + 5;
    } else {
        const char *t = strstr(name, ".tmp.");
        if (!t || t == name) return 0;
        while (strstr(t + 1, ".tmp.")) t = strstr(t + 1, ".tmp.");
        tail = t + 5;
    }
    long pid = 0;
    if (!*tail || strlen(tail) > 9) return 0;
    for (const char *p = tail; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        pid = pid * 10 + (*p - '0');
    }
    return pid;
}

kn_status kn_file_remove_stale_temps(const char *dir, const char *basename, int *removed)
{
    if (removed) *removed = 0;
    if (!dir || !*dir) return kn_fail(KN_ERR_ARG, "remove_stale_temps: empty directory name");
    DIR *d = opendir(dir);
    if (!d) return kn_fail(KN_ERR_IO, "cannot list '%s' for stale temporary files: %s", dir, strerror(errno));
    kn_status st = KN_OK;
    long self = (long)getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid = temp_pid(e->d_name, basename);
        if (pid <= 0 || pid == self) continue;
        /* EPERM means the process exists under another user: alive, keep its file. */
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0) {
            if (removed) (*removed)++;
        } else if (errno != ENOENT && !st) {
            st = kn_fail(KN_ERR_IO, "cannot remove stale temporary file '%s/%s': %s", dir, e->d_name,
                         strerror(errno));
        }
    }
    closedir(d);
    return st;
}
