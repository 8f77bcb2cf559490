/*
 * Child processes without a shell: spawn an argv with chosen stdin/stdout/stderr fds (the
 * child dies with its parent: PR_SET_PDEATHSIG), wait with EINTR handling, and run a command to
 * completion capturing its output (bounded). Used for runtimes, nix-store and friends.
 */
#ifndef OCIBUILD_PROCESS_H
#define OCIBUILD_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "ocibuild/error.h"

typedef struct obi_spawn_options {
    int stdin_fd;  /* -1: /dev/null */
    int stdout_fd; /* -1: /dev/null; -2: inherit */
    int stderr_fd; /* -1: /dev/null; -2: inherit */
    bool die_with_parent;
    bool new_process_group;
    char *const *envp;      /* NULL: inherit environ */
    const char *hide_mount; /* non-NULL: the child gets a private mount namespace without this
                               mount (needs CAP_SYS_ADMIN; a failure is the spawn's error) */
    int hide_mount_ns;      /* with hide_mount, >= 0: a namespace without that mount already
                               (mount_ns.h), which the child joins instead of making one, and
                               goes back to our working directory in it by its path (a cwd
                               without one, deleted: the child makes its own). -1: none */
    int exec_fd; /* >= 0: executed instead of argv[0]'s file (execveat AT_EMPTY_PATH: an ELF file
                    with the same program, which may be close-on-exec); argv[0] is still looked
                    up, and run where execveat is missing (ENOSYS: valgrind 3.19). -1: none */
} obi_spawn_options;

#define OBI_SPAWN_OPTIONS_INIT                                                                     \
    {                                                                                              \
        -1, -2, -2, true, false, NULL, NULL, -1, -1                                                \
    }

/* Starts argv[0] (looked up in $PATH when it has no '/') as a child that shares no page tables
 * with us (clone with CLONE_VM | CLONE_VFORK, then exec); a failed exec is this call's error. */
int obi_spawn(char *const argv[], const obi_spawn_options *opts, pid_t *pid_out, obi_error **err);
/* waitpid retrying on EINTR; *status is the raw wait status. */
int obi_wait(pid_t pid, int *status, obi_error **err);
/* Exit code from a wait status: the exit code, or 128+signal. */
int obi_wait_exit_code(int status);

/* Runs argv to completion with stdin from /dev/null, capturing stdout (and stderr into the same
 * buffer when merge_stderr) up to max_output bytes (excess is dropped, not an error). *output is
 * NUL-terminated; *exit_code as obi_wait_exit_code. Fails only when it cannot run. */
int obi_run_capture(char *const argv[], bool merge_stderr, size_t max_output, char **output,
                    int *exit_code, obi_error **err);

/* The same with spawn's options (stdout is the capture; stderr_fd 1: into it too; stdin
 * /dev/null). */
int obi_run_capture_opts(char *const argv[], const obi_spawn_options *spawn, size_t max_output,
                         char **output, int *exit_code, obi_error **err);

/* Finds an executable by name in $PATH plus extra_dirs (colon-separated, may be NULL). Caller
 * frees; NULL when not found. A name containing '/' is returned as is if executable. */
char *obi_find_executable(const char *name, const char *extra_dirs);

#endif
