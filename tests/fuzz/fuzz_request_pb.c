/*
 * Fuzz target: BuildRequest protobuf decode + validate (request.h). A decoded request must
 * re-encode, and that encoding must be a fixed point; a valid one must stay valid through the
 * protobuf JSON mapping.
 */
#include "fuzz_common.h"

#include "ocibuild/json_util.h"
#include "ocibuild/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cleanup_build_request obi_build_request *req = NULL;
    cleanup_error obi_error *err = NULL;
    int r = obi_build_request_decode_pb(data, size, &req, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0) {
        FUZZ_ASSERT(req == NULL);
        return 0;
    }
    r = obi_build_request_validate(req, &err);
    FUZZ_CHECK_ERROR(r, err);
    bool valid = r == 0;
    obi_error_free(err);
    err = NULL;

    cleanup_free uint8_t *encoded = NULL;
    size_t encoded_len = 0;
    FUZZ_ASSERT(obi_build_request_encode_pb(req, &encoded, &encoded_len, &err) == 0);
    cleanup_build_request obi_build_request *again = NULL;
    FUZZ_ASSERT(obi_build_request_decode_pb(encoded, encoded_len, &again, &err) == 0);
    cleanup_free uint8_t *encoded_again = NULL;
    size_t encoded_again_len = 0;
    FUZZ_ASSERT(obi_build_request_encode_pb(again, &encoded_again, &encoded_again_len, &err) == 0);
    FUZZ_ASSERT(encoded_len == encoded_again_len &&
                memcmp(encoded, encoded_again, encoded_len) == 0);
    if (!valid)
        return 0;

    FUZZ_ASSERT(obi_build_request_validate(again, &err) == 0);
    cleanup_json json_t *json = obi_build_request_to_json(req);
    FUZZ_ASSERT(json != NULL);
    cleanup_build_request obi_build_request *from_json = NULL;
    FUZZ_ASSERT(obi_build_request_from_json(json, &from_json, &err) == 0);
    FUZZ_ASSERT(obi_build_request_validate(from_json, &err) == 0);
    cleanup_free uint8_t *encoded_json = NULL;
    size_t encoded_json_len = 0;
    FUZZ_ASSERT(obi_build_request_encode_pb(from_json, &encoded_json, &encoded_json_len, &err) ==
                0);
    FUZZ_ASSERT(encoded_len == encoded_json_len && memcmp(encoded, encoded_json, encoded_len) == 0);
    return 0;
}
