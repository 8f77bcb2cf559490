/*
 * Outputs found beneath the bundle and ingested from descriptors (see
 * include/ocibuild/build_outputs.h): resolve all (making them readable first when rootless),
 * then ingest each from the directory that holds it. A rootful build's output files are adopted
 * by the store rather than copied where they can be (obi_ingest_options.adopt; docs/store.md,
 * "Adopting a build's outputs"): the container is gone, so nothing of the build can write them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/beneath.h"
#include "ocibuild/build_outputs.h"
#include "ocibuild/build_service.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/number.h"
#include "ocibuild/refscan.h"
#include "ocibuild/spec.h"

/* Where an output is: the directory holding it (opened beneath the bundle) and its name there. */
typedef struct output_place {
    int dirfd;
    char *name;
} output_place;

/* Opens the directory that holds output i. The scratch dir itself (scratch/<name>) is ours:
 * the build sees it only as a mount point it cannot replace; below it, every component is the
 * build's and is resolved without following symlinks, named in container terms in errors. */
static int find_output(int bundle_fd, const obi_build_request *req, size_t i, output_place *out,
                       obi_error **err)
{
    size_t scratch = 0;
    const char *rest = NULL;
    if (obi_build_request_find_scratch(req, req->outputs[i], &scratch, &rest) < 0)
        return obi_error_set(err, -EINVAL, "outputs[%zu]: \"%s\" is not inside any scratch path", i,
                             req->outputs[i]);
    cleanup_free char *scratch_dir = obi_scratch_host_path(req->scratch_paths[scratch]);
    if (!scratch_dir)
        return obi_error_oom(err);
    cleanup_close int fd = -1;
    const char *name = NULL;
    cleanup_error obi_error *why = NULL;
    int r;
    if (!*rest) {
        /* The output is the scratch dir itself. */
        r = obi_beneath_open_parent(bundle_fd, scratch_dir, NULL, &fd, &name, &why);
    } else {
        cleanup_close int scratch_fd = -1;
        cleanup_free char *display = NULL;
        if (asprintf(&display, "/%s", req->scratch_paths[scratch]) < 0)
            return obi_error_oom(err);
        r = obi_beneath_open(bundle_fd, scratch_dir, O_PATH | O_DIRECTORY, 0, NULL, &scratch_fd,
                             &why);
        if (r == 0)
            r = obi_beneath_open_parent(scratch_fd, rest, display, &fd, &name, &why);
    }
    struct stat st;
    if (r == 0 && fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        r = obi_error_set_errno(&why, errno, "/%s", req->outputs[i]);
    if (r == -ENOENT || r == -ENOTDIR)
        return obi_error_set(err, OBI_EBUILD_FAILED, "build did not produce output %zu \"/%s\"", i,
                             req->outputs[i]);
    if (r == -ELOOP)
        return obi_error_set(err, OBI_EBUILD_FAILED,
                             "output %zu \"/%s\": %s (outputs are never read through a symlink)", i,
                             req->outputs[i], why->message);
    if (r < 0)
        return obi_error_set(err, r, "output %zu \"/%s\": %s", i, req->outputs[i],
                             why ? why->message : strerror(-r));
    if (!name) /* for the analyzer: set whenever the lookups above succeeded */
        return obi_error_set(err, -EIO, "output %zu: no name", i);
    out->name = strdup(name);
    if (!out->name)
        return obi_error_oom(err);
    out->dirfd = steal_fd(&fd);
    return 0;
}

/* Rootless: output i made readable by the user namespace helper, which resolves it the same way.
 * When it fails, find_output's own lookup says why (missing, through a symlink) if it can. */
static int make_output_readable(int bundle_fd, const obi_build_request *req, size_t i,
                                const obi_userns_ids *userns, obi_error **err)
{
    cleanup_free char *relative = NULL;
    int r = obi_output_host_path(req, i, &relative, err);
    if (r < 0)
        return r;
    cleanup_error obi_error *helper_err = NULL;
    r = obi_userns_make_readable(userns, bundle_fd, relative, &helper_err);
    if (r == 0)
        return 0;
    output_place place = {-1, NULL};
    int found = find_output(bundle_fd, req, i, &place, err);
    if (place.dirfd >= 0)
        close(place.dirfd);
    free(place.name);
    if (found < 0)
        return found;
    return obi_error_set(err, r, "output %zu \"/%s\": %s", i, req->outputs[i],
                         helper_err ? helper_err->message : strerror(-r));
}

static int ingest_one(obi_store *store, const obi_refscan *scanner, const output_place *place,
                      const char *output, bool adopt, obi_node *node_out,
                      obi_output_needles *needles_out, obi_error **err)
{
    cleanup_refscan_state obi_refscan_state *state = NULL;
    int r = obi_refscan_state_new(scanner, &state, err);
    if (r < 0)
        return r;
    const char *name = strrchr(output, '/');
    name = name ? name + 1 : output;
    cleanup_free char *display = NULL;
    if (asprintf(&display, "/%s", output) < 0)
        return obi_error_oom(err);
    obi_ingest_options options = {.name = name, .refscan = state, .adopt = adopt};
    cleanup_node obi_node node = {0};
    r = obi_ingest_at(store->blobs, store->directories, place->dirfd, place->name, display,
                      &options, &node, err);
    if (r < 0)
        return r;
    cleanup_free size_t *found = NULL;
    size_t n_found = 0;
    r = obi_refscan_state_result(state, &found, &n_found, err);
    if (r < 0)
        return r;
    needles_out->needles = calloc(n_found ? n_found : 1, sizeof *needles_out->needles);
    if (!needles_out->needles)
        return obi_error_oom(err);
    for (size_t i = 0; i < n_found; i++)
        needles_out->needles[i] = found[i];
    needles_out->n_needles = n_found;
    *node_out = node;
    memset(&node, 0, sizeof node);
    return 0;
}

static void places_free(output_place *places, size_t n)
{
    for (size_t i = 0; places && i < n; i++) {
        if (places[i].dirfd >= 0)
            close(places[i].dirfd);
        free(places[i].name);
    }
    free(places);
}

int obi_build_outputs_ingest(obi_store *store, int bundle_fd, const obi_build_request *req,
                             const obi_userns_ids *userns, bool adopt, obi_build *build,
                             obi_error **err)
{
    cleanup_refscan obi_refscan *scanner = NULL;
    int r = obi_refscan_new_strings((const char *const *)req->refscan_needles,
                                    req->n_refscan_needles, &scanner, err);
    if (r < 0)
        return obi_error_prefix(err, r, "refscan_needles");
    size_t n = req->n_outputs ? req->n_outputs : 1;
    output_place *places = calloc(n, sizeof *places);
    if (!places)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++)
        places[i].dirfd = -1;
    /* Every output found before any is ingested: a failed build adds no root to the store. */
    for (size_t i = 0; r == 0 && i < req->n_outputs; i++) {
        if (userns)
            r = make_output_readable(bundle_fd, req, i, userns, err);
        if (r == 0)
            r = find_output(bundle_fd, req, i, &places[i], err);
    }
    if (r == 0) {
        build->outputs = calloc(n, sizeof *build->outputs);
        build->outputs_needles = calloc(n, sizeof *build->outputs_needles);
        if (!build->outputs || !build->outputs_needles)
            r = obi_error_oom(err);
    }
    for (size_t i = 0; r == 0 && i < req->n_outputs; i++) {
        r = ingest_one(store, scanner, &places[i], req->outputs[i], adopt && !userns,
                       &build->outputs[i], &build->outputs_needles[i], err);
        if (r < 0)
            obi_error_prefix(err, r, "ingest output %zu \"/%s\"", i, req->outputs[i]);
        else
            build->n_outputs = i + 1;
    }
    places_free(places, n);
    return r;
}

