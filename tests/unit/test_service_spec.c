/*
 * Service spec generation against spec/service.md: process (user, cwd, args precedence), env
 * layering without duplicate keys, GPU and distributed env per vendor, capability sets, mounts,
 * namespaces, resources, device cgroup rules and device lists read from fake device nodes
 * (mknod in a temp /dev tree: needs root, skipped loudly otherwise), masked paths. Bundles are
 * test_service_bundle.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "ocibuild/oci_defaults.h"
#include "service_fixture.h"

/* mknod a character device below the fake /dev; false (and a loud message) when not root. */
static bool fake_node(fixture *f, const char *name, unsigned maj, unsigned min)
{
    char *path = obi_path_join(f->dev, name);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    assert_ok(obi_mkdir_p(path, 0755, err_ptr_));
    *slash = '/';
    int r = mknod(path, S_IFCHR | 0600, makedev(maj, min));
    free(path);
    return r == 0;
}

#define REQUIRE_ROOT() OBI_TEST_REQUIRE_ROOT("mknod of fake device nodes needs root")

static bool strv_json_contains(json_t *array, const char *value)
{
    size_t i;
    json_t *item;
    json_array_foreach(array, i, item) if (!strcmp(json_string_value(item), value)) return true;
    return false;
}

static void assert_json_strings(json_t *array, const char *const *expected, size_t n)
{
    assert_int_equal(json_array_size(array), n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(json_string_value(json_array_get(array, i)), expected[i]);
}

static const char *env_value(json_t *config, const char *name)
{
    json_t *env = path_get(config, "process.env");
    size_t i, len = strlen(name);
    json_t *item;
    const char *found = NULL;
    json_array_foreach(env, i, item)
    {
        const char *s = json_string_value(item);
        if (!strncmp(s, name, len) && s[len] == '=') {
            assert_null(found); /* never twice */
            found = s + len + 1;
        }
    }
    return found;
}

static void assert_no_duplicate_env(json_t *config)
{
    json_t *env = path_get(config, "process.env");
    for (size_t i = 0; i < json_array_size(env); i++)
        for (size_t j = 0; j < i; j++) {
            const char *a = json_string_value(json_array_get(env, i));
            const char *b = json_string_value(json_array_get(env, j));
            size_t la = strcspn(a, "="), lb = strcspn(b, "=");
            assert_false(la == lb && !strncmp(a, b, la));
        }
}

static json_t *find_rule(json_t *config, long maj, long min)
{
    json_t *rules = path_get(config, "linux.resources.devices");
    size_t i;
    json_t *rule;
    json_array_foreach(rules, i, rule)
    {
        json_t *jmaj = json_object_get(rule, "major"), *jmin = json_object_get(rule, "minor");
        if (jmaj && json_integer_value(jmaj) == maj &&
            (min < 0 ? !jmin : jmin && json_integer_value(jmin) == min))
            return rule;
    }
    return NULL;
}

static json_t *find_device(json_t *config, const char *path)
{
    json_t *devices = path_get(config, "linux.devices");
    size_t i;
    json_t *dev;
    json_array_foreach(devices, i, dev) if (!strcmp(json_string_value(json_object_get(dev, "path")),
                                                    path)) return dev;
    return NULL;
}

/* ---- process ----------------------------------------------------------------------------- */

static void test_spec_defaults(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {}\n");
    assert_string_equal(json_string_value(json_object_get(c, "ociVersion")), "1.0.2");
    assert_string_equal(json_string_value(path_get(c, "root.path")), "rootfs");
    assert_true(json_is_false(path_get(c, "root.readonly")));
    assert_true(json_is_false(path_get(c, "process.terminal")));
    assert_int_equal(json_integer_value(path_get(c, "process.user.uid")), 0);
    assert_int_equal(json_integer_value(path_get(c, "process.user.gid")), 0);
    assert_string_equal(json_string_value(path_get(c, "process.cwd")), "/");
    static const char *const sh[] = {"/bin/sh"};
    assert_json_strings(path_get(c, "process.args"), sh, 1);
    assert_true(json_is_true(path_get(c, "process.noNewPrivileges")));
    assert_string_equal(json_string_value(json_object_get(c, "hostname")), "web-rep-1");
    assert_string_equal(env_value(c, "PATH"),
                        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    assert_string_equal(env_value(c, "TERM"), "xterm");
    assert_string_equal(json_string_value(path_get(c, "linux.rootfsPropagation")), "private");
    assert_null(path_get(c, "linux.resources.cpu"));
    assert_null(path_get(c, "linux.resources.memory"));
}

static void test_spec_args_precedence(void **state)
{
    fixture *f = *state;
    char *image_ep[] = {"/image-ep", "x", NULL};
    char *image_cmd[] = {"/image-cmd", NULL};
    obi_image_config image = {.entrypoint = image_ep, .cmd = image_cmd};
    obi_service_spec_options opts = default_options(f);
    opts.image = &image;
    load(f, HEADER "  both: {command: {entrypoint: [/ep, a], args: [b]}}\n"
                   "  ep: {command: {entrypoint: [/ep]}}\n"
                   "  args: {command: {args: [/args, c]}}\n"
                   "  none: {}\n");
    static const char *const both[] = {"/ep", "a", "b"};
    assert_json_strings(path_get(generate_with(f, "both", &opts), "process.args"), both, 3);
    static const char *const ep[] = {"/ep"};
    assert_json_strings(path_get(generate_with(f, "ep", &opts), "process.args"), ep, 1);
    static const char *const args[] = {"/args", "c"};
    assert_json_strings(path_get(generate_with(f, "args", &opts), "process.args"), args, 2);
    static const char *const img[] = {"/image-ep", "x", "/image-cmd"};
    assert_json_strings(path_get(generate_with(f, "none", &opts), "process.args"), img, 3);
    image.entrypoint = NULL;
    static const char *const cmd_only[] = {"/image-cmd"};
    assert_json_strings(path_get(generate_with(f, "none", &opts), "process.args"), cmd_only, 1);
    char *override[] = {"/override", NULL};
    opts.args_override = override;
    static const char *const ov[] = {"/override"};
    assert_json_strings(path_get(generate_with(f, "both", &opts), "process.args"), ov, 1);
}

static void test_spec_cwd_precedence(void **state)
{
    fixture *f = *state;
    obi_image_config image = {.working_dir = "/image-wd"};
    obi_service_spec_options opts = default_options(f);
    opts.image = &image;
    load(f, HEADER "  wd: {command: {workdir: /svc}}\n  none: {}\n");
    assert_string_equal(json_string_value(path_get(generate_with(f, "wd", &opts), "process.cwd")),
                        "/svc");
    assert_string_equal(json_string_value(path_get(generate_with(f, "none", &opts), "process.cwd")),
                        "/image-wd");
    opts.cwd_override = "/override";
    assert_string_equal(json_string_value(path_get(generate_with(f, "wd", &opts), "process.cwd")),
                        "/override");
}

static void write_rootfs_file(fixture *f, const char *relative, const char *text)
{
    char *path = obi_path_join(f->dir, relative);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    assert_ok(obi_mkdir_p(path, 0755, err_ptr_));
    *slash = '/';
    assert_ok(obi_write_file(path, text, strlen(text), 0644, err_ptr_));
    free(path);
}

static void test_spec_user_resolution(void **state)
{
    fixture *f = *state;
    write_rootfs_file(f, "rootfs/etc/passwd",
                      "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/false\n");
    write_rootfs_file(f, "rootfs/etc/group", "root:x:0:\nstaff:x:50:\n");
    char *rootfs = obi_path_join(f->dir, "rootfs");
    static const struct {
        const char *user;
        unsigned uid, gid;
    } ok[] = {
        {"1000", 1000, 1000},  {"1000:2000", 1000, 2000}, {"www", 33, 34},
        {"www:staff", 33, 50}, {"www:7", 33, 7},          {"5:staff", 5, 50},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        unsigned uid = 99, gid = 99;
        assert_ok(obi_resolve_user(ok[i].user, rootfs, &uid, &gid, err_ptr_));
        assert_int_equal(uid, ok[i].uid);
        assert_int_equal(gid, ok[i].gid);
    }
    obi_error *err = NULL;
    unsigned uid, gid;
    assert_fails_with(err, obi_resolve_user("nobody", rootfs, &uid, &gid, &err), -ENOENT,
                      "image User \"nobody\": \"nobody\" not found in");
    assert_fails_with(err, obi_resolve_user("www:wheel", rootfs, &uid, &gid, &err), -ENOENT,
                      "\"wheel\" not found");
    assert_fails_with(err, obi_resolve_user("ww", rootfs, &uid, &gid, &err), -ENOENT, "not found");
    assert_fails_with(err, obi_resolve_user("www", NULL, &uid, &gid, &err), -ENOENT,
                      "without a rootfs");
    assert_fails_with(err, obi_resolve_user("1:", rootfs, &uid, &gid, &err), -EINVAL,
                      "expected uid[:gid]");
    /* A symlink to a host file resolves inside the rootfs, never on the host. */
    char *passwd = obi_path_join(rootfs, "etc/passwd");
    unlink(passwd);
    assert_int_equal(symlink("/etc/real-passwd", passwd), 0);
    write_rootfs_file(f, "rootfs/etc/real-passwd", "root:x:7:8::/:/bin/sh\n");
    assert_ok(obi_resolve_user("root", rootfs, &uid, &gid, err_ptr_));
    assert_int_equal(uid, 7);
    assert_int_equal(gid, 8);

    obi_image_config image = {.user = "www:staff"};
    unlink(passwd);
    free(passwd);
    write_rootfs_file(f, "rootfs/etc/passwd", "www:x:33:34::/:/bin/false\n");
    obi_service_spec_options opts = default_options(f);
    opts.image = &image;
    opts.rootfs = rootfs;
    load(f, HEADER "  web: {}\n");
    json_t *c = generate_with(f, "web", &opts);
    assert_int_equal(json_integer_value(path_get(c, "process.user.uid")), 33);
    assert_int_equal(json_integer_value(path_get(c, "process.user.gid")), 50);
    image.user = "ghost";
    const obi_service *svc = obi_deployment_find(f->deployment, "web");
    json_t *out = NULL;
    assert_fails_with(err, obi_service_spec_generate(f->deployment, svc, &opts, &out, NULL, &err),
                      -ENOENT, "\"ghost\" not found");
    assert_null(out);
    free(rootfs);
}

/* ---- env --------------------------------------------------------------------------------- */

static void test_spec_env_layers_replace_without_duplicates(void **state)
{
    fixture *f = *state;
    char *image_env[] = {"PATH=/image/bin", "A=image", "B=image", "TERM=vt100", NULL};
    obi_image_config image = {.env = image_env};
    char *extra[] = {"B=extra", "C=extra", NULL};
    obi_service_spec_options opts = default_options(f);
    opts.image = &image;
    opts.extra_env = extra;
    setenv("OBI_SPEC_TEST", "from-env", 1);
    load(f, HEADER "  web:\n    env: {A: spec, B: spec, PATH: /spec/bin, E: $E:OBI_SPEC_TEST}\n"
                   "    resources: {gpu: {count: 2}}\n");
    json_t *c = generate_with(f, "web", &opts);
    assert_no_duplicate_env(c);
    assert_string_equal(env_value(c, "PATH"), "/spec/bin");
    assert_string_equal(env_value(c, "TERM"), "vt100");
    assert_string_equal(env_value(c, "A"), "spec");
    assert_string_equal(env_value(c, "B"), "extra");
    assert_string_equal(env_value(c, "C"), "extra");
    assert_string_equal(env_value(c, "E"), "from-env");
    assert_string_equal(env_value(c, "NVIDIA_VISIBLE_DEVICES"), "0,1");
    /* GPU visibility is the last layer: it wins over a user-provided value */
    char *extra_gpu[] = {"CUDA_VISIBLE_DEVICES=7", NULL};
    opts.extra_env = extra_gpu;
    c = generate_with(f, "web", &opts);
    assert_no_duplicate_env(c);
    assert_string_equal(env_value(c, "CUDA_VISIBLE_DEVICES"), "0,1");
    unsetenv("OBI_SPEC_TEST");
    const obi_service *svc = obi_deployment_find(f->deployment, "web");
    json_t *out = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_service_spec_generate(f->deployment, svc, &opts, &out, NULL, &err),
                      -ENOENT, "services.web.env.E: environment variable \"OBI_SPEC_TEST\"");
    char *bad_extra[] = {"NOEQUALS", NULL};
    opts.extra_env = bad_extra;
    setenv("OBI_SPEC_TEST", "x", 1);
    assert_fails_with(err, obi_service_spec_generate(f->deployment, svc, &opts, &out, NULL, &err),
                      -EINVAL, "extra env[0]: \"NOEQUALS\" is not KEY=value");
    unsetenv("OBI_SPEC_TEST");
}

static void test_spec_unresolved_secret_never_reaches_config(void **state)
{
    fixture *f = *state;
    load(f, HEADER "  web: {env: {P: $S:pass}}\n");
    obi_service_spec_options opts = default_options(f);
    const obi_service *svc = obi_deployment_find(f->deployment, "web");
    json_t *out = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_service_spec_generate(f->deployment, svc, &opts, &out, NULL, &err),
                      -ENOENT, "services.web.env.P: \"$S:pass\": no secrets provider");
    assert_null(out);
}

