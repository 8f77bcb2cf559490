/*
 * The generic gRPC server core: listens on unix sockets and TCP ports, registers the methods of
 * the services it was given, and runs their handlers on worker threads.
 *
 * One acceptor thread keeps a few requests outstanding for every registered method on its own
 * completion queue; each accepted call is bound to a fresh completion queue of its own and handed
 * to the worker pool of its method: blob and directory calls go to the castore pool, builds to a
 * separate bounded build pool, so short calls are never queued behind long builds. A worker then
 * drives the call synchronously (obi_rpc_call_recv/send, one batch at a time) and finishes it
 * with the status mapped from the handler's return code, logging one line per call.
 */
#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "rpc_internal.h"

#define DEFAULT_CASTORE_WORKERS 16
#define DEFAULT_BUILD_WORKERS 4
/* Requests kept outstanding per method, so bursts are matched without a round trip through the
 * acceptor. */
#define REQUESTS_PER_METHOD 4

typedef struct registered_method {
    const obi_rpc_method *method;
    void *ctx;
    void *handle; /* from grpc_server_register_method */
} registered_method;

struct obi_rpc_call {
    obi_rpc_server *server;
    const registered_method *registered;
    grpc_call *call;
    grpc_completion_queue *cq; /* carries only this call's batches */
    gpr_timespec deadline;
    grpc_metadata_array request_metadata;
    grpc_call_details details; /* filled for unregistered methods only */
    bool initial_metadata_sent;
    /* RECV_CLOSE_ON_SERVER runs from the start in its own batch: it completes when the call is
     * over for the client (cancelled, or after our status), telling a client that went away
     * apart from one that half-closed its stream. */
    int close_tag;
    bool close_started, close_done;
    int close_cancelled;
    struct obi_rpc_call *next;
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

struct obi_rpc_server {
    obi_rpc_server_options options;
    grpc_server *grpc;
    grpc_completion_queue *accept_cq;
    registered_method *methods;
    size_t n_methods;
    worker_pool pools[2];
    pthread_t acceptor;
    bool acceptor_started;
    bool started;
    bool finished; /* shutdown completed, threads joined */
    atomic_bool shutting_down;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool shutdown_notified;
    int shutdown_tag; /* its address is the tag of grpc_server_shutdown_and_notify */
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

/* ---- calls ---- */

static void call_free(obi_rpc_call *call)
{
    if (!call)
        return;
    if (call->call)
        grpc_call_unref(call->call);
    grpc_metadata_array_destroy(&call->request_metadata);
    grpc_call_details_destroy(&call->details);
    obi_rpc_cq_destroy(call->cq);
    free(call);
}

static void call_note_event(obi_rpc_call *call, const grpc_event *ev)
{
    if (ev->type == GRPC_OP_COMPLETE && ev->tag == &call->close_tag) {
        call->close_done = true;
        if (!ev->success)
            call->close_cancelled = 1;
    }
}

/* Runs one batch; events of the close batch arriving meanwhile are noted. */
static bool call_run_batch(obi_rpc_call *call, const grpc_op *ops, size_t n)
{
    void *tag = (void *)ops;
    if (grpc_call_start_batch(call->call, ops, n, tag, NULL) != GRPC_CALL_OK)
        return false;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(call->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return false;
        if (ev.type == GRPC_OP_COMPLETE && ev.tag == tag)
            return ev.success != 0;
        call_note_event(call, &ev);
    }
}

/* Waits up to timeout_ms for the close batch; true if the client cancelled the call. */
static bool call_client_cancelled(obi_rpc_call *call, int timeout_ms)
{
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    while (call->close_started && !call->close_done) {
        grpc_event ev = grpc_completion_queue_next(
            call->cq, timeout_ms < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC) : deadline, NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        call_note_event(call, &ev);
    }
    return call->close_done && call->close_cancelled;
}

static void call_start_close(obi_rpc_call *call)
{
    grpc_op op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    op.data.recv_close_on_server.cancelled = &call->close_cancelled;
    call->close_started =
        grpc_call_start_batch(call->call, &op, 1, &call->close_tag, NULL) == GRPC_CALL_OK;
}

static void call_ensure_initial_metadata(obi_rpc_call *call, grpc_op *op, size_t *n)
{
    if (call->initial_metadata_sent)
        return;
    memset(&op[*n], 0, sizeof op[*n]);
    op[*n].op = GRPC_OP_SEND_INITIAL_METADATA;
    (*n)++;
    call->initial_metadata_sent = true;
}

int obi_rpc_call_recv_slice(obi_rpc_call *call, grpc_slice *out, obi_error **err)
{
    grpc_byte_buffer *buffer = NULL;
    grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
    op.data.recv_message.recv_message = &buffer;
    bool ok = call_run_batch(call, &op, 1);
    if (ok && buffer) {
        *out = obi_rpc_byte_buffer_take(buffer);
        return 1;
    }
    if (buffer)
        grpc_byte_buffer_destroy(buffer);
    /* No message: the client half-closed, or it went away. Only the close batch tells, and
     * a cancellation completes it along with this receive. */
    if (!ok || call_client_cancelled(call, 0))
        return obi_error_set(err, -ECANCELED, "receive: the client cancelled the call");
    return 0;
}

int obi_rpc_call_recv(obi_rpc_call *call, uint8_t **data, size_t *len, obi_error **err)
{
    grpc_slice slice;
    int r = obi_rpc_call_recv_slice(call, &slice, err);
    if (r <= 0)
        return r;
    size_t n = GRPC_SLICE_LENGTH(slice);
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) {
        grpc_slice_unref(slice);
        return obi_error_set(err, -ENOMEM, "receive: out of memory");
    }
    memcpy(copy, GRPC_SLICE_START_PTR(slice), n);
    grpc_slice_unref(slice);
    *data = copy;
    *len = n;
    return 1;
}

int obi_rpc_call_recv_message(obi_rpc_call *call, const ProtobufCMessageDescriptor *desc,
                              const char *what, ProtobufCMessage **out, obi_error **err)
{
    grpc_slice slice;
    int r = obi_rpc_call_recv_slice(call, &slice, err);
    if (r < 0)
        return r;
    if (r == 0) {
        *out = NULL;
        return 0;
    }
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(slice),
                                                      GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    if (!msg)
        return obi_error_set(err, -EINVAL, "%s: not a valid %s message", what, desc->name);
    *out = msg;
    return 1;
}

int obi_rpc_call_send_owned(obi_rpc_call *call, uint8_t *data, size_t len, obi_error **err)
{
    grpc_byte_buffer *buffer = obi_rpc_byte_buffer_own(data, len);
    grpc_op ops[2];
    size_t n = 0;
    call_ensure_initial_metadata(call, ops, &n);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = buffer;
    n++;
    bool ok = call_run_batch(call, ops, n);
    grpc_byte_buffer_destroy(buffer);
    if (!ok)
        return obi_error_set(err, -ECANCELED, "send: the call was cancelled");
    return 0;
}

int obi_rpc_call_send_message(obi_rpc_call *call, const ProtobufCMessage *msg, obi_error **err)
{
    uint8_t *data;
    size_t len;
    int r = obi_rpc_pack(msg, &data, &len, err);
    if (r < 0)
        return r;
    return obi_rpc_call_send_owned(call, data, len, err);
}

/* Sends the status; returns the status the client saw (CANCELLED if it had gone away). */
static grpc_status_code call_finish(obi_rpc_call *call, grpc_status_code status,
                                    const char *message)
{
    cleanup_free char *clipped = obi_rpc_status_message_clip(message ? message : "");
    grpc_slice details = grpc_slice_from_copied_string(clipped ? clipped : "");
    grpc_op ops[2];
    size_t n = 0;
    call_ensure_initial_metadata(call, ops, &n);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n].data.send_status_from_server.status_details = message ? &details : NULL;
    n++;
    bool ok = call_run_batch(call, ops, n);
    grpc_slice_unref(details);
    bool cancelled = call_client_cancelled(call, -1);
    return ok && !cancelled ? status : GRPC_STATUS_CANCELLED;
}

