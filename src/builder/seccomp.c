/*
 * The build's syscall filter as config.json data (include/ocibuild/seccomp.h). Everything is a
 * table: the machines and their architectures, the syscalls that set a file mode and where
 * their mode argument is, and the syscalls refused outright with the errno a build sees. The
 * functions only turn the tables into the OCI runtime-spec's linux.seccomp JSON.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/json_util.h"
#include "ocibuild/seccomp.h"

/* A machine (`uname -m`), the seccomp architectures its processes can use, and which clone
 * argument holds the flags (s390 swaps the first two). x32 is left out: the runtime compiles
 * every rule once per architecture, at every start, and a syscall of an architecture the filter
 * does not list kills the thread (fail closed). */
typedef struct machine {
    const char *name;
    const char *arches[3]; /* NULL-terminated */
    unsigned clone_flags_arg;
} machine;

static const machine MACHINES[] = {
    {"x86_64", {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", NULL}, 0},
    {"aarch64", {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", NULL}, 0},
    {"ppc64le", {"SCMP_ARCH_PPC64LE", NULL}, 0},
    {"riscv64", {"SCMP_ARCH_RISCV64", NULL}, 0},
    {"s390x", {"SCMP_ARCH_S390X", "SCMP_ARCH_S390", NULL}, 1},
};

/* ---- setuid and setgid bits: chmod and its variants, with the argument holding the mode ---- */

static const char *const MODE_ARG_1[] = {"chmod", "fchmod", NULL};
static const char *const MODE_ARG_2[] = {"fchmodat", "fchmodat2", NULL};

typedef struct mode_rule {
    const char *const *names;
    unsigned mode_arg;
} mode_rule;

static const mode_rule MODE_RULES[] = {{MODE_ARG_1, 1}, {MODE_ARG_2, 2}};
static const unsigned SPECIAL_MODE_BITS[] = {S_ISUID, S_ISGID};

/* ---- refused outright ---- */

/* Extended attributes: castore and NAR cannot represent them (Nix refuses the same). */
static const char *const XATTR_SETTERS[] = {"fsetxattr", "lsetxattr", "setxattr", "setxattrat",
                                            NULL};
/* The kernel keyring is not namespaced: keys would be shared with the host's users. */
static const char *const KEYRING[] = {"add_key", "keyctl", "request_key", NULL};
/* Of what Docker's default profile refuses a container without capabilities (docs.docker.com's
 * "significant syscalls blocked" and moby's capability-gated entries): the part the kernel lets
 * a process without capabilities make, with unshare and setns. The rest fails anyway for a
 * build that holds no capability in any set, runs with no_new_privs and cannot enter a new user
 * namespace, while every rule costs the runtime time at each start (docs/security.md lists both
 * parts and the measurements). kexec_load and kexec_file_load are kept all the same. */
static const char *const DOCKER_BLOCKED[] = {
    "bpf",   "fanotify_init", "get_mempolicy",   "kexec_file_load", "kexec_load",
    "mbind", "move_pages",    "perf_event_open", "set_mempolicy",   "set_mempolicy_home_node",
    "setns", "syslog",        "unshare",         "uselib",          "userfaultfd",
    NULL,
};
/* Refused as if the kernel lacked them, so callers fall back: clone3 (its flags are in a struct
 * a filter cannot read; glibc then uses clone, filtered below, as Docker does) and io_uring (a
 * large kernel surface whose operations bypass this filter; moby refuses it too). */
static const char *const NOT_IMPLEMENTED[] = {"clone3", "io_uring_enter", "io_uring_register",
                                              "io_uring_setup", NULL};

typedef struct deny_rule {
    const char *const *names;
    int errno_ret;
} deny_rule;

static const deny_rule DENY_RULES[] = {
    {XATTR_SETTERS, ENOTSUP},
    {KEYRING, EPERM},
    {DOCKER_BLOCKED, EPERM},
    {NOT_IMPLEMENTED, ENOSYS},
};

/* clone into a new user namespace. The other namespace flags need CAP_SYS_ADMIN, which only a
 * new user namespace could give a build. */
static const unsigned long CLONE_NAMESPACE_FLAGS[] = {CLONE_NEWUSER};
static const char *const CLONE[] = {"clone", NULL};

/* ---- JSON ---- */

static json_t *names_array(const char *const *names)
{
    json_t *a = json_array();
    for (size_t i = 0; a && names[i]; i++)
        if (json_array_append_new(a, json_string(names[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* {"index": i, "value": mask, "valueTwo": mask, "op": "SCMP_CMP_MASKED_EQ"}: the bits of mask
 * are all set in argument i. */
static json_t *arg_has_bits(unsigned index, unsigned long mask)
{
    return json_pack("{s:i, s:I, s:I, s:s}", "index", (int)index, "value", (json_int_t)mask,
                     "valueTwo", (json_int_t)mask, "op", "SCMP_CMP_MASKED_EQ");
}

/* A rule refusing names with errno_ret; args (stolen, may be NULL) narrows it. */
static int add_rule(json_t *syscalls, const char *const *names, int errno_ret, json_t *args)
{
    json_t *rule = json_pack("{s:o, s:s, s:i}", "names", names_array(names), "action",
                             "SCMP_ACT_ERRNO", "errnoRet", errno_ret);
    if (!rule || json_array_append_new(syscalls, rule) < 0) {
        json_decref(args);
        return -ENOMEM;
    }
    return args ? json_object_set_new(rule, "args", args) : 0;
}

static int add_mode_rules(json_t *syscalls)
{
    for (size_t b = 0; b < OBI_ARRAY_SIZE(SPECIAL_MODE_BITS); b++)
        for (size_t i = 0; i < OBI_ARRAY_SIZE(MODE_RULES); i++) {
            const mode_rule *m = &MODE_RULES[i];
            json_t *args = json_pack("[o]", arg_has_bits(m->mode_arg, SPECIAL_MODE_BITS[b]));
            if (!args || add_rule(syscalls, m->names, EPERM, args) < 0)
                return -ENOMEM;
        }
    return 0;
}

static int add_clone_rules(json_t *syscalls, const machine *m)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(CLONE_NAMESPACE_FLAGS); i++) {
        json_t *args = json_pack("[o]", arg_has_bits(m->clone_flags_arg, CLONE_NAMESPACE_FLAGS[i]));
        if (!args || add_rule(syscalls, CLONE, EPERM, args) < 0)
            return -ENOMEM;
    }
    return 0;
}

static const machine *find_machine(const char *name)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(MACHINES); i++)
        if (!strcmp(MACHINES[i].name, name))
            return &MACHINES[i];
    return NULL;
}

int obi_seccomp_build_profile(const char *machine_name, json_t **out, obi_error **err)
{
    struct utsname uts;
    if (!machine_name) {
        if (uname(&uts) < 0)
            return obi_error_set_errno(err, errno, "seccomp: uname");
        machine_name = uts.machine;
    }
    const machine *m = find_machine(machine_name);
    if (!m) {
        cleanup_buf obi_buf known = OBI_BUF_INIT;
        for (size_t i = 0; i < OBI_ARRAY_SIZE(MACHINES); i++)
            obi_buf_appendf(&known, "%s%s", i ? ", " : "", MACHINES[i].name);
        return obi_error_set(err, -ENOTSUP,
                             "seccomp: no syscall filter for machine \"%s\" (known: %s); builds "
                             "do not run without one",
                             machine_name, known.data ? (const char *)known.data : "");
    }
    cleanup_json json_t *syscalls = json_array();
    if (!syscalls || add_mode_rules(syscalls) < 0 || add_clone_rules(syscalls, m) < 0)
        return obi_error_set(err, -ENOMEM, "seccomp: out of memory");
    for (size_t i = 0; i < OBI_ARRAY_SIZE(DENY_RULES); i++)
        if (add_rule(syscalls, DENY_RULES[i].names, DENY_RULES[i].errno_ret, NULL) < 0)
            return obi_error_set(err, -ENOMEM, "seccomp: out of memory");
    json_t *profile = json_pack("{s:s, s:o, s:O}", "defaultAction", "SCMP_ACT_ALLOW",
                                "architectures", names_array(m->arches), "syscalls", syscalls);
    if (!profile)
        return obi_error_set(err, -ENOMEM, "seccomp: out of memory");
    *out = profile;
    return 0;
}
