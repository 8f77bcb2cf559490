/*
 * obi_directory_service over gRPC (tvix.castore.v1.DirectoryService): get -> Get (one
 * directory), get_recursive -> Get with recursive=true (root first, breadth-first), and a putter
 * that is one Put stream (leaves first, the root last; the server commits only a complete
 * stream, so closing an unfinished putter cancels the call and leaves nothing behind).
 * Every directory received is decoded, validated and checked against the digest asked for.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest_map.h"
#include "ocibuild/pb_wire.h"
#include "ocibuild/rpc.h"
#include "ocibuild/store_backend.h"
#include "rpc_directory.pb-c.h"
#include "rpc_internal.h"

/* The method paths of each generation (obi_rpc_api, from the URL's ?api=). */
static const char *const METHOD_GET[] = {"/tvix.castore.v1.DirectoryService/Get",
                                         "/snix.castore.v1.DirectoryService/Get"};
static const char *const METHOD_PUT[] = {"/tvix.castore.v1.DirectoryService/Put",
                                         "/snix.castore.v1.DirectoryService/Put"};

typedef struct grpc_directory_service {
    obi_directory_service base;
    obi_rpc_channel *channel;
    const char *get_path, *put_path; /* of the URL's generation */
} grpc_directory_service;

static int start_get(grpc_directory_service *svc, const obi_digest *digest, bool recursive,
                     obi_rpc_client_call **out, obi_error **err)
{
    cleanup_rpc_client_call obi_rpc_client_call *call = NULL;
    int r = obi_rpc_client_call_start(svc->channel, svc->get_path, &call, err);
    if (r < 0)
        return r;
    Tvix__Castore__V1__GetDirectoryRequest req = TVIX__CASTORE__V1__GET_DIRECTORY_REQUEST__INIT;
    req.by_what_case = TVIX__CASTORE__V1__GET_DIRECTORY_REQUEST__BY_WHAT_DIGEST;
    req.digest.data = (uint8_t *)digest->bytes;
    req.digest.len = OBI_DIGEST_LEN;
    req.recursive = recursive;
    uint8_t *data = NULL;
    size_t len = 0;
    r = obi_rpc_pack(&req.base, &data, &len, err);
    if (r >= 0)
        r = obi_rpc_client_call_send_request(call, data, len, err);
    if (r < 0)
        return r;
    *out = steal_pointer(&call);
    return 0;
}

/* Receives one directory: 1 with *dir and *digest set, 0 at the end of the stream. */
static int recv_directory(const grpc_directory_service *svc, obi_rpc_client_call *call,
                          size_t index, obi_directory **dir, obi_digest *digest, obi_error **err)
{
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    int r = obi_rpc_client_call_recv(call, &data, &len, err);
    if (r <= 0)
        return r;
    cleanup_directory obi_directory *decoded = NULL;
    r = obi_directory_decode(data, len, &decoded, err);
    if (r >= 0)
        r = obi_directory_validate(decoded, err);
    if (r >= 0)
        r = obi_directory_digest(decoded, digest, err);
    if (r < 0)
        return obi_error_prefix(err, -EBADMSG, "%s: directory %zu from the server", svc->get_path,
                                index);
    *dir = steal_pointer(&decoded);
    return 1;
}

static int digest_mismatch(const grpc_directory_service *svc, const obi_digest *want,
                           const obi_digest *got, obi_error **err)
{
    cleanup_free char *want_text = obi_digest_to_b3_string(want);
    cleanup_free char *got_text = obi_digest_to_b3_string(got);
    return obi_error_set(err, -EBADMSG, "%s: asked for %s, the server sent %s", svc->get_path,
                         want_text ? want_text : "?", got_text ? got_text : "?");
}

