/*
 * The local OCI build service (see include/ocibuild/oci_build.h and ../shared/spec/build.md).
 * One build, top to bottom: validate -> wait for a slot -> claim an id slot (rootful) -> bundle
 * (0700, owned by container root's host ids; scratch dirs, on a sized tmpfs with a scratch
 * limit, the working dir 0700, additional files, all made beneath the bundle's descriptor;
 * inputs from the shared input cache, config.json, and root/: a pooled skeleton of the same
 * shape or fresh etc files) -> runtime run (while the runtime makes the container, the
 * output side gets ready: the store's database, the outputs' pins) -> find every output
 * beneath the bundle (never through a symlink) and ingest them with the reference scanner
 * (build_outputs.h) -> root/ back to the pool -> Build. The bundle and the id slot are owned by
 * cleanup locals, so every exit path removes the bundle (and the runtime driver removes the
 * container) and then frees the slot.
 *
 * A build stops early when the service's cancel fd or the caller's own (obi_build_call) becomes
 * readable: both are watched as one epoll fd, while the build waits for a slot (and an id slot)
 * and while its container runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/beneath.h"
#include "ocibuild/buf.h"
#include "ocibuild/build_inputs.h"
#include "ocibuild/build_outputs.h"
#include "ocibuild/bundle.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/detached.h"
#include "ocibuild/fs.h"
#include "ocibuild/id_slot.h"
#include "ocibuild/json_util.h"
#include "ocibuild/number.h"
#include "ocibuild/oci_build.h"
#include "ocibuild/process.h"
#include "ocibuild/root_pool.h"
#include "ocibuild/spec.h"
#include "ocibuild/store_roots.h"
#include "ocibuild/userns.h"

/* Pooled root skeletons older than this (since last used) or beyond this count are removed when
 * a service opens: a few hundred inodes at most, and shapes not built for a while go away. */
#define ROOT_POOL_IDLE_SECONDS (15 * 60)
#define ROOT_POOL_MAX_ENTRIES 64
/* ... but by one service start a minute at most (root_pool.h obi_root_pool_prune_due). */
#define ROOT_POOL_PRUNE_INTERVAL_SECONDS 60
/* A finished build's outputs stay pinned (store_roots.h) for at least this long, and at most
 * twice as long, or until the service is freed: time for the caller (`build --root`, a gRPC
 * client reading them from the daemon) to root or fetch them before a gc may take them. */
#define OUTPUT_PIN_SECONDS (10 * 60)

struct build_leftovers;

typedef struct oci_build_service {
    obi_build_service base;
    obi_store *store;
    obi_runtime *runtime;
    char *bundle_root;
    char *cache_dir;
    char *sandbox_shell;
    char *seccomp_bpf_dir; /* compiled syscall filters for crun (seccomp_bpf.h) */
    bool rootless;
    bool keep_bundle;
    unsigned timeout_seconds;
    unsigned max_builds;
    int cancel_fd;
    int own_cancel_pipe[2]; /* when the caller gave no cancel_fd: written by oci_cancel */
    obi_output_fn on_output;
    void *output_ctx;
    const obi_progress *materialize_progress; /* inputs into the cache; NULL: nobody */
    obi_spec_options spec_opts; /* rootless flag, sandbox shell, limits; rootless: host ids */
    obi_userns_ids userns;      /* rootless: how to act on the build user's files */
    obi_id_pool *id_pool;       /* rootful: host ids per build (id_slot.h) */
    uint64_t scratch_limit;     /* bytes; 0: scratch dirs on the bundle's disk */
    obi_root_pool *root_pool;   /* NULL: every build makes its own root/ */
    /* Bundle skeletons (bundle.h), in the root pool under a key of their own; rootful only. */
    char bundle_skeleton_key[OBI_ROOT_POOL_KEY_LEN + 1];
    obi_bundle_recycler bundle_skeletons;
    obi_inputs_plan inputs; /* the input cache or FUSE (build_inputs.h) */
    pthread_mutex_t lock;
    pthread_cond_t slot_free;
    unsigned running;
    /* Outputs of finished builds: two generations, the older freed when the newer is
     * OUTPUT_PIN_SECONDS old (see there). */
    pthread_mutex_t output_pins_lock;
    obi_store_pin *output_pins[2];
    time_t output_pins_since;
    /* Leftovers of answered builds and the thread that removes them (leave_leftovers). */
    pthread_mutex_t leftovers_lock;
    pthread_cond_t leftovers_cond;
    struct build_leftovers *leftovers;
    pthread_t leftovers_thread;
    pthread_cond_t leftovers_idle; /* broadcast when the cleaner has finished one */
    bool leftovers_started, leftovers_stop, leftovers_busy;
    /* Leftovers wait for the next build (the cleaner is woken then), and what is queued when
     * the service is freed goes to a child (hand_off_leftovers). */
    bool hand_off;
} oci_build_service;

/* What a build leaves once it has its answer: the stopped container (deleted unless the run
 * already did), the bundle and the id slot, released in that order (a slot is reused only once
 * nothing of its build is left). */
typedef struct build_leftovers {
    obi_id_slot slot;
    obi_bundle *bundle;
    bool delete_container;
    struct build_leftovers *next; /* the cleaner's queue */
} build_leftovers;
#define BUILD_LEFTOVERS_INIT                                                                       \
    {                                                                                              \
        OBI_ID_SLOT_INIT, NULL, false, NULL                                                        \
    }

/* What one build runs with: the cancel fd it watches (the service's, the caller's, or both as
 * one epoll fd) and where its log goes. */
typedef struct build_run {
    int cancel_fd;
    obi_output_fn on_output;
    void *output_ctx;
    bool keep_failed;
    int *exit_code; /* the caller's obi_build_call.exit_code, or NULL */
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
        return obi_error_oom(err);
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
            return obi_error_oom(err);
        r = obi_write_file(path, files[i].text, strlen(files[i].text), 0644, err);
        if (r < 0)
            return r;
    }
    /* The mount point of the /tmp tmpfs, made here: runc gives a tmpfs the mode of a mount point
     * that exists already (as in a reused skeleton), so it must have the mode /tmp gets (1777,
     * spec.c), not the 0755 runc would make it with. */
    cleanup_free char *tmp = obi_bundle_subpath(bundle, "root/tmp");
    if (!tmp)
        return obi_error_oom(err);
    if (mkdir(tmp, 01777) < 0 || chmod(tmp, 01777) < 0)
        return obi_error_set_errno(err, errno, "mkdir %s", tmp);
    return 0;
}

/* With a scratch limit, BUNDLE/scratch is a tmpfs of that size: a build that writes more gets
 * ENOSPC there, and never fills the host's disk (docs/security.md "Limits"). Its inodes are
 * bounded too (one per KiB), since they take kernel memory the size does not count. nosuid and
 * nodev like every place a build writes. The bundle's removal detaches it. The bundle was made
 * by this process a moment ago and nothing of the build has run yet, so its path is ours. */
static int mount_scratch_tmpfs(const char *scratch, uint64_t bytes, obi_error **err)
{
    char options[96];
    unsigned long long inodes = bytes / 1024 + 1024;
    snprintf(options, sizeof options, "size=%llu,nr_inodes=%llu,mode=0755",
             (unsigned long long)bytes, inodes);
    if (mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, options) < 0)
        return obi_error_set_errno(err, errno, "mount a %llu-byte tmpfs (scratch limit) at %s",
                                   (unsigned long long)bytes, scratch);
    return 0;
}

