/*
 * The entry point of the loadable rpc module (ocibuild-rpc.so): one table of the functions the
 * CLI calls, found with dlsym under OBI_RPC_MODULE_SYMBOL. Keeping libgrpc out of the
 * executable keeps it out of the start-up of every command that does not talk gRPC.
 */
#include "ocibuild/rpc.h"
#include "ocibuild/rpc_abi.h"

_Static_assert(sizeof OBI_RPC_MODULE_ABI == OBI_RPC_MODULE_ABI_LEN + 1,
               "scripts/rpc-abi.py and rpc.h agree on the length of the ABI digest");

const obi_rpc_module obi_rpc_module_table = {
    .abi = OBI_RPC_MODULE_ABI,
    .blob_service_open = obi_grpc_blob_service_open,
    .directory_service_open = obi_grpc_directory_service_open,
    .build_service_open = obi_grpc_build_service_open,
    .path_info_store_open = obi_grpc_path_info_store_open,
    .server_new = obi_rpc_server_new,
    .server_listen = obi_rpc_server_listen,
    .server_listen_fd = obi_rpc_server_listen_fd,
    .server_start = obi_rpc_server_start,
    .server_shutdown = obi_rpc_server_shutdown,
    .server_free = obi_rpc_server_free,
};
