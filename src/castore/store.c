/*
 * The store front: the calls of store.h, each dispatching through the backend's ops
 * (store_backend.h) so that callers never see inside a service; the choice of a backend by URL
 * (docs/store.md); and what every backend shares: whole-blob convenience calls, the generic
 * breadth-first recursive directory walk, and the putter's child rule.
 *
 * Built-in schemes: memory://, objectstore+file:///ABS/DIR and plain paths (relative ones are
 * made absolute against the working directory). Higher layers add schemes (grpc+unix,
 * grpc+http) with obi_store_register_scheme, so castore never depends on rpc.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "castore.pb-c.h"
#include "ocibuild/array.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/pb_wire.h"
#include "ocibuild/store_backend.h"
#include "store_internal.h"

/* ---- the calls of store.h, dispatched through the backend's ops ---- */

int obi_blob_has(obi_blob_service *svc, const obi_digest *digest, obi_error **err)
{
    return svc->ops->has(svc, digest, err);
}

int obi_blob_open_read(obi_blob_service *svc, const obi_digest *digest, obi_blob_reader **out,
                       obi_error **err)
{
    return svc->ops->open_read(svc, digest, out, err);
}

int obi_blob_read(obi_blob_reader *reader, void *buf, size_t len, size_t *nread, obi_error **err)
{
    return reader->ops->read(reader, buf, len, nread, err);
}

void obi_blob_reader_close(obi_blob_reader *reader)
{
    if (reader)
        reader->ops->close(reader);
}

int obi_blob_open_write(obi_blob_service *svc, obi_blob_writer **out, obi_error **err)
{
    return svc->ops->open_write(svc, out, err);
}

int obi_blob_open_write_expecting(obi_blob_service *svc, const obi_digest *expected,
                                  obi_blob_writer **out, obi_error **err)
{
    return svc->ops->open_write_expecting ? svc->ops->open_write_expecting(svc, expected, out, err)
                                          : svc->ops->open_write(svc, out, err);
}

int obi_blob_write(obi_blob_writer *writer, const void *data, size_t len, obi_error **err)
{
    return writer->ops->write(writer, data, len, err);
}

int obi_blob_finish(obi_blob_writer *writer, obi_digest *digest_out, obi_error **err)
{
    return writer->ops->finish(writer, digest_out, err);
}

int obi_blob_finish_pending(obi_blob_writer *writer, obi_digest *digest_out, obi_error **err)
{
    return writer->ops->finish_pending ? writer->ops->finish_pending(writer, digest_out, err)
                                       : writer->ops->finish(writer, digest_out, err);
}

void obi_blob_writer_close(obi_blob_writer *writer)
{
    if (writer)
        writer->ops->close(writer);
}

int obi_blob_local_path(obi_blob_service *svc, const obi_digest *digest, char **path_out,
                        obi_error **err)
{
    if (!svc->ops->local_path)
        return obi_error_set(err, -ENOTSUP, "this blob service keeps no local files");
    return svc->ops->local_path(svc, digest, path_out, err);
}

int obi_blob_service_sync(obi_blob_service *svc, obi_error **err)
{
    return svc->ops->sync ? svc->ops->sync(svc, err) : 0;
}

void obi_blob_service_free(obi_blob_service *svc)
{
    if (svc)
        svc->ops->free(svc);
}

int obi_directory_get(obi_directory_service *svc, const obi_digest *digest, obi_directory **out,
                      obi_error **err)
{
    return svc->ops->get(svc, digest, out, err);
}

int obi_directory_open_put(obi_directory_service *svc, obi_directory_putter **out, obi_error **err)
{
    return svc->ops->open_put(svc, out, err);
}

int obi_directory_put(obi_directory_putter *putter, const obi_directory *dir,
                      obi_digest *digest_out, obi_error **err)
{
    return putter->ops->put(putter, dir, digest_out, err);
}

int obi_directory_putter_finish(obi_directory_putter *putter, obi_digest *root_out, obi_error **err)
{
    return putter->ops->finish(putter, root_out, err);
}

int obi_directory_put_encoded(obi_directory_putter *p, uint8_t *data, size_t len,
                              obi_digest *digest_out, obi_error **err)
{
    cleanup_free uint8_t *owned = data;
    uint64_t size = 0;
    int r = obi_directory_check_canonical(data, len, &size, NULL, NULL, err);
    if (r < 0)
        return r;
    if (r == 1 && p->ops->put_canonical)
        return p->ops->put_canonical(p, steal_pointer(&owned), len, size, digest_out, err);
    if (r == 0 && len > OBI_DIRECTORY_DECODE_MAX) {
        /* Decoding costs several times the encoding's size: only small ones are. The error
         * says where the encoding departs from the canonical form. */
        r = obi_pb_check_canonical(&tvix__castore__v1__directory__descriptor, data, len, err);
        if (r == 0) /* not reached: obi_directory_check_canonical said it was not canonical */
            r = obi_error_set(err, -EINVAL, "not canonical");
        return obi_error_prefix(err, r,
                                "Directory of %zu bytes is not in canonical encoding (fields in "
                                "order, defaults omitted, minimal varints, no unknown fields) "
                                "and only up to %d bytes are re-encoded",
                                len, OBI_DIRECTORY_DECODE_MAX);
    }
    cleanup_directory obi_directory *dir = NULL;
    r = obi_directory_decode(data, len, &dir, err);
    if (r == 0)
        r = obi_directory_validate(dir, err);
    if (r == 0)
        r = obi_directory_put(p, dir, digest_out, err);
    return r;
}

