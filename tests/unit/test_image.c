/*
 * OCI image layouts and layer unpacking, with tar layers written by libarchive in the test:
 * plain/gzip/zstd, whiteouts (.wh.NAME and opaque, also of trees deeper than the descriptors a
 * process may hold), entries that try to escape the rootfs ("..", absolute names, symlinks
 * planted by an earlier entry or layer, hardlinks), blob verification, tag selection, the cache
 * keyed by manifest digest and its atomicity.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/image.h"
#include "ocibuild/json_util.h"
#include "ocibuild/sha256.h"
#include "test_helpers.h"

typedef struct entry {
    char type; /* 'f' file, 'd' dir, 'l' symlink, 'h' hardlink, 'p' fifo, 'c' /dev/null's node */
    const char *path;
    const char *data; /* file content or link target */
    unsigned mode;
} entry;

typedef enum { PLAIN, GZIP, ZSTD } compression;

static void write_layer(const char *path, compression comp, const entry *entries, size_t n)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (comp == GZIP)
        archive_write_add_filter_gzip(a);
    else if (comp == ZSTD)
        archive_write_add_filter_zstd(a);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, entries[i].path);
        archive_entry_set_mtime(e, 1000000000, 0);
        switch (entries[i].type) {
        case 'f':
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, entries[i].mode ? entries[i].mode : 0644);
            archive_entry_set_size(e, (la_int64_t)strlen(entries[i].data));
            break;
        case 'd':
            archive_entry_set_filetype(e, AE_IFDIR);
            archive_entry_set_perm(e, entries[i].mode ? entries[i].mode : 0755);
            break;
        case 'l':
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_perm(e, 0777);
            archive_entry_set_symlink(e, entries[i].data);
            break;
        case 'h':
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_perm(e, 0644);
            archive_entry_set_hardlink(e, entries[i].data);
            break;
        case 'p':
        case 'c':
            archive_entry_set_filetype(e, entries[i].type == 'p' ? AE_IFIFO : AE_IFCHR);
            archive_entry_set_perm(e, entries[i].mode);
            archive_entry_set_rdev(e, entries[i].type == 'c' ? makedev(1, 3) : 0);
            break;
        }
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        if (entries[i].type == 'f')
            archive_write_data(a, entries[i].data, strlen(entries[i].data));
        archive_entry_free(e);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
}

typedef struct fixture {
    char *dir;
    char *rootfs;
    char *layer;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    f->rootfs = obi_path_join(f->dir, "rootfs");
    f->layer = obi_path_join(f->dir, "layer.tar");
    mkdir(f->rootfs, 0755);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_test_tmpdir_remove(f->dir);
    free(f->rootfs);
    free(f->layer);
    free(f);
    return 0;
}

static void apply(fixture *f, compression comp, const entry *entries, size_t n)
{
    write_layer(f->layer, comp, entries, n);
    assert_ok(obi_image_apply_layer(f->rootfs, f->layer, err_ptr_));
}

static char *read_rootfs(fixture *f, const char *relative)
{
    char *path = obi_path_join(f->rootfs, relative);
    char *text = NULL;
    size_t len;
    obi_error *err = NULL;
    int r = obi_read_file(path, 1 << 20, &text, &len, &err);
    obi_error_free(err);
    free(path);
    return r == 0 ? text : NULL;
}

static bool rootfs_exists(fixture *f, const char *relative)
{
    char *path = obi_path_join(f->rootfs, relative);
    struct stat st;
    bool exists = lstat(path, &st) == 0;
    free(path);
    return exists;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- layers ------------------------------------------------------------------------------ */

static void check_basic_layer(fixture *f, compression comp)
{
    static const entry layer[] = {
        {'d', "./etc/", NULL, 0755},
        {'f', "./etc/hostname", "box\n", 0640},
        {'f', "usr/bin/tool", "#!/bin/sh\n", 04755}, /* parent dirs missing from the tar */
        {'l', "bin", "usr/bin", 0},
        {'l', "etc/localtime", "/usr/share/zoneinfo/UTC", 0},
        {'h', "usr/bin/tool2", "usr/bin/tool", 0},
    };
    apply(f, comp, layer, N(layer));
    char *text = read_rootfs(f, "etc/hostname");
    assert_string_equal(text, "box\n");
    free(text);
    char *path = obi_path_join(f->rootfs, "usr/bin/tool");
    struct stat st, st2;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 04755);
    free(path);
    path = obi_path_join(f->rootfs, "usr/bin/tool2");
    assert_int_equal(stat(path, &st2), 0);
    assert_int_equal(st.st_ino, st2.st_ino);
    free(path);
    path = obi_path_join(f->rootfs, "etc/hostname");
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_mtime, 1000000000);
    free(path);
    char target[256] = "";
    path = obi_path_join(f->rootfs, "etc/localtime");
    assert_true(readlink(path, target, sizeof target - 1) > 0);
    assert_string_equal(target, "/usr/share/zoneinfo/UTC"); /* stored as is */
    free(path);
}