/* Progress over all outputs: each export counts from zero, the caller hears the sums. */
typedef struct export_totals {
    obi_progress hook;
    const obi_progress *caller;
    uint64_t bytes_before, files_before; /* of the outputs exported before this one */
    uint64_t bytes, files;               /* of this one so far */
} export_totals;

static void add_to_totals(void *ctx, uint64_t bytes, uint64_t files)
{
    export_totals *t = ctx;
    t->bytes = bytes;
    t->files = files;
    obi_progress_report(t->caller, t->bytes_before + bytes, t->files_before + files);
}

int obi_build_outputs_export(obi_store *store, const obi_build *build, const char *dir,
                             const obi_progress *progress, obi_error **err)
{
    for (size_t i = 0; i < build->n_outputs; i++)
        for (size_t j = 0; j < i; j++)
            if (build->outputs[i].name.len == build->outputs[j].name.len &&
                !memcmp(build->outputs[i].name.data, build->outputs[j].name.data,
                        build->outputs[i].name.len))
                return obi_error_set(err, -EEXIST,
                                     "outputs %zu and %zu are both named \"%s\": export them "
                                     "one by one (ocibuild store export)",
                                     j, i, (const char *)build->outputs[i].name.data);
    int r = obi_mkdir_p(dir, 0755, err);
    if (r < 0)
        return obi_error_prefix(err, r, "output directory %s", dir);
    export_totals counted = {{add_to_totals, &counted}, progress, 0, 0, 0, 0};
    for (size_t i = 0; i < build->n_outputs; i++) {
        cleanup_free char *dest = obi_path_join(dir, (const char *)build->outputs[i].name.data);
        if (!dest)
            r = obi_error_oom(err);
        else
            r = obi_export_node_progress(store->blobs, store->directories, &build->outputs[i], dest,
                                         &counted.hook, err);
        counted.bytes_before += counted.bytes;
        counted.files_before += counted.files;
        counted.bytes = counted.files = 0;
        if (r < 0) {
            for (size_t j = 0; j < i; j++) {
                cleanup_free char *done =
                    obi_path_join(dir, (const char *)build->outputs[j].name.data);
                cleanup_error obi_error *ignored = NULL;
                if (done)
                    obi_rm_rf(done, &ignored);
            }
            return obi_error_prefix(err, r, "export output %zu", i);
        }
    }
    return 0;
}

