/*
 * OCI image layouts (see image.h): index.json -> manifest -> config and layers, each blob's size
 * and sha256 checked against its descriptor before it is used. Layers are unpacked with
 * libarchive's reader and our own openat-based writer: every parent directory is opened with
 * openat2(RESOLVE_IN_ROOT), so symlinks planted by earlier entries resolve inside the rootfs
 * and can never redirect a write outside it; entry names that are absolute or contain ".." are
 * refused outright. Each layer is read twice: whiteouts first (they only hide lower layers),
 * then the content. The cache entry DATA/images/<hex> is built under a temporary name and
 * renamed into place, so a crash never leaves a half entry that looks complete.
 */
#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/dynlib.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"
#include "ocibuild/image.h"
#include "ocibuild/json_util.h"
#include "ocibuild/sha256.h"

#define JSON_BLOB_MAX (4u << 20)
#define BLOB_READ_CHUNK (1u << 16)
#define REF_NAME_ANNOTATION "org.opencontainers.image.ref.name"
#define WHITEOUT_PREFIX ".wh."
#define WHITEOUT_OPAQUE ".wh..wh..opq"

/* libarchive is loaded on first use (dynlib.h): only unpacking a layer needs it, and linking
 * it would add its ~10 libraries to the start-up of every command. */
#define LIBARCHIVE_SONAME "libarchive.so.13"
_Static_assert(ARCHIVE_VERSION_NUMBER / 1000000 == 3, "libarchive 3.x is soname 13");
#define LIBARCHIVE_FUNCTIONS(X)                                                                    \
    X(archive_entry_filetype)                                                                      \
    X(archive_entry_gid)                                                                           \
    X(archive_entry_hardlink)                                                                      \
    X(archive_entry_mtime)                                                                         \
    X(archive_entry_mtime_nsec)                                                                    \
    X(archive_entry_pathname)                                                                      \
    X(archive_entry_perm)                                                                          \
    X(archive_entry_rdev)                                                                          \
    X(archive_entry_size)                                                                          \
    X(archive_entry_symlink)                                                                       \
    X(archive_entry_uid)                                                                           \
    X(archive_entry_xattr_next)                                                                    \
    X(archive_entry_xattr_reset)                                                                   \
    X(archive_error_string)                                                                        \
    X(archive_read_data_block)                                                                     \
    X(archive_read_free)                                                                           \
    X(archive_read_new)                                                                            \
    X(archive_read_next_header)                                                                    \
    X(archive_read_open_fd)                                                                        \
    X(archive_read_support_filter_gzip)                                                            \
    X(archive_read_support_filter_none)                                                            \
    X(archive_read_support_filter_zstd)                                                            \
    X(archive_read_support_format_tar)

static struct {
/* A declarator: `name` is the member's name here, it cannot be parenthesized. */
#define LIBARCHIVE_DECLARE(name) __typeof__(name) *name; // NOLINT(bugprone-macro-parentheses)
    LIBARCHIVE_FUNCTIONS(LIBARCHIVE_DECLARE)
#undef LIBARCHIVE_DECLARE
} libarchive;

static int libarchive_load_result;
static obi_error *libarchive_load_error;
static pthread_once_t libarchive_once = PTHREAD_ONCE_INIT;

static void libarchive_load(void)
{
    static const obi_dynlib_symbol symbols[] = {
#define LIBARCHIVE_SYMBOL(name) {#name, (void **)&libarchive.name},
        LIBARCHIVE_FUNCTIONS(LIBARCHIVE_SYMBOL)
#undef LIBARCHIVE_SYMBOL
    };
    libarchive_load_result = obi_dynlib_load(
        LIBARCHIVE_SONAME, symbols, sizeof symbols / sizeof symbols[0], &libarchive_load_error);
}

/* Loads libarchive once per process; the error (kept for later callers too) names the library. */
static int libarchive_ready(obi_error **err)
{
    pthread_once(&libarchive_once, libarchive_load);
    if (libarchive_load_result < 0)
        return obi_error_set(err, libarchive_load_result, "%s",
                             libarchive_load_error && libarchive_load_error->message
                                 ? libarchive_load_error->message
                                 : "cannot load libarchive");
    return 0;
}

/* ---- image config ------------------------------------------------------------------------ */

void obi_image_config_clear(obi_image_config *config)
{
    obi_strv_free(config->env);
    obi_strv_free(config->entrypoint);
    obi_strv_free(config->cmd);
    free(config->working_dir);
    free(config->user);
    free(config->stop_signal);
    memset(config, 0, sizeof *config);
}

