/*
 * Bundle writing for service replicas (include/ocibuild/service_bundle.h): what the lifecycle
 * (lifecycle.c) and `ocibuild service bundle` put on disk around the config.json that
 * service_spec.c generates. One function resolves a service's image (the OCI image unpacked
 * into the cache, or its rootfs directory) for both of them; obi_service_bundle_write then
 * makes the volume directories (walked from the data dir one component at a time, never
 * through a symlink), lays out the rootfs (a symlink, an empty directory, an absolute path, or
 * an overlay whose lower layer is an idmapped view of the source under a user namespace),
 * checks that the replica's root can reach it, and writes config.json atomically.
 * obi_service_bundle_remove undoes all of it, mounts first.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/process.h"
#include "ocibuild/registry.h"
#include "ocibuild/service_bundle.h"
#include "ocibuild/service_rootless.h"
#include "service_internal.h"

/* ---- what the bundles are made from ------------------------------------------------------ */

/* A registry image: pulled into DATA/registry as the policy says, then opened from there
 * like a layout. */
static int open_registry_image(const obi_service *svc, const char *data_dir,
                               const obi_registry_options *registry, obi_image **out,
                               obi_error **err)
{
    const char *name = svc->image_ref->canonical;
    cleanup_free char *manifest_hex = NULL;
    int r = obi_registry_pull(svc->image_ref, svc->image_pull_policy, registry, data_dir,
                              &manifest_hex, err);
    if (r < 0)
        return r; /* its errors name the image */
    cleanup_free char *layout = obi_registry_layout_dir(data_dir);
    if (!layout)
        return obi_error_oom(err);
    r = obi_image_open_manifest(layout, manifest_hex, data_dir, out, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", name);
    return 0;
}

int obi_service_source_open(const obi_service *svc, const char *data_dir,
                            const obi_registry_options *registry, obi_service_source *out,
                            obi_error **err)
{
    obi_service_source src = {NULL, NULL, OBI_BUNDLE_ROOTFS_DIR};
    if (svc->image_kind == OBI_IMAGE_REGISTRY) {
        int r = open_registry_image(svc, data_dir, registry, &src.image, err);
        if (r < 0)
            return obi_error_prefix(err, r, "services.%s.image", svc->name);
        src.rootfs = src.image->rootfs;
        src.mode = OBI_BUNDLE_ROOTFS_OVERLAY;
    } else if (svc->image_kind == OBI_IMAGE_OCI) {
        int r = obi_image_open(svc->image_path, svc->image_tag, data_dir, &src.image, err);
        if (r < 0)
            return obi_error_prefix(err, r, "services.%s.image", svc->name);
        src.rootfs = src.image->rootfs;
        src.mode = OBI_BUNDLE_ROOTFS_OVERLAY;
    } else if (svc->image_kind == OBI_IMAGE_ROOTFS) {
        /* as is for the host's root; under a user namespace the directory is the read-only,
         * idmapped lower layer of an overlay, like an image: its files keep their ids on disk
         * and what the replica writes stays in its bundle */
        src.rootfs = svc->image_rootfs;
        src.mode =
            obi_service_uses_userns(svc) ? OBI_BUNDLE_ROOTFS_OVERLAY : OBI_BUNDLE_ROOTFS_PATH;
    }
    *out = src;
    return 0;
}

void obi_service_source_close(obi_service_source *src)
{
    obi_image_free(src->image);
    *src = (obi_service_source){NULL, NULL, OBI_BUNDLE_ROOTFS_DIR};
}

void obi_service_source_spec_options(const obi_service_source *src, obi_service_spec_options *opts)
{
    opts->image = src->image ? &src->image->config : NULL;
    opts->rootfs = src->rootfs;
}

/* ---- volumes ----------------------------------------------------------------------------- */

/* Opens data_dir/relative (relative: clean components below the data dir) one component at a
 * time with O_NOFOLLOW, so a symlink on the way is never followed: missing directories are made
 * 0700, existing ones this process owns are closed to 0700 (older versions made them 0755, and
 * whatever a replica leaves in a volume must stay out of other users' reach). The last
 * component is the volume itself: made 0755 and owned by uid:gid (*created set) when missing.
 * A minimal local walk; src/util's beneath helper will take its place. */
static int open_volume_dir(const char *data_dir, const char *relative, uid_t uid, gid_t gid,
                           bool *created, int *fd_out, obi_error **err)
{
    cleanup_close int fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "data dir %s", data_dir);
    cleanup_free char *copy = strdup(relative);
    if (!copy)
        return obi_error_oom(err);
    *created = false;
    char *save = NULL;
    for (char *name = strtok_r(copy, "/", &save); name; name = strtok_r(NULL, "/", &save)) {
        bool last = !save || !*save;
        const char *shown = relative; /* the walked prefix, for messages */
        int prefix_len = (int)(name - copy + (ptrdiff_t)strlen(name));
        bool made = mkdirat(fd, name, last ? 0755 : 0700) == 0;
        if (!made && errno != EEXIST)
            return obi_error_set_errno(err, errno, "mkdir %s/%.*s", data_dir, prefix_len, shown);
        int next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            int e = errno;
            struct stat link;
            if (fstatat(fd, name, &link, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(link.st_mode))
                return obi_error_set(err, -ELOOP, "%s/%.*s: is a symlink, not followed", data_dir,
                                     prefix_len, shown);
            return obi_error_set_errno(err, e, "%s/%.*s", data_dir, prefix_len, shown);
        }
        close(fd);
        fd = next;
        struct stat st;
        if (fstat(fd, &st) < 0)
            return obi_error_set_errno(err, errno, "%s/%.*s", data_dir, prefix_len, shown);
        if (last && made) {
            if ((st.st_uid != uid || st.st_gid != gid) && fchown(fd, uid, gid) < 0)
                return obi_error_set_errno(err, errno, "chown %s/%s", data_dir, relative);
            if (fchmod(fd, 0755) < 0) /* mkdirat's mode went through the umask */
                return obi_error_set_errno(err, errno, "chmod %s/%s", data_dir, relative);
            *created = true;
        } else if (!last && st.st_uid == geteuid() && (st.st_mode & 07777) != 0700 &&
                   fchmod(fd, 0700) < 0) {
            return obi_error_set_errno(err, errno, "chmod 0700 %s/%.*s", data_dir, prefix_len,
                                       shown);
        }
    }
    *fd_out = steal_fd(&fd);
    return 0;
}

