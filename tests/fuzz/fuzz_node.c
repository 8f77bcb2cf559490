/*
 * Fuzz target: Node protobuf decode + validate + re-encode (node.h), and the node's protobuf
 * JSON mapping: a valid node must survive both round trips unchanged.
 */
#include "fuzz_common.h"

#include "ocibuild/json_util.h"
#include "ocibuild/node.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cleanup_node obi_node node = {0};
    cleanup_error obi_error *err = NULL;
    int r = obi_node_decode(data, size, &node, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0)
        return 0;
    r = obi_node_validate(&node, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0)
        return 0;

    cleanup_free uint8_t *encoded = NULL;
    size_t encoded_len = 0;
    FUZZ_ASSERT(obi_node_encode(&node, &encoded, &encoded_len, &err) == 0);
    cleanup_node obi_node again = {0};
    FUZZ_ASSERT(obi_node_decode(encoded, encoded_len, &again, &err) == 0);
    cleanup_free uint8_t *encoded_again = NULL;
    size_t encoded_again_len = 0;
    FUZZ_ASSERT(obi_node_encode(&again, &encoded_again, &encoded_again_len, &err) == 0);
    FUZZ_ASSERT(encoded_len == encoded_again_len &&
                memcmp(encoded, encoded_again, encoded_len) == 0);

    cleanup_json json_t *json = obi_node_to_json(&node);
    FUZZ_ASSERT(json != NULL);
    cleanup_node obi_node from_json = {0};
    FUZZ_ASSERT(obi_node_from_json(json, &from_json, &err) == 0);
    cleanup_free uint8_t *encoded_json = NULL;
    size_t encoded_json_len = 0;
    FUZZ_ASSERT(obi_node_encode(&from_json, &encoded_json, &encoded_json_len, &err) == 0);
    FUZZ_ASSERT(encoded_len == encoded_json_len && memcmp(encoded, encoded_json, encoded_len) == 0);
    return 0;
}