int obi_blob_service_list(obi_blob_service *svc, obi_digest_visit_fn visit, void *ctx,
                          obi_error **err)
{
    if (!svc->ops->list)
        return obi_error_set(err, -ENOTSUP,
                             "this blob service cannot list its blobs (a remote store: verify "
                             "the store on the machine that serves it)");
    return svc->ops->list(svc, visit, ctx, err);
}

int obi_directory_service_list(obi_directory_service *svc, obi_digest_visit_fn visit, void *ctx,
                               obi_error **err)
{
    if (!svc->ops->list)
        return obi_error_set(err, -ENOTSUP,
                             "this directory service cannot list its directories (a remote "
                             "store: verify the store on the machine that serves it)");
    return svc->ops->list(svc, visit, ctx, err);
}

int obi_blob_service_remove(obi_blob_service *svc, const obi_digest *digest, uint64_t *freed,
                            obi_error **err)
{
    if (!svc->ops->remove)
        return obi_error_set(err, -ENOTSUP, "this blob service cannot remove blobs");
    return svc->ops->remove(svc, digest, freed, err);
}

int obi_directory_service_remove(obi_directory_service *svc, const obi_digest *digests, size_t n,
                                 uint64_t *freed, obi_error **err)
{
    if (!svc->ops->remove)
        return obi_error_set(err, -ENOTSUP, "this directory service cannot remove directories");
    return svc->ops->remove(svc, digests, n, freed, err);
}

int obi_digest_list_visit(const obi_digest *digests, size_t n, obi_digest_visit_fn visit, void *ctx,
                          obi_error **err)
{
    for (size_t i = 0; i < n; i++) {
        int r = visit(&digests[i], ctx, err);
        if (r < 0)
            return r;
    }
    return 0;
}

int obi_digest_map_keys(const obi_digest_map *map, obi_digest **out, size_t *n_out)
{
    obi_digest *keys = malloc((map->count ? map->count : 1) * sizeof *keys);
    if (!keys)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < map->capacity; i++)
        if (map->slots[i].value)
            keys[n++] = map->slots[i].key;
    *out = keys;
    *n_out = n;
    return 0;
}

void obi_directory_putter_close(obi_directory_putter *putter)
{
    if (putter)
        putter->ops->close(putter);
}

void obi_directory_service_free(obi_directory_service *svc)
{
    if (svc)
        svc->ops->free(svc);
}

int obi_blob_put_bytes(obi_blob_service *svc, const void *data, size_t len, obi_digest *out,
                       obi_error **err)
{
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = obi_blob_open_write(svc, &writer, err);
    if (r < 0)
        return r;
    r = obi_blob_write(writer, data, len, err);
    if (r < 0)
        return r;
    return obi_blob_finish(writer, out, err);
}

int obi_blob_get_bytes(obi_blob_service *svc, const obi_digest *digest, size_t max_len,
                       uint8_t **out, size_t *out_len, obi_error **err)
{
    cleanup_blob_reader obi_blob_reader *reader = NULL;
    int r = obi_blob_open_read(svc, digest, &reader, err);
    if (r < 0)
        return r;
    cleanup_buf obi_buf buf = OBI_BUF_INIT;
    for (;;) {
        if (obi_buf_reserve(&buf, 65536) < 0)
            return obi_error_oom(err);
        size_t n = 0;
        r = obi_blob_read(reader, buf.data + buf.len, buf.cap - buf.len - 1, &n, err);
        if (r < 0)
            return r;
        if (n == 0)
            break;
        buf.len += n;
        if (buf.len > max_len) {
            char hex[OBI_DIGEST_HEX_LEN + 1];
            obi_digest_to_hex(digest, hex);
            return obi_error_set(err, -EFBIG, "blob %s is larger than %zu bytes", hex, max_len);
        }
    }
    *out_len = buf.len;
    *out = (uint8_t *)obi_buf_steal(&buf);
    return 0;
}

/* ---- directories: shared rules ---- */

