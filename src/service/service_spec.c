/*
 * Service spec generation: a parsed service (deployment.h) + replica -> OCI runtime config,
 * following spec/service.md section by section (process, env layers, capabilities, mounts,
 * linux: namespaces, resources, device cgroup rules, devices, masked and read-only paths).
 * The OCI runtime defaults (namespaces, standard mounts, masks, default device rules,
 * capability names and sets) come from oci_defaults.h's tables, shared with builds;
 * replica_defaults says what a replica takes of them. Tables here hold the rest (GPU env and
 * node names); the code assembles them. Also writes a bundle directory for the service
 * lifecycle: volume directories (walked from the data dir without following symlinks), the
 * overlay rootfs (with an idmapped lower layer under a user namespace) and a check that the
 * replica's root can reach it.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <math.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/number.h"
#include "ocibuild/oci_defaults.h"
#include "ocibuild/process.h"
#include "ocibuild/service_spec.h"
#include "ocibuild/spec.h"

#define CPU_PERIOD 100000
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define GPU_DEVICE_MODE 0666
#define PASSWD_MAX_BYTES (4u << 20)

/* ---- small helpers ----------------------------------------------------------------------- */

/* Appends a formatted line to a NULL-terminated list (NULL list allowed). */
static int strv_appendf(char ***strv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int strv_appendf(char ***strv, const char *fmt, ...)
{
    size_t n = 0;
    while (*strv && (*strv)[n])
        n++;
    char **grown = realloc(*strv, (n + 2) * sizeof *grown);
    if (!grown)
        return -ENOMEM;
    *strv = grown;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&grown[n], fmt, ap);
    va_end(ap);
    if (r < 0) {
        grown[n] = NULL;
        return -ENOMEM;
    }
    grown[n + 1] = NULL;
    return 0;
}

static json_t *json_strv(char *const *strv)
{
    json_t *array = json_array();
    for (size_t i = 0; array && strv && strv[i]; i++)
        if (json_array_append_new(array, json_string(strv[i])) < 0) {
            json_decref(array);
            return NULL;
        }
    return array;
}

static bool strv_empty(char *const *strv)
{
    return !strv || !strv[0];
}

char *obi_service_container_id(const char *service, unsigned replica)
{
    char *id = NULL;
    if (asprintf(&id, "%s-rep-%u", service, replica) < 0)
        return NULL;
    return id;
}

/* ---- env layering ------------------------------------------------------------------------ */

/* An ordered KEY=value list where setting an existing key replaces its value in place, so the
 * result never holds a key twice. */
typedef struct env_list {
    char **entries;
    size_t count;
} env_list;

static void env_list_clear(env_list *env)
{
    for (size_t i = 0; i < env->count; i++)
        free(env->entries[i]);
    free(env->entries);
}

static int env_set(env_list *env, const char *name, size_t name_len, const char *value)
{
    char *entry = NULL;
    if (asprintf(&entry, "%.*s=%s", (int)name_len, name, value) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < env->count; i++)
        if (!strncmp(env->entries[i], name, name_len) && env->entries[i][name_len] == '=') {
            free(env->entries[i]);
            env->entries[i] = entry;
            return 0;
        }
    char **grown = realloc(env->entries, (env->count + 2) * sizeof *grown);
    if (!grown) {
        free(entry);
        return -ENOMEM;
    }
    env->entries = grown;
    env->entries[env->count++] = entry;
    env->entries[env->count] = NULL;
    return 0;
}

static bool env_has(const env_list *env, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < env->count; i++)
        if (!strncmp(env->entries[i], name, len) && env->entries[i][len] == '=')
            return true;
    return false;
}

