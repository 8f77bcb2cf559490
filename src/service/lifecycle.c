/*
 * The service lifecycle (include/ocibuild/lifecycle.h): turns a deployment into running
 * replicas and back. One replica's resources (container, overlay mount, bundle, anonymous
 * volumes, state dir) have one cleanup, replica_teardown, used by `down` and by a failed `up`.
 *
 * Exit codes: runc's `state` forgets how a container ended, so every replica is started by a
 * monitor: a double-forked process in its own session that becomes a child subreaper, runs
 * `RUNTIME run --detach` through the shared driver, reports success or the runtime's error back
 * over a pipe, then waits for the container's init (reparented to it when runc exits) and
 * writes DIR/exit. It holds DIR/monitor.lock while it lives, so `down` knows when it is gone.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/detached.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/lifecycle.h"
#include "ocibuild/number.h"
#include "ocibuild/process.h"
#include "ocibuild/replica_exec.h"
#include "ocibuild/runtime.h"
#include "ocibuild/service_bundle.h"
#include "ocibuild/service_network.h"
#include "ocibuild/service_rootless.h"
#include "ocibuild/service_rootless_net.h"
#include "ocibuild/service_spec.h"
#include "ocibuild/sha256.h"
#include "ocibuild/signal_name.h"
#include "ocibuild/supervisor.h"
#include "service_internal.h"

#define STOP_POLL_MS 100
#define KILL_WAIT_MS 10000
#define IMAGE_ROOT_FILE "image" /* DIR/image: the image cache entry a replica uses */
#define MANIFEST_HEX_LEN 64
#define MONITOR_WAIT_MS 5000
#define MONITOR_POLL_MS 200
#define OUTPUT_FIFO "output" /* DIR/output: the FIFO the container writes, the monitor reads */
#define CONFIG_DIGEST_FILE "config.digest" /* DIR/config.digest: what the replica was made of */
#define CONFIG_MAX (1 << 20)               /* BUNDLE/config.json, read for the stop keys */

/* ---- paths ---- */

static char *services_dir(const char *data_dir, const char *deployment)
{
    char *path = NULL;
    if (asprintf(&path, "%s/services/%s", data_dir, deployment) < 0)
        return NULL;
    return path;
}

char *obi_lifecycle_lock_path(const char *data_dir, const char *deployment)
{
    char *path = NULL;
    if (asprintf(&path, "%s/services/%s.lock", data_dir, deployment) < 0)
        return NULL;
    return path;
}

static int replica_paths_from_id(obi_replica_paths *paths, const char *data_dir,
                                 const char *deployment, const char *id, obi_error **err)
{
    obi_replica_paths p = {0};
    cleanup_free char *base = services_dir(data_dir, deployment);
    if (base && (p.id = strdup(id)) && asprintf(&p.container, "%s.%s", deployment, id) >= 0 &&
        (p.dir = obi_path_join(base, id)) && (p.bundle = obi_path_join(p.dir, "bundle")) &&
        (p.log = obi_path_join(p.dir, "log")) && (p.pid_file = obi_path_join(p.dir, "pid")) &&
        (p.exit_file = obi_path_join(p.dir, "exit")) &&
        (p.monitor_lock = obi_path_join(p.dir, "monitor.lock")) &&
        (p.status = obi_path_join(p.dir, "status.json")) &&
        (p.held = obi_path_join(p.dir, "held"))) {
        *paths = p;
        return 0;
    }
    obi_replica_paths_clear(&p);
    return obi_error_oom(err);
}

int obi_replica_paths_init(obi_replica_paths *paths, const char *data_dir, const char *deployment,
                           const char *service, unsigned replica, obi_error **err)
{
    cleanup_free char *id = obi_service_container_id(service, replica);
    if (!id)
        return obi_error_oom(err);
    return replica_paths_from_id(paths, data_dir, deployment, id, err);
}

void obi_replica_paths_clear(obi_replica_paths *paths)
{
    free(paths->id);
    free(paths->container);
    free(paths->status);
    free(paths->held);
    free(paths->dir);
    free(paths->bundle);
    free(paths->log);
    free(paths->pid_file);
    free(paths->exit_file);
    free(paths->monitor_lock);
    memset(paths, 0, sizeof *paths);
}

/* ---- plan ---- */

int obi_lifecycle_plan(const obi_deployment *deployment, const char *service, unsigned replica,
                       bool with_dependencies, obi_plan_order order, obi_replica_ref **out,
                       size_t *count, obi_error **err)
{
    const obi_service *wanted = NULL;
    if (service && !(wanted = obi_deployment_find(deployment, service)))
        return obi_error_set(err, -ENOENT, "deployment %s has no service \"%s\"", deployment->name,
                             service);
    if (replica && !wanted)
        return obi_error_set(err, -EINVAL, "a replica number needs a service");
    if (replica > 0 && replica > wanted->replicas)
        return obi_error_set(err, -EINVAL, "service %s has %u replica%s, not %u", wanted->name,
                             wanted->replicas, wanted->replicas == 1 ? "" : "s", replica);
    cleanup_free const obi_service **sorted = NULL;
    int r = obi_deployment_start_order(deployment, &sorted, err);
    if (r < 0)
        return r;
    size_t n = deployment->service_count;
    cleanup_free bool *selected = calloc(n ? n : 1, sizeof *selected);
    if (!selected)
        return obi_error_oom(err);
    /* Walk from the end of the start order: whatever a selected service depends on comes
     * earlier, so one pass marks the transitive dependencies. */
    for (size_t k = n; k-- > 0;) {
        const obi_service *svc = sorted[k];
        if (!wanted || svc == wanted)
            selected[k] = true;
        if (!selected[k] || !with_dependencies)
            continue;
        for (size_t d = 0; d < svc->depend_count; d++)
            for (size_t j = 0; j < k; j++)
                if (!strcmp(sorted[j]->name, svc->depends[d].service))
                    selected[j] = true;
    }
    size_t total = 0;
    for (size_t k = 0; k < n; k++)
        if (selected[k])
            /* sorted[] holds the deployment's services: never NULL (analyzer false positive) */
            // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
            total += (sorted[k] == wanted && replica) ? 1 : sorted[k]->replicas;
    obi_replica_ref *refs = calloc(total ? total : 1, sizeof *refs);
    if (!refs)
        return obi_error_oom(err);
    size_t i = 0;
    for (size_t k = 0; k < n; k++) {
        if (!selected[k])
            continue;
        for (unsigned rep = 1; rep <= sorted[k]->replicas; rep++)
            if (!(sorted[k] == wanted && replica) || rep == replica)
                refs[i++] = (obi_replica_ref){sorted[k], rep};
    }
    if (order == OBI_PLAN_STOP)
        for (size_t a = 0, b = total; a + 1 < b; a++, b--) {
            obi_replica_ref t = refs[a];
            refs[a] = refs[b - 1];
            refs[b - 1] = t;
        }
    *out = refs;
    *count = total;
    return 0;
}

/* ---- shared context ---- */

typedef struct lifecycle {
    const obi_deployment *deployment;
    const obi_lifecycle_options *opts;
    char *data_dir; /* absolute */
    obi_runtime *runtime;
    int lock_fd;
    bool have_ids; /* ids looked up (at the first replica with a user namespace) */
    obi_idmap ids;
    obi_service_network *net;       /* the deployment's network (service_network.h); NULL: none */
    obi_rootless_net *rootless_net; /* rootless: its network (service_rootless_net.h) */
    obi_lifecycle_report_fn report_fn; /* opts->report, or the supervisor's pipe */
    void *report_ctx;
} lifecycle;

static void report(const lifecycle *lc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(const lifecycle *lc, const char *fmt, ...)
{
    if (!lc->report_fn)
        return;
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *message = NULL;
    if (vasprintf(&message, fmt, ap) >= 0)
        lc->report_fn(message, lc->report_ctx);
    va_end(ap);
}

static void lifecycle_close(lifecycle *lc)
{
    obi_runtime_free(lc->runtime);
    obi_service_network_close(lc->net);
    obi_rootless_net_close(lc->rootless_net);
    free(lc->data_dir);
    if (lc->lock_fd >= 0)
        close(lc->lock_fd); /* drops the flock */
}

/* The data dir is 0711 when this process owns it: no other user lists it or creates in it, and
 * the replicas' root can pass through it to DATA/services (0710, its group), as Docker keeps
 * /var/lib/docker. Everything below that a replica writes is closed: DATA/volumes and
 * DATA/anonymous 0700, DATA/images 0700, DATA/services 0710. */
static int data_dir_close(const char *data_dir, obi_error **err)
{
    cleanup_close int fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "data dir %s", data_dir);
    if (st.st_uid == geteuid() && (st.st_mode & 07777) != 0711 && fchmod(fd, 0711) < 0)
        return obi_error_set_errno(err, errno, "chmod 0711 %s", data_dir);
    return 0;
}

