/*
 * The OCI defaults table shared by build and replica specs: what a build and a replica get
 * written out in full (runc's and spec/service.md's mounts, masks, devices), one table of
 * behaviours in which each field of obi_oci_defaults changes exactly its own part of the
 * defaults, the mask of a container without a cgroup filesystem, the capability sets' shape,
 * the rlimits and the capability names.
 */
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/json_util.h"
#include "ocibuild/oci_defaults.h"
#include "test_helpers.h"

/* As spec.c and service_spec.c fill them in. */
static const obi_oci_defaults BUILD = {
    .cgroup_namespace = true,
    .network_namespace = true,
    .user_namespace = true,
    .mask_power_counters = true,
};
static const obi_oci_defaults REPLICA = {
    .network_namespace = true,
    .user_namespace = true,
    .devpts_tty_group = true,
    .proc_nosuid_noexec_nodev = true,
    .cgroup_writable = true,
    .list_default_devices = true,
};

/* Compact JSON text of j (consumed), for comparisons with the expected text. */
static char *text_of(json_t *j)
{
    assert_non_null(j);
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(j);
    assert_non_null(text);
    return text;
}

static void assert_json_text(json_t *j, const char *expected)
{
    cleanup_free char *text = text_of(j);
    if (strcmp(text, expected))
        print_error("got      %s\nexpected %s\n", text, expected);
    assert_string_equal(text, expected);
}

static json_t *standard_mounts(const obi_oci_defaults *d)
{
    json_t *mounts = json_array();
    assert_non_null(mounts);
    assert_int_equal(obi_oci_add_standard_mounts(mounts, d), 0);
    return mounts;
}

#define M_DEV                                                                                      \
    "{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"nosuid\","   \
    "\"strictatime\",\"mode=755\",\"size=65536k\"]}"
#define M_PTS_NO_GID                                                                               \
    "{\"destination\":\"/dev/pts\",\"type\":\"devpts\",\"source\":\"devpts\",\"options\":["        \
    "\"nosuid\",\"noexec\",\"newinstance\",\"ptmxmode=0666\",\"mode=0620\"]}"
#define M_PTS_GID5                                                                                 \
    "{\"destination\":\"/dev/pts\",\"type\":\"devpts\",\"source\":\"devpts\",\"options\":["        \
    "\"nosuid\",\"noexec\",\"newinstance\",\"ptmxmode=0666\",\"mode=0620\",\"gid=5\"]}"
#define M_SHM                                                                                      \
    "{\"destination\":\"/dev/shm\",\"type\":\"tmpfs\",\"source\":\"shm\",\"options\":[\"nosuid\"," \
    "\"noexec\",\"nodev\",\"mode=1777\",\"size=65536k\"]}"
#define M_MQUEUE                                                                                   \
    "{\"destination\":\"/dev/mqueue\",\"type\":\"mqueue\",\"source\":\"mqueue\",\"options\":["     \
    "\"nosuid\",\"noexec\",\"nodev\"]}"
#define M_SYSFS_RO                                                                                 \
    "{\"destination\":\"/sys\",\"type\":\"sysfs\",\"source\":\"sysfs\",\"options\":[\"nosuid\","   \
    "\"noexec\",\"nodev\",\"ro\"]}"
#define M_SYS_HOST                                                                                 \
    "{\"destination\":\"/sys\",\"type\":\"none\",\"source\":\"/sys\",\"options\":[\"rbind\","      \
    "\"nosuid\",\"noexec\",\"nodev\",\"ro\"]}"

/* Exactly `runc spec --rootless`'s seven (runc 1.1), with `runc spec`'s fresh sysfs when the
 * build has its own network namespace: what tests/e2e/test_spec.sh compares with the installed
 * runc. */
