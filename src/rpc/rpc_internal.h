/*
 * Private to src/rpc: the small layer over the gRPC C core that both the server handlers
 * (blob_server.c, directory_server.c, build_server.c) and the clients (grpc_*_client.c) use.
 * Every call is driven synchronously: one batch at a time on a completion queue owned by the
 * call, so handlers and clients read top to bottom like blocking I/O code.
 */
#ifndef OCIBUILD_RPC_INTERNAL_H
#define OCIBUILD_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ocibuild/error.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/rpc.h"
#include "pathinfo.pb-c.h"
#include "ocibuild/url.h"

/* Blob chunks on the wire are at most this big (castore.md). */
#define OBI_RPC_CHUNK_SIZE (1024 * 1024)
/* Largest message a client accepts and anyone sends: directories with many entries can be big.
 * The server accepts smaller requests (obi_rpc_server_options.max_message_bytes). */
#define OBI_RPC_MAX_MESSAGE (256 * 1024 * 1024)
/* Status messages travel in an HTTP/2 header (grpc-message); keep them well below the usual
 * 8 KiB metadata limit even after percent-encoding. */
#define OBI_RPC_MAX_STATUS_MESSAGE 1800

/* ---- generations (docs/rpc.md "Generations") ---- */

/* The same services under two package names: tvix.castore.v1, tvix.build.v1, tvix.store.v1 and
 * snix.castore.v1, snix.build.v1, snix.store.v1. Their wire is the same except for DoBuild's
 * reply (tvix.build.v1.Build, snix.build.v1.BuildResponse). */
typedef enum obi_rpc_api {
    OBI_RPC_API_TVIX = 0,
    OBI_RPC_API_SNIX = 1,
} obi_rpc_api;

/* Longest method path ("/snix.castore.v1.DirectoryService/Put" and the like), with its NUL. */
#define OBI_RPC_MAX_PATH 96

/* Request metadata asking DoBuild for BuildEvents (value "1"; docs/rpc.md "Build events"). */
#define OBI_RPC_BUILD_EVENTS_KEY "ocibuild-build-events"

/* "tvix" or "snix". */
const char *obi_rpc_api_name(obi_rpc_api api);
/* "/<api>.<name>" into out (size bytes), e.g. "/snix.castore.v1.BlobService/Stat" for
 * "castore.v1.BlobService/Stat". */
void obi_rpc_method_path(obi_rpc_api api, const char *name, char *out, size_t size);
/* The generation a client URL asks for: ?api=tvix (the default) or ?api=snix; any other value
 * is -EINVAL naming it. */
int obi_rpc_url_api(const obi_url *url, obi_rpc_api *out, obi_error **err);

/* ---- status mapping (docs/rpc.md) ---- */

grpc_status_code obi_rpc_status_from_errno(int code);
int obi_rpc_errno_from_status(grpc_status_code status);
const char *obi_rpc_status_name(grpc_status_code status);
/* Shortens a status message to OBI_RPC_MAX_STATUS_MESSAGE bytes, keeping its head and tail
 * (the exit code comes first, the log tail last). Returns a malloc'd string. */
char *obi_rpc_status_message_clip(const char *message);

/* Channel arguments shared by server and client (message size limits). */
const grpc_channel_args *obi_rpc_channel_args(void);

/* ---- server side: handlers (grpc_server.c, docs/rpc.md "Threads") ---- */

typedef struct obi_rpc_call obi_rpc_call;

typedef enum obi_rpc_pool {
    OBI_RPC_POOL_CASTORE, /* short calls: blobs and directories */
    OBI_RPC_POOL_BUILD,   /* long calls: builds, their own bounded pool */
} obi_rpc_pool;

/* A handler is a few callbacks ("steps"), each run on a worker thread of the method's pool when
 * its event happened, never two at once for one call. A step does its work and returns what
 * comes next, or a negative errno-style code: the call then ends with the status mapped from it
 * (obi_rpc_status_from_errno) and (*err)->message. Between steps no thread waits for the client:
 * the server waits for the next event. */
enum {
    OBI_RPC_RECV = 0, /* receive the next request message (client streams only) */
    OBI_RPC_SEND = 1, /* send the queued response, then run on_sent */
    OBI_RPC_DONE = 2, /* send the queued response, if any, with status OK */
};

/* A received request message, in one piece. */
typedef struct obi_rpc_message {
    uint8_t *data; /* malloc'd; freed after the step unless kept */
    size_t len;
} obi_rpc_message;

