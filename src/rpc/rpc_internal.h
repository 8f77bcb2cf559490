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

#include "ocibuild/error.h"
#include "ocibuild/rpc.h"
#include "ocibuild/url.h"

/* Blob chunks on the wire are at most this big (castore.md). */
#define OBI_RPC_CHUNK_SIZE (1024 * 1024)
/* Largest message either side accepts: directories with many entries can be big. */
#define OBI_RPC_MAX_MESSAGE (256 * 1024 * 1024)
/* Status messages travel in an HTTP/2 header (grpc-message); keep them well below the usual
 * 8 KiB metadata limit even after percent-encoding. */
#define OBI_RPC_MAX_STATUS_MESSAGE 1800

/* ---- status mapping (docs/rpc.md) ---- */

grpc_status_code obi_rpc_status_from_errno(int code);
int obi_rpc_errno_from_status(grpc_status_code status);
const char *obi_rpc_status_name(grpc_status_code status);
/* Shortens a status message to OBI_RPC_MAX_STATUS_MESSAGE bytes, keeping its head and tail
 * (the exit code comes first, the log tail last). Returns a malloc'd string. */
char *obi_rpc_status_message_clip(const char *message);

/* Channel arguments shared by server and client (message size limits). */
const grpc_channel_args *obi_rpc_channel_args(void);

/* ---- server side ---- */

typedef struct obi_rpc_call obi_rpc_call;

/* Receives the next request message: 1 with data and len (malloc'd) set, 0 at the end of the
 * client's stream, negative when the call was cancelled or broke. */
int obi_rpc_call_recv(obi_rpc_call *call, uint8_t **data, size_t *len, obi_error **err);
/* The same as a slice (the caller unrefs it): no copy. */
int obi_rpc_call_recv_slice(obi_rpc_call *call, grpc_slice *out, obi_error **err);
/* Receives and unpacks one message of the given type (free with protobuf_c_message_free_unpacked).
 * 0 at end of stream (*out = NULL); -EINVAL naming `what` if it does not parse. */
int obi_rpc_call_recv_message(obi_rpc_call *call, const ProtobufCMessageDescriptor *desc,
                              const char *what, ProtobufCMessage **out, obi_error **err);
/* Sends one response message; takes ownership of data (malloc'd). */
int obi_rpc_call_send_owned(obi_rpc_call *call, uint8_t *data, size_t len, obi_error **err);
int obi_rpc_call_send_message(obi_rpc_call *call, const ProtobufCMessage *msg, obi_error **err);

typedef enum obi_rpc_pool {
    OBI_RPC_POOL_CASTORE, /* short calls: blobs and directories */
    OBI_RPC_POOL_BUILD,   /* long calls: builds, their own bounded pool */
} obi_rpc_pool;

/* A handler reads requests and sends responses; its return value becomes the status:
 * 0 -> OK, negative -> obi_rpc_status_from_errno(code) with (*err)->message. */
typedef int (*obi_rpc_handler)(obi_rpc_call *call, void *ctx, obi_error **err);

typedef struct obi_rpc_method {
    const char *path; /* "/tvix.castore.v1.BlobService/Stat" */
    obi_rpc_pool pool;
    obi_rpc_handler handler;
} obi_rpc_method;

/* Method tables of each service (ctx is the obi_*_service). */
extern const obi_rpc_method obi_rpc_blob_methods[];
extern const size_t obi_rpc_n_blob_methods;
extern const obi_rpc_method obi_rpc_directory_methods[];
extern const size_t obi_rpc_n_directory_methods;
extern const obi_rpc_method obi_rpc_build_methods[];
extern const size_t obi_rpc_n_build_methods;

/* ---- client side ---- */

typedef struct obi_rpc_client_call obi_rpc_client_call;

/* Channel to a grpc+unix:// or grpc+http:// URL (the only schemes accepted). */
int obi_rpc_channel_open(const obi_url *url, grpc_channel **out, obi_error **err);
/* Accepts NULL. */
void obi_rpc_channel_close(grpc_channel *channel);

/* Starts a call (sends the initial metadata). */
int obi_rpc_client_call_start(grpc_channel *channel, const char *method, obi_rpc_client_call **out,
                              obi_error **err);
/* Sends one message; takes ownership of data. */
int obi_rpc_client_call_send_owned(obi_rpc_client_call *call, uint8_t *data, size_t len,
                                   obi_error **err);
int obi_rpc_client_call_send_message(obi_rpc_client_call *call, const ProtobufCMessage *msg,
                                     obi_error **err);
int obi_rpc_client_call_close_send(obi_rpc_client_call *call, obi_error **err);
/* 1 with a message, 0 at the end of the server's stream; on 0 or failure call _finish for the
 * status. */
int obi_rpc_client_call_recv(obi_rpc_client_call *call, uint8_t **data, size_t *len,
                             obi_error **err);
/* The same, returning the message as a slice (the caller unrefs it): no copy. */
int obi_rpc_client_call_recv_slice(obi_rpc_client_call *call, grpc_slice *out, obi_error **err);
/* Waits for the status: 0 if OK, else the errno mapped from it with the server's message. */
int obi_rpc_client_call_finish(obi_rpc_client_call *call, obi_error **err);
/* The end of a client-streaming or unary call: half-close, receive exactly one response
 * (*resp malloc'd; -EPROTO when the server sent none), then the status. */
int obi_rpc_client_call_close_and_recv_one(obi_rpc_client_call *call, uint8_t **resp,
                                           size_t *resp_len, obi_error **err);
/* Cancels the call if it has not finished. Accepts NULL. */
void obi_rpc_client_call_free(obi_rpc_client_call *call);
static inline void obi_rpc_client_call_freep(obi_rpc_client_call **c)
{
    obi_rpc_client_call_free(*c);
}
#define cleanup_rpc_client_call __attribute__((cleanup(obi_rpc_client_call_freep)))

/* Unary convenience: sends request, receives exactly one response message (malloc'd). */
/* The same with an encoded request (ownership taken). */
int obi_rpc_client_unary_owned(grpc_channel *channel, const char *method, uint8_t *req,
                               size_t req_len, uint8_t **resp, size_t *resp_len, obi_error **err);
int obi_rpc_client_unary(grpc_channel *channel, const char *method, const ProtobufCMessage *req,
                         uint8_t **resp, size_t *resp_len, obi_error **err);

/* Starts one batch on call and waits for it on cq (which carries only this call's batches).
 * true if it completed successfully. */
bool obi_rpc_run_batch(grpc_call *call, grpc_completion_queue *cq, const grpc_op *ops, size_t n);
/* Copies a received byte buffer into one slice (the caller unrefs it) and destroys it. */
grpc_slice obi_rpc_byte_buffer_take(grpc_byte_buffer *buffer);
/* A byte buffer owning data (malloc'd). */
grpc_byte_buffer *obi_rpc_byte_buffer_own(uint8_t *data, size_t len);
/* Shuts down a completion queue and waits until it is drained. */
void obi_rpc_cq_shutdown_drain(grpc_completion_queue *cq);
/* Shuts down, drains and destroys a completion queue. Accepts NULL. */
void obi_rpc_cq_destroy(grpc_completion_queue *cq);

/* Finds BlobChunk.data (field 1) in an encoded message without copying it (other fields are
 * skipped; the last occurrence wins, as in protobuf). -EBADMSG if malformed. */
int obi_rpc_blob_chunk_data(const uint8_t *msg, size_t msg_len, const uint8_t **data, size_t *len);

/* Packs a message into a malloc'd buffer. */
int obi_rpc_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len, obi_error **err);

#endif
