/*
 * The unix-socket client transport (rpc_internal.h "client side"): gRPC over HTTP/2 on
 * libnghttp2, for grpc+unix:// addresses, linked into ocibuild-rpc-h2.so so that a CLI call to a
 * local daemon does not map libgrpc (docs/rpc.md "Client transports"). The service clients are
 * the same as on the libgrpc transport (grpc_client.c).
 *
 * Each call is its own connection, driven synchronously by the thread that uses the call: no
 * threads, no shared state, and a call's end (free, process exit) is the connection's end, which
 * the server sees as a cancel. HTTP/2 with prior knowledge: the client preface, SETTINGS and the
 * request's HEADERS go out at once. Messages are framed as gRPC does (one byte compressed flag,
 * never set here, four bytes big-endian length); the status comes in the trailers (or in the
 * headers of a Trailers-Only response). The deadline goes out as grpc-timeout and is also kept
 * here: past it the stream is reset (RST_STREAM CANCEL) and the call says DEADLINE_EXCEEDED.
 *
 * Memory: DATA is given back to flow control (WINDOW_UPDATE) only once it was taken as a message,
 * or while it belongs to the message being assembled, so a server can have at most its stream
 * window (STREAM_WINDOW) buffered here beyond the message the caller waits for (each at most
 * OBI_RPC_MAX_MESSAGE, checked on its prefix), however fast it sends and whatever the client is
 * doing meanwhile (a Put reads the socket too, for the server's WINDOW_UPDATEs).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/hex.h"
#include "rpc_internal.h"

/* Bytes read from the socket at once. */
#define READ_SIZE (64 * 1024)
/* The flow-control window offered for each stream and for the connection: several blob chunks
 * in flight, as the libgrpc channel's lookahead (obi_rpc_channel_args). */
#define STREAM_WINDOW (8 * OBI_RPC_CHUNK_SIZE)
#define CONNECTION_WINDOW (16 * OBI_RPC_CHUNK_SIZE)
/* Length of a message's prefix: compressed flag and big-endian length. */
#define PREFIX_LEN 5
/* Response metadata kept for reply_metadata_is. */
#define MAX_REPLY_METADATA 16

struct obi_rpc_channel {
    char *path;   /* the socket */
    char *target; /* "unix:PATH", for messages */
};

typedef struct header {
    char *key, *value;
} header;

struct obi_rpc_client_call {
    char *method;
    const char *target; /* the channel's */
    int fd;
    nghttp2_session *session;
    int32_t stream_id;
    int cancel_fd; /* -1, or: readable = cancel the call */
    struct timespec deadline;
    bool has_deadline;

    /* Sending: the message being sent (prefix, then payload), and whether the request stream
     * is to end after it (half-close) and has. */
    uint8_t prefix[PREFIX_LEN];
    uint8_t *payload;
    size_t payload_len, sent; /* sent counts prefix and payload */
    bool sending, close_send, eof_queued;

    /* Receiving: DATA not yet taken as messages; counts of the stream's DATA bytes taken (as
     * messages or dropped) and given back to flow control. */
    obi_buf in;
    size_t in_off;
    bool discard; /* finishing: DATA is dropped */
    uint64_t taken, given_back;

    /* The response. */
    header reply[MAX_REPLY_METADATA];
    size_t n_reply;
    bool got_headers;
    int http_status;
    int grpc_status; /* -1 until received */
    char *grpc_message;
    bool stream_closed;
    uint32_t reset_code; /* the HTTP/2 error code the stream closed with */

    /* Set when the call ended on this side: a deadline, a cancel, a broken server. */
    bool ended_locally;
    grpc_status_code local_status;
    char *local_why;

    bool finished;
};

/* ---- channel ---- */

