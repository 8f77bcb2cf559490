/*
 * Build inputs through the shared per-node cache (see include/ocibuild/build_inputs.h).
 * A cache entry is materialized under a temporary name in the cache dir and renamed into place,
 * so concurrent builds (threads or processes) never see a half-written entry; the loser of a
 * race simply removes its copy.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/build_inputs.h"
#include "ocibuild/bundle.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/spec.h"

static char cache_kind(const obi_node *node)
{
    if (node->kind == OBI_NODE_DIRECTORY)
        return 'd';
    return node->executable ? 'x' : 'f';
}

char *obi_input_cache_path(const char *cache_dir, const obi_node *node)
{
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&node->digest, hex);
    char *entry = NULL;
    return asprintf(&entry, "%s/%c-%s", cache_dir, cache_kind(node), hex) < 0 ? NULL : entry;
}

int obi_input_cache_get(obi_store *store, const char *cache_dir, const obi_node *node,
                        const obi_progress *progress, char **path_out, obi_error **err)
{
    if (node->kind == OBI_NODE_SYMLINK)
        return obi_error_set(err, -EINVAL, "symlink nodes are not cached");
    cleanup_free char *entry = obi_input_cache_path(cache_dir, node);
    if (!entry)
        return obi_error_oom(err);
    struct stat st;
    if (lstat(entry, &st) == 0) {
        *path_out = steal_pointer(&entry);
        return 0;
    }
    int r = obi_mkdir_p(cache_dir, 0755, err);
    if (r < 0)
        return obi_error_prefix(err, r, "input cache");
    char uuid[37];
    if ((r = obi_uuid_v4(uuid, err)) < 0)
        return r;
    /* named after the node, so that gc can tell whose it is (obi_input_cache_prune) */
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&node->digest, hex);
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%s/.tmp-%c-%s-%s", cache_dir, cache_kind(node), hex, uuid) < 0)
        return obi_error_oom(err);
    r = obi_materialize_node_progress(store->blobs, store->directories, node, tmp, progress, err);
    if (r < 0)
        return obi_error_prefix(err, r, "materialize input \"%s\"", (const char *)node->name.data);
    if (rename(tmp, entry) < 0) {
        int e = errno;
        /* A non-empty directory target means another build won the race: use its copy. */
        cleanup_error obi_error *ignored = NULL;
        chmod(tmp, 0700);
        obi_rm_rf(tmp, &ignored);
        if (lstat(entry, &st) < 0)
            return obi_error_set_errno(err, e, "input cache: rename into %s", entry);
    }
    *path_out = steal_pointer(&entry);
    return 0;
}

/* ---- pruning (gc) ---- */

/* The object a cache entry's name "<k>-<hex>" or ".tmp-<k>-<hex>-<uuid>" materializes. */
static bool entry_object(const char *name, obi_store_object_kind *kind, obi_digest *digest)
{
    if (!strncmp(name, ".tmp-", 5))
        name += 5;
    if (!strchr("dfx", name[0]) || name[1] != '-' || strlen(name + 2) < OBI_DIGEST_HEX_LEN ||
        (name[2 + OBI_DIGEST_HEX_LEN] != '\0' && name[2 + OBI_DIGEST_HEX_LEN] != '-') ||
        obi_hex_decode(name + 2, OBI_DIGEST_HEX_LEN, digest->bytes, OBI_DIGEST_LEN) < 0)
        return false;
    *kind = name[0] == 'd' ? OBI_STORE_DIRECTORY : OBI_STORE_BLOB;
    return true;
}

/* A temporary entry of the layout before entries were named after their node
 * (".tmp-<uuid>"), which nothing can claim any more once an hour old. */
static bool stale_legacy_temp(int dir_fd, const char *name)
{
    struct stat st;
    return !strncmp(name, ".tmp-", 5) && strlen(name) == 5 + 36 &&
           fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mtime < time(NULL) - 3600;
}

int obi_input_cache_prune(const char *cache_dir, obi_input_cache_keep_fn keep, void *ctx,
                          bool dry_run, obi_input_cache_prune_stats *stats, obi_error **err)
{
    *stats = (obi_input_cache_prune_stats){0};
    cleanup_dir DIR *dir = opendir(cache_dir);
    if (!dir)
        return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "open %s", cache_dir);
    struct dirent *de;
    while ((de = readdir(dir))) {
        const char *name = de->d_name;
        obi_store_object_kind kind;
        obi_digest digest;
        bool ours = entry_object(name, &kind, &digest);
        if (ours ? keep(kind, &digest, ctx) : !stale_legacy_temp(dirfd(dir), name))
            continue;
        uint64_t files = 0, bytes = 0;
        cleanup_error obi_error *ignored = NULL;
        obi_tree_usage_at(dirfd(dir), name, &files, &bytes, &ignored);
        int r = dry_run ? 0 : obi_rm_rf_at(dirfd(dir), name, NULL, err);
        if (r < 0)
            return obi_error_prefix(err, r, "input cache %s", cache_dir);
        stats->entries++;
        stats->bytes += bytes;
    }
    return 0;
}

