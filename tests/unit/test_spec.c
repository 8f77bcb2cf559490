/*
 * OCI spec generation: scratch dir names (build.md's vectors), output host paths, the process
 * section, no capability, namespaces, id maps rootful (an id slot) and rootless, limits, the
 * syscall filter and the masked paths, the mount order and every mount kind, refusals naming
 * the field or the ids, and /etc/subuid parsing with its errors.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/seccomp.h"
#include "ocibuild/spec.h"
#include "request_fixture.h"
#include "test_helpers.h"

#define SNAME_NIX_STORE "SN566XP5HOO2D322W42EA3DZYPDYBMPRUF3TGFIMLXV54WM4CSNQ===="
#define SNAME_BUILD "3SCCPULSYMZAQ35F76TA3A3HYQROJMTNQW7SVJDXX5BNIYJ3WHYA===="

static json_t *generate(const obi_build_request *req, const obi_spec_options *opts)
{
    json_t *config = NULL;
    assert_ok(obi_spec_generate(req, opts, &config, err_ptr_));
    assert_non_null(config);
    return config;
}

/* Rootful, as a build in the first id slot of a range at 1879048192 would have it. */
static const obi_spec_options ROOTFUL = {.root_uid = 1879048192,
                                         .root_gid = 1879048192,
                                         .build_uid = 1879048192 + 1000,
                                         .build_gid = 1879048192 + 100,
                                         .machine = "x86_64",
                                         .max_pids = 4096};

static json_t *generate_default(const obi_build_request *req)
{
    return generate(req, &ROOTFUL);
}

static const obi_spec_options ROOTLESS = {.rootless = true,
                                          .root_uid = 1234,
                                          .root_gid = 567,
                                          .build_uid = 100000,
                                          .build_gid = 200000,
                                          .machine = "x86_64",
                                          .max_pids = 4096};

/* The mount whose destination is dest, or NULL. */
static json_t *find_mount(json_t *config, const char *dest)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(config, "mounts"), i, m)
    {
        if (!strcmp(json_string_value(json_object_get(m, "destination")), dest))
            return m;
    }
    return NULL;
}

static void assert_mount(json_t *config, const char *dest, const char *type, const char *source,
                         const char *options)
{
    json_t *m = find_mount(config, dest);
    if (!m)
        print_error("no mount at %s\n", dest);
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "type")), type);
    assert_string_equal(json_string_value(json_object_get(m, "source")), source);
    char joined[256] = "";
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(m, "options"), i, o)
    {
        if (i)
            strcat(joined, ",");
        strcat(joined, json_string_value(o));
    }
    assert_string_equal(joined, options);
}

/* All destinations, comma-joined. */
static char *destinations(json_t *config)
{
    char *out = calloc(1, 4096);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(config, "mounts"), i, m)
    {
        if (i)
            strcat(out, ",");
        strcat(out, json_string_value(json_object_get(m, "destination")));
    }
    return out;
}

static char *string_list(json_t *array)
{
    char *out = calloc(1, 4096);
    size_t i;
    json_t *v;
    json_array_foreach(array, i, v)
    {
        if (i)
            strcat(out, ",");
        strcat(out, json_is_string(v) ? json_string_value(v)
                                      : json_string_value(json_object_get(v, "type")));
    }
    return out;
}

static void test_spec_scratch_name_vectors(void **state)
{
    (void)state;
    char name[OBI_SCRATCH_NAME_LEN + 1];
    obi_scratch_name("nix/store", name);
    assert_string_equal(name, SNAME_NIX_STORE);
    obi_scratch_name("build", name);
    assert_string_equal(name, SNAME_BUILD);
    cleanup_free char *path = obi_scratch_host_path("build");
    assert_string_equal(path, "scratch/" SNAME_BUILD);
}

static void test_spec_output_host_paths(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    FIXTURE_SET(req, scratch_paths, "build", "nix", "nix/store");
    FIXTURE_SET(req, outputs, "nix/store", "nix/store/ccc-out/sub");
    cleanup_free char *p0 = NULL, *p1 = NULL, *f0 = NULL;
    assert_ok(obi_output_host_path(req, 0, &p0, err_ptr_));
    assert_string_equal(p0, "scratch/" SNAME_NIX_STORE);
    assert_ok(obi_output_host_path(req, 1, &p1, err_ptr_));
    assert_string_equal(p1, "scratch/" SNAME_NIX_STORE "/ccc-out/sub");
    assert_ok(obi_additional_file_host_path(req, 0, &f0, err_ptr_));
    assert_string_equal(f0, "scratch/" SNAME_BUILD "/.attrs.json");
    obi_error *err = NULL;
    char *none = NULL;
    assert_fails_with(err, obi_output_host_path(req, 2, &none, &err), -EINVAL, "outputs[2]");
    FIXTURE_SET(req, outputs, "elsewhere/x");
    assert_fails_with(err, obi_output_host_path(req, 0, &none, &err), -ENOENT,
                      "outputs[0]: \"elsewhere/x\" is not inside any scratch path");
    assert_null(none);
}

static void test_spec_top_level_fields(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *config = generate_default(req);
    assert_string_equal(json_string_value(json_object_get(config, "ociVersion")), "1.0.2");
    assert_string_equal(json_string_value(json_object_get(config, "hostname")), "localhost");
    json_t *root = json_object_get(config, "root");
    assert_string_equal(json_string_value(json_object_get(root, "path")), "root");
    assert_true(json_is_true(json_object_get(root, "readonly")));
    json_t *linux_obj = json_object_get(config, "linux");
    assert_non_null(json_object_get(linux_obj, "seccomp"));
}