static int unix_path_from_url(const obi_url *url, char **out, obi_error **err)
{
    if (strcmp(url->scheme, OBI_RPC_SCHEME_UNIX) != 0)
        return obi_error_set(err, -EINVAL, "%s://: the unix-socket gRPC client speaks %s:// only",
                             url->scheme, OBI_RPC_SCHEME_UNIX);
    if (!*url->host && !*url->path)
        return obi_error_set(err, -EINVAL, "grpc+unix://: missing socket path (grpc+unix:///PATH)");
    if (url->port)
        return obi_error_set(err, -EINVAL, "grpc+unix://%s:%s: a unix socket has no port",
                             url->host, url->port);
    for (size_t i = 0; i < url->n_params; i++)
        if (strcmp(url->params[i].key, "api") != 0)
            return obi_error_set(err, -EINVAL,
                                 "%s://: unknown parameter \"%s\" (TLS options need grpc+https://)",
                                 url->scheme, url->params[i].key);
    if (asprintf(out, "%s%s", url->host, url->path) < 0)
        return obi_error_set(err, -ENOMEM, "channel target: out of memory");
    return 0;
}

int obi_rpc_channel_open(const obi_url *url, obi_rpc_channel **out, obi_error **err)
{
    cleanup_free char *path = NULL;
    int r = unix_path_from_url(url, &path, err);
    if (r < 0)
        return r;
    obi_rpc_channel *channel = calloc(1, sizeof *channel);
    if (!channel || asprintf(&channel->target, "unix:%s", path) < 0) {
        free(channel);
        return obi_error_set(err, -ENOMEM, "channel target: out of memory");
    }
    channel->path = steal_pointer(&path);
    *out = channel;
    return 0;
}

void obi_rpc_channel_close(obi_rpc_channel *channel)
{
    if (!channel)
        return;
    free(channel->path);
    free(channel->target);
    free(channel);
}

/* ---- ending a call on this side ---- */

/* Ends the call with status and why (the first reason wins) and resets the stream if it is still
 * open, which tells the server to stop (reset_code: CANCEL for a cancel or deadline, else the
 * protocol error). A broken connection after the stream closed is no reason: see
 * transport_failed. */
static void end_locally(obi_rpc_client_call *call, grpc_status_code status, uint32_t reset_code,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void end_locally(obi_rpc_client_call *call, grpc_status_code status, uint32_t reset_code,
                        const char *fmt, ...)
{
    if (call->ended_locally)
        return;
    call->ended_locally = true;
    call->local_status = status;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&call->local_why, fmt, ap) < 0)
        call->local_why = NULL;
    va_end(ap);
    if (call->session && call->stream_id > 0 && !call->stream_closed)
        nghttp2_submit_rst_stream(call->session, NGHTTP2_FLAG_NONE, call->stream_id, reset_code);
}

/* The connection broke (or the server broke HTTP/2): that ends the call unless its stream had
 * closed already, and then the status it carried stands. */
#define transport_failed(call, ...)                                                                \
    do {                                                                                           \
        if (!(call)->stream_closed)                                                                \
            end_locally(call, __VA_ARGS__);                                                        \
    } while (0)