static void test_spec_gpu_env_per_vendor(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {resources: {gpu: {count: 3, vendor: amd}}}\n");
    assert_string_equal(env_value(c, "ROCR_VISIBLE_DEVICES"), "0,1,2");
    assert_string_equal(env_value(c, "HIP_VISIBLE_DEVICES"), "0,1,2");
    assert_null(env_value(c, "NVIDIA_VISIBLE_DEVICES"));
    c = generate(f, HEADER "  web: {resources: {gpu: {count: 1, vendor: intel}}}\n");
    assert_string_equal(env_value(c, "ZE_AFFINITY_MASK"), "0");
    assert_null(env_value(c, "ROCR_VISIBLE_DEVICES"));
    c = generate(f, HEADER "  web: {resources: {gpu: {count: 1, vendor: nvidia}}}\n");
    assert_string_equal(env_value(c, "NVIDIA_VISIBLE_DEVICES"), "0");
    assert_string_equal(env_value(c, "CUDA_VISIBLE_DEVICES"), "0");
    assert_null(env_value(c, "MASTER_ADDR"));
    c = generate(f, HEADER "  web: {resources: {gpu: {count: 1, vendor: acme}}}\n");
    assert_null(env_value(c, "NVIDIA_VISIBLE_DEVICES"));
    assert_null(env_value(c, "ZE_AFFINITY_MASK"));
}

