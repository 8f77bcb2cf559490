/*
 * The client helpers built on the transport interface of rpc_internal.h (docs/rpc.md "Client
 * transports"): calls without metadata, unary calls, the single response of a unary or
 * client-streaming call, and how a call's final status becomes an error. Both transports,
 * grpc_client.c (libgrpc) and h2_client.c (libnghttp2, unix sockets), are linked with this file,
 * so the service clients (grpc_*_client.c) read the same on either.
 */
#include <errno.h>
#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "rpc_internal.h"

int obi_rpc_client_call_start(obi_rpc_channel *channel, const char *method,
                              obi_rpc_client_call **out, obi_error **err)
{
    return obi_rpc_client_call_start_metadata(channel, method, 0, NULL, 0, out, err);
}

int obi_rpc_client_call_start_timeout(obi_rpc_channel *channel, const char *method,
                                      unsigned timeout_ms, obi_rpc_client_call **out,
                                      obi_error **err)
{
    return obi_rpc_client_call_start_metadata(channel, method, timeout_ms, NULL, 0, out, err);
}

int obi_rpc_client_call_send_message(obi_rpc_client_call *call, const ProtobufCMessage *msg,
                                     obi_error **err)
{
    uint8_t *data;
    size_t len;
    int r = obi_rpc_pack(msg, &data, &len, err);
    if (r < 0)
        return r;
    return obi_rpc_client_call_send_owned(call, data, len, err);
}

int obi_rpc_client_unary_owned(obi_rpc_channel *channel, const char *method, uint8_t *req,
                               size_t req_len, uint8_t **resp, size_t *resp_len, obi_error **err)
{
    cleanup_rpc_client_call obi_rpc_client_call *call = NULL;
    int r = obi_rpc_client_call_start(channel, method, &call, err);
    if (r < 0) {
        free(req);
        return r;
    }
    r = obi_rpc_client_call_send_request(call, req, req_len, err);
    if (r < 0)
        return r;
    return obi_rpc_client_call_recv_one(call, resp, resp_len, err);
}

int obi_rpc_client_unary(obi_rpc_channel *channel, const char *method, const ProtobufCMessage *req,
                         uint8_t **resp, size_t *resp_len, obi_error **err)
{
    uint8_t *data;
    size_t len;
    int r = obi_rpc_pack(req, &data, &len, err);
    if (r < 0)
        return r;
    return obi_rpc_client_unary_owned(channel, method, data, len, resp, resp_len, err);
}

int obi_rpc_client_call_close_and_recv_one(obi_rpc_client_call *call, uint8_t **resp,
                                           size_t *resp_len, obi_error **err)
{
    int r = obi_rpc_client_call_close_send(call, err);
    if (r < 0)
        return r;
    return obi_rpc_client_call_recv_one(call, resp, resp_len, err);
}

int obi_rpc_client_call_recv_one(obi_rpc_client_call *call, uint8_t **resp, size_t *resp_len,
                                 obi_error **err)
{
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    int r = obi_rpc_client_call_recv(call, &data, &len, err);
    if (r < 0)
        return r;
    if (r == 0)
        return obi_error_set(err, -EPROTO, "%s: the server sent no response",
                             obi_rpc_client_call_method(call));
    r = obi_rpc_client_call_finish(call, err);
    if (r < 0)
        return r;
    *resp = steal_pointer(&data);
    *resp_len = len;
    return 0;
}

int obi_rpc_status_error(obi_error **err, grpc_status_code status, const char *details, size_t len,
                         const char *method, const char *target, const char *why)
{
    int code = obi_rpc_errno_from_status(status);
    if (len > 0 && status == GRPC_STATUS_UNAVAILABLE)
        return obi_error_set(err, code, "gRPC server %s: %.*s", target ? target : "?", (int)len,
                             details);
    if (len > 0)
        return obi_error_set(err, code, "%.*s", (int)len, details);
    if (status == GRPC_STATUS_UNAVAILABLE)
        return obi_error_set(err, code, "gRPC server %s: %s: %s%s%s", target ? target : "?", method,
                             obi_rpc_status_name(status), why ? ": " : "", why ? why : "");
    return obi_error_set(err, code, "%s: %s%s%s", method, obi_rpc_status_name(status),
                         why ? ": " : "", why ? why : "");
}
