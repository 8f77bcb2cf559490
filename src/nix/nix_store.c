/*
 * A derivation's inputs from the local Nix store (see include/ocibuild/nix_store.h): input
 * paths from the .drv and its input .drv files, the closure from `nix-store -q -R` (process.h,
 * no shell), and the import into castore through ingest.h. derivation_request.c consumes the
 * resulting nodes; the nix-build command strings the steps together.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/ingest.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/process.h"
#include "ocibuild/strv.h"

#define NIX_STORE_MAX_OUTPUT (64u * 1024 * 1024)

/* ---- store paths ---- */

int obi_nix_store_path_parse(const char *path, const char **basename, obi_error **err)
{
    const char *prefix = OBI_NIX_STORE_DIR "/";
    size_t prefix_len = strlen(prefix);
    if (strncmp(path, prefix, prefix_len) != 0)
        return obi_error_set(err, -EINVAL, "'%s' is not in %s", path, OBI_NIX_STORE_DIR);
    const char *base = path + prefix_len;
    size_t len = strlen(base);
    if (len < OBI_NIX_HASH_PART_LEN + 2 || base[OBI_NIX_HASH_PART_LEN] != '-')
        return obi_error_set(err, -EINVAL,
                             "'%s' is not a store path (expected %s/<32 hash chars>-<name>)", path,
                             OBI_NIX_STORE_DIR);
    if (strchr(base, '/'))
        return obi_error_set(err, -EINVAL, "'%s' is not a store path (it has a '/' after %s/)",
                             path, OBI_NIX_STORE_DIR);
    uint8_t digest[20];
    cleanup_error obi_error *decode_err = NULL;
    if (obi_nixbase32_decode(base, OBI_NIX_HASH_PART_LEN, digest, sizeof digest, &decode_err) < 0)
        return obi_error_set(err, -EINVAL, "'%s' is not a store path: hash part: %s", path,
                             decode_err->message);
    /* the name: Nix 2.8's checkName */
    const char *name = base + OBI_NIX_HASH_PART_LEN + 1;
    if (strlen(name) > OBI_NIX_NAME_MAX)
        return obi_error_set(err, -EINVAL,
                             "'%s' is not a store path: its name is longer than %d characters",
                             path, OBI_NIX_NAME_MAX);
    size_t good = strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                               "+-._?=");
    if (name[good])
        return obi_error_set(err, -EINVAL,
                             "'%s' is not a store path: illegal character '%c' in its name", path,
                             name[good]);
    *basename = base;
    return 0;
}

/* ---- input paths ---- */