/* runc 1.1's `runc spec` lists, plus moby's /sys/devices/virtual/powercap; rootless the same. */
static void test_spec_masks_runc_default_paths(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    for (int rootless = 0; rootless < 2; rootless++) {
        cleanup_json json_t *config = generate(req, rootless ? &ROOTLESS : &ROOTFUL);
        json_t *linux_obj = json_object_get(config, "linux");
        cleanup_free char *masked = string_list(json_object_get(linux_obj, "maskedPaths"));
        assert_string_equal(masked, "/proc/acpi,/proc/asound,/proc/kcore,/proc/keys,"
                                    "/proc/latency_stats,/proc/timer_list,/proc/timer_stats,"
                                    "/proc/sched_debug,/sys/firmware,/proc/scsi,"
                                    "/sys/devices/virtual/powercap");
        cleanup_free char *ro = string_list(json_object_get(linux_obj, "readonlyPaths"));
        assert_string_equal(ro, "/proc/bus,/proc/fs,/proc/irq,/proc/sys,/proc/sysrq-trigger");
    }
}

static void test_spec_process(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    const char *const env[] = {"A", "1", "B", "x=y", "C", ""};
    fixture_set_env(req, 3, env);
    cleanup_json json_t *config = generate_default(req);
    json_t *p = json_object_get(config, "process");
    assert_true(json_is_false(json_object_get(p, "terminal")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(p, "user"), "uid")), 1000);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(p, "user"), "gid")), 100);
    cleanup_free char *args = string_list(json_object_get(p, "args"));
    assert_string_equal(args, "/bin/sh,-c,echo hi > $out");
    cleanup_free char *envs = string_list(json_object_get(p, "env"));
    assert_string_equal(envs, "A=1,B=x=y,C=");
    assert_string_equal(json_string_value(json_object_get(p, "cwd")), "/build");
    json_t *rlimit = json_array_get(json_object_get(p, "rlimits"), 0);
    assert_string_equal(json_string_value(json_object_get(rlimit, "type")), "RLIMIT_NOFILE");
    assert_int_equal(json_integer_value(json_object_get(rlimit, "soft")), 1024);
    assert_int_equal(json_integer_value(json_object_get(rlimit, "hard")), 1024);
    /* max_pids is the build's RLIMIT_NPROC, with a cgroup or without */
    rlimit = json_array_get(json_object_get(p, "rlimits"), 1);
    assert_string_equal(json_string_value(json_object_get(rlimit, "type")), "RLIMIT_NPROC");
    assert_int_equal(json_integer_value(json_object_get(rlimit, "soft")), 4096);
    assert_int_equal(json_integer_value(json_object_get(rlimit, "hard")), 4096);
    assert_int_equal(json_array_size(json_object_get(p, "rlimits")), 2);
    assert_true(json_is_true(json_object_get(p, "noNewPrivileges")));
}

static void test_spec_cwd_of_empty_working_dir_is_root(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    fixture_set_string(&req->working_dir, "");
    cleanup_json json_t *config = generate_default(req);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(config, "process"), "cwd")), "/");
}

static void assert_caps(json_t *config, const char *expected)
{
    static const char *const SETS[] = {"bounding", "effective", "inheritable", "permitted",
                                       "ambient"};
    json_t *caps = json_object_get(json_object_get(config, "process"), "capabilities");
    assert_int_equal(json_object_size(caps), 5);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(SETS); i++) {
        cleanup_free char *list = string_list(json_object_get(caps, SETS[i]));
        assert_string_equal(list, expected);
    }
}

static void test_spec_no_capability_in_any_set(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *rootful = generate_default(req);
    assert_caps(rootful, "");
    cleanup_json json_t *rootless = generate(req, &ROOTLESS);
    assert_caps(rootless, "");
}

static char *namespaces(json_t *config)
{
    return string_list(json_object_get(json_object_get(config, "linux"), "namespaces"));
}

static void test_spec_namespaces(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *rootful = generate_default(req);
    cleanup_free char *a = namespaces(rootful);
    assert_string_equal(a, "pid,ipc,uts,mount,cgroup,network,user");
    cleanup_json json_t *rootless = generate(req, &ROOTLESS);
    cleanup_free char *b = namespaces(rootless);
    assert_string_equal(b, "pid,ipc,uts,mount,cgroup,network,user");
    req->constraints.network_access = true;
    cleanup_json json_t *net = generate_default(req);
    cleanup_free char *c = namespaces(net);
    assert_string_equal(c, "pid,ipc,uts,mount,cgroup,user");
    cleanup_json json_t *net_rootless = generate(req, &ROOTLESS);
    cleanup_free char *d = namespaces(net_rootless);
    assert_string_equal(d, "pid,ipc,uts,mount,cgroup,user");
}

static void assert_mapping(json_t *map, size_t index, json_int_t container, json_int_t host)
{
    json_t *m = json_array_get(map, index);
    assert_int_equal(json_integer_value(json_object_get(m, "containerID")), container);
    assert_int_equal(json_integer_value(json_object_get(m, "hostID")), host);
    assert_int_equal(json_integer_value(json_object_get(m, "size")), 1);
}