static double elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) * 1e3 +
           (double)(now.tv_nsec - start->tv_nsec) / 1e6;
}

static void call_handle(obi_rpc_call *call)
{
    obi_rpc_server *server = call->server;
    const obi_rpc_method *method = call->registered->method;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);

    call_start_close(call);
    cleanup_error obi_error *err = NULL;
    int r = method->handler(call, call->registered->ctx, &err);
    grpc_status_code status = obi_rpc_status_from_errno(r);
    const char *message = r < 0 ? (err && err->message ? err->message : "internal error") : NULL;
    grpc_status_code seen = call_finish(call, status, message);

    if (server->options.log && server->options.log_level >= OBI_LOG_INFO) {
        char *peer = grpc_call_get_peer(call->call);
        const char *shown = obi_rpc_status_name(status);
        if (seen != status)
            shown = "CANCELLED";
        obi_log_level level = status == GRPC_STATUS_INTERNAL ? OBI_LOG_ERROR : OBI_LOG_INFO;
        /* The message's first line is enough for the log; build logs can be long. */
        int message_len = message ? (int)strcspn(message, "\n") : 0;
        char path[256];
        if (call->registered->handle)
            snprintf(path, sizeof path, "%s", method->path);
        else
            snprintf(path, sizeof path, "%.*s", (int)GRPC_SLICE_LENGTH(call->details.method),
                     (const char *)GRPC_SLICE_START_PTR(call->details.method));
        server_log(server, level, "%s peer=%s %.3fms %s%s%.*s", path, peer ? peer : "?",
                   elapsed_ms(&start), shown, message ? ": " : "", message_len,
                   message ? message : "");
        gpr_free(peer);
    }
}

