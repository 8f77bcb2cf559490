/*
 * obi_blob_service over gRPC (tvix.castore.v1.BlobService): has -> Stat, open_read -> a Read
 * stream consumed chunk by chunk, open_write -> one Put stream per blob (the server makes the
 * blob visible only when the stream completes; closing an unfinished writer cancels the call).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/blake3.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/pb_wire.h"
#include "ocibuild/rpc.h"
#include "ocibuild/store_backend.h"
#include "rpc_blobstore.pb-c.h"
#include "rpc_internal.h"

/* The method paths of each generation (obi_rpc_api, from the URL's ?api=). */
static const char *const METHOD_STAT[] = {"/tvix.castore.v1.BlobService/Stat",
                                          "/snix.castore.v1.BlobService/Stat"};
static const char *const METHOD_READ[] = {"/tvix.castore.v1.BlobService/Read",
                                          "/snix.castore.v1.BlobService/Read"};
static const char *const METHOD_PUT[] = {"/tvix.castore.v1.BlobService/Put",
                                         "/snix.castore.v1.BlobService/Put"};

typedef struct grpc_blob_service {
    obi_blob_service base;
    obi_rpc_channel *channel;
    obi_rpc_api api;
} grpc_blob_service;

/* ---- reading ---- */

typedef struct grpc_blob_reader {
    obi_blob_reader base;
    obi_rpc_client_call *call;
    const char *path;    /* the Read method's path, for messages */
    uint8_t *message;    /* the BlobChunk being consumed (malloc'd) */
    const uint8_t *data; /* its data field, inside message */
    size_t len, offset;
    bool eof;
} grpc_blob_reader;

/* Fetches the next non-empty chunk; eof at the end of the stream. */
static int reader_next_chunk(grpc_blob_reader *reader, obi_error **err)
{
    while (!reader->eof) {
        free(reader->message);
        reader->message = NULL;
        reader->len = reader->offset = 0;
        size_t message_len = 0;
        int r = obi_rpc_client_call_recv(reader->call, &reader->message, &message_len, err);
        if (r < 0)
            return r;
        if (r == 0) {
            reader->eof = true;
            return 0;
        }
        obi_error *why = NULL;
        if (obi_rpc_blob_chunk_data(reader->message, message_len, &reader->data, &reader->len,
                                    &why) < 0)
            return obi_rpc_bad_response(err, &why, "%s: BlobChunk", reader->path);
        if (reader->len > 0)
            return 0;
    }
    return 0;
}

static int reader_read(obi_blob_reader *base, void *buf, size_t len, size_t *nread, obi_error **err)
{
    grpc_blob_reader *reader = (grpc_blob_reader *)base;
    size_t done = 0;
    while (done < len) {
        if (reader->offset == reader->len) {
            if (reader->eof)
                break;
            int r = reader_next_chunk(reader, err);
            if (r < 0)
                return r;
            if (reader->eof)
                break;
        }
        size_t n = reader->len - reader->offset;
        if (n > len - done)
            n = len - done;
        memcpy((uint8_t *)buf + done, reader->data + reader->offset, n);
        reader->offset += n;
        done += n;
    }
    *nread = done;
    return 0;
}

static void reader_close(obi_blob_reader *base)
{
    grpc_blob_reader *reader = (grpc_blob_reader *)base;
    free(reader->message);
    obi_rpc_client_call_free(reader->call);
    free(reader);
}

static const struct obi_blob_reader_ops READER_OPS = {
    .read = reader_read,
    .close = reader_close,
};

static int start_read(grpc_blob_service *svc, const obi_digest *digest, obi_rpc_client_call **out,
                      obi_error **err)
{
    cleanup_rpc_client_call obi_rpc_client_call *call = NULL;
    int r = obi_rpc_client_call_start(svc->channel, METHOD_READ[svc->api], &call, err);
    if (r < 0)
        return r;
    Tvix__Castore__V1__ReadBlobRequest req = TVIX__CASTORE__V1__READ_BLOB_REQUEST__INIT;
    req.digest.data = (uint8_t *)digest->bytes;
    req.digest.len = OBI_DIGEST_LEN;
    uint8_t *data = NULL;
    size_t len = 0;
    r = obi_rpc_pack(&req.base, &data, &len, err);
    if (r >= 0)
        r = obi_rpc_client_call_send_request(call, data, len, err);
    if (r < 0)
        return r;
    *out = steal_pointer(&call);
    return 0;
}

