/*
 * tvix.build.v1.BuildService served from an obi_build_service: DoBuild decodes and validates
 * the BuildRequest (INVALID_ARGUMENT with the validation message), runs it on the build worker
 * pool and replies with the Build. A failed build ends in ABORTED whose message carries the exit
 * code and log tail (docs/rpc.md lists every mapping).
 */
#include <errno.h>
#include <stdlib.h>

#include "ocibuild/build_service.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/request.h"
#include "rpc_internal.h"

static int build_do_build(obi_rpc_call *call, void *ctx, obi_error **err)
{
    obi_build_service *builds = ctx;
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    int r = obi_rpc_call_recv(call, &data, &len, err);
    if (r <= 0)
        return r < 0 ? r : obi_error_set(err, -EINVAL, "BuildRequest: missing");
    cleanup_build_request obi_build_request *req = NULL;
    r = obi_build_request_decode_pb(data, len, &req, err);
    if (r < 0)
        return obi_error_prefix(err, -EINVAL, "BuildRequest");
    r = obi_build_request_validate(req, err);
    if (r < 0)
        return r;
    cleanup_build obi_build *build = NULL;
    r = obi_build_service_do_build(builds, req, &build, err);
    if (r < 0)
        return r;
    uint8_t *out = NULL;
    size_t out_len = 0;
    r = obi_build_encode_pb(build, &out, &out_len, err);
    if (r < 0)
        return r;
    return obi_rpc_call_send_owned(call, out, out_len, err);
}

const obi_rpc_method obi_rpc_build_methods[] = {
    {"/tvix.build.v1.BuildService/DoBuild", OBI_RPC_POOL_BUILD, build_do_build},
};
const size_t obi_rpc_n_build_methods =
    sizeof obi_rpc_build_methods / sizeof obi_rpc_build_methods[0];
