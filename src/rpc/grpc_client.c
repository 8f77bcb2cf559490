/*
 * The client half of the gRPC core shared by grpc_blob_client.c, grpc_directory_client.c and
 * grpc_build_client.c: channels from grpc+unix:// and grpc+http:// URLs, and calls driven
 * synchronously on a completion queue of their own (one batch at a time). A call's status is
 * turned back into an errno-style code with the server's message (docs/rpc.md).
 */
#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "rpc_internal.h"

struct obi_rpc_client_call {
    char *method;
    char *target; /* gpr_malloc'd, for messages */
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_metadata_array initial_metadata;
    grpc_metadata_array trailing_metadata;
    bool initial_metadata_received;
    bool finished;
};

static char *channel_target(const obi_url *url, obi_error **err)
{
    obi_buf target = {0};
    if (!strcmp(url->scheme, "grpc+unix")) {
        /* grpc+unix:///abs/path.sock, or grpc+unix://relative/path.sock */
        if (!*url->host && !*url->path) {
            obi_error_set(err, -EINVAL, "grpc+unix://: missing socket path (grpc+unix:///PATH)");
            return NULL;
        }
        if (url->port) {
            obi_error_set(err, -EINVAL, "grpc+unix://%s:%s: a unix socket has no port", url->host,
                          url->port);
            return NULL;
        }
        if (obi_buf_appendf(&target, "unix:%s%s", url->host, url->path) < 0)
            goto oom;
    } else if (!strcmp(url->scheme, "grpc+http")) {
        if (!*url->host || !url->port || !*url->port) {
            obi_error_set(err, -EINVAL, "grpc+http://%s: expected grpc+http://HOST:PORT",
                          url->host);
            return NULL;
        }
        if (*url->path && strcmp(url->path, "/") != 0) {
            obi_error_set(err, -EINVAL,
                          "grpc+http://%s:%s%s: a path after host:port is not supported", url->host,
                          url->port, url->path);
            return NULL;
        }
        bool ipv6 = strchr(url->host, ':') != NULL && url->host[0] != '[';
        if (obi_buf_appendf(&target, ipv6 ? "[%s]:%s" : "%s:%s", url->host, url->port) < 0)
            goto oom;
    } else {
        obi_error_set(err, -EINVAL, "%s://: not a gRPC address (expected grpc+unix or grpc+http)",
                      url->scheme);
        return NULL;
    }
    return obi_buf_steal(&target);
oom:
    obi_buf_free(&target);
    obi_error_set(err, -ENOMEM, "channel target: out of memory");
    return NULL;
}

/* Clients of the same target (blob, directory and build services of one daemon) share one
 * channel, so one connection: a process pays the HTTP/2 handshake once per daemon. */
typedef struct shared_channel {
    char *target;
    grpc_channel *channel;
    unsigned refs;
    struct shared_channel *next;
} shared_channel;

static pthread_mutex_t channels_lock = PTHREAD_MUTEX_INITIALIZER;
static shared_channel *channels;

int obi_rpc_channel_open(const obi_url *url, grpc_channel **out, obi_error **err)
{
    cleanup_free char *target = channel_target(url, err);
    if (!target)
        return err && *err ? (*err)->code : -EINVAL;
    int r = 0;
    pthread_mutex_lock(&channels_lock);
    shared_channel *shared = channels;
    while (shared && strcmp(shared->target, target) != 0)
        shared = shared->next;
    if (!shared) {
        shared = calloc(1, sizeof *shared);
        if (!shared) {
            r = obi_error_set(err, -ENOMEM, "gRPC channel to %s: out of memory", target);
            goto out;
        }
        grpc_init();
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        shared->channel = grpc_channel_create(target, creds, obi_rpc_channel_args());
        grpc_channel_credentials_release(creds);
        if (!shared->channel) {
            free(shared);
            r = obi_error_set(err, -EINVAL, "gRPC channel to %s: cannot create", target);
            goto out;
        }
        shared->target = steal_pointer(&target);
        shared->next = channels;
        channels = shared;
    }
    shared->refs++;
    *out = shared->channel;
out:
    pthread_mutex_unlock(&channels_lock);
    return r;
}

