/*
 * The generic gRPC server core: listens (unix sockets, TCP, TLS), registers the methods of the
 * services it was given, and drives every call as a short sequence of steps, so that no thread
 * ever waits for a client.
 *
 * One event thread owns the completion queue every accepted call and every batch reports to. A
 * completed batch becomes a step of its call — "a request message arrived", "the client closed
 * its stream", "the response went out" — queued on the worker pool of the call's method (castore:
 * blobs and directories; build: DoBuild). The worker runs the handler's callback for that step
 * (rpc_internal.h), which does the store or build work and says what comes next; the worker
 * starts that batch and moves on. Waiting for a client, for its next message or for it to read
 * our response, costs a list entry, not a thread: idle and slow clients cannot occupy workers,
 * and a DoBuild holds a build worker only once its request has arrived.
 *
 * Limits (docs/rpc.md "Limits"): a call waiting on its client longer than the idle timeout is
 * cancelled (the event thread looks every tick); every received message is charged to one memory
 * budget shared by all calls until its step is over, and what handlers keep longer (a Directory
 * Put's directories) until the call ends; a message that does not fit is refused with
 * RESOURCE_EXHAUSTED, and gRPC gets the same budget as its resource quota for its own buffers.
 *
 * Cancellation: every call has RECV_CLOSE_ON_SERVER outstanding from its start; when that reports
 * the call cancelled (the client cancelled, disconnected or passed its deadline, or we cancelled
 * it: idle, shutdown), a build call's cancel fd becomes readable, which its build watches.
 *
 * Lifetime: a call is reference-counted by its batches in flight and its queued or running step;
 * whoever drops the last reference logs the call's line and frees it. Nobody touches a call after
 * starting a batch on it other than through the reference it holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/number.h"
#include "rpc_internal.h"

#define DEFAULT_CASTORE_WORKERS 16
#define DEFAULT_BUILD_WORKERS 16
#define DEFAULT_IDLE_TIMEOUT_MS 30000
#define DEFAULT_MAX_MESSAGE_BYTES ((size_t)16 << 20)
#define DEFAULT_MAX_INFLIGHT_BYTES ((size_t)512 << 20)
/* HTTP/2 streams one connection may have open at once (its SETTINGS_MAX_CONCURRENT_STREAMS). */
#define MAX_STREAMS_PER_CONNECTION 128
/* Requests kept outstanding per method, so bursts are matched without a round trip through the
 * event thread. */
#define REQUESTS_PER_METHOD 4
/* After a cancellation, handlers that do not notice it get this long before we give up (the
 * daemon's watchdog ends the process a few seconds later: docs/rpc.md "Shutdown"). */
#define CANCEL_WAIT_MS 5000
#define MAX_LISTENERS 16
/* Messages a running step streams (obi_rpc_call_push) wait in memory up to this many bytes per
 * call; beyond, the pushing thread (a build's log reader) waits for the client to read. */
#define PUSH_MAX_QUEUED ((size_t)1 << 20)

/* One method of one generation: every obi_rpc_method is registered once per generation. */
typedef struct registered_method {
    const obi_rpc_method *method;
    obi_rpc_api api;
    char path[OBI_RPC_MAX_PATH]; /* "/snix.castore.v1.BlobService/Stat" */
    void *ctx;
    void *handle; /* from grpc_server_register_method; NULL for the catch-all */
} registered_method;

typedef enum tag_kind { TAG_ACCEPT, TAG_RECV, TAG_SEND, TAG_CLOSE, TAG_PUSH } tag_kind;
typedef struct call_tag {
    tag_kind kind;
    obi_rpc_call *call;
} call_tag;

typedef enum step_kind { STEP_MESSAGE, STEP_END, STEP_SENT } step_kind;

/* A message pushed by a running step, waiting for its turn. */
typedef struct pushed_message {
    struct pushed_message *next;
    uint8_t *data;
    size_t len;
} pushed_message;

struct obi_rpc_call {
    obi_rpc_server *server;
    const registered_method *registered;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array request_metadata;
    grpc_call_details details; /* filled for unregistered methods only */
    call_tag accept_tag, recv_tag, send_tag, close_tag, push_tag;
    struct timespec started;
    atomic_uint refs; /* batches in flight + a queued or running step */

    step_kind step;
    grpc_byte_buffer *received; /* the message of a STEP_MESSAGE */
    size_t received_charge;     /* its bytes, charged to the budget until the step is over */
    size_t held;                /* bytes the handler keeps charged until the end */

    uint8_t *queued; /* the response the next send carries (malloc'd), or NULL */
    size_t queued_len;
    grpc_byte_buffer *sending; /* a send in flight owns it */
    bool initial_metadata_sent;
    grpc_metadata reply_metadata; /* sent with the initial metadata when n_reply_metadata is 1 */
    size_t n_reply_metadata;
    bool finishing; /* the status batch was started */
    grpc_status_code status;
    char *status_message; /* clipped, as sent; NULL for OK */
    grpc_slice status_details;

    void *state;
    void (*free_state)(void *);

    int close_cancelled;      /* written by RECV_CLOSE_ON_SERVER */
    atomic_bool cancelled;    /* the call is over for the client */
    int cancel_event;         /* eventfd, build calls only; -1 otherwise */
    atomic_llong waiting_ms;  /* waiting on the client since (monotonic ms); 0: not waiting */
    const char *waiting_for;  /* what for, in the idle timeout's message */
    atomic_bool idle_expired; /* cancelled by the idle timeout */

    /* Messages the running step streams (obi_rpc_call_push), one send at a time, under
     * push_lock; the step is over only once they went out (call_push_drain). */
    pthread_mutex_t push_lock;
    pthread_cond_t push_progress; /* a pushed message went out, or the call ended */
    pushed_message *push_head, *push_tail;
    size_t push_queued;             /* bytes in the list */
    grpc_byte_buffer *push_sending; /* the one in flight, or NULL */
    bool push_used, push_failed;

    obi_rpc_call *live_prev, *live_next; /* server->live, under live_lock */
    obi_rpc_call *queue_next;            /* a pool's queue */
};

typedef struct worker_pool {
    obi_rpc_server *server;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    obi_rpc_call *head, *tail;
    pthread_t *threads;
    unsigned n_threads, n_started;
    bool stop;
} worker_pool;

/* A socket we accept on ourselves (unix sockets and adopted ones) and hand each connection to
 * gRPC with grpc_server_add_channel_from_fd. */
typedef struct listener {
    int fd;
    char *path; /* a unix socket file we created and remove at shutdown; NULL otherwise */
    dev_t dev;
    ino_t ino;
} listener;

