/*
 * The OCI runtime defaults of include/ocibuild/oci_defaults.h as tables: namespaces, standard
 * mounts (each option marked with the field of obi_oci_defaults it depends on, if any), masked
 * and read-only paths, runc's default device rules, the rlimits and the capability names.
 * The functions only walk the tables; spec.c (builds) and service_spec.c (replicas) put the
 * pieces into their documents.
 */
#include <errno.h>
#include <linux/capability.h>
#include <string.h>
#include <strings.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/json_util.h"
#include "ocibuild/oci_defaults.h"

#define NOFILE_LIMIT 1024

/* When a namespace, mount or option of the tables applies to a container. */
typedef enum condition {
    ALWAYS = 0,
    IF_CGROUP_NAMESPACE,
    IF_NETWORK_NAMESPACE,
    IF_USER_NAMESPACE,
    IF_TTY_GROUP,
    IF_PROC_NOSUID_NOEXEC_NODEV,
    UNLESS_PRIVILEGED,
    UNLESS_CGROUP_WRITABLE,
} condition;

static bool applies(condition when, const obi_oci_defaults *d)
{
    switch (when) {
    case ALWAYS:
        return true;
    case IF_CGROUP_NAMESPACE:
        return d->cgroup_namespace;
    case IF_NETWORK_NAMESPACE:
        return d->network_namespace;
    case IF_USER_NAMESPACE:
        return d->user_namespace;
    case IF_TTY_GROUP:
        return d->devpts_tty_group;
    case IF_PROC_NOSUID_NOEXEC_NODEV:
        return d->proc_nosuid_noexec_nodev;
    case UNLESS_PRIVILEGED:
        return !d->privileged;
    case UNLESS_CGROUP_WRITABLE:
        return !d->cgroup_writable;
    }
    return false;
}

/* ---- namespaces ---- */

static const struct {
    const char *type;
    condition when;
} NAMESPACES[] = {
    {"pid", ALWAYS},
    {"ipc", ALWAYS},
    {"uts", ALWAYS},
    {"mount", ALWAYS},
    {"cgroup", IF_CGROUP_NAMESPACE},
    {"network", IF_NETWORK_NAMESPACE},
    {"user", IF_USER_NAMESPACE},
};

json_t *obi_oci_namespaces(const obi_oci_defaults *d)
{
    cleanup_json json_t *namespaces = json_array();
    for (size_t i = 0; namespaces && i < OBI_ARRAY_SIZE(NAMESPACES); i++)
        if (applies(NAMESPACES[i].when, d) &&
            json_array_append_new(
                namespaces, NAMESPACES[i].when == IF_NETWORK_NAMESPACE && d->network_namespace_path
                                ? json_pack("{s:s, s:s}", "type", NAMESPACES[i].type, "path",
                                            d->network_namespace_path)
                                : json_pack("{s:s}", "type", NAMESPACES[i].type)) < 0)
            return NULL;
    return steal_pointer(&namespaces);
}

/* ---- standard mounts ---- */

typedef struct mount_option {
    const char *name;
    condition when;
} mount_option;

typedef struct standard_mount {
    const char *destination;
    const char *type;
    const char *type_cgroup2; /* the type when d->cgroup2; NULL: type */
    const char *source;
    mount_option options[8]; /* up to the first NULL name */
} standard_mount;

/* runc 1.1's `runc spec` mounts, in its order; the marked options are where containers
 * differ. */