int obi_encoded_directory_new(const obi_directory *dir, obi_encoded_directory **out,
                              obi_digest *digest_out, obi_error **err)
{
    int r = obi_directory_validate(dir, err);
    if (r < 0)
        return r;
    obi_encoded_directory *encoded = calloc(1, sizeof *encoded);
    if (!encoded)
        return obi_error_oom(err);
    r = obi_directory_encode(dir, &encoded->data, &encoded->len, err);
    if (r < 0) {
        free(encoded);
        return r;
    }
    encoded->size = obi_directory_size(dir);
    obi_digest_of(encoded->data, encoded->len, digest_out);
    *out = encoded;
    return 0;
}

void obi_encoded_directory_free(void *encoded)
{
    obi_encoded_directory *e = encoded;
    if (!e)
        return;
    free(e->data);
    free(e);
}

/* ---- the depth rule ---- */

typedef struct depth_frame {
    obi_directory *dir;
    obi_digest digest;
    size_t next;        /* next child directory to look at */
    uint32_t max_child; /* deepest child seen so far */
} depth_frame;

/* Loads a directory from pending (decoding it) or from the service. */
static int load_for_depth(obi_directory_service *service, const obi_digest_map *pending,
                          const obi_digest *digest, obi_directory **out, obi_error **err)
{
    const obi_encoded_directory *p = obi_digest_map_get(pending, digest);
    if (p)
        return obi_directory_decode(p->data, p->len, out, err);
    return obi_directory_get(service, digest, out, err);
}

/* The exact depth of the tree at digest, counted with a loop over a heap stack (never deeper
 * than OBI_DIRECTORY_MAX_DEPTH + 1 frames: beyond that the answer is "too deep" anyway); each
 * directory is counted once (memo). The rare path: only when the size bounds say "maybe". */
static int exact_depth(obi_directory_service *service, const obi_digest_map *pending,
                       obi_digest_map *memo, const obi_digest *root, uint32_t *out, obi_error **err)
{
    const size_t max_frames = OBI_DIRECTORY_MAX_DEPTH + 1;
    cleanup_free depth_frame *stack = calloc(max_frames, sizeof *stack);
    if (!stack)
        return obi_error_oom(err);
    size_t n = 0;
    int r = load_for_depth(service, pending, root, &stack[0].dir, err);
    if (r == 0) {
        stack[0].digest = *root;
        n = 1;
    }
    while (r == 0 && n > 0) {
        depth_frame *f = &stack[n - 1];
        if (f->next < f->dir->n_directories) {
            const obi_node *child = &f->dir->directories[f->next++];
            uintptr_t known = (uintptr_t)obi_digest_map_get(memo, &child->digest);
            if (known) {
                if (known > f->max_child)
                    f->max_child = (uint32_t)known;
            } else if (n == max_frames) {
                f->max_child = OBI_DIRECTORY_MAX_DEPTH; /* too deep: stop counting */
            } else if ((r = load_for_depth(service, pending, &child->digest, &stack[n].dir, err)) ==
                       0) {
                stack[n].digest = child->digest;
                stack[n].next = 0;
                stack[n].max_child = 0;
                n++;
            }
            continue;
        }
        uint32_t depth = f->max_child + 1;
        /* the map holds pointers; a depth (never 0) rides in one instead of an allocation */
        // NOLINTNEXTLINE(performance-no-int-to-ptr)
        if (obi_digest_map_insert(memo, &f->digest, (void *)(uintptr_t)depth) < 0)
            r = obi_error_oom(err);
        obi_directory_free(f->dir);
        f->dir = NULL;
        if (--n == 0)
            *out = depth;
        else if (depth > stack[n - 1].max_child)
            stack[n - 1].max_child = depth;
    }
    for (size_t i = 0; i < n; i++)
        obi_directory_free(stack[i].dir);
    return r;
}

/* The putter rule for one child directory entry (its name may be borrowed): put before in this
 * stream, or stored, with the size its entry says. *bound: the child's depth in levels, exact
 * for one put before, else an upper bound from its size (a tree of size entries nests at most
 * size + 1 levels, and nothing stored nests deeper than the limit). */
static int check_child(const obi_node *child, const obi_digest_map *pending,
                       obi_stored_size_fn stored_size, void *ctx, uint32_t *bound, obi_error **err)
{
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&child->digest, hex);
    int name_len = (int)child->name.len;
    const char *name = (const char *)child->name.data;
    uint64_t size = 0;
    const obi_encoded_directory *p = obi_digest_map_get(pending, &child->digest);
    if (p) {
        size = p->size;
        *bound = p->depth;
    } else {
        int r = stored_size(ctx, &child->digest, &size, err);
        if (r < 0)
            return obi_error_prefix(err, r, "child directory '%.*s' (%s)", name_len, name, hex);
        if (r == 0)
            return obi_error_set(err, -EINVAL,
                                 "child directory '%.*s' (%s) was neither put before nor stored "
                                 "(put leaves first)",
                                 name_len, name, hex);
        *bound = size < OBI_DIRECTORY_MAX_DEPTH ? (uint32_t)size + 1 : OBI_DIRECTORY_MAX_DEPTH;
    }
    if (size != child->size)
        return obi_error_set(
            err, -EINVAL, "child directory '%.*s' (%s) has size %llu, but its entry says %llu",
            name_len, name, hex, (unsigned long long)size, (unsigned long long)child->size);
    return 0;
}