void obi_rpc_channel_close(grpc_channel *channel)
{
    if (!channel)
        return;
    pthread_mutex_lock(&channels_lock);
    for (shared_channel **p = &channels; *p; p = &(*p)->next) {
        shared_channel *shared = *p;
        if (shared->channel != channel)
            continue;
        if (--shared->refs == 0) {
            *p = shared->next;
            grpc_channel_destroy(shared->channel);
            free(shared->target);
            free(shared);
            /* No grpc_shutdown(): it joins gRPC's threads, which costs a short-lived CLI more
             * than its whole call; the library state lives as long as the process. */
        }
        break;
    }
    pthread_mutex_unlock(&channels_lock);
}

void obi_rpc_client_call_free(obi_rpc_client_call *call)
{
    if (!call)
        return;
    if (call->call) {
        if (!call->finished)
            grpc_call_cancel(call->call, NULL);
        grpc_call_unref(call->call);
    }
    obi_rpc_cq_destroy(call->cq);
    grpc_metadata_array_destroy(&call->initial_metadata);
    grpc_metadata_array_destroy(&call->trailing_metadata);
    free(call->method);
    gpr_free(call->target);
    free(call);
}

int obi_rpc_client_call_start(grpc_channel *channel, const char *method, obi_rpc_client_call **out,
                              obi_error **err)
{
    obi_rpc_client_call *call = calloc(1, sizeof *call);
    if (!call || !(call->method = strdup(method))) {
        free(call);
        return obi_error_set(err, -ENOMEM, "%s: out of memory", method);
    }
    grpc_metadata_array_init(&call->initial_metadata);
    grpc_metadata_array_init(&call->trailing_metadata);
    call->target = grpc_channel_get_target(channel);
    call->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice method_slice = grpc_slice_from_static_string(call->method);
    call->call =
        grpc_channel_create_call(channel, NULL, GRPC_PROPAGATE_DEFAULTS, call->cq, method_slice,
                                 NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!call->call) {
        obi_rpc_client_call_free(call);
        return obi_error_set(err, -EIO, "%s: cannot create the call", method);
    }
    grpc_op op = {.op = GRPC_OP_SEND_INITIAL_METADATA};
    if (!obi_rpc_run_batch(call->call, call->cq, &op, 1)) {
        int r = obi_rpc_client_call_finish(call, err);
        obi_rpc_client_call_free(call);
        return r < 0 ? r : obi_error_set(err, -EIO, "%s: cannot start the call", method);
    }
    *out = call;
    return 0;
}

int obi_rpc_client_call_send_owned(obi_rpc_client_call *call, uint8_t *data, size_t len,
                                   obi_error **err)
{
    grpc_byte_buffer *buffer = obi_rpc_byte_buffer_own(data, len);
    grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
    op.data.send_message.send_message = buffer;
    bool ok = obi_rpc_run_batch(call->call, call->cq, &op, 1);
    grpc_byte_buffer_destroy(buffer);
    if (!ok) {
        /* The server ended the call early: its status says why. */
        int r = obi_rpc_client_call_finish(call, err);
        return r < 0 ? r
                     : obi_error_set(err, -EPROTO, "%s: the server ended the call early",
                                     call->method);
    }
    return 0;
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

int obi_rpc_client_call_close_send(obi_rpc_client_call *call, obi_error **err)
{
    grpc_op op = {.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT};
    if (!obi_rpc_run_batch(call->call, call->cq, &op, 1)) {
        int r = obi_rpc_client_call_finish(call, err);
        return r < 0 ? r
                     : obi_error_set(err, -EPROTO, "%s: cannot close the request stream",
                                     call->method);
    }
    return 0;
}

int obi_rpc_client_call_recv_slice(obi_rpc_client_call *call, grpc_slice *out, obi_error **err)
{
    grpc_byte_buffer *buffer = NULL;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!call->initial_metadata_received) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &call->initial_metadata;
        n++;
        call->initial_metadata_received = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &buffer;
    n++;
    bool ok = obi_rpc_run_batch(call->call, call->cq, ops, n);
    if (!ok || !buffer) {
        if (buffer)
            grpc_byte_buffer_destroy(buffer);
        /* The end of the stream, or a failure: either way the status tells. */
        int r = obi_rpc_client_call_finish(call, err);
        return r < 0 ? r : 0;
    }
    *out = obi_rpc_byte_buffer_take(buffer);
    return 1;
}