static void test_spec_distributed_env(void **state)
{
    fixture *f = *state;
    json_t *c =
        generate(f, HEADER "  web: {resources: {gpu: {distributed: {master_port: 1234}}}}\n");
    assert_string_equal(env_value(c, "MASTER_PORT"), "1234");
    assert_string_equal(env_value(c, "MASTER_ADDR"), "web");
    assert_string_equal(env_value(c, "WORLD_SIZE"), "1");
    assert_string_equal(env_value(c, "RANK"), "0");
    assert_string_equal(env_value(c, "LOCAL_RANK"), "0");
    assert_string_equal(env_value(c, "NCCL_SOCKET_IFNAME"), "eth0");
    assert_null(env_value(c, "GLOO_SOCKET_IFNAME"));
    c = generate(f, HEADER "  web: {resources: {gpu: {distributed: {backend: gloo}}}}\n");
    assert_string_equal(env_value(c, "GLOO_SOCKET_IFNAME"), "eth0");
    assert_string_equal(env_value(c, "MASTER_PORT"), "29500");
    assert_null(env_value(c, "NCCL_SOCKET_IFNAME"));
}

/* ---- capabilities ------------------------------------------------------------------------ */

static void test_spec_capability_sets(void **state)
{
    fixture *f = *state;
    static const char *sets[] = {"bounding", "effective", "permitted"};
    json_t *c = generate(f, HEADER "  web: {}\n");
    for (size_t s = 0; s < 3; s++) {
        char key[64];
        snprintf(key, sizeof key, "process.capabilities.%s", sets[s]);
        assert_json_strings(path_get(c, key), (const char *const *)OBI_DEFAULT_CAPABILITIES,
                            OBI_DEFAULT_CAPABILITY_COUNT);
    }
    assert_int_equal(json_array_size(path_get(c, "process.capabilities.inheritable")), 0);
    assert_int_equal(json_array_size(path_get(c, "process.capabilities.ambient")), 0);

    c = generate(f, HEADER "  web: {privileged: true}\n");
    for (size_t s = 0; s < 3; s++) {
        char key[64];
        snprintf(key, sizeof key, "process.capabilities.%s", sets[s]);
        assert_json_strings(path_get(c, key), (const char *const *)OBI_CAPABILITIES, 41);
    }
    assert_true(json_is_false(path_get(c, "process.noNewPrivileges")));

    c = generate(f, HEADER "  web: {capabilities: [sys_admin, CAP_KILL]}\n");
    static const char *const explicit_caps[] = {"CAP_SYS_ADMIN", "CAP_KILL"};
    assert_json_strings(path_get(c, "process.capabilities.effective"), explicit_caps, 2);
    assert_true(json_is_false(path_get(c, "process.noNewPrivileges")));
    assert_int_equal(json_array_size(path_get(c, "process.capabilities.ambient")), 0);

    c = generate(f, HEADER "  web: {capabilities: []}\n");
    assert_int_equal(json_array_size(path_get(c, "process.capabilities.bounding")), 0);
}

