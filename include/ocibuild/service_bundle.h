/*
 * Bundle writing for service replicas: a bundle directory around the config.json of
 * service_spec.h, as `ocibuild service up` (lifecycle.h) runs it and `ocibuild service bundle`
 * writes it: the rootfs (from the one resolution of a service's image below), the named and
 * anonymous volume directories below the data dir, and the directories a replica's root must
 * pass through. Under a user namespace (docs/service.md, "User namespaces") the overlay's lower
 * layer is an idmapped view of the image (idmap.h), volumes belong to the replica's root, and
 * the directories on the way to the rootfs are 0710 with its group. Everything written here is
 * undone by obi_service_bundle_remove (the lifecycle's replica_teardown calls it).
 */
#ifndef OCIBUILD_SERVICE_BUNDLE_H
#define OCIBUILD_SERVICE_BUNDLE_H

#include "ocibuild/deployment.h"
#include "ocibuild/error.h"
#include "ocibuild/idmap.h"
#include "ocibuild/image.h"
#include "ocibuild/registry.h"
#include "ocibuild/service_spec.h"

/* How a bundle's rootfs reaches the source directory. runc refuses a symlinked rootfs ("invalid
 * rootfs: not an absolute path, or a symlink"), so the spec's symlink only suits runtimes that
 * resolve it (crun); the lifecycle uses the mode obi_service_source_open picks: an overlay with
 * the source as lower layer, so replicas never write into the shared image cache, or for a
 * privileged replica's rootfs directory the directory itself. */
typedef enum obi_bundle_rootfs_mode {
    OBI_BUNDLE_ROOTFS_SYMLINK, /* BUNDLE/rootfs -> source; root.path "rootfs" */
    OBI_BUNDLE_ROOTFS_DIR,     /* BUNDLE/rootfs is an empty directory to mount onto */
    OBI_BUNDLE_ROOTFS_PATH,    /* root.path is the source's absolute path; no BUNDLE/rootfs */
    OBI_BUNDLE_ROOTFS_OVERLAY, /* overlayfs on BUNDLE/rootfs: lower = source (never written),
                                  upper and work in BUNDLE; needs root; undone by
                                  obi_service_bundle_remove */
    OBI_BUNDLE_ROOTFS_COPY,    /* BUNDLE/rootfs is a private copy of the source, made once
                                  (rootless services: service_rootless.h) */
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

/* What the bundles of one service are made from: for `image: {name: oci:PATH[:TAG]}` and
 * registry images (registry.h, pulled into DATA_DIR/registry first) the image,
 * verified and unpacked into DATA_DIR/images (image.h), for `image: {rootfs: DIR}` that
 * directory, else nothing (an empty rootfs); and the rootfs mode `service up` uses for it. The
 * one image resolution of `service spec`, `service bundle` and `service up`. */
typedef struct obi_service_source {
    obi_image *image;            /* the unpacked image and its config; NULL without an OCI image */
    const char *rootfs;          /* image->rootfs, the service's rootfs directory, or NULL */
    obi_bundle_rootfs_mode mode; /* OVERLAY for images, and for rootfs directories under a user
                                    namespace (their ids shifted, the directory never written);
                                    PATH for a privileged service's rootfs directory; DIR when
                                    there is nothing */
} obi_service_source;

/* Resolves svc's image (errors prefixed with "services.<name>.image"), pulling a registry
 * image with registry's options (NULL: the defaults); *out is set on success and released
 * with obi_service_source_close. */
int obi_service_source_open(const obi_service *svc, const char *data_dir,
                            const obi_registry_options *registry, obi_service_source *out,
                            obi_error **err);
void obi_service_source_close(obi_service_source *src);
/* Points opts->image and opts->rootfs (user name lookups) at src, which must outlive opts. */
void obi_service_source_spec_options(const obi_service_source *src, obi_service_spec_options *opts);

#endif