static void test_oci_defaults_build_mounts_are_runc_rootless(void **state)
{
    (void)state;
    static const char *const CGROUP_RO =
        "{\"destination\":\"/sys/fs/cgroup\",\"type\":\"cgroup\",\"source\":\"cgroup\","
        "\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"relatime\",\"ro\"]}";
    char expected[4096];
    snprintf(
        expected, sizeof expected,
        "[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},%s,%s,%s,%s,%s,%s]",
        M_DEV, M_PTS_NO_GID, M_SHM, M_MQUEUE, M_SYSFS_RO, CGROUP_RO);
    assert_json_text(standard_mounts(&BUILD), expected);

    obi_oci_defaults shared_network = BUILD;
    shared_network.network_namespace = false;
    snprintf(
        expected, sizeof expected,
        "[{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\"},%s,%s,%s,%s,%s,%s]",
        M_DEV, M_PTS_NO_GID, M_SHM, M_MQUEUE, M_SYS_HOST, CGROUP_RO);
    assert_json_text(standard_mounts(&shared_network), expected);
}

/* spec/service.md's list: /proc nosuid,noexec,nodev, devpts gid=5, a writable cgroup mount of
 * the host's type; a privileged replica's sysfs is writable. */
static void test_oci_defaults_replica_mounts_follow_service_md(void **state)
{
    (void)state;
    static const char *const PROC =
        "{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\",\"options\":["
        "\"nosuid\",\"noexec\",\"nodev\"]}";
    static const char *const SYSFS_RW =
        "{\"destination\":\"/sys\",\"type\":\"sysfs\",\"source\":\"sysfs\",\"options\":["
        "\"nosuid\",\"noexec\",\"nodev\"]}";
    char cgroup[256], expected[4096];
    for (int v2 = 0; v2 <= 1; v2++) {
        snprintf(cgroup, sizeof cgroup,
                 "{\"destination\":\"/sys/fs/cgroup\",\"type\":\"%s\",\"source\":\"cgroup\","
                 "\"options\":[\"nosuid\",\"noexec\",\"nodev\",\"relatime\"]}",
                 v2 ? "cgroup2" : "cgroup");
        obi_oci_defaults replica = REPLICA;
        replica.cgroup2 = v2;
        snprintf(expected, sizeof expected, "[%s,%s,%s,%s,%s,%s,%s]", PROC, M_DEV, M_PTS_GID5,
                 M_SHM, M_MQUEUE, M_SYSFS_RO, cgroup);
        assert_json_text(standard_mounts(&replica), expected);

        obi_oci_defaults host_network = replica;
        host_network.network_namespace = false;
        snprintf(expected, sizeof expected, "[%s,%s,%s,%s,%s,%s,%s]", PROC, M_DEV, M_PTS_GID5,
                 M_SHM, M_MQUEUE, M_SYS_HOST, cgroup);
        assert_json_text(standard_mounts(&host_network), expected);

        obi_oci_defaults privileged = replica;
        privileged.privileged = true;
        privileged.user_namespace = false;
        privileged.network_namespace = false; /* host_network: sysfs all the same */
        snprintf(expected, sizeof expected, "[%s,%s,%s,%s,%s,%s,%s]", PROC, M_DEV, M_PTS_GID5,
                 M_SHM, M_MQUEUE, SYSFS_RW, cgroup);
        assert_json_text(standard_mounts(&privileged), expected);
    }
}

static void test_oci_defaults_masks_are_runcs_plus_power_counters_for_builds(void **state)
{
    (void)state;
    static const char *const RUNC =
        "\"/proc/acpi\",\"/proc/asound\",\"/proc/kcore\",\"/proc/keys\",\"/proc/latency_stats\","
        "\"/proc/timer_list\",\"/proc/timer_stats\",\"/proc/sched_debug\",\"/sys/firmware\","
        "\"/proc/scsi\"";
    static const char *const READONLY =
        "[\"/proc/bus\",\"/proc/fs\",\"/proc/irq\",\"/proc/sys\",\"/proc/sysrq-trigger\"]";
    char expected[1024];
    snprintf(expected, sizeof expected, "[%s,\"/sys/devices/virtual/powercap\"]", RUNC);
    assert_json_text(obi_oci_masked_paths(&BUILD), expected);
    snprintf(expected, sizeof expected, "[%s]", RUNC);
    assert_json_text(obi_oci_masked_paths(&REPLICA), expected);
    assert_json_text(obi_oci_readonly_paths(&BUILD), READONLY);
    assert_json_text(obi_oci_readonly_paths(&REPLICA), READONLY);

    obi_oci_defaults privileged = REPLICA;
    privileged.privileged = true;
    assert_json_text(obi_oci_masked_paths(&privileged), "[]");
    assert_json_text(obi_oci_readonly_paths(&privileged), "[]");
}

