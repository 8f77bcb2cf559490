/*
 * The parts of the rpc layer's common helpers that call into libgrpc: channel arguments, byte
 * buffers and completion queues, used by the server core (grpc_server.c) and the libgrpc client
 * transport (grpc_client.c). Kept apart from rpc_common.c, which the lighter unix-socket client
 * module (h2_client.c, docs/rpc.md "Client transports") shares without linking libgrpc.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_internal.h"

const grpc_channel_args *obi_rpc_channel_args(void)
{
    static grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = OBI_RPC_MAX_MESSAGE},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = OBI_RPC_MAX_MESSAGE},
        /* A flow-control window of several chunks, so blob streams do not stall per chunk. */
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
         .value.integer = 8 * OBI_RPC_CHUNK_SIZE},
    };
    static const grpc_channel_args channel_args = {.num_args = sizeof args / sizeof args[0],
                                                   .args = args};
    return &channel_args;
}

int obi_rpc_byte_buffer_to_message(grpc_byte_buffer *buffer, obi_rpc_message *out)
{
    size_t len = grpc_byte_buffer_length(buffer);
    uint8_t *data = malloc(len ? len : 1);
    grpc_byte_buffer_reader reader;
    if (!data || !grpc_byte_buffer_reader_init(&reader, buffer)) {
        free(data);
        grpc_byte_buffer_destroy(buffer);
        return -ENOMEM;
    }
    size_t at = 0;
    grpc_slice slice;
    while (grpc_byte_buffer_reader_next(&reader, &slice)) {
        size_t n = GRPC_SLICE_LENGTH(slice);
        if (n > len - at)
            n = len - at;
        memcpy(data + at, GRPC_SLICE_START_PTR(slice), n);
        at += n;
        grpc_slice_unref(slice);
    }
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(buffer);
    *out = (obi_rpc_message){data, at};
    return 0;
}

grpc_byte_buffer *obi_rpc_byte_buffer_own(uint8_t *data, size_t len)
{
    grpc_slice slice;
    if (len == 0) {
        free(data);
        slice = grpc_empty_slice();
    } else {
        slice = grpc_slice_new(data, len, free);
    }
    grpc_byte_buffer *buffer = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return buffer;
}

void obi_rpc_cq_shutdown_drain(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
}

void obi_rpc_cq_destroy(grpc_completion_queue *cq)
{
    if (!cq)
        return;
    obi_rpc_cq_shutdown_drain(cq);
    grpc_completion_queue_destroy(cq);
}