/* mknod's mode goes through the umask; the node must keep the tar's mode all the same (a
 * 0666 /dev/null that came out 0600 breaks every program in the container that writes to it). */
static void test_layer_fifo_and_device_keep_their_tar_mode(void **state)
{
    fixture *f = *state;
    bool root = geteuid() == 0;
    const entry layer[] = {
        {'p', "run/fifo", NULL, 0666},
        {'p', "run/private", NULL, 0620},
        {'c', root ? "dev/null" : "dev/skipped-when-rootless", NULL, 0666},
    };
    mode_t old_mask = umask(077);
    write_layer(f->layer, PLAIN, layer, N(layer));
    obi_error *err = NULL;
    int r = obi_image_apply_layer(f->rootfs, f->layer, &err);
    umask(old_mask);
    if (r < 0)
        print_error("apply: %s\n", err->message);
    obi_error_free(err);
    assert_int_equal(r, 0);
    static const struct {
        const char *path;
        mode_t type, mode;
    } want[] = {{"run/fifo", S_IFIFO, 0666}, {"run/private", S_IFIFO, 0620}};
    for (size_t i = 0; i < N(want); i++) {
        char *path = obi_path_join(f->rootfs, want[i].path);
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        assert_int_equal(st.st_mode & S_IFMT, want[i].type);
        assert_int_equal(st.st_mode & 07777, want[i].mode);
        free(path);
    }
    if (!root) {
        print_message("!!! SKIPPED (part): device nodes need root; the fifos were checked\n");
        return;
    }
    char *path = obi_path_join(f->rootfs, "dev/null");
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISCHR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0666);
    assert_int_equal(st.st_rdev, makedev(1, 3));
    free(path);
}

static void test_layer_plain_tar(void **state)
{
    check_basic_layer(*state, PLAIN);
}
static void test_layer_gzip(void **state)
{
    check_basic_layer(*state, GZIP);
}
static void test_layer_zstd(void **state)
{
    check_basic_layer(*state, ZSTD);
}

static void test_layer_whiteout_deletes_lower_entry(void **state)
{
    fixture *f = *state;
    static const entry lower[] = {
        {'f', "a/keep", "k", 0},
        {'f', "a/gone", "g", 0},
        {'f', "a/sub/deep", "d", 0},
        {'f', "top", "t", 0},
    };
    apply(f, PLAIN, lower, N(lower));
    static const entry upper[] = {
        {'f', "a/.wh.gone", "", 0},
        {'f', "a/.wh.sub", "", 0},
        {'f', ".wh.top", "", 0},
        {'f', "a/.wh.never-existed", "", 0},
    };
    apply(f, GZIP, upper, N(upper));
    assert_true(rootfs_exists(f, "a/keep"));
    assert_false(rootfs_exists(f, "a/gone"));
    assert_false(rootfs_exists(f, "a/sub"));
    assert_false(rootfs_exists(f, "top"));
    assert_false(rootfs_exists(f, "a/.wh.gone"));
}

static void expect_layer_refused(fixture *f, const entry *entries, size_t n, const char *needle);

static void test_layer_whiteout_of_dotdot_is_refused(void **state)
{
    fixture *f = *state;
    /* a sibling of the rootfs that ".wh.." at the top would otherwise delete with its parent */
    char *sibling = obi_path_join(f->dir, "sibling");
    assert_ok(obi_write_file(sibling, "s", 1, 0644, err_ptr_));
    static const entry top[] = {{'f', ".wh..", "", 0}};
    expect_layer_refused(f, top, 1, "whiteout \".wh..\" names no entry");
    static const entry dot[] = {{'f', "a/.wh..", "", 0}};
    expect_layer_refused(f, dot, 1, "names no entry");
    static const entry empty[] = {{'f', ".wh.", "", 0}};
    expect_layer_refused(f, empty, 1, "names no entry");
    assert_int_equal(access(sibling, F_OK), 0);
    assert_int_equal(access(f->rootfs, F_OK), 0);
    free(sibling);
    /* a whiteout below a missing directory creates nothing; AUFS metadata is ignored */
    static const entry missing[] = {{'f', "no/such/.wh.x", "", 0}, {'f', ".wh..wh..plnk", "", 0}};
    apply(f, PLAIN, missing, N(missing));
    assert_false(rootfs_exists(f, "no"));
}

