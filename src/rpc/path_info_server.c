/*
 * tvix.store.v1.PathInfoService served from an obi_nix_path_info_store (the daemon's
 * --path-info): Get by the 20-byte hash part (NOT_FOUND when unknown), Put (trusted clients
 * only, PERMISSION_DENIED for the others, obi_rpc_call_trusted; INVALID_ARGUMENT for a record
 * that does not check out, has unsorted references or whose node is not in this daemon's
 * castore, so no record ever points at contents nobody can read), and CalculateNAR (the NAR hash
 * and size of a node in the castore), and List: every record, sorted by store path, one message
 * each, read as the client takes them (UNIMPLEMENTED from a store that cannot list). Each method is
 * served under both names, tvix.store.v1 and snix.store.v1 (docs/rpc.md "Generations"). Farm nodes
 * sharing a castore daemon share what is valid through it (docs/farm.md).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/nar.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/node_pb.h"
#include "rpc_internal.h"
#include "rpc_pathinfo.pb-c.h"

static int queue_path_info(obi_rpc_call *call, const obi_nix_path_info *info, obi_error **err)
{
    Tvix__Store__V1__PathInfo *pb = NULL;
    int r = obi_rpc_path_info_to_pb(info, &pb, err);
    if (r < 0)
        return r;
    r = obi_rpc_call_queue_message(call, &pb->base, err);
    obi_rpc_path_info_pb_free(pb);
    return r;
}

static int path_info_get(obi_rpc_call *call, void *ctx, obi_rpc_message *message, obi_error **err)
{
    obi_rpc_path_info_ctx *c = ctx;
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_unpack(&tvix__store__v1__get_path_info_request__descriptor,
                           "GetPathInfoRequest", message, &msg, err);
    if (r < 0)
        return r;
    Tvix__Store__V1__GetPathInfoRequest *req = (Tvix__Store__V1__GetPathInfoRequest *)msg;
    char hash_part[OBI_NIX_HASH_PART_LEN + 1];
    if (req->by_what_case != TVIX__STORE__V1__GET_PATH_INFO_REQUEST__BY_WHAT_BY_OUTPUT_HASH)
        r = obi_error_set(err, -EINVAL, "GetPathInfoRequest.by_output_hash: missing");
    else if (req->by_output_hash.len != 20)
        r = obi_error_set(err, -EINVAL, "GetPathInfoRequest.by_output_hash: %zu bytes, not 20",
                          req->by_output_hash.len);
    else
        obi_nixbase32_encode(req->by_output_hash.data, 20, hash_part);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (r < 0)
        return r;
    hash_part[OBI_NIX_HASH_PART_LEN] = '\0';
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    cleanup_error obi_error *get_err = NULL;
    r = obi_nix_path_info_get_by_hash(c->path_infos, hash_part, &info, &get_err);
    if (r == -ENOENT) /* the backend's message would name its files */
        return obi_error_set(err, -ENOENT, "no store path with hash part %s", hash_part);
    if (r < 0)
        return obi_error_move(err, &get_err);
    if (r >= 0)
        r = queue_path_info(call, info, err);
    return r < 0 ? r : OBI_RPC_DONE;
}

/* The node's contents are in this castore: its blob, or its root directory. */
static int check_node_stored(const obi_rpc_path_info_ctx *c, const obi_node *node, obi_error **err)
{
    if (node->kind == OBI_NODE_SYMLINK)
        return 0;
    cleanup_free char *b3 = obi_digest_to_b3_string(&node->digest);
    if (node->kind == OBI_NODE_FILE) {
        int r = obi_blob_has(c->blobs, &node->digest, err);
        if (r < 0)
            return r;
        return r ? 0
                 : obi_error_set(err, -EINVAL, "PathInfo.node: blob %s is not stored here",
                                 b3 ? b3 : "?");
    }
    cleanup_directory obi_directory *dir = NULL;
    cleanup_error obi_error *get_err = NULL;
    int r = obi_directory_get(c->directories, &node->digest, &dir, &get_err);
    if (r == -ENOENT)
        return obi_error_set(err, -EINVAL, "PathInfo.node: directory %s is not stored here",
                             b3 ? b3 : "?");
    return r < 0 ? obi_error_move(err, &get_err) : 0;
}

