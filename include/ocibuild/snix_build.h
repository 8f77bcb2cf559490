/*
 * The snix generation of the build messages (proto/snix/build/v1/build.proto): BuildResponse,
 * the unary DoBuild's reply (outputs and their refscan needles, no request: not wire-compatible
 * with tvix.build.v1.Build, which request.h encodes), and BuildEvent, one event of a streamed
 * build (started, a piece of log, a refscan result, completed, failed). BuildRequest is the same
 * on both generations (request.h). Outputs are castore entries without a name, in the order of
 * BuildRequest.outputs, as obi_build keeps them.
 */
#ifndef OCIBUILD_SNIX_BUILD_H
#define OCIBUILD_SNIX_BUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/request.h"

int obi_build_encode_snix_pb(const obi_build *build, uint8_t **out, size_t *out_len,
                             obi_error **err);
/* The result has no request (build->request NULL). Errors name the field and index. */
int obi_build_decode_snix_pb(const uint8_t *data, size_t len, obi_build **out, obi_error **err);

/* ---- BuildEvent ---- */

typedef enum obi_build_event_kind {
    OBI_BUILD_EVENT_NONE = 0, /* the oneof unset (refused by the decoder) */
    OBI_BUILD_EVENT_STARTED = 1,
    OBI_BUILD_EVENT_LOG = 2,
    OBI_BUILD_EVENT_REFSCAN = 3,
    OBI_BUILD_EVENT_COMPLETED = 4,
    OBI_BUILD_EVENT_FAILED = 5,
} obi_build_event_kind;

/* LogOutput.Stream */
typedef enum obi_build_log_stream {
    OBI_BUILD_LOG_UNSPECIFIED = 0,
    OBI_BUILD_LOG_STDOUT = 1,
    OBI_BUILD_LOG_STDERR = 2,
} obi_build_log_stream;

typedef struct obi_build_event {
    obi_build_event_kind kind;
    char *build_id;              /* STARTED */
    obi_build_log_stream stream; /* LOG */
    uint8_t *data;               /* LOG: the bytes as the build wrote them */
    size_t len;
    uint32_t output_index; /* REFSCAN */
    obi_output_needles needles;
    obi_build *build; /* COMPLETED: outputs and needles, no request */
    char *message;    /* FAILED */
    bool has_exit_code;
    int32_t exit_code;
} obi_build_event;

/* Encoders take only what their event carries. */
int obi_build_event_started_encode(const char *build_id, uint8_t **out, size_t *out_len,
                                   obi_error **err);
int obi_build_event_log_encode(obi_build_log_stream stream, const uint8_t *data, size_t len,
                               uint8_t **out, size_t *out_len, obi_error **err);
int obi_build_event_refscan_encode(uint32_t output_index, const obi_output_needles *needles,
                                   uint8_t **out, size_t *out_len, obi_error **err);
int obi_build_event_completed_encode(const obi_build *build, uint8_t **out, size_t *out_len,
                                     obi_error **err);
/* exit_code < 0: none (the build did not get to exit). */
int obi_build_event_failed_encode(const char *message, int exit_code, uint8_t **out,
                                  size_t *out_len, obi_error **err);

int obi_build_event_decode(const uint8_t *data, size_t len, obi_build_event **out, obi_error **err);
void obi_build_event_free(obi_build_event *event);
static inline void obi_build_event_freep(obi_build_event **e)
{
    obi_build_event_free(*e);
}
#define cleanup_build_event __attribute__((cleanup(obi_build_event_freep)))

#endif