/* Named and anonymous volumes are made (owned by the replica's root: ids, or this process for
 * a privileged replica); bind sources and s3 mount paths must exist. A volume that exists but
 * belongs to someone else (made before replicas had a user namespace) is a warning: the
 * replica's root cannot write it until it is moved into the range. */
static int prepare_storage(const obi_deployment *d, const obi_service *svc,
                           const obi_service_spec_options *opts, unsigned replica,
                           const obi_idmap *ids, char ***warnings, obi_error **err)
{
    cleanup_free char *owned_data = opts->data_dir ? NULL : obi_default_data_dir();
    const char *data = opts->data_dir ? opts->data_dir : owned_data;
    if (!data)
        return obi_error_oom(err);
    uid_t uid = ids ? ids->uid : geteuid();
    gid_t gid = ids ? ids->gid : getegid();
    for (size_t i = 0; i < svc->storage_count; i++) {
        obi_storage_type type = svc->storage[i].type;
        int r;
        if ((type == OBI_STORAGE_NAMED || type == OBI_STORAGE_ANONYMOUS) &&
            (r = obi_mkdir_p(data, 0700, err)) < 0)
            return r;
    }
    for (size_t i = 0; i < svc->storage_count; i++) {
        const obi_storage *st = &svc->storage[i];
        if (st->type == OBI_STORAGE_TMPFS)
            continue;
        cleanup_free char *source = obi_service_storage_source(d, svc, replica, i, data);
        if (!source)
            return obi_error_oom(err);
        int r = 0;
        if (st->type == OBI_STORAGE_NAMED || st->type == OBI_STORAGE_ANONYMOUS) {
            /* source is DATA/<relative>, made by obi_service_storage_source */
            const char *relative = source + strlen(data) + 1;
            cleanup_close int fd = -1;
            bool created = false;
            struct stat info;
            r = open_volume_dir(data, relative, uid, gid, &created, &fd, err);
            if (r == 0 && !created && ids && fstat(fd, &info) == 0 && info.st_uid != uid &&
                obi_service_warnf(
                    warnings,
                    "services.%s.storage[%zu]: volume %s belongs to host uid %u, not to "
                    "the replica's root (host uid %u), which cannot write it; move it "
                    "into the range with `chown -R %u:%u %s`",
                    svc->name, i, source, (unsigned)info.st_uid, (unsigned)uid, (unsigned)uid,
                    (unsigned)gid, source) < 0)
                r = obi_error_oom(err);
        } else if (access(source, F_OK) < 0) {
            r = obi_error_set_errno(err, errno, "%s source %s",
                                    st->type == OBI_STORAGE_S3 ? "s3 mount" : "bind", source);
        }
        if (r < 0)
            return obi_error_prefix(err, r, "services.%s.storage[%zu]", svc->name, i);
    }
    return 0;
}

