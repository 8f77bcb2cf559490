/*
 * config.json for one build (include/ocibuild/spec.h), following build.md section by section:
 * process, capabilities, namespaces and id maps, masked and read-only paths, root, hostname and
 * the mounts in their fixed order (runc's standard set, /tmp, scratch, inputs, read-only host
 * paths, /bin/sh, network files). Tables hold the data (capabilities, runc's mounts); the
 * functions only assemble them. The bundle code (bundle.c, the build orchestration) lays out
 * the directories this spec points at, using obi_scratch_name and obi_output_host_path.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/json_util.h"
#include "ocibuild/spec.h"

#define OCI_VERSION "1.0.2"
#define NOFILE_LIMIT 1024

static const char *const CAPS_ROOTFUL[] = {"CAP_AUDIT_WRITE", "CAP_KILL"};
/* Only effective inside the build's user namespace. */
static const char *const CAPS_ROOTLESS[] = {
    "CAP_AUDIT_WRITE", "CAP_CHOWN",   "CAP_DAC_OVERRIDE",     "CAP_FOWNER",     "CAP_FSETID",
    "CAP_KILL",        "CAP_MKNOD",   "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",    "CAP_SETFCAP",
    "CAP_SETGID",      "CAP_SETPCAP", "CAP_SETUID",           "CAP_SYS_CHROOT",
};
static const char *const CAP_SETS[] = {"bounding", "effective", "inheritable", "permitted",
                                       "ambient"};

static const char *const MASKED_PATHS[] = {
    "/proc/kcore",       "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug",   "/sys/firmware",
};
static const char *const READONLY_PATHS[] = {
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

typedef struct std_mount {
    const char *destination;
    const char *type;
    const char *source;
    const char *options[8]; /* NULL-terminated; no "options" key when empty */
} std_mount;

/* Exactly what `runc spec` (runc 1.1) writes. */
static const std_mount MOUNTS_ROOTFUL[] = {
    {"/proc", "proc", "proc", {NULL}},
    {"/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k", NULL}},
    {"/dev/pts",
     "devpts",
     "devpts",
     {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5", NULL}},
    {"/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL}},
    {"/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev", NULL}},
    {"/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro", NULL}},
    {"/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", "ro", NULL}},
};
/* Exactly what `runc spec --rootless` writes: no gid=5 on devpts, /sys bound from the host. */
static const std_mount MOUNTS_ROOTLESS[] = {
    {"/proc", "proc", "proc", {NULL}},
    {"/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k", NULL}},
    {"/dev/pts",
     "devpts",
     "devpts",
     {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", NULL}},
    {"/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL}},
    {"/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev", NULL}},
    {"/sys", "none", "/sys", {"rbind", "nosuid", "noexec", "nodev", "ro", NULL}},
    {"/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", "ro", NULL}},
};
static const std_mount MOUNT_TMP = {
    "/tmp", "tmpfs", "tmpfs", {"nosuid", "noatime", "mode=700", NULL}};
static const char *const NETWORK_FILES[] = {"/etc/resolv.conf", "/etc/services", "/etc/hosts"};
static const char *const OPTS_SCRATCH[] = {"rbind", "rw", NULL};
static const char *const OPTS_INPUT[] = {"rbind", "ro", "nosuid", "nodev", NULL};
static const char *const OPTS_HOST_RO[] = {"rbind", "ro", NULL};

/* ---- naming shared with the bundle ---- */

void obi_scratch_name(const char *scratch_path, char out[OBI_SCRATCH_NAME_LEN + 1])
{
    obi_digest d;
    obi_digest_of(scratch_path, strlen(scratch_path), &d);
    obi_base32_encode(d.bytes, sizeof d.bytes, out);
    out[OBI_SCRATCH_NAME_LEN] = '\0';
}

char *obi_scratch_host_path(const char *scratch_path)
{
    char name[OBI_SCRATCH_NAME_LEN + 1];
    obi_scratch_name(scratch_path, name);
    char *out = NULL;
    return asprintf(&out, "scratch/%s", name) < 0 ? NULL : out;
}