static void test_layer_opaque_whiteout_empties_dir_but_keeps_same_layer(void **state)
{
    fixture *f = *state;
    static const entry lower[] = {
        {'f', "d/old1", "1", 0},
        {'f', "d/sub/old2", "2", 0},
        {'f', "other", "o", 0},
    };
    apply(f, PLAIN, lower, N(lower));
    /* the new entry comes before the marker in the tar: it must survive */
    static const entry upper[] = {
        {'f', "d/new", "n", 0},
        {'f', "d/.wh..wh..opq", "", 0},
    };
    apply(f, PLAIN, upper, N(upper));
    assert_false(rootfs_exists(f, "d/old1"));
    assert_false(rootfs_exists(f, "d/sub"));
    assert_true(rootfs_exists(f, "d/new"));
    assert_true(rootfs_exists(f, "d"));
    assert_true(rootfs_exists(f, "other"));
    assert_false(rootfs_exists(f, "d/.wh..wh..opq"));
}

/* A directory chain "<top>/d/d/.../d/f" of depth levels below top. */
static char *deep_chain(const char *top, int depth)
{
    obi_buf path = OBI_BUF_INIT;
    obi_buf_append_str(&path, top);
    for (int i = 0; i < depth; i++)
        obi_buf_append_str(&path, "/d");
    obi_buf_append_str(&path, "/f");
    return obi_buf_steal(&path);
}

static void test_layer_whiteouts_remove_deep_trees_with_few_descriptors(void **state)
{
    fixture *f = *state;
    /* 300 levels (a 600-byte path) under 64 descriptors: a removal that holds one descriptor
     * per level (image.c's own recursive remover did) runs out of them halfway down. */
    char *gone = deep_chain("gone", 300), *emptied = deep_chain("emptied", 300);
    const entry lower[] = {{'f', gone, "g", 0}, {'f', emptied, "e", 0}, {'f', "keep", "k", 0}};
    apply(f, PLAIN, lower, N(lower));
    static const entry upper[] = {{'f', ".wh.gone", "", 0}, {'f', "emptied/.wh..wh..opq", "", 0}};
    write_layer(f->layer, PLAIN, upper, N(upper));
    struct rlimit saved, few;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    few = saved;
    few.rlim_cur = 64;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &few), 0);
    obi_error *err = NULL;
    int r = obi_image_apply_layer(f->rootfs, f->layer, &err);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    if (r < 0)
        fail_msg("%s", err ? err->message : "(no message)");
    assert_false(rootfs_exists(f, "gone"));
    assert_true(rootfs_exists(f, "emptied"));
    assert_false(rootfs_exists(f, "emptied/d"));
    assert_true(rootfs_exists(f, "keep"));
    free(gone);
    free(emptied);
}

static void test_layer_replaces_file_with_dir_and_symlink_with_file(void **state)
{
    fixture *f = *state;
    static const entry lower[] = {{'f', "x", "file", 0}, {'l', "y", "x", 0}};
    apply(f, PLAIN, lower, N(lower));
    static const entry upper[] = {{'d', "x", NULL, 0}, {'f', "y", "now a file", 0}};
    apply(f, PLAIN, upper, N(upper));
    char *path = obi_path_join(f->rootfs, "x");
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    free(path);
    char *text = read_rootfs(f, "y");
    assert_string_equal(text, "now a file");
    free(text);
}

static void expect_layer_refused(fixture *f, const entry *entries, size_t n, const char *needle)
{
    write_layer(f->layer, PLAIN, entries, n);
    obi_error *err = NULL;
    int r = obi_image_apply_layer(f->rootfs, f->layer, &err);
    assert_true(r < 0);
    assert_non_null(err);
    if (!strstr(err->message, needle))
        print_error("message '%s' lacks '%s'\n", err->message, needle);
    assert_non_null(strstr(err->message, needle));
    obi_error_free(err);
}

