/*
 * The OCI runtime driver, shared by the build service and the service lifecycle: runs
 * `RUNTIME [--root STATE] run --bundle DIR ID` (runc by default, crun or any binary by path),
 * captures stdout/stderr into a bounded log whose tail is kept, streams it to a callback,
 * enforces a wall-clock timeout and a cancellation fd, and leaves no container behind (kill,
 * then delete --force) when a run fails or is cut short, or says that it could not
 * (OBI_ECONTAINER_LEFT). Also the detached calls services need. crun runs from an unwritable view
 * or copy of its binary (no second exec per call) and, as root on hybrid-cgroup hosts, in a mount
 * namespace without the cgroup2 mount; asked for no cgroups, with --cgroup-manager=disabled. A
 * container's stdin is an empty pipe, never the host's /dev/null (crun chowns it).
 */
#ifndef OCIBUILD_RUNTIME_H
#define OCIBUILD_RUNTIME_H

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"

typedef struct obi_runtime obi_runtime;

/* name_or_path: "runc", "crun", or a path (a bare name is looked up in $PATH, then /usr/sbin,
 * /sbin). state_root: the runtime's --root (NULL: its default). Error when not found. */
int obi_runtime_new(const char *name_or_path, const char *state_root, obi_runtime **out,
                    obi_error **err);
void obi_runtime_free(obi_runtime *runtime);
const char *obi_runtime_path(const obi_runtime *runtime);
const char *obi_runtime_state_root(const obi_runtime *runtime);

/* The default runtime is crun when it runs builds here, else runc, decided by a probe build
 * whose result is cached (docs/build.md "The default runtime"). The cache: one file per key in
 * a directory, "ok" or "failed: why". The key covers the binary's identity (path, device,
 * inode, size, mtime, ctime: a changed or replaced binary is probed again), rootless or not,
 * the euid, the cgroup layout and the kernel release. */
#define OBI_RUNTIME_PROBE_KEY_LEN 32
int obi_runtime_probe_key(const char *path, bool rootless, char key[OBI_RUNTIME_PROBE_KEY_LEN + 1],
                          obi_error **err);
/* 0: not cached; 1: the runtime worked; 2: it failed (*why, optional: the reason; caller
 * frees). */
int obi_runtime_probe_cache_get(const char *dir, const char *key, char **why, obi_error **err);
/* Records a probe: failure NULL when it worked. Atomic (concurrent probes write the same). */
int obi_runtime_probe_cache_put(const char *dir, const char *key, const char *failure,
                                obi_error **err);
/* Whether every call of this runtime runs in a mount namespace of its own without the hybrid
 * host's cgroup2 mount (crun as root on a hybrid-cgroup host). */
bool obi_runtime_hides_cgroup2(const obi_runtime *runtime);
/* Whether the runtime loads a precompiled syscall filter from config.json's annotations instead
 * of compiling linux.seccomp (crun: run.oci.seccomp_bpf_data, seccomp_bpf.h). */
bool obi_runtime_takes_seccomp_bpf(const obi_runtime *runtime);
/* Whether the runtime makes a cgroup for each container (default: yes). wanted false asks for
 * none: crun then gets --cgroup-manager=disabled before the subcommand of every call (run,
 * kill, delete, state; kill and delete still remove a container made with cgroups); runc 1.1
 * cannot, and keeps them. Returns what the runtime now does (docs/security.md "Limits": the
 * builds of a service without a memory limit ask for none). */
bool obi_runtime_set_cgroups(obi_runtime *runtime, bool wanted);
bool obi_runtime_uses_cgroups(const obi_runtime *runtime);

typedef void (*obi_output_fn)(const uint8_t *data, size_t len, void *ctx);

