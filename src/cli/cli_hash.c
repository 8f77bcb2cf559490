/*
 * ocibuild hash FILE...: BLAKE3 of each file, printed exactly like b3sum ("<hex>  <name>").
 * "-" reads standard input. Streams the file; memory use does not grow with file size.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ocibuild/blake3.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"

#define HASH_READ_SIZE (1 << 20)

static int hash_fd(int fd, uint8_t out[OBI_BLAKE3_OUT_LEN])
{
    static uint8_t buf[HASH_READ_SIZE];
    obi_blake3_hasher hasher;
    obi_blake3_init(&hasher);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        obi_blake3_update(&hasher, buf, (size_t)n);
    }
    obi_blake3_finalize(&hasher, out, OBI_BLAKE3_OUT_LEN);
    return 0;
}

int cli_hash(int argc, char **argv)
{
    if (argc < 2)
        return cli_failf("usage: ocibuild hash FILE...");
    int status = 0;
    for (int i = 1; i < argc; i++) {
        const char *path = argv[i];
        cleanup_close int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : dup(0);
        if (fd < 0) {
            status = cli_failf("%s: %s", path, strerror(errno));
            continue;
        }
        uint8_t digest[OBI_BLAKE3_OUT_LEN];
        int r = hash_fd(fd, digest);
        if (r < 0) {
            status = cli_failf("%s: %s", path, strerror(-r));
            continue;
        }
        char hex[2 * OBI_BLAKE3_OUT_LEN + 1];
        obi_hex_encode(digest, OBI_BLAKE3_OUT_LEN, hex);
        printf("%s  %s\n", hex, path);
    }
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return status;
}
