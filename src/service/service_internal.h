/*
 * What the two halves of the service spec code share and nobody else needs: the warnings list
 * that spec generation (service_spec.c) and bundle writing (service_bundle.c) both append to.
 */
#ifndef OCIBUILD_SERVICE_INTERNAL_H
#define OCIBUILD_SERVICE_INTERNAL_H

/* Appends a formatted line to a NULL-terminated warnings list (*warnings NULL: a new list),
 * which the caller frees with obi_strv_free. -ENOMEM leaves the list as it was. */
int obi_service_warnf(char ***warnings, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the lifecycle's replica operations, for the supervisor (lifecycle.c) ---- */
#include "ocibuild/lifecycle.h"
#include "ocibuild/runtime.h"

typedef struct lifecycle lifecycle;

int obi_lc_replica_start(lifecycle *lc, const obi_service *svc, unsigned replica, int *pid,
                         obi_error **err);
int obi_lc_replica_stop(lifecycle *lc, const obi_replica_paths *paths, obi_error **err);
/* lifecycle.delete_on_exit: a replica that stays down goes, as `down` removes it (container,
 * bundle, network, anonymous volumes, state dir with its log). */
int obi_lc_replica_remove(lifecycle *lc, const obi_replica_paths *paths, obi_error **err);
int obi_lc_replica_state(lifecycle *lc, const obi_replica_paths *paths, obi_replica_state *state,
                         int *pid, obi_error **err);
/* init.run: `/bin/sh -c command` in a one-off container of svc's image and replica 1's config
 * (id `<deployment>.<service>-rep-init`, its own bundle), up to timeout_ms, removed afterwards;
 * *exit_code is the command's when it ran (0 returned). */
int obi_lc_init_run(lifecycle *lc, const obi_service *svc, const char *command, uint64_t timeout_ms,
                    int *exit_code, obi_error **err);
/* argv in the running replica whose init is pid: the runtime's exec, or ocibuild's own where
 * the runtime cannot enter (replica_exec.h); *exit_code the command's. */
int obi_lc_replica_exec(lifecycle *lc, const obi_replica_paths *paths, int pid, char *const argv[],
                        bool tty, int *exit_code, obi_error **err);
void obi_lc_report(lifecycle *lc, const char *message);
void obi_lc_set_report(lifecycle *lc, obi_lifecycle_report_fn fn, void *ctx);
const char *obi_lc_data_dir(const lifecycle *lc);
obi_runtime *obi_lc_runtime(const lifecycle *lc);
const obi_deployment *obi_lc_deployment(const lifecycle *lc);
/* In the supervisor after fork: the deployment lock's fd is not ours to close. */
void obi_lc_forget_lock(lifecycle *lc);

/* Starts the deployment's supervisor (supervisor.c) for the planned replicas and relays its
 * first pass's reports; an error when a planned replica could not be started. */
int obi_supervisor_spawn(lifecycle *lc, const obi_replica_ref *plan, size_t count, obi_error **err);

#endif
