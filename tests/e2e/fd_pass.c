/*
 * Runs inside a build (tests/e2e/test_build.sh compiles it statically and passes it as an
 * input): opens FILE for writing and sends that descriptor over the abstract unix socket NAME
 * (SCM_RIGHTS) to a process outside, which a build with network_access reaches (it shares the
 * host's network namespace, and with it the abstract socket names). What a hostile build would
 * do to keep a writer on its output after its container is gone. Exits 0 once sent.
 *   fd_pass FILE NAME
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int fd = open(argv[1], O_WRONLY);
    int sock = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(argv[2]);
    if (fd < 0 || sock < 0 || len + 1 > sizeof addr.sun_path) {
        perror("fd_pass: open");
        return 1;
    }
    memcpy(addr.sun_path + 1, argv[2], len); /* abstract: a leading NUL */
    if (connect(sock, (struct sockaddr *)&addr,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len)) < 0) {
        perror("fd_pass: connect");
        return 1;
    }
    char byte = 'x';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
    if (sendmsg(sock, &msg, 0) != 1) {
        perror("fd_pass: sendmsg");
        return 1;
    }
    /* the holder's answer: it has the descriptor before the build ends */
    return read(sock, &byte, 1) == 1 ? 0 : 1;
}
