/*
 * obi_nix_path_info_store over gRPC (tvix.store.v1.PathInfoService): lookups go out as Get by
 * the path's 20-byte hash part (NOT_FOUND becomes -ENOENT), records as Put. The daemon checks
 * what it stores; this side checks what it is told: the record must be for the path asked
 * about. Either generation, tvix.store.v1 (the default) or snix.store.v1, by the URL's ?api=
 * (docs/rpc.md "Generations"): the messages are the same on the wire.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/pb_wire.h"
#include "ocibuild/rpc.h"
#include "rpc_internal.h"
#include "rpc_pathinfo.pb-c.h"

/* The method paths of each generation (obi_rpc_api). */
static const char *const METHOD_GET[] = {"/tvix.store.v1.PathInfoService/Get",
                                         "/snix.store.v1.PathInfoService/Get"};
static const char *const METHOD_PUT[] = {"/tvix.store.v1.PathInfoService/Put",
                                         "/snix.store.v1.PathInfoService/Put"};

typedef struct grpc_path_info_store {
    obi_nix_path_info_store base;
    obi_rpc_channel *channel;
    obi_rpc_api api;
} grpc_path_info_store;

static int decode_path_info(const uint8_t *data, size_t len, const char *method,
                            obi_nix_path_info **out, obi_error **err)
{
    ProtobufCMessage *msg = NULL;
    obi_error *why = NULL;
    if (obi_pb_unpack(&tvix__store__v1__path_info__descriptor, data, len, &msg, &why) < 0)
        return obi_rpc_bad_response(err, &why, "%s: the server's PathInfo", method);
    Tvix__Store__V1__PathInfo *pb = (Tvix__Store__V1__PathInfo *)msg;
    int r = obi_rpc_path_info_from_pb(pb, out, err);
    tvix__store__v1__path_info__free_unpacked(pb, NULL);
    if (r < 0)
        return obi_error_prefix(err, -EBADMSG, "%s: the server's PathInfo", method);
    return 0;
}

static int store_get_by_hash(obi_nix_path_info_store *base, const char *hash_part,
                             obi_nix_path_info **out, obi_error **err)
{
    grpc_path_info_store *s = (grpc_path_info_store *)base;
    uint8_t digest[20];
    cleanup_error obi_error *decode_err = NULL;
    if (strlen(hash_part) != OBI_NIX_HASH_PART_LEN ||
        obi_nixbase32_decode(hash_part, OBI_NIX_HASH_PART_LEN, digest, sizeof digest, &decode_err) <
            0)
        return obi_error_set(err, -EINVAL, "'%s' is not the hash part of a store path", hash_part);
    Tvix__Store__V1__GetPathInfoRequest req = TVIX__STORE__V1__GET_PATH_INFO_REQUEST__INIT;
    req.by_what_case = TVIX__STORE__V1__GET_PATH_INFO_REQUEST__BY_WHAT_BY_OUTPUT_HASH;
    req.by_output_hash = (ProtobufCBinaryData){sizeof digest, digest};
    cleanup_free uint8_t *resp = NULL;
    size_t resp_len = 0;
    const char *method = METHOD_GET[s->api];
    int r = obi_rpc_client_unary(s->channel, method, &req.base, &resp, &resp_len, err);
    if (r < 0)
        return r;
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    r = decode_path_info(resp, resp_len, method, &info, err);
    if (r < 0)
        return r;
    if (strncmp(strrchr(info->path, '/') + 1, hash_part, OBI_NIX_HASH_PART_LEN) != 0)
        return obi_error_set(err, -EBADMSG, "%s: asked for %s, the server answered with %s", method,
                             hash_part, info->path);
    *out = steal_pointer(&info);
    return 0;
}

static int store_get(obi_nix_path_info_store *base, const char *path, obi_nix_path_info **out,
                     obi_error **err)
{
    const char *basename;
    int r = obi_nix_store_path_parse(path, &basename, err);
    if (r < 0)
        return r;
    char hash_part[OBI_NIX_HASH_PART_LEN + 1];
    memcpy(hash_part, basename, OBI_NIX_HASH_PART_LEN);
    hash_part[OBI_NIX_HASH_PART_LEN] = '\0';
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    r = store_get_by_hash(base, hash_part, &info, err);
    if (r < 0)
        return r;
    if (strcmp(info->path, path) != 0)
        return obi_error_set(err, -EINVAL, "%s: the server records %s, not %s",
                             METHOD_GET[((grpc_path_info_store *)base)->api], info->path, path);
    *out = steal_pointer(&info);
    return 0;
}

static int store_put(obi_nix_path_info_store *base, const obi_nix_path_info *info, obi_error **err)
{
    grpc_path_info_store *s = (grpc_path_info_store *)base;
    Tvix__Store__V1__PathInfo *pb = NULL;
    int r = obi_rpc_path_info_to_pb(info, &pb, err);
    if (r < 0)
        return r;
    cleanup_free uint8_t *resp = NULL;
    size_t resp_len = 0;
    r = obi_rpc_client_unary(s->channel, METHOD_PUT[s->api], &pb->base, &resp, &resp_len, err);
    obi_rpc_path_info_pb_free(pb);
    if (r < 0)
        return obi_error_prefix(err, r, "record %s", info->path);
    return 0;
}

static void store_close(obi_nix_path_info_store *base)
{
    grpc_path_info_store *s = (grpc_path_info_store *)base;
    obi_rpc_channel_close(s->channel);
    free(s);
}

static const struct obi_nix_path_info_store_ops STORE_OPS = {
    .get = store_get,
    .get_by_hash = store_get_by_hash,
    .put = store_put,
    .close = store_close,
};

int obi_grpc_path_info_store_open(const obi_url *url, obi_nix_path_info_store **out,
                                  obi_error **err)
{
    grpc_path_info_store *s = calloc(1, sizeof *s);
    if (!s)
        return obi_error_oom(err);
    s->base.ops = &STORE_OPS;
    int r = obi_rpc_url_api(url, &s->api, err);
    if (r >= 0)
        r = obi_rpc_channel_open(url, &s->channel, err);
    if (r < 0) {
        free(s);
        return r;
    }
    *out = &s->base;
    return 0;
}
