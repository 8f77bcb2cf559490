/*
 * OCI image layouts on disk (`oci:PATH[:TAG]`, as written by umoci or skopeo): index.json ->
 * manifest -> config + layers, every blob's sha256 verified before use. Layers (gzip, zstd or
 * plain tar) are unpacked in order with libarchive into a cache directory keyed by the manifest
 * digest, honouring whiteouts and refusing entries that would escape the rootfs; a cache entry
 * appears atomically (unpacked under a temporary name, then renamed). The image config's Env,
 * Entrypoint, Cmd, WorkingDir, User and StopSignal feed service spec generation (service_spec.h).
 */
#ifndef OCIBUILD_IMAGE_H
#define OCIBUILD_IMAGE_H

#include <jansson.h>
#include <stdbool.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"

/* The parts of an image config ("config" member of application/vnd.oci.image.config.v1+json)
 * that a container's process is made from. Lists are NULL-terminated, NULL when absent. */
typedef struct obi_image_config {
    char **env; /* "KEY=value" */
    char **entrypoint;
    char **cmd;
    char *working_dir;
    char *user;
    char *stop_signal; /* StopSignal as written ("SIGTERM"): checked where it is used, since a
                        * service's stop_signal overrides it (service_spec.c) */
} obi_image_config;

void obi_image_config_clear(obi_image_config *config);
/* Reads the config blob's JSON (the whole document; fields under "config"). */
int obi_image_config_from_json(const json_t *doc, obi_image_config *out, obi_error **err);

typedef struct obi_image {
    char *manifest_digest; /* "sha256:<hex>" */
    char *rootfs;          /* the unpacked cache directory (shared: use read-only or copy) */
    obi_image_config config;
    int cache_lock; /* DATA/images/.gc.lock, shared: the entry is not pruned while held */
} obi_image;

/* The image cache's gc lock, DATA/images/.gc.lock: obi_image_open takes it shared and holds it
 * until obi_image_free, so that an entry being unpacked or handed to a replica that has not
 * recorded it yet (lifecycle.h, OBI_REPLICA_IMAGE_FILE) is never pruned; the pruner takes it
 * exclusively (waiting). *fd_out holds it until closed. */
int obi_image_cache_lock(const char *data_dir, bool exclusive, int *fd_out, obi_error **err);

/* Resolves layout_path[:tag] (tag NULL: the index must hold exactly one manifest), verifies the
 * blobs and unpacks (or reuses) DATA_DIR/images/<manifest hex>/rootfs. */
int obi_image_open(const char *layout_path, const char *tag, const char *data_dir, obi_image **out,
                   obi_error **err);
/* The same for the manifest blobs/sha256/<manifest_hex> of layout_path, without index.json
 * (the registry cache, registry.h). */
int obi_image_open_manifest(const char *layout_path, const char *manifest_hex, const char *data_dir,
                            obi_image **out, obi_error **err);
void obi_image_free(obi_image *image);
OBI_DEFINE_CLEANUP(obi_image, obi_image_free)
#define cleanup_image _cleanup_(obi_image_freep)

/* Unpacks one layer blob (tar, tar+gzip or tar+zstd, detected from the bytes) onto rootfs,
 * applying whiteouts; entries escaping rootfs are refused. Exposed for tests. */
int obi_image_apply_layer(const char *rootfs, const char *layer_path, obi_error **err);

#endif