/* What the children of one directory add up to, child by child. */
typedef struct children_check {
    const obi_digest_map *pending;
    obi_stored_size_fn stored_size;
    void *ctx;
    obi_directory_service *service;
    obi_digest_map *depth_memo;
    uint32_t deepest;           /* over the children seen: exact, or a bound below the limit */
    obi_digest_map *referenced; /* NULL, or: pending children seen are added (a digest set) */
} children_check;

/* One child: checked, and when its bound says it may reach the limit, counted exactly (the
 * rare path; each directory once per putter, through depth_memo). */
static int children_check_one(const obi_node *child, void *ctx, obi_error **err)
{
    children_check *c = ctx;
    uint32_t depth = 0;
    int r = check_child(child, c->pending, c->stored_size, c->ctx, &depth, err);
    if (r == 0 && depth >= OBI_DIRECTORY_MAX_DEPTH)
        r = exact_depth(c->service, c->pending, c->depth_memo, &child->digest, &depth, err);
    if (r < 0)
        return r;
    if (depth >= OBI_DIRECTORY_MAX_DEPTH)
        return obi_error_set(err, -EINVAL,
                             "directories nested deeper than %d levels (the castore depth limit)",
                             OBI_DIRECTORY_MAX_DEPTH);
    if (depth > c->deepest)
        c->deepest = depth;
    if (c->referenced && obi_digest_map_get(c->pending, &child->digest) &&
        obi_digest_map_insert(c->referenced, &child->digest, OBI_DIGEST_SET_MEMBER) < 0)
        return obi_error_oom(err);
    return 0;
}

int obi_directory_check_children(const obi_directory *dir, const obi_digest_map *pending,
                                 obi_stored_size_fn stored_size, void *ctx,
                                 obi_directory_service *service, obi_digest_map *depth_memo,
                                 uint32_t *depth, obi_error **err)
{
    children_check check = {pending, stored_size, ctx, service, depth_memo, 0, NULL};
    for (size_t i = 0; i < dir->n_directories; i++) {
        int r = children_check_one(&dir->directories[i], &check, err);
        if (r < 0)
            return r;
    }
    *depth = check.deepest + 1;
    return 0;
}

typedef struct pending_putter {
    obi_directory_putter base;
    obi_stored_size_fn stored_size;
    obi_commit_pending_fn commit;
    void *ctx;
    obi_directory_service *service;
    obi_digest_map pending;    /* digest -> obi_encoded_directory */
    obi_digest_map depth_memo; /* digest -> exact depth, counted by exact_depth */
    obi_digest_map referenced; /* digests of pending directories some pending one points to */
    obi_digest *order;         /* every put's digest, in order */
    size_t n_order, order_cap;
    obi_digest last;
    bool any;
    bool finished;
} pending_putter;

/* Keeps encoded (owned) under digest as the last directory put. */
static int pending_putter_keep(pending_putter *putter, obi_encoded_directory *encoded,
                               const obi_digest *digest, obi_digest *digest_out, obi_error **err)
{
    int r = obi_digest_map_insert(&putter->pending, digest, encoded);
    if (r < 0) {
        obi_encoded_directory_free(encoded);
        return obi_error_oom(err);
    }
    if (r == 0)
        obi_encoded_directory_free(encoded); /* put twice: already pending */
    if (obi_array_grow(&putter->order, &putter->order_cap, putter->n_order + 1) < 0)
        return obi_error_oom(err);
    putter->order[putter->n_order++] = *digest;
    putter->last = *digest;
    putter->any = true;
    if (digest_out)
        *digest_out = *digest;
    return 0;
}

static int pending_putter_put(obi_directory_putter *base, const obi_directory *dir,
                              obi_digest *digest_out, obi_error **err)
{
    pending_putter *putter = (pending_putter *)base;
    if (putter->finished)
        return obi_error_set(err, -EINVAL, "directory putter: put after finish");
    cleanup_encoded_directory obi_encoded_directory *encoded = NULL;
    obi_digest digest;
    int r = obi_encoded_directory_new(dir, &encoded, &digest, err);
    if (r < 0)
        return r;
    r = obi_directory_check_children(dir, &putter->pending, putter->stored_size, putter->ctx,
                                     putter->service, &putter->depth_memo, &encoded->depth, err);
    for (size_t i = 0; r >= 0 && i < dir->n_directories; i++)
        if (obi_digest_map_get(&putter->pending, &dir->directories[i].digest) &&
            obi_digest_map_insert(&putter->referenced, &dir->directories[i].digest,
                                  OBI_DIGEST_SET_MEMBER) < 0)
            r = obi_error_oom(err);
    if (r < 0)
        return r;
    return pending_putter_keep(putter, steal_pointer(&encoded), &digest, digest_out, err);
}

