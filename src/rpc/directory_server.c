/*
 * tvix.castore.v1.DirectoryService served from an obi_directory_service. Get streams one
 * directory, or with recursive=true the root first and then its descendants breadth-first, each
 * once. Put takes a stream of directories leaves first (the last one is the root); every child
 * must have been sent earlier in the stream or be stored already (else INVALID_ARGUMENT), and
 * nothing is committed unless the whole stream was accepted (the putter discards on close).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/store.h"
#include "rpc_directory.pb-c.h"
#include "rpc_internal.h"

static int send_directory(const obi_directory *dir, const obi_digest *digest, void *ctx,
                          obi_error **err)
{
    (void)digest;
    obi_rpc_call *call = ctx;
    uint8_t *data;
    size_t len;
    int r = obi_directory_encode(dir, &data, &len, err);
    if (r < 0)
        return r;
    return obi_rpc_call_send_owned(call, data, len, err);
}

static int directory_get(obi_rpc_call *call, void *ctx, obi_error **err)
{
    obi_directory_service *directories = ctx;
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_call_recv_message(call, &tvix__castore__v1__get_directory_request__descriptor,
                                      "GetDirectoryRequest", &msg, err);
    if (r <= 0)
        return r < 0 ? r : obi_error_set(err, -EINVAL, "GetDirectoryRequest: missing");
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

    if (recursive)
        return obi_directory_get_recursive(directories, &digest, send_directory, call, err);
    cleanup_directory obi_directory *dir = NULL;
    r = obi_directory_get(directories, &digest, &dir, err);
    if (r < 0)
        return r;
    return send_directory(dir, &digest, call, err);
}

static int directory_put(obi_rpc_call *call, void *ctx, obi_error **err)
{
    obi_directory_service *directories = ctx;
    cleanup_directory_putter obi_directory_putter *putter = NULL;
    int r = obi_directory_open_put(directories, &putter, err);
    if (r < 0)
        return r;
    size_t index = 0;
    for (;; index++) {
        cleanup_free uint8_t *data = NULL;
        size_t len = 0;
        r = obi_rpc_call_recv(call, &data, &len, err);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        cleanup_directory obi_directory *dir = NULL;
        r = obi_directory_decode(data, len, &dir, err);
        if (r >= 0)
            r = obi_directory_validate(dir, err);
        if (r >= 0)
            r = obi_directory_put(putter, dir, NULL, err);
        if (r < 0)
            return obi_error_prefix(err, r, "directories[%zu]", index);
    }
    if (index == 0)
        return obi_error_set(err, -EINVAL, "Put: the stream held no directory");
    obi_digest root;
    r = obi_directory_putter_finish(putter, &root, err);
    if (r < 0)
        return r;
    Tvix__Castore__V1__PutDirectoryResponse resp = TVIX__CASTORE__V1__PUT_DIRECTORY_RESPONSE__INIT;
    resp.root_digest.data = root.bytes;
    resp.root_digest.len = OBI_DIGEST_LEN;
    return obi_rpc_call_send_message(call, &resp.base, err);
}

const obi_rpc_method obi_rpc_directory_methods[] = {
    {"/tvix.castore.v1.DirectoryService/Get", OBI_RPC_POOL_CASTORE, directory_get},
    {"/tvix.castore.v1.DirectoryService/Put", OBI_RPC_POOL_CASTORE, directory_put},
};
const size_t obi_rpc_n_directory_methods =
    sizeof obi_rpc_directory_methods / sizeof obi_rpc_directory_methods[0];
