/*
 * Service spec generation: a parsed service (deployment.h) + replica -> OCI runtime config,
 * following spec/service.md section by section (process, env layers, capabilities, rlimits,
 * mounts, linux: namespaces, resources, device cgroup rules, devices, masked and read-only paths,
 * sysctls, cgroupsPath) and zlayer's bundle builder where the document uses its keys (the
 * default RLIMIT_NOFILE, device access defaults, dns, GPU sharing: docs/service.md).
 * The OCI runtime defaults (namespaces, standard mounts, masks, default device rules,
 * capability names and sets) come from oci_defaults.h's tables, shared with builds;
 * replica_defaults says what a replica takes of them. Tables here hold the rest (GPU env and
 * node names); the code assembles them. Nothing here writes to the disk: service_bundle.c
 * writes the bundle around the config (volumes, rootfs, config.json).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/number.h"
#include "ocibuild/oci_defaults.h"
#include "ocibuild/process.h"
#include "ocibuild/service_spec.h"
#include "ocibuild/signal_name.h"
#include "ocibuild/spec.h"
#include "service_internal.h"

#define CPU_PERIOD 100000
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define GPU_DEVICE_MODE 0666
#define PASSWD_MAX_BYTES (4u << 20)

/* ---- small helpers ----------------------------------------------------------------------- */

