/*
 * Bundle directories and their liveness locks (see include/ocibuild/bundle.h). Removal goes
 * through obi_rm_rf_at, which walks with descriptors at any depth and refuses to descend into
 * other filesystems, after any mounts below the bundle were detached: a leaked bind mount never
 * gets its host files deleted. What cannot be removed is quarantined, never left in the way.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/bundle.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"

#define KEPT_NAME ".kept" /* marks a bundle kept on purpose (--keep-bundle): never swept */
#define CONFIG_NAME "config.json"
/* The files a skeleton keeps for the next bundle to rewrite in place (obi_rewrite_file_at):
 * host root's, written by ocibuild (config.json) or emptied by it and written by the runtime
 * (its pid file), never by a build. */
static const char *const KEPT_FILES[] = {CONFIG_NAME, OBI_RUNTIME_PID_FILE, NULL};
#define KEPT_FILE_MODE 0644

struct obi_bundle {
    char *path;
    char *root; /* the bundle root */
    char id[37];
    int dir_fd; /* the directory, flocked until it is gone: everything inside is resolved
                 * beneath it */
    bool keep;
    bool has_userns;
    obi_userns_ids userns;
    obi_report_fn report;
    void *report_ctx;
    void (*on_emptied)(void *ctx);
    void *on_emptied_ctx;
    const obi_bundle_recycler *recycler; /* NULL: removed on close */
};

int obi_uuid_v4(char out[37], obi_error **err)
{
    uint8_t b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return obi_error_set_errno(err, errno, "getrandom");
        }
        got += (size_t)n;
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return 0;
}

/* How often a bundle is made again under a fresh UUID when a concurrent sweep took it between
 * its mkdir and its lock (each retry means another process swept at that very moment). */
#define CREATE_ATTEMPTS 8

/* Whether the skeleton just taken as BUNDLE_ROOT/<id> was given back by this process's user
 * (empty_to_skeleton): a 0700 directory of ours, which nobody else could change in the pool. */
static bool skeleton_is_ours(int root_fd, const char *id)
{
    struct stat st;
    return fstatat(root_fd, id, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
           st.st_uid == geteuid() && (st.st_mode & 07777) == 0700;
}

/* Makes BUNDLE_ROOT/<id> and locks it: 1 done (*fd_out: the locked directory), 0 a sweep took
 * it before the lock (try another id). The directory is unlocked only between its mkdir and the
 * flock: a sweep that locks it first removes it, and the flock then fails, or succeeds on a
 * directory already unlinked (no links left), and the caller tries again. */
static int make_locked_dir(int root_fd, const char *root, const char *id,
                           const obi_bundle_recycler *recycler, int *fd_out, obi_error **err)
{
    cleanup_free char *dest = recycler ? obi_path_join(root, id) : NULL;
    bool taken = dest && recycler->take(recycler->ctx, dest) == 1;
    if (taken && !skeleton_is_ours(root_fd, id)) {
        /* Given back by a version that left it to container root's host ids: whatever they
         * may have put in it goes, with it. */
        cleanup_error obi_error *ignored = NULL;
        if (obi_rm_rf_at(root_fd, id, dest, &ignored) < 0)
            return 0; /* left to a sweep: try another id */
        taken = false;
    }
    if (!taken && mkdirat(root_fd, id, 0700) < 0)
        return obi_error_set_errno(err, errno, "create bundle %s/%s", root, id);
    int fd = openat(root_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "open bundle %s/%s", root, id);
    struct stat st;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        return e == EWOULDBLOCK ? 0 : obi_error_set_errno(err, e, "lock bundle %s/%s", root, id);
    }
    if (fstat(fd, &st) < 0 || st.st_nlink == 0) {
        int e = errno;
        close(fd);
        return st.st_nlink == 0 ? 0 : obi_error_set_errno(err, e, "stat bundle %s/%s", root, id);
    }
    *fd_out = fd;
    return 1;
}

int obi_bundle_create(const char *bundle_root, obi_bundle **out, obi_error **err)
{
    return obi_bundle_create_recycled(bundle_root, NULL, out, err);
}

