/*
 * Host id slots for rootful builds (see include/ocibuild/id_slot.h): a lock file per slot, a
 * mark in it while the slot is held, and a /proc look-up for slots a crashed holder left
 * marked. The normal claim costs an open, a flock, an fstat and a write; the /proc walk only
 * happens after a crash.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/id_slot.h"
#include "ocibuild/number.h"

#define CLAIM_RETRY_MS 100
#define ZOMBIE_STATE "State:\tZ" /* the start of a zombie's state line in /proc/PID/status */

struct obi_id_pool {
    uid_t first_uid;
    gid_t first_gid;
    unsigned slots;
    char *lock_dir;
};

int obi_id_pool_new(const obi_subid_range *uids, const obi_subid_range *gids, const char *lock_dir,
                    obi_id_pool **out, obi_error **err)
{
    uint32_t count = uids->count < gids->count ? uids->count : gids->count;
    if (count < OBI_ID_SLOT_SIZE)
        return obi_error_set(err, -EINVAL,
                             "id range: uids %u+%u and gids %u+%u hold no whole slot of %u ids",
                             uids->start, uids->count, gids->start, gids->count, OBI_ID_SLOT_SIZE);
    obi_id_pool *pool = calloc(1, sizeof *pool);
    if (!pool || !(pool->lock_dir = strdup(lock_dir))) {
        free(pool);
        return obi_error_oom(err);
    }
    pool->first_uid = uids->start;
    pool->first_gid = gids->start;
    pool->slots = count / OBI_ID_SLOT_SIZE;
    *out = pool;
    return 0;
}

/* The uid of OBI_ID_SLOT_USER from the user database; UINT32_MAX when it has none. */
static uint32_t id_slot_user_uid(void)
{
    char buf[4096];
    struct passwd pw, *found = NULL;
    if (getpwnam_r(OBI_ID_SLOT_USER, &pw, buf, sizeof buf, &found) == 0 && found)
        return found->pw_uid;
    return UINT32_MAX;
}

/* The user's ranges in both files (*file: the one that failed). Entries may name the user or
 * give its uid: its name is looked for first, and its uid (a user database look-up through
 * NSS, ~0.15 ms of every build) only when a file has no entry naming it. */
static int lookup_ranges(const char *uid_file, const char *gid_file, obi_subid_range *uids,
                         obi_subid_range *gids, const char **file, obi_error **err)
{
    uint32_t uid = UINT32_MAX; /* the name alone */
    for (bool by_uid = false;; by_uid = true) {
        if (by_uid)
            uid = id_slot_user_uid();
        cleanup_error obi_error *lookup_err = NULL;
        *file = uid_file;
        int r = obi_subid_lookup(uid_file, "uid", OBI_ID_SLOT_USER, uid, uids, &lookup_err);
        if (r == 0) {
            *file = gid_file;
            r = obi_subid_lookup(gid_file, "gid", OBI_ID_SLOT_USER, uid, gids, &lookup_err);
        }
        if (r == -ENOENT && !by_uid)
            continue;
        return r < 0 ? obi_error_move(err, &lookup_err) : 0;
    }
}

int obi_id_pool_open_default(obi_id_pool **out, obi_error **err)
{
    const char *uid_file = getenv("OCIBUILD_SUBUID_FILE");
    const char *gid_file = getenv("OCIBUILD_SUBGID_FILE");
    uid_file = uid_file ? uid_file : "/etc/subuid";
    gid_file = gid_file ? gid_file : "/etc/subgid";
    obi_subid_range uids = {0}, gids = {0};
    const char *file = uid_file;
    cleanup_error obi_error *lookup_err = NULL;
    int r = lookup_ranges(uid_file, gid_file, &uids, &gids, &file, &lookup_err);
    const unsigned first = OBI_ID_RANGE_DEFAULT_START;
    const unsigned last = OBI_ID_RANGE_DEFAULT_START + OBI_ID_RANGE_DEFAULT_COUNT - 1;
    if (r == -ENOENT)
        return obi_error_set(err, r,
                             "rootful builds run as host ids of the `%s` user's subordinate "
                             "range, and %s has none: run scripts/install-deps.sh, or as root: "
                             "`useradd --system --no-create-home --home-dir /nonexistent --shell "
                             "/usr/sbin/nologin %s; usermod --add-subuids %u-%u --add-subgids "
                             "%u-%u %s` (docs/security.md, \"Build identity\")",
                             OBI_ID_SLOT_USER, file, OBI_ID_SLOT_USER, first, last, first, last,
                             OBI_ID_SLOT_USER);
    if (r < 0)
        return obi_error_move(err, &lookup_err);
    return obi_id_pool_new(&uids, &gids, OBI_ID_SLOT_LOCK_DIR, out, err);
}

void obi_id_pool_free(obi_id_pool *pool)
{
    if (!pool)
        return;
    free(pool->lock_dir);
    free(pool);
}

