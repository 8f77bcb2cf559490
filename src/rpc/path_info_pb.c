/*
 * tvix.store.v1.PathInfo <-> obi_nix_path_info (nix_path_info.h), for the PathInfoService's
 * server and client. References travel twice, as tvix has them: their 20-byte digests and their
 * basenames, which must agree. The content address travels as a type and raw digest and is
 * rendered back the way Nix 2.8 prints it ("fixed:r:sha256:<nixbase32>"). References go out
 * sorted by store path, as Nix keeps them, since a Put refuses any other order
 * (obi_rpc_path_info_check_references).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/node_pb.h"
#include "ocibuild/strv.h"
#include "rpc_internal.h"

#define NIX_DIGEST_LEN 20

typedef struct ca_kind {
    const char *prefix; /* as Nix renders it, up to the hash */
    int type;           /* Tvix__Store__V1__NARInfo__CA__Hash */
    size_t len;         /* digest bytes */
} ca_kind;

static const ca_kind CA_KINDS[] = {
    {"fixed:r:sha256:", TVIX__STORE__V1__NARINFO__CA__HASH__NAR_SHA256, 32},
    {"fixed:r:sha1:", TVIX__STORE__V1__NARINFO__CA__HASH__NAR_SHA1, 20},
    {"fixed:r:sha512:", TVIX__STORE__V1__NARINFO__CA__HASH__NAR_SHA512, 64},
    {"fixed:r:md5:", TVIX__STORE__V1__NARINFO__CA__HASH__NAR_MD5, 16},
    {"text:sha256:", TVIX__STORE__V1__NARINFO__CA__HASH__TEXT_SHA256, 32},
    {"fixed:sha1:", TVIX__STORE__V1__NARINFO__CA__HASH__FLAT_SHA1, 20},
    {"fixed:md5:", TVIX__STORE__V1__NARINFO__CA__HASH__FLAT_MD5, 16},
    {"fixed:sha256:", TVIX__STORE__V1__NARINFO__CA__HASH__FLAT_SHA256, 32},
    {"fixed:sha512:", TVIX__STORE__V1__NARINFO__CA__HASH__FLAT_SHA512, 64},
};

/* The 20 bytes of a store path's hash part. */
static int path_digest(const char *path, uint8_t out[NIX_DIGEST_LEN], obi_error **err)
{
    const char *base;
    int r = obi_nix_store_path_parse(path, &base, err);
    if (r < 0)
        return r;
    return obi_nixbase32_decode(base, OBI_NIX_HASH_PART_LEN, out, NIX_DIGEST_LEN, err);
}

static int ca_to_pb(const char *ca, Tvix__Store__V1__NARInfo__CA *pb, obi_error **err)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(CA_KINDS); i++) {
        const ca_kind *k = &CA_KINDS[i];
        size_t prefix_len = strlen(k->prefix);
        if (strncmp(ca, k->prefix, prefix_len) != 0)
            continue;
        const char *hash = ca + prefix_len;
        uint8_t *digest = malloc(k->len);
        if (!digest)
            return obi_error_oom(err);
        cleanup_error obi_error *decode_err = NULL;
        if (strlen(hash) == 2 * k->len
                ? obi_hex_decode(hash, 2 * k->len, digest, k->len) < 0
                : obi_nixbase32_decode(hash, strlen(hash), digest, k->len, &decode_err) < 0) {
            free(digest);
            return obi_error_set(err, -EINVAL, "content address '%s': bad digest", ca);
        }
        pb->type = k->type;
        pb->digest = (ProtobufCBinaryData){k->len, digest};
        return 0;
    }
    return obi_error_set(err, -EINVAL, "'%s' is not a content address", ca);
}

static int ca_from_pb(const Tvix__Store__V1__NARInfo__CA *pb, char **out, obi_error **err)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(CA_KINDS); i++) {
        const ca_kind *k = &CA_KINDS[i];
        if ((int)pb->type != k->type)
            continue;
        if (pb->digest.len != k->len)
            return obi_error_set(err, -EINVAL, "NARInfo.ca.digest: %zu bytes, %s takes %zu",
                                 pb->digest.len, k->prefix, k->len);
        char encoded[128];
        obi_nixbase32_encode(pb->digest.data, k->len, encoded);
        if (asprintf(out, "%s%s", k->prefix, encoded) < 0)
            return obi_error_oom(err);
        return 0;
    }
    return obi_error_set(err, -EINVAL, "NARInfo.ca.type: unknown (%d)", (int)pb->type);
}

void obi_rpc_path_info_pb_free(Tvix__Store__V1__PathInfo *pb)
{
    if (!pb)
        return;
    obi_node_pb_free(pb->node);
    for (size_t i = 0; i < pb->n_references; i++)
        free(pb->references[i].data);
    free(pb->references);
    Tvix__Store__V1__NARInfo *nar = pb->narinfo;
    if (nar) {
        free(nar->nar_sha256.data);
        for (size_t i = 0; i < nar->n_reference_names; i++)
            free(nar->reference_names[i]);
        free(nar->reference_names);
        if (nar->ca)
            free(nar->ca->digest.data);
        free(nar->ca);
        free(nar);
    }
    free(pb);
}

