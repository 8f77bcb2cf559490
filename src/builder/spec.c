/*
 * config.json for one build (include/ocibuild/spec.h), following build.md section by section:
 * process (no capabilities), namespaces (always a user namespace) and id maps, limits, the
 * syscall filter (seccomp.c), masked and read-only paths, root, hostname and the mounts in their
 * fixed order (runc's standard set, /tmp, scratch, inputs, read-only host paths, /bin/sh,
 * network files). Where docs/security.md decided otherwise than build.md, the decision
 * is taken. The runtime defaults (namespaces, standard mounts, masked and read-only paths,
 * device rules, rlimits, capability sets) come from oci_defaults.h's tables, shared with
 * service replicas; build_defaults says what a build takes of them. The bundle code (bundle.c,
 * the build orchestration) lays out the directories this spec points at, using obi_scratch_name
 * and obi_output_host_path.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/json_util.h"
#include "ocibuild/oci_defaults.h"
#include "ocibuild/seccomp.h"
#include "ocibuild/seccomp_bpf.h"
#include "ocibuild/spec.h"

/* 1777 as Nix's sandbox has it (build.md says 700, which no build user could write to). */
static const char *const OPTS_TMP[] = {"nosuid", "noatime", "mode=1777", NULL};
static const char *const NETWORK_FILES[] = {"/etc/resolv.conf", "/etc/services", "/etc/hosts"};
static const char *const OPTS_SCRATCH[] = {"rbind", "rw", NULL};
static const char *const OPTS_INPUT[] = {"rbind", "ro", "nosuid", "nodev", NULL};
/* Host paths a build is given: read-only, and no device node on them opens, so a directory or
 * file given never hands the build a device, with a device cgroup or without one
 * (docs/security.md "A cgroup only for a limit that needs one"). nodev, not rnodev: crun 1.8.1
 * refuses rnodev on a file ("open mount target: Not a directory"), and brings no submount of a
 * given directory into the build (runc does, with its device cgroup). */
static const char *const OPTS_HOST_RO[] = {"rbind", "ro", "nodev", NULL};
/* A known device given (KNOWN_DEVICES): the node itself, which must open. */
static const char *const OPTS_HOST_DEVICE[] = {"rbind", "ro", NULL};

/* Devices a build may be given among available_ro_paths (the rootful device cgroup denies every
 * other one, and every other path is bound nodev): Nix's sandbox has /dev/kvm when the host
 * does. */
typedef struct known_device {
    const char *path;
    char type;
    long major, minor;
} known_device;
static const known_device KNOWN_DEVICES[] = {{"/dev/kvm", 'c', 10, 232}};

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
        return obi_error_oom(err);
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

static bool is_known_device(const char *path)
{
    for (size_t k = 0; k < OBI_ARRAY_SIZE(KNOWN_DEVICES); k++)
        if (!strcmp(path, KNOWN_DEVICES[k].path))
            return true;
    return false;
}

static int make_process(const obi_build_request *req, const obi_spec_options *opts, json_t **out,
                        obi_error **err)
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
    json_t *process =
        json_pack("{s:b, s:{s:i, s:i}, s:o, s:O, s:s, s:o, s:o, s:b}", "terminal", 0, "user", "uid",
                  OBI_BUILD_UID, "gid", OBI_BUILD_GID, "args",
                  string_array((const char *const *)req->command_args, req->n_command_args), "env",
                  env, "cwd", cwd, "capabilities", obi_oci_capabilities(NULL), "rlimits",
                  obi_oci_rlimits(opts->max_pids), "noNewPrivileges", 1);
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

static bool has_own_network(const obi_build_request *req)
{
    return !(req->has_constraints && req->constraints.network_access);
}

/* What a build takes of the OCI defaults: its own cgroup namespace, network namespace (unless
 * network_access) and always a user namespace, which maps gid 0, 100 and 1000 only (so devpts
 * without gid=5); runc's mounts and masks as `runc spec --rootless` writes them, plus moby's
 * power counters mask; deny-all devices, to which runc adds its default nodes. Without a cgroup
 * of its own (no_cgroup) no cgroup filesystem: its cgroup namespace's root would be the
 * runtime's cgroup, not the build's. */
