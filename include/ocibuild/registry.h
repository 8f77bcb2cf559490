/*
 * Images from OCI / Docker distribution registries (`image: nginx:alpine`,
 * `image: {name: ghcr.io/o/r@sha256:..., pull_policy: newer}`), pulled over HTTPS with libcurl
 * (loaded on first use, dynlib.h) into DATA/registry, itself an OCI image layout: every blob
 * (indexes, manifests, configs, layers) under blobs/sha256/<hex>, written under a temporary
 * name while its sha256 and size are checked as it streams, renamed into place only when they
 * match. The layout is then opened like any `oci:` one (image.h, obi_image_open_manifest), so
 * the unpacked rootfs DATA/images/<manifest hex> is shared with layouts and kept by the
 * replicas that use it exactly as theirs are. A tag's last resolution is kept in
 * DATA/registry/refs/ (the registry's digest for the tag and the host platform's manifest), so
 * `if_not_present` and `never` need no request.
 *
 * Untrusted: everything the registry sends. Manifests, indexes and token answers are read up
 * to a size limit, blobs up to their descriptor's size; redirects go to http(s) only and carry
 * no credentials to another host; plain HTTP only to hosts named insecure
 * (docs/security.md, "Registry images").
 */
#ifndef OCIBUILD_REGISTRY_H
#define OCIBUILD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/image_ref.h"

/* The largest manifest, index or token answer read (4 MiB, as image.c's JSON blobs). */
#define OBI_REGISTRY_JSON_MAX (4u << 20)

/* Called as a layer streams in (done of total bytes), and once more with finished set. */
typedef void (*obi_registry_progress_fn)(void *ctx, const char *digest, uint64_t done,
                                         uint64_t total, bool finished);

typedef struct obi_registry_options {
    /* A containers/Docker auth.json; NULL: $REGISTRY_AUTH_FILE, else
     * $XDG_RUNTIME_DIR/containers/auth.json, else ~/.docker/config.json (the first that
     * exists). */
    const char *auth_file;
    /* Hosts (host or host:port, as in the reference) spoken to in plain HTTP. */
    const char *const *insecure_hosts;
    size_t n_insecure_hosts;
    obi_registry_progress_fn progress;
    void *progress_ctx;
} obi_registry_options;

/* Makes ref's image present in DATA/registry as policy says and returns the host platform's
 * manifest digest (64 hex, caller frees) for obi_image_open_manifest(DATA/registry, ...). */
int obi_registry_pull(const obi_image_ref *ref, obi_pull_policy policy,
                      const obi_registry_options *opts, const char *data_dir, char **manifest_hex,
                      obi_error **err);

/* DATA/registry, the layout the pulled blobs live in (caller frees); NULL without memory. */
char *obi_registry_layout_dir(const char *data_dir);

#endif
