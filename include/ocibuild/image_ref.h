/*
 * Names of registry images, as a deployment writes them (`nginx:alpine`,
 * `ghcr.io/o/r@sha256:...`): parsed and normalised as Docker does, so "busybox" is
 * docker.io/library/busybox:latest, fetched from registry-1.docker.io. And the pull policies a
 * service may ask for (`image.pull_policy`). The pull itself is registry.h's.
 */
#ifndef OCIBUILD_IMAGE_REF_H
#define OCIBUILD_IMAGE_REF_H

#include <stdbool.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"

/* Docker Hub: how references name it, and where its registry API answers. */
#define OBI_DOCKER_HUB_DOMAIN "docker.io"
#define OBI_DOCKER_HUB_HOST "registry-1.docker.io"

typedef struct obi_image_ref {
    char *domain;     /* "docker.io", "ghcr.io", "127.0.0.1:5000" (the name's first part) */
    char *host;       /* where requests go: domain, or registry-1.docker.io for docker.io */
    char *repository; /* "library/busybox" */
    char *tag;        /* "latest" when neither tag nor digest is given; NULL with a digest only */
    char *digest;     /* "sha256:<64 hex>" or NULL */
    char *canonical;  /* "docker.io/library/busybox:latest", "...@sha256:..." */
} obi_image_ref;

/* Parses NAME[:TAG][@DIGEST] (an optional "docker://" in front). The first component is a
 * registry when it has a '.' or a ":PORT" or is "localhost". -EINVAL naming the part that is
 * wrong (an uppercase repository component, a bad tag, a registry that is not host[:port], a
 * digest that is not sha256:<64 lowercase hex>). */
int obi_image_ref_parse(const char *text, obi_image_ref **out, obi_error **err);
void obi_image_ref_free(obi_image_ref *ref);
OBI_DEFINE_CLEANUP(obi_image_ref, obi_image_ref_free)
#define cleanup_image_ref _cleanup_(obi_image_ref_freep)

/* Whether digest is "sha256:" and 64 lowercase hex digits (the only digests pulled). */
bool obi_image_digest_ok(const char *digest);

typedef enum obi_pull_policy {
    OBI_PULL_IF_NOT_PRESENT, /* the default (zlayer's): no request when the ref is cached */
    OBI_PULL_ALWAYS,         /* resolve the tag again and fetch what is missing */
    OBI_PULL_NEVER,          /* the cache only; an error naming the image otherwise */
    OBI_PULL_NEWER,          /* HEAD the tag; pull only when its digest changed */
} obi_pull_policy;

/* "always", "if_not_present", "never", "newer" (zlayer's snake_case); -EINVAL otherwise. */
int obi_pull_policy_parse(const char *text, obi_pull_policy *out);
const char *obi_pull_policy_name(obi_pull_policy policy);

#endif
