/*
 * Fuzz target: Directory protobuf decode + validate + re-encode (node.h). For a directory that
 * decodes and validates, the canonical re-encoding must decode to a directory with the same
 * digest, and encoding is a fixed point from there on.
 */
#include "fuzz_common.h"

#include "ocibuild/digest.h"
#include "ocibuild/node.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cleanup_directory obi_directory *dir = NULL;
    cleanup_error obi_error *err = NULL;
    int r = obi_directory_decode(data, size, &dir, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0) {
        FUZZ_ASSERT(dir == NULL);
        return 0;
    }
    r = obi_directory_validate(dir, &err);
    FUZZ_CHECK_ERROR(r, err);
    (void)obi_directory_size(dir);
    if (r < 0)
        return 0;

    cleanup_free uint8_t *encoded = NULL;
    size_t encoded_len = 0;
    FUZZ_ASSERT(obi_directory_encode(dir, &encoded, &encoded_len, &err) == 0);
    obi_digest digest, digest_again;
    FUZZ_ASSERT(obi_directory_digest(dir, &digest, &err) == 0);
    obi_digest encoded_digest;
    obi_digest_of(encoded, encoded_len, &encoded_digest);
    FUZZ_ASSERT(obi_digest_equal(&digest, &encoded_digest));

    cleanup_directory obi_directory *again = NULL;
    FUZZ_ASSERT(obi_directory_decode(encoded, encoded_len, &again, &err) == 0);
    FUZZ_ASSERT(obi_directory_validate(again, &err) == 0);
    FUZZ_ASSERT(obi_directory_digest(again, &digest_again, &err) == 0);
    FUZZ_ASSERT(obi_digest_equal(&digest, &digest_again));
    FUZZ_ASSERT(obi_directory_size(dir) == obi_directory_size(again));
    return 0;
}