/* The working dir is 0700 like Nix's /build, when it lies in a scratch path (created here so
 * that the build user, not container root, owns it once the scratch tree is handed over). */
static int create_working_dir(obi_bundle *bundle, const obi_build_request *req, obi_error **err)
{
    size_t index;
    const char *rest;
    if (!*req->working_dir ||
        obi_build_request_find_scratch(req, req->working_dir, &index, &rest) < 0)
        return 0;
    char name[OBI_SCRATCH_NAME_LEN + 1];
    obi_scratch_name(req->scratch_paths[index], name);
    cleanup_free char *relative = NULL;
    if (asprintf(&relative, "scratch/%s%s%s", name, *rest ? "/" : "", rest) < 0)
        return obi_error_oom(err);
    cleanup_close int fd = -1;
    int r = obi_beneath_mkdirs(obi_bundle_fd(bundle), relative, 0755, NULL, &fd, err);
    if (r == 0) {
        /* fd is O_PATH: chmod through the bundle-relative descriptor path. */
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (chmod(proc, 0700) < 0)
            r = obi_error_set_errno(err, errno, "chmod %s/%s", obi_bundle_path(bundle), relative);
    }
    return r < 0 ? obi_error_prefix(err, r, "working_dir \"%s\"", req->working_dir) : 0;
}

/* Scratch dirs are made beneath the bundle's descriptor, never through a symlink (beneath.h);
 * they are handed to the build user afterwards with the rest of the scratch tree
 * (hand_scratch_to_build_user). */
static int create_scratch_dirs(oci_build_service *svc, obi_bundle *bundle,
                               const obi_build_request *req, obi_error **err)
{
    /* An empty scratch/ may be there already: a bundle skeleton's (bundle.h). */
    struct stat st;
    if (mkdirat(obi_bundle_fd(bundle), "scratch", 0755) < 0 &&
        (errno != EEXIST ||
         fstatat(obi_bundle_fd(bundle), "scratch", &st, AT_SYMLINK_NOFOLLOW) < 0 ||
         !S_ISDIR(st.st_mode)))
        return obi_error_set_errno(err, errno == 0 ? EEXIST : errno, "mkdir %s/scratch",
                                   obi_bundle_path(bundle));
    int r = 0;
    if (svc->scratch_limit) {
        cleanup_free char *scratch = obi_bundle_subpath(bundle, "scratch");
        if (!scratch)
            return obi_error_oom(err);
        if ((r = mount_scratch_tmpfs(scratch, svc->scratch_limit, err)) < 0)
            return r;
    }
    for (size_t i = 0; i < req->n_scratch_paths; i++) {
        cleanup_free char *relative = obi_scratch_host_path(req->scratch_paths[i]);
        if (!relative)
            return obi_error_oom(err);
        r = obi_beneath_mkdirs(obi_bundle_fd(bundle), relative, 0755, NULL, NULL, err);
        if (r < 0)
            return obi_error_prefix(err, r, "scratch_paths[%zu] \"%s\"", i, req->scratch_paths[i]);
    }
    return create_working_dir(bundle, req, err);
}

/* Writes additional file i: its directories made beneath the bundle, the file created new
 * (O_EXCL | O_NOFOLLOW) in the last of them. */
static int write_additional_file(obi_bundle *bundle, const obi_build_request *req, size_t i,
                                 obi_error **err)
{
    const obi_additional_file *file = &req->additional_files[i];
    cleanup_free char *relative = NULL;
    int r = obi_additional_file_host_path(req, i, &relative, err);
    if (r < 0)
        return r;
    char *slash = strrchr(relative, '/');
    *slash = 0;
    cleanup_close int dir_fd = -1;
    if ((r = obi_beneath_mkdirs(obi_bundle_fd(bundle), relative, 0755, NULL, &dir_fd, err)) < 0)
        return r;
    cleanup_close int fd =
        openat(dir_fd, slash + 1, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "create /%s", file->path);
    if ((r = obi_write_all(fd, file->contents.data, file->contents.len)) < 0)
        return obi_error_set_errno(err, -r, "write /%s", file->path);
    if (close(steal_fd(&fd)) < 0)
        return obi_error_set_errno(err, errno, "close /%s", file->path);
    return 0;
}

static int write_additional_files(obi_bundle *bundle, const obi_build_request *req, obi_error **err)
{
    for (size_t i = 0; i < req->n_additional_files; i++) {
        int r = write_additional_file(bundle, req, i, err);
        if (r < 0)
            return obi_error_prefix(err, r, "additional_files[%zu]", i);
    }
    return 0;
}

/* Scratch dirs and additional files must be writable by the build user (container 1000:100):
 * rootful, chown them to its host ids in the build's id slot; rootless, chown them inside the
 * mapped user namespace. Both walk the tree from the bundle's descriptor (fs_walk.h). */
static int hand_scratch_to_build_user(oci_build_service *svc, obi_bundle *bundle,
                                      const obi_spec_options *opts, obi_error **err)
{
    if (svc->spec_opts.rootless)
        return obi_userns_chown_tree(&svc->userns, obi_bundle_fd(bundle), "scratch", OBI_BUILD_UID,
                                     OBI_BUILD_GID, err);
    return obi_chown_tree_at(obi_bundle_fd(bundle), "scratch", opts->build_uid, opts->build_gid,
                             "scratch", err);
}

/* The bundle dir is 0700 (bundle.c) and, rootful, owned by container root's host ids: the
 * runtime's init runs as them in the build's user namespace and reaches root/ through it (runc
 * 1.1 hands it the bind mount sources as fds; the rootfs it opens by path). Host users other
 * than root reach nothing below it. */