/* ---- nghttp2 callbacks ---- */

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    (void)session;
    (void)flags;
    obi_rpc_client_call *call = user_data;
    ssize_t n = send(call->fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return NGHTTP2_ERR_WOULDBLOCK;
    if (n < 0) {
        transport_failed(
            call, GRPC_STATUS_UNAVAILABLE, NGHTTP2_CANCEL, "%ssend: %s",
            errno == EPIPE || errno == ECONNRESET ? "the server closed the connection: " : "",
            strerror(errno));
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return n;
}

/* The request body: the message being sent, then (half-close) the end of the stream. */
static ssize_t read_request_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                                 size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                                 void *user_data)
{
    (void)session;
    (void)stream_id;
    (void)source;
    obi_rpc_client_call *call = user_data;
    size_t total = PREFIX_LEN + call->payload_len;
    if (!call->sending || call->sent == total) {
        if (call->sending) {
            free(call->payload);
            call->payload = NULL;
            call->sending = false;
        }
        if (call->close_send) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            call->eof_queued = true;
            return 0;
        }
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = 0;
    while (n < length && call->sent < total) {
        size_t chunk;
        if (call->sent < PREFIX_LEN) {
            chunk = PREFIX_LEN - call->sent;
            if (chunk > length - n)
                chunk = length - n;
            memcpy(buf + n, call->prefix + call->sent, chunk);
        } else {
            size_t off = call->sent - PREFIX_LEN;
            chunk = call->payload_len - off;
            if (chunk > length - n)
                chunk = length - n;
            memcpy(buf + n, call->payload + off, chunk);
        }
        n += chunk;
        call->sent += chunk;
    }
    if (call->sent == total) { /* all of it copied out: the end of the stream may follow */
        free(call->payload);
        call->payload = NULL;
        call->sending = false;
        if (call->close_send) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            call->eof_queued = true;
        }
    }
    return (ssize_t)n;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)session;
    (void)flags;
    obi_rpc_client_call *call = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != call->stream_id)
        return 0;
    bool trailers = frame->headers.cat == NGHTTP2_HCAT_HEADERS;
    if (namelen == 7 && !memcmp(name, ":status", 7)) {
        char text[8] = {0};
        memcpy(text, value, valuelen < 7 ? valuelen : 7);
        char *end;
        long status = strtol(text, &end, 10);
        call->http_status = !*end && status > 0 && status < 1000 ? (int)status : -1;
    } else if (namelen == 11 && !memcmp(name, "grpc-status", 11)) {
        char text[12] = {0};
        memcpy(text, value, valuelen < 11 ? valuelen : 11);
        char *end;
        long status = strtol(text, &end, 10);
        call->grpc_status = valuelen > 0 && !*end && status >= 0 && status <= 16
                                ? (int)status
                                : GRPC_STATUS_UNKNOWN;
    } else if (namelen == 12 && !memcmp(name, "grpc-message", 12)) {
        free(call->grpc_message);
        call->grpc_message = strndup((const char *)value, valuelen);
    } else if (!trailers && call->n_reply < MAX_REPLY_METADATA) {
        header *h = &call->reply[call->n_reply];
        h->key = strndup((const char *)name, namelen);
        h->value = strndup((const char *)value, valuelen);
        if (h->key && h->value) {
            call->n_reply++;
        } else {
            free(h->key);
            free(h->value);
        }
    }
    return 0;
}

/* A GOAWAY with an error, either way: the connection is over, and why. */
static void on_goaway(obi_rpc_client_call *call, const nghttp2_goaway *goaway, const char *who)
{
    if (goaway->error_code == NGHTTP2_NO_ERROR)
        return;
    transport_failed(call, GRPC_STATUS_INTERNAL, NGHTTP2_PROTOCOL_ERROR, "HTTP/2 %s by %s%s%.*s",
                     nghttp2_http2_strerror(goaway->error_code), who,
                     goaway->opaque_data_len ? ": " : "", (int)goaway->opaque_data_len,
                     (const char *)goaway->opaque_data);
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        on_goaway(user_data, &frame->goaway, "this client (the server broke the protocol)");
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)session;
    obi_rpc_client_call *call = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        on_goaway(call, &frame->goaway, "the server");
    if (frame->hd.type == NGHTTP2_HEADERS && frame->hd.stream_id == call->stream_id &&
        frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
        call->got_headers = true;
    return 0;
}

/* Takes the next message's prefix apart: its length, or a protocol error ending the call. */
static bool check_prefix(obi_rpc_client_call *call, const uint8_t *p, size_t *len)
{
    uint32_t n = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    if (p[0] != 0) {
        end_locally(call, GRPC_STATUS_INTERNAL, NGHTTP2_PROTOCOL_ERROR,
                    "a response message with compressed flag %u: no compression was negotiated",
                    p[0]);
        return false;
    }
    if (n > OBI_RPC_MAX_MESSAGE) {
        end_locally(call, GRPC_STATUS_RESOURCE_EXHAUSTED, NGHTTP2_CANCEL,
                    "a response message of %u bytes is larger than the limit of %d", n,
                    OBI_RPC_MAX_MESSAGE);
        return false;
    }
    *len = n;
    return true;
}

/* Gives back to flow control what was taken and what arrived of the message being assembled
 * (which must complete, however large); what arrived beyond it waits in the window. */