static int pending_putter_put_canonical(obi_directory_putter *base, uint8_t *data, size_t len,
                                        uint64_t size, obi_digest *digest_out, obi_error **err)
{
    pending_putter *putter = (pending_putter *)base;
    cleanup_free uint8_t *owned = data;
    if (putter->finished)
        return obi_error_set(err, -EINVAL, "directory putter: put after finish");
    /* The caller checked the encoding; this pass only visits the children (and their depth). */
    children_check check = {&putter->pending,   putter->stored_size, putter->ctx,
                            putter->service,    &putter->depth_memo, 0,
                            &putter->referenced};
    uint64_t checked_size = 0;
    int r =
        obi_directory_check_canonical(data, len, &checked_size, children_check_one, &check, err);
    if (r < 0)
        return r;
    if (r == 0 || checked_size != size)
        return obi_error_set(err, -EINVAL, "directory putter: encoding is not canonical");
    obi_encoded_directory *encoded = malloc(sizeof *encoded);
    if (!encoded)
        return obi_error_oom(err);
    *encoded = (obi_encoded_directory){
        .size = size, .depth = check.deepest + 1, .len = len, .data = steal_pointer(&owned)};
    obi_digest digest;
    obi_digest_of(encoded->data, len, &digest);
    return pending_putter_keep(putter, encoded, &digest, digest_out, err);
}

/* Every directory put is the root (the last one) or a child of one put after it: one tree, as
 * snix requires ("graph has no single root"). Children are put before their parents, so a
 * directory some other one put points to is reachable from the root (castore.md). */
static int check_one_root(const pending_putter *putter, obi_error **err)
{
    for (size_t i = 0; i < putter->n_order; i++) {
        const obi_digest *digest = &putter->order[i];
        if (obi_digest_equal(digest, &putter->last) ||
            obi_digest_map_get(&putter->referenced, digest))
            continue;
        cleanup_free char *text = obi_digest_to_b3_string(digest);
        cleanup_free char *root = obi_digest_to_b3_string(&putter->last);
        return obi_error_set(err, -EINVAL,
                             "directories[%zu] (%s) is not reachable from the root %s (the last "
                             "one put): a Put holds one tree",
                             i, text ? text : "?", root ? root : "?");
    }
    return 0;
}

static int pending_putter_finish(obi_directory_putter *base, obi_digest *root_out, obi_error **err)
{
    pending_putter *putter = (pending_putter *)base;
    if (putter->finished)
        return obi_error_set(err, -EINVAL, "directory putter: finished twice");
    if (!putter->any)
        return obi_error_set(err, -EINVAL, "directory putter: no directories were put");
    int r = check_one_root(putter, err);
    if (r < 0)
        return r;
    r = putter->commit(putter->ctx, &putter->pending, err);
    if (r < 0)
        return r;
    obi_digest_map_clear(&putter->pending);
    putter->finished = true;
    if (root_out)
        *root_out = putter->last;
    return 0;
}

static void pending_putter_close(obi_directory_putter *base)
{
    pending_putter *putter = (pending_putter *)base;
    obi_digest_map_clear(&putter->pending);
    obi_digest_map_clear(&putter->depth_memo);
    obi_digest_map_clear(&putter->referenced);
    free(putter->order);
    free(putter);
}

static const struct obi_directory_putter_ops pending_putter_ops = {
    .put = pending_putter_put,
    .put_canonical = pending_putter_put_canonical,
    .finish = pending_putter_finish,
    .close = pending_putter_close,
};

int obi_pending_putter_new(obi_stored_size_fn stored_size, obi_commit_pending_fn commit, void *ctx,
                           obi_directory_service *service, obi_directory_putter **out,
                           obi_error **err)
{
    pending_putter *putter = calloc(1, sizeof *putter);
    if (!putter)
        return obi_error_oom(err);
    putter->base.ops = &pending_putter_ops;
    putter->stored_size = stored_size;
    putter->commit = commit;
    putter->ctx = ctx;
    putter->service = service;
    obi_digest_map_init(&putter->pending, obi_encoded_directory_free);
    obi_digest_map_init(&putter->depth_memo, NULL);
    obi_digest_map_init(&putter->referenced, NULL);
    *out = &putter->base;
    return 0;
}