static int json_strv_get(const json_t *obj, const char *key, char ***out, obi_error **err)
{
    json_t *value = json_object_get(obj, key);
    if (!value || json_is_null(value))
        return 0;
    if (!json_is_array(value))
        return obi_error_set(err, -EINVAL, "config.%s: expected an array of strings", key);
    size_t n = json_array_size(value);
    cleanup_strv char **list = calloc(n + 1, sizeof *list);
    if (!list)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get(value, i);
        if (!json_is_string(item))
            return obi_error_set(err, -EINVAL, "config.%s[%zu]: expected a string", key, i);
        if (!(list[i] = strdup(json_string_value(item))))
            return obi_error_oom(err);
    }
    *out = n ? steal_pointer(&list) : NULL;
    return 0;
}

static int json_string_get(const json_t *obj, const char *key, char **out, obi_error **err)
{
    json_t *value = json_object_get(obj, key);
    if (!value || json_is_null(value))
        return 0;
    if (!json_is_string(value))
        return obi_error_set(err, -EINVAL, "config.%s: expected a string", key);
    if (!(*out = strdup(json_string_value(value))))
        return obi_error_oom(err);
    return 0;
}

int obi_image_config_from_json(const json_t *doc, obi_image_config *out, obi_error **err)
{
    if (!json_is_object(doc))
        return obi_error_set(err, -EINVAL, "image config: expected a JSON object");
    obi_image_config config = {0};
    const json_t *cfg = json_object_get(doc, "config");
    int r = 0;
    if (cfg && !json_is_null(cfg)) {
        if (!json_is_object(cfg))
            return obi_error_set(err, -EINVAL, "image config: config: expected an object");
        if ((r = json_strv_get(cfg, "Env", &config.env, err)) == 0 &&
            (r = json_strv_get(cfg, "Entrypoint", &config.entrypoint, err)) == 0 &&
            (r = json_strv_get(cfg, "Cmd", &config.cmd, err)) == 0 &&
            (r = json_string_get(cfg, "WorkingDir", &config.working_dir, err)) == 0 &&
            (r = json_string_get(cfg, "User", &config.user, err)) == 0)
            r = json_string_get(cfg, "StopSignal", &config.stop_signal, err);
    }
    if (r < 0) {
        obi_image_config_clear(&config);
        return obi_error_prefix(err, r, "image config");
    }
    *out = config;
    return 0;
}

/* ---- blobs ------------------------------------------------------------------------------- */

typedef struct descriptor {
    const char *media_type;
    const char *hex; /* 64 lowercase hex digits of the sha256 */
    json_int_t size;
} descriptor;

static int descriptor_parse(const json_t *obj, const char *what, descriptor *out, obi_error **err)
{
    if (!json_is_object(obj))
        return obi_error_set(err, -EINVAL, "%s: expected a descriptor object", what);
    json_t *digest = json_object_get(obj, "digest");
    json_t *size = json_object_get(obj, "size");
    json_t *media = json_object_get(obj, "mediaType");
    if (!json_is_string(digest) || !json_is_integer(size) || json_integer_value(size) < 0)
        return obi_error_set(err, -EINVAL, "%s: descriptor needs digest and size", what);
    const char *d = json_string_value(digest);
    if (strncmp(d, "sha256:", 7))
        return obi_error_set(err, -ENOTSUP, "%s: digest \"%s\" is not sha256", what, d);
    const char *hex = d + 7;
    size_t len = strlen(hex);
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)hex[i]) && !(hex[i] >= 'a' && hex[i] <= 'f'))
            len = 0;
    if (len != 2 * OBI_SHA256_LEN)
        return obi_error_set(err, -EINVAL, "%s: malformed digest \"%s\"", what, d);
    out->media_type = json_is_string(media) ? json_string_value(media) : NULL;
    out->hex = hex;
    out->size = json_integer_value(size);
    return 0;
}

/* Opens LAYOUT/relative for reading without following a symlink anywhere on the way
 * (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): skopeo and umoci write plain files, so a
 * layout whose index.json or blob is a link (an unpacked archive made by someone else) is
 * refused instead of making ocibuild read a host file. -errno, no message. */
static int layout_open(const char *layout, const char *relative)
{
    cleanup_close int dir = open(layout, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -errno;
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS};
    int fd = (int)syscall(SYS_openat2, dir, relative, &how, sizeof how);
    return fd < 0 ? -errno : fd;
}

static int layout_open_error(obi_error **err, int r, const char *what, const char *path)
{
    if (r == -ELOOP)
        return obi_error_set(err, r, "%s %s: a symlink on the way, not followed", what, path);
    return obi_error_set_errno(err, -r, "%s %s", what, path);
}