/* Resolves the data dir (created when create is set, made absolute), the runtime, and for
 * up/down takes the deployment's lock, waiting for whoever holds it. */
static int lifecycle_open(lifecycle *lc, const obi_deployment *deployment,
                          const obi_lifecycle_options *opts, bool create, bool lock,
                          obi_error **err)
{
    *lc = (lifecycle){deployment,      opts,      NULL, NULL, -1,
                      false,           {0, 0, 0}, NULL, NULL, opts->report,
                      opts->report_ctx};
    cleanup_free char *data_dir = opts->data_dir ? strdup(opts->data_dir) : obi_default_data_dir();
    if (!data_dir)
        return obi_error_oom(err);
    cleanup_free char *base = services_dir(data_dir, deployment->name);
    if (!base)
        return obi_error_oom(err);
    /* up creates the deployment's dir; down needs DATA/services for its lock file (a down on a
     * fresh data dir has nothing to remove but must not fail). */
    cleanup_free char *services = obi_path_join(data_dir, "services");
    if (!services)
        return obi_error_oom(err);
    int r;
    if ((create || lock) && (r = obi_mkdir_p(create ? base : services, 0700, err)) < 0)
        return r;
    char *absolute = realpath(data_dir, NULL);
    if (absolute) {
        free(data_dir);
        data_dir = absolute;
    } else if (create || lock) {
        return obi_error_set_errno(err, errno, "data dir %s", data_dir);
    }
    if (create && (r = data_dir_close(data_dir, err)) < 0)
        return r;
    /* rootless: the runtime's state where the user may write (service_rootless.h) */
    cleanup_free char *rootless_root = NULL;
    if (!opts->runtime_root && obi_service_rootless() &&
        (r = obi_service_rootless_runtime_root(data_dir, &rootless_root, err)) < 0)
        return r;
    if ((r = obi_runtime_new(opts->runtime, opts->runtime_root ? opts->runtime_root : rootless_root,
                             &lc->runtime, err)) < 0)
        return r;
    lc->data_dir = steal_pointer(&data_dir);
    if (lock) {
        cleanup_free char *lock_path = obi_lifecycle_lock_path(lc->data_dir, deployment->name);
        if (!lock_path)
            return obi_error_oom(err);
        lc->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (lc->lock_fd < 0)
            return obi_error_set_errno(err, errno, "open %s", lock_path);
        if (flock(lc->lock_fd, LOCK_EX | LOCK_NB) < 0) {
            if (errno != EWOULDBLOCK)
                return obi_error_set_errno(err, errno, "flock %s", lock_path);
            report(lc, "waiting for another up/down of %s (%s)", deployment->name, lock_path);
            while (flock(lc->lock_fd, LOCK_EX) < 0)
                if (errno != EINTR)
                    return obi_error_set_errno(err, errno, "flock %s", lock_path);
        }
    }
    return 0;
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ---- runtime state ---- */

static const char *const STATE_NAMES[] = {
    [OBI_REPLICA_ABSENT] = "absent",   [OBI_REPLICA_CREATING] = "creating",
    [OBI_REPLICA_CREATED] = "created", [OBI_REPLICA_RUNNING] = "running",
    [OBI_REPLICA_PAUSED] = "paused",   [OBI_REPLICA_STOPPED] = "stopped",
};

const char *obi_replica_state_name(obi_replica_state state)
{
    return (size_t)state < OBI_ARRAY_SIZE(STATE_NAMES) ? STATE_NAMES[state] : "unknown";
}

/* The runtime's state of id: ABSENT when it does not exist; *bundle (optional) gets its path. */
static int query_state(lifecycle *lc, const char *id, obi_replica_state *state, int *pid,
                       char **bundle, obi_error **err)
{
    cleanup_json json_t *doc = NULL;
    cleanup_error obi_error *state_err = NULL;
    int r = obi_runtime_state(lc->runtime, id, &doc, &state_err);
    if (r == -ENOENT) {
        *state = OBI_REPLICA_ABSENT;
        *pid = 0;
        if (bundle)
            *bundle = NULL;
        return 0;
    }
    if (r < 0)
        return obi_error_move(err, &state_err);
    const char *status = json_string_value(json_object_get(doc, "status"));
    obi_replica_state found = OBI_REPLICA_STOPPED;
    for (size_t i = 1; status && i < OBI_ARRAY_SIZE(STATE_NAMES); i++)
        if (!strcmp(status, STATE_NAMES[i]))
            found = (obi_replica_state)i;
    const char *bundle_path = json_string_value(json_object_get(doc, "bundle"));
    char *bundle_copy = NULL;
    if (bundle && bundle_path && !(bundle_copy = strdup(bundle_path)))
        return obi_error_oom(err);
    *state = found;
    *pid = (found == OBI_REPLICA_RUNNING || found == OBI_REPLICA_PAUSED ||
            found == OBI_REPLICA_CREATED)
               ? (int)json_integer_value(json_object_get(doc, "pid"))
               : 0;
    if (bundle)
        *bundle = bundle_copy;
    return 0;
}

static bool is_foreign(const char *runtime_bundle, const obi_replica_paths *paths)
{
    return runtime_bundle && strcmp(runtime_bundle, paths->bundle) != 0;
}

/* ---- image cache gc ---- */

typedef struct image_roots {
    char (*hex)[MANIFEST_HEX_LEN + 1];
    size_t n;
} image_roots;

static bool image_rooted(const image_roots *roots, const char *hex)
{
    for (size_t i = 0; i < roots->n; i++)
        if (!strcmp(roots->hex[i], hex))
            return true;
    return false;
}

/* Reads replica_dir/image into roots; 0, or 1 when the replica has a bundle and no image file. */
static int read_image_root(const char *replica_dir, image_roots *roots, obi_error **err)
{
    cleanup_free char *path = obi_path_join(replica_dir, IMAGE_ROOT_FILE);
    cleanup_free char *bundle = obi_path_join(replica_dir, "bundle");
    if (!path || !bundle)
        return obi_error_oom(err);
    cleanup_free char *text = NULL;
    size_t len = 0;
    cleanup_error obi_error *read_err = NULL;
    if (obi_read_file(path, 128, &text, &len, &read_err) < 0)
        return access(bundle, F_OK) == 0 ? 1 : 0;
    if (len != 7 + MANIFEST_HEX_LEN || strncmp(text, "sha256:", 7) != 0)
        return 0; /* not a digest: names no entry */
    void *grown = realloc(roots->hex, (roots->n + 1) * sizeof *roots->hex);
    if (!grown)
        return obi_error_oom(err);
    roots->hex = grown;
    snprintf(roots->hex[roots->n++], MANIFEST_HEX_LEN + 1, "%s", text + 7);
    return 0;
}

/* Every replica dir's image root; *unrooted names a replica without one (then 1). */
static int collect_image_roots(const char *data_dir, image_roots *roots, char **unrooted,
                               obi_error **err)
{
    cleanup_free char *services = obi_path_join(data_dir, "services");
    if (!services)
        return obi_error_oom(err);
    cleanup_dir DIR *deployments = opendir(services);
    struct dirent *d;
    while (deployments && (d = readdir(deployments))) {
        cleanup_free char *deployment = obi_path_join(services, d->d_name);
        struct stat st;
        if (!deployment)
            return obi_error_oom(err);
        if (d->d_name[0] == '.' || lstat(deployment, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        cleanup_dir DIR *replicas = opendir(deployment);
        struct dirent *rd;
        while (replicas && (rd = readdir(replicas))) {
            cleanup_free char *replica = obi_path_join(deployment, rd->d_name);
            if (!replica)
                return obi_error_oom(err);
            if (rd->d_name[0] == '.' || lstat(replica, &st) < 0 || !S_ISDIR(st.st_mode))
                continue;
            int r = read_image_root(replica, roots, err);
            if (r < 0)
                return r;
            if (r == 1) {
                *unrooted = steal_pointer(&replica);
                return 1;
            }
        }
    }
    return 0;
}

int obi_lifecycle_prune_images(const char *data_dir, bool dry_run, obi_image_prune_stats *stats,
                               obi_error **err)
{
    *stats = (obi_image_prune_stats){0};
    cleanup_free char *images = obi_path_join(data_dir, "images");
    if (!images)
        return obi_error_oom(err);
    if (access(images, F_OK) < 0)
        return 0; /* no image was ever unpacked */
    cleanup_close int lock = -1;
    int r = obi_image_cache_lock(data_dir, true, &lock, err);
    if (r < 0)
        return obi_error_prefix(err, r, "image cache");
    image_roots roots = {NULL, 0};
    cleanup_free char *unrooted = NULL;
    r = collect_image_roots(data_dir, &roots, &unrooted, err);
    if (r == 1 && asprintf(&stats->skipped,
                           "replica %s has no image file (started by an older ocibuild): "
                           "`service up` again to record it",
                           unrooted) < 0)
        r = obi_error_oom(err);
    cleanup_dir DIR *dir = r == 0 ? opendir(images) : NULL;
    struct dirent *de;
    while (r == 0 && dir && (de = readdir(dir))) {
        const char *name = de->d_name;
        bool entry = strlen(name) == MANIFEST_HEX_LEN &&
                     strspn(name, "0123456789abcdef") == MANIFEST_HEX_LEN;
        bool stale_unpack = !strncmp(name, ".tmp-", 5); /* no unpack runs: we hold the lock */
        if (!(entry && !image_rooted(&roots, name)) && !stale_unpack)
            continue;
        uint64_t files = 0, bytes = 0;
        cleanup_error obi_error *ignored = NULL;
        obi_tree_usage_at(dirfd(dir), name, &files, &bytes, &ignored);
        if (!dry_run && (r = obi_rm_rf_at(dirfd(dir), name, NULL, err)) < 0)
            r = obi_error_prefix(err, r, "image cache %s", images);
        stats->entries++;
        stats->bytes += bytes;
    }
    free(roots.hex);
    return r < 0 ? r : 0;
}

int obi_lifecycle_read_exit(const char *exit_file, int *exit_code, int *signal, obi_error **err)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    cleanup_error obi_error *read_err = NULL;
    int r = obi_read_file(exit_file, 4096, &text, &len, &read_err);
    if (r < 0)
        return obi_error_move(err, &read_err);
    json_error_t jerr;
    cleanup_json json_t *doc = json_loadb(text, len, 0, &jerr);
    json_t *code = doc ? json_object_get(doc, "exit_code") : NULL;
    if (!json_is_integer(code))
        return obi_error_set(err, -EINVAL, "%s: not an exit record", exit_file);
    *exit_code = (int)json_integer_value(code);
    *signal = (int)json_integer_value(json_object_get(doc, "signal"));
    return 0;
}

/* The run times of an exit record (0 when it has none). */
static void read_exit_times(const char *exit_file, int64_t *started_ms, int64_t *finished_ms)
{
    *started_ms = *finished_ms = 0;
    cleanup_free char *text = NULL;
    size_t len = 0;
    cleanup_error obi_error *ignored = NULL;
    if (obi_read_file(exit_file, 4096, &text, &len, &ignored) < 0)
        return;
    json_error_t jerr;
    cleanup_json json_t *doc = json_loadb(text, len, 0, &jerr);
    *started_ms = (int64_t)json_integer_value(json_object_get(doc, "started_ms"));
    *finished_ms = (int64_t)json_integer_value(json_object_get(doc, "finished_ms"));
}

/* ---- teardown (down, and a failed up) ---- */

/* Waits until the replica's monitor has exited (its flock is free), at most timeout_ms. */
static bool wait_monitor_gone(const char *monitor_lock, long timeout_ms)
{
    cleanup_close int fd = open(monitor_lock, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return true;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK && errno != EINTR)
            return true;
        if (elapsed_ms(&start) > timeout_ms)
            return false;
        sleep_ms(20);
    }
    return true;
}

/* Waits up to timeout_ms for the container to leave running/paused; true when it did. */
static bool wait_stopped(lifecycle *lc, const char *id, long timeout_ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        obi_replica_state state;
        int pid;
        cleanup_error obi_error *ignored = NULL;
        if (query_state(lc, id, &state, &pid, NULL, &ignored) < 0)
            return false;
        if (state == OBI_REPLICA_ABSENT || state == OBI_REPLICA_STOPPED)
            return true;
        if (elapsed_ms(&start) >= timeout_ms)
            return false;
        sleep_ms(STOP_POLL_MS);
    }
}

