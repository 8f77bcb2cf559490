/*
 * Nix 2.8's checks around a build (see include/ocibuild/nix_checks.h): the machine's facts
 * detected as Nix detects its defaults, the refusals before a build, and after it the order of
 * the outputs (with cycle detection) and the reference constraints.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nix_checks.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/strv.h"

/* ---- string vectors (NULL-terminated) ---- */

static bool strv_contains(char *const *v, const char *s)
{
    for (size_t i = 0; v && v[i]; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

/* "a, b, c" */
static char *join(char *const *v)
{
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    if (obi_buf_reserve(&out, 0) < 0)
        return NULL;
    for (size_t i = 0; v && v[i]; i++)
        if ((i > 0 && obi_buf_append_str(&out, ", ") < 0) || obi_buf_append_str(&out, v[i]) < 0)
            return NULL;
    return obi_buf_steal(&out);
}

/* ---- the machine ---- */

void obi_nix_machine_clear(obi_nix_machine *m)
{
    free(m->system);
    if (m->extra_platforms)
        obi_strv_free(m->extra_platforms);
    if (m->features)
        obi_strv_free(m->features);
    memset(m, 0, sizeof *m);
}

bool obi_nix_machine_has_feature(const obi_nix_machine *m, const char *feature)
{
    return strv_contains(m->features, feature);
}

/* Whether /proc/cpuinfo's first "flags" line lists every flag of need (space-separated). */
static bool cpu_has(const char *flags, const char *need)
{
    cleanup_free char *copy = strdup(need);
    char *save = NULL;
    for (char *f = copy ? strtok_r(copy, " ", &save) : NULL; f; f = strtok_r(NULL, " ", &save)) {
        size_t len = strlen(f);
        bool found = false;
        for (const char *p = flags; (p = strstr(p, f)); p += len)
            if ((p == flags || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\n' || !p[len])) {
                found = true;
                break;
            }
        if (!found)
            return false;
    }
    return copy != NULL;
}

/* The x86-64 micro-architecture levels the CPU has, as Nix's computeLevels finds them. */
static int add_x86_64_levels(obi_strv_builder *platforms)
{
    static const char *const LEVELS[][2] = {
        {"x86_64-v1-linux", "cmov cx8 fpu fxsr mmx sse sse2"},
        {"x86_64-v2-linux", "cx16 lahf_lm popcnt pni ssse3 sse4_1 sse4_2"},
        {"x86_64-v3-linux", "avx avx2 f16c fma abm movbe"},
        {"x86_64-v4-linux", "avx512f avx512bw avx512cd avx512dq avx512vl"},
    };
    cleanup_free char *cpuinfo = NULL;
    size_t len = 0;
    cleanup_error obi_error *ignored = NULL;
    if (obi_read_file("/proc/cpuinfo", 16u * 1024 * 1024, &cpuinfo, &len, &ignored) < 0)
        return 0;
    const char *flags = strstr(cpuinfo, "\nflags");
    if (!flags || !(flags = strchr(flags, ':')))
        return 0;
    cleanup_free char *line = strndup(flags + 1, strcspn(flags + 1, "\n"));
    if (!line)
        return -ENOMEM;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(LEVELS) && cpu_has(line, LEVELS[i][1]); i++)
        if (obi_strv_builder_add(platforms, LEVELS[i][0]) < 0)
            return -ENOMEM;
    return 0;
}

int obi_nix_machine_detect(obi_nix_machine *out, obi_error **err)
{
    struct utsname u;
    if (uname(&u) < 0)
        return obi_error_set_errno(err, errno, "uname");
    _cleanup_(obi_nix_machine_clear) obi_nix_machine m = {0};
    cleanup_strv_builder obi_strv_builder platforms = {0}, features = {0};
    if (asprintf(&m.system, "%s-linux", u.machine) < 0) {
        m.system = NULL;
        return obi_error_oom(err);
    }
    bool x86_64 = strcmp(u.machine, "x86_64") == 0;
    if ((x86_64 && obi_strv_builder_add(&platforms, "i686-linux") < 0) ||
        (x86_64 && add_x86_64_levels(&platforms) < 0))
        return obi_error_oom(err);
    const char *names[] = {"benchmark", "big-parallel", "ca-derivations", "nixos-test", NULL, NULL};
    if (access("/dev/kvm", R_OK | W_OK) == 0)
        names[4] = "kvm";
    for (size_t i = 0; names[i]; i++)
        if (obi_strv_builder_add(&features, names[i]) < 0)
            return obi_error_oom(err);
    obi_strv_builder_sort_unique(&features);
    if (!(m.extra_platforms = obi_strv_builder_steal(&platforms, NULL)) ||
        !(m.features = obi_strv_builder_steal(&features, NULL)))
        return obi_error_oom(err);
    *out = m;
    memset(&m, 0, sizeof m);
    return 0;
}

/* ---- before a build ---- */

int obi_nix_check_can_build(const obi_nix_machine *machine, const char *drv_path,
                            const obi_derivation *drv, const obi_derivation_attrs *attrs,
                            obi_error **err)
{
    if (strncmp(drv->builder, "builtin:", 8) == 0)
        return obi_error_set(err, -ENOTSUP,
                             "derivation '%s': builtin builder '%s' is not supported by ocibuild",
                             drv_path, drv->builder + 8);
    cleanup_strv char **required = NULL;
    size_t n_required = 0;
    int r = obi_derivation_attrs_required_features(attrs, &required, &n_required, err);
    if (r < 0)
        return r;
    bool platform = strcmp(drv->system, machine->system) == 0 ||
                    strv_contains(machine->extra_platforms, drv->system);
    bool features = true;
    for (size_t i = 0; i < n_required; i++)
        features = features && obi_nix_machine_has_feature(machine, required[i]);
    if (!platform || !features) {
        cleanup_free char *want = join(required), *have = join(machine->features);
        if (!want || !have)
            return obi_error_oom(err);
        return obi_error_set(err, -EINVAL,
                             "a '%s' with features {%s} is required to build '%s', but I am a '%s' "
                             "with features {%s}",
                             drv->system, want, drv_path, machine->system, have);
    }
    bool no_chroot = false;
    if ((r = obi_derivation_attrs_get_bool(attrs, "__noChroot", false, &no_chroot, err)) < 0)
        return r;
    if (no_chroot)
        return obi_error_set(err, -EPERM,
                             "derivation '%s' has '__noChroot' set, but that's not allowed when "
                             "'sandbox' is 'true'",
                             drv_path);
    cleanup_strv char **impure = NULL;
    size_t n_impure = 0;
    if ((r = obi_derivation_attrs_get_strings(attrs, "__impureHostDeps", &impure, &n_impure, err)) <
        0)
        return r;
    if (n_impure > 0) /* allowed-impure-host-deps is empty on Linux */
        return obi_error_set(err, -EPERM,
                             "derivation '%s' requested impure path '%s', but it was not in "
                             "allowed-impure-host-deps",
                             drv_path, impure[0]);
    return 0;
}

/* ---- after a build: the order of the outputs ---- */

typedef struct topo {
    const char *drv_path;
    const obi_nix_output_facts *outputs;
    size_t n;
    bool *visited, *parents;
    size_t *sorted;
    size_t n_sorted;
    obi_error **err;
} topo;

/* Whether output a refers to output b. */
static bool refers_to(const obi_nix_output_facts *a, const obi_nix_output_facts *b)
{
    for (size_t i = 0; i < a->n_references; i++)
        if (strcmp(a->references[i], b->path) == 0)
            return true;
    return false;
}

/* Nix's topoSort over the outputs, children = the outputs an output refers to (by name). */
static int topo_visit(topo *t, size_t i, size_t parent)
{
    if (t->parents[i])
        return obi_error_set(t->err, -EINVAL,
                             "cycle detected in build of '%s' in the references of output '%s' "
                             "from output '%s'",
                             t->drv_path, t->outputs[i].name, t->outputs[parent].name);
    if (t->visited[i])
        return 0;
    t->visited[i] = true;
    t->parents[i] = true;
    /* the outputs it refers to, in name order (Nix keeps names in a sorted set) */
    cleanup_free size_t *children = calloc(t->n + 1, sizeof *children);
    if (!children)
        return obi_error_oom(t->err);
    size_t n_children = 0;
    for (size_t k = 0; k < t->n; k++)
        if (k != i && refers_to(&t->outputs[i], &t->outputs[k]))
            children[n_children++] = k;
    for (size_t a = 1; a < n_children; a++)
        for (size_t b = a;
             b > 0 && strcmp(t->outputs[children[b - 1]].name, t->outputs[children[b]].name) > 0;
             b--) {
            size_t tmp = children[b];
            children[b] = children[b - 1];
            children[b - 1] = tmp;
        }
    for (size_t c = 0; c < n_children; c++) {
        int r = topo_visit(t, children[c], i);
        if (r < 0)
            return r;
    }
    t->sorted[t->n_sorted++] = i;
    t->parents[i] = false;
    return 0;
}

int obi_nix_order_outputs(const char *drv_path, const obi_nix_output_facts *outputs, size_t n,
                          size_t *order, obi_error **err)
{
    cleanup_free bool *visited = calloc(n + 1, sizeof *visited);
    cleanup_free bool *parents = calloc(n + 1, sizeof *parents);
    cleanup_free size_t *by_name = calloc(n + 1, sizeof *by_name);
    if (!visited || !parents || !by_name)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++)
        by_name[i] = i;
    for (size_t a = 1; a < n; a++)
        for (size_t b = a;
             b > 0 && strcmp(outputs[by_name[b - 1]].name, outputs[by_name[b]].name) > 0; b--) {
            size_t tmp = by_name[b];
            by_name[b] = by_name[b - 1];
            by_name[b - 1] = tmp;
        }
    topo t = {drv_path, outputs, n, visited, parents, order, 0, err};
    for (size_t i = 0; i < n; i++) {
        int r = topo_visit(&t, by_name[i], SIZE_MAX);
        if (r < 0)
            return r;
    }
    /* topo_visit appends an output after everything it refers to: that is the order wanted */
    return 0;
}

/* ---- after a build: reference constraints ---- */

typedef struct closure {
    obi_strv_builder paths;
    uint64_t size;
} closure;

static void closure_clear(closure *c)
{
    obi_strv_builder_clear(&c->paths);
    c->size = 0;
}

/* getClosure: path and everything it refers to, through the outputs of this build or lookup. */
static int closure_of(const obi_nix_output_facts *outputs, size_t n, const char *path,
                      obi_nix_path_facts_fn lookup, void *ctx, closure *out, obi_error **err)
{
    _cleanup_(closure_clear) closure c = {0};
    if (obi_strv_builder_add(&c.paths, path) < 0)
        return obi_error_oom(err);
    for (size_t next = 0; next < c.paths.n; next++) {
        const obi_nix_output_facts *output = NULL;
        for (size_t i = 0; i < n && !output; i++)
            if (strcmp(outputs[i].path, c.paths.items[next]) == 0)
                output = &outputs[i];
        cleanup_strv char **looked_up = NULL;
        size_t n_refs = 0;
        uint64_t size = 0;
        char *const *refs = NULL;
        if (output) {
            refs = output->references;
            n_refs = output->n_references;
            size = output->nar_size;
        } else {
            int r = lookup(ctx, c.paths.items[next], &looked_up, &n_refs, &size, err);
            if (r < 0)
                return r;
            refs = looked_up;
        }
        c.size += size;
        for (size_t i = 0; i < n_refs; i++)
            if (!obi_strv_builder_contains(&c.paths, refs[i]) &&
                obi_strv_builder_add(&c.paths, refs[i]) < 0)
                return obi_error_oom(err);
    }
    *out = c;
    memset(&c, 0, sizeof c);
    return 0;
}

typedef struct checks {
    bool ignore_self_refs;
    bool has_max_size, has_max_closure_size;
    uint64_t max_size, max_closure_size;
    char **lists[4]; /* allowedReferences, allowedRequisites, disallowedReferences,
                        disallowedRequisites; NULL: unset */
} checks;

static const char *const CHECK_NAMES[4] = {"allowedReferences", "allowedRequisites",
                                           "disallowedReferences", "disallowedRequisites"};

static void checks_clear(checks *c)
{
    for (size_t i = 0; i < 4; i++)
        if (c->lists[i])
            obi_strv_free(c->lists[i]);
}

typedef struct check_run {
    const obi_nix_output_facts *outputs;
    size_t n;
    obi_nix_path_facts_fn lookup;
    void *ctx;
    obi_error **err;
} check_run;

/* The specifiers as store paths: a store path, or the name of an output. */
static int spec_paths(const check_run *run, char *const *spec, char ***out, size_t *n_out)
{
    cleanup_strv_builder obi_strv_builder paths = {0};
    for (size_t i = 0; spec[i]; i++) {
        const char *base;
        cleanup_error obi_error *ignored = NULL;
        const char *path = NULL;
        if (obi_nix_store_path_parse(spec[i], &base, &ignored) == 0)
            path = spec[i];
        for (size_t k = 0; !path && k < run->n; k++)
            if (strcmp(run->outputs[k].name, spec[i]) == 0)
                path = run->outputs[k].path;
        if (!path)
            return obi_error_set(run->err, -EINVAL,
                                 "derivation contains an illegal reference specifier '%s'",
                                 spec[i]);
        if (obi_strv_builder_add(&paths, path) < 0)
            return obi_error_oom(run->err);
    }
    size_t n = 0;
    if (!(*out = obi_strv_builder_steal(&paths, &n)))
        return obi_error_oom(run->err);
    *n_out = n;
    return 0;
}

static int check_refs(const check_run *run, const obi_nix_output_facts *info, const checks *c,
                      size_t which)
{
    char *const *spec_list = c->lists[which];
    if (!spec_list)
        return 0;
    bool allowed = which < 2, recursive = which == 1 || which == 3;
    cleanup_strv char **spec = NULL;
    size_t n_spec = 0;
    int r = spec_paths(run, spec_list, &spec, &n_spec);
    if (r < 0)
        return r;
    _cleanup_(closure_clear) closure used = {0};
    if (recursive) {
        r = closure_of(run->outputs, run->n, info->path, run->lookup, run->ctx, &used, run->err);
        if (r < 0)
            return r;
    } else {
        for (size_t i = 0; i < info->n_references; i++)
            if (obi_strv_builder_add(&used.paths, info->references[i]) < 0)
                return obi_error_oom(run->err);
    }
    cleanup_strv char **bad = calloc(used.paths.n + 1, sizeof *bad);
    size_t n_bad = 0;
    if (!bad)
        return obi_error_oom(run->err);
    for (size_t i = 0; i < used.paths.n; i++) {
        if (recursive && c->ignore_self_refs && strcmp(used.paths.items[i], info->path) == 0)
            continue;
        if (strv_contains(spec, used.paths.items[i]) != allowed &&
            !(bad[n_bad++] = strdup(used.paths.items[i])))
            return obi_error_oom(run->err);
    }
    if (n_bad == 0)
        return 0;
    qsort(bad, n_bad, sizeof *bad, obi_strv_item_compare);
    cleanup_buf obi_buf list = OBI_BUF_INIT;
    for (size_t i = 0; i < n_bad; i++)
        if (obi_buf_appendf(&list, "\n  %s", bad[i]) < 0)
            return obi_error_oom(run->err);
    return obi_error_set(run->err, -EINVAL,
                         "output '%s' is not allowed to refer to the following paths:%s",
                         info->path, (const char *)list.data);
}

static int apply_checks(const check_run *run, const obi_nix_output_facts *info, const checks *c)
{
    if (c->has_max_size && info->nar_size > c->max_size)
        return obi_error_set(
            run->err, -EINVAL, "path '%s' is too large at %llu bytes; limit is %llu bytes",
            info->path, (unsigned long long)info->nar_size, (unsigned long long)c->max_size);
    if (c->has_max_closure_size) {
        _cleanup_(closure_clear) closure all = {0};
        int r = closure_of(run->outputs, run->n, info->path, run->lookup, run->ctx, &all, run->err);
        if (r < 0)
            return r;
        if (all.size > c->max_closure_size)
            return obi_error_set(run->err, -EINVAL,
                                 "closure of path '%s' is too large at %llu bytes; limit is %llu "
                                 "bytes",
                                 info->path, (unsigned long long)all.size,
                                 (unsigned long long)c->max_closure_size);
    }
    for (size_t which = 0; which < 4; which++) {
        int r = check_refs(run, info, c, which);
        if (r < 0)
            return r;
    }
    return 0;
}

/* A JSON list of strings into a NULL-terminated copy. */
static int json_strings(const json_t *v, const char *name, char ***out, obi_error **err)
{
    cleanup_strv char **items = calloc(json_array_size(v) + 1, sizeof *items);
    if (!items)
        return obi_error_oom(err);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *item = json_array_get(v, i);
        if (!json_is_string(item))
            return obi_error_set(err, -EINVAL,
                                 "outputChecks: attribute '%s' must be a list of strings", name);
        if (!(items[i] = strdup(json_string_value(item))))
            return obi_error_oom(err);
    }
    *out = steal_pointer(&items);
    return 0;
}