/* ---- worker pools ---- */

static void pool_push(worker_pool *pool, obi_rpc_call *call)
{
    pthread_mutex_lock(&pool->lock);
    call->next = NULL;
    if (pool->tail)
        pool->tail->next = call;
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
            pool->head = call->next;
            if (!pool->head)
                pool->tail = NULL;
        }
        pthread_mutex_unlock(&pool->lock);
        if (!call)
            return NULL; /* stopped and drained */
        call_handle(call);
        call_free(call);
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

/* ---- acceptor ---- */

static int request_call(obi_rpc_server *server, const registered_method *registered)
{
    obi_rpc_call *call = calloc(1, sizeof *call);
    if (!call)
        return -ENOMEM;
    call->server = server;
    call->registered = registered;
    grpc_metadata_array_init(&call->request_metadata);
    grpc_call_details_init(&call->details);
    call->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_call_error e;
    if (registered->handle)
        e = grpc_server_request_registered_call(server->grpc, registered->handle, &call->call,
                                                &call->deadline, &call->request_metadata, NULL,
                                                call->cq, server->accept_cq, call);
    else
        e = grpc_server_request_call(server->grpc, &call->call, &call->details,
                                     &call->request_metadata, call->cq, server->accept_cq, call);
    if (e != GRPC_CALL_OK) {
        call_free(call);
        return -EIO;
    }
    return 0;
}

static void *acceptor_main(void *arg)
{
    obi_rpc_server *server = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(server->accept_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        if (ev.tag == &server->shutdown_tag) {
            pthread_mutex_lock(&server->lock);
            server->shutdown_notified = true;
            pthread_cond_broadcast(&server->changed);
            pthread_mutex_unlock(&server->lock);
            grpc_completion_queue_shutdown(server->accept_cq);
            continue;
        }
        obi_rpc_call *call = ev.tag;
        if (!ev.success) {
            call_free(call); /* a request failed by the shutdown */
            continue;
        }
        if (!atomic_load(&server->shutting_down) && request_call(server, call->registered) < 0)
            server_log(server, OBI_LOG_ERROR, "cannot request the next %s call",
                       call->registered->method->path);
        pool_push(&server->pools[call->registered->method->pool], call);
    }
}