/* Opens LAYOUT/blobs/sha256/<hex>, checks its size and sha256 and leaves the fd at offset 0. */
static int blob_open_verified(const char *layout, const descriptor *desc, int *out, obi_error **err)
{
    cleanup_free char *path = NULL, *relative = NULL;
    if (asprintf(&relative, "blobs/sha256/%s", desc->hex) < 0 ||
        !(path = obi_path_join(layout, relative)))
        return obi_error_oom(err);
    cleanup_close int fd = layout_open(layout, relative);
    if (fd < 0)
        return layout_open_error(err, fd, "blob", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "blob %s", path);
    if (!S_ISREG(st.st_mode) || st.st_size != desc->size)
        return obi_error_set(err, -EINVAL, "blob %s: size %lld, descriptor says %lld", path,
                             (long long)st.st_size, (long long)desc->size);
    cleanup_sha256 obi_sha256 *ctx = obi_sha256_new();
    if (!ctx)
        return obi_error_oom(err);
    /* On the heap: a static __thread buffer is a block every thread of every ocibuild process
     * zeroes and faults in at its start, whether it ever reads an image or not. */
    cleanup_free uint8_t *chunk = malloc(BLOB_READ_CHUNK);
    if (!chunk)
        return obi_error_oom(err);
    for (;;) {
        ssize_t n = obi_read_full(fd, chunk, BLOB_READ_CHUNK);
        if (n < 0)
            return obi_error_set_errno(err, (int)-n, "read blob %s", path);
        if (n == 0)
            break;
        obi_sha256_update(ctx, chunk, (size_t)n);
    }
    uint8_t digest[OBI_SHA256_LEN];
    char hex[2 * OBI_SHA256_LEN + 1];
    obi_sha256_final(ctx, digest);
    obi_hex_encode(digest, OBI_SHA256_LEN, hex);
    if (strcmp(hex, desc->hex))
        return obi_error_set(err, -EBADMSG, "blob %s: sha256 is %s, expected %s", path, hex,
                             desc->hex);
    if (lseek(fd, 0, SEEK_SET) < 0)
        return obi_error_set_errno(err, errno, "blob %s", path);
    *out = steal_fd(&fd);
    return 0;
}

static int blob_read_json(const char *layout, const descriptor *desc, const char *what,
                          json_t **out, obi_error **err)
{
    if (desc->size > (json_int_t)JSON_BLOB_MAX)
        return obi_error_set(err, -EFBIG, "%s: %lld bytes is too large", what,
                             (long long)desc->size);
    cleanup_close int fd = -1;
    int r = blob_open_verified(layout, desc, &fd, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", what);
    cleanup_free char *text = malloc((size_t)desc->size + 1);
    if (!text)
        return obi_error_oom(err);
    ssize_t n = obi_read_full(fd, text, (size_t)desc->size);
    if (n != (ssize_t)desc->size)
        return obi_error_set(err, -EIO, "%s: short read", what);
    json_error_t jerr;
    json_t *doc = json_loadb(text, (size_t)n, 0, &jerr);
    if (!doc)
        return obi_error_set(err, -EINVAL, "%s: invalid JSON at line %d: %s", what, jerr.line,
                             jerr.text);
    *out = doc;
    return 0;
}

/* ---- layer extraction -------------------------------------------------------------------- */

static int open_in_root(int root_fd, const char *path, int flags)
{
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
    return fd < 0 ? -errno : fd;
}

/* "./a/b/" -> "a/b"; NULL for names that are absolute or contain "..", or are empty. */
static char *clean_entry_path(const char *name)
{
    if (!name || name[0] == '/')
        return NULL;
    obi_buf out = OBI_BUF_INIT;
    const char *p = name;
    while (*p) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 2 && !strncmp(p, "..", 2)) {
            obi_buf_free(&out);
            return NULL;
        }
        if (len > 0 && !(len == 1 && *p == '.')) {
            if ((out.len && obi_buf_append(&out, "/", 1) < 0) || obi_buf_append(&out, p, len) < 0) {
                obi_buf_free(&out);
                return NULL;
            }
        }
        p = *end ? end + 1 : end;
    }
    if (!out.len) {
        obi_buf_free(&out);
        return strdup(".");
    }
    return obi_buf_steal(&out);
}

/* Opens the directory that holds path (creating missing directories, 0755) inside the root;
 * *base points at the last component within path. */
