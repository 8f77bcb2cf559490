/*
 * The build's syscall filter as the BPF program crun would make of it (include/ocibuild/
 * seccomp_bpf.h). compile() follows crun 1.8.1's libcrun_generate_seccomp call for call, so the
 * program is the one crun would load; the rest keeps the result: once per process, and in a
 * directory of files that are only ever read through a verified descriptor.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "ocibuild/blake3.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/dynlib.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"
#include "ocibuild/seccomp_bpf.h"

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

/* ---- libseccomp, loaded on first use ---- */

#define LIBSECCOMP_SONAME "libseccomp.so.2"
#define LIBSECCOMP_FUNCTIONS(X)                                                                    \
    X(seccomp_version)                                                                             \
    X(seccomp_init)                                                                                \
    X(seccomp_release)                                                                             \
    X(seccomp_arch_resolve_name)                                                                   \
    X(seccomp_arch_add)                                                                            \
    X(seccomp_syscall_resolve_name)                                                                \
    X(seccomp_rule_add)                                                                            \
    X(seccomp_rule_add_array)                                                                      \
    X(seccomp_export_bpf)

static struct {
/* A declarator: `name` is the member's name here, it cannot be parenthesized. */
#define LIBSECCOMP_DECLARE(name) __typeof__(name) *name; // NOLINT(bugprone-macro-parentheses)
    LIBSECCOMP_FUNCTIONS(LIBSECCOMP_DECLARE)
#undef LIBSECCOMP_DECLARE
} libseccomp;

static int libseccomp_load_result;
static char *libseccomp_load_error;
static pthread_once_t libseccomp_once = PTHREAD_ONCE_INIT;

static void libseccomp_load(void)
{
    static const obi_dynlib_symbol symbols[] = {
#define LIBSECCOMP_SYMBOL(name) {#name, (void **)&libseccomp.name},
        LIBSECCOMP_FUNCTIONS(LIBSECCOMP_SYMBOL)
#undef LIBSECCOMP_SYMBOL
    };
    cleanup_error obi_error *err = NULL;
    libseccomp_load_result =
        obi_dynlib_load(LIBSECCOMP_SONAME, symbols, OBI_ARRAY_SIZE(symbols), &err);
    if (libseccomp_load_result < 0)
        libseccomp_load_error = strdup(err->message);
}

static int need_libseccomp(obi_error **err)
{
    pthread_once(&libseccomp_once, libseccomp_load);
    if (libseccomp_load_result < 0)
        return obi_error_set(err, libseccomp_load_result, "seccomp: %s (install libseccomp2)",
                             libseccomp_load_error ? libseccomp_load_error : LIBSECCOMP_SONAME);
    return 0;
}

static void filter_releasep(scmp_filter_ctx *ctx)
{
    if (*ctx)
        libseccomp.seccomp_release(*ctx);
}
#define cleanup_filter _cleanup_(filter_releasep)

/* ---- crun's names (libcrun/seccomp.c) as tables ---- */

static const struct {
    const char *name;
    enum scmp_compare op;
} OPERATORS[] = {
    {"SCMP_CMP_NE", SCMP_CMP_NE},
    {"SCMP_CMP_LT", SCMP_CMP_LT},
    {"SCMP_CMP_LE", SCMP_CMP_LE},
    {"SCMP_CMP_EQ", SCMP_CMP_EQ},
    {"SCMP_CMP_GE", SCMP_CMP_GE},
    {"SCMP_CMP_GT", SCMP_CMP_GT},
    {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
};

/* SCMP_ACT_ + name; errno_ret: the action takes errnoRet (ERRNO, TRACE). */
static const struct {
    const char *name;
    uint32_t action;
    bool errno_ret;
} ACTIONS[] = {
    {"ALLOW", SCMP_ACT_ALLOW, false},
    {"ERRNO", SCMP_ACT_ERRNO(0), true},
    {"KILL", SCMP_ACT_KILL, false},
    {"LOG", SCMP_ACT_LOG, false},
    {"TRAP", SCMP_ACT_TRAP, false},
    {"TRACE", SCMP_ACT_TRACE(0), true},
    {"KILL_PROCESS", SCMP_ACT_KILL_PROCESS, false},
    {"KILL_THREAD", SCMP_ACT_KILL_THREAD, false},
    {"NOTIFY", SCMP_ACT_NOTIFY, false},
};

static const struct {
    const char *name;
    unsigned flag;
} FLAGS[] = {
    {"SECCOMP_FILTER_FLAG_TSYNC", SECCOMP_FILTER_FLAG_TSYNC},
    {"SECCOMP_FILTER_FLAG_SPEC_ALLOW", SECCOMP_FILTER_FLAG_SPEC_ALLOW},
    {"SECCOMP_FILTER_FLAG_LOG", SECCOMP_FILTER_FLAG_LOG},
    {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV},
};

/* The action named name (SCMP_ACT_*): -1 when crun knows no such action. */
static int find_action(const char *name)
{
    if (!name || strncmp(name, "SCMP_ACT_", 9) != 0)
        return -1;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(ACTIONS); i++)
        if (!strcmp(ACTIONS[i].name, name + 9))
            return (int)i;
    return -1;
}

