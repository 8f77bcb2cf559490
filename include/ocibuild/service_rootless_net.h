/*
 * The network of a rootless deployment (docs/service.md, "Rootless services"): bridges and veths
 * need root on the host, but not inside a user namespace the user made. A holder process
 * (`unshare --user --map-root-user --map-auto --net`, mapped like every rootless replica) owns a
 * user namespace and a network namespace with a bridge br0 (10.0.2.100/24). slirp4netns,
 * attached to the holder's namespaces, puts its tap0 into the bridge, so slirp4netns's network
 * 10.0.2.0/24 (gateway .2, DNS .3) reaches every replica. Each replica gets a network namespace
 * of its own, owned by the holder's user namespace (a sleeper, `nsenter --user` into the holder
 * then `unshare --net`), a veth pair from br0 to its eth0, an address 10.0.2.101.. (sticky across
 * `up`s) and the default route through slirp4netns; its config joins the holder's user
 * namespace and its own network namespace by path. Replicas find each other by name through
 * an /etc/hosts with every replica's address, so two replicas may listen on the same port.
 * `expose: public` endpoints are published on the host's 127.0.0.1 through slirp4netns's API
 * socket (add_hostfwd to the service's first replica).
 *
 * The processes are recorded before they run, in DATA/run/rootless-net/DEPLOYMENT/:
 *   holder, slirp   "PID STARTTIME": the process, told apart from a later one with its pid
 *   net-ID          the same for replica ID's sleeper
 *   addresses       "ID HOST" lines: the replicas' addresses (10.0.2.HOST)
 *   api.sock        slirp4netns's API socket
 * A child waits for its record to be written before it execs, and exits when its parent died
 * first, so a killed `up` leaves nothing unrecorded; the next `up` or `down` kills what is
 * recorded and stale. All carry OBI_ROOTLESS_NET_MARKER=DIR in their environment: when DIR is
 * gone (the data dir was deleted under them), any later `service` command of the user finds them
 * by it and kills them (obi_rootless_net_sweep). Needs unshare (util-linux >= 2.38), ip,
 * slirp4netns and /dev/net/tun that the user may open.
 */
#ifndef OCIBUILD_SERVICE_ROOTLESS_NET_H
#define OCIBUILD_SERVICE_ROOTLESS_NET_H

#include "ocibuild/deployment.h"
#include "ocibuild/error.h"
#include "ocibuild/service_network.h"

typedef struct obi_rootless_net obi_rootless_net;

/* Starts (or keeps, when it still lives) the deployment's holder, starts slirp4netns anew (an
 * earlier one is killed, and its forwards with it) and puts its tap0 in the bridge, and gives
 * every replica of d an address. data_dir is absolute. */
int obi_rootless_net_up(const char *data_dir, const obi_deployment *d, obi_rootless_net **out,
                        obi_error **err);
void obi_rootless_net_close(obi_rootless_net *net);

/* Makes the network namespace of replica of svc anew (an earlier one is killed) and fills *out:
 * the holder's user namespace and the replica's network namespace paths, and the hosts file
 * naming every replica of the deployment with its address. */
int obi_rootless_net_attach(obi_rootless_net *net, const obi_service *svc, unsigned replica,
                            obi_replica_network *out, obi_error **err);

/* Kills the network namespace of replica id (its sleeper; the veth pair goes with it); none
 * recorded is not an error. */
int obi_rootless_net_detach(const char *data_dir, const char *deployment, const char *id,
                            obi_error **err);

/* Publishes d's public TCP endpoints on 127.0.0.1:port through slirp4netns; a port that cannot
 * be forwarded is an error naming the endpoint. */
int obi_rootless_net_publish(obi_rootless_net *net, const obi_deployment *d, obi_error **err);

/* The environment variable that marks a holder or slirp4netns with its state dir. */
#define OBI_ROOTLESS_NET_MARKER "OCIBUILD_ROOTLESS_NET"

/* Kills every process of this user whose marker names a state dir that no longer exists (a
 * deleted data dir's holders and slirp4netns); *killed counts them. Processes that may not be
 * read (another user's) are not looked at. */
int obi_rootless_net_sweep(unsigned *killed, obi_error **err);

/* Kills the recorded slirp4netns, replica namespaces and holder of deployment in data_dir and
 * removes the state dir; nothing recorded is not an error. */
int obi_rootless_net_down(const char *data_dir, const char *deployment, obi_error **err);

#endif
