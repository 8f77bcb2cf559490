/*
 * Digests of host files by file identity (see include/ocibuild/digest_cache.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/blake3.h"
#include "ocibuild/digest_cache.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"

/* 128 bits of BLAKE3 over the identity, in hex. */
#define KEY_HEX_LEN 32

static void entry_path(const char *dir, const struct stat *st, char *out, size_t out_size)
{
    char identity[160];
    int n = snprintf(identity, sizeof identity,
                     "ocibuild digest cache 1 %llu %llu %lld %lld.%09ld %lld.%09ld",
                     (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
                     (long long)st->st_size, (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
                     (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
    uint8_t digest[OBI_BLAKE3_OUT_LEN];
    obi_blake3(identity, (size_t)n, digest);
    char key[KEY_HEX_LEN + 1];
    obi_hex_encode(digest, KEY_HEX_LEN / 2, key);
    key[KEY_HEX_LEN] = 0;
    snprintf(out, out_size, "%s/%s", dir, key);
}

bool obi_digest_cache_get(const char *dir, const struct stat *st, obi_digest *out)
{
    char path[4096], hex[OBI_DIGEST_HEX_LEN + 1];
    entry_path(dir, st, path, sizeof path);
    ssize_t n = readlink(path, hex, sizeof hex);
    return n == OBI_DIGEST_HEX_LEN &&
           obi_hex_decode(hex, OBI_DIGEST_HEX_LEN, out->bytes, sizeof out->bytes) == 0;
}

void obi_digest_cache_put(const char *dir, const struct stat *st, const obi_digest *digest)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    time_t settled = now.tv_sec - OBI_DIGEST_CACHE_SETTLE_SECONDS;
    if (st->st_mtim.tv_sec >= settled || st->st_ctim.tv_sec >= settled)
        return; /* too fresh: a change within the timestamp's granularity would go unseen */
    char path[4096], hex[OBI_DIGEST_HEX_LEN + 1];
    entry_path(dir, st, path, sizeof path);
    obi_digest_to_hex(digest, hex);
    if (symlink(hex, path) == 0 || errno != ENOENT)
        return; /* made, or there already (the same identity names the same bytes) */
    /* Only the cache dir itself: its parent (the data dir) has the mode others set. */
    if (mkdir(dir, 0700) == 0 || errno == EEXIST)
        (void)symlink(hex, path);
}
