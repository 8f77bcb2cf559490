/*
 * The build's syscall filter compiled ahead of the runtime (docs/security.md "Syscall filter and
 * masks"): crun 1.8 compiles config.json's linux.seccomp with libseccomp at every start (~0.4-1 ms
 * of its CPU; its own cache of the result needs a crun built with libgcrypt, which Debian's is
 * not), unless the annotation run.oci.seccomp_bpf_data carries the BPF program already; then it
 * loads that program and ignores the rules of linux.seccomp (it still takes its "flags"). This
 * module makes that program exactly as crun 1.8.1 would (libcrun/seccomp.c,
 * libcrun_generate_seccomp): the same libseccomp calls in the same order, so the same bytes
 * for the same libseccomp. runc ignores the annotation and keeps compiling linux.seccomp.
 *
 * libseccomp is loaded on first use (dynlib.h), which costs about as much as compiling (0.3-0.9
 * ms here): so a compiled program is kept once per process and, with a cache directory, on disk,
 * where a hit needs no libseccomp. One file per key (a digest of the profile JSON and the kernel,
 * as in crun's own cache key); the entry names the libseccomp file it was made with, by path,
 * device, inode, size, mtime and ctime, and is a hit only while that file is unchanged (the
 * version of a library is its file: a package upgrade replaces it). Entries are 0600 in a 0700
 * directory of the effective user, renamed into place whole and read only through a descriptor
 * whose owner, mode, link count, size and checksum were verified: anything else is a miss,
 * compiled and written again.
 */
#ifndef OCIBUILD_SECCOMP_BPF_H
#define OCIBUILD_SECCOMP_BPF_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"

#define OBI_SECCOMP_BPF_ANNOTATION "run.oci.seccomp_bpf_data"
/* Hex of the first 16 bytes of a BLAKE3 digest. */
#define OBI_SECCOMP_BPF_KEY_LEN 32

/* The BPF program (struct sock_filter[], *len a multiple of 8) crun 1.8.1 would make of the
 * linux.seccomp object profile: default action, architectures (SCMP_ARCH_ names, lowercased for
 * seccomp_arch_resolve_name), rules with their errnoRet (EPERM when absent) and argument
 * conditions (a rule with two conditions on one argument becomes one rule per condition), rules
 * whose action is the default skipped, and syscall names this libseccomp does not know skipped
 * (crun warns and goes on). Errors name the field: "linux.seccomp.syscalls[2].args[0].op". */
int obi_seccomp_bpf_compile(const json_t *profile, uint8_t **out, size_t *out_len, obi_error **err);

/* The flags crun passes to seccomp(SECCOMP_SET_MODE_FILTER) for profile: its "flags" (TSYNC,
 * SPEC_ALLOW, LOG, WAIT_KILLABLE_RECV; any other is an error, as crun's), or
 * SECCOMP_FILTER_FLAG_SPEC_ALLOW when it has none. crun retries with 0 when the kernel refuses
 * them with EINVAL. The annotation does not change them. */
int obi_seccomp_bpf_flags(const json_t *profile, unsigned *flags, obi_error **err);

/* The cache key of profile: BLAKE3 of the profile's canonical JSON (sorted keys) and uname's
 * machine, release and version, as hex. */
int obi_seccomp_bpf_key(const json_t *profile, char key[OBI_SECCOMP_BPF_KEY_LEN + 1],
                        obi_error **err);

/* The program cached under key in dir: 1 and *out (caller frees), or 0 when there is none or the
 * entry is not one this module wrote whole for key (other owner, mode, link count, a symlink, a
 * wrong size, header or checksum) or its library file changed since: such an entry is never
 * loaded. Errors only for memory. */
int obi_seccomp_bpf_cache_get(const char *dir, const char *key, uint8_t **out, size_t *out_len,
                              obi_error **err);
/* Writes the entry (dir made 0700 if missing; its parent must exist), replacing any. library:
 * the libseccomp file bpf was made with; NULL: the one this process loaded. No fsync: an entry
 * a crash cut short fails its checksum. */
int obi_seccomp_bpf_cache_put(const char *dir, const char *key, const uint8_t *bpf, size_t len,
                              const char *library, obi_error **err);

/* Sets annotations[OBI_SECCOMP_BPF_ANNOTATION] of config to the base64 of profile's program:
 * from this process's last one when the key is the same, else from cache_dir (NULL: none), else
 * compiled (and put into cache_dir; a cache that cannot be written only costs time).
 * Thread-safe. */
int obi_seccomp_bpf_annotate(json_t *config, const json_t *profile, const char *cache_dir,
                             obi_error **err);

#endif
