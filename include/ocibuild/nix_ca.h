/*
 * Floating content-addressed outputs (Nix 2.8's `__contentAddressed = true`, facts from
 * local-derivation-goal.cc and references.cc): such an output is built at a scratch path, then
 * hashed with that path's hash part zeroed (plus the positions it was found at), named by that
 * hash and its references, and its contents rewritten to carry the final hash part in place of
 * the scratch one. Here the output is a castore tree, so rewriting makes a new tree (names,
 * contents and symlink targets, as Nix's rewrite of the NAR stream would).
 */
#ifndef OCIBUILD_NIX_CA_H
#define OCIBUILD_NIX_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/nix_store_path.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"

/* Where output output_name of the derivation at drv_path (named drv_name) is built when its path
 * is not known yet (Nix's makeFallbackPath): type "rewrite:<drv basename>:name:<output>" over 32
 * zero bytes, name as the output's. Caller frees; NULL on out of memory. */
char *obi_nix_ca_scratch_path(const char *drv_path, const char *drv_name, const char *output_name);

/* The content hash of node with the occurrences of modulus (the scratch hash part) zeroed and
 * "|<offset>" appended for each (HashModuloSink): over the NAR when recursive, the contents of a
 * regular file otherwise. algo: md5, sha1, sha256, sha512. */
int obi_nix_ca_hash(obi_blob_service *blobs, obi_directory_service *directories,
                    const obi_node *node, bool recursive, const char *algo, const char *modulus,
                    uint8_t out[64], size_t *out_len, obi_error **err);

/* A copy of node's tree with every occurrence of each rewrite's from (in turn; from and to of
 * equal length, such as hash parts) replaced by its to, in entry names, file contents and symlink
 * targets. The result keeps node's name (rewritten too). */
int obi_nix_ca_rewrite_node(obi_blob_service *blobs, obi_directory_service *directories,
                            const obi_node *node, const obi_nix_rewrite *rewrites, size_t n,
                            obi_node *out, obi_error **err);

#endif