static void test_spec_rootless_id_mappings(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *config = generate(req, &ROOTLESS);
    json_t *linux_obj = json_object_get(config, "linux");
    json_t *uids = json_object_get(linux_obj, "uidMappings");
    json_t *gids = json_object_get(linux_obj, "gidMappings");
    assert_int_equal(json_array_size(uids), 2);
    assert_int_equal(json_array_size(gids), 2);
    assert_mapping(uids, 0, 0, 1234);
    assert_mapping(uids, 1, 1000, 100000);
    assert_mapping(gids, 0, 0, 567);
    assert_mapping(gids, 1, 100, 200000);
    assert_null(json_object_get(linux_obj, "resources"));
}

static void test_spec_rootful_maps_its_id_slot_and_denies_devices(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *config = generate_default(req);
    json_t *linux_obj = json_object_get(config, "linux");
    json_t *uids = json_object_get(linux_obj, "uidMappings");
    json_t *gids = json_object_get(linux_obj, "gidMappings");
    assert_int_equal(json_array_size(uids), 2);
    assert_int_equal(json_array_size(gids), 2);
    assert_mapping(uids, 0, 0, 1879048192);
    assert_mapping(uids, 1, 1000, 1879049192);
    assert_mapping(gids, 0, 0, 1879048192);
    assert_mapping(gids, 1, 100, 1879048292);
    json_t *resources = json_object_get(linux_obj, "resources");
    json_t *dev = json_array_get(json_object_get(resources, "devices"), 0);
    assert_true(json_is_false(json_object_get(dev, "allow")));
    assert_string_equal(json_string_value(json_object_get(dev, "access")), "rwm");
}

static void test_spec_limits_are_cgroup_resources_of_rootful_builds(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    obi_spec_options opts = ROOTFUL;
    opts.max_pids = 64;
    cleanup_json json_t *pids_only = generate(req, &opts);
    json_t *resources = json_object_get(json_object_get(pids_only, "linux"), "resources");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(resources, "pids"), "limit")), 64);
    assert_null(json_object_get(resources, "memory"));
    opts.memory_bytes = 512u << 20;
    cleanup_json json_t *no_swap = generate(req, &opts);
    json_t *memory =
        json_object_get(json_object_get(json_object_get(no_swap, "linux"), "resources"), "memory");
    assert_int_equal(json_integer_value(json_object_get(memory, "limit")), 512u << 20);
    assert_null(json_object_get(memory, "swap"));
    opts.memory_swap = true;
    cleanup_json json_t *swap = generate(req, &opts);
    memory =
        json_object_get(json_object_get(json_object_get(swap, "linux"), "resources"), "memory");
    assert_int_equal(json_integer_value(json_object_get(memory, "swap")), 512u << 20);
    opts.max_pids = 0;
    opts.memory_bytes = 0;
    cleanup_json json_t *none = generate(req, &opts);
    resources = json_object_get(json_object_get(none, "linux"), "resources");
    assert_null(json_object_get(resources, "pids"));
    assert_null(json_object_get(resources, "memory"));
    cleanup_json json_t *rootless = generate(req, &ROOTLESS);
    assert_null(json_object_get(json_object_get(rootless, "linux"), "resources"));
}

/* No cgroup (crun without a memory limit): no linux.resources at all, max_pids as RLIMIT_NPROC
 * alone, no cgroup filesystem (and /sys/fs/cgroup masked where /sys is the host's); a memory
 * limit, which only a cgroup enforces, is refused rather than dropped. Rootless the same. */
static void test_spec_without_a_cgroup_limits_processes_by_rlimit(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    obi_spec_options opts = ROOTFUL;
    opts.no_cgroup = true;
    opts.max_pids = 64;
    cleanup_json json_t *config = generate(req, &opts);
    assert_null(json_object_get(json_object_get(config, "linux"), "resources"));
    json_t *nproc =
        json_array_get(json_object_get(json_object_get(config, "process"), "rlimits"), 1);
    assert_string_equal(json_string_value(json_object_get(nproc, "type")), "RLIMIT_NPROC");
    assert_int_equal(json_integer_value(json_object_get(nproc, "soft")), 64);
    assert_int_equal(json_integer_value(json_object_get(nproc, "hard")), 64);
    assert_null(find_mount(config, "/sys/fs/cgroup"));
    assert_non_null(find_mount(config, "/sys"));
    cleanup_free char *masked =
        string_list(json_object_get(json_object_get(config, "linux"), "maskedPaths"));
    assert_null(strstr(masked, "cgroup")); /* a fresh sysfs: its /sys/fs/cgroup is empty */

    req->has_constraints = true;
    req->constraints.network_access = true; /* /sys is the host's */
    cleanup_json json_t *host_sys = generate(req, &opts);
    cleanup_free char *host_masked =
        string_list(json_object_get(json_object_get(host_sys, "linux"), "maskedPaths"));
    assert_non_null(strstr(host_masked, "/sys/fs/cgroup"));
    assert_null(find_mount(host_sys, "/sys/fs/cgroup"));

    obi_spec_options rootless = ROOTLESS;
    rootless.no_cgroup = true;
    cleanup_json json_t *rootless_config = generate(req, &rootless);
    assert_null(find_mount(rootless_config, "/sys/fs/cgroup"));
    nproc =
        json_array_get(json_object_get(json_object_get(rootless_config, "process"), "rlimits"), 1);
    assert_int_equal(json_integer_value(json_object_get(nproc, "hard")), 4096);

    opts.memory_bytes = 64u << 20;
    obi_error *err = NULL;
    json_t *refused = NULL;
    assert_int_equal(obi_spec_generate(req, &opts, &refused, &err), -EINVAL);
    assert_null(refused);
    assert_non_null(strstr(err->message, "memory limit"));
    obi_error_free(err);
}