typedef struct obi_run_options {
    unsigned timeout_seconds; /* 0: no limit */
    int cancel_fd;            /* -1: none; readable means cancel */
    obi_output_fn on_output;  /* NULL: not streamed */
    void *output_ctx;
    size_t log_tail_max; /* 0: 64 KiB */
    /* A container whose init exited by itself is left stopped, not deleted: the caller answers
     * first and deletes it after (obi_runtime_delete with force); see container_stopped. Every
     * other ending still deletes before the run returns. No effect on a foreground run (crun),
     * whose runtime deletes the container as it exits. */
    bool defer_delete;
    /* Called once, right after the runtime process was spawned and before the run waits for
     * it: work that need not be done before the container starts, done while the runtime
     * makes it (10+ ms of crun's, on the other core). A negative return fails the run the way
     * a cancel does: the container is killed and removed, and the run's error is the
     * callback's, with "; container ID killed and removed". NULL: nothing. */
    int (*while_starting)(void *ctx, obi_error **err);
    void *while_starting_ctx;
} obi_run_options;

#define OBI_RUN_OPTIONS_INIT                                                                       \
    {                                                                                              \
        0, -1, NULL, NULL, 0, false, NULL, NULL                                                    \
    }

typedef struct obi_run_result {
    int exit_code;  /* the container process's exit code (as the runtime reports it) */
    char *log_tail; /* last log_tail_max bytes of stdout+stderr, NUL-terminated */
    size_t log_tail_len;
    bool container_stopped; /* defer_delete: the container exists, stopped; the caller deletes */
} obi_run_result;

/* obi_runtime_run's error when the runtime could not start the container's command (a missing
 * executable, a bad cwd, a refused mount): the message carries the runtime's own words, once. */
#define OBI_ERUNTIME_START (-ENOEXEC)
/* Where obi_runtime_run has the runtime write the container init's pid, inside the bundle. */
#define OBI_RUNTIME_PID_FILE "runtime.pid"

/* The code of a run that could not remove its container: it may still exist (and its id must
 * not be reused before a sweep removes it). */
#define OBI_ECONTAINER_LEFT (-EUCLEAN)

/* Runs the bundle and waits for it, the container's stdout and stderr one pipe (lines stay in
 * the order written): crun as `run --pid-file BUNDLE/runtime.pid` in the foreground (it waits
 * for the container and deletes it); any other runtime as `run --detach --pid-file ...`, the
 * calling process a child subreaper (PR_SET_CHILD_SUBREAPER, process-wide) that inherits the
 * container's init when the runtime exits. Returns 0 when the command ran and exited by itself
 * (see result: its exit code, 128+N for signal N; the container is deleted before this returns,
 * or left stopped with defer_delete when the runtime ran detached).
 * OBI_ERUNTIME_START when the runtime could not start the command (its message in the error,
 * nothing of it streamed). Otherwise negative, with the log tail in the message, and
 * the container killed and deleted before this returns: -ETIMEDOUT, -ECANCELED, the code of a
 * spawn that failed (no container was made), or -EIO and the like when the runtime died or
 * could no longer be watched. OBI_ECONTAINER_LEFT when kill + delete --force failed too. */
int obi_runtime_run(obi_runtime *runtime, const char *bundle, const char *id,
                    const obi_run_options *opts, obi_run_result *result, obi_error **err);
void obi_run_result_clear(obi_run_result *result);

/* Starts detached (`run --detach`), stdout and stderr appended to log_path. */
int obi_runtime_run_detached(obi_runtime *runtime, const char *bundle, const char *id,
                             const char *log_path, obi_error **err);
/* The same with `--pid-file pid_file`: the runtime writes the container init's host pid there
 * before it exits (the service lifecycle's monitor waits for that pid). */
int obi_runtime_run_detached_pid_file(obi_runtime *runtime, const char *bundle, const char *id,
                                      const char *log_path, const char *pid_file, obi_error **err);
int obi_runtime_kill(obi_runtime *runtime, const char *id, const char *signal, obi_error **err);
/* delete [--force]; a container that does not exist is not an error. */
int obi_runtime_delete(obi_runtime *runtime, const char *id, bool force, obi_error **err);
/* `state ID` as JSON; -ENOENT when the container does not exist. */
int obi_runtime_state(obi_runtime *runtime, const char *id, json_t **out, obi_error **err);
/* Kills (SIGKILL) and force-deletes, ignoring "does not exist": the cleanup every path uses. */
int obi_runtime_destroy(obi_runtime *runtime, const char *id, obi_error **err);

#endif
