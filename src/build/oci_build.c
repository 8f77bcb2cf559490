/*
 * The local OCI build service (see include/ocibuild/oci_build.h and ../shared/spec/build.md).
 * One build, top to bottom: validate -> wait for a slot -> bundle (scratch dirs, additional
 * files, inputs from the shared input cache, config.json, and root/: a pooled skeleton of the
 * same shape or fresh etc files) -> runtime run -> check outputs exist -> ingest them with the
 * reference scanner -> root/ back to the pool -> Build. The bundle is owned by a cleanup local,
 * so every exit path removes it (and the runtime driver removes the container).
 *
 * A build stops early when the service's cancel fd or the caller's own (obi_build_call) becomes
 * readable: both are watched as one epoll fd, while the build waits for a slot and while its
 * container runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/build_inputs.h"
#include "ocibuild/bundle.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/json_util.h"
#include "ocibuild/number.h"
#include "ocibuild/oci_build.h"
#include "ocibuild/refscan.h"
#include "ocibuild/root_pool.h"
#include "ocibuild/spec.h"
#include "ocibuild/userns.h"

/* Pooled root skeletons older than this (since last used) or beyond this count are removed when
 * a service opens: a few hundred inodes at most, and shapes not built for a while go away. */
#define ROOT_POOL_IDLE_SECONDS (15 * 60)
#define ROOT_POOL_MAX_ENTRIES 64

typedef struct oci_build_service {
    obi_build_service base;
    obi_store *store;
    obi_runtime *runtime;
    char *bundle_root;
    char *cache_dir;
    char *sandbox_shell;
    bool rootless;
    bool keep_bundle;
    unsigned timeout_seconds;
    unsigned max_builds;
    int cancel_fd;
    int own_cancel_pipe[2]; /* when the caller gave no cancel_fd: written by oci_cancel */
    obi_output_fn on_output;
    void *output_ctx;
    obi_spec_options spec_opts; /* rootless flag, sandbox shell, invoking ids and sub-ids */
    obi_userns_ids userns;      /* rootless: how to act on the build user's files */
    obi_root_pool *root_pool;   /* NULL: every build makes its own root/ */
    pthread_mutex_t lock;
    pthread_cond_t slot_free;
    unsigned running;
} oci_build_service;

/* What one build runs with: the cancel fd it watches (the service's, the caller's, or both as
 * one epoll fd) and where its log goes. */
typedef struct build_run {
    int cancel_fd;
    obi_output_fn on_output;
    void *output_ctx;
} build_run;

/* ---- concurrency limit ---- */

static bool cancel_requested(int cancel_fd)
{
    struct pollfd pfd = {cancel_fd, POLLIN, 0};
    return cancel_fd >= 0 && poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
}