static void test_spec_refuses_host_root_ids(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    obi_error *err = NULL;
    json_t *config = NULL;
    obi_spec_options opts = {.machine = "x86_64"};
    assert_fails_with(err, obi_spec_generate(req, &opts, &config, &err), -EINVAL,
                      "the build user would be host root");
    opts = ROOTFUL;
    opts.root_uid = 0;
    assert_fails_with(err, obi_spec_generate(req, &opts, &config, &err), -EINVAL,
                      "container root would map to host ids 0:1879048192");
    opts = ROOTFUL;
    opts.root_gid = opts.build_gid;
    assert_fails_with(err, obi_spec_generate(req, &opts, &config, &err), -EINVAL,
                      "container root would map");
    opts = ROOTLESS;
    opts.build_gid = 0;
    assert_fails_with(err, obi_spec_generate(req, &opts, &config, &err), -EINVAL,
                      "the build user would be host root (host ids 100000:0)");
    assert_null(config);
}

static void test_spec_mount_order(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    FIXTURE_SET_RO_PATHS(req, "/dev/kvm", "/etc/ssl");
    req->constraints.provide_bin_sh = true;
    req->constraints.network_access = true;
    cleanup_json json_t *config = generate_default(req);
    cleanup_free char *order = destinations(config);
    assert_string_equal(order, "/proc,/dev,/dev/pts,/dev/shm,/dev/mqueue,/sys,/sys/fs/cgroup,"
                               "/tmp,/build,/nix/store,/nix/store/aaa-dep,/nix/store/bbb-link,"
                               "/dev/kvm,/etc/ssl,/bin/sh,/etc/resolv.conf,/etc/services,"
                               "/etc/hosts");
}

static void test_spec_minimal_request_mounts(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = obi_build_request_new();
    FIXTURE_SET(req, command_args, "/bin/true");
    cleanup_json json_t *config = generate_default(req);
    cleanup_free char *order = destinations(config);
    assert_string_equal(order, "/proc,/dev,/dev/pts,/dev/shm,/dev/mqueue,/sys,/sys/fs/cgroup,/tmp");
    assert_null(find_mount(config, "/bin/sh"));
}

/* runc spec --rootless's set (a user namespace has no gid 5), with a fresh sysfs when the
 * build has its own network namespace. */
static void test_spec_standard_mounts_rootful(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *config = generate_default(req);
    assert_null(json_object_get(json_array_get(json_object_get(config, "mounts"), 0), "options"));
    assert_mount(config, "/proc", "proc", "proc", "");
    assert_mount(config, "/dev", "tmpfs", "tmpfs", "nosuid,strictatime,mode=755,size=65536k");
    assert_mount(config, "/dev/pts", "devpts", "devpts",
                 "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620");
    assert_mount(config, "/dev/shm", "tmpfs", "shm", "nosuid,noexec,nodev,mode=1777,size=65536k");
    assert_mount(config, "/dev/mqueue", "mqueue", "mqueue", "nosuid,noexec,nodev");
    assert_mount(config, "/sys", "sysfs", "sysfs", "nosuid,noexec,nodev,ro");
    assert_mount(config, "/sys/fs/cgroup", "cgroup", "cgroup", "nosuid,noexec,nodev,relatime,ro");
    assert_mount(config, "/tmp", "tmpfs", "tmpfs", "nosuid,noatime,mode=1777");
}

static void test_spec_standard_mounts_rootless(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *config = generate(req, &ROOTLESS);
    assert_mount(config, "/dev/pts", "devpts", "devpts",
                 "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620");
    assert_mount(config, "/sys", "sysfs", "sysfs", "nosuid,noexec,nodev,ro");
    assert_mount(config, "/tmp", "tmpfs", "tmpfs", "nosuid,noatime,mode=1777");
    /* In the host's network namespace sysfs cannot be mounted: /sys is bound from the host. */
    req->constraints.network_access = true;
    cleanup_json json_t *net = generate(req, &ROOTLESS);
    assert_mount(net, "/sys", "none", "/sys", "rbind,nosuid,noexec,nodev,ro");
    cleanup_json json_t *net_rootful = generate_default(req);
    assert_mount(net_rootful, "/sys", "none", "/sys", "rbind,nosuid,noexec,nodev,ro");
}

/* hide_sys (ocibuild's constraint for Nix builds): neither /sys nor /sys/fs/cgroup, as in Nix's
 * sandbox; everything else stays. */
static void test_spec_hide_sys_leaves_out_sys(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    req->constraints.hide_sys = true;
    cleanup_json json_t *config = generate_default(req);
    assert_null(find_mount(config, "/sys"));
    assert_null(find_mount(config, "/sys/fs/cgroup"));
    assert_non_null(find_mount(config, "/dev/mqueue"));
    assert_mount(config, "/tmp", "tmpfs", "tmpfs", "nosuid,noatime,mode=1777");
    cleanup_json json_t *rootless = generate(req, &ROOTLESS);
    assert_null(find_mount(rootless, "/sys"));
}

