/*
 * Fuzz target: the .drv ATerm parser (derivation.h). A parsed derivation must serialize, and
 * the serialization must parse back to the same text (Nix's own output is a fixed point).
 */
#include "fuzz_common.h"

#include "ocibuild/derivation.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cleanup_derivation obi_derivation *drv = NULL;
    cleanup_error obi_error *err = NULL;
    int r = obi_derivation_parse((const char *)data, size, &drv, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0) {
        FUZZ_ASSERT(drv == NULL);
        return 0;
    }
    (void)obi_derivation_is_fixed_output(drv);

    cleanup_free char *text = NULL;
    size_t len = 0;
    FUZZ_ASSERT(obi_derivation_serialize(drv, &text, &len, &err) == 0);
    cleanup_derivation obi_derivation *again = NULL;
    FUZZ_ASSERT(obi_derivation_parse(text, len, &again, &err) == 0);
    cleanup_free char *text_again = NULL;
    size_t len_again = 0;
    FUZZ_ASSERT(obi_derivation_serialize(again, &text_again, &len_again, &err) == 0);
    FUZZ_ASSERT(len == len_again && memcmp(text, text_again, len) == 0);
    return 0;
}
