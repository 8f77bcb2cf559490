/*
 * Floating content-addressed outputs (see include/ocibuild/nix_ca.h): the scratch path, the
 * hash modulo the scratch hash part (a streaming replacement in front of the digest, which
 * remembers where it replaced), and the rewrite of a castore tree (files through the same
 * streaming replacement into new blobs, directories rebuilt leaves first).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/array.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation.h"
#include "ocibuild/nar.h"
#include "ocibuild/nix_ca.h"
#include "ocibuild/sha256.h"

char *obi_nix_ca_scratch_path(const char *drv_path, const char *drv_name, const char *output_name)
{
    const char *base = strrchr(drv_path, '/');
    base = base ? base + 1 : drv_path;
    cleanup_free char *type = NULL;
    cleanup_free char *name = obi_nix_output_path_name(drv_name, output_name);
    if (!name || asprintf(&type, "rewrite:%s:name:%s", base, output_name) < 0)
        return NULL;
    static const uint8_t zero[OBI_SHA256_LEN];
    return obi_nix_make_store_path(type, zero, name);
}

/* ---- a streaming replacement (Nix's RewritingSink) ---- */

typedef int (*bytes_fn)(void *ctx, const void *data, size_t len, obi_error **err);

typedef struct rewriter {
    const char *from;
    const char *to;  /* NULL: zeros */
    size_t len;      /* of from and to */
    obi_buf pending; /* the last len - 1 bytes seen, which may start a match */
    uint64_t pos;    /* bytes passed on so far */
    uint64_t *matches;
    size_t n_matches, cap_matches;
    bool record;
    bytes_fn next;
    void *next_ctx;
} rewriter;

static void rewriter_clear(rewriter *w)
{
    obi_buf_free(&w->pending);
    free(w->matches);
}

static int rewriter_feed(void *ctx, const void *data, size_t len, obi_error **err)
{
    rewriter *w = ctx;
    if (obi_buf_append(&w->pending, data, len) < 0)
        return obi_error_oom(err);
    uint8_t *s = w->pending.data;
    size_t n = w->pending.len;
    for (size_t j = 0; j + w->len <= n;) {
        uint8_t *hit = memmem(s + j, n - j, w->from, w->len);
        if (!hit)
            break;
        j = (size_t)(hit - s);
        if (w->record) {
            if (obi_array_grow(&w->matches, &w->cap_matches, w->n_matches + 1) < 0)
                return obi_error_oom(err);
            w->matches[w->n_matches++] = w->pos + j;
        }
        if (w->to)
            memcpy(hit, w->to, w->len);
        else
            memset(hit, 0, w->len);
        /* as Nix, search on from the replacement itself (it differs from `from`) */
        j++;
    }
    /* keep what could still begin a match */
    size_t keep = n < w->len ? n : w->len - 1;
    size_t emit = n - keep;
    if (emit > 0) {
        int r = w->next(w->next_ctx, s, emit, err);
        if (r < 0)
            return r;
        w->pos += emit;
        memmove(s, s + emit, keep);
        w->pending.len = keep;
    }
    return 0;
}

static int rewriter_flush(rewriter *w, obi_error **err)
{
    if (w->pending.len == 0)
        return 0;
    int r = w->next(w->next_ctx, w->pending.data, w->pending.len, err);
    w->pos += w->pending.len;
    w->pending.len = 0;
    return r;
}

/* ---- hash modulo ---- */

static void md_freep(obi_md **md)
{
    obi_md_free(*md);
}

static int digest_feed(void *ctx, const void *data, size_t len, obi_error **err)
{
    if (obi_md_update(ctx, data, len) < 0)
        return obi_error_set(err, -EIO, "digest update failed");
    return 0;
}

