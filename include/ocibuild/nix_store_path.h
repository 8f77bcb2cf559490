/*
 * The store paths and strings Nix computes rather than reads (Nix 2.8's store-api.cc and
 * derivations.cc, facts only): a store path from a type, a SHA-256 and a name (the digest
 * folded to 20 bytes, nixbase32); the paths of fixed-output and content-addressed outputs, of
 * text files such as .drv files, of a derivation's outputs by its hash modulo; output names
 * ("name" or "name-dev"); the placeholders a derivation holds before its paths are known
 * (builtins.placeholder's "/<hash>" and the downstream placeholder of a content-addressed
 * input), and Nix's string rewriting that replaces them. Used by derivation.c (show-derivation
 * computes fixed-output paths), derivation_request.c (placeholders) and nix_build.c
 * (content-addressed outputs, resolved derivations).
 */
#ifndef OCIBUILD_NIX_STORE_PATH_H
#define OCIBUILD_NIX_STORE_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/sha256.h"

/* makeStorePath: "/nix/store/" + nixbase32(fold20(sha256("<type>:sha256:<hex of hash>:/nix/store:
 * <name>"))) + "-" + name. Caller frees; NULL on out of memory. */
char *obi_nix_make_store_path(const char *type, const uint8_t hash[OBI_SHA256_LEN],
                              const char *name);

/* "name" for output "out", "name-<output>" otherwise. Caller frees (NULL: out of memory). */
char *obi_nix_output_path_name(const char *drv_name, const char *output_name);

/* The path of output output_name of a derivation whose hash modulo is hash (makeOutputPath:
 * type "output:<output>", name from obi_nix_output_path_name). */
char *obi_nix_make_output_path(const char *output_name, const uint8_t hash[OBI_SHA256_LEN],
                               const char *drv_name);

/* The path of content-addressed data (makeFixedOutputPath): recursive SHA-256 is
 * "source[:<ref>...][:self]", anything else "output:out" over sha256("fixed:out:[r:]<algo>:<hex>:")
 * and may have no references. references: store paths, sorted. algo: "md5", "sha1", "sha256",
 * "sha512" (digest of its length). Errors name the path's name. */
int obi_nix_make_fixed_output_path(bool recursive, const char *algo, const uint8_t *digest,
                                   size_t digest_len, const char *name, char *const *references,
                                   size_t n_references, bool self_reference, char **out,
                                   obi_error **err);

/* The path of a text file (makeTextPath), e.g. a .drv: type "text[:<ref>...]" over sha256 of the
 * contents. references: sorted. */
char *obi_nix_make_text_path(const char *name, const void *contents, size_t len,
                             char *const *references, size_t n_references);

/* builtins.placeholder: "/" + nixbase32(sha256("nix-output:<output>")). */
char *obi_nix_hash_placeholder(const char *output_name);
/* What stands for output output_name of the content-addressed derivation drv_path (a store
 * path "/nix/store/<hash>-<name>.drv") in the derivations that use it:
 * "/" + nixbase32(sha256("nix-upstream-output:<hash>:<output path name>")). */
char *obi_nix_downstream_placeholder(const char *drv_path, const char *output_name);

/* One replacement of Nix's rewriteStrings. */
typedef struct obi_nix_rewrite {
    const char *from; /* non-empty */
    const char *to;
} obi_nix_rewrite;

/* Nix's rewriteStrings: for each rewrite in turn (callers sort them by `from`, as Nix's map
 * is), every occurrence of from is replaced by to. Caller frees; NULL on out of memory. */
char *obi_nix_rewrite_string(const char *s, const obi_nix_rewrite *rewrites, size_t n);

#endif