/* /dev/kvm among the read-only paths is bound and, rootful, let through the device cgroup
 * (c 10:232 rw); no other device is. */
static void test_spec_dev_kvm_is_allowed_by_the_device_cgroup(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *plain = generate_default(req);
    json_t *devices =
        json_object_get(json_object_get(json_object_get(plain, "linux"), "resources"), "devices");
    assert_int_equal(json_array_size(devices), 1);
    obi_strv_free(req->constraints.available_ro_paths);
    req->constraints.available_ro_paths = calloc(2, sizeof(char *));
    req->constraints.available_ro_paths[0] = strdup("/dev/kvm");
    req->constraints.n_available_ro_paths = 1;
    cleanup_json json_t *config = generate_default(req);
    assert_mount(config, "/dev/kvm", "none", "/dev/kvm", "rbind,ro");
    devices =
        json_object_get(json_object_get(json_object_get(config, "linux"), "resources"), "devices");
    assert_int_equal(json_array_size(devices), 2);
    json_t *kvm = json_array_get(devices, 1);
    assert_true(json_is_true(json_object_get(kvm, "allow")));
    assert_string_equal(json_string_value(json_object_get(kvm, "type")), "c");
    assert_int_equal(json_integer_value(json_object_get(kvm, "major")), 10);
    assert_int_equal(json_integer_value(json_object_get(kvm, "minor")), 232);
}

static void test_spec_scratch_and_input_mounts(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *config = generate_default(req);
    assert_mount(config, "/build", "none", "scratch/" SNAME_BUILD, "rbind,rw");
    assert_mount(config, "/nix/store", "none", "scratch/" SNAME_NIX_STORE, "rbind,rw");
    assert_mount(config, "/nix/store/aaa-dep", "none", "inputs/aaa-dep", "rbind,ro,nosuid,nodev");
    assert_mount(config, "/nix/store/bbb-link", "none", "inputs/bbb-link", "rbind,ro,nosuid,nodev");
}

static void test_spec_inputs_at_root_when_inputs_dir_empty(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    fixture_set_string(&req->inputs_dir, "");
    cleanup_json json_t *config = generate_default(req);
    assert_mount(config, "/aaa-dep", "none", "inputs/aaa-dep", "rbind,ro,nosuid,nodev");
}

static void test_spec_ro_paths_bin_sh_and_network_files(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    FIXTURE_SET_RO_PATHS(req, "/dev/kvm");
    req->constraints.provide_bin_sh = true;
    req->constraints.network_access = true;
    cleanup_json json_t *config = generate_default(req);
    assert_mount(config, "/dev/kvm", "none", "/dev/kvm", "rbind,ro");
    assert_mount(config, "/bin/sh", "none", "/bin/busybox", "rbind,ro,nodev");
    assert_mount(config, "/etc/resolv.conf", "none", "/etc/resolv.conf", "rbind,ro,nodev");
    assert_mount(config, "/etc/services", "none", "/etc/services", "rbind,ro,nodev");
    assert_mount(config, "/etc/hosts", "none", "/etc/hosts", "rbind,ro,nodev");
    obi_spec_options opts = ROOTFUL;
    opts.sandbox_shell = "/opt/static/sh";
    cleanup_json json_t *custom = generate(req, &opts);
    assert_mount(custom, "/bin/sh", "none", "/opt/static/sh", "rbind,ro,nodev");
}

static void test_spec_no_network_files_without_network_access(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *config = generate_default(req);
    assert_null(find_mount(config, "/etc/resolv.conf"));
    assert_null(find_mount(config, "/etc/hosts"));
    assert_null(find_mount(config, "/bin/sh"));
}

static void test_spec_refuses_invalid_request_naming_field(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    FIXTURE_SET(req, outputs, "out/../x");
    obi_error *err = NULL;
    json_t *config = NULL;
    assert_fails_with(err, obi_spec_generate(req, &ROOTFUL, &config, &err), -EINVAL,
                      "outputs[0]: \"out/../x\" is not a clean path");
    assert_null(config);
}

static void test_spec_refuses_non_utf8_env_value(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    obi_bytes_clear(&req->environment_vars[1].value);
    obi_bytes_set(&req->environment_vars[1].value, "\xff", 1);
    obi_error *err = NULL;
    json_t *config = NULL;
    assert_fails_with(err, obi_spec_generate(req, &ROOTFUL, &config, &err), -EINVAL,
                      "environment_vars[1]: value of \"out\" is not valid UTF-8");
    assert_null(config);
}

static void test_spec_refuses_relative_sandbox_shell(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    obi_error *err = NULL;
    json_t *config = NULL;
    obi_spec_options opts = ROOTFUL;
    opts.sandbox_shell = "busybox";
    assert_fails_with(err, obi_spec_generate(req, &opts, &config, &err), -EINVAL,
                      "sandbox shell \"busybox\" is not an absolute path");
    assert_null(config);
}

/* ---- the syscall filter ---- */

static bool names_contain(json_t *rule, const char *name)
{
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(rule, "names"), i, n)
    {
        if (!strcmp(json_string_value(n), name))
            return true;
    }
    return false;
}

