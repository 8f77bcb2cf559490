/*
 * Build inputs over FUSE (see include/ocibuild/build_inputs.h and docs/build.md "Inputs over
 * FUSE"), as tvix's OCI build service mounts them: instead of materializing an input, the build
 * reads it from a castore mount (castore_fs.h) at BUNDLE/inputs-fuse, so it fetches only the
 * bytes it touches. inputs/<name> is a symlink into the mount, which the runtime follows when it
 * bind-mounts the input, exactly as it follows one into the input cache. Inputs the cache
 * already holds (when the plan says so) and symlink inputs go the cache's way: the rest of the
 * request is handed to obi_build_inputs_prepare.
 *
 * The mount belongs to the caller, which closes it before removing the bundle; fusermount3's
 * auto_unmount removes it if this process is killed, and the bundle sweep detaches what is left.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/build_inputs.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"

#define FUSE_DIR "inputs-fuse"

static const char *const MODE_NAMES[] = {
    [OBI_INPUTS_AUTO] = "auto",
    [OBI_INPUTS_MATERIALIZE] = "materialize",
    [OBI_INPUTS_FUSE] = "fuse",
};

int obi_inputs_mode_parse(const char *text, const char *what, obi_inputs_mode *out, obi_error **err)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(MODE_NAMES); i++) {
        if (!strcmp(text, MODE_NAMES[i])) {
            *out = (obi_inputs_mode)i;
            return 0;
        }
    }
    return obi_error_set(err, -EINVAL, "%s: \"%s\" is not one of auto, materialize, fuse", what,
                         text);
}

const char *obi_inputs_mode_name(obi_inputs_mode mode)
{
    return (size_t)mode < OBI_ARRAY_SIZE(MODE_NAMES) ? MODE_NAMES[mode] : "?";
}

/* Whether the blob service keeps local files: it says -ENOTSUP for any digest when not. */
static bool has_local_files(obi_blob_service *blobs)
{
    static const obi_digest probe = {{0}};
    cleanup_free char *path = NULL;
    cleanup_error obi_error *ignored = NULL;
    return obi_blob_local_path(blobs, &probe, &path, &ignored) != -ENOTSUP;
}

int obi_inputs_plan_for(obi_inputs_mode mode, const obi_store *store, obi_inputs_plan *out,
                        obi_error **err)
{
    *out = (obi_inputs_plan){false, false};
    if (mode == OBI_INPUTS_MATERIALIZE)
        return 0;
    /* auto: blobs that are local files are hard-linked into the cache at no cost worth saving
     * (and a repeated build costs one link per input); a remote store's are worth reading only
     * where they are read, except once they are in the cache (docs/build.md). Asked first: the
     * check below loads libfuse3 (~0.2 ms), which a build from the local store never uses. */
    if (mode == OBI_INPUTS_AUTO && has_local_files(store->blobs))
        return 0;
    /* A container's users are others to the mount: allow_other, always. */
    cleanup_error obi_error *why = NULL;
    int available = obi_castore_fs_available(true, &why);
    if (mode == OBI_INPUTS_FUSE && available < 0)
        return obi_error_move(err, &why);
    out->fuse = available == 0;
    out->reuse_cache = mode == OBI_INPUTS_AUTO && out->fuse;
    return 0;
}

/* 1 when the input is already in the cache. */
static int in_cache(const char *cache_dir, const obi_node *node, obi_error **err)
{
    cleanup_free char *entry = obi_input_cache_path(cache_dir, node);
    if (!entry)
        return obi_error_oom(err);
    struct stat st;
    return lstat(entry, &st) == 0;
}

/* Which inputs the mount serves (through_fuse[i]) and how many. */
static int choose_inputs(const char *cache_dir, const obi_inputs_plan *plan,
                         const obi_build_request *req, bool *through_fuse, size_t *n_out,
                         obi_error **err)
{
    size_t n = 0;
    for (size_t i = 0; i < req->n_inputs; i++) {
        through_fuse[i] = false;
        if (req->inputs[i].kind == OBI_NODE_SYMLINK)
            continue;
        if (plan->reuse_cache) {
            int r = in_cache(cache_dir, &req->inputs[i], err);
            if (r < 0)
                return r;
            if (r == 1)
                continue;
        }
        through_fuse[i] = true;
        n++;
    }
    *n_out = n;
    return 0;
}

