/*
 * tvix.build.v1.BuildService and snix.build.v1.BuildService served from an obi_build_service:
 * DoBuild decodes and validates the BuildRequest (the same message on both generations;
 * INVALID_ARGUMENT with the validation message), runs it on the build worker pool and replies in
 * the shape of the generation it was called as: a tvix.build.v1.Build, or a
 * snix.build.v1.BuildResponse (snix_build.h). A failed build ends in ABORTED whose message carries
 * the exit code and log tail (docs/rpc.md lists every mapping).
 *
 * The build runs with the call's cancel fd (obi_build_call): when the client cancels,
 * disconnects or passes its deadline, or the server cancels the call (shutdown), the build
 * service kills and deletes the container and gives up the build's slot.
 */
#include <errno.h>
#include <stdlib.h>

#include "ocibuild/build_service.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/request.h"
#include "ocibuild/snix_build.h"
#include "rpc_internal.h"

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
    obi_build_call options = OBI_BUILD_CALL_INIT;
    options.cancel_fd = obi_rpc_call_cancel_fd(call);
    cleanup_build obi_build *build = NULL;
    r = obi_build_service_do_build_call(builds, req, &options, &build, err);
    if (r < 0)
        return r;
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (obi_rpc_call_api(call) == OBI_RPC_API_SNIX)
        r = obi_build_encode_snix_pb(build, &out, &out_len, err);
    else
        r = obi_build_encode_pb(build, &out, &out_len, err);
    if (r < 0)
        return r;
    obi_rpc_call_queue(call, out, out_len);
    return OBI_RPC_DONE;
}

const obi_rpc_method obi_rpc_build_methods[] = {
    {"build.v1.BuildService/DoBuild", OBI_RPC_POOL_BUILD, false, build_do_build, NULL, NULL},
};
const size_t obi_rpc_n_build_methods =
    sizeof obi_rpc_build_methods / sizeof obi_rpc_build_methods[0];