static const standard_mount STANDARD_MOUNTS[] = {
    {"/proc",
     "proc",
     NULL,
     "proc",
     {{"nosuid", IF_PROC_NOSUID_NOEXEC_NODEV},
      {"noexec", IF_PROC_NOSUID_NOEXEC_NODEV},
      {"nodev", IF_PROC_NOSUID_NOEXEC_NODEV}}},
    {"/dev", "tmpfs", NULL, "tmpfs", {{"nosuid"}, {"strictatime"}, {"mode=755"}, {"size=65536k"}}},
    {"/dev/pts",
     "devpts",
     NULL,
     "devpts",
     {{"nosuid"},
      {"noexec"},
      {"newinstance"},
      {"ptmxmode=0666"},
      {"mode=0620"},
      {"gid=5", IF_TTY_GROUP}}},
    {"/dev/shm",
     "tmpfs",
     NULL,
     "shm",
     {{"nosuid"}, {"noexec"}, {"nodev"}, {"mode=1777"}, {"size=65536k"}}},
    {"/dev/mqueue", "mqueue", NULL, "mqueue", {{"nosuid"}, {"noexec"}, {"nodev"}}},
    {"/sys",
     "sysfs",
     NULL,
     "sysfs",
     {{"nosuid"}, {"noexec"}, {"nodev"}, {"ro", UNLESS_PRIVILEGED}}},
    {"/sys/fs/cgroup",
     "cgroup",
     "cgroup2",
     "cgroup",
     {{"nosuid"}, {"noexec"}, {"nodev"}, {"relatime"}, {"ro", UNLESS_CGROUP_WRITABLE}}},
};

/* Where the cgroup filesystem is mounted, and masked where /sys is the host's and the container
 * has none of its own (no_cgroup_fs). */
static const char *const CGROUP_FS = "/sys/fs/cgroup";

/* /sys where sysfs cannot be mounted (a user namespace in the host's network namespace): the
 * host's, bound read-only, as `runc spec --rootless` writes it. */
static const standard_mount HOST_SYS = {
    "/sys", "none", NULL, "/sys", {{"rbind"}, {"nosuid"}, {"noexec"}, {"nodev"}, {"ro"}}};

int obi_oci_add_mount(json_t *mounts, const char *destination, const char *type, const char *source,
                      const char *const *options)
{
    json_t *m =
        json_pack("{s:s, s:s, s:s}", "destination", destination, "type", type, "source", source);
    if (!m || json_array_append_new(mounts, m) < 0)
        return -ENOMEM;
    if (!options || !options[0])
        return 0;
    json_t *list = json_array();
    if (json_object_set_new(m, "options", list) < 0)
        return -ENOMEM;
    for (size_t i = 0; options[i]; i++)
        if (json_array_append_new(list, json_string(options[i])) < 0)
            return -ENOMEM;
    return 0;
}

static int add_standard_mount(json_t *mounts, const standard_mount *m, const obi_oci_defaults *d)
{
    const char *options[OBI_ARRAY_SIZE(m->options) + 1];
    size_t n = 0;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(m->options) && m->options[i].name; i++)
        if (applies(m->options[i].when, d))
            options[n++] = m->options[i].name;
    options[n] = NULL;
    const char *type = d->cgroup2 && m->type_cgroup2 ? m->type_cgroup2 : m->type;
    return obi_oci_add_mount(mounts, m->destination, type, m->source, options);
}

/* Whether /sys is the host's, bound (a user namespace without a network namespace of its own). */
static bool sys_is_hosts(const obi_oci_defaults *d)
{
    return !d->no_sys && d->user_namespace && (!d->network_namespace || d->network_namespace_path);
}

int obi_oci_add_standard_mounts(json_t *mounts, const obi_oci_defaults *d)
{
    bool host_sys = sys_is_hosts(d);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(STANDARD_MOUNTS); i++) {
        const standard_mount *m = &STANDARD_MOUNTS[i];
        if (d->no_sys && !strncmp(m->destination, "/sys", 4))
            continue;
        if (d->no_cgroup_fs && !strcmp(m->destination, CGROUP_FS))
            continue;
        if (host_sys && !strcmp(m->destination, HOST_SYS.destination))
            m = &HOST_SYS;
        int r = add_standard_mount(mounts, m, d);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- masked and read-only paths ---- */

/* `runc spec`'s maskedPaths (runc 1.1), in its order. */
static const char *const MASKED_PATHS[] = {
    "/proc/acpi",          "/proc/asound",     "/proc/kcore",       "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/sys/firmware",       "/proc/scsi",
};
/* What moby masks beyond runc: the RAPL energy counters. */
static const char *const POWER_COUNTERS = "/sys/devices/virtual/powercap";
/* `runc spec`'s readonlyPaths (runc 1.1; moby's are the same). */
static const char *const READONLY_PATHS[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

static json_t *string_array(const char *const *items, size_t n)
{
    cleanup_json json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(items[i])) < 0)
            return NULL;
    return steal_pointer(&a);
}