int obi_bundle_create_recycled(const char *bundle_root, const obi_bundle_recycler *recycler,
                               obi_bundle **out, obi_error **err)
{
    int r = obi_mkdir_p(bundle_root, 0711, err);
    if (r < 0)
        return obi_error_prefix(err, r, "bundle root");
    cleanup_close int root_fd = open(bundle_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        return obi_error_set_errno(err, errno, "bundle root %s", bundle_root);
    cleanup_free obi_bundle *bundle = calloc(1, sizeof *bundle);
    if (!bundle)
        return obi_error_oom(err);
    bundle->dir_fd = -1;
    for (unsigned attempt = 0; r == 0 && attempt < CREATE_ATTEMPTS; attempt++) {
        if ((r = obi_uuid_v4(bundle->id, err)) < 0)
            return r;
        r = make_locked_dir(root_fd, bundle_root, bundle->id, recycler, &bundle->dir_fd, err);
    }
    if (r < 0)
        return r;
    if (r == 0)
        return obi_error_set(err, -EAGAIN,
                             "create bundle in %s: swept by another process %d times in a row",
                             bundle_root, CREATE_ATTEMPTS);
    bundle->root = strdup(bundle_root);
    bundle->path = obi_path_join(bundle_root, bundle->id);
    if (!bundle->root || !bundle->path) {
        unlinkat(root_fd, bundle->id, AT_REMOVEDIR);
        close(bundle->dir_fd);
        free(bundle->root);
        free(bundle->path);
        return obi_error_oom(err);
    }
    bundle->recycler = recycler;
    *out = steal_pointer(&bundle);
    return 0;
}

const char *obi_bundle_path(const obi_bundle *bundle)
{
    return bundle->path;
}
const char *obi_bundle_id(const obi_bundle *bundle)
{
    return bundle->id;
}
int obi_bundle_fd(const obi_bundle *bundle)
{
    return bundle->dir_fd;
}

char *obi_bundle_subpath(const obi_bundle *bundle, const char *relative)
{
    return obi_path_join(bundle->path, relative);
}

int obi_bundle_write_config(obi_bundle *bundle, const json_t *config, obi_error **err)
{
    cleanup_free char *text = json_dumps(config, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    cleanup_free char *path = obi_bundle_subpath(bundle, CONFIG_NAME);
    if (!text || !path)
        return obi_error_oom(err);
    return obi_rewrite_file_at(bundle->dir_fd, CONFIG_NAME, text, strlen(text), KEPT_FILE_MODE,
                               path, err);
}

void obi_bundle_set_on_emptied(obi_bundle *bundle, void (*fn)(void *ctx), void *ctx)
{
    bundle->on_emptied = fn;
    bundle->on_emptied_ctx = ctx;
}

void obi_bundle_set_keep(obi_bundle *bundle, bool keep)
{
    bundle->keep = keep;
}

bool obi_bundle_keep(const obi_bundle *bundle)
{
    return bundle->keep;
}

void obi_bundle_set_userns(obi_bundle *bundle, const obi_userns_ids *ids)
{
    bundle->has_userns = true;
    bundle->userns = *ids;
}

void obi_bundle_set_report(obi_bundle *bundle, obi_report_fn report, void *ctx)
{
    bundle->report = report;
    bundle->report_ctx = ctx;
}

/* Removes BUNDLE_ROOT/name (root_fd: the bundle root, path: the same by name, for mountinfo and
 * messages): mounts below it detached first, then everything through descriptors (fs_walk.h),
 * scratch/ inside the user namespace when the build's files belong to sub-ids. */
/* emptied (may be NULL): see obi_bundle_set_on_emptied. */
typedef struct emptied_hook {
    void (*fn)(void *ctx);
    void *ctx;
} emptied_hook;

static int remove_bundle_dir(int root_fd, const char *name, const char *path,
                             const obi_userns_ids *userns, const emptied_hook *emptied,
                             obi_error **err)
{
    int r = obi_unmount_below(path, NULL, err);
    if (r < 0)
        return r;
    if (userns) {
        cleanup_close int fd = openat(root_fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno != ENOENT)
            return obi_error_set_errno(err, errno, "open %s", path);
        struct stat st;
        if (fd >= 0 && fstatat(fd, "scratch", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            (r = obi_userns_rm_rf(userns, fd, "scratch", err)) < 0)
            return obi_error_prefix(err, r, "%s", path);
    }
    return obi_rm_rf_at_emptied(root_fd, name, path, emptied ? emptied->fn : NULL,
                                emptied ? emptied->ctx : NULL, err);
}

/* A bundle that cannot be removed is moved out of the way, into BUNDLE_ROOT/.quarantine/, and
 * reported once (the sweep never looks at it again, except to retry its removal quietly), so a
 * leftover never blocks a later build or a service's start. */
static int quarantine(int root_fd, const char *root, const char *name, const char *why,
                      obi_report_fn report, void *ctx, obi_error **err)
{
    if (mkdirat(root_fd, OBI_BUNDLE_QUARANTINE_DIR, 0700) < 0 && errno != EEXIST)
        return obi_error_set_errno(err, errno, "quarantine: mkdir %s/%s", root,
                                   OBI_BUNDLE_QUARANTINE_DIR);
    cleanup_close int qfd =
        openat(root_fd, OBI_BUNDLE_QUARANTINE_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (qfd < 0)
        return obi_error_set_errno(err, errno, "quarantine: open %s/%s", root,
                                   OBI_BUNDLE_QUARANTINE_DIR);
    if (renameat2(root_fd, name, qfd, name, RENAME_NOREPLACE) < 0)
        return obi_error_set_errno(err, errno, "quarantine: rename %s/%s into %s/%s", root, name,
                                   root, OBI_BUNDLE_QUARANTINE_DIR);
    if (report) {
        cleanup_free char *line = NULL;
        if (asprintf(&line,
                     "ocibuild: could not remove bundle %s/%s (%s); moved it to %s/%s/%s, "
                     "remove it by hand",
                     root, name, why, root, OBI_BUNDLE_QUARANTINE_DIR, name) >= 0)
            report(ctx, line);
    }
    return 0;
}

/* Removes the bundle, or quarantines it when that fails. */
static int remove_or_quarantine(int root_fd, const char *root, const char *name,
                                const obi_userns_ids *userns, const emptied_hook *emptied,
                                obi_report_fn report, void *ctx, obi_error **err)
{
    cleanup_free char *path = obi_path_join(root, name);
    if (!path)
        return obi_error_oom(err);
    cleanup_error obi_error *why = NULL;
    int r = remove_bundle_dir(root_fd, name, path, userns, emptied, &why);
    if (r == 0)
        return 0;
    int q = quarantine(root_fd, root, name, why ? why->message : strerror(-r), report, ctx, err);
    if (q < 0)
        return obi_error_prefix(err, q, "%s", why ? why->message : strerror(-r));
    return 0;
}

/* ---- bundle skeletons (obi_bundle_recycler) ---- */

static bool is_skeleton_dir(const obi_bundle_recycler *recycler, const char *name)
{
    for (const char *const *dir = recycler->dirs; *dir; dir++)
        if (!strcmp(*dir, name))
            return true;
    return false;
}

static bool is_kept_file(const char *name)
{
    for (const char *const *file = KEPT_FILES; *file; file++)
        if (!strcmp(*file, name))
            return true;
    return false;
}

/* Whether st (a bundle entry, not followed) is a skeleton's kept file as this process left it:
 * a regular file of ours with one link on the bundle's filesystem (top). The rewrite checks
 * again, and more, before it writes. */
static bool is_own_file(const struct stat *st, const struct stat *top)
{
    return S_ISREG(st->st_mode) && st->st_uid == geteuid() && st->st_nlink == 1 &&
           st->st_dev == top->st_dev;
}

/* Makes the bundle a skeleton again, through its own descriptor: mounts below it detached; the
 * directory handed back to this process's user (0700) first, so that container root, whose
 * host ids owned it, can no longer add, rename or replace anything in it; then every entry
 * removed but the skeleton's directories (real directories of the bundle's filesystem: handed
 * back too, 0755, then emptied) and the kept files, when they are still ours. */
static int empty_to_skeleton(const obi_bundle *bundle, obi_error **err)
{
    int r = obi_unmount_below(bundle->path, NULL, err);
    if (r < 0)
        return r;
    if (fchown(bundle->dir_fd, geteuid(), getegid()) < 0 || fchmod(bundle->dir_fd, 0700) < 0)
        return obi_error_set_errno(err, errno, "take back %s", bundle->path);
    struct stat top;
    int fd = openat(bundle->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cleanup_dir DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir || fstat(bundle->dir_fd, &top) < 0) {
        int e = errno;
        if (!dir && fd >= 0)
            close(fd);
        return obi_error_set_errno(err, e, "open %s", bundle->path);
    }
    struct dirent *de;
    while (r == 0 && (de = readdir(dir))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        cleanup_free char *path = obi_path_join(bundle->path, de->d_name);
        struct stat st;
        if (!path)
            r = obi_error_oom(err);
        else if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            r = obi_error_set_errno(err, errno, "stat %s", path);
        else if (is_skeleton_dir(bundle->recycler, de->d_name) && S_ISDIR(st.st_mode) &&
                 st.st_dev == top.st_dev) {
            /* No symlink can take its place now: the bundle is ours alone. */
            if (fchownat(dirfd(dir), de->d_name, geteuid(), getegid(), AT_SYMLINK_NOFOLLOW) < 0 ||
                fchmodat(dirfd(dir), de->d_name, 0755, 0) < 0)
                r = obi_error_set_errno(err, errno, "take back %s", path);
            else
                r = obi_empty_dir_at(dirfd(dir), de->d_name, path, err);
        } else if (!is_kept_file(de->d_name) || !is_own_file(&st, &top)) {
            r = obi_rm_rf_at(dirfd(dir), de->d_name, path, err);
        }
    }
    return r;
}

/* Empties the bundle down to its skeleton and gives it back (the emptied hook in between): 0
 * when given back; otherwise the caller removes what is left (*emptied cleared once it ran). */
static int recycle(const obi_bundle *bundle, const emptied_hook **emptied)
{
    cleanup_error obi_error *ignored = NULL;
    if (empty_to_skeleton(bundle, &ignored) < 0)
        return -1;
    if (*emptied) {
        (*emptied)->fn((*emptied)->ctx);
        *emptied = NULL;
    }
    return bundle->recycler->give(bundle->recycler->ctx, bundle->path) == 1 ? 0 : -1;
}

int obi_bundle_close(obi_bundle *bundle, obi_error **err)
{
    if (!bundle)
        return 0;
    int r = 0;
    if (!bundle->keep) {
        emptied_hook hook = {bundle->on_emptied, bundle->on_emptied_ctx};
        const emptied_hook *emptied = hook.fn ? &hook : NULL;
        cleanup_close int root_fd = open(bundle->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (bundle->recycler && !bundle->has_userns && recycle(bundle, &emptied) == 0)
            r = 0;
        else if (root_fd < 0)
            r = obi_error_set_errno(err, errno, "open %s", bundle->root);
        else
            r = remove_or_quarantine(root_fd, bundle->root, bundle->id,
                                     bundle->has_userns ? &bundle->userns : NULL, emptied,
                                     bundle->report, bundle->report_ctx, err);
    } else {
        /* Marked before the lock is released, so no sweep takes it for a crashed run's. */
        cleanup_free char *kept = obi_path_join(bundle->path, KEPT_NAME);
        if (!kept)
            r = obi_error_oom(err);
        else
            r = obi_write_file(kept, "", 0, 0644, err);
        cleanup_free char *line = NULL;
        if (r == 0 && bundle->report && asprintf(&line, "bundle kept at %s", bundle->path) >= 0)
            bundle->report(bundle->report_ctx, line);
    }
    obi_bundle_abandon(bundle);
    return r;
}

void obi_bundle_abandon(obi_bundle *bundle)
{
    if (!bundle)
        return;
    if (bundle->dir_fd >= 0)
        close(bundle->dir_fd);
    free(bundle->path);
    free(bundle->root);
    free(bundle);
}

void obi_bundle_closep(obi_bundle **bundle)
{
    cleanup_error obi_error *ignored = NULL;
    obi_bundle_close(*bundle, &ignored);
}

/* Decodes the \040-style octal escapes of /proc/self/mountinfo in place. */
static void unescape_mountinfo(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] && r[3]) {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
}

/* A mount found below a path: where, and whether it is FUSE (which a user who may not unmount
 * it can still have fusermount3 take away, when it is the user's). */
typedef struct found_mount {
    char *path;
    bool fuse;
} found_mount;

static int compare_length_desc(const void *a, const void *b)
{
    size_t la = strlen(((const found_mount *)a)->path), lb = strlen(((const found_mount *)b)->path);
    return la < lb ? 1 : la > lb ? -1 : 0;
}

/* Detaches one mount; a rootless run's FUSE mount (input mounts a killed run left, which only
 * fusermount3 may remove for it) through fusermount3 -u -z. */
static int detach_mount(const found_mount *mount, obi_error **err)
{
    if (umount2(mount->path, MNT_DETACH | UMOUNT_NOFOLLOW) == 0 || errno == EINVAL ||
        errno == ENOENT)
        return 0;
    if (errno == EPERM && mount->fuse)
        return obi_fusermount_unmount(mount->path, err);
    return obi_error_set_errno(err, errno, "unmount %s", mount->path);
}

int obi_unmount_below(const char *path, unsigned *count, obi_error **err)
{
    if (count)
        *count = 0;
    cleanup_file FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return obi_error_set_errno(err, errno, "open /proc/self/mountinfo");
    size_t plen = strlen(path);
    found_mount *found = NULL;
    size_t n_found = 0, cap = 0;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        /* fields: id parent major:minor root mountpoint options... - fstype source ... */
        const char *separator = strstr(line, " - ");
        bool fuse = separator &&
                    (!strncmp(separator + 3, "fuse ", 5) || !strncmp(separator + 3, "fuse.", 5));
        char *save = NULL, *field = strtok_r(line, " ", &save);
        for (int i = 0; field && i < 4; i++)
            field = strtok_r(NULL, " ", &save);
        if (!field)
            continue;
        unescape_mountinfo(field);
        if (strncmp(field, path, plen) == 0 && (field[plen] == '/' || field[plen] == 0)) {
            if (obi_array_grow(&found, &cap, n_found + 1) < 0)
                break; /* what was found is still detached below */
            found[n_found++] = (found_mount){strdup(field), fuse};
        }
    }
    if (n_found > 1)
        qsort(found, n_found, sizeof *found, compare_length_desc);
    int r = 0;
    for (size_t i = 0; i < n_found; i++) {
        cleanup_error obi_error *failed = NULL;
        if (found[i].path && detach_mount(&found[i], &failed) < 0) {
            if (r == 0)
                r = obi_error_move(err, &failed);
        } else if (count) {
            (*count)++;
        }
        free(found[i].path);
    }
    free(found);
    return r;
}

/* Retries the removal of quarantined bundles, quietly: what still cannot go stays. */
static void retry_quarantined(int root_fd, const char *bundle_root, const obi_userns_ids *userns)
{
    int qfd =
        openat(root_fd, OBI_BUNDLE_QUARANTINE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (qfd < 0)
        return;
    cleanup_dir DIR *dir = fdopendir(qfd);
    if (!dir) {
        close(qfd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        cleanup_error obi_error *ignored = NULL;
        cleanup_free char *path = NULL;
        if (asprintf(&path, "%s/%s/%s", bundle_root, OBI_BUNDLE_QUARANTINE_DIR, de->d_name) >= 0)
            (void)remove_bundle_dir(dirfd(dir), de->d_name, path, userns, NULL, &ignored);
    }
}

int obi_bundle_sweep(const char *bundle_root, obi_runtime *runtime, const obi_userns_ids *userns,
                     obi_report_fn report, void *report_ctx, unsigned *swept, obi_error **err)
{
    if (swept)
        *swept = 0;
    cleanup_close int root_fd = open(bundle_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "open %s", bundle_root);
    int list_fd = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
    cleanup_dir DIR *dir = list_fd >= 0 ? fdopendir(list_fd) : NULL;
    if (!dir) {
        if (list_fd >= 0)
            close(list_fd);
        return obi_error_set_errno(err, errno, "open %s", bundle_root);
    }
    retry_quarantined(root_fd, bundle_root, userns);
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.' || strlen(de->d_name) != 36)
            continue;
        /* Its owner holds the directory locked from just after its mkdir until it is gone
         * (also while a child of the owner removes it: the locked descriptor was handed
         * over). Held here while sweeping, so two sweeps never remove one bundle. Bundles of
         * versions that also locked BUNDLE/.lock locked the directory too. */
        cleanup_close int fd =
            openat(root_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue; /* gone, or not a directory: not a bundle */
        struct stat st;
        if (fstatat(fd, KEPT_NAME, &st, AT_SYMLINK_NOFOLLOW) == 0)
            continue; /* kept for debugging: the user removes it */
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue; /* a live run (or another sweep) owns it */
        if (runtime) {
            cleanup_error obi_error *ignored = NULL;
            obi_runtime_destroy(runtime, de->d_name, &ignored);
        }
        int r = remove_or_quarantine(root_fd, bundle_root, de->d_name, userns, NULL, report,
                                     report_ctx, err);
        if (r < 0)
            return obi_error_prefix(err, r, "sweep stale bundle");
        if (swept)
            (*swept)++;
    }
    return 0;
}
