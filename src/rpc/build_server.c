/*
 * tvix.build.v1.BuildService and snix.build.v1.BuildService served from an obi_build_service:
 * DoBuild decodes and validates the BuildRequest (the same message on both generations;
 * INVALID_ARGUMENT with the validation message), runs it on the build worker pool and replies in
 * the shape of the generation it was called as: a tvix.build.v1.Build, or a
 * snix.build.v1.BuildResponse (snix_build.h). A client that sends the metadata
 * `ocibuild-build-events: 1` gets the streamed DoBuild of snix's build-streaming design
 * instead (and so does every snix.build.v1 client that does not send `0`, when the daemon runs
 * with --snix-build-events, for the build-streaming branch's clients): BuildEvents (started, the
 * log as the build writes it, a refscan result per output, then completed or failed), pushed from
 * the build's thread while it runs. A failed build ends in ABORTED whose message carries the exit
 * code and log tail (docs/rpc.md lists every mapping).
 *
 * The build runs with the call's cancel fd (obi_build_call): when the client cancels,
 * disconnects or passes its deadline, or the server cancels the call (shutdown), the build
 * service kills and deletes the container and gives up the build's slot.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "ocibuild/build_service.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/request.h"
#include "ocibuild/snix_build.h"
#include "rpc_internal.h"

/* The reply of the unary DoBuild, in the shape of the generation called. */
static int queue_reply(obi_rpc_call *call, const obi_build *build, obi_error **err)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    int r = obi_rpc_call_api(call) == OBI_RPC_API_SNIX
                ? obi_build_encode_snix_pb(build, &out, &out_len, err)
                : obi_build_encode_pb(build, &out, &out_len, err);
    if (r < 0)
        return r;
    obi_rpc_call_queue(call, out, out_len);
    return OBI_RPC_DONE;
}

/* ---- the streamed DoBuild (docs/rpc.md "Build events") ---- */

/* Sends log pieces as the build writes them; called from the thread running the build. A piece
 * that cannot be sent (the client went away) is dropped: the call's cancel fd stops the build. */
static void push_log(const uint8_t *data, size_t len, void *ctx)
{
    obi_rpc_call *call = ctx;
    uint8_t *event = NULL;
    size_t event_len = 0;
    cleanup_error obi_error *err = NULL;
    if (obi_build_event_log_encode(OBI_BUILD_LOG_UNSPECIFIED, data, len, &event, &event_len,
                                   &err) == 0)
        (void)obi_rpc_call_push(call, event, event_len, &err);
}

static int push_started(obi_rpc_call *call, obi_error **err)
{
    uint8_t id[16];
    char text[2 * sizeof id + 1];
    if (getrandom(id, sizeof id, 0) != (ssize_t)sizeof id)
        return obi_error_set_errno(err, errno, "build id");
    for (size_t i = 0; i < sizeof id; i++)
        snprintf(text + 2 * i, 3, "%02x", id[i]);
    uint8_t *event = NULL;
    size_t len = 0;
    int r = obi_build_event_started_encode(text, &event, &len, err);
    return r < 0 ? r : obi_rpc_call_push(call, event, len, err);
}

/* refscan for each output, then completed as the last message. */
static int finish_completed(obi_rpc_call *call, const obi_build *build, obi_error **err)
{
    for (size_t i = 0; i < build->n_outputs; i++) {
        uint8_t *event = NULL;
        size_t len = 0;
        int r = obi_build_event_refscan_encode(
            (uint32_t)i, build->outputs_needles ? &build->outputs_needles[i] : NULL, &event, &len,
            err);
        if (r >= 0)
            r = obi_rpc_call_push(call, event, len, err);
        if (r < 0)
            return r;
    }
    uint8_t *event = NULL;
    size_t len = 0;
    int r = obi_build_event_completed_encode(build, &event, &len, err);
    if (r < 0)
        return r;
    obi_rpc_call_queue(call, event, len);
    return OBI_RPC_DONE;
}

/* A build that ran and failed ends the stream with failed (status OK, as snix's
 * build-streaming server does); anything else (timeout, cancellation, a server fault) ends the
 * call with its status, as the unary DoBuild. */
static int finish_failed(obi_rpc_call *call, int code, int exit_code, obi_error **err)
{
    if (code != OBI_EBUILD_FAILED)
        return code;
    uint8_t *event = NULL;
    size_t len = 0;
    cleanup_error obi_error *failure = steal_pointer(err);
    int r = obi_build_event_failed_encode(failure ? failure->message : "build failed", exit_code,
                                          &event, &len, err);
    if (r < 0)
        return r;
    obi_rpc_call_queue(call, event, len);
    return OBI_RPC_DONE;
}

/* Events or the unary reply: what the client asked for (ocibuild-build-events: 1 or 0), else
 * the daemon's choice for snix.build.v1 callers (--snix-build-events), else unary. */
static bool wants_events(const obi_rpc_call *call)
{
    if (obi_rpc_call_metadata_is(call, OBI_RPC_BUILD_EVENTS_KEY, "1"))
        return true;
    if (obi_rpc_call_metadata_is(call, OBI_RPC_BUILD_EVENTS_KEY, "0"))
        return false;
    return obi_rpc_call_api(call) == OBI_RPC_API_SNIX &&
           obi_rpc_call_server_options(call)->snix_build_events;
}

/* The build, answered as events or unary (wants_events). */
static int run_build(obi_rpc_call *call, const obi_build_request *req, obi_build_service *builds,
                     obi_error **err)
{
    int r;
    bool events = wants_events(call);
    int exit_code = -1;
    obi_build_call options = OBI_BUILD_CALL_INIT;
    options.cancel_fd = obi_rpc_call_cancel_fd(call);
    if (events) {
        options.on_output = push_log;
        options.output_ctx = call;
        options.exit_code = &exit_code;
        /* tells the client the stream is events, not the unary reply of an older daemon */
        obi_rpc_call_set_reply_metadata(call, OBI_RPC_BUILD_EVENTS_KEY, "1");
        r = push_started(call, err);
        if (r < 0)
            return r;
    }
    cleanup_build obi_build *build = NULL;
    r = obi_build_service_do_build_call(builds, req, &options, &build, err);
    if (events)
        return r < 0 ? finish_failed(call, r, exit_code, err) : finish_completed(call, build, err);
    return r < 0 ? r : queue_reply(call, build, err);
}

static int build_do_build(obi_rpc_call *call, void *ctx, obi_rpc_message *message, obi_error **err)
{
    obi_build_service *builds = ctx;
    cleanup_build_request obi_build_request *req = NULL;
    int r = obi_build_request_decode_pb(message->data, message->len, &req, err);
    if (r < 0)
        return obi_error_prefix(err, -EINVAL, "BuildRequest");
    r = obi_build_request_validate(req, err);
    if (r < 0)
        return r;
    const obi_rpc_server_options *server = obi_rpc_call_server_options(call);
    void *hold = NULL;
    if (server->before_build &&
        (r = server->before_build(server->before_build_ctx, req, &hold, err)) < 0)
        return r;
    r = run_build(call, req, builds, err);
    if (server->after_build)
        server->after_build(server->before_build_ctx, hold);
    return r;
}

const obi_rpc_method obi_rpc_build_methods[] = {
    {"build.v1.BuildService/DoBuild", OBI_RPC_POOL_BUILD, false, build_do_build, NULL, NULL},
};
const size_t obi_rpc_n_build_methods =
    sizeof obi_rpc_build_methods / sizeof obi_rpc_build_methods[0];