int obi_service_warnf(char ***warnings, const char *fmt, ...)
{
    size_t n = 0;
    while (*warnings && (*warnings)[n])
        n++;
    char **grown = realloc(*warnings, (n + 2) * sizeof *grown);
    if (!grown)
        return -ENOMEM;
    *warnings = grown;
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
    if (r < 0)
        return r;
    /* sharing, as zlayer's bundle builder sets it: MPS names its pipe and log dirs (bound in at
     * the same paths, see add_gpu_sharing_mounts); a time slice is the one device the replica
     * sees */
    if (gpu->sharing == OBI_GPU_SHARING_MPS &&
        (env_setf(env, "CUDA_MPS_PIPE_DIRECTORY", "%s", gpu->mps_pipe_dir) < 0 ||
         env_setf(env, "CUDA_MPS_LOG_DIRECTORY", "%s", gpu->mps_log_dir) < 0))
        return -ENOMEM;
    if (gpu->sharing == OBI_GPU_SHARING_TIME_SLICE && gpu->has_time_slice_index &&
        env_setf(env, "CUDA_VISIBLE_DEVICES", "%u", gpu->time_slice_index) < 0)
        return -ENOMEM;
    if (!gpu->distributed)
        return 0;
    if (env_setf(env, "MASTER_PORT", "%u", gpu->master_port) < 0 ||
        env_setf(env, "MASTER_ADDR", "%s", svc->name) < 0 || env_setf(env, "WORLD_SIZE", "1") < 0 ||
        env_setf(env, "RANK", "0") < 0 || env_setf(env, "LOCAL_RANK", "0") < 0)
        return -ENOMEM;
    if (gpu->backend != OBI_GPU_BACKEND_MPI &&
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

/* init_container: tini ("--" ends its options) before the replica's command. */
static json_t *init_args(const obi_service *svc)
{
    return svc->init_container ? json_pack("[s, s]", OBI_SERVICE_INIT_TARGET, "--") : json_array();
}

static json_t *build_args(const obi_service *svc, const obi_service_spec_options *opts)
{
    json_t *args = init_args(svc);
    if (!args)
        return NULL;
    if (!strv_empty(opts->args_override)) {
        json_t *override = json_strv(opts->args_override);
        if (!override || json_array_extend(args, override) < 0) {
            json_decref(override);
            json_decref(args);
            return NULL;
        }
        json_decref(override);
        return args;
    }
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
    /* cap_drop takes capabilities out of whichever set the service gets */
    for (size_t i = 0; svc->cap_drop && svc->cap_drop[i]; i++)
        for (size_t j = json_array_size(set); j-- > 0;)
            if (!strcmp(json_string_value(json_array_get(set, j)), svc->cap_drop[i]))
                json_array_remove(set, j);
    json_t *caps = obi_oci_capabilities(set);
    if (!caps)
        return obi_error_oom(err);
    *out = caps;
    return 0;
}

bool obi_service_uses_userns(const obi_service *svc)
{
    return !svc->privileged && !svc->userns_host;
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

int obi_service_replica_ids(const obi_service *svc, const obi_service_spec_options *opts,
                            obi_idmap *buf, const obi_idmap **out, obi_error **err)
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

#define OBI_RLIMIT_COUNT 16

/* Unlimited (-1 in the document) as the largest number JSON carries here: the runtimes read an
 * unsigned 64-bit value, so -1 would be refused, and jansson has no integer above INT64_MAX. */
static json_int_t rlimit_value(uint64_t value)
{
    return value > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX : (json_int_t)value;
}

/* process.rlimits: RLIMIT_NOFILE 1024/1024 as zlayer's bundle builder sets it (the OCI runtime
 * spec's default), then each of ulimits in document order, replacing an entry of its type. */
static json_t *build_rlimits(const obi_service *svc)
{
    static const obi_ulimit default_nofile = {"RLIMIT_NOFILE", 1024, 1024};
    json_t *rlimits = json_array();
    bool nofile_named = false;
    for (size_t i = 0; i < svc->ulimit_count; i++)
        nofile_named |= !strcmp(svc->ulimits[i].type, default_nofile.type);
    const obi_ulimit *entries[1 + OBI_RLIMIT_COUNT];
    size_t n = 0;
    if (!nofile_named)
        entries[n++] = &default_nofile;
    for (size_t i = 0; i < svc->ulimit_count && n < OBI_ARRAY_SIZE(entries); i++)
        entries[n++] = &svc->ulimits[i];
    for (size_t i = 0; rlimits && i < n; i++) {
        json_t *entry =
            json_pack("{s:s, s:I, s:I}", "type", entries[i]->type, "hard",
                      rlimit_value(entries[i]->hard), "soft", rlimit_value(entries[i]->soft));
        if (!entry || json_array_append_new(rlimits, entry) < 0) {
            json_decref(rlimits);
            return NULL;
        }
    }
    return rlimits;
}

/* extra_groups: process.user.additionalGids, gids as written, names from the rootfs's
 * /etc/group (inside the rootfs, as the image's User is). *out NULL: none. */
static int build_extra_groups(const obi_service *svc, const obi_service_spec_options *opts,
                              json_t **out, obi_error **err)
{
    *out = NULL;
    if (!svc->extra_groups)
        return 0;
    cleanup_json json_t *gids = json_array();
    if (!gids)
        return obi_error_oom(err);
    for (size_t i = 0; svc->extra_groups[i]; i++) {
        unsigned gid = 0;
        int r = 0;
        if (!parse_id(svc->extra_groups[i], &gid) &&
            (r = lookup_name(opts->rootfs, "etc/group", svc->extra_groups[i], &gid, NULL, err)) < 0)
            return obi_error_prefix(err, r, "services.%s.extra_groups[%zu]", svc->name, i);
        if (json_array_append_new(gids, json_integer(gid)) < 0)
            return obi_error_oom(err);
    }
    *out = steal_pointer(&gids);
    return 0;
}

static int build_process(const obi_service *svc, const obi_service_spec_options *opts, json_t **out,
                         obi_error **err)
{
    unsigned uid = 0, gid = 0;
    int r;
    /* user: the service's, else the image's */
    const char *user = svc->user                                                ? svc->user
                       : opts->image && opts->image->user && *opts->image->user ? opts->image->user
                                                                                : NULL;
    if (user && (r = obi_resolve_user(user, opts->rootfs, &uid, &gid, err)) < 0)
        return svc->user ? obi_error_prefix(err, r, "services.%s.user", svc->name) : r;
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
    bool no_new_privileges = svc->has_no_new_privileges
                                 ? svc->no_new_privileges
                                 : !svc->privileged && !svc->has_capabilities;
    json_t *groups = NULL;
    if ((r = build_extra_groups(svc, opts, &groups, err)) < 0) {
        json_decref(args);
        json_decref(caps);
        json_decref(env);
        return r;
    }
    json_t *rlimits = build_rlimits(svc);
    /* "o" takes the references, also when packing fails */
    json_t *process =
        json_pack("{s:b, s:{s:I, s:I}, s:o, s:o, s:s, s:o, s:o, s:b}", "terminal", 0, "user", "uid",
                  (json_int_t)uid, "gid", (json_int_t)gid, "args", args, "env", env, "cwd", cwd,
                  "capabilities", caps, "rlimits", rlimits, "noNewPrivileges", no_new_privileges);
    if (!process)
        return obi_error_oom(err);
    if (groups &&
        json_object_set_new(json_object_get(process, "user"), "additionalGids", groups) < 0) {
        json_decref(process);
        return obi_error_oom(err);
    }
    if (svc->has_oom_score_adj &&
        json_object_set_new(process, "oomScoreAdj", json_integer(svc->oom_score_adj)) < 0) {
        json_decref(process);
        return obi_error_oom(err);
    }
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
        .network_namespace_path = svc->host_network ? NULL : opts->netns_path,
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

/* The deployment network's names: the bundle's hosts file (service_bundle.c writes
 * opts->hosts there), bound read-only over /etc/hosts, relative to the bundle like dns. */
static int add_hosts_mount(json_t *mounts, const obi_service_spec_options *opts, obi_error **err)
{
    static const char *const options[] = {"rbind", "ro", "nosuid", "nodev", "noexec", NULL};
    if (!opts->hosts)
        return 0;
    return obi_oci_add_mount(mounts, "/etc/hosts", "none", OBI_SERVICE_HOSTS, options) < 0
               ? obi_error_oom(err)
               : 0;
}

/* init_container: the host's static tini bound read-only at OBI_SERVICE_INIT_TARGET (on the
 * replica's /dev tmpfs, so the image is not touched; Docker binds its docker-init the same
 * way). service_bundle.c checks that the host has it. */
static int add_init_mount(json_t *mounts, const obi_service *svc, obi_error **err)
{
    static const char *const options[] = {"bind", "ro", "nosuid", "nodev", NULL};
    if (!svc->init_container)
        return 0;
    return obi_oci_add_mount(mounts, OBI_SERVICE_INIT_TARGET, "none", OBI_SERVICE_INIT_PATH,
                             options) < 0
               ? obi_error_oom(err)
               : 0;
}

/* dns: the bundle's resolv.conf (written by service_bundle.c, obi_service_resolv_conf), bound
 * read-only over /etc/resolv.conf. The source is relative to the bundle, as the runtime
 * resolves a bind source, so the config is the same wherever the bundle lives. Not with the
 * host's network: the replica uses the host's resolver config then (zlayer does the same). */
static int add_dns_mount(json_t *mounts, const obi_service *svc, obi_error **err)
{
    static const char *const options[] = {"rbind", "ro", "nosuid", "nodev", "noexec", NULL};
    if (!svc->dns || svc->host_network)
        return 0;
    return obi_oci_add_mount(mounts, "/etc/resolv.conf", "none", OBI_SERVICE_RESOLV_CONF, options) <
                   0
               ? obi_error_oom(err)
               : 0;
}

bool obi_service_has_resolv_conf(const obi_service *svc)
{
    return svc->dns && !svc->host_network;
}

char *obi_service_resolv_conf(const obi_service *svc)
{
    obi_buf text = OBI_BUF_INIT;
    for (size_t i = 0; svc->dns && svc->dns[i]; i++)
        if (obi_buf_appendf(&text, "nameserver %s\n", svc->dns[i]) < 0) {
            obi_buf_free(&text);
            return NULL;
        }
    if (obi_buf_appendf(&text, "options edns0\n") < 0) {
        obi_buf_free(&text);
        return NULL;
    }
    return obi_buf_steal(&text);
}

/* What GPU sharing binds in (zlayer's bundle builder): MPS's pipe and log directories at their
 * host paths, read-write (the CUDA runtime talks to the MPS daemon through the pipe); a
 * time-slicing config read-only at /etc/nvidia/gpu-time-slicing.yaml. Each must exist as what
 * it is on the host, or the error names the key. */
static int add_gpu_sharing_mounts(json_t *mounts, const obi_service *svc, obi_error **err)
{
    const obi_gpu *gpu = &svc->gpu;
    static const char *const rw[] = {"rbind", "rw", "nosuid", "nodev", NULL};
    static const char *const ro[] = {"rbind", "ro", "nosuid", "nodev", NULL};
    struct stat st;
    if (!svc->has_gpu)
        return 0;
    if (gpu->sharing == OBI_GPU_SHARING_MPS) {
        const char *dirs[2][2] = {{"mps_pipe_dir", gpu->mps_pipe_dir},
                                  {"mps_log_dir", gpu->mps_log_dir}};
        for (size_t i = 0; i < 2; i++) {
            if (stat(dirs[i][1], &st) < 0 || !S_ISDIR(st.st_mode))
                return obi_error_set(err, -ENOENT,
                                     "services.%s.resources.gpu.%s: MPS directory %s does not "
                                     "exist; is nvidia-cuda-mps-control running?",
                                     svc->name, dirs[i][0], dirs[i][1]);
            if (obi_oci_add_mount(mounts, dirs[i][1], "none", dirs[i][1], rw) < 0)
                return obi_error_oom(err);
        }
    }
    if (gpu->sharing == OBI_GPU_SHARING_TIME_SLICE && gpu->time_slicing_config_path) {
        if (stat(gpu->time_slicing_config_path, &st) < 0 || !S_ISREG(st.st_mode))
            return obi_error_set(err, -ENOENT,
                                 "services.%s.resources.gpu.time_slicing_config_path: %s is not "
                                 "a regular file on this host",
                                 svc->name, gpu->time_slicing_config_path);
        if (obi_oci_add_mount(mounts, "/etc/nvidia/gpu-time-slicing.yaml", "none",
                              gpu->time_slicing_config_path, ro) < 0)
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
        /* zeroed: filled on success, and the analyzer cannot see that errors return < 0 */
        device_node node = {0};
        int r = stat_device(host, &node, err);
        if (r == -ENOENT) {
            if (ctx->warnings && obi_service_warnf(ctx->warnings,
                                                   "services.%s.devices[%zu]: %s does not exist on "
                                                   "this host; skipped",
                                                   svc->name, i, host) < 0)
                return obi_error_oom(err);
            continue;
        }
        if (r < 0)
            return obi_error_prefix(err, r, "services.%s.devices[%zu]", svc->name, i);
        /* read and write default to true (zlayer's DeviceSpec), so {path, mknod: true} is
         * "rwm"; a device with none of the three is listed but not allowed */
        char access[4] = "";
        size_t n = 0;
        if (dev->read)
            access[n++] = 'r';
        if (dev->write)
            access[n++] = 'w';
        if (dev->mknod)
            access[n++] = 'm';
        access[n] = '\0';
        if ((n && add_rule(ctx, obi_oci_device_rule(true, node.type, node.major, node.minor,
                                                    access)) < 0) ||
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
            obi_service_warnf(ctx->warnings, "gpu: %s does not exist on this host; skipped", host) <
                0)
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
    /* zeroed: filled on success, and the analyzer cannot see that errors return < 0 */
    device_node node = {0};
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

/* Sets key in the object at obj[section] (made when missing). */
static int set_in(json_t *obj, const char *section, const char *key, json_t *value)
{
    json_t *sub = json_object_get(obj, section);
    if (!value)
        return -ENOMEM;
    if (!sub) {
        sub = json_object();
        if (!sub || json_object_set_new(obj, section, sub) < 0) {
            json_decref(value);
            return -ENOMEM;
        }
    }
    return json_object_set_new(sub, key, value) < 0 ? -ENOMEM : 0;
}

/* linux.resources from resources: cpu (quota/period, shares, cpuset), memory (limit, swap,
 * reservation, swappiness, disableOOMKiller), pids, blockIO weight. */
static int add_resource_limits(json_t *resources, const obi_service *svc)
{
    int r = 0;
    if (svc->has_cpu) {
        r = set_in(resources, "cpu", "quota",
                   json_integer((json_int_t)(svc->cpu * CPU_PERIOD + 0.5)));
        if (r == 0)
            r = set_in(resources, "cpu", "period", json_integer(CPU_PERIOD));
    }
    if (r == 0 && svc->has_cpu_shares)
        r = set_in(resources, "cpu", "shares", json_integer(svc->cpu_shares));
    if (r == 0 && svc->cpuset)
        r = set_in(resources, "cpu", "cpus", json_string(svc->cpuset));
    if (r == 0 && svc->has_memory)
        r = set_in(resources, "memory", "limit", json_integer((json_int_t)svc->memory));
    if (r == 0 && svc->has_memory_swap)
        r = set_in(resources, "memory", "swap", json_integer(svc->memory_swap));
    if (r == 0 && svc->has_memory_reservation)
        r = set_in(resources, "memory", "reservation",
                   json_integer((json_int_t)svc->memory_reservation));
    if (r == 0 && svc->has_memory_swappiness)
        r = set_in(resources, "memory", "swappiness", json_integer(svc->memory_swappiness));
    if (r == 0 && svc->has_oom_kill_disable)
        r = set_in(resources, "memory", "disableOOMKiller", json_boolean(svc->oom_kill_disable));
    if (r == 0 && svc->has_pids_limit)
        r = set_in(resources, "pids", "limit", json_integer(svc->pids_limit));
    if (r == 0 && svc->has_blkio_weight)
        r = set_in(resources, "blockIO", "weight", json_integer(svc->blkio_weight));
    return r;
}

/* linux.sysctl (sysctls) and linux.cgroupsPath (cgroup_parent/<container id>). */
static int add_linux_extras(json_t *linux_obj, const obi_service *svc, const char *id)
{
    if (svc->sysctl_count) {
        json_t *sysctl = json_object();
        if (!sysctl || json_object_set_new(linux_obj, "sysctl", sysctl) < 0)
            return -ENOMEM;
        for (size_t i = 0; i < svc->sysctl_count; i++)
            if (json_object_set_new(sysctl, svc->sysctls[i].name,
                                    json_string(svc->sysctls[i].value)) < 0)
                return -ENOMEM;
    }
    if (svc->cgroup_parent) {
        cleanup_free char *path = NULL;
        if (asprintf(&path, "%s/%s", strcmp(svc->cgroup_parent, "/") ? svc->cgroup_parent : "",
                     id) < 0 ||
            json_object_set_new(linux_obj, "cgroupsPath", json_string(path)) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* pid_mode/ipc_mode host: no new namespace of that type (the replica stays in the host's). */
static void drop_namespace(json_t *ns, const char *type)
{
    size_t i;
    json_t *entry;
    json_array_foreach(ns, i,
                       entry) if (!strcmp(json_string_value(json_object_get(entry, "type")), type))
    {
        json_array_remove(ns, i);
        return;
    }
}

static int build_linux(const obi_service *svc, const obi_service_spec_options *opts,
                       const obi_oci_defaults *defaults, const obi_idmap *ids, json_t **out,
                       char ***warnings, obi_error **err)
{
    cleanup_json json_t *ns = obi_oci_namespaces(defaults);
    if (!ns)
        return obi_error_oom(err);
    if (svc->pid_mode == OBI_NAMESPACE_HOST)
        drop_namespace(ns, "pid");
    if (svc->ipc_mode == OBI_NAMESPACE_HOST)
        drop_namespace(ns, "ipc");
    json_t *rules = NULL, *devices = NULL;
    int r = build_devices(svc, opts, defaults, &rules, &devices, warnings, err);
    if (r < 0)
        return r;
    cleanup_json json_t *resources = json_pack("{s:o}", "devices", rules);
    cleanup_json json_t *devices_owned = devices;
    if (!resources)
        return obi_error_oom(err);
    if (add_resource_limits(resources, svc) < 0)
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
    cleanup_free char *id = obi_service_container_id(svc->name, opts->replica ? opts->replica : 1);
    if (!id || add_linux_extras(linux_obj, svc, id) < 0) {
        json_decref(linux_obj);
        return obi_error_oom(err);
    }
    *out = linux_obj;
    return 0;
}

/* ---- the whole config -------------------------------------------------------------------- */

/* The image a service names, for messages: its registry reference or oci:PATH[:TAG]. NULL:
 * out of memory. */
static char *image_text(const obi_service *svc)
{
    char *text = NULL;
    if (svc->image_kind == OBI_IMAGE_REGISTRY)
        return strdup(svc->image_ref->canonical);
    if (asprintf(&text, "oci:%s%s%s", svc->image_path ? svc->image_path : "",
                 svc->image_tag ? ":" : "", svc->image_tag ? svc->image_tag : "") < 0)
        return NULL;
    return text;
}

/* The signal that stops the replica, as Docker chooses it: the service's stop_signal, else its
 * image config's StopSignal, else 0 (SIGTERM, the lifecycle's default). An image's StopSignal
 * that is no signal is an error naming the image and the field, unless stop_signal overrides
 * it. */
static int replica_stop_signal(const obi_service *svc, const obi_service_spec_options *opts,
                               int *out, obi_error **err)
{
    *out = svc->stop_signal;
    if (*out || !opts->image || !opts->image->stop_signal)
        return 0;
    *out = obi_signal_parse(opts->image->stop_signal);
    if (*out)
        return 0;
    cleanup_free char *image = image_text(svc);
    return obi_error_set(err, -EINVAL,
                         "services.%s.image: %s: config.StopSignal \"%s\" is not a signal (like "
                         "SIGTERM, TERM or 15); a stop_signal for the service overrides it",
                         svc->name, image ? image : "the image", opts->image->stop_signal);
}

/* labels: OCI annotations, as Docker's labels are. The stop signal (replica_stop_signal) and
 * stop_grace_period, which the lifecycle applies when it stops the replica (lifecycle.c), are
 * recorded beside them: the signal under the image-spec's name for a config's StopSignal. */
static int add_annotations(json_t *config, const obi_service *svc, int stop_signal)
{
    if (!svc->label_count && !stop_signal && !svc->stop_grace_ms)
        return 0;
    json_t *annotations = json_object();
    if (!annotations || json_object_set_new(config, "annotations", annotations) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < svc->label_count; i++)
        if (json_object_set_new(annotations, svc->labels[i].name,
                                json_string(svc->labels[i].value)) < 0)
            return -ENOMEM;
    char text[32];
    const char *abbrev = stop_signal ? sigabbrev_np(stop_signal) : NULL;
    if (abbrev)
        snprintf(text, sizeof text, "SIG%s", abbrev);
    else
        snprintf(text, sizeof text, "%d", stop_signal);
    if (stop_signal &&
        json_object_set_new(annotations, OBI_ANNOTATION_STOP_SIGNAL, json_string(text)) < 0)
        return -ENOMEM;
    snprintf(text, sizeof text, "%" PRIu64 "ms", svc->stop_grace_ms);
    if (svc->stop_grace_ms &&
        json_object_set_new(annotations, OBI_ANNOTATION_STOP_GRACE, json_string(text)) < 0)
        return -ENOMEM;
    return 0;
}

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
    int r = obi_service_replica_ids(svc, opts, &ids_buf, &ids, err);
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
    if (r == 0)
        r = add_dns_mount(mounts, svc, err);
    if (r == 0)
        r = add_hosts_mount(mounts, opts, err);
    if (r == 0)
        r = add_gpu_sharing_mounts(mounts, svc, err);
    if (r == 0)
        r = add_init_mount(mounts, svc, err);
    int stop_signal = 0;
    if (r == 0)
        r = replica_stop_signal(svc, opts, &stop_signal, err);
    json_t *config = NULL;
    if (r == 0) {
        config = json_pack("{s:s, s:{s:s, s:b}, s:o, s:s, s:O, s:o}", "ociVersion", OBI_OCI_VERSION,
                           "root", "path", "rootfs", "readonly", svc->read_only_root_fs, "process",
                           process, "hostname", svc->hostname ? svc->hostname : id, "mounts",
                           mounts, "linux", linux_obj);
        process = linux_obj = NULL; /* json_pack "o" took them, even on failure */
        if (!config || add_annotations(config, svc, stop_signal) < 0) {
            json_decref(config);
            r = obi_error_oom(err);
        }
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
