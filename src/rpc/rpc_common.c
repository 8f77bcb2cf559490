/*
 * What server and clients share: the table mapping errno-style codes to gRPC status codes and
 * back (docs/rpc.md), status message clipping, message size limits, protobuf packing and
 * unpacking (through pb_wire.h's checked unpack) and BlobChunk read in place.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/build_service.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/pb_wire.h"
#include "rpc_blobstore.pb-c.h"
#include "rpc_internal.h"

typedef struct status_mapping {
    int code;
    grpc_status_code status;
} status_mapping;

/* First match wins in both directions, so each status's first row is its canonical errno. */
static const status_mapping STATUS_MAPPINGS[] = {
    {-EINVAL, GRPC_STATUS_INVALID_ARGUMENT},
    {-ENOENT, GRPC_STATUS_NOT_FOUND},
    {OBI_EBUILD_FAILED, GRPC_STATUS_ABORTED},
    {OBI_ERUNTIME_START, GRPC_STATUS_ABORTED}, /* a command that never ran failed the build */
    {-ETIMEDOUT, GRPC_STATUS_DEADLINE_EXCEEDED},
    {-ENOTSUP, GRPC_STATUS_UNIMPLEMENTED},
    {-ECANCELED, GRPC_STATUS_CANCELLED},
    {-EEXIST, GRPC_STATUS_ALREADY_EXISTS},
    {-EACCES, GRPC_STATUS_PERMISSION_DENIED},
    {-EPERM, GRPC_STATUS_PERMISSION_DENIED},
    {-ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {-ENOSPC, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {-EBUSY, GRPC_STATUS_RESOURCE_EXHAUSTED},
    {-ECONNREFUSED, GRPC_STATUS_UNAVAILABLE},
    {-EOVERFLOW, GRPC_STATUS_OUT_OF_RANGE},
    {-EBADMSG, GRPC_STATUS_DATA_LOSS},
    {-EPROTO, GRPC_STATUS_INTERNAL},
    {-EIO, GRPC_STATUS_INTERNAL},
};

grpc_status_code obi_rpc_status_from_errno(int code)
{
    if (code == 0)
        return GRPC_STATUS_OK;
    for (size_t i = 0; i < sizeof STATUS_MAPPINGS / sizeof STATUS_MAPPINGS[0]; i++)
        if (STATUS_MAPPINGS[i].code == code)
            return STATUS_MAPPINGS[i].status;
    return GRPC_STATUS_INTERNAL;
}

int obi_rpc_errno_from_status(grpc_status_code status)
{
    if (status == GRPC_STATUS_OK)
        return 0;
    for (size_t i = 0; i < sizeof STATUS_MAPPINGS / sizeof STATUS_MAPPINGS[0]; i++)
        if (STATUS_MAPPINGS[i].status == status)
            return STATUS_MAPPINGS[i].code;
    return -EPROTO; /* UNKNOWN, FAILED_PRECONDITION, UNAUTHENTICATED, ... */
}

static const char *const STATUS_NAMES[] = {
    [GRPC_STATUS_OK] = "OK",
    [GRPC_STATUS_CANCELLED] = "CANCELLED",
    [GRPC_STATUS_UNKNOWN] = "UNKNOWN",
    [GRPC_STATUS_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
    [GRPC_STATUS_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
    [GRPC_STATUS_NOT_FOUND] = "NOT_FOUND",
    [GRPC_STATUS_ALREADY_EXISTS] = "ALREADY_EXISTS",
    [GRPC_STATUS_PERMISSION_DENIED] = "PERMISSION_DENIED",
    [GRPC_STATUS_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
    [GRPC_STATUS_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
    [GRPC_STATUS_ABORTED] = "ABORTED",
    [GRPC_STATUS_OUT_OF_RANGE] = "OUT_OF_RANGE",
    [GRPC_STATUS_UNIMPLEMENTED] = "UNIMPLEMENTED",
    [GRPC_STATUS_INTERNAL] = "INTERNAL",
    [GRPC_STATUS_UNAVAILABLE] = "UNAVAILABLE",
    [GRPC_STATUS_DATA_LOSS] = "DATA_LOSS",
    [GRPC_STATUS_UNAUTHENTICATED] = "UNAUTHENTICATED",
};

const char *obi_rpc_status_name(grpc_status_code status)
{
    if ((unsigned)status < sizeof STATUS_NAMES / sizeof STATUS_NAMES[0] && STATUS_NAMES[status])
        return STATUS_NAMES[status];
    return "UNKNOWN";
}

char *obi_rpc_status_message_clip(const char *message)
{
    static const char marker[] = "\n[...]\n";
    size_t len = strlen(message);
    if (len <= OBI_RPC_MAX_STATUS_MESSAGE)
        return strdup(message);
    size_t head = OBI_RPC_MAX_STATUS_MESSAGE / 4;
    size_t tail = OBI_RPC_MAX_STATUS_MESSAGE - head - (sizeof marker - 1);
    char *out = malloc(OBI_RPC_MAX_STATUS_MESSAGE + 1);
    if (!out)
        return NULL;
    memcpy(out, message, head);
    memcpy(out + head, marker, sizeof marker - 1);
    memcpy(out + head + sizeof marker - 1, message + len - tail, tail);
    out[OBI_RPC_MAX_STATUS_MESSAGE] = '\0';
    return out;
}

int obi_rpc_unpack(const ProtobufCMessageDescriptor *desc, const char *what,
                   const obi_rpc_message *message, ProtobufCMessage **out, obi_error **err)
{
    int r = obi_pb_unpack(desc, message->data, message->len, out, err);
    return r < 0 ? obi_error_prefix(err, r, "%s", what) : 0;
}

/* The name in parentheses: not the analyzer's macro of rpc_internal.h. */
int(obi_rpc_bad_response)(obi_error **err, obi_error **why, const char *fmt, ...)
{
    if (*why && (*why)->code == -ENOMEM)
        return obi_error_move(err, why);
    char context[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(context, sizeof context, fmt, ap);
    va_end(ap);
    int r = obi_error_set(err, -EBADMSG, "%s: %s", context, *why ? (*why)->message : "invalid");
    obi_error_free(*why);
    *why = NULL;
    return r;
}

int obi_rpc_pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len, obi_error **err)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *data = malloc(len ? len : 1);
    if (!data)
        return obi_error_set(err, -ENOMEM, "pack %s: out of memory", msg->descriptor->name);
    protobuf_c_message_pack(msg, data);
    *out = data;
    *out_len = len;
    return 0;
}

int obi_rpc_blob_chunk_data(const uint8_t *msg, size_t msg_len, const uint8_t **data, size_t *len,
                            obi_error **err)
{
    int r = obi_pb_check(&tvix__castore__v1__blob_chunk__descriptor, msg, msg_len, err);
    if (r < 0)
        return r;
    *data = msg;
    *len = 0;
    obi_pb_reader reader = obi_pb_reader_of(msg, msg_len);
    obi_pb_field f;
    while (obi_pb_next(&reader, &f, NULL) > 0) {
        if (f.number == OBI_RPC_BLOB_CHUNK_DATA && f.wire_type == OBI_PB_LEN) {
            *data = f.data;
            *len = f.len;
        }
    }
    return 0;
}

/* ---- generations ---- */

static const char *const API_NAMES[] = {[OBI_RPC_API_TVIX] = "tvix", [OBI_RPC_API_SNIX] = "snix"};

const char *obi_rpc_api_name(obi_rpc_api api)
{
    return API_NAMES[api];
}

void obi_rpc_method_path(obi_rpc_api api, const char *name, char *out, size_t size)
{
    snprintf(out, size, "/%s.%s", API_NAMES[api], name);
}

int obi_rpc_url_api(const obi_url *url, obi_rpc_api *out, obi_error **err)
{
    const char *value = obi_url_param_get(url, "api");
    if (!value) {
        *out = OBI_RPC_API_TVIX;
        return 0;
    }
    for (size_t i = 0; i < OBI_ARRAY_SIZE(API_NAMES); i++) {
        if (!strcmp(value, API_NAMES[i])) {
            *out = (obi_rpc_api)i;
            return 0;
        }
    }
    return obi_error_set(err, -EINVAL, "%s://: api=%s: expected tvix or snix", url->scheme, value);
}