static int open_parent(int root_fd, char *path, const char **base)
{
    char *slash = strrchr(path, '/');
    if (!slash) {
        *base = path;
        return open_in_root(root_fd, ".", O_RDONLY | O_DIRECTORY);
    }
    *slash = '\0';
    *base = slash + 1;
    int fd = open_in_root(root_fd, path, O_RDONLY | O_DIRECTORY);
    if (fd != -ENOENT) {
        *slash = '/';
        return fd;
    }
    /* Create the missing directories one prefix at a time. */
    for (char *p = path;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        fd = open_in_root(root_fd, path, O_RDONLY | O_DIRECTORY);
        if (fd == -ENOENT) {
            const char *name;
            int parent = open_parent(root_fd, path, &name);
            if (parent < 0) {
                *p = saved;
                *slash = '/';
                return parent;
            }
            if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
                fd = -errno;
            close(parent);
            if (fd == -ENOENT)
                fd = open_in_root(root_fd, path, O_RDONLY | O_DIRECTORY);
        }
        *p = saved;
        if (fd < 0 || saved == '\0') {
            *slash = '/';
            return fd;
        }
        close(fd);
    }
}

typedef struct layer_ctx {
    const char *layer;
    int root_fd;
    bool is_root;
    obi_error **err;
} layer_ctx;

static void apply_xattrs(int fd, struct archive_entry *entry)
{
    const char *name;
    const void *value;
    size_t size;
    libarchive.archive_entry_xattr_reset(entry);
    while (libarchive.archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK)
        (void)fsetxattr(fd, name, value, size, 0); /* best effort: unsupported or denied */
}