static void give_back(obi_rpc_client_call *call)
{
    size_t avail = call->in.len - call->in_off, current = PREFIX_LEN, msg_len;
    if (avail >= PREFIX_LEN && check_prefix(call, call->in.data + call->in_off, &msg_len))
        current += msg_len;
    uint64_t allowed = call->taken + (avail < current ? avail : current);
    if (allowed > call->given_back &&
        nghttp2_session_consume(call->session, call->stream_id, allowed - call->given_back) == 0)
        call->given_back = allowed;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    obi_rpc_client_call *call = user_data;
    if (stream_id != call->stream_id || call->discard || call->ended_locally) {
        /* Nobody reads it: dropped, and given back at once. */
        (void)nghttp2_session_consume(session, stream_id, len);
        if (stream_id == call->stream_id) {
            call->taken += len;
            call->given_back += len;
        }
        return 0;
    }
    if (obi_buf_append(&call->in, data, len) < 0) {
        end_locally(call, GRPC_STATUS_RESOURCE_EXHAUSTED, NGHTTP2_CANCEL,
                    "out of memory receiving a message");
        return 0;
    }
    /* A prefix is checked (in give_back) as soon as it is there, not when its message is
     * complete. */
    give_back(call);
    return 0;
}

/* Drops what was received and not taken (the call is over for the caller). */
static void drop_received(obi_rpc_client_call *call)
{
    call->taken += call->in.len - call->in_off;
    call->in.len = call->in_off = 0;
    if (call->session && call->taken > call->given_back &&
        nghttp2_session_consume(call->session, call->stream_id, call->taken - call->given_back) ==
            0)
        call->given_back = call->taken;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    (void)session;
    obi_rpc_client_call *call = user_data;
    if (stream_id == call->stream_id) {
        call->stream_closed = true;
        call->reset_code = error_code;
    }
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
                    void *user_data)
{
    (void)session;
    (void)lib_error_code;
    obi_rpc_client_call *call = user_data;
    transport_failed(call, GRPC_STATUS_INTERNAL, NGHTTP2_PROTOCOL_ERROR, "HTTP/2: %.*s", (int)len,
                     msg);
    return 0;
}

/* ---- driving the connection ---- */

/* A complete message waits in the receive buffer (its length in *len). */
static bool message_ready(obi_rpc_client_call *call, size_t *len)
{
    size_t avail = call->in.len - call->in_off;
    if (avail < PREFIX_LEN || !check_prefix(call, call->in.data + call->in_off, len))
        return false;
    return avail - PREFIX_LEN >= *len;
}

static bool call_over(const obi_rpc_client_call *call)
{
    return call->stream_closed || call->ended_locally;
}

