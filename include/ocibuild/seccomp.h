/*
 * The syscall filter of a build: the `linux.seccomp` object of config.json, which the OCI
 * runtime compiles (with its libseccomp) and loads just before it executes the build command;
 * for crun, seccomp_bpf.h compiles it ahead. The filter allows by default and refuses
 * (docs/security.md "Syscall filter and masks" gives the reasons, the sources and the costs):
 * - chmod, fchmod, fchmodat, fchmodat2 with S_ISUID or S_ISGID in the mode (EPERM, as Nix);
 * - the setxattr family (ENOTSUP, as Nix: castore and NAR cannot carry extended attributes);
 * - the kernel keyring: add_key, keyctl, request_key (EPERM; keyrings are not namespaced);
 * - of Docker's default deny-list, what a process without capabilities could still do, with
 *   unshare, setns and clone into a new user namespace (EPERM); clone3 and the io_uring calls
 *   (ENOSYS, so callers fall back to clone and to plain I/O).
 * A syscall name the runtime's libseccomp does not know is skipped by the runtime (runc, crun),
 * so a name newer than it is only filtered by newer runtimes.
 */
#ifndef OCIBUILD_SECCOMP_H
#define OCIBUILD_SECCOMP_H

#include <jansson.h>

#include "ocibuild/error.h"

/* The linux.seccomp object for builds on machine (a `uname -m` name: x86_64, aarch64, ppc64le,
 * riscv64, s390x; NULL: this machine's). Its architectures are the machine's own and the
 * 32-bit one it can run (x86_64: X86_64 and X86; not x32, whose syscalls then kill the thread).
 * An unknown machine is -ENOTSUP naming it and the known ones: a build never runs without its
 * filter. */
int obi_seccomp_build_profile(const char *machine, json_t **out, obi_error **err);

#endif