static int write_file(layer_ctx *ctx, struct archive *ar, int parent, const char *base,
                      struct archive_entry *entry)
{
    cleanup_close int fd =
        openat(parent, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    const void *block;
    size_t size;
    la_int64_t offset;
    int r;
    while ((r = libarchive.archive_read_data_block(ar, &block, &size, &offset)) == ARCHIVE_OK) {
        if (pwrite(fd, block, size, offset) != (ssize_t)size)
            return -EIO;
    }
    if (r != ARCHIVE_EOF)
        return obi_error_set(ctx->err, -EIO, "%s: %s", libarchive.archive_entry_pathname(entry),
                             libarchive.archive_error_string(ar));
    if (ftruncate(fd, libarchive.archive_entry_size(entry)) < 0)
        return -errno;
    if (fchown(fd, (uid_t)libarchive.archive_entry_uid(entry),
               (gid_t)libarchive.archive_entry_gid(entry)) < 0 &&
        ctx->is_root)
        return -errno;
    apply_xattrs(fd, entry);
    if (fchmod(fd, libarchive.archive_entry_perm(entry) & 07777) < 0)
        return -errno;
    struct timespec times[2] = {
        {libarchive.archive_entry_mtime(entry), libarchive.archive_entry_mtime_nsec(entry)},
        {libarchive.archive_entry_mtime(entry), libarchive.archive_entry_mtime_nsec(entry)},
    };
    (void)futimens(fd, times);
    return 0;
}

static int extract_entry(layer_ctx *ctx, struct archive *ar, struct archive_entry *entry,
                         char *path)
{
    const char *base;
    cleanup_close int parent = open_parent(ctx->root_fd, path, &base);
    if (parent < 0)
        return parent;
    mode_t type = libarchive.archive_entry_filetype(entry);
    const char *hardlink = libarchive.archive_entry_hardlink(entry);
    struct stat st;
    bool exists = fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (!strcmp(base, ".") || !strcmp(base, "")) {
        return 0; /* the root itself */
    }
    if (exists && !(S_ISDIR(st.st_mode) && type == AE_IFDIR && !hardlink)) {
        int r = obi_rm_rf_at(parent, base, path, ctx->err);
        if (r < 0)
            return obi_error_prefix(ctx->err, r, "layer %s", ctx->layer);
    }
    uid_t uid = (uid_t)libarchive.archive_entry_uid(entry);
    gid_t gid = (gid_t)libarchive.archive_entry_gid(entry);
    mode_t perm = libarchive.archive_entry_perm(entry) & 07777;
    if (hardlink) {
        cleanup_free char *target = clean_entry_path(hardlink);
        if (!target || !strcmp(target, "."))
            return obi_error_set(ctx->err, -EPERM, "hardlink %s -> %s escapes the rootfs",
                                 libarchive.archive_entry_pathname(entry), hardlink);
        const char *target_base;
        cleanup_close int target_parent = open_parent(ctx->root_fd, target, &target_base);
        if (target_parent < 0)
            return target_parent;
        return linkat(target_parent, target_base, parent, base, 0) < 0 ? -errno : 0;
    }
    switch (type) {
    case AE_IFDIR: {
        if (!exists || !S_ISDIR(st.st_mode))
            if (mkdirat(parent, base, 0700) < 0)
                return -errno;
        cleanup_close int fd =
            openat(parent, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        if (fchown(fd, uid, gid) < 0 && ctx->is_root)
            return -errno;
        apply_xattrs(fd, entry);
        return fchmod(fd, perm) < 0 ? -errno : 0;
    }
    case AE_IFREG:
        return write_file(ctx, ar, parent, base, entry);
    case AE_IFLNK: {
        const char *target = libarchive.archive_entry_symlink(entry);
        if (!target)
            return -EINVAL;
        if (symlinkat(target, parent, base) < 0)
            return -errno;
        if (fchownat(parent, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 && ctx->is_root)
            return -errno;
        return 0;
    }
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO: {
        dev_t dev = libarchive.archive_entry_rdev(entry);
        if (mknodat(parent, base, type | perm, dev) < 0) {
            if (errno == EPERM && !ctx->is_root)
                return 0; /* device nodes need root; a rootless unpack skips them */
            return -errno;
        }
        if (fchownat(parent, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 && ctx->is_root)
            return -errno;
        /* mknodat's mode went through the umask, and chown drops set-id bits: the tar's mode,
         * on the node just made (AT_SYMLINK_NOFOLLOW: never through a link) */
        return fchmodat(parent, base, perm, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    }
    default:
        return 0; /* sockets and unknown types are not part of images */
    }
}

/* dir/name within the rootfs, for messages (dir NULL: the rootfs itself). */
static char *rootfs_path(const char *dir, const char *name)
{
    return dir ? obi_path_join(dir, name) : strdup(name);
}

/* Empties directory dir_fd (the opaque whiteout; dir_path names it in messages, NULL for the
 * rootfs), each entry removed by obi_rm_rf_at: never through a symlink, any depth with O(1)
 * descriptors. */
static int empty_dir(layer_ctx *ctx, int dir_fd, const char *dir_path)
{
    int fd = dup(dir_fd);
    if (fd < 0)
        return -errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        close(fd);
        return -errno;
    }
    int r = 0;
    struct dirent *de;
    while (r == 0 && (de = readdir(dir))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        cleanup_free char *display = rootfs_path(dir_path, de->d_name);
        r = display ? obi_rm_rf_at(dir_fd, de->d_name, display, ctx->err) : -ENOMEM;
    }
    closedir(dir);
    return r;
}

/* ".wh.NAME" removes NAME from the lower layers, ".wh..wh..opq" empties its directory; other
 * ".wh..wh.*" names are AUFS bookkeeping and ignored. A whiteout below a directory that does
 * not exist has nothing to hide. */
static int apply_whiteout(layer_ctx *ctx, const char *path, const char *base)
{
    const char *name = base + strlen(WHITEOUT_PREFIX);
    bool opaque = !strcmp(base, WHITEOUT_OPAQUE);
    if (!opaque && !strncmp(name, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)))
        return 0;
    if (!opaque && (!*name || !strcmp(name, ".") || !strcmp(name, "..")))
        return obi_error_set(ctx->err, -EPERM, "layer %s: whiteout \"%s\" names no entry",
                             ctx->layer, path);
    char *slash = strrchr(path, '/');
    cleanup_free char *dir_path = slash ? strndup(path, (size_t)(slash - path)) : NULL;
    if (slash && !dir_path)
        return obi_error_oom(ctx->err);
    cleanup_close int fd =
        open_in_root(ctx->root_fd, dir_path ? dir_path : ".", O_RDONLY | O_DIRECTORY);
    if (fd == -ENOENT || fd == -ENOTDIR)
        return 0;
    if (fd < 0)
        return fd;
    int r;
    if (opaque) {
        r = empty_dir(ctx, fd, dir_path);
    } else {
        cleanup_free char *hidden = rootfs_path(dir_path, name);
        r = hidden ? obi_rm_rf_at(fd, name, hidden, ctx->err) : -ENOMEM;
    }
    return r < 0 && *ctx->err ? obi_error_prefix(ctx->err, r, "layer %s", ctx->layer) : r;
}

/* One pass over the layer: whiteouts (pass 0) or content (pass 1). */
static int layer_pass(layer_ctx *ctx, int layer_fd, int pass)
{
    if (lseek(layer_fd, 0, SEEK_SET) < 0)
        return obi_error_set_errno(ctx->err, errno, "layer %s", ctx->layer);
    struct archive *ar = libarchive.archive_read_new();
    if (!ar)
        return obi_error_oom(ctx->err);
    libarchive.archive_read_support_filter_gzip(ar);
    libarchive.archive_read_support_filter_zstd(ar);
    libarchive.archive_read_support_filter_none(ar);
    libarchive.archive_read_support_format_tar(ar);
    int r = 0;
    if (libarchive.archive_read_open_fd(ar, layer_fd, 1 << 16) != ARCHIVE_OK)
        r = obi_error_set(ctx->err, -EINVAL, "layer %s: %s", ctx->layer,
                          libarchive.archive_error_string(ar));
    struct archive_entry *entry;
    while (r == 0) {
        int a = libarchive.archive_read_next_header(ar, &entry);
        if (a == ARCHIVE_EOF)
            break;
        if (a < ARCHIVE_WARN) {
            r = obi_error_set(ctx->err, -EINVAL, "layer %s: %s", ctx->layer,
                              libarchive.archive_error_string(ar));
            break;
        }
        const char *name = libarchive.archive_entry_pathname(entry);
        cleanup_free char *path = clean_entry_path(name);
        if (!path) {
            r = obi_error_set(ctx->err, -EPERM, "layer %s: entry \"%s\" escapes the rootfs",
                              ctx->layer, name ? name : "(null)");
            break;
        }
        const char *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : path;
        bool whiteout = !strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX));
        if (pass == 0 && whiteout)
            r = apply_whiteout(ctx, path, base);
        else if (pass == 1 && !whiteout)
            r = extract_entry(ctx, ar, entry, path);
        if (r < 0 && !(*ctx->err))
            r = obi_error_set_errno(ctx->err, -r, "layer %s: %s", ctx->layer, name);
    }
    libarchive.archive_read_free(ar);
    return r;
}

static int apply_layer_fd(const char *rootfs, const char *layer_name, int layer_fd, obi_error **err)
{
    int r = libarchive_ready(err);
    if (r < 0)
        return obi_error_prefix(err, r, "layer %s", layer_name);
    cleanup_close int root_fd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        return obi_error_set_errno(err, errno, "rootfs %s", rootfs);
    layer_ctx ctx = {layer_name, root_fd, geteuid() == 0, err};
    r = layer_pass(&ctx, layer_fd, 0);
    if (r == 0)
        r = layer_pass(&ctx, layer_fd, 1);
    return r;
}

int obi_image_apply_layer(const char *rootfs, const char *layer_path, obi_error **err)
{
    cleanup_close int fd = open(layer_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "layer %s", layer_path);
    return apply_layer_fd(rootfs, layer_path, fd, err);
}

/* ---- layouts ----------------------------------------------------------------------------- */

static const char *const LAYER_MEDIA_TYPES[] = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
};

