/*
 * Services for a normal user (docs/service.md, "Rootless services"): the same `service up|ps|
 * logs|down` without root and without a flag. What differs when ocibuild runs without root:
 *   - the runtime's state (runc --root) is $XDG_RUNTIME_DIR/ocibuild/runc, or DATA/run/runc
 *     when that is not set, never the root-only /run/runc;
 *   - a replica's user namespace maps its root to the invoking user and ids 1.. to the user's
 *     range in /etc/subuid and /etc/subgid (as `unshare -r --map-auto`; runc writes the maps
 *     with newuidmap/newgidmap); without a range, to the user alone;
 *   - the rootfs is a private copy of the image in the bundle (an overlay mount needs root on
 *     the host), made once per replica and kept across restarts like an overlay's upper layer;
 *   - files a replica made with ids of the range are removed inside such a namespace;
 *   - the deployment's bridge is inside the user and network namespaces of a holder process
 *     (bridges and veths need root on the host, not there), each replica in a network
 *     namespace of its own on it (service_rootless_net.h), or in the host's with host_network.
 */
#ifndef OCIBUILD_SERVICE_ROOTLESS_H
#define OCIBUILD_SERVICE_ROOTLESS_H

#include <jansson.h>
#include <stdbool.h>

#include "ocibuild/deployment.h"
#include "ocibuild/error.h"
#include "ocibuild/idmap.h"

/* Whether services run rootless: this process is not root. */
bool obi_service_rootless(void);

/* The runtime's state root for a rootless user (see above; made 0700). Caller frees. */
int obi_service_rootless_runtime_root(const char *data_dir, char **out, obi_error **err);

/* The ids the bundle writer gives a rootless replica's root: the invoking user, count 1 (the
 * rest of the map is added by obi_service_rootless_config). */
void obi_service_rootless_ids(obi_idmap *out);

/* Rewrites config's uid and gid maps for a rootless replica: container 0 -> the invoking user,
 * 1.. -> its subordinate range (when it has one). userns_path (may be NULL): the user namespace
 * to join (the deployment network's holder, mapped the same; runc wants the maps anyway). */
int obi_service_rootless_config(json_t *config, const char *userns_path, obi_error **err);

/* Copies the directory source into the empty directory rootfs (cp -a); a rootfs with entries
 * in it is kept (the replica's earlier writes). */
int obi_service_rootless_copy_rootfs(const char *source, const char *rootfs, obi_error **err);

/* rm -rf path as the root of a namespace mapped like a replica's, where files of the user's
 * subordinate ids can be removed. A missing path is not an error. */
int obi_service_rootless_rm_rf(const char *path, obi_error **err);

#endif
