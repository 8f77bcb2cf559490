/*
 * The libgrpc client transport (rpc_internal.h "client side"), linked into ocibuild-rpc.so:
 * channels from grpc+unix://, grpc+http:// and grpc+https:// URLs, and calls driven
 * synchronously on a completion queue of their own (one batch at a time). A call's status is
 * turned back into an errno-style code with the server's message (docs/rpc.md). The CLI reaches
 * grpc+unix:// through the lighter h2_client.c instead (docs/rpc.md "Client transports").
 *
 * grpc+https:// speaks TLS: ?ca=PEM checks the server's certificate against that CA (else the
 * system's roots), ?cert=PEM&key=PEM present a client certificate (mutual TLS); each falls back on
 * $OCIBUILD_GRPC_CA, $OCIBUILD_GRPC_CERT, $OCIBUILD_GRPC_KEY.
 */
#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "rpc_internal.h"

/* How often a call with a cancel fd looks at it while it waits. */
#define CANCEL_POLL_MS 100

struct obi_rpc_client_call {
    char *method;
    char *target; /* gpr_malloc'd, for messages */
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_metadata_array initial_metadata;
    grpc_metadata_array trailing_metadata;
    bool initial_metadata_received;
    bool read_closed; /* a receive saw the end of the server's stream (or failed) */
    bool finished;
    int cancel_fd; /* -1, or: readable = cancel the call */
};

/* Where and how a URL connects. */
typedef struct channel_spec {
    char *target; /* gRPC's form: unix:/path, host:port, [v6]:port */
    bool tls;
    const char *ca, *cert, *key; /* PEM file paths (borrowed: URL or environment), or NULL */
    char *key_text;              /* what identifies a shared channel: target and TLS files */
} channel_spec;

static void channel_spec_clear(channel_spec *spec)
{
    free(spec->target);
    free(spec->key_text);
}

static int tls_params(const obi_url *url, channel_spec *spec, obi_error **err)
{
    static const char *const names[] = {"ca", "cert", "key"};
    for (size_t i = 0; i < url->n_params; i++) {
        const char *key = url->params[i].key;
        if (strcmp(key, "ca") != 0 && strcmp(key, "cert") != 0 && strcmp(key, "key") != 0 &&
            strcmp(key, "api") != 0)
            return obi_error_set(err, -EINVAL,
                                 "grpc+https://%s:%s: unknown parameter \"%s\" (supported: ca, "
                                 "cert, key, api)",
                                 url->host, url->port ? url->port : "", key);
    }
    const char *env[] = {OBI_RPC_ENV_CA, OBI_RPC_ENV_CERT, OBI_RPC_ENV_KEY};
    const char **slots[] = {&spec->ca, &spec->cert, &spec->key};
    for (size_t i = 0; i < 3; i++) {
        const char *value = obi_url_param_get(url, names[i]);
        if (!value || !*value)
            value = getenv(env[i]);
        *slots[i] = value && *value ? value : NULL;
    }
    if (!spec->cert != !spec->key)
        return obi_error_set(err, -EINVAL,
                             "grpc+https://%s: a client certificate needs both cert and key "
                             "(?cert=&key= or $%s and $%s)",
                             url->host, OBI_RPC_ENV_CERT, OBI_RPC_ENV_KEY);
    return 0;
}

