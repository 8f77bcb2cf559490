/*
 * obi_build_service over gRPC (tvix.build.v1.BuildService/DoBuild): the request goes out in
 * its protobuf form, the Build comes back decoded. The remote status becomes the errno-style
 * code build_service.h promises (INVALID_ARGUMENT -> -EINVAL, ABORTED -> OBI_EBUILD_FAILED,
 * DEADLINE_EXCEEDED -> -ETIMEDOUT, UNIMPLEMENTED -> -ENOTSUP) with the server's message. The
 * build's own cancel fd (obi_build_call) cancels the call, which cancels the remote build.
 */
#include <errno.h>
#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/request.h"
#include "ocibuild/rpc.h"
#include "rpc_internal.h"

#define METHOD_DO_BUILD "/tvix.build.v1.BuildService/DoBuild"

typedef struct grpc_build_service {
    obi_build_service base;
    grpc_channel *channel;
} grpc_build_service;

static int svc_do_build(obi_build_service *base, const obi_build_request *req,
                        const obi_build_call *options, obi_build **out, obi_error **err)
{
    grpc_build_service *svc = (grpc_build_service *)base;
    uint8_t *data = NULL;
    size_t len = 0;
    int r = obi_build_request_encode_pb(req, &data, &len, err);
    if (r < 0)
        return r;
    cleanup_rpc_client_call obi_rpc_client_call *call = NULL;
    r = obi_rpc_client_call_start(svc->channel, METHOD_DO_BUILD, &call, err);
    if (r < 0) {
        free(data);
        return r;
    }
    /* Cancelling our build cancels the call: the daemon then stops the remote build. */
    if (options && options->cancel_fd >= 0)
        obi_rpc_client_call_watch_cancel(call, options->cancel_fd);
    r = obi_rpc_client_call_send_request(call, data, len, err);
    cleanup_free uint8_t *resp = NULL;
    size_t resp_len = 0;
    if (r >= 0)
        r = obi_rpc_client_call_recv_one(call, &resp, &resp_len, err);
    if (r < 0)
        return r;
    r = obi_build_decode_pb(resp, resp_len, out, err);
    if (r < 0)
        return obi_error_prefix(err, -EBADMSG, "%s: the server's Build", METHOD_DO_BUILD);
    return 0;
}

static void svc_free(obi_build_service *base)
{
    grpc_build_service *svc = (grpc_build_service *)base;
    obi_rpc_channel_close(svc->channel);
    free(svc);
}

static const struct obi_build_service_ops SERVICE_OPS = {
    .do_build = svc_do_build,
    .free = svc_free,
};

int obi_grpc_build_service_open(const obi_url *url, obi_store *store, obi_build_service **out,
                                obi_error **err)
{
    (void)store;
    grpc_build_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_set(err, -ENOMEM, "grpc build service: out of memory");
    svc->base.ops = &SERVICE_OPS;
    int r = obi_rpc_channel_open(url, &svc->channel, err);
    if (r < 0) {
        free(svc);
        return r;
    }
    *out = &svc->base;
    return 0;
}
