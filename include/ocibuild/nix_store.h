/*
 * The local Nix store as the source of a derivation's inputs (../shared/spec/nix.md): which
 * store paths a derivation needs, their runtime closure (`nix-store -q -R`, spawned without a
 * shell), and importing those paths into castore as root nodes named by their basenames, ready
 * for obi_derivation_to_build_request.
 */
#ifndef OCIBUILD_NIX_STORE_H
#define OCIBUILD_NIX_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "ocibuild/derivation.h"
#include "ocibuild/error.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"

#define OBI_NIX_STORE_DIR "/nix/store"
/* Length of the nixbase32 hash part of a store path basename ("<32 chars>-<name>"). */
#define OBI_NIX_HASH_PART_LEN 32

/* Longest name of a store path (after the hash part and '-'), as Nix 2.8. */
#define OBI_NIX_NAME_MAX 211

/* Checks that path is "/nix/store/<32 nixbase32 chars>-<name>", the name 1..211 characters of
 * [A-Za-z0-9+-._?=] as Nix 2.8's StorePath requires (so no '/' after it); on success *basename
 * points into path. Errors name the path. */
int obi_nix_store_path_parse(const char *path, const char **basename, obi_error **err);

/* Where the store path path is on disk: store_dir/<basename> (store_dir NULL: the path itself,
 * /nix/store). Caller frees; NULL on out of memory. */
char *obi_nix_store_real_path(const char *store_dir, const char *path);

/* The input sources plus the paths of the used outputs of every input derivation (read from
 * the input .drv files in store_dir, NULL: /nix/store). *paths_out is NULL-terminated (free
 * with obi_strv_free), sorted and without duplicates. An input derivation lacking a used
 * output is an error naming both. */
int obi_derivation_input_paths(const obi_derivation *drv, const char *store_dir, char ***paths_out,
                               size_t *n_out, obi_error **err);

/* The closure of paths: `NIX_STORE --query --requisites PATH...` (nix_store NULL: the local
 * store: read from its database with obi_nix_db_closure when it can, else "nix-store" from
 * $PATH). Sorted, without duplicates, NULL-terminated. A failing nix-store is an error
 * carrying the tail of its output. */
int obi_nix_store_closure(const char *nix_store, char *const *paths, size_t n_paths,
                          char ***closure_out, size_t *n_out, obi_error **err);

/* The closure of paths as the Nix database in db_dir (NIX_STATE_DIR/db: schema, db.sqlite) has
 * it, read-only in one read transaction: what `nix-store -q -R` answers, without starting Nix
 * (~20 ms of its start-up and ~15 ms of CPU per query). 1 with the closure as above; 0 when
 * it cannot answer that way (a schema other than Nix 2.x's "10", a database it may not open or
 * that is busy, a path that is not valid there): then nix-store is asked, and says why. */
int obi_nix_db_closure(const char *db_dir, char *const *paths, size_t n_paths, char ***closure_out,
                       size_t *n_out, obi_error **err);

/* Ingests each store path into castore (ingest.h) as a root node named by the path's basename.
 * *nodes_out has n_paths entries in the order of paths; free with obi_nix_nodes_free. */
int obi_nix_import_paths(obi_blob_service *blobs, obi_directory_service *directories,
                         char *const *paths, size_t n_paths, obi_node **nodes_out, obi_error **err);
void obi_nix_nodes_free(obi_node *nodes, size_t n);

/* All of the above: the input paths of drv, their closure, imported. */
int obi_derivation_import_inputs(obi_blob_service *blobs, obi_directory_service *directories,
                                 const char *nix_store, const obi_derivation *drv,
                                 obi_node **nodes_out, size_t *n_out, obi_error **err);

/* What Nix's database says about paths (and with recursive, their closure): `NIX
 * --extra-experimental-features nix-command path-info --json [--recursive] PATH...` (nix NULL:
 * "nix" from $PATH). Each info has path, NAR hash and size, references, deriver and ca; no
 * castore node (kind 0). *infos_out: n_out entries, sorted by path; free with
 * obi_nix_path_infos_free. A path Nix does not know is an error naming it. */
int obi_nix_store_query_infos(const char *nix, char *const *paths, size_t n_paths, bool recursive,
                              obi_nix_path_info ***infos_out, size_t *n_out, obi_error **err);
void obi_nix_path_infos_free(obi_nix_path_info **infos, size_t n);

/* Registers paths in the local Nix store through Nix's own import: an export stream (`nix-store
 * --export`'s format: per path its NAR from castore, path, references, deriver) piped into
 * `NIX_STORE --import`, which checks, writes and registers each path under Nix's locks. infos
 * must come references first (obi_nix_path_infos_sort_topologically); paths Nix has already are
 * left alone by it. Errors carry the tail of nix-store's output. */
int obi_nix_store_import(obi_blob_service *blobs, obi_directory_service *directories,
                         const char *nix_store, const obi_nix_path_info *const *infos, size_t n,
                         obi_error **err);
/* The same, one path at a time: a `NIX_STORE --import` fed as paths come. Nix registers each
 * path of the stream as soon as it has read it (its importPaths adds a path before reading the
 * next), so paths sent are valid in Nix shortly after, while later ones are still being built.
 * _add sends one path; its references must be valid in Nix or sent before. _end_input ends
 * the stream when no path follows, so that nix-store finishes (and exits) while the caller does
 * other work; after it _add fails. _finish ends the stream if that was not done, waits
 * (nix-store's failure is an error with the tail of its output) and frees the importer; _free
 * instead cuts the stream short (what was sent whole stays registered). */
typedef struct obi_nix_store_importer obi_nix_store_importer;
int obi_nix_store_importer_start(const char *nix_store, obi_nix_store_importer **out,
                                 obi_error **err);
int obi_nix_store_importer_add(obi_nix_store_importer *imp, obi_blob_service *blobs,
                               obi_directory_service *directories, const obi_nix_path_info *info,
                               obi_error **err);
int obi_nix_store_importer_end_input(obi_nix_store_importer *imp, obi_error **err);
int obi_nix_store_importer_finish(obi_nix_store_importer *imp, obi_error **err);
void obi_nix_store_importer_free(obi_nix_store_importer *imp);

/* Orders infos so that every path comes after the paths it refers to (among infos); a cycle is
 * an error naming a path on it. */
int obi_nix_path_infos_sort_topologically(const obi_nix_path_info **infos, size_t n,
                                          obi_error **err);

/* A symlink link -> path registered as a garbage-collector root, as nix-build makes its result
 * links: `NIX_STORE --realise PATH --add-root LINK` (replacing an existing link). */
int obi_nix_store_add_root(const char *nix_store, const char *path, const char *link,
                           obi_error **err);

#endif