static int add_input_drv_outputs(obi_strv_builder *set, const obi_derivation_input *in,
                                 obi_error **err)
{
    cleanup_derivation obi_derivation *input = NULL;
    int r = obi_derivation_read_file(in->drv_path, &input, err);
    if (r < 0)
        return obi_error_prefix(err, r, "input derivation");
    for (size_t i = 0; i < in->n_outputs; i++) {
        const obi_derivation_output *o = obi_derivation_find_output(input, in->outputs[i]);
        if (!o)
            return obi_error_set(err, -EINVAL, "input derivation %s has no output '%s'",
                                 in->drv_path, in->outputs[i]);
        if (!*o->path)
            return obi_error_set(err, -ENOTSUP,
                                 "input derivation %s: output '%s' has no path (floating "
                                 "content-addressed derivations are not supported)",
                                 in->drv_path, in->outputs[i]);
        if (obi_strv_builder_add(set, o->path) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

int obi_derivation_input_paths(const obi_derivation *drv, char ***paths_out, size_t *n_out,
                               obi_error **err)
{
    cleanup_strv_builder obi_strv_builder set = {0};
    for (size_t i = 0; i < drv->n_input_srcs; i++)
        if (obi_strv_builder_add(&set, drv->input_srcs[i]) < 0)
            return obi_error_oom(err);
    for (size_t i = 0; i < drv->n_input_drvs; i++) {
        int r = add_input_drv_outputs(&set, &drv->input_drvs[i], err);
        if (r < 0)
            return r;
    }
    obi_strv_builder_sort_unique(&set);
    size_t n = 0;
    char **paths = obi_strv_builder_steal(&set, &n);
    if (!paths)
        return obi_error_oom(err);
    *paths_out = paths;
    *n_out = n;
    return 0;
}

/* ---- closure ---- */

/* The last few lines of a command's output, for error messages. */
static const char *output_tail(const char *output)
{
    size_t len = strlen(output);
    while (len > 0 && output[len - 1] == '\n')
        len--;
    const char *p = output + len;
    int lines = 0;
    while (p > output && lines < 3) {
        p--;
        if (*p == '\n')
            lines++;
    }
    return *p == '\n' ? p + 1 : p;
}

/* Runs nix-store -q -R and adds every store path it prints to set. */
static int run_closure(const char *nix_store, char *const *paths, size_t n_paths,
                       obi_strv_builder *set, obi_error **err)
{
    const char *program = nix_store ? nix_store : "nix-store";
    cleanup_free char **argv = calloc(n_paths + 4, sizeof *argv);
    if (!argv)
        return obi_error_oom(err);
    argv[0] = (char *)program;
    argv[1] = (char *)"--query";
    argv[2] = (char *)"--requisites";
    for (size_t i = 0; i < n_paths; i++)
        argv[3 + i] = paths[i];
    cleanup_free char *output = NULL;
    int exit_code = 0;
    /* stderr merged so that a failure can be explained; warnings are not store paths and are
     * skipped below */
    int r = obi_run_capture(argv, true, NIX_STORE_MAX_OUTPUT, &output, &exit_code, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s --query --requisites", program);
    if (exit_code != 0)
        return obi_error_set(err, -EIO, "%s --query --requisites failed (exit %d): %s", program,
                             exit_code, output_tail(output));
    for (char *line = output, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, OBI_NIX_STORE_DIR "/", strlen(OBI_NIX_STORE_DIR "/")) != 0)
            continue;
        const char *base;
        r = obi_nix_store_path_parse(line, &base, err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s --query --requisites", program);
        if (obi_strv_builder_add(set, line) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

int obi_nix_store_closure(const char *nix_store, char *const *paths, size_t n_paths,
                          char ***closure_out, size_t *n_out, obi_error **err)
{
    cleanup_strv_builder obi_strv_builder set = {0};
    if (n_paths > 0) {
        int r = run_closure(nix_store, paths, n_paths, &set, err);
        if (r < 0)
            return r;
    }
    obi_strv_builder_sort_unique(&set);
    size_t n = 0;
    char **closure = obi_strv_builder_steal(&set, &n);
    if (!closure)
        return obi_error_oom(err);
    *closure_out = closure;
    *n_out = n;
    return 0;
}

/* ---- import ---- */

void obi_nix_nodes_free(obi_node *nodes, size_t n)
{
    if (!nodes)
        return;
    for (size_t i = 0; i < n; i++)
        obi_node_clear(&nodes[i]);
    free(nodes);
}

int obi_nix_import_paths(obi_blob_service *blobs, obi_directory_service *directories,
                         char *const *paths, size_t n_paths, obi_node **nodes_out, obi_error **err)
{
    obi_node *nodes = calloc(n_paths ? n_paths : 1, sizeof *nodes);
    if (!nodes)
        return obi_error_oom(err);
    for (size_t i = 0; i < n_paths; i++) {
        const char *base;
        int r = obi_nix_store_path_parse(paths[i], &base, err);
        if (r >= 0) {
            obi_ingest_options options = {.name = base, .refscan = NULL};
            r = obi_ingest_path(blobs, directories, paths[i], &options, &nodes[i], err);
        }
        if (r < 0) {
            obi_nix_nodes_free(nodes, i);
            return obi_error_prefix(err, r, "import %s", paths[i]);
        }
    }
    *nodes_out = nodes;
    return 0;
}

int obi_derivation_import_inputs(obi_blob_service *blobs, obi_directory_service *directories,
                                 const char *nix_store, const obi_derivation *drv,
                                 obi_node **nodes_out, size_t *n_out, obi_error **err)
{
    cleanup_strv char **inputs = NULL, **closure = NULL;
    size_t n_inputs = 0, n_closure = 0;
    int r = obi_derivation_input_paths(drv, &inputs, &n_inputs, err);
    if (r >= 0)
        r = obi_nix_store_closure(nix_store, inputs, n_inputs, &closure, &n_closure, err);
    if (r >= 0)
        r = obi_nix_import_paths(blobs, directories, closure, n_closure, nodes_out, err);
    if (r < 0)
        return r;
    *n_out = n_closure;
    return 0;
}
