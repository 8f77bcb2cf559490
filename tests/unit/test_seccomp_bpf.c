/*
 * The build's syscall filter compiled as crun would (seccomp_bpf.h): the program, loaded in a
 * forked child (no_new_privs, seccomp(SECCOMP_SET_MODE_FILTER) with crun's flags), refuses with
 * the profile's errno exactly the calls the profile's JSON rules match, argument conditions
 * included, and changes nothing else; crun's skips and errors; the disk cache gives back only
 * entries it wrote whole; the annotation in config.json.
 */
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/seccomp.h"
#include "ocibuild/seccomp_bpf.h"
#include "ocibuild/spec.h"
#include "request_fixture.h"
#include "test_helpers.h"

#define NOWHERE "/nonexistent-obi-seccomp-test/file"

/* A call a child makes, and what the kernel alone answers (never the filter's errno). */
typedef struct call {
    const char *name; /* as in the profile */
    long nr;
    long args[6];
} call;

static const call CALLS[] = {
    {"chmod", SYS_chmod, {(long)NOWHERE, 04755}}, /* ENOENT */
    {"chmod", SYS_chmod, {(long)NOWHERE, 02755}}, /* ENOENT */
    {"chmod", SYS_chmod, {(long)NOWHERE, 0755}},  /* ENOENT: allowed */
    {"fchmod", SYS_fchmod, {-1, 04700}},          /* EBADF */
    {"fchmod", SYS_fchmod, {-1, 0644}},           /* EBADF: allowed */
    {"fchmodat", SYS_fchmodat, {AT_FDCWD, (long)NOWHERE, 02755}},
    {"fchmodat", SYS_fchmodat, {AT_FDCWD, (long)NOWHERE, 0755}},
    /* CLONE_THREAD without CLONE_SIGHAND: EINVAL, nothing is made either way. */
    {"clone", SYS_clone, {CLONE_NEWUSER | CLONE_THREAD}},
    {"clone", SYS_clone, {CLONE_THREAD}},
    {"setxattr", SYS_setxattr, {(long)NOWHERE, (long)"user.x", (long)"", 0, 0}}, /* ENOENT */
    {"keyctl", SYS_keyctl, {0x7fff}},                                            /* EOPNOTSUPP */
    {"add_key", SYS_add_key, {0}},                                               /* EFAULT */
    {"unshare", SYS_unshare, {CLONE_SETTLS}},                                    /* EINVAL */
    {"setns", SYS_setns, {-1, 0}},                                               /* EBADF */
    {"bpf", SYS_bpf, {-1, 0, 0}},                                                /* EINVAL */
    {"io_uring_setup", SYS_io_uring_setup, {0, 0}},
    {"clone3", SYS_clone3, {0, 0}},
    {"getppid", SYS_getppid, {0}}, /* no rule */
};
#define N_CALLS OBI_ARRAY_SIZE(CALLS)

static json_t *build_profile(void)
{
    json_t *profile = NULL;
    assert_ok(obi_seccomp_build_profile(NULL, &profile, err_ptr_));
    return profile;
}

/* What the profile's JSON says of c: the errnoRet of the rule that matches it, 0 for none. Only
 * the operator the build profile uses is known here. */
static int profile_errno(const json_t *profile, const call *c)
{
    size_t i, j, k;
    const json_t *rule, *name, *arg;
    json_array_foreach(json_object_get(profile, "syscalls"), i, rule)
    {
        bool named = false;
        json_array_foreach(json_object_get(rule, "names"), j, name)
        {
            named |= !strcmp(json_string_value(name), c->name);
        }
        bool all = named;
        json_array_foreach(json_object_get(rule, "args"), k, arg)
        {
            assert_string_equal(json_string_value(json_object_get(arg, "op")),
                                "SCMP_CMP_MASKED_EQ");
            unsigned long value =
                (unsigned long)c->args[json_integer_value(json_object_get(arg, "index"))];
            all &= (value & (unsigned long)json_integer_value(json_object_get(arg, "value"))) ==
                   (unsigned long)json_integer_value(json_object_get(arg, "valueTwo"));
        }
        if (all)
            return (int)json_integer_value(json_object_get(rule, "errnoRet"));
    }
    return 0;
}

