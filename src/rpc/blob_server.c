/*
 * tvix.castore.v1.BlobService served from an obi_blob_service: Stat (NOT_FOUND when absent),
 * Read (a server stream of chunks of at most 1 MiB, one produced each time the previous one went
 * out) and Put (a client stream of chunks written as they arrive; the blob becomes visible only
 * once the whole stream arrived and was stored). Each function is one step of a call
 * (rpc_internal.h): none of them waits for the client.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/pb_wire.h"
#include "ocibuild/store.h"
#include "rpc_blobstore.pb-c.h"
#include "rpc_internal.h"

static int digest_from_bytes(const ProtobufCBinaryData *bytes, const char *what, obi_digest *out,
                             obi_error **err)
{
    if (bytes->len != OBI_DIGEST_LEN)
        return obi_error_set(err, -EINVAL, "%s: digest must be %d bytes, got %zu", what,
                             OBI_DIGEST_LEN, bytes->len);
    memcpy(out->bytes, bytes->data, OBI_DIGEST_LEN);
    return 0;
}

static int blob_stat(obi_rpc_call *call, void *ctx, obi_rpc_message *message, obi_error **err)
{
    obi_blob_service *blobs = ctx;
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_unpack(&tvix__castore__v1__stat_blob_request__descriptor, "StatBlobRequest",
                           message, &msg, err);
    if (r < 0)
        return r;
    Tvix__Castore__V1__StatBlobRequest *req = (Tvix__Castore__V1__StatBlobRequest *)msg;
    obi_digest digest;
    r = digest_from_bytes(&req->digest, "StatBlobRequest.digest", &digest, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (r < 0)
        return r;
    r = obi_blob_has(blobs, &digest, err);
    if (r < 0)
        return r;
    if (r == 0) {
        cleanup_free char *text = obi_digest_to_b3_string(&digest);
        return obi_error_set(err, -ENOENT, "blob %s not found", text ? text : "?");
    }
    /* No chunking and no bao outboard: the reply says only "it exists". */
    Tvix__Castore__V1__StatBlobResponse resp = TVIX__CASTORE__V1__STAT_BLOB_RESPONSE__INIT;
    r = obi_rpc_call_queue_message(call, &resp.base, err);
    return r < 0 ? r : OBI_RPC_DONE;
}

/* Chunk messages are encoded by hand around the data, so that each chunk is read straight into
 * the buffer that goes on the wire: the key and length of BlobChunk.data, then the bytes. */
#define CHUNK_HEADER_MAX OBI_PB_LEN_HEADER_MAX

static void reader_free(void *reader)
{
    obi_blob_reader_close(reader);
}

/* Queues the next chunk of the blob: OBI_RPC_SEND while more may follow, OBI_RPC_DONE with the
 * last one (or none: an empty blob is an empty stream). */
static int read_queue_chunk(obi_rpc_call *call, obi_blob_reader *reader, obi_error **err)
{
    cleanup_free uint8_t *buffer = malloc(CHUNK_HEADER_MAX + OBI_RPC_CHUNK_SIZE);
    if (!buffer)
        return obi_error_set(err, -ENOMEM, "read blob: out of memory");
    uint8_t *data = buffer + CHUNK_HEADER_MAX;
    size_t filled = 0;
    while (filled < OBI_RPC_CHUNK_SIZE) {
        size_t n = 0;
        int r = obi_blob_read(reader, data + filled, OBI_RPC_CHUNK_SIZE - filled, &n, err);
        if (r < 0)
            return r;
        if (n == 0)
            break;
        filled += n;
    }
    if (filled == 0)
        return OBI_RPC_DONE;
    uint8_t header[CHUNK_HEADER_MAX];
    size_t header_len = obi_pb_put_len_header(header, OBI_RPC_BLOB_CHUNK_DATA, filled);
    /* The message starts at the buffer, so that the slice frees the whole allocation. */
    memmove(buffer + header_len, data, filled);
    memcpy(buffer, header, header_len);
    obi_rpc_call_queue(call, steal_pointer(&buffer), header_len + filled);
    return filled < OBI_RPC_CHUNK_SIZE ? OBI_RPC_DONE : OBI_RPC_SEND;
}

