/*
 * Roots of an on-disk store (include/ocibuild/store_roots.h): the files under ROOT/gcroots,
 * ROOT/gc.lock that orders roots and pins against the garbage collector (store_gc.c), and the
 * listing of every root and live pin gc marks from. A root file is text, one object per line:
 *
 *     directory 1f0e...(64 hex)
 *     blob 9a3c...(64 hex)
 *
 * Permanent roots are written atomically (temporary name, fsync, rename). Pins, one file per
 * process in ROOT/temproots, are store_pins.c's: listed here, through obi_pin_file_read, when
 * their owner holds their lock, and removed when it is free (the owner died).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/blake3.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/store_roots.h"
#include "store_internal.h"

#define ROOTS_MAX_NESTING 16 /* levels of directories below gcroots/ that are read */

int obi_store_ref_of_node(const obi_node *node, obi_store_ref *out)
{
    if (node->kind == OBI_NODE_SYMLINK)
        return 0;
    out->kind = node->kind == OBI_NODE_DIRECTORY ? OBI_STORE_DIRECTORY : OBI_STORE_BLOB;
    out->digest = node->digest;
    return 1;
}

static bool root_name_byte_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '+' || c == '-';
}

/* "NAME.tmp.<pid>.XXXXXX": obi_write_file_atomic's temporary name, a crashed write's leftover
 * when gc sees it (roots are written under gc.lock). */
static bool atomic_write_leftover(const char *name)
{
    const char *tmp = strstr(name, ".tmp.");
    if (!tmp)
        return false;
    const char *pid = tmp + 5;
    size_t digits = strspn(pid, "0123456789");
    return digits > 0 && pid[digits] == '.' && strlen(pid + digits + 1) == 6;
}

int obi_store_root_name_check(const char *name, obi_error **err)
{
    size_t len = strlen(name);
    if (strstr(name, ".tmp."))
        return obi_error_set(err, -EINVAL,
                             "root name \"%s\": \".tmp.\" is kept for files being written", name);
    if (len == 0 || len > OBI_NAME_MAX)
        return obi_error_set(err, -EINVAL, "root name \"%s\": must be 1 to %d bytes", name,
                             OBI_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        bool starts = i == 0 || name[i - 1] == '/';
        if (name[i] == '/' && !starts && name[i + 1] != '\0')
            continue;
        if (starts && name[i] == '.')
            return obi_error_set(
                err, -EINVAL, "root name \"%s\": a component starts with '.' at byte %zu", name, i);
        if (!root_name_byte_ok(name[i]))
            return obi_error_set(err, -EINVAL,
                                 "root name \"%s\": byte %zu ('%c') is not one of "
                                 "A-Z a-z 0-9 . _ + - or a '/' between components",
                                 name, i, name[i]);
    }
    return 0;
}

static int need_local_root(obi_store *store, const char *what, obi_error **err)
{
    if (store->local_root)
        return 0;
    return obi_error_set(err, -ENOTSUP,
                         "%s: only an on-disk store has roots (a remote store keeps them where "
                         "it is served)",
                         what);
}