json_t *obi_oci_masked_paths(const obi_oci_defaults *d)
{
    if (d->privileged)
        return json_array();
    cleanup_json json_t *paths = string_array(MASKED_PATHS, OBI_ARRAY_SIZE(MASKED_PATHS));
    if (paths && d->mask_power_counters &&
        json_array_append_new(paths, json_string(POWER_COUNTERS)) < 0)
        return NULL;
    if (paths && d->no_cgroup_fs && sys_is_hosts(d) &&
        json_array_append_new(paths, json_string(CGROUP_FS)) < 0)
        return NULL;
    return steal_pointer(&paths);
}

json_t *obi_oci_readonly_paths(const obi_oci_defaults *d)
{
    return d->privileged ? json_array()
                         : string_array(READONLY_PATHS, OBI_ARRAY_SIZE(READONLY_PATHS));
}

/* ---- devices ---- */

/* The character devices runc allows every container (libcontainer's AllowedDevices), in its
 * order; minor -1: any. */
static const struct {
    long major;
    long minor;
} RUNC_DEVICES[] = {
    {1, 3},    /* /dev/null */
    {1, 5},    /* /dev/zero */
    {1, 7},    /* /dev/full */
    {1, 8},    /* /dev/random */
    {1, 9},    /* /dev/urandom */
    {5, 0},    /* /dev/tty */
    {5, 1},    /* /dev/console */
    {5, 2},    /* /dev/ptmx */
    {136, -1}, /* /dev/pts/N */
};

json_t *obi_oci_device_rule(bool allow, char type, long major, long minor, const char *access)
{
    cleanup_json json_t *rule = json_pack("{s:b, s:s}", "allow", allow, "access", access);
    if (!rule)
        return NULL;
    char t[2] = {type, '\0'};
    if ((type && json_object_set_new(rule, "type", json_string(t)) < 0) ||
        (major >= 0 && json_object_set_new(rule, "major", json_integer(major)) < 0) ||
        (minor >= 0 && json_object_set_new(rule, "minor", json_integer(minor)) < 0))
        return NULL;
    return steal_pointer(&rule);
}

json_t *obi_oci_device_rules(const obi_oci_defaults *d)
{
    cleanup_json json_t *rules = json_array();
    if (!rules ||
        json_array_append_new(rules, obi_oci_device_rule(d->privileged, 0, -1, -1, "rwm")) < 0)
        return NULL;
    for (size_t i = 0;
         !d->privileged && d->list_default_devices && i < OBI_ARRAY_SIZE(RUNC_DEVICES); i++)
        if (json_array_append_new(rules, obi_oci_device_rule(true, 'c', RUNC_DEVICES[i].major,
                                                             RUNC_DEVICES[i].minor, "rwm")) < 0)
            return NULL;
    return steal_pointer(&rules);
}

/* ---- process ---- */

json_t *obi_oci_rlimits(uint64_t max_processes)
{
    cleanup_json json_t *rlimits = json_pack("[{s:s, s:i, s:i}]", "type", "RLIMIT_NOFILE", "hard",
                                             NOFILE_LIMIT, "soft", NOFILE_LIMIT);
    if (rlimits && max_processes &&
        json_array_append_new(rlimits, json_pack("{s:s, s:I, s:I}", "type", "RLIMIT_NPROC", "hard",
                                                 (json_int_t)max_processes, "soft",
                                                 (json_int_t)max_processes)) < 0)
        return NULL;
    return steal_pointer(&rlimits);
}