int obi_rpc_client_call_recv(obi_rpc_client_call *call, uint8_t **data, size_t *len,
                             obi_error **err)
{
    grpc_slice slice;
    int r = obi_rpc_client_call_recv_slice(call, &slice, err);
    if (r <= 0)
        return r;
    size_t size = GRPC_SLICE_LENGTH(slice);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) {
        grpc_slice_unref(slice);
        return obi_error_set(err, -ENOMEM, "%s: out of memory", call->method);
    }
    memcpy(copy, GRPC_SLICE_START_PTR(slice), size);
    grpc_slice_unref(slice);
    *data = copy;
    *len = size;
    return 1;
}

int obi_rpc_client_call_finish(obi_rpc_client_call *call, obi_error **err)
{
    if (call->finished)
        return 0;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    grpc_op op = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
    op.data.recv_status_on_client.trailing_metadata = &call->trailing_metadata;
    op.data.recv_status_on_client.status = &status;
    op.data.recv_status_on_client.status_details = &details;
    op.data.recv_status_on_client.error_string = &error_string;
    bool ok = obi_rpc_run_batch(call->call, call->cq, &op, 1);
    call->finished = true;
    int r = 0;
    if (!ok) {
        r = obi_error_set(err, -EIO, "%s: no status received", call->method);
    } else if (status != GRPC_STATUS_OK) {
        int code = obi_rpc_errno_from_status(status);
        size_t len = GRPC_SLICE_LENGTH(details);
        if (len > 0 && status == GRPC_STATUS_UNAVAILABLE)
            r = obi_error_set(err, code, "gRPC server %s: %.*s", call->target ? call->target : "?",
                              (int)len, (const char *)GRPC_SLICE_START_PTR(details));
        else if (len > 0)
            r = obi_error_set(err, code, "%.*s", (int)len,
                              (const char *)GRPC_SLICE_START_PTR(details));
        else
            r = obi_error_set(err, code, "%s: %s%s%s", call->method, obi_rpc_status_name(status),
                              error_string ? ": " : "", error_string ? error_string : "");
    }
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    return r;
}

int obi_rpc_client_unary_owned(grpc_channel *channel, const char *method, uint8_t *req,
                               size_t req_len, uint8_t **resp, size_t *resp_len, obi_error **err)
{
    cleanup_rpc_client_call obi_rpc_client_call *call = NULL;
    int r = obi_rpc_client_call_start(channel, method, &call, err);
    if (r < 0) {
        free(req);
        return r;
    }
    r = obi_rpc_client_call_send_owned(call, req, req_len, err);
    if (r < 0)
        return r;
    return obi_rpc_client_call_close_and_recv_one(call, resp, resp_len, err);
}

int obi_rpc_client_call_close_and_recv_one(obi_rpc_client_call *call, uint8_t **resp,
                                           size_t *resp_len, obi_error **err)
{
    int r = obi_rpc_client_call_close_send(call, err);
    if (r < 0)
        return r;
    uint8_t *data = NULL;
    size_t len = 0;
    r = obi_rpc_client_call_recv(call, &data, &len, err);
    if (r < 0)
        return r;
    if (r == 0)
        return obi_error_set(err, -EPROTO, "%s: the server sent no response", call->method);
    r = obi_rpc_client_call_finish(call, err);
    if (r < 0) {
        free(data);
        return r;
    }
    *resp = data;
    *resp_len = len;
    return 0;
}

int obi_rpc_client_unary(grpc_channel *channel, const char *method, const ProtobufCMessage *req,
                         uint8_t **resp, size_t *resp_len, obi_error **err)
{
    uint8_t *data;
    size_t len;
    int r = obi_rpc_pack(req, &data, &len, err);
    if (r < 0)
        return r;
    return obi_rpc_client_unary_owned(channel, method, data, len, resp, resp_len, err);
}