typedef struct obi_rpc_method {
    /* Without the generation: "castore.v1.BlobService/Stat" is served as
     * "/tvix.castore.v1.BlobService/Stat" and "/snix.castore.v1.BlobService/Stat". */
    const char *name;
    obi_rpc_pool pool;
    /* false: exactly one request message (a call without one is INVALID_ARGUMENT); true: a
     * stream of them, then on_end. */
    bool client_stream;
    /* A request message arrived (ctx: the obi_*_service), charged to the memory budget. The
     * server frees it after the step unless the step kept it (obi_rpc_call_keep_message). */
    int (*on_message)(obi_rpc_call *call, void *ctx, obi_rpc_message *message, obi_error **err);
    /* Client streams: the client closed its stream. */
    int (*on_end)(obi_rpc_call *call, void *ctx, obi_error **err);
    /* The response queued before OBI_RPC_SEND went out: queue the next one or finish. */
    int (*on_sent)(obi_rpc_call *call, void *ctx, obi_error **err);
} obi_rpc_method;

/* The handler's own state for this call (NULL until set); free_state runs when the call ends. */
void *obi_rpc_call_state(obi_rpc_call *call);
void obi_rpc_call_set_state(obi_rpc_call *call, void *state, void (*free_state)(void *));
/* Queues the one response message the step's OBI_RPC_SEND or OBI_RPC_DONE sends; takes
 * ownership of data (malloc'd). */
void obi_rpc_call_queue(obi_rpc_call *call, uint8_t *data, size_t len);
int obi_rpc_call_queue_message(obi_rpc_call *call, const ProtobufCMessage *msg, obi_error **err);
/* Takes the message's bytes out of the step (the caller frees them) while they stay charged to
 * the memory budget all calls share until the call ends. */
uint8_t *obi_rpc_call_keep_message(obi_rpc_call *call, obi_rpc_message *message);
/* Readable once the call is over for the client: it cancelled, disconnected, passed its
 * deadline, or the server cancelled it (idle timeout, shutdown). Build pool calls only; -1 for
 * others. Owned by the call. */
int obi_rpc_call_cancel_fd(const obi_rpc_call *call);
/* Sends key: value (static strings) with the response's initial metadata; before the first
 * message goes out. */
void obi_rpc_call_set_reply_metadata(obi_rpc_call *call, const char *key, const char *value);
/* Whether the client sent the request metadata key with exactly this value. */
bool obi_rpc_call_metadata_is(const obi_rpc_call *call, const char *key, const char *value);
/* Sends a response message (malloc'd; ownership taken) now, from the thread running the call's
 * step, while the step goes on: a server stream whose messages come from work in progress
 * (build events). Messages go out in order, before what the step queues when it returns (the
 * step ends only once they are sent). Waits while more than 1 MiB is queued for a client that
 * does not read (the idle timeout ends that). -ECANCELED once the call is over. */
int obi_rpc_call_push(obi_rpc_call *call, uint8_t *data, size_t len, obi_error **err);
/* The generation the client called the method as, and the full path it called. */
obi_rpc_api obi_rpc_call_api(const obi_rpc_call *call);
const char *obi_rpc_call_path(const obi_rpc_call *call);
/* Whether the client of call is trusted (obi_rpc_server_options.trusted_uids and what follows
 * it); who (size bytes) names it for an error message either way: "uid 1000", or gRPC's peer
 * ("ipv4:127.0.0.1:4711"). A unix peer is known by the credentials of its socket (SO_PEERCRED),
 * which the kernel took when it connected. */
bool obi_rpc_call_trusted(const obi_rpc_call *call, char *who, size_t size);
/* The options the server was made with. */
const obi_rpc_server_options *obi_rpc_call_server_options(const obi_rpc_call *call);

/* Method tables of each service (ctx is the obi_*_service). */
extern const obi_rpc_method obi_rpc_blob_methods[];
extern const size_t obi_rpc_n_blob_methods;
extern const obi_rpc_method obi_rpc_directory_methods[];
extern const size_t obi_rpc_n_directory_methods;
extern const obi_rpc_method obi_rpc_build_methods[];
extern const size_t obi_rpc_n_build_methods;
/* ctx: an obi_rpc_path_info_ctx (Put checks the node against the castore). */
extern const obi_rpc_method obi_rpc_path_info_methods[];
extern const size_t obi_rpc_n_path_info_methods;

typedef struct obi_rpc_path_info_ctx {
    obi_nix_path_info_store *path_infos;
    obi_blob_service *blobs;
    obi_directory_service *directories;
} obi_rpc_path_info_ctx;

/* ---- tvix.store.v1.PathInfo <-> obi_nix_path_info (path_info_pb.c) ---- */

/* Allocates (free with obi_rpc_path_info_pb_free); a content address Nix would not render is
 * -EINVAL. */
int obi_rpc_path_info_to_pb(const obi_nix_path_info *info, Tvix__Store__V1__PathInfo **out,
                            obi_error **err);