/* Milliseconds until the deadline for poll (-1: none); 0 once it passed. */
static int ms_to_deadline(const obi_rpc_client_call *call)
{
    if (!call->has_deadline)
        return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ms = (call->deadline.tv_sec - now.tv_sec) * 1000LL +
                   (call->deadline.tv_nsec - now.tv_nsec + 999999) / 1000000;
    return ms <= 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Writes what nghttp2 has queued, as far as the socket takes it. */
static void flush(obi_rpc_client_call *call)
{
    int r = nghttp2_session_send(call->session);
    if (r < 0)
        transport_failed(call, GRPC_STATUS_UNAVAILABLE, NGHTTP2_CANCEL, "HTTP/2: %s",
                         nghttp2_strerror(r));
}

/* Reads what the socket has and feeds it to nghttp2. */
static void read_some(obi_rpc_client_call *call)
{
    uint8_t buf[READ_SIZE];
    ssize_t n = recv(call->fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (n == 0)
            transport_failed(call, GRPC_STATUS_UNAVAILABLE, NGHTTP2_CANCEL,
                             "the server closed the connection");
        else
            transport_failed(call, GRPC_STATUS_UNAVAILABLE, NGHTTP2_CANCEL, "%srecv: %s",
                             errno == ECONNRESET ? "the server closed the connection: " : "",
                             strerror(errno));
        return;
    }
    ssize_t used = nghttp2_session_mem_recv(call->session, buf, (size_t)n);
    if (used < 0)
        transport_failed(call, GRPC_STATUS_INTERNAL, NGHTTP2_PROTOCOL_ERROR, "HTTP/2: %s",
                         nghttp2_strerror((int)used));
}

/* Runs the connection until done(call) or the call is over: sends what is queued, reads what
 * arrives, watches the deadline and the cancel fd. */
static void pump(obi_rpc_client_call *call, bool (*done)(obi_rpc_client_call *))
{
    for (;;) {
        flush(call);
        if (done(call) || call_over(call))
            return;
        if (!nghttp2_session_want_read(call->session) &&
            !nghttp2_session_want_write(call->session)) {
            end_locally(call, GRPC_STATUS_UNAVAILABLE, NGHTTP2_CANCEL,
                        "the connection ended (GOAWAY)");
            return;
        }
        struct pollfd fds[2] = {
            {call->fd, POLLIN | (nghttp2_session_want_write(call->session) ? POLLOUT : 0), 0},
            {call->cancel_fd, POLLIN, 0},
        };
        int timeout = ms_to_deadline(call);
        int n = timeout == 0 ? 0 : poll(fds, call->cancel_fd >= 0 ? 2 : 1, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            end_locally(call, GRPC_STATUS_INTERNAL, NGHTTP2_CANCEL, "poll: %s", strerror(errno));
            return;
        }
        if (n == 0 && call->has_deadline) { /* a server busy sending does not outlive it either */
            end_locally(call, GRPC_STATUS_DEADLINE_EXCEEDED, NGHTTP2_CANCEL, "deadline exceeded");
            flush(call);
            return;
        }
        if (call->cancel_fd >= 0 && (fds[1].revents & POLLIN)) {
            end_locally(call, GRPC_STATUS_CANCELLED, NGHTTP2_CANCEL, "cancelled");
            flush(call);
            return;
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
            read_some(call);
    }
}

/* ---- calls ---- */

static int connect_unix(const char *path, int *out, obi_error **err)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return obi_error_set(err, -ENAMETOOLONG, "gRPC server unix:%s: the path is too long", path);
    strcpy(addr.sun_path, path);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "gRPC server unix:%s: socket", path);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        return obi_error_set(err, obi_rpc_errno_from_status(GRPC_STATUS_UNAVAILABLE),
                             "gRPC server unix:%s: UNAVAILABLE: connect: %s", path,
                             strerror(errno));
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return obi_error_set_errno(err, errno, "gRPC server unix:%s: O_NONBLOCK", path);
    *out = steal_fd(&fd);
    return 0;
}

static int session_new(obi_rpc_client_call *call, obi_error **err)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        return obi_error_set(err, -ENOMEM, "%s: out of memory", call->method);
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
    /* Flow control is ours: DATA counts as consumed when taken (give_back). */
    nghttp2_option *options;
    int r = nghttp2_option_new(&options);
    if (r != 0) {
        nghttp2_session_callbacks_del(cbs);
        return obi_error_set(err, -ENOMEM, "%s: out of memory", call->method);
    }
    nghttp2_option_set_no_auto_window_update(options, 1);
    r = nghttp2_session_client_new2(&call->session, cbs, call, options);
    nghttp2_option_del(options);
    nghttp2_session_callbacks_del(cbs);
    if (r != 0)
        return obi_error_set(err, -ENOMEM, "%s: HTTP/2 session: %s", call->method,
                             nghttp2_strerror(r));
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
    };
    r = nghttp2_submit_settings(call->session, NGHTTP2_FLAG_NONE, settings,
                                sizeof settings / sizeof settings[0]);
    if (r == 0)
        r = nghttp2_session_set_local_window_size(call->session, NGHTTP2_FLAG_NONE, 0,
                                                  CONNECTION_WINDOW);
    if (r != 0)
        return obi_error_set(err, -EIO, "%s: HTTP/2 settings: %s", call->method,
                             nghttp2_strerror(r));
    return 0;
}