/* Makes every call in a child, under program when it is not NULL; the errno of each (0: it
 * worked) in out. */
static void run_calls(const uint8_t *program, size_t len, unsigned flags, int out[N_CALLS])
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        if (program) {
            struct sock_fprog prog = {(unsigned short)(len / sizeof(struct sock_filter)),
                                      (struct sock_filter *)(uintptr_t)program};
            if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                _exit(2);
            /* crun: flags the kernel refuses (EINVAL) are dropped. */
            if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) < 0 &&
                (errno != EINVAL || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0))
                _exit(3);
        }
        int results[N_CALLS];
        for (size_t i = 0; i < N_CALLS; i++) {
            const long *a = CALLS[i].args;
            results[i] = syscall(CALLS[i].nr, a[0], a[1], a[2], a[3], a[4], a[5]) < 0 ? errno : 0;
        }
        _exit(write(fds[1], results, sizeof results) == (ssize_t)sizeof results ? 0 : 4);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], out, sizeof(int) * N_CALLS);
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        print_error("child: status %#x\n", (unsigned)status);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(n, (ssize_t)(sizeof(int) * N_CALLS));
}

static void test_seccomp_bpf_refuses_what_the_profile_says_and_nothing_else(void **state)
{
    (void)state;
    cleanup_json json_t *profile = build_profile();
    cleanup_free uint8_t *bpf = NULL;
    size_t len = 0;
    assert_ok(obi_seccomp_bpf_compile(profile, &bpf, &len, err_ptr_));
    assert_true(len > 0 && len % sizeof(struct sock_filter) == 0);
    unsigned flags = 0;
    assert_ok(obi_seccomp_bpf_flags(profile, &flags, err_ptr_));
    int plain[N_CALLS], filtered[N_CALLS];
    run_calls(NULL, 0, 0, plain);
    run_calls(bpf, len, flags, filtered);
    size_t refused = 0;
    for (size_t i = 0; i < N_CALLS; i++) {
        int want = profile_errno(profile, &CALLS[i]);
        if (want) {
            refused++;
            /* The call tells the filter from the kernel, and the filter answered. */
            if (plain[i] == want || filtered[i] != want)
                print_error("%s (%zu): profile %d, filtered %d, unfiltered %d\n", CALLS[i].name, i,
                            want, filtered[i], plain[i]);
            assert_int_not_equal(plain[i], want);
            assert_int_equal(filtered[i], want);
        } else {
            if (filtered[i] != plain[i])
                print_error("%s (%zu): allowed by the profile, filtered %d, unfiltered %d\n",
                            CALLS[i].name, i, filtered[i], plain[i]);
            assert_int_equal(filtered[i], plain[i]);
        }
    }
    /* Each kind of rule was met: the setuid/setgid and clone conditions, ENOTSUP, ENOSYS. */
    assert_int_equal(refused, 13);
}

static json_t *profile_with(const char *extra_rules)
{
    json_error_t jerr;
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"architectures\": "
                         "[\"SCMP_ARCH_X86_64\"], \"syscalls\": [%s]}",
                         extra_rules) > 0);
    json_t *p = json_loads(text, 0, &jerr);
    if (!p)
        print_error("%s: %s\n", text, jerr.text);
    assert_non_null(p);
    return p;
}

static void assert_same_program(const json_t *a, const json_t *b)
{
    cleanup_free uint8_t *pa = NULL, *pb = NULL;
    size_t la = 0, lb = 0;
    assert_ok(obi_seccomp_bpf_compile(a, &pa, &la, err_ptr_));
    assert_ok(obi_seccomp_bpf_compile(b, &pb, &lb, err_ptr_));
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la);
}

