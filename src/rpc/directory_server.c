/*
 * castore.v1.DirectoryService (tvix and snix) served from an obi_directory_service. Get sends
 * one directory (NOT_FOUND when unknown), or with recursive=true the root first and then its
 * descendants breadth-first, each once (obi_directory_walk: the next one is fetched when the
 * previous one went out), and nothing, status OK, for an unknown root, as snix does. Put takes a
 * stream of directories leaves first (the last one is the root); every child must have been sent
 * earlier in the stream or be stored already, and every directory sent must be in the root's
 * tree (else INVALID_ARGUMENT naming it), and nothing is committed
 * unless the whole stream was accepted (the putter discards on close). Directories are checked
 * in their encoding and kept as they came (obi_directory_put_encoded): what the putter keeps
 * until the commit, one copy of each, is charged to the server's memory budget.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/store.h"
#include "rpc_directory.pb-c.h"
#include "rpc_internal.h"

static int queue_directory(obi_rpc_call *call, const obi_directory *dir, obi_error **err)
{
    uint8_t *data;
    size_t len;
    int r = obi_directory_encode(dir, &data, &len, err);
    if (r < 0)
        return r;
    obi_rpc_call_queue(call, data, len);
    return 0;
}

static void walk_free(void *walk)
{
    obi_directory_walk_free(walk);
}

/* Queues the walk's next directory: OBI_RPC_SEND, or OBI_RPC_DONE when there is none left. */
static int get_queue_next(obi_rpc_call *call, obi_directory_walk *walk, obi_error **err)
{
    cleanup_directory obi_directory *dir = NULL;
    obi_digest digest;
    int r = obi_directory_walk_next(walk, &dir, &digest, err);
    if (r <= 0)
        return r < 0 ? r : OBI_RPC_DONE;
    r = queue_directory(call, dir, err);
    return r < 0 ? r : OBI_RPC_SEND;
}

static int directory_get(obi_rpc_call *call, void *ctx, obi_rpc_message *message, obi_error **err)
{
    obi_directory_service *directories = ctx;
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_unpack(&tvix__castore__v1__get_directory_request__descriptor,
                           "GetDirectoryRequest", message, &msg, err);
    if (r < 0)
        return r;
    Tvix__Castore__V1__GetDirectoryRequest *req = (Tvix__Castore__V1__GetDirectoryRequest *)msg;
    bool recursive = req->recursive;
    obi_digest digest;
    if (req->by_what_case != TVIX__CASTORE__V1__GET_DIRECTORY_REQUEST__BY_WHAT_DIGEST)
        r = obi_error_set(err, -EINVAL, "GetDirectoryRequest.digest: missing");
    else if (req->digest.len != OBI_DIGEST_LEN)
        r = obi_error_set(err, -EINVAL, "GetDirectoryRequest.digest: must be %d bytes, got %zu",
                          OBI_DIGEST_LEN, req->digest.len);
    else
        memcpy(digest.bytes, req->digest.data, OBI_DIGEST_LEN);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (r < 0)
        return r;

    if (recursive) {
        obi_directory_walk *walk = NULL;
        r = obi_directory_walk_new(directories, &digest, &walk, err);
        if (r < 0)
            return r;
        obi_rpc_call_set_state(call, walk, walk_free);
        r = get_queue_next(call, walk, err);
        if (r != -ENOENT)
            return r;
        /* An unknown root: OK with no directory, as snix answers (its clients read NOT_FOUND
         * here as a storage error). */
        obi_error_free(steal_pointer(err));
        return OBI_RPC_DONE;
    }
    cleanup_directory obi_directory *dir = NULL;
    r = obi_directory_get(directories, &digest, &dir, err);
    if (r == 0)
        r = queue_directory(call, dir, err);
    return r < 0 ? r : OBI_RPC_DONE;
}

static int directory_get_sent(obi_rpc_call *call, void *ctx, obi_error **err)
{
    (void)ctx;
    return get_queue_next(call, obi_rpc_call_state(call), err);
}

/* A Put's state: the putter (opened on the first directory) and how many came. */
typedef struct put_state {
    obi_directory_putter *putter;
    size_t directories;
} put_state;

static void put_state_free(void *state)
{
    put_state *put = state;
    obi_directory_putter_close(put->putter); /* unfinished: nothing is committed */
    free(put);
}

static int put_state_get(obi_rpc_call *call, obi_directory_service *directories, put_state **out,
                         obi_error **err)
{
    put_state *put = obi_rpc_call_state(call);
    if (!put) {
        put = calloc(1, sizeof *put);
        if (!put)
            return obi_error_set(err, -ENOMEM, "put directories: out of memory");
        obi_rpc_call_set_state(call, put, put_state_free);
        int r = obi_directory_open_put(directories, &put->putter, err);
        if (r < 0)
            return r;
    }
    *out = put;
    return 0;
}

static int directory_put_one(obi_rpc_call *call, void *ctx, obi_rpc_message *message,
                             obi_error **err)
{
    put_state *put = NULL;
    int r = put_state_get(call, ctx, &put, err);
    if (r < 0)
        return r;
    size_t index = put->directories++;
    size_t len = message->len;
    /* The putter keeps the bytes until the commit; they stay charged to the budget. */
    r = obi_directory_put_encoded(put->putter, obi_rpc_call_keep_message(call, message), len, NULL,
                                  err);
    if (r < 0)
        return obi_error_prefix(err, r, "directories[%zu]", index);
    return OBI_RPC_RECV;
}

static int directory_put_end(obi_rpc_call *call, void *ctx, obi_error **err)
{
    put_state *put = obi_rpc_call_state(call);
    (void)ctx;
    if (!put || put->directories == 0)
        return obi_error_set(err, -EINVAL, "Put: the stream held no directory");
    obi_digest root;
    int r = obi_directory_putter_finish(put->putter, &root, err);
    if (r < 0)
        return r;
    Tvix__Castore__V1__PutDirectoryResponse resp = TVIX__CASTORE__V1__PUT_DIRECTORY_RESPONSE__INIT;
    resp.root_digest.data = root.bytes;
    resp.root_digest.len = OBI_DIGEST_LEN;
    r = obi_rpc_call_queue_message(call, &resp.base, err);
    return r < 0 ? r : OBI_RPC_DONE;
}

const obi_rpc_method obi_rpc_directory_methods[] = {
    {"castore.v1.DirectoryService/Get", OBI_RPC_POOL_CASTORE, false, directory_get, NULL,
     directory_get_sent},
    {"castore.v1.DirectoryService/Put", OBI_RPC_POOL_CASTORE, true, directory_put_one,
     directory_put_end, NULL},
};
const size_t obi_rpc_n_directory_methods =
    sizeof obi_rpc_directory_methods / sizeof obi_rpc_directory_methods[0];