struct obi_rpc_server {
    obi_rpc_server_options options;
    grpc_server *grpc;
    grpc_completion_queue *cq; /* every accept and every batch */
    grpc_resource_quota *quota;
    grpc_server_credentials *tls; /* NULL: TCP listeners are plain */
    bool client_certificates;     /* tls requires and verifies them */
    registered_method *methods;
    size_t n_methods, methods_cap;
    obi_rpc_path_info_ctx path_info_ctx; /* the PathInfoService's ctx */
    worker_pool pools[2];
    pthread_t event_thread;
    bool event_thread_started;
    listener listeners[MAX_LISTENERS];
    size_t n_listeners;
    int acceptor_wake[2]; /* pipe: written to stop the acceptor */
    pthread_t acceptor;
    bool acceptor_started;
    bool started;
    bool finished; /* shutdown completed, threads joined */
    atomic_bool shutting_down;
    atomic_size_t inflight; /* bytes charged to the memory budget */
    pthread_mutex_t live_lock;
    obi_rpc_call *live; /* every accepted call not yet freed */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool shutdown_notified; /* gRPC says: no more calls (ours may still be finishing) */
    bool drained;           /* and every call of ours is freed: the event thread stops */
    int shutdown_tag;       /* its address is the tag of grpc_server_shutdown_and_notify */
};

