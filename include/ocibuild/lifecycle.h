/*
 * The service lifecycle (spec/service.md, "Lifecycle"): up, ps, down over the replicas of a
 * deployment, with the OCI runtime driver (runtime.h) and the bundle writer (service_bundle.h).
 * State lives under the data dir:
 *   DATA/services/<deployment>.lock              flock: one up/down of a deployment at a time
 *   DATA/services/<deployment>/<id>/bundle       the replica's OCI bundle (overlay rootfs)
 *   DATA/services/<deployment>/<id>/log          the replica's stdout+stderr (appended), each
 *                                                line after the time its monitor read it
 *   DATA/services/<deployment>/<id>/output       the FIFO the container writes them to
 *   DATA/services/<deployment>/<id>/pid          the container init's host pid (--pid-file)
 *   DATA/services/<deployment>/<id>/exit         {"pid":..,"exit_code":..,"signal":..}
 *   DATA/services/<deployment>/<id>/monitor.lock held by the replica's monitor while it lives
 *   DATA/services/<deployment>/<id>/image        "sha256:<hex>": the image cache entry it uses,
 *                                                a root of DATA/images (obi_lifecycle_prune_images)
 *   DATA/services/<deployment>/<id>/status.json  the supervisor's view of it (supervisor.h)
 *   DATA/services/<deployment>/<id>/held         stopped with `stop`: not restarted
 *   DATA/services/<deployment>/<id>/config.digest what its bundle was made of (up recreates
 *                                                the replica when it changes)
 *   DATA/services/<deployment>/supervisor.{lock,pid,log}  the deployment's supervisor
 * where <id> is `<service>-rep-<n>`; the runtime's container id is `<deployment>.<id>`, so two
 * deployments can each have a `db`. Each replica is started by a small detached monitor
 * process (a child subreaper) that runs `RUNTIME run --detach`, reaps the container's init when
 * it exits and records the exit status, which runc itself forgets; one supervisor process per
 * deployment (supervisor.h) starts, watches, checks and restarts the replicas.
 */
#ifndef OCIBUILD_LIFECYCLE_H
#define OCIBUILD_LIFECYCLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/deployment.h"
#include "ocibuild/error.h"
#include "ocibuild/registry.h"
#include "ocibuild/secrets.h"
#include "ocibuild/supervisor.h"

/* Where one replica's state lives (all absolute when data_dir is). */
typedef struct obi_replica_paths {
    char *id;           /* "<service>-rep-<n>" */
    char *container;    /* the runtime's container id: "<deployment>.<id>" */
    char *dir;          /* DATA/services/<deployment>/<id> */
    char *bundle;       /* DIR/bundle */
    char *log;          /* DIR/log */
    char *pid_file;     /* DIR/pid: the container init's host pid, written by the runtime */
    char *exit_file;    /* DIR/exit */
    char *monitor_lock; /* DIR/monitor.lock */
    char *status;       /* DIR/status.json: the supervisor's view (health, restarts, runs) */
    char *held;         /* DIR/held: stopped on purpose; the supervisor leaves it down */
} obi_replica_paths;

int obi_replica_paths_init(obi_replica_paths *paths, const char *data_dir, const char *deployment,
                           const char *service, unsigned replica, obi_error **err);
void obi_replica_paths_clear(obi_replica_paths *paths);
/* DATA/services/<deployment>.lock; caller frees. */
char *obi_lifecycle_lock_path(const char *data_dir, const char *deployment);

/* One replica of a service, as the lifecycle visits them. */
typedef struct obi_replica_ref {
    const obi_service *service; /* points into the deployment */
    unsigned replica;           /* 1..service->replicas */
} obi_replica_ref;

typedef enum obi_plan_order {
    OBI_PLAN_START, /* dependencies first (up, ps, logs) */
    OBI_PLAN_STOP,  /* dependents first: the reverse of START (down) */
} obi_plan_order;

/* The replicas to visit: every service (service NULL) or the named one; with with_dependencies
 * also everything it depends on, transitively (up SERVICE starts what SERVICE needs). replica 0
 * means all replicas, otherwise that replica of the named service only (an error without a
 * service or beyond its replica count). *out (caller frees) has *count entries. */
int obi_lifecycle_plan(const obi_deployment *deployment, const char *service, unsigned replica,
                       bool with_dependencies, obi_plan_order order, obi_replica_ref **out,
                       size_t *count, obi_error **err);

/* Progress for the caller to print: "web-rep-1: started (pid 123)", warnings. */
typedef void (*obi_lifecycle_report_fn)(const char *message, void *ctx);

