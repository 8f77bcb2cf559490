/*
 * Runs inside a build (tests/e2e/test_sandbox_identity.sh compiles it statically and passes it
 * as an input): tries what a hostile build would, through the raw syscalls a shell cannot
 * make, and prints one line per attempt, "NAME ERRNO" (0: it worked), then "mode-NAME OCTAL" for
 * the files it created. Run in the directory where it may create files. test_seccomp_bpf.sh runs it
 * too, under crun's precompiled filter and crun's own compilation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452 /* Linux 6.6; the same number on every architecture */
#endif
#define KEY_SPEC_USER_KEYRING (-4)
#define KEYCTL_GET_KEYRING_ID 0

static void report(const char *name, long result)
{
    printf("%s %d\n", name, result < 0 ? errno : 0);
}

static void report_mode(const char *name, const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        printf("mode-%s %04o\n", name, (unsigned)(st.st_mode & 07777));
}

int main(void)
{
    int fd = open("open-setuid", O_WRONLY | O_CREAT | O_EXCL, 04755);
    report("open-setuid", fd);
    if (fd >= 0)
        close(fd);
    fd = creat("creat-setgid", 02755);
    report("creat-setgid", fd);
    if (fd >= 0)
        close(fd);
    report("mknod-setuid", mknod("mknod-setuid", S_IFREG | 04755, 0));
    fd = open("plain", O_WRONLY | O_CREAT | O_EXCL, 0755);
    if (fd >= 0)
        close(fd);
    report("chmod-setuid", chmod("plain", 04755));
    report("chmod-setgid", chmod("plain", 02755));
    report("chmod-plain", chmod("plain", 0700));
    report("fchmodat2-setuid", syscall(SYS_fchmodat2, AT_FDCWD, "plain", 04755, 0));
    report("setxattr", setxattr("plain", "user.probe", "1", 1, 0));
    report("add_key", syscall(SYS_add_key, "user", "probe", "secret", 6, KEY_SPEC_USER_KEYRING));
    report("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0));
    report("unshare-user", unshare(CLONE_NEWUSER));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
    report("clone3", syscall(SYS_clone3, NULL, 0));
    /* Refused before the kernel looks at the arguments: EBADF, EINVAL or EFAULT otherwise. */
    report("bpf", syscall(SYS_bpf, -1, NULL, 0));
    report("setns", syscall(SYS_setns, -1, 0));
    /* CLONE_THREAD without CLONE_SIGHAND: EINVAL unfiltered, nothing is made either way. */
    report("clone-newuser", syscall(SYS_clone, CLONE_NEWUSER | CLONE_THREAD, NULL, NULL, NULL, 0));
    report_mode("open-setuid", "open-setuid");
    report_mode("creat-setgid", "creat-setgid");
    report_mode("mknod-setuid", "mknod-setuid");
    report_mode("plain", "plain");
    return 0;
}