static int host_path_below_scratch(const obi_build_request *req, const char *field, size_t index,
                                   const char *path, char **out, obi_error **err)
{
    size_t scratch;
    const char *rest;
    if (obi_build_request_find_scratch(req, path, &scratch, &rest) < 0)
        return obi_error_set(err, -ENOENT, "%s[%zu]: \"%s\" is not inside any scratch path", field,
                             index, path);
    char name[OBI_SCRATCH_NAME_LEN + 1];
    obi_scratch_name(req->scratch_paths[scratch], name);
    char *p = NULL;
    int r = *rest ? asprintf(&p, "scratch/%s/%s", name, rest) : asprintf(&p, "scratch/%s", name);
    if (r < 0)
        return obi_error_set(err, -ENOMEM, "out of memory");
    *out = p;
    return 0;
}

int obi_output_host_path(const obi_build_request *req, size_t output_index, char **out,
                         obi_error **err)
{
    if (output_index >= req->n_outputs)
        return obi_error_set(err, -EINVAL, "outputs[%zu]: no such output (%zu outputs)",
                             output_index, req->n_outputs);
    return host_path_below_scratch(req, "outputs", output_index, req->outputs[output_index], out,
                                   err);
}

int obi_additional_file_host_path(const obi_build_request *req, size_t file_index, char **out,
                                  obi_error **err)
{
    if (file_index >= req->n_additional_files)
        return obi_error_set(err, -EINVAL, "additional_files[%zu]: no such file (%zu files)",
                             file_index, req->n_additional_files);
    return host_path_below_scratch(req, "additional_files", file_index,
                                   req->additional_files[file_index].path, out, err);
}

/* ---- JSON assembly; every helper returns NULL only on out of memory ---- */