/* ---- the rootfs ----------------------------------------------------------------------------- */

/* True when path is the root of a mount. statx knows (an idmapped bind of a directory on the
 * same filesystem has the same st_dev); kernels before 5.8 compare devices with the parent. */
static bool is_mount_point(const char *path)
{
    struct statx stx;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE, &stx) < 0 || !S_ISDIR(stx.stx_mode))
        return false;
    if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
        return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
    struct stat st, parent;
    cleanup_free char *up = obi_path_join(path, "..");
    return up && lstat(path, &st) == 0 && stat(up, &parent) == 0 && st.st_dev != parent.st_dev;
}

/* An on-disk id as the replica's namespace shows it on the host (unmapped ids stay). */
static unsigned shifted(unsigned id, unsigned base, const obi_idmap *ids)
{
    return ids && id < ids->count ? base + id : id;
}

/* BUNDLE/upper, made with the owner and mode of the lower layer's top directory (the overlay's
 * root takes the upper's), shifted into the replica's range. Kept when it exists. */
static int make_upper(const char *upper, const struct stat *top, const obi_idmap *ids,
                      obi_error **err)
{
    if (mkdir(upper, 0700) < 0)
        return errno == EEXIST ? 0 : obi_error_set_errno(err, errno, "mkdir %s", upper);
    cleanup_close int fd = open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 ||
        fchown(fd, shifted(top->st_uid, ids ? ids->uid : 0, ids),
               shifted(top->st_gid, ids ? ids->gid : 0, ids)) < 0 ||
        fchmod(fd, top->st_mode & 07777) < 0)
        return obi_error_set_errno(err, errno, "set up %s", upper);
    return 0;
}

/* Mounts overlay(lower = source, upper/work in the bundle) on BUNDLE/rootfs unless mounted. With
 * ids the lower layer is an idmapped view of source at BUNDLE/lower, detached again once the
 * overlay holds its own reference to it: the source keeps the image's ids on disk. */
static int mount_overlay(const char *bundle_dir, const char *rootfs, const char *source,
                         const obi_idmap *ids, obi_error **err)
{
    if (is_mount_point(rootfs))
        return 0; /* `up` again: the replica keeps its writable layer */
    cleanup_free char *upper = obi_path_join(bundle_dir, "upper");
    cleanup_free char *work = obi_path_join(bundle_dir, "work");
    cleanup_free char *lower_view = obi_path_join(bundle_dir, "lower");
    cleanup_free char *lower = realpath(source, NULL);
    if (!upper || !work || !lower_view)
        return obi_error_oom(err);
    struct stat top;
    if (!lower || stat(lower, &top) < 0)
        return obi_error_set_errno(err, errno, "rootfs %s", source);
    int r;
    if ((r = make_upper(upper, &top, ids, err)) < 0 || (r = obi_mkdir_p(work, 0700, err)) < 0)
        return r;
    if (strpbrk(lower, ",:") || strpbrk(upper, ",:") || strpbrk(work, ",:"))
        return obi_error_set(err, -EINVAL, "overlay paths may not contain ',' or ':' (%s)", lower);
    const char *lowerdir = lower;
    if (ids) {
        if (is_mount_point(lower_view) && umount2(lower_view, MNT_DETACH) < 0)
            return obi_error_set_errno(err, errno, "unmount %s", lower_view);
        if (mkdir(lower_view, 0700) < 0 && errno != EEXIST)
            return obi_error_set_errno(err, errno, "mkdir %s", lower_view);
        if ((r = obi_idmap_bind(lower, lower_view, ids, err)) < 0)
            return r;
        lowerdir = lower_view;
    }
    cleanup_free char *options = NULL;
    if (asprintf(&options, "lowerdir=%s,upperdir=%s,workdir=%s", lowerdir, upper, work) < 0)
        r = obi_error_oom(err);
    else if (mount("overlay", rootfs, "overlay", MS_NODEV, options) < 0)
        r = obi_error_set_errno(err, errno, "mount overlay on %s (lower %s%s)", rootfs, lower,
                                ids ? ", idmapped" : "");
    if (ids) {
        if (umount2(lower_view, MNT_DETACH) < 0 && r == 0)
            r = obi_error_set_errno(err, errno, "unmount %s", lower_view);
        (void)rmdir(lower_view);
    }
    return r;
}