static int find_manifest(const char *layout, const char *tag, descriptor *out, json_t **index_out,
                         obi_error **err)
{
    cleanup_free char *index_path = obi_path_join(layout, "index.json");
    cleanup_free char *layout_file = obi_path_join(layout, "oci-layout");
    if (!index_path || !layout_file)
        return obi_error_oom(err);
    if (access(layout_file, F_OK) < 0)
        return obi_error_set_errno(err, errno, "%s is not an OCI image layout: %s", layout,
                                   layout_file);
    cleanup_close int fd = layout_open(layout, "index.json");
    if (fd < 0)
        return layout_open_error(err, fd, "index", index_path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "%s", index_path);
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)JSON_BLOB_MAX)
        return obi_error_set(err, -EFBIG, "%s: not a regular file of at most %u bytes", index_path,
                             JSON_BLOB_MAX);
    size_t len = (size_t)st.st_size;
    cleanup_free char *text = malloc(len + 1);
    if (!text)
        return obi_error_oom(err);
    if (obi_read_full(fd, text, len) != (ssize_t)len)
        return obi_error_set(err, -EIO, "%s: short read", index_path);
    text[len] = '\0';
    int r;
    json_error_t jerr;
    cleanup_json json_t *index = json_loadb(text, len, 0, &jerr);
    if (!index)
        return obi_error_set(err, -EINVAL, "%s: invalid JSON at line %d: %s", index_path, jerr.line,
                             jerr.text);
    json_t *manifests = json_object_get(index, "manifests");
    if (!json_is_array(manifests))
        return obi_error_set(err, -EINVAL, "%s: no manifests array", index_path);
    json_t *chosen = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(manifests, i, m)
    {
        const char *ref = json_string_value(
            json_object_get(json_object_get(m, "annotations"), REF_NAME_ANNOTATION));
        if (tag ? ref && !strcmp(ref, tag) : true) {
            if (chosen)
                return obi_error_set(err, -EINVAL,
                                     tag ? "%s: tag \"%s\" names more than one manifest"
                                         : "%s: %s holds several manifests; name one with :TAG",
                                     index_path, tag ? tag : layout);
            chosen = m;
        }
    }
    if (!chosen)
        return obi_error_set(err, -ENOENT, tag ? "%s: no manifest tagged \"%s\"" : "%s: %s",
                             index_path, tag ? tag : "no manifests");
    if ((r = descriptor_parse(chosen, index_path, out, err)) < 0)
        return r;
    if (out->media_type && strcmp(out->media_type, "application/vnd.oci.image.manifest.v1+json"))
        return obi_error_set(err, -ENOTSUP, "%s: manifest media type %s is not supported",
                             index_path, out->media_type);
    *index_out = steal_pointer(&index); /* out->hex points into it */
    return 0;
}

