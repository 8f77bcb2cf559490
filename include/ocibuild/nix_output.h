/*
 * After a derivation's build (../shared/spec/nix.md "After the build"): the references of each
 * output from the needles the reference scanner found, and the check that a fixed-output
 * derivation produced exactly the declared content (flat: the file's hash; recursive "r:": the
 * NAR's hash; md5, sha1, sha256 or sha512). With nar.h this is what `ocibuild nix-build`
 * reports per output: path, narHash, references.
 */
#ifndef OCIBUILD_NIX_OUTPUT_H
#define OCIBUILD_NIX_OUTPUT_H

#include <errno.h>

#include <stddef.h>
#include <stdint.h>

#include "ocibuild/derivation.h"
#include "ocibuild/error.h"
#include "ocibuild/nar.h"
#include "ocibuild/node.h"
#include "ocibuild/refscan.h"
#include "ocibuild/request.h"
#include "ocibuild/store.h"

#define OBI_NIX_HASH_MAX_LEN 64 /* sha512 */

/* One pass over node's NAR: the NAR hash and size, and the ascending indexes of scanner's
 * needles that occur anywhere in the NAR, as Nix scans for references (the whole serialisation:
 * file names too, not only contents and symlink targets). *found is NULL when none occur. */
int obi_nix_scan_node(obi_blob_service *blobs, obi_directory_service *directories,
                      const obi_node *node, const obi_refscan *scanner, obi_nar_hash *nar,
                      size_t **found, size_t *n_found, obi_error **err);

/* The store paths behind the found needle indexes, for a request made by
 * obi_derivation_to_build_request(drv, ...): needle i < drv->n_outputs is drv->outputs[i], the
 * rest are the request's inputs in order. Sorted, unique, NULL-terminated (obi_strv_free). An
 * index out of range is an error naming it. */
int obi_nix_output_references(const obi_derivation *drv, const obi_build_request *req,
                              const obi_output_needles *found, char ***refs_out, size_t *n_out,
                              obi_error **err);

/* Nix's content hash of node with hash_algo ("sha256", "r:sha1", ...): flat needs a regular
 * file and hashes its contents, recursive hashes its NAR. *out_len = the algorithm's length. */
int obi_nix_hash_node(obi_blob_service *blobs, obi_directory_service *directories,
                      const obi_node *node, const char *hash_algo,
                      uint8_t out[OBI_NIX_HASH_MAX_LEN], size_t *out_len, obi_error **err);

/* A fixed-output derivation's output whose hash is not the declared one (Nix exits 102). */
#define OBI_EHASH_MISMATCH (-EBADE)

/* Checks the output of a fixed-output derivation against its declared hash. A mismatch is
 * OBI_EHASH_MISMATCH: "hash mismatch in fixed-output derivation '<path>': specified
 * sha256:<nixbase32>, got sha256:<nixbase32>". */
int obi_nix_check_fixed_output(obi_blob_service *blobs, obi_directory_service *directories,
                               const obi_derivation_output *output, const obi_node *node,
                               obi_error **err);

#endif
