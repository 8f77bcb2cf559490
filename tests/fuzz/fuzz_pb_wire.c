/*
 * Fuzz target: pb_wire's checks (pb_wire.h) against protobuf-c itself, over the messages of
 * castore.proto and build.proto (the first byte picks one, the rest is the message). What
 * obi_pb_check accepts protobuf-c must unpack (obi_pb_unpack takes a refusal after the check
 * for running out of memory); what obi_pb_check_canonical accepts must pass obi_pb_check, and
 * protobuf-c must pack what it unpacks to the very same bytes; obi_pb_is_canonical must agree
 * with obi_pb_check_canonical; and every refusal must explain itself.
 */
#include "fuzz_common.h"

#include "build.pb-c.h"
#include "castore.pb-c.h"
#include "ocibuild/pb_wire.h"

static const ProtobufCMessageDescriptor *const MESSAGES[] = {
    &tvix__castore__v1__directory__descriptor,
    &tvix__castore__v1__node__descriptor,
    &tvix__build__v1__build_request__descriptor,
    &tvix__build__v1__build__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const ProtobufCMessageDescriptor *desc = MESSAGES[data[0] % OBI_ARRAY_SIZE(MESSAGES)];
    const uint8_t *msg = data + 1;
    size_t len = size - 1;

    cleanup_error obi_error *err = NULL;
    int checked = obi_pb_check(desc, msg, len, &err);
    FUZZ_CHECK_ERROR(checked, err);
    obi_error_free(err);
    err = NULL;
    int canonical = obi_pb_check_canonical(desc, msg, len, &err);
    FUZZ_CHECK_ERROR(canonical, err);
    FUZZ_ASSERT((canonical == 0) == obi_pb_is_canonical(desc, msg, len));
    if (canonical == 0)
        FUZZ_ASSERT(checked == 0);
    if (checked < 0)
        return 0;

    ProtobufCMessage *unpacked = protobuf_c_message_unpack(desc, NULL, len, msg);
    FUZZ_ASSERT(unpacked != NULL);
    if (canonical == 0) {
        size_t packed_len = protobuf_c_message_get_packed_size(unpacked);
        FUZZ_ASSERT(packed_len == len);
        cleanup_free uint8_t *packed = malloc(packed_len + 1);
        FUZZ_ASSERT(packed != NULL);
        FUZZ_ASSERT(protobuf_c_message_pack(unpacked, packed) == packed_len);
        FUZZ_ASSERT(memcmp(packed, msg, len) == 0);
    }
    protobuf_c_message_free_unpacked(unpacked, NULL);
    return 0;
}