static void test_seccomp_bpf_skips_unknown_names_and_default_actions_as_crun(void **state)
{
    (void)state;
    const char *keyctl = "{\"names\": [\"keyctl\"], \"action\": \"SCMP_ACT_ERRNO\"}";
    cleanup_json json_t *base = profile_with(keyctl);
    cleanup_json json_t *unknown =
        profile_with("{\"names\": [\"keyctl\", \"obi_no_such_syscall\"], \"action\": "
                     "\"SCMP_ACT_ERRNO\"}");
    cleanup_json json_t *allow = profile_with(
        "{\"names\": [\"keyctl\"], \"action\": \"SCMP_ACT_ERRNO\"}, {\"names\": [\"getpid\"], "
        "\"action\": \"SCMP_ACT_ALLOW\"}");
    cleanup_json json_t *empty = profile_with("");
    assert_same_program(base, unknown);
    assert_same_program(base, allow);
    /* ... and a rule does change the program. */
    cleanup_free uint8_t *p0 = NULL, *p1 = NULL;
    size_t l0 = 0, l1 = 0;
    assert_ok(obi_seccomp_bpf_compile(empty, &p0, &l0, err_ptr_));
    assert_ok(obi_seccomp_bpf_compile(base, &p1, &l1, err_ptr_));
    assert_true(l0 != l1 || memcmp(p0, p1, l0) != 0);
}

static void test_seccomp_bpf_errors_name_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *rules, *needle;
    } CASES[] = {
        {"{\"names\": [\"chmod\"], \"action\": \"SCMP_ACT_NOPE\"}",
         "linux.seccomp.syscalls[0].action: invalid seccomp action `SCMP_ACT_NOPE`"},
        {"{\"names\": [\"chmod\"], \"action\": \"SCMP_ACT_KILL\", \"errnoRet\": 1}",
         "linux.seccomp.syscalls[0].errnoRet: errno value specified for action `SCMP_ACT_KILL`"},
        {"{\"names\": [\"chmod\"], \"action\": \"SCMP_ACT_ERRNO\", \"args\": [{\"index\": 6, "
         "\"value\": 1, \"op\": \"SCMP_CMP_EQ\"}]}",
         "linux.seccomp.syscalls[0].args[0].index: invalid seccomp index 6"},
        {"{\"names\": [\"chmod\"], \"action\": \"SCMP_ACT_ERRNO\", \"args\": [{\"index\": 1, "
         "\"value\": 1, \"op\": \"SCMP_CMP_ABOUT\"}]}",
         "linux.seccomp.syscalls[0].args[0].op: unknown operator `SCMP_CMP_ABOUT`"},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(CASES); i++) {
        cleanup_json json_t *p = profile_with(CASES[i].rules);
        uint8_t *bpf = NULL;
        size_t len = 0;
        obi_error *err = NULL;
        assert_fails_with(err, obi_seccomp_bpf_compile(p, &bpf, &len, &err), -EINVAL,
                          CASES[i].needle);
        assert_null(bpf);
    }
    cleanup_json json_t *arch = json_pack("{s:s, s:[s], s:[]}", "defaultAction", "SCMP_ACT_ALLOW",
                                          "architectures", "SCMP_ARCH_VAX", "syscalls");
    uint8_t *bpf = NULL;
    size_t len = 0;
    obi_error *err = NULL;
    assert_fails_with(err, obi_seccomp_bpf_compile(arch, &bpf, &len, &err), -EINVAL,
                      "linux.seccomp.architectures[0]: unknown architecture VAX");
}