/* The stop keys the replica was started with (stop_signal, stop_grace_period), from the
 * annotations of its bundle's config.json (service_spec.h), as Docker stops a container with
 * its own config's: a recreating `up` stops the old replica as it was made, and a replica of a
 * service the document no longer names too. Absent: SIGTERM, 10 s. */
static void replica_stop_keys(const obi_replica_paths *paths, int *signal_number, long *grace_ms)
{
    *signal_number = SIGTERM;
    *grace_ms = OBI_LIFECYCLE_DEFAULT_GRACE_MS;
    cleanup_free char *path = obi_path_join(paths->bundle, "config.json");
    cleanup_free char *text = NULL;
    size_t len = 0;
    cleanup_error obi_error *ignored = NULL;
    if (!path || obi_read_file(path, CONFIG_MAX, &text, &len, &ignored) < 0)
        return;
    cleanup_json json_t *config = json_loadb(text, len, 0, NULL);
    json_t *annotations = json_object_get(config, "annotations");
    const char *sig = json_string_value(json_object_get(annotations, OBI_ANNOTATION_STOP_SIGNAL));
    const char *grace = json_string_value(json_object_get(annotations, OBI_ANNOTATION_STOP_GRACE));
    uint64_t ms = 0;
    if (obi_signal_parse(sig))
        *signal_number = obi_signal_parse(sig);
    if (grace && obi_parse_duration(grace, &ms, &ignored) == 0 && ms <= LONG_MAX)
        *grace_ms = (long)ms;
}

/* Stops a replica's container gracefully: its stop signal, a grace period (--grace when given,
 * else its stop_grace_period), then SIGKILL. */
static int stop_container(lifecycle *lc, const obi_replica_paths *paths, obi_error **err)
{
    const char *container = paths->container;
    int signal_number;
    long grace;
    replica_stop_keys(paths, &signal_number, &grace);
    if (lc->opts->grace_ms >= 0)
        grace = lc->opts->grace_ms;
    /* runc and crun take a signal's name or its number */
    char signal_text[16];
    const char *abbrev = sigabbrev_np(signal_number);
    if (abbrev)
        snprintf(signal_text, sizeof signal_text, "%s", abbrev);
    else
        snprintf(signal_text, sizeof signal_text, "%d", signal_number);
    cleanup_error obi_error *kill_err = NULL;
    if (grace > 0 && obi_runtime_kill(lc->runtime, container, signal_text, &kill_err) == 0 &&
        wait_stopped(lc, container, grace))
        return 0;
    obi_error_free(steal_pointer(&kill_err));
    int r = obi_runtime_kill(lc->runtime, container, "KILL", &kill_err);
    if (r < 0 && r != -ENOENT)
        report(lc, "%s: SIGKILL: %s", container, kill_err->message);
    if (!wait_stopped(lc, container, KILL_WAIT_MS))
        return obi_error_set(err, -ETIMEDOUT, "%s: still running %ld ms after SIGKILL", container,
                             (long)KILL_WAIT_MS);
    return 0;
}

/* Removes the anonymous volumes of one replica: DATA/anonymous/<deployment>/<id>. */
static int remove_anonymous_volumes(const char *data_dir, const char *deployment, const char *id,
                                    obi_error **err)
{
    cleanup_free char *path = NULL;
    if (asprintf(&path, "%s/anonymous/%s/%s", data_dir, deployment, id) < 0)
        return obi_error_oom(err);
    int r = obi_service_rootless() ? obi_service_rootless_rm_rf(path, err) : obi_rm_rf(path, err);
    if (r < 0)
        return r;
    char *slash = strrchr(path, '/');
    *slash = 0;
    (void)rmdir(path); /* the deployment's directory, once empty */
    return 0;
}

/* Everything of one replica goes: container (stopped first when graceful), the monitor, the
 * overlay and bundle, anonymous volumes and the state dir. Continues past errors and returns
 * the first. */
static int replica_teardown(lifecycle *lc, const obi_replica_paths *paths, bool graceful,
                            obi_error **err)
{
    int first = 0;
    cleanup_error obi_error *step_err = NULL;
#define STEP(call)                                                                                 \
    do {                                                                                           \
        int step_r = (call);                                                                       \
        if (step_r < 0 && first == 0)                                                              \
            first = obi_error_move(err, &step_err);                                                \
        obi_error_free(steal_pointer(&step_err));                                                  \
    } while (0)
    obi_replica_state state;
    int pid;
    STEP(query_state(lc, paths->container, &state, &pid, NULL, &step_err));
    if (graceful && (state == OBI_REPLICA_RUNNING || state == OBI_REPLICA_PAUSED ||
                     state == OBI_REPLICA_CREATED))
        STEP(stop_container(lc, paths, &step_err));
    if (state != OBI_REPLICA_ABSENT)
        STEP(obi_runtime_destroy(lc->runtime, paths->container, &step_err));
    if (!wait_monitor_gone(paths->monitor_lock, MONITOR_WAIT_MS))
        report(lc, "%s: its monitor has not exited after %d ms; removing its state anyway",
               paths->id, MONITOR_WAIT_MS);
    STEP(obi_service_bundle_remove(paths->bundle, &step_err));
    if (lc->net)
        STEP(obi_service_network_detach(lc->net, paths->id, &step_err));
    if (obi_service_rootless())
        STEP(obi_rootless_net_detach(lc->data_dir, lc->deployment->name, paths->id, &step_err));
    STEP(remove_anonymous_volumes(lc->data_dir, lc->deployment->name, paths->id, &step_err));
    if (first == 0)
        STEP(obi_rm_rf(paths->dir, &step_err));
#undef STEP
    return first;
}

