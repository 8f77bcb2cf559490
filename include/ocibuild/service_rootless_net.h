/*
 * The network of a rootless deployment (docs/service.md, "Rootless services"): bridges and veths
 * need root on the host, so a normal user's deployment gets one network namespace that all its
 * replicas share. A holder process (`unshare --user --map-root-user --map-auto --net`, mapped
 * like every rootless replica) owns a user namespace and a network namespace with lo up; each
 * replica's config joins both by path (/proc/HOLDER/ns/user, /proc/HOLDER/ns/net), so replicas
 * reach each other on 127.0.0.1 and find each other by name through an /etc/hosts that names
 * every service and replica 127.0.0.1 (two replicas cannot listen on the same port).
 * slirp4netns, attached to the holder's namespaces, gives outbound access (tap0, 10.0.2.100,
 * without the host's loopback) and publishes `expose: public` endpoints on the host's
 * 127.0.0.1 through its API socket (add_hostfwd).
 *
 * Both processes are recorded before they run, in DATA/run/rootless-net/DEPLOYMENT/:
 *   holder, slirp   "PID STARTTIME": the process, told apart from a later one with its pid
 *   api.sock        slirp4netns's API socket
 * A child waits for its record to be written before it execs, and exits when its parent died
 * first, so a killed `up` leaves nothing unrecorded; the next `up` or `down` kills what is
 * recorded and stale. Both carry OBI_ROOTLESS_NET_MARKER=DIR in their environment: when DIR is
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

/* Starts (or keeps, when it still lives) the deployment's holder, and starts slirp4netns anew
 * (an earlier one is killed, and its forwards with it). data_dir is absolute. */
int obi_rootless_net_up(const char *data_dir, const obi_deployment *d, obi_rootless_net **out,
                        obi_error **err);
void obi_rootless_net_close(obi_rootless_net *net);

/* Fills *out for replica of svc: the holder's user and network namespace paths and the hosts
 * file naming every service of the deployment 127.0.0.1. */
int obi_rootless_net_attach(obi_rootless_net *net, const obi_service *svc, unsigned replica,
                            obi_replica_network *out, obi_error **err);

/* Publishes d's public TCP endpoints on 127.0.0.1:port through slirp4netns; a port that cannot
 * be forwarded is an error naming the endpoint. */
int obi_rootless_net_publish(obi_rootless_net *net, const obi_deployment *d, obi_error **err);

/* The environment variable that marks a holder or slirp4netns with its state dir. */
#define OBI_ROOTLESS_NET_MARKER "OCIBUILD_ROOTLESS_NET"

/* Kills every process of this user whose marker names a state dir that no longer exists (a
 * deleted data dir's holders and slirp4netns); *killed counts them. Processes that may not be
 * read (another user's) are not looked at. */
int obi_rootless_net_sweep(unsigned *killed, obi_error **err);

/* Kills the recorded slirp4netns and holder of deployment in data_dir and removes the state
 * dir; nothing recorded is not an error. */
int obi_rootless_net_down(const char *data_dir, const char *deployment, obi_error **err);

#endif