static int unpack_layers(const char *layout, json_t *layers, const char *rootfs, obi_error **err)
{
    size_t i;
    json_t *layer;
    json_array_foreach(layers, i, layer)
    {
        char what[32];
        snprintf(what, sizeof what, "layers[%zu]", i);
        descriptor desc;
        int r = descriptor_parse(layer, what, &desc, err);
        if (r < 0)
            return r;
        bool known = !desc.media_type;
        for (size_t k = 0; !known && k < OBI_ARRAY_SIZE(LAYER_MEDIA_TYPES); k++)
            known = !strcmp(desc.media_type, LAYER_MEDIA_TYPES[k]);
        if (!known)
            return obi_error_set(err, -ENOTSUP, "%s: media type %s is not supported", what,
                                 desc.media_type);
        cleanup_close int fd = -1;
        if ((r = blob_open_verified(layout, &desc, &fd, err)) < 0)
            return obi_error_prefix(err, r, "%s", what);
        char name[128];
        snprintf(name, sizeof name, "sha256:%.12s", desc.hex);
        if ((r = apply_layer_fd(rootfs, name, fd, err)) < 0)
            return r;
    }
    return 0;
}

/* Builds DATA/images/<hex> if missing: under the images lock, in a temp dir renamed into
 * place. Leftover temp dirs of crashed runs are removed while the lock is held. */
static int ensure_unpacked(const char *layout, const char *hex, json_t *layers,
                           const char *images_dir, const char *entry_dir, obi_error **err)
{
    if (access(entry_dir, F_OK) == 0)
        return 0;
    int r = obi_mkdir_p(images_dir, 0700, err);
    if (r < 0)
        return r;
    cleanup_free char *lock_path = obi_path_join(images_dir, ".lock");
    if (!lock_path)
        return obi_error_oom(err);
    cleanup_close int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) < 0)
        return obi_error_set_errno(err, errno, "lock %s", lock_path);
    if (access(entry_dir, F_OK) == 0)
        return 0; /* another process unpacked it while we waited */
    cleanup_dir DIR *dir = opendir(images_dir);
    struct dirent *de;
    while (dir && (de = readdir(dir)))
        if (!strncmp(de->d_name, ".tmp-", 5)) {
            cleanup_free char *stale = obi_path_join(images_dir, de->d_name);
            if (stale && (r = obi_rm_rf(stale, err)) < 0)
                return r;
        }
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%s/.tmp-%s-XXXXXX", images_dir, hex) < 0)
        return obi_error_oom(err);
    if (!mkdtemp(tmp))
        return obi_error_set_errno(err, errno, "mkdtemp %s", tmp);
    cleanup_free char *rootfs = obi_path_join(tmp, "rootfs");
    if (!rootfs)
        r = obi_error_oom(err);
    else if (mkdir(rootfs, 0755) < 0)
        r = obi_error_set_errno(err, errno, "mkdir %s", rootfs);
    if (r == 0)
        r = unpack_layers(layout, layers, rootfs, err);
    if (r == 0) {
        /* the unpacked files reach the disk before the entry can look complete */
        cleanup_close int tmp_fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (tmp_fd < 0 || syncfs(tmp_fd) < 0)
            r = obi_error_set_errno(err, errno, "sync %s", tmp);
    }
    if (r == 0 && rename(tmp, entry_dir) < 0)
        r = obi_error_set_errno(err, errno, "rename %s -> %s", tmp, entry_dir);
    if (r == 0)
        r = obi_fsync_dir(images_dir, err);
    if (r < 0) {
        obi_error *cleanup_err = NULL;
        obi_rm_rf(tmp, &cleanup_err);
        obi_error_free(cleanup_err);
    }
    return r;
}

