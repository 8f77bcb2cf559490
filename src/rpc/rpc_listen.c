/*
 * Listening sockets of the gRPC server that are about who may connect (docs/security.md "The
 * daemon"): unix sockets created with the mode and group the operator chose whatever the umask,
 * and the test that tells loopback TCP addresses (served without TLS) from the rest.
 *
 * A unix socket file gets its mode from the umask at bind(), and chmod() after bind() leaves a
 * moment where it is more open than wanted. So the socket is bound inside a fresh 0700 directory
 * next to its final path (reached as /proc/self/fd/N/s, so the long temporary path cannot exceed
 * sun_path), gets its mode and group there, starts listening, and only then is renamed into
 * place: from the moment anyone else can reach it, it has its final mode.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "rpc_internal.h"

#define LISTEN_BACKLOG 128
#define SOCKET_NAME "s"

/* Whether a server accepts on the unix socket at path (a stale socket file refuses). */
static bool unix_socket_is_live(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return false;
    strcpy(sa.sun_path, path);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    return fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
}

/* Makes a 0700 directory with a fresh name in the directory parent_fd; *name receives it. */
static int make_private_dir(int parent_fd, char name[32], obi_error **err)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        uint64_t random = 0;
        if (getrandom(&random, sizeof random, 0) != (ssize_t)sizeof random)
            return obi_error_set_errno(err, errno, "getrandom");
        snprintf(name, 32, ".ocibuild-sock.%016llx", (unsigned long long)random);
        if (mkdirat(parent_fd, name, 0700) == 0)
            return 0;
        if (errno != EEXIST)
            return obi_error_set_errno(err, errno, "mkdir %s", name);
    }
    return obi_error_set(err, -EEXIST, "cannot find a free temporary directory name");
}

/* Binds and listens in the private directory dir_fd, with the final mode and group. */
static int bind_private(int dir_fd, long gid, int *fd_out, obi_error **err)
{
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "socket");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/" SOCKET_NAME, dir_fd);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return obi_error_set_errno(err, errno, "bind");
    if (fchmodat(dir_fd, SOCKET_NAME, gid >= 0 ? 0660 : 0600, 0) < 0)
        return obi_error_set_errno(err, errno, "chmod");
    if (gid >= 0 && fchownat(dir_fd, SOCKET_NAME, (uid_t)-1, (gid_t)gid, AT_SYMLINK_NOFOLLOW) < 0)
        return obi_error_set_errno(err, errno, "chown to group %ld", gid);
    if (listen(fd, LISTEN_BACKLOG) < 0)
        return obi_error_set_errno(err, errno, "listen");
    *fd_out = steal_fd(&fd);
    return 0;
}

int obi_rpc_unix_listener_open(const char *path, long gid, int *fd_out, dev_t *dev, ino_t *ino,
                               obi_error **err)
{
    struct sockaddr_un sa;
    if (!*path)
        return obi_error_set(err, -EINVAL, "empty socket path");
    if (strlen(path) >= sizeof sa.sun_path)
        return obi_error_set(err, -ENAMETOOLONG, "socket path longer than %zu bytes",
                             sizeof sa.sun_path - 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return obi_error_set(err, -EEXIST, "%s exists and is not a socket", path);
        if (unix_socket_is_live(path))
            return obi_error_set(err, -EADDRINUSE, "another server is listening there");
    } else if (errno != ENOENT) {
        return obi_error_set_errno(err, errno, "%s", path);
    }

    cleanup_free char *parent = strdup(path);
    if (!parent)
        return obi_error_oom(err);
    char *slash = strrchr(parent, '/');
    const char *base = path;
    if (slash) {
        base = path + (slash - parent) + 1;
        if (slash == parent)
            slash[1] = '\0';
        else
            *slash = '\0';
    } else {
        strcpy(parent, ".");
    }
    if (!*base)
        return obi_error_set(err, -EINVAL, "%s: no file name", path);
    cleanup_close int parent_fd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (parent_fd < 0)
        return obi_error_set_errno(err, errno, "directory %s", parent);
    char private_name[32];
    int r = make_private_dir(parent_fd, private_name, err);
    if (r < 0)
        return obi_error_prefix(err, r, "directory %s", parent);
    cleanup_close int dir_fd =
        openat(parent_fd, private_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    cleanup_close int fd = -1;
    if (dir_fd < 0)
        r = obi_error_set_errno(err, errno, "%s/%s", parent, private_name);
    if (r >= 0)
        r = bind_private(dir_fd, gid, &fd, err);
    if (r >= 0 && fstatat(dir_fd, SOCKET_NAME, &st, AT_SYMLINK_NOFOLLOW) < 0)
        r = obi_error_set_errno(err, errno, "stat the new socket");
    /* Replaces a stale socket at path atomically (a live one was refused above). */
    if (r >= 0 && renameat(dir_fd, SOCKET_NAME, parent_fd, base) < 0)
        r = obi_error_set_errno(err, errno, "rename into %s", path);
    if (r < 0 && dir_fd >= 0)
        unlinkat(dir_fd, SOCKET_NAME, 0);
    unlinkat(parent_fd, private_name, AT_REMOVEDIR);
    if (r < 0)
        return r;
    *dev = st.st_dev;
    *ino = st.st_ino;
    *fd_out = steal_fd(&fd);
    return 0;
}

static bool sockaddr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

int obi_rpc_tcp_address_is_loopback(const char *address, obi_error **err)
{
    /* HOST:PORT, [V6]:PORT; the port is gRPC's to check. */
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address)
        return obi_error_set(err, -EINVAL,
                             "expected unix:PATH, unix:///ABS or HOST:PORT (no port found)");
    cleanup_free char *host = strndup(address, (size_t)(colon - address));
    if (!host)
        return obi_error_oom(err);
    size_t len = strlen(host);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        memmove(host, host + 1, len - 2);
        host[len - 2] = '\0';
    }
    /* Names other than localhost could resolve differently for gRPC a moment later: only
     * numeric addresses and localhost count as loopback. */
    if (!strcmp(host, "localhost"))
        return 1;
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    if (getaddrinfo(host, NULL, &hints, &found) != 0)
        return 0; /* a name: not known to be loopback */
    bool loopback = found && sockaddr_is_loopback(found->ai_addr);
    freeaddrinfo(found);
    return loopback ? 1 : 0;
}

int obi_rpc_socket_is_local(int fd, obi_error **err)
{
    struct sockaddr_storage ss = {0};
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return obi_error_set_errno(err, errno, "listen fd %d: getsockname", fd);
    if (ss.ss_family == AF_UNIX)
        return 1;
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
        return obi_error_set(err, -EAFNOSUPPORT,
                             "listen fd %d: neither a unix nor a TCP socket (family %d)", fd,
                             (int)ss.ss_family);
    return sockaddr_is_loopback((const struct sockaddr *)&ss) ? 1 : 0;
}