static void server_log(obi_rpc_server *server, obi_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void server_log(obi_rpc_server *server, obi_log_level level, const char *fmt, ...)
{
    if (!server->options.log || level > server->options.log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    server->options.log(server->options.log_ctx, level, line);
}

static int64_t monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static double elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 +
           (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

/* ---- the memory budget ---- */

/* --max-inflight-bytes is split in two halves: one for what handlers hold (charged here), one
 * for gRPC's own buffers (its resource quota, which it enforces by shrinking flow-control
 * windows and, under pressure, resetting streams). Together they stay under the option. */
static size_t handler_budget(const obi_rpc_server *server)
{
    return server->options.max_inflight_bytes / 2;
}

static bool budget_charge(obi_rpc_server *server, size_t bytes)
{
    size_t limit = handler_budget(server);
    size_t current = atomic_load(&server->inflight);
    do {
        if (bytes > limit || current > limit - bytes)
            return false;
    } while (!atomic_compare_exchange_weak(&server->inflight, &current, current + bytes));
    return true;
}

static void budget_release(obi_rpc_server *server, size_t bytes)
{
    if (bytes)
        atomic_fetch_sub(&server->inflight, bytes);
}

/* Messages from this size on are big enough to give their memory back to the system at once:
 * gRPC assembles them from many small read buffers, which malloc would otherwise keep. */
#define TRIM_THRESHOLD ((size_t)4 << 20)

static void give_back_memory(size_t bytes)
{
    if (bytes >= TRIM_THRESHOLD)
        malloc_trim(0);
}

static int budget_exhausted(obi_rpc_server *server, size_t bytes, obi_error **err)
{
    return obi_error_set(err, -ENOMEM,
                         "the server's memory budget is exhausted: %zu more bytes do not fit "
                         "beside the %zu held by calls in flight (limit %zu: half of "
                         "--max-inflight-bytes)",
                         bytes, atomic_load(&server->inflight), handler_budget(server));
}

/* ---- calls: handler API ---- */

void *obi_rpc_call_state(obi_rpc_call *call)
{
    return call->state;
}

void obi_rpc_call_set_state(obi_rpc_call *call, void *state, void (*free_state)(void *))
{
    if (call->state && call->free_state && call->state != state)
        call->free_state(call->state);
    call->state = state;
    call->free_state = free_state;
}

void obi_rpc_call_queue(obi_rpc_call *call, uint8_t *data, size_t len)
{
    free(call->queued);
    call->queued = data;
    call->queued_len = len;
}

int obi_rpc_call_queue_message(obi_rpc_call *call, const ProtobufCMessage *msg, obi_error **err)
{
    uint8_t *data;
    size_t len;
    int r = obi_rpc_pack(msg, &data, &len, err);
    if (r < 0)
        return r;
    obi_rpc_call_queue(call, data, len);
    return 0;
}

uint8_t *obi_rpc_call_keep_message(obi_rpc_call *call, obi_rpc_message *message)
{
    call->held += call->received_charge;
    call->received_charge = 0;
    return steal_pointer(&message->data);
}

int obi_rpc_call_cancel_fd(const obi_rpc_call *call)
{
    return call->cancel_event;
}

obi_rpc_api obi_rpc_call_api(const obi_rpc_call *call)
{
    return call->registered->api;
}

const char *obi_rpc_call_path(const obi_rpc_call *call)
{
    return call->registered->path;
}

/* The uid at the other end of a unix socket we accepted and handed to gRPC, whose peer it then
 * names "fd:N". The descriptor stays open while a call on it lives (the call holds its
 * transport), so it cannot be another connection's yet. */
static bool unix_peer_uid(const char *peer, uid_t *uid)
{
    unsigned long long fd = 0;
    if (!peer || strncmp(peer, "fd:", 3) != 0 || !obi_parse_decimal(peer + 3, INT32_MAX, &fd))
        return false;
    int domain = 0;
    socklen_t len = sizeof domain;
    if (getsockopt((int)fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX)
        return false;
    struct ucred cred;
    len = sizeof cred;
    if (getsockopt((int)fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return false;
    *uid = cred.uid;
    return true;
}

static bool uid_trusted(const obi_rpc_server_options *options, uid_t uid)
{
    if (uid == 0 || uid == geteuid())
        return true;
    for (size_t i = 0; i < options->n_trusted_uids; i++)
        if (options->trusted_uids[i] == uid)
            return true;
    return false;
}

/* A TCP client that showed a certificate our client CA verified. */
static bool tls_peer_verified(const obi_rpc_call *call)
{
    if (!call->server->tls || !call->server->client_certificates)
        return false;
    grpc_auth_context *auth = grpc_call_auth_context(call->call);
    bool verified = auth && grpc_auth_context_peer_is_authenticated(auth);
    grpc_auth_context_release(auth);
    return verified;
}

const obi_rpc_server_options *obi_rpc_call_server_options(const obi_rpc_call *call)
{
    return &call->server->options;
}

bool obi_rpc_call_trusted(const obi_rpc_call *call, char *who, size_t size)
{
    const obi_rpc_server_options *options = &call->server->options;
    char *peer = grpc_call_get_peer(call->call);
    uid_t uid = 0;
    bool trusted;
    if (unix_peer_uid(peer, &uid)) {
        snprintf(who, size, "uid %u", (unsigned)uid);
        trusted = uid_trusted(options, uid);
    } else {
        snprintf(who, size, "%s", peer ? peer : "an unknown peer");
        trusted = tls_peer_verified(call);
    }
    gpr_free(peer);
    return trusted || options->trust_everyone;
}

void obi_rpc_call_set_reply_metadata(obi_rpc_call *call, const char *key, const char *value)
{
    call->reply_metadata.key = grpc_slice_from_static_string(key);
    call->reply_metadata.value = grpc_slice_from_static_string(value);
    call->n_reply_metadata = 1;
}

bool obi_rpc_call_metadata_is(const obi_rpc_call *call, const char *key, const char *value)
{
    const grpc_metadata_array *md = &call->request_metadata;
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

/* ---- calls: lifetime ---- */

static obi_rpc_call *call_new(obi_rpc_server *server, const registered_method *registered)
{
    obi_rpc_call *call = calloc(1, sizeof *call);
    if (!call)
        return NULL;
    call->server = server;
    call->registered = registered;
    call->accept_tag = (call_tag){TAG_ACCEPT, call};
    call->recv_tag = (call_tag){TAG_RECV, call};
    call->send_tag = (call_tag){TAG_SEND, call};
    call->close_tag = (call_tag){TAG_CLOSE, call};
    call->push_tag = (call_tag){TAG_PUSH, call};
    pthread_mutex_init(&call->push_lock, NULL);
    pthread_cond_init(&call->push_progress, NULL);
    call->cancel_event = -1;
    call->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&call->request_metadata);
    grpc_call_details_init(&call->details);
    atomic_init(&call->refs, 0);
    atomic_init(&call->cancelled, false);
    atomic_init(&call->waiting_ms, 0);
    atomic_init(&call->idle_expired, false);
    return call;
}

/* Frees a call that was never accepted, or one whose references are gone. */
static void call_destroy(obi_rpc_call *call)
{
    if (call->state && call->free_state)
        call->free_state(call->state);
    if (call->received)
        grpc_byte_buffer_destroy(call->received);
    if (call->sending)
        grpc_byte_buffer_destroy(call->sending);
    budget_release(call->server, call->received_charge + call->held);
    give_back_memory(call->held);
    free(call->queued);
    free(call->status_message);
    grpc_slice_unref(call->status_details);
    if (call->cancel_event >= 0)
        close(call->cancel_event);
    if (call->call)
        grpc_call_unref(call->call);
    grpc_metadata_array_destroy(&call->request_metadata);
    grpc_call_details_destroy(&call->details);
    while (call->push_head) {
        pushed_message *m = call->push_head;
        call->push_head = m->next;
        free(m->data);
        free(m);
    }
    if (call->push_sending)
        grpc_byte_buffer_destroy(call->push_sending);
    pthread_mutex_destroy(&call->push_lock);
    pthread_cond_destroy(&call->push_progress);
    free(call);
}

static void call_log(obi_rpc_call *call)
{
    obi_rpc_server *server = call->server;
    if (!server->options.log || server->options.log_level < OBI_LOG_INFO)
        return;
    char *peer = grpc_call_get_peer(call->call);
    bool cancelled = atomic_load(&call->cancelled);
    const char *shown = obi_rpc_status_name(call->status);
    const char *message = call->status_message;
    char idle[128];
    if (atomic_load(&call->idle_expired)) {
        snprintf(idle, sizeof idle, "idle timeout: no progress from the client for %u ms",
                 server->options.idle_timeout_ms);
        shown = "DEADLINE_EXCEEDED";
        message = idle;
    } else if (cancelled && (!call->finishing || call->status == GRPC_STATUS_OK)) {
        shown = "CANCELLED"; /* the client went away before it saw our status */
    }
    obi_log_level level = call->status == GRPC_STATUS_INTERNAL ? OBI_LOG_ERROR : OBI_LOG_INFO;
    /* The message's first line is enough for the log; build logs can be long. */
    int message_len = message ? (int)strcspn(message, "\n") : 0;
    char path[256];
    if (call->registered->handle)
        snprintf(path, sizeof path, "%s", call->registered->path);
    else
        snprintf(path, sizeof path, "%.*s", (int)GRPC_SLICE_LENGTH(call->details.method),
                 (const char *)GRPC_SLICE_START_PTR(call->details.method));
    server_log(server, level, "%s peer=%s %.3fms %s%s%.*s", path, peer ? peer : "?",
               elapsed_ms(&call->started), shown, message ? ": " : "", message_len,
               message ? message : "");
    gpr_free(peer);
}

static void call_ref(obi_rpc_call *call)
{
    atomic_fetch_add(&call->refs, 1);
}

static void call_unref(obi_rpc_call *call)
{
    if (atomic_fetch_sub(&call->refs, 1) != 1)
        return;
    obi_rpc_server *server = call->server;
    pthread_mutex_lock(&server->live_lock);
    if (call->live_prev)
        call->live_prev->live_next = call->live_next;
    else
        server->live = call->live_next;
    if (call->live_next)
        call->live_next->live_prev = call->live_prev;
    pthread_mutex_unlock(&server->live_lock);
    call_log(call);
    call_destroy(call);
}

/* ---- calls: batches ---- */

/* Starts a batch holding a reference for it; false (reference dropped) if gRPC refused. */
static bool call_start_batch(obi_rpc_call *call, const grpc_op *ops, size_t n, call_tag *tag)
{
    call_ref(call);
    if (grpc_call_start_batch(call->call, ops, n, tag, NULL) == GRPC_CALL_OK)
        return true;
    atomic_fetch_sub(&call->refs, 1); /* the caller still holds one: never the last */
    return false;
}

static void call_wait_on_client(obi_rpc_call *call, const char *what)
{
    call->waiting_for = what;
    atomic_store(&call->waiting_ms, monotonic_ms());
}

static void call_add_initial_metadata(obi_rpc_call *call, grpc_op *ops, size_t *n)
{
    if (call->initial_metadata_sent)
        return;
    memset(&ops[*n], 0, sizeof ops[*n]);
    ops[*n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[*n].data.send_initial_metadata.count = call->n_reply_metadata;
    ops[*n].data.send_initial_metadata.metadata =
        call->n_reply_metadata ? &call->reply_metadata : NULL;
    (*n)++;
    call->initial_metadata_sent = true;
}

/* Moves the queued response into ops as a SEND_MESSAGE. */
static void call_add_queued_message(obi_rpc_call *call, grpc_op *ops, size_t *n)
{
    if (!call->queued)
        return;
    call->sending = obi_rpc_byte_buffer_own(call->queued, call->queued_len);
    call->queued = NULL;
    memset(&ops[*n], 0, sizeof ops[*n]);
    ops[*n].op = GRPC_OP_SEND_MESSAGE;
    ops[*n].data.send_message.send_message = call->sending;
    (*n)++;
}

static void call_start_recv(obi_rpc_call *call)
{
    grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
    op.data.recv_message.recv_message = &call->received;
    call_wait_on_client(call, "a request message");
    if (!call_start_batch(call, &op, 1, &call->recv_tag))
        grpc_call_cancel(call->call, NULL);
}

static void call_start_send(obi_rpc_call *call)
{
    grpc_op ops[2];
    size_t n = 0;
    call_add_initial_metadata(call, ops, &n);
    call_add_queued_message(call, ops, &n);
    call_wait_on_client(call, "the client to read the response");
    if (!call_start_batch(call, ops, n, &call->send_tag))
        grpc_call_cancel(call->call, NULL);
}

/* Sends the queued response (if any) and the status; the call is over for us. */
static void call_finish(obi_rpc_call *call, grpc_status_code status, const char *message)
{
    if (call->finishing)
        return;
    call->finishing = true;
    call->status = status;
    if (status != GRPC_STATUS_OK) {
        free(call->queued);
        call->queued = NULL;
    }
    if (message) {
        call->status_message = obi_rpc_status_message_clip(message);
        call->status_details =
            grpc_slice_from_copied_string(call->status_message ? call->status_message : "");
    }
    grpc_op ops[3];
    size_t n = 0;
    call_add_initial_metadata(call, ops, &n);
    call_add_queued_message(call, ops, &n);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n].data.send_status_from_server.status_details = message ? &call->status_details : NULL;
    n++;
    if (call->sending)
        call_wait_on_client(call, "the client to read the response");
    if (!call_start_batch(call, ops, n, &call->send_tag))
        grpc_call_cancel(call->call, NULL);
}

static void call_finish_error(obi_rpc_call *call, int code, obi_error *err)
{
    call_finish(call, obi_rpc_status_from_errno(code),
                err && err->message ? err->message : "internal error");
}

/* ---- calls: messages streamed while a step runs ---- */

/* Sends the next pushed message; push_lock held, nothing in flight. */
static void push_start_next(obi_rpc_call *call)
{
    pushed_message *m = call->push_head;
    if (!m)
        return;
    call->push_head = m->next;
    if (!call->push_head)
        call->push_tail = NULL;
    call->push_queued -= m->len;
    call->push_sending = obi_rpc_byte_buffer_own(m->data, m->len);
    free(m);
    grpc_op ops[2];
    size_t n = 0;
    call_add_initial_metadata(call, ops, &n);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = call->push_sending;
    n++;
    call_wait_on_client(call, "the client to read streamed messages");
    if (!call_start_batch(call, ops, n, &call->push_tag)) {
        call->push_failed = true;
        grpc_call_cancel(call->call, NULL);
    }
}

int obi_rpc_call_push(obi_rpc_call *call, uint8_t *data, size_t len, obi_error **err)
{
    pushed_message *m = malloc(sizeof *m);
    if (!m) {
        free(data);
        return obi_error_oom(err);
    }
    *m = (pushed_message){NULL, data, len};
    pthread_mutex_lock(&call->push_lock);
    while (call->push_queued > PUSH_MAX_QUEUED && !call->push_failed &&
           !atomic_load(&call->cancelled))
        pthread_cond_wait(&call->push_progress, &call->push_lock);
    if (call->push_failed || atomic_load(&call->cancelled)) {
        pthread_mutex_unlock(&call->push_lock);
        free(data);
        free(m);
        return obi_error_set(err, -ECANCELED, "the client went away");
    }
    call->push_used = true;
    if (call->push_tail)
        call->push_tail->next = m;
    else
        call->push_head = m;
    call->push_tail = m;
    call->push_queued += len;
    if (!call->push_sending)
        push_start_next(call);
    pthread_mutex_unlock(&call->push_lock);
    return 0;
}

/* The event thread: a pushed message went out (or the call ended). */
static void on_pushed(obi_rpc_call *call, bool ok)
{
    atomic_store(&call->waiting_ms, 0);
    pthread_mutex_lock(&call->push_lock);
    grpc_byte_buffer_destroy(call->push_sending);
    call->push_sending = NULL;
    if (!ok) {
        call->push_failed = true;
        grpc_call_cancel(call->call, NULL);
    } else {
        push_start_next(call);
    }
    pthread_cond_broadcast(&call->push_progress);
    pthread_mutex_unlock(&call->push_lock);
}

/* After a step: waits until what it pushed went out (or the call ended), so that the step's
 * own response and status follow them. The idle timeout bounds the wait. */
static void call_push_drain(obi_rpc_call *call)
{
    pthread_mutex_lock(&call->push_lock);
    while (call->push_used && (call->push_sending || call->push_head) && !call->push_failed &&
           !atomic_load(&call->cancelled))
        pthread_cond_wait(&call->push_progress, &call->push_lock);
    pthread_mutex_unlock(&call->push_lock);
}

/* ---- calls: steps on worker threads ---- */

static void pool_push(worker_pool *pool, obi_rpc_call *call);

static void call_queue_step(obi_rpc_call *call, step_kind step)
{
    call->step = step;
    call_ref(call);
    pool_push(&call->server->pools[call->registered->method->pool], call);
}

/* Runs the step's callback and starts what it asked for. */
static void call_run_step(obi_rpc_call *call)
{
    obi_rpc_server *server = call->server;
    const obi_rpc_method *method = call->registered->method;
    void *ctx = call->registered->ctx;
    cleanup_error obi_error *err = NULL;
    if (atomic_load(&call->cancelled))
        return; /* nobody is listening: no more work for this call */
    int r;
    switch (call->step) {
    case STEP_MESSAGE: {
        obi_rpc_message message;
        r = obi_rpc_byte_buffer_to_message(call->received, &message);
        call->received = NULL;
        give_back_memory(call->received_charge);
        if (r < 0) {
            r = obi_error_set(&err, -ENOMEM, "receive: out of memory");
        } else {
            r = method->on_message(call, ctx, &message, &err);
            free(message.data);
        }
        budget_release(server, call->received_charge);
        call->received_charge = 0;
        if (r == OBI_RPC_RECV && !method->client_stream)
            r = obi_error_set(&err, -EPROTO, "%s: handler asked for a second request",
                              call->registered->path);
        break;
    }
    case STEP_END:
        r = method->on_end(call, ctx, &err);
        break;
    case STEP_SENT:
    default:
        r = method->on_sent(call, ctx, &err);
        break;
    }
    call_push_drain(call);
    if (r < 0)
        call_finish_error(call, r, err);
    else if (r == OBI_RPC_RECV)
        call_start_recv(call);
    else if (r == OBI_RPC_SEND && call->queued)
        call_start_send(call);
    else if (r == OBI_RPC_SEND)
        call_finish(call, GRPC_STATUS_INTERNAL, "handler asked to send without a response");
    else
        call_finish(call, GRPC_STATUS_OK, NULL);
}

/* ---- worker pools ---- */

static void pool_push(worker_pool *pool, obi_rpc_call *call)
{
    pthread_mutex_lock(&pool->lock);
    call->queue_next = NULL;
    if (pool->tail)
        pool->tail->queue_next = call;
    else
        pool->head = call;
    pool->tail = call;
    pthread_cond_signal(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
}

static void *pool_worker(void *arg)
{
    worker_pool *pool = arg;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        while (!pool->head && !pool->stop)
            pthread_cond_wait(&pool->wake, &pool->lock);
        obi_rpc_call *call = pool->head;
        if (call) {
            pool->head = call->queue_next;
            if (!pool->head)
                pool->tail = NULL;
        }
        pthread_mutex_unlock(&pool->lock);
        if (!call)
            return NULL; /* stopped and drained */
        call_run_step(call);
        call_unref(call);
    }
}

static int pool_start(worker_pool *pool, obi_rpc_server *server, unsigned n_threads,
                      obi_error **err)
{
    pool->server = server;
    pool->threads = calloc(n_threads, sizeof *pool->threads);
    if (!pool->threads)
        return obi_error_set(err, -ENOMEM, "worker threads: out of memory");
    pool->n_threads = n_threads;
    for (unsigned i = 0; i < n_threads; i++) {
        int r = pthread_create(&pool->threads[i], NULL, pool_worker, pool);
        if (r != 0)
            return obi_error_set_errno(err, r, "start worker thread %u", i);
        pool->n_started++;
    }
    return 0;
}

static void pool_stop(worker_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->stop = true;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 0; i < pool->n_started; i++)
        pthread_join(pool->threads[i], NULL);
    pool->n_started = 0;
    free(pool->threads);
    pool->threads = NULL;
}

/* ---- the event thread ---- */

static int request_call(obi_rpc_server *server, const registered_method *registered)
{
    obi_rpc_call *call = call_new(server, registered);
    if (!call)
        return -ENOMEM;
    grpc_call_error e;
    if (registered->handle)
        e = grpc_server_request_registered_call(server->grpc, registered->handle, &call->call,
                                                &call->deadline, &call->request_metadata, NULL,
                                                server->cq, server->cq, &call->accept_tag);
    else
        e = grpc_server_request_call(server->grpc, &call->call, &call->details,
                                     &call->request_metadata, server->cq, server->cq,
                                     &call->accept_tag);
    if (e != GRPC_CALL_OK) {
        call_destroy(call);
        return -EIO;
    }
    return 0;
}

/* A call was accepted: watch for its end, then wait for its request (or refuse it). */
static void on_accepted(obi_rpc_server *server, obi_rpc_call *call)
{
    if (!atomic_load(&server->shutting_down) && request_call(server, call->registered) < 0)
        server_log(server, OBI_LOG_ERROR, "cannot request the next %s call",
                   call->registered->path);
    clock_gettime(CLOCK_MONOTONIC, &call->started);
    atomic_store(&call->refs, 1); /* this function's, dropped at the end */
    pthread_mutex_lock(&server->live_lock);
    call->live_next = server->live;
    if (server->live)
        server->live->live_prev = call;
    server->live = call;
    pthread_mutex_unlock(&server->live_lock);

    if (call->registered->method->pool == OBI_RPC_POOL_BUILD)
        call->cancel_event = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    grpc_op close = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    close.data.recv_close_on_server.cancelled = &call->close_cancelled;
    call_start_batch(call, &close, 1, &call->close_tag);
    if (!call->registered->handle)
        call_finish(call, GRPC_STATUS_UNIMPLEMENTED, "unknown method (not served here)");
    else if (call->registered->method->pool == OBI_RPC_POOL_BUILD && call->cancel_event < 0)
        call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "cannot create the call's cancel fd");
    else
        call_start_recv(call);
    call_unref(call);
}

static void on_received(obi_rpc_server *server, obi_rpc_call *call, bool ok)
{
    atomic_store(&call->waiting_ms, 0);
    const obi_rpc_method *method = call->registered->method;
    if (!ok) {
        /* Cancelled, or refused by gRPC itself (a message over the size limit ends the call
         * with RESOURCE_EXHAUSTED, after gRPC buffered it); either way the call is over. */
        grpc_call_cancel(call->call, NULL);
        give_back_memory(TRIM_THRESHOLD);
        return;
    }
    if (!call->received) {
        /* No message: the client's stream ended, gracefully or not. A stream reset (the client
         * cancelled) also ends it with ok set, before RECV_CLOSE_ON_SERVER says cancelled; gRPC
         * tells the two apart here, so a cancelled upload never runs its end step (commits). */
        if (grpc_call_failed_before_recv_message(call->call)) {
            grpc_call_cancel(call->call, NULL);
            return;
        }
        if (method->client_stream) {
            call_queue_step(call, STEP_END);
        } else {
            char message[320];
            snprintf(message, sizeof message, "%s: missing request message",
                     call->registered->path);
            call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, message);
        }
        return;
    }
    size_t len = grpc_byte_buffer_length(call->received);
    if (!budget_charge(server, len)) {
        grpc_byte_buffer_destroy(call->received);
        call->received = NULL;
        cleanup_error obi_error *err = NULL;
        budget_exhausted(server, len, &err);
        call_finish_error(call, err->code, err);
        return;
    }
    call->received_charge = len;
    call_queue_step(call, STEP_MESSAGE);
}

static void on_sent(obi_rpc_call *call, bool ok)
{
    atomic_store(&call->waiting_ms, 0);
    if (call->sending) {
        grpc_byte_buffer_destroy(call->sending);
        call->sending = NULL;
    }
    if (call->finishing)
        return; /* the status went out (or the call was cancelled): RECV_CLOSE ends it */
    if (ok)
        call_queue_step(call, STEP_SENT);
    else
        grpc_call_cancel(call->call, NULL);
}

static void on_closed(obi_rpc_call *call, bool ok)
{
    if (!ok || call->close_cancelled) {
        atomic_store(&call->cancelled, true);
        if (call->cancel_event >= 0)
            eventfd_write(call->cancel_event, 1);
        pthread_mutex_lock(&call->push_lock); /* a pushing or draining step stops waiting */
        pthread_cond_broadcast(&call->push_progress);
        pthread_mutex_unlock(&call->push_lock);
    }
}

/* Cancels calls that have waited on their client longer than the idle timeout. */
static void cancel_idle_calls(obi_rpc_server *server)
{
    int64_t now = monotonic_ms();
    int64_t limit = server->options.idle_timeout_ms;
    pthread_mutex_lock(&server->live_lock);
    for (obi_rpc_call *call = server->live; call; call = call->live_next) {
        int64_t since = atomic_load(&call->waiting_ms);
        if (!since || now - since < limit || atomic_load(&call->idle_expired))
            continue;
        atomic_store(&call->idle_expired, true);
        char message[256];
        snprintf(message, sizeof message,
                 "idle timeout: waited %u ms for %s (the server's --idle-timeout)",
                 server->options.idle_timeout_ms, call->waiting_for);
        grpc_call_cancel_with_status(call->call, GRPC_STATUS_DEADLINE_EXCEEDED, message, NULL);
    }
    pthread_mutex_unlock(&server->live_lock);
}

/* After gRPC's shutdown notification, the queue may only be shut down once no call of ours
 * can start another batch on it: when the last one is freed. */
static void check_drained(obi_rpc_server *server)
{
    pthread_mutex_lock(&server->lock);
    bool notified = server->shutdown_notified && !server->drained;
    pthread_mutex_unlock(&server->lock);
    if (!notified)
        return;
    pthread_mutex_lock(&server->live_lock);
    bool empty = server->live == NULL;
    pthread_mutex_unlock(&server->live_lock);
    if (!empty)
        return;
    pthread_mutex_lock(&server->lock);
    server->drained = true;
    pthread_cond_broadcast(&server->changed);
    pthread_mutex_unlock(&server->lock);
    grpc_completion_queue_shutdown(server->cq);
}

static void *event_main(void *arg)
{
    obi_rpc_server *server = arg;
    int64_t tick = server->options.idle_timeout_ms / 4;
    if (tick > 1000)
        tick = 1000;
    if (tick < 10)
        tick = 10;
    int64_t next_scan = monotonic_ms() + tick;
    for (;;) {
        /* Shutting down: look at the calls often, the last ones end on worker threads. */
        int64_t wait = atomic_load(&server->shutting_down) ? 20 : tick;
        gpr_timespec until =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(wait, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(server->cq, until, NULL);
        if (monotonic_ms() >= next_scan) {
            cancel_idle_calls(server);
            next_scan = monotonic_ms() + tick;
        }
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type != GRPC_OP_COMPLETE) {
            check_drained(server);
            continue;
        }
        if (ev.tag == &server->shutdown_tag) {
            pthread_mutex_lock(&server->lock);
            server->shutdown_notified = true;
            pthread_mutex_unlock(&server->lock);
            check_drained(server);
            continue;
        }
        call_tag *tag = ev.tag;
        obi_rpc_call *call = tag->call;
        switch (tag->kind) {
        case TAG_ACCEPT:
            if (ev.success)
                on_accepted(server, call);
            else
                call_destroy(call); /* a request failed by the shutdown */
            continue;
        case TAG_RECV:
            on_received(server, call, ev.success);
            break;
        case TAG_SEND:
            on_sent(call, ev.success);
            break;
        case TAG_CLOSE:
            on_closed(call, ev.success);
            break;
        case TAG_PUSH:
            on_pushed(call, ev.success);
            break;
        }
        call_unref(call); /* the batch's reference */
        check_drained(server);
    }
}

/* ---- listening sockets we accept on ourselves ---- */

static void *acceptor_main(void *arg)
{
    obi_rpc_server *server = arg;
    struct pollfd fds[MAX_LISTENERS + 1];
    size_t n = server->n_listeners;
    for (size_t i = 0; i < n; i++)
        fds[i] = (struct pollfd){server->listeners[i].fd, POLLIN, 0};
    fds[n] = (struct pollfd){server->acceptor_wake[0], POLLIN, 0};
    for (;;) {
        if (poll(fds, n + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            server_log(server, OBI_LOG_ERROR, "accept: poll: %s", strerror(errno));
            return NULL;
        }
        if (fds[n].revents)
            return NULL;
        for (size_t i = 0; i < n; i++) {
            if (!(fds[i].revents & POLLIN))
                continue;
            int fd = accept4(fds[i].fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0) {
                grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
                grpc_server_add_channel_from_fd(server->grpc, fd, creds);
                grpc_server_credentials_release(creds);
            } else if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: do not spin; connections wait in the backlog. */
                server_log(server, OBI_LOG_WARN, "accept: %s", strerror(errno));
                poll(NULL, 0, 100);
            }
        }
    }
}

static int add_listener(obi_rpc_server *server, int fd, char *path, dev_t dev, ino_t ino,
                        obi_error **err)
{
    if (server->n_listeners == MAX_LISTENERS) {
        close(fd);
        free(path);
        return obi_error_set(err, -ENOSPC, "listen: at most %d unix or adopted sockets",
                             MAX_LISTENERS);
    }
    server->listeners[server->n_listeners++] = (listener){fd, path, dev, ino};
    return 0;
}

/* Stops accepting on our sockets and removes the socket files we made (if still ours). */
static void close_listeners(obi_rpc_server *server)
{
    if (server->acceptor_started) {
        if (write(server->acceptor_wake[1], "x", 1) < 0) {
            /* a full pipe already wakes it */
        }
        pthread_join(server->acceptor, NULL);
        server->acceptor_started = false;
    }
    for (size_t i = 0; i < server->n_listeners; i++) {
        listener *l = &server->listeners[i];
        struct stat st;
        if (l->path && lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
            unlink(l->path);
        close(l->fd);
        free(l->path);
    }
    server->n_listeners = 0;
}

/* ---- server ---- */

static const obi_rpc_method UNKNOWN_METHOD = {"(unknown)", OBI_RPC_POOL_CASTORE, false, NULL, NULL,
                                              NULL};

/* Registers each method under both generations' package names (docs/rpc.md "Generations"). */
static int server_add_methods(obi_rpc_server *server, const obi_rpc_method *methods, size_t n,
                              void *ctx, obi_error **err)
{
    static const obi_rpc_api apis[] = {OBI_RPC_API_TVIX, OBI_RPC_API_SNIX};
    if (!ctx)
        return 0;
    size_t add = n * OBI_ARRAY_SIZE(apis);
    if (obi_array_grow(&server->methods, &server->methods_cap, server->n_methods + add) < 0)
        return obi_error_oom(err);
    for (size_t a = 0; a < OBI_ARRAY_SIZE(apis); a++) {
        for (size_t i = 0; i < n; i++) {
            registered_method *m = &server->methods[server->n_methods];
            *m = (registered_method){.method = &methods[i], .api = apis[a], .ctx = ctx};
            obi_rpc_method_path(apis[a], methods[i].name, m->path, sizeof m->path);
            m->handle =
                grpc_server_register_method(server->grpc, m->path, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
            if (!m->handle)
                return obi_error_set(err, -EINVAL, "register method %s: refused by gRPC", m->path);
            server->n_methods++;
        }
    }
    return 0;
}

static int read_pem(const char *path, const char *what, char **out, obi_error **err)
{
    size_t len = 0;
    int r = obi_read_file(path, 1 << 20, out, &len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", what);
    if (!strstr(*out, "-----BEGIN ")) {
        free(*out);
        *out = NULL;
        return obi_error_set(err, -EINVAL, "%s %s: not a PEM file", what, path);
    }
    return 0;
}

/* Server credentials for TCP listeners from the options' PEM files. */
static int server_load_tls(obi_rpc_server *server, obi_error **err)
{
    const obi_rpc_server_options *o = &server->options;
    if (!o->tls_cert_file && !o->tls_key_file && !o->tls_client_ca_file)
        return 0;
    if (!o->tls_cert_file || !o->tls_key_file)
        return obi_error_set(err, -EINVAL, "TLS needs both --tls-cert and --tls-key%s",
                             o->tls_client_ca_file ? " (--tls-client-ca alone is not enough)" : "");
    cleanup_free char *cert = NULL, *key = NULL, *ca = NULL;
    int r = read_pem(o->tls_cert_file, "--tls-cert", &cert, err);
    if (r >= 0)
        r = read_pem(o->tls_key_file, "--tls-key", &key, err);
    if (r >= 0 && o->tls_client_ca_file)
        r = read_pem(o->tls_client_ca_file, "--tls-client-ca", &ca, err);
    if (r < 0)
        return r;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    server->client_certificates = ca != NULL;
    server->tls = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    if (!server->tls)
        return obi_error_set(err, -EINVAL, "TLS: gRPC refused the certificate %s and key %s",
                             o->tls_cert_file, o->tls_key_file);
    return 0;
}

int obi_rpc_server_new(const obi_rpc_server_options *options, obi_rpc_server **out, obi_error **err)
{
    obi_rpc_server *server = calloc(1, sizeof *server);
    if (!server)
        return obi_error_set(err, -ENOMEM, "rpc server: out of memory");
    grpc_init();
    server->options = *options;
    obi_rpc_server_options *o = &server->options;
    if (!o->castore_workers)
        o->castore_workers = DEFAULT_CASTORE_WORKERS;
    if (!o->build_workers)
        o->build_workers = DEFAULT_BUILD_WORKERS;
    if (!o->idle_timeout_ms)
        o->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    if (!o->max_message_bytes)
        o->max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES;
    if (!o->max_inflight_bytes)
        o->max_inflight_bytes = DEFAULT_MAX_INFLIGHT_BYTES;
    pthread_mutex_init(&server->lock, NULL);
    pthread_cond_init(&server->changed, NULL);
    pthread_mutex_init(&server->live_lock, NULL);
    for (size_t i = 0; i < 2; i++) {
        pthread_mutex_init(&server->pools[i].lock, NULL);
        pthread_cond_init(&server->pools[i].wake, NULL);
    }
    atomic_init(&server->shutting_down, false);
    atomic_init(&server->inflight, 0);
    server->acceptor_wake[0] = server->acceptor_wake[1] = -1;

    int r = 0;
    if (o->max_message_bytes > OBI_RPC_MAX_MESSAGE)
        r = obi_error_set(err, -EINVAL, "maximum message size %zu is above %d bytes",
                          o->max_message_bytes, OBI_RPC_MAX_MESSAGE);
    else if (o->max_inflight_bytes / 2 < o->max_message_bytes)
        r = obi_error_set(err, -EINVAL,
                          "memory budget %zu bytes is less than twice the maximum message size "
                          "%zu: the largest messages could never be received",
                          o->max_inflight_bytes, o->max_message_bytes);
    if (r >= 0)
        r = server_load_tls(server, err);
    if (r >= 0 && pipe2(server->acceptor_wake, O_CLOEXEC | O_NONBLOCK) < 0)
        r = obi_error_set_errno(err, errno, "rpc server: pipe");
    if (r < 0) {
        obi_rpc_server_free(server);
        return r;
    }

    /* gRPC's own buffers (reads, message assembly) under the other half of the budget. */
    server->quota = grpc_resource_quota_create("ocibuild daemon");
    grpc_resource_quota_resize(server->quota, o->max_inflight_bytes - handler_budget(server));
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = (int)o->max_message_bytes},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = OBI_RPC_MAX_MESSAGE},
        /* A flow-control window of several chunks, so blob streams do not stall per chunk. */
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
         .value.integer = 8 * OBI_RPC_CHUNK_SIZE},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS,
         .value.integer = MAX_STREAMS_PER_CONNECTION},
        {.type = GRPC_ARG_POINTER,
         .key = (char *)GRPC_ARG_RESOURCE_QUOTA,
         .value.pointer = {server->quota, grpc_resource_quota_arg_vtable()}},
    };
    grpc_channel_args channel_args = {.num_args = sizeof args / sizeof args[0], .args = args};
    server->grpc = grpc_server_create(&channel_args, NULL);
    server->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server->grpc, server->cq, NULL);

    if (obi_array_grow(&server->methods, &server->methods_cap, 1) < 0)
        r = obi_error_set(err, -ENOMEM, "rpc server: out of memory");
    else
        server->methods[server->n_methods++] =
            (registered_method){.method = &UNKNOWN_METHOD, .path = "(unknown)"};
    if (r >= 0)
        r = server_add_methods(server, obi_rpc_blob_methods, obi_rpc_n_blob_methods, options->blobs,
                               err);
    if (r >= 0)
        r = server_add_methods(server, obi_rpc_directory_methods, obi_rpc_n_directory_methods,
                               options->directories, err);
    if (r >= 0)
        r = server_add_methods(server, obi_rpc_build_methods, obi_rpc_n_build_methods,
                               options->builds, err);
    server->path_info_ctx =
        (obi_rpc_path_info_ctx){options->path_infos, options->blobs, options->directories};
    if (r >= 0 && options->path_infos && (!options->blobs || !options->directories))
        r = obi_error_set(err, -EINVAL, "rpc server: path infos are served with a castore only");
    if (r >= 0)
        r = server_add_methods(server, obi_rpc_path_info_methods, obi_rpc_n_path_info_methods,
                               options->path_infos ? &server->path_info_ctx : NULL, err);
    if (r < 0) {
        obi_rpc_server_free(server);
        return r;
    }
    *out = server;
    return 0;
}

