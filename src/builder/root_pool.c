/*
 * Read-only root skeletons reused from build to build (see include/ocibuild/root_pool.h).
 * Entries are BUNDLE_ROOT/.root-pool/<key>-<slot>; a slot is claimed by renaming into it with
 * RENAME_NOREPLACE and released by renaming out of it, so no lock is needed between builds or
 * processes. Entries being pruned are first renamed to .evict-<uuid> (never a key name), so a
 * build cannot take half-deleted ones; a crash mid-prune leaves only such names, which the next
 * prune removes. A prune stamps .root-pool.pruned first, so the next processes skip theirs for a
 * while.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/blake3.h"
#include "ocibuild/bundle.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"
#include "ocibuild/root_pool.h"

#define EVICT_PREFIX ".evict-"
/* BUNDLE_ROOT/.root-pool.pruned: its mtime says when the last prune started (beside the pool,
 * whose entries are all skeletons). */
#define PRUNED_STAMP OBI_ROOT_POOL_DIR ".pruned"
/* Slots per key beyond this are not worth their inodes. */
#define MAX_SLOTS_PER_KEY 16

struct obi_root_pool {
    char *path;
    char *stamp; /* PRUNED_STAMP */
    int dir_fd;
    unsigned slots;
};

int obi_root_pool_open(const char *bundle_root, unsigned slots_per_key, obi_root_pool **out,
                       obi_error **err)
{
    cleanup_free char *path = obi_path_join(bundle_root, OBI_ROOT_POOL_DIR);
    cleanup_free char *stamp = obi_path_join(bundle_root, PRUNED_STAMP);
    if (!path || !stamp)
        return obi_error_oom(err);
    if (mkdir(path, 0711) < 0 && errno != EEXIST)
        return obi_error_set_errno(err, errno, "root pool: mkdir %s", path);
    int dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir_fd < 0)
        return obi_error_set_errno(err, errno, "root pool: open %s", path);
    obi_root_pool *pool = calloc(1, sizeof *pool);
    if (!pool) {
        close(dir_fd);
        return obi_error_oom(err);
    }
    pool->path = steal_pointer(&path);
    pool->stamp = steal_pointer(&stamp);
    pool->dir_fd = dir_fd;
    pool->slots = slots_per_key == 0                  ? 1
                  : slots_per_key > MAX_SLOTS_PER_KEY ? MAX_SLOTS_PER_KEY
                                                      : slots_per_key;
    *out = pool;
    return 0;
}

int obi_root_pool_fd(const obi_root_pool *pool)
{
    return pool->dir_fd;
}

void obi_root_pool_close(obi_root_pool *pool)
{
    if (!pool)
        return;
    close(pool->dir_fd);
    free(pool->path);
    free(pool->stamp);
    free(pool);
}

void obi_root_pool_key(const void *description, size_t len, char key[OBI_ROOT_POOL_KEY_LEN + 1])
{
    uint8_t digest[OBI_BLAKE3_OUT_LEN];
    obi_blake3(description, len, digest);
    obi_hex_encode(digest, OBI_ROOT_POOL_KEY_LEN / 2, key);
}

static void slot_name(const char *key, unsigned slot, char *out, size_t size)
{
    snprintf(out, size, "%s-%u", key, slot);
}

int obi_root_pool_take(obi_root_pool *pool, const char *key, const char *dest, obi_error **err)
{
    for (unsigned slot = 0; slot < pool->slots; slot++) {
        char name[OBI_ROOT_POOL_KEY_LEN + 16];
        slot_name(key, slot, name, sizeof name);
        if (renameat2(pool->dir_fd, name, AT_FDCWD, dest, RENAME_NOREPLACE) == 0)
            return 1;
        if (errno != ENOENT)
            return obi_error_set_errno(err, errno, "root pool: take %s/%s", pool->path, name);
    }
    return 0;
}

int obi_root_pool_give(obi_root_pool *pool, const char *key, const char *root, obi_error **err)
{
    for (unsigned slot = 0; slot < pool->slots; slot++) {
        char name[OBI_ROOT_POOL_KEY_LEN + 16];
        slot_name(key, slot, name, sizeof name);
        if (renameat2(AT_FDCWD, root, pool->dir_fd, name, RENAME_NOREPLACE) == 0)
            return 1;
        if (errno != EEXIST)
            return obi_error_set_errno(err, errno, "root pool: give back %s as %s/%s", root,
                                       pool->path, name);
    }
    return 0;
}

