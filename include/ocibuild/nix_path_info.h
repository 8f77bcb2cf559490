/*
 * What ocibuild knows about store paths it built itself (its own "valid paths", like snix's
 * PathInfoService): for an output path, the castore node holding its contents, its NAR hash and
 * size, and its references. Kept as one JSON file per store path basename in a directory
 * (atomic replace), so `ocibuild nix-build` can reuse outputs it built before, by output path,
 * when they are not valid in /nix/store.
 */
#ifndef OCIBUILD_NIX_PATH_INFO_H
#define OCIBUILD_NIX_PATH_INFO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/nar.h"
#include "ocibuild/node.h"

typedef struct obi_nix_path_info {
    char *path;        /* "/nix/store/<hash>-<name>" */
    obi_node node;     /* named by the path's basename */
    obi_nar_hash nar;  /* sha256 and size of the NAR */
    char **references; /* store paths, sorted; NULL-terminated */
    size_t n_references;
} obi_nix_path_info;

void obi_nix_path_info_free(obi_nix_path_info *info);
static inline void obi_nix_path_info_freep(obi_nix_path_info **i)
{
    obi_nix_path_info_free(*i);
}
#define cleanup_nix_path_info __attribute__((cleanup(obi_nix_path_info_freep)))

/* {"path":..,"node":<Node JSON>,"narHash":"sha256:<nixbase32>","narSize":N,"references":[..]} */
json_t *obi_nix_path_info_to_json(const obi_nix_path_info *info);
int obi_nix_path_info_from_json(const json_t *json, obi_nix_path_info **out, obi_error **err);

typedef struct obi_nix_path_info_store obi_nix_path_info_store;

/* Opens (creating it if missing) the directory dir; NULL: <data dir>/nix-path-info. */
int obi_nix_path_info_store_open(const char *dir, obi_nix_path_info_store **out, obi_error **err);
void obi_nix_path_info_store_close(obi_nix_path_info_store *store);
static inline void obi_nix_path_info_store_closep(obi_nix_path_info_store **s)
{
    obi_nix_path_info_store_close(*s);
}
#define cleanup_nix_path_info_store __attribute__((cleanup(obi_nix_path_info_store_closep)))

/* -ENOENT (no message needed by callers, but one is set) when the path is unknown. */
int obi_nix_path_info_get(obi_nix_path_info_store *store, const char *path, obi_nix_path_info **out,
                          obi_error **err);
int obi_nix_path_info_put(obi_nix_path_info_store *store, const obi_nix_path_info *info,
                          obi_error **err);

#endif