int obi_service_bundle_remove(const char *bundle_dir, obi_error **err)
{
    static const char *const mounts[] = {"rootfs", "lower"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(mounts); i++) {
        cleanup_free char *path = obi_path_join(bundle_dir, mounts[i]);
        if (!path)
            return obi_error_oom(err);
        if (is_mount_point(path) && umount2(path, MNT_DETACH) < 0)
            return obi_error_set_errno(err, errno, "unmount %s", path);
    }
    /* a rootless replica's copy holds files of the user's subordinate ids */
    return obi_service_rootless() ? obi_service_rootless_rm_rf(bundle_dir, err)
                                  : obi_rm_rf(bundle_dir, err);
}

int obi_service_replica_dir(const char *path, const obi_idmap *ids, obi_error **err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "stat %s", path);
    if (st.st_gid != ids->gid && fchown(fd, (uid_t)-1, ids->gid) < 0)
        return obi_error_set_errno(err, errno, "chgrp %u %s", (unsigned)ids->gid, path);
    if ((st.st_mode & 07777) != 0710 && fchmod(fd, 0710) < 0)
        return obi_error_set_errno(err, errno, "chmod 0710 %s", path);
    return 0;
}

/* Whether the replica's root can reach path. A child takes its host ids (no supplementary
 * groups, no capabilities in the host's namespace: what runc's init has when it looks the
 * rootfs up) and searches each directory from / down to path, so the kernel answers, ACLs
 * included; the first directory it cannot search is named. A caller that cannot take those ids
 * (not root, hence no user namespace either) does not check. */
static int check_reachable(const char *path, const obi_idmap *ids, obi_error **err)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (path[0] != '/' || len >= sizeof buf)
        return 0;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int read_end = fds[0];
    cleanup_close int write_end = fds[1];
    pid_t pid = fork();
    if (pid < 0)
        return obi_error_set_errno(err, errno, "fork");
    if (pid == 0) {
        int reply[2] = {-1, 0}; /* the length of the prefix that failed (-1: not checked), errno */
        if (setgroups(0, NULL) == 0 && setresgid(ids->gid, ids->gid, ids->gid) == 0 &&
            setresuid(ids->uid, ids->uid, ids->uid) == 0) {
            reply[0] = 0;
            memcpy(buf, path, len + 1); /* the child calls only async-signal-safe functions */
            for (size_t i = 1; i <= len; i++) {
                if (buf[i] != '/' && buf[i] != '\0')
                    continue;
                char saved = buf[i];
                buf[i] = '\0';
                int failed = access(buf, X_OK) < 0;
                buf[i] = saved;
                if (failed) {
                    reply[0] = (int)i;
                    reply[1] = errno;
                    break;
                }
            }
        }
        (void)!write(write_end, reply, sizeof reply);
        _exit(0);
    }
    close(steal_fd(&write_end));
    int reply[2] = {-1, 0};
    ssize_t n = obi_read_full(read_end, reply, sizeof reply);
    int status;
    obi_wait(pid, &status, NULL);
    if (n != (ssize_t)sizeof reply || reply[0] <= 0)
        return 0;
    snprintf(buf, sizeof buf, "%.*s", reply[0], path);
    struct stat st;
    char detail[96] = "";
    if (stat(buf, &st) == 0)
        snprintf(detail, sizeof detail, " (mode %04o, owner %u:%u)", st.st_mode & 07777,
                 (unsigned)st.st_uid, (unsigned)st.st_gid);
    return obi_error_set(err, -EACCES,
                         "the replica's root (host uid %u, gid %u) cannot reach its rootfs %s: "
                         "%s%s: %s; every directory on the way must be searchable by it (chmod "
                         "o+x, or keep the data dir below directories that are)",
                         (unsigned)ids->uid, (unsigned)ids->gid, path, buf, detail,
                         strerror(reply[1]));
}

