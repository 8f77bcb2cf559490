/*
 * Fuzz target: an OCI image config blob (image.h, obi_image_config_from_json): the JSON text
 * parsed and the process fields taken out of it.
 */
#include "fuzz_common.h"

#include "ocibuild/image.h"
#include "ocibuild/json_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cleanup_json json_t *doc = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!doc)
        return 0;
    obi_image_config config = {0};
    cleanup_error obi_error *err = NULL;
    int r = obi_image_config_from_json(doc, &config, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r == 0) {
        for (char **p = config.env; p && *p; p++)
            FUZZ_ASSERT(*p != NULL);
        obi_image_config_clear(&config);
    }
    return 0;
}
