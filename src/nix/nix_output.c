/*
 * Outputs of a derivation's build (see include/ocibuild/nix_output.h): references from found
 * needles, and fixed-output hash checks. Content hashes other than SHA-256 (md5, sha1, sha512
 * are legal in fixed-output derivations) come from libcrypto by name (sha256.h's obi_md,
 * loaded on first use); the NAR stream comes from nar.c through a sink that feeds the digest.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/hex.h"
#include "ocibuild/nar.h"
#include "ocibuild/nix_output.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/sha256.h"
#include "ocibuild/strv.h"

/* ---- references ---- */

static char *needle_path(const obi_derivation *drv, const obi_build_request *req, uint64_t index)
{
    if (index < drv->n_outputs)
        return strdup(drv->outputs[index].path);
    char *path = NULL;
    if (asprintf(&path, OBI_NIX_STORE_DIR "/%s",
                 (const char *)req->inputs[index - drv->n_outputs].name.data) < 0)
        return NULL;
    return path;
}

int obi_nix_output_references(const obi_derivation *drv, const obi_build_request *req,
                              const obi_output_needles *found, char ***refs_out, size_t *n_out,
                              obi_error **err)
{
    size_t n = found ? found->n_needles : 0;
    cleanup_strv char **refs = calloc(n + 1, sizeof *refs);
    if (!refs)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++) {
        uint64_t index = found->needles[i];
        if (index >= drv->n_outputs + req->n_inputs)
            return obi_error_set(err, -EINVAL,
                                 "needle index %llu out of range (%zu outputs, %zu inputs)",
                                 (unsigned long long)index, drv->n_outputs, req->n_inputs);
        refs[i] = needle_path(drv, req, index);
        if (!refs[i])
            return obi_error_oom(err);
    }
    if (n > 1)
        qsort(refs, n, sizeof *refs, obi_strv_item_compare);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (kept > 0 && strcmp(refs[kept - 1], refs[i]) == 0) {
            free(refs[i]);
            refs[i] = NULL;
            continue;
        }
        refs[kept] = refs[i];
        if (kept != i)
            refs[i] = NULL;
        kept++;
    }
    *refs_out = steal_pointer(&refs);
    *n_out = kept;
    return 0;
}

/* ---- one pass: NAR hash and references ---- */

typedef struct scan_sink {
    obi_sha256 *sha;
    obi_refscan_state *refs;
    uint64_t size;
} scan_sink;

static int scan_feed(void *ctx, const void *data, size_t len, obi_error **err)
{
    (void)err;
    scan_sink *s = ctx;
    obi_sha256_update(s->sha, data, len);
    obi_refscan_feed(s->refs, data, len);
    s->size += len;
    return 0;
}

int obi_nix_scan_node(obi_blob_service *blobs, obi_directory_service *directories,
                      const obi_node *node, const obi_refscan *scanner, obi_nar_hash *nar,
                      size_t **found, size_t *n_found, obi_error **err)
{
    cleanup_sha256 obi_sha256 *sha = obi_sha256_new();
    cleanup_refscan_state obi_refscan_state *refs = NULL;
    if (!sha)
        return obi_error_oom(err);
    int r = obi_refscan_state_new(scanner, &refs, err);
    if (r < 0)
        return r;
    scan_sink sink = {sha, refs, 0};
    if ((r = obi_nar_write_node(blobs, directories, node, scan_feed, &sink, err)) < 0)
        return r;
    obi_refscan_end_stream(refs);
    if ((r = obi_refscan_state_result(refs, found, n_found, err)) < 0)
        return r;
    obi_sha256_final(sha, nar->sha256);
    nar->size = sink.size;
    return 0;
}

/* ---- content hashes ---- */

static void md_freep(obi_md **md)
{
    obi_md_free(*md);
}

static int digest_sink(void *ctx, const void *data, size_t len, obi_error **err)
{
    if (obi_md_update(ctx, data, len) < 0)
        return obi_error_set(err, -EIO, "digest update failed");
    return 0;
}