static int channel_spec_from_url(const obi_url *url, channel_spec *spec, obi_error **err)
{
    *spec = (channel_spec){0};
    obi_buf target = OBI_BUF_INIT;
    bool tcp =
        !strcmp(url->scheme, OBI_RPC_SCHEME_HTTP) || !strcmp(url->scheme, OBI_RPC_SCHEME_HTTPS);
    int r = 0;
    if (!strcmp(url->scheme, OBI_RPC_SCHEME_UNIX)) {
        /* grpc+unix:///abs/path.sock, or grpc+unix://relative/path.sock */
        if (!*url->host && !*url->path)
            r = obi_error_set(err, -EINVAL,
                              "grpc+unix://: missing socket path (grpc+unix:///PATH)");
        else if (url->port)
            r = obi_error_set(err, -EINVAL, "grpc+unix://%s:%s: a unix socket has no port",
                              url->host, url->port);
        else if (obi_buf_appendf(&target, "unix:%s%s", url->host, url->path) < 0)
            r = -ENOMEM;
    } else if (tcp) {
        if (!*url->host || !url->port || !*url->port)
            r = obi_error_set(err, -EINVAL, "%s://%s: expected %s://HOST:PORT", url->scheme,
                              url->host, url->scheme);
        else if (*url->path && strcmp(url->path, "/") != 0)
            r = obi_error_set(err, -EINVAL, "%s://%s:%s%s: a path after host:port is not supported",
                              url->scheme, url->host, url->port, url->path);
        else if (obi_buf_appendf(
                     &target, strchr(url->host, ':') && url->host[0] != '[' ? "[%s]:%s" : "%s:%s",
                     url->host, url->port) < 0)
            r = -ENOMEM;
    } else {
        r = obi_error_set(err, -EINVAL,
                          "%s://: not a gRPC address (expected grpc+unix, grpc+http or grpc+https)",
                          url->scheme);
    }
    spec->tls = !strcmp(url->scheme, OBI_RPC_SCHEME_HTTPS);
    const char *unknown = NULL; /* api= is the clients' (obi_rpc_url_api) */
    for (size_t i = 0; !spec->tls && !unknown && i < url->n_params; i++)
        if (strcmp(url->params[i].key, "api") != 0)
            unknown = url->params[i].key;
    if (r >= 0 && spec->tls)
        r = tls_params(url, spec, err);
    else if (r >= 0 && unknown)
        r = obi_error_set(err, -EINVAL,
                          "%s://: unknown parameter \"%s\" (TLS options need grpc+https://)",
                          url->scheme, unknown);
    if (r == -ENOMEM)
        r = obi_error_set(err, -ENOMEM, "channel target: out of memory");
    if (r < 0) {
        obi_buf_free(&target);
        return r;
    }
    spec->target = obi_buf_steal(&target);
    if (asprintf(&spec->key_text, "%s|%d|%s|%s|%s", spec->target ? spec->target : "", spec->tls,
                 spec->ca ? spec->ca : "", spec->cert ? spec->cert : "",
                 spec->key ? spec->key : "") < 0)
        spec->key_text = NULL;
    if (!spec->target || !spec->key_text) {
        channel_spec_clear(spec);
        return obi_error_set(err, -ENOMEM, "channel target: out of memory");
    }
    return 0;
}

static int read_pem(const char *path, const char *what, char **out, obi_error **err)
{
    size_t len = 0;
    int r = obi_read_file(path, 1 << 20, out, &len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "grpc+https %s", what);
    return 0;
}

static int channel_credentials(const channel_spec *spec, grpc_channel_credentials **out,
                               obi_error **err)
{
    if (!spec->tls) {
        *out = grpc_insecure_credentials_create();
        return 0;
    }
    cleanup_free char *ca = NULL, *cert = NULL, *key = NULL;
    int r = 0;
    if (spec->ca)
        r = read_pem(spec->ca, "CA", &ca, err);
    if (r >= 0 && spec->cert)
        r = read_pem(spec->cert, "client certificate", &cert, err);
    if (r >= 0 && spec->key)
        r = read_pem(spec->key, "client key", &key, err);
    if (r < 0)
        return r;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    *out = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    if (!*out)
        return obi_error_set(err, -EINVAL, "grpc+https %s: gRPC refused the TLS settings",
                             spec->target);
    return 0;
}

/* Clients of the same target (blob, directory and build services of one daemon) share one
 * channel, so one connection: a process pays the HTTP/2 (and TLS) handshake once per daemon. */
struct obi_rpc_channel {
    char *key;
    grpc_channel *channel;
    unsigned refs;
    struct obi_rpc_channel *next;
};
typedef struct obi_rpc_channel shared_channel;

static pthread_mutex_t channels_lock = PTHREAD_MUTEX_INITIALIZER;
static shared_channel *channels;

int obi_rpc_channel_open(const obi_url *url, obi_rpc_channel **out, obi_error **err)
{
    channel_spec spec;
    int r = channel_spec_from_url(url, &spec, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&channels_lock);
    shared_channel *shared = channels;
    while (shared && strcmp(shared->key, spec.key_text) != 0)
        shared = shared->next;
    if (!shared) {
        grpc_channel_credentials *creds = NULL;
        shared = calloc(1, sizeof *shared);
        if (!shared) {
            r = obi_error_set(err, -ENOMEM, "gRPC channel to %s: out of memory", spec.target);
            goto out;
        }
        grpc_init();
        r = channel_credentials(&spec, &creds, err);
        if (r >= 0) {
            shared->channel = grpc_channel_create(spec.target, creds, obi_rpc_channel_args());
            grpc_channel_credentials_release(creds);
        }
        if (!shared->channel) {
            free(shared);
            if (r >= 0)
                r = obi_error_set(err, -EINVAL, "gRPC channel to %s: cannot create", spec.target);
            goto out;
        }
        shared->key = steal_pointer(&spec.key_text);
        shared->next = channels;
        channels = shared;
    }
    shared->refs++;
    *out = shared;
out:
    pthread_mutex_unlock(&channels_lock);
    channel_spec_clear(&spec);
    return r;
}