static void test_layer_refuses_dotdot_and_absolute_names(void **state)
{
    fixture *f = *state;
    static const entry dotdot[] = {{'f', "../evil", "x", 0}};
    expect_layer_refused(f, dotdot, 1, "entry \"../evil\" escapes the rootfs");
    static const entry inner[] = {{'f', "a/../../evil", "x", 0}};
    expect_layer_refused(f, inner, 1, "escapes the rootfs");
    static const entry absolute[] = {{'f', "/evil", "x", 0}};
    expect_layer_refused(f, absolute, 1, "escapes the rootfs");
    static const entry hardlink[] = {{'h', "link", "../../etc/passwd", 0}};
    expect_layer_refused(f, hardlink, 1, "escapes the rootfs");
    char *outside = obi_path_join(f->dir, "evil");
    assert_int_equal(access(outside, F_OK), -1);
    free(outside);
}

static void test_layer_symlinks_cannot_redirect_writes_outside(void **state)
{
    fixture *f = *state;
    char *outside = obi_path_join(f->dir, "outside");
    mkdir(outside, 0755);
    /* links pointing out of the rootfs (absolute, and relative climbing past the top), then
     * writes through them: they resolve as if the rootfs were "/" */
    entry lower[] = {{'l', "abs", NULL, 0},
                     {'l', "up", "../../../../..", 0},
                     {'d', "real", NULL, 0},
                     {'l', "lnk", "/real", 0}};
    lower[0].data = outside;
    apply(f, PLAIN, lower, N(lower));
    static const entry upper[] = {{'f', "up/pwned", "y", 0}, {'f', "lnk/file", "z", 0}};
    apply(f, PLAIN, upper, N(upper));
    char *pwned = obi_path_join(f->dir, "pwned");
    assert_int_equal(access(pwned, F_OK), -1);
    free(pwned);
    assert_true(rootfs_exists(f, "pwned"));
    assert_true(rootfs_exists(f, "real/file"));
    /* a link to a directory that does not exist inside the rootfs is refused, never followed
     * to the host */
    static const entry through_abs[] = {{'f', "abs/pwned", "x", 0}};
    expect_layer_refused(f, through_abs, 1, "abs/pwned");
    pwned = obi_path_join(outside, "pwned");
    assert_int_equal(access(pwned, F_OK), -1);
    free(pwned);
    /* the same within one layer */
    static const entry same[] = {{'l', "s", "/", 0}, {'f', "s/../../../x", "z", 0}};
    expect_layer_refused(f, same, 2, "escapes");
    free(outside);
}

static void test_layer_rejects_garbage(void **state)
{
    fixture *f = *state;
    assert_ok(obi_write_file(f->layer, "this is not a tar", 17, 0644, err_ptr_));
    obi_error *err = NULL;
    assert_true(obi_image_apply_layer(f->rootfs, f->layer, &err) < 0);
    assert_non_null(strstr(err->message, "layer"));
    obi_error_free(err);
}

/* ---- layouts ----------------------------------------------------------------------------- */

static char *write_blob(const char *layout, const void *data, size_t len)
{
    uint8_t digest[OBI_SHA256_LEN];
    char hex[2 * OBI_SHA256_LEN + 1];
    obi_sha256_oneshot(data, len, digest);
    obi_hex_encode(digest, OBI_SHA256_LEN, hex);
    char *dir = NULL, *path = NULL;
    assert_true(asprintf(&dir, "%s/blobs/sha256", layout) > 0);
    assert_ok(obi_mkdir_p(dir, 0755, err_ptr_));
    assert_true(asprintf(&path, "%s/%s", dir, hex) > 0);
    assert_ok(obi_write_file(path, data, len, 0644, err_ptr_));
    free(dir);
    free(path);
    return strdup(hex);
}

static char *write_blob_file(const char *layout, const char *file, size_t *len)
{
    char *data = NULL;
    assert_ok(obi_read_file(file, 64 << 20, &data, len, err_ptr_));
    char *hex = write_blob(layout, data, *len);
    free(data);
    return hex;
}

static json_t *descriptor(const char *media, const char *hex, size_t size)
{
    char digest[80];
    snprintf(digest, sizeof digest, "sha256:%s", hex);
    return json_pack("{s:s, s:s, s:I}", "mediaType", media, "digest", digest, "size",
                     (json_int_t)size);
}

