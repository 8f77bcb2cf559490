/*
 * A NAR (Nix ARchive, ../shared/spec/nix.md) read from a stream into castore: regular files
 * become blobs and FileNodes, directories Directories put leaves first through one directory
 * putter, symlinks SymlinkNodes. The reverse of nar.h's obi_nar_write_node, and like it bounded
 * in memory: one fixed buffer plus one Directory per level of depth.
 *
 * Only the canonical form is accepted, the one Nix writes (and nar.h writes back): tokens in
 * their fixed order, "executable" before "contents", entries sorted bytewise with unique names,
 * zero padding, nothing after the root's ")". So the NAR of the ingested node is exactly the
 * bytes read and its hash is the hash of the input, which the caller compares with the one the
 * sender claimed. Names follow castore's rules (1..255 bytes, no '/', NUL, "." or ".."), symlink
 * targets are 1..4095 bytes without NUL, and trees deeper than OBI_DIRECTORY_MAX_DEPTH are
 * refused. Every refusal names the byte offset in the NAR: "nar: offset 120: expected 'node',
 * got 'nod'". Directories are committed only when the whole NAR was read and valid, so a
 * failure leaves no root behind (at most unreferenced blobs).
 */
#ifndef OCIBUILD_NAR_INGEST_H
#define OCIBUILD_NAR_INGEST_H

#include <stddef.h>

#include "ocibuild/error.h"
#include "ocibuild/nar.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"

/* Fills buf with exactly len bytes of the NAR, or fails (a negative return stops the ingest
 * with that code and the source's message). */
typedef int (*obi_nar_source)(void *ctx, void *buf, size_t len, obi_error **err);

/* Reads one NAR from source (and not a byte past its end) into blobs and directories. *out
 * (caller storage, clear with obi_node_clear) is the root node named name; *hash the sha256
 * and length of the bytes read. */
int obi_nar_ingest(obi_blob_service *blobs, obi_directory_service *directories,
                   obi_nar_source source, void *ctx, const char *name, obi_node *out,
                   obi_nar_hash *hash, obi_error **err);

/* The same from memory: the NAR must be exactly data[0..len). */
int obi_nar_ingest_bytes(obi_blob_service *blobs, obi_directory_service *directories,
                         const void *data, size_t len, const char *name, obi_node *out,
                         obi_nar_hash *hash, obi_error **err);

#endif