/* ---- the monitor ---- */

static void monitor_send(int fd, char kind, const char *text)
{
    (void)obi_write_all(fd, &kind, 1);
    if (text)
        (void)obi_write_all(fd, text, strlen(text));
}

/* Writes DIR/exit for the reaped container init. */
static void monitor_record_exit(const obi_replica_paths *paths, int pid, int status,
                                const struct timespec *started)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    json_int_t started_ms = (json_int_t)started->tv_sec * 1000 + started->tv_nsec / 1000000;
    json_int_t finished_ms = (json_int_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    cleanup_json json_t *doc =
        json_pack("{s:i, s:i, s:i, s:I, s:I}", "pid", pid, "exit_code", obi_wait_exit_code(status),
                  "signal", WIFSIGNALED(status) ? WTERMSIG(status) : 0, "started_ms", started_ms,
                  "finished_ms", finished_ms);
    cleanup_free char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    cleanup_error obi_error *ignored = NULL;
    if (text)
        obi_write_file_atomic(paths->exit_file, text, strlen(text), 0644, &ignored);
}

/* Appends data to the log (stdout), "2026-12-03T12:06:01.123456Z " before each line. */
static void log_stamped(const char *data, size_t len, bool *at_line_start)
{
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    for (size_t i = 0; i < len; i++) {
        if (*at_line_start) {
            struct timespec now;
            struct tm tm;
            char stamp[48], date[32];
            clock_gettime(CLOCK_REALTIME, &now);
            strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", gmtime_r(&now.tv_sec, &tm));
            int n = snprintf(stamp, sizeof stamp, "%s.%06ldZ ", date, now.tv_nsec / 1000);
            if (n > 0 && obi_buf_append(&out, stamp, (size_t)n) < 0)
                return;
            *at_line_start = false;
        }
        if (obi_buf_append(&out, data + i, 1) < 0)
            return;
        if (data[i] == '\n')
            *at_line_start = true;
    }
    (void)obi_write_all(STDOUT_FILENO, out.data, out.len);
}

/* Reads what the FIFO holds now (it is non-blocking) into the log, and into copy when given. */
static void monitor_drain(int fd, obi_buf *copy, bool *at_line_start)
{
    char chunk[16384];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof chunk)) > 0 || (got < 0 && errno == EINTR)) {
        if (got <= 0)
            continue;
        log_stamped(chunk, (size_t)got, at_line_start);
        if (copy)
            (void)obi_buf_append(copy, chunk, (size_t)got);
    }
}

/* The monitor process; never returns. status_fd gets '0' + pid, or '1' + the error. */
static _Noreturn void monitor_main(obi_runtime *runtime, const obi_replica_paths *paths,
                                   int status_fd)
{
    /* obi_spawn_detached closed every other fd (the deployment lock must not outlive `up`) and
     * emptied the signal mask (the runtime and the container must not inherit a supervisor's) */
    int null_fd = open("/dev/null", O_RDWR);
    int log_fd = open(paths->log, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0640);
    if (null_fd < 0 || log_fd < 0) {
        monitor_send(status_fd, '1', "monitor: cannot open /dev/null or the log");
        _exit(1);
    }
    dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    if (null_fd > 2)
        close(null_fd);
    if (log_fd > 2)
        close(log_fd);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    int lock_fd = open(paths->monitor_lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    (void)prctl(PR_SET_NAME, "obi-monitor"); /* how ps shows it */
    if (lock_fd < 0 || prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        monitor_send(status_fd, '1', "monitor: cannot open its lock or become a subreaper");
        _exit(1);
    }
    while (flock(lock_fd, LOCK_EX) < 0 && errno == EINTR) {
    }
    obi_error *err = NULL;
    struct timespec started;
    clock_gettime(CLOCK_REALTIME, &started);
    /* the container's stdout and stderr: a FIFO this monitor reads, so each line gets a time */
    cleanup_free char *fifo = obi_path_join(paths->dir, OUTPUT_FIFO);
    int out_fd = -1;
    if (fifo && (unlink(fifo) == 0 || errno == ENOENT) && mkfifo(fifo, 0600) == 0)
        out_fd = open(fifo, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (out_fd < 0) {
        monitor_send(status_fd, '1', "monitor: cannot make the output FIFO");
        _exit(1);
    }
    bool at_line_start = true;
    if (obi_runtime_run_detached_pid_file(runtime, paths->bundle, paths->container, fifo,
                                          paths->pid_file, &err) < 0) {
        /* what the runtime said went into the FIFO, not a file it could read back */
        cleanup_buf obi_buf said = OBI_BUF_INIT;
        monitor_drain(out_fd, &said, &at_line_start);
        cleanup_free char *text = NULL;
        if (asprintf(&text, "%s%s%.*s", err->message, said.len ? "; the runtime said: " : "",
                     (int)said.len, said.data ? (const char *)said.data : "") < 0)
            text = NULL;
        unlink(fifo);
        monitor_send(status_fd, '1', text ? text : err->message);
        _exit(1);
    }
    /* The pid file, not `state`: a container that has already exited reports no pid. */
    char *pid_text_in = NULL;
    size_t pid_len = 0;
    int pid = 0;
    unsigned long long value = 0;
    if (obi_read_file(paths->pid_file, 64, &pid_text_in, &pid_len, &err) == 0) {
        pid_text_in[strcspn(pid_text_in, " \n")] = 0; /* a runtime may end it with a newline */
        if (obi_parse_decimal(pid_text_in, INT_MAX, &value))
            pid = (int)value; /* garbled: reported as no pid */
    }
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "%d", pid);
    monitor_send(status_fd, '0', pid_text);
    close(status_fd);
    /* Copies the output to the log until the container's init, reparented to us when runc
     * exited, is reaped. */
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sig_fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK); /* wakes at the init's exit */
    for (;;) {
        struct pollfd pfd[2] = {{out_fd, POLLIN, 0}, {sig_fd, POLLIN, 0}};
        (void)poll(pfd, sig_fd >= 0 ? 2 : 1, MONITOR_POLL_MS);
        struct signalfd_siginfo info;
        while (sig_fd >= 0 && read(sig_fd, &info, sizeof info) == (ssize_t)sizeof info) {
        }
        monitor_drain(out_fd, NULL, &at_line_start);
        int status;
        pid_t reaped;
        while ((reaped = waitpid(-1, &status, WNOHANG)) > 0 && reaped != pid) {
        }
        if (reaped == 0 || (reaped < 0 && errno == EINTR))
            continue;
        monitor_drain(out_fd, NULL, &at_line_start);
        unlink(fifo);
        if (reaped == pid && pid > 0)
            monitor_record_exit(paths, pid, status, &started);
        _exit(0); /* or ECHILD: not our child after all; the exit code stays unknown */
    }
}

typedef struct monitor_start {
    obi_runtime *runtime;
    const obi_replica_paths *paths;
} monitor_start;

static void monitor_start_main(void *ctx, int status_fd)
{
    const monitor_start *start = ctx;
    monitor_main(start->runtime, start->paths, status_fd);
}

/* Starts the replica through a new monitor; on success *pid is the container's init. */
static int start_monitored(lifecycle *lc, const obi_replica_paths *paths, int *pid, obi_error **err)
{
    if (unlink(paths->exit_file) < 0 && errno != ENOENT)
        return obi_error_set_errno(err, errno, "unlink %s", paths->exit_file);
    if (unlink(paths->pid_file) < 0 && errno != ENOENT)
        return obi_error_set_errno(err, errno, "unlink %s", paths->pid_file);
    /* a grandchild: no zombie for the caller, and the container's init, reparented to the
     * monitor (a subreaper), is reaped there */
    obi_detached_options opts = {.grandchild = true};
    monitor_start start = {lc->runtime, paths};
    int fd = -1;
    int r = obi_spawn_detached(&opts, monitor_start_main, &start, &fd, NULL, err);
    if (r < 0)
        return r;
    cleanup_close int read_end = fd;
    cleanup_buf obi_buf reply = OBI_BUF_INIT;
    char chunk[4096];
    ssize_t got;
    while ((got = read(read_end, chunk, sizeof chunk)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 || obi_buf_append(&reply, chunk, (size_t)got) < 0)
            return obi_error_set_errno(err, got < 0 ? errno : ENOMEM, "read from the monitor");
    }
    cleanup_free char *text = obi_buf_steal(&reply);
    if (!text)
        return obi_error_oom(err);
    unsigned long long value = 0;
    if (text[0] == '0') {
        *pid = obi_parse_decimal(text + 1, INT_MAX, &value) ? (int)value : 0;
        return 0;
    }
    if (text[0] == '1')
        return obi_error_set(err, -EIO, "%s", text + 1);
    return obi_error_set(err, -EIO, "the monitor of %s exited without a word", paths->id);
}