static int mount_inputs(obi_store *store, const obi_build_request *req, const bool *through_fuse,
                        size_t n_fuse, const char *mountpoint, obi_castore_fs **fs_out,
                        obi_error **err)
{
    cleanup_free obi_node *nodes = calloc(n_fuse, sizeof *nodes);
    if (!nodes)
        return obi_error_oom(err);
    size_t k = 0;
    for (size_t i = 0; i < req->n_inputs; i++)
        if (through_fuse[i])
            nodes[k++] = req->inputs[i]; /* borrowed: the mount copies what it keeps */
    if (mkdir(mountpoint, 0755) < 0)
        return obi_error_set_errno(err, errno, "mkdir %s", mountpoint);
    obi_castore_fs_options options = OBI_CASTORE_FS_OPTIONS_INIT;
    options.allow_other = true;
    /* Even a single directory input is an entry of the root, never the root itself: its own
     * entries (a symlink called like the input, say) must not stand where the runtime looks
     * the input up on the host. So BUNDLE/inputs-fuse/<name> is the directory or file the
     * input is, by construction. (This process never looks into its own mount: under valgrind,
     * which holds its lock across a stat, that waited forever for the server's first reply.) */
    options.nodes_by_name = true;
    int r = obi_castore_fs_mount(store->blobs, store->directories, nodes, n_fuse, mountpoint,
                                 &options, fs_out, err);
    return r < 0 ? obi_error_prefix(err, r, "inputs over FUSE") : 0;
}

int obi_build_inputs_prepare_fuse(obi_store *store, const char *cache_dir,
                                  const obi_inputs_plan *plan, const obi_build_request *req,
                                  const char *bundle_inputs_dir, const char *bundle_dir,
                                  const obi_progress *progress, obi_castore_fs **fs_out,
                                  obi_error **err)
{
    *fs_out = NULL;
    cleanup_free bool *through_fuse = calloc(req->n_inputs ? req->n_inputs : 1, sizeof(bool));
    cleanup_free obi_node *rest = calloc(req->n_inputs ? req->n_inputs : 1, sizeof *rest);
    cleanup_free char *mountpoint = obi_path_join(bundle_dir, FUSE_DIR);
    if (!through_fuse || !rest || !mountpoint)
        return obi_error_oom(err);
    size_t n_fuse = 0;
    int r = choose_inputs(cache_dir, plan, req, through_fuse, &n_fuse, err);
    if (r < 0)
        return r;

    /* Everything the mount does not serve goes the cache's way, on a view of the request. */
    obi_build_request view = *req;
    view.inputs = rest;
    view.n_inputs = 0;
    for (size_t i = 0; i < req->n_inputs; i++)
        if (!through_fuse[i])
            rest[view.n_inputs++] = req->inputs[i];
    if ((r = obi_build_inputs_prepare(store, cache_dir, &view, bundle_inputs_dir, bundle_dir,
                                      progress, err)) < 0)
        return r;
    if (n_fuse == 0)
        return 0;

    cleanup_castore_fs obi_castore_fs *fs = NULL;
    if ((r = mount_inputs(store, req, through_fuse, n_fuse, mountpoint, &fs, err)) < 0)
        return r;
    for (size_t i = 0; i < req->n_inputs; i++) {
        if (!through_fuse[i])
            continue;
        const char *name = (const char *)req->inputs[i].name.data;
        cleanup_free char *target = obi_path_join(mountpoint, name);
        cleanup_free char *link = obi_path_join(bundle_inputs_dir, name);
        if (!target || !link)
            return obi_error_oom(err);
        if (symlink(target, link) < 0)
            return obi_error_set_errno(err, errno, "inputs[%zu]: symlink %s", i, link);
    }
    *fs_out = steal_pointer(&fs);
    return 0;
}
