/*
 * Deployment documents (spec/service.md): the YAML that describes a set of long-running services.
 * Parsed with libyaml into a plain data model that spec generation (service_spec.h) and the
 * service lifecycle read. Validation is strict: unknown keys, wrong types and broken rules are
 * errors naming the source position, the service and the key, e.g.
 *   "deploy.yaml:7:7: services.web.resources: unknown key \"cpus\"".
 * Env values are kept as written ($E: and $S: references are resolved by secrets.h).
 *
 * Every key of zlayer's deployment format is accepted (docs/service.md, "zlayer keys"): the ones
 * that mean something on one node are parsed into the structs below; the ones that only mean
 * something to a cluster (placement, tiers, tunnels, the API server, ...) are checked for shape
 * and recorded in obi_deployment.notices, one line per key naming it, for the CLI to print once.
 */
#ifndef OCIBUILD_DEPLOYMENT_H
#define OCIBUILD_DEPLOYMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"
#include "ocibuild/image_ref.h"
#include "ocibuild/number.h" /* obi_parse_memory, used with deployments */

typedef enum obi_rtype {
    OBI_RTYPE_SERVICE,
    OBI_RTYPE_JOB,
    OBI_RTYPE_CRON,
} obi_rtype;

typedef enum obi_image_kind {
    OBI_IMAGE_NONE,     /* no image: the bundle gets an empty rootfs */
    OBI_IMAGE_OCI,      /* image.name "oci:PATH[:TAG]" */
    OBI_IMAGE_ROOTFS,   /* image.rootfs "/path", used as is */
    OBI_IMAGE_REGISTRY, /* image "nginx:alpine", or image.name REF: pulled (registry.h) */
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
    OBI_GPU_BACKEND_MPI, /* no socket-interface variable */
} obi_gpu_backend;

typedef enum obi_gpu_sharing {
    OBI_GPU_SHARING_EXCLUSIVE,  /* whole GPUs (the default) */
    OBI_GPU_SHARING_MPS,        /* NVIDIA MPS: its pipe and log dirs bound in, named in env */
    OBI_GPU_SHARING_TIME_SLICE, /* CUDA_VISIBLE_DEVICES = time_slice_index when given */
} obi_gpu_sharing;

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
    /* size and tier of named/anonymous volumes, s3 endpoint and credentials: accepted, no-ops
     * here (notices) */
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
    obi_gpu_sharing sharing;
    char *mps_pipe_dir;        /* MPS: host dir, default /tmp/nvidia-mps */
    char *mps_log_dir;         /* MPS: host dir, default /tmp/nvidia-log */
    bool has_time_slice_index; /* time-slice */
    unsigned time_slice_index;
    char *time_slicing_config_path; /* time-slice: host file, bound read-only; NULL: none */
    char *model;                    /* a placement filter in zlayer: kept, a no-op here */
} obi_gpu;

typedef enum obi_endpoint_protocol {
    OBI_ENDPOINT_HTTP,
    OBI_ENDPOINT_HTTPS,
    OBI_ENDPOINT_TCP,
    OBI_ENDPOINT_UDP,
    OBI_ENDPOINT_WEBSOCKET,
} obi_endpoint_protocol;

/* services.X.endpoints[i]: a port the service offers (zlayer's proxy binding). Names are unique
 * within a service. The service network publishes them; this is only what the document says. */
typedef struct obi_endpoint {
    char *name;
    obi_endpoint_protocol protocol;
    unsigned port;        /* 1..65535, the port clients use */
    unsigned target_port; /* the port the container listens on; = port when not written */
    char *path;           /* URL path prefix (http, https, websocket) or NULL */
    char *host;           /* host pattern ("api.example.com", "*.example.com") or NULL */
    bool public;          /* expose: public (true) or internal (false, the default) */
} obi_endpoint;

/* services.X.port_mappings[i]: Docker's -p, published on the host by the service network
 * (service_network.h; rootless: service_rootless_net.h). */
typedef struct obi_port_mapping {
    unsigned host_port; /* 0: any free port (the kernel's choice, reported by up) */
    unsigned container_port;
    bool udp;      /* protocol udp (default tcp) */
    char *host_ip; /* NULL: where endpoints are published (0.0.0.0; rootless 127.0.0.1) */
} obi_port_mapping;

/* pid_mode and ipc_mode (Docker's --pid and --ipc). */
typedef enum obi_namespace_mode {
    OBI_NAMESPACE_PRIVATE, /* a namespace of the replica's own (also service:/container:) */
    OBI_NAMESPACE_HOST,    /* the host's: no new namespace */
} obi_namespace_mode;

/* services.X.ulimits.NAME: process.rlimits. */
typedef struct obi_ulimit {
    const char *type;    /* "RLIMIT_NOFILE" ... (static) */
    uint64_t soft, hard; /* UINT64_MAX: unlimited (written -1) */
} obi_ulimit;