static bool args_contain(json_t *rule, int index, json_int_t mask)
{
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(rule, "args"), i, a)
    {
        if (json_integer_value(json_object_get(a, "index")) == index &&
            json_integer_value(json_object_get(a, "value")) == mask &&
            json_integer_value(json_object_get(a, "valueTwo")) == mask &&
            !strcmp(json_string_value(json_object_get(a, "op")), "SCMP_CMP_MASKED_EQ"))
            return true;
    }
    return false;
}

/* The errno of the rule refusing name when argument index has all bits of mask (index -1: a
 * rule without arguments; index2 -1: no second condition), or -1 when no rule does. */
static int refusal(json_t *profile, const char *name, int index, json_int_t mask, int index2,
                   json_int_t mask2)
{
    size_t i;
    json_t *rule;
    json_array_foreach(json_object_get(profile, "syscalls"), i, rule)
    {
        if (!names_contain(rule, name))
            continue;
        size_t n_args = json_array_size(json_object_get(rule, "args"));
        if (index < 0 ? n_args != 0
                      : !args_contain(rule, index, mask) ||
                            (index2 >= 0 ? !args_contain(rule, index2, mask2) : n_args != 1))
            continue;
        assert_string_equal(json_string_value(json_object_get(rule, "action")), "SCMP_ACT_ERRNO");
        return (int)json_integer_value(json_object_get(rule, "errnoRet"));
    }
    return -1;
}

static bool mentions(json_t *profile, const char *name)
{
    size_t i;
    json_t *rule;
    json_array_foreach(json_object_get(profile, "syscalls"), i, rule)
    {
        if (names_contain(rule, name))
            return true;
    }
    return false;
}

static json_t *profile_for(const char *machine)
{
    json_t *profile = NULL;
    assert_ok(obi_seccomp_build_profile(machine, &profile, err_ptr_));
    assert_string_equal(json_string_value(json_object_get(profile, "defaultAction")),
                        "SCMP_ACT_ALLOW");
    return profile;
}

static void test_seccomp_refuses_setuid_and_setgid_modes(void **state)
{
    (void)state;
    cleanup_json json_t *p = profile_for("x86_64");
    static const struct {
        const char *name;
        int mode_arg;
    } calls[] = {{"chmod", 1}, {"fchmod", 1}, {"fchmodat", 2}, {"fchmodat2", 2}};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(calls); i++) {
        assert_int_equal(refusal(p, calls[i].name, calls[i].mode_arg, S_ISUID, -1, 0), EPERM);
        assert_int_equal(refusal(p, calls[i].name, calls[i].mode_arg, S_ISGID, -1, 0), EPERM);
        assert_int_equal(refusal(p, calls[i].name, calls[i].mode_arg, S_ISVTX, -1, 0), -1);
        assert_int_equal(refusal(p, calls[i].name, -1, 0, -1, 0), -1); /* never outright */
    }
    /* As under Nix, modes given when creating a file are not looked at (docs/security.md). */
    assert_false(mentions(p, "open"));
    assert_false(mentions(p, "mknod"));
}

static void test_seccomp_refuses_xattrs_keyrings_and_dockers_list(void **state)
{
    (void)state;
    cleanup_json json_t *p = profile_for("x86_64");
    const char *xattr[] = {"setxattr", "lsetxattr", "fsetxattr", "setxattrat"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(xattr); i++)
        assert_int_equal(refusal(p, xattr[i], -1, 0, -1, 0), ENOTSUP);
    const char *eperm[] = {"keyctl",          "add_key",         "request_key",
                           "kexec_load",      "kexec_file_load", "bpf",
                           "perf_event_open", "userfaultfd",     "unshare",
                           "setns",           "fanotify_init",   "syslog",
                           "uselib",          "get_mempolicy",   "set_mempolicy",
                           "mbind",           "move_pages",      "set_mempolicy_home_node"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(eperm); i++) {
        if (refusal(p, eperm[i], -1, 0, -1, 0) != EPERM)
            fail_msg("%s is not refused with EPERM", eperm[i]);
    }
    const char *enosys[] = {"clone3", "io_uring_setup", "io_uring_enter", "io_uring_register"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(enosys); i++)
        assert_int_equal(refusal(p, enosys[i], -1, 0, -1, 0), ENOSYS);
    /* Allowed as Docker allows them (ptrace on kernels >= 4.8); left to the kernel, which
     * refuses them a build without capabilities; and plain clone. */
    const char *not_filtered[] = {"ptrace",     "process_vm_readv", "personality", "mount",
                                  "pivot_root", "reboot",           "init_module", "chown"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(not_filtered); i++)
        assert_false(mentions(p, not_filtered[i]));
    assert_int_equal(refusal(p, "clone", -1, 0, -1, 0), -1);
}

static void test_seccomp_refuses_clone_into_a_new_user_namespace(void **state)
{
    (void)state;
    cleanup_json json_t *x86 = profile_for("x86_64");
    assert_int_equal(refusal(x86, "clone", 0, CLONE_NEWUSER, -1, 0), EPERM);
    /* The other namespaces need CAP_SYS_ADMIN, which only a new user namespace could give. */
    assert_int_equal(refusal(x86, "clone", 0, CLONE_NEWNET, -1, 0), -1);
    /* s390 passes clone's flags second. */
    cleanup_json json_t *s390 = profile_for("s390x");
    assert_int_equal(refusal(s390, "clone", 1, CLONE_NEWUSER, -1, 0), EPERM);
    assert_int_equal(refusal(s390, "clone", 0, CLONE_NEWUSER, -1, 0), -1);
}