/* crun's get_seccomp_action with its errnoRet checks: field names the object in errors. */
static int rule_action(const json_t *obj, const char *action_key, const char *errno_key,
                       const char *field, uint32_t *out, obi_error **err)
{
    const char *name = json_string_value(json_object_get(obj, action_key));
    int a = find_action(name);
    if (a < 0)
        return obi_error_set(err, -EINVAL, "%s.%s: invalid seccomp action `%s`", field, action_key,
                             name ? name : "(missing)");
    const json_t *errno_json = json_object_get(obj, errno_key);
    uint32_t errno_ret = EPERM;
    if (errno_json) {
        if (!ACTIONS[a].errno_ret)
            return obi_error_set(err, -EINVAL, "%s.%s: errno value specified for action `%s`",
                                 field, errno_key, name);
        errno_ret = (uint32_t)json_integer_value(errno_json);
    }
    *out = !strcmp(ACTIONS[a].name, "ERRNO")   ? SCMP_ACT_ERRNO(errno_ret)
           : !strcmp(ACTIONS[a].name, "TRACE") ? SCMP_ACT_TRACE(errno_ret)
                                               : ACTIONS[a].action;
    return 0;
}

static int add_architectures(scmp_filter_ctx ctx, const json_t *profile, obi_error **err)
{
    size_t i;
    const json_t *arch;
    json_array_foreach(json_object_get(profile, "architectures"), i, arch)
    {
        const char *name = json_string_value(arch);
        if (!name)
            return obi_error_set(err, -EINVAL, "linux.seccomp.architectures[%zu]: not a string", i);
        if (!strncmp(name, "SCMP_ARCH_", 10))
            name += 10;
        char lower[32] = {0};
        for (size_t k = 0; k < sizeof lower - 1 && name[k]; k++)
            lower[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] - 'A' + 'a' : name[k]);
        uint32_t token = libseccomp.seccomp_arch_resolve_name(lower);
        if (token == 0)
            return obi_error_set(
                err, -EINVAL, "linux.seccomp.architectures[%zu]: unknown architecture %s", i, name);
        int r = libseccomp.seccomp_arch_add(ctx, token);
        if (r < 0 && r != -EEXIST)
            return obi_error_set(err, r, "linux.seccomp.architectures[%zu]: seccomp_arch_add %s", i,
                                 name);
    }
    return 0;
}

/* The conditions of a rule; *split: two of them test one argument (crun then adds one rule per
 * condition, libseccomp refusing both in one). */
static int rule_conditions(const json_t *args, size_t rule, struct scmp_arg_cmp cmp[6], unsigned *n,
                           bool *split, obi_error **err)
{
    unsigned count[6] = {0};
    *n = 0;
    *split = false;
    for (size_t k = 0; k < json_array_size(args) && k < 6; k++) {
        const json_t *arg = json_array_get(args, k);
        json_int_t index = json_integer_value(json_object_get(arg, "index"));
        if (index < 0 || index >= 6)
            return obi_error_set(err, -EINVAL,
                                 "linux.seccomp.syscalls[%zu].args[%zu].index: invalid seccomp "
                                 "index %lld",
                                 rule, k, (long long)index);
        if (++count[index] > 1)
            *split = true;
        const char *op = json_string_value(json_object_get(arg, "op"));
        size_t o = 0;
        while (o < OBI_ARRAY_SIZE(OPERATORS) && (!op || strcmp(OPERATORS[o].name, op) != 0))
            o++;
        if (o == OBI_ARRAY_SIZE(OPERATORS))
            return obi_error_set(err, -EINVAL,
                                 "linux.seccomp.syscalls[%zu].args[%zu].op: unknown operator `%s`",
                                 rule, k, op ? op : "(missing)");
        cmp[k] = (struct scmp_arg_cmp){
            .arg = (unsigned)index,
            .op = OPERATORS[o].op,
            .datum_a = (scmp_datum_t)json_integer_value(json_object_get(arg, "value")),
            .datum_b = (scmp_datum_t)json_integer_value(json_object_get(arg, "valueTwo")),
        };
        (*n)++;
    }
    return 0;
}