void obi_rpc_path_info_pb_free(Tvix__Store__V1__PathInfo *pb);
static inline void obi_rpc_path_info_pb_freep(Tvix__Store__V1__PathInfo **pb)
{
    obi_rpc_path_info_pb_free(*pb);
}
/* Decodes and validates (obi_nix_path_info_validate): the path is "/nix/store/" + the node's
 * name, each reference digest must be that of its reference name. */
int obi_rpc_path_info_from_pb(const Tvix__Store__V1__PathInfo *pb, obi_nix_path_info **out,
                              obi_error **err);
/* What a Put asks beyond obi_rpc_path_info_from_pb: references sorted by store path (by their
 * names, as Nix sorts them) and none twice; the error names the index. */
int obi_rpc_path_info_check_references(const Tvix__Store__V1__PathInfo *pb, obi_error **err);

/* ---- server side: listening sockets (rpc_listen.c) ---- */

/* Creates, binds and listens on a unix socket at path with mode 0600, or 0660 and group gid when
 * gid >= 0, whatever the umask: it is made in a private directory and renamed into place only
 * once its mode and group are set, so it is never more open than that. A stale socket at path
 * (nobody accepts) is replaced; a live one (-EADDRINUSE) or anything else there is refused.
 * *dev and *ino identify the socket file, so that only this one is removed later. */
int obi_rpc_unix_listener_open(const char *path, long gid, int *fd_out, dev_t *dev, ino_t *ino,
                               obi_error **err);
/* Whether a TCP "HOST:PORT" address is a loopback one (127.0.0.0/8, ::1, localhost): 1 yes,
 * 0 no, negative with a message when it does not parse. */
int obi_rpc_tcp_address_is_loopback(const char *address, obi_error **err);
/* For a bound socket (socket activation): 1 if a unix socket or TCP on a loopback address, 0 for
 * other TCP, negative for anything else. */
int obi_rpc_socket_is_local(int fd, obi_error **err);

/* ---- client side (docs/rpc.md "Client transports") ---- */

/* One interface, two transports, chosen at link time: grpc_client.c (libgrpc: every scheme, in
 * ocibuild-rpc.so) and h2_client.c (HTTP/2 on libnghttp2, grpc+unix:// only, in
 * ocibuild-rpc-h2.so, which does not map libgrpc). The service clients (grpc_*_client.c) and the
 * helpers in rpc_client.c are written against it once and built into both modules. */

typedef struct obi_rpc_channel obi_rpc_channel;
typedef struct obi_rpc_client_call obi_rpc_client_call;

/* Most request metadata entries a call takes. */
#define OBI_RPC_MAX_METADATA 8

/* One request metadata entry (a header): key in lower case. */
typedef struct obi_rpc_metadata {
    const char *key, *value;
} obi_rpc_metadata;

/* Channel to an address of the transport's schemes; -EINVAL naming the URL otherwise. */
int obi_rpc_channel_open(const obi_url *url, obi_rpc_channel **out, obi_error **err);
/* Accepts NULL. */
void obi_rpc_channel_close(obi_rpc_channel *channel);

/* Starts a call with request metadata (n entries; keys and values borrowed for the call) and a
 * deadline timeout_ms from now (0: none); past it the call fails with DEADLINE_EXCEEDED
 * (-ETIMEDOUT), and the server sees it cancelled. */
int obi_rpc_client_call_start_metadata(obi_rpc_channel *channel, const char *method,
                                       unsigned timeout_ms, const obi_rpc_metadata *metadata,
                                       size_t n, obi_rpc_client_call **out, obi_error **err);
/* Without metadata or deadline; with a deadline. */
int obi_rpc_client_call_start(obi_rpc_channel *channel, const char *method,
                              obi_rpc_client_call **out, obi_error **err);
int obi_rpc_client_call_start_timeout(obi_rpc_channel *channel, const char *method,
                                      unsigned timeout_ms, obi_rpc_client_call **out,
                                      obi_error **err);
/* Whether the server's initial metadata (there once a message or the status was received) has
 * key with exactly this value. */
bool obi_rpc_client_call_reply_metadata_is(const obi_rpc_client_call *call, const char *key,
                                           const char *value);
/* Sends one message; takes ownership of data. A failure is the call's status when the server
 * ended it. */
int obi_rpc_client_call_send_owned(obi_rpc_client_call *call, uint8_t *data, size_t len,
                                   obi_error **err);
int obi_rpc_client_call_send_message(obi_rpc_client_call *call, const ProtobufCMessage *msg,
                                     obi_error **err);
/* The single request message of a unary or server-streaming call and the half-close
 * (ownership of data taken). Never fails on the server's account: a server may answer and end
 * the call before the request is through, so what it sent is read next and the status says
 * whether the call failed. */
int obi_rpc_client_call_send_request(obi_rpc_client_call *call, uint8_t *data, size_t len,
                                     obi_error **err);
