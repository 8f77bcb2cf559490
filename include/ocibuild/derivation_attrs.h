/*
 * A derivation's attributes as Nix 2.8's ParsedDerivation reads them: from the structured
 * attributes (`__json` in the env, parsed as JSON) when there are any, else from the env (lists
 * split on whitespace, booleans true when "1"). Everything that reads attributes asks here:
 * the checks before a build (system features, __noChroot, __impureHostDeps), the environment
 * (impureEnvVars, passAsFile), the output checks (allowedReferences, ..., outputChecks) and
 * exportReferencesGraph. Also the two files structured attributes give the builder:
 * .attrs.json (written as Nix's JSON library writes it: sorted keys, no spaces) and .attrs.sh
 * (the attributes bash can hold, as `declare` lines).
 */
#ifndef OCIBUILD_DERIVATION_ATTRS_H
#define OCIBUILD_DERIVATION_ATTRS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "ocibuild/derivation.h"
#include "ocibuild/error.h"

typedef struct obi_derivation_attrs obi_derivation_attrs;

/* Parses drv's __json (if any). drv and drv_path (for messages) must outlive the result. A bad
 * __json: "cannot process __json attribute of '<drv_path>': <reason>". */
int obi_derivation_attrs_new(const obi_derivation *drv, const char *drv_path,
                             obi_derivation_attrs **out, obi_error **err);
void obi_derivation_attrs_free(obi_derivation_attrs *attrs);
OBI_DEFINE_CLEANUP(obi_derivation_attrs, obi_derivation_attrs_free)
#define cleanup_derivation_attrs __attribute__((cleanup(obi_derivation_attrs_freep)))

/* The structured attributes (borrowed), or NULL. */
const json_t *obi_derivation_attrs_structured(const obi_derivation_attrs *attrs);

/* getStringAttr: 1 with *out (borrowed) when set, 0 when not; a structured value that is not a
 * string: "attribute '<name>' of derivation '<drv>' must be a string". */
int obi_derivation_attrs_get_string(const obi_derivation_attrs *attrs, const char *name,
                                    const char **out, obi_error **err);
/* getBoolAttr: def when unset; env "1" is true; structured must be a Boolean. */
int obi_derivation_attrs_get_bool(const obi_derivation_attrs *attrs, const char *name, bool def,
                                  bool *out, obi_error **err);
/* getStringsAttr: 1 with *out (NULL-terminated, obi_strv_free) when set, 0 (*out NULL) when not.
 * env: split on " \t\n\r"; structured: must be a list of strings. */
int obi_derivation_attrs_get_strings(const obi_derivation_attrs *attrs, const char *name,
                                     char ***out, size_t *n_out, obi_error **err);

/* requiredSystemFeatures, plus "ca-derivations" when the output paths are not known before the
 * build (floating or deferred). Sorted, unique, NULL-terminated. */
int obi_derivation_attrs_required_features(const obi_derivation_attrs *attrs, char ***out,
                                           size_t *n_out, obi_error **err);

/* One exportReferencesGraph entry: the file (non-structured) or key (structured) name and the
 * store paths whose closure it describes. */
typedef struct obi_export_graph_spec {
    char *name;
    char **paths; /* NULL-terminated */
    size_t n_paths;
} obi_export_graph_spec;
void obi_export_graph_specs_free(obi_export_graph_spec *specs, size_t n);

/* The exportReferencesGraph attribute, checked as Nix checks it: env form "name1 path1 name2
 * path2 ..." ("odd number of tokens in 'exportReferencesGraph': '<s>'", "invalid file name '<n>'
 * in 'exportReferencesGraph'", "'exportReferencesGraph' contains a non-store path '<p>'"; a path
 * below a store path stands for that store path), structured form an object of names to a path
 * or a list of paths (each exactly a store path). *n_out 0 when unset. */
int obi_derivation_attrs_export_graphs(const obi_derivation_attrs *attrs,
                                       obi_export_graph_spec **out, size_t *n_out, obi_error **err);

/* What Nix's JSON library writes for a value: compact, object keys sorted bytewise, control
 * characters as \u00xx, doubles in the shortest form that reads back the same. Caller frees;
 * NULL on out of memory. */
char *obi_nix_json_dump(const json_t *value);

/* The .attrs.sh text for the (already completed) structured attributes json: a `declare` line
 * per attribute whose name is a shell variable name and whose value bash can hold (strings,
 * integers, null, Booleans, and lists or objects of those). Caller frees; NULL on out of
 * memory. */
char *obi_nix_attrs_shell(const json_t *json);

#endif
