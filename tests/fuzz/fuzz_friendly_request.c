/*
 * Fuzz target: the friendly request JSON form (friendly_request.h) + validate. Inputs given as
 * host path strings would make the fuzzer import arbitrary files of this machine, so documents
 * with any such input are skipped: Node-object inputs and "env" are exercised, host paths are
 * not (the ingest code has its own tests).
 */
#include "fuzz_common.h"

#include "ocibuild/friendly_request.h"
#include "ocibuild/json_util.h"
#include "ocibuild/request.h"
#include "ocibuild/store.h"

static bool names_host_path(const json_t *json)
{
    const json_t *inputs = json_object_get(json, "inputs");
    if (!json_is_object(inputs))
        return false;
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)inputs, key, value)
    {
        if (!json_is_object(value))
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cleanup_json json_t *json = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!json || names_host_path(json))
        return 0;
    cleanup_error obi_error *err = NULL;
    obi_store store = {0};
    FUZZ_ASSERT(obi_memory_blob_service_new(&store.blobs, &err) == 0);
    FUZZ_ASSERT(obi_memory_directory_service_new(&store.directories, &err) == 0);

    cleanup_build_request obi_build_request *req = NULL;
    int r = obi_friendly_request_from_json(json, &store, &req, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r == 0) {
        r = obi_build_request_validate(req, &err);
        FUZZ_CHECK_ERROR(r, err);
    } else {
        FUZZ_ASSERT(req == NULL);
    }
    obi_blob_service_free(store.blobs);
    obi_directory_service_free(store.directories);
    return 0;
}
