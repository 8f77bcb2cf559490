/*
 * snix.build.v1 BuildResponse and BuildEvent (include/ocibuild/snix_build.h) through the
 * protobuf-c code generated from proto/snix/build/v1/build.proto, decoded through pb_wire's
 * checked unpack as every message. Its outputs are
 * snix.castore.v1.Entry messages, wire-identical to the tvix Node that the castore codec
 * (node.h) speaks: an output goes through obi_node_encode and is read back as an Entry, and
 * the other way on decoding, so there is one node codec with its checks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/pb_wire.h"
#include "ocibuild/snix_build.h"
#include "snix_build.pb-c.h"

typedef Snix__Build__V1__BuildResponse__Output pb_output;

/* ---- outputs ---- */

/* An anonymous entry (empty name), as snix sends outputs: the request names where they were. */
static int entry_from_node(const obi_node *node, Snix__Castore__V1__Entry **out, obi_error **err)
{
    obi_node anonymous = *node; /* shares node's bytes; never cleared */
    anonymous.name = (obi_bytes){NULL, 0};
    cleanup_free uint8_t *data = NULL;
    size_t len = 0;
    int r = obi_node_encode(&anonymous, &data, &len, err);
    if (r < 0)
        return r;
    *out = snix__castore__v1__entry__unpack(NULL, len, data);
    return *out ? 0 : obi_error_oom(err);
}

static int node_from_entry(const Snix__Castore__V1__Entry *entry, obi_node *out, obi_error **err)
{
    size_t len = snix__castore__v1__entry__get_packed_size(entry);
    cleanup_free uint8_t *data = malloc(len ? len : 1);
    if (!data)
        return obi_error_oom(err);
    snix__castore__v1__entry__pack(entry, data);
    return obi_node_decode(data, len, out, err);
}

static void outputs_free(pb_output **outputs, size_t n)
{
    for (size_t i = 0; outputs && i < n; i++) {
        if (outputs[i] && outputs[i]->output)
            snix__castore__v1__entry__free_unpacked(outputs[i]->output, NULL);
        free(outputs[i]);
    }
    free(outputs);
}

/* The outputs of build as Output messages (needles borrowed from build). */
static int outputs_to_pb(const obi_build *build, pb_output ***out, obi_error **err)
{
    *out = NULL;
    if (build->n_outputs == 0)
        return 0;
    pb_output **outputs = calloc(build->n_outputs, sizeof *outputs);
    if (!outputs)
        return obi_error_oom(err);
    for (size_t i = 0; i < build->n_outputs; i++) {
        outputs[i] = malloc(sizeof *outputs[i]);
        if (!outputs[i]) {
            outputs_free(outputs, i);
            return obi_error_oom(err);
        }
        snix__build__v1__build_response__output__init(outputs[i]);
        int r = entry_from_node(&build->outputs[i], &outputs[i]->output, err);
        if (r < 0) {
            outputs_free(outputs, i + 1);
            return obi_error_prefix(err, r, "outputs[%zu]", i);
        }
        if (build->outputs_needles) {
            outputs[i]->n_needles = build->outputs_needles[i].n_needles;
            outputs[i]->needles = build->outputs_needles[i].needles;
        }
    }
    *out = outputs;
    return 0;
}

static int outputs_from_pb(pb_output *const *outputs, size_t n, obi_build **out, obi_error **err)
{
    cleanup_build obi_build *build = obi_build_new();
    if (!build)
        return obi_error_oom(err);
    if (n > 0) {
        build->outputs = calloc(n, sizeof *build->outputs);
        build->outputs_needles = calloc(n, sizeof *build->outputs_needles);
        if (!build->outputs || !build->outputs_needles)
            return obi_error_oom(err);
    }
    for (size_t i = 0; i < n; i++) {
        if (!outputs[i]->output)
            return obi_error_set(err, -EINVAL, "outputs[%zu]: no entry", i);
        int r = node_from_entry(outputs[i]->output, &build->outputs[i], err);
        if (r < 0)
            return obi_error_prefix(err, r, "outputs[%zu]", i);
        build->n_outputs++;
        size_t n_needles = outputs[i]->n_needles;
        if (n_needles == 0)
            continue;
        uint64_t *needles = malloc(n_needles * sizeof *needles);
        if (!needles)
            return obi_error_oom(err);
        memcpy(needles, outputs[i]->needles, n_needles * sizeof *needles);
        build->outputs_needles[i] = (obi_output_needles){needles, n_needles};
    }
    *out = steal_pointer(&build);
    return 0;
}

