/*
 * tvix.castore.v1.BlobService served from an obi_blob_service: Stat (NOT_FOUND when absent),
 * Read (a server stream of chunks of at most 1 MiB) and Put (a client stream of chunks; the
 * blob becomes visible only once the whole stream arrived and was stored).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
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

static int blob_stat(obi_rpc_call *call, void *ctx, obi_error **err)
{
    obi_blob_service *blobs = ctx;
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_call_recv_message(call, &tvix__castore__v1__stat_blob_request__descriptor,
                                      "StatBlobRequest", &msg, err);
    if (r <= 0)
        return r < 0 ? r : obi_error_set(err, -EINVAL, "StatBlobRequest: missing");
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
    return obi_rpc_call_send_message(call, &resp.base, err);
}

/* Chunk messages are encoded by hand around the data, so that each chunk is read straight into
 * the buffer that goes on the wire: field 1, wire type 2 (0x0a), varint length, bytes. */
#define CHUNK_HEADER_MAX 6

static size_t put_varint(uint8_t *out, size_t value)
{
    size_t n = 0;
    while (value >= 0x80) {
        out[n++] = (uint8_t)(value | 0x80);
        value >>= 7;
    }
    out[n++] = (uint8_t)value;
    return n;
}

static int blob_read(obi_rpc_call *call, void *ctx, obi_error **err)
{
    obi_blob_service *blobs = ctx;
    ProtobufCMessage *msg = NULL;
    int r = obi_rpc_call_recv_message(call, &tvix__castore__v1__read_blob_request__descriptor,
                                      "ReadBlobRequest", &msg, err);
    if (r <= 0)
        return r < 0 ? r : obi_error_set(err, -EINVAL, "ReadBlobRequest: missing");
    Tvix__Castore__V1__ReadBlobRequest *req = (Tvix__Castore__V1__ReadBlobRequest *)msg;
    obi_digest digest;
    r = digest_from_bytes(&req->digest, "ReadBlobRequest.digest", &digest, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (r < 0)
        return r;

    cleanup_blob_reader obi_blob_reader *reader = NULL;
    r = obi_blob_open_read(blobs, &digest, &reader, err);
    if (r < 0)
        return r;
    for (;;) {
        uint8_t *buffer = malloc(CHUNK_HEADER_MAX + OBI_RPC_CHUNK_SIZE);
        if (!buffer)
            return obi_error_set(err, -ENOMEM, "read blob: out of memory");
        uint8_t *data = buffer + CHUNK_HEADER_MAX;
        size_t filled = 0;
        while (filled < OBI_RPC_CHUNK_SIZE) {
            size_t n = 0;
            r = obi_blob_read(reader, data + filled, OBI_RPC_CHUNK_SIZE - filled, &n, err);
            if (r < 0) {
                free(buffer);
                return r;
            }
            if (n == 0)
                break;
            filled += n;
        }
        if (filled == 0) {
            free(buffer);
            return 0; /* an empty blob is an empty stream */
        }
        uint8_t header[CHUNK_HEADER_MAX];
        header[0] = 0x0a;
        size_t header_len = 1 + put_varint(header + 1, filled);
        uint8_t *message = data - header_len;
        memcpy(message, header, header_len);
        /* The slice frees the whole buffer; its data starts inside it. */
        memmove(buffer, message, header_len + filled);
        bool last = filled < OBI_RPC_CHUNK_SIZE;
        r = obi_rpc_call_send_owned(call, buffer, header_len + filled, err);
        if (r < 0 || last)
            return r;
    }
}

static int blob_put(obi_rpc_call *call, void *ctx, obi_error **err)
{
    obi_blob_service *blobs = ctx;
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = obi_blob_open_write(blobs, &writer, err);
    if (r < 0)
        return r;
    for (size_t index = 0;; index++) {
        grpc_slice message;
        r = obi_rpc_call_recv_slice(call, &message, err);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        const uint8_t *data;
        size_t len;
        if (obi_rpc_blob_chunk_data(GRPC_SLICE_START_PTR(message), GRPC_SLICE_LENGTH(message),
                                    &data, &len) < 0)
            r = obi_error_set(err, -EINVAL, "BlobChunk %zu: not a valid BlobChunk message", index);
        else
            r = obi_blob_write(writer, data, len, err);
        grpc_slice_unref(message);
        if (r < 0)
            return r;
    }
    obi_digest digest;
    r = obi_blob_finish(writer, &digest, err);
    if (r < 0)
        return r;
    Tvix__Castore__V1__PutBlobResponse resp = TVIX__CASTORE__V1__PUT_BLOB_RESPONSE__INIT;
    resp.digest.data = digest.bytes;
    resp.digest.len = OBI_DIGEST_LEN;
    return obi_rpc_call_send_message(call, &resp.base, err);
}

const obi_rpc_method obi_rpc_blob_methods[] = {
    {"/tvix.castore.v1.BlobService/Stat", OBI_RPC_POOL_CASTORE, blob_stat},
    {"/tvix.castore.v1.BlobService/Read", OBI_RPC_POOL_CASTORE, blob_read},
    {"/tvix.castore.v1.BlobService/Put", OBI_RPC_POOL_CASTORE, blob_put},
};
const size_t obi_rpc_n_blob_methods = sizeof obi_rpc_blob_methods / sizeof obi_rpc_blob_methods[0];