static int path_info_put(obi_rpc_call *call, void *ctx, obi_rpc_message *message, obi_error **err)
{
    obi_rpc_path_info_ctx *c = ctx;
    char who[128];
    if (!obi_rpc_call_trusted(call, who, sizeof who))
        return obi_error_set(err, -EPERM,
                             "Put: %s is not a trusted client (a record decides what later "
                             "builds take for its store path; see the daemon's --trusted-user)",
                             who);
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_unpack(&tvix__store__v1__path_info__descriptor, "PathInfo", message, &msg, err);
    if (r < 0)
        return r;
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    r = obi_rpc_path_info_from_pb((Tvix__Store__V1__PathInfo *)msg, &info, err);
    if (r >= 0)
        r = obi_rpc_path_info_check_references((Tvix__Store__V1__PathInfo *)msg, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (r < 0)
        return obi_error_prefix(err, -EINVAL, "Put");
    r = check_node_stored(c, &info->node, err);
    if (r >= 0)
        r = obi_nix_path_info_put(c->path_infos, info, err);
    if (r >= 0)
        r = queue_path_info(call, info, err);
    return r < 0 ? r : OBI_RPC_DONE;
}

static int path_info_calculate_nar(obi_rpc_call *call, void *ctx, obi_rpc_message *message,
                                   obi_error **err)
{
    obi_rpc_path_info_ctx *c = ctx;
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_unpack(&tvix__castore__v1__node__descriptor, "Node", message, &msg, err);
    if (r < 0)
        return r;
    cleanup_node obi_node node = {0};
    r = obi_node_from_pb((Tvix__Castore__V1__Node *)msg, &node, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (r >= 0)
        r = obi_node_validate(&node, err);
    if (r < 0)
        return obi_error_prefix(err, -EINVAL, "CalculateNAR");
    obi_nar_hash hash;
    r = obi_nar_hash_node(c->blobs, c->directories, &node, &hash, err);
    if (r < 0)
        return r;
    Tvix__Store__V1__CalculateNARResponse resp = TVIX__STORE__V1__CALCULATE_NARRESPONSE__INIT;
    resp.nar_size = hash.size;
    resp.nar_sha256 = (ProtobufCBinaryData){OBI_SHA256_LEN, hash.sha256};
    r = obi_rpc_call_queue_message(call, &resp.base, err);
    return r < 0 ? r : OBI_RPC_DONE;
}

/* A List in progress: the paths recorded when it started, and the next one to send. */
typedef struct list_state {
    obi_nix_path_info_store *path_infos;
    char **paths;
    size_t n, next;
} list_state;

static void list_state_free(void *state)
{
    list_state *list = state;
    obi_strv_free(list->paths);
    free(list);
}

/* Queues the next record (OBI_RPC_SEND), or OBI_RPC_DONE; a path gone since the listing is
 * left out. */
static int list_queue_next(obi_rpc_call *call, list_state *list, obi_error **err)
{
    while (list->next < list->n) {
        cleanup_nix_path_info obi_nix_path_info *info = NULL;
        cleanup_error obi_error *get_err = NULL;
        int r = obi_nix_path_info_get(list->path_infos, list->paths[list->next++], &info, &get_err);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            return obi_error_move(err, &get_err);
        r = queue_path_info(call, info, err);
        return r < 0 ? r : OBI_RPC_SEND;
    }
    return OBI_RPC_DONE;
}

static int path_info_list(obi_rpc_call *call, void *ctx, obi_rpc_message *message, obi_error **err)
{
    obi_rpc_path_info_ctx *c = ctx;
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_unpack(&tvix__store__v1__list_path_info_request__descriptor,
                           "ListPathInfoRequest", message, &msg, err);
    if (r < 0)
        return r;
    protobuf_c_message_free_unpacked(msg, NULL);
    list_state *list = calloc(1, sizeof *list);
    if (!list)
        return obi_error_oom(err);
    list->path_infos = c->path_infos;
    obi_rpc_call_set_state(call, list, list_state_free);
    r = obi_nix_path_info_list(c->path_infos, &list->paths, &list->n, err);
    return r < 0 ? r : list_queue_next(call, list, err);
}

static int path_info_list_sent(obi_rpc_call *call, void *ctx, obi_error **err)
{
    (void)ctx;
    return list_queue_next(call, obi_rpc_call_state(call), err);
}

const obi_rpc_method obi_rpc_path_info_methods[] = {
    {"store.v1.PathInfoService/Get", OBI_RPC_POOL_CASTORE, false, path_info_get, NULL, NULL},
    {"store.v1.PathInfoService/Put", OBI_RPC_POOL_CASTORE, false, path_info_put, NULL, NULL},
    {"store.v1.PathInfoService/CalculateNAR", OBI_RPC_POOL_CASTORE, false, path_info_calculate_nar,
     NULL, NULL},
    {"store.v1.PathInfoService/List", OBI_RPC_POOL_CASTORE, false, path_info_list, NULL,
     path_info_list_sent},
};
const size_t obi_rpc_n_path_info_methods =
    sizeof obi_rpc_path_info_methods / sizeof obi_rpc_path_info_methods[0];