static void test_seccomp_bpf_flags_are_crun_s(void **state)
{
    (void)state;
    cleanup_json json_t *none = profile_with("");
    unsigned flags = 0;
    assert_ok(obi_seccomp_bpf_flags(none, &flags, err_ptr_));
    assert_int_equal(flags, SECCOMP_FILTER_FLAG_SPEC_ALLOW);
    json_object_set_new(
        none, "flags", json_pack("[s, s]", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"));
    assert_ok(obi_seccomp_bpf_flags(none, &flags, err_ptr_));
    assert_int_equal(flags, SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_TSYNC);
    json_object_set_new(none, "flags", json_pack("[s]", "SECCOMP_FILTER_FLAG_NOPE"));
    obi_error *err = NULL;
    assert_fails_with(err, obi_seccomp_bpf_flags(none, &flags, &err), -EINVAL,
                      "linux.seccomp.flags[0]: unknown seccomp option SECCOMP_FILTER_FLAG_NOPE");
}

/* ---- the disk cache ---- */

typedef struct cache_fixture {
    char *tmp, *dir, *path;
    char key[OBI_SECCOMP_BPF_KEY_LEN + 1];
    uint8_t *bpf;
    size_t len;
} cache_fixture;

static int cache_setup(void **state)
{
    cache_fixture *f = calloc(1, sizeof *f);
    f->tmp = obi_test_tmpdir();
    f->dir = obi_path_join(f->tmp, "seccomp-bpf");
    cleanup_json json_t *profile = build_profile();
    assert_ok(obi_seccomp_bpf_key(profile, f->key, err_ptr_));
    f->path = obi_path_join(f->dir, f->key);
    assert_ok(obi_seccomp_bpf_compile(profile, &f->bpf, &f->len, err_ptr_));
    assert_ok(obi_seccomp_bpf_cache_put(f->dir, f->key, f->bpf, f->len, NULL, err_ptr_));
    *state = f;
    return 0;
}

static int cache_teardown(void **state)
{
    cache_fixture *f = *state;
    obi_test_tmpdir_remove(f->tmp);
    free(f->dir);
    free(f->path);
    free(f->bpf);
    free(f);
    return 0;
}

/* 1 and the program when the entry is good, 0 when it is not; nothing else. */
static int cache_get(const cache_fixture *f)
{
    cleanup_free uint8_t *got = NULL;
    size_t len = 0;
    cleanup_error obi_error *err = NULL;
    int r = obi_seccomp_bpf_cache_get(f->dir, f->key, &got, &len, &err);
    assert_true(r == 0 || r == 1);
    if (r == 1) {
        assert_int_equal(len, f->len);
        assert_memory_equal(got, f->bpf, len);
    } else {
        assert_null(got);
    }
    return r;
}

static void test_seccomp_bpf_cache_gives_back_what_was_put(void **state)
{
    cache_fixture *f = *state;
    assert_int_equal(cache_get(f), 1);
    struct stat st;
    assert_int_equal(stat(f->dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    /* Another key finds nothing. */
    char other[OBI_SECCOMP_BPF_KEY_LEN + 1];
    memcpy(other, f->key, sizeof other);
    other[0] = other[0] == '0' ? '1' : '0';
    uint8_t *got = NULL;
    size_t len = 0;
    assert_int_equal(obi_seccomp_bpf_cache_get(f->dir, other, &got, &len, NULL), 0);
    assert_int_equal(obi_seccomp_bpf_cache_get(f->dir, "../seccomp-bpf", &got, &len, NULL), 0);
    assert_null(got);
}

static void flip_byte(const char *path, off_t offset)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b = 0;
    assert_int_equal(pread(fd, &b, 1, offset), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, offset), 1);
    close(fd);
}

static void test_seccomp_bpf_cache_refuses_corrupt_or_foreign_entries(void **state)
{
    cache_fixture *f = *state;
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    off_t size = st.st_size;
    /* Truncated: by a whole instruction (the length field no longer matches), and to nothing. */
    assert_int_equal(truncate(f->path, size - 8), 0);
    assert_int_equal(cache_get(f), 0);
    assert_int_equal(truncate(f->path, 0), 0);
    assert_int_equal(cache_get(f), 0);
    /* A flipped byte of the program, of the library's identity, of the checksum, of the
     * lengths, of the key, of the magic. */
    const off_t offsets[] = {size - 1, size - (off_t)f->len - 1, 48, 40, 8, 0};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(offsets); i++) {
        assert_ok(obi_seccomp_bpf_cache_put(f->dir, f->key, f->bpf, f->len, NULL, err_ptr_));
        assert_int_equal(cache_get(f), 1);
        flip_byte(f->path, offsets[i]);
        assert_int_equal(cache_get(f), 0);
    }
    /* Appended to. */
    assert_ok(obi_seccomp_bpf_cache_put(f->dir, f->key, f->bpf, f->len, NULL, err_ptr_));
    FILE *fp = fopen(f->path, "a");
    fwrite("\0\0\0\0\0\0\0\0", 1, 8, fp);
    fclose(fp);
    assert_int_equal(cache_get(f), 0);
}

static void test_seccomp_bpf_cache_reads_only_private_files(void **state)
{
    cache_fixture *f = *state;
    /* Readable by others, or a directory writable by others. */
    assert_int_equal(chmod(f->path, 0644), 0);
    assert_int_equal(cache_get(f), 0);
    assert_int_equal(chmod(f->path, 0600), 0);
    assert_int_equal(cache_get(f), 1);
    assert_int_equal(chmod(f->dir, 0777), 0);
    assert_int_equal(cache_get(f), 0);
    assert_int_equal(chmod(f->dir, 0700), 0);
    /* A second link (someone else's name for it), a symlink to a good entry. */
    cleanup_free char *other = obi_path_join(f->tmp, "other");
    assert_int_equal(link(f->path, other), 0);
    assert_int_equal(cache_get(f), 0);
    assert_int_equal(unlink(other), 0);
    assert_int_equal(cache_get(f), 1);
    cleanup_free char *moved = obi_path_join(f->tmp, "moved");
    assert_int_equal(rename(f->path, moved), 0);
    assert_int_equal(symlink(moved, f->path), 0);
    assert_int_equal(cache_get(f), 0);
    unlink(f->path);
    /* A directory where the entry should be. */
    assert_int_equal(mkdir(f->path, 0700), 0);
    assert_int_equal(cache_get(f), 0);
    rmdir(f->path);
}

/* The entry stands for the library it was made with: a library file that changed (a package
 * upgrade) or is gone makes it a miss. */
static void test_seccomp_bpf_cache_misses_once_the_library_changed(void **state)
{
    cache_fixture *f = *state;
    cleanup_free char *library = obi_path_join(f->tmp, "libseccomp.so.2");
    assert_ok(obi_write_file(library, "v1", 2, 0644, err_ptr_));
    assert_ok(obi_seccomp_bpf_cache_put(f->dir, f->key, f->bpf, f->len, library, err_ptr_));
    assert_int_equal(cache_get(f), 1);
    const struct timespec then[2] = {{0, UTIME_OMIT}, {12345, 0}};
    assert_int_equal(utimensat(AT_FDCWD, library, then, 0), 0);
    assert_int_equal(cache_get(f), 0);
    assert_ok(obi_seccomp_bpf_cache_put(f->dir, f->key, f->bpf, f->len, library, err_ptr_));
    assert_int_equal(cache_get(f), 1);
    assert_int_equal(unlink(library), 0);
    assert_int_equal(cache_get(f), 0);
}

static void test_seccomp_bpf_annotate_rewrites_a_corrupt_entry(void **state)
{
    cache_fixture *f = *state;
    cleanup_json json_t *profile = build_profile();
    flip_byte(f->path, 100);
    assert_int_equal(cache_get(f), 0);
    cleanup_json json_t *config = json_object();
    /* This process's last program may be the same key: another profile first, so that this one
     * goes through the cache again. */
    cleanup_json json_t *other = profile_with("");
    assert_ok(obi_seccomp_bpf_annotate(config, other, NULL, err_ptr_));
    assert_ok(obi_seccomp_bpf_annotate(config, profile, f->dir, err_ptr_));
    assert_int_equal(cache_get(f), 1);
    const char *text = json_string_value(
        json_object_get(json_object_get(config, "annotations"), OBI_SECCOMP_BPF_ANNOTATION));
    assert_non_null(text);
    cleanup_free uint8_t *decoded = NULL;
    size_t len = 0;
    assert_ok(obi_base64_decode(text, strlen(text), &decoded, &len, err_ptr_));
    assert_int_equal(len, f->len);
    assert_memory_equal(decoded, f->bpf, len);
}

/* A build's config.json: the annotation for crun (the profile's program), none otherwise, and
 * linux.seccomp in both. */
static void test_seccomp_bpf_spec_carries_the_annotation_when_asked(void **state)
{
    (void)state;
    obi_build_request *req = fixture_request();
    obi_spec_options opts = {.root_uid = 1879048192,
                             .root_gid = 1879048192,
                             .build_uid = 1879048192 + 1000,
                             .build_gid = 1879048192 + 100,
                             .max_pids = 4096};
    cleanup_json json_t *plain = NULL, *crun = NULL;
    assert_ok(obi_spec_generate(req, &opts, &plain, err_ptr_));
    opts.seccomp_bpf = true;
    assert_ok(obi_spec_generate(req, &opts, &crun, err_ptr_));
    obi_build_request_free(req);
    assert_null(json_object_get(plain, "annotations"));
    const json_t *profile = json_object_get(json_object_get(crun, "linux"), "seccomp");
    assert_true(json_equal(profile, json_object_get(json_object_get(plain, "linux"), "seccomp")));
    const char *text = json_string_value(
        json_object_get(json_object_get(crun, "annotations"), OBI_SECCOMP_BPF_ANNOTATION));
    assert_non_null(text);
    cleanup_free uint8_t *decoded = NULL, *bpf = NULL;
    size_t len = 0, bpf_len = 0;
    assert_ok(obi_base64_decode(text, strlen(text), &decoded, &len, err_ptr_));
    assert_ok(obi_seccomp_bpf_compile(profile, &bpf, &bpf_len, err_ptr_));
    assert_int_equal(len, bpf_len);
    assert_memory_equal(decoded, bpf, len);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        obi_unit_test_with_deadline(
            test_seccomp_bpf_refuses_what_the_profile_says_and_nothing_else),
        obi_unit_test_with_deadline(
            test_seccomp_bpf_skips_unknown_names_and_default_actions_as_crun),
        obi_unit_test_with_deadline(test_seccomp_bpf_errors_name_the_field),
        obi_unit_test_with_deadline(test_seccomp_bpf_flags_are_crun_s),
        cmocka_unit_test_setup_teardown(test_seccomp_bpf_cache_gives_back_what_was_put, cache_setup,
                                        cache_teardown),
        cmocka_unit_test_setup_teardown(test_seccomp_bpf_cache_refuses_corrupt_or_foreign_entries,
                                        cache_setup, cache_teardown),
        cmocka_unit_test_setup_teardown(test_seccomp_bpf_cache_reads_only_private_files,
                                        cache_setup, cache_teardown),
        cmocka_unit_test_setup_teardown(test_seccomp_bpf_cache_misses_once_the_library_changed,
                                        cache_setup, cache_teardown),
        cmocka_unit_test_setup_teardown(test_seccomp_bpf_annotate_rewrites_a_corrupt_entry,
                                        cache_setup, cache_teardown),
        obi_unit_test_with_deadline(test_seccomp_bpf_spec_carries_the_annotation_when_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