static int svc_open_read(obi_blob_service *base, const obi_digest *digest, obi_blob_reader **out,
                         obi_error **err)
{
    grpc_blob_service *svc = (grpc_blob_service *)base;
    grpc_blob_reader *reader = calloc(1, sizeof *reader);
    if (!reader)
        return obi_error_set(err, -ENOMEM, "read blob: out of memory");
    reader->base.ops = &READER_OPS;
    reader->path = METHOD_READ[svc->api];
    int r = start_read(svc, digest, &reader->call, err);
    /* The first chunk (or the status: NOT_FOUND) arrives now, so a missing blob fails here. */
    if (r >= 0)
        r = reader_next_chunk(reader, err);
    if (r < 0) {
        reader_close(&reader->base);
        return r;
    }
    *out = &reader->base;
    return 0;
}

static int svc_has(obi_blob_service *base, const obi_digest *digest, obi_error **err)
{
    grpc_blob_service *svc = (grpc_blob_service *)base;
    Tvix__Castore__V1__StatBlobRequest req = TVIX__CASTORE__V1__STAT_BLOB_REQUEST__INIT;
    req.digest.data = (uint8_t *)digest->bytes;
    req.digest.len = OBI_DIGEST_LEN;
    cleanup_free uint8_t *resp = NULL;
    size_t resp_len = 0;
    cleanup_error obi_error *local = NULL;
    int r = obi_rpc_client_unary(svc->channel, METHOD_STAT[svc->api], &req.base, &resp, &resp_len,
                                 &local);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return obi_error_move(err, &local);
    return 1;
}

/* ---- writing ---- */

/* Blobs up to this size are held back and hashed first, so that one the server already has
 * (an input imported again for every build) costs a Stat instead of an upload. Larger blobs
 * are streamed as they are written. */
#define SPOOL_MAX (4 * 1024 * 1024)

typedef struct grpc_blob_writer {
    obi_blob_writer base;
    grpc_blob_service *svc;
    obi_rpc_client_call *call; /* NULL while spooling */
    uint8_t *spool;
    size_t spooled;
    obi_blake3_hasher hasher;
    bool failed, finished;
} grpc_blob_writer;

static int send_chunks(grpc_blob_writer *writer, const uint8_t *p, size_t len, obi_error **err)
{
    while (len > 0) {
        size_t n = len > OBI_RPC_CHUNK_SIZE ? OBI_RPC_CHUNK_SIZE : len;
        Tvix__Castore__V1__BlobChunk chunk = TVIX__CASTORE__V1__BLOB_CHUNK__INIT;
        chunk.data.data = (uint8_t *)p;
        chunk.data.len = n;
        int r = obi_rpc_client_call_send_message(writer->call, &chunk.base, err);
        if (r < 0)
            return r;
        p += n;
        len -= n;
    }
    return 0;
}

/* Starts the Put call and sends what was spooled. */
static int start_streaming(grpc_blob_writer *writer, obi_error **err)
{
    int r = obi_rpc_client_call_start(writer->svc->channel, METHOD_PUT[writer->svc->api],
                                      &writer->call, err);
    if (r >= 0)
        r = send_chunks(writer, writer->spool, writer->spooled, err);
    free(writer->spool);
    writer->spool = NULL;
    writer->spooled = 0;
    return r;
}

static int writer_write(obi_blob_writer *base, const void *data, size_t len, obi_error **err)
{
    grpc_blob_writer *writer = (grpc_blob_writer *)base;
    if (writer->failed || writer->finished)
        return obi_error_set(err, -EINVAL, "%s: write after a failure or finish",
                             METHOD_PUT[writer->svc->api]);
    int r = 0;
    if (!writer->call && writer->spooled + len <= SPOOL_MAX) {
        if (!writer->spool && !(writer->spool = malloc(SPOOL_MAX)))
            r = obi_error_set(err, -ENOMEM, "%s: out of memory", METHOD_PUT[writer->svc->api]);
        if (r >= 0) {
            memcpy(writer->spool + writer->spooled, data, len);
            writer->spooled += len;
            obi_blake3_update(&writer->hasher, data, len);
        }
    } else {
        if (!writer->call)
            r = start_streaming(writer, err);
        if (r >= 0)
            r = send_chunks(writer, data, len, err);
    }
    if (r < 0)
        writer->failed = true;
    return r;
}

