/*
 * OCI bundle directories: one fresh directory per run, named by a random UUID, under a bundle
 * root. The owner holds an exclusive flock on the directory itself (its descriptor,
 * obi_bundle_fd) from just after its mkdir until it is gone, so a later process can tell a
 * crashed run's leftovers (lock free) from a live one and sweep them: container destroyed,
 * mounts below it detached, directory removed. The lock goes with the descriptor: a process
 * that hands the descriptor to a child hands it the bundle (obi_bundle_abandon).
 */
#ifndef OCIBUILD_BUNDLE_H
#define OCIBUILD_BUNDLE_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "ocibuild/error.h"
#include "ocibuild/runtime.h"
#include "ocibuild/userns.h"

typedef struct obi_bundle obi_bundle;

/* Bundles that cannot be removed are moved here, below the bundle root (docs/security.md). */
#define OBI_BUNDLE_QUARANTINE_DIR ".quarantine"

/* Receives one line (no newline) for the caller's log: a bundle that was quarantined. */
typedef void (*obi_report_fn)(void *ctx, const char *line);

/* Creates BUNDLE_ROOT/<uuid>/ (mode 0700; the root 0711) with the lock held. A sweep that takes
 * the directory between its mkdir and its lock only makes this try another UUID. */
int obi_bundle_create(const char *bundle_root, obi_bundle **out, obi_error **err);

/* Bundle skeletons: a bundle directory holding only the empty directories every build makes in
 * it (dirs), kept for the next bundle instead of removed (directories are what a bundle's
 * creation and removal cost most: ~0.15 ms per mkdir and 1-2 ms per rmdir on this CI VM's ext4
 * with online discard, docs/build.md "Bundle skeletons"). Where they are kept is the caller's:
 * take moves one to dest (a path that does not exist): 1 when it did, 0 when there is none;
 * give moves the emptied bundle directory at path away: 1 when it did, 0 when it did not (it is
 * removed then). Must outlive the bundles made with it. */
typedef struct obi_bundle_recycler {
    const char *const *dirs; /* NULL-terminated names, directly in the bundle */
    int (*take)(void *ctx, const char *dest);
    int (*give)(void *ctx, const char *path);
    void *ctx;
} obi_bundle_recycler;

/* obi_bundle_create, taking a skeleton when recycler (may be NULL) has one: the bundle then
 * starts with recycler->dirs in it, empty, and may hold config.json and the runtime's pid file
 * from the last bundle (rewritten in place: obi_bundle_write_config, the runtime driver). A
 * skeleton not this process's user's (0700) is removed instead. Closing it (not kept, no user
 * namespace set) hands the directory and those directories back to this process's user,
 * empties those directories, removes everything else but those two files when they are still
 * regular files of ours with one link (mounts detached first, as always) and gives the
 * directory back; anything unexpected (a dir that is a mount point or not a directory, a
 * failure) and it is removed as a bundle without a recycler would be. */
int obi_bundle_create_recycled(const char *bundle_root, const obi_bundle_recycler *recycler,
                               obi_bundle **out, obi_error **err);
const char *obi_bundle_path(const obi_bundle *bundle);
/* The UUID: also used as the container id. */
const char *obi_bundle_id(const obi_bundle *bundle);
/* The bundle directory's descriptor (O_RDONLY, flocked), owned by the bundle: every path the
 * host opens inside the bundle is resolved beneath it (beneath.h). */
int obi_bundle_fd(const obi_bundle *bundle);
/* BUNDLE/<relative>; caller frees. For the runtime and messages, not for opening files the
 * build could have touched. */
char *obi_bundle_subpath(const obi_bundle *bundle, const char *relative);
/* BUNDLE/config.json, rewritten in place when a skeleton left a private one of ours there, else
 * made new (obi_rewrite_file_at: nothing planted there is followed or written through). */
int obi_bundle_write_config(obi_bundle *bundle, const json_t *config, obi_error **err);
/* Rootless: files below the bundle may belong to the build user's sub-ids; remove them
 * through the mapped user namespace (ids are copied). */
void obi_bundle_set_userns(obi_bundle *bundle, const obi_userns_ids *ids);
/* Where close reports a bundle it had to quarantine, or where it kept one (NULL: nowhere). */
void obi_bundle_set_report(obi_bundle *bundle, obi_report_fn report, void *ctx);
/* Called by close once everything inside the bundle is gone, just before the directory itself
 * (and the lock) goes: what must wait until nothing of the build is left but that need not wait
 * for the last rmdir (the id slot), so that whoever waits for the directory to go finds it
 * released too. Not called for a kept or quarantined bundle. */
void obi_bundle_set_on_emptied(obi_bundle *bundle, void (*fn)(void *ctx), void *ctx);
/* Keep the directory on close (for debugging). */
void obi_bundle_set_keep(obi_bundle *bundle, bool keep);
bool obi_bundle_keep(const obi_bundle *bundle);
/* Removes the directory (unless kept), releases the lock, frees. A directory that cannot be
 * removed is moved into BUNDLE_ROOT/.quarantine/ and reported (not an error); an error only when
 * even that fails. */
int obi_bundle_close(obi_bundle *bundle, obi_error **err);
/* Frees the handle and closes its descriptor without removing or marking anything: for a
 * process that handed the descriptor (and with it the lock) to a child that closes the bundle
 * in its stead. Without such a child the bundle is left to the next sweep, like a crash. */
void obi_bundle_abandon(obi_bundle *bundle);
/* For cleanup attributes: close, ignoring errors. */
void obi_bundle_closep(obi_bundle **bundle);
#define cleanup_bundle __attribute__((cleanup(obi_bundle_closep)))

/* Removes leftovers of crashed runs under bundle_root: every bundle whose lock is free (and that
 * was not closed with keep set: those are marked BUNDLE/.kept and left alone) has its
 * container destroyed (runtime may be NULL), mounts below it detached and is removed (through
 * the user namespace when userns is given), at any depth. One that cannot be removed is
 * quarantined and reported once through report (may be NULL) and the sweep goes on; earlier
 * quarantined ones are retried quietly. *swept (optional) counts the bundles swept. */
int obi_bundle_sweep(const char *bundle_root, obi_runtime *runtime, const obi_userns_ids *userns,
                     obi_report_fn report, void *report_ctx, unsigned *swept, obi_error **err);

/* Detaches every mount at or below path (deepest first); *count (optional) says how many. */
int obi_unmount_below(const char *path, unsigned *count, obi_error **err);

/* A random RFC 4122 version 4 UUID, lowercase (37 bytes with NUL). */
int obi_uuid_v4(char out[37], obi_error **err);

#endif
