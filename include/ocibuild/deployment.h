/*
 * Deployment documents (spec/service.md): the YAML that describes a set of long-running services.
 * Parsed with libyaml into a plain data model that spec generation (service_spec.h) and the
 * service lifecycle read. Validation is strict: unknown keys, wrong types and broken rules are
 * errors naming the source position, the service and the key, e.g.
 *   "deploy.yaml:7:7: services.web.resources: unknown key \"cpus\"".
 * Env values are kept as written ($E: and $S: references are resolved by secrets.h).
 */
#ifndef OCIBUILD_DEPLOYMENT_H
#define OCIBUILD_DEPLOYMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"
#include "ocibuild/number.h" /* obi_parse_memory, used with deployments */

typedef enum obi_rtype {
    OBI_RTYPE_SERVICE,
    OBI_RTYPE_JOB,
    OBI_RTYPE_CRON,
} obi_rtype;

typedef enum obi_image_kind {
    OBI_IMAGE_NONE,   /* no image: the bundle gets an empty rootfs */
    OBI_IMAGE_OCI,    /* image.name "oci:PATH[:TAG]" */
    OBI_IMAGE_ROOTFS, /* image.rootfs "/path", used as is */
} obi_image_kind;

typedef enum obi_gpu_vendor {
    OBI_GPU_NVIDIA,
    OBI_GPU_AMD,
    OBI_GPU_INTEL,
    OBI_GPU_OTHER, /* any other vendor name: device cgroup major 226 only */
} obi_gpu_vendor;

typedef enum obi_gpu_backend {
    OBI_GPU_BACKEND_NCCL,
    OBI_GPU_BACKEND_GLOO,
} obi_gpu_backend;

typedef enum obi_storage_type {
    OBI_STORAGE_BIND,
    OBI_STORAGE_NAMED,
    OBI_STORAGE_ANONYMOUS,
    OBI_STORAGE_TMPFS,
    OBI_STORAGE_S3,
} obi_storage_type;

typedef struct obi_service_env_var {
    char *name;
    char *value;
} obi_service_env_var;

typedef struct obi_service_device {
    char *path; /* path in the container (and, below the /dev root, on the host) */
    bool read, write, mknod;
} obi_service_device;

typedef struct obi_storage {
    obi_storage_type type;
    char *source; /* bind */
    char *name;   /* named */
    char *bucket; /* s3 */
    char *prefix; /* s3, may be NULL */
    char *target; /* absolute path in the container */
    bool readonly;
    bool has_size; /* tmpfs */
    uint64_t size;
    bool has_mode; /* tmpfs */
    unsigned mode;
} obi_storage;

typedef struct obi_gpu {
    unsigned count;
    obi_gpu_vendor vendor;
    char *vendor_name;
    bool distributed;
    obi_gpu_backend backend;
    unsigned master_port;
} obi_gpu;

typedef struct obi_dependency {
    char *service;
    char *condition; /* "started" */
} obi_dependency;

typedef struct obi_service {
    char *name;
    obi_rtype rtype;
    char *schedule; /* cron only */

    obi_image_kind image_kind;
    char *image_path;   /* OCI: layout directory */
    char *image_tag;    /* OCI: tag or NULL (single manifest) */
    char *image_rootfs; /* ROOTFS */

    char **entrypoint; /* NULL-terminated; NULL when absent or empty */
    char **args;       /* NULL-terminated; NULL when absent or empty */
    char *workdir;

    obi_service_env_var *env; /* document order, unresolved */
    size_t env_count;

    bool has_cpu;
    double cpu;
    bool has_memory;
    uint64_t memory;
    bool has_gpu;
    obi_gpu gpu;

    obi_service_device *devices;
    size_t device_count;
    obi_storage *storage;
    size_t storage_count;

    bool has_capabilities; /* an explicit list (possibly empty) replaces the defaults */
    char **capabilities;   /* NULL-terminated "CAP_X", deduplicated, document order */

    bool privileged;
    bool host_network;
    char *hostname; /* NULL: the container id */
    unsigned replicas;

    obi_dependency *depends;
    size_t depend_count;
} obi_service;

typedef struct obi_deployment {
    char *name;
    obi_service *services; /* document order */
    size_t service_count;
} obi_deployment;

/* Parses and validates a document. source_name is used in messages (NULL: "<input>"). */
int obi_deployment_parse(const char *text, size_t len, const char *source_name,
                         obi_deployment **out, obi_error **err);
int obi_deployment_load(const char *path, obi_deployment **out, obi_error **err);
void obi_deployment_free(obi_deployment *deployment);
OBI_DEFINE_CLEANUP(obi_deployment, obi_deployment_free)
#define cleanup_deployment _cleanup_(obi_deployment_freep)

/* The service named name, or NULL. */
const obi_service *obi_deployment_find(const obi_deployment *deployment, const char *name);
/* Services in an order where each comes after everything it depends on (stable: document order
 * otherwise). *out is an array of service_count pointers into deployment; caller frees it. */
int obi_deployment_start_order(const obi_deployment *deployment, const obi_service ***out,
                               obi_error **err);

#endif
