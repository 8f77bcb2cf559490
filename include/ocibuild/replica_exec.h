/*
 * Entering a running replica without the OCI runtime (docs/service.md, "exec into a replica"):
 * `service exec` and command health checks, where the runtime's own exec cannot. runc 1.1.5
 * joins the user namespace first and then may no longer join a network namespace that another
 * user namespace owns: a replica in a user namespace that joins the deployment network's
 * namespace by path (/run/netns/obi-..., which the host owns) refuses `runc exec` with
 * "failed to setns into net namespace: Operation not permitted".
 *
 * What this does instead, in a child of the caller (A) and its child (B), as runc 1.2 and nsenter
 * do: A joins the cgroups of the replica's init, then its namespaces through a pidfd: first every
 * one it may join as it is (as root on the host: all of them), then the user namespace, then the
 * rest (rootless: those the user namespace owns); namespaces it already shares are skipped. B is
 * forked into the pid namespace and becomes the process config.json's `process` describes:
 * a session of its own (no controlling terminal: the caller's terminal cannot be fed keystrokes
 * with TIOCSTI), cwd, umask, rlimits, the bounding set, groups, gid, uid, the effective,
 * permitted, inheritable and ambient capabilities, no_new_privs, then execvp with the process's
 * env. A forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to B and exits with B's code; B dies with
 * A (PR_SET_PDEATHSIG), and A with the caller. Neither keeps a descriptor of the caller.
 *
 * What the config asks for that cannot be applied here is refused, never skipped: a seccomp
 * filter (ocibuild links no seccomp library), an AppArmor profile, an SELinux label.
 */
#ifndef OCIBUILD_REPLICA_EXEC_H
#define OCIBUILD_REPLICA_EXEC_H

#include <jansson.h>
#include <stdbool.h>

#include "ocibuild/error.h"

/* Whether the runtime's exec cannot enter a replica of this config.json: it has a user
 * namespace and joins a network namespace by path. */
bool obi_replica_exec_needs_own(const json_t *config);

/* Runs argv (argv[0] looked up in the process's PATH) in the running replica whose init is
 * pid (host pid) and whose config.json is config, with the caller's stdin, stdout and stderr.
 * *exit_code: the command's, 128+N when a signal N ended it. A command that could not be
 * executed, or a step before it that failed, is an error naming the step (setns, setresuid,
 * "execute CMD") with *exit_code 127 (126: found but not executable), as a shell's. */
int obi_replica_exec(const json_t *config, int pid, char *const argv[], int *exit_code,
                     obi_error **err);

#endif
