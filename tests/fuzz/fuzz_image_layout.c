/*
 * Fuzz target: an OCI image layout's index.json and manifest (image.h). image.c reads them only
 * from disk, so the smallest unit is obi_image_open over a temporary layout. The input is up to
 * three documents separated by NUL bytes: index.json, the manifest blob and the config blob.
 * Blobs are stored under their real sha256; in the index "@MANIFEST@" and "@MSIZE@" stand for
 * the manifest's digest and size, in the manifest "@CONFIG@" and "@CSIZE@" for the config's, so
 * the seeds reach past the digest checks while the fuzzer mutates the structure around them.
 */
#include "fuzz_common.h"

#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/image.h"
#include "ocibuild/sha256.h"

typedef struct part {
    const uint8_t *data;
    size_t len;
} part;

/* text with every occurrence of the two placeholders replaced; caller frees. */
static char *substitute(part text, const char *digest_key, const char *digest, const char *size_key,
                        const char *size_text, size_t *out_len)
{
    size_t cap = text.len * 9 + 1; /* "@CONFIG@" (8 bytes) becomes 71 */
    char *out = malloc(cap);
    FUZZ_ASSERT(out != NULL);
    size_t n = 0;
    size_t dk = strlen(digest_key), sk = strlen(size_key);
    for (size_t i = 0; i < text.len;) {
        const char *rest = (const char *)text.data + i;
        size_t left = text.len - i;
        const char *with = NULL;
        size_t skip = 0;
        if (left >= dk && !memcmp(rest, digest_key, dk))
            with = digest, skip = dk;
        else if (left >= sk && !memcmp(rest, size_key, sk))
            with = size_text, skip = sk;
        if (with) {
            memcpy(out + n, with, strlen(with));
            n += strlen(with);
            i += skip;
        } else {
            out[n++] = rest[0];
            i++;
        }
    }
    *out_len = n;
    return out;
}

static void blob_name(const void *data, size_t len, char digest[7 + 65], char hex[65],
                      char size_text[32])
{
    uint8_t sum[OBI_SHA256_LEN];
    obi_sha256_oneshot(data, len, sum);
    obi_hex_encode(sum, OBI_SHA256_LEN, hex);
    snprintf(digest, 7 + 65, "sha256:%s", hex);
    snprintf(size_text, 32, "%zu", len);
}

static void write_blob(const char *layout, const char *hex, const void *data, size_t len)
{
    cleanup_free char *path = NULL;
    FUZZ_ASSERT(asprintf(&path, "%s/blobs/sha256/%s", layout, hex) > 0);
    FUZZ_ASSERT(obi_write_file(path, data, len, 0644, NULL) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    part parts[3] = {{0}};
    size_t start = 0, k = 0;
    for (size_t i = 0; i <= size && k < 3; i++)
        if (i == size || data[i] == 0) {
            parts[k].data = data + start;
            parts[k++].len = i - start;
            start = i + 1;
        }

    char dir[] = "/tmp/obi-fuzz-image.XXXXXX";
    FUZZ_ASSERT(mkdtemp(dir) != NULL);
    cleanup_free char *layout = obi_path_join(dir, "layout");
    cleanup_free char *blobs = obi_path_join(layout, "blobs/sha256");
    cleanup_free char *data_dir = obi_path_join(dir, "data");
    FUZZ_ASSERT(layout && blobs && data_dir && obi_mkdir_p(blobs, 0755, NULL) == 0);
    cleanup_free char *layout_file = obi_path_join(layout, "oci-layout");
    FUZZ_ASSERT(obi_write_file(layout_file, "{\"imageLayoutVersion\":\"1.0.0\"}", 30, 0644, NULL) ==
                0);

    char digest[7 + 65], hex[65], size_text[32];
    blob_name(parts[2].data, parts[2].len, digest, hex, size_text);
    write_blob(layout, hex, parts[2].data ? (const void *)parts[2].data : "", parts[2].len);
    size_t manifest_len;
    cleanup_free char *manifest =
        substitute(parts[1], "@CONFIG@", digest, "@CSIZE@", size_text, &manifest_len);
    blob_name(manifest, manifest_len, digest, hex, size_text);
    write_blob(layout, hex, manifest, manifest_len);
    size_t index_len;
    cleanup_free char *index =
        substitute(parts[0], "@MANIFEST@", digest, "@MSIZE@", size_text, &index_len);
    cleanup_free char *index_path = obi_path_join(layout, "index.json");
    FUZZ_ASSERT(obi_write_file(index_path, index, index_len, 0644, NULL) == 0);

    obi_image *image = NULL;
    cleanup_error obi_error *err = NULL;
    int r = obi_image_open(layout, NULL, data_dir, &image, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r == 0)
        FUZZ_ASSERT(image->rootfs && image->manifest_digest);
    else
        FUZZ_ASSERT(image == NULL);
    obi_image_free(image);
    FUZZ_ASSERT(obi_rm_rf(dir, NULL) == 0);
    return 0;
}