unsigned obi_id_pool_slots(const obi_id_pool *pool)
{
    return pool->slots;
}

int obi_id_pool_slot(const obi_id_pool *pool, unsigned index, obi_id_slot *out)
{
    if (index >= pool->slots)
        return -ERANGE;
    *out = (obi_id_slot){index, pool->first_uid + index * OBI_ID_SLOT_SIZE,
                         pool->first_gid + index * OBI_ID_SLOT_SIZE, -1};
    return 0;
}

void obi_id_slot_spec_ids(const obi_id_slot *slot, obi_spec_options *opts)
{
    opts->root_uid = slot->uid;
    opts->root_gid = slot->gid;
    opts->build_uid = slot->uid + OBI_BUILD_UID;
    opts->build_gid = slot->gid + OBI_BUILD_GID;
}

/* ---- leftovers of a crashed holder ---- */

static bool id_in(const char *ids, uint32_t first)
{
    /* "Uid:\treal\teffective\tsaved\tfs" (the same for Gid) */
    for (const char *p = ids; *p;) {
        while (*p == '\t' || *p == ' ')
            p++;
        char *end = NULL;
        errno = 0;
        unsigned long id = strtoul(p, &end, 10);
        if (end == p || errno)
            return false;
        if (id >= first && id - first < OBI_ID_SLOT_SIZE)
            return true;
        p = end;
        if (*p == '\n')
            break;
    }
    return false;
}

/* Whether a live process on the host has an id of the slot: its real, effective, saved or fs
 * uid or gid lies in the slot. Zombies, and processes that exit meanwhile, do not count. */
static bool slot_ids_in_use(const obi_id_slot *slot)
{
    cleanup_dir DIR *proc = opendir("/proc");
    if (!proc)
        return true; /* cannot tell: do not reuse */
    struct dirent *de;
    while ((de = readdir(proc))) {
        unsigned long long pid;
        if (!obi_parse_decimal(de->d_name, INT32_MAX, &pid))
            continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/%llu/status", pid);
        cleanup_file FILE *f = fopen(path, "re");
        char line[256];
        while (f && fgets(line, sizeof line, f)) {
            if (!strncmp(line, ZOMBIE_STATE, sizeof ZOMBIE_STATE - 1))
                break; /* a zombie: dead, only waiting for its parent */
            if ((!strncmp(line, "Uid:", 4) && id_in(line + 4, slot->uid)) ||
                (!strncmp(line, "Gid:", 4) && id_in(line + 4, slot->gid)))
                return true;
        }
    }
    return false;
}

/* ---- claiming ---- */

/* 1: slot index is now held in *out; 0: busy (or left marked by a holder whose processes still
 * run); <0: error. */
static int try_claim(obi_id_pool *pool, unsigned index, obi_id_slot *out, obi_error **err)
{
    char name[32];
    snprintf(name, sizeof name, "%u", index);
    cleanup_free char *path = obi_path_join(pool->lock_dir, name);
    if (!path)
        return obi_error_oom(err);
    cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "id slot lock %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            return 0;
        return obi_error_set_errno(err, errno, "id slot lock %s", path);
    }
    obi_id_slot slot;
    obi_id_pool_slot(pool, index, &slot);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "id slot lock %s", path);
    if (st.st_size > 0 && slot_ids_in_use(&slot))
        return 0;
    char mark[32];
    int len = snprintf(mark, sizeof mark, "pid %d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, mark, (size_t)len, 0) != len)
        return obi_error_set_errno(err, errno, "id slot lock %s", path);
    slot.lock_fd = steal_fd(&fd);
    *out = slot;
    return 1;
}

int obi_id_slot_claim(obi_id_pool *pool, int cancel_fd, obi_id_slot *out, obi_error **err)
{
    int r = obi_mkdir_p(pool->lock_dir, 0700, err);
    if (r < 0)
        return obi_error_prefix(err, r, "id slot locks");
    for (;;) {
        for (unsigned i = 0; i < pool->slots; i++) {
            r = try_claim(pool, i, out, err);
            if (r != 0)
                return r < 0 ? r : 0;
        }
        struct pollfd pfd = {cancel_fd, POLLIN, 0};
        int ready = poll(&pfd, cancel_fd >= 0 ? 1 : 0, CLAIM_RETRY_MS);
        if (ready > 0)
            return obi_error_set(err, -ECANCELED,
                                 "cancelled while waiting for a free id slot (%u in use)",
                                 pool->slots);
    }
}

void obi_id_slot_release(obi_id_slot *slot, bool clean)
{
    if (slot->lock_fd < 0)
        return;
    if (clean && ftruncate(slot->lock_fd, 0) < 0) {
        /* The mark stays: the slot is reused once /proc shows none of its ids. */
    }
    close(slot->lock_fd);
    slot->lock_fd = -1;
}