/* Host path (relative to the bundle) for "<inputs_dir>/<name>" inside the scratch dirs, via the
 * same mapping as outputs. */
static int symlink_input_host_path(const obi_build_request *req, const obi_node *node, char **out,
                                   obi_error **err)
{
    cleanup_free char *path = NULL;
    if (asprintf(&path, "%s%s%s", req->inputs_dir, *req->inputs_dir ? "/" : "",
                 (const char *)node->name.data) < 0)
        return obi_error_oom(err);
    /* Reuse the output mapping on a one-output view of the request. */
    obi_build_request view = *req;
    char *outputs[1] = {path};
    view.outputs = outputs;
    view.n_outputs = 1;
    cleanup_error obi_error *mapping_err = NULL;
    int r = obi_output_host_path(&view, 0, out, &mapping_err);
    if (r < 0)
        return obi_error_set(err, -EINVAL,
                             "input \"%s\" is a symlink, which can only be provided when "
                             "inputs_dir \"%s\" lies inside a scratch path",
                             (const char *)node->name.data, req->inputs_dir);
    return 0;
}

/* inputs[i] into BUNDLE/inputs: a link into the cache, or a symlink below the scratch dirs. */
static int prepare_input(obi_store *store, const char *cache_dir, const obi_build_request *req,
                         size_t i, const char *bundle_inputs_dir, const char *bundle_dir,
                         const obi_progress *progress, obi_error **err)
{
    const obi_node *node = &req->inputs[i];
    const char *name = (const char *)node->name.data;
    int r;
    if (node->kind == OBI_NODE_SYMLINK) {
        cleanup_free char *relative = NULL;
        if ((r = symlink_input_host_path(req, node, &relative, err)) < 0)
            return obi_error_prefix(err, r, "inputs[%zu]", i);
        cleanup_free char *link = obi_path_join(bundle_dir, relative);
        if (!link)
            return obi_error_oom(err);
        if (symlink((const char *)node->target.data, link) < 0)
            return obi_error_set_errno(err, errno, "inputs[%zu]: symlink %s", i, link);
        return 0;
    }
    cleanup_free char *entry = NULL;
    if ((r = obi_input_cache_get(store, cache_dir, node, progress, &entry, err)) < 0)
        return obi_error_prefix(err, r, "inputs[%zu]", i);
    cleanup_free char *bundle_link = obi_path_join(bundle_inputs_dir, name);
    if (!bundle_link)
        return obi_error_oom(err);
    /* A file input is a hard link to its cache entry where it can be (same filesystem):
     * unlike a symlink this long it needs no data block, so a build allocates, frees and
     * on a disk with online discard trims one block less per file input. */
    if (node->kind != OBI_NODE_DIRECTORY && link(entry, bundle_link) == 0)
        return 0;
    if (symlink(entry, bundle_link) < 0)
        return obi_error_set_errno(err, errno, "inputs[%zu]: symlink %s", i, bundle_link);
    return 0;
}

/* One progress over all of a build's inputs: each materialization counts from zero, this adds
 * what the ones before it wrote. */
typedef struct inputs_progress {
    obi_progress hook;
    const obi_progress *outer;
    uint64_t done_bytes, done_files; /* of the inputs finished */
    uint64_t bytes, files;           /* of the one under way */
} inputs_progress;

static void inputs_progress_report(void *ctx, uint64_t bytes, uint64_t files)
{
    inputs_progress *p = ctx;
    p->bytes = bytes;
    p->files = files;
    obi_progress_report(p->outer, p->done_bytes + bytes, p->done_files + files);
}

static void inputs_progress_next(inputs_progress *p)
{
    p->done_bytes += p->bytes;
    p->done_files += p->files;
    p->bytes = p->files = 0;
}

int obi_build_inputs_prepare(obi_store *store, const char *cache_dir, const obi_build_request *req,
                             const char *bundle_inputs_dir, const char *bundle_dir,
                             const obi_progress *progress, obi_error **err)
{
    /* An empty inputs/ may be there already: a bundle skeleton's (bundle.h). */
    struct stat st;
    if (mkdir(bundle_inputs_dir, 0755) < 0 &&
        (errno != EEXIST || lstat(bundle_inputs_dir, &st) < 0 || !S_ISDIR(st.st_mode)))
        return obi_error_set_errno(err, errno == 0 ? EEXIST : errno, "mkdir %s", bundle_inputs_dir);
    inputs_progress total = {.hook = {inputs_progress_report, &total, NULL}, .outer = progress};
    int r = 0;
    for (size_t i = 0; i < req->n_inputs && r >= 0; i++) {
        r = prepare_input(store, cache_dir, req, i, bundle_inputs_dir, bundle_dir,
                          progress ? &total.hook : NULL, err);
        inputs_progress_next(&total);
    }
    obi_progress_end(progress);
    return r < 0 ? r : 0;
}
