/*
 * The supervisor: one process per deployment (docs/service.md, "The supervisor"), started by
 * `service up` (lifecycle.h) and found again by later commands through its files under
 * DATA/services/<deployment>/: supervisor.lock (flock held while it lives), supervisor.pid and
 * supervisor.log. It starts the replicas of each service once the conditions of its `depends`
 * hold (started, healthy, ready) and its `init.steps` passed, watches each container's init
 * through a pidfd, restarts per `restart_policy` or `errors.on_panic` with exponential backoff,
 * runs health checks (tcp, http, command), runs `rtype: job` once and `rtype: cron` on its
 * schedule (cron.h), and writes what it knows of each replica to DIR/status.json for `ps`.
 * A small event loop: epoll over pidfds, a signalfd and a timerfd; no threads.
 * Its death leaks nothing: containers keep running and the next `up` adopts them, `down`
 * removes them.
 */
#ifndef OCIBUILD_SUPERVISOR_H
#define OCIBUILD_SUPERVISOR_H

#include <stdbool.h>
#include <stdint.h>

#include "ocibuild/deployment.h"
#include "ocibuild/error.h"

#define OBI_BACKOFF_BASE_MS 500ULL   /* the first restart's delay */
#define OBI_BACKOFF_MAX_MS 60000ULL  /* the longest */
#define OBI_BACKOFF_RESET_MS 10000LL /* a run this long forgets earlier failures */

/* The delay before restart number `failures` (1 for the first): base, 2 base, 4 base, ...,
 * at most OBI_BACKOFF_MAX_MS; 0 for failures 0. base 0 means OBI_BACKOFF_BASE_MS. */
uint64_t obi_backoff_delay_ms(uint64_t base_ms, unsigned failures);

typedef enum obi_exit_decision {
    OBI_EXIT_RESTART,          /* start it again (after the backoff) */
    OBI_EXIT_STAY_DOWN,        /* leave it stopped (a job that is done, isolate, kind: no) */
    OBI_EXIT_SHUTDOWN_SERVICE, /* on_panic: shutdown: stop the service's other replicas too */
} obi_exit_decision;

/* What happens when a replica of svc exits with exit_code after `restarts` restarts:
 * restart_policy when given (no, always, unless_stopped, on_failure with max_attempts), else
 * for services errors.on_panic (restart, shutdown, isolate); jobs stay down unless a policy
 * says otherwise; cron replicas always wait for their next time. */
obi_exit_decision obi_supervisor_on_exit(const obi_service *svc, int exit_code, unsigned restarts);

/* Stops the deployment's supervisor when one runs (SIGTERM, then waits for its lock), leaving
 * the containers as they are. 0 when none runs. */
int obi_supervisor_stop(const char *data_dir, const char *deployment, obi_error **err);

/* Whether a supervisor of the deployment runs; *pid its pid (0 when unknown). */
bool obi_supervisor_alive(const char *data_dir, const char *deployment, int *pid);

/* What the supervisor last wrote of a replica (DIR/status.json). */
typedef struct obi_supervision {
    char state[16];  /* waiting, starting, running, backoff, done, held, scheduled, failed */
    char health[16]; /* none, starting, healthy, unhealthy */
    unsigned restarts;
    unsigned runs;   /* cron and jobs: runs started */
    int64_t next_ms; /* backoff or cron: the next start (ms since the epoch), else 0 */
    char note[160];  /* why it is failed or waiting */
} obi_supervision;

/* -ENOENT when the supervisor never wrote one. */
int obi_supervision_read(const char *status_path, obi_supervision *out, obi_error **err);

#endif