/* ---- server ---- */

/* Calls to methods nobody registered wait for grpc_server_request_call; answer them. */
static int unknown_method(obi_rpc_call *call, void *ctx, obi_error **err)
{
    (void)ctx;
    return obi_error_set(err, -ENOTSUP, "unknown method %.*s (not served here)",
                         (int)GRPC_SLICE_LENGTH(call->details.method),
                         (const char *)GRPC_SLICE_START_PTR(call->details.method));
}

static const obi_rpc_method UNKNOWN_METHOD = {"(unknown)", OBI_RPC_POOL_CASTORE, unknown_method};

static int server_add_methods(obi_rpc_server *server, const obi_rpc_method *methods, size_t n,
                              void *ctx, obi_error **err)
{
    if (!ctx)
        return 0;
    registered_method *grown =
        realloc(server->methods, (server->n_methods + n) * sizeof *server->methods);
    if (!grown)
        return obi_error_set(err, -ENOMEM, "register methods: out of memory");
    server->methods = grown;
    for (size_t i = 0; i < n; i++) {
        void *handle = grpc_server_register_method(server->grpc, methods[i].path, NULL,
                                                   GRPC_SRM_PAYLOAD_NONE, 0);
        if (!handle)
            return obi_error_set(err, -EINVAL, "register method %s: refused by gRPC",
                                 methods[i].path);
        server->methods[server->n_methods++] =
            (registered_method){.method = &methods[i], .ctx = ctx, .handle = handle};
    }
    return 0;
}

int obi_rpc_server_new(const obi_rpc_server_options *options, obi_rpc_server **out, obi_error **err)
{
    obi_rpc_server *server = calloc(1, sizeof *server);
    if (!server)
        return obi_error_set(err, -ENOMEM, "rpc server: out of memory");
    grpc_init();
    server->options = *options;
    if (!server->options.castore_workers)
        server->options.castore_workers = DEFAULT_CASTORE_WORKERS;
    if (!server->options.build_workers)
        server->options.build_workers = DEFAULT_BUILD_WORKERS;
    pthread_mutex_init(&server->lock, NULL);
    pthread_cond_init(&server->changed, NULL);
    for (size_t i = 0; i < 2; i++) {
        pthread_mutex_init(&server->pools[i].lock, NULL);
        pthread_cond_init(&server->pools[i].wake, NULL);
    }
    atomic_init(&server->shutting_down, false);
    server->grpc = grpc_server_create(obi_rpc_channel_args(), NULL);
    server->accept_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server->grpc, server->accept_cq, NULL);

    int r = 0;
    server->methods = calloc(1, sizeof *server->methods);
    if (!server->methods)
        r = obi_error_set(err, -ENOMEM, "rpc server: out of memory");
    else
        server->methods[server->n_methods++] =
            (registered_method){.method = &UNKNOWN_METHOD, .ctx = NULL, .handle = NULL};
    if (r >= 0)
        r = server_add_methods(server, obi_rpc_blob_methods, obi_rpc_n_blob_methods, options->blobs,
                               err);
    if (r >= 0)
        r = server_add_methods(server, obi_rpc_directory_methods, obi_rpc_n_directory_methods,
                               options->directories, err);
    if (r >= 0)
        r = server_add_methods(server, obi_rpc_build_methods, obi_rpc_n_build_methods,
                               options->builds, err);
    if (r < 0) {
        obi_rpc_server_free(server);
        return r;
    }
    *out = server;
    return 0;
}

/* gRPC unlinks whatever socket is at a unix address before binding, which would silently take
 * the address from a daemon still serving it. A stale socket (nobody accepts) is fine. */
