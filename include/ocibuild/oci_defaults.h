/*
 * The OCI runtime defaults every config.json ocibuild writes is assembled from, one table each:
 * runc 1.1's standard mounts (`runc spec`, `runc spec --rootless`), the masked and read-only
 * /proc and /sys paths, the namespaces, the device cgroup rules runc allows every container,
 * runc's RLIMIT_NOFILE, the shape of the capability sets, and the Linux capability names with
 * the default set of spec/service.md (Docker's 14). Builds (spec.c) and service replicas
 * (service_spec.c) both take them from here. Where the two deliberately differ, the difference
 * is a field of obi_oci_defaults that says what it changes and who sets it, never a second
 * table; why each differs is in docs/security.md ("Syscall filter and masks", "Services") and
 * docs/service.md. The documents themselves (key order, process, root, the mounts after the
 * standard ones, limits) stay with their generators.
 *
 * Every function returns new JSON (NULL only when out of memory) or appends to an array
 * (-ENOMEM); nothing here reads the host.
 */
#ifndef OCIBUILD_OCI_DEFAULTS_H
#define OCIBUILD_OCI_DEFAULTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The runtime-spec version both generators write. */
#define OBI_OCI_VERSION "1.0.2"

/* What one container gets of the defaults. A zeroed struct is a container with none of the
 * optional parts: pid, ipc, uts and mount namespaces, runc's standard mounts with a read-only
 * sysfs, runc's masked and read-only paths, a device cgroup that denies everything. */
typedef struct obi_oci_defaults {
    /* Namespaces, always in the order pid, ipc, uts, mount, cgroup, network, user. */
    bool cgroup_namespace;  /* builds (build.md); replicas stay in the host's (service.md) */
    bool network_namespace; /* builds unless network_access; replicas unless host_network */
    bool user_namespace;    /* builds always; replicas unless privileged. Without a network
                               namespace of its own, such a container cannot mount sysfs: /sys
                               is the host's, bound read-only (as `runc spec --rootless`) */
    /* The network namespace to join (linux.namespaces' path) rather than a new one: a replica
     * on its deployment's network (service_network.h). That namespace belongs to the host's
     * user namespace, so under a user namespace /sys is the host's, as without a network
     * namespace. */
    const char *network_namespace_path;
    /* A privileged replica: sysfs writable, nothing masked or read-only, a device cgroup that
     * allows every device. */
    bool privileged;
    /* gid=5 (tty) on /dev/pts, as `runc spec` writes it: for replicas, whose namespace maps
     * gid 5. A build's user namespace maps only 0, 100 and 1000, so builds keep
     * `runc spec --rootless`'s devpts without it. */
    bool devpts_tty_group;
    /* nosuid,noexec,nodev on /proc: replicas (spec/service.md, as Docker). Builds keep runc's
     * /proc without options, which tests/e2e/test_spec.sh compares with `runc spec`'s. */
    bool proc_nosuid_noexec_nodev;
    /* /sys/fs/cgroup of type cgroup2 rather than runc's "cgroup": replicas on a cgroup2 host
     * (spec/service.md); runc accepts either for builds. */
    bool cgroup2;
    /* /sys/fs/cgroup without "ro": replicas (spec/service.md); builds keep runc's ro. */
    bool cgroup_writable;
    /* moby's /sys/devices/virtual/powercap mask (the RAPL energy counters, a side channel):
     * builds. Replicas keep spec/service.md's list, runc's. */
    bool mask_power_counters;
    /* After deny-all, the allow rules for the device nodes runc gives every container (null,
     * zero, full, random, urandom, tty, console, ptmx, pts), written out: replicas (spec/
     * service.md lists them). Builds write deny-all alone, as `runc spec` does; runc then adds
     * the same rules itself. */
    bool list_default_devices;
    /* No /sys and no /sys/fs/cgroup at all: builds asked for hide_sys (Nix's sandbox has no
     * /sys). */
    bool no_sys;
    /* No cgroup filesystem at /sys/fs/cgroup: a container the runtime makes no cgroup for (a
     * build on crun without a memory limit), whose cgroup namespace's root would be the
     * runtime's own cgroup. Where /sys is the host's (bound), /sys/fs/cgroup is masked too,
     * so the host's cgroup mounts below it do not show either. */
    bool no_cgroup_fs;
} obi_oci_defaults;

/* linux.namespaces: [{"type": "pid"}, ...] in the order above. */
json_t *obi_oci_namespaces(const obi_oci_defaults *d);

/* Appends the seven standard mounts to the mounts array: /proc, /dev, /dev/pts, /dev/shm,
 * /dev/mqueue, /sys and /sys/fs/cgroup (the last two not with no_sys, the last not with
 * no_cgroup_fs), with runc's options changed only as d says. */
int obi_oci_add_standard_mounts(json_t *mounts, const obi_oci_defaults *d);
/* Appends {"destination", "type", "source", "options"} to mounts; options NULL-terminated, the
 * key left out when there are none (as runc writes /proc). The one shape of every mount. */
int obi_oci_add_mount(json_t *mounts, const char *destination, const char *type, const char *source,
                      const char *const *options);

/* linux.maskedPaths: runc's ten (runc 1.1's `runc spec`, in its order), then the power
 * counters when d asks, then /sys/fs/cgroup with no_cgroup_fs where /sys is the host's; none for
 * a privileged container. */
json_t *obi_oci_masked_paths(const obi_oci_defaults *d);
/* linux.readonlyPaths: runc's five; none for a privileged container. */
json_t *obi_oci_readonly_paths(const obi_oci_defaults *d);

/* linux.resources.devices: [{"allow": true, "access": "rwm"}] for a privileged container,
 * otherwise deny-all followed, when d lists them, by runc's default allow rules. */
json_t *obi_oci_device_rules(const obi_oci_defaults *d);
/* One device cgroup rule, {"allow", "access"[, "type"][, "major"][, "minor"]}: type 0, major
 * or minor < 0 leave the key out (any). */
json_t *obi_oci_device_rule(bool allow, char type, long major, long minor, const char *access);

/* process.rlimits as `runc spec` writes them: RLIMIT_NOFILE 1024, soft and hard, then, when
 * max_processes is not 0, RLIMIT_NPROC max_processes, soft and hard (the process limit of a
 * build: docs/security.md "Limits"). Builds set them; replicas (spec/service.md) inherit the
 * runtime's. */
json_t *obi_oci_rlimits(uint64_t max_processes);

/* process.capabilities: granted (a JSON array of names, borrowed; NULL: none) in bounding,
 * effective and permitted; inheritable and ambient are always empty, so nothing passes
 * capabilities across an execve. Builds grant none (docs/security.md). */
json_t *obi_oci_capabilities(json_t *granted);

/* The 41 Linux capability names ("CAP_AUDIT_CONTROL" .. "CAP_WAKE_ALARM"), sorted. */
extern const char *const OBI_CAPABILITIES[];
extern const size_t OBI_CAPABILITY_COUNT;
/* The 14 default capabilities of a replica without `privileged` or an explicit list
 * (spec/service.md; Docker's defaults). */
extern const char *const OBI_DEFAULT_CAPABILITIES[];
extern const size_t OBI_DEFAULT_CAPABILITY_COUNT;
/* "net_admin", "CAP_NET_ADMIN", "Net_Admin" -> "CAP_NET_ADMIN" (static string); NULL if unknown. */
const char *obi_capability_normalize(const char *name);
/* The kernel's number of a normalised name ("CAP_SYS_RESOURCE" -> 24): its bit in the Cap*
 * masks of /proc/PID/status. -1 if unknown. */
int obi_capability_number(const char *name);

#endif