static void test_oci_defaults_namespaces_keep_one_order(void **state)
{
    (void)state;
    assert_json_text(
        obi_oci_namespaces(&BUILD),
        "[{\"type\":\"pid\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":"
        "\"mount\"},{\"type\":\"cgroup\"},{\"type\":\"network\"},{\"type\":\"user\"}]");
    assert_json_text(obi_oci_namespaces(&REPLICA),
                     "[{\"type\":\"pid\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":"
                     "\"mount\"},{\"type\":\"network\"},{\"type\":\"user\"}]");
    obi_oci_defaults none = {0};
    assert_json_text(obi_oci_namespaces(&none),
                     "[{\"type\":\"pid\"},{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":"
                     "\"mount\"}]");
}

static void test_oci_defaults_device_rules(void **state)
{
    (void)state;
    static const char *const DENY = "{\"allow\":false,\"access\":\"rwm\"}";
    assert_json_text(obi_oci_device_rules(&BUILD), "[{\"allow\":false,\"access\":\"rwm\"}]");
    /* runc's AllowedDevices: null, zero, full, random, urandom, tty, console, ptmx, pts */
    static const long runc[][2] = {{1, 3}, {1, 5}, {1, 7}, {1, 8},   {1, 9},
                                   {5, 0}, {5, 1}, {5, 2}, {136, -1}};
    char expected[2048];
    int n = snprintf(expected, sizeof expected, "[%s", DENY);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(runc); i++) {
        n += snprintf(expected + n, sizeof expected - (size_t)n,
                      ",{\"allow\":true,\"access\":\"rwm\",\"type\":\"c\",\"major\":%ld",
                      runc[i][0]);
        if (runc[i][1] >= 0)
            n += snprintf(expected + n, sizeof expected - (size_t)n, ",\"minor\":%ld", runc[i][1]);
        n += snprintf(expected + n, sizeof expected - (size_t)n, "}");
    }
    snprintf(expected + n, sizeof expected - (size_t)n, "]");
    assert_json_text(obi_oci_device_rules(&REPLICA), expected);

    obi_oci_defaults privileged = REPLICA;
    privileged.privileged = true;
    assert_json_text(obi_oci_device_rules(&privileged), "[{\"allow\":true,\"access\":\"rwm\"}]");
    assert_json_text(obi_oci_device_rule(true, 'b', 8, -1, "r"),
                     "{\"allow\":true,\"access\":\"r\",\"type\":\"b\",\"major\":8}");
}

/* Every part of the defaults in one document, to see which parts a field changes. */
static json_t *all_parts(const obi_oci_defaults *d)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "namespaces", obi_oci_namespaces(d), "mounts",
                     standard_mounts(d), "maskedPaths", obi_oci_masked_paths(d), "readonlyPaths",
                     obi_oci_readonly_paths(d), "devices", obi_oci_device_rules(d));
}