/* privileged: true asks for what the host can grant (docker and podman do the same), so a
 * host whose bounding set lacks CAP_SYS_RESOURCE still runs it; the config says exactly that. */
static void test_spec_privileged_gets_the_host_bounding_set(void **state)
{
    fixture *f = *state;
    load(f, HEADER "  web: {privileged: true}\n");
    obi_service_spec_options opts = default_options(f);
    opts.bounding_set = &NO_SYS_RESOURCE;
    json_t *c = generate_with(f, "web", &opts);
    static const char *sets[] = {"bounding", "effective", "permitted"};
    for (size_t s = 0; s < 3; s++) {
        char key[64];
        snprintf(key, sizeof key, "process.capabilities.%s", sets[s]);
        json_t *granted = path_get(c, key);
        assert_int_equal(json_array_size(granted), 40);
        assert_false(strv_json_contains(granted, "CAP_SYS_RESOURCE"));
        assert_true(strv_json_contains(granted, "CAP_SYS_ADMIN"));
    }
    /* the defaults likewise: a host without CAP_NET_RAW gets 13 of the 14 */
    uint64_t no_net_raw = ALL_CAPABILITIES & ~(UINT64_C(1) << 13);
    load(f, HEADER "  web: {}\n");
    opts.bounding_set = &no_net_raw;
    c = generate_with(f, "web", &opts);
    assert_int_equal(json_array_size(path_get(c, "process.capabilities.effective")), 13);
    assert_false(strv_json_contains(path_get(c, "process.capabilities.effective"), "CAP_NET_RAW"));
}

/* A capability the document names and the host cannot grant is refused before any runtime
 * starts, named (the runtime would only say "unable to apply caps: operation not permitted"). */
static void test_spec_explicit_capability_outside_the_bounding_set_is_refused(void **state)
{
    fixture *f = *state;
    load(f, HEADER "  web: {capabilities: [KILL, sys_resource]}\n");
    obi_service_spec_options opts = default_options(f);
    opts.bounding_set = &NO_SYS_RESOURCE;
    obi_error *err = NULL;
    json_t *c = NULL;
    assert_fails_with(err,
                      obi_service_spec_generate(f->deployment, &f->deployment->services[0], &opts,
                                                &c, NULL, &err),
                      -EPERM,
                      "services.web.capabilities: CAP_SYS_RESOURCE is not in this host's "
                      "capability bounding set (CapBnd 000001fffeffffff)");
    assert_null(c);
    load(f, HEADER "  web: {capabilities: [KILL]}\n");
    c = generate_with(f, "web", &opts);
    static const char *const kill_only[] = {"CAP_KILL"};
    assert_json_strings(path_get(c, "process.capabilities.permitted"), kill_only, 1);
}

/* The bounding set read from this process matches what the kernel shows in /proc. */
static void test_spec_bounding_set_is_this_process_s(void **state)
{
    (void)state;
    FILE *status = fopen("/proc/self/status", "r");
    assert_non_null(status);
    char line[256];
    unsigned long long proc_mask = 0;
    bool found = false;
    while (fgets(line, sizeof line, status))
        if (sscanf(line, "CapBnd: %llx", &proc_mask) == 1)
            found = true;
    fclose(status);
    assert_true(found);
    assert_int_equal(obi_service_bounding_set(), proc_mask);
}

/* ---- mounts, namespaces, resources ------------------------------------------------------- */

static void test_spec_mounts_in_order(void **state)
{
    fixture *f = *state;
    json_t *c =
        generate(f, HEADER "  web:\n    scale: {mode: fixed, replicas: 3}\n    storage:\n"
                           "      - {type: tmpfs, target: /run/app, size: 64Mi, mode: \"1777\"}\n"
                           "      - {type: bind, source: /srv, target: /data, readonly: true}\n"
                           "      - {type: named, name: cache, target: /cache}\n"
                           "      - {type: anonymous, target: /scratch}\n"
                           "      - {type: s3, bucket: models, prefix: v1/, target: /models}\n"
                           "      - {type: tmpfs, target: /t2}\n");
    json_t *mounts = json_object_get(c, "mounts");
    static const char *const dest[] = {
        "/proc",    "/dev",  "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
        "/run/app", "/data", "/cache",   "/scratch", "/models",     "/t2"};
    assert_int_equal(json_array_size(mounts), 13);
    for (size_t i = 0; i < 13; i++)
        assert_string_equal(
            json_string_value(json_object_get(json_array_get(mounts, i), "destination")), dest[i]);
    json_t *sys = json_array_get(mounts, 5);
    assert_true(strv_json_contains(json_object_get(sys, "options"), "ro"));
    json_t *cg = json_array_get(mounts, 6);
    assert_string_equal(json_string_value(json_object_get(cg, "type")), "cgroup2");
    json_t *tmpfs = json_array_get(mounts, 7);
    static const char *const tmpfs_opts[] = {"nosuid", "nodev", "size=67108864", "mode=1777"};
    assert_json_strings(json_object_get(tmpfs, "options"), tmpfs_opts, 4);
    static const char *const t2_opts[] = {"nosuid", "nodev"};
    assert_json_strings(json_object_get(json_array_get(mounts, 12), "options"), t2_opts, 2);
    json_t *bind = json_array_get(mounts, 8);
    assert_string_equal(json_string_value(json_object_get(bind, "type")), "none");
    assert_string_equal(json_string_value(json_object_get(bind, "source")), "/srv");
    static const char *const ro[] = {"rbind", "ro", "nosuid", "nodev"}, *const rw[] = {
                                                                            "rbind", "rw", "nosuid",
                                                                            "nodev"};
    assert_json_strings(json_object_get(bind, "options"), ro, 4);
    json_t *named = json_array_get(mounts, 9);
    assert_json_strings(json_object_get(named, "options"), rw, 4);
    for (size_t i = 7; i < 13; i++) { /* every volume and tmpfs: no set-id, no devices */
        json_t *options = json_object_get(json_array_get(mounts, i), "options");
        assert_true(strv_json_contains(options, "nosuid"));
        assert_true(strv_json_contains(options, "nodev"));
    }
    char expected[512];
    snprintf(expected, sizeof expected, "%s/volumes/web-stack/cache", f->data);
    assert_string_equal(json_string_value(json_object_get(named, "source")), expected);
    snprintf(expected, sizeof expected, "%s/anonymous/web-stack/web-rep-1/3", f->data);
    assert_string_equal(json_string_value(json_object_get(json_array_get(mounts, 10), "source")),
                        expected);
    snprintf(expected, sizeof expected, "%s/s3/models/v1", f->data);
    assert_string_equal(json_string_value(json_object_get(json_array_get(mounts, 11), "source")),
                        expected);

    load(f, HEADER "  web: {privileged: true, scale: {mode: fixed, replicas: 2}}\n");
    obi_service_spec_options opts = default_options(f);
    opts.cgroup = OBI_CGROUP_V1;
    opts.replica = 2;
    c = generate_with(f, "web", &opts);
    mounts = json_object_get(c, "mounts");
    assert_false(strv_json_contains(json_object_get(json_array_get(mounts, 5), "options"), "ro"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(mounts, 6), "type")),
                        "cgroup");
    assert_string_equal(json_string_value(json_object_get(c, "hostname")), "web-rep-2");
}

