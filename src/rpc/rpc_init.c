/*
 * Makes the gRPC clients reachable by URL: registers grpc+unix, grpc+http and grpc+https with the
 * store opener (castore), the build service opener (builder) and the path-info store opener
 * (nix), which cannot depend on this layer.
 */
#include <pthread.h>

#include "ocibuild/rpc.h"

static const char *const SCHEMES[] = {OBI_RPC_SCHEME_UNIX, OBI_RPC_SCHEME_HTTP,
                                      OBI_RPC_SCHEME_HTTPS};

static int init_result;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void register_schemes(void)
{
    for (size_t i = 0; i < sizeof SCHEMES / sizeof SCHEMES[0] && init_result >= 0; i++) {
        init_result = obi_store_register_scheme(SCHEMES[i], obi_grpc_blob_service_open,
                                                obi_grpc_directory_service_open);
        if (init_result >= 0)
            init_result =
                obi_build_service_register_scheme(SCHEMES[i], obi_grpc_build_service_open);
        if (init_result >= 0)
            init_result =
                obi_nix_path_info_register_scheme(SCHEMES[i], obi_grpc_path_info_store_open);
    }
}

int obi_rpc_init(obi_error **err)
{
    pthread_once(&init_once, register_schemes);
    if (init_result < 0)
        return obi_error_set_errno(err, -init_result, "register the gRPC URL schemes");
    return 0;
}