/* One behaviour per field: set alone on a zeroed struct, it changes exactly these parts. */
static void test_oci_defaults_each_field_changes_only_its_part(void **state)
{
    (void)state;
    static const struct {
        const char *field;
        obi_oci_defaults d;
        const char *parts; /* the parts that differ from a zeroed struct's, in all_parts order */
    } CASES[] = {
        {"cgroup_namespace", {.cgroup_namespace = true}, "namespaces"},
        {"network_namespace", {.network_namespace = true}, "namespaces"},
        /* a user namespace without a network namespace of its own gets the host's /sys */
        {"user_namespace", {.user_namespace = true}, "namespaces mounts"},
        {"privileged", {.privileged = true}, "mounts maskedPaths readonlyPaths devices"},
        {"devpts_tty_group", {.devpts_tty_group = true}, "mounts"},
        {"proc_nosuid_noexec_nodev", {.proc_nosuid_noexec_nodev = true}, "mounts"},
        {"cgroup2", {.cgroup2 = true}, "mounts"},
        {"cgroup_writable", {.cgroup_writable = true}, "mounts"},
        {"mask_power_counters", {.mask_power_counters = true}, "maskedPaths"},
        {"list_default_devices", {.list_default_devices = true}, "devices"},
        /* no cgroup filesystem; /sys is a fresh sysfs here, so nothing to mask */
        {"no_cgroup_fs", {.no_cgroup_fs = true}, "mounts"},
    };
    obi_oci_defaults zero = {0};
    cleanup_json json_t *base = all_parts(&zero);
    assert_non_null(base);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(CASES); i++) {
        cleanup_json json_t *changed = all_parts(&CASES[i].d);
        assert_non_null(changed);
        char parts[256] = "";
        const char *key;
        json_t *value;
        json_object_foreach(changed, key, value)
        {
            if (!json_equal(value, json_object_get(base, key)))
                snprintf(parts + strlen(parts), sizeof parts - strlen(parts), "%s%s",
                         *parts ? " " : "", key);
        }
        if (strcmp(parts, CASES[i].parts))
            print_error("%s changes \"%s\", expected \"%s\"\n", CASES[i].field, parts,
                        CASES[i].parts);
        assert_string_equal(parts, CASES[i].parts);
    }
}

/* Without a cgroup filesystem of its own, a container whose /sys is the host's (bound) has
 * /sys/fs/cgroup masked, so the host's cgroup mounts there do not show; with hide_sys, neither
 * the mount nor the mask. */
static void test_oci_defaults_no_cgroup_fs_masks_the_hosts(void **state)
{
    (void)state;
    obi_oci_defaults host_sys = {.user_namespace = true, .no_cgroup_fs = true};
    cleanup_free char *masked = text_of(obi_oci_masked_paths(&host_sys));
    assert_non_null(strstr(masked, "\"/sys/fs/cgroup\"]"));
    cleanup_free char *mounts = text_of(standard_mounts(&host_sys));
    assert_null(strstr(mounts, "/sys/fs/cgroup"));
    assert_non_null(strstr(mounts, "\"destination\":\"/sys\""));

    obi_oci_defaults own_net = {
        .user_namespace = true, .network_namespace = true, .no_cgroup_fs = true};
    cleanup_free char *own = text_of(obi_oci_masked_paths(&own_net));
    assert_null(strstr(own, "cgroup"));
    obi_oci_defaults no_sys = host_sys;
    no_sys.no_sys = true;
    cleanup_free char *none = text_of(obi_oci_masked_paths(&no_sys));
    assert_null(strstr(none, "cgroup"));
    cleanup_free char *no_sys_mounts = text_of(standard_mounts(&no_sys));
    assert_null(strstr(no_sys_mounts, "/sys"));
}

static void test_oci_defaults_capability_sets(void **state)
{
    (void)state;
    assert_json_text(obi_oci_capabilities(NULL),
                     "{\"bounding\":[],\"effective\":[],\"inheritable\":[],\"permitted\":[],"
                     "\"ambient\":[]}");
    cleanup_json json_t *granted = json_pack("[s, s]", "CAP_KILL", "CAP_CHOWN");
    assert_json_text(obi_oci_capabilities(granted),
                     "{\"bounding\":[\"CAP_KILL\",\"CAP_CHOWN\"],\"effective\":[\"CAP_KILL\","
                     "\"CAP_CHOWN\"],\"inheritable\":[],\"permitted\":[\"CAP_KILL\",\"CAP_CHOWN\"],"
                     "\"ambient\":[]}");
    assert_int_equal(json_array_size(granted), 2); /* borrowed, unchanged */
}