static void test_spec_namespaces(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {hostname: box}\n");
    json_t *ns = path_get(c, "linux.namespaces");
    static const char *const types[] = {"pid", "ipc", "uts", "mount", "network", "user"};
    assert_int_equal(json_array_size(ns), 6);
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(ns, i), "type")),
                            types[i]);
    assert_string_equal(json_string_value(json_object_get(c, "hostname")), "box");
    c = generate(f, HEADER "  web: {host_network: true}\n");
    assert_int_equal(json_array_size(path_get(c, "linux.namespaces")), 5);
    c = generate(f, HEADER "  web: {privileged: true}\n");
    assert_int_equal(json_array_size(path_get(c, "linux.namespaces")), 5);
}

/* pid_mode/ipc_mode host: no pid/ipc namespace of the replica's own; userns_mode host: no user
 * namespace and no id maps; service:NAME keeps the replica's own. */
static void test_spec_host_namespace_modes(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {pid_mode: host, ipc_mode: host, userns_mode: host}\n");
    json_t *ns = path_get(c, "linux.namespaces");
    static const char *const types[] = {"uts", "mount", "network"};
    assert_int_equal(json_array_size(ns), 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(ns, i), "type")),
                            types[i]);
    assert_null(path_get(c, "linux.uidMappings"));
    assert_null(path_get(c, "linux.gidMappings"));
    c = generate(f, HEADER "  web: {pid_mode: host, privileged: true}\n");
    assert_int_equal(json_array_size(path_get(c, "linux.namespaces")), 4); /* no pid, no user */
    c = generate(f, HEADER "  web: {pid_mode: \"service:db\", ipc_mode: shareable}\n");
    assert_int_equal(json_array_size(path_get(c, "linux.namespaces")), 6);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(path_get(c, "linux.namespaces"), 0), "type")),
                        "pid");
}

/* init_container: the host's tini bound read-only at /dev/init and put before the command;
 * without it, neither. */
