/*
 * The BuildRequest and Build model (../shared/spec/build.md, tvix.build.v1): C structs mirroring
 * the protobuf messages, decoding/encoding in protobuf binary and protobuf-JSON form, and the
 * validation rules (each error names the field and index). Nothing here touches the disk.
 */
#ifndef OCIBUILD_REQUEST_H
#define OCIBUILD_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/node.h"

typedef struct obi_env_var {
    char *key;
    obi_bytes value;
} obi_env_var;

typedef struct obi_additional_file {
    char *path;
    obi_bytes contents;
} obi_additional_file;

typedef struct obi_build_constraints {
    char *system;
    uint64_t min_memory;
    char **available_ro_paths;
    size_t n_available_ro_paths;
    bool network_access;
    bool provide_bin_sh;
    bool hide_sys; /* ocibuild's field 1000: no /sys mount (Nix's sandbox has none) */
} obi_build_constraints;

typedef struct obi_build_request {
    obi_node *inputs;
    size_t n_inputs;
    char **command_args;
    size_t n_command_args;
    char *working_dir; /* never NULL after decode ("" when unset) */
    char **scratch_paths;
    size_t n_scratch_paths;
    char *inputs_dir; /* never NULL after decode */
    char **outputs;
    size_t n_outputs;
    obi_env_var *environment_vars;
    size_t n_environment_vars;
    bool has_constraints;
    obi_build_constraints constraints;
    obi_additional_file *additional_files;
    size_t n_additional_files;
    char **refscan_needles;
    size_t n_refscan_needles;
} obi_build_request;

typedef struct obi_output_needles {
    uint64_t *needles; /* ascending indexes into refscan_needles */
    size_t n_needles;
} obi_output_needles;

typedef struct obi_build {
    obi_build_request *request; /* owned copy */
    obi_node *outputs;          /* one per requested output, same order */
    size_t n_outputs;
    obi_output_needles *outputs_needles; /* n_outputs entries (or NULL when n_outputs is 0) */
} obi_build;

obi_build_request *obi_build_request_new(void);
void obi_build_request_free(obi_build_request *req);
int obi_build_request_copy(const obi_build_request *req, obi_build_request **out, obi_error **err);

int obi_build_request_decode_pb(const uint8_t *data, size_t len, obi_build_request **out,
                                obi_error **err);
int obi_build_request_encode_pb(const obi_build_request *req, uint8_t **out, size_t *out_len,
                                obi_error **err);
/* protobuf JSON mapping; lowerCamelCase and original field names both accepted; unknown
 * fields refused naming them. */
int obi_build_request_from_json(const json_t *json, obi_build_request **out, obi_error **err);
json_t *obi_build_request_to_json(const obi_build_request *req);

/* Every rule of build.md; errors name the field and index ("outputs[2]: ..."). Beyond the
 * spec's list, additional files must lie strictly inside a scratch path (they are written
 * below it). Strings cannot hold NUL here: the decoders refuse NUL in string fields. */
int obi_build_request_validate(const obi_build_request *req, obi_error **err);

/* A clean relative path: non-empty, no leading or trailing '/', no empty, "." or ".."
 * component. */
bool obi_path_is_clean_relative(const char *path);
/* The scratch path that contains path (a clean relative path): the longest one matching
 * whole components ("nix/sto" does not contain "nix/store/x"). *rest (optional) points into
 * path after the scratch path and its '/' ("" when path is the scratch path itself).
 * Returns 0, or -ENOENT (no error set) when no scratch path contains it. */
int obi_build_request_find_scratch(const obi_build_request *req, const char *path,
                                   size_t *scratch_index, const char **rest);

/* An empty Build (all NULL / 0); NULL on out of memory. */
obi_build *obi_build_new(void);
void obi_build_free(obi_build *build);
int obi_build_encode_pb(const obi_build *build, uint8_t **out, size_t *out_len, obi_error **err);
int obi_build_decode_pb(const uint8_t *data, size_t len, obi_build **out, obi_error **err);
json_t *obi_build_to_json(const obi_build *build);
int obi_build_from_json(const json_t *json, obi_build **out, obi_error **err);

static inline void obi_build_request_freep(obi_build_request **r)
{
    obi_build_request_free(*r);
}
static inline void obi_build_freep(obi_build **b)
{
    obi_build_free(*b);
}
#define cleanup_build_request __attribute__((cleanup(obi_build_request_freep)))
#define cleanup_build __attribute__((cleanup(obi_build_freep)))

#endif