static int finish_streaming(grpc_blob_writer *writer, obi_digest *digest_out, obi_error **err)
{
    cleanup_rpc_client_call obi_rpc_client_call *call = steal_pointer(&writer->call);
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    int r = obi_rpc_client_call_close_and_recv_one(call, &data, &len, err);
    if (r < 0)
        return r;
    ProtobufCMessage *msg = NULL;
    obi_error *why = NULL;
    if (obi_pb_unpack(&tvix__castore__v1__put_blob_response__descriptor, data, len, &msg, &why) < 0)
        return obi_rpc_bad_response(err, &why, "%s: PutBlobResponse", METHOD_PUT[writer->svc->api]);
    Tvix__Castore__V1__PutBlobResponse *resp = (Tvix__Castore__V1__PutBlobResponse *)msg;
    if (resp->digest.len != OBI_DIGEST_LEN) {
        size_t got = resp->digest.len;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return obi_error_set(err, -EBADMSG, "%s: response digest has %zu bytes",
                             METHOD_PUT[writer->svc->api], got);
    }
    memcpy(digest_out->bytes, resp->digest.data, OBI_DIGEST_LEN);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static int writer_finish(obi_blob_writer *base, obi_digest *digest_out, obi_error **err)
{
    grpc_blob_writer *writer = (grpc_blob_writer *)base;
    if (writer->failed || writer->finished)
        return obi_error_set(err, -EINVAL, "%s: finish after a failure or finish",
                             METHOD_PUT[writer->svc->api]);
    obi_digest digest, spooled_digest = {0};
    int r = 0;
    bool spooling = !writer->call;
    if (spooling) {
        obi_blake3_finalize(&writer->hasher, spooled_digest.bytes, OBI_DIGEST_LEN);
        r = svc_has(&writer->svc->base, &spooled_digest, err);
        if (r == 1) {
            digest = spooled_digest; /* already there: nothing to upload */
            r = 0;
            goto done;
        }
        if (r >= 0)
            r = start_streaming(writer, err);
    }
    if (r >= 0)
        r = finish_streaming(writer, &digest, err);
    if (r >= 0 && spooling && !obi_digest_equal(&digest, &spooled_digest))
        r = obi_error_set(err, -EBADMSG, "%s: the server's digest differs from the data's",
                          METHOD_PUT[writer->svc->api]);
done:
    if (r < 0) {
        writer->failed = true;
        return r;
    }
    writer->finished = true;
    if (digest_out)
        *digest_out = digest;
    return 0;
}

static void writer_close(obi_blob_writer *base)
{
    grpc_blob_writer *writer = (grpc_blob_writer *)base;
    obi_rpc_client_call_free(writer->call); /* cancels an unfinished Put: nothing is stored */
    free(writer->spool);
    free(writer);
}

static const struct obi_blob_writer_ops WRITER_OPS = {
    .write = writer_write,
    .finish = writer_finish,
    .close = writer_close,
};

static int svc_open_write(obi_blob_service *base, obi_blob_writer **out, obi_error **err)
{
    grpc_blob_writer *writer = calloc(1, sizeof *writer);
    if (!writer)
        return obi_error_set(err, -ENOMEM, "write blob: out of memory");
    writer->base.ops = &WRITER_OPS;
    writer->svc = (grpc_blob_service *)base;
    obi_blake3_init(&writer->hasher);
    *out = &writer->base;
    return 0;
}

static void svc_free(obi_blob_service *base)
{
    grpc_blob_service *svc = (grpc_blob_service *)base;
    obi_rpc_channel_close(svc->channel);
    free(svc);
}

static const struct obi_blob_service_ops SERVICE_OPS = {
    .has = svc_has,
    .open_read = svc_open_read,
    .open_write = svc_open_write,
    .local_path = NULL,
    .free = svc_free,
};

int obi_grpc_blob_service_open(const obi_url *url, obi_blob_service **out, obi_error **err)
{
    grpc_blob_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_set(err, -ENOMEM, "grpc blob service: out of memory");
    svc->base.ops = &SERVICE_OPS;
    int r = obi_rpc_url_api(url, &svc->api, err);
    if (r >= 0)
        r = obi_rpc_channel_open(url, &svc->channel, err);
    if (r < 0) {
        free(svc);
        return r;
    }
    *out = &svc->base;
    return 0;
}