int obi_rpc_client_call_close_send(obi_rpc_client_call *call, obi_error **err);
/* 1 with a message (*data malloc'd), 0 at the end of the server's stream (then the status was
 * OK); negative with the status's errno and message. */
int obi_rpc_client_call_recv(obi_rpc_client_call *call, uint8_t **data, size_t *len,
                             obi_error **err);
/* Waits for the status: 0 if OK, else the errno mapped from it with the server's message.
 * Messages the server sent that were not received are dropped. */
int obi_rpc_client_call_finish(obi_rpc_client_call *call, obi_error **err);
/* The end of a unary call (after send_request): receive exactly one response (*resp malloc'd;
 * -EPROTO when the server sent none), then the status. */
int obi_rpc_client_call_recv_one(obi_rpc_client_call *call, uint8_t **resp, size_t *resp_len,
                                 obi_error **err);
/* The end of a client-streaming call: half-close, then as recv_one. */
int obi_rpc_client_call_close_and_recv_one(obi_rpc_client_call *call, uint8_t **resp,
                                           size_t *resp_len, obi_error **err);
/* The call's method path, for messages. */
const char *obi_rpc_client_call_method(const obi_rpc_client_call *call);
/* From now on, the call is cancelled as soon as fd becomes readable (its status then says
 * CANCELLED: -ECANCELED). fd stays the caller's. */
void obi_rpc_client_call_watch_cancel(obi_rpc_client_call *call, int fd);
/* Cancels the call if it has not finished. Accepts NULL. */
void obi_rpc_client_call_free(obi_rpc_client_call *call);
static inline void obi_rpc_client_call_freep(obi_rpc_client_call **c)
{
    obi_rpc_client_call_free(*c);
}
#define cleanup_rpc_client_call __attribute__((cleanup(obi_rpc_client_call_freep)))

/* Unary convenience: sends request, receives exactly one response message (malloc'd). */
int obi_rpc_client_unary(obi_rpc_channel *channel, const char *method, const ProtobufCMessage *req,
                         uint8_t **resp, size_t *resp_len, obi_error **err);
/* The same with an encoded request (ownership taken). */
int obi_rpc_client_unary_owned(obi_rpc_channel *channel, const char *method, uint8_t *req,
                               size_t req_len, uint8_t **resp, size_t *resp_len, obi_error **err);
/* The error of a call that ended with status (not OK): the errno mapped from it, with the
 * server's message (details, len bytes) or else "method: STATUS_NAME: why"; UNAVAILABLE names
 * the server (target). Both transports word their errors through it. */
int obi_rpc_status_error(obi_error **err, grpc_status_code status, const char *details, size_t len,
                         const char *method, const char *target, const char *why);

/* A byte buffer owning data (malloc'd). */
grpc_byte_buffer *obi_rpc_byte_buffer_own(uint8_t *data, size_t len);
/* Shuts down a completion queue and waits until it is drained. */
void obi_rpc_cq_shutdown_drain(grpc_completion_queue *cq);
/* Shuts down, drains and destroys a completion queue. Accepts NULL. */
void obi_rpc_cq_destroy(grpc_completion_queue *cq);

/* BlobChunk.data's field number: chunks are read and written in place, around the data, so
 * that it is never copied (test_rpc checks the number against the .proto). */
#define OBI_RPC_BLOB_CHUNK_DATA 1
/* Finds BlobChunk.data in an encoded message without copying it, after obi_pb_check (unknown
 * fields are skipped; the last occurrence wins, as in protobuf). -EINVAL naming the field and
 * byte offset if malformed. */
int obi_rpc_blob_chunk_data(const uint8_t *msg, size_t msg_len, const uint8_t **data, size_t *len,
                            obi_error **err);

/* Unpacks a message through obi_pb_unpack (free with protobuf_c_message_free_unpacked);
 * -EINVAL naming `what`, the field and the byte offset. */
int obi_rpc_unpack(const ProtobufCMessageDescriptor *desc, const char *what,
                   const obi_rpc_message *message, ProtobufCMessage **out, obi_error **err);
/* A client's error for a response that did not decode: -EBADMSG (the server broke the protocol)
 * "context: why", or why itself when it is running out of memory. Frees *why. */
int obi_rpc_bad_response(obi_error **err, obi_error **why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#ifdef __clang_analyzer__
/* Negative, as error.h tells the analyzer of its setters (it sees one file at a time). */
#define obi_rpc_bad_response(...) obi_error_negative(obi_rpc_bad_response(__VA_ARGS__))
#endif
/* Copies a received byte buffer into one malloc'd piece and destroys the buffer (never more
 * than the message twice at once). -ENOMEM leaves the buffer destroyed. */
int obi_rpc_byte_buffer_to_message(grpc_byte_buffer *buffer, obi_rpc_message *out);
/* Packs a message into a malloc'd buffer. */
int obi_rpc_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len, obi_error **err);

#endif