/* ---- up ---- */

/* The host ids of the replicas' root, looked up once: the invoking user's own when rootless
 * (service_rootless.h), ocibuild's service range otherwise. The one place both the bundle writer
 * and the config digest get them, so a digest never describes other ids than the bundle has. */
static int replica_ids(lifecycle *lc, const obi_service *svc, obi_error **err)
{
    if (lc->have_ids)
        return 0;
    if (obi_service_rootless()) {
        obi_service_rootless_ids(&lc->ids);
    } else {
        int r = obi_service_ids_lookup(NULL, NULL, &lc->ids, err);
        if (r < 0)
            return obi_error_prefix(err, r, "services.%s", svc->name);
    }
    lc->have_ids = true;
    return 0;
}

/* The directories from DATA/services down to a replica's state dir become 0710 with the
 * replicas' root group, so that its root reaches BUNDLE/rootfs and no one else gets in. */
static int replica_dirs_open_to_root(lifecycle *lc, const obi_replica_paths *paths, obi_error **err)
{
    cleanup_free char *services = obi_path_join(lc->data_dir, "services");
    cleanup_free char *deployment = services_dir(lc->data_dir, lc->deployment->name);
    if (!services || !deployment)
        return obi_error_oom(err);
    const char *dirs[] = {services, deployment, paths->dir};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(dirs); i++) {
        int r = obi_service_replica_dir(dirs[i], &lc->ids, err);
        if (r < 0)
            return r;
    }
    return 0;
}

static int write_image_root(const obi_replica_paths *paths, const obi_image *image, obi_error **err)
{
    cleanup_free char *path = obi_path_join(paths->dir, IMAGE_ROOT_FILE);
    if (!path)
        return obi_error_oom(err);
    return obi_write_file_atomic(path, image->manifest_digest, strlen(image->manifest_digest), 0600,
                                 err);
}

static int replica_config_digest(lifecycle *lc, const obi_service *svc,
                                 const obi_service_source *src, unsigned replica,
                                 char out[2 * OBI_SHA256_LEN + 1], obi_error **err);

static int replica_write_bundle(lifecycle *lc, const obi_service *svc,
                                const obi_service_source *src, unsigned replica,
                                const obi_replica_paths *paths, char *const *args_override,
                                obi_error **err)
{
    obi_service_spec_options spec = {0};
    spec.replica = replica;
    obi_service_source_spec_options(src, &spec);
    spec.args_override = args_override;
    spec.secrets = lc->opts->secrets;
    spec.data_dir = lc->data_dir;
    int r = obi_mkdir_p(paths->dir, 0700, err);
    if (r < 0)
        return r;
    if (svc->userns_host && obi_service_rootless())
        return obi_error_set(err, -EPERM,
                             "services.%s.userns_mode: host: a normal user's replicas run in a "
                             "user namespace (there is no other way to be their root)",
                             svc->name);
    /* the replica's root in the image cache, before the bundle refers to the entry */
    if (src->image && (r = write_image_root(paths, src->image, err)) < 0)
        return r;
    if (obi_service_uses_userns(svc)) {
        if ((r = replica_ids(lc, svc, err)) < 0)
            return r;
        spec.ids = &lc->ids;
        if ((r = replica_dirs_open_to_root(lc, paths, err)) < 0)
            return r;
    }
    obi_replica_network rn = {NULL, NULL, NULL};
    if (lc->net && obi_service_uses_network(svc) &&
        (r = obi_service_network_attach(lc->net, svc, replica, &rn, err)) < 0)
        return r;
    if (lc->rootless_net && obi_service_uses_network(svc) &&
        (r = obi_rootless_net_attach(lc->rootless_net, svc, replica, &rn, err)) < 0)
        return r;
    spec.userns_path = rn.userns_path;
    spec.netns_path = rn.netns_path;
    spec.hosts = rn.hosts;
    cleanup_strv char **warnings = NULL;
    /* rootless: no overlay without root, a private copy instead */
    obi_bundle_rootfs_mode mode = obi_service_rootless() && src->mode == OBI_BUNDLE_ROOTFS_OVERLAY
                                      ? OBI_BUNDLE_ROOTFS_COPY
                                      : src->mode;
    r = obi_service_bundle_write(lc->deployment, svc, &spec, paths->bundle, src->rootfs, mode,
                                 &warnings, err);
    obi_replica_network_clear(&rn);
    for (size_t i = 0; r == 0 && warnings && warnings[i]; i++)
        report(lc, "%s: warning: %s", paths->id, warnings[i]);
    char digest[2 * OBI_SHA256_LEN + 1];
    cleanup_free char *digest_path = obi_path_join(paths->dir, CONFIG_DIGEST_FILE);
    if (r == 0 && !digest_path)
        r = obi_error_oom(err);
    if (r == 0 && (r = replica_config_digest(lc, svc, src, replica, digest, err)) == 0)
        r = obi_write_file_atomic(digest_path, digest, strlen(digest), 0600, err);
    return r;
}

/* ---- the deployment's network (service_network.h) ---- */

static void report_line(const char *message, void *ctx)
{
    report(ctx, "%s", message);
}

/* up: sweeps the networks of dead deployments, then prepares this one's (when a service uses
 * it). down: opens it when it exists. */
static int network_open(lifecycle *lc, bool up, obi_error **err)
{
    if (up && !obi_deployment_uses_network(lc->deployment))
        return 0;
    if (obi_service_rootless()) /* bridges and veths need root: one shared namespace */
        return up ? obi_rootless_net_up(lc->data_dir, lc->deployment, &lc->rootless_net, err) : 0;
    int r;
    if (up && (r = obi_service_network_sweep(report_line, lc, NULL, err)) < 0)
        return r;
    bool exists = false;
    cleanup_error obi_error *open_err = NULL;
    r = obi_service_network_open(lc->data_dir, lc->deployment->name, &lc->net, &exists,
                                 up ? err : &open_err);
    if (r < 0)
        return up ? r : 0; /* down without ip: nothing of ours can exist */
    if (!up && !exists) {
        obi_service_network_close(steal_pointer(&lc->net));
        return 0;
    }
    return up ? obi_service_network_prepare(lc->net, lc->deployment, err) : 0;
}

/* What a replica is made of, as a sha256: its generated config.json (keys sorted) and the
 * image manifest. `up` compares it with DIR/config.digest to find replicas to recreate. */
static int replica_config_digest(lifecycle *lc, const obi_service *svc,
                                 const obi_service_source *src, unsigned replica,
                                 char out[2 * OBI_SHA256_LEN + 1], obi_error **err)
{
    obi_service_spec_options spec = {0};
    spec.replica = replica;
    obi_service_source_spec_options(src, &spec);
    spec.secrets = lc->opts->secrets;
    spec.data_dir = lc->data_dir;
    int r;
    if (obi_service_uses_userns(svc)) {
        if ((r = replica_ids(lc, svc, err)) < 0)
            return r;
        spec.ids = &lc->ids;
    }
    cleanup_json json_t *config = NULL;
    cleanup_strv char **warnings = NULL;
    if ((r = obi_service_spec_generate(lc->deployment, svc, &spec, &config, &warnings, err)) < 0)
        return r;
    cleanup_free char *text = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return obi_error_oom(err);
    _cleanup_(obi_sha256_freep) obi_sha256 *ctx = obi_sha256_new();
    if (!ctx)
        return obi_error_oom(err);
    obi_sha256_update(ctx, text, strlen(text));
    if (src->image)
        obi_sha256_update(ctx, src->image->manifest_digest, strlen(src->image->manifest_digest));
    uint8_t bin[OBI_SHA256_LEN];
    obi_sha256_final(ctx, bin);
    for (size_t i = 0; i < OBI_SHA256_LEN; i++)
        snprintf(out + 2 * i, 3, "%02x", bin[i]);
    return 0;
}

