/*
 * Reference scanner benchmark (bench/refscan.sh drives it): scans generated data with N random
 * 32-character nixbase32 needles, fed in 1 MiB chunks, and prints the throughput. With --dump
 * DIR it also writes the needles (one a line) and the data, so the script can time a reference
 * tool (grep -F) on exactly the same input.
 *
 * Data kinds: "random" (uniform bytes, like compressed or machine code), "text" (lowercase
 * words and lines with a /nix/store/<hash>- path every ~4 KiB, like scripts and configs) and
 * "nixbase32" (nothing but nixbase32 characters: the adversarial worst case, every position is
 * a candidate).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ocibuild/refscan.h"

static const char NIXBASE32[] = "0123456789abcdfghijklmnpqrsvwxyz";
enum { NEEDLE_LEN = 32, CHUNK = 1 << 20 };

static uint64_t rng_state = 0x1234567887654321ull;
static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill(uint8_t *data, size_t len, const char *kind, char (*needles)[NEEDLE_LEN],
                 size_t n_needles)
{
    if (!strcmp(kind, "random")) {
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)next_random();
    } else if (!strcmp(kind, "nixbase32")) {
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)NIXBASE32[next_random() % 32];
    } else {
        for (size_t i = 0; i < len; i++) {
            uint64_t r = next_random() % 64;
            data[i] = r < 8 ? ' ' : r == 8 ? '\n' : (uint8_t)('a' + r % 26);
        }
        for (size_t at = 0; at + 64 < len; at += 4096) {
            memcpy(data + at, "/nix/store/", 11);
            for (size_t j = 0; j < NEEDLE_LEN; j++)
                data[at + 11 + j] = (uint8_t)NIXBASE32[next_random() % 32];
            data[at + 11 + NEEDLE_LEN] = '-';
        }
    }
    /* Plant a few needles so the scanner has something to find. */
    for (size_t k = 0; k < 4 && n_needles > 0; k++)
        memcpy(data + (len / 5) * (k + 1), needles[next_random() % n_needles], NEEDLE_LEN);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: the machine is shared */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dump(const char *dir, const uint8_t *data, size_t len, char (*needles)[NEEDLE_LEN],
                size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/needles.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%.32s\n", needles[i]);
    fclose(f);
    snprintf(path, sizeof path, "%s/data.bin", dir);
    f = fopen(path, "w");
    if (!f)
        return -1;
    fwrite(data, 1, len, f);
    return fclose(f);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_refscan N_NEEDLES random|text|nixbase32 MIB [--dump DIR]\n");
        return 2;
    }
    size_t n = strtoul(argv[1], NULL, 10), mib = strtoul(argv[3], NULL, 10);
    const char *kind = argv[2];
    size_t len = mib << 20;
    char(*needles)[NEEDLE_LEN] = malloc(n * NEEDLE_LEN + 1);
    obi_refscan_needle *list = calloc(n + 1, sizeof *list);
    uint8_t *data = malloc(len);
    if (!needles || !list || !data)
        return 1;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < NEEDLE_LEN; j++)
            needles[i][j] = NIXBASE32[next_random() % 32];
        list[i] = (obi_refscan_needle){needles[i], NEEDLE_LEN};
    }
    fill(data, len, kind, needles, n);
    if (argc >= 6 && !strcmp(argv[4], "--dump") && dump(argv[5], data, len, needles, n) < 0) {
        perror("dump");
        return 1;
    }
    obi_refscan *scanner = NULL;
    obi_error *err = NULL;
    if (obi_refscan_new(list, n, &scanner, &err) < 0) {
        fprintf(stderr, "%s\n", err->message);
        return 1;
    }
    obi_refscan_state *st = NULL;
    if (obi_refscan_state_new(scanner, &st, &err) < 0)
        return 1;
    /* Repeat until at least half a second has passed. */
    double start = now(), elapsed;
    size_t bytes = 0;
    do {
        for (size_t off = 0; off < len; off += CHUNK)
            obi_refscan_feed(st, data + off, len - off < CHUNK ? len - off : CHUNK);
        obi_refscan_end_stream(st);
        bytes += len;
        elapsed = now() - start;
    } while (elapsed < 0.5);
    printf("needles=%zu kind=%s GiB/s=%.2f found=%zu\n", n, kind,
           (double)bytes / elapsed / (1 << 30), obi_refscan_state_found_count(st));
    obi_refscan_state_free(st);
    obi_refscan_free(scanner);
    free(needles);
    free(list);
    free(data);
    return 0;
}