static const char *unix_address_path(const char *address)
{
    if (!strncmp(address, "unix://", 7))
        return address + 7;
    if (!strncmp(address, "unix:", 5))
        return address + 5;
    return NULL;
}

/* Who may reach a plain TCP listener: loopback only, unless the operator said otherwise. */
static int check_plain_tcp(obi_rpc_server *server, const char *address, bool tls, obi_error **err)
{
    if (!server->options.insecure_tcp)
        return obi_error_set(
            err, -EPERM,
            "listen %s: refusing %s on a non-loopback address: anyone who can reach it could "
            "run builds and write to the store. Use mutual TLS (--tls-cert, --tls-key and "
            "--tls-client-ca), listen on 127.0.0.1 or a unix socket, or pass --insecure-tcp",
            address, tls ? "TLS without client certificates" : "TCP without TLS");
    server_log(server, OBI_LOG_WARN,
               "--insecure-tcp: %s accepts %s: anyone who can reach it can run builds and write "
               "to the store",
               address, tls ? "TLS clients without checking their certificates" : "plain TCP");
    return 0;
}

int obi_rpc_server_listen(obi_rpc_server *server, const char *address, int *port_out,
                          obi_error **err)
{
    if (server->started)
        return obi_error_set(err, -EINVAL, "listen %s: the server is already running", address);
    if (!*address)
        return obi_error_set(err, -EINVAL, "listen: empty address");
    const char *path = unix_address_path(address);
    if (path) {
        int fd = -1;
        dev_t dev = 0;
        ino_t ino = 0;
        long gid = server->options.use_socket_group ? (long)server->options.socket_gid : -1;
        int r = obi_rpc_unix_listener_open(path, gid, &fd, &dev, &ino, err);
        if (r < 0)
            return obi_error_prefix(err, r, "listen %s", address);
        char *owned = strdup(path);
        if (!owned) {
            close(fd);
            unlink(path);
            return obi_error_set(err, -ENOMEM, "listen %s: out of memory", address);
        }
        if (port_out)
            *port_out = 0;
        return add_listener(server, fd, owned, dev, ino, err);
    }
    int loopback = obi_rpc_tcp_address_is_loopback(address, err);
    if (loopback < 0)
        return obi_error_prefix(err, loopback, "listen %s", address);
    bool mutual_tls = server->tls && server->client_certificates;
    if (!mutual_tls && !loopback) {
        int r = check_plain_tcp(server, address, server->tls != NULL, err);
        if (r < 0)
            return r;
    }
    grpc_server_credentials *creds =
        server->tls ? server->tls : grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server->grpc, address, creds);
    if (!server->tls)
        grpc_server_credentials_release(creds);
    if (port == 0)
        return obi_error_set(err, -EADDRNOTAVAIL,
                             "listen %s: cannot bind (expected unix:PATH, unix:///ABS or "
                             "HOST:PORT; address in use or directory missing?)",
                             address);
    if (port_out)
        *port_out = port;
    return 0;
}

