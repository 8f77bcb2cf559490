/*
 * NAR (Nix ARchive, ../shared/spec/nix.md) of a castore node or of a filesystem path, streamed
 * into a sink callback with bounded memory (one directory listing per level of depth plus a
 * fixed buffer), and the NAR hash Nix prints: "sha256:" + nixbase32(sha256(NAR)), plus the NAR
 * size. Used to compare outputs with Nix (nix-store -q --hash) and to check fixed-output hashes.
 */
#ifndef OCIBUILD_NAR_H
#define OCIBUILD_NAR_H

#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/node.h"
#include "ocibuild/sha256.h"
#include "ocibuild/store.h"

/* Receives the NAR bytes in order; a negative return stops the serialization with that code. */
typedef int (*obi_nar_sink)(void *ctx, const void *data, size_t len, obi_error **err);

/* NAR of root (its name is not part of the NAR): file contents are read from blobs, directories
 * from directories. A blob whose length differs from its node's size is an error naming the
 * digest. */
int obi_nar_write_node(obi_blob_service *blobs, obi_directory_service *directories,
                       const obi_node *root, obi_nar_sink sink, void *ctx, obi_error **err);
/* NAR of a path on disk (not followed if it is a symlink): regular files (executable when the
 * owner may execute), directories and symlinks; anything else is an error naming the path. */
int obi_nar_write_path(const char *path, obi_nar_sink sink, void *ctx, obi_error **err);

typedef struct obi_nar_hash {
    uint8_t sha256[OBI_SHA256_LEN];
    uint64_t size; /* NAR length in bytes */
} obi_nar_hash;

int obi_nar_hash_node(obi_blob_service *blobs, obi_directory_service *directories,
                      const obi_node *root, obi_nar_hash *out, obi_error **err);
int obi_nar_hash_path(const char *path, obi_nar_hash *out, obi_error **err);

/* "sha256:" + nixbase32 of the digest (59 characters); caller frees. NULL on out of memory. */
char *obi_nar_hash_to_string(const obi_nar_hash *hash);

#endif