static int add_syscall(scmp_filter_ctx ctx, const json_t *rule, size_t i, uint32_t action, int nr,
                       const char *name, obi_error **err)
{
    const json_t *args = json_object_get(rule, "args");
    int r;
    if (!args) {
        if ((r = libseccomp.seccomp_rule_add(ctx, action, nr, 0)) < 0)
            return obi_error_set(err, r, "linux.seccomp.syscalls[%zu]: seccomp_rule_add `%s`", i,
                                 name);
        return 0;
    }
    struct scmp_arg_cmp cmp[6];
    unsigned n;
    bool split;
    if ((r = rule_conditions(args, i, cmp, &n, &split, err)) < 0)
        return r;
    for (unsigned k = 0; k < (split ? n : 1); k++)
        if ((r = libseccomp.seccomp_rule_add_array(ctx, action, nr, split ? 1 : n,
                                                   split ? &cmp[k] : cmp)) < 0)
            return obi_error_set(err, r, "linux.seccomp.syscalls[%zu]: seccomp_rule_add_array `%s`",
                                 i, name);
    return 0;
}

static int add_rules(scmp_filter_ctx ctx, const json_t *profile, uint32_t default_action,
                     obi_error **err)
{
    size_t i;
    const json_t *rule;
    json_array_foreach(json_object_get(profile, "syscalls"), i, rule)
    {
        char field[48];
        snprintf(field, sizeof field, "linux.seccomp.syscalls[%zu]", i);
        uint32_t action = 0;
        int r = rule_action(rule, "action", "errnoRet", field, &action, err);
        if (r < 0)
            return r;
        if (action == default_action)
            continue;
        size_t j;
        const json_t *name;
        json_array_foreach(json_object_get(rule, "names"), j, name)
        {
            const char *s = json_string_value(name);
            int nr = s ? libseccomp.seccomp_syscall_resolve_name(s) : __NR_SCMP_ERROR;
            if (nr == __NR_SCMP_ERROR)
                continue; /* crun: "unknown seccomp syscall ignored" */
            if ((r = add_syscall(ctx, rule, i, action, nr, s, err)) < 0)
                return r;
        }
    }
    return 0;
}

/* seccomp_export_bpf writes to a descriptor: a memfd, read back whole. */
static int export_program(scmp_filter_ctx ctx, uint8_t **out, size_t *out_len, obi_error **err)
{
    cleanup_close int fd = memfd_create("ocibuild-seccomp-bpf", MFD_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "seccomp: memfd_create");
    int r = libseccomp.seccomp_export_bpf(ctx, fd);
    if (r < 0)
        return obi_error_set(err, r, "seccomp: seccomp_export_bpf");
    struct stat st;
    if (fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "seccomp: fstat of the exported program");
    size_t len = (size_t)st.st_size;
    if (len == 0 || len % sizeof(struct sock_filter) != 0)
        return obi_error_set(err, -EIO, "seccomp: exported program of %zu bytes", len);
    cleanup_free uint8_t *bpf = malloc(len);
    if (!bpf)
        return obi_error_oom(err);
    if (pread(fd, bpf, len, 0) != (ssize_t)len)
        return obi_error_set_errno(err, errno ? errno : EIO, "seccomp: read the exported program");
    *out = steal_pointer(&bpf);
    *out_len = len;
    return 0;
}

int obi_seccomp_bpf_compile(const json_t *profile, uint8_t **out, size_t *out_len, obi_error **err)
{
    int r = need_libseccomp(err);
    if (r < 0)
        return r;
    if (!json_object_get(profile, "defaultAction"))
        return obi_error_set(err, -EINVAL, "linux.seccomp.defaultAction: missing");
    uint32_t default_action = 0;
    if ((r = rule_action(profile, "defaultAction", "defaultErrnoRet", "linux.seccomp",
                         &default_action, err)) < 0)
        return r;
    cleanup_filter scmp_filter_ctx ctx = libseccomp.seccomp_init(default_action);
    if (!ctx)
        return obi_error_set(err, -EINVAL, "seccomp: seccomp_init failed");
    if ((r = add_architectures(ctx, profile, err)) < 0 ||
        (r = add_rules(ctx, profile, default_action, err)) < 0)
        return r;
    return export_program(ctx, out, out_len, err);
}