int obi_rpc_server_listen_fd(obi_rpc_server *server, int fd, obi_error **err)
{
    if (server->started) {
        close(fd);
        return obi_error_set(err, -EINVAL, "listen fd %d: the server is already running", fd);
    }
    int listening = 0, type = 0;
    socklen_t len = sizeof listening, type_len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) < 0) {
        int e = errno;
        close(fd);
        return obi_error_set_errno(err, e, "listen fd %d", fd);
    }
    if (!listening || type != SOCK_STREAM) {
        close(fd);
        return obi_error_set(err, -EINVAL, "listen fd %d: not a listening stream socket", fd);
    }
    int loopback = obi_rpc_socket_is_local(fd, err);
    if (loopback < 0) {
        close(fd);
        return loopback;
    }
    if (loopback == 0) {
        /* gRPC cannot speak TLS on a socket it did not bind: adopted TCP is plain TCP. */
        char what[48];
        snprintf(what, sizeof what, "socket-activated fd %d", fd);
        int r = check_plain_tcp(server, what, false, err);
        if (r < 0) {
            close(fd);
            return r;
        }
    }
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0)
        fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    return add_listener(server, fd, NULL, 0, 0, err);
}

int obi_rpc_server_start(obi_rpc_server *server, obi_error **err)
{
    if (server->started)
        return obi_error_set(err, -EINVAL, "rpc server: already started");
    if (server->n_methods <= 1)
        return obi_error_set(err, -EINVAL, "rpc server: no service to serve");
    grpc_server_start(server->grpc);
    server->started = true;
    int r = pool_start(&server->pools[OBI_RPC_POOL_CASTORE], server,
                       server->options.castore_workers, err);
    if (r >= 0)
        r = pool_start(&server->pools[OBI_RPC_POOL_BUILD], server, server->options.build_workers,
                       err);
    for (size_t i = 0; r >= 0 && i < server->n_methods; i++)
        for (int k = 0; k < REQUESTS_PER_METHOD && r >= 0; k++)
            if (request_call(server, &server->methods[i]) < 0)
                r = obi_error_set(err, -EIO, "rpc server: cannot request %s calls",
                                  server->methods[i].path);
    if (r >= 0) {
        int e = pthread_create(&server->event_thread, NULL, event_main, server);
        if (e != 0)
            r = obi_error_set_errno(err, e, "rpc server: start the event thread");
        else
            server->event_thread_started = true;
    }
    if (r >= 0 && server->n_listeners > 0) {
        int e = pthread_create(&server->acceptor, NULL, acceptor_main, server);
        if (e != 0)
            r = obi_error_set_errno(err, e, "rpc server: start the acceptor thread");
        else
            server->acceptor_started = true;
    }
    return r;
}

