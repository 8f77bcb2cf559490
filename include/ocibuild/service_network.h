/*
 * A network per deployment (docs/service.md, "Networks"): the replicas of one deployment share
 * a Linux bridge; each replica gets a network namespace of its own (a bind-mounted nsfs in
 * /run/netns, made by iproute2's `ip netns add`) with one end of a veth pair as eth0 and the
 * other end in the bridge, and an address from a /24 of the deployment's own, carved out of a
 * private pool (10.231.0.0/16, or $OCIBUILD_SERVICE_SUBNETS) so that two deployments never
 * share one. Replicas find each other by name through an /etc/hosts that the bundle writer puts
 * beneath the bundle: `<service>`, `<service>-<n>` and the container id `<service>-rep-<n>`.
 * Endpoints with `expose: public` are published on the host by a small TCP proxy, one process
 * per deployment (obi-proxy), that connects to the service's replicas in turn.
 *
 * Everything on the host is recorded before it is made, in a state dir per deployment below
 * /run/ocibuild/networks (tmpfs: gone after a reboot, like the namespaces themselves):
 *   <key>/owner      "DATA_DIR\nDEPLOYMENT\n": whose network it is (the sweep asks whether
 *                    DATA_DIR/services/DEPLOYMENT still exists)
 *   <key>/subnet     the index of the deployment's /24 in the pool
 *   <key>/addresses  "ID ADDRESS SERVICE REPLICA" lines, sticky across `up`s
 *   <key>/proxy.lock held by the proxy and its connection processes while they live
 *   <key>/proxy.pid  the proxy's pid (its process group)
 * <key> is 12 hex digits of a hash of (data dir, deployment), so deployments of the same name
 * in two data dirs never meet; the bridge is `obr<key>`, a replica's veth `obv<hash>`, its
 * namespace `obi-<key>-<id>`. One flock (/run/ocibuild/networks/.lock) orders subnet
 * allocation, teardown and the sweep across processes. Needs root (CAP_NET_ADMIN) and `ip`.
 */
#ifndef OCIBUILD_SERVICE_NETWORK_H
#define OCIBUILD_SERVICE_NETWORK_H

#include <stdbool.h>

#include "ocibuild/deployment.h"
#include "ocibuild/error.h"

typedef struct obi_service_network obi_service_network;

/* What a replica's bundle needs of the network (obi_service_network_attach). */
typedef struct obi_replica_network {
    char *netns_path;  /* /run/netns/obi-<key>-<id>: linux.namespaces' network path */
    char *hosts;       /* the replica's /etc/hosts */
    char *userns_path; /* rootless (service_rootless_net.h): the holder's user namespace */
} obi_replica_network;

void obi_replica_network_clear(obi_replica_network *rn);

/* Whether replicas of svc get a network of the deployment's (every service without
 * host_network). */
bool obi_service_uses_network(const obi_service *svc);
/* Whether any service of d does. */
bool obi_deployment_uses_network(const obi_deployment *d);

/* Opens the network state of deployment in data_dir (absolute); nothing is made on the host.
 * exists (optional) says whether a state dir was there. */
int obi_service_network_open(const char *data_dir, const char *deployment,
                             obi_service_network **out, bool *exists, obi_error **err);
void obi_service_network_close(obi_service_network *net);

/* Allocates the deployment's /24 (once: a free one of the pool that no host interface's
 * address falls in), makes the bridge and gives every replica of d that uses the network an
 * address (kept when it has one). */
int obi_service_network_prepare(obi_service_network *net, const obi_deployment *d, obi_error **err);

/* Makes replica's namespace and veth pair (made again when a crash left them) and fills *out.
 * prepare must have given it an address. */
int obi_service_network_attach(obi_service_network *net, const obi_service *svc, unsigned replica,
                               obi_replica_network *out, obi_error **err);

/* Removes the namespace and veth pair of container id (missing ones are not an error). */
int obi_service_network_detach(obi_service_network *net, const char *id, obi_error **err);

typedef void (*obi_network_report_fn)(const char *message, void *ctx);

/* (Re)starts the deployment's proxy for d's public endpoints, bound to $OCIBUILD_PUBLISH_ADDRESS
 * (default 0.0.0.0), and its port_mappings (TCP; host_ip or that address; host_port 0: a free
 * port, reported): the old proxy is stopped first; with nothing to publish none runs. A port
 * that cannot be bound (taken, or host_ip not the host's) is an error naming the key. */
int obi_service_network_publish(obi_service_network *net, const obi_deployment *d,
                                obi_network_report_fn report, void *report_ctx, obi_error **err);

/* Removes everything: the proxy, every replica's namespace and veth, the bridge, the state
 * dir. Continues past errors and returns the first. */
int obi_service_network_teardown(obi_service_network *net, obi_error **err);

/* The crash sweep: tears down the networks whose deployment is gone (its DATA/services/<name>
 * no longer exists: a crashed `down`, a deleted data dir) and namespaces and bridges of ours
 * that have no state dir at all. *swept (optional) counts the networks removed; report (may be
 * NULL) hears about each. */
int obi_service_network_sweep(obi_network_report_fn report, void *report_ctx, unsigned *swept,
                              obi_error **err);

#endif