void obi_rpc_channel_close(obi_rpc_channel *channel)
{
    if (!channel)
        return;
    pthread_mutex_lock(&channels_lock);
    for (shared_channel **p = &channels; *p; p = &(*p)->next) {
        shared_channel *shared = *p;
        if (shared != channel)
            continue;
        if (--shared->refs == 0) {
            *p = shared->next;
            grpc_channel_destroy(shared->channel);
            free(shared->key);
            free(shared);
            /* No grpc_shutdown(): it joins gRPC's threads, which costs a short-lived CLI more
             * than its whole call; the library state lives as long as the process. */
        }
        break;
    }
    pthread_mutex_unlock(&channels_lock);
}

static bool fd_readable(int fd)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
}

/* Runs one batch and waits for it; with a cancel fd, cancels the call when it becomes
 * readable (the batch then fails and the status says CANCELLED). */
static bool client_run_batch(obi_rpc_client_call *call, const grpc_op *ops, size_t n)
{
    /* The tag only has to be unique among this cq's outstanding batches: there is one. */
    void *tag = (void *)ops;
    if (grpc_call_start_batch(call->call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return false;
    bool cancel_sent = false;
    for (;;) {
        gpr_timespec until = call->cancel_fd >= 0 && !cancel_sent
                                 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                gpr_time_from_millis(CANCEL_POLL_MS, GPR_TIMESPAN))
                                 : gpr_inf_future(GPR_CLOCK_REALTIME);
        grpc_event ev = grpc_completion_queue_next(call->cq, until, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return false;
        if (ev.type == GRPC_OP_COMPLETE && ev.tag == tag)
            return ev.success != 0;
        if (ev.type == GRPC_QUEUE_TIMEOUT && fd_readable(call->cancel_fd)) {
            grpc_call_cancel(call->call, NULL);
            cancel_sent = true;
        }
    }
}

void obi_rpc_client_call_watch_cancel(obi_rpc_client_call *call, int fd)
{
    call->cancel_fd = fd;
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

bool obi_rpc_client_call_reply_metadata_is(const obi_rpc_client_call *call, const char *key,
                                           const char *value)
{
    const grpc_metadata_array *md = &call->initial_metadata;
    for (size_t i = 0; i < md->count; i++) {
        const grpc_slice *k = &md->metadata[i].key, *v = &md->metadata[i].value;
        if (GRPC_SLICE_LENGTH(*k) == strlen(key) &&
            !memcmp(GRPC_SLICE_START_PTR(*k), key, strlen(key)) &&
            GRPC_SLICE_LENGTH(*v) == strlen(value) &&
            !memcmp(GRPC_SLICE_START_PTR(*v), value, strlen(value)))
            return true;
    }
    return false;
}

const char *obi_rpc_client_call_method(const obi_rpc_client_call *call)
{
    return call->method;
}

int obi_rpc_client_call_start_metadata(obi_rpc_channel *channel, const char *method,
                                       unsigned timeout_ms, const obi_rpc_metadata *metadata,
                                       size_t n, obi_rpc_client_call **out, obi_error **err)
{
    grpc_channel *grpc = channel->channel;
    obi_rpc_client_call *call = calloc(1, sizeof *call);
    if (!call || !(call->method = strdup(method))) {
        free(call);
        return obi_error_set(err, -ENOMEM, "%s: out of memory", method);
    }
    grpc_metadata_array_init(&call->initial_metadata);
    grpc_metadata_array_init(&call->trailing_metadata);
    call->cancel_fd = -1;
    call->target = grpc_channel_get_target(grpc);
    call->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice method_slice = grpc_slice_from_static_string(call->method);
    gpr_timespec deadline = timeout_ms
                                ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_REALTIME);
    call->call = grpc_channel_create_call(grpc, NULL, GRPC_PROPAGATE_DEFAULTS, call->cq,
                                          method_slice, NULL, deadline, NULL);
    if (!call->call) {
        obi_rpc_client_call_free(call);
        return obi_error_set(err, -EIO, "%s: cannot create the call", method);
    }
    grpc_metadata md[OBI_RPC_MAX_METADATA];
    if (n > sizeof md / sizeof md[0]) {
        obi_rpc_client_call_free(call);
        return obi_error_set(err, -EINVAL, "%s: more than %zu metadata entries", method,
                             sizeof md / sizeof md[0]);
    }
    for (size_t i = 0; i < n; i++)
        md[i] = (grpc_metadata){.key = grpc_slice_from_static_string(metadata[i].key),
                                .value = grpc_slice_from_static_string(metadata[i].value)};
    grpc_op op = {.op = GRPC_OP_SEND_INITIAL_METADATA};
    op.data.send_initial_metadata.count = n;
    op.data.send_initial_metadata.metadata = md;
    if (!client_run_batch(call, &op, 1)) {
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
    bool ok = client_run_batch(call, &op, 1);
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

int obi_rpc_client_call_send_request(obi_rpc_client_call *call, uint8_t *data, size_t len,
                                     obi_error **err)
{
    (void)err;
    grpc_byte_buffer *buffer = obi_rpc_byte_buffer_own(data, len);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_MESSAGE;
    ops[0].data.send_message.send_message = buffer;
    ops[1].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    /* A failure is not final: a server may answer and end the call before our half-close
     * is through (it needs nothing more from us), and then fails this batch although its
     * responses and an OK status are on their way. What the server sent is read next; a call
     * that really failed ends in a status that says why. */
    (void)client_run_batch(call, ops, 2);
    grpc_byte_buffer_destroy(buffer);
    return 0;
}

int obi_rpc_client_call_close_send(obi_rpc_client_call *call, obi_error **err)
{
    grpc_op op = {.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT};
    if (!client_run_batch(call, &op, 1)) {
        int r = obi_rpc_client_call_finish(call, err);
        return r < 0 ? r
                     : obi_error_set(err, -EPROTO, "%s: cannot close the request stream",
                                     call->method);
    }
    return 0;
}

/* Receives the call's next message into *buffer (NULL at the end of the stream), with the
 * initial metadata the first time; false when the batch failed. */
static bool receive_message(obi_rpc_client_call *call, grpc_byte_buffer **buffer)
{
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
    ops[n].data.recv_message.recv_message = buffer;
    n++;
    return client_run_batch(call, ops, n);
}

int obi_rpc_client_call_recv(obi_rpc_client_call *call, uint8_t **data, size_t *len,
                             obi_error **err)
{
    grpc_byte_buffer *buffer = NULL;
    bool ok = receive_message(call, &buffer);
    if (!ok || !buffer) {
        call->read_closed = true;
        if (buffer)
            grpc_byte_buffer_destroy(buffer);
        /* The end of the stream, or a failure: either way the status tells. */
        int r = obi_rpc_client_call_finish(call, err);
        return r < 0 ? r : 0;
    }
    obi_rpc_message message;
    if (obi_rpc_byte_buffer_to_message(buffer, &message) < 0)
        return obi_error_set(err, -ENOMEM, "%s: out of memory", call->method);
    *data = message.data;
    *len = message.len;
    return 1;
}

/* Receives and drops what the server sent that nobody read: gRPC hands out the status only
 * once every message before it was received, so a status asked for with messages still unread
 * (a server that answered while we were sending, a caller done reading early) never came. */
static void drain_messages(obi_rpc_client_call *call)
{
    while (!call->read_closed) {
        grpc_byte_buffer *buffer = NULL;
        if (!receive_message(call, &buffer) || !buffer)
            call->read_closed = true;
        if (buffer)
            grpc_byte_buffer_destroy(buffer);
    }
}

int obi_rpc_client_call_finish(obi_rpc_client_call *call, obi_error **err)
{
    if (call->finished)
        return 0;
    drain_messages(call);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    /* A status that ends the call before any response (a server that gave up on a stream we
     * were still sending) arrives only together with the initial metadata. */
    if (!call->initial_metadata_received) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata = &call->initial_metadata;
        n++;
        call->initial_metadata_received = true;
    }
    ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[n].data.recv_status_on_client.trailing_metadata = &call->trailing_metadata;
    ops[n].data.recv_status_on_client.status = &status;
    ops[n].data.recv_status_on_client.status_details = &details;
    ops[n].data.recv_status_on_client.error_string = &error_string;
    n++;
    bool ok = client_run_batch(call, ops, n);
    call->finished = true;
    int r = 0;
    if (!ok) {
        r = obi_error_set(err, -EIO, "%s: no status received", call->method);
    } else if (status != GRPC_STATUS_OK) {
        r = obi_rpc_status_error(err, status, (const char *)GRPC_SLICE_START_PTR(details),
                                 GRPC_SLICE_LENGTH(details), call->method, call->target,
                                 error_string);
    }
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    return r;
}