/* grpc-timeout: at most 8 digits and a unit. */
static void format_timeout(unsigned timeout_ms, char *out, size_t size)
{
    if (timeout_ms < 100000000u)
        snprintf(out, size, "%um", timeout_ms);
    else
        snprintf(out, size, "%uS", timeout_ms / 1000u);
}

#define NV(k, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

int obi_rpc_client_call_start_metadata(obi_rpc_channel *channel, const char *method,
                                       unsigned timeout_ms, const obi_rpc_metadata *metadata,
                                       size_t n, obi_rpc_client_call **out, obi_error **err)
{
    if (n > OBI_RPC_MAX_METADATA)
        return obi_error_set(err, -EINVAL, "%s: more than %d metadata entries", method,
                             OBI_RPC_MAX_METADATA);
    cleanup_rpc_client_call obi_rpc_client_call *call = calloc(1, sizeof *call);
    if (!call)
        return obi_error_set(err, -ENOMEM, "%s: out of memory", method);
    call->fd = -1;
    call->cancel_fd = -1;
    call->grpc_status = -1;
    call->target = channel->target;
    call->in = (obi_buf)OBI_BUF_INIT;
    if (!(call->method = strdup(method)))
        return obi_error_set(err, -ENOMEM, "%s: out of memory", method);
    if (timeout_ms) {
        clock_gettime(CLOCK_MONOTONIC, &call->deadline);
        call->deadline.tv_sec += timeout_ms / 1000;
        call->deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (call->deadline.tv_nsec >= 1000000000L) {
            call->deadline.tv_sec++;
            call->deadline.tv_nsec -= 1000000000L;
        }
        call->has_deadline = true;
    }
    int r = connect_unix(channel->path, &call->fd, err);
    if (r >= 0)
        r = session_new(call, err);
    if (r < 0)
        return r;
    char timeout[16];
    format_timeout(timeout_ms, timeout, sizeof timeout);
    nghttp2_nv nva[8 + OBI_RPC_MAX_METADATA] = {
        /* 7 fixed, grpc-timeout, the call's */
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", method),
        NV(":authority", "localhost"),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "ocibuild-h2"),
    };
    size_t nv = 7;
    if (timeout_ms)
        nva[nv++] = (nghttp2_nv)NV("grpc-timeout", timeout);
    for (size_t i = 0; i < n; i++)
        nva[nv++] = (nghttp2_nv)NV(metadata[i].key, metadata[i].value);
    nghttp2_data_provider body = {.read_callback = read_request_body};
    call->stream_id = nghttp2_submit_request(call->session, NULL, nva, nv, &body, call);
    if (call->stream_id < 0)
        return obi_error_set(err, -EIO, "%s: cannot start the call: %s", method,
                             nghttp2_strerror(call->stream_id));
    /* The preface, SETTINGS and HEADERS go out now (they fit the socket's buffer). */
    flush(call);
    *out = steal_pointer(&call);
    return 0;
}

const char *obi_rpc_client_call_method(const obi_rpc_client_call *call)
{
    return call->method;
}

bool obi_rpc_client_call_reply_metadata_is(const obi_rpc_client_call *call, const char *key,
                                           const char *value)
{
    for (size_t i = 0; i < call->n_reply; i++)
        if (!strcmp(call->reply[i].key, key) && !strcmp(call->reply[i].value, value))
            return true;
    return false;
}

void obi_rpc_client_call_watch_cancel(obi_rpc_client_call *call, int fd)
{
    call->cancel_fd = fd;
}

static bool message_sent(obi_rpc_client_call *call)
{
    return !call->sending;
}

static bool eof_sent(obi_rpc_client_call *call)
{
    return call->eof_queued;
}

/* Queues a message (and with close the end of the request stream) and sends it. */
static void send_queued(obi_rpc_client_call *call, uint8_t *data, size_t len, bool close)
{
    call->prefix[0] = 0;
    call->prefix[1] = (uint8_t)(len >> 24);
    call->prefix[2] = (uint8_t)(len >> 16);
    call->prefix[3] = (uint8_t)(len >> 8);
    call->prefix[4] = (uint8_t)len;
    call->payload = data;
    call->payload_len = len;
    call->sent = 0;
    call->sending = true;
    call->close_send = close;
    nghttp2_session_resume_data(call->session, call->stream_id);
    pump(call, close ? eof_sent : message_sent);
}