/* Starts one replica (the supervisor's start and restart): a running one is left alone; a
 * stopped one is deleted and started again on its bundle (config.json rewritten); an absent
 * one gets a bundle. *pid is the container's init. A failed start leaves nothing behind. */
int obi_lc_replica_start(lifecycle *lc, const obi_service *svc, unsigned replica, int *pid,
                         obi_error **err)
{
    obi_replica_paths paths = {0};
    obi_service_source src = {0};
    int r =
        obi_replica_paths_init(&paths, lc->data_dir, lc->deployment->name, svc->name, replica, err);
    if (r < 0)
        return r;
    obi_replica_state state;
    cleanup_free char *runtime_bundle = NULL;
    if ((r = query_state(lc, paths.container, &state, pid, &runtime_bundle, err)) < 0)
        goto out;
    if (state != OBI_REPLICA_ABSENT && is_foreign(runtime_bundle, &paths)) {
        r = obi_error_set(err, -EEXIST, "container %s already exists with bundle %s, not %s",
                          paths.container, runtime_bundle, paths.bundle);
        goto out;
    }
    if (state == OBI_REPLICA_RUNNING || state == OBI_REPLICA_PAUSED ||
        state == OBI_REPLICA_CREATING)
        goto out;
    bool restart = state != OBI_REPLICA_ABSENT;
    if (restart && (r = obi_runtime_destroy(lc->runtime, paths.container, err)) < 0)
        goto out;
    if (restart && !wait_monitor_gone(paths.monitor_lock, MONITOR_WAIT_MS)) {
        r = obi_error_set(err, -EBUSY, "%s: the monitor of its last run has not exited", paths.id);
        goto out;
    }
    if ((r = obi_service_source_open(svc, lc->data_dir, lc->opts->registry, &src, err)) < 0 ||
        (r = replica_write_bundle(lc, svc, &src, replica, &paths, NULL, err)) < 0 ||
        (r = start_monitored(lc, &paths, pid, err)) < 0) {
        cleanup_error obi_error *cleanup_err = NULL;
        if (replica_teardown(lc, &paths, false, &cleanup_err) < 0)
            report(lc, "%s: cleaning up after the failed start: %s", paths.id,
                   cleanup_err->message);
        r = obi_error_prefix(err, r, "start %s", paths.id);
        goto out;
    }
out:
    obi_service_source_close(&src);
    obi_replica_paths_clear(&paths);
    return r;
}

int obi_lc_init_run(lifecycle *lc, const obi_service *svc, const char *command, uint64_t timeout_ms,
                    int *exit_code, obi_error **err)
{
    obi_replica_paths paths = {0};
    obi_service_source src = {0};
    cleanup_free char *id = NULL;
    if (asprintf(&id, "%s-rep-init", svc->name) < 0)
        return obi_error_oom(err);
    int r = replica_paths_from_id(&paths, lc->data_dir, lc->deployment->name, id, err);
    if (r < 0)
        return r;
    char *args[] = {"/bin/sh", "-c", (char *)command, NULL};
    obi_run_options run = OBI_RUN_OPTIONS_INIT;
    run.timeout_seconds = (unsigned)((timeout_ms + 999) / 1000);
    obi_run_result result = {0};
    /* the one-off container: replica 1's config with the step's command, its own bundle */
    if ((r = obi_service_source_open(svc, lc->data_dir, lc->opts->registry, &src, err)) == 0 &&
        (r = replica_write_bundle(lc, svc, &src, 1, &paths, args, err)) == 0 &&
        (r = obi_runtime_run(lc->runtime, paths.bundle, paths.container, &run, &result, err)) == 0)
        *exit_code = result.exit_code;
    if (result.log_tail && result.log_tail_len)
        report(lc, "%s: %s", paths.id, result.log_tail);
    obi_run_result_clear(&result);
    cleanup_error obi_error *cleanup_err = NULL;
    if (replica_teardown(lc, &paths, false, &cleanup_err) < 0)
        report(lc, "%s: cleaning up: %s", paths.id, cleanup_err->message);
    obi_service_source_close(&src);
    obi_replica_paths_clear(&paths);
    return r;
}

/* Stops a replica gracefully and keeps it (stop, restart, cron's overlap). */
int obi_lc_replica_stop(lifecycle *lc, const obi_replica_paths *paths, obi_error **err)
{
    obi_replica_state state;
    int pid;
    int r = query_state(lc, paths->container, &state, &pid, NULL, err);
    if (r < 0 || (state != OBI_REPLICA_RUNNING && state != OBI_REPLICA_PAUSED &&
                  state != OBI_REPLICA_CREATED))
        return r;
    return stop_container(lc, paths, err);
}

int obi_lc_replica_remove(lifecycle *lc, const obi_replica_paths *paths, obi_error **err)
{
    return replica_teardown(lc, paths, false, err);
}

int obi_lc_replica_state(lifecycle *lc, const obi_replica_paths *paths, obi_replica_state *state,
                         int *pid, obi_error **err)
{
    return query_state(lc, paths->container, state, pid, NULL, err);
}

void obi_lc_report(lifecycle *lc, const char *message)
{
    report(lc, "%s", message);
}

const char *obi_lc_data_dir(const lifecycle *lc)
{
    return lc->data_dir;
}

obi_runtime *obi_lc_runtime(const lifecycle *lc)
{
    return lc->runtime;
}

const obi_deployment *obi_lc_deployment(const lifecycle *lc)
{
    return lc->deployment;
}

void obi_lc_set_report(lifecycle *lc, obi_lifecycle_report_fn fn, void *ctx)
{
    lc->report_fn = fn;
    lc->report_ctx = ctx;
}

/* ---- up, stop, restart and down begin alike ---- */

/* The commands that change a deployment, and how each begins (lifecycle_begin). */
typedef enum lifecycle_command {
    COMMAND_UP,
    COMMAND_STOP,
    COMMAND_RESTART,
    COMMAND_DOWN,
} lifecycle_command;

static const struct command_begin {
    /* the deployment's dir, and its network prepared: every command after which a supervisor
     * may start replicas (they join the network); down only opens what exists */
    bool create;
    bool with_dependencies; /* the plan adds what the named service needs (up SERVICE) */
    obi_plan_order order;
} command_begins[] = {
    [COMMAND_UP] = {true, true, OBI_PLAN_START},
    [COMMAND_STOP] = {true, false, OBI_PLAN_STOP},
    [COMMAND_RESTART] = {true, false, OBI_PLAN_START},
    [COMMAND_DOWN] = {false, false, OBI_PLAN_STOP},
};

/* Opens the lifecycle under the deployment's lock, stops the deployment's supervisor (from here
 * on nothing starts a replica behind the command's back; the command spawns a new one at its
 * end), plans the replicas the command acts on (opts->service and opts->replica) and opens the
 * deployment's network. The caller closes lc (lifecycle_close) on every path, also when this
 * fails; *plan (caller frees) and *count are set only on success. */
static int lifecycle_begin(lifecycle *lc, lifecycle_command command,
                           const obi_deployment *deployment, const obi_lifecycle_options *opts,
                           obi_replica_ref **plan, size_t *count, obi_error **err)
{
    const struct command_begin *begin = &command_begins[command];
    cleanup_free obi_replica_ref *planned = NULL;
    size_t planned_count = 0;
    int r = lifecycle_open(lc, deployment, opts, begin->create, true, err);
    if (r == 0)
        r = obi_supervisor_stop(lc->data_dir, deployment->name, err);
    if (r == 0)
        r = obi_lifecycle_plan(deployment, opts->service, opts->replica, begin->with_dependencies,
                               begin->order, &planned, &planned_count, err);
    if (r == 0)
        r = network_open(lc, begin->create, err);
    if (r < 0)
        return r;
    *plan = steal_pointer(&planned);
    *count = planned_count;
    return 0;
}

/* ---- the up command ---- */

/* For up, before the supervisor starts: a running replica whose config digest changed is
 * stopped and removed (the supervisor starts it again on a new bundle); its held mark goes. */
