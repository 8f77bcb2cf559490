/*
 * Bundle writing for service replicas: a bundle directory around the config.json of
 * service_spec.h, as `ocibuild service up` (lifecycle.h) runs it and `ocibuild service bundle`
 * writes it: the rootfs, the named and anonymous volume directories below the data dir, and
 * the directories a replica's root must pass through. Under a user namespace (docs/service.md,
 * "User namespaces") the overlay's lower layer is an idmapped view of the image (idmap.h),
 * volumes belong to the replica's root, and the directories on the way to the rootfs are 0710
 * with its group. Everything written here is undone by obi_service_bundle_remove (the
 * lifecycle's replica_teardown calls it).
 */
#ifndef OCIBUILD_SERVICE_BUNDLE_H
#define OCIBUILD_SERVICE_BUNDLE_H

#include "ocibuild/deployment.h"
#include "ocibuild/error.h"
#include "ocibuild/idmap.h"
#include "ocibuild/image.h"
#include "ocibuild/service_spec.h"

/* How a bundle's rootfs reaches the source directory. runc refuses a symlinked rootfs ("invalid
 * rootfs: not an absolute path, or a symlink"), so the spec's symlink only suits runtimes that
 * resolve it (crun); the lifecycle uses an overlay with the source as lower layer, so replicas
 * never write into the shared image cache, or for a privileged replica's rootfs directory the
 * directory itself. */
typedef enum obi_bundle_rootfs_mode {
    OBI_BUNDLE_ROOTFS_SYMLINK, /* BUNDLE/rootfs -> source; root.path "rootfs" */
    OBI_BUNDLE_ROOTFS_DIR,     /* BUNDLE/rootfs is an empty directory to mount onto */
    OBI_BUNDLE_ROOTFS_PATH,    /* root.path is the source's absolute path; no BUNDLE/rootfs */
    OBI_BUNDLE_ROOTFS_OVERLAY, /* overlayfs on BUNDLE/rootfs: lower = source (never written),
                                  upper and work in BUNDLE; needs root; undone by
                                  obi_service_bundle_remove */
} obi_bundle_rootfs_mode;

/* Writes a complete bundle: creates bundle_dir (mode 0700; 0710 with the replicas' root group
 * under a user namespace), config.json (atomically) and the rootfs per mode (with rootfs_source
 * NULL: always an empty BUNDLE/rootfs directory). Creates the named and anonymous volume
 * directories of the service (below the data dir, never through a symlink: the directories on
 * the way 0700, the volume itself owned by the replica's root) and checks that bind sources and
 * s3 mount paths exist. Under a user namespace the OVERLAY lower layer is an idmapped view of
 * the source (its ids shifted into the replicas' range, the source unchanged), and the rootfs
 * must be reachable by the replica's root: a directory on the way that it cannot search is an
 * error naming it. Warnings as for obi_service_spec_generate. Writing again over an existing
 * bundle refreshes config.json and keeps an overlay that is already mounted. On failure a
 * partial bundle may remain: the caller removes it with obi_service_bundle_remove. */
int obi_service_bundle_write(const obi_deployment *deployment, const obi_service *svc,
                             const obi_service_spec_options *opts, const char *bundle_dir,
                             const char *rootfs_source, obi_bundle_rootfs_mode mode,
                             char ***warnings, obi_error **err);

/* Removes a bundle written by obi_service_bundle_write: detaches the overlay on BUNDLE/rootfs
 * (and an idmapped lower layer a crash left on BUNDLE/lower) if mounted, then removes the
 * directory (never crossing into another mount). A missing bundle is not an error. */
int obi_service_bundle_remove(const char *bundle_dir, obi_error **err);

/* Makes path (an existing directory that this process owns) one a replica's root passes
 * through on its way to a rootfs: group ids->gid, mode 0710 (the owner stays); nobody else
 * gets in. */
int obi_service_replica_dir(const char *path, const obi_idmap *ids, obi_error **err);

#endif