static void test_spec_init_container_runs_tini_first(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {init_container: true, command: {args: [sleep, "
                                   "\"9\"]}}\n");
    static const char *const args[] = {"/dev/init", "--", "sleep", "9"};
    assert_json_strings(path_get(c, "process.args"), args, 4);
    json_t *mounts = json_object_get(c, "mounts");
    json_t *init = json_array_get(mounts, json_array_size(mounts) - 1);
    assert_string_equal(json_string_value(json_object_get(init, "destination")), "/dev/init");
    assert_string_equal(json_string_value(json_object_get(init, "source")), "/usr/bin/tini-static");
    assert_string_equal(json_string_value(json_object_get(init, "type")), "none");
    static const char *const options[] = {"bind", "ro", "nosuid", "nodev"};
    assert_json_strings(json_object_get(init, "options"), options, 4);
    c = generate(f, HEADER "  web: {init_container: false, command: {args: [sleep]}}\n");
    static const char *const plain[] = {"sleep"};
    assert_json_strings(path_get(c, "process.args"), plain, 1);
    mounts = json_object_get(c, "mounts");
    for (size_t i = 0; i < json_array_size(mounts); i++)
        assert_string_not_equal(
            json_string_value(json_object_get(json_array_get(mounts, i), "destination")),
            "/dev/init");
}

/* stop_signal and stop_grace_period are annotations beside the labels; without them, no
 * annotations at all. */
static void test_spec_stop_keys_are_annotations(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {stop_signal: USR1, stop_grace_period: 2s, labels: "
                                   "{a: b}}\n");
    json_t *annotations = json_object_get(c, "annotations");
    assert_int_equal(json_object_size(annotations), 3);
    assert_string_equal(json_string_value(json_object_get(annotations, "a")), "b");
    assert_string_equal(
        json_string_value(json_object_get(annotations, "org.opencontainers.image.stopSignal")),
        "SIGUSR1");
    assert_string_equal(
        json_string_value(json_object_get(annotations, "org.ocibuild.stopGracePeriod")), "2000ms");
    c = generate(f, HEADER "  web: {}\n");
    assert_null(json_object_get(c, "annotations"));
}

/* The config's stop signal annotation, which must be there. */
static const char *stop_annotation(json_t *config)
{
    const char *text = json_string_value(json_object_get(json_object_get(config, "annotations"),
                                                         "org.opencontainers.image.stopSignal"));
    assert_non_null(text);
    return text;
}

/* The stop signal is chosen as Docker chooses it: the service's stop_signal, else the image
 * config's StopSignal, else none is written (the lifecycle's SIGTERM). An image StopSignal that
 * names no signal is an error naming the service, the image and the field, unless the service's
 * stop_signal overrides it. */
static void test_spec_stop_signal_is_the_services_else_the_images_else_sigterm(void **state)
{
    fixture *f = *state;
    obi_image_config image = {.stop_signal = "SIGUSR2"};
    obi_service_spec_options opts = default_options(f);
    opts.image = &image;
    load(f, HEADER "  own: {image: {name: \"oci:/layouts/app:1\"}, stop_signal: SIGUSR1}\n"
                   "  web: {image: {name: \"oci:/layouts/app:1\"}}\n");
    assert_string_equal(stop_annotation(generate_with(f, "own", &opts)), "SIGUSR1");
    assert_string_equal(stop_annotation(generate_with(f, "web", &opts)), "SIGUSR2");
    image.stop_signal = "quit"; /* the image's own spelling, as Docker reads it */
    assert_string_equal(stop_annotation(generate_with(f, "web", &opts)), "SIGQUIT");
    image.stop_signal = "SIGRTMIN+3"; /* no abbreviation: its number, which the lifecycle reads */
    char rtmin3[16];
    snprintf(rtmin3, sizeof rtmin3, "%d", SIGRTMIN + 3);
    assert_string_equal(stop_annotation(generate_with(f, "web", &opts)), rtmin3);
    image.stop_signal = NULL;
    assert_null(json_object_get(generate_with(f, "web", &opts), "annotations"));
    opts.image = NULL;
    assert_null(json_object_get(generate_with(f, "web", &opts), "annotations"));

    opts.image = &image;
    image.stop_signal = "SIGBOGUS";
    const obi_service *web = obi_deployment_find(f->deployment, "web");
    json_t *out = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_service_spec_generate(f->deployment, web, &opts, &out, NULL, &err),
                      -EINVAL,
                      "services.web.image: oci:/layouts/app:1: config.StopSignal \"SIGBOGUS\" is "
                      "not a signal");
    assert_null(out);
    assert_string_equal(stop_annotation(generate_with(f, "own", &opts)), "SIGUSR1");
}

/* Container root is the first id of the service range, not the host's root; privileged
 * services are the exception and get no user namespace at all. */
static void test_spec_user_namespace_maps_root_to_the_service_range(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {}\n");
    static const char *const maps[] = {"linux.uidMappings", "linux.gidMappings"};
    for (size_t i = 0; i < 2; i++) {
        json_t *map = path_get(c, maps[i]);
        assert_int_equal(json_array_size(map), 1);
        json_t *entry = json_array_get(map, 0);
        assert_int_equal(json_integer_value(json_object_get(entry, "containerID")), 0);
        assert_int_equal(json_integer_value(json_object_get(entry, "hostID")),
                         i ? TEST_IDS.gid : TEST_IDS.uid);
        assert_int_equal(json_integer_value(json_object_get(entry, "size")), 65536);
    }
    c = generate(f, HEADER "  web: {privileged: true}\n");
    assert_null(path_get(c, "linux.uidMappings"));
    assert_null(path_get(c, "linux.gidMappings"));
}

/* sysfs cannot be mounted by a user namespace in the host's network namespace: the host's /sys
 * is bound read-only; with its own network namespace, or privileged, sysfs as usual. */
static void test_spec_host_network_in_a_user_namespace_binds_sys_read_only(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {host_network: true}\n");
    json_t *sys = json_array_get(json_object_get(c, "mounts"), 5);
    assert_string_equal(json_string_value(json_object_get(sys, "destination")), "/sys");
    assert_string_equal(json_string_value(json_object_get(sys, "type")), "none");
    assert_string_equal(json_string_value(json_object_get(sys, "source")), "/sys");
    static const char *const bind[] = {"rbind", "nosuid", "noexec", "nodev", "ro"};
    assert_json_strings(json_object_get(sys, "options"), bind, 5);
    c = generate(f, HEADER "  web: {host_network: true, privileged: true}\n");
    sys = json_array_get(json_object_get(c, "mounts"), 5);
    assert_string_equal(json_string_value(json_object_get(sys, "type")), "sysfs");
    c = generate(f, HEADER "  web: {}\n");
    sys = json_array_get(json_object_get(c, "mounts"), 5);
    assert_string_equal(json_string_value(json_object_get(sys, "type")), "sysfs");
}

/* The range comes from the owner's lines in subuid/subgid files; without one the error says
 * how to make it. */
static void test_service_ids_lookup_reads_the_owner_s_ranges(void **state)
{
    fixture *f = *state;
    char *subuid = obi_path_join(f->dir, "subuid"), *subgid = obi_path_join(f->dir, "subgid");
    static const char uids[] = "alice:100000:65536\nocibuild-svc:500000:65536\n";
    static const char gids[] = "ocibuild-svc:600000:1000\n";
    assert_ok(obi_write_file(subuid, uids, strlen(uids), 0644, err_ptr_));
    assert_ok(obi_write_file(subgid, gids, strlen(gids), 0644, err_ptr_));
    obi_idmap ids;
    assert_ok(obi_service_ids_lookup(subuid, subgid, &ids, err_ptr_));
    assert_int_equal(ids.uid, 500000);
    assert_int_equal(ids.gid, 600000);
    assert_int_equal(ids.count, 1000); /* the smaller of the two */
    obi_error *err = NULL;
    static const char other[] = "alice:100000:65536\n";
    assert_ok(obi_write_file(subgid, other, strlen(other), 0644, err_ptr_));
    assert_fails_with(err, obi_service_ids_lookup(subuid, subgid, &ids, &err), -ENOENT,
                      "run scripts/install-deps.sh as root");
    static const char root_range[] = "ocibuild-svc:0:65536\n";
    assert_ok(obi_write_file(subgid, root_range, strlen(root_range), 0644, err_ptr_));
    assert_fails_with(err, obi_service_ids_lookup(subuid, subgid, &ids, &err), -EINVAL,
                      "starts at id 0, the host's root");
    free(subuid);
    free(subgid);
}

static void test_spec_cpu_and_memory(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {resources: {cpu: 1.5, memory: 2G}}\n");
    assert_int_equal(json_integer_value(path_get(c, "linux.resources.cpu.quota")), 150000);
    assert_int_equal(json_integer_value(path_get(c, "linux.resources.cpu.period")), 100000);
    assert_int_equal(json_integer_value(path_get(c, "linux.resources.memory.limit")), 2000000000);
    c = generate(f, HEADER "  web: {resources: {cpu: 0.01}}\n");
    assert_int_equal(json_integer_value(path_get(c, "linux.resources.cpu.quota")), 1000);
}

static void test_spec_replica_range(void **state)
{
    fixture *f = *state;
    load(f, HEADER "  web: {scale: {mode: fixed, replicas: 2}}\n");
    obi_service_spec_options opts = default_options(f);
    opts.replica = 3;
    const obi_service *svc = obi_deployment_find(f->deployment, "web");
    json_t *out = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_service_spec_generate(f->deployment, svc, &opts, &out, NULL, &err),
                      -EINVAL, "services.web: replica 3 is out of range 1..2");
    char *id = obi_service_container_id("web", 2);
    assert_string_equal(id, "web-rep-2");
    free(id);
}