static int replica_prepare(lifecycle *lc, const obi_service *svc, const obi_service_source *src,
                           unsigned replica, obi_error **err)
{
    obi_replica_paths paths = {0};
    /* svc is a service of the plan, never NULL (analyzer false positive) */
    // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
    const char *name = svc->name;
    int r = obi_replica_paths_init(&paths, lc->data_dir, lc->deployment->name, name, replica, err);
    if (r < 0)
        return r;
    obi_replica_state state;
    int pid;
    char digest[2 * OBI_SHA256_LEN + 1];
    cleanup_free char *digest_path = obi_path_join(paths.dir, CONFIG_DIGEST_FILE);
    cleanup_free char *old = NULL;
    size_t len = 0;
    cleanup_error obi_error *read_err = NULL;
    if (unlink(paths.held) < 0 && errno != ENOENT) {
        r = obi_error_set_errno(err, errno, "unlink %s", paths.held);
        goto out;
    }
    if ((r = query_state(lc, paths.container, &state, &pid, NULL, err)) < 0 ||
        state == OBI_REPLICA_ABSENT)
        goto out;
    if (!digest_path) {
        r = obi_error_oom(err);
        goto out;
    }
    if ((r = replica_config_digest(lc, svc, src, replica, digest, err)) < 0)
        goto out;
    if (obi_read_file(digest_path, 128, &old, &len, &read_err) == 0 && !strcmp(old, digest)) {
        if (state == OBI_REPLICA_RUNNING || state == OBI_REPLICA_PAUSED)
            report(lc, "%s: already running (pid %d), unchanged", paths.id, pid);
        goto out;
    }
    if ((r = replica_teardown(lc, &paths, true, err)) == 0)
        report(lc, "%s: config changed: removed, to be started again", paths.id);
out:
    obi_replica_paths_clear(&paths);
    return r;
}

int obi_lifecycle_up(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                     obi_error **err)
{
    lifecycle lc;
    cleanup_free obi_replica_ref *plan = NULL;
    size_t count = 0;
    int r = lifecycle_begin(&lc, COMMAND_UP, deployment, opts, &plan, &count, err);
    /* one image resolution per service, shared by its replicas (the plan lists them together) */
    const obi_service *opened = NULL;
    obi_service_source src = {0};
    for (size_t i = 0; r == 0 && i < count; i++) {
        if (opened != plan[i].service) {
            obi_service_source_close(&src);
            opened = plan[i].service;
            if ((r = obi_service_source_open(opened, lc.data_dir, opts->registry, &src, err)) < 0)
                break;
        }
        r = replica_prepare(&lc, opened, &src, plan[i].replica, err);
    }
    if (r == 0 && lc.net)
        r = obi_service_network_publish(lc.net, deployment, report_line, &lc, err);
    if (r == 0 && lc.rootless_net)
        r = obi_rootless_net_publish(lc.rootless_net, deployment, err);
    obi_service_source_close(&src);
    /* the supervisor starts what the plan names, in order, and watches the whole deployment */
    if (r == 0)
        r = obi_supervisor_spawn(&lc, plan, count, err);
    lifecycle_close(&lc);
    return r;
}

/* ---- down ---- */

static int replica_down(lifecycle *lc, const char *id, obi_error **err)
{
    obi_replica_paths paths = {0};
    int r = replica_paths_from_id(&paths, lc->data_dir, lc->deployment->name, id, err);
    if (r < 0)
        return r;
    obi_replica_state state;
    int pid;
    cleanup_free char *runtime_bundle = NULL;
    if ((r = query_state(lc, paths.container, &state, &pid, &runtime_bundle, err)) < 0)
        goto out;
    struct stat st;
    bool have_dir = stat(paths.dir, &st) == 0;
    if (state != OBI_REPLICA_ABSENT && is_foreign(runtime_bundle, &paths)) {
        report(lc, "%s: left alone: that container runs from %s, not from this deployment", id,
               runtime_bundle);
        goto out;
    }
    if (state == OBI_REPLICA_ABSENT && !have_dir)
        goto out;
    if ((r = replica_teardown(lc, &paths, true, err)) == 0)
        report(lc, "%s: removed", id);
out:
    obi_replica_paths_clear(&paths);
    return r;
}

static bool plan_has(const obi_replica_ref *plan, size_t count, const char *id)
{
    for (size_t i = 0; i < count; i++) {
        cleanup_free char *planned =
            obi_service_container_id(plan[i].service->name, plan[i].replica);
        if (planned && !strcmp(planned, id))
            return true;
    }
    return false;
}

/* Replica dirs of this deployment that the document does not name any more. */
static int down_leftovers(lifecycle *lc, const obi_replica_ref *plan, size_t count, obi_error **err)
{
    cleanup_free char *base = services_dir(lc->data_dir, lc->deployment->name);
    if (!base)
        return obi_error_oom(err);
    DIR *dir = opendir(base);
    if (!dir)
        return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "opendir %s", base);
    cleanup_strv char **ids = NULL;
    size_t n = 0;
    struct dirent *entry;
    int r = 0;
    while (r == 0 && (entry = readdir(dir))) {
        if (entry->d_name[0] == '.' || !strstr(entry->d_name, "-rep-") ||
            plan_has(plan, count, entry->d_name))
            continue;
        char **grown = reallocarray(ids, n + 2, sizeof *ids);
        if (!grown || !(grown[n] = strdup(entry->d_name))) {
            ids = grown ? grown : ids;
            r = obi_error_oom(err);
            break;
        }
        ids = grown;
        ids[++n] = NULL;
    }
    closedir(dir);
    for (size_t i = 0; r == 0 && i < n; i++)
        r = replica_down(lc, ids[i], err);
    if (r == 0)
        (void)rmdir(base); /* once empty */
    return r;
}

static int remove_supervisor_files(lifecycle *lc, obi_error **err);
static int remove_named_volumes(lifecycle *lc, const char *service, obi_error **err);

int obi_lifecycle_down(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                       obi_error **err)
{
    lifecycle lc;
    cleanup_free obi_replica_ref *plan = NULL;
    size_t count = 0;
    int r = lifecycle_begin(&lc, COMMAND_DOWN, deployment, opts, &plan, &count, err);
    for (size_t i = 0; r == 0 && i < count; i++) {
        cleanup_free char *id = obi_service_container_id(plan[i].service->name, plan[i].replica);
        r = id ? replica_down(&lc, id, err) : obi_error_oom(err);
    }
    if (r == 0 && !opts->service)
        r = remove_supervisor_files(&lc, err);
    if (r == 0 && !opts->service)
        r = down_leftovers(&lc, plan, count, err);
    if (r == 0 && !opts->service && lc.net)
        r = obi_service_network_teardown(lc.net, err);
    if (r == 0 && !opts->service && obi_service_rootless())
        r = obi_rootless_net_down(lc.data_dir, deployment->name, err);
    if (r == 0 && opts->volumes)
        r = remove_named_volumes(&lc, opts->service, err);
    /* down SERVICE: the rest of the deployment is watched again */
    if (r == 0 && opts->service)
        r = obi_supervisor_spawn(&lc, NULL, 0, err);
    lifecycle_close(&lc);
    return r;
}

/* supervisor.{pid,log,lock} once the supervisor is gone (down of the whole deployment). The
 * lock file goes too: obi_supervisor_stop returned, so nobody holds it, and a supervisor
 * starts only under the deployment lock, which we hold. */
static int remove_supervisor_files(lifecycle *lc, obi_error **err)
{
    static const char *const names[] = {"supervisor.pid", "supervisor.log", "supervisor.lock"};
    cleanup_free char *base = services_dir(lc->data_dir, lc->deployment->name);
    if (!base)
        return obi_error_oom(err);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(names); i++) {
        cleanup_free char *path = obi_path_join(base, names[i]);
        if (!path)
            return obi_error_oom(err);
        if (unlink(path) < 0 && errno != ENOENT)
            return obi_error_set_errno(err, errno, "unlink %s", path);
    }
    return 0;
}

/* down -v: DATA/volumes/<deployment>/<name> of every named volume of the selected services
 * (all of them without a service: the whole DATA/volumes/<deployment>). */
static int remove_named_volumes(lifecycle *lc, const char *service, obi_error **err)
{
    cleanup_free char *base = NULL;
    if (asprintf(&base, "%s/volumes/%s", lc->data_dir, lc->deployment->name) < 0)
        return obi_error_oom(err);
    if (!service) {
        struct stat st;
        if (lstat(base, &st) < 0)
            return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "stat %s", base);
        int r = obi_rm_rf(base, err);
        if (r == 0)
            report(lc, "volumes of %s: removed", lc->deployment->name);
        return r;
    }
    const obi_service *svc = obi_deployment_find(lc->deployment, service);
    for (size_t i = 0; svc && i < svc->storage_count; i++) {
        if (svc->storage[i].type != OBI_STORAGE_NAMED)
            continue;
        cleanup_free char *path = obi_path_join(base, svc->storage[i].name);
        if (!path)
            return obi_error_oom(err);
        int r = obi_rm_rf(path, err);
        if (r < 0)
            return r;
        report(lc, "volume %s: removed", svc->storage[i].name);
    }
    (void)rmdir(base);
    return 0;
}

