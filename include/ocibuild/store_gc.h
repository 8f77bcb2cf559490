/*
 * The garbage collector of an on-disk store (`ocibuild store gc`; docs/store.md, "Garbage
 * collection"). Mark and sweep under ROOT/gc.lock held exclusively (store_roots.h):
 *
 *   begin  waits for gc.lock (running writers finish their write and pin it first), reads
 *          every root and live pin, removes dead ones, and marks the closure of each: every
 *          directory reachable from a root and every blob a reachable directory's files name.
 *   sweep  removes every directory not marked (one transaction), then every blob not marked,
 *          until max_freed bytes are freed. Directories first: a directory is never left
 *          behind naming a blob gc removed, so the store verifies clean afterwards.
 *   end    releases gc.lock.
 *
 * Between begin and end nothing can be pinned, rooted or written through a pin, so the caller
 * can also sweep caches keyed by the same objects (the input cache: obi_input_cache_prune)
 * with obi_store_gc_is_live. Marking fails, removing nothing, when a reachable directory is
 * damaged (what lies below it is unknown): `store verify` names it.
 */
#ifndef OCIBUILD_STORE_GC_H
#define OCIBUILD_STORE_GC_H

#include <stdbool.h>
#include <stdint.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"
#include "ocibuild/store.h"
#include "ocibuild/store_verify.h"

typedef int (*obi_store_gc_remove_fn)(obi_store_object_kind kind, const obi_digest *digest,
                                      uint64_t bytes, void *ctx, obi_error **err);

typedef struct obi_store_gc_options {
    bool dry_run;       /* report what would go, remove nothing */
    uint64_t max_freed; /* stop removing blobs once this many bytes are freed; 0: no limit */
    obi_store_gc_remove_fn on_remove; /* optional: per object removed (or to be) */
    void *ctx;
} obi_store_gc_options;

typedef struct obi_store_gc_stats {
    uint64_t roots;            /* roots and pins read */
    uint64_t live_blobs;       /* marked */
    uint64_t live_directories; /* marked */
    uint64_t missing;          /* objects marked but absent from the store */
    uint64_t blobs_removed;
    uint64_t directories_removed;
    uint64_t bytes_freed; /* blob files no other link keeps, plus directory encodings */
} obi_store_gc_stats;

typedef struct obi_store_gc obi_store_gc;

/* Locks and marks (above). -ENOTSUP for a store without a local ROOT. Blocks while other
 * processes write through a pin or run gc. */
int obi_store_gc_begin(obi_store *store, obi_store_gc **out, obi_error **err);
/* Whether the object was marked. */
bool obi_store_gc_is_live(const obi_store_gc *gc, obi_store_object_kind kind,
                          const obi_digest *digest);
/* Removes what is not marked; fills stats (marking's counts included). */
int obi_store_gc_sweep(obi_store_gc *gc, const obi_store_gc_options *options,
                       obi_store_gc_stats *stats, obi_error **err);
/* Unlocks and frees. Accepts NULL. */
void obi_store_gc_end(obi_store_gc *gc);
OBI_DEFINE_CLEANUP(obi_store_gc, obi_store_gc_end)
#define cleanup_store_gc _cleanup_(obi_store_gc_endp)

/* What an on-disk store holds (`ocibuild store du`). */
typedef struct obi_store_usage {
    uint64_t blobs, blob_bytes;            /* files under ROOT/blobs */
    uint64_t directories, directory_bytes; /* rows, and the size of directories.sqlite* */
    uint64_t temp_files, temp_bytes;       /* ROOT/tmp: writes in progress, pending blobs */
    uint64_t roots, pins;                  /* live roots, live processes' pins */
} obi_store_usage;
int obi_store_usage_get(obi_store *store, obi_store_usage *usage, obi_error **err);
/* Bytes an unprivileged writer may still use on the file system of an on-disk store's ROOT
 * (statvfs f_bavail); -ENOTSUP for a store without one. */
int obi_store_available_bytes(obi_store *store, uint64_t *out, obi_error **err);

#endif