static int pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len, obi_error **err)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *data = malloc(len ? len : 1);
    if (!data)
        return obi_error_oom(err);
    protobuf_c_message_pack(msg, data);
    *out = data;
    *out_len = len;
    return 0;
}

/* ---- BuildResponse ---- */

int obi_build_encode_snix_pb(const obi_build *build, uint8_t **out, size_t *out_len,
                             obi_error **err)
{
    Snix__Build__V1__BuildResponse msg = SNIX__BUILD__V1__BUILD_RESPONSE__INIT;
    int r = outputs_to_pb(build, &msg.outputs, err);
    if (r < 0)
        return obi_error_prefix(err, r, "encode BuildResponse");
    msg.n_outputs = build->n_outputs;
    r = pack(&msg.base, out, out_len, err);
    outputs_free(msg.outputs, msg.n_outputs);
    return r;
}

int obi_build_decode_snix_pb(const uint8_t *data, size_t len, obi_build **out, obi_error **err)
{
    ProtobufCMessage *msg = NULL;
    int r = obi_pb_unpack(&snix__build__v1__build_response__descriptor, data, len, &msg, err);
    if (r < 0)
        return obi_error_prefix(err, r, "decode BuildResponse");
    Snix__Build__V1__BuildResponse *pb = (Snix__Build__V1__BuildResponse *)msg;
    r = outputs_from_pb(pb->outputs, pb->n_outputs, out, err);
    snix__build__v1__build_response__free_unpacked(pb, NULL);
    return r < 0 ? obi_error_prefix(err, r, "decode BuildResponse") : 0;
}

/* ---- BuildEvent ---- */

static int event_pack(Snix__Build__V1__BuildEvent *event, uint8_t **out, size_t *out_len,
                      obi_error **err)
{
    int r = pack(&event->base, out, out_len, err);
    return r < 0 ? obi_error_prefix(err, r, "encode BuildEvent") : 0;
}

int obi_build_event_started_encode(const char *build_id, uint8_t **out, size_t *out_len,
                                   obi_error **err)
{
    Snix__Build__V1__BuildStarted started = SNIX__BUILD__V1__BUILD_STARTED__INIT;
    started.build_id = (char *)build_id;
    Snix__Build__V1__BuildEvent event = SNIX__BUILD__V1__BUILD_EVENT__INIT;
    event.event_case = SNIX__BUILD__V1__BUILD_EVENT__EVENT_STARTED;
    event.started = &started;
    return event_pack(&event, out, out_len, err);
}

int obi_build_event_log_encode(obi_build_log_stream stream, const uint8_t *data, size_t len,
                               uint8_t **out, size_t *out_len, obi_error **err)
{
    Snix__Build__V1__LogOutput log = SNIX__BUILD__V1__LOG_OUTPUT__INIT;
    log.stream = (Snix__Build__V1__LogOutput__Stream)stream;
    log.data.data = (uint8_t *)data;
    log.data.len = len;
    Snix__Build__V1__BuildEvent event = SNIX__BUILD__V1__BUILD_EVENT__INIT;
    event.event_case = SNIX__BUILD__V1__BUILD_EVENT__EVENT_LOG;
    event.log = &log;
    return event_pack(&event, out, out_len, err);
}

int obi_build_event_refscan_encode(uint32_t output_index, const obi_output_needles *needles,
                                   uint8_t **out, size_t *out_len, obi_error **err)
{
    Snix__Build__V1__RefscanResult refscan = SNIX__BUILD__V1__REFSCAN_RESULT__INIT;
    refscan.output_index = output_index;
    refscan.n_found_needles = needles ? needles->n_needles : 0;
    refscan.found_needles = needles ? needles->needles : NULL;
    Snix__Build__V1__BuildEvent event = SNIX__BUILD__V1__BUILD_EVENT__INIT;
    event.event_case = SNIX__BUILD__V1__BUILD_EVENT__EVENT_REFSCAN;
    event.refscan = &refscan;
    return event_pack(&event, out, out_len, err);
}

int obi_build_event_completed_encode(const obi_build *build, uint8_t **out, size_t *out_len,
                                     obi_error **err)
{
    Snix__Build__V1__BuildCompleted completed = SNIX__BUILD__V1__BUILD_COMPLETED__INIT;
    int r = outputs_to_pb(build, &completed.outputs, err);
    if (r < 0)
        return obi_error_prefix(err, r, "encode BuildEvent");
    completed.n_outputs = build->n_outputs;
    Snix__Build__V1__BuildEvent event = SNIX__BUILD__V1__BUILD_EVENT__INIT;
    event.event_case = SNIX__BUILD__V1__BUILD_EVENT__EVENT_COMPLETED;
    event.completed = &completed;
    r = event_pack(&event, out, out_len, err);
    outputs_free(completed.outputs, completed.n_outputs);
    return r;
}