static obi_oci_defaults build_defaults(const obi_build_request *req, const obi_spec_options *opts)
{
    return (obi_oci_defaults){
        .cgroup_namespace = true,
        .network_namespace = has_own_network(req),
        .user_namespace = true,
        .mask_power_counters = true,
        .no_sys = req->has_constraints && req->constraints.hide_sys,
        .no_cgroup_fs = opts->no_cgroup,
    };
}

/* Rootful builds in a cgroup of their own: devices as `runc spec` writes them (deny all; runc
 * then allows its standard few), and the limits. Rootless builds get none (their runtime cannot
 * write cgroups here), nor do builds without a cgroup (no_cgroup): the process limit is their
 * RLIMIT_NPROC alone (make_process), and devices stay closed without a device cgroup
 * (docs/security.md "Limits"). */
static json_t *make_resources(const obi_build_request *req, const obi_spec_options *opts,
                              const obi_oci_defaults *defaults)
{
    cleanup_json json_t *resources = json_pack("{s:o}", "devices", obi_oci_device_rules(defaults));
    if (!resources)
        return NULL;
    size_t n_ro = req->has_constraints ? req->constraints.n_available_ro_paths : 0;
    for (size_t i = 0; i < n_ro; i++)
        for (size_t k = 0; k < OBI_ARRAY_SIZE(KNOWN_DEVICES); k++) {
            const known_device *d = &KNOWN_DEVICES[k];
            if (strcmp(req->constraints.available_ro_paths[i], d->path) == 0 &&
                json_array_append_new(
                    json_object_get(resources, "devices"),
                    obi_oci_device_rule(true, d->type, d->major, d->minor, "rw")) < 0)
                return NULL;
        }
    if (opts->max_pids &&
        json_object_set_new(resources, "pids",
                            json_pack("{s:I}", "limit", (json_int_t)opts->max_pids)) < 0)
        return NULL;
    if (opts->memory_bytes) {
        json_t *memory = json_pack("{s:I}", "limit", (json_int_t)opts->memory_bytes);
        if (json_object_set_new(resources, "memory", memory) < 0 ||
            (opts->memory_swap &&
             json_object_set_new(memory, "swap", json_integer((json_int_t)opts->memory_bytes)) < 0))
            return NULL;
    }
    return steal_pointer(&resources);
}

static json_t *make_linux(const obi_build_request *req, const obi_spec_options *opts,
                          json_t *seccomp)
{
    obi_oci_defaults defaults = build_defaults(req, opts);
    cleanup_json json_t *linux_obj = json_object();
    if (!linux_obj ||
        json_object_set_new(linux_obj, "namespaces", obi_oci_namespaces(&defaults)) < 0 ||
        json_object_set_new(linux_obj, "uidMappings",
                            json_pack("[o, o]", id_mapping(0, (uint32_t)opts->root_uid),
                                      id_mapping(OBI_BUILD_UID, (uint32_t)opts->build_uid))) < 0 ||
        json_object_set_new(linux_obj, "gidMappings",
                            json_pack("[o, o]", id_mapping(0, (uint32_t)opts->root_gid),
                                      id_mapping(OBI_BUILD_GID, (uint32_t)opts->build_gid))) < 0)
        return NULL;
    if (!opts->rootless && !opts->no_cgroup &&
        json_object_set_new(linux_obj, "resources", make_resources(req, opts, &defaults)) < 0)
        return NULL;
    if (json_object_set_new(linux_obj, "seccomp", json_incref(seccomp)) < 0 ||
        json_object_set_new(linux_obj, "maskedPaths", obi_oci_masked_paths(&defaults)) < 0 ||
        json_object_set_new(linux_obj, "readonlyPaths", obi_oci_readonly_paths(&defaults)) < 0)
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
            obi_oci_add_mount(mounts, destination, "none", source, OPTS_INPUT) < 0)
            return obi_error_set(err, -ENOMEM, "config.json: out of memory");
    }
    return 0;
}