static void test_seccomp_covers_each_machines_architectures(void **state)
{
    (void)state;
    static const struct {
        const char *machine;
        const char *arches;
    } cases[] = {
        {"x86_64", "SCMP_ARCH_X86_64,SCMP_ARCH_X86"},
        {"aarch64", "SCMP_ARCH_AARCH64,SCMP_ARCH_ARM"},
        {"ppc64le", "SCMP_ARCH_PPC64LE"},
        {"riscv64", "SCMP_ARCH_RISCV64"},
        {"s390x", "SCMP_ARCH_S390X,SCMP_ARCH_S390"},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        cleanup_json json_t *p = profile_for(cases[i].machine);
        cleanup_free char *arches = string_list(json_object_get(p, "architectures"));
        assert_string_equal(arches, cases[i].arches);
    }
    cleanup_json json_t *host = profile_for(NULL);
    assert_true(json_array_size(json_object_get(host, "architectures")) > 0);
}

static void test_seccomp_refuses_an_unknown_machine(void **state)
{
    (void)state;
    obi_error *err = NULL;
    json_t *p = NULL;
    assert_fails_with(err, obi_seccomp_build_profile("mips", &p, &err), -ENOTSUP,
                      "no syscall filter for machine \"mips\" (known: x86_64, aarch64, ppc64le, "
                      "riscv64, s390x)");
    assert_null(p);
    cleanup_build_request obi_build_request *req = fixture_request();
    obi_spec_options opts = ROOTFUL;
    opts.machine = "mips";
    json_t *config = NULL;
    assert_fails_with(err, obi_spec_generate(req, &opts, &config, &err), -ENOTSUP, "mips");
    assert_null(config);
}

static void test_spec_carries_the_filter_rootful_and_rootless(void **state)
{
    (void)state;
    cleanup_build_request obi_build_request *req = fixture_request();
    cleanup_json json_t *expected = profile_for("x86_64");
    for (int rootless = 0; rootless < 2; rootless++) {
        cleanup_json json_t *config = generate(req, rootless ? &ROOTLESS : &ROOTFUL);
        json_t *seccomp = json_object_get(json_object_get(config, "linux"), "seccomp");
        assert_true(json_equal(seccomp, expected));
    }
}

/* ---- /etc/subuid ---- */

static const char SUBUID[] = "# comment\n"
                             "\n"
                             "alice:100000:65536\n"
                             "1001:165536:65536\n"
                             "carol:231072:0\n"
                             "carol:300000:10\n"
                             "alice:500000:65536\n";

static void test_subid_matches_user_name(void **state)
{
    (void)state;
    obi_subid_range r = {0};
    assert_ok(obi_subid_parse(SUBUID, "/etc/subuid", "uid", "alice", 1000, &r, err_ptr_));
    assert_int_equal(r.start, 100000); /* the first range wins */
    assert_int_equal(r.count, 65536);
}

static void test_subid_matches_numeric_uid(void **state)
{
    (void)state;
    obi_subid_range r = {0};
    assert_ok(obi_subid_parse(SUBUID, "/etc/subuid", "uid", "bob", 1001, &r, err_ptr_));
    assert_int_equal(r.start, 165536);
    assert_ok(obi_subid_parse(SUBUID, "/etc/subuid", "uid", NULL, 1001, &r, err_ptr_));
    assert_int_equal(r.start, 165536);
}

static void test_subid_skips_empty_ranges(void **state)
{
    (void)state;
    obi_subid_range r = {0};
    assert_ok(obi_subid_parse(SUBUID, "/etc/subuid", "uid", "carol", 1002, &r, err_ptr_));
    assert_int_equal(r.start, 300000);
}

static void test_subid_missing_range_says_how_to_add_one(void **state)
{
    (void)state;
    obi_subid_range r = {7, 7};
    obi_error *err = NULL;
    assert_fails_with(err, obi_subid_parse(SUBUID, "/etc/subuid", "uid", "dave", 1003, &r, &err),
                      -ENOENT,
                      "no subordinate uid range for user dave (uid 1003) in /etc/subuid; rootless "
                      "builds need one: add it with `usermod --add-subuids 100000-165535 dave`");
    assert_fails_with(err, obi_subid_parse("", "/etc/subgid", "gid", "dave", 1003, &r, &err),
                      -ENOENT, "usermod --add-subgids 100000-165535 dave");
    assert_int_equal(r.start, 7);
}

static void test_subid_malformed_line_names_file_and_line(void **state)
{
    (void)state;
    obi_subid_range r;
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_subid_parse("alice:1:2\nbob:x:3\n", "/etc/subuid", "uid", "bob", 1, &r, &err),
        -EINVAL, "/etc/subuid:2: malformed line");
    assert_fails_with(err, obi_subid_parse("bob:1\n", "f", "uid", "bob", 1, &r, &err), -EINVAL,
                      "f:1: malformed line");
    assert_fails_with(err, obi_subid_parse("bob:1:99999999999\n", "f", "uid", "bob", 1, &r, &err),
                      -EINVAL, "f:1: malformed line");
    assert_fails_with(err, obi_subid_parse(":1:2\n", "f", "uid", "bob", 1, &r, &err), -EINVAL,
                      "f:1: malformed line");
}