int obi_rpc_client_call_send_owned(obi_rpc_client_call *call, uint8_t *data, size_t len,
                                   obi_error **err)
{
    if (call->sending || call->close_send || call_over(call)) {
        free(data);
        int r = obi_rpc_client_call_finish(call, err);
        return r < 0 ? r
                     : obi_error_set(err, -EPROTO, "%s: the server ended the call early",
                                     call->method);
    }
    if (len > OBI_RPC_MAX_MESSAGE) {
        free(data);
        return obi_error_set(err, -EMSGSIZE, "%s: a message of %zu bytes is larger than %d",
                             call->method, len, OBI_RPC_MAX_MESSAGE);
    }
    send_queued(call, data, len, false);
    if (call_over(call) && call->sending) {
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
    if (call->sending || call->close_send || call_over(call)) {
        free(data);
        return 0; /* the status says why */
    }
    send_queued(call, data, len, true);
    return 0;
}

int obi_rpc_client_call_close_send(obi_rpc_client_call *call, obi_error **err)
{
    if (!call->close_send && !call_over(call)) {
        call->close_send = true;
        nghttp2_session_resume_data(call->session, call->stream_id);
        pump(call, eof_sent);
    }
    if (!call->eof_queued) {
        int r = obi_rpc_client_call_finish(call, err);
        return r < 0 ? r
                     : obi_error_set(err, -EPROTO, "%s: cannot close the request stream",
                                     call->method);
    }
    return 0;
}

static bool message_arrived(obi_rpc_client_call *call)
{
    size_t len;
    return message_ready(call, &len);
}

int obi_rpc_client_call_recv(obi_rpc_client_call *call, uint8_t **data, size_t *len,
                             obi_error **err)
{
    pump(call, message_arrived);
    size_t msg_len;
    if (!call->ended_locally && message_ready(call, &msg_len)) {
        uint8_t *copy = malloc(msg_len ? msg_len : 1);
        if (!copy)
            return obi_error_set(err, -ENOMEM, "%s: out of memory", call->method);
        memcpy(copy, call->in.data + call->in_off + PREFIX_LEN, msg_len);
        call->in_off += PREFIX_LEN + msg_len;
        call->taken += PREFIX_LEN + msg_len;
        if (call->in_off == call->in.len) {
            call->in.len = call->in_off = 0;
        } else if (call->in_off > READ_SIZE) {
            memmove(call->in.data, call->in.data + call->in_off, call->in.len - call->in_off);
            call->in.len -= call->in_off;
            call->in_off = 0;
        }
        give_back(call);
        *data = copy;
        *len = msg_len;
        return 1;
    }
    size_t left = call->in.len - call->in_off;
    if (!call->ended_locally && left > 0)
        end_locally(call, GRPC_STATUS_INTERNAL, NGHTTP2_PROTOCOL_ERROR,
                    "the response stream ended inside a message (%zu bytes of it)", left);
    int r = obi_rpc_client_call_finish(call, err);
    return r < 0 ? r : 0;
}

static bool stream_done(obi_rpc_client_call *call)
{
    return call->stream_closed;
}

/* Percent-decodes grpc-message in place; a '%' not followed by two hex digits stays. */
static void percent_decode(char *s)
{
    char *out = s;
    for (const char *p = s; *p; p++) {
        int high = p[0] == '%' ? obi_hex_digit_value(p[1]) : -1;
        int low = high >= 0 ? obi_hex_digit_value(p[2]) : -1;
        if (low >= 0) {
            *out++ = (char)(high << 4 | low);
            p += 2;
        } else {
            *out++ = *p;
        }
    }
    *out = '\0';
}

/* The status of an HTTP response without grpc-status (the gRPC spec's mapping). */
static grpc_status_code status_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return GRPC_STATUS_INTERNAL;
    case 401:
        return GRPC_STATUS_UNAUTHENTICATED;
    case 403:
        return GRPC_STATUS_PERMISSION_DENIED;
    case 404:
        return GRPC_STATUS_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return GRPC_STATUS_UNAVAILABLE;
    default:
        return GRPC_STATUS_UNKNOWN;
    }
}