/* Writes a layout with one image (two layers) and returns its manifest hex. */
static char *make_layout(fixture *f, const char *layout, const char *tag, const char *user)
{
    assert_ok(obi_mkdir_p(layout, 0755, err_ptr_));
    char *oci_layout = obi_path_join(layout, "oci-layout");
    const char *marker = "{\"imageLayoutVersion\":\"1.0.0\"}";
    assert_ok(obi_write_file(oci_layout, marker, strlen(marker), 0644, err_ptr_));
    free(oci_layout);
    static const entry l1[] = {{'f', "etc/passwd", "root:x:0:0::/:/bin/sh\n", 0},
                               {'f', "a/old", "old", 0}};
    static const entry l2[] = {{'f', "a/.wh.old", "", 0}, {'f', "a/new", "new", 0}};
    size_t len1, len2;
    write_layer(f->layer, GZIP, l1, 2);
    char *h1 = write_blob_file(layout, f->layer, &len1);
    write_layer(f->layer, PLAIN, l2, 2);
    char *h2 = write_blob_file(layout, f->layer, &len2);
    json_t *config =
        json_pack("{s:s, s:s, s:{s:[s], s:[s], s:[s], s:s, s:s, s:s}}", "architecture", "amd64",
                  "os", "linux", "config", "Env", "FROM_IMAGE=1", "Entrypoint", "/bin/app", "Cmd",
                  "--serve", "WorkingDir", "/srv", "User", user, "StopSignal", "SIGQUIT");
    char *config_text = json_dumps(config, JSON_COMPACT);
    char *hc = write_blob(layout, config_text, strlen(config_text));
    json_t *manifest =
        json_pack("{s:i, s:s, s:o, s:[o, o]}", "schemaVersion", 2, "mediaType",
                  "application/vnd.oci.image.manifest.v1+json", "config",
                  descriptor("application/vnd.oci.image.config.v1+json", hc, strlen(config_text)),
                  "layers", descriptor("application/vnd.oci.image.layer.v1.tar+gzip", h1, len1),
                  descriptor("application/vnd.oci.image.layer.v1.tar", h2, len2));
    char *manifest_text = json_dumps(manifest, JSON_COMPACT);
    char *hm = write_blob(layout, manifest_text, strlen(manifest_text));
    json_t *desc =
        descriptor("application/vnd.oci.image.manifest.v1+json", hm, strlen(manifest_text));
    if (tag)
        json_object_set_new(desc, "annotations",
                            json_pack("{s:s}", "org.opencontainers.image.ref.name", tag));
    json_t *index = json_pack("{s:i, s:[o]}", "schemaVersion", 2, "manifests", desc);
    char *index_path = obi_path_join(layout, "index.json");
    assert_int_equal(json_dump_file(index, index_path, JSON_COMPACT), 0);
    free(index_path);
    json_decref(index);
    json_decref(manifest);
    json_decref(config);
    free(config_text);
    free(manifest_text);
    free(h1);
    free(h2);
    free(hc);
    return hm;
}

static void test_image_open_unpacks_and_reads_config(void **state)
{
    fixture *f = *state;
    char *layout = obi_path_join(f->dir, "layout");
    char *data = obi_path_join(f->dir, "data");
    char *hm = make_layout(f, layout, "1.0", "root");
    obi_image *image = NULL;
    assert_ok(obi_image_open(layout, "1.0", data, &image, err_ptr_));
    char expected[512];
    snprintf(expected, sizeof expected, "sha256:%s", hm);
    assert_string_equal(image->manifest_digest, expected);
    snprintf(expected, sizeof expected, "%s/images/%s/rootfs", data, hm);
    assert_string_equal(image->rootfs, expected);
    assert_string_equal(image->config.env[0], "FROM_IMAGE=1");
    assert_string_equal(image->config.entrypoint[0], "/bin/app");
    assert_string_equal(image->config.cmd[0], "--serve");
    assert_string_equal(image->config.working_dir, "/srv");
    assert_string_equal(image->config.user, "root");
    assert_string_equal(image->config.stop_signal, "SIGQUIT");
    char *path = obi_path_join(image->rootfs, "a/new");
    assert_int_equal(access(path, F_OK), 0);
    free(path);
    path = obi_path_join(image->rootfs, "a/old");
    assert_int_equal(access(path, F_OK), -1); /* whiteout of the second layer */
    free(path);
    /* a marker placed in the cache survives a second open: the entry is reused */
    char *marker = obi_path_join(image->rootfs, "marker");
    assert_ok(obi_write_file(marker, "m", 1, 0644, err_ptr_));
    obi_image_free(image);
    image = NULL;
    assert_ok(obi_image_open(layout, NULL, data, &image, err_ptr_)); /* single manifest */
    assert_int_equal(access(marker, F_OK), 0);
    obi_image_free(image);
    free(marker);
    free(hm);
    free(layout);
    free(data);
}

