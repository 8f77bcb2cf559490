/*
 * The /etc/hosts of a replica, one text for both networks (service_network.h, rootful, and
 * service_rootless_net.h): a header naming the replica, the localhost lines, the deployment's
 * names (the caller's lines: each network knows its own addresses), then the service's
 * extra_hosts (Docker's --add-host, "NAME:ADDRESS" split at the first colon), host-gateway
 * replaced by the address at which the replica reaches the host. The bundle writer puts the
 * text at BUNDLE/hosts and the config binds it read-only over /etc/hosts (service_spec.c).
 * Names were checked by the deployment parser: no whitespace or '#' can split a line.
 */
#ifndef OCIBUILD_SERVICE_HOSTS_H
#define OCIBUILD_SERVICE_HOSTS_H

#include "ocibuild/buf.h"
#include "ocibuild/deployment.h"
#include "ocibuild/error.h"

/* Starts text with the header (id, deployment and, when not NULL, a note in parentheses) and
 * the localhost lines. */
int obi_hosts_begin(obi_buf *text, const char *id, const char *deployment, const char *note,
                    obi_error **err);

/* Appends svc's extra_hosts (host-gateway: gateway, an address) and hands the text over in
 * *out (text is empty afterwards). */
int obi_hosts_finish(obi_buf *text, const obi_service *svc, const char *gateway, char **out,
                     obi_error **err);

#endif