static void test_subid_lookup_reads_file_and_treats_missing_as_empty(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *path = obi_path_join(dir, "subuid");
    assert_ok(obi_write_file(path, SUBUID, strlen(SUBUID), 0644, err_ptr_));
    obi_subid_range r;
    assert_ok(obi_subid_lookup(path, "uid", "alice", 1000, &r, err_ptr_));
    assert_int_equal(r.start, 100000);
    cleanup_free char *missing = obi_path_join(dir, "nope");
    obi_error *err = NULL;
    assert_fails_with(err, obi_subid_lookup(missing, "uid", "alice", 1000, &r, &err), -ENOENT,
                      "usermod --add-subuids");
    obi_test_tmpdir_remove(dir);
}

static void test_subid_current_user_uses_override_files(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *subuid = obi_path_join(dir, "subuid");
    cleanup_free char *subgid = obi_path_join(dir, "subgid");
    char text[64];
    snprintf(text, sizeof text, "%u:400000:65536\n", (unsigned)getuid());
    assert_ok(obi_write_file(subuid, text, strlen(text), 0644, err_ptr_));
    snprintf(text, sizeof text, "%u:500000:65536\n", (unsigned)getuid());
    assert_ok(obi_write_file(subgid, text, strlen(text), 0644, err_ptr_));
    setenv("OCIBUILD_SUBUID_FILE", subuid, 1);
    setenv("OCIBUILD_SUBGID_FILE", subgid, 1);
    obi_spec_options opts = {0};
    assert_ok(obi_spec_options_rootless_current_user(&opts, err_ptr_));
    assert_true(opts.rootless);
    assert_int_equal(opts.root_uid, getuid());
    assert_int_equal(opts.root_gid, getgid());
    assert_int_equal(opts.build_uid, 400000);
    assert_int_equal(opts.build_gid, 500000);
    assert_ok(obi_write_file(subgid, "", 0, 0644, err_ptr_));
    obi_spec_options untouched = {0};
    obi_error *err = NULL;
    assert_fails_with(err, obi_spec_options_rootless_current_user(&untouched, &err), -ENOENT,
                      "no subordinate gid range");
    assert_false(untouched.rootless);
    unsetenv("OCIBUILD_SUBUID_FILE");
    unsetenv("OCIBUILD_SUBGID_FILE");
    obi_test_tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_scratch_name_vectors),
        cmocka_unit_test(test_spec_output_host_paths),
        cmocka_unit_test(test_spec_top_level_fields),
        cmocka_unit_test(test_spec_process),
        cmocka_unit_test(test_spec_cwd_of_empty_working_dir_is_root),
        cmocka_unit_test(test_spec_masks_runc_default_paths),
        cmocka_unit_test(test_spec_no_capability_in_any_set),
        cmocka_unit_test(test_spec_namespaces),
        cmocka_unit_test(test_spec_rootless_id_mappings),
        cmocka_unit_test(test_spec_rootful_maps_its_id_slot_and_denies_devices),
        cmocka_unit_test(test_spec_limits_are_cgroup_resources_of_rootful_builds),
        cmocka_unit_test(test_spec_without_a_cgroup_limits_processes_by_rlimit),
        cmocka_unit_test(test_spec_refuses_host_root_ids),
        cmocka_unit_test(test_spec_mount_order),
        cmocka_unit_test(test_spec_minimal_request_mounts),
        cmocka_unit_test(test_spec_standard_mounts_rootful),
        cmocka_unit_test(test_spec_standard_mounts_rootless),
        cmocka_unit_test(test_spec_hide_sys_leaves_out_sys),
        cmocka_unit_test(test_spec_dev_kvm_is_allowed_by_the_device_cgroup),
        cmocka_unit_test(test_spec_scratch_and_input_mounts),
        cmocka_unit_test(test_spec_inputs_at_root_when_inputs_dir_empty),
        cmocka_unit_test(test_spec_ro_paths_bin_sh_and_network_files),
        cmocka_unit_test(test_spec_no_network_files_without_network_access),
        cmocka_unit_test(test_spec_refuses_invalid_request_naming_field),
        cmocka_unit_test(test_spec_refuses_non_utf8_env_value),
        cmocka_unit_test(test_spec_refuses_relative_sandbox_shell),
        cmocka_unit_test(test_seccomp_refuses_setuid_and_setgid_modes),
        cmocka_unit_test(test_seccomp_refuses_xattrs_keyrings_and_dockers_list),
        cmocka_unit_test(test_seccomp_refuses_clone_into_a_new_user_namespace),
        cmocka_unit_test(test_seccomp_covers_each_machines_architectures),
        cmocka_unit_test(test_seccomp_refuses_an_unknown_machine),
        cmocka_unit_test(test_spec_carries_the_filter_rootful_and_rootless),
        cmocka_unit_test(test_subid_matches_user_name),
        cmocka_unit_test(test_subid_matches_numeric_uid),
        cmocka_unit_test(test_subid_skips_empty_ranges),
        cmocka_unit_test(test_subid_missing_range_says_how_to_add_one),
        cmocka_unit_test(test_subid_malformed_line_names_file_and_line),
        cmocka_unit_test(test_subid_lookup_reads_file_and_treats_missing_as_empty),
        cmocka_unit_test(test_subid_current_user_uses_override_files),
    };
    return cmocka_run_group_tests_name("spec", tests, NULL, NULL);
}
