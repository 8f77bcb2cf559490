/*
 * The store's consistency check (`ocibuild store verify`): walks every blob and every directory
 * a store holds and reports each object that is not what its name says or refers to something
 * the store lacks. Nothing is changed: faults go to a callback, so that a repair or a garbage
 * collector can build on the same walk.
 *
 * What is checked, per object:
 *   blob       its contents hash to its digest (every byte is read);
 *   directory  its stored bytes hash to its digest, decode and validate (the backend's get);
 *              every child directory is stored and has the size its entry claims;
 *              every file entry's blob is stored with the size the entry claims.
 * The services must be able to list what they store (local and memory stores; a grpc+ store
 * cannot: verify the store where it lives).
 */
#ifndef OCIBUILD_STORE_VERIFY_H
#define OCIBUILD_STORE_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "ocibuild/digest.h"
#include "ocibuild/error.h"
#include "ocibuild/store.h"

typedef enum obi_store_object_kind {
    OBI_STORE_BLOB,
    OBI_STORE_DIRECTORY,
} obi_store_object_kind;

typedef struct obi_store_fault {
    obi_store_object_kind kind;
    obi_digest digest;   /* the faulty object */
    const char *problem; /* what is wrong with it, naming the entry or the other object */
    /* The object itself is damaged (contents that do not hash to its name, a directory that
     * does not decode): removing it lets the next import or build store it again, where `has`
     * would otherwise find it present. False when only something it names is wrong. */
    bool damaged;
} obi_store_fault;

/* Called once per fault; a negative return stops the walk with that code. */
typedef int (*obi_store_fault_fn)(const obi_store_fault *fault, void *ctx, obi_error **err);

typedef struct obi_store_verify_stats {
    uint64_t blobs;
    uint64_t blob_bytes;
    uint64_t directories;
    uint64_t faults;
} obi_store_verify_stats;

/* Checks every object of the store (see above). Returns 0 when the walk completed, whatever it
 * found (stats->faults says how many faults were reported); negative when it could not walk
 * (-ENOTSUP for a service that cannot list, I/O errors other than a faulty object). */
int obi_store_verify(obi_store *store, obi_store_fault_fn on_fault, void *ctx,
                     obi_store_verify_stats *stats, obi_error **err);

/* "blob" or "directory". */
const char *obi_store_object_kind_name(obi_store_object_kind kind);

#endif
