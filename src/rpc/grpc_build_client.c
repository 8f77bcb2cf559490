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
    obi_rpc_channel *channel;
    obi_rpc_api api;
} grpc_build_service;

/* Completes a received result: one output per requested one; snix outputs are anonymous, so
 * they are named, as the tvix ones, by their output path's basename; a snix result carries no
 * request, so the one sent is copied in (callers see the same obi_build either way). */
static int complete_result(const char *path, const obi_build_request *req, obi_build *build,
                           obi_error **err)
{
    if (build->n_outputs != req->n_outputs)
        return obi_error_set(err, -EBADMSG, "%s: the server sent %zu outputs for %zu requested",
                             path, build->n_outputs, req->n_outputs);
    for (size_t i = 0; i < build->n_outputs; i++) {
        const char *name = strrchr(req->outputs[i], '/');
        name = name ? name + 1 : req->outputs[i];
        if (build->outputs[i].name.len == 0 &&
            obi_node_set_name(&build->outputs[i], name, strlen(name)) < 0)
            return obi_error_oom(err);
    }
    if (!build->request)
        return obi_build_request_copy(req, &build->request, err);
    return 0;
}

/* The unary reply in the generation's shape (a tvix Build or a snix BuildResponse). */
static int decode_reply(obi_rpc_api api, const obi_build_request *req, const uint8_t *data,
                        size_t len, obi_build **out, obi_error **err)
{
    const char *path = METHOD_DO_BUILD[api];
    cleanup_build obi_build *build = NULL;
    int r = api == OBI_RPC_API_SNIX ? obi_build_decode_snix_pb(data, len, &build, err)
                                    : obi_build_decode_pb(data, len, &build, err);
    if (r < 0)
        return obi_error_prefix(err, -EBADMSG, "%s: the server's reply", path);
    r = complete_result(path, req, build, err);
    if (r < 0)
        return r;
    *out = steal_pointer(&build);
    return 0;
}

/* The unary DoBuild: one reply. */
static int do_build_unary(grpc_build_service *svc, const obi_build_request *req,
                          obi_rpc_client_call *call, obi_build **out, obi_error **err)
{
    cleanup_free uint8_t *resp = NULL;
    size_t resp_len = 0;
    int r = obi_rpc_client_call_recv_one(call, &resp, &resp_len, err);
    if (r < 0)
        return r;
    return decode_reply(svc->api, req, resp, resp_len, out, err);
}

/* Handles one BuildEvent: 1 when the stream is over (*out set, or the build failed), else 0. */
static int on_event(grpc_build_service *svc, const obi_build_request *req,
                    const obi_build_call *options, const uint8_t *data, size_t len, obi_build **out,
                    obi_error **err)
{
    const char *path = METHOD_DO_BUILD[svc->api];
    cleanup_build_event obi_build_event *event = NULL;
    int r = obi_build_event_decode(data, len, &event, err);
    if (r < 0)
        return obi_error_prefix(err, -EBADMSG, "%s: the server's event", path);
    switch (event->kind) {
    case OBI_BUILD_EVENT_LOG:
        options->on_output(event->data, event->len, options->output_ctx);
        return 0;
    case OBI_BUILD_EVENT_COMPLETED:
        r = complete_result(path, req, event->build, err);
        if (r < 0)
            return r;
        *out = steal_pointer(&event->build);
        return 1;
    case OBI_BUILD_EVENT_FAILED:
        if (event->has_exit_code && options->exit_code)
            *options->exit_code = event->exit_code;
        return obi_error_set(err, OBI_EBUILD_FAILED, "%s", event->message);
    default: /* started, refscan (completed repeats the needles) */
        return 0;
    }
}

/* The streamed DoBuild (docs/rpc.md "Build events"): the log goes to options->on_output as the
 * remote build writes it. A daemon that does not know the metadata answers the unary reply,
 * without the reply metadata that announces events, and is read as such. */
static int do_build_events(grpc_build_service *svc, const obi_build_request *req,
                           const obi_build_call *options, obi_rpc_client_call *call,
                           obi_build **out, obi_error **err)
{
    const char *path = METHOD_DO_BUILD[svc->api];
    int r = 0;
    cleanup_build obi_build *build = NULL;
    bool first = true;
    while (r >= 0) {
        cleanup_free uint8_t *data = NULL;
        size_t len = 0;
        r = obi_rpc_client_call_recv(call, &data, &len, err);
        if (r <= 0)
            break;
        if (first && !obi_rpc_client_call_reply_metadata_is(call, OBI_RPC_BUILD_EVENTS_KEY, "1"))
            r = decode_reply(svc->api, req, data, len, &build, err);
        else if (build)
            r = obi_error_set(err, -EBADMSG, "%s: an event after completed", path);
        else
            r = on_event(svc, req, options, data, len, &build, err);
        first = false;
    }
    if (r < 0)
        return r;
    if (!build)
        return obi_error_set(err, -EPROTO, "%s: the stream ended without a result", path);
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
    bool events = options && options->on_output;
    /* "0" too: a daemon with --snix-build-events would otherwise stream to a snix caller */
    obi_rpc_metadata ask = {.key = OBI_RPC_BUILD_EVENTS_KEY, .value = events ? "1" : "0"};
    cleanup_rpc_client_call obi_rpc_client_call *call = NULL;
    r = obi_rpc_client_call_start_metadata(svc->channel, METHOD_DO_BUILD[svc->api], 0, &ask, 1,
                                           &call, err);
    if (r < 0) {
        free(data);
        return r;
    }
    /* Cancelling our build cancels the call: the daemon then stops the remote build. */
    if (options && options->cancel_fd >= 0)
        obi_rpc_client_call_watch_cancel(call, options->cancel_fd);
    r = obi_rpc_client_call_send_request(call, data, len, err);
    if (r < 0)
        return r;
    return events ? do_build_events(svc, req, options, call, out, err)
                  : do_build_unary(svc, req, call, out, err);
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