/* ---- devices ----------------------------------------------------------------------------- */

static void test_spec_default_device_rules(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {}\n");
    json_t *rules = path_get(c, "linux.resources.devices");
    assert_int_equal(json_array_size(rules), 10);
    json_t *deny = json_array_get(rules, 0);
    assert_true(json_is_false(json_object_get(deny, "allow")));
    assert_string_equal(json_string_value(json_object_get(deny, "access")), "rwm");
    assert_null(json_object_get(deny, "major"));
    static const long expected[][2] = {{1, 3}, {1, 5}, {1, 7}, {1, 8},   {1, 9},
                                       {5, 0}, {5, 1}, {5, 2}, {136, -1}};
    for (size_t i = 0; i < 9; i++) {
        json_t *rule = json_array_get(rules, i + 1);
        assert_true(json_is_true(json_object_get(rule, "allow")));
        assert_string_equal(json_string_value(json_object_get(rule, "type")), "c");
        assert_string_equal(json_string_value(json_object_get(rule, "access")), "rwm");
        assert_int_equal(json_integer_value(json_object_get(rule, "major")), expected[i][0]);
        if (expected[i][1] < 0)
            assert_null(json_object_get(rule, "minor"));
        else
            assert_int_equal(json_integer_value(json_object_get(rule, "minor")), expected[i][1]);
    }
    assert_int_equal(json_array_size(path_get(c, "linux.devices")), 0);
    assert_int_equal(json_array_size(path_get(c, "linux.maskedPaths")), 10);
    assert_string_equal(json_string_value(json_array_get(path_get(c, "linux.maskedPaths"), 9)),
                        "/proc/scsi");
    assert_int_equal(json_array_size(path_get(c, "linux.readonlyPaths")), 5);
}

static void test_spec_privileged_allows_all_devices_and_masks_nothing(void **state)
{
    fixture *f = *state;
    json_t *c = generate(f, HEADER "  web: {privileged: true}\n");
    json_t *rules = path_get(c, "linux.resources.devices");
    assert_int_equal(json_array_size(rules), 1);
    assert_true(json_is_true(json_object_get(json_array_get(rules, 0), "allow")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(rules, 0), "access")),
                        "rwm");
    assert_int_equal(json_array_size(path_get(c, "linux.maskedPaths")), 0);
    assert_int_equal(json_array_size(path_get(c, "linux.readonlyPaths")), 0);
}

static void test_spec_devices_read_from_nodes_with_large_numbers(void **state)
{
    REQUIRE_ROOT();
    fixture *f = *state;
    assert_true(fake_node(f, "kvm", 10, 232));
    assert_true(fake_node(f, "big", 300, 70000)); /* 8-bit masking would give 44:112 */
    assert_true(fake_node(f, "ro", 4, 1));
    char *block = obi_path_join(f->dev, "sda");
    assert_int_equal(mknod(block, S_IFBLK | 0600, makedev(8, 0)), 0);
    free(block);
    json_t *c =
        generate(f, HEADER "  web:\n    devices:\n"
                           "      - {path: /dev/kvm, read: true, write: true, mknod: true}\n"
                           "      - {path: /dev/big}\n"
                           "      - {path: /dev/ro, write: false}\n"
                           "      - {path: /dev/sda, read: false}\n"
                           "      - {path: /dev/absent}\n");
    json_t *rule = find_rule(c, 10, 232);
    assert_non_null(rule);
    assert_string_equal(json_string_value(json_object_get(rule, "access")), "rwm");
    rule = find_rule(c, 300, 70000);
    assert_non_null(rule);
    assert_string_equal(json_string_value(json_object_get(rule, "access")), "rw");
    assert_null(find_rule(c, 44, 112));
    assert_string_equal(json_string_value(json_object_get(find_rule(c, 4, 1), "access")), "r");
    rule = find_rule(c, 8, 0);
    assert_string_equal(json_string_value(json_object_get(rule, "type")), "b");
    assert_string_equal(json_string_value(json_object_get(rule, "access")), "w");
    json_t *dev = find_device(c, "/dev/big");
    assert_non_null(dev);
    assert_int_equal(json_integer_value(json_object_get(dev, "major")), 300);
    assert_int_equal(json_integer_value(json_object_get(dev, "minor")), 70000);
    assert_int_equal(json_integer_value(json_object_get(dev, "fileMode")), 0666);
    assert_int_equal(json_integer_value(json_object_get(dev, "uid")), 0);
    assert_int_equal(json_integer_value(json_object_get(dev, "gid")), 0);
    assert_string_equal(json_string_value(json_object_get(find_device(c, "/dev/sda"), "type")),
                        "b");
    assert_int_equal(json_array_size(path_get(c, "linux.devices")), 4);
    /* the missing node is skipped with a warning naming it */
    assert_non_null(f->warnings);
    assert_non_null(strstr(f->warnings[0], "services.web.devices[4]"));
    assert_non_null(strstr(f->warnings[0], "/dev/absent does not exist"));
    assert_null(f->warnings[1]);
    assert_null(find_device(c, "/dev/absent"));
}