/* Feeds the contents of a file node into ctx. */
static int digest_blob(obi_blob_service *blobs, const obi_node *node, obi_md *ctx, obi_error **err)
{
    cleanup_blob_reader obi_blob_reader *reader = NULL;
    int r = obi_blob_open_read(blobs, &node->digest, &reader, err);
    if (r < 0)
        return r;
    uint8_t chunk[16384];
    for (;;) {
        size_t n = 0;
        r = obi_blob_read(reader, chunk, sizeof chunk, &n, err);
        if (r < 0)
            return r;
        if (n == 0)
            return 0;
        r = digest_sink(ctx, chunk, n, err);
        if (r < 0)
            return r;
    }
}

int obi_nix_hash_node(obi_blob_service *blobs, obi_directory_service *directories,
                      const obi_node *node, const char *hash_algo,
                      uint8_t out[OBI_NIX_HASH_MAX_LEN], size_t *out_len, obi_error **err)
{
    bool recursive = false;
    const char *algo = NULL;
    size_t len = 0;
    int r = obi_derivation_hash_algo_parse(hash_algo, &recursive, &algo, &len, err);
    if (r < 0)
        return r;
    _cleanup_(md_freep) obi_md *ctx = obi_md_new(algo);
    if (!ctx)
        return obi_error_set(err, -ENOTSUP, "%s is not available from OpenSSL", algo);
    if (recursive) {
        r = obi_nar_write_node(blobs, directories, node, digest_sink, ctx, err);
    } else if (node->kind != OBI_NODE_FILE) {
        return obi_error_set(err, -EINVAL, "a flat %s hash needs a regular file, not a %s", algo,
                             node->kind == OBI_NODE_DIRECTORY ? "directory" : "symlink");
    } else {
        r = digest_blob(blobs, node, ctx, err);
    }
    if (r < 0)
        return r;
    size_t n = 0;
    uint8_t digest[OBI_MD_MAX_LEN];
    if (obi_md_final(ctx, digest, &n) < 0 || n != len)
        return obi_error_set(err, -EIO, "%s: digest failed", algo);
    memcpy(out, digest, len);
    *out_len = len;
    return 0;
}

/* "<algo>:<nixbase32>" as Nix prints content hashes; caller frees. */
static char *format_hash(const char *algo, const uint8_t *digest, size_t len)
{
    char encoded[2 * OBI_NIX_HASH_MAX_LEN];
    obi_nixbase32_encode(digest, len, encoded);
    char *s = NULL;
    if (asprintf(&s, "%s:%s", algo, encoded) < 0)
        return NULL;
    return s;
}

int obi_nix_check_fixed_output(obi_blob_service *blobs, obi_directory_service *directories,
                               const obi_derivation_output *output, const obi_node *node,
                               obi_error **err)
{
    bool recursive = false;
    const char *algo = NULL;
    size_t len = 0;
    int r = obi_derivation_hash_algo_parse(output->hash_algo, &recursive, &algo, &len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "fixed-output derivation '%s'", output->path);
    uint8_t wanted[OBI_NIX_HASH_MAX_LEN];
    if (strlen(output->hash) != 2 * len || obi_hex_decode(output->hash, 2 * len, wanted, len) < 0)
        return obi_error_set(err, -EINVAL,
                             "fixed-output derivation '%s': declared hash is not %zu hex digits",
                             output->path, 2 * len);
    uint8_t got[OBI_NIX_HASH_MAX_LEN];
    size_t got_len = 0;
    r = obi_nix_hash_node(blobs, directories, node, output->hash_algo, got, &got_len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "fixed-output derivation '%s'", output->path);
    if (got_len == len && memcmp(got, wanted, len) == 0)
        return 0;
    cleanup_free char *specified = format_hash(algo, wanted, len);
    cleanup_free char *actual = format_hash(algo, got, got_len);
    return obi_error_set(err, OBI_EHASH_MISMATCH,
                         "hash mismatch in fixed-output derivation '%s': specified %s, got %s",
                         output->path, specified ? specified : "?", actual ? actual : "?");
}