char *obi_build_output_summary(const obi_build *build, size_t i)
{
    const obi_node *node = &build->outputs[i];
    const obi_build_request *req = build->request;
    cleanup_buf obi_buf line = OBI_BUF_INIT;
    char size[OBI_SIZE_TEXT_LEN];
    cleanup_free char *b3 =
        node->kind == OBI_NODE_SYMLINK ? NULL : obi_digest_to_b3_string(&node->digest);
    int r = obi_buf_appendf(&line, "/%s  ", req && i < req->n_outputs ? req->outputs[i] : "?");
    switch (node->kind) {
    case OBI_NODE_FILE:
        obi_format_size(node->size, size);
        r = r < 0 ? r
                  : obi_buf_appendf(&line, "%s  %s  %s", node->executable ? "executable" : "file",
                                    size, b3 ? b3 : "?");
        break;
    case OBI_NODE_DIRECTORY:
        r = r < 0 ? r
                  : obi_buf_appendf(&line, "directory  %llu %s  %s", (unsigned long long)node->size,
                                    node->size == 1 ? "entry" : "entries", b3 ? b3 : "?");
        break;
    case OBI_NODE_SYMLINK:
        r = r < 0 ? r : obi_buf_appendf(&line, "symlink -> %s", (const char *)node->target.data);
        break;
    }
    if (r == 0 && req && req->n_refscan_needles) {
        const obi_output_needles *found = &build->outputs_needles[i];
        r = obi_buf_append_str(&line, found->n_needles ? "  needles" : "  no needles");
        for (size_t k = 0; r == 0 && k < found->n_needles; k++)
            r = obi_buf_appendf(&line, " %llu", (unsigned long long)found->needles[k]);
        if (r == 0)
            r = obi_buf_appendf(&line, " of %zu", req->n_refscan_needles);
    }
    return r < 0 ? NULL : obi_buf_steal(&line);
}
