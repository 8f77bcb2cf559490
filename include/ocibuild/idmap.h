/*
 * Idmapped mounts (Linux >= 5.12; overlayfs takes them as layers from 5.19): a view of a
 * directory tree in which every on-disk id N in 0..count-1 appears as host id base + N, without
 * touching a file. Service replicas run in a user namespace whose root is an unprivileged host
 * range (docs/service.md, "User namespaces"); their image cache entry is unpacked once with the
 * image's own ids and shown to each replica through such a view. Needs root (CAP_SYS_ADMIN for
 * the mount, CAP_SETUID/CAP_SETGID for the namespace's maps) and a filesystem that supports
 * idmapping (ext4, xfs, btrfs, tmpfs >= 6.3, ...); errors say which.
 */
#ifndef OCIBUILD_IDMAP_H
#define OCIBUILD_IDMAP_H

#include <stdint.h>
#include <sys/types.h>

#include "ocibuild/error.h"

/* A shift: container (on-disk) ids 0..count-1 <-> host ids uid..uid+count-1 (gid likewise). */
typedef struct obi_idmap {
    uid_t uid;
    gid_t gid;
    uint32_t count;
} obi_idmap;

/* A user namespace mapped as *map, open for mount_setattr(MOUNT_ATTR_IDMAP) or setns: *fd_out
 * (O_CLOEXEC; the caller closes it). Made by a short-lived child that the call reaps. */
int obi_idmap_userns_open(const obi_idmap *map, int *fd_out, obi_error **err);

/* Attaches an idmapped clone of the directory source (not its submounts) at target, an
 * existing directory: on-disk id N below source appears as map->uid + N at target. Undo with
 * umount2(target, MNT_DETACH). */
int obi_idmap_bind(const char *source, const char *target, const obi_idmap *map, obi_error **err);

#endif
