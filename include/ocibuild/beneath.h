/*
 * Paths beneath a directory, never through a symlink (docs/security.md, "Paths beneath the
 * bundle"). Every path the host opens inside a bundle goes through here: the build owns what
 * lies below its scratch dirs and may have made any directory on the way a symlink (to /etc, to
 * the invoking user's home), so a path string is never handed to the kernel from "/" again.
 *
 * Contract, the same for every function here:
 * - path is relative to dirfd, which the caller trusts (a directory it created, or opened with
 *   these functions). It must be clean: non-empty components, no "." or "..", no leading or
 *   doubled "/" (-EINVAL otherwise).
 * - No component is followed if it is a symlink, the last one included: such a path fails with
 *   -ELOOP and a message naming the component (`/nix/store/a: is a symlink, not followed`). A
 *   caller that accepts a symlink as the last component opens the parent
 *   (obi_beneath_open_parent) and acts on the name with *at calls and AT_SYMLINK_NOFOLLOW.
 * - Other failures name the component too (`/nix/store/a: No such file or directory`).
 * - display (may be NULL) is what the caller calls dirfd in messages; components are appended
 *   to it with "/".
 * - Mount points are crossed (the caller decides whether a mount below dirfd is its own).
 * - Returned fds are O_CLOEXEC; the caller closes them.
 *
 * With openat2 (Linux >= 5.6) a lookup is one call with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
 * (which implies RESOLVE_NO_MAGICLINKS); where the kernel or a seccomp filter has no openat2
 * (ENOSYS) it is a walk of openat(O_PATH | O_DIRECTORY | O_NOFOLLOW), one component at a time.
 * Both give the same results; a failed openat2 is walked again to name the component.
 * OCIBUILD_BENEATH_FALLBACK=1 in the environment (or obi_beneath_force_fallback) forces the walk.
 */
#ifndef OCIBUILD_BENEATH_H
#define OCIBUILD_BENEATH_H

#include <stdbool.h>
#include <sys/types.h>

#include "ocibuild/error.h"

/* Opens path beneath dirfd with open(2) flags (O_NOFOLLOW and O_CLOEXEC are added) and mode
 * (for O_CREAT). */
int obi_beneath_open(int dirfd, const char *path, int flags, mode_t mode, const char *display,
                     int *fd_out, obi_error **err);

/* Opens the directory holding path's last component (O_PATH | O_DIRECTORY): *fd_out; *name_out
 * points at the last component inside path. The last component itself is not looked at. */
int obi_beneath_open_parent(int dirfd, const char *path, const char *display, int *fd_out,
                            const char **name_out, obi_error **err);

/* mkdir -p beneath dirfd: each missing component is created with mode (existing directories
 * are fine, anything else on the way is an error naming it). *fd_out (optional) is the last
 * directory, O_PATH | O_DIRECTORY. */
int obi_beneath_mkdirs(int dirfd, const char *path, mode_t mode, const char *display, int *fd_out,
                       obi_error **err);

/* Whether path is clean in the sense above. */
bool obi_beneath_path_is_clean(const char *path);

/* For tests: true makes every lookup take the component walk, as without openat2; false goes
 * back to the default (openat2 where the kernel has it, unless OCIBUILD_BENEATH_FALLBACK=1). */
void obi_beneath_force_fallback(bool on);

#endif