/* ---- the bundle ----------------------------------------------------------------------------- */

/* BUNDLE/name holding text, made beneath the bundle directory and never through a symlink:
 * written to a new temporary name (O_EXCL | O_NOFOLLOW) and renamed over the old one, which
 * replaces whatever is there, a symlink included, without following it. Mode 0644: the
 * replica's root reads it as "other" under a user namespace. text NULL: a file left from an
 * earlier document is removed. The resolv.conf of dns and the hosts of the service network. */
static int write_beneath(const char *bundle_dir, const char *name, const char *text,
                         obi_error **err)
{
    cleanup_close int dir = open(bundle_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir < 0)
        return obi_error_set_errno(err, errno, "open %s", bundle_dir);
    if (!text) {
        if (unlinkat(dir, name, 0) < 0 && errno != ENOENT)
            return obi_error_set_errno(err, errno, "remove %s/%s", bundle_dir, name);
        return 0;
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, ".%s.%ld", name, (long)getpid());
    (void)unlinkat(dir, tmp, 0); /* left by a crashed writer of the same pid */
    cleanup_close int fd =
        openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "create %s/%s", bundle_dir, tmp);
    size_t len = strlen(text);
    int r = 0;
    if (obi_write_all(fd, text, len) < 0 || fchmod(fd, 0644) < 0)
        r = obi_error_set_errno(err, errno, "write %s/%s", bundle_dir, tmp);
    else if (renameat(dir, tmp, dir, name) < 0)
        r = obi_error_set_errno(err, errno, "rename %s/%s", bundle_dir, name);
    if (r < 0)
        (void)unlinkat(dir, tmp, 0);
    return r;
}

/* BUNDLE/resolv.conf (dns, see obi_service_resolv_conf); none without dns. */
static int write_resolv_conf(const char *bundle_dir, const obi_service *svc, obi_error **err)
{
    if (!obi_service_has_resolv_conf(svc))
        return write_beneath(bundle_dir, OBI_SERVICE_RESOLV_CONF, NULL, err);
    cleanup_free char *text = obi_service_resolv_conf(svc);
    if (!text)
        return obi_error_oom(err);
    return write_beneath(bundle_dir, OBI_SERVICE_RESOLV_CONF, text, err);
}