typedef enum obi_scale_mode {
    OBI_SCALE_FIXED,    /* replicas */
    OBI_SCALE_ADAPTIVE, /* min..max by metrics in zlayer; here min replicas run */
    OBI_SCALE_MANUAL,   /* one replica */
} obi_scale_mode;

typedef struct obi_scale {
    obi_scale_mode mode;
    unsigned min, max;      /* adaptive */
    uint64_t cooldown_ms;   /* adaptive; 0 when not written */
    unsigned target_cpu;    /* adaptive targets, 0: not written (percent) */
    unsigned target_memory; /* percent */
    unsigned target_rps;
} obi_scale;

/* ---- what the supervisor reads (supervisor.h; zlayer's health, depends, init, errors,
 * restart_policy keys). Durations are milliseconds. ---- */

typedef enum obi_depend_condition {
    OBI_DEPEND_STARTED, /* the replicas run */
    OBI_DEPEND_HEALTHY, /* their health check passes (zlayer's default) */
    OBI_DEPEND_READY,   /* healthy, and its init steps are done */
} obi_depend_condition;

/* depends[].on_timeout and init.steps[].on_failure */
typedef enum obi_failure_action {
    OBI_FAILURE_FAIL,     /* the dependent is not started (an error) */
    OBI_FAILURE_WARN,     /* started anyway, with a warning */
    OBI_FAILURE_CONTINUE, /* started anyway, silently */
} obi_failure_action;

#define OBI_DEPEND_DEFAULT_TIMEOUT_MS 300000ULL /* zlayer: 300 s */

typedef struct obi_dependency {
    char *service;
    char *condition; /* "started", "healthy" or "ready", as written (default "healthy") */
    obi_depend_condition cond;
    uint64_t timeout_ms;
    obi_failure_action on_timeout;
} obi_dependency;

typedef enum obi_health_kind {
    OBI_HEALTH_NONE, /* no health block: healthy while running */
    OBI_HEALTH_TCP,
    OBI_HEALTH_HTTP,
    OBI_HEALTH_COMMAND,
} obi_health_kind;

typedef struct obi_health {
    obi_health_kind kind;
    unsigned port;          /* tcp */
    char *url;              /* http: http://HOST[:PORT]/PATH */
    unsigned expect_status; /* http; default 200 */
    char *command;          /* command: run with /bin/sh -c inside the container */
    uint64_t start_grace_ms, interval_ms, timeout_ms;
    unsigned retries; /* failures in a row before unhealthy; default 3 */
} obi_health;

typedef enum obi_init_action {
    OBI_INIT_WAIT_TCP,  /* uses: init.wait_tcp, with: {host, port} */
    OBI_INIT_WAIT_HTTP, /* uses: init.wait_http, with: {url, expect_status} */
    OBI_INIT_RUN,       /* uses: init.run, with: {command} */
} obi_init_action;

typedef struct obi_init_step {
    char *id;
    obi_init_action action;
    char *host;             /* wait_tcp */
    unsigned port;          /* wait_tcp */
    char *url;              /* wait_http */
    unsigned expect_status; /* wait_http; 0: any 2xx */
    char *command;          /* run */
    unsigned retry;         /* extra attempts */
    uint64_t timeout_ms;    /* default 300 s (zlayer) */
    obi_failure_action on_failure;
} obi_init_step;

typedef enum obi_init_failure {
    OBI_INIT_FAILURE_FAIL,    /* the replica is not started */
    OBI_INIT_FAILURE_RESTART, /* the steps are tried again at once */
    OBI_INIT_FAILURE_BACKOFF, /* again after the restart backoff */
} obi_init_failure;

typedef enum obi_panic_action {
    OBI_PANIC_RESTART,  /* zlayer's default */
    OBI_PANIC_SHUTDOWN, /* the service stops: its other replicas are stopped too */
    OBI_PANIC_ISOLATE,  /* the exited replica is left as it is, for inspection */
} obi_panic_action;

typedef enum obi_restart_kind {
    OBI_RESTART_NO,
    OBI_RESTART_ALWAYS,
    OBI_RESTART_UNLESS_STOPPED,
    OBI_RESTART_ON_FAILURE,
} obi_restart_kind;

typedef struct obi_restart_policy {
    obi_restart_kind kind;
    unsigned max_attempts; /* on_failure; 0: no limit */
    uint64_t delay_ms;     /* the first backoff step; 0: the supervisor's default */
} obi_restart_policy;