int obi_lifecycle_stop(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                       bool restart, obi_error **err)
{
    lifecycle lc;
    cleanup_free obi_replica_ref *plan = NULL;
    size_t count = 0;
    int r = lifecycle_begin(&lc, restart ? COMMAND_RESTART : COMMAND_STOP, deployment, opts, &plan,
                            &count, err);
    for (size_t i = 0; r == 0 && i < count; i++) {
        obi_replica_paths paths = {0};
        if ((r = obi_replica_paths_init(&paths, lc.data_dir, deployment->name,
                                        plan[i].service->name, plan[i].replica, err)) < 0)
            break;
        struct stat st;
        if (stat(paths.dir, &st) == 0) {
            if (restart)
                (void)unlink(paths.held);
            else if ((r = obi_write_file_atomic(paths.held, "", 0, 0600, err)) < 0)
                goto next;
            if ((r = obi_lc_replica_stop(&lc, &paths, err)) == 0)
                report(&lc, "%s: stopped", paths.id);
        }
    next:
        obi_replica_paths_clear(&paths);
    }
    /* a supervisor again, for what still runs (and, on restart, to start these) */
    if (r == 0)
        r = obi_supervisor_spawn(&lc, restart ? plan : NULL, restart ? count : 0, err);
    lifecycle_close(&lc);
    return r;
}

/* ---- exec ---- */

/* The runtime's exec of argv in the container, waited for (the terminal's signals reach it
 * directly: ignored here meanwhile). */
static int runtime_exec(lifecycle *lc, const char *container, char *const argv[], bool tty,
                        int *exit_code, obi_error **err)
{
    size_t n = 0;
    while (argv[n])
        n++;
    cleanup_free const char **args = calloc(n + 7, sizeof *args);
    if (!args)
        return obi_error_oom(err);
    size_t k = 0;
    args[k++] = obi_runtime_path(lc->runtime);
    if (obi_runtime_state_root(lc->runtime)) {
        args[k++] = "--root";
        args[k++] = obi_runtime_state_root(lc->runtime);
    }
    args[k++] = "exec";
    if (tty)
        args[k++] = "--tty";
    args[k++] = container;
    for (size_t i = 0; i < n; i++)
        args[k++] = argv[i];
    obi_spawn_options spawn = OBI_SPAWN_OPTIONS_INIT;
    spawn.stdin_fd = STDIN_FILENO;
    pid_t child;
    struct sigaction ignore = {.sa_handler = SIG_IGN}, old_int, old_quit;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGINT, &ignore, &old_int);
    sigaction(SIGQUIT, &ignore, &old_quit);
    int status = 0;
    int r = obi_spawn((char *const *)args, &spawn, &child, err);
    if (r == 0)
        r = obi_wait(child, &status, err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    if (r == 0)
        *exit_code = obi_wait_exit_code(status);
    return r;
}

int obi_lc_replica_exec(lifecycle *lc, const obi_replica_paths *paths, int pid, char *const argv[],
                        bool tty, int *exit_code, obi_error **err)
{
    cleanup_free char *config_path = obi_path_join(paths->bundle, "config.json");
    if (!config_path)
        return obi_error_oom(err);
    json_error_t jerr;
    cleanup_json json_t *config = json_load_file(config_path, 0, &jerr);
    if (!config)
        return obi_error_set(err, -EINVAL, "%s: %s", config_path, jerr.text);
    if (!obi_replica_exec_needs_own(config))
        return runtime_exec(lc, paths->container, argv, tty, exit_code, err);
    int r = obi_replica_exec(config, pid, argv, exit_code, err);
    return r < 0 ? obi_error_prefix(err, r, "exec in %s", paths->id) : 0;
}

int obi_lifecycle_exec(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                       char *const argv[], bool tty, int *exit_code, obi_error **err)
{
    const obi_service *svc = opts->service ? obi_deployment_find(deployment, opts->service) : NULL;
    if (!svc)
        return obi_error_set(err, -ENOENT, "no service \"%s\"", opts->service ? opts->service : "");
    unsigned replica = opts->replica ? opts->replica : 1;
    if (replica > svc->replicas)
        return obi_error_set(err, -ENOENT, "service %s has %u replica%s, not %u", svc->name,
                             svc->replicas, svc->replicas == 1 ? "" : "s", replica);
    lifecycle lc;
    obi_replica_paths paths = {0};
    int r = lifecycle_open(&lc, deployment, opts, false, false, err);
    if (r == 0)
        r = obi_replica_paths_init(&paths, lc.data_dir, deployment->name, svc->name, replica, err);
    obi_replica_state state = OBI_REPLICA_ABSENT;
    int pid = 0;
    cleanup_free char *bundle = NULL;
    if (r == 0)
        r = query_state(&lc, paths.container, &state, &pid, &bundle, err);
    if (r == 0 && (state != OBI_REPLICA_RUNNING || pid <= 0))
        r = obi_error_set(err, -ESRCH, "%s is %s, not running", paths.id,
                          obi_replica_state_name(state));
    else if (r == 0 && is_foreign(bundle, &paths))
        r = obi_error_set(err, -EPERM, "container %s is not this deployment's (bundle %s)",
                          paths.container, bundle);
    if (r == 0)
        r = obi_lc_replica_exec(&lc, &paths, pid, argv, tty, exit_code, err);
    obi_replica_paths_clear(&paths);
    lifecycle_close(&lc);
    return r;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int obi_lifecycle_list(const char *data_dir, char ***names, obi_error **err)
{
    cleanup_free char *services = obi_path_join(data_dir, "services");
    if (!services)
        return obi_error_oom(err);
    cleanup_strv char **list = calloc(1, sizeof *list);
    size_t n = 0;
    if (!list)
        return obi_error_oom(err);
    cleanup_dir DIR *dir = opendir(services);
    if (!dir && errno != ENOENT)
        return obi_error_set_errno(err, errno, "opendir %s", services);
    struct dirent *de;
    while (dir && (de = readdir(dir))) {
        if (de->d_name[0] == '.' || de->d_type != DT_DIR)
            continue;
        char **grown = reallocarray(list, n + 2, sizeof *list);
        if (!grown)
            return obi_error_oom(err);
        list = grown;
        list[n + 1] = NULL;
        if (!(list[n] = strdup(de->d_name)))
            return obi_error_oom(err);
        n++;
    }
    qsort(list, n, sizeof *list, compare_names);
    *names = steal_pointer(&list);
    return 0;
}

/* ---- ps ---- */

void obi_replica_status_free(obi_replica_status *statuses, size_t count)
{
    for (size_t i = 0; statuses && i < count; i++) {
        free(statuses[i].id);
        free(statuses[i].bundle);
    }
    free(statuses);
}

int obi_lifecycle_ps(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                     obi_replica_status **out, size_t *count, obi_error **err)
{
    lifecycle lc;
    int r = lifecycle_open(&lc, deployment, opts, false, false, err);
    cleanup_free obi_replica_ref *plan = NULL;
    size_t n = 0;
    if (r == 0)
        r = obi_lifecycle_plan(deployment, opts->service, opts->replica, false, OBI_PLAN_START,
                               &plan, &n, err);
    obi_replica_status *statuses = r == 0 ? calloc(n ? n : 1, sizeof *statuses) : NULL;
    if (r == 0 && !statuses)
        r = obi_error_oom(err);
    for (size_t i = 0; r == 0 && i < n; i++) {
        obi_replica_status *s = &statuses[i];
        obi_replica_paths paths = {0};
        s->service = plan[i].service;
        s->replica = plan[i].replica;
        /* obi_lifecycle_plan fills service for every entry (analyzer false positive) */
        if ((r = obi_replica_paths_init(&paths, lc.data_dir, deployment->name,
                                        // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
                                        plan[i].service->name, plan[i].replica, err)) < 0)
            break;
        s->id = steal_pointer(&paths.id);
        r = query_state(&lc, paths.container, &s->state, &s->pid, &s->bundle, err);
        if (r == 0 && s->state != OBI_REPLICA_ABSENT) {
            s->foreign = is_foreign(s->bundle, &paths);
            cleanup_error obi_error *ignored = NULL;
            if (s->state == OBI_REPLICA_STOPPED && !s->foreign &&
                obi_lifecycle_read_exit(paths.exit_file, &s->exit_code, &s->signal, &ignored) == 0)
                s->has_exit = true;
        }
        if (r == 0) {
            cleanup_error obi_error *ignored = NULL;
            read_exit_times(paths.exit_file, &s->started_ms, &s->finished_ms);
            s->supervised = obi_supervision_read(paths.status, &s->supervision, &ignored) == 0;
        }
        obi_replica_paths_clear(&paths);
    }
    lifecycle_close(&lc);
    if (r < 0) {
        obi_replica_status_free(statuses, n);
        return r;
    }
    *out = statuses;
    *count = n;
    return 0;
}

void obi_lc_forget_lock(lifecycle *lc)
{
    lc->lock_fd = -1;
}
