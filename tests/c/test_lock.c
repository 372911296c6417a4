/* test_lock: run-directory locks — exclusive within and across processes, the holder's pid
 * named, and released by the kernel when the holder is killed with SIGKILL. */
#include "check.h"
#include "tmpfiles.h"
#include "lock.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* A child that takes the lock, reports through a pipe, then sleeps until killed. */
static pid_t holder_child(const char *path)
{
    int p[2];
    if (pipe(p) != 0) { perror("pipe"); exit(2); }
    pid_t pid = fork();
    if (pid == 0) {
        int fd;
        char ok = kn_lock_acquire(path, &fd, NULL) == KN_OK ? 'y' : 'n';
        if (write(p[1], &ok, 1) != 1) _exit(3);
        for (;;) pause();
    }
    char c = 0;
    if (read(p[0], &c, 1) != 1 || c != 'y') { fprintf(stderr, "child could not lock\n"); exit(2); }
    close(p[0]);
    close(p[1]);
    return pid;
}

int main(void)
{
    tmp_dir_make("lock");
    const char *path = in_dir("lock");
    CHECK(kn_lock_holder(path) == 0, "no file: nobody holds it");

    int fd = -1, fd2 = -1;
    long holder = -7;
    CHECK_OK(kn_lock_acquire(path, &fd, &holder), "acquire");
    CHECK(kn_lock_holder(path) == (long)getpid(), "the holder is this process");
    char want[96];
    snprintf(want, sizeof want, "is locked by process %ld", (long)getpid());
    CHECK_FAILS(kn_lock_acquire(path, &fd2, &holder), want, "a second acquire in the same process is refused");
    CHECK(holder == (long)getpid(), "and reports the holder's pid");
    kn_lock_release(fd);
    CHECK(kn_lock_holder(path) == 0, "released: free again");

    pid_t child = holder_child(path);
    CHECK(kn_lock_holder(path) == (long)child, "another process's lock names it (%ld)", (long)child);
    snprintf(want, sizeof want, "is locked by process %ld", (long)child);
    CHECK_FAILS(kn_lock_acquire(path, &fd2, &holder), want, "acquire while another process holds it is refused");
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    CHECK(kn_lock_holder(path) == 0, "kill -9 of the holder frees the lock");
    CHECK_OK(kn_lock_acquire(path, &fd2, NULL), "and it can be taken again");
    kn_lock_release(fd2);

    CHECK_FAILS(kn_lock_acquire(in_dir("no/such/dir/lock"), &fd2, NULL), "cannot open lock file", "a missing directory is a named error");
    unlink(path);
    CHECK(rmdir(dir) == 0, "temp dir removed (nothing left behind)");
    CHECK_DONE();
}
