/*
 * OCI runtime spec generation (../shared/spec/build.md, "The OCI runtime spec"): a validated
 * BuildRequest plus a few host facts -> config.json (runtime-spec 1.0.2) as a jansson object.
 * Every build runs in a user namespace, with no capability, under the syscall filter of
 * seccomp.h, with runc's masked and read-only /proc and /sys paths (docs/security.md).
 * Also the bundle naming the bundle code shares with the spec (scratch dir names, output host
 * paths) and the /etc/subuid, /etc/subgid lookup that rootless mode and the id slots need.
 * Nothing here touches the disk except obi_subid_lookup and
 * obi_spec_options_rootless_current_user, which read the subid files.
 */
#ifndef OCIBUILD_SPEC_H
#define OCIBUILD_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ocibuild/error.h"
#include "ocibuild/request.h"

#define OBI_DEFAULT_SANDBOX_SHELL "/bin/busybox"
/* RFC 4648 BASE32 of a 32-byte BLAKE3 digest, padded. */
#define OBI_SCRATCH_NAME_LEN 56

typedef struct obi_spec_options {
    bool rootless;
    /* Host path bound at /bin/sh when the request asks for provide_bin_sh; NULL means
     * OBI_DEFAULT_SANDBOX_SHELL (busybox-static's). */
    const char *sandbox_shell;
    /* The host ids the build's user namespace maps (docs/security.md "Build identity"): container
     * root (0:0) -> root_uid:root_gid and the build user (1000:100) -> build_uid:build_gid.
     * Rootful: ids of an id slot of the ocibuild range (id_slot.h); rootless: the invoking
     * user's ids and the first ids of its /etc/subuid and /etc/subgid ranges. The build ids are
     * never 0, nor, rootful, the root ids. */
    uid_t root_uid;
    gid_t root_gid;
    uid_t build_uid;
    gid_t build_gid;
    /* The seccomp filter's machine (`uname -m` name; seccomp.h); NULL: this machine. */
    const char *machine;
    /* config.json also carries the filter compiled, for crun (seccomp_bpf.h), kept in
     * seccomp_bpf_cache_dir too (NULL: in this process only). */
    bool seccomp_bpf;
    const char *seccomp_bpf_cache_dir;
    /* Limits (docs/security.md "Limits"); 0: none. max_pids is the build's RLIMIT_NPROC always
     * (counted per user namespace and uid: the build's processes alone) and, for rootful builds
     * with a cgroup, its pids.max too. memory_bytes only as a cgroup resource of rootful builds
     * (rootless runtimes cannot set cgroups here); memory_swap also caps memory + swap at
     * memory_bytes (only where the kernel accounts swap: cgroup v1 needs memory.memsw). */
    uint64_t max_pids;
    uint64_t memory_bytes;
    bool memory_swap;
    /* The runtime makes no cgroup for the build (crun without a memory limit: runtime.h
     * obi_runtime_set_cgroups): no linux.resources and no cgroup filesystem. Not with
     * memory_bytes, which only a cgroup enforces. */
    bool no_cgroup;
} obi_spec_options;

/* The container's build user and group (nixbld). */
#define OBI_BUILD_UID 1000
#define OBI_BUILD_GID 100

/* The config.json for req (validated first; errors name the field). Host-side paths of
 * scratch dirs and inputs are relative to the bundle: scratch/<sname>, inputs/<name>.
 * Fails naming the field when an environment value or input name is not UTF-8 (JSON cannot
 * carry it). */
int obi_spec_generate(const obi_build_request *req, const obi_spec_options *opts, json_t **out,
                      obi_error **err);

/* sname of a scratch path: BASE32(BLAKE3(path bytes)), NUL-terminated. */
void obi_scratch_name(const char *scratch_path, char out[OBI_SCRATCH_NAME_LEN + 1]);
/* "scratch/<sname>" for scratch path i, relative to the bundle; caller frees (NULL: OOM). */
char *obi_scratch_host_path(const char *scratch_path);
/* The host path of output i relative to the bundle: scratch/<sname of its scratch path>/<rest>
 * (just scratch/<sname> when the output is the scratch path). The request must be valid;
 * -ENOENT naming the output when no scratch path contains it. */
int obi_output_host_path(const obi_build_request *req, size_t output_index, char **out,
                         obi_error **err);
/* Same for additional file i (always strictly below its scratch dir). */
int obi_additional_file_host_path(const obi_build_request *req, size_t file_index, char **out,
                                  obi_error **err);

/* One subordinate id range: ids start .. start+count-1. */
typedef struct obi_subid_range {
    uint32_t start;
    uint32_t count;
} obi_subid_range;

/* Finds the first range of a user in /etc/subuid-format text ("name_or_id:start:count" lines;
 * blank lines and lines starting with '#' skipped), matching the user's name or decimal uid
 * (in /etc/subgid too: its entries are owned by users). Ranges of count 0 are skipped.
 * file names the source in errors (malformed lines: "FILE:LINE: ..."). No range: -ENOENT with
 * a message saying how to add one (usermod --add-subuids/--add-subgids; kind is "uid" or
 * "gid"). */
int obi_subid_parse(const char *text, const char *file, const char *kind, const char *user,
                    uint32_t id, obi_subid_range *out, obi_error **err);
/* Reads path (e.g. /etc/subuid) and calls obi_subid_parse. */
int obi_subid_lookup(const char *path, const char *kind, const char *user, uint32_t id,
                     obi_subid_range *out, obi_error **err);
/* Fills opts->root_uid/root_gid from the real ids and build_uid/build_gid from the first ids of
 * the invoking user's /etc/subuid and /etc/subgid ranges (or $OCIBUILD_SUBUID_FILE /
 * $OCIBUILD_SUBGID_FILE), and sets opts->rootless. */
int obi_spec_options_rootless_current_user(obi_spec_options *opts, obi_error **err);

#endif