int obi_seccomp_bpf_flags(const json_t *profile, unsigned *flags, obi_error **err)
{
    const json_t *list = json_object_get(profile, "flags");
    if (!list) {
        *flags = SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        return 0;
    }
    unsigned all = 0;
    size_t i;
    const json_t *flag;
    json_array_foreach(list, i, flag)
    {
        const char *name = json_string_value(flag);
        size_t f = 0;
        while (f < OBI_ARRAY_SIZE(FLAGS) && (!name || strcmp(FLAGS[f].name, name) != 0))
            f++;
        if (f == OBI_ARRAY_SIZE(FLAGS))
            return obi_error_set(err, -EINVAL,
                                 "linux.seccomp.flags[%zu]: unknown seccomp option %s", i,
                                 name ? name : "(not a string)");
        all |= FLAGS[f].flag;
    }
    *flags = all;
    return 0;
}

/* ---- the key ---- */

int obi_seccomp_bpf_key(const json_t *profile, char key[OBI_SECCOMP_BPF_KEY_LEN + 1],
                        obi_error **err)
{
    struct utsname uts;
    if (uname(&uts) < 0)
        return obi_error_set_errno(err, errno, "seccomp: uname");
    cleanup_free char *json = json_dumps(profile, JSON_COMPACT | JSON_SORT_KEYS);
    if (!json)
        return obi_error_oom(err);
    cleanup_buf obi_buf text = OBI_BUF_INIT;
    obi_buf_appendf(&text, "ocibuild seccomp bpf 2\n%s\n%s\n%s\n%s\n", uts.machine, uts.release,
                    uts.version, json);
    if (!text.data)
        return obi_error_oom(err);
    uint8_t digest[OBI_BLAKE3_OUT_LEN];
    obi_blake3(text.data, text.len, digest);
    obi_hex_encode(digest, OBI_SECCOMP_BPF_KEY_LEN / 2, key);
    key[OBI_SECCOMP_BPF_KEY_LEN] = 0;
    return 0;
}

/* ---- the disk cache ----
 * An entry: MAGIC, the key (hex), the program's length and the library's identity's (4 bytes
 * each, little endian), BLAKE3 of all that, the identity and the program, then the identity and
 * the program. The identity (library_identity) stands for libseccomp's version without loading
 * the library: a hit costs no dlopen (~0.5 ms here, as much as compiling). */

#define MAGIC "OBIBPF2\n"
#define MAGIC_LEN 8
#define LENGTHS_AT (MAGIC_LEN + OBI_SECCOMP_BPF_KEY_LEN)
#define SUM_AT (LENGTHS_AT + 8)
#define HEADER_LEN (SUM_AT + OBI_BLAKE3_OUT_LEN)
#define MAX_PROGRAM_LEN (BPF_MAXINSNS * sizeof(struct sock_filter))
#define MAX_IDENTITY_LEN 4096

/* "PATH\nDEV INO SIZE MTIME CTIME\n" of the library file at path (caller frees); NULL when it
 * cannot be stat'ed. The same file gives the same program: a package upgrade replaces it. */
