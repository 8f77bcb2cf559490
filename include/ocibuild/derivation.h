/*
 * Nix derivations (.drv files, ../shared/spec/nix.md): the ATerm text form
 *   Derive([outputs],[input drvs],[input srcs],system,builder,[args],[env])
 * parsed into a plain struct, and serialized back byte for byte the way Nix writes it.
 * The parser is strict (no whitespace, only the escapes \" \\ \n \r \t, no NUL bytes) and every
 * error names the byte offset: "drv: offset 123: expected ',' got 'x'". Lists keep the order
 * of the file, so parse + serialize round-trips exactly.
 */
#ifndef OCIBUILD_DERIVATION_H
#define OCIBUILD_DERIVATION_H

#include <stdbool.h>
#include <stddef.h>

#include "ocibuild/buf.h"
#include "ocibuild/error.h"

typedef struct obi_derivation_output {
    char *name;      /* "out", "dev", ... */
    char *path;      /* "/nix/store/<hash>-<name>" ("" for floating content-addressed) */
    char *hash_algo; /* "" unless content-addressed: "sha256", "r:sha256", "r:sha1", ... */
    char *hash;      /* lowercase hex of the expected hash ("" unless fixed-output) */
} obi_derivation_output;

typedef struct obi_derivation_input {
    char *drv_path; /* "/nix/store/<hash>-<name>.drv" */
    char **outputs; /* the output names used */
    size_t n_outputs;
} obi_derivation_input;

typedef struct obi_derivation_env {
    char *key;
    char *value;
} obi_derivation_env;

typedef struct obi_derivation {
    obi_derivation_output *outputs;
    size_t n_outputs;
    obi_derivation_input *input_drvs;
    size_t n_input_drvs;
    char **input_srcs;
    size_t n_input_srcs;
    char *system;
    char *builder;
    char **args;
    size_t n_args;
    obi_derivation_env *env;
    size_t n_env;
    /* The derivation's name, from its file name "<hash>-<name>.drv" (obi_derivation_read_file);
     * NULL when parsed from text. Fixed-output paths and placeholders are computed from it. */
    char *name;
} obi_derivation;

/* What a derivation's outputs are (Nix's DerivationType): all input-addressed with known paths,
 * input-addressed with paths deferred until content-addressed inputs are built, one fixed
 * output "out", or floating content-addressed (paths known after the build). */
typedef enum obi_derivation_kind {
    OBI_DRV_INPUT_ADDRESSED,
    OBI_DRV_DEFERRED,
    OBI_DRV_FIXED_OUTPUT,
    OBI_DRV_FLOATING,
} obi_derivation_kind;

/* Parses the ATerm text (len bytes; need not be NUL-terminated). Besides the syntax it checks:
 * output names non-empty and unique, env keys unique, hash_algo "" or ["r:"]md5|sha1|sha256|
 * sha512, a non-empty hash only with a hash_algo and then as lowercase hex of the algorithm's
 * length. Errors: "drv: offset N: ...". */
int obi_derivation_parse(const char *text, size_t len, obi_derivation **out, obi_error **err);
/* Reads and parses a .drv file and sets its name from the file name; errors are prefixed with
 * the path. */
int obi_derivation_read_file(const char *path, obi_derivation **out, obi_error **err);
void obi_derivation_free(obi_derivation *drv);

/* The ATerm text exactly as Nix writes it; caller frees *out (NUL-terminated). */
int obi_derivation_serialize(const obi_derivation *drv, char **out, size_t *out_len,
                             obi_error **err);

/* Appends to out what `nix show-derivation` (Nix 2.8) prints for drvs[i] keyed by names[i], in
 * the order given, byte for byte: {"<name>": {"outputs": {"out": {"path": .., ["hashAlgo": ..,
 * "hash": ..]}}, "inputSrcs": [..], "inputDrvs": {..}, "system": .., "builder": .., "args":
 * [..], "env": {..}}, ...} with two-space indents and a final newline. Strings are escaped as
 * Nix escapes them (\" \\ \n \r \t, other bytes below 0x20 as \u00xx) and every other byte is
 * written as it is: a value that is not UTF-8 comes out as Nix prints it, not UTF-8 either. */
int obi_derivations_show_json(char *const *names, const obi_derivation *const *drvs, size_t n,
                              obi_buf *out, obi_error **err);

/* The name of a derivation file: its base name without a leading "<32 hash chars>-" and a
 * trailing ".drv". Caller frees; NULL on out of memory. */
char *obi_derivation_name_from_path(const char *drv_path);

/* The kind of drv; mixed kinds are refused as Nix refuses them ("can't mix derivation output
 * types", "only one fixed output is allowed", "single fixed output must be named \"out\"",
 * "all floating outputs must use the same hash type"). */
int obi_derivation_kind_of(const obi_derivation *drv, obi_derivation_kind *out, obi_error **err);

/* The store path of output o of drv as Nix knows it before building: the path written for an
 * input-addressed output, the path computed from the hash for a fixed output (the written one
 * when drv->name is unknown), none (*out NULL) for a floating or deferred one. Caller frees. */
int obi_derivation_output_path(const obi_derivation *drv, const obi_derivation_output *o,
                               char **out, obi_error **err);

/* A fixed-output derivation: a single output "out" with a hash_algo and a hash. */
bool obi_derivation_is_fixed_output(const obi_derivation *drv);
/* The output named name, or NULL. */
const obi_derivation_output *obi_derivation_find_output(const obi_derivation *drv,
                                                        const char *name);
/* The env value of key, or NULL. */
const char *obi_derivation_get_env(const obi_derivation *drv, const char *key);

/* Splits a hash_algo: recursive ("r:" prefix) and the bare algorithm name; the digest length in
 * bytes (16, 20, 32, 64). -EINVAL for anything else. */
int obi_derivation_hash_algo_parse(const char *hash_algo, bool *recursive, const char **algo,
                                   size_t *digest_len, obi_error **err);

static inline void obi_derivation_freep(obi_derivation **d)
{
    obi_derivation_free(*d);
}
#define cleanup_derivation __attribute__((cleanup(obi_derivation_freep)))

#endif