static int blob_read(obi_rpc_call *call, void *ctx, obi_rpc_message *message, obi_error **err)
{
    obi_blob_service *blobs = ctx;
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_unpack(&tvix__castore__v1__read_blob_request__descriptor, "ReadBlobRequest",
                           message, &msg, err);
    if (r < 0)
        return r;
    Tvix__Castore__V1__ReadBlobRequest *req = (Tvix__Castore__V1__ReadBlobRequest *)msg;
    obi_digest digest;
    r = digest_from_bytes(&req->digest, "ReadBlobRequest.digest", &digest, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (r < 0)
        return r;
    obi_blob_reader *reader = NULL;
    r = obi_blob_open_read(blobs, &digest, &reader, err);
    if (r < 0)
        return r;
    obi_rpc_call_set_state(call, reader, reader_free);
    return read_queue_chunk(call, reader, err);
}

static int blob_read_sent(obi_rpc_call *call, void *ctx, obi_error **err)
{
    (void)ctx;
    return read_queue_chunk(call, obi_rpc_call_state(call), err);
}

/* A Put's state: the writer (opened on the first chunk) and how many chunks came. */
typedef struct put_state {
    obi_blob_writer *writer;
    size_t chunks;
} put_state;

static void put_state_free(void *state)
{
    put_state *put = state;
    obi_blob_writer_close(put->writer); /* unfinished: nothing becomes visible */
    free(put);
}

static int put_state_get(obi_rpc_call *call, obi_blob_service *blobs, put_state **out,
                         obi_error **err)
{
    put_state *put = obi_rpc_call_state(call);
    if (!put) {
        put = calloc(1, sizeof *put);
        if (!put)
            return obi_error_set(err, -ENOMEM, "put blob: out of memory");
        obi_rpc_call_set_state(call, put, put_state_free);
        int r = obi_blob_open_write(blobs, &put->writer, err);
        if (r < 0)
            return r;
    }
    *out = put;
    return 0;
}

static int blob_put_chunk(obi_rpc_call *call, void *ctx, obi_rpc_message *message, obi_error **err)
{
    put_state *put = NULL;
    int r = put_state_get(call, ctx, &put, err);
    if (r < 0)
        return r;
    const uint8_t *data;
    size_t len;
    r = obi_rpc_blob_chunk_data(message->data, message->len, &data, &len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "BlobChunk %zu", put->chunks);
    put->chunks++;
    r = obi_blob_write(put->writer, data, len, err);
    return r < 0 ? r : OBI_RPC_RECV;
}

static int blob_put_end(obi_rpc_call *call, void *ctx, obi_error **err)
{
    put_state *put = NULL;
    int r = put_state_get(call, ctx, &put, err);
    if (r < 0)
        return r;
    obi_digest digest;
    r = obi_blob_finish(put->writer, &digest, err);
    if (r < 0)
        return r;
    Tvix__Castore__V1__PutBlobResponse resp = TVIX__CASTORE__V1__PUT_BLOB_RESPONSE__INIT;
    resp.digest.data = digest.bytes;
    resp.digest.len = OBI_DIGEST_LEN;
    r = obi_rpc_call_queue_message(call, &resp.base, err);
    return r < 0 ? r : OBI_RPC_DONE;
}

const obi_rpc_method obi_rpc_blob_methods[] = {
    {"castore.v1.BlobService/Stat", OBI_RPC_POOL_CASTORE, false, blob_stat, NULL, NULL},
    {"castore.v1.BlobService/Read", OBI_RPC_POOL_CASTORE, false, blob_read, NULL, blob_read_sent},
    {"castore.v1.BlobService/Put", OBI_RPC_POOL_CASTORE, true, blob_put_chunk, blob_put_end, NULL},
};
const size_t obi_rpc_n_blob_methods = sizeof obi_rpc_blob_methods / sizeof obi_rpc_blob_methods[0];
