/*
 * Fuzz target: service URLs (url.h). A parsed URL has a scheme, host and path; every parameter
 * has a key and a value, and lookup finds the first of each key.
 */
#include "fuzz_common.h"

#include "ocibuild/url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cleanup_free char *text = fuzz_strndup(data, size);
    cleanup_url obi_url *url = NULL;
    cleanup_error obi_error *err = NULL;
    int r = obi_url_parse(text, &url, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0) {
        FUZZ_ASSERT(url == NULL);
        return 0;
    }
    FUZZ_ASSERT(url->scheme && url->host && url->path);
    for (size_t i = 0; i < url->n_params; i++) {
        FUZZ_ASSERT(url->params[i].key && url->params[i].value);
        (void)obi_url_param_get(url, url->params[i].key);
    }
    return 0;
}