static void expect_open_fails(const char *layout, const char *tag, const char *data, int code,
                              const char *needle)
{
    obi_image *image = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_image_open(layout, tag, data, &image, &err), code, needle);
    assert_null(image);
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, ".lock") &&
            strcmp(de->d_name, ".gc.lock"))
            n++;
    closedir(d);
    return n;
}

static void test_image_open_errors(void **state)
{
    fixture *f = *state;
    char *layout = obi_path_join(f->dir, "layout");
    char *data = obi_path_join(f->dir, "data");
    char *images = obi_path_join(data, "images");
    char *hm = make_layout(f, layout, "1.0", "root");
    expect_open_fails(layout, "2.0", data, -ENOENT, "no manifest tagged \"2.0\"");
    expect_open_fails("/nonexistent/layout", NULL, data, -ENOENT, "is not an OCI image layout");
    /* corrupt the second layer: the sha256 check fails, nothing is left in the cache */
    char *manifest_path = NULL;
    assert_true(asprintf(&manifest_path, "%s/blobs/sha256/%s", layout, hm) > 0);
    json_error_t jerr;
    json_t *manifest = json_load_file(manifest_path, 0, &jerr);
    const char *layer_digest = json_string_value(
        json_object_get(json_array_get(json_object_get(manifest, "layers"), 1), "digest"));
    char *layer_path = NULL;
    assert_true(asprintf(&layer_path, "%s/blobs/sha256/%s", layout, layer_digest + 7) > 0);
    int fd = open(layer_path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "X", 1, 0), 1);
    close(fd);
    expect_open_fails(layout, "1.0", data, -EBADMSG, "sha256 is");
    assert_int_equal(count_entries(images), 0);
    /* a truncated blob: the size check fails first */
    assert_int_equal(truncate(layer_path, 10), 0);
    expect_open_fails(layout, "1.0", data, -EINVAL, "size 10, descriptor says");
    assert_int_equal(count_entries(images), 0);
    /* a corrupted manifest blob */
    assert_ok(obi_write_file(manifest_path, "{}", 2, 0644, err_ptr_));
    expect_open_fails(layout, "1.0", data, -EINVAL, "manifest");
    json_decref(manifest);
    free(layer_path);
    free(manifest_path);
    free(hm);
    free(layout);
    free(data);
    free(images);
}

/* A layout's index.json or blob that is a symlink (to a host file) is never followed. */
static void test_image_open_follows_no_symlink_in_the_layout(void **state)
{
    fixture *f = *state;
    char *layout = obi_path_join(f->dir, "layout");
    char *data = obi_path_join(f->dir, "data");
    char *hm = make_layout(f, layout, "1.0", "root");
    char *index = obi_path_join(layout, "index.json");
    char *moved = obi_path_join(f->dir, "real-index.json");
    assert_int_equal(rename(index, moved), 0);
    assert_int_equal(symlink(moved, index), 0);
    expect_open_fails(layout, "1.0", data, -ELOOP,
                      "index.json: a symlink on the way, not followed");
    assert_int_equal(unlink(index), 0);
    assert_int_equal(rename(moved, index), 0);
    /* the manifest blob: moved out and linked back in (its content still matches the digest) */
    char *blob = NULL;
    assert_true(asprintf(&blob, "%s/blobs/sha256/%s", layout, hm) > 0);
    assert_int_equal(rename(blob, moved), 0);
    assert_int_equal(symlink(moved, blob), 0);
    expect_open_fails(layout, "1.0", data, -ELOOP, "a symlink on the way, not followed");
    free(blob);
    free(moved);
    free(index);
    free(hm);
    free(data);
    free(layout);
}

