/*
 * A replica's /etc/hosts text (include/ocibuild/service_hosts.h): the part both service
 * networks share, so that the rootful bridge and the rootless slirp4netns namespace write the
 * same header, localhost lines and extra_hosts.
 */
#include <errno.h>
#include <string.h>

#include "ocibuild/service_hosts.h"

int obi_hosts_begin(obi_buf *text, const char *id, const char *deployment, const char *note,
                    obi_error **err)
{
    if (obi_buf_appendf(text, "# written by ocibuild for %s of deployment %s%s%s%s\n", id,
                        deployment, note ? " (" : "", note ? note : "", note ? ")" : "") < 0 ||
        obi_buf_append_str(text, "127.0.0.1\tlocalhost\n"
                                 "::1\tlocalhost ip6-localhost ip6-loopback\n") < 0)
        return obi_error_oom(err);
    return 0;
}

int obi_hosts_finish(obi_buf *text, const obi_service *svc, const char *gateway, char **out,
                     obi_error **err)
{
    for (size_t i = 0; svc->extra_hosts && svc->extra_hosts[i]; i++) {
        const char *line = svc->extra_hosts[i];
        const char *colon = strchr(line, ':');
        if (!colon)
            return obi_error_set(err, -EINVAL,
                                 "services.%s.extra_hosts[%zu]: \"%s\" is not NAME:IP", svc->name,
                                 i, line);
        const char *address = colon + 1;
        if (!strcmp(address, "host-gateway"))
            address = gateway;
        if (i == 0 && obi_buf_append_str(text, "# extra_hosts\n") < 0)
            return obi_error_oom(err);
        if (obi_buf_appendf(text, "%s\t%.*s\n", address, (int)(colon - line), line) < 0)
            return obi_error_oom(err);
    }
    *out = obi_buf_steal(text);
    return *out ? 0 : obi_error_oom(err);
}