/* "KEY=value" entries; what is before the first '=' is the key. */
static int env_set_entries(env_list *env, char *const *entries, const char *what, obi_error **err)
{
    for (size_t i = 0; entries && entries[i]; i++) {
        const char *eq = strchr(entries[i], '=');
        if (!eq || eq == entries[i])
            return obi_error_set(err, -EINVAL, "%s[%zu]: \"%s\" is not KEY=value", what, i,
                                 entries[i]);
        if (env_set(env, entries[i], (size_t)(eq - entries[i]), eq + 1) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

static int env_setf(env_list *env, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int env_setf(env_list *env, const char *name, const char *fmt, ...)
{
    cleanup_free char *value = NULL;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&value, fmt, ap);
    va_end(ap);
    if (r < 0)
        return -ENOMEM;
    return env_set(env, name, strlen(name), value);
}

static const struct gpu_env {
    obi_gpu_vendor vendor;
    const char *names[2];
} GPU_ENV[] = {
    {OBI_GPU_NVIDIA, {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"}},
    {OBI_GPU_AMD, {"ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"}},
    {OBI_GPU_INTEL, {"ZE_AFFINITY_MASK", NULL}},
};

static int env_add_gpu(env_list *env, const obi_service *svc)
{
    const obi_gpu *gpu = &svc->gpu;
    obi_buf list = OBI_BUF_INIT;
    for (unsigned i = 0; i < gpu->count; i++)
        if (obi_buf_appendf(&list, "%s%u", i ? "," : "", i) < 0) {
            obi_buf_free(&list);
            return -ENOMEM;
        }
    int r = 0;
    for (size_t i = 0; r == 0 && i < OBI_ARRAY_SIZE(GPU_ENV); i++)
        for (size_t j = 0; r == 0 && GPU_ENV[i].vendor == gpu->vendor && j < 2; j++)
            if (GPU_ENV[i].names[j])
                r = env_set(env, GPU_ENV[i].names[j], strlen(GPU_ENV[i].names[j]),
                            list.data ? (char *)list.data : "");
    obi_buf_free(&list);
    if (r < 0 || !gpu->distributed)
        return r;
    if (env_setf(env, "MASTER_PORT", "%u", gpu->master_port) < 0 ||
        env_setf(env, "MASTER_ADDR", "%s", svc->name) < 0 || env_setf(env, "WORLD_SIZE", "1") < 0 ||
        env_setf(env, "RANK", "0") < 0 || env_setf(env, "LOCAL_RANK", "0") < 0 ||
        env_setf(env,
                 gpu->backend == OBI_GPU_BACKEND_NCCL ? "NCCL_SOCKET_IFNAME" : "GLOO_SOCKET_IFNAME",
                 "eth0") < 0)
        return -ENOMEM;
    return 0;
}

/* Layers, later replacing earlier: image Env; PATH and TERM defaults; the service's resolved
 * env; the caller's extra env; GPU visibility and distributed-training variables. */
static int build_env(const obi_service *svc, const obi_service_spec_options *opts, json_t **out,
                     obi_error **err)
{
    env_list env = {NULL, 0};
    obi_service_env_var *resolved = NULL;
    int r = 0;
    if (opts->image)
        r = env_set_entries(&env, opts->image->env, "image config Env", err);
    if (r == 0 && !env_has(&env, "PATH") && env_set(&env, "PATH", 4, DEFAULT_PATH) < 0)
        r = obi_error_oom(err);
    if (r == 0 && !env_has(&env, "TERM") && env_set(&env, "TERM", 4, "xterm") < 0)
        r = obi_error_oom(err);
    if (r == 0)
        r = obi_service_env_resolve(svc, opts->secrets, &resolved, err);
    for (size_t i = 0; r == 0 && i < svc->env_count; i++)
        if (env_set(&env, resolved[i].name, strlen(resolved[i].name), resolved[i].value) < 0)
            r = obi_error_oom(err);
    if (r == 0)
        r = env_set_entries(&env, opts->extra_env, "extra env", err);
    if (r == 0 && svc->has_gpu && env_add_gpu(&env, svc) < 0)
        r = obi_error_oom(err);
    if (r == 0 && !(*out = json_strv(env.entries)))
        r = obi_error_oom(err);
    obi_service_env_vars_free(resolved, svc->env_count);
    env_list_clear(&env);
    return r;
}

/* ---- user resolution --------------------------------------------------------------------- */

/* Reads ROOTFS/relative with every symlink resolved inside rootfs (openat2 RESOLVE_IN_ROOT),
 * so an image's /etc/passwd -> /etc/shadow link cannot reach the host's files. */
static int read_in_root(const char *rootfs, const char *relative, char **out, obi_error **err)
{
    cleanup_close int root_fd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        return obi_error_set_errno(err, errno, "rootfs %s", rootfs);
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    cleanup_close int fd = (int)syscall(SYS_openat2, root_fd, relative, &how, sizeof how);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "%s/%s", rootfs, relative);
    obi_buf buf = OBI_BUF_INIT;
    char chunk[8192];
    for (;;) {
        ssize_t n = obi_read_full(fd, chunk, sizeof chunk);
        if (n < 0) {
            obi_buf_free(&buf);
            return obi_error_set_errno(err, (int)-n, "read %s/%s", rootfs, relative);
        }
        if (n == 0)
            break;
        if (buf.len + (size_t)n > PASSWD_MAX_BYTES || obi_buf_append(&buf, chunk, (size_t)n) < 0) {
            obi_buf_free(&buf);
            return obi_error_set(err, -EFBIG, "%s/%s: too large", rootfs, relative);
        }
    }
    char *text = obi_buf_steal(&buf);
    if (!text)
        return obi_error_oom(err);
    *out = text;
    return 0;
}

/* Finds name in a passwd/group style file: "name:x:ID:GID..." -> fields 2 and (passwd) 3. */
static int lookup_name(const char *rootfs, const char *file, const char *name, unsigned *id,
                       unsigned *gid, obi_error **err)
{
    if (!rootfs)
        return obi_error_set(err, -ENOENT, "cannot resolve \"%s\" without a rootfs", name);
    cleanup_free char *text = NULL;
    int r = read_in_root(rootfs, file, &text, err);
    if (r < 0)
        return obi_error_prefix(err, r, "resolve \"%s\"", name);
    size_t name_len = strlen(name);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp(line, name, name_len) || line[name_len] != ':')
            continue;
        char *fields[4] = {0};
        char *save = NULL, *p = line;
        for (int f = 0; f < 4; f++) {
            fields[f] = strsep(&p, ":");
            if (!fields[f])
                break;
        }
        (void)save;
        unsigned long long value = 0;
        if (!fields[2] || !obi_parse_decimal(fields[2], UINT32_MAX, &value))
            break;
        *id = (unsigned)value;
        if (gid) {
            if (!fields[3] || !obi_parse_decimal(fields[3], UINT32_MAX, &value))
                break;
            *gid = (unsigned)value;
        }
        return 0;
    }
    return obi_error_set(err, -ENOENT, "\"%s\" not found in %s/%s", name, rootfs, file);
}

static bool parse_id(const char *text, unsigned *out)
{
    unsigned long long value = 0;
    if (!obi_parse_decimal(text, UINT32_MAX, &value))
        return false;
    *out = (unsigned)value;
    return true;
}

int obi_resolve_user(const char *user, const char *rootfs, unsigned *uid, unsigned *gid,
                     obi_error **err)
{
    cleanup_free char *copy = strdup(user);
    if (!copy)
        return obi_error_oom(err);
    char *group = strchr(copy, ':');
    if (group)
        *group++ = '\0';
    if (!*copy || (group && !*group))
        return obi_error_set(err, -EINVAL, "image User \"%s\": expected uid[:gid]", user);
    unsigned u = 0, g = 0;
    bool have_gid = false;
    int r;
    if (parse_id(copy, &u)) {
        g = u;
    } else {
        if ((r = lookup_name(rootfs, "etc/passwd", copy, &u, &g, err)) < 0)
            return obi_error_prefix(err, r, "image User \"%s\"", user);
    }
    if (group) {
        if (parse_id(group, &g))
            have_gid = true;
        else if ((r = lookup_name(rootfs, "etc/group", group, &g, NULL, err)) < 0)
            return obi_error_prefix(err, r, "image User \"%s\"", user);
    }
    (void)have_gid;
    *uid = u;
    *gid = g;
    return 0;
}

/* ---- process ----------------------------------------------------------------------------- */

static json_t *build_args(const obi_service *svc, const obi_service_spec_options *opts)
{
    if (!strv_empty(opts->args_override))
        return json_strv(opts->args_override);
    json_t *args = json_array();
    if (!args)
        return NULL;
    char *const *first = NULL, *const *second = NULL;
    if (svc->entrypoint || svc->args) {
        first = svc->entrypoint;
        second = svc->args;
    } else if (opts->image &&
               (!strv_empty(opts->image->entrypoint) || !strv_empty(opts->image->cmd))) {
        first = opts->image->entrypoint;
        second = opts->image->cmd;
    }
    if (!first && !second) {
        static char *const shell[] = {"/bin/sh", NULL};
        first = shell;
    }
    char *const *parts[2] = {first, second};
    for (size_t p = 0; p < 2; p++)
        for (size_t i = 0; parts[p] && parts[p][i]; i++)
            if (json_array_append_new(args, json_string(parts[p][i])) < 0) {
                json_decref(args);
                return NULL;
            }
    return args;
}

/* ---- the host's part: capabilities it can grant, the replicas' ids ----------------------- */

uint64_t obi_service_bounding_set(void)
{
    uint64_t mask = 0;
    for (int cap = 0; cap < 64; cap++) {
        int r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (r < 0)
            break; /* EINVAL: past the kernel's last capability */
        if (r == 1)
            mask |= UINT64_C(1) << cap;
    }
    return mask;
}

static bool can_grant(uint64_t bounding, const char *cap)
{
    int n = obi_capability_number(cap);
    return n >= 0 && n < 64 && (bounding >> n & 1);
}

/* Privileged: every capability the host can grant; the defaults likewise; an explicit list as
 * written, each one checked: one the host cannot grant would fail in the runtime ("unable to
 * apply caps"), so it is refused here, named. */
static int build_capabilities(const obi_service *svc, uint64_t bounding, json_t **out,
                              obi_error **err)
{
    cleanup_json json_t *set = json_array();
    if (!set)
        return obi_error_oom(err);
    if (svc->has_capabilities && !svc->privileged) {
        for (size_t i = 0; svc->capabilities[i]; i++) {
            if (!can_grant(bounding, svc->capabilities[i]))
                return obi_error_set(err, -EPERM,
                                     "services.%s.capabilities: %s is not in this host's "
                                     "capability bounding set (CapBnd %016" PRIx64
                                     "), so no container started here can hold it",
                                     svc->name, svc->capabilities[i], bounding);
            if (json_array_append_new(set, json_string(svc->capabilities[i])) < 0)
                return obi_error_oom(err);
        }
    } else {
        const char *const *names = svc->privileged ? OBI_CAPABILITIES : OBI_DEFAULT_CAPABILITIES;
        size_t n = svc->privileged ? OBI_CAPABILITY_COUNT : OBI_DEFAULT_CAPABILITY_COUNT;
        for (size_t i = 0; i < n; i++)
            if (can_grant(bounding, names[i]) &&
                json_array_append_new(set, json_string(names[i])) < 0)
                return obi_error_oom(err);
    }
    json_t *caps = obi_oci_capabilities(set);
    if (!caps)
        return obi_error_oom(err);
    *out = caps;
    return 0;
}

bool obi_service_uses_userns(const obi_service *svc)
{
    return !svc->privileged;
}

int obi_service_ids_lookup(const char *subuid_path, const char *subgid_path, obi_idmap *out,
                           obi_error **err)
{
    char buf[4096];
    struct passwd pw, *found = NULL;
    /* subid lines name their owner or its uid; without the user only names can match */
    uint32_t owner_uid =
        getpwnam_r(OBI_SERVICE_ID_OWNER, &pw, buf, sizeof buf, &found) == 0 && found
            ? (uint32_t)found->pw_uid
            : UINT32_MAX;
    const char *files[2] = {subuid_path ? subuid_path : "/etc/subuid",
                            subgid_path ? subgid_path : "/etc/subgid"};
    obi_subid_range ranges[2];
    for (int i = 0; i < 2; i++) {
        cleanup_error obi_error *lookup_err = NULL;
        int r = obi_subid_lookup(files[i], i ? "gid" : "uid", OBI_SERVICE_ID_OWNER, owner_uid,
                                 &ranges[i], &lookup_err);
        if (r == -ENOENT)
            return obi_error_set(
                err, -ENOENT,
                "replicas run in a user namespace whose host ids belong to the user %s, but %s "
                "has no range for it: run scripts/install-deps.sh as root, or `useradd --system "
                "%s && usermod --add-subuids START-END --add-subgids START-END %s` with 65536 "
                "ids no one else uses (or set privileged: true to run as the host's root)",
                OBI_SERVICE_ID_OWNER, files[i], OBI_SERVICE_ID_OWNER, OBI_SERVICE_ID_OWNER);
        if (r < 0)
            return obi_error_move(err, &lookup_err);
        if (ranges[i].start == 0)
            return obi_error_set(err, -EINVAL,
                                 "%s: the range of %s starts at id 0, the host's root; give it "
                                 "ids no one else uses",
                                 files[i], OBI_SERVICE_ID_OWNER);
    }
    out->uid = ranges[0].start;
    out->gid = ranges[1].start;
    out->count = ranges[0].count < ranges[1].count ? ranges[0].count : ranges[1].count;
    return 0;
}

/* The replica's user namespace: NULL for privileged services, else the given or looked-up
 * ids (in *buf). */
static int replica_ids(const obi_service *svc, const obi_service_spec_options *opts, obi_idmap *buf,
                       const obi_idmap **out, obi_error **err)
{
    *out = NULL;
    if (!obi_service_uses_userns(svc))
        return 0;
    if (opts->ids) {
        *out = opts->ids;
        return 0;
    }
    int r = obi_service_ids_lookup(NULL, NULL, buf, err);
    if (r < 0)
        return obi_error_prefix(err, r, "services.%s", svc->name);
    *out = buf;
    return 0;
}

static int build_process(const obi_service *svc, const obi_service_spec_options *opts, json_t **out,
                         obi_error **err)
{
    unsigned uid = 0, gid = 0;
    int r;
    if (opts->image && opts->image->user && *opts->image->user &&
        (r = obi_resolve_user(opts->image->user, opts->rootfs, &uid, &gid, err)) < 0)
        return r;
    const char *cwd = opts->cwd_override ? opts->cwd_override
                      : svc->workdir     ? svc->workdir
                      : opts->image && opts->image->working_dir && *opts->image->working_dir
                          ? opts->image->working_dir
                          : "/";
    json_t *env = NULL;
    if ((r = build_env(svc, opts, &env, err)) < 0)
        return r;
    json_t *caps = NULL;
    if ((r = build_capabilities(
             svc, opts->bounding_set ? *opts->bounding_set : obi_service_bounding_set(), &caps,
             err)) < 0) {
        json_decref(env);
        return r;
    }
    json_t *args = build_args(svc, opts);
    if (!args) {
        json_decref(caps);
        json_decref(env);
        return obi_error_oom(err);
    }
    bool no_new_privileges = !svc->privileged && !svc->has_capabilities;
    /* "o" takes the references, also when packing fails */
    json_t *process =
        json_pack("{s:b, s:{s:I, s:I}, s:o, s:o, s:s, s:o, s:b}", "terminal", 0, "user", "uid",
                  (json_int_t)uid, "gid", (json_int_t)gid, "args", args, "env", env, "cwd", cwd,
                  "capabilities", caps, "noNewPrivileges", no_new_privileges);
    if (!process)
        return obi_error_oom(err);
    *out = process;
    return 0;
}

/* ---- mounts ------------------------------------------------------------------------------ */

static bool host_has_cgroup2(void)
{
    struct statfs fs;
    return statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

/* What a replica takes of the OCI defaults (spec/service.md): the host's cgroup namespace, its
 * own network namespace unless host_network, a user namespace unless privileged (which maps gid
 * 5, so devpts keeps gid=5); /proc nosuid,noexec,nodev, a writable cgroup mount of the host's
 * type; runc's masked paths without moby's power counters; runc's default device rules written
 * out. Privileged replicas: writable sysfs, nothing masked, every device. Under a user
 * namespace sharing the host's network namespace, sysfs cannot be mounted (the kernel ties it
 * to a network namespace the user namespace owns): the host's /sys is bound read-only instead,
 * as runc and podman do for rootless containers. */
static obi_oci_defaults replica_defaults(const obi_service *svc,
                                         const obi_service_spec_options *opts, bool userns)
{
    return (obi_oci_defaults){
        .network_namespace = !svc->host_network,
        .user_namespace = userns,
        .privileged = svc->privileged,
        .devpts_tty_group = true,
        .proc_nosuid_noexec_nodev = true,
        .cgroup2 = opts->cgroup == OBI_CGROUP_V2 ||
                   (opts->cgroup == OBI_CGROUP_DETECT && host_has_cgroup2()),
        .cgroup_writable = true,
        .list_default_devices = true,
    };
}

static const char *default_data_dir_or(const char *data_dir, char **owned)
{
    if (data_dir)
        return data_dir;
    *owned = obi_default_data_dir();
    return *owned;
}

char *obi_service_storage_source(const obi_deployment *deployment, const obi_service *svc,
                                 unsigned replica, size_t index, const char *data_dir)
{
    cleanup_free char *owned = NULL;
    const char *data = default_data_dir_or(data_dir, &owned);
    const obi_storage *st = &svc->storage[index];
    char *path = NULL;
    int r = 0;
    if (!data)
        return NULL;
    switch (st->type) {
    case OBI_STORAGE_BIND:
        return strdup(st->source);
    case OBI_STORAGE_NAMED:
        r = asprintf(&path, "%s/volumes/%s/%s", data, deployment->name, st->name);
        break;
    case OBI_STORAGE_ANONYMOUS: {
        cleanup_free char *id = obi_service_container_id(svc->name, replica ? replica : 1);
        r = id ? asprintf(&path, "%s/anonymous/%s/%s/%zu", data, deployment->name, id, index) : -1;
        break;
    }
    case OBI_STORAGE_S3:
        r = asprintf(&path, "%s/s3/%s%s%s", data, st->bucket, st->prefix && *st->prefix ? "/" : "",
                     st->prefix ? st->prefix : "");
        /* "v1/" -> ".../v1" */
        if (r > 0 && path[r - 1] == '/')
            path[r - 1] = '\0';
        break;
    case OBI_STORAGE_TMPFS:
        return NULL;
    }
    return r < 0 ? NULL : path;
}

static int add_storage_mounts(json_t *mounts, const obi_deployment *d, const obi_service *svc,
                              const obi_service_spec_options *opts, unsigned replica,
                              obi_error **err)
{
    for (size_t i = 0; i < svc->storage_count; i++) {
        const obi_storage *st = &svc->storage[i];
        int r;
        if (st->type == OBI_STORAGE_TMPFS) {
            char size[32] = "", mode[32] = "";
            const char *options[5] = {"nosuid", "nodev", NULL, NULL, NULL};
            size_t n = 2;
            if (st->has_size) {
                snprintf(size, sizeof size, "size=%llu", (unsigned long long)st->size);
                options[n++] = size;
            }
            if (st->has_mode) {
                snprintf(mode, sizeof mode, "mode=%o", st->mode);
                options[n++] = mode;
            }
            r = obi_oci_add_mount(mounts, st->target, "tmpfs", "tmpfs", options);
        } else {
            cleanup_free char *source =
                obi_service_storage_source(d, svc, replica, i, opts->data_dir);
            if (!source)
                return obi_error_oom(err);
            /* volumes are data: nothing on them gains privileges or reaches a device */
            const char *options[] = {"rbind", st->readonly ? "ro" : "rw", "nosuid", "nodev", NULL};
            r = obi_oci_add_mount(mounts, st->target, "none", source, options);
        }
        if (r < 0)
            return obi_error_oom(err);
    }
    return 0;
}

/* ---- devices ----------------------------------------------------------------------------- */

typedef struct device_node {
    char type; /* 'c' or 'b' */
    unsigned major, minor;
} device_node;

/* Host node for a container path: below dev_root when it is under /dev. */
static char *host_device_path(const char *dev_root, const char *path)
{
    char *out = NULL;
    if (!strncmp(path, "/dev/", 5)) {
        if (asprintf(&out, "%s/%s", dev_root, path + 5) < 0)
            return NULL;
        return out;
    }
    return strdup(path);
}

/* 0 found, -ENOENT missing, other negative: not a device or stat failed (err set). */
static int stat_device(const char *host_path, device_node *out, obi_error **err)
{
    struct stat st;
    if (stat(host_path, &st) < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        return obi_error_set_errno(err, errno, "stat %s", host_path);
    }
    if (S_ISCHR(st.st_mode))
        out->type = 'c';
    else if (S_ISBLK(st.st_mode))
        out->type = 'b';
    else
        return obi_error_set(err, -EINVAL, "%s is not a device node", host_path);
    out->major = major(st.st_rdev);
    out->minor = minor(st.st_rdev);
    return 0;
}

static json_t *device_entry(const char *path, const device_node *node)
{
    char t[2] = {node->type, '\0'};
    return json_pack("{s:s, s:s, s:I, s:I, s:i, s:i, s:i}", "path", path, "type", t, "major",
                     (json_int_t)node->major, "minor", (json_int_t)node->minor, "fileMode",
                     GPU_DEVICE_MODE, "uid", 0, "gid", 0);
}

typedef struct device_context {
    const char *dev_root;
    json_t *rules;
    json_t *devices;
    char ***warnings;
} device_context;

static int add_rule(device_context *ctx, json_t *rule)
{
    return rule && json_array_append_new(ctx->rules, rule) == 0 ? 0 : -ENOMEM;
}

static int add_spec_devices(device_context *ctx, const obi_service *svc, obi_error **err)
{
    for (size_t i = 0; i < svc->device_count; i++) {
        const obi_service_device *dev = &svc->devices[i];
        cleanup_free char *host = host_device_path(ctx->dev_root, dev->path);
        if (!host)
            return obi_error_oom(err);
        device_node node;
        int r = stat_device(host, &node, err);
        if (r == -ENOENT) {
            if (ctx->warnings && strv_appendf(ctx->warnings,
                                              "services.%s.devices[%zu]: %s does not exist on "
                                              "this host; skipped",
                                              svc->name, i, host) < 0)
                return obi_error_oom(err);
            continue;
        }
        if (r < 0)
            return obi_error_prefix(err, r, "services.%s.devices[%zu]", svc->name, i);
        char access[4] = "";
        size_t n = 0;
        if (dev->read)
            access[n++] = 'r';
        if (dev->write)
            access[n++] = 'w';
        if (dev->mknod)
            access[n++] = 'm';
        access[n] = '\0';
        if (add_rule(ctx, obi_oci_device_rule(true, node.type, node.major, node.minor,
                                              n ? access : "rw")) < 0 ||
            json_array_append_new(ctx->devices, device_entry(dev->path, &node)) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

/* Adds /dev/<name> to the devices list when the host node exists; *node gets its numbers.
 * Returns 1 if added, 0 if missing. */
static int add_gpu_node(device_context *ctx, const char *name, device_node *node, bool warn,
                        obi_error **err)
{
    cleanup_free char *container_path = NULL;
    if (asprintf(&container_path, "/dev/%s", name) < 0)
        return obi_error_oom(err);
    cleanup_free char *host = host_device_path(ctx->dev_root, container_path);
    if (!host)
        return obi_error_oom(err);
    int r = stat_device(host, node, err);
    if (r == -ENOENT) {
        if (warn && ctx->warnings &&
            strv_appendf(ctx->warnings, "gpu: %s does not exist on this host; skipped", host) < 0)
            return obi_error_oom(err);
        return 0;
    }
    if (r < 0)
        return obi_error_prefix(err, r, "gpu");
    if (json_array_append_new(ctx->devices, device_entry(container_path, node)) < 0)
        return obi_error_oom(err);
    return 1;
}

#define DRM_MAJOR 226
#define NVIDIA_MAJOR 195

static int add_gpu_devices(device_context *ctx, const obi_service *svc, obi_error **err)
{
    const obi_gpu *gpu = &svc->gpu;
    device_node node;
    char name[64];
    int r;
    /* The vendor's fixed majors, then any whose number is dynamic (read from its node). */
    long majors[2] = {gpu->vendor == OBI_GPU_NVIDIA ? NVIDIA_MAJOR : DRM_MAJOR, -1};
    switch (gpu->vendor) {
    case OBI_GPU_NVIDIA:
        if ((r = add_gpu_node(ctx, "nvidiactl", &node, false, err)) < 0)
            return r;
        if ((r = add_gpu_node(ctx, "nvidia-uvm", &node, false, err)) < 0)
            return r;
        if (r == 1)
            majors[1] = node.major;
        if ((r = add_gpu_node(ctx, "nvidia-uvm-tools", &node, false, err)) < 0)
            return r;
        for (unsigned i = 0; i < gpu->count; i++) {
            snprintf(name, sizeof name, "nvidia%u", i);
            if ((r = add_gpu_node(ctx, name, &node, true, err)) < 0)
                return r;
        }
        break;
    case OBI_GPU_AMD:
        if ((r = add_gpu_node(ctx, "kfd", &node, true, err)) < 0)
            return r;
        if (r == 1)
            majors[1] = node.major;
        /* AMD also has the DRM render and card nodes */
        __attribute__((fallthrough));
    case OBI_GPU_INTEL:
        for (unsigned i = 0; i < gpu->count; i++) {
            snprintf(name, sizeof name, "dri/renderD%u", 128 + i);
            if ((r = add_gpu_node(ctx, name, &node, true, err)) < 0)
                return r;
            snprintf(name, sizeof name, "dri/card%u", i);
            if ((r = add_gpu_node(ctx, name, &node, true, err)) < 0)
                return r;
        }
        break;
    case OBI_GPU_OTHER:
        break;
    }
    for (size_t i = 0; i < 2; i++)
        if (majors[i] >= 0 && (i == 0 || majors[i] != majors[0]) &&
            add_rule(ctx, obi_oci_device_rule(true, 'c', majors[i], -1, "rwm")) < 0)
            return obi_error_oom(err);
    return 0;
}

/* The device cgroup rules (the defaults, then each spec device and GPU) and linux.devices. */
static int build_devices(const obi_service *svc, const obi_service_spec_options *opts,
                         const obi_oci_defaults *defaults, json_t **rules_out, json_t **devices_out,
                         char ***warnings, obi_error **err)
{
    cleanup_json json_t *rules = obi_oci_device_rules(defaults);
    cleanup_json json_t *devices = json_array();
    if (!rules || !devices)
        return obi_error_oom(err);
    device_context ctx = {opts->dev_root ? opts->dev_root : "/dev", rules, devices, warnings};
    int r = add_spec_devices(&ctx, svc, err);
    if (r == 0 && svc->has_gpu)
        r = add_gpu_devices(&ctx, svc, err);
    if (r < 0)
        return r;
    if (svc->privileged) {
        /* allow-all already covers every device; keep only the first rule */
        while (json_array_size(rules) > 1)
            json_array_remove(rules, 1);
    }
    *rules_out = steal_pointer(&rules);
    *devices_out = steal_pointer(&devices);
    return 0;
}

/* ---- linux ------------------------------------------------------------------------------- */

static int build_linux(const obi_service *svc, const obi_service_spec_options *opts,
                       const obi_oci_defaults *defaults, const obi_idmap *ids, json_t **out,
                       char ***warnings, obi_error **err)
{
    cleanup_json json_t *ns = obi_oci_namespaces(defaults);
    if (!ns)
        return obi_error_oom(err);
    json_t *rules = NULL, *devices = NULL;
    int r = build_devices(svc, opts, defaults, &rules, &devices, warnings, err);
    if (r < 0)
        return r;
    cleanup_json json_t *resources = json_pack("{s:o}", "devices", rules);
    cleanup_json json_t *devices_owned = devices;
    if (!resources)
        return obi_error_oom(err);
    if (svc->has_cpu && json_object_set_new(resources, "cpu",
                                            json_pack("{s:I, s:I}", "quota",
                                                      (json_int_t)(svc->cpu * CPU_PERIOD + 0.5),
                                                      "period", (json_int_t)CPU_PERIOD)) < 0)
        return obi_error_oom(err);
    if (svc->has_memory &&
        json_object_set_new(resources, "memory",
                            json_pack("{s:I}", "limit", (json_int_t)svc->memory)) < 0)
        return obi_error_oom(err);
    json_t *masked = obi_oci_masked_paths(defaults);
    json_t *readonly = obi_oci_readonly_paths(defaults);
    json_t *linux_obj = json_pack("{s:O, s:s, s:O, s:O, s:o, s:o}", "namespaces", ns,
                                  "rootfsPropagation", "private", "resources", resources, "devices",
                                  devices_owned, "maskedPaths", masked, "readonlyPaths", readonly);
    if (!linux_obj)
        return obi_error_oom(err);
    if (ids &&
        (json_object_set_new(linux_obj, "uidMappings",
                             json_pack("[{s:i, s:I, s:I}]", "containerID", 0, "hostID",
                                       (json_int_t)ids->uid, "size", (json_int_t)ids->count)) < 0 ||
         json_object_set_new(linux_obj, "gidMappings",
                             json_pack("[{s:i, s:I, s:I}]", "containerID", 0, "hostID",
                                       (json_int_t)ids->gid, "size", (json_int_t)ids->count)) <
             0)) {
        json_decref(linux_obj);
        return obi_error_oom(err);
    }
    *out = linux_obj;
    return 0;
}

/* ---- the whole config -------------------------------------------------------------------- */

int obi_service_spec_generate(const obi_deployment *deployment, const obi_service *svc,
                              const obi_service_spec_options *opts, json_t **out, char ***warnings,
                              obi_error **err)
{
    unsigned replica = opts->replica ? opts->replica : 1;
    if (replica > svc->replicas)
        return obi_error_set(err, -EINVAL, "services.%s: replica %u is out of range 1..%u",
                             svc->name, replica, svc->replicas);
    cleanup_free char *id = obi_service_container_id(svc->name, replica);
    if (!id)
        return obi_error_oom(err);
    char **collected = NULL;
    json_t *process = NULL, *linux_obj = NULL;
    obi_idmap ids_buf;
    const obi_idmap *ids = NULL;
    int r = replica_ids(svc, opts, &ids_buf, &ids, err);
    obi_oci_defaults defaults = replica_defaults(svc, opts, ids != NULL);
    if (r == 0)
        r = build_process(svc, opts, &process, err);
    if (r == 0)
        r = build_linux(svc, opts, &defaults, ids, &linux_obj, &collected, err);
    cleanup_json json_t *mounts = json_array();
    if (r == 0 && !mounts)
        r = obi_error_oom(err);
    if (r == 0 && obi_oci_add_standard_mounts(mounts, &defaults) < 0)
        r = obi_error_oom(err);
    if (r == 0)
        r = add_storage_mounts(mounts, deployment, svc, opts, replica, err);
    json_t *config = NULL;
    if (r == 0) {
        config =
            json_pack("{s:s, s:{s:s, s:b}, s:o, s:s, s:O, s:o}", "ociVersion", OBI_OCI_VERSION,
                      "root", "path", "rootfs", "readonly", 0, "process", process, "hostname",
                      svc->hostname ? svc->hostname : id, "mounts", mounts, "linux", linux_obj);
        process = linux_obj = NULL; /* json_pack "o" took them, even on failure */
        if (!config)
            r = obi_error_oom(err);
    }
    json_decref(process);
    json_decref(linux_obj);
    if (r < 0) {
        obi_strv_free(collected);
        return r;
    }
    *out = config;
    if (warnings)
        *warnings = collected;
    else
        obi_strv_free(collected);
    return 0;
}

/* ---- bundles ----------------------------------------------------------------------------- */

/* Opens data_dir/relative (relative: clean components below the data dir) one component at a
 * time with O_NOFOLLOW, so a symlink on the way is never followed: missing directories are made
 * 0700, existing ones this process owns are closed to 0700 (older versions made them 0755, and
 * whatever a replica leaves in a volume must stay out of other users' reach). The last
 * component is the volume itself: made 0755 and owned by uid:gid (*created set) when missing.
 * A minimal local walk; src/util's beneath helper will take its place. */
static int open_volume_dir(const char *data_dir, const char *relative, uid_t uid, gid_t gid,
                           bool *created, int *fd_out, obi_error **err)
{
    cleanup_close int fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "data dir %s", data_dir);
    cleanup_free char *copy = strdup(relative);
    if (!copy)
        return obi_error_oom(err);
    *created = false;
    char *save = NULL;
    for (char *name = strtok_r(copy, "/", &save); name; name = strtok_r(NULL, "/", &save)) {
        bool last = !save || !*save;
        const char *shown = relative; /* the walked prefix, for messages */
        int prefix_len = (int)(name - copy + (ptrdiff_t)strlen(name));
        bool made = mkdirat(fd, name, last ? 0755 : 0700) == 0;
        if (!made && errno != EEXIST)
            return obi_error_set_errno(err, errno, "mkdir %s/%.*s", data_dir, prefix_len, shown);
        int next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            int e = errno;
            struct stat link;
            if (fstatat(fd, name, &link, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(link.st_mode))
                return obi_error_set(err, -ELOOP, "%s/%.*s: is a symlink, not followed", data_dir,
                                     prefix_len, shown);
            return obi_error_set_errno(err, e, "%s/%.*s", data_dir, prefix_len, shown);
        }
        close(fd);
        fd = next;
        struct stat st;
        if (fstat(fd, &st) < 0)
            return obi_error_set_errno(err, errno, "%s/%.*s", data_dir, prefix_len, shown);
        if (last && made) {
            if ((st.st_uid != uid || st.st_gid != gid) && fchown(fd, uid, gid) < 0)
                return obi_error_set_errno(err, errno, "chown %s/%s", data_dir, relative);
            if (fchmod(fd, 0755) < 0) /* mkdirat's mode went through the umask */
                return obi_error_set_errno(err, errno, "chmod %s/%s", data_dir, relative);
            *created = true;
        } else if (!last && st.st_uid == geteuid() && (st.st_mode & 07777) != 0700 &&
                   fchmod(fd, 0700) < 0) {
            return obi_error_set_errno(err, errno, "chmod 0700 %s/%.*s", data_dir, prefix_len,
                                       shown);
        }
    }
    *fd_out = steal_fd(&fd);
    return 0;
}

/* Named and anonymous volumes are made (owned by the replica's root: ids, or this process for
 * a privileged replica); bind sources and s3 mount paths must exist. A volume that exists but
 * belongs to someone else (made before replicas had a user namespace) is a warning: the
 * replica's root cannot write it until it is moved into the range. */
static int prepare_storage(const obi_deployment *d, const obi_service *svc,
                           const obi_service_spec_options *opts, unsigned replica,
                           const obi_idmap *ids, char ***warnings, obi_error **err)
{
    cleanup_free char *owned_data = NULL;
    const char *data = default_data_dir_or(opts->data_dir, &owned_data);
    if (!data)
        return obi_error_oom(err);
    uid_t uid = ids ? ids->uid : geteuid();
    gid_t gid = ids ? ids->gid : getegid();
    for (size_t i = 0; i < svc->storage_count; i++) {
        obi_storage_type type = svc->storage[i].type;
        int r;
        if ((type == OBI_STORAGE_NAMED || type == OBI_STORAGE_ANONYMOUS) &&
            (r = obi_mkdir_p(data, 0700, err)) < 0)
            return r;
    }
    for (size_t i = 0; i < svc->storage_count; i++) {
        const obi_storage *st = &svc->storage[i];
        if (st->type == OBI_STORAGE_TMPFS)
            continue;
        cleanup_free char *source = obi_service_storage_source(d, svc, replica, i, data);
        if (!source)
            return obi_error_oom(err);
        int r = 0;
        if (st->type == OBI_STORAGE_NAMED || st->type == OBI_STORAGE_ANONYMOUS) {
            /* source is DATA/<relative>, made by obi_service_storage_source */
            const char *relative = source + strlen(data) + 1;
            cleanup_close int fd = -1;
            bool created = false;
            struct stat info;
            r = open_volume_dir(data, relative, uid, gid, &created, &fd, err);
            if (r == 0 && !created && ids && fstat(fd, &info) == 0 && info.st_uid != uid &&
                strv_appendf(warnings,
                             "services.%s.storage[%zu]: volume %s belongs to host uid %u, not to "
                             "the replica's root (host uid %u), which cannot write it; move it "
                             "into the range with `chown -R %u:%u %s`",
                             svc->name, i, source, (unsigned)info.st_uid, (unsigned)uid,
                             (unsigned)uid, (unsigned)gid, source) < 0)
                r = obi_error_oom(err);
        } else if (access(source, F_OK) < 0) {
            r = obi_error_set_errno(err, errno, "%s source %s",
                                    st->type == OBI_STORAGE_S3 ? "s3 mount" : "bind", source);
        }
        if (r < 0)
            return obi_error_prefix(err, r, "services.%s.storage[%zu]", svc->name, i);
    }
    return 0;
}

/* True when path is the root of a mount. statx knows (an idmapped bind of a directory on the
 * same filesystem has the same st_dev); kernels before 5.8 compare devices with the parent. */
static bool is_mount_point(const char *path)
{
    struct statx stx;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE, &stx) < 0 || !S_ISDIR(stx.stx_mode))
        return false;
    if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
        return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
    struct stat st, parent;
    cleanup_free char *up = obi_path_join(path, "..");
    return up && lstat(path, &st) == 0 && stat(up, &parent) == 0 && st.st_dev != parent.st_dev;
}

/* An on-disk id as the replica's namespace shows it on the host (unmapped ids stay). */
static unsigned shifted(unsigned id, unsigned base, const obi_idmap *ids)
{
    return ids && id < ids->count ? base + id : id;
}

/* BUNDLE/upper, made with the owner and mode of the lower layer's top directory (the overlay's
 * root takes the upper's), shifted into the replica's range. Kept when it exists. */
static int make_upper(const char *upper, const struct stat *top, const obi_idmap *ids,
                      obi_error **err)
{
    if (mkdir(upper, 0700) < 0)
        return errno == EEXIST ? 0 : obi_error_set_errno(err, errno, "mkdir %s", upper);
    cleanup_close int fd = open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 ||
        fchown(fd, shifted(top->st_uid, ids ? ids->uid : 0, ids),
               shifted(top->st_gid, ids ? ids->gid : 0, ids)) < 0 ||
        fchmod(fd, top->st_mode & 07777) < 0)
        return obi_error_set_errno(err, errno, "set up %s", upper);
    return 0;
}

/* Mounts overlay(lower = source, upper/work in the bundle) on BUNDLE/rootfs unless mounted. With
 * ids the lower layer is an idmapped view of source at BUNDLE/lower, detached again once the
 * overlay holds its own reference to it: the source keeps the image's ids on disk. */
static int mount_overlay(const char *bundle_dir, const char *rootfs, const char *source,
                         const obi_idmap *ids, obi_error **err)
{
    if (is_mount_point(rootfs))
        return 0; /* `up` again: the replica keeps its writable layer */
    cleanup_free char *upper = obi_path_join(bundle_dir, "upper");
    cleanup_free char *work = obi_path_join(bundle_dir, "work");
    cleanup_free char *lower_view = obi_path_join(bundle_dir, "lower");
    cleanup_free char *lower = realpath(source, NULL);
    if (!upper || !work || !lower_view)
        return obi_error_oom(err);
    struct stat top;
    if (!lower || stat(lower, &top) < 0)
        return obi_error_set_errno(err, errno, "rootfs %s", source);
    int r;
    if ((r = make_upper(upper, &top, ids, err)) < 0 || (r = obi_mkdir_p(work, 0700, err)) < 0)
        return r;
    if (strpbrk(lower, ",:") || strpbrk(upper, ",:") || strpbrk(work, ",:"))
        return obi_error_set(err, -EINVAL, "overlay paths may not contain ',' or ':' (%s)", lower);
    const char *lowerdir = lower;
    if (ids) {
        if (is_mount_point(lower_view) && umount2(lower_view, MNT_DETACH) < 0)
            return obi_error_set_errno(err, errno, "unmount %s", lower_view);
        if (mkdir(lower_view, 0700) < 0 && errno != EEXIST)
            return obi_error_set_errno(err, errno, "mkdir %s", lower_view);
        if ((r = obi_idmap_bind(lower, lower_view, ids, err)) < 0)
            return r;
        lowerdir = lower_view;
    }
    cleanup_free char *options = NULL;
    if (asprintf(&options, "lowerdir=%s,upperdir=%s,workdir=%s", lowerdir, upper, work) < 0)
        r = obi_error_oom(err);
    else if (mount("overlay", rootfs, "overlay", MS_NODEV, options) < 0)
        r = obi_error_set_errno(err, errno, "mount overlay on %s (lower %s%s)", rootfs, lower,
                                ids ? ", idmapped" : "");
    if (ids) {
        if (umount2(lower_view, MNT_DETACH) < 0 && r == 0)
            r = obi_error_set_errno(err, errno, "unmount %s", lower_view);
        (void)rmdir(lower_view);
    }
    return r;
}

int obi_service_bundle_remove(const char *bundle_dir, obi_error **err)
{
    static const char *const mounts[] = {"rootfs", "lower"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(mounts); i++) {
        cleanup_free char *path = obi_path_join(bundle_dir, mounts[i]);
        if (!path)
            return obi_error_oom(err);
        if (is_mount_point(path) && umount2(path, MNT_DETACH) < 0)
            return obi_error_set_errno(err, errno, "unmount %s", path);
    }
    return obi_rm_rf(bundle_dir, err);
}

int obi_service_replica_dir(const char *path, const obi_idmap *ids, obi_error **err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "stat %s", path);
    if (st.st_gid != ids->gid && fchown(fd, (uid_t)-1, ids->gid) < 0)
        return obi_error_set_errno(err, errno, "chgrp %u %s", (unsigned)ids->gid, path);
    if ((st.st_mode & 07777) != 0710 && fchmod(fd, 0710) < 0)
        return obi_error_set_errno(err, errno, "chmod 0710 %s", path);
    return 0;
}

/* Whether the replica's root can reach path. A child takes its host ids (no supplementary
 * groups, no capabilities in the host's namespace: what runc's init has when it looks the
 * rootfs up) and searches each directory from / down to path, so the kernel answers, ACLs
 * included; the first directory it cannot search is named. A caller that cannot take those ids
 * (not root, hence no user namespace either) does not check. */
static int check_reachable(const char *path, const obi_idmap *ids, obi_error **err)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (path[0] != '/' || len >= sizeof buf)
        return 0;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int read_end = fds[0];
    cleanup_close int write_end = fds[1];
    pid_t pid = fork();
    if (pid < 0)
        return obi_error_set_errno(err, errno, "fork");
    if (pid == 0) {
        int reply[2] = {-1, 0}; /* the length of the prefix that failed (-1: not checked), errno */
        if (setgroups(0, NULL) == 0 && setresgid(ids->gid, ids->gid, ids->gid) == 0 &&
            setresuid(ids->uid, ids->uid, ids->uid) == 0) {
            reply[0] = 0;
            memcpy(buf, path, len + 1); /* the child calls only async-signal-safe functions */
            for (size_t i = 1; i <= len; i++) {
                if (buf[i] != '/' && buf[i] != '\0')
                    continue;
                char saved = buf[i];
                buf[i] = '\0';
                int failed = access(buf, X_OK) < 0;
                buf[i] = saved;
                if (failed) {
                    reply[0] = (int)i;
                    reply[1] = errno;
                    break;
                }
            }
        }
        (void)!write(write_end, reply, sizeof reply);
        _exit(0);
    }
    close(steal_fd(&write_end));
    int reply[2] = {-1, 0};
    ssize_t n = obi_read_full(read_end, reply, sizeof reply);
    int status;
    obi_wait(pid, &status, NULL);
    if (n != (ssize_t)sizeof reply || reply[0] <= 0)
        return 0;
    snprintf(buf, sizeof buf, "%.*s", reply[0], path);
    struct stat st;
    char detail[96] = "";
    if (stat(buf, &st) == 0)
        snprintf(detail, sizeof detail, " (mode %04o, owner %u:%u)", st.st_mode & 07777,
                 (unsigned)st.st_uid, (unsigned)st.st_gid);
    return obi_error_set(err, -EACCES,
                         "the replica's root (host uid %u, gid %u) cannot reach its rootfs %s: "
                         "%s%s: %s; every directory on the way must be searchable by it (chmod "
                         "o+x, or keep the data dir below directories that are)",
                         (unsigned)ids->uid, (unsigned)ids->gid, path, buf, detail,
                         strerror(reply[1]));
}