int obi_build_event_failed_encode(const char *message, int exit_code, uint8_t **out,
                                  size_t *out_len, obi_error **err)
{
    Snix__Build__V1__BuildFailed failed = SNIX__BUILD__V1__BUILD_FAILED__INIT;
    failed.message = (char *)message;
    if (exit_code >= 0) {
        failed.has_exit_code_case = SNIX__BUILD__V1__BUILD_FAILED__HAS_EXIT_CODE_EXIT_CODE;
        failed.exit_code = exit_code;
    }
    Snix__Build__V1__BuildEvent event = SNIX__BUILD__V1__BUILD_EVENT__INIT;
    event.event_case = SNIX__BUILD__V1__BUILD_EVENT__EVENT_FAILED;
    event.failed = &failed;
    return event_pack(&event, out, out_len, err);
}

void obi_build_event_free(obi_build_event *event)
{
    if (!event)
        return;
    free(event->build_id);
    free(event->data);
    free(event->needles.needles);
    obi_build_free(event->build);
    free(event->message);
    free(event);
}

static int event_from_pb(const Snix__Build__V1__BuildEvent *pb, obi_build_event *event,
                         obi_error **err)
{
    switch (pb->event_case) {
    case SNIX__BUILD__V1__BUILD_EVENT__EVENT_STARTED:
        event->build_id = strdup(pb->started->build_id ? pb->started->build_id : "");
        return event->build_id ? 0 : obi_error_oom(err);
    case SNIX__BUILD__V1__BUILD_EVENT__EVENT_LOG:
        event->stream = (obi_build_log_stream)pb->log->stream;
        event->len = pb->log->data.len;
        event->data = malloc(event->len ? event->len : 1);
        if (!event->data)
            return obi_error_oom(err);
        if (event->len)
            memcpy(event->data, pb->log->data.data, event->len);
        return 0;
    case SNIX__BUILD__V1__BUILD_EVENT__EVENT_REFSCAN: {
        size_t n = pb->refscan->n_found_needles;
        event->output_index = pb->refscan->output_index;
        if (n == 0)
            return 0;
        event->needles.needles = malloc(n * sizeof *event->needles.needles);
        if (!event->needles.needles)
            return obi_error_oom(err);
        memcpy(event->needles.needles, pb->refscan->found_needles, n * sizeof(uint64_t));
        event->needles.n_needles = n;
        return 0;
    }
    case SNIX__BUILD__V1__BUILD_EVENT__EVENT_COMPLETED: {
        int r =
            outputs_from_pb(pb->completed->outputs, pb->completed->n_outputs, &event->build, err);
        return r < 0 ? obi_error_prefix(err, r, "completed") : 0;
    }
    case SNIX__BUILD__V1__BUILD_EVENT__EVENT_FAILED:
        event->message = strdup(pb->failed->message ? pb->failed->message : "");
        event->has_exit_code = pb->failed->has_exit_code_case ==
                               SNIX__BUILD__V1__BUILD_FAILED__HAS_EXIT_CODE_EXIT_CODE;
        event->exit_code = pb->failed->exit_code;
        return event->message ? 0 : obi_error_oom(err);
    default:
        return obi_error_set(err, -EINVAL, "no event set");
    }
}

int obi_build_event_decode(const uint8_t *data, size_t len, obi_build_event **out, obi_error **err)
{
    ProtobufCMessage *msg = NULL;
    int r = obi_pb_unpack(&snix__build__v1__build_event__descriptor, data, len, &msg, err);
    if (r < 0)
        return obi_error_prefix(err, r, "decode BuildEvent");
    Snix__Build__V1__BuildEvent *pb = (Snix__Build__V1__BuildEvent *)msg;
    obi_build_event *event = calloc(1, sizeof *event);
    r = event ? 0 : obi_error_oom(err);
    if (r >= 0) {
        event->kind = (obi_build_event_kind)pb->event_case;
        r = event_from_pb(pb, event, err);
    }
    snix__build__v1__build_event__free_unpacked(pb, NULL);
    if (r < 0) {
        obi_build_event_free(event);
        return obi_error_prefix(err, r, "decode BuildEvent");
    }
    *out = event;
    return 0;
}