typedef struct obi_lifecycle_options {
    const char *data_dir;     /* NULL: obi_default_data_dir() */
    obi_secrets *secrets;     /* NULL: `$S:` references are errors */
    const char *runtime;      /* "runc", "crun" or a path; NULL: runc */
    const char *runtime_root; /* the runtime's --root; NULL: its default */
    const char *service;      /* NULL: every service */
    unsigned replica;         /* 0: every replica (needs service otherwise) */
    long grace_ms;            /* stop signal .. SIGKILL; < 0: stop_grace_period, else 10 s */
    obi_lifecycle_report_fn report;
    void *report_ctx;
    const obi_registry_options *registry; /* pulls of registry images; NULL: the defaults */
    bool volumes;                         /* down: named volumes too (down -v) */
} obi_lifecycle_options;

#define OBI_LIFECYCLE_DEFAULT_GRACE_MS 10000L
#define OBI_LIFECYCLE_OPTIONS_INIT                                                                 \
    {                                                                                              \
        NULL, NULL, NULL, NULL, NULL, 0, -1, NULL, NULL, NULL, false                               \
    }

/* Stops the deployment's supervisor (if any), removes running replicas whose config digest
 * changed, then starts a new supervisor (supervisor.h) that starts the planned replicas in
 * dependency order (waiting for each dependency's condition) and watches them; returns when
 * its first pass is done. A running (or paused) unchanged replica is left alone; a stopped
 * one is deleted and started again on its bundle (its writable layer and volumes kept). A
 * replica that fails to start is cleaned up entirely (container, mounts, bundle, anonymous
 * volumes, state dir) and its error, with the runtime's output, returned. */
int obi_lifecycle_up(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                     obi_error **err);

/* Stops and removes replicas in reverse dependency order: SIGTERM, up to grace_ms for the
 * container to stop, SIGKILL, delete, bundle (overlay unmounted), anonymous volumes and state
 * dir. Named volumes are kept. Without a service filter, replica dirs the document no longer
 * names (scaled down, renamed) are removed as well. Missing replicas are not an error. */
int obi_lifecycle_down(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                       obi_error **err);

typedef enum obi_replica_state {
    OBI_REPLICA_ABSENT, /* no container */
    OBI_REPLICA_CREATING,
    OBI_REPLICA_CREATED,
    OBI_REPLICA_RUNNING,
    OBI_REPLICA_PAUSED,
    OBI_REPLICA_STOPPED,
} obi_replica_state;

const char *obi_replica_state_name(obi_replica_state state);

typedef struct obi_replica_status {
    char *id;
    const obi_service *service;
    unsigned replica;
    obi_replica_state state;
    int pid;       /* running/paused: the container's init on the host; else 0 */
    bool has_exit; /* stopped and the monitor recorded how */
    int exit_code; /* as obi_wait_exit_code: the code, or 128 + signal */
    int signal;    /* the signal that ended it, or 0 */
    char *bundle;  /* the runtime's bundle path (NULL when absent) */
    bool foreign;  /* a container of that id runs from another bundle (another deployment) */
    int64_t started_ms, finished_ms; /* the last run's (exit record), ms since the epoch; 0 */
    bool supervised;                 /* the supervisor wrote a status (below) */
    obi_supervision supervision;
} obi_replica_status;

/* The runtime's view of each planned replica (start order). */
int obi_lifecycle_ps(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                     obi_replica_status **out, size_t *count, obi_error **err);
void obi_replica_status_free(obi_replica_status *statuses, size_t count);

/* The image cache's garbage collector (`ocibuild store gc`): under the image cache's lock held
 * exclusively (image.h; waits for every `up` in progress), removes every DATA/images/<hex>
 * that no replica dir's image file names, and unpacks left by a crash. A replica dir with a
 * bundle but no image file (made before they were written) stops it: nothing is removed, and
 * *skipped names the replica. */
typedef struct obi_image_prune_stats {
    uint64_t entries; /* removed (or that would be) */
    uint64_t bytes;
    char *skipped; /* malloc'd: why nothing was removed, or NULL */
} obi_image_prune_stats;
int obi_lifecycle_prune_images(const char *data_dir, bool dry_run, obi_image_prune_stats *stats,
                               obi_error **err);

/* Stops (keep = true: `service stop`, marked held so the supervisor leaves them down) or
 * restarts (`service restart`) the selected replicas, with the supervisor stopped meanwhile
 * and started again afterwards. */
/* Runs argv in replica opts->replica (0: 1) of opts->service, which must be running and this
 * deployment's: the runtime's exec (with --tty when tty), or, where the runtime cannot enter the
 * replica, ocibuild's own (replica_exec.h). *exit_code is the command's (128+N for signal N). */
int obi_lifecycle_exec(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                       char *const argv[], bool tty, int *exit_code, obi_error **err);

int obi_lifecycle_stop(const obi_deployment *deployment, const obi_lifecycle_options *opts,
                       bool restart, obi_error **err);

/* The deployments that have state under DATA/services, sorted; *names NULL-terminated. */
int obi_lifecycle_list(const char *data_dir, char ***names, obi_error **err);

/* Reads an exit file written by a replica's monitor. -ENOENT when there is none. */
int obi_lifecycle_read_exit(const char *exit_file, int *exit_code, int *signal, obi_error **err);

#endif