static int make_mounts(const obi_build_request *req, const obi_spec_options *opts, json_t **out,
                       obi_error **err)
{
    obi_oci_defaults defaults = build_defaults(req, opts);
    cleanup_json json_t *mounts = json_array();
    if (!mounts || obi_oci_add_standard_mounts(mounts, &defaults) < 0 ||
        obi_oci_add_mount(mounts, "/tmp", "tmpfs", "tmpfs", OPTS_TMP) < 0)
        goto oom;
    for (size_t i = 0; i < req->n_scratch_paths; i++) {
        cleanup_free char *source = obi_scratch_host_path(req->scratch_paths[i]);
        cleanup_free char *destination = NULL;
        if (!source || asprintf(&destination, "/%s", req->scratch_paths[i]) < 0 ||
            obi_oci_add_mount(mounts, destination, "none", source, OPTS_SCRATCH) < 0)
            goto oom;
    }
    int r = add_input_mounts(mounts, req, err);
    if (r < 0)
        return r;
    const obi_build_constraints *c = &req->constraints;
    bool constrained = req->has_constraints;
    for (size_t i = 0; constrained && i < c->n_available_ro_paths; i++)
        if (obi_oci_add_mount(mounts, c->available_ro_paths[i], "none", c->available_ro_paths[i],
                              is_known_device(c->available_ro_paths[i]) ? OPTS_HOST_DEVICE
                                                                        : OPTS_HOST_RO) < 0)
            goto oom;
    if (constrained && c->provide_bin_sh) {
        const char *shell = opts->sandbox_shell ? opts->sandbox_shell : OBI_DEFAULT_SANDBOX_SHELL;
        if (obi_oci_add_mount(mounts, "/bin/sh", "none", shell, OPTS_HOST_RO) < 0)
            goto oom;
    }
    for (size_t i = 0; constrained && c->network_access && i < OBI_ARRAY_SIZE(NETWORK_FILES); i++)
        if (obi_oci_add_mount(mounts, NETWORK_FILES[i], "none", NETWORK_FILES[i], OPTS_HOST_RO) < 0)
            goto oom;
    *out = steal_pointer(&mounts);
    return 0;
oom:
    return obi_error_set(err, -ENOMEM, "config.json: out of memory");
}

/* The build user must never be host root, nor share container root's host ids (rootful). */
static int check_host_ids(const obi_spec_options *opts, obi_error **err)
{
    if (opts->build_uid == 0 || opts->build_gid == 0)
        return obi_error_set(err, -EINVAL,
                             "the build user would be host root (host ids %u:%u): rootful builds "
                             "need an id slot of the ocibuild range, rootless ones a subuid range",
                             (unsigned)opts->build_uid, (unsigned)opts->build_gid);
    if (!opts->rootless && (opts->root_uid == 0 || opts->root_gid == 0 ||
                            opts->root_uid == opts->build_uid || opts->root_gid == opts->build_gid))
        return obi_error_set(err, -EINVAL,
                             "container root would map to host ids %u:%u (build user %u:%u): "
                             "rootful builds need an id slot of the ocibuild range",
                             (unsigned)opts->root_uid, (unsigned)opts->root_gid,
                             (unsigned)opts->build_uid, (unsigned)opts->build_gid);
    return 0;
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
    if ((r = check_host_ids(opts, err)) < 0)
        return r;
    if (opts->no_cgroup && opts->memory_bytes)
        return obi_error_set(err, -EINVAL,
                             "a memory limit (%llu bytes) needs a cgroup, and the build would "
                             "have none",
                             (unsigned long long)opts->memory_bytes);
    cleanup_json json_t *seccomp = NULL;
    if ((r = obi_seccomp_build_profile(opts->machine, &seccomp, err)) < 0)
        return r;
    json_t *process = NULL, *mounts = NULL;
    if ((r = make_process(req, opts, &process, err)) < 0)
        return r;
    if ((r = make_mounts(req, opts, &mounts, err)) < 0) {
        json_decref(process);
        return r;
    }
    json_t *config =
        json_pack("{s:s, s:o, s:{s:s, s:b}, s:s, s:o, s:o}", "ociVersion", OBI_OCI_VERSION,
                  "process", process, "root", "path", "root", "readonly", 1, "hostname",
                  "localhost", "mounts", mounts, "linux", make_linux(req, opts, seccomp));
    if (!config)
        return obi_error_set(err, -ENOMEM, "config.json: out of memory");
    if (opts->seccomp_bpf &&
        (r = obi_seccomp_bpf_annotate(config, seccomp, opts->seccomp_bpf_cache_dir, err)) < 0) {
        json_decref(config);
        return r;
    }
    *out = config;
    return 0;
}