int obi_image_cache_lock(const char *data_dir, bool exclusive, int *fd_out, obi_error **err)
{
    cleanup_free char *images_dir = obi_path_join(data_dir, "images");
    cleanup_free char *path = images_dir ? obi_path_join(images_dir, ".gc.lock") : NULL;
    if (!path)
        return obi_error_oom(err);
    int r = obi_mkdir_p(images_dir, 0700, err);
    if (r < 0)
        return r;
    cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s", path);
    do
        r = flock(fd, exclusive ? LOCK_EX : LOCK_SH);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return obi_error_set_errno(err, errno, "lock %s", path);
    *fd_out = steal_fd(&fd);
    return 0;
}

/* Reads the manifest desc names in layout, its config, and unpacks (or reuses) the rootfs.
 * Errors are prefixed by the caller. */
static int image_open_manifest(const char *layout, const descriptor *manifest_desc,
                               const char *data_dir, obi_image **out, obi_error **err)
{
    /* held until obi_image_free: no prune takes the entry before a replica records it */
    cleanup_close int cache_lock = -1;
    int r = obi_image_cache_lock(data_dir, false, &cache_lock, err);
    cleanup_json json_t *manifest = NULL;
    if (r == 0)
        r = blob_read_json(layout, manifest_desc, "manifest", &manifest, err);
    if (r < 0)
        return r;
    descriptor config_desc;
    json_t *layers = json_object_get(manifest, "layers");
    cleanup_json json_t *config_doc = NULL;
    if (!json_is_array(layers))
        r = obi_error_set(err, -EINVAL, "manifest: no layers array");
    if (r == 0)
        r = descriptor_parse(json_object_get(manifest, "config"), "manifest config", &config_desc,
                             err);
    if (r == 0)
        r = blob_read_json(layout, &config_desc, "config", &config_doc, err);
    obi_image *image = calloc(1, sizeof *image);
    if (image)
        image->cache_lock = -1;
    if (r == 0 && !image)
        r = obi_error_oom(err);
    if (r == 0)
        r = obi_image_config_from_json(config_doc, &image->config, err);
    cleanup_free char *images_dir = r == 0 ? obi_path_join(data_dir, "images") : NULL;
    cleanup_free char *entry_dir =
        images_dir ? obi_path_join(images_dir, manifest_desc->hex) : NULL;
    if (r == 0 && !entry_dir)
        r = obi_error_oom(err);
    if (r == 0)
        r = ensure_unpacked(layout, manifest_desc->hex, layers, images_dir, entry_dir, err);
    if (r == 0 && (asprintf(&image->manifest_digest, "sha256:%s", manifest_desc->hex) < 0 ||
                   !(image->rootfs = obi_path_join(entry_dir, "rootfs"))))
        r = obi_error_oom(err);
    if (r < 0 || !image) { /* !image: r is already -ENOMEM (said for the analyzer) */
        obi_image_free(image);
        return r < 0 ? r : -ENOMEM;
    }
    image->cache_lock = steal_fd(&cache_lock);
    *out = image;
    return 0;
}

int obi_image_open(const char *layout_path, const char *tag, const char *data_dir, obi_image **out,
                   obi_error **err)
{
    cleanup_json json_t *index = NULL;
    descriptor manifest_desc;
    int r = find_manifest(layout_path, tag, &manifest_desc, &index, err);
    if (r == 0)
        r = image_open_manifest(layout_path, &manifest_desc, data_dir, out, err);
    if (r < 0)
        return obi_error_prefix(err, r, "image %s%s%s", layout_path, tag ? ":" : "",
                                tag ? tag : "");
    return 0;
}

int obi_image_open_manifest(const char *layout_path, const char *manifest_hex, const char *data_dir,
                            obi_image **out, obi_error **err)
{
    cleanup_free char *relative = NULL;
    if (asprintf(&relative, "blobs/sha256/%s", manifest_hex) < 0)
        return obi_error_oom(err);
    /* the size is the file's: blob_open_verified checks the sha256, which fixes the size */
    cleanup_close int fd = layout_open(layout_path, relative);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int r = fd < 0 ? fd : -errno;
        return obi_error_prefix(err, layout_open_error(err, r, "manifest", relative),
                                "image %s@sha256:%s", layout_path, manifest_hex);
    }
    descriptor desc = {"application/vnd.oci.image.manifest.v1+json", manifest_hex, st.st_size};
    int r = image_open_manifest(layout_path, &desc, data_dir, out, err);
    if (r < 0)
        return obi_error_prefix(err, r, "image %s@sha256:%s", layout_path, manifest_hex);
    return 0;
}

void obi_image_free(obi_image *image)
{
    if (!image)
        return;
    free(image->manifest_digest);
    free(image->rootfs);
    obi_image_config_clear(&image->config);
    if (image->cache_lock >= 0)
        close(image->cache_lock);
    free(image);
}