/* The contents of a file node through fn. */
static int read_blob(obi_blob_service *blobs, const obi_node *node, bytes_fn fn, void *ctx,
                     obi_error **err)
{
    cleanup_blob_reader obi_blob_reader *reader = NULL;
    int r = obi_blob_open_read(blobs, &node->digest, &reader, err);
    if (r < 0)
        return r;
    uint8_t chunk[16384];
    for (;;) {
        size_t n = 0;
        if ((r = obi_blob_read(reader, chunk, sizeof chunk, &n, err)) < 0)
            return r;
        if (n == 0)
            return 0;
        if ((r = fn(ctx, chunk, n, err)) < 0)
            return r;
    }
}

int obi_nix_ca_hash(obi_blob_service *blobs, obi_directory_service *directories,
                    const obi_node *node, bool recursive, const char *algo, const char *modulus,
                    uint8_t out[64], size_t *out_len, obi_error **err)
{
    _cleanup_(md_freep) obi_md *ctx = obi_md_new(algo);
    if (!ctx)
        return obi_error_set(err, -ENOTSUP, "%s is not available from OpenSSL", algo);
    _cleanup_(rewriter_clear) rewriter w = {.from = modulus,
                                            .to = NULL,
                                            .len = strlen(modulus),
                                            .record = true,
                                            .next = digest_feed,
                                            .next_ctx = ctx};
    int r;
    if (recursive)
        r = obi_nar_write_node(blobs, directories, node, rewriter_feed, &w, err);
    else if (node->kind != OBI_NODE_FILE)
        return obi_error_set(err, -EINVAL, "a flat %s hash needs a regular file", algo);
    else
        r = read_blob(blobs, node, rewriter_feed, &w, err);
    if (r >= 0)
        r = rewriter_flush(&w, err);
    for (size_t i = 0; r >= 0 && i < w.n_matches; i++) {
        char text[32];
        int len = snprintf(text, sizeof text, "|%llu", (unsigned long long)w.matches[i]);
        r = digest_feed(ctx, text, (size_t)len, err);
    }
    if (r < 0)
        return r;
    size_t n = 0;
    uint8_t digest[OBI_MD_MAX_LEN];
    if (obi_md_final(ctx, digest, &n) < 0 || n > 64)
        return obi_error_set(err, -EIO, "%s: digest failed", algo);
    memcpy(out, digest, n);
    *out_len = n;
    return 0;
}

/* ---- rewriting a tree ---- */

typedef struct tree_rewrite {
    obi_blob_service *blobs;
    obi_directory_service *directories;
    obi_directory_putter *putter;
    const obi_nix_rewrite *rewrites;
    size_t n;
} tree_rewrite;

/* bytes with every rewrite applied (equal lengths, so the length stays). */
static void rewrite_bytes(const tree_rewrite *t, uint8_t *data, size_t len)
{
    for (size_t i = 0; i < t->n; i++) {
        size_t flen = strlen(t->rewrites[i].from);
        for (uint8_t *p = data;
             (p = memmem(p, len - (size_t)(p - data), t->rewrites[i].from, flen)); p += flen)
            memcpy(p, t->rewrites[i].to, flen);
    }
}

static int blob_write_fn(void *ctx, const void *data, size_t len, obi_error **err)
{
    return obi_blob_write(ctx, data, len, err);
}

/* A file's contents through each rewrite in turn (one streaming stage per rewrite). */
static int rewrite_file(const tree_rewrite *t, obi_node *node, obi_error **err)
{
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = obi_blob_open_write(t->blobs, &writer, err);
    if (r < 0)
        return r;
    rewriter stages[8];
    size_t n = t->n < OBI_ARRAY_SIZE(stages) ? t->n : OBI_ARRAY_SIZE(stages);
    if (t->n > n)
        return obi_error_set(err, -E2BIG, "more than %zu rewrites at once", n);
    memset(stages, 0, sizeof stages);
    for (size_t i = n; i-- > 0;) {
        stages[i] = (rewriter){.from = t->rewrites[i].from,
                               .to = t->rewrites[i].to,
                               .len = strlen(t->rewrites[i].from),
                               .next = i + 1 < n ? rewriter_feed : blob_write_fn,
                               .next_ctx = i + 1 < n ? (void *)&stages[i + 1] : (void *)writer};
    }
    r = n ? read_blob(t->blobs, node, rewriter_feed, &stages[0], err)
          : read_blob(t->blobs, node, blob_write_fn, writer, err);
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = rewriter_flush(&stages[i], err);
    for (size_t i = 0; i < n; i++)
        rewriter_clear(&stages[i]);
    if (r >= 0)
        r = obi_blob_finish(writer, &node->digest, err);
    return r;
}

