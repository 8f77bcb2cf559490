/*
 * What ocibuild knows about store paths it built or was given (its own "valid paths", like
 * snix's PathInfoService): for a store path, the castore node holding its contents, its NAR
 * hash and size, its references and content address. `ocibuild nix-build` reuses outputs it
 * built before, by output path, when they are not valid in /nix/store; `ocibuild
 * remote-builder` answers a Nix client's questions about validity from it (docs/farm.md).
 * Stores are backends behind one interface: a directory of JSON files, or a daemon's
 * tvix.store.v1.PathInfoService (registered by the rpc layer), which is how farm nodes that
 * share a castore also share what is valid in it.
 */
#ifndef OCIBUILD_NIX_PATH_INFO_H
#define OCIBUILD_NIX_PATH_INFO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/nar.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"
#include "ocibuild/url.h"

typedef struct obi_nix_path_info {
    char *path;        /* "/nix/store/<hash>-<name>" */
    obi_node node;     /* named by the path's basename */
    obi_nar_hash nar;  /* sha256 and size of the NAR */
    char **references; /* store paths, sorted; NULL-terminated */
    size_t n_references;
    char *deriver; /* the .drv that built it, or NULL */
    char *ca;      /* content address as Nix prints it ("fixed:r:sha256:<nixbase32>"), or NULL */
} obi_nix_path_info;

void obi_nix_path_info_free(obi_nix_path_info *info);
static inline void obi_nix_path_info_freep(obi_nix_path_info **i)
{
    obi_nix_path_info_free(*i);
}
#define cleanup_nix_path_info __attribute__((cleanup(obi_nix_path_info_freep)))

/* {"path":..,"node":<Node JSON>,"narHash":"sha256:<nixbase32>","narSize":N,"references":[..],
 *  ["deriver":..,]["ca":..]} */
json_t *obi_nix_path_info_to_json(const obi_nix_path_info *info);
int obi_nix_path_info_from_json(const json_t *json, obi_nix_path_info **out, obi_error **err);

/* ---- path-info stores: one interface, backends chosen by URL ---- */

typedef struct obi_nix_path_info_store obi_nix_path_info_store;

struct obi_nix_path_info_store_ops {
    /* -ENOENT (with a message) when the path is unknown. */
    int (*get)(obi_nix_path_info_store *store, const char *path, obi_nix_path_info **out,
               obi_error **err);
    /* The same by the 32 nixbase32 characters of the path's hash part (tvix's lookup). */
    int (*get_by_hash)(obi_nix_path_info_store *store, const char *hash_part,
                       obi_nix_path_info **out, obi_error **err);
    int (*put)(obi_nix_path_info_store *store, const obi_nix_path_info *info, obi_error **err);
    /* Realisations (see obi_nix_realisation_get); NULL: this backend keeps none. */
    int (*realisation_get)(obi_nix_path_info_store *store, const char *drv_path, const char *output,
                           char **path_out, obi_error **err);
    int (*realisation_put)(obi_nix_path_info_store *store, const char *drv_path, const char *output,
                           const char *path, obi_error **err);
    void (*close)(obi_nix_path_info_store *store);
    /* Optional (NULL: the backend cannot list): the store paths recorded, sorted, NULL-terminated
     * (obi_strv_free). */
    int (*list)(obi_nix_path_info_store *store, char ***paths_out, size_t *n_out, obi_error **err);
};
struct obi_nix_path_info_store {
    const struct obi_nix_path_info_store_ops *ops;
};

/* The directory backend: one JSON file per path, <dir>/<basename>.json, replaced atomically,
 * and a symlink <dir>/<hash part> -> <basename>.json for lookups by hash. Opens (creating it
 * if missing) dir; NULL: <data dir>/nix-path-info. Safe for several processes at once. */
int obi_nix_path_info_store_open(const char *dir, obi_nix_path_info_store **out, obi_error **err);
/* By URL: a plain path or file:///abs/dir (the directory backend), or a scheme registered by a
 * higher layer (the rpc layer's grpc+unix://, grpc+http://, grpc+https://: a daemon's
 * tvix.store.v1.PathInfoService). NULL: the default directory. */
int obi_nix_path_info_store_open_url(const char *url, obi_nix_path_info_store **out,
                                     obi_error **err);
typedef int (*obi_nix_path_info_store_factory)(const obi_url *url, obi_nix_path_info_store **out,
                                               obi_error **err);
/* Lets a higher layer (rpc) add schemes without this layer depending on it. */
int obi_nix_path_info_register_scheme(const char *scheme, obi_nix_path_info_store_factory factory);

void obi_nix_path_info_store_close(obi_nix_path_info_store *store);
static inline void obi_nix_path_info_store_closep(obi_nix_path_info_store **s)
{
    obi_nix_path_info_store_close(*s);
}
#define cleanup_nix_path_info_store __attribute__((cleanup(obi_nix_path_info_store_closep)))

/* -ENOENT (no message needed by callers, but one is set) when the path is unknown. A record
 * that does not describe path (another path, a broken node) is -EINVAL naming where it came
 * from. */
int obi_nix_path_info_get(obi_nix_path_info_store *store, const char *path, obi_nix_path_info **out,
                          obi_error **err);
/* hash_part: the 32 nixbase32 characters after /nix/store/. */
int obi_nix_path_info_get_by_hash(obi_nix_path_info_store *store, const char *hash_part,
                                  obi_nix_path_info **out, obi_error **err);
int obi_nix_path_info_put(obi_nix_path_info_store *store, const obi_nix_path_info *info,
                          obi_error **err);
/* qsort's comparator for an array of obi_nix_path_info pointers: by path, bytewise. */
int obi_nix_path_info_ptr_compare(const void *a, const void *b);
/* A deep copy; NULL on out of memory. */
obi_nix_path_info *obi_nix_path_info_copy(const obi_nix_path_info *info);

/* Realisations: which path an output of a derivation whose output paths are not fixed in advance
 * (floating content-addressed, or deferred) was built at, keyed by the derivation's store path
 * and the output name (the directory backend: <dir>/realisations/<drv basename>!<output>).
 * -ENOENT (message set) when unknown, -ENOTSUP for a backend that keeps none. *path_out: caller
 * frees. */
int obi_nix_realisation_get(obi_nix_path_info_store *store, const char *drv_path,
                            const char *output, char **path_out, obi_error **err);
int obi_nix_realisation_put(obi_nix_path_info_store *store, const char *drv_path,
                            const char *output, const char *path, obi_error **err);
/* What nix-build and the remote builder call: the record's node becomes the root
 * nix/<store path basename> of castore (an on-disk one; store_roots.h) first, then the record is
 * put, so that `store gc` never takes what a record names (docs/store.md). */
int obi_nix_path_info_record(obi_store *castore, obi_nix_path_info_store *store,
                             const obi_nix_path_info *info, obi_error **err);
/* The recorded store paths, sorted (ops->list); -ENOTSUP when the backend cannot list. */
int obi_nix_path_info_list(obi_nix_path_info_store *store, char ***paths_out, size_t *n_out,
                           obi_error **err);

/* A content address as Nix 2.8 renders one: "text:sha256:<hash>" or
 * "fixed:[r:]<md5|sha1|sha256|sha512>:<hash>". Checked for its shape only (the hash is what the
 * path's owner claims). -EINVAL naming it otherwise. */
int obi_nix_content_address_check(const char *ca, obi_error **err);

/* Checks a record on its own: the path is a store path, the node valid and named by the path's
 * basename, the references store paths, the content address "" or well formed. */
int obi_nix_path_info_validate(const obi_nix_path_info *info, obi_error **err);

#endif
