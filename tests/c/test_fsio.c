/* test_fsio.c — the atomic writer (content, mode under the umask, every failure leaving the
 * old file and no temp file: writer error, file-size limit, a really full tmpfs when mounting
 * one is permitted, rename and create failures), non-blocking opening of FIFOs and devices,
 * reads of a file that shrank, and the removal of stale temp files by pid. */
#include "check.h"
#include "tmpfiles.h"
#include "fsio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = malloc(1 << 20);
    *n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static int file_is(const char *path, const char *content)
{
    size_t n = 0;
    uint8_t *b = read_file(path, &n);
    int ok = b && n == strlen(content) && memcmp(b, content, n) == 0;
    free(b);
    return ok;
}

/* Entries of d (a directory) whose name contains needle. */
static int count_in(const char *d, const char *needle)
{
    DIR *dp = opendir(d);
    int n = 0;
    for (struct dirent *e; dp && (e = readdir(dp));) n += strstr(e->d_name, needle) != NULL;
    if (dp) closedir(dp);
    return n;
}

static kn_status fail_midway(kn_file_out *out, void *ctx)
{
    kn_file_out_write(out, "partial", 7);
    return kn_fail(KN_ERR_NONFINITE, "the writer gave up: %s", (const char *)ctx);
}

static kn_status write_zeros(kn_file_out *out, void *ctx)
{
    static const char zeros[4096];
    size_t n = *(const size_t *)ctx;
    for (size_t done = 0; done < n; done += sizeof zeros) kn_file_out_write(out, zeros, sizeof zeros);
    return KN_OK;   /* ignores the status on purpose: the writer must still see the failure */
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_write(void)
{
    const char *p = in_dir("out.txt");
    mode_t old_mask = umask(027);
    CHECK_OK(kn_file_write_atomic_buffer(p, "hello\n", 6), "write a new file");
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0640, "mode is 0666 minus umask 027 (got %o)",
          (unsigned)(sb.st_mode & 0777));
    CHECK(umask(old_mask) == 027, "the umask is left as it was");
    CHECK(file_is(p, "hello\n") && count_in(dir, ".tmp.") == 0, "content written, no temp file left");
    CHECK_OK(kn_file_write_atomic_buffer(p, "second", 6), "replace it");
    CHECK(file_is(p, "second"), "  ... new content");
    CHECK_OK(kn_file_write_atomic_buffer(p, NULL, 0), "an empty file is fine");
    CHECK(file_is(p, ""), "  ... and empty");
    CHECK_OK(kn_file_write_atomic_buffer(p, "keep me", 7), "write again");

    kn_status st = kn_file_write_atomic(p, fail_midway, "no more data");
    CHECK(st == KN_ERR_NONFINITE && strstr(kn_errmsg(), "the writer gave up: no more data"),
          "a failing writer's status and message come back: %s", kn_errmsg());
    CHECK(file_is(p, "keep me") && count_in(dir, ".tmp.") == 0, "  ... old file intact, temp file removed");

    /* A file-size limit fails write() with EFBIG, the way a full disk fails it with ENOSPC. */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 10000;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    size_t big = 1 << 16;
    st = kn_file_write_atomic(p, write_zeros, &big);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK(st == KN_ERR_IO && strstr(kn_errmsg(), p) && strstr(kn_errmsg(), "File too large") &&
          strstr(kn_errmsg(), "after 10000 bytes"), "a write past the size limit names file, bytes, reason: %s",
          kn_errmsg());
    CHECK(file_is(p, "keep me") && count_in(dir, ".tmp.") == 0, "  ... old file intact, temp file removed");

    const char *sub = in_dir("sub");
    mkdir(sub, 0755);
    char inner[300];
    snprintf(inner, sizeof inner, "%s/x", sub);
    write_file(inner, "x", 1);
    CHECK_FAILS(kn_file_write_atomic_buffer(sub, "x", 1), "renaming it over the target", "rename over a directory");
    CHECK(count_in(dir, ".tmp.") == 0, "  ... no temp file left");
    unlink(inner);
    rmdir(sub);

    char tmpname[300];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", p, (long)getpid());
    mkdir(tmpname, 0755);
    CHECK_FAILS(kn_file_write_atomic_buffer(p, "x", 1), "cannot create", "temp name taken by a directory");
    rmdir(tmpname);
    CHECK(file_is(p, "keep me"), "  ... old file intact");
    CHECK_FAILS(kn_file_write_atomic_buffer(in_dir("no/such/f"), "x", 1), "No such file or directory",
                "missing directory");
    CHECK_FAILS(kn_file_write_atomic_buffer("", "x", 1), "empty path", "empty path");
    CHECK_FAILS(kn_file_write_atomic_buffer(in_dir("d/"), "x", 1), "names a directory", "trailing slash");
    unlink(p);
}