int obi_service_bundle_write(const obi_deployment *deployment, const obi_service *svc,
                             const obi_service_spec_options *opts, const char *bundle_dir,
                             const char *rootfs_source, obi_bundle_rootfs_mode mode,
                             char ***warnings, obi_error **err)
{
    unsigned replica = opts->replica ? opts->replica : 1;
    obi_idmap ids_buf;
    const obi_idmap *ids = NULL;
    int r = obi_service_replica_ids(svc, opts, &ids_buf, &ids, err);
    if (r < 0)
        return r;
    obi_service_spec_options resolved = *opts;
    resolved.ids = ids ? ids : opts->ids; /* looked up once */
    cleanup_json json_t *config = NULL;
    char **collected = NULL;
    if ((r = obi_service_spec_generate(deployment, svc, &resolved, &config, &collected, err)) < 0)
        return r;
    cleanup_strv char **owned_warnings = collected;
    if (svc->init_container && access(OBI_SERVICE_INIT_PATH, X_OK) < 0)
        return obi_error_set_errno(err, errno,
                                   "services.%s.init_container: %s (Debian's tini package, "
                                   "scripts/install-deps.sh)",
                                   svc->name, OBI_SERVICE_INIT_PATH);
    if ((r = prepare_storage(deployment, svc, opts, replica, ids, &owned_warnings, err)) < 0)
        return r;
    cleanup_free char *source_abs = NULL;
    if (rootfs_source && mode == OBI_BUNDLE_ROOTFS_PATH) {
        if (!(source_abs = realpath(rootfs_source, NULL)))
            return obi_error_set_errno(err, errno, "rootfs %s", rootfs_source);
        struct stat top;
        if (ids && stat(source_abs, &top) == 0 &&
            (top.st_uid < ids->uid || top.st_uid - ids->uid >= ids->count) &&
            obi_service_warnf(
                &owned_warnings,
                "rootfs %s belongs to host uid %u, outside the replicas' range (%u..): "
                "its root sees it as nobody's and cannot write it or make mount points "
                "in it; the overlay rootfs mode shifts its ids",
                source_abs, (unsigned)top.st_uid, (unsigned)ids->uid) < 0)
            return obi_error_oom(err);
        if (json_object_set_new(json_object_get(config, "root"), "path", json_string(source_abs)) <
            0)
            return obi_error_oom(err);
    }
    if ((r = obi_mkdir_p(bundle_dir, 0700, err)) < 0)
        return r;
    if (ids && (r = obi_service_replica_dir(bundle_dir, ids, err)) < 0)
        return r;
    if ((r = write_resolv_conf(bundle_dir, svc, err)) < 0)
        return obi_error_prefix(err, r, "services.%s.dns", svc->name);
    /* the deployment network's names (service_network.h) */
    if ((r = write_beneath(bundle_dir, OBI_SERVICE_HOSTS, opts->hosts, err)) < 0)
        return obi_error_prefix(err, r, "services.%s: the network's hosts file", svc->name);
    cleanup_free char *rootfs = obi_path_join(bundle_dir, "rootfs");
    cleanup_free char *config_path = obi_path_join(bundle_dir, "config.json");
    if (!rootfs || !config_path)
        return obi_error_oom(err);
    struct stat st;
    if (lstat(rootfs, &st) == 0) {
        if (S_ISLNK(st.st_mode) && unlink(rootfs) < 0)
            return obi_error_set_errno(err, errno, "unlink %s", rootfs);
    } else if (errno != ENOENT) {
        return obi_error_set_errno(err, errno, "lstat %s", rootfs);
    }
    if (rootfs_source && mode == OBI_BUNDLE_ROOTFS_SYMLINK) {
        if (symlink(rootfs_source, rootfs) < 0)
            return obi_error_set_errno(err, errno, "symlink %s -> %s", rootfs, rootfs_source);
    } else if (!(rootfs_source && mode == OBI_BUNDLE_ROOTFS_PATH) && mkdir(rootfs, 0755) < 0 &&
               errno != EEXIST) {
        return obi_error_set_errno(err, errno, "mkdir %s", rootfs);
    }
    if (rootfs_source && mode == OBI_BUNDLE_ROOTFS_OVERLAY &&
        (r = mount_overlay(bundle_dir, rootfs, rootfs_source, ids, err)) < 0)
        return r;
    if (rootfs_source && mode == OBI_BUNDLE_ROOTFS_COPY &&
        (r = obi_service_rootless_copy_rootfs(rootfs_source, rootfs, err)) < 0)
        return r;
    /* rootless: the replica's root is the invoking user, its subordinate ids above */
    if (ids && obi_service_rootless() &&
        (r = obi_service_rootless_config(config, opts->userns_path, err)) < 0)
        return r;
    /* a symlinked rootfs is resolved by the runtime (crun), not checked here */
    if (ids && !(rootfs_source && mode == OBI_BUNDLE_ROOTFS_SYMLINK) &&
        (r = check_reachable(source_abs ? source_abs : rootfs, ids, err)) < 0)
        return r;
    cleanup_free char *text = json_dumps(config, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return obi_error_oom(err);
    if ((r = obi_write_file_atomic(config_path, text, strlen(text), 0600, err)) < 0)
        return r;
    if (warnings)
        *warnings = steal_pointer(&owned_warnings);
    return 0;
}