static void test_image_open_needs_tag_with_several_manifests(void **state)
{
    fixture *f = *state;
    char *layout = obi_path_join(f->dir, "layout");
    char *data = obi_path_join(f->dir, "data");
    char *hm = make_layout(f, layout, "1.0", "root");
    char *index_path = obi_path_join(layout, "index.json");
    json_error_t jerr;
    json_t *index = json_load_file(index_path, 0, &jerr);
    json_t *manifests = json_object_get(index, "manifests");
    json_t *second = json_deep_copy(json_array_get(manifests, 0));
    json_object_set_new(json_object_get(second, "annotations"), "org.opencontainers.image.ref.name",
                        json_string("2.0"));
    json_array_append_new(manifests, second);
    assert_int_equal(json_dump_file(index, index_path, 0), 0);
    expect_open_fails(layout, NULL, data, -EINVAL, "holds several manifests; name one with :TAG");
    obi_image *image = NULL;
    assert_ok(obi_image_open(layout, "2.0", data, &image, err_ptr_));
    obi_image_free(image);
    json_decref(index);
    free(index_path);
    free(hm);
    free(layout);
    free(data);
}

static void test_image_open_removes_stale_temp_dirs(void **state)
{
    fixture *f = *state;
    char *layout = obi_path_join(f->dir, "layout");
    char *data = obi_path_join(f->dir, "data");
    char *stale = obi_path_join(data, "images/.tmp-crashed-123456/rootfs");
    assert_ok(obi_mkdir_p(stale, 0755, err_ptr_));
    char *hm = make_layout(f, layout, NULL, "root");
    obi_image *image = NULL;
    assert_ok(obi_image_open(layout, NULL, data, &image, err_ptr_));
    obi_image_free(image);
    char *images = obi_path_join(data, "images");
    assert_int_equal(count_entries(images), 1); /* just the entry, no temp dir */
    free(images);
    free(stale);
    free(hm);
    free(layout);
    free(data);
}

static void test_image_config_types_are_checked(void **state)
{
    (void)state;
    obi_image_config config;
    obi_error *err = NULL;
    json_t *doc = json_pack("{s:{s:s}}", "config", "Env", "A=1");
    assert_fails_with(err, obi_image_config_from_json(doc, &config, &err), -EINVAL,
                      "config.Env: expected an array of strings");
    json_decref(doc);
    doc = json_pack("{s:{s:[i]}}", "config", "Cmd", 1);
    assert_fails_with(err, obi_image_config_from_json(doc, &config, &err), -EINVAL,
                      "config.Cmd[0]: expected a string");
    json_decref(doc);
    doc = json_pack("{s:{s:n, s:i}}", "config", "Entrypoint", "User", 5);
    assert_fails_with(err, obi_image_config_from_json(doc, &config, &err), -EINVAL,
                      "config.User: expected a string");
    json_decref(doc);
    doc = json_pack("{s:{s:i}}", "config", "StopSignal", 15);
    assert_fails_with(err, obi_image_config_from_json(doc, &config, &err), -EINVAL,
                      "config.StopSignal: expected a string");
    json_decref(doc);
    doc = json_pack("{s:s}", "os", "linux"); /* no config at all: empty */
    assert_ok(obi_image_config_from_json(doc, &config, err_ptr_));
    assert_null(config.env);
    assert_null(config.user);
    obi_image_config_clear(&config);
    json_decref(doc);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_layer_plain_tar),
        T(test_layer_fifo_and_device_keep_their_tar_mode),
        T(test_layer_gzip),
        T(test_layer_zstd),
        T(test_layer_whiteout_deletes_lower_entry),
        T(test_layer_whiteout_of_dotdot_is_refused),
        T(test_layer_opaque_whiteout_empties_dir_but_keeps_same_layer),
        T(test_layer_whiteouts_remove_deep_trees_with_few_descriptors),
        T(test_layer_replaces_file_with_dir_and_symlink_with_file),
        T(test_layer_refuses_dotdot_and_absolute_names),
        T(test_layer_symlinks_cannot_redirect_writes_outside),
        T(test_layer_rejects_garbage),
        T(test_image_open_unpacks_and_reads_config),
        T(test_image_open_errors),
        T(test_image_open_follows_no_symlink_in_the_layout),
        T(test_image_open_needs_tag_with_several_manifests),
        T(test_image_open_removes_stale_temp_dirs),
        T(test_image_config_types_are_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