static int svc_get(obi_directory_service *base, const obi_digest *digest, obi_directory **out,
                   obi_error **err)
{
    grpc_directory_service *svc = (grpc_directory_service *)base;
    cleanup_rpc_client_call obi_rpc_client_call *call = NULL;
    int r = start_get(svc, digest, false, &call, err);
    if (r < 0)
        return r;
    cleanup_directory obi_directory *dir = NULL;
    obi_digest got;
    r = recv_directory(svc, call, 0, &dir, &got, err);
    if (r < 0)
        return r;
    if (r == 0) {
        cleanup_free char *text = obi_digest_to_b3_string(digest);
        return obi_error_set(err, -ENOENT, "directory %s not found", text ? text : "?");
    }
    if (!obi_digest_equal(&got, digest))
        return digest_mismatch(svc, digest, &got, err);
    r = obi_rpc_client_call_finish(call, err);
    if (r < 0)
        return r;
    *out = steal_pointer(&dir);
    return 0;
}

static int svc_get_recursive(obi_directory_service *base, const obi_digest *root,
                             obi_directory_visit_fn visit, void *ctx, obi_error **err)
{
    grpc_directory_service *svc = (grpc_directory_service *)base;
    cleanup_rpc_client_call obi_rpc_client_call *call = NULL;
    int r = start_get(svc, root, true, &call, err);
    if (r < 0)
        return r;
    /* The tree so far: the root, then every child of a directory received (expected), and what
     * arrived of it (received). Each must arrive once; the values are dummies. */
    obi_digest_map expected, received;
    obi_digest_map_init(&expected, NULL);
    obi_digest_map_init(&received, NULL);
    r = obi_digest_map_insert(&expected, root, OBI_DIGEST_SET_MEMBER);
    if (r < 0)
        r = obi_error_set(err, -ENOMEM, "%s: out of memory", svc->get_path);
    for (size_t index = 0; r >= 0; index++) {
        cleanup_directory obi_directory *dir = NULL;
        obi_digest got;
        r = recv_directory(svc, call, index, &dir, &got, err);
        if (r < 0)
            break;
        if (r == 0) {
            if (index == 0) {
                cleanup_free char *text = obi_digest_to_b3_string(root);
                r = obi_error_set(err, -ENOENT, "directory %s not found", text ? text : "?");
            } else if (expected.count > received.count) {
                r = obi_error_set(err, -EBADMSG,
                                  "%s: the server left out %zu directories of the tree",
                                  svc->get_path, expected.count - received.count);
            }
            break;
        }
        if (index == 0 && !obi_digest_equal(&got, root)) {
            r = digest_mismatch(svc, root, &got, err);
            break;
        }
        int first = obi_digest_map_get(&expected, &got)
                        ? obi_digest_map_insert(&received, &got, OBI_DIGEST_SET_MEMBER)
                        : 0;
        if (first < 0) {
            r = obi_error_set(err, -ENOMEM, "%s: out of memory", svc->get_path);
            break;
        }
        if (first == 0) {
            cleanup_free char *text = obi_digest_to_b3_string(&got);
            r = obi_error_set(err, -EBADMSG,
                              "%s: directory %zu (%s) is not part of the tree or was sent twice",
                              svc->get_path, index, text ? text : "?");
            break;
        }
        for (size_t i = 0; i < dir->n_directories && r >= 0; i++)
            r = obi_digest_map_insert(&expected, &dir->directories[i].digest,
                                      OBI_DIGEST_SET_MEMBER);
        if (r < 0) {
            r = obi_error_set(err, -ENOMEM, "%s: out of memory", svc->get_path);
            break;
        }
        r = visit(dir, &got, ctx, err);
    }
    obi_digest_map_clear(&expected);
    obi_digest_map_clear(&received);
    return r < 0 ? r : 0;
}

/* ---- putting ---- */

typedef struct grpc_directory_putter {
    obi_directory_putter base;
    obi_rpc_client_call *call;
    const char *path; /* of the Put method */
    obi_digest last;
    size_t n_put;
    bool failed;
} grpc_directory_putter;