typedef struct obi_service {
    char *name;
    obi_rtype rtype;
    char *schedule; /* cron only */

    obi_image_kind image_kind;
    obi_pull_policy image_pull_policy; /* image.pull_policy (image_ref.h; if_not_present) */
    obi_image_ref *image_ref;          /* REGISTRY: the parsed reference */
    char *image_path;                  /* OCI: layout directory */
    char *image_tag;                   /* OCI: tag or NULL (single manifest) */
    char *image_rootfs;                /* ROOTFS */

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
    /* the rest of resources (Docker's options), each with a has_ flag */
    bool has_pids_limit;
    int64_t pids_limit; /* -1: unlimited */
    char *cpuset;       /* "0-3,5" */
    bool has_cpu_shares;
    unsigned cpu_shares;
    bool has_memory_swap;
    int64_t memory_swap; /* bytes, -1: unlimited */
    bool has_memory_reservation;
    uint64_t memory_reservation;
    bool has_memory_swappiness;
    unsigned memory_swappiness; /* 0..100 */
    bool has_oom_score_adj;
    int oom_score_adj; /* -1000..1000 */
    bool has_oom_kill_disable;
    bool oom_kill_disable;
    bool has_blkio_weight;
    unsigned blkio_weight; /* 10..1000 */

    obi_service_device *devices;
    size_t device_count;
    obi_storage *storage;
    size_t storage_count;

    bool has_capabilities; /* an explicit list (possibly empty) replaces the defaults */
    char **capabilities;   /* NULL-terminated "CAP_X", deduplicated, document order; the key is
                              capabilities or its alias cap_add */
    char **cap_drop;       /* NULL-terminated "CAP_X": taken out of the set; NULL: none */

    obi_ulimit *ulimits; /* document order; the default RLIMIT_NOFILE 1024/1024 unless named */
    size_t ulimit_count;
    char **dns;                  /* resolver addresses -> a resolv.conf in the bundle; NULL: none */
    char *cgroup_parent;         /* linux.cgroupsPath parent; NULL: the runtime's default */
    obi_service_env_var *labels; /* -> annotations */
    size_t label_count;
    obi_service_env_var *sysctls; /* -> linux.sysctl */
    size_t sysctl_count;
    char *user;          /* "uid[:gid]" or names: overrides the image's User; NULL: image's */
    char **extra_groups; /* supplementary groups, gids or names (rootfs /etc/group); NULL */
    bool read_only_root_fs;
    bool has_no_new_privileges; /* security_opt no-new-privileges[:true|false] */
    bool no_new_privileges;
    char **extra_hosts; /* "NAME:ADDRESS" lines for /etc/hosts (ADDRESS may be host-gateway);
                           NULL: none */
    obi_namespace_mode pid_mode;
    obi_namespace_mode ipc_mode;
    bool userns_host;       /* userns_mode: host: no user namespace (rootful only) */
    bool init_container;    /* tini as PID 1 (Docker's --init) */
    int stop_signal;        /* 0: not written (SIGTERM) */
    uint64_t stop_grace_ms; /* 0: not written */
    bool delete_on_exit;    /* lifecycle.delete_on_exit */

    obi_scale scale;
    obi_endpoint *endpoints; /* document order */
    size_t endpoint_count;
    obi_port_mapping *port_mappings;
    size_t port_mapping_count;

    bool privileged;
    bool host_network; /* host_network: true or network_mode: host */
    char *hostname;    /* NULL: the container id */
    unsigned replicas; /* fixed: replicas; adaptive: min (at least 1); manual: 1 */

    obi_dependency *depends;
    size_t depend_count;

    /* supervisor keys */
    obi_health health;
    obi_init_step *init_steps;
    size_t init_step_count;
    obi_init_failure on_init_failure;
    obi_panic_action on_panic;
    bool has_restart_policy; /* restart_policy given: it decides restarts, not on_panic */
    obi_restart_policy restart_policy;
} obi_service;

typedef struct obi_deployment {
    char *name;
    obi_service *services; /* document order; none for an empty deployment */
    size_t service_count;
    /* Keys accepted without effect here, one line each, "services.web.affinity: placement
     * across nodes; ocibuild runs a deployment on one node, ignored": deployment-wide keys first,
     * then each service's in the order the parser visits them; NULL: none. */
    char **notices;
} obi_deployment;

/* Parses and validates a document. source_name is used in messages (NULL: "<input>"). */
int obi_deployment_parse(const char *text, size_t len, const char *source_name,
                         obi_deployment **out, obi_error **err);
int obi_deployment_load(const char *path, obi_deployment **out, obi_error **err);
void obi_deployment_free(obi_deployment *deployment);
OBI_DEFINE_CLEANUP(obi_deployment, obi_deployment_free)
#define cleanup_deployment _cleanup_(obi_deployment_freep)

/* The notices about service (NULL: all of them), and the deployment-wide ones: what the CLI
 * prints once for `service spec SERVICE` and `service up [SERVICE]`. A NULL-terminated list of
 * pointers into deployment->notices; caller frees the list only. */
const char **obi_deployment_notices(const obi_deployment *deployment, const char *service);

/* The service named name, or NULL. */
const obi_service *obi_deployment_find(const obi_deployment *deployment, const char *name);
/* Services in an order where each comes after everything it depends on (stable: document order
 * otherwise). *out is an array of service_count pointers into deployment; caller frees it. */
int obi_deployment_start_order(const obi_deployment *deployment, const obi_service ***out,
                               obi_error **err);

#endif