static int refuse_live_unix_socket(const char *address, obi_error **err)
{
    const char *path = NULL;
    if (!strncmp(address, "unix://", 7))
        path = address + 7;
    else if (!strncmp(address, "unix:", 5))
        path = address + 5;
    if (!path)
        return 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return obi_error_set(err, -ENAMETOOLONG, "listen %s: socket path longer than %zu bytes",
                             address, sizeof sa.sun_path - 1);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "listen %s: socket", address);
    int live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    if (live)
        return obi_error_set(err, -EADDRINUSE, "listen %s: another server is listening there",
                             address);
    return 0;
}

int obi_rpc_server_listen(obi_rpc_server *server, const char *address, int *port_out,
                          obi_error **err)
{
    if (server->started)
        return obi_error_set(err, -EINVAL, "listen %s: the server is already running", address);
    if (!*address)
        return obi_error_set(err, -EINVAL, "listen: empty address");
    int r = refuse_live_unix_socket(address, err);
    if (r < 0)
        return r;
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server->grpc, address, creds);
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
                                  server->methods[i].method->path);
    if (r >= 0) {
        int e = pthread_create(&server->acceptor, NULL, acceptor_main, server);
        if (e != 0)
            r = obi_error_set_errno(err, e, "rpc server: start acceptor thread");
        else
            server->acceptor_started = true;
    }
    return r;
}

/* Waits until the shutdown notification arrived or timeout_ms passed; true if it arrived. */
static bool wait_shutdown_notified(obi_rpc_server *server, unsigned timeout_ms)
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
    while (!server->shutdown_notified)
        if (pthread_cond_timedwait(&server->changed, &server->lock, &deadline) == ETIMEDOUT)
            break;
    bool notified = server->shutdown_notified;
    pthread_mutex_unlock(&server->lock);
    return notified;
}

/* After a cancellation, handlers that do not notice it get this long before we give up. */
#define CANCEL_WAIT_MS 10000

int obi_rpc_server_shutdown(obi_rpc_server *server, unsigned grace_ms, obi_error **err)
{
    if (server->finished)
        return 0;
    if (!atomic_exchange(&server->shutting_down, true))
        grpc_server_shutdown_and_notify(server->grpc, server->accept_cq, &server->shutdown_tag);
    if (!server->acceptor_started) {
        /* The acceptor never ran: collect the notification (and failed requests) here. */
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(server->accept_cq,
                                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type != GRPC_OP_COMPLETE || ev.tag == &server->shutdown_tag)
                break;
            call_free(ev.tag);
        }
        obi_rpc_cq_shutdown_drain(server->accept_cq);
        server->shutdown_notified = true;
    } else if (!wait_shutdown_notified(server, grace_ms)) {
        server_log(server, OBI_LOG_WARN,
                   "shutdown: calls still running after %ums, cancelling them", grace_ms);
        grpc_server_cancel_all_calls(server->grpc);
        obi_build_service_cancel(server->options.builds);
        if (!wait_shutdown_notified(server, CANCEL_WAIT_MS))
            return obi_error_set(err, -ETIMEDOUT,
                                 "shutdown: handlers still running %ums after cancelling them",
                                 CANCEL_WAIT_MS);
    }
    if (server->acceptor_started) {
        pthread_join(server->acceptor, NULL);
        server->acceptor_started = false;
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
    if (server->grpc)
        grpc_server_destroy(server->grpc);
    if (server->accept_cq)
        grpc_completion_queue_destroy(server->accept_cq); /* shut down and drained above */
    for (size_t i = 0; i < 2; i++) {
        pthread_mutex_destroy(&server->pools[i].lock);
        pthread_cond_destroy(&server->pools[i].wake);
    }
    pthread_mutex_destroy(&server->lock);
    pthread_cond_destroy(&server->changed);
    free(server->methods);
    free(server);
    grpc_shutdown();
}