/* Waits until every call is over and freed, or timeout_ms passed; true if they are. */
static bool wait_drained(obi_rpc_server *server, unsigned timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&server->lock);
    while (!server->drained)
        if (pthread_cond_timedwait(&server->changed, &server->lock, &deadline) == ETIMEDOUT)
            break;
    bool drained = server->drained;
    pthread_mutex_unlock(&server->lock);
    return drained;
}

int obi_rpc_server_shutdown(obi_rpc_server *server, unsigned grace_ms, obi_error **err)
{
    if (server->finished)
        return 0;
    close_listeners(server);
    if (!atomic_exchange(&server->shutting_down, true))
        grpc_server_shutdown_and_notify(server->grpc, server->cq, &server->shutdown_tag);
    if (!server->event_thread_started) {
        /* The event thread never ran: collect the notification (and failed requests) here. */
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(server->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type != GRPC_OP_COMPLETE || ev.tag == &server->shutdown_tag)
                break;
            call_destroy(((call_tag *)ev.tag)->call);
        }
        obi_rpc_cq_shutdown_drain(server->cq);
        server->shutdown_notified = server->drained = true;
    } else if (!wait_drained(server, grace_ms)) {
        server_log(server, OBI_LOG_WARN,
                   "shutdown: calls still running after %ums, cancelling them", grace_ms);
        grpc_server_cancel_all_calls(server->grpc);
        obi_build_service_cancel(server->options.builds);
        if (!wait_drained(server, CANCEL_WAIT_MS))
            return obi_error_set(err, -ETIMEDOUT,
                                 "shutdown: handlers still running %ums after cancelling them",
                                 CANCEL_WAIT_MS);
    }
    if (server->event_thread_started) {
        pthread_join(server->event_thread, NULL);
        server->event_thread_started = false;
    }
    for (size_t i = 0; i < 2; i++)
        pool_stop(&server->pools[i]);
    server->finished = true;
    return 0;
}

void obi_rpc_server_free(obi_rpc_server *server)
{
    if (!server)
        return;
    if (server->grpc && !server->finished) {
        cleanup_error obi_error *err = NULL;
        if (obi_rpc_server_shutdown(server, 0, &err) < 0)
            return; /* handlers still use it: leaking beats a use after free */
    }
    close_listeners(server);
    if (server->grpc)
        grpc_server_destroy(server->grpc);
    if (server->cq)
        grpc_completion_queue_destroy(server->cq); /* shut down and drained above */
    if (server->tls)
        grpc_server_credentials_release(server->tls);
    if (server->quota)
        grpc_resource_quota_unref(server->quota);
    for (int i = 0; i < 2; i++)
        if (server->acceptor_wake[i] >= 0)
            close(server->acceptor_wake[i]);
    for (size_t i = 0; i < 2; i++) {
        pthread_mutex_destroy(&server->pools[i].lock);
        pthread_cond_destroy(&server->pools[i].wake);
    }
    pthread_mutex_destroy(&server->live_lock);
    pthread_mutex_destroy(&server->lock);
    pthread_cond_destroy(&server->changed);
    free(server->methods);
    free(server);
    grpc_shutdown();
}