/* "directory HEX\n" per node that keeps an object. */
static int format_refs(const obi_node *nodes, size_t n, obi_buf *out, obi_error **err)
{
    for (size_t i = 0; i < n; i++) {
        obi_store_ref ref;
        if (!obi_store_ref_of_node(&nodes[i], &ref))
            continue;
        char hex[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(&ref.digest, hex);
        if (obi_buf_appendf(out, "%s %s\n", obi_store_object_kind_name(ref.kind), hex) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

const char *obi_store_ref_parse(const char *s, size_t len, obi_store_ref *ref)
{
    _Static_assert(OBI_DIGEST_HEX_LEN == 64, "the message below says 64");
    size_t word;
    if (len > 5 && !strncmp(s, "blob ", 5)) {
        ref->kind = OBI_STORE_BLOB;
        word = 5;
    } else if (len > 10 && !strncmp(s, "directory ", 10)) {
        ref->kind = OBI_STORE_DIRECTORY;
        word = 10;
    } else {
        return "expected \"blob HEX\" or \"directory HEX\"";
    }
    if (len - word != OBI_DIGEST_HEX_LEN ||
        obi_hex_decode(s + word, OBI_DIGEST_HEX_LEN, ref->digest.bytes, OBI_DIGEST_LEN) < 0)
        return "not a digest of 64 hex digits";
    return NULL;
}

/* Parses a root file's text (display names it in errors). */
static int parse_refs(const char *text, size_t len, const char *display, obi_store_ref **out,
                      size_t *n_out, obi_error **err)
{
    cleanup_free obi_store_ref *refs = NULL;
    size_t n = 0, capacity = 0, line = 1;
    for (size_t at = 0; at < len; line++) {
        const char *start = text + at;
        const char *end = memchr(start, '\n', len - at);
        size_t line_len = end ? (size_t)(end - start) : len - at;
        at += line_len + 1;
        if (line_len == 0)
            continue;
        obi_store_ref ref = {0};
        const char *wrong = obi_store_ref_parse(start, line_len, &ref);
        if (wrong)
            return obi_error_set(err, -EINVAL, "%s: line %zu: %s", display, line, wrong);
        if (n == capacity) {
            capacity = capacity ? 2 * capacity : 16;
            obi_store_ref *grown = realloc(refs, capacity * sizeof *refs);
            if (!grown)
                return obi_error_oom(err);
            refs = grown;
        }
        refs[n++] = ref;
    }
    *out = steal_pointer(&refs);
    *n_out = n;
    return 0;
}

/* ---- permanent roots ---- */

static int write_root_file(const char *path, const obi_node *nodes, size_t n, obi_error **err)
{
    cleanup_buf obi_buf text = OBI_BUF_INIT;
    int r = format_refs(nodes, n, &text, err);
    if (r < 0)
        return r;
    cleanup_free char *dir = strdup(path);
    if (!dir)
        return obi_error_oom(err);
    *strrchr(dir, '/') = '\0';
    if ((r = obi_mkdir_p(dir, 0755, err)) < 0)
        return r;
    return obi_write_file_atomic(path, text.data ? (const char *)text.data : "", text.len, 0644,
                                 err);
}

int obi_store_root_add(obi_store *store, const char *name, const obi_node *nodes, size_t n,
                       obi_error **err)
{
    int r = need_local_root(store, "add a root", err);
    if (r == 0)
        r = obi_store_root_name_check(name, err);
    if (r < 0)
        return r;
    cleanup_free char *roots = obi_path_join(store->local_root, OBI_GC_ROOTS_DIR);
    cleanup_free char *path = roots ? obi_path_join(roots, name) : NULL;
    if (!path)
        return obi_error_oom(err);
    /* no gc between the write and its reading of the roots: it sees this root or runs before */
    r = obi_store_gc_hold(store->local_root, true, err);
    if (r == 0) {
        r = write_root_file(path, nodes, n, err);
        obi_store_gc_release(store->local_root);
    }
    return r < 0 ? obi_error_prefix(err, r, "root %s", name) : 0;
}

/* The root file at absolute and its link in gcroots/auto/ (gc.lock held shared). */
static int write_indirect_root(const char *absolute, const obi_node *nodes, size_t n,
                               const char *auto_dir, const char *link, const char *tmp_link,
                               obi_error **err)
{
    int r = write_root_file(absolute, nodes, n, err);
    if (r == 0)
        r = obi_mkdir_p(auto_dir, 0755, err);
    if (r < 0)
        return obi_error_prefix(err, r, "root %s", absolute);
    unlink(tmp_link);
    if (symlink(absolute, tmp_link) < 0 || rename(tmp_link, link) < 0) {
        r = obi_error_set_errno(err, errno, "root %s: link %s", absolute, link);
        unlink(tmp_link);
        return r;
    }
    return obi_fsync_dir(auto_dir, err);
}

int obi_store_root_add_indirect(obi_store *store, const char *path, const obi_node *nodes, size_t n,
                                obi_error **err)
{
    int r = need_local_root(store, "add a root", err);
    if (r < 0)
        return r;
    cleanup_free char *absolute = NULL;
    if (path[0] == '/') {
        absolute = strdup(path);
    } else {
        cleanup_free char *cwd = getcwd(NULL, 0);
        if (!cwd)
            return obi_error_set_errno(err, errno, "root %s: getcwd", path);
        absolute = obi_path_join(cwd, path);
    }
    if (!absolute)
        return obi_error_oom(err);
    uint8_t hash[OBI_BLAKE3_OUT_LEN];
    obi_blake3(absolute, strlen(absolute), hash);
    char hex[2 * 16 + 1];
    obi_hex_encode(hash, 16, hex);
    cleanup_free char *auto_dir = NULL, *link = NULL, *tmp_link = NULL;
    if (asprintf(&auto_dir, "%s/" OBI_GC_ROOTS_DIR "/" OBI_GC_ROOTS_AUTO, store->local_root) < 0 ||
        asprintf(&link, "%s/%s", auto_dir, hex) < 0 ||
        asprintf(&tmp_link, "%s/.%s", auto_dir, hex) < 0)
        return obi_error_oom(err);
    r = obi_store_gc_hold(store->local_root, true, err);
    if (r < 0)
        return obi_error_prefix(err, r, "root %s", absolute);
    r = write_indirect_root(absolute, nodes, n, auto_dir, link, tmp_link, err);
    obi_store_gc_release(store->local_root);
    return r;
}

int obi_store_root_remove(obi_store *store, const char *name, obi_error **err)
{
    int r = need_local_root(store, "remove a root", err);
    if (r == 0)
        r = obi_store_root_name_check(name, err);
    if (r < 0)
        return r;
    cleanup_free char *roots = obi_path_join(store->local_root, OBI_GC_ROOTS_DIR);
    cleanup_free char *path = roots ? obi_path_join(roots, name) : NULL;
    if (!path)
        return obi_error_oom(err);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return obi_error_set(err, -EISDIR, "root %s: %s is a directory of roots", name, path);
    if (unlink(path) < 0)
        return obi_error_set_errno(err, errno, "remove root %s (%s)", name, path);
    return 0;
}

/* ---- listing ---- */

typedef struct root_lister {
    obi_store_root_fn visit;
    void *ctx;
    bool remove_dead;
} root_lister;

static int visit_root_file(root_lister *lister, const char *path, const char *name,
                           const char *target, bool pin, obi_error **err)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    int r = obi_read_file(target ? target : path, OBI_ROOT_FILE_MAX, &text, &len, err);
    if (r < 0)
        return r;
    cleanup_free obi_store_ref *refs = NULL;
    size_t n = 0;
    if ((r = parse_refs(text, len, target ? target : path, &refs, &n, err)) < 0)
        return r;
    obi_store_root root = {name, target, pin, refs, n};
    return lister->visit(&root, lister->ctx, err);
}

/* An indirect root: the link's target, or NULL when it is gone (the root is dead). */
static int indirect_target(const char *path, char **target_out, obi_error **err)
{
    char target[4096];
    ssize_t len = readlink(path, target, sizeof target - 1);
    if (len < 0)
        return obi_error_set_errno(err, errno, "readlink %s", path);
    target[len] = '\0';
    struct stat st;
    *target_out = NULL;
    if (target[0] == '/' && stat(target, &st) == 0 && S_ISREG(st.st_mode)) {
        *target_out = strdup(target);
        if (!*target_out)
            return obi_error_oom(err);
    }
    return 0;
}

/* gcroots/<prefix>: files are roots, symlinks indirect roots, directories groups of roots. */
static int list_permanent(root_lister *lister, const char *dir_path, const char *prefix,
                          unsigned depth, obi_error **err)
{
    cleanup_dir DIR *dir = opendir(dir_path);
    if (!dir)
        return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "open %s", dir_path);
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.')
            continue; /* ., .., and temporary names of atomic writes */
        cleanup_free char *path = obi_path_join(dir_path, de->d_name);
        cleanup_free char *name = NULL;
        if (!path || asprintf(&name, "%s%s%s", prefix, *prefix ? "/" : "", de->d_name) < 0)
            return obi_error_oom(err);
        struct stat st;
        if (lstat(path, &st) < 0)
            continue; /* removed meanwhile */
        if (S_ISREG(st.st_mode) && atomic_write_leftover(de->d_name)) {
            if (lister->remove_dead)
                unlink(path);
            continue;
        }
        int r = 0;
        if (S_ISDIR(st.st_mode) && depth < ROOTS_MAX_NESTING) {
            r = list_permanent(lister, path, name, depth + 1, err);
        } else if (S_ISLNK(st.st_mode)) {
            cleanup_free char *target = NULL;
            r = indirect_target(path, &target, err);
            if (r == 0 && target)
                r = visit_root_file(lister, path, name, target, false, err);
            else if (r == 0 && lister->remove_dead)
                unlink(path);
        } else if (S_ISREG(st.st_mode)) {
            r = visit_root_file(lister, path, name, NULL, false, err);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/* Pin files of live processes (their owner holds the flock); dead ones removed if asked. */
static int list_pins(root_lister *lister, const char *root, obi_error **err)
{
    cleanup_free char *dir_path = obi_path_join(root, OBI_TEMP_ROOTS_DIR);
    if (!dir_path)
        return obi_error_oom(err);
    cleanup_dir DIR *dir = opendir(dir_path);
    if (!dir)
        return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "open %s", dir_path);
    struct dirent *de;
    while ((de = readdir(dir))) {
        bool leftover = obi_pin_file_is_compaction(de->d_name);
        if (de->d_name[0] == '.' && !leftover)
            continue;
        cleanup_free char *path = obi_path_join(dir_path, de->d_name);
        cleanup_free char *name = NULL;
        if (!path || asprintf(&name, OBI_TEMP_ROOTS_DIR "/%s", de->d_name) < 0)
            return obi_error_oom(err);
        cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            continue; /* its owner removed it meanwhile */
        if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
            /* nobody holds it: its owner died (or, for a leftover, died compacting) */
            if (lister->remove_dead)
                unlink(path);
            continue;
        }
        if (leftover)
            continue; /* being written: the file it replaces is read */
        cleanup_free obi_store_ref *refs = NULL;
        size_t n = 0;
        int r = obi_pin_file_read(fd, path, &refs, &n, err);
        obi_store_root pin = {name, NULL, true, refs, n};
        if (r == 0)
            r = lister->visit(&pin, lister->ctx, err);
        if (r < 0)
            return r;
    }
    return 0;
}

int obi_store_roots_list(obi_store *store, bool pins, bool remove_dead, obi_store_root_fn visit,
                         void *ctx, obi_error **err)
{
    int r = need_local_root(store, "list roots", err);
    if (r < 0)
        return r;
    root_lister lister = {visit, ctx, remove_dead};
    cleanup_free char *roots = obi_path_join(store->local_root, OBI_GC_ROOTS_DIR);
    if (!roots)
        return obi_error_oom(err);
    r = list_permanent(&lister, roots, "", 0, err);
    if (r == 0 && pins)
        r = list_pins(&lister, store->local_root, err);
    return r;
}