static char *library_identity(const char *path)
{
    struct stat st;
    char *out = NULL;
    if (!path || path[0] != '/' || strchr(path, '\n') || stat(path, &st) < 0 ||
        asprintf(&out, "%s\n%llu %llu %lld %lld.%09ld %lld.%09ld\n", path,
                 (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                 (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                 (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec) < 0)
        return NULL;
    return out;
}

/* The file libseccomp was loaded from. */
static const char *loaded_library(void)
{
    Dl_info info;
    return dladdr((void *)libseccomp.seccomp_init, &info) ? info.dli_fname : NULL;
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int b = 0; b < 4; b++)
        p[b] = (uint8_t)(v >> (8 * b));
}

static void entry_checksum(const uint8_t *entry, size_t len, uint8_t out[OBI_BLAKE3_OUT_LEN])
{
    obi_blake3_hasher h;
    obi_blake3_init(&h);
    obi_blake3_update(&h, entry, SUM_AT);
    obi_blake3_update(&h, entry + HEADER_LEN, len - HEADER_LEN);
    obi_blake3_finalize(&h, out, OBI_BLAKE3_OUT_LEN);
}

static bool valid_key(const char *key)
{
    size_t n = strspn(key, "0123456789abcdef");
    return n == OBI_SECCOMP_BPF_KEY_LEN && key[n] == 0;
}

/* Ours: the effective user's, writable by no one else (a directory) or readable by no one else
 * (a file, with one link). */
static bool trusted(const struct stat *st, bool dir)
{
    if (st->st_uid != geteuid())
        return false;
    if (dir)
        return S_ISDIR(st->st_mode) && (st->st_mode & 022) == 0;
    return S_ISREG(st->st_mode) && (st->st_mode & 077) == 0 && st->st_nlink == 1;
}

/* The entry's bytes, when the descriptors check out; NULL otherwise. */
static uint8_t *read_entry(const char *dir, const char *key, size_t *len)
{
    cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (dfd < 0 || fstat(dfd, &st) < 0 || !trusted(&st, true))
        return NULL;
    cleanup_close int fd = openat(dfd, key, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0 || !trusted(&st, false) || st.st_size <= HEADER_LEN ||
        (size_t)st.st_size > HEADER_LEN + MAX_IDENTITY_LEN + MAX_PROGRAM_LEN)
        return NULL;
    size_t size = (size_t)st.st_size;
    cleanup_free uint8_t *data = malloc(size + 1); /* one more: a file that grew is seen */
    if (!data)
        return NULL;
    size_t got = 0;
    for (ssize_t n; got <= size; got += (size_t)n)
        if ((n = pread(fd, data + got, size + 1 - got, (off_t)got)) <= 0)
            break;
    if (got != size)
        return NULL;
    *len = size;
    return steal_pointer(&data);
}

int obi_seccomp_bpf_cache_get(const char *dir, const char *key, uint8_t **out, size_t *out_len,
                              obi_error **err)
{
    if (!valid_key(key))
        return 0;
    size_t size = 0;
    cleanup_free uint8_t *entry = read_entry(dir, key, &size);
    if (!entry || memcmp(entry, MAGIC, MAGIC_LEN) != 0 ||
        memcmp(entry + MAGIC_LEN, key, OBI_SECCOMP_BPF_KEY_LEN) != 0)
        return 0;
    size_t len = get_le32(entry + LENGTHS_AT), id_len = get_le32(entry + LENGTHS_AT + 4);
    if (len == 0 || len % sizeof(struct sock_filter) != 0 || len > MAX_PROGRAM_LEN ||
        id_len > MAX_IDENTITY_LEN || HEADER_LEN + id_len + len != size)
        return 0;
    uint8_t sum[OBI_BLAKE3_OUT_LEN];
    entry_checksum(entry, size, sum);
    if (memcmp(sum, entry + SUM_AT, sizeof sum) != 0)
        return 0;
    /* Made with the library file that is there now. */
    const char *id = (const char *)entry + HEADER_LEN;
    const char *newline = memchr(id, '\n', id_len);
    if (!newline)
        return 0;
    cleanup_free char *path = strndup(id, (size_t)(newline - id));
    if (!path)
        return obi_error_oom(err);
    cleanup_free char *now = library_identity(path);
    if (!now || strlen(now) != id_len || memcmp(now, id, id_len) != 0)
        return 0;
    memmove(entry, entry + HEADER_LEN + id_len, len);
    *out = steal_pointer(&entry);
    *out_len = len;
    return 1;
}

/* Creates the entry under a name of its own and renames it in: readers see a whole entry or
 * none. No fsync: an entry cut short by a crash fails its checksum and is made again. */
static int write_entry(const char *dir, const char *key, const uint8_t *entry, size_t len,
                       obi_error **err)
{
    cleanup_close int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return obi_error_set_errno(err, errno, "open %s", dir);
    char tmp[OBI_SECCOMP_BPF_KEY_LEN + 32];
    snprintf(tmp, sizeof tmp, ".%s.%ld.tmp", key, (long)getpid());
    unlinkat(dfd, tmp, 0);
    cleanup_close int fd =
        openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "create %s/%s", dir, tmp);
    if (obi_write_all(fd, entry, len) < 0 || renameat(dfd, tmp, dfd, key) < 0) {
        int e = errno;
        unlinkat(dfd, tmp, 0);
        return obi_error_set_errno(err, e, "write %s/%s", dir, key);
    }
    return 0;
}

int obi_seccomp_bpf_cache_put(const char *dir, const char *key, const uint8_t *bpf, size_t len,
                              const char *library, obi_error **err)
{
    if (!valid_key(key))
        return obi_error_set(err, -EINVAL, "seccomp cache: invalid key \"%s\"", key);
    if (len == 0 || len % sizeof(struct sock_filter) != 0 || len > MAX_PROGRAM_LEN)
        return obi_error_set(err, -EINVAL, "seccomp cache: a program of %zu bytes", len);
    int r = library ? 0 : need_libseccomp(err);
    if (r < 0)
        return r;
    if (!library)
        library = loaded_library();
    cleanup_free char *id = library_identity(library);
    if (!id || strlen(id) > MAX_IDENTITY_LEN)
        return obi_error_set(err, -ENOENT, "seccomp cache: cannot stat the library %s",
                             library ? library : "(unknown)");
    size_t id_len = strlen(id);
    /* Only the cache dir itself: its parent (the data dir) has the mode others set. */
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return obi_error_set_errno(err, errno, "mkdir %s", dir);
    size_t size = HEADER_LEN + id_len + len;
    cleanup_free uint8_t *entry = malloc(size);
    if (!entry)
        return obi_error_oom(err);
    /* Binary fields: the magic, key and identity are stored without their NULs. */
    memcpy(entry, MAGIC, MAGIC_LEN); // NOLINT(bugprone-not-null-terminated-result)
    memcpy(entry + MAGIC_LEN, key, OBI_SECCOMP_BPF_KEY_LEN);
    put_le32(entry + LENGTHS_AT, (uint32_t)len);
    put_le32(entry + LENGTHS_AT + 4, (uint32_t)id_len);
    memcpy(entry + HEADER_LEN, id, id_len); // NOLINT(bugprone-not-null-terminated-result)
    memcpy(entry + HEADER_LEN + id_len, bpf, len);
    entry_checksum(entry, size, entry + SUM_AT);
    return write_entry(dir, key, entry, size, err);
}

/* ---- the annotation ---- */

/* This process's last program, as base64. */
static pthread_mutex_t last_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_key[OBI_SECCOMP_BPF_KEY_LEN + 1];
static char *last_base64;

static int program_base64(const json_t *profile, const char *key, const char *cache_dir, char **out,
                          obi_error **err)
{
    cleanup_free uint8_t *bpf = NULL;
    size_t len = 0;
    int r = cache_dir ? obi_seccomp_bpf_cache_get(cache_dir, key, &bpf, &len, err) : 0;
    if (r < 0)
        return r;
    if (r == 0) {
        if ((r = obi_seccomp_bpf_compile(profile, &bpf, &len, err)) < 0)
            return r;
        cleanup_error obi_error *ignored = NULL;
        if (cache_dir)
            obi_seccomp_bpf_cache_put(cache_dir, key, bpf, len, NULL, &ignored);
    }
    char *text = malloc(obi_base64_encoded_len(len) + 1);
    if (!text)
        return obi_error_oom(err);
    obi_base64_encode(bpf, len, text);
    *out = text;
    return 0;
}

int obi_seccomp_bpf_annotate(json_t *config, const json_t *profile, const char *cache_dir,
                             obi_error **err)
{
    char key[OBI_SECCOMP_BPF_KEY_LEN + 1];
    int r = obi_seccomp_bpf_key(profile, key, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&last_lock);
    if (!last_base64 || strcmp(last_key, key) != 0) {
        char *text = NULL;
        if ((r = program_base64(profile, key, cache_dir, &text, err)) == 0) {
            free(last_base64);
            last_base64 = text;
            memcpy(last_key, key, sizeof key);
        }
    }
    json_t *value = r == 0 ? json_string(last_base64) : NULL;
    pthread_mutex_unlock(&last_lock);
    if (r < 0)
        return obi_error_prefix(err, r, "seccomp: the %s annotation", OBI_SECCOMP_BPF_ANNOTATION);
    if (!json_object_get(config, "annotations"))
        json_object_set_new(config, "annotations", json_object());
    json_t *annotations = json_object_get(config, "annotations");
    if (!annotations) {
        json_decref(value);
        return obi_error_oom(err);
    }
    /* json_object_set_new takes value, also when it fails. */
    if (!value || json_object_set_new(annotations, OBI_SECCOMP_BPF_ANNOTATION, value) < 0)
        return obi_error_oom(err);
    return 0;
}