int obi_service_bundle_write(const obi_deployment *deployment, const obi_service *svc,
                             const obi_service_spec_options *opts, const char *bundle_dir,
                             const char *rootfs_source, obi_bundle_rootfs_mode mode,
                             char ***warnings, obi_error **err)
{
    unsigned replica = opts->replica ? opts->replica : 1;
    obi_idmap ids_buf;
    const obi_idmap *ids = NULL;
    int r = replica_ids(svc, opts, &ids_buf, &ids, err);
    if (r < 0)
        return r;
    obi_service_spec_options resolved = *opts;
    resolved.ids = ids ? ids : opts->ids; /* looked up once */
    cleanup_json json_t *config = NULL;
    char **collected = NULL;
    if ((r = obi_service_spec_generate(deployment, svc, &resolved, &config, &collected, err)) < 0)
        return r;
    cleanup_strv char **owned_warnings = collected;
    if ((r = prepare_storage(deployment, svc, opts, replica, ids, &owned_warnings, err)) < 0)
        return r;
    cleanup_free char *source_abs = NULL;
    if (rootfs_source && mode == OBI_BUNDLE_ROOTFS_PATH) {
        if (!(source_abs = realpath(rootfs_source, NULL)))
            return obi_error_set_errno(err, errno, "rootfs %s", rootfs_source);
        struct stat top;
        if (ids && stat(source_abs, &top) == 0 &&
            (top.st_uid < ids->uid || top.st_uid - ids->uid >= ids->count) &&
            strv_appendf(&owned_warnings,
                         "rootfs %s belongs to host uid %u, outside the replicas' range (%u..): "
                         "its root sees it as nobody's and cannot write it or make mount points "
                         "in it; the overlay rootfs mode shifts its ids",
                         source_abs, (unsigned)top.st_uid, (unsigned)ids->uid) < 0)
            return obi_error_oom(err);
        if (json_object_set_new(json_object_get(config, "root"), "path", json_string(source_abs)) <
            0)
            return obi_error_oom(err);
    }
    if ((r = obi_mkdir_p(bundle_dir, 0700, err)) < 0)
        return r;
    if (ids && (r = obi_service_replica_dir(bundle_dir, ids, err)) < 0)
        return r;
    cleanup_free char *rootfs = obi_path_join(bundle_dir, "rootfs");
    cleanup_free char *config_path = obi_path_join(bundle_dir, "config.json");
    if (!rootfs || !config_path)
        return obi_error_oom(err);
    struct stat st;
    if (lstat(rootfs, &st) == 0) {
        if (S_ISLNK(st.st_mode) && unlink(rootfs) < 0)
            return obi_error_set_errno(err, errno, "unlink %s", rootfs);
    } else if (errno != ENOENT) {
        return obi_error_set_errno(err, errno, "lstat %s", rootfs);
    }
    if (rootfs_source && mode == OBI_BUNDLE_ROOTFS_SYMLINK) {
        if (symlink(rootfs_source, rootfs) < 0)
            return obi_error_set_errno(err, errno, "symlink %s -> %s", rootfs, rootfs_source);
    } else if (!(rootfs_source && mode == OBI_BUNDLE_ROOTFS_PATH) && mkdir(rootfs, 0755) < 0 &&
               errno != EEXIST) {
        return obi_error_set_errno(err, errno, "mkdir %s", rootfs);
    }
    if (rootfs_source && mode == OBI_BUNDLE_ROOTFS_OVERLAY &&
        (r = mount_overlay(bundle_dir, rootfs, rootfs_source, ids, err)) < 0)
        return r;
    /* a symlinked rootfs is resolved by the runtime (crun), not checked here */
    if (ids && !(rootfs_source && mode == OBI_BUNDLE_ROOTFS_SYMLINK) &&
        (r = check_reachable(source_abs ? source_abs : rootfs, ids, err)) < 0)
        return r;
    cleanup_free char *text = json_dumps(config, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return obi_error_oom(err);
    if ((r = obi_write_file_atomic(config_path, text, strlen(text), 0600, err)) < 0)
        return r;
    if (warnings)
        *warnings = steal_pointer(&owned_warnings);
    return 0;
}