/* Waits for a free slot; a cancellation meanwhile gives up the turn (-ECANCELED). */
static int acquire_slot(oci_build_service *svc, int cancel_fd, obi_error **err)
{
    pthread_mutex_lock(&svc->lock);
    while (svc->running >= svc->max_builds && !cancel_requested(cancel_fd)) {
        /* The cancel fd cannot wake a condition variable: look at it every 100 ms. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&svc->slot_free, &svc->lock, &until);
    }
    bool got = svc->running < svc->max_builds && !cancel_requested(cancel_fd);
    if (got)
        svc->running++;
    pthread_mutex_unlock(&svc->lock);
    return got ? 0 : obi_error_set(err, -ECANCELED, "build cancelled while waiting for a slot");
}

static void release_slot(oci_build_service *svc)
{
    pthread_mutex_lock(&svc->lock);
    svc->running--;
    pthread_cond_signal(&svc->slot_free);
    pthread_mutex_unlock(&svc->lock);
}

/* ---- bundle contents ---- */

static const char ETC_GROUP[] = "root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n";
static const char ETC_HOSTS[] = "127.0.0.1 localhost\n::1 localhost\n";

/* root/etc/passwd as Nix writes it (home = the working dir); caller frees. */
static char *etc_passwd_text(const obi_build_request *req)
{
    char *passwd = NULL;
    if (asprintf(&passwd,
                 "root:x:0:0:Nix build user:/%s:/noshell\n"
                 "nixbld:x:%d:%d:Nix build user:/%s:/noshell\n"
                 "nobody:x:65534:65534:Nobody:/:/noshell\n",
                 req->working_dir, OBI_BUILD_UID, OBI_BUILD_GID, req->working_dir) < 0)
        return NULL;
    return passwd;
}

static int write_etc_files(obi_bundle *bundle, const char *passwd, obi_error **err)
{
    cleanup_free char *etc = obi_bundle_subpath(bundle, "root/etc");
    if (!etc)
        return obi_error_set(err, -ENOMEM, "out of memory");
    int r = obi_mkdir_p(etc, 0755, err);
    if (r < 0)
        return r;
    const struct {
        const char *name;
        const char *text;
    } files[] = {{"passwd", passwd}, {"group", ETC_GROUP}, {"hosts", ETC_HOSTS}};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(files); i++) {
        cleanup_free char *path = obi_path_join(etc, files[i].name);
        if (!path)
            return obi_error_set(err, -ENOMEM, "out of memory");
        r = obi_write_file(path, files[i].text, strlen(files[i].text), 0644, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Creates the directories along relative (below base); they are handed to the build user
 * afterwards with the rest of the scratch tree (hand_scratch_to_build_user). */
static int mkdir_below(const char *base, const char *relative, obi_error **err)
{
    cleanup_free char *path = obi_path_join(base, relative);
    if (!path)
        return obi_error_set(err, -ENOMEM, "out of memory");
    for (char *p = path + strlen(base) + 1;; p++) {
        if (*p != '/' && *p != 0)
            continue;
        char saved = *p;
        *p = 0;
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return obi_error_set_errno(err, errno, "mkdir %s", path);
        *p = saved;
        if (!saved)
            break;
    }
    return 0;
}

static int create_scratch_dirs(obi_bundle *bundle, const obi_build_request *req, obi_error **err)
{
    cleanup_free char *scratch = obi_bundle_subpath(bundle, "scratch");
    if (!scratch)
        return obi_error_set(err, -ENOMEM, "out of memory");
    if (mkdir(scratch, 0755) < 0)
        return obi_error_set_errno(err, errno, "mkdir %s", scratch);
    for (size_t i = 0; i < req->n_scratch_paths; i++) {
        char name[OBI_SCRATCH_NAME_LEN + 1];
        obi_scratch_name(req->scratch_paths[i], name);
        int r = mkdir_below(scratch, name, err);
        if (r < 0)
            return obi_error_prefix(err, r, "scratch_paths[%zu] \"%s\"", i, req->scratch_paths[i]);
    }
    return 0;
}

static int write_additional_files(obi_bundle *bundle, const obi_build_request *req, obi_error **err)
{
    for (size_t i = 0; i < req->n_additional_files; i++) {
        const obi_additional_file *file = &req->additional_files[i];
        cleanup_free char *relative = NULL;
        int r = obi_additional_file_host_path(req, i, &relative, err);
        if (r < 0)
            return r;
        cleanup_free char *path = obi_bundle_subpath(bundle, relative);
        cleanup_free char *parent = strdup(relative);
        if (!path || !parent)
            return obi_error_set(err, -ENOMEM, "out of memory");
        *strrchr(parent, '/') = 0;
        r = mkdir_below(obi_bundle_path(bundle), parent, err);
        if (r == 0)
            r = obi_write_file(path, file->contents.data, file->contents.len, 0644, err);
        if (r < 0)
            return obi_error_prefix(err, r, "additional_files[%zu]", i);
    }
    return 0;
}

static int lchown_tree(const char *path, uid_t uid, gid_t gid, obi_error **err)
{
    if (lchown(path, uid, gid) < 0)
        return obi_error_set_errno(err, errno, "chown %s", path);
    struct stat st;
    if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return 0;
    cleanup_dir DIR *dir = opendir(path);
    if (!dir)
        return obi_error_set_errno(err, errno, "open %s", path);
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        cleanup_free char *child = obi_path_join(path, de->d_name);
        if (!child)
            return obi_error_set(err, -ENOMEM, "out of memory");
        int r = lchown_tree(child, uid, gid, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Scratch dirs and additional files must be writable by the build user (container 1000:100):
 * rootful, chown them; rootless, chown them inside the mapped user namespace. */
static int hand_scratch_to_build_user(oci_build_service *svc, obi_bundle *bundle, obi_error **err)
{
    cleanup_free char *scratch = obi_bundle_subpath(bundle, "scratch");
    if (!scratch)
        return obi_error_set(err, -ENOMEM, "out of memory");
    if (svc->spec_opts.rootless)
        return obi_userns_chown_tree(&svc->userns, scratch, OBI_BUILD_UID, OBI_BUILD_GID, err);
    return lchown_tree(scratch, OBI_BUILD_UID, OBI_BUILD_GID, err);
}

/* ---- running ---- */

static int read_mem_total(uint64_t *bytes)
{
    cleanup_file FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return -errno;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "MemTotal:", 9) != 0)
            continue;
        char *end = NULL;
        errno = 0;
        unsigned long long kb = strtoull(line + 9, &end, 10);
        if (errno || end == line + 9 || kb > UINT64_MAX / 1024)
            return -EINVAL;
        *bytes = (uint64_t)kb * 1024;
        return 0;
    }
    return -ENOENT;
}

static int check_outputs_exist(obi_bundle *bundle, const obi_build_request *req, obi_error **err)
{
    for (size_t i = 0; i < req->n_outputs; i++) {
        cleanup_free char *relative = NULL;
        int r = obi_output_host_path(req, i, &relative, err);
        if (r < 0)
            return r;
        cleanup_free char *path = obi_bundle_subpath(bundle, relative);
        if (!path)
            return obi_error_set(err, -ENOMEM, "out of memory");
        struct stat st;
        if (lstat(path, &st) < 0)
            return obi_error_set(err, OBI_EBUILD_FAILED, "build did not produce output %zu \"/%s\"",
                                 i, req->outputs[i]);
    }
    return 0;
}

static int ingest_output(oci_build_service *svc, const obi_refscan *scanner, const char *path,
                         const char *name, obi_node *node_out, obi_output_needles *needles_out,
                         obi_error **err)
{
    cleanup_refscan_state obi_refscan_state *state = NULL;
    int r = obi_refscan_state_new(scanner, &state, err);
    if (r < 0)
        return r;
    obi_ingest_options options = {.name = name, .refscan = state};
    obi_node node;
    r = obi_ingest_path(svc->store->blobs, svc->store->directories, path, &options, &node, err);
    if (r < 0)
        return r;
    size_t *found = NULL, n_found = 0;
    r = obi_refscan_state_result(state, &found, &n_found, err);
    if (r < 0) {
        obi_node_clear(&node);
        return r;
    }
    needles_out->needles = calloc(n_found ? n_found : 1, sizeof *needles_out->needles);
    if (!needles_out->needles) {
        free(found);
        obi_node_clear(&node);
        return obi_error_set(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n_found; i++)
        needles_out->needles[i] = found[i];
    needles_out->n_needles = n_found;
    free(found);
    *node_out = node;
    return 0;
}

static int ingest_outputs(oci_build_service *svc, obi_bundle *bundle, const obi_build_request *req,
                          obi_build *build, obi_error **err)
{
    cleanup_refscan obi_refscan *scanner = NULL;
    int r = obi_refscan_new_strings((const char *const *)req->refscan_needles,
                                    req->n_refscan_needles, &scanner, err);
    if (r < 0)
        return obi_error_prefix(err, r, "refscan_needles");
    size_t n = req->n_outputs ? req->n_outputs : 1;
    build->outputs = calloc(n, sizeof *build->outputs);
    build->outputs_needles = calloc(n, sizeof *build->outputs_needles);
    if (!build->outputs || !build->outputs_needles)
        return obi_error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < req->n_outputs; i++) {
        cleanup_free char *relative = NULL;
        if ((r = obi_output_host_path(req, i, &relative, err)) < 0)
            return r;
        cleanup_free char *path = obi_bundle_subpath(bundle, relative);
        if (!path)
            return obi_error_set(err, -ENOMEM, "out of memory");
        if (svc->spec_opts.rootless && (r = obi_userns_make_readable(&svc->userns, path, err)) < 0)
            return obi_error_prefix(err, r, "output %zu \"/%s\"", i, req->outputs[i]);
        const char *name = strrchr(req->outputs[i], '/');
        name = name ? name + 1 : req->outputs[i];
        r = ingest_output(svc, scanner, path, name, &build->outputs[i], &build->outputs_needles[i],
                          err);
        if (r < 0)
            return obi_error_prefix(err, r, "ingest output %zu \"/%s\"", i, req->outputs[i]);
        build->n_outputs = i + 1;
    }
    return 0;
}

/* Symlink inputs are placed in the scratch dir instead of being mounted (build_inputs.h). */
static int drop_symlink_input_mounts(const obi_build_request *req, json_t *config, obi_error **err)
{
    json_t *mounts = json_object_get(config, "mounts");
    for (size_t i = 0; i < req->n_inputs; i++) {
        if (req->inputs[i].kind != OBI_NODE_SYMLINK)
            continue;
        cleanup_free char *source = NULL;
        if (asprintf(&source, "inputs/%s", (const char *)req->inputs[i].name.data) < 0)
            return obi_error_set(err, -ENOMEM, "out of memory");
        for (size_t m = 0; m < json_array_size(mounts); m++) {
            const char *src =
                json_string_value(json_object_get(json_array_get(mounts, m), "source"));
            if (src && !strcmp(src, source)) {
                json_array_remove(mounts, m);
                break;
            }
        }
    }
    return 0;
}

/* ---- root/: a pooled skeleton or a fresh one (root_pool.h) ---- */

/* What a source path is, as the runtime sees it when it creates the mount point: a directory,
 * something else (it creates a file), or missing. */
static char mount_source_kind(const obi_bundle *bundle, const char *source)
{
    cleanup_free char *path =
        source[0] == '/' ? strdup(source) : obi_bundle_subpath(bundle, source);
    struct stat st;
    if (!path || stat(path, &st) < 0)
        return '-';
    return S_ISDIR(st.st_mode) ? 'd' : 'f';
}

/* The key of the skeleton this bundle needs: everything that decides what root/ holds once the
 * runtime has made its mount points (etc files; each mount's destination, type and source kind;
 * the runtime and the user it runs as). */
static int skeleton_key(const oci_build_service *svc, const obi_bundle *bundle,
                        const json_t *config, const char *passwd,
                        char key[OBI_ROOT_POOL_KEY_LEN + 1], obi_error **err)
{
    cleanup_buf obi_buf description = OBI_BUF_INIT;
    obi_buf_appendf(&description, "ocibuild root skeleton 1\n%s\n%u %d\n%s%s%s",
                    obi_runtime_path(svc->runtime), (unsigned)geteuid(), svc->spec_opts.rootless,
                    passwd, ETC_GROUP, ETC_HOSTS);
    json_t *mounts = json_object_get(config, "mounts");
    for (size_t i = 0; i < json_array_size(mounts); i++) {
        const json_t *mount = json_array_get(mounts, i);
        const char *destination = json_string_value(json_object_get(mount, "destination"));
        const char *type = json_string_value(json_object_get(mount, "type"));
        const char *source = json_string_value(json_object_get(mount, "source"));
        bool bind = false;
        const json_t *options = json_object_get(mount, "options");
        for (size_t o = 0; o < json_array_size(options); o++) {
            const char *option = json_string_value(json_array_get(options, o));
            if (option && (!strcmp(option, "bind") || !strcmp(option, "rbind")))
                bind = true;
        }
        obi_buf_appendf(&description, "%s\t%s\t%c\n", destination ? destination : "",
                        type ? type : "", bind && source ? mount_source_kind(bundle, source) : '-');
    }
    if (!description.data)
        return obi_error_set(err, -ENOMEM, "out of memory");
    obi_root_pool_key(description.data, description.len, key);
    return 0;
}

/* Moves a pooled skeleton with this key into the bundle, or writes a fresh root/ (etc files;
 * the runtime adds the mount points). A pool that fails is skipped, never fatal. */
static int prepare_root(oci_build_service *svc, obi_bundle *bundle, const char *key,
                        const char *passwd, obi_error **err)
{
    if (svc->root_pool && key[0]) {
        cleanup_free char *root = obi_bundle_subpath(bundle, "root");
        cleanup_error obi_error *ignored = NULL;
        if (root && obi_root_pool_take(svc->root_pool, key, root, &ignored) == 1)
            return 0;
    }
    return write_etc_files(bundle, passwd, err);
}

/* After a build that ran to its end: root/ goes back to the pool (a full pool leaves it to the
 * bundle's removal). Nothing may be mounted below it. */
static void return_root(oci_build_service *svc, obi_bundle *bundle, const char *key)
{
    if (!svc->root_pool || !key[0] || svc->keep_bundle)
        return;
    cleanup_free char *root = obi_bundle_subpath(bundle, "root");
    cleanup_error obi_error *ignored = NULL;
    unsigned mounted = 0;
    if (!root || obi_unmount_below(root, &mounted, &ignored) < 0 || mounted > 0)
        return;
    obi_root_pool_give(svc->root_pool, key, root, &ignored);
}

static int run_bundle(oci_build_service *svc, obi_bundle *bundle, const build_run *run,
                      obi_error **err)
{
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.timeout_seconds = svc->timeout_seconds;
    opts.cancel_fd = run->cancel_fd;
    opts.on_output = run->on_output;
    opts.output_ctx = run->output_ctx;
    obi_run_result result;
    int r = obi_runtime_run(svc->runtime, obi_bundle_path(bundle), obi_bundle_id(bundle), &opts,
                            &result, err);
    if (r < 0)
        return r;
    if (result.timed_out)
        r = obi_error_set(err, -ETIMEDOUT, "timed out after %u s; log tail:\n%s",
                          svc->timeout_seconds, result.log_tail);
    else if (result.cancelled)
        r = obi_error_set(err, -ECANCELED, "build interrupted; container killed and removed");
    else if (result.exit_code != 0)
        r = obi_error_set(err, OBI_EBUILD_FAILED, "build failed with exit code %d; log tail:\n%s",
                          result.exit_code, result.log_tail);
    obi_run_result_clear(&result);
    return r;
}

static int build_in_bundle(oci_build_service *svc, const obi_build_request *req,
                           const build_run *run, obi_build **out, obi_error **err)
{
    cleanup_bundle obi_bundle *bundle = NULL;
    int r = obi_bundle_create(svc->bundle_root, &bundle, err);
    if (r < 0)
        return r;
    obi_bundle_set_keep(bundle, svc->keep_bundle);
    if (svc->spec_opts.rootless)
        obi_bundle_set_userns(bundle, &svc->userns);
    cleanup_free char *inputs_dir = obi_bundle_subpath(bundle, "inputs");
    if (!inputs_dir)
        return obi_error_set(err, -ENOMEM, "out of memory");
    cleanup_free char *passwd = etc_passwd_text(req);
    if (!passwd)
        return obi_error_set(err, -ENOMEM, "out of memory");
    cleanup_json json_t *config = NULL;
    char key[OBI_ROOT_POOL_KEY_LEN + 1] = "";
    if ((r = create_scratch_dirs(bundle, req, err)) < 0 ||
        (r = write_additional_files(bundle, req, err)) < 0 ||
        (r = obi_build_inputs_prepare(svc->store, svc->cache_dir, req, inputs_dir,
                                      obi_bundle_path(bundle), err)) < 0 ||
        (r = hand_scratch_to_build_user(svc, bundle, err)) < 0 ||
        (r = obi_spec_generate(req, &svc->spec_opts, &config, err)) < 0 ||
        (r = drop_symlink_input_mounts(req, config, err)) < 0 ||
        (svc->root_pool && (r = skeleton_key(svc, bundle, config, passwd, key, err)) < 0) ||
        (r = prepare_root(svc, bundle, key, passwd, err)) < 0 ||
        (r = obi_bundle_write_config(bundle, config, err)) < 0)
        return r;
    if ((r = run_bundle(svc, bundle, run, err)) < 0 ||
        (r = check_outputs_exist(bundle, req, err)) < 0)
        return r;
    cleanup_build obi_build *build = calloc(1, sizeof *build);
    if (!build)
        return obi_error_set(err, -ENOMEM, "out of memory");
    if ((r = obi_build_request_copy(req, &build->request, err)) < 0 ||
        (r = ingest_outputs(svc, bundle, req, build, err)) < 0)
        return r;
    return_root(svc, bundle, key);
    r = obi_bundle_close(steal_pointer(&bundle), err);
    if (r < 0)
        return obi_error_prefix(err, r, "remove bundle");
    *out = steal_pointer(&build);
    return 0;
}

/* One fd readable when either is: an epoll fd watching both (level-triggered, so it stays
 * readable like they do). *out is -1 when neither is set, or the one that is. */
static int watch_cancel_fds(int a, int b, int *out, int *owned, obi_error **err)
{
    *owned = -1;
    *out = a >= 0 ? a : b;
    if (a < 0 || b < 0)
        return 0;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return obi_error_set_errno(err, errno, "epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev) < 0) {
        int e = errno;
        close(ep);
        return obi_error_set_errno(err, e, "epoll_ctl on the cancel fds");
    }
    *out = *owned = ep;
    return 0;
}

static int oci_do_build(obi_build_service *base, const obi_build_request *req,
                        const obi_build_call *call, obi_build **out, obi_error **err)
{
    oci_build_service *svc = (oci_build_service *)base;
    int r = obi_build_request_validate(req, err);
    if (r < 0)
        return r;
    if (req->has_constraints && req->constraints.min_memory) {
        uint64_t total = 0;
        if (read_mem_total(&total) == 0 && total < req->constraints.min_memory)
            return obi_error_set(
                err, -ENOMEM, "constraints.min_memory: build needs %llu bytes, host has %llu",
                (unsigned long long)req->constraints.min_memory, (unsigned long long)total);
    }
    build_run run = {-1, svc->on_output, svc->output_ctx};
    cleanup_close int both_cancel_fds = -1;
    r = watch_cancel_fds(svc->cancel_fd, call ? call->cancel_fd : -1, &run.cancel_fd,
                         &both_cancel_fds, err);
    if (r < 0)
        return r;
    if (call && call->on_output) {
        run.on_output = call->on_output;
        run.output_ctx = call->output_ctx;
    }
    r = acquire_slot(svc, run.cancel_fd, err);
    if (r < 0)
        return r;
    r = build_in_bundle(svc, req, &run, out, err);
    release_slot(svc);
    return r;
}

static void oci_cancel(obi_build_service *base)
{
    oci_build_service *svc = (oci_build_service *)base;
    if (svc->own_cancel_pipe[1] >= 0 && write(svc->own_cancel_pipe[1], "c", 1) < 0) {
        /* A full pipe is readable already: the cancellation is pending either way. */
    }
}

static void oci_free(obi_build_service *base)
{
    oci_build_service *svc = (oci_build_service *)base;
    for (int i = 0; i < 2; i++)
        if (svc->own_cancel_pipe[i] >= 0)
            close(svc->own_cancel_pipe[i]);
    obi_runtime_free(svc->runtime);
    obi_root_pool_close(svc->root_pool);
    free(svc->bundle_root);
    free(svc->cache_dir);
    free(svc->sandbox_shell);
    pthread_mutex_destroy(&svc->lock);
    pthread_cond_destroy(&svc->slot_free);
    free(svc);
}

static const struct obi_build_service_ops OCI_OPS = {oci_do_build, oci_free, oci_cancel};

int obi_oci_build_service_new(const obi_oci_build_options *opts, obi_store *store,
                              obi_build_service **out, obi_error **err)
{
    if (!opts->bundle_root || opts->bundle_root[0] != '/')
        return obi_error_set(err, -EINVAL,
                             "oci build service: bundle root must be an absolute "
                             "path");
    cleanup_free oci_build_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_set(err, -ENOMEM, "out of memory");
    svc->base.ops = &OCI_OPS;
    svc->store = store;
    svc->rootless = opts->rootless;
    svc->keep_bundle = opts->keep_bundle;
    svc->timeout_seconds = opts->timeout_seconds;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    svc->max_builds = opts->max_builds ? opts->max_builds : (unsigned)(cpus > 0 ? cpus : 1);
    svc->cancel_fd = opts->cancel_fd;
    svc->own_cancel_pipe[0] = svc->own_cancel_pipe[1] = -1;
    svc->on_output = opts->on_output;
    svc->output_ctx = opts->output_ctx;
    int r = 0;
    if (opts->rootless) {
        r = obi_spec_options_rootless_current_user(&svc->spec_opts, err);
        if (r < 0)
            return obi_error_prefix(err, r, "rootless");
        svc->userns = (obi_userns_ids){svc->spec_opts.uid, svc->spec_opts.gid,
                                       svc->spec_opts.subuid, svc->spec_opts.subgid};
    }
    svc->bundle_root = strdup(opts->bundle_root);
    svc->sandbox_shell =
        strdup(opts->sandbox_shell ? opts->sandbox_shell : OBI_DEFAULT_SANDBOX_SHELL);
    if (opts->cache_dir)
        svc->cache_dir = strdup(opts->cache_dir);
    else if (asprintf(&svc->cache_dir, "%s/../input-cache", opts->bundle_root) < 0)
        svc->cache_dir = NULL;
    svc->spec_opts.sandbox_shell = svc->sandbox_shell;
    if (!svc->bundle_root || !svc->sandbox_shell || !svc->cache_dir) {
        free(svc->bundle_root);
        free(svc->sandbox_shell);
        free(svc->cache_dir);
        return obi_error_set(err, -ENOMEM, "out of memory");
    }
    /* Rootless runtimes keep their state in a directory the user owns. */
    cleanup_free char *runtime_root = NULL;
    if (!opts->runtime_root && opts->rootless) {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (xdg && *xdg && access(xdg, W_OK) == 0)
            runtime_root = obi_path_join(xdg, "ocibuild-runtime");
        else if (asprintf(&runtime_root, "%s/../runtime-state", opts->bundle_root) < 0)
            runtime_root = NULL;
    }
    r = obi_runtime_new(opts->runtime, opts->runtime_root ? opts->runtime_root : runtime_root,
                        &svc->runtime, err);
    if (r == 0)
        r = obi_mkdir_p(svc->bundle_root, 0711, err);
    if (r == 0)
        r = obi_mark_top_directory(svc->bundle_root, err);
    if (r == 0)
        r = obi_bundle_sweep(svc->bundle_root, svc->runtime,
                             svc->spec_opts.rootless ? &svc->userns : NULL, NULL, err);
    if (r < 0) {
        obi_runtime_free(svc->runtime);
        free(svc->bundle_root);
        free(svc->sandbox_shell);
        free(svc->cache_dir);
        return r;
    }
    /* Root skeletons (root_pool.h): a pool that cannot be opened only costs speed. Skeletons
     * idle for ROOT_POOL_IDLE_SECONDS, or beyond ROOT_POOL_MAX_ENTRIES, are removed here. */
    if (!opts->disable_root_pool) {
        cleanup_error obi_error *ignored = NULL;
        if (obi_root_pool_open(svc->bundle_root, svc->max_builds, &svc->root_pool, &ignored) == 0)
            obi_root_pool_prune(svc->root_pool, ROOT_POOL_IDLE_SECONDS, ROOT_POOL_MAX_ENTRIES, NULL,
                                &ignored);
    }
    if (svc->cancel_fd < 0 && pipe2(svc->own_cancel_pipe, O_CLOEXEC | O_NONBLOCK) == 0)
        svc->cancel_fd = svc->own_cancel_pipe[0];
    pthread_mutex_init(&svc->lock, NULL);
    pthread_cond_init(&svc->slot_free, NULL);
    *out = &steal_pointer(&svc)->base;
    return 0;
}

static int parse_bool_param(const char *key, const char *value, bool *out, obi_error **err)
{
    if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes")) {
        *out = true;
        return 0;
    }
    if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no")) {
        *out = false;
        return 0;
    }
    return obi_error_set(err, -EINVAL, "oci build service: %s=%s: expected true or false", key,
                         value);
}

static int parse_unsigned_param(const char *key, const char *value, unsigned *out, obi_error **err)
{
    unsigned long long v = 0;
    if (!obi_parse_decimal(value, 1000000000ULL, &v))
        return obi_error_set(
            err, -EINVAL, "oci build service: %s=%s: expected a non-negative integer", key, value);
    *out = (unsigned)v;
    return 0;
}

int obi_oci_build_service_from_url(const obi_url *url, obi_store *store, obi_build_service **out,
                                   obi_error **err)
{
    if (!url->path || url->path[0] != '/' || (url->host && *url->host))
        return obi_error_set(err, -EINVAL,
                             "oci build service: expected oci:///absolute/bundle/root, got no "
                             "absolute path");
    obi_oci_build_options opts = OBI_OCI_BUILD_OPTIONS_INIT;
    opts.bundle_root = url->path;
    for (size_t i = 0; i < url->n_params; i++) {
        const char *key = url->params[i].key, *value = url->params[i].value;
        int r = 0;
        if (!strcmp(key, "runtime"))
            opts.runtime = value;
        else if (!strcmp(key, "runtime_root"))
            opts.runtime_root = value;
        else if (!strcmp(key, "sandbox_shell"))
            opts.sandbox_shell = value;
        else if (!strcmp(key, "cache_dir"))
            opts.cache_dir = value;
        else if (!strcmp(key, "rootless"))
            r = parse_bool_param(key, value, &opts.rootless, err);
        else if (!strcmp(key, "keep_bundle"))
            r = parse_bool_param(key, value, &opts.keep_bundle, err);
        else if (!strcmp(key, "timeout"))
            r = parse_unsigned_param(key, value, &opts.timeout_seconds, err);
        else if (!strcmp(key, "max_builds"))
            r = parse_unsigned_param(key, value, &opts.max_builds, err);
        else if (!strcmp(key, "root_pool")) {
            bool enabled = true;
            r = parse_bool_param(key, value, &enabled, err);
            opts.disable_root_pool = !enabled;
        } else
            r = obi_error_set(err, -EINVAL,
                              "oci build service: unknown option \"%s\" (supported: runtime, "
                              "runtime_root, rootless, max_builds, timeout, keep_bundle, "
                              "sandbox_shell, cache_dir, root_pool)",
                              key);
        if (r < 0)
            return r;
    }
    return obi_oci_build_service_new(&opts, store, out, err);
}