static int hand_bundle_to_container_root(obi_bundle *bundle, const obi_spec_options *opts,
                                         obi_error **err)
{
    if (opts->rootless)
        return 0;
    if (fchownat(obi_bundle_fd(bundle), "", opts->root_uid, opts->root_gid, AT_EMPTY_PATH) < 0)
        return obi_error_set_errno(err, errno, "chown %s", obi_bundle_path(bundle));
    return 0;
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

/* Symlink inputs are placed in the scratch dir instead of being mounted (build_inputs.h). */
static int drop_symlink_input_mounts(const obi_build_request *req, json_t *config, obi_error **err)
{
    json_t *mounts = json_object_get(config, "mounts");
    for (size_t i = 0; i < req->n_inputs; i++) {
        if (req->inputs[i].kind != OBI_NODE_SYMLINK)
            continue;
        cleanup_free char *source = NULL;
        if (asprintf(&source, "inputs/%s", (const char *)req->inputs[i].name.data) < 0)
            return obi_error_oom(err);
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
 * something else (it creates a file), or missing. An input's is its node's kind, never looked
 * at: it may lie in the FUSE mount this process serves (build_inputs.h), which the process
 * itself does not enter (under valgrind, whose lock is held across a stat, that stat waited
 * forever for the server thread's answer). */
static char mount_source_kind(const obi_bundle *bundle, const obi_build_request *req,
                              const char *source)
{
    if (!strncmp(source, "inputs/", 7)) {
        for (size_t i = 0; i < req->n_inputs; i++)
            if (!strcmp(source + 7, (const char *)req->inputs[i].name.data))
                return req->inputs[i].kind == OBI_NODE_DIRECTORY ? 'd' : 'f';
    }
    cleanup_free char *path =
        source[0] == '/' ? strdup(source) : obi_bundle_subpath(bundle, source);
    struct stat st;
    if (!path || stat(path, &st) < 0)
        return '-';
    return S_ISDIR(st.st_mode) ? 'd' : 'f';
}

/* Whether destination lies below the destination of one of the first n mounts: the runtime
 * makes its mount point inside that mount (a scratch dir, a tmpfs), not in root/. */
static bool below_earlier_mount(const json_t *mounts, size_t n, const char *destination)
{
    for (size_t i = 0; i < n; i++) {
        const char *earlier =
            json_string_value(json_object_get(json_array_get(mounts, i), "destination"));
        size_t len = earlier ? strlen(earlier) : 0;
        if (len > 1 && strncmp(destination, earlier, len) == 0 && destination[len] == '/')
            return true;
    }
    return false;
}

/* The key of the skeleton this bundle needs: everything that decides what root/ holds once the
 * runtime has made its mount points (etc files; the destination, type and source kind of each
 * mount whose mount point lands in root/; the runtime and the user it runs as). A Nix build's
 * inputs are mounted below its /nix/store scratch dir, so builds on different inputs share a
 * skeleton (a chain's every step used to make its own, and the next run pruned them). */
static int skeleton_key(const oci_build_service *svc, const obi_bundle *bundle,
                        const obi_build_request *req, const obi_spec_options *opts,
                        const json_t *config, const char *passwd,
                        char key[OBI_ROOT_POOL_KEY_LEN + 1], obi_error **err)
{
    cleanup_buf obi_buf description = OBI_BUF_INIT;
    obi_buf_appendf(&description, "ocibuild root skeleton 3\n%s\n%u %d %u:%u\n%s%s%s",
                    obi_runtime_path(svc->runtime), (unsigned)geteuid(), opts->rootless,
                    (unsigned)opts->root_uid, (unsigned)opts->root_gid, passwd, ETC_GROUP,
                    ETC_HOSTS);
    json_t *mounts = json_object_get(config, "mounts");
    for (size_t i = 0; i < json_array_size(mounts); i++) {
        const json_t *mount = json_array_get(mounts, i);
        const char *destination = json_string_value(json_object_get(mount, "destination"));
        const char *type = json_string_value(json_object_get(mount, "type"));
        const char *source = json_string_value(json_object_get(mount, "source"));
        if (destination && below_earlier_mount(mounts, i, destination))
            continue;
        bool bind = false;
        const json_t *options = json_object_get(mount, "options");
        for (size_t o = 0; o < json_array_size(options); o++) {
            const char *option = json_string_value(json_array_get(options, o));
            if (option && (!strcmp(option, "bind") || !strcmp(option, "rbind")))
                bind = true;
        }
        obi_buf_appendf(&description, "%s\t%s\t%c\n", destination ? destination : "",
                        type ? type : "",
                        bind && source ? mount_source_kind(bundle, req, source) : '-');
    }
    if (!description.data)
        return obi_error_oom(err);
    obi_root_pool_key(description.data, description.len, key);
    return 0;
}

/* Moves a pooled skeleton with this key into the bundle, or writes a fresh root/ (etc files;
 * the runtime adds the mount points). A pool that fails is skipped, never fatal. Rootful, the
 * runtime's init makes those mount points as container root, so root/ and root/etc belong to
 * its host ids (the key holds them: a skeleton is reused by builds of the same id slot). */
static int prepare_root(oci_build_service *svc, obi_bundle *bundle, const obi_spec_options *opts,
                        const char *key, const char *passwd, obi_error **err)
{
    cleanup_free char *root = obi_bundle_subpath(bundle, "root");
    cleanup_free char *etc = obi_bundle_subpath(bundle, "root/etc");
    if (!root || !etc)
        return obi_error_oom(err);
    if (svc->root_pool && key[0]) {
        cleanup_error obi_error *ignored = NULL;
        if (obi_root_pool_take(svc->root_pool, key, root, &ignored) == 1)
            return 0;
    }
    int r = write_etc_files(bundle, passwd, err);
    if (r < 0 || opts->rootless)
        return r;
    if (chown(root, opts->root_uid, opts->root_gid) < 0 ||
        chown(etc, opts->root_uid, opts->root_gid) < 0)
        return obi_error_set_errno(err, errno, "chown %s", root);
    return 0;
}

/* ---- bundle skeletons: the bundle directory with scratch/ and inputs/ (bundle.h) ---- */

/* The directories of a skeleton: neither is ever mounted in a container (only what is below
 * them), so no build reaches them; they are emptied before a skeleton is given back. */
static const char *const BUNDLE_SKELETON_DIRS[] = {"scratch", "inputs", NULL};

static int take_bundle_skeleton(void *ctx, const char *dest)
{
    oci_build_service *svc = ctx;
    cleanup_error obi_error *ignored = NULL;
    return obi_root_pool_take(svc->root_pool, svc->bundle_skeleton_key, dest, &ignored) == 1;
}

static int give_bundle_skeleton(void *ctx, const char *path)
{
    oci_build_service *svc = ctx;
    cleanup_error obi_error *ignored = NULL;
    return obi_root_pool_give(svc->root_pool, svc->bundle_skeleton_key, path, &ignored) == 1;
}

/* Rootful builds with a root pool recycle their bundles: ownership and modes are set again by
 * every build (the bundle's and scratch/'s owners are the id slot's), inputs/ stays root's. */
static void enable_bundle_skeletons(oci_build_service *svc)
{
    if (!svc->root_pool || svc->rootless)
        return;
    static const char description[] = "ocibuild bundle skeleton 1\nscratch inputs\n";
    obi_root_pool_key(description, sizeof description - 1, svc->bundle_skeleton_key);
    svc->bundle_skeletons = (obi_bundle_recycler){BUNDLE_SKELETON_DIRS, take_bundle_skeleton,
                                                  give_bundle_skeleton, svc};
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

/* A build killed by SIGKILL while it had a memory limit most likely met it (the kernel's OOM
 * killer); say so next to the exit code. */
static const char *memory_limit_hint(const oci_build_service *svc, int exit_code)
{
    return svc->spec_opts.memory_bytes && exit_code == 128 + 9
               ? " (SIGKILL: the build probably reached its memory limit)"
               : "";
}

/* Makes the service's newer generation of output pins, or a fresh one when it is
 * OUTPUT_PIN_SECONDS old (the older is freed); output_pins_lock held. */
static int rotate_output_pins(oci_build_service *svc, obi_error **err)
{
    time_t now = time(NULL);
    if (svc->output_pins[0] && now - svc->output_pins_since < OUTPUT_PIN_SECONDS)
        return 0;
    obi_store_pin *fresh = NULL;
    int r = obi_store_pin_new(svc->store, &fresh, err);
    if (r < 0)
        return r;
    obi_store_pin_free(svc->output_pins[1]);
    svc->output_pins[1] = svc->output_pins[0];
    svc->output_pins[0] = fresh;
    svc->output_pins_since = now;
    return 0;
}

/* The generation a build's outputs will be pinned in, made before they exist (while the
 * container starts). */
static int ready_output_pins(oci_build_service *svc, obi_error **err)
{
    pthread_mutex_lock(&svc->output_pins_lock);
    int r = rotate_output_pins(svc, err);
    pthread_mutex_unlock(&svc->output_pins_lock);
    return r < 0 ? obi_error_prefix(err, r, "pin the outputs") : 0;
}

/* What a build does while its container starts (obi_run_options.while_starting): the output
 * side, which nothing before the container needs. The store's database, which a lazily opened
 * store opens on first use (obi_store_connect), and the output pins' generation. A failure
 * here kills and removes the container like any failed run. */
static int while_container_starts(void *ctx, obi_error **err)
{
    oci_build_service *svc = ctx;
    int r = obi_store_connect(svc->store, err);
    if (r == 0)
        r = ready_output_pins(svc, err);
    return r < 0 ? obi_error_prefix(err, r, "while the container started") : 0;
}

/* *container_gone is false when the runtime could not remove the container (its id slot must
 * then not be reused before it is gone). */
static int run_bundle(oci_build_service *svc, obi_bundle *bundle, const build_run *run,
                      bool *container_gone, bool *container_stopped, obi_error **err)
{
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.defer_delete = true; /* a stopped container is deleted after the answer (leftovers) */
    opts.timeout_seconds = svc->timeout_seconds;
    opts.cancel_fd = run->cancel_fd;
    opts.on_output = run->on_output;
    opts.output_ctx = run->output_ctx;
    opts.while_starting = while_container_starts;
    opts.while_starting_ctx = svc;
    obi_run_result result;
    int r = obi_runtime_run(svc->runtime, obi_bundle_path(bundle), obi_bundle_id(bundle), &opts,
                            &result, err);
    *container_gone = r != OBI_ECONTAINER_LEFT;
    *container_stopped = r == 0 && result.container_stopped;
    if (r == -ECANCELED)
        return obi_error_prefix(err, r, "build");
    if (r < 0)
        return r;
    if (result.exit_code != 0) {
        if (run->exit_code)
            *run->exit_code = result.exit_code;
        r = obi_error_set(err, OBI_EBUILD_FAILED, "build failed with exit code %d%s; log tail:\n%s",
                          result.exit_code, memory_limit_hint(svc, result.exit_code),
                          result.log_tail);
    }
    obi_run_result_clear(&result);
    return r;
}

/* A line for the caller's log (a quarantined bundle), through the build log stream. */
static void report_line(void *ctx, const char *line)
{
    const build_run *run = ctx;
    if (!run->on_output)
        return;
    run->on_output((const uint8_t *)line, strlen(line), run->output_ctx);
    run->on_output((const uint8_t *)"\n", 1, run->output_ctx);
}

/* Inputs from the cache, or over FUSE (*fs: the mount, when the plan made one). */
static int prepare_inputs(oci_build_service *svc, const obi_build_request *req, obi_bundle *bundle,
                          const char *inputs_dir, obi_castore_fs **fs, obi_error **err)
{
    if (!svc->inputs.fuse)
        return obi_build_inputs_prepare(svc->store, svc->cache_dir, req, inputs_dir,
                                        obi_bundle_path(bundle), svc->materialize_progress, err);
    return obi_build_inputs_prepare_fuse(svc->store, svc->cache_dir, &svc->inputs, req, inputs_dir,
                                         obi_bundle_path(bundle), svc->materialize_progress, fs,
                                         err);
}

/* A build that failed while its inputs' mount answered an error says which (a blob the store
 * could not deliver reads as EIO inside the build). */
static int note_input_errors(obi_castore_fs *fs, int r, obi_error **err)
{
    cleanup_free char *first = fs ? obi_castore_fs_first_error(fs) : NULL;
    return first ? obi_error_prefix(err, r, "reading an input over FUSE failed (%s)", first) : r;
}

/* The spec options of one build: the service's, with the host ids of its id slot (rootful), and
 * no cgroup where the runtime makes none (use_cgroups_as_needed). */
static obi_spec_options build_spec_options(const oci_build_service *svc, const obi_id_slot *slot)
{
    obi_spec_options opts = svc->spec_opts;
    opts.seccomp_bpf = obi_runtime_takes_seccomp_bpf(svc->runtime);
    opts.seccomp_bpf_cache_dir = svc->seccomp_bpf_dir;
    opts.no_cgroup = !obi_runtime_uses_cgroups(svc->runtime);
    if (!opts.rootless)
        obi_id_slot_spec_ids(slot, &opts);
    return opts;
}

/* A failed build's bundle stays (unswept: marked kept) and the error names its working dir
 * on the host, where a failed Nix build's directory would be. */
static int keep_failed_bundle(obi_bundle *bundle, const obi_build_request *req, int code,
                              obi_error **err)
{
    obi_bundle_set_keep(bundle, true);
    size_t scratch = 0;
    const char *rest = "";
    cleanup_free char *dir = NULL;
    if (*req->working_dir &&
        obi_build_request_find_scratch(req, req->working_dir, &scratch, &rest) == 0) {
        cleanup_free char *host = obi_scratch_host_path(req->scratch_paths[scratch]);
        if (host &&
            asprintf(&dir, "%s/%s%s%s", obi_bundle_path(bundle), host, *rest ? "/" : "", rest) < 0)
            dir = NULL;
    }
    return obi_error_prefix(err, code, "note: keeping build directory '%s'",
                            dir ? dir : obi_bundle_path(bundle));
}

/* Pins a finished build's outputs in the service's newer generation (rotated first when it
 * is OUTPUT_PIN_SECONDS old). */
static int pin_outputs(oci_build_service *svc, const obi_build *build, obi_error **err)
{
    pthread_mutex_lock(&svc->output_pins_lock);
    int r = rotate_output_pins(svc, err);
    for (size_t i = 0; r == 0 && i < build->n_outputs; i++)
        r = obi_store_pin_add(svc->output_pins[0], &build->outputs[i], err);
    pthread_mutex_unlock(&svc->output_pins_lock);
    return r < 0 ? obi_error_prefix(err, r, "pin the outputs") : 0;
}

/* Pins every input before anything relies on it being stored: no gc takes it while the build
 * materializes or runs (docs/store.md, "Garbage collection"). */
static int pin_inputs(obi_store_pin *pin, const obi_build_request *req, obi_error **err)
{
    for (size_t i = 0; i < req->n_inputs; i++) {
        int r = obi_store_pin_add(pin, &req->inputs[i], err);
        if (r < 0)
            return obi_error_prefix(err, r, "pin inputs[%zu]", i);
    }
    return 0;
}

/* Ingests the outputs and pins them, holding gc off in between: an output found already
 * stored (or just written) cannot be collected before it is pinned. */
static int ingest_outputs(oci_build_service *svc, obi_store_pin *pin, obi_bundle *bundle,
                          const obi_build_request *req, obi_build *build, obi_error **err)
{
    int r = obi_store_pin_hold_gc(pin, err);
    if (r < 0)
        return r;
    /* The container is gone (its init reaped: no process of its pid namespace is left); a
     * kept bundle keeps the build's files as they were, not the store's. */
    r = obi_build_outputs_ingest(svc->store, obi_bundle_fd(bundle), req,
                                 svc->spec_opts.rootless ? &svc->userns : NULL,
                                 !obi_bundle_keep(bundle), build, err);
    if (r == 0)
        r = pin_outputs(svc, build, err);
    obi_store_pin_release_gc(pin);
    return r;
}

static int build_in_bundle(oci_build_service *svc, const obi_build_request *req,
                           const build_run *run, build_leftovers *left, obi_build **out,
                           obi_error **err)
{
    /* The inputs stay pinned until the build is over. */
    cleanup_store_pin obi_store_pin *pin = NULL;
    int r = obi_store_pin_new(svc->store, &pin, err);
    if (r == 0)
        r = pin_inputs(pin, req, err);
    if (r < 0)
        return r;
    /* The id slot and the bundle are the caller's leftovers: removed after the answer. */
    if (svc->id_pool && (r = obi_id_slot_claim(svc->id_pool, run->cancel_fd, &left->slot, err)) < 0)
        return r;
    obi_spec_options opts = build_spec_options(svc, &left->slot);
    if ((r = obi_bundle_create_recycled(svc->bundle_root,
                                        svc->bundle_skeletons.take ? &svc->bundle_skeletons : NULL,
                                        &left->bundle, err)) < 0)
        return r;
    obi_bundle *bundle = left->bundle;
    obi_bundle_set_keep(bundle, svc->keep_bundle);
    obi_bundle_set_report(bundle, report_line, (void *)run);
    if (svc->spec_opts.rootless)
        obi_bundle_set_userns(bundle, &svc->userns);
    /* Unmounted when this returns, before the bundle is removed. */
    cleanup_castore_fs obi_castore_fs *inputs_fs = NULL;
    cleanup_free char *inputs_dir = obi_bundle_subpath(bundle, "inputs");
    if (!inputs_dir)
        return obi_error_oom(err);
    cleanup_free char *passwd = etc_passwd_text(req);
    if (!passwd)
        return obi_error_oom(err);
    cleanup_json json_t *config = NULL;
    char key[OBI_ROOT_POOL_KEY_LEN + 1] = "";
    if ((r = hand_bundle_to_container_root(bundle, &opts, err)) < 0 ||
        (r = create_scratch_dirs(svc, bundle, req, err)) < 0 ||
        (r = write_additional_files(bundle, req, err)) < 0 ||
        (r = prepare_inputs(svc, req, bundle, inputs_dir, &inputs_fs, err)) < 0 ||
        (r = hand_scratch_to_build_user(svc, bundle, &opts, err)) < 0 ||
        (r = obi_spec_generate(req, &opts, &config, err)) < 0 ||
        (r = drop_symlink_input_mounts(req, config, err)) < 0 ||
        (svc->root_pool &&
         (r = skeleton_key(svc, bundle, req, &opts, config, passwd, key, err)) < 0) ||
        (r = prepare_root(svc, bundle, &opts, key, passwd, err)) < 0 ||
        (r = obi_bundle_write_config(bundle, config, err)) < 0)
        return r;
    bool container_gone = true;
    r = run_bundle(svc, bundle, run, &container_gone, &left->delete_container, err);
    if (!container_gone)
        obi_id_slot_release(&left->slot, false);
    if (r < 0 && r != -ECANCELED && run->keep_failed)
        return keep_failed_bundle(bundle, req, r, err);
    if (r < 0)
        return note_input_errors(inputs_fs, r, err);
    /* The build is over: its inputs' mount goes before anything else is done in the bundle. */
    if ((r = obi_castore_fs_close(steal_pointer(&inputs_fs), err)) < 0)
        return r;
    cleanup_build obi_build *build = calloc(1, sizeof *build);
    if (!build)
        return obi_error_oom(err);
    if ((r = obi_build_request_copy(req, &build->request, err)) < 0 ||
        (r = ingest_outputs(svc, pin, bundle, req, build, err)) < 0)
        return r;
    return_root(svc, bundle, key);
    *out = steal_pointer(&build);
    return 0;
}

/* ---- leftovers: removed after the answer ---- */

static void release_id_slot_clean(void *slot)
{
    obi_id_slot_release(slot, true);
}

/* Deletes the stopped container, removes the bundle, then frees the id slot (clean only when
 * the container is gone), just before the bundle's last rmdir: whoever waits for the bundle to
 * go finds the slot free too (nothing of the build is left but an empty directory). A failure
 * goes to the service's log: nobody waits for it. */
static void clean_leftovers(oci_build_service *svc, build_leftovers *left)
{
    build_run log = {-1, svc->on_output, svc->output_ctx};
    bool gone = true;
    if (left->delete_container && left->bundle) {
        cleanup_error obi_error *why = NULL;
        if (obi_runtime_delete(svc->runtime, obi_bundle_id(left->bundle), true, &why) < 0) {
            gone = false;
            cleanup_free char *line = NULL;
            if (asprintf(&line, "ocibuild: could not delete the stopped container %s: %s",
                         obi_bundle_id(left->bundle), why->message) >= 0)
                report_line(&log, line);
        }
    }
    if (left->bundle) {
        obi_bundle_set_report(left->bundle, report_line, &log);
        if (gone)
            obi_bundle_set_on_emptied(left->bundle, release_id_slot_clean, &left->slot);
        cleanup_error obi_error *why = NULL;
        if (obi_bundle_close(steal_pointer(&left->bundle), &why) < 0) {
            cleanup_free char *line = NULL;
            if (asprintf(&line, "ocibuild: remove bundle: %s", why->message) >= 0)
                report_line(&log, line);
        }
    }
    obi_id_slot_release(&left->slot, gone); /* nothing when the bundle's removal did it */
}

static void *leftover_worker(void *arg)
{
    oci_build_service *svc = arg;
    pthread_mutex_lock(&svc->leftovers_lock);
    for (;;) {
        while (!svc->leftovers && !svc->leftovers_stop)
            pthread_cond_wait(&svc->leftovers_cond, &svc->leftovers_lock);
        build_leftovers *left = svc->leftovers;
        if (!left)
            break; /* stopping, and nothing left */
        svc->leftovers = left->next;
        svc->leftovers_busy = true;
        pthread_mutex_unlock(&svc->leftovers_lock);
        clean_leftovers(svc, left);
        free(left);
        pthread_mutex_lock(&svc->leftovers_lock);
        svc->leftovers_busy = false;
        pthread_cond_broadcast(&svc->leftovers_idle);
    }
    pthread_mutex_unlock(&svc->leftovers_lock);
    return NULL;
}

/* Starts the cleaner thread unless it runs; false when it cannot. Under leftovers_lock. */
static bool start_cleaner(oci_build_service *svc)
{
    if (!svc->leftovers_started &&
        pthread_create(&svc->leftovers_thread, NULL, leftover_worker, svc) == 0)
        svc->leftovers_started = true;
    return svc->leftovers_started;
}

/* Wakes the cleaner for what is queued (hand-off mode: when a build starts, or to settle). */
static void wake_cleaner(oci_build_service *svc)
{
    pthread_mutex_lock(&svc->leftovers_lock);
    if (svc->leftovers && start_cleaner(svc))
        pthread_cond_signal(&svc->leftovers_cond);
    pthread_mutex_unlock(&svc->leftovers_lock);
}

/* Hands a finished build's leftovers to the service's cleaner thread (started on first use), so
 * that the caller has its answer first; cleans them here when that thread or its queue entry
 * cannot be had, and always for a kept bundle (its "kept at" line belongs to the build's log).
 * In hand-off mode the cleaner is woken only while another build runs: else they wait for the
 * next build to start, or go to a child when the service is freed (hand_off_leftovers). */
static void leave_leftovers(oci_build_service *svc, build_leftovers *left)
{
    build_leftovers *queued = NULL;
    if (left->bundle && !obi_bundle_keep(left->bundle))
        queued = malloc(sizeof *queued);
    if (queued) {
        pthread_mutex_lock(&svc->lock);
        bool wake = !svc->hand_off || svc->running > 0;
        pthread_mutex_unlock(&svc->lock);
        pthread_mutex_lock(&svc->leftovers_lock);
        if (!wake || start_cleaner(svc)) {
            *queued = *left;
            queued->next = NULL;
            build_leftovers **tail = &svc->leftovers;
            while (*tail)
                tail = &(*tail)->next;
            *tail = queued;
            if (wake)
                pthread_cond_signal(&svc->leftovers_cond);
            queued = NULL;
            *left = (build_leftovers)BUILD_LEFTOVERS_INIT;
        }
        pthread_mutex_unlock(&svc->leftovers_lock);
        free(queued);
    }
    clean_leftovers(svc, left); /* what was not queued (nothing, once it was) */
}

void obi_oci_build_service_settle(obi_build_service *service)
{
    oci_build_service *svc = (oci_build_service *)service;
    wake_cleaner(svc);
    pthread_mutex_lock(&svc->leftovers_lock);
    while ((svc->leftovers && svc->leftovers_started) || svc->leftovers_busy)
        pthread_cond_wait(&svc->leftovers_idle, &svc->leftovers_lock);
    pthread_mutex_unlock(&svc->leftovers_lock);
}

/* Waits until every queued leftover is gone and stops the cleaner. */
static void drain_leftovers(oci_build_service *svc)
{
    wake_cleaner(svc); /* hand-off mode may have queued some without it */
    pthread_mutex_lock(&svc->leftovers_lock);
    bool started = svc->leftovers_started;
    svc->leftovers_stop = true;
    pthread_cond_signal(&svc->leftovers_cond);
    pthread_mutex_unlock(&svc->leftovers_lock);
    if (started)
        pthread_join(svc->leftovers_thread, NULL);
    /* Queued while no cleaner could be started: removed here. */
    while (svc->leftovers) {
        build_leftovers *left = svc->leftovers;
        svc->leftovers = left->next;
        clean_leftovers(svc, left);
        free(left);
    }
}

/* What the removing child gets: the leftovers, and a copy of the caller's stderr for the
 * service's log (its own stdio is /dev/null, detached.h). */
typedef struct handed_leftovers {
    oci_build_service *svc;
    build_leftovers *list;
    int log_fd;
} handed_leftovers;

static void remove_handed_leftovers(void *ctx, int report_fd)
{
    (void)report_fd;
    handed_leftovers *handed = ctx;
    if (handed->log_fd >= 0)
        dup2(handed->log_fd, STDERR_FILENO);
    for (build_leftovers *left = handed->list; left; left = left->next)
        clean_leftovers(handed->svc, left);
}

/* Hands the leftovers in list to a child that outlives this process and removes them, and
 * forgets them here (docs/build.md "After the answer"). The child inherits the descriptors
 * that hold their locks (each bundle's directory, each id slot's file), so it owns them: a
 * sweep meanwhile leaves the bundles alone, and a child killed half way leaves bundles whose
 * locks are free, for the next sweep. When no child can be made they are removed here. */
static void hand_off_leftovers(oci_build_service *svc, build_leftovers *list)
{
    size_t n = 0;
    for (build_leftovers *left = list; left; left = left->next)
        n++;
    int *keep = calloc(2 * n + 2, sizeof *keep);
    handed_leftovers handed = {svc, list, fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3)};
    size_t k = 0;
    for (build_leftovers *left = list; keep && left; left = left->next) {
        keep[k++] = obi_bundle_fd(left->bundle);
        keep[k++] = left->slot.lock_fd;
    }
    if (keep) {
        keep[k++] = handed.log_fd;
        keep[k++] = svc->root_pool ? obi_root_pool_fd(svc->root_pool) : -1; /* skeletons go back */
    }
    obi_detached_options opts = {.keep_fds = keep, .keep_count = k};
    cleanup_error obi_error *ignored = NULL;
    bool handed_over = keep && obi_spawn_detached(&opts, remove_handed_leftovers, &handed, NULL,
                                                  NULL, &ignored) == 0;
    while (list) {
        build_leftovers *left = list;
        list = left->next;
        if (handed_over) {
            obi_bundle_abandon(left->bundle);
            obi_id_slot_release(&left->slot, false); /* closes this copy; the mark stays */
        } else {
            clean_leftovers(svc, left);
        }
        free(left);
    }
    free(keep);
    if (handed.log_fd >= 0)
        close(handed.log_fd);
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
    build_run run = {-1, svc->on_output, svc->output_ctx, call && call->keep_failed,
                     call ? call->exit_code : NULL};
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
    if (svc->hand_off)
        wake_cleaner(svc); /* the leftovers of builds before this one */
    build_leftovers left = BUILD_LEFTOVERS_INIT;
    r = build_in_bundle(svc, req, &run, &left, out, err);
    release_slot(svc);
    leave_leftovers(svc, &left);
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
    /* Handed to a child unless the service was cancelled (a signal): a process stopped by one
     * removes everything before it exits. */
    build_leftovers *handed = NULL;
    if (svc->hand_off && !cancel_requested(svc->cancel_fd)) {
        pthread_mutex_lock(&svc->leftovers_lock);
        handed = svc->leftovers;
        svc->leftovers = NULL;
        pthread_mutex_unlock(&svc->leftovers_lock);
    }
    drain_leftovers(svc);
    if (handed)
        hand_off_leftovers(svc, handed);
    for (int i = 0; i < 2; i++)
        if (svc->own_cancel_pipe[i] >= 0)
            close(svc->own_cancel_pipe[i]);
    obi_runtime_free(svc->runtime);
    obi_root_pool_close(svc->root_pool);
    obi_id_pool_free(svc->id_pool);
    obi_store_pin_free(svc->output_pins[0]);
    obi_store_pin_free(svc->output_pins[1]);
    free(svc->bundle_root);
    free(svc->cache_dir);
    free(svc->sandbox_shell);
    free(svc->seccomp_bpf_dir);
    pthread_mutex_destroy(&svc->lock);
    pthread_cond_destroy(&svc->slot_free);
    pthread_mutex_destroy(&svc->output_pins_lock);
    pthread_mutex_destroy(&svc->leftovers_lock);
    pthread_cond_destroy(&svc->leftovers_cond);
    pthread_cond_destroy(&svc->leftovers_idle);
    free(svc);
}

/* ---- the default runtime: crun when it runs builds here, else runc ---- */

/* Builds get a cgroup only for a limit that needs one (docs/security.md "Limits"): the memory
 * limit. Without it, crun makes none (7 ms wall, 5 ms CPU less per build on a host with a dozen
 * cgroup v1 hierarchies) and RLIMIT_NPROC alone limits processes; runc always makes one. */
static void use_cgroups_as_needed(const oci_build_service *svc, obi_runtime *runtime)
{
    obi_runtime_set_cgroups(runtime, svc->spec_opts.memory_bytes != 0);
}

/* The probe: a build of `/bin/sh -c 'exit 0'` (the sandbox shell) with everything of a real
 * build's sandbox (user namespace, filter, masks, limits, the id slot). */
static const char PROBE_REQUEST[] =
    "{\"commandArgs\": [\"/bin/sh\", \"-c\", \"exit 0\"], \"workingDir\": \"build\", "
    "\"scratchPaths\": [\"build\"], \"constraints\": {\"system\": \"probe\", \"provideBinSh\": "
    "true}}";

static int probe_build(oci_build_service *svc, obi_error **err)
{
    json_error_t jerr;
    cleanup_json json_t *json = json_loads(PROBE_REQUEST, 0, &jerr);
    cleanup_build_request obi_build_request *req = NULL;
    if (!json)
        return obi_error_set(err, -EINVAL, "the probe request: %s", jerr.text);
    int r = obi_build_request_from_json(json, &req, err);
    if (r < 0)
        return r;
    int exit_code = 0;
    build_run run = {svc->cancel_fd, NULL, NULL, false, &exit_code};
    cleanup_build obi_build *build = NULL;
    build_leftovers left = BUILD_LEFTOVERS_INIT;
    r = build_in_bundle(svc, req, &run, &left, &build, err);
    clean_leftovers(svc, &left);
    return r;
}

/* Where probes are cached: beside the bundle root (the data dir). Caller frees. */
static char *probe_cache_dir(const char *bundle_root)
{
    char *dir = NULL;
    return asprintf(&dir, "%s/../runtime-probe", bundle_root) < 0 ? NULL : dir;
}

/* crun, when an earlier probe of this very binary found that it works (NULL: not known to).
 * *probed: whether an earlier probe left an answer, either way (none: probe_default_runtime). */
static obi_runtime *cached_default_runtime(const char *crun, const char *probe_dir, bool rootless,
                                           const char *runtime_root, bool *probed)
{
    char key[OBI_RUNTIME_PROBE_KEY_LEN + 1];
    cleanup_error obi_error *ignored = NULL;
    obi_runtime *runtime = NULL;
    int cached = 0;
    if (crun && probe_dir && obi_runtime_probe_key(crun, rootless, key, &ignored) == 0)
        cached = obi_runtime_probe_cache_get(probe_dir, key, NULL, &ignored);
    if (cached == 1)
        obi_runtime_new(crun, runtime_root, &runtime, &ignored);
    *probed = cached > 0;
    return runtime;
}

/* Probes crun when nothing is cached about it yet: a build that works makes it the service's
 * runtime; one that fails leaves runc and says why, once (the failure is cached too). */
static void probe_default_runtime(oci_build_service *svc, const char *crun, const char *probe_dir,
                                  const char *runtime_root)
{
    char key[OBI_RUNTIME_PROBE_KEY_LEN + 1];
    cleanup_error obi_error *ignored = NULL;
    if (!crun || !probe_dir || obi_runtime_probe_key(crun, svc->rootless, key, &ignored) < 0 ||
        obi_runtime_probe_cache_get(probe_dir, key, NULL, &ignored) != 0)
        return;
    /* The probe's build opens the store's database while crun starts (while_container_starts):
     * one that cannot be opened must not read as crun's failure. */
    obi_runtime *candidate = NULL;
    if (obi_store_connect(svc->store, &ignored) < 0 ||
        obi_runtime_new(crun, runtime_root, &candidate, &ignored) < 0)
        return;
    obi_runtime *runc = svc->runtime;
    use_cgroups_as_needed(svc, candidate);
    svc->runtime = candidate;
    cleanup_error obi_error *why = NULL;
    int r = probe_build(svc, &why);
    svc->runtime = runc;
    /* Only what the runtime said is learned: a cancelled probe, or one that failed before the
     * runtime ran (no sandbox shell, a full disk), is tried again next time. */
    bool learned = r == 0 || r == OBI_ERUNTIME_START || r == OBI_EBUILD_FAILED || r == -EIO ||
                   r == OBI_ECONTAINER_LEFT;
    if (learned)
        obi_runtime_probe_cache_put(probe_dir, key, r < 0 ? why->message : NULL, &ignored);
    if (r < 0) {
        obi_runtime_free(candidate);
        build_run log = {-1, svc->on_output, svc->output_ctx};
        cleanup_free char *line = NULL;
        if (r != -ECANCELED && asprintf(&line, "ocibuild: %s cannot run builds here (%s); using %s",
                                        crun, why->message, obi_runtime_path(runc)) >= 0)
            report_line(&log, line);
        return;
    }
    obi_runtime_free(runc);
    svc->runtime = candidate;
}

const char *obi_oci_build_service_runtime(const obi_build_service *service)
{
    return obi_runtime_path(((const oci_build_service *)service)->runtime);
}

static const struct obi_build_service_ops OCI_OPS = {oci_do_build, oci_free, oci_cancel};

/* Whether the kernel accounts swap for cgroups, so that a memory limit can cover it: on
 * cgroup v1 only with memory.memsw (swapaccount); runc skips the setting on v2 when it is
 * missing there. */
static bool swap_is_accounted(void)
{
    return access("/sys/fs/cgroup/memory", F_OK) != 0 ||
           access("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", F_OK) == 0;
}

/* Rootful, the runtime's init opens root/ by path as container root, an unprivileged host uid
 * of the build's id slot: every directory above the bundle root must let others search it. */
static int check_bundle_root_reachable(const char *bundle_root, obi_error **err)
{
    cleanup_free char *path = strdup(bundle_root);
    if (!path)
        return obi_error_oom(err);
    for (char *slash = path + strlen(path); slash; slash = strrchr(path, '/')) {
        *slash = 0;
        const char *dir = *path ? path : "/";
        struct stat st;
        if (stat(dir, &st) == 0 && !(st.st_mode & S_IXOTH))
            return obi_error_set(err, -EACCES,
                                 "bundle root %s: %s is mode %04o, so builds (unprivileged host "
                                 "ids in their user namespace) cannot reach their bundles below "
                                 "it: let others search it (chmod o+x) or choose another bundle "
                                 "root",
                                 bundle_root, dir, (unsigned)(st.st_mode & 07777));
        if (slash == path)
            break;
    }
    return 0;
}

/* Limits (docs/security.md "Limits"): cgroup resources for the runtime, and the scratch tmpfs.
 * Rootless builds get neither; asking for one is an error. */
static int set_limits(oci_build_service *svc, const obi_oci_build_options *opts, obi_error **err)
{
    if (opts->rootless && (opts->memory_bytes || opts->scratch_limit_bytes))
        return obi_error_set(err, -ENOTSUP,
                             "rootless builds cannot have %s: the runtime cannot set cgroup "
                             "limits for an unprivileged user here, nor can ocibuild mount a "
                             "tmpfs (build rootful, or leave the limit out)",
                             opts->memory_bytes ? "a memory limit" : "a scratch limit");
    svc->spec_opts.max_pids = opts->max_pids ? opts->max_pids : OBI_DEFAULT_MAX_PIDS;
    /* Rootless, the runtime cannot raise RLIMIT_NPROC above ours (no CAP_SYS_RESOURCE): it
     * would refuse to start every build. */
    struct rlimit nproc;
    if (opts->rootless && getrlimit(RLIMIT_NPROC, &nproc) == 0 && nproc.rlim_max != RLIM_INFINITY &&
        nproc.rlim_max < svc->spec_opts.max_pids)
        svc->spec_opts.max_pids = nproc.rlim_max;
    svc->spec_opts.memory_bytes = opts->memory_bytes;
    svc->spec_opts.memory_swap = opts->memory_bytes && swap_is_accounted();
    svc->scratch_limit = opts->scratch_limit_bytes;
    return 0;
}

int obi_oci_build_service_new(const obi_oci_build_options *opts, obi_store *store,
                              obi_build_service **out, obi_error **err)
{
    if (!opts->bundle_root || opts->bundle_root[0] != '/')
        return obi_error_set(err, -EINVAL,
                             "oci build service: bundle root must be an absolute "
                             "path");
    cleanup_free oci_build_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_oom(err);
    svc->base.ops = &OCI_OPS;
    svc->store = store;
    svc->rootless = opts->rootless;
    svc->keep_bundle = opts->keep_bundle;
    svc->hand_off = opts->hand_off_leftovers;
    svc->timeout_seconds = opts->timeout_seconds;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    svc->max_builds = opts->max_builds ? opts->max_builds : (unsigned)(cpus > 0 ? cpus : 1);
    svc->cancel_fd = opts->cancel_fd;
    svc->own_cancel_pipe[0] = svc->own_cancel_pipe[1] = -1;
    svc->on_output = opts->on_output;
    svc->output_ctx = opts->output_ctx;
    svc->materialize_progress = opts->materialize_progress;
    int r = set_limits(svc, opts, err);
    if (r < 0)
        return r;
    if ((r = obi_inputs_plan_for(opts->inputs, store, &svc->inputs, err)) < 0)
        return obi_error_prefix(err, r, "inputs=%s", obi_inputs_mode_name(opts->inputs));
    if (opts->rootless) {
        r = obi_spec_options_rootless_current_user(&svc->spec_opts, err);
        if (r < 0)
            return obi_error_prefix(err, r, "rootless");
        svc->userns = (obi_userns_ids){svc->spec_opts.root_uid, svc->spec_opts.root_gid,
                                       svc->spec_opts.build_uid, svc->spec_opts.build_gid};
    }
    if (!opts->rootless && (r = obi_id_pool_open_default(&svc->id_pool, err)) < 0)
        return r;
    svc->bundle_root = strdup(opts->bundle_root);
    svc->sandbox_shell =
        strdup(opts->sandbox_shell ? opts->sandbox_shell : OBI_DEFAULT_SANDBOX_SHELL);
    if (opts->cache_dir)
        svc->cache_dir = strdup(opts->cache_dir);
    else if (asprintf(&svc->cache_dir, "%s/../input-cache", opts->bundle_root) < 0)
        svc->cache_dir = NULL;
    if (asprintf(&svc->seccomp_bpf_dir, "%s/../seccomp-bpf", opts->bundle_root) < 0)
        svc->seccomp_bpf_dir = NULL;
    svc->spec_opts.sandbox_shell = svc->sandbox_shell;
    if (!svc->bundle_root || !svc->sandbox_shell || !svc->cache_dir || !svc->seccomp_bpf_dir) {
        obi_id_pool_free(svc->id_pool);
        free(svc->bundle_root);
        free(svc->sandbox_shell);
        free(svc->cache_dir);
        free(svc->seccomp_bpf_dir);
        return obi_error_oom(err);
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
    /* The default runtime (docs/build.md "The default runtime"): crun once a probe found that
     * it works, else runc; the sweep below uses it, the probe comes after the sweep. */
    const char *state_root = opts->runtime_root ? opts->runtime_root : runtime_root;
    cleanup_free char *crun =
        opts->runtime ? NULL : obi_find_executable("crun", "/usr/sbin:/sbin:/usr/local/sbin");
    cleanup_free char *probe_dir = crun ? probe_cache_dir(opts->bundle_root) : NULL;
    bool probed = false;
    svc->runtime = cached_default_runtime(crun, probe_dir, opts->rootless, state_root, &probed);
    r = svc->runtime ? 0 : obi_runtime_new(opts->runtime, state_root, &svc->runtime, err);
    if (r == 0)
        use_cgroups_as_needed(svc, svc->runtime);
    if (r == 0)
        r = obi_mkdir_p(svc->bundle_root, 0711, err);
    if (r == 0 && !opts->rootless)
        r = check_bundle_root_reachable(svc->bundle_root, err);
    if (r == 0)
        r = obi_mark_top_directory(svc->bundle_root, err);
    /* The sweep reports to the service's log, as a build without a call of its own would. */
    build_run sweep_log = {-1, svc->on_output, svc->output_ctx};
    if (r == 0)
        r = obi_bundle_sweep(svc->bundle_root, svc->runtime,
                             svc->spec_opts.rootless ? &svc->userns : NULL, report_line, &sweep_log,
                             NULL, err);
    if (r < 0) {
        obi_runtime_free(svc->runtime);
        obi_id_pool_free(svc->id_pool);
        free(svc->bundle_root);
        free(svc->sandbox_shell);
        free(svc->cache_dir);
        free(svc->seccomp_bpf_dir);
        return r;
    }
    /* Root skeletons (root_pool.h): a pool that cannot be opened only costs speed. Skeletons
     * idle for ROOT_POOL_IDLE_SECONDS, or beyond ROOT_POOL_MAX_ENTRIES, are removed here, when
     * no process did so in the last ROOT_POOL_PRUNE_INTERVAL_SECONDS. */
    if (!opts->disable_root_pool) {
        cleanup_error obi_error *ignored = NULL;
        if (obi_root_pool_open(svc->bundle_root, svc->max_builds, &svc->root_pool, &ignored) == 0 &&
            obi_root_pool_prune_due(svc->root_pool, ROOT_POOL_PRUNE_INTERVAL_SECONDS))
            obi_root_pool_prune(svc->root_pool, ROOT_POOL_IDLE_SECONDS, ROOT_POOL_MAX_ENTRIES, NULL,
                                &ignored);
        enable_bundle_skeletons(svc);
    }
    if (svc->cancel_fd < 0 && pipe2(svc->own_cancel_pipe, O_CLOEXEC | O_NONBLOCK) == 0)
        svc->cancel_fd = svc->own_cancel_pipe[0];
    pthread_mutex_init(&svc->lock, NULL);
    pthread_cond_init(&svc->slot_free, NULL);
    pthread_mutex_init(&svc->output_pins_lock, NULL);
    pthread_mutex_init(&svc->leftovers_lock, NULL);
    pthread_cond_init(&svc->leftovers_cond, NULL);
    pthread_cond_init(&svc->leftovers_idle, NULL);
    if (!opts->runtime && !svc->keep_bundle && !probed)
        probe_default_runtime(svc, crun, probe_dir, state_root);
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

/* A size with an optional unit (number.h): memory=2Gi, scratch_limit=500M. */
static int parse_size_param(const char *key, const char *value, uint64_t *out, obi_error **err)
{
    int r = obi_parse_memory(value, out, err);
    return r < 0 ? obi_error_prefix(err, r, "oci build service: %s=%s", key, value) : 0;
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
        else if (!strcmp(key, "max_pids"))
            r = parse_unsigned_param(key, value, &opts.max_pids, err);
        else if (!strcmp(key, "memory"))
            r = parse_size_param(key, value, &opts.memory_bytes, err);
        else if (!strcmp(key, "scratch_limit"))
            r = parse_size_param(key, value, &opts.scratch_limit_bytes, err);
        else if (!strcmp(key, "inputs"))
            r = obi_inputs_mode_parse(value, "oci build service: inputs", &opts.inputs, err);
        else if (!strcmp(key, "root_pool")) {
            bool enabled = true;
            r = parse_bool_param(key, value, &enabled, err);
            opts.disable_root_pool = !enabled;
        } else
            r = obi_error_set(err, -EINVAL,
                              "oci build service: unknown option \"%s\" (supported: runtime, "
                              "runtime_root, rootless, max_builds, timeout, keep_bundle, "
                              "sandbox_shell, cache_dir, root_pool, max_pids, memory, "
                              "scratch_limit, inputs)",
                              key);
        if (r < 0)
            return r;
    }
    return obi_oci_build_service_new(&opts, store, out, err);
}
