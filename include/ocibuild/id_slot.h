/*
 * Host id slots for rootful builds (docs/security.md "Build identity"). A rootful build runs in a
 * user namespace whose ids map into one slot of the subordinate range of the system user
 * `ocibuild` (/etc/subuid and /etc/subgid, made by scripts/install-deps.sh): slot i is the
 * OBI_ID_SLOT_SIZE uids from the range's start + i * OBI_ID_SLOT_SIZE, and as many gids.
 * Container root maps to the slot's first uid and gid, the build user (1000:100) to its
 * 1000th uid and 100th gid. No login account owns these ids, and a slot serves one build at a
 * time, so two builds never share a host id.
 *
 * A build holds its slot with an exclusive flock on LOCK_DIR/<index>, a file per slot shared
 * by every ocibuild process on the host (LOCK_DIR is OBI_ID_SLOT_LOCK_DIR). The lock goes with
 * the process, also when it crashes, but a crashed build's container can outlive it. So while
 * a slot is held its lock file also carries a mark ("pid N"), which a clean release removes. A
 * slot whose lock is free but whose mark is still there is only taken when no process on the
 * host has one of its ids (looked up in /proc); until then it is skipped (the next sweep of
 * the dead build's bundle root removes its container).
 */
#ifndef OCIBUILD_ID_SLOT_H
#define OCIBUILD_ID_SLOT_H

#include <stdbool.h>
#include <sys/types.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"
#include "ocibuild/spec.h"

#define OBI_ID_SLOT_SIZE 65536u
#define OBI_ID_SLOT_USER "ocibuild"
#define OBI_ID_SLOT_LOCK_DIR "/run/ocibuild/id-slots"
/* The range scripts/install-deps.sh gives the ocibuild user when it is free: 64 slots starting
 * at 0x70000000, just above the range systemd gives containers (0x80000-0x6FFFFFFF). */
#define OBI_ID_RANGE_DEFAULT_START 1879048192u
#define OBI_ID_RANGE_DEFAULT_COUNT (64u * OBI_ID_SLOT_SIZE)

typedef struct obi_id_pool obi_id_pool;

typedef struct obi_id_slot {
    unsigned index;
    uid_t uid;   /* the slot's first host uid: container root */
    gid_t gid;   /* the slot's first host gid: container root's group */
    int lock_fd; /* -1: not held */
} obi_id_slot;

#define OBI_ID_SLOT_INIT                                                                           \
    {                                                                                              \
        0, 0, 0, -1                                                                                \
    }

/* A pool over these ranges (as many whole slots as the smaller one holds) with its lock files in
 * lock_dir (created 0700 by the first claim). -EINVAL naming the range when it holds no whole
 * slot. */
int obi_id_pool_new(const obi_subid_range *uids, const obi_subid_range *gids, const char *lock_dir,
                    obi_id_pool **out, obi_error **err);
/* The pool of the ocibuild user's first /etc/subuid and /etc/subgid ranges (or
 * $OCIBUILD_SUBUID_FILE / $OCIBUILD_SUBGID_FILE), locks in OBI_ID_SLOT_LOCK_DIR. No range: -ENOENT
 * with a message that gives the fix (scripts/install-deps.sh, or the commands it runs). */
int obi_id_pool_open_default(obi_id_pool **out, obi_error **err);
void obi_id_pool_free(obi_id_pool *pool);
OBI_DEFINE_CLEANUP(obi_id_pool, obi_id_pool_free)
#define cleanup_id_pool _cleanup_(obi_id_pool_freep)
unsigned obi_id_pool_slots(const obi_id_pool *pool);
/* The ids of slot index, without claiming it (lock_fd -1); -ERANGE past the last slot. */
int obi_id_pool_slot(const obi_id_pool *pool, unsigned index, obi_id_slot *out);

/* Claims the first free slot (see the top). When all are busy, retries every 100 ms until one is
 * free, or fails with -ECANCELED once cancel_fd (-1: none) is readable. */
int obi_id_slot_claim(obi_id_pool *pool, int cancel_fd, obi_id_slot *out, obi_error **err);
/* Releases a claimed slot (nothing for one not held). clean: nothing of the build runs any
 * more, so the mark goes; otherwise it stays and the slot waits until its ids are gone. */
void obi_id_slot_release(obi_id_slot *slot, bool clean);
/* For cleanup attributes: a clean release. A path that may leave the build's processes
 * running releases it itself first, with clean false. */
static inline void obi_id_slot_releasep(obi_id_slot *slot)
{
    obi_id_slot_release(slot, true);
}
#define cleanup_id_slot _cleanup_(obi_id_slot_releasep)

/* Container root's and the build user's host ids in slot: for obi_spec_options. */
void obi_id_slot_spec_ids(const obi_id_slot *slot, obi_spec_options *opts);

#endif