json_t *obi_oci_capabilities(json_t *granted)
{
    cleanup_json json_t *none = granted ? NULL : json_array();
    json_t *set = granted ? granted : none;
    if (!set)
        return NULL;
    return json_pack("{s:O, s:O, s:[], s:O, s:[]}", "bounding", set, "effective", set,
                     "inheritable", "permitted", set, "ambient");
}

/* ---- capability names ---- */

/* Every capability the kernel headers know, sorted by name; one list for the names and the
 * numbers (bit positions in /proc's Cap* masks and PR_CAPBSET_READ). */
#define CAPABILITY_LIST(X)                                                                         \
    X(AUDIT_CONTROL)                                                                               \
    X(AUDIT_READ)                                                                                  \
    X(AUDIT_WRITE)                                                                                 \
    X(BLOCK_SUSPEND)                                                                               \
    X(BPF)                                                                                         \
    X(CHECKPOINT_RESTORE)                                                                          \
    X(CHOWN)                                                                                       \
    X(DAC_OVERRIDE)                                                                                \
    X(DAC_READ_SEARCH)                                                                             \
    X(FOWNER)                                                                                      \
    X(FSETID)                                                                                      \
    X(IPC_LOCK)                                                                                    \
    X(IPC_OWNER)                                                                                   \
    X(KILL)                                                                                        \
    X(LEASE)                                                                                       \
    X(LINUX_IMMUTABLE)                                                                             \
    X(MAC_ADMIN)                                                                                   \
    X(MAC_OVERRIDE)                                                                                \
    X(MKNOD)                                                                                       \
    X(NET_ADMIN)                                                                                   \
    X(NET_BIND_SERVICE)                                                                            \
    X(NET_BROADCAST)                                                                               \
    X(NET_RAW)                                                                                     \
    X(PERFMON)                                                                                     \
    X(SETFCAP)                                                                                     \
    X(SETGID)                                                                                      \
    X(SETPCAP)                                                                                     \
    X(SETUID)                                                                                      \
    X(SYSLOG)                                                                                      \
    X(SYS_ADMIN)                                                                                   \
    X(SYS_BOOT)                                                                                    \
    X(SYS_CHROOT)                                                                                  \
    X(SYS_MODULE)                                                                                  \
    X(SYS_NICE)                                                                                    \
    X(SYS_PACCT)                                                                                   \
    X(SYS_PTRACE)                                                                                  \
    X(SYS_RAWIO)                                                                                   \
    X(SYS_RESOURCE)                                                                                \
    X(SYS_TIME)                                                                                    \
    X(SYS_TTY_CONFIG)                                                                              \
    X(WAKE_ALARM)

const char *const OBI_CAPABILITIES[] = {
#define CAPABILITY_NAME(x) "CAP_" #x,
    CAPABILITY_LIST(CAPABILITY_NAME)
#undef CAPABILITY_NAME
};
static const int CAPABILITY_NUMBERS[] = {
#define CAPABILITY_NUMBER(x) CAP_##x,
    CAPABILITY_LIST(CAPABILITY_NUMBER)
#undef CAPABILITY_NUMBER
};
const size_t OBI_CAPABILITY_COUNT = OBI_ARRAY_SIZE(OBI_CAPABILITIES);

const char *const OBI_DEFAULT_CAPABILITIES[] = {
    "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
    "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
    "CAP_KILL",    "CAP_AUDIT_WRITE",
};
const size_t OBI_DEFAULT_CAPABILITY_COUNT = OBI_ARRAY_SIZE(OBI_DEFAULT_CAPABILITIES);

int obi_capability_number(const char *name)
{
    for (size_t i = 0; i < OBI_CAPABILITY_COUNT; i++)
        if (!strcmp(name, OBI_CAPABILITIES[i]))
            return CAPABILITY_NUMBERS[i];
    return -1;
}

const char *obi_capability_normalize(const char *name)
{
    const char *bare = strncasecmp(name, "CAP_", 4) ? name : name + 4;
    for (size_t i = 0; i < OBI_CAPABILITY_COUNT; i++)
        if (!strcasecmp(bare, OBI_CAPABILITIES[i] + 4))
            return OBI_CAPABILITIES[i];
    return NULL;
}