int obi_rpc_path_info_to_pb(const obi_nix_path_info *info, Tvix__Store__V1__PathInfo **out,
                            obi_error **err)
{
    Tvix__Store__V1__PathInfo *pb = calloc(1, sizeof *pb);
    Tvix__Store__V1__NARInfo *nar = calloc(1, sizeof *nar);
    if (!pb || !nar) {
        free(pb);
        free(nar);
        return obi_error_oom(err);
    }
    tvix__store__v1__path_info__init(pb);
    tvix__store__v1__narinfo__init(nar);
    pb->narinfo = nar;
    _cleanup_(obi_rpc_path_info_pb_freep) Tvix__Store__V1__PathInfo *owned = pb;
    pb->node = obi_node_to_pb(&info->node);
    size_t n = info->n_references;
    pb->references = calloc(n + 1, sizeof *pb->references);
    nar->reference_names = calloc(n + 1, sizeof *nar->reference_names);
    nar->nar_sha256.data = malloc(OBI_SHA256_LEN);
    if (!pb->node || !pb->references || !nar->reference_names || !nar->nar_sha256.data)
        return obi_error_oom(err);
    nar->nar_size = info->nar.size;
    memcpy(nar->nar_sha256.data, info->nar.sha256, OBI_SHA256_LEN);
    nar->nar_sha256.len = OBI_SHA256_LEN;
    cleanup_free const char **sorted = calloc(n + 1, sizeof *sorted);
    if (!sorted)
        return obi_error_oom(err);
    memcpy(sorted, info->references, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, obi_strv_item_compare);
    for (size_t i = 0; i < n; i++) {
        uint8_t *digest = malloc(NIX_DIGEST_LEN);
        if (!digest)
            return obi_error_oom(err);
        pb->references[pb->n_references++] = (ProtobufCBinaryData){NIX_DIGEST_LEN, digest};
        int r = path_digest(sorted[i], digest, err);
        if (r < 0)
            return r;
        nar->reference_names[nar->n_reference_names] = strdup(strrchr(sorted[i], '/') + 1);
        if (!nar->reference_names[nar->n_reference_names++])
            return obi_error_oom(err);
    }
    if (info->ca && info->ca[0]) {
        nar->ca = calloc(1, sizeof *nar->ca);
        if (!nar->ca)
            return obi_error_oom(err);
        tvix__store__v1__narinfo__ca__init(nar->ca);
        int r = ca_to_pb(info->ca, nar->ca, err);
        if (r < 0)
            return r;
    }
    *out = steal_pointer(&owned);
    return 0;
}

int obi_rpc_path_info_from_pb(const Tvix__Store__V1__PathInfo *pb, obi_nix_path_info **out,
                              obi_error **err)
{
    if (!pb->node)
        return obi_error_set(err, -EINVAL, "PathInfo.node: missing");
    if (!pb->narinfo)
        return obi_error_set(err, -EINVAL, "PathInfo.narinfo: missing");
    const Tvix__Store__V1__NARInfo *nar = pb->narinfo;
    if (nar->nar_sha256.len != OBI_SHA256_LEN)
        return obi_error_set(err, -EINVAL, "PathInfo.narinfo.nar_sha256: %zu bytes, not 32",
                             nar->nar_sha256.len);
    if (nar->n_reference_names != pb->n_references)
        return obi_error_set(err, -EINVAL,
                             "PathInfo: %zu references but %zu reference names in its narinfo",
                             pb->n_references, nar->n_reference_names);
    obi_nix_path_info *info = calloc(1, sizeof *info);
    if (!info)
        return obi_error_oom(err);
    _cleanup_(obi_nix_path_info_freep) obi_nix_path_info *owned = info;
    int r = obi_node_from_pb(pb->node, &info->node, err);
    if (r < 0)
        return obi_error_prefix(err, r, "PathInfo.node");
    if (asprintf(&info->path, OBI_NIX_STORE_DIR "/%.*s", (int)info->node.name.len,
                 (const char *)info->node.name.data) < 0) {
        info->path = NULL;
        return obi_error_oom(err);
    }
    info->nar.size = nar->nar_size;
    memcpy(info->nar.sha256, nar->nar_sha256.data, OBI_SHA256_LEN);
    info->references = calloc(pb->n_references + 1, sizeof *info->references);
    if (!info->references)
        return obi_error_oom(err);
    for (size_t i = 0; i < pb->n_references; i++) {
        if (asprintf(&info->references[i], OBI_NIX_STORE_DIR "/%s", nar->reference_names[i]) < 0) {
            info->references[i] = NULL;
            return obi_error_oom(err);
        }
        info->n_references++;
        uint8_t digest[NIX_DIGEST_LEN];
        r = path_digest(info->references[i], digest, err);
        if (r < 0)
            return obi_error_prefix(err, r, "PathInfo.narinfo.reference_names[%zu]", i);
        if (pb->references[i].len != NIX_DIGEST_LEN ||
            memcmp(pb->references[i].data, digest, NIX_DIGEST_LEN) != 0)
            return obi_error_set(err, -EINVAL, "PathInfo.references[%zu] is not the digest of '%s'",
                                 i, nar->reference_names[i]);
    }
    if (nar->ca) {
        r = ca_from_pb(nar->ca, &info->ca, err);
        if (r < 0)
            return r;
    }
    r = obi_nix_path_info_validate(info, err);
    if (r < 0)
        return r;
    *out = steal_pointer(&owned);
    return 0;
}

int obi_rpc_path_info_check_references(const Tvix__Store__V1__PathInfo *pb, obi_error **err)
{
    const Tvix__Store__V1__NARInfo *nar = pb->narinfo;
    for (size_t i = 1; nar && i < nar->n_reference_names; i++) {
        int order = strcmp(nar->reference_names[i - 1], nar->reference_names[i]);
        if (order == 0)
            return obi_error_set(err, -EINVAL,
                                 "PathInfo.narinfo.reference_names[%zu]: '%s' is there twice", i,
                                 nar->reference_names[i]);
        if (order > 0)
            return obi_error_set(err, -EINVAL,
                                 "PathInfo.narinfo.reference_names[%zu]: '%s' comes after '%s'; "
                                 "references must be sorted by store path",
                                 i, nar->reference_names[i - 1], nar->reference_names[i]);
    }
    return 0;
}
