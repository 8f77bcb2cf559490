/*
 * Fuzz target: BuildRequest from its protobuf JSON mapping (request.h) + validate. A request
 * that parses must print back to JSON that parses to the same protobuf encoding.
 */
#include "fuzz_common.h"

#include "ocibuild/json_util.h"
#include "ocibuild/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cleanup_json json_t *json = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!json)
        return 0;
    cleanup_build_request obi_build_request *req = NULL;
    cleanup_error obi_error *err = NULL;
    int r = obi_build_request_from_json(json, &req, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0) {
        FUZZ_ASSERT(req == NULL);
        return 0;
    }
    r = obi_build_request_validate(req, &err);
    FUZZ_CHECK_ERROR(r, err);
    obi_error_free(err);
    err = NULL;

    cleanup_free uint8_t *encoded = NULL;
    size_t encoded_len = 0;
    FUZZ_ASSERT(obi_build_request_encode_pb(req, &encoded, &encoded_len, &err) == 0);
    cleanup_json json_t *printed = obi_build_request_to_json(req);
    FUZZ_ASSERT(printed != NULL);
    cleanup_build_request obi_build_request *again = NULL;
    FUZZ_ASSERT(obi_build_request_from_json(printed, &again, &err) == 0);
    cleanup_free uint8_t *encoded_again = NULL;
    size_t encoded_again_len = 0;
    FUZZ_ASSERT(obi_build_request_encode_pb(again, &encoded_again, &encoded_again_len, &err) == 0);
    FUZZ_ASSERT(encoded_len == encoded_again_len &&
                memcmp(encoded, encoded_again, encoded_len) == 0);
    return 0;
}