int obi_directory_decode_verified(const obi_digest *digest, const uint8_t *data, size_t len,
                                  obi_directory **out, obi_error **err)
{
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(digest, hex);
    obi_digest actual;
    obi_digest_of(data, len, &actual);
    if (!obi_digest_equal(&actual, digest)) {
        char actual_hex[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(&actual, actual_hex);
        return obi_error_set(err, -EIO, "directory %s is corrupted: stored bytes hash to %s", hex,
                             actual_hex);
    }
    cleanup_directory obi_directory *dir = NULL;
    int r = obi_directory_decode(data, len, &dir, err);
    if (r == 0)
        r = obi_directory_validate(dir, err);
    if (r < 0)
        return obi_error_prefix(err, r == -ENOMEM ? r : -EIO, "directory %s", hex);
    *out = steal_pointer(&dir);
    return 0;
}

/* ---- recursive get: root first, then breadth-first, each directory once ---- */

typedef struct queued_directory {
    obi_digest digest;
    uint64_t expected_size; /* from the parent's entry; unused for the root */
    bool is_root;
} queued_directory;

struct obi_directory_walk {
    obi_directory_service *svc;
    obi_digest_map seen; /* the digests queued so far (a set) */
    queued_directory *queue;
    size_t head, tail, capacity;
};

/* Queues digest unless it was queued before. */
static int walk_enqueue(obi_directory_walk *walk, const obi_digest *digest, uint64_t size,
                        bool is_root)
{
    int inserted = obi_digest_map_insert(&walk->seen, digest, OBI_DIGEST_SET_MEMBER);
    if (inserted <= 0)
        return inserted;
    if (walk->tail == walk->capacity && walk->head > 0) {
        /* drop the visited prefix before growing */
        memmove(walk->queue, walk->queue + walk->head,
                (walk->tail - walk->head) * sizeof *walk->queue);
        walk->tail -= walk->head;
        walk->head = 0;
    }
    if (obi_array_grow(&walk->queue, &walk->capacity, walk->tail + 1) < 0)
        return -ENOMEM;
    walk->queue[walk->tail++] = (queued_directory){*digest, size, is_root};
    return 1;
}

int obi_directory_walk_new(obi_directory_service *svc, const obi_digest *root,
                           obi_directory_walk **out, obi_error **err)
{
    obi_directory_walk *walk = calloc(1, sizeof *walk);
    if (!walk)
        return obi_error_oom(err);
    walk->svc = svc;
    obi_digest_map_init(&walk->seen, NULL);
    if (walk_enqueue(walk, root, 0, true) < 0) {
        obi_directory_walk_free(walk);
        return obi_error_oom(err);
    }
    *out = walk;
    return 0;
}

int obi_directory_walk_next(obi_directory_walk *walk, obi_directory **dir_out,
                            obi_digest *digest_out, obi_error **err)
{
    if (walk->head == walk->tail)
        return 0;
    queued_directory item = walk->queue[walk->head++];
    cleanup_directory obi_directory *dir = NULL;
    int r = obi_directory_get(walk->svc, &item.digest, &dir, err);
    if (r < 0)
        return r;
    if (!item.is_root && obi_directory_size(dir) != item.expected_size) {
        char hex[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(&item.digest, hex);
        return obi_error_set(err, -EIO, "directory %s has size %llu, but its parent says %llu", hex,
                             (unsigned long long)obi_directory_size(dir),
                             (unsigned long long)item.expected_size);
    }
    for (size_t i = 0; i < dir->n_directories; i++) {
        const obi_node *child = &dir->directories[i];
        if (walk_enqueue(walk, &child->digest, child->size, false) < 0)
            return obi_error_oom(err);
    }
    *digest_out = item.digest;
    *dir_out = steal_pointer(&dir);
    return 1;
}

void obi_directory_walk_free(obi_directory_walk *walk)
{
    if (!walk)
        return;
    obi_digest_map_clear(&walk->seen);
    free(walk->queue);
    free(walk);
}

int obi_directory_get_recursive(obi_directory_service *svc, const obi_digest *root,
                                obi_directory_visit_fn visit, void *ctx, obi_error **err)
{
    if (svc->ops->get_recursive)
        return svc->ops->get_recursive(svc, root, visit, ctx, err);
    cleanup_directory_walk obi_directory_walk *walk = NULL;
    int r = obi_directory_walk_new(svc, root, &walk, err);
    while (r >= 0) {
        cleanup_directory obi_directory *dir = NULL;
        obi_digest digest;
        r = obi_directory_walk_next(walk, &dir, &digest, err);
        if (r <= 0)
            break;
        r = visit(dir, &digest, ctx, err);
    }
    return r < 0 ? r : 0;
}

/* ---- the on-disk store's root ---- */

int obi_local_root_open(const char *root, const char *what, obi_local_root *out, obi_error **err)
{
    if (root[0] != '/')
        return obi_error_set(err, -EINVAL, "%s: root '%s' is not absolute", what, root);
    int r = obi_mkdir_p(root, 0755, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", what);
    cleanup_free char *path = realpath(root, NULL);
    if (!path)
        return obi_error_set_errno(err, errno, "%s: resolve %s", what, root);
    struct stat st;
    if (stat(path, &st) < 0)
        return obi_error_set_errno(err, errno, "%s: stat %s", what, path);
    *out = (obi_local_root){steal_pointer(&path), st.st_dev, st.st_ino};
    return 0;
}

void obi_local_root_clear(obi_local_root *root)
{
    free(root->path);
    root->path = NULL;
}

/* ---- selection by URL ---- */

static int reject_params(const obi_url *url, const char *what, obi_error **err)
{
    if (url->n_params > 0)
        return obi_error_set(err, -EINVAL, "%s takes no parameters (got '%s')", what,
                             url->params[0].key);
    return 0;
}

static int memory_blobs(const obi_url *url, obi_blob_service **out, obi_error **err)
{
    int r = reject_params(url, "memory://", err);
    if (r == 0 && (*url->host || *url->path))
        r = obi_error_set(err, -EINVAL, "memory:// takes no host or path");
    return r < 0 ? r : obi_memory_blob_service_new(out, err);
}

static int memory_directories(const obi_url *url, obi_directory_service **out, obi_error **err)
{
    int r = reject_params(url, "memory://", err);
    if (r == 0 && (*url->host || *url->path))
        r = obi_error_set(err, -EINVAL, "memory:// takes no host or path");
    return r < 0 ? r : obi_memory_directory_service_new(out, err);
}

/* The local root of an objectstore+file:// URL or a plain path; always absolute. */
static int local_root(const obi_url *url, char **out, obi_error **err)
{
    if (*url->scheme) {
        int r = reject_params(url, "objectstore+file://", err);
        if (r < 0)
            return r;
        if (*url->host || url->port || url->path[0] != '/')
            return obi_error_set(err, -EINVAL,
                                 "objectstore+file:// needs an absolute path "
                                 "(objectstore+file:///abs/dir), got host '%s' path '%s'",
                                 url->host, url->path);
    }
    char *root = NULL;
    if (url->path[0] == '/') {
        root = strdup(url->path);
    } else {
        cleanup_free char *cwd = getcwd(NULL, 0);
        if (!cwd)
            return obi_error_set_errno(err, errno, "store path %s: getcwd", url->path);
        root = obi_path_join(cwd, url->path);
    }
    if (!root)
        return obi_error_oom(err);
    *out = root;
    return 0;
}

static int local_blobs(const obi_url *url, obi_blob_service **out, obi_error **err)
{
    cleanup_free char *root = NULL;
    int r = local_root(url, &root, err);
    return r < 0 ? r : obi_local_blob_service_open(root, out, err);
}

static int local_directories(const obi_url *url, obi_directory_service **out, obi_error **err)
{
    cleanup_free char *root = NULL;
    int r = local_root(url, &root, err);
    return r < 0 ? r : obi_local_directory_service_open(root, out, err);
}

typedef struct store_scheme {
    char *scheme;
    obi_blob_service_factory blobs;
    obi_directory_service_factory directories;
} store_scheme;

static const struct {
    const char *scheme;
    const char *usage;
    obi_blob_service_factory blobs;
    obi_directory_service_factory directories;
} builtin_schemes[] = {
    {"memory", "memory://", memory_blobs, memory_directories},
    {"objectstore+file", "objectstore+file:///ABS/DIR", local_blobs, local_directories},
    {"", "a plain path", local_blobs, local_directories},
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static store_scheme *registered;
static size_t n_registered, registered_cap;

int obi_store_register_scheme(const char *scheme, obi_blob_service_factory blobs,
                              obi_directory_service_factory directories)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(builtin_schemes); i++)
        if (strcmp(builtin_schemes[i].scheme, scheme) == 0)
            return -EEXIST;
    pthread_mutex_lock(&registry_lock);
    int r = 0;
    size_t i = 0;
    while (i < n_registered && strcmp(registered[i].scheme, scheme) != 0)
        i++;
    if (i == n_registered) {
        char *name = strdup(scheme);
        if (!name || obi_array_grow(&registered, &registered_cap, n_registered + 1) < 0) {
            free(name);
            r = -ENOMEM;
        } else {
            registered[n_registered++].scheme = name;
        }
    }
    if (r == 0) {
        registered[i].blobs = blobs;
        registered[i].directories = directories;
    }
    pthread_mutex_unlock(&registry_lock);
    return r;
}

/* "memory://, objectstore+file:///ABS/DIR, a plain path, grpc+unix://..." */
static char *supported_schemes(void)
{
    cleanup_buf obi_buf buf = OBI_BUF_INIT;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(builtin_schemes); i++)
        obi_buf_appendf(&buf, "%s%s", i ? ", " : "", builtin_schemes[i].usage);
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n_registered; i++)
        obi_buf_appendf(&buf, ", %s://", registered[i].scheme);
    pthread_mutex_unlock(&registry_lock);
    return obi_buf_steal(&buf);
}