/* outputChecks.<output> of structured attributes. Nix 2.8 also stores every list it finds as
 * disallowedRequisites (a slip fixed in later versions): the last list given is checked as
 * disallowedRequisites too. Kept, so that builds fail here where they fail in Nix 2.8. */
static int structured_checks(const json_t *spec, checks *c, obi_error **err)
{
    const json_t *max_size = json_object_get(spec, "maxSize");
    const json_t *max_closure = json_object_get(spec, "maxClosureSize");
    if ((max_size && !json_is_integer(max_size)) || (max_closure && !json_is_integer(max_closure)))
        return obi_error_set(err, -EINVAL,
                             "outputChecks: maxSize and maxClosureSize must be "
                             "numbers");
    c->has_max_size = max_size != NULL;
    c->max_size = max_size ? (uint64_t)json_integer_value(max_size) : 0;
    c->has_max_closure_size = max_closure != NULL;
    c->max_closure_size = max_closure ? (uint64_t)json_integer_value(max_closure) : 0;
    for (size_t i = 0; i < 4; i++) {
        const json_t *list = json_object_get(spec, CHECK_NAMES[i]);
        if (!list)
            continue;
        if (!json_is_array(list))
            return obi_error_set(err, -EINVAL,
                                 "outputChecks: attribute '%s' must be a list of strings",
                                 CHECK_NAMES[i]);
        int r = json_strings(list, CHECK_NAMES[i], &c->lists[i], err);
        if (r >= 0 && i != 3) {
            if (c->lists[3])
                obi_strv_free(c->lists[3]);
            c->lists[3] = NULL;
            r = json_strings(list, CHECK_NAMES[i], &c->lists[3], err);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

int obi_nix_check_output_references(const obi_derivation_attrs *attrs,
                                    const obi_nix_output_facts *outputs, size_t n,
                                    obi_nix_path_facts_fn lookup, void *lookup_ctx, obi_error **err)
{
    check_run run = {outputs, n, lookup, lookup_ctx, err};
    const json_t *structured = obi_derivation_attrs_structured(attrs);
    for (size_t i = 0; i < n; i++) {
        _cleanup_(checks_clear) checks c = {0};
        int r = 0;
        if (structured) {
            const json_t *spec =
                json_object_get(json_object_get(structured, "outputChecks"), outputs[i].name);
            if (!spec)
                continue;
            r = structured_checks(spec, &c, err);
        } else {
            c.ignore_self_refs = true;
            for (size_t k = 0; r >= 0 && k < 4; k++) {
                size_t count = 0;
                r = obi_derivation_attrs_get_strings(attrs, CHECK_NAMES[k], &c.lists[k], &count,
                                                     err);
            }
        }
        if (r >= 0)
            r = apply_checks(&run, &outputs[i], &c);
        if (r < 0)
            return r;
    }
    return 0;
}