/* A 64 KiB tmpfs fills for real (ENOSPC). Mounting needs privileges: skipped without them. */
static void test_full_disk(void)
{
    const char *mnt = in_dir("small");
    mkdir(mnt, 0755);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=64k") != 0) {
        NOTE("skipping the full-tmpfs case: cannot mount a tmpfs here (%s)", strerror(errno));
        rmdir(mnt);
        return;
    }
    char p[300];
    snprintf(p, sizeof p, "%s/ckpt.bin", mnt);
    CHECK_OK(kn_file_write_atomic_buffer(p, "old", 3), "write a small file on a 64 KiB tmpfs");
    size_t big = 256 * 1024;
    kn_status st = kn_file_write_atomic(p, write_zeros, &big);
    CHECK(st == KN_ERR_IO && strstr(kn_errmsg(), p) && strstr(kn_errmsg(), "No space left on device"),
          "a full disk names the file and says so: %s", kn_errmsg());
    CHECK(file_is(p, "old") && count_in(mnt, ".tmp.") == 0, "  ... old file intact, temp file removed");
    unlink(p);
    CHECK(umount2(mnt, MNT_DETACH) == 0 && rmdir(mnt) == 0, "tmpfs unmounted");
}

static void test_open(void)
{
    int fd = -1;
    uint64_t size = 0;
    const char *fifo = in_dir("fifo");
    CHECK(mkfifo(fifo, 0600) == 0, "made a FIFO");
    double t0 = now_s();
    CHECK_FAILS(kn_file_open_read(fifo, "data", "a token file", &fd, &size), "is a FIFO (named pipe), expected a token file",
                "a FIFO is refused");
    CHECK(now_s() - t0 < 2.0 && fd == -1, "  ... at once, without waiting for a writer (%.3f s)", now_s() - t0);
    CHECK(strstr(kn_errmsg(), fifo) && strncmp(kn_errmsg(), "data: ", 6) == 0, "  ... naming it: %s", kn_errmsg());
    unlink(fifo);
    CHECK_FAILS(kn_file_open_read("/dev/null", "ckpt", "a safetensors file", &fd, &size), "is a character device",
                "a character device is refused");
    CHECK_FAILS(kn_file_open_read(dir, "ckpt", "a file", &fd, &size), "is a directory", "a directory is refused");
    CHECK_FAILS(kn_file_open_read(in_dir("nope"), "ckpt", "a file", &fd, &size), "No such file", "missing file");

    const char *p = in_dir("shrinks.bin");
    char buf[100] = {0};
    write_file(p, buf, sizeof buf);
    CHECK_OK(kn_file_open_read(p, "data", "a file", &fd, &size), "open a regular file");
    CHECK(size == 100 && fd >= 0 && (fcntl(fd, F_GETFL) & O_NONBLOCK) == 0, "  ... size 100, blocking mode");
    CHECK_OK(kn_file_read_at(fd, p, "data", buf, 50, 50, size), "read the second half");
    CHECK(truncate(p, 10) == 0, "truncate it to 10 bytes");
    CHECK_FAILS(kn_file_read_at(fd, p, "data", buf, 50, 50, size), "file shrank from 100 to 10 bytes while reading",
                "reading past the new end says the file shrank");
    CHECK(strstr(kn_errmsg(), p) != NULL, "  ... naming it");
    close(fd);
    unlink(p);
}

static void touch(const char *name) { write_file(in_dir(name), "", 0); }

static void test_stale(void)
{
    pid_t child = fork();
    if (child == 0) _exit(0);
    waitpid(child, NULL, 0);   /* now a pid of no live process */
    char dead[64], mine[64], other_dead[64];
    snprintf(dead, sizeof dead, "run.ckpt.tmp.%ld", (long)child);
    snprintf(mine, sizeof mine, "run.ckpt.tmp.%ld", (long)getpid());
    snprintf(other_dead, sizeof other_dead, "config.yaml.tmp.%ld", (long)child);
    touch(dead);
    touch(mine);
    touch(other_dead);
    touch("run.ckpt.tmp.1");      /* pid 1 is always alive */
    touch("run.ckpt.tmp.12x");    /* not a pid */
    touch("run.ckpt");
    int removed = -1;
    CHECK_OK(kn_file_remove_stale_temps(dir, "run.ckpt", &removed), "remove stale temps of run.ckpt");
    CHECK(removed == 1 && access(in_dir(dead), F_OK) != 0, "  ... the dead writer's file is gone");
    CHECK(access(in_dir(mine), F_OK) == 0 && access(in_dir("run.ckpt.tmp.1"), F_OK) == 0 &&
          access(in_dir("run.ckpt.tmp.12x"), F_OK) == 0 && access(in_dir("run.ckpt"), F_OK) == 0,
          "  ... this process's, a live process's, a non-pid name and the target itself are kept");
    CHECK(access(in_dir(other_dead), F_OK) == 0, "  ... and another basename's temp file too");
    CHECK_OK(kn_file_remove_stale_temps(dir, NULL, &removed), "any basename");
    CHECK(removed == 1 && access(in_dir(other_dead), F_OK) != 0, "  ... removes the other dead one");
    CHECK_FAILS(kn_file_remove_stale_temps(in_dir("nodir"), NULL, NULL), "No such file", "missing directory");
    const char *left[] = {mine, "run.ckpt.tmp.1", "run.ckpt.tmp.12x", "run.ckpt"};
    for (size_t i = 0; i < sizeof left / sizeof *left; i++) unlink(in_dir(left[i]));
}

int main(void)
{
    tmp_dir_make("fsio");
    test_write();
    test_full_disk();
    test_open();
    test_stale();
    CHECK(rmdir(dir) == 0, "temp directory removed (nothing left behind)");
    CHECK_DONE();
}