/* The status of a stream reset without grpc-status (the gRPC spec's mapping: ENHANCE_YOUR_CALM
 * is a server out of a resource, as libgrpc's resource quota says it). */
static grpc_status_code status_from_reset(uint32_t code)
{
    switch (code) {
    case NGHTTP2_CANCEL:
        return GRPC_STATUS_CANCELLED;
    case NGHTTP2_REFUSED_STREAM:
        return GRPC_STATUS_UNAVAILABLE;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
        return GRPC_STATUS_PERMISSION_DENIED;
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

/* The status of a stream the server reset without grpc-status, and *why (malloc'd; NULL when
 * out of memory) in words. The reset is all the server said, so they name the server and its
 * RST_STREAM code: ENHANCE_YOUR_CALM is how libgrpc's server sheds a stream its resource quota
 * (memory) cannot take, where it could as well have answered RESOURCE_EXHAUSTED itself. */
static grpc_status_code reset_status(const obi_rpc_client_call *call, char **why)
{
    grpc_status_code status = status_from_reset(call->reset_code);
    /* The server keeps the deadline too and may reset first: it is still the deadline. */
    if (status == GRPC_STATUS_CANCELLED && call->has_deadline && ms_to_deadline(call) == 0) {
        *why = strdup("deadline exceeded (the server reset the stream)");
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    }
    const char *meaning = call->reset_code == NGHTTP2_ENHANCE_YOUR_CALM
                              ? ": the server is out of a resource (its memory quota)"
                              : "";
    if (asprintf(why, "the server at %s reset the stream with RST_STREAM %s (code %u)%s",
                 call->target, nghttp2_http2_strerror(call->reset_code), call->reset_code,
                 meaning) < 0)
        *why = NULL;
    return status;
}

int obi_rpc_client_call_finish(obi_rpc_client_call *call, obi_error **err)
{
    if (call->finished)
        return 0;
    call->discard = true; /* unread messages are dropped */
    drop_received(call);
    pump(call, stream_done);
    call->finished = true;
    if (call->ended_locally)
        return obi_rpc_status_error(err, call->local_status, NULL, 0, call->method, call->target,
                                    call->local_why);
    if (call->grpc_status == GRPC_STATUS_OK)
        return 0;
    if (call->grpc_status > 0) {
        if (call->grpc_message)
            percent_decode(call->grpc_message);
        const char *message = call->grpc_message ? call->grpc_message : "";
        return obi_rpc_status_error(err, call->grpc_status, message, strlen(message), call->method,
                                    call->target, NULL);
    }
    cleanup_free char *why = NULL;
    grpc_status_code status = GRPC_STATUS_INTERNAL;
    if (call->http_status && call->http_status != 200) {
        status = status_from_http(call->http_status);
        if (asprintf(&why, "HTTP status %d", call->http_status) < 0)
            why = NULL;
    } else if (call->reset_code) {
        status = reset_status(call, &why);
    } else {
        why = strdup("the response has no grpc-status");
    }
    return obi_rpc_status_error(err, status, NULL, 0, call->method, call->target, why);
}

void obi_rpc_client_call_free(obi_rpc_client_call *call)
{
    if (!call)
        return;
    if (call->session) {
        /* An unfinished call is reset; closing the connection would tell the server too. */
        if (!call->finished && !call_over(call))
            end_locally(call, GRPC_STATUS_CANCELLED, NGHTTP2_CANCEL, "cancelled");
        (void)nghttp2_session_send(call->session);
        nghttp2_session_del(call->session);
    }
    if (call->fd >= 0)
        close(call->fd);
    free(call->payload);
    obi_buf_free(&call->in);
    for (size_t i = 0; i < call->n_reply; i++) {
        free(call->reply[i].key);
        free(call->reply[i].value);
    }
    free(call->grpc_message);
    free(call->local_why);
    free(call->method);
    free(call);
}