static int putter_put(obi_directory_putter *base, const obi_directory *dir, obi_digest *digest_out,
                      obi_error **err)
{
    grpc_directory_putter *putter = (grpc_directory_putter *)base;
    if (putter->failed || !putter->call)
        return obi_error_set(err, -EINVAL, "%s: put after a failure or finish", putter->path);
    obi_digest digest;
    int r = obi_directory_validate(dir, err);
    if (r >= 0)
        r = obi_directory_digest(dir, &digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "directories[%zu]", putter->n_put);
    uint8_t *data = NULL;
    size_t len = 0;
    r = obi_directory_encode(dir, &data, &len, err);
    if (r >= 0)
        r = obi_rpc_client_call_send_owned(putter->call, data, len, err);
    if (r < 0) {
        putter->failed = true;
        return r;
    }
    putter->last = digest;
    putter->n_put++;
    if (digest_out)
        *digest_out = digest;
    return 0;
}

static int putter_finish(obi_directory_putter *base, obi_digest *root_out, obi_error **err)
{
    grpc_directory_putter *putter = (grpc_directory_putter *)base;
    if (putter->failed || !putter->call)
        return obi_error_set(err, -EINVAL, "%s: finish after a failure or finish", putter->path);
    if (putter->n_put == 0)
        return obi_error_set(err, -EINVAL, "%s: no directory was put", putter->path);
    cleanup_rpc_client_call obi_rpc_client_call *call = steal_pointer(&putter->call);
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    int r = obi_rpc_client_call_close_and_recv_one(call, &data, &len, err);
    if (r < 0)
        return r;
    ProtobufCMessage *msg = NULL;
    obi_error *why = NULL;
    if (obi_pb_unpack(&tvix__castore__v1__put_directory_response__descriptor, data, len, &msg,
                      &why) < 0)
        return obi_rpc_bad_response(err, &why, "%s: PutDirectoryResponse", putter->path);
    Tvix__Castore__V1__PutDirectoryResponse *resp = (Tvix__Castore__V1__PutDirectoryResponse *)msg;
    bool same = resp->root_digest.len == OBI_DIGEST_LEN &&
                !memcmp(resp->root_digest.data, putter->last.bytes, OBI_DIGEST_LEN);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (!same)
        return obi_error_set(err, -EBADMSG, "%s: the server's root digest is not the last one put",
                             putter->path);
    if (root_out)
        *root_out = putter->last;
    return 0;
}

static void putter_close(obi_directory_putter *base)
{
    grpc_directory_putter *putter = (grpc_directory_putter *)base;
    obi_rpc_client_call_free(putter->call); /* cancels an unfinished Put: nothing committed */
    free(putter);
}

static const struct obi_directory_putter_ops PUTTER_OPS = {
    .put = putter_put,
    .finish = putter_finish,
    .close = putter_close,
};

static int svc_open_put(obi_directory_service *base, obi_directory_putter **out, obi_error **err)
{
    grpc_directory_service *svc = (grpc_directory_service *)base;
    grpc_directory_putter *putter = calloc(1, sizeof *putter);
    if (!putter)
        return obi_error_set(err, -ENOMEM, "put directories: out of memory");
    putter->base.ops = &PUTTER_OPS;
    putter->path = svc->put_path;
    int r = obi_rpc_client_call_start(svc->channel, svc->put_path, &putter->call, err);
    if (r < 0) {
        free(putter);
        return r;
    }
    *out = &putter->base;
    return 0;
}

static void svc_free(obi_directory_service *base)
{
    grpc_directory_service *svc = (grpc_directory_service *)base;
    obi_rpc_channel_close(svc->channel);
    free(svc);
}

static const struct obi_directory_service_ops SERVICE_OPS = {
    .get = svc_get,
    .open_put = svc_open_put,
    .get_recursive = svc_get_recursive,
    .free = svc_free,
};

int obi_grpc_directory_service_open(const obi_url *url, obi_directory_service **out,
                                    obi_error **err)
{
    grpc_directory_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_set(err, -ENOMEM, "grpc directory service: out of memory");
    svc->base.ops = &SERVICE_OPS;
    obi_rpc_api api = OBI_RPC_API_TVIX;
    int r = obi_rpc_url_api(url, &api, err);
    svc->get_path = METHOD_GET[api];
    svc->put_path = METHOD_PUT[api];
    if (r >= 0)
        r = obi_rpc_channel_open(url, &svc->channel, err);
    if (r < 0) {
        free(svc);
        return r;
    }
    *out = &svc->base;
    return 0;
}