typedef struct pool_entry {
    char *name;
    struct timespec given_back; /* ctime: a rename into the pool sets it */
} pool_entry;

static int compare_newest_first(const void *a, const void *b)
{
    const struct timespec *x = &((const pool_entry *)a)->given_back;
    const struct timespec *y = &((const pool_entry *)b)->given_back;
    if (x->tv_sec != y->tv_sec)
        return x->tv_sec > y->tv_sec ? -1 : 1;
    return x->tv_nsec > y->tv_nsec ? -1 : x->tv_nsec < y->tv_nsec ? 1 : 0;
}

/* Renames name away under a fresh .evict- name and removes it; 1 if removed, 0 if another
 * build took it first. */
static int evict(obi_root_pool *pool, const char *name, obi_error **err)
{
    char uuid[37];
    int r = obi_uuid_v4(uuid, err);
    if (r < 0)
        return r;
    char evicted[sizeof EVICT_PREFIX + sizeof uuid];
    snprintf(evicted, sizeof evicted, "%s%s", EVICT_PREFIX, uuid);
    if (renameat2(pool->dir_fd, name, pool->dir_fd, evicted, RENAME_NOREPLACE) < 0)
        return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "root pool: evict %s", name);
    cleanup_free char *path = obi_path_join(pool->path, evicted);
    if (!path)
        return obi_error_oom(err);
    r = obi_rm_rf(path, err);
    return r < 0 ? r : 1;
}

bool obi_root_pool_prune_due(const obi_root_pool *pool, unsigned interval_seconds)
{
    struct stat st;
    if (lstat(pool->stamp, &st) < 0)
        return true;
    time_t now = time(NULL);
    return st.st_mtime > now || now - st.st_mtime >= (time_t)interval_seconds;
}

/* Sets the stamp's mtime to now, creating it if needed; a stamp that cannot be set only means
 * that the next process prunes too. */
static void stamp_prune(const obi_root_pool *pool)
{
    if (utimensat(AT_FDCWD, pool->stamp, NULL, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
        return;
    int fd = open(pool->stamp, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

int obi_root_pool_prune(obi_root_pool *pool, unsigned max_idle_seconds, size_t max_entries,
                        unsigned *removed, obi_error **err)
{
    if (removed)
        *removed = 0;
    stamp_prune(pool);
    int fd = dup(pool->dir_fd);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "root pool: %s", pool->path);
    DIR *dir = fdopendir(fd);
    if (!dir) {
        close(fd);
        return obi_error_set_errno(err, errno, "root pool: %s", pool->path);
    }
    rewinddir(dir);
    pool_entry *entries = NULL;
    size_t n = 0, cap = 0;
    int r = 0;
    unsigned count = 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct dirent *de;
    while (r >= 0 && (de = readdir(dir))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (!strncmp(de->d_name, EVICT_PREFIX, strlen(EVICT_PREFIX))) {
            /* Left by a prune that crashed (or is running right now: then one of the two
             * removals finds things gone, which obi_rm_rf takes as done). */
            cleanup_free char *path = obi_path_join(pool->path, de->d_name);
            cleanup_error obi_error *ignored = NULL;
            if (path && obi_rm_rf(path, &ignored) == 0)
                count++;
            continue;
        }
        struct stat st;
        if (fstatat(pool->dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* taken meanwhile */
        if (obi_array_grow(&entries, &cap, n + 1) < 0) {
            r = obi_error_oom(err);
            break;
        }
        entries[n].name = strdup(de->d_name);
        entries[n].given_back = st.st_ctim;
        if (!entries[n].name) {
            r = obi_error_oom(err);
            break;
        }
        n++;
    }
    closedir(dir);
    if (r >= 0 && n > 0) {
        qsort(entries, n, sizeof *entries, compare_newest_first);
        for (size_t i = 0; i < n && r >= 0; i++) {
            bool idle = now.tv_sec - entries[i].given_back.tv_sec >= (time_t)max_idle_seconds;
            if (!idle && i < max_entries)
                continue;
            int e = evict(pool, entries[i].name, err);
            if (e > 0)
                count++;
            else if (e < 0)
                r = e;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(entries[i].name);
    free(entries);
    if (removed)
        *removed = count;
    return r < 0 ? r : 0;
}