static void test_oci_defaults_rlimits_are_runcs(void **state)
{
    (void)state;
    assert_json_text(obi_oci_rlimits(0),
                     "[{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":1024}]");
    /* A process limit: RLIMIT_NPROC, soft and hard, after runc's. */
    assert_json_text(obi_oci_rlimits(4096),
                     "[{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":1024},"
                     "{\"type\":\"RLIMIT_NPROC\",\"hard\":4096,\"soft\":4096}]");
}

static void test_oci_defaults_mount_without_options_has_no_options_key(void **state)
{
    (void)state;
    cleanup_json json_t *mounts = json_array();
    static const char *const none[] = {NULL};
    static const char *const ro[] = {"rbind", "ro", NULL};
    assert_int_equal(obi_oci_add_mount(mounts, "/a", "none", "a", NULL), 0);
    assert_int_equal(obi_oci_add_mount(mounts, "/b", "none", "b", none), 0);
    assert_int_equal(obi_oci_add_mount(mounts, "/c", "none", "c", ro), 0);
    assert_json_text(json_incref(mounts),
                     "[{\"destination\":\"/a\",\"type\":\"none\",\"source\":\"a\"},"
                     "{\"destination\":\"/b\",\"type\":\"none\",\"source\":\"b\"},"
                     "{\"destination\":\"/c\",\"type\":\"none\",\"source\":\"c\",\"options\":["
                     "\"rbind\",\"ro\"]}]");
}

static void test_oci_defaults_capability_table(void **state)
{
    (void)state;
    assert_int_equal(OBI_CAPABILITY_COUNT, 41);
    assert_string_equal(OBI_CAPABILITIES[0], "CAP_AUDIT_CONTROL");
    assert_string_equal(OBI_CAPABILITIES[40], "CAP_WAKE_ALARM");
    for (size_t i = 1; i < OBI_CAPABILITY_COUNT; i++)
        assert_true(strcmp(OBI_CAPABILITIES[i - 1], OBI_CAPABILITIES[i]) < 0);
    assert_int_equal(OBI_DEFAULT_CAPABILITY_COUNT, 14);
    for (size_t i = 0; i < OBI_DEFAULT_CAPABILITY_COUNT; i++)
        assert_ptr_equal(obi_capability_normalize(OBI_DEFAULT_CAPABILITIES[i]) != NULL, true);
    assert_string_equal(obi_capability_normalize("net_admin"), "CAP_NET_ADMIN");
    assert_string_equal(obi_capability_normalize("cap_Net_Admin"), "CAP_NET_ADMIN");
    assert_string_equal(obi_capability_normalize("CAP_CHECKPOINT_RESTORE"),
                        "CAP_CHECKPOINT_RESTORE");
    assert_null(obi_capability_normalize("CAP_"));
    assert_null(obi_capability_normalize("NET"));
    assert_null(obi_capability_normalize("CAP_CAP_NET_ADMIN"));
    assert_int_equal(obi_capability_number("CAP_SYS_RESOURCE"), CAP_SYS_RESOURCE);
    assert_int_equal(obi_capability_number("CAP_CHOWN"), 0);
    assert_int_equal(obi_capability_number("CAP_WAKE_ALARM"), CAP_WAKE_ALARM);
    assert_int_equal(obi_capability_number("CAP_NOPE"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oci_defaults_build_mounts_are_runc_rootless),
        cmocka_unit_test(test_oci_defaults_replica_mounts_follow_service_md),
        cmocka_unit_test(test_oci_defaults_masks_are_runcs_plus_power_counters_for_builds),
        cmocka_unit_test(test_oci_defaults_namespaces_keep_one_order),
        cmocka_unit_test(test_oci_defaults_device_rules),
        cmocka_unit_test(test_oci_defaults_each_field_changes_only_its_part),
        cmocka_unit_test(test_oci_defaults_no_cgroup_fs_masks_the_hosts),
        cmocka_unit_test(test_oci_defaults_capability_sets),
        cmocka_unit_test(test_oci_defaults_rlimits_are_runcs),
        cmocka_unit_test(test_oci_defaults_mount_without_options_has_no_options_key),
        cmocka_unit_test(test_oci_defaults_capability_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