static int rewrite_name(const tree_rewrite *t, obi_bytes *name)
{
    rewrite_bytes(t, name->data, name->len);
    return 0;
}

static int rewrite_tree(const tree_rewrite *t, obi_node *node, unsigned depth, obi_error **err);

static int rewrite_directory(const tree_rewrite *t, obi_node *node, unsigned depth, obi_error **err)
{
    if (depth > OBI_DIRECTORY_MAX_DEPTH)
        return obi_error_set(err, -ELOOP, "rewrite: directories nested deeper than %d",
                             OBI_DIRECTORY_MAX_DEPTH);
    cleanup_directory obi_directory *dir = NULL;
    int r = obi_directory_get(t->directories, &node->digest, &dir, err);
    if (r < 0)
        return r;
    obi_node *lists[] = {dir->directories, dir->files, dir->symlinks};
    size_t counts[] = {dir->n_directories, dir->n_files, dir->n_symlinks};
    for (size_t l = 0; l < 3; l++)
        for (size_t i = 0; i < counts[l]; i++)
            if ((r = rewrite_tree(t, &lists[l][i], depth + 1, err)) < 0)
                return r;
    obi_directory_sort(dir);
    if (!t->putter) /* obi_nix_ca_rewrite_node opens one for a directory root */
        return obi_error_set(err, -EINVAL, "rewrite: directory without a directory putter");
    if ((r = obi_directory_put(t->putter, dir, &node->digest, err)) < 0)
        return r;
    node->size = obi_directory_size(dir);
    return 0;
}

static int rewrite_tree(const tree_rewrite *t, obi_node *node, unsigned depth, obi_error **err)
{
    rewrite_name(t, &node->name);
    switch (node->kind) {
    case OBI_NODE_FILE:
        return rewrite_file(t, node, err);
    case OBI_NODE_SYMLINK:
        rewrite_bytes(t, node->target.data, node->target.len);
        return 0;
    case OBI_NODE_DIRECTORY:
        return rewrite_directory(t, node, depth, err);
    }
    return obi_error_set(err, -EINVAL, "rewrite: unknown node kind %d", (int)node->kind);
}

int obi_nix_ca_rewrite_node(obi_blob_service *blobs, obi_directory_service *directories,
                            const obi_node *node, const obi_nix_rewrite *rewrites, size_t n,
                            obi_node *out, obi_error **err)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(rewrites[i].from) != strlen(rewrites[i].to) || !*rewrites[i].from)
            return obi_error_set(err, -EINVAL, "rewrite: '%s' and '%s' differ in length",
                                 rewrites[i].from, rewrites[i].to);
    cleanup_node obi_node copy = {0};
    if (obi_node_copy(&copy, node) < 0)
        return obi_error_oom(err);
    cleanup_directory_putter obi_directory_putter *putter = NULL;
    int r = 0;
    if (node->kind == OBI_NODE_DIRECTORY &&
        (r = obi_directory_open_put(directories, &putter, err)) < 0)
        return r;
    tree_rewrite t = {blobs, directories, putter, rewrites, n};
    if ((r = rewrite_tree(&t, &copy, 0, err)) < 0)
        return obi_error_prefix(err, r, "rewrite");
    if (putter) {
        obi_digest root;
        if ((r = obi_directory_putter_finish(putter, &root, err)) < 0)
            return obi_error_prefix(err, r, "rewrite");
    }
    *out = copy;
    memset(&copy, 0, sizeof copy);
    return 0;
}
