/*
 * obi_build_service over gRPC (tvix.build.v1 or, with ?api=snix, snix.build.v1
 * BuildService/DoBuild): the request goes out in its protobuf form, the reply (a tvix Build or a
 * snix BuildResponse) comes back decoded. The remote status becomes the errno-style
 * code build_service.h promises (INVALID_ARGUMENT -> -EINVAL, ABORTED -> OBI_EBUILD_FAILED,
 * DEADLINE_EXCEEDED -> -ETIMEDOUT, UNIMPLEMENTED -> -ENOTSUP) with the server's message. The
 * build's own cancel fd (obi_build_call) cancels the call, which cancels the remote build.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/request.h"
#include "ocibuild/rpc.h"
#include "ocibuild/snix_build.h"
#include "rpc_internal.h"

/* The method path of each generation (obi_rpc_api, from the URL's ?api=). */
static const char *const METHOD_DO_BUILD[] = {"/tvix.build.v1.BuildService/DoBuild",
                                              "/snix.build.v1.BuildService/DoBuild"};

typedef struct grpc_build_service {
    obi_build_service base;
    grpc_channel *channel;
    obi_rpc_api api;
} grpc_build_service;

/* The reply in the generation's shape: a tvix Build carries the request, a snix BuildResponse
 * does not, so the request sent is copied in (callers see the same obi_build either way). */
static int decode_reply(const grpc_build_service *svc, const obi_build_request *req,
                        const uint8_t *data, size_t len, obi_build **out, obi_error **err)
{
    const char *path = METHOD_DO_BUILD[svc->api];
    cleanup_build obi_build *build = NULL;
    int r = svc->api == OBI_RPC_API_SNIX ? obi_build_decode_snix_pb(data, len, &build, err)
                                         : obi_build_decode_pb(data, len, &build, err);
    if (r < 0)
        return obi_error_prefix(err, -EBADMSG, "%s: the server's reply", path);
    if (build->n_outputs != req->n_outputs)
        return obi_error_set(err, -EBADMSG, "%s: the server sent %zu outputs for %zu requested",
                             path, build->n_outputs, req->n_outputs);
    /* snix outputs are anonymous: named, as the tvix ones, by their output path's basename */
    for (size_t i = 0; i < build->n_outputs; i++) {
        const char *name = strrchr(req->outputs[i], '/');
        name = name ? name + 1 : req->outputs[i];
        if (build->outputs[i].name.len == 0 &&
            obi_node_set_name(&build->outputs[i], name, strlen(name)) < 0)
            return obi_error_oom(err);
    }
    if (!build->request && (r = obi_build_request_copy(req, &build->request, err)) < 0)
        return r;
    *out = steal_pointer(&build);
    return 0;
}

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
    r = obi_rpc_client_call_start(svc->channel, METHOD_DO_BUILD[svc->api], &call, err);
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
    return decode_reply(svc, req, resp, resp_len, out, err);
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
    int r = obi_rpc_url_api(url, &svc->api, err);
    if (r >= 0)
        r = obi_rpc_channel_open(url, &svc->channel, err);
    if (r < 0) {
        free(svc);
        return r;
    }
    *out = &svc->base;
    return 0;
}