static int find_factories(const obi_url *url, const char *text, obi_blob_service_factory *blobs,
                          obi_directory_service_factory *directories, obi_error **err)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(builtin_schemes); i++) {
        if (strcmp(builtin_schemes[i].scheme, url->scheme) == 0) {
            *blobs = builtin_schemes[i].blobs;
            *directories = builtin_schemes[i].directories;
            return 0;
        }
    }
    int found = 0;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n_registered; i++) {
        if (strcmp(registered[i].scheme, url->scheme) == 0) {
            *blobs = registered[i].blobs;
            *directories = registered[i].directories;
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (found)
        return 0;
    cleanup_free char *supported = supported_schemes();
    return obi_error_set(err, -EINVAL, "store URL '%s': unsupported scheme '%s://' (supported: %s)",
                         text, url->scheme, supported ? supported : "?");
}

/* Malformed store URLs (-EINVAL) also say what is accepted, as unknown schemes do. Only an
 * -EINVAL error is rewritten in place (never the static out-of-memory error of error.h). */
static int mention_supported(obi_error **err, int r)
{
    if (r != -EINVAL || !err || !*err || (*err)->code != -EINVAL ||
        strstr((*err)->message, "(supported: "))
        return r;
    cleanup_free char *supported = supported_schemes();
    char *message = NULL;
    if (supported && asprintf(&message, "%s (supported: %s)", (*err)->message, supported) >= 0) {
        free((*err)->message);
        (*err)->message = message;
    }
    return r;
}

int obi_blob_service_open(const char *url, obi_blob_service **out, obi_error **err)
{
    cleanup_url obi_url *parsed = NULL;
    obi_blob_service_factory blobs = NULL;
    obi_directory_service_factory directories = NULL;
    int r = obi_url_parse(url, &parsed, err);
    if (r == 0)
        r = find_factories(parsed, url, &blobs, &directories, err);
    if (r == 0 && !blobs)
        r = obi_error_set(err, -EINVAL, "store URL '%s': scheme '%s://' has no blob service", url,
                          parsed->scheme);
    if (r == 0)
        r = blobs(parsed, out, err);
    if (r < 0)
        return obi_error_prefix(err, mention_supported(err, r), "blob service %s", url);
    return 0;
}

int obi_directory_service_open(const char *url, obi_directory_service **out, obi_error **err)
{
    cleanup_url obi_url *parsed = NULL;
    obi_blob_service_factory blobs = NULL;
    obi_directory_service_factory directories = NULL;
    int r = obi_url_parse(url, &parsed, err);
    if (r == 0)
        r = find_factories(parsed, url, &blobs, &directories, err);
    if (r == 0 && !directories)
        r = obi_error_set(err, -EINVAL, "store URL '%s': scheme '%s://' has no directory service",
                          url, parsed->scheme);
    if (r == 0)
        r = directories(parsed, out, err);
    if (r < 0)
        return obi_error_prefix(err, mention_supported(err, r), "directory service %s", url);
    return 0;
}

char *obi_default_store_url(void)
{
    const char *env = getenv("OCIBUILD_STORE");
    if (env && *env)
        return strdup(env);
    cleanup_free char *data_dir = obi_default_data_dir();
    return data_dir ? obi_path_join(data_dir, "store") : NULL;
}

/* The on-disk ROOT a URL names, or NULL (another backend, or a URL that does not parse). */
static char *url_local_root(const char *text)
{
    cleanup_url obi_url *url = NULL;
    char *root = NULL;
    if (obi_url_parse(text, &url, NULL) < 0 ||
        (*url->scheme && strcmp(url->scheme, "objectstore+file") != 0) ||
        local_root(url, &root, NULL) < 0)
        return NULL;
    return root;
}

int obi_store_open(const char *blob_url, const char *directory_url, obi_store **out,
                   obi_error **err)
{
    cleanup_free char *default_url = NULL;
    if (!blob_url || !directory_url) {
        default_url = obi_default_store_url();
        if (!default_url)
            return obi_error_oom(err);
    }
    obi_store *store = calloc(1, sizeof *store);
    if (!store)
        return obi_error_oom(err);
    cleanup_store obi_store *owned = store;
    int r = obi_blob_service_open(blob_url ? blob_url : default_url, &store->blobs, err);
    if (r < 0)
        return r;
    r = obi_directory_service_open(directory_url ? directory_url : default_url, &store->directories,
                                   err);
    if (r < 0)
        return r;
    cleanup_free char *blob_root = url_local_root(blob_url ? blob_url : default_url);
    cleanup_free char *directory_root = url_local_root(directory_url ? directory_url : default_url);
    if (blob_root && directory_root && strcmp(blob_root, directory_root) == 0)
        store->local_root = steal_pointer(&blob_root);
    *out = steal_pointer(&owned);
    return 0;
}

int obi_store_connect(obi_store *store, obi_error **err)
{
    obi_directory_service *dirs = store->directories;
    return dirs->ops->connect ? dirs->ops->connect(dirs, err) : 0;
}

void obi_store_close(obi_store *store)
{
    if (!store)
        return;
    obi_blob_service_free(store->blobs);
    obi_directory_service_free(store->directories);
    free(store->local_root);
    free(store);
}
