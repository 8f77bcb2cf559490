/*
 * The checks Nix 2.8 makes around a build, with its messages (local-derivation-goal.cc, facts
 * only): before it, whether this machine may build the derivation at all (its system among the
 * machine's platforms, its required features among the machine's, no __noChroot in a sandbox,
 * no __impureHostDeps outside allowed-impure-host-deps, which is empty on Linux); after it,
 * that no two outputs refer to each other in a cycle, and the reference constraints
 * (allowedReferences, allowedRequisites, disallowedReferences, disallowedRequisites, and with
 * structured attributes outputChecks with maxSize and maxClosureSize). nix_build.c calls them;
 * the machine's facts are detected as Nix detects its defaults.
 */
#ifndef OCIBUILD_NIX_CHECKS_H
#define OCIBUILD_NIX_CHECKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/derivation.h"
#include "ocibuild/derivation_attrs.h"
#include "ocibuild/error.h"

/* What this machine builds: Nix's system, extra-platforms and system-features settings. */
typedef struct obi_nix_machine {
    char *system;           /* "x86_64-linux" */
    char **extra_platforms; /* NULL-terminated */
    char **features;        /* sorted, NULL-terminated */
} obi_nix_machine;

/* Nix's defaults on this machine: system from the architecture; extra platforms i686-linux on
 * x86_64 plus the x86-64 levels the CPU has (x86_64-v1-linux ...); features benchmark,
 * big-parallel, nixos-test, kvm when /dev/kvm can be opened read-write, and ca-derivations
 * (which Nix adds when that experimental feature is on: ocibuild builds them). */
int obi_nix_machine_detect(obi_nix_machine *out, obi_error **err);
void obi_nix_machine_clear(obi_nix_machine *m);
bool obi_nix_machine_has_feature(const obi_nix_machine *m, const char *feature);

/* startBuilder's refusals, in its order:
 * "a '<system>' with features {<f>, ...} is required to build '<drv>', but I am a '<system>'
 * with features {<f>, ...}", "derivation '<drv>' has '__noChroot' set, but that's not allowed
 * when 'sandbox' is 'true'", "derivation '<drv>' requested impure path '<p>', but it was not in
 * allowed-impure-host-deps". Builtin builders ("builtin:...") are refused as not supported. */
int obi_nix_check_can_build(const obi_nix_machine *machine, const char *drv_path,
                            const obi_derivation *drv, const obi_derivation_attrs *attrs,
                            obi_error **err);

/* One output after its build, as the checks see it. */
typedef struct obi_nix_output_facts {
    const char *name;
    const char *path;
    uint64_t nar_size;
    char *const *references; /* sorted store paths */
    size_t n_references;
} obi_nix_output_facts;

/* The outputs of drv_path in an order where each comes after the outputs it refers to (Nix's
 * topological sort, reversed); a cycle is "cycle detected in build of '<drv>' in the references
 * of output '<a>' from output '<b>'". order[i] indexes outputs. */
int obi_nix_order_outputs(const char *drv_path, const obi_nix_output_facts *outputs, size_t n,
                          size_t *order, obi_error **err);

/* References and NAR size of a store path that is not an output of this build (an input):
 * *refs is NULL-terminated, freed by the caller (obi_strv_free). */
typedef int (*obi_nix_path_facts_fn)(void *ctx, const char *path, char ***refs, size_t *n_refs,
                                     uint64_t *nar_size, obi_error **err);

/* checkOutputs: each output against its constraints. Bad references: "output '<path>' is not
 * allowed to refer to the following paths:\n  <path>..."; an unknown specifier: "derivation
 * contains an illegal reference specifier '<s>'". lookup answers for paths outside outputs
 * (asked only when a requisites check or maxClosureSize needs a closure). */
int obi_nix_check_output_references(const obi_derivation_attrs *attrs,
                                    const obi_nix_output_facts *outputs, size_t n,
                                    obi_nix_path_facts_fn lookup, void *lookup_ctx,
                                    obi_error **err);

#endif