static json_t *string_array(const char *const *items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n && items[i]; i++)
        if (json_array_append_new(a, json_string(items[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static size_t strv_len(const char *const *v)
{
    size_t n = 0;
    while (v[n])
        n++;
    return n;
}

static int add_mount(json_t *mounts, const char *destination, const char *type, const char *source,
                     const char *const *options)
{
    json_t *m =
        json_pack("{s:s, s:s, s:s}", "destination", destination, "type", type, "source", source);
    if (!m || json_array_append_new(mounts, m) < 0)
        return -ENOMEM;
    if (options && options[0] &&
        json_object_set_new(m, "options", string_array(options, strv_len(options))) < 0)
        return -ENOMEM;
    return 0;
}

static json_t *make_capabilities(bool rootless)
{
    const char *const *caps = rootless ? CAPS_ROOTLESS : CAPS_ROOTFUL;
    size_t n = rootless ? OBI_ARRAY_SIZE(CAPS_ROOTLESS) : OBI_ARRAY_SIZE(CAPS_ROOTFUL);
    cleanup_json json_t *o = json_object();
    for (size_t i = 0; o && i < OBI_ARRAY_SIZE(CAP_SETS); i++)
        if (json_object_set_new(o, CAP_SETS[i], string_array(caps, n)) < 0)
            return NULL;
    return steal_pointer(&o);
}

static int make_process(const obi_build_request *req, bool rootless, json_t **out, obi_error **err)
{
    /* declared before the first goto: a jump past a cleanup variable's initialization would
     * leave the label in its scope, and its cleanup would free an uninitialized pointer */
    cleanup_free char *cwd = NULL;
    cleanup_json json_t *env = json_array();
    if (!env)
        goto oom;
    for (size_t i = 0; i < req->n_environment_vars; i++) {
        const obi_env_var *e = &req->environment_vars[i];
        cleanup_free char *kv = NULL;
        size_t key_len = strlen(e->key);
        kv = malloc(key_len + 1 + e->value.len + 1);
        if (!kv)
            goto oom;
        memcpy(kv, e->key, key_len);
        kv[key_len] = '=';
        if (e->value.len)
            memcpy(kv + key_len + 1, e->value.data, e->value.len);
        kv[key_len + 1 + e->value.len] = '\0';
        json_t *s = json_stringn(kv, key_len + 1 + e->value.len);
        if (!s)
            return obi_error_set(err, -EINVAL,
                                 "environment_vars[%zu]: value of \"%s\" is not valid UTF-8, "
                                 "which config.json cannot carry",
                                 i, e->key);
        if (json_array_append_new(env, s) < 0)
            goto oom;
    }
    if (asprintf(&cwd, "/%s", req->working_dir) < 0)
        goto oom;
    json_t *process = json_pack(
        "{s:b, s:{s:i, s:i}, s:o, s:O, s:s, s:o, s:[{s:s, s:i, s:i}], s:b}", "terminal", 0, "user",
        "uid", OBI_BUILD_UID, "gid", OBI_BUILD_GID, "args",
        string_array((const char *const *)req->command_args, req->n_command_args), "env", env,
        "cwd", cwd, "capabilities", make_capabilities(rootless), "rlimits", "type", "RLIMIT_NOFILE",
        "hard", NOFILE_LIMIT, "soft", NOFILE_LIMIT, "noNewPrivileges", 1);
    if (!process)
        goto oom;
    *out = process;
    return 0;
oom:
    return obi_error_set(err, -ENOMEM, "config.json: out of memory");
}

static json_t *id_mapping(uint32_t container, uint32_t host)
{
    return json_pack("{s:I, s:I, s:i}", "containerID", (json_int_t)container, "hostID",
                     (json_int_t)host, "size", 1);
}

static json_t *make_linux(const obi_build_request *req, const obi_spec_options *opts)
{
    static const char *const ALWAYS[] = {"pid", "ipc", "uts", "mount", "cgroup"};
    bool network = req->has_constraints && req->constraints.network_access;
    cleanup_json json_t *linux_obj = json_object();
    json_t *namespaces = json_array();
    if (!linux_obj || json_object_set_new(linux_obj, "namespaces", namespaces) < 0)
        return NULL;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(ALWAYS); i++)
        if (json_array_append_new(namespaces, json_pack("{s:s}", "type", ALWAYS[i])) < 0)
            return NULL;
    if (!network && json_array_append_new(namespaces, json_pack("{s:s}", "type", "network")) < 0)
        return NULL;
    if (opts->rootless) {
        if (json_array_append_new(namespaces, json_pack("{s:s}", "type", "user")) < 0)
            return NULL;
        if (json_object_set_new(linux_obj, "uidMappings",
                                json_pack("[o, o]", id_mapping(0, (uint32_t)opts->uid),
                                          id_mapping(OBI_BUILD_UID, (uint32_t)opts->subuid))) < 0 ||
            json_object_set_new(linux_obj, "gidMappings",
                                json_pack("[o, o]", id_mapping(0, (uint32_t)opts->gid),
                                          id_mapping(OBI_BUILD_GID, (uint32_t)opts->subgid))) < 0)
            return NULL;
    } else {
        /* As `runc spec` writes it: deny all devices, runc then allows its standard few. */
        if (json_object_set_new(
                linux_obj, "resources",
                json_pack("{s:[{s:b, s:s}]}", "devices", "allow", 0, "access", "rwm")) < 0)
            return NULL;
    }
    if (json_object_set_new(linux_obj, "maskedPaths",
                            string_array(MASKED_PATHS, OBI_ARRAY_SIZE(MASKED_PATHS))) < 0 ||
        json_object_set_new(linux_obj, "readonlyPaths",
                            string_array(READONLY_PATHS, OBI_ARRAY_SIZE(READONLY_PATHS))) < 0)
        return NULL;
    return steal_pointer(&linux_obj);
}

static int add_input_mounts(json_t *mounts, const obi_build_request *req, obi_error **err)
{
    for (size_t i = 0; i < req->n_inputs; i++) {
        const obi_bytes *name = &req->inputs[i].name;
        cleanup_json json_t *check = json_stringn((const char *)name->data, name->len);
        if (!check)
            return obi_error_set(err, -EINVAL,
                                 "inputs[%zu]: name is not valid UTF-8, which config.json cannot "
                                 "carry",
                                 i);
        cleanup_free char *source = NULL, *destination = NULL;
        int r = *req->inputs_dir
                    ? asprintf(&destination, "/%s/%s", req->inputs_dir, (const char *)name->data)
                    : asprintf(&destination, "/%s", (const char *)name->data);
        if (r < 0 || asprintf(&source, "inputs/%s", (const char *)name->data) < 0 ||
            add_mount(mounts, destination, "none", source, OPTS_INPUT) < 0)
            return obi_error_set(err, -ENOMEM, "config.json: out of memory");
    }
    return 0;
}

static int make_mounts(const obi_build_request *req, const obi_spec_options *opts, json_t **out,
                       obi_error **err)
{
    cleanup_json json_t *mounts = json_array();
    if (!mounts)
        goto oom;
    const std_mount *std = opts->rootless ? MOUNTS_ROOTLESS : MOUNTS_ROOTFUL;
    size_t n_std =
        opts->rootless ? OBI_ARRAY_SIZE(MOUNTS_ROOTLESS) : OBI_ARRAY_SIZE(MOUNTS_ROOTFUL);
    for (size_t i = 0; i < n_std; i++)
        if (add_mount(mounts, std[i].destination, std[i].type, std[i].source, std[i].options) < 0)
            goto oom;
    if (add_mount(mounts, MOUNT_TMP.destination, MOUNT_TMP.type, MOUNT_TMP.source,
                  MOUNT_TMP.options) < 0)
        goto oom;
    for (size_t i = 0; i < req->n_scratch_paths; i++) {
        cleanup_free char *source = obi_scratch_host_path(req->scratch_paths[i]);
        cleanup_free char *destination = NULL;
        if (!source || asprintf(&destination, "/%s", req->scratch_paths[i]) < 0 ||
            add_mount(mounts, destination, "none", source, OPTS_SCRATCH) < 0)
            goto oom;
    }
    int r = add_input_mounts(mounts, req, err);
    if (r < 0)
        return r;
    const obi_build_constraints *c = &req->constraints;
    bool constrained = req->has_constraints;
    for (size_t i = 0; constrained && i < c->n_available_ro_paths; i++)
        if (add_mount(mounts, c->available_ro_paths[i], "none", c->available_ro_paths[i],
                      OPTS_HOST_RO) < 0)
            goto oom;
    if (constrained && c->provide_bin_sh) {
        const char *shell = opts->sandbox_shell ? opts->sandbox_shell : OBI_DEFAULT_SANDBOX_SHELL;
        if (add_mount(mounts, "/bin/sh", "none", shell, OPTS_HOST_RO) < 0)
            goto oom;
    }
    for (size_t i = 0; constrained && c->network_access && i < OBI_ARRAY_SIZE(NETWORK_FILES); i++)
        if (add_mount(mounts, NETWORK_FILES[i], "none", NETWORK_FILES[i], OPTS_HOST_RO) < 0)
            goto oom;
    *out = steal_pointer(&mounts);
    return 0;
oom:
    return obi_error_set(err, -ENOMEM, "config.json: out of memory");
}

int obi_spec_generate(const obi_build_request *req, const obi_spec_options *opts, json_t **out,
                      obi_error **err)
{
    int r = obi_build_request_validate(req, err);
    if (r < 0)
        return r;
    if (opts->sandbox_shell && opts->sandbox_shell[0] != '/')
        return obi_error_set(err, -EINVAL, "sandbox shell \"%s\" is not an absolute path",
                             opts->sandbox_shell);
    json_t *process = NULL, *mounts = NULL;
    if ((r = make_process(req, opts->rootless, &process, err)) < 0)
        return r;
    if ((r = make_mounts(req, opts, &mounts, err)) < 0) {
        json_decref(process);
        return r;
    }
    json_t *config =
        json_pack("{s:s, s:o, s:{s:s, s:b}, s:s, s:o, s:o}", "ociVersion", OCI_VERSION, "process",
                  process, "root", "path", "root", "readonly", 1, "hostname", "localhost", "mounts",
                  mounts, "linux", make_linux(req, opts));
    if (!config)
        return obi_error_set(err, -ENOMEM, "config.json: out of memory");
    *out = config;
    return 0;
}
