/*
 * Services for a normal user (include/ocibuild/service_rootless.h): where the runtime keeps its
 * state, the replica's id maps (the invoking user as root, its /etc/subuid range above), a
 * private rootfs copy in place of the overlay only root can mount, and removal of files with
 * ids of that range. The id maps are the ones `unshare -r --map-auto` (util-linux) makes, so the
 * same tool removes whatever a replica left with any id of its namespace.
 */
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/process.h"
#include "ocibuild/service_rootless.h"
#include "ocibuild/spec.h"

#define TOOL_OUTPUT_MAX 4096

bool obi_service_rootless(void)
{
    return geteuid() != 0;
}

int obi_service_rootless_runtime_root(const char *data_dir, char **out, obi_error **err)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char *path = NULL;
    int n = xdg && xdg[0] == '/' ? asprintf(&path, "%s/ocibuild/runc", xdg)
                                 : asprintf(&path, "%s/run/runc", data_dir);
    if (n < 0)
        return obi_error_oom(err);
    cleanup_free char *owned = path;
    int r = obi_mkdir_p(path, 0700, err);
    if (r < 0)
        return obi_error_prefix(err, r, "the runtime's state dir for rootless services");
    *out = steal_pointer(&owned);
    return 0;
}

void obi_service_rootless_ids(obi_idmap *out)
{
    *out = (obi_idmap){getuid(), getgid(), 1};
}

/* The invoking user's first range in file (kind "uid"/"gid"); count 0 when it has none. */
static int user_range(const char *file, const char *kind, obi_subid_range *out, obi_error **err)
{
    char buf[4096];
    struct passwd pw, *found = NULL;
    const char *name =
        getpwuid_r(getuid(), &pw, buf, sizeof buf, &found) == 0 && found ? found->pw_name : NULL;
    cleanup_error obi_error *lookup_err = NULL;
    int r = obi_subid_lookup(file, kind, name, (uint32_t)getuid(), out, &lookup_err);
    if (r == -ENOENT) {
        *out = (obi_subid_range){0, 0};
        return 0;
    }
    return r < 0 ? obi_error_move(err, &lookup_err) : 0;
}

static json_t *id_map(unsigned self, const obi_subid_range *range)
{
    json_t *map =
        json_pack("[{s:i, s:I, s:i}]", "containerID", 0, "hostID", (json_int_t)self, "size", 1);
    if (map && range->count > 1 &&
        json_array_append_new(map, json_pack("{s:i, s:I, s:I}", "containerID", 1, "hostID",
                                             (json_int_t)range->start, "size",
                                             (json_int_t)(range->count - 1))) < 0) {
        json_decref(map);
        return NULL;
    }
    return map;
}

int obi_service_rootless_config(json_t *config, const char *userns_path, obi_error **err)
{
    obi_subid_range uids, gids;
    int r;
    if ((r = user_range("/etc/subuid", "uid", &uids, err)) < 0 ||
        (r = user_range("/etc/subgid", "gid", &gids, err)) < 0)
        return r;
    json_t *linux_obj = json_object_get(config, "linux");
    if (!json_is_object(linux_obj) ||
        json_object_set_new(linux_obj, "uidMappings", id_map(getuid(), &uids)) < 0 ||
        json_object_set_new(linux_obj, "gidMappings", id_map(getgid(), &gids)) < 0)
        return obi_error_oom(err);
    json_t *namespaces = json_object_get(linux_obj, "namespaces");
    size_t i;
    json_t *ns;
    json_array_foreach(namespaces, i, ns)
    {
        const char *type = json_string_value(json_object_get(ns, "type"));
        if (userns_path && type && !strcmp(type, "user") &&
            json_object_set_new(ns, "path", json_string(userns_path)) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

static int run_tool(char *const argv[], obi_error **err)
{
    cleanup_free char *output = NULL;
    int code = 0;
    int r = obi_run_capture(argv, true, TOOL_OUTPUT_MAX, &output, &code, err);
    if (r < 0)
        return r;
    if (code != 0) {
        output[strcspn(output, "\n")] = '\0';
        return obi_error_set(err, -EIO, "%s: exit %d: %s", argv[0], code, output);
    }
    return 0;
}

int obi_service_rootless_copy_rootfs(const char *source, const char *rootfs, obi_error **err)
{
    cleanup_dir DIR *dir = opendir(rootfs);
    if (!dir)
        return obi_error_set_errno(err, errno, "open %s", rootfs);
    struct dirent *d;
    while ((d = readdir(dir)))
        if (strcmp(d->d_name, ".") && strcmp(d->d_name, ".."))
            return 0; /* the replica's own copy from an earlier run */
    cleanup_free char *from = obi_path_join(source, ".");
    if (!from)
        return obi_error_oom(err);
    char *argv[] = {"cp",           "-a", "--reflink=auto", "--no-target-directory", from,
                    (char *)rootfs, NULL};
    int r = run_tool(argv, err);
    return r < 0 ? obi_error_prefix(err, r, "copy the image %s into %s", source, rootfs) : 0;
}

int obi_service_rootless_rm_rf(const char *path, obi_error **err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "lstat %s", path);
    /* a plain attempt first: files of the user's own go without a namespace */
    cleanup_error obi_error *plain_err = NULL;
    if (obi_rm_rf(path, &plain_err) == 0)
        return 0;
    char *argv[] = {"unshare", "--map-root-user",   "--map-auto", "rm",
                    "-rf",     "--one-file-system", (char *)path, NULL};
    int r = run_tool(argv, err);
    return r < 0 ? obi_error_prefix(err, r, "remove %s (%s)", path, plain_err->message) : 0;
}