static void test_spec_device_that_is_not_a_node_fails(void **state)
{
    fixture *f = *state;
    char *path = obi_path_join(f->dev, "plain");
    assert_ok(obi_write_file(path, "x", 1, 0644, err_ptr_));
    free(path);
    load(f, HEADER "  web: {devices: [{path: /dev/plain}]}\n");
    obi_service_spec_options opts = default_options(f);
    json_t *out = NULL;
    obi_error *err = NULL;
    assert_fails_with(err,
                      obi_service_spec_generate(f->deployment, &f->deployment->services[0], &opts,
                                                &out, NULL, &err),
                      -EINVAL, "services.web.devices[0]: ");
}

static void test_spec_nvidia_devices(void **state)
{
    REQUIRE_ROOT();
    fixture *f = *state;
    assert_true(fake_node(f, "nvidiactl", 195, 255));
    assert_true(fake_node(f, "nvidia-uvm", 508, 0));
    assert_true(fake_node(f, "nvidia0", 195, 0));
    assert_true(fake_node(f, "nvidia1", 195, 1));
    json_t *c = generate(f, HEADER "  web: {resources: {gpu: {count: 3, vendor: nvidia}}}\n");
    assert_non_null(find_device(c, "/dev/nvidiactl"));
    assert_non_null(find_device(c, "/dev/nvidia-uvm"));
    assert_null(find_device(c, "/dev/nvidia-uvm-tools"));
    assert_non_null(find_device(c, "/dev/nvidia0"));
    assert_non_null(find_device(c, "/dev/nvidia1"));
    assert_null(find_device(c, "/dev/nvidia2"));
    assert_int_equal(json_array_size(path_get(c, "linux.devices")), 4);
    json_t *rule = find_rule(c, 195, -1);
    assert_non_null(rule);
    assert_string_equal(json_string_value(json_object_get(rule, "access")), "rwm");
    assert_non_null(find_rule(c, 508, -1));
    assert_null(find_rule(c, 226, -1));
    assert_non_null(f->warnings);
    assert_non_null(strstr(f->warnings[0], "nvidia2 does not exist"));
}

static void test_spec_amd_devices(void **state)
{
    REQUIRE_ROOT();
    fixture *f = *state;
    assert_true(fake_node(f, "kfd", 235, 0));
    assert_true(fake_node(f, "dri/renderD128", 226, 128));
    assert_true(fake_node(f, "dri/card0", 226, 0));
    assert_true(fake_node(f, "dri/renderD129", 226, 129));
    assert_true(fake_node(f, "dri/card1", 226, 1));
    json_t *c = generate(f, HEADER "  web: {resources: {gpu: {count: 2, vendor: amd}}}\n");
    static const char *const paths[] = {"/dev/kfd", "/dev/dri/renderD128", "/dev/dri/card0",
                                        "/dev/dri/renderD129", "/dev/dri/card1"};
    for (size_t i = 0; i < 5; i++)
        assert_non_null(find_device(c, paths[i]));
    assert_int_equal(
        json_integer_value(json_object_get(find_device(c, "/dev/dri/renderD129"), "minor")), 129);
    assert_non_null(find_rule(c, 226, -1));
    assert_non_null(find_rule(c, 235, -1));
    assert_null(find_rule(c, 195, -1));
    assert_null(f->warnings);
}

static void test_spec_intel_and_unknown_vendor_devices(void **state)
{
    REQUIRE_ROOT();
    fixture *f = *state;
    assert_true(fake_node(f, "dri/renderD128", 226, 128));
    assert_true(fake_node(f, "dri/card0", 226, 0));
    assert_true(fake_node(f, "kfd", 235, 0));
    json_t *c = generate(f, HEADER "  web: {resources: {gpu: {count: 1, vendor: intel}}}\n");
    assert_non_null(find_device(c, "/dev/dri/renderD128"));
    assert_non_null(find_device(c, "/dev/dri/card0"));
    assert_null(find_device(c, "/dev/kfd"));
    assert_non_null(find_rule(c, 226, -1));
    assert_null(find_rule(c, 235, -1));
    c = generate(f, HEADER "  web: {resources: {gpu: {count: 1, vendor: acme}}}\n");
    assert_int_equal(json_array_size(path_get(c, "linux.devices")), 0);
    assert_non_null(find_rule(c, 226, -1));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_spec_defaults),
        T(test_spec_args_precedence),
        T(test_spec_cwd_precedence),
        T(test_spec_user_resolution),
        T(test_spec_env_layers_replace_without_duplicates),
        T(test_spec_unresolved_secret_never_reaches_config),
        T(test_spec_gpu_env_per_vendor),
        T(test_spec_distributed_env),
        T(test_spec_capability_sets),
        T(test_spec_privileged_gets_the_host_bounding_set),
        T(test_spec_explicit_capability_outside_the_bounding_set_is_refused),
        T(test_spec_bounding_set_is_this_process_s),
        T(test_spec_mounts_in_order),
        T(test_spec_namespaces),
        T(test_spec_host_namespace_modes),
        T(test_spec_init_container_runs_tini_first),
        T(test_spec_stop_keys_are_annotations),
        T(test_spec_stop_signal_is_the_services_else_the_images_else_sigterm),
        T(test_spec_user_namespace_maps_root_to_the_service_range),
        T(test_spec_host_network_in_a_user_namespace_binds_sys_read_only),
        T(test_service_ids_lookup_reads_the_owner_s_ranges),
        T(test_spec_cpu_and_memory),
        T(test_spec_replica_range),
        T(test_spec_default_device_rules),
        T(test_spec_privileged_allows_all_devices_and_masks_nothing),
        T(test_spec_devices_read_from_nodes_with_large_numbers),
        T(test_spec_device_that_is_not_a_node_fails),
        T(test_spec_nvidia_devices),
        T(test_spec_amd_devices),
        T(test_spec_intel_and_unknown_vendor_devices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
