/*
 * The entry point of ocibuild-rpc-h2.so, the unix-socket client module: the same table as
 * ocibuild-rpc.so's (rpc_module.c), with the clients on h2_client.c's transport and no server.
 * The CLI loads it for grpc+unix:// addresses (src/cli/cli_rpc.c), so a CLI call that talks to a
 * local daemon maps libnghttp2 instead of libgrpc's ~50 libraries (docs/rpc.md "Client
 * transports").
 */
#include "ocibuild/rpc.h"
#include "ocibuild/rpc_abi.h"

const obi_rpc_module obi_rpc_module_table = {
    .abi = OBI_RPC_MODULE_ABI,
    .blob_service_open = obi_grpc_blob_service_open,
    .directory_service_open = obi_grpc_directory_service_open,
    .build_service_open = obi_grpc_build_service_open,
    .path_info_store_open = obi_grpc_path_info_store_open,
};
