/*
 * Building derivations (see include/ocibuild/nix_build.h), in three parts:
 *  - the graph: from the derivation given, every input derivation whose used outputs are not
 *    valid (neither in /nix/store nor in the own path-info store) becomes a node to build, with
 *    edges to the input nodes it waits for;
 *  - the scheduler: max_jobs threads take nodes whose inputs are done and build them; the
 *    first failure cancels the builds running and starts no more;
 *  - one build (build_node): resolve a content-addressed derivation's inputs, the checks
 *    before, the input closure, the request, the build, then per output the references, the
 *    order of outputs, the hashes and the checks after;
 *  - the registrar: one thread behind the builds that writes each build's records and, when
 *    asked, streams its outputs into Nix's import. A dependent does not wait for it: its
 *    inputs built in the session come from the session's nodes, never from the records.
 * A session holds what the builds share: the nodes, the imported /nix/store closures and the
 * path facts asked of Nix, each behind its own lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation.h"
#include "ocibuild/derivation_attrs.h"
#include "ocibuild/derivation_request.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/nar.h"
#include "ocibuild/nix_build.h"
#include "ocibuild/nix_ca.h"
#include "ocibuild/nix_checks.h"
#include "ocibuild/nix_output.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/nix_store_path.h"
#include "ocibuild/refscan.h"
#include "ocibuild/sha256.h"
#include "ocibuild/store_roots.h"
#include "ocibuild/strv.h"

/* Input derivations nest; real chains are far shallower than this. */
#define NIX_BUILD_MAX_DEPTH 512

/* ---- the session ---- */

typedef enum node_state {
    NODE_VALID,   /* nothing to build */
    NODE_WAITING, /* to build, inputs not done */
    NODE_RUNNING,
    NODE_BUILT,
    NODE_FAILED,
    NODE_SKIPPED, /* an input failed, or the session stopped */
} node_state;

typedef struct drv_node {
    char *drv_path; /* as named: a store path, or the file given */
    char *file;     /* where it is read */
    obi_derivation *drv;
    obi_derivation_kind kind;
    obi_strv_builder wanted; /* output names wanted */
    bool build;
    size_t *deps; /* nodes built first */
    size_t n_deps, deps_cap;
    size_t *dependents;
    size_t n_dependents, dependents_cap;
    size_t pending; /* deps not built yet */
    node_state state;
    obi_error *error;
    char **output_paths;       /* per drv output: known or realised path, else NULL */
    obi_nix_path_info **infos; /* per drv output, once built */
} drv_node;

/* What one build leaves to record: copies of its outputs' records, and where a floating or
 * deferred derivation's outputs were realised. */
typedef struct finished_build {
    char *drv_path;      /* the node's when a store path, else NULL: no realisation recorded */
    char *resolved_path; /* the resolved derivation's, or NULL */
    bool realised;
    bool last;    /* the top derivation's: no build follows it */
    char **names; /* output names, in the order of infos */
    obi_nix_path_info **infos;
    size_t n;
    struct finished_build *next;
} finished_build;

typedef struct registrar {
    pthread_mutex_t lock; /* the queue and closing */
    pthread_cond_t wake;
    finished_build *queue, **tail;
    bool closing;
    bool started;
    pthread_t thread;
    /* the registrar thread's own, until it is joined */
    obi_error *error;                 /* its first failure: the rest is dropped */
    obi_nix_store_importer *importer; /* started with the first path Nix lacks, ended last */
    obi_error *import_error;          /* how it ended, when it failed */
    obi_strv_builder sent;            /* paths sent to the importer */
} registrar;

/* The /nix/store inputs imported so far, keyed by the list of paths whose closure was taken. */
typedef struct nix_import {
    char *key;
    obi_node *nodes;
    size_t n_nodes;
} nix_import;

typedef struct session {
    const obi_nix_build_options *opts;
    const obi_nix_machine *machine;
    drv_node **nodes;
    size_t n_nodes, nodes_cap;
    pthread_mutex_t lock; /* nodes' states, the counters below */
    pthread_cond_t changed;
    size_t running;
    bool stop;
    unsigned n_built;
    const obi_derivation *given; /* the top derivation when the caller parsed it (the farm's) */
    int forward_stop[2];         /* ends the forwarder of the caller's cancel fd */
    int cancel_pipe[2];          /* written on the first failure: running builds stop */
    pthread_mutex_t import_lock;
    nix_import *imports;
    size_t n_imports, imports_cap;
    pthread_mutex_t facts_lock;
    obi_nix_path_info **nix_facts; /* what Nix said about paths, asked once */
    size_t n_nix_facts, nix_facts_cap;
    obi_store_pin *pin; /* keeps what was imported from /nix/store until the session ends */
    registrar registrar;
} session;

static void finished_build_free(finished_build *job)
{
    if (!job)
        return;
    free(job->drv_path);
    free(job->resolved_path);
    for (size_t i = 0; i < job->n; i++) {
        free(job->names[i]);
        obi_nix_path_info_free(job->infos[i]);
    }
    free(job->names);
    free(job->infos);
    free(job);
}

static void node_free(drv_node *node)
{
    if (!node)
        return;
    free(node->drv_path);
    free(node->file);
    size_t n_outputs = node->drv ? node->drv->n_outputs : 0;
    for (size_t i = 0; node->output_paths && i < n_outputs; i++)
        free(node->output_paths[i]);
    free(node->output_paths);
    for (size_t i = 0; node->infos && i < n_outputs; i++)
        obi_nix_path_info_free(node->infos[i]);
    free(node->infos);
    obi_derivation_free(node->drv);
    obi_strv_builder_clear(&node->wanted);
    free(node->deps);
    free(node->dependents);
    obi_error_free(node->error);
    free(node);
}

static void session_clear(session *s)
{
    for (size_t i = 0; i < s->n_nodes; i++)
        node_free(s->nodes[i]);
    free(s->nodes);
    for (size_t i = 0; i < s->n_imports; i++) {
        free(s->imports[i].key);
        obi_nix_nodes_free(s->imports[i].nodes, s->imports[i].n_nodes);
    }
    free(s->imports);
    obi_nix_path_infos_free(s->nix_facts, s->n_nix_facts);
    for (int i = 0; i < 2; i++) {
        if (s->cancel_pipe[i] >= 0)
            close(s->cancel_pipe[i]);
        if (s->forward_stop[i] >= 0)
            close(s->forward_stop[i]);
    }
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->import_lock);
    pthread_mutex_destroy(&s->facts_lock);
    pthread_cond_destroy(&s->changed);
    obi_store_pin_free(s->pin);
    while (s->registrar.queue) { /* left when the registrar never ran */
        finished_build *job = s->registrar.queue;
        s->registrar.queue = job->next;
        finished_build_free(job);
    }
    obi_error_free(s->registrar.error);
    obi_error_free(s->registrar.import_error);
    obi_nix_store_importer_free(s->registrar.importer);
    obi_strv_builder_clear(&s->registrar.sent);
    pthread_mutex_destroy(&s->registrar.lock);
    pthread_cond_destroy(&s->registrar.wake);
}

/* ---- where store paths are ---- */

/* Whether path exists in the Nix store on disk (Nix's valid paths, as far as we can tell). */
static bool in_nix_store(const session *s, const char *path)
{
    if (s->opts->own_store_only) /* a farm node: its inputs came over the serve protocol */
        return false;
    cleanup_free char *on_disk = obi_nix_store_real_path(s->opts->nix_store_dir, path);
    struct stat st;
    return on_disk && lstat(on_disk, &st) == 0;
}

/* 1 with *info when the own store has path, 0 when not, negative on a broken record. */
static int own_path_info(const session *s, const char *path, obi_nix_path_info **info,
                         obi_error **err)
{
    cleanup_error obi_error *get_err = NULL;
    int r = obi_nix_path_info_get(s->opts->path_infos, path, info, &get_err);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return obi_error_move(err, &get_err);
    return 1;
}

static bool is_valid(const session *s, const char *path)
{
    if (in_nix_store(s, path))
        return true;
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    cleanup_error obi_error *ignored = NULL;
    return own_path_info(s, path, &info, &ignored) == 1;
}

/* The record of path when this session has built it (borrowed until the session ends), else
 * NULL. Builds read their inputs built in the session from here: the registrar may not have
 * written their records yet. */
static const obi_nix_path_info *built_info(session *s, const char *path)
{
    const obi_nix_path_info *found = NULL;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->n_nodes && !found; i++) {
        const drv_node *node = s->nodes[i];
        for (size_t k = 0; node->state == NODE_BUILT && k < node->drv->n_outputs && !found; k++)
            if (node->infos[k] && strcmp(node->infos[k]->path, path) == 0)
                found = node->infos[k];
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* What Nix knows of a path in /nix/store (asked once per session); borrowed. */
static int nix_facts(session *s, const char *path, const obi_nix_path_info **out, obi_error **err)
{
    pthread_mutex_lock(&s->facts_lock);
    for (size_t i = 0; i < s->n_nix_facts; i++)
        if (strcmp(s->nix_facts[i]->path, path) == 0) {
            *out = s->nix_facts[i];
            pthread_mutex_unlock(&s->facts_lock);
            return 0;
        }
    obi_nix_path_info **infos = NULL;
    size_t n = 0;
    char *paths[] = {(char *)path};
    int r = obi_nix_store_query_infos(s->opts->nix, paths, 1, true, &infos, &n, err);
    if (r >= 0 && obi_array_grow(&s->nix_facts, &s->nix_facts_cap, s->n_nix_facts + n) < 0) {
        obi_nix_path_infos_free(infos, n);
        r = obi_error_oom(err);
    }
    *out = NULL;
    if (r >= 0) {
        for (size_t i = 0; i < n; i++) {
            bool known = false;
            for (size_t k = 0; k < s->n_nix_facts && !known; k++)
                known = strcmp(s->nix_facts[k]->path, infos[i]->path) == 0;
            if (known) {
                obi_nix_path_info_free(infos[i]);
                continue;
            }
            if (strcmp(infos[i]->path, path) == 0)
                *out = infos[i];
            s->nix_facts[s->n_nix_facts++] = infos[i];
        }
        free(infos);
        if (!*out)
            r = obi_error_set(err, -ENOENT, "Nix does not know %s", path);
    }
    pthread_mutex_unlock(&s->facts_lock);
    return r;
}

/* A path's info from the own store or from Nix (*out: a copy). */
static int any_path_info(session *s, const char *path, obi_nix_path_info **out, obi_error **err)
{
    const obi_nix_path_info *built = built_info(s, path);
    if (built)
        return (*out = obi_nix_path_info_copy(built)) ? 0 : obi_error_oom(err);
    int r = own_path_info(s, path, out, err);
    if (r != 0)
        return r < 0 ? r : 0;
    const obi_nix_path_info *facts = NULL;
    if ((r = nix_facts(s, path, &facts, err)) < 0)
        return r;
    if (!(*out = obi_nix_path_info_copy(facts)))
        return obi_error_oom(err);
    return 0;
}

/* obi_nix_path_facts_fn for the checks. */
static int path_facts(void *ctx, const char *path, char ***refs, size_t *n_refs, uint64_t *nar_size,
                      obi_error **err)
{
    cleanup_nix_path_info obi_nix_path_info *info = NULL;
    int r = any_path_info(ctx, path, &info, err);
    if (r < 0)
        return r;
    *refs = steal_pointer(&info->references);
    *n_refs = info->n_references;
    *nar_size = info->nar.size;
    return 0;
}

/* ---- the graph ---- */

static int load(session *s, const char *drv_path, char *const *wanted, size_t n_wanted,
                unsigned depth, size_t *index, obi_error **err);

static size_t output_index(const obi_derivation *drv, const char *name)
{
    for (size_t i = 0; i < drv->n_outputs; i++)
        if (strcmp(drv->outputs[i].name, name) == 0)
            return i;
    return SIZE_MAX;
}

/* Whether every wanted output has a known (or realised) path that is valid. */
static bool wanted_outputs_valid(const session *s, const drv_node *node)
{
    for (size_t i = 0; i < node->wanted.n; i++) {
        size_t k = output_index(node->drv, node->wanted.items[i]);
        if (k == SIZE_MAX || !node->output_paths[k] || !is_valid(s, node->output_paths[k]))
            return false;
    }
    return true;
}

static int add_edge(session *s, size_t from, size_t to, obi_error **err)
{
    drv_node *a = s->nodes[from], *b = s->nodes[to];
    for (size_t i = 0; i < a->n_deps; i++)
        if (a->deps[i] == to)
            return 0;
    if (obi_array_grow(&a->deps, &a->deps_cap, a->n_deps + 1) < 0 ||
        obi_array_grow(&b->dependents, &b->dependents_cap, b->n_dependents + 1) < 0)
        return obi_error_oom(err);
    a->deps[a->n_deps++] = to;
    b->dependents[b->n_dependents++] = from;
    a->pending++;
    return 0;
}

/* The node has to be built: so do the inputs whose used outputs are not valid. */
static int make_buildable(session *s, size_t index, unsigned depth, obi_error **err)
{
    drv_node *node = s->nodes[index];
    if (node->build)
        return 0;
    node->build = true;
    node->state = NODE_WAITING;
    for (size_t i = 0; i < node->drv->n_input_drvs; i++) {
        const obi_derivation_input *in = &node->drv->input_drvs[i];
        size_t dep = 0;
        int r = load(s, in->drv_path, in->outputs, in->n_outputs, depth + 1, &dep, err);
        if (r < 0)
            return obi_error_prefix(err, r, "input derivation");
        for (size_t k = 0; k < in->n_outputs; k++)
            /* the parser fills outputs with n_outputs names; the analyzer takes load's test of
             * wanted (NULL for the root) as a hint that they may be missing */
            // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
            if (output_index(s->nodes[dep]->drv, in->outputs[k]) == SIZE_MAX)
                return obi_error_set(err, -EINVAL,
                                     "derivation '%s' requires non-existent output '%s' from "
                                     "input derivation '%s'",
                                     node->drv_path, in->outputs[k], in->drv_path);
        if (s->nodes[dep]->build && (r = add_edge(s, index, dep, err)) < 0)
            return r;
    }
    return 0;
}

/* The paths a fresh node's outputs have before any build: known, or realised earlier. */
static int initial_output_paths(session *s, drv_node *node, obi_error **err)
{
    node->output_paths = calloc(node->drv->n_outputs + 1, sizeof *node->output_paths);
    node->infos = calloc(node->drv->n_outputs + 1, sizeof *node->infos);
    if (!node->output_paths || !node->infos)
        return obi_error_oom(err);
    for (size_t i = 0; i < node->drv->n_outputs; i++) {
        int r = obi_derivation_output_path(node->drv, &node->drv->outputs[i],
                                           &node->output_paths[i], err);
        if (r < 0)
            return r;
        if (node->output_paths[i])
            continue;
        cleanup_error obi_error *ignored = NULL;
        char *realised = NULL;
        if (obi_nix_realisation_get(s->opts->path_infos, node->drv_path, node->drv->outputs[i].name,
                                    &realised, &ignored) == 0)
            node->output_paths[i] = realised;
    }
    return 0;
}

/* A copy of drv (through its ATerm), named from drv_path. */
static int copy_given(const obi_derivation *drv, const char *drv_path, obi_derivation **out,
                      obi_error **err)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    int r = obi_derivation_serialize(drv, &text, &len, err);
    if (r < 0)
        return r;
    cleanup_derivation obi_derivation *copy = NULL;
    if ((r = obi_derivation_parse(text, len, &copy, err)) < 0)
        return obi_error_prefix(err, r, "%s", drv_path);
    if (!(copy->name = drv->name ? strdup(drv->name) : obi_derivation_name_from_path(drv_path)))
        return obi_error_oom(err);
    *out = steal_pointer(&copy);
    return 0;
}

static int new_node(session *s, const char *drv_path, size_t *index, obi_error **err)
{
    drv_node *node = calloc(1, sizeof *node);
    if (!node || obi_array_grow(&s->nodes, &s->nodes_cap, s->n_nodes + 1) < 0) {
        free(node);
        return obi_error_oom(err);
    }
    s->nodes[s->n_nodes] = node;
    *index = s->n_nodes++;
    const char *base;
    cleanup_error obi_error *not_store = NULL;
    bool store_path = obi_nix_store_path_parse(drv_path, &base, &not_store) == 0;
    node->drv_path = strdup(drv_path);
    node->file =
        store_path ? obi_nix_store_real_path(s->opts->nix_store_dir, drv_path) : strdup(drv_path);
    if (!node->drv_path || !node->file)
        return obi_error_oom(err);
    node->state = NODE_VALID;
    /* the top node's derivation as the caller parsed it, else the file */
    int r = s->given && *index == 0 ? copy_given(s->given, drv_path, &node->drv, err)
                                    : obi_derivation_read_file(node->file, &node->drv, err);
    if (r < 0)
        return r;
    if ((r = obi_derivation_kind_of(node->drv, &node->kind, err)) >= 0)
        r = initial_output_paths(s, node, err);
    return r < 0 ? obi_error_prefix(err, r, "%s", drv_path) : 0;
}

static int load(session *s, const char *drv_path, char *const *wanted, size_t n_wanted,
                unsigned depth, size_t *index, obi_error **err)
{
    if (depth > NIX_BUILD_MAX_DEPTH)
        return obi_error_set(err, -ELOOP, "%s: input derivations nested deeper than %d", drv_path,
                             NIX_BUILD_MAX_DEPTH);
    size_t i = 0;
    while (i < s->n_nodes && strcmp(s->nodes[i]->drv_path, drv_path) != 0)
        i++;
    int r = 0;
    if (i == s->n_nodes && (r = new_node(s, drv_path, &i, err)) < 0)
        return r;
    drv_node *node = s->nodes[i];
    if (!node->drv) /* a node whose loading failed: the session is failing already */
        return obi_error_set(err, -EINVAL, "%s: could not be read", drv_path);
    for (size_t k = 0; k < (wanted ? n_wanted : node->drv->n_outputs); k++) {
        const char *name = wanted ? wanted[k] : node->drv->outputs[k].name;
        if (!obi_strv_builder_contains(&node->wanted, name) &&
            obi_strv_builder_add(&node->wanted, name) < 0)
            return obi_error_oom(err);
    }
    if (!node->build && !wanted_outputs_valid(s, node) &&
        (r = make_buildable(s, i, depth, err)) < 0)
        return r;
    *index = i;
    return 0;
}

/* ---- inputs of one build ---- */

typedef struct closure {
    obi_strv_builder visited;  /* every store path seen */
    obi_strv_builder from_nix; /* paths to take from /nix/store (with their own closure) */
    obi_node *nodes;           /* from the own store, then the imported /nix/store closure */
    size_t n_nodes, nodes_cap;
} closure;

static void closure_clear(closure *c)
{
    obi_strv_builder_clear(&c->visited);
    obi_strv_builder_clear(&c->from_nix);
    obi_nix_nodes_free(c->nodes, c->n_nodes);
}

/* Visits path and, for paths built in the session or from the own store, their references
 * (depth-first). */
static int closure_visit(closure *c, session *s, const char *path, obi_error **err)
{
    if (obi_strv_builder_contains(&c->visited, path))
        return 0;
    if (obi_strv_builder_add(&c->visited, path) < 0)
        return obi_error_oom(err);
    /* built here: perhaps registered in Nix meanwhile, but its node is here already */
    const obi_nix_path_info *info = built_info(s, path);
    if (!info && in_nix_store(s, path))
        return obi_strv_builder_add(&c->from_nix, path) < 0 ? obi_error_oom(err) : 0;
    cleanup_nix_path_info obi_nix_path_info *own = NULL;
    int r = info ? 1 : own_path_info(s, path, &own, err);
    if (r < 0)
        return r;
    if (r == 0 && s->opts->own_store_only)
        return obi_error_set(err, -ENOENT, "input %s is not valid here (it was not sent)", path);
    if (r == 0)
        return obi_error_set(err, -ENOENT,
                             "dependency '%s' does not exist, and substitution is disabled", path);
    if (!info)
        info = own;
    if (obi_array_grow(&c->nodes, &c->nodes_cap, c->n_nodes + 1) < 0 ||
        obi_node_copy(&c->nodes[c->n_nodes], &info->node) < 0)
        return obi_error_oom(err);
    c->n_nodes++;
    for (size_t i = 0; i < info->n_references; i++) {
        r = closure_visit(c, s, info->references[i], err);
        if (r < 0)
            return r;
    }
    return 0;
}

static char *import_key(const obi_strv_builder *paths)
{
    cleanup_buf obi_buf key = OBI_BUF_INIT;
    for (size_t i = 0; i < paths->n; i++)
        if (obi_buf_append_str(&key, paths->items[i]) < 0 || obi_buf_append(&key, "\n", 1) < 0)
            return NULL;
    if (obi_buf_reserve(&key, 0) < 0)
        return NULL;
    return obi_buf_steal(&key);
}

/* The imported /nix/store closure of paths (from the session's cache or from nix-store),
 * appended to the closure's nodes. */
/* Imports a closure from /nix/store into castore with gc held off from the first lookup until
 * every imported node is pinned for the session (docs/store.md, "Garbage collection"). Called
 * with import_lock held. */
static int import_pinned(session *s, char **requisites, size_t n, obi_node **out, obi_error **err)
{
    int r = 0;
    if (!s->pin && (r = obi_store_pin_new(s->opts->store, &s->pin, err)) < 0)
        return r;
    if ((r = obi_store_pin_hold_gc(s->pin, err)) < 0)
        return r;
    obi_node *imported = NULL;
    r = obi_nix_import_paths(s->opts->store->blobs, s->opts->store->directories, requisites, n,
                             &imported, err);
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = obi_store_pin_add(s->pin, &imported[i], err);
    obi_store_pin_release_gc(s->pin);
    if (r < 0) {
        if (imported)
            obi_nix_nodes_free(imported, n);
        return r;
    }
    *out = imported;
    return 0;
}

static int import_from_nix(session *s, const obi_strv_builder *paths, closure *c, obi_error **err)
{
    cleanup_free char *key = import_key(paths);
    if (!key)
        return obi_error_oom(err);
    pthread_mutex_lock(&s->import_lock);
    const nix_import *hit = NULL;
    int r = 0;
    for (size_t i = 0; i < s->n_imports && !hit; i++)
        if (strcmp(s->imports[i].key, key) == 0)
            hit = &s->imports[i];
    if (!hit) {
        cleanup_strv char **requisites = NULL;
        size_t n_closure = 0;
        obi_node *imported = NULL;
        r = obi_nix_store_closure(s->opts->nix_store, paths->items, paths->n, &requisites,
                                  &n_closure, err);
        if (r >= 0)
            r = import_pinned(s, requisites, n_closure, &imported, err);
        if (r >= 0 && obi_array_grow(&s->imports, &s->imports_cap, s->n_imports + 1) < 0) {
            obi_nix_nodes_free(imported, n_closure);
            r = obi_error_oom(err);
        }
        if (r >= 0) {
            s->imports[s->n_imports] = (nix_import){steal_pointer(&key), imported, n_closure};
            hit = &s->imports[s->n_imports++];
        }
    }
    if (r >= 0 && obi_array_grow(&c->nodes, &c->nodes_cap, c->n_nodes + hit->n_nodes) < 0)
        r = obi_error_oom(err);
    for (size_t i = 0; r >= 0 && i < hit->n_nodes; i++, c->n_nodes++)
        if (obi_node_copy(&c->nodes[c->n_nodes], &hit->nodes[i]) < 0)
            r = obi_error_oom(err);
    pthread_mutex_unlock(&s->import_lock);
    return r;
}

/* The input paths of a (resolved) derivation: its sources and the used outputs of its input
 * derivations, whose paths the graph knows. */
static int input_paths(const session *s, const drv_node *node, const obi_derivation *drv,
                       obi_strv_builder *out, obi_error **err)
{
    for (size_t i = 0; i < drv->n_input_srcs; i++)
        if (!obi_strv_builder_contains(out, drv->input_srcs[i]) &&
            obi_strv_builder_add(out, drv->input_srcs[i]) < 0)
            return obi_error_oom(err);
    for (size_t i = 0; i < drv->n_input_drvs; i++) {
        const obi_derivation_input *in = &drv->input_drvs[i];
        const drv_node *dep = NULL;
        for (size_t k = 0; k < s->n_nodes && !dep; k++)
            if (strcmp(s->nodes[k]->drv_path, in->drv_path) == 0)
                dep = s->nodes[k];
        for (size_t k = 0; dep && k < in->n_outputs; k++) {
            const char *path = dep->output_paths[output_index(dep->drv, in->outputs[k])];
            if (!path)
                return obi_error_set(err, -ENOENT,
                                     "derivation '%s' requires output '%s' of '%s', which has no "
                                     "path yet",
                                     node->drv_path, in->outputs[k], in->drv_path);
            if (!obi_strv_builder_contains(out, path) && obi_strv_builder_add(out, path) < 0)
                return obi_error_oom(err);
        }
    }
    return 0;
}

/* All input nodes: own-store paths (with their references) and the /nix/store closure of the
 * rest, imported. */
static int gather_inputs(session *s, const obi_strv_builder *paths, obi_node **nodes_out,
                         size_t *n_out, obi_error **err)
{
    _cleanup_(closure_clear) closure c = {0};
    int r = 0;
    for (size_t i = 0; r >= 0 && i < paths->n; i++)
        r = closure_visit(&c, s, paths->items[i], err);
    if (r >= 0 && c.from_nix.n > 0)
        r = import_from_nix(s, &c.from_nix, &c, err);
    if (r < 0)
        return r;
    *nodes_out = steal_pointer(&c.nodes);
    *n_out = c.n_nodes;
    c.n_nodes = 0;
    return 0;
}

/* ---- exportReferencesGraph ---- */

typedef struct export_graphs {
    obi_nix_export_graph *graphs;
    obi_nix_path_info ***infos; /* per graph, owned */
    size_t n;
} export_graphs;

static void export_graphs_clear(export_graphs *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free((char *)g->graphs[i].name);
        for (size_t k = 0; k < g->graphs[i].n_infos; k++)
            obi_nix_path_info_free(g->infos[i][k]);
        free(g->infos[i]);
    }
    free(g->graphs);
    free(g->infos);
}

/* The closure of roots as infos (own store or Nix), with the outputs of any .drv in it and
 * their closures (Nix's exportReferences). */
static int export_closure(session *s, const obi_strv_builder *roots, obi_nix_path_info ***out,
                          size_t *n_out, obi_error **err)
{
    obi_strv_builder seen = {0};
    obi_nix_path_info **infos = NULL;
    size_t n = 0, cap = 0;
    int r = 0;
    for (size_t i = 0; r >= 0 && i < roots->n; i++)
        if (!obi_strv_builder_contains(&seen, roots->items[i]) &&
            obi_strv_builder_add(&seen, roots->items[i]) < 0)
            r = obi_error_oom(err);
    for (size_t next = 0; r >= 0 && next < seen.n; next++) {
        obi_nix_path_info *info = NULL;
        if (obi_array_grow(&infos, &cap, n + 1) < 0) {
            r = obi_error_oom(err);
            break;
        }
        if ((r = any_path_info(s, seen.items[next], &info, err)) < 0)
            break;
        infos[n++] = info;
        for (size_t k = 0; r >= 0 && k < info->n_references; k++)
            if (!obi_strv_builder_contains(&seen, info->references[k]) &&
                obi_strv_builder_add(&seen, info->references[k]) < 0)
                r = obi_error_oom(err);
        size_t len = strlen(info->path);
        if (r < 0 || len < 4 || strcmp(info->path + len - 4, ".drv") != 0)
            continue;
        cleanup_free char *file = obi_nix_store_real_path(s->opts->nix_store_dir, info->path);
        cleanup_derivation obi_derivation *drv = NULL;
        if (!file || (r = obi_derivation_read_file(file, &drv, err)) < 0)
            break;
        for (size_t k = 0; r >= 0 && k < drv->n_outputs; k++) {
            cleanup_free char *path = NULL;
            r = obi_derivation_output_path(drv, &drv->outputs[k], &path, err);
            if (r >= 0 && !path)
                r = obi_error_set(err, -ENOTSUP,
                                  "exportReferences on CA derivations is not yet implemented");
            if (r >= 0 && !obi_strv_builder_contains(&seen, path) &&
                obi_strv_builder_add(&seen, path) < 0)
                r = obi_error_oom(err);
        }
    }
    obi_strv_builder_clear(&seen);
    if (r < 0) {
        obi_nix_path_infos_free(infos, n);
        return r;
    }
    if (n > 1)
        qsort(infos, n, sizeof *infos, obi_nix_path_info_ptr_compare);
    *out = infos;
    *n_out = n;
    return 0;
}

static int resolve_export_graphs(session *s, const obi_derivation_attrs *attrs,
                                 const obi_strv_builder *input_closure, export_graphs *out,
                                 obi_error **err)
{
    obi_export_graph_spec *specs = NULL;
    size_t n_specs = 0;
    int r = obi_derivation_attrs_export_graphs(attrs, &specs, &n_specs, err);
    if (r < 0 || n_specs == 0) {
        obi_export_graph_specs_free(specs, n_specs); /* an empty structured object has a list */
        return r;
    }
    out->graphs = calloc(n_specs, sizeof *out->graphs);
    out->infos = calloc(n_specs, sizeof *out->infos);
    if (!out->graphs || !out->infos) {
        obi_export_graph_specs_free(specs, n_specs);
        return obi_error_oom(err);
    }
    for (size_t i = 0; r >= 0 && i < n_specs; i++) {
        obi_strv_builder roots = {0};
        for (size_t k = 0; r >= 0 && k < specs[i].n_paths; k++) {
            if (!obi_strv_builder_contains(input_closure, specs[i].paths[k]))
                r = obi_error_set(err, -EINVAL,
                                  "cannot export references of path '%s' because it is not in "
                                  "the input closure of the derivation",
                                  specs[i].paths[k]);
            else if (obi_strv_builder_add(&roots, specs[i].paths[k]) < 0)
                r = obi_error_oom(err);
        }
        size_t n = 0;
        if (r >= 0)
            r = export_closure(s, &roots, &out->infos[i], &n, err);
        obi_strv_builder_clear(&roots);
        if (r < 0)
            break;
        out->graphs[i] =
            (obi_nix_export_graph){NULL, (const obi_nix_path_info *const *)out->infos[i], n};
        out->n++;
        if (!(out->graphs[i].name = strdup(specs[i].name)))
            r = obi_error_oom(err);
    }
    obi_export_graph_specs_free(specs, n_specs);
    return r;
}

/* ---- content-addressed inputs: resolving ---- */

/* Sorts drv's lists the way Nix writes them (input sources, env by key). */
static void sort_derivation(obi_derivation *drv)
{
    if (drv->n_input_srcs > 1)
        qsort(drv->input_srcs, drv->n_input_srcs, sizeof *drv->input_srcs, obi_strv_item_compare);
    for (size_t a = 1; a < drv->n_env; a++)
        for (size_t b = a; b > 0 && strcmp(drv->env[b - 1].key, drv->env[b].key) > 0; b--) {
            obi_derivation_env tmp = drv->env[b];
            drv->env[b] = drv->env[b - 1];
            drv->env[b - 1] = tmp;
        }
}

static int replace_string(char **field, const obi_nix_rewrite *rw, size_t n)
{
    char *s = obi_nix_rewrite_string(*field, rw, n);
    if (!s)
        return -ENOMEM;
    free(*field);
    *field = s;
    return 0;
}

/* A copy of drv that is its own: read again from the file (simplest deep copy). */
static int copy_derivation(const drv_node *node, obi_derivation **out, obi_error **err)
{
    return copy_given(node->drv, node->drv_path, out, err);
}

/* Nix's tryResolve + rewriteDerivation: the input derivations' outputs become input sources,
 * their downstream placeholders the real paths, and deferred outputs get the paths the resolved
 * derivation's hash gives them. *resolved_path: the store path Nix would write it at. */
static int resolve(const session *s, const drv_node *node, obi_derivation **out,
                   char **resolved_path, obi_error **err)
{
    cleanup_derivation obi_derivation *drv = NULL;
    int r = copy_derivation(node, &drv, err);
    if (r < 0)
        return r;
    obi_nix_rewrite *rewrites = NULL;
    size_t n_rewrites = 0, rewrites_cap = 0;
    obi_strv_builder sources = {0};
    for (size_t i = 0; r >= 0 && i < drv->n_input_srcs; i++)
        if (obi_strv_builder_add(&sources, drv->input_srcs[i]) < 0)
            r = obi_error_oom(err);
    for (size_t i = 0; r >= 0 && i < drv->n_input_drvs; i++) {
        const obi_derivation_input *in = &drv->input_drvs[i];
        const drv_node *dep = NULL;
        for (size_t k = 0; k < s->n_nodes && !dep; k++)
            if (strcmp(s->nodes[k]->drv_path, in->drv_path) == 0)
                dep = s->nodes[k];
        for (size_t k = 0; r >= 0 && dep && k < in->n_outputs; k++) {
            const char *path = dep->output_paths[output_index(dep->drv, in->outputs[k])];
            char *from = obi_nix_downstream_placeholder(in->drv_path, in->outputs[k]);
            if (!path)
                r = obi_error_set(err, -ENOENT,
                                  "output '%s' of input '%s' missing, aborting the resolving",
                                  in->outputs[k], in->drv_path);
            else if (!from || obi_array_grow(&rewrites, &rewrites_cap, n_rewrites + 1) < 0)
                r = obi_error_oom(err);
            if (r < 0) {
                free(from);
                break;
            }
            rewrites[n_rewrites++] = (obi_nix_rewrite){from, path};
            if (!obi_strv_builder_contains(&sources, path) &&
                obi_strv_builder_add(&sources, path) < 0)
                r = obi_error_oom(err);
        }
    }
    if (r >= 0 && n_rewrites > 1)
        for (size_t a = 1; a < n_rewrites; a++)
            for (size_t b = a; b > 0 && strcmp(rewrites[b - 1].from, rewrites[b].from) > 0; b--) {
                obi_nix_rewrite tmp = rewrites[b];
                rewrites[b] = rewrites[b - 1];
                rewrites[b - 1] = tmp;
            }
    /* the resolved derivation: no input derivations, their outputs as sources, rewritten */
    for (size_t i = 0; i < drv->n_input_drvs; i++) {
        free(drv->input_drvs[i].drv_path);
        for (size_t k = 0; k < drv->input_drvs[i].n_outputs; k++)
            free(drv->input_drvs[i].outputs[k]);
        free(drv->input_drvs[i].outputs);
    }
    drv->n_input_drvs = 0;
    for (size_t i = 0; i < drv->n_input_srcs; i++)
        free(drv->input_srcs[i]);
    free(drv->input_srcs);
    drv->input_srcs = steal_pointer(&sources.items);
    drv->n_input_srcs = sources.n;
    sources.n = 0;
    if (r >= 0 && replace_string(&drv->builder, rewrites, n_rewrites) < 0)
        r = obi_error_oom(err);
    for (size_t i = 0; r >= 0 && i < drv->n_args; i++)
        if (replace_string(&drv->args[i], rewrites, n_rewrites) < 0)
            r = obi_error_oom(err);
    for (size_t i = 0; r >= 0 && i < drv->n_env; i++)
        if (replace_string(&drv->env[i].key, rewrites, n_rewrites) < 0 ||
            replace_string(&drv->env[i].value, rewrites, n_rewrites) < 0)
            r = obi_error_oom(err);
    for (size_t i = 0; i < n_rewrites; i++)
        free((char *)rewrites[i].from);
    free(rewrites);
    obi_strv_builder_clear(&sources);
    if (r < 0)
        return r;
    sort_derivation(drv);

    /* deferred outputs: makeOutputPath by the hash of the masked derivation */
    if (node->kind == OBI_DRV_DEFERRED) {
        cleanup_free char *text = NULL;
        size_t len = 0;
        /* masked: outputs without paths, env values of output names empty */
        obi_derivation tmp = *drv;
        cleanup_free obi_derivation_env *env = calloc(drv->n_env + 1, sizeof *env);
        if (!env)
            return obi_error_oom(err);
        for (size_t i = 0; i < drv->n_env; i++) {
            env[i] = drv->env[i];
            if (output_index(drv, env[i].key) != SIZE_MAX)
                env[i].value = (char *)"";
        }
        tmp.env = env;
        if ((r = obi_derivation_serialize(&tmp, &text, &len, err)) < 0)
            return r;
        uint8_t hash[OBI_SHA256_LEN];
        obi_sha256_oneshot(text, len, hash);
        for (size_t i = 0; i < drv->n_outputs; i++) {
            obi_derivation_output *o = &drv->outputs[i];
            char *path = obi_nix_make_output_path(o->name, hash, drv->name);
            if (!path)
                return obi_error_oom(err);
            free(o->path);
            o->path = path;
            for (size_t k = 0; k < drv->n_env; k++)
                if (strcmp(drv->env[k].key, o->name) == 0) {
                    free(drv->env[k].value);
                    if (!(drv->env[k].value = strdup(path)))
                        return obi_error_oom(err);
                }
        }
    }
    cleanup_free char *text = NULL, *name = NULL;
    size_t len = 0;
    if ((r = obi_derivation_serialize(drv, &text, &len, err)) < 0)
        return r;
    if (asprintf(&name, "%s.drv", drv->name) < 0)
        return obi_error_oom(err);
    char *path = obi_nix_make_text_path(name, text, len, drv->input_srcs, drv->n_input_srcs);
    if (!path)
        return obi_error_oom(err);
    *resolved_path = path;
    *out = steal_pointer(&drv);
    return 0;
}

/* ---- one build: the log ---- */

/* Lines of one build's log, prefixed "<name>> " when builds may interleave. */
typedef struct build_log {
    const obi_nix_build_options *opts;
    char *prefix; /* NULL: passed through as it comes */
    obi_buf line;
} build_log;

static void build_log_line(build_log *log, const uint8_t *data, size_t len)
{
    log->opts->on_output((const uint8_t *)log->prefix, strlen(log->prefix), log->opts->output_ctx);
    log->opts->on_output(data, len, log->opts->output_ctx);
}

static void build_log_output(const uint8_t *data, size_t len, void *ctx)
{
    build_log *log = ctx;
    if (!log->prefix) {
        log->opts->on_output(data, len, log->opts->output_ctx);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        obi_buf_append(&log->line, &data[i], 1);
        if (data[i] == '\n') {
            build_log_line(log, log->line.data, log->line.len);
            log->line.len = 0;
        }
    }
}

static void build_log_finish(build_log *log)
{
    if (log->prefix && log->line.len) {
        obi_buf_append(&log->line, "\n", 1);
        build_log_line(log, log->line.data, log->line.len);
    }
    obi_buf_free(&log->line);
    free(log->prefix);
}

/* ---- one build: the outputs ---- */

/* What one build made of one output. */
typedef struct built_output {
    obi_node node;     /* as built (named by the build's output path) */
    char **references; /* found in the NAR: store paths, sorted */
    size_t n_references;
    obi_nar_hash nar;
    obi_nix_path_info *info; /* the final record */
} built_output;

static void built_outputs_free(built_output *outputs, size_t n)
{
    for (size_t i = 0; outputs && i < n; i++) {
        obi_node_clear(&outputs[i].node);
        if (outputs[i].references)
            obi_strv_free(outputs[i].references);
        obi_nix_path_info_free(outputs[i].info);
    }
    free(outputs);
}

/* The paths behind the needles found: needle i is req->refscan_needles[i], the hash part of
 * the i-th output path (drv order) or of an input. */
static int needle_paths(const obi_build_request *req, char *const *output_paths, size_t n_outputs,
                        const size_t *found, size_t n_found, char ***out, size_t *n_out,
                        obi_error **err)
{
    cleanup_strv char **refs = calloc(n_found + 1, sizeof *refs);
    if (!refs)
        return obi_error_oom(err);
    for (size_t i = 0; i < n_found; i++) {
        size_t index = found[i];
        if (index < n_outputs)
            refs[i] = strdup(output_paths[index]);
        else if (index - n_outputs < req->n_inputs &&
                 asprintf(&refs[i], OBI_NIX_STORE_DIR "/%s",
                          (const char *)req->inputs[index - n_outputs].name.data) < 0)
            refs[i] = NULL;
        if (!refs[i])
            return obi_error_oom(err);
    }
    if (n_found > 1)
        qsort(refs, n_found, sizeof *refs, obi_strv_item_compare);
    size_t kept = 0;
    for (size_t i = 0; i < n_found; i++) {
        if (kept > 0 && strcmp(refs[kept - 1], refs[i]) == 0) {
            free(refs[i]);
            refs[i] = NULL;
            continue;
        }
        refs[kept++] = refs[i];
        if (kept - 1 != i)
            refs[i] = NULL;
    }
    *out = steal_pointer(&refs);
    *n_out = kept;
    return 0;
}

/* Scans every output as built: NAR hash and references. */
static int scan_outputs(session *s, const obi_derivation *drv, char *const *output_paths,
                        const obi_build_request *req, const obi_build *build, built_output *outputs,
                        obi_error **err)
{
    cleanup_refscan obi_refscan *scanner = NULL;
    int r = obi_refscan_new_strings((const char *const *)req->refscan_needles,
                                    req->n_refscan_needles, &scanner, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < drv->n_outputs; i++) {
        size_t k = 0;
        while (k < req->n_outputs && strcmp(req->outputs[k], output_paths[i] + 1) != 0)
            k++;
        if (k == req->n_outputs || k >= build->n_outputs)
            return obi_error_set(err, -EIO, "the builder returned no output %s", output_paths[i]);
        if (obi_node_copy(&outputs[i].node, &build->outputs[k]) < 0)
            return obi_error_oom(err);
        cleanup_free size_t *found = NULL;
        size_t n_found = 0;
        r = obi_nix_scan_node(s->opts->store->blobs, s->opts->store->directories, &outputs[i].node,
                              scanner, &outputs[i].nar, &found, &n_found, err);
        if (r >= 0)
            r = needle_paths(req, output_paths, drv->n_outputs, found, n_found,
                             &outputs[i].references, &outputs[i].n_references, err);
        if (r < 0)
            return obi_error_prefix(err, r, "output '%s'", drv->outputs[i].name);
    }
    return 0;
}

/* "fixed:[r:]<algo>:<nixbase32>", Nix's rendering of a content address. */
static char *render_ca(bool recursive, const char *algo, const uint8_t *digest, size_t len)
{
    char encoded[2 * OBI_NIX_HASH_MAX_LEN];
    obi_nixbase32_encode(digest, len, encoded);
    encoded[obi_nixbase32_encoded_len(len)] = '\0';
    char *ca = NULL;
    if (asprintf(&ca, "fixed:%s%s:%s", recursive ? "r:" : "", algo, encoded) < 0)
        return NULL;
    return ca;
}

/* A flat content address needs a regular file that is not executable. */
static int check_flat_output(const char *path, const obi_node *node, obi_error **err)
{
    if (node->kind == OBI_NODE_FILE && !node->executable)
        return 0;
    return obi_error_set(err, -EINVAL,
                         "output path '%s' should be a non-executable regular file since recursive "
                         "hashing is not enabled (outputHashMode=flat)",
                         path);
}

/* The record of one output at its final path; takes the node. */
static int make_info(const char *path, obi_node *node, const obi_nar_hash *nar, char **references,
                     size_t n_references, const char *deriver, char *ca, obi_nix_path_info **out,
                     obi_error **err)
{
    cleanup_free char *owned_ca = ca;
    cleanup_nix_path_info obi_nix_path_info *info = calloc(1, sizeof *info);
    const char *base;
    cleanup_error obi_error *not_store = NULL;
    bool has_deriver = obi_nix_store_path_parse(deriver, &base, &not_store) == 0;
    if (!info || !(info->path = strdup(path)) ||
        (has_deriver && !(info->deriver = strdup(deriver))) ||
        !(info->references = calloc(n_references + 1, sizeof *info->references)))
        return obi_error_oom(err);
    info->node = *node;
    memset(node, 0, sizeof *node);
    base = strrchr(path, '/') + 1;
    if (obi_node_set_name(&info->node, base, strlen(base)) < 0)
        return obi_error_oom(err);
    info->nar = *nar;
    for (size_t i = 0; i < n_references; i++) {
        if (!(info->references[i] = strdup(references[i])))
            return obi_error_oom(err);
        info->n_references++;
    }
    info->ca = steal_pointer(&owned_ca);
    *out = steal_pointer(&info);
    return 0;
}

/* A fixed output: flat needs a plain file, the hash must match, no references (as before). */
static int finish_fixed_output(session *s, const obi_derivation_output *o, const char *deriver,
                               built_output *b, obi_error **err)
{
    bool recursive = false;
    const char *algo = NULL;
    size_t len = 0;
    int r = obi_derivation_hash_algo_parse(o->hash_algo, &recursive, &algo, &len, err);
    if (r >= 0 && !recursive)
        r = check_flat_output(o->path, &b->node, err);
    if (r >= 0)
        r = obi_nix_check_fixed_output(s->opts->store->blobs, s->opts->store->directories, o,
                                       &b->node, err);
    if (r < 0)
        return r;
    if (b->n_references > 0)
        return obi_error_set(err, -EINVAL,
                             "fixed-output derivation '%s' must not reference store paths (it "
                             "references %s)",
                             o->path, b->references[0]);
    uint8_t digest[OBI_NIX_HASH_MAX_LEN];
    if (obi_hex_decode(o->hash, 2 * len, digest, len) < 0)
        return obi_error_set(err, -EINVAL, "output '%s': bad hash", o->name);
    return make_info(o->path, &b->node, &b->nar, b->references, b->n_references, deriver,
                     render_ca(recursive, algo, digest, len), &b->info, err);
}

/* A floating output: hash modulo its scratch hash part, the final path from that hash and its
 * references (other outputs' scratch paths replaced by theirs), the tree rewritten to it. */
static int finish_floating_output(session *s, const obi_derivation *drv, size_t index,
                                  char **output_paths, const char *deriver, obi_nix_rewrite *done,
                                  size_t *n_done, built_output *b, obi_error **err)
{
    const obi_derivation_output *o = &drv->outputs[index];
    obi_blob_service *blobs = s->opts->store->blobs;
    obi_directory_service *dirs = s->opts->store->directories;
    bool recursive = false;
    const char *algo = NULL;
    size_t len = 0;
    int r = obi_derivation_hash_algo_parse(o->hash_algo, &recursive, &algo, &len, err);
    if (r >= 0 && !recursive)
        r = check_flat_output(output_paths[index], &b->node, err);
    if (r < 0)
        return r;
    /* outputs finished before (they come first: referred to) carry their final hash parts */
    if (*n_done > 0) {
        cleanup_node obi_node rewritten = {0};
        if ((r = obi_nix_ca_rewrite_node(blobs, dirs, &b->node, done, *n_done, &rewritten, err)) <
            0)
            return r;
        obi_node_clear(&b->node);
        b->node = rewritten;
        memset(&rewritten, 0, sizeof rewritten);
    }
    const char *scratch = output_paths[index];
    char old_hash[OBI_NIX_HASH_PART_LEN + 1];
    snprintf(old_hash, sizeof old_hash, "%s", scratch + strlen(OBI_NIX_STORE_DIR "/"));
    uint8_t got[OBI_NIX_HASH_MAX_LEN];
    size_t got_len = 0;
    if ((r = obi_nix_ca_hash(blobs, dirs, &b->node, recursive, algo, old_hash, got, &got_len,
                             err)) < 0)
        return r;
    /* references: itself aside, others as their final paths */
    bool self = false;
    /* room for one more: the final path when it refers to itself */
    cleanup_strv char **refs = calloc(b->n_references + 2, sizeof *refs);
    size_t n_refs = 0;
    if (!refs)
        return obi_error_oom(err);
    for (size_t i = 0; i < b->n_references; i++) {
        if (strcmp(b->references[i], scratch) == 0) {
            self = true;
            continue;
        }
        cleanup_free char *ref = NULL;
        for (size_t k = 0; k < *n_done && !ref; k++)
            if (strncmp(b->references[i] + strlen(OBI_NIX_STORE_DIR "/"), done[k].from,
                        OBI_NIX_HASH_PART_LEN) == 0 &&
                asprintf(&ref, OBI_NIX_STORE_DIR "/%s%s", done[k].to,
                         b->references[i] + strlen(OBI_NIX_STORE_DIR "/") + OBI_NIX_HASH_PART_LEN) <
                    0)
                return obi_error_oom(err);
        if (!(refs[n_refs++] = ref ? steal_pointer(&ref) : strdup(b->references[i])))
            return obi_error_oom(err);
    }
    if (n_refs > 1)
        qsort(refs, n_refs, sizeof *refs, obi_strv_item_compare);
    cleanup_free char *name = obi_nix_output_path_name(drv->name, o->name);
    cleanup_free char *final = NULL;
    if (!name)
        return obi_error_oom(err);
    if ((r = obi_nix_make_fixed_output_path(recursive, algo, got, got_len, name, refs, n_refs, self,
                                            &final, err)) < 0)
        return obi_error_prefix(err, r, "output '%s'", o->name);
    const char *new_hash = final + strlen(OBI_NIX_STORE_DIR "/");
    if (strcmp(final, scratch) != 0) {
        obi_nix_rewrite own = {old_hash, NULL};
        cleanup_free char *to = strndup(new_hash, OBI_NIX_HASH_PART_LEN);
        own.to = to;
        cleanup_node obi_node rewritten = {0};
        if (!to ||
            (r = obi_nix_ca_rewrite_node(blobs, dirs, &b->node, &own, 1, &rewritten, err)) < 0)
            return to ? r : obi_error_oom(err);
        obi_node_clear(&b->node);
        b->node = rewritten;
        memset(&rewritten, 0, sizeof rewritten);
        if ((r = obi_nar_hash_node(blobs, dirs, &b->node, &b->nar, err)) < 0)
            return r;
        char *from = strdup(old_hash);
        if (!from)
            return obi_error_oom(err);
        done[*n_done] = (obi_nix_rewrite){from, steal_pointer(&to)};
        ++*n_done;
    }
    if (self) {
        if (!(refs[n_refs] = strdup(final)))
            return obi_error_oom(err);
        refs[++n_refs] = NULL;
        qsort(refs, n_refs, sizeof *refs, obi_strv_item_compare);
    }
    free(output_paths[index]);
    output_paths[index] = steal_pointer(&final);
    return make_info(output_paths[index], &b->node, &b->nar, refs, n_refs, deriver,
                     render_ca(recursive, algo, got, got_len), &b->info, err);
}

/* Everything after the build: the order of the outputs (no cycles), each output's final
 * path, hash and record, then the reference checks. */
static int finish_outputs(session *s, const char *drv_path, const obi_derivation *drv,
                          obi_derivation_kind kind, const obi_derivation_attrs *attrs,
                          char **output_paths, built_output *outputs, obi_error **err)
{
    size_t n = drv->n_outputs;
    cleanup_free obi_nix_output_facts *facts = calloc(n + 1, sizeof *facts);
    cleanup_free size_t *order = calloc(n + 1, sizeof *order);
    cleanup_free obi_nix_rewrite *done = calloc(n + 1, sizeof *done);
    size_t n_done = 0;
    if (!facts || !order || !done)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++)
        facts[i] =
            (obi_nix_output_facts){drv->outputs[i].name, output_paths[i], outputs[i].nar.size,
                                   outputs[i].references, outputs[i].n_references};
    int r = obi_nix_order_outputs(drv_path, facts, n, order, err);
    for (size_t k = 0; r >= 0 && k < n; k++) {
        size_t i = order[k];
        built_output *b = &outputs[i];
        if (kind == OBI_DRV_FIXED_OUTPUT)
            r = finish_fixed_output(s, &drv->outputs[i], drv_path, b, err);
        else if (kind == OBI_DRV_FLOATING)
            r = finish_floating_output(s, drv, i, output_paths, drv_path, done, &n_done, b, err);
        else
            r = make_info(output_paths[i], &b->node, &b->nar, b->references, b->n_references,
                          drv_path, NULL, &b->info, err);
    }
    for (size_t i = 0; i < n_done; i++) {
        free((char *)done[i].from);
        free((char *)done[i].to);
    }
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        facts[i] = (obi_nix_output_facts){drv->outputs[i].name, outputs[i].info->path,
                                          outputs[i].info->nar.size, outputs[i].info->references,
                                          outputs[i].info->n_references};
    return obi_nix_check_output_references(attrs, facts, n, path_facts, s, err);
}

/* ---- after each build: the registrar ---- */

/* The paths of the closure of roots that Nix lacks and *known does not hold, with their records
 * (from the given ones, else the own store), references first; each is added to *known. */
static int unregistered_closure(const session *s, char *const *roots, size_t n_roots,
                                obi_nix_path_info *const *given, size_t n_given,
                                obi_strv_builder *known, obi_nix_path_info ***out, size_t *n_out,
                                obi_error **err)
{
    cleanup_strv_builder obi_strv_builder seen = {0};
    obi_nix_path_info **infos = NULL;
    size_t n = 0, cap = 0;
    int r = 0;
    for (size_t i = 0; r >= 0 && i < n_roots; i++)
        if (!obi_strv_builder_contains(known, roots[i]) &&
            !obi_strv_builder_contains(&seen, roots[i]) &&
            obi_strv_builder_add(&seen, roots[i]) < 0)
            r = obi_error_oom(err);
    for (size_t next = 0; r >= 0 && next < seen.n; next++) {
        const char *path = seen.items[next];
        if (in_nix_store(s, path))
            continue;
        obi_nix_path_info *info = NULL;
        for (size_t i = 0; i < n_given && !info; i++)
            if (strcmp(given[i]->path, path) == 0 && !(info = obi_nix_path_info_copy(given[i])))
                r = obi_error_oom(err);
        if (r >= 0 && !info && (r = own_path_info(s, path, &info, err)) == 0)
            r = obi_error_set(err, -ENOENT, "%s is neither in the Nix store nor built by ocibuild",
                              path);
        if (r >= 0 && obi_array_grow(&infos, &cap, n + 1) < 0)
            r = obi_error_oom(err);
        if (r < 0) {
            obi_nix_path_info_free(info);
            break;
        }
        infos[n++] = info;
        for (size_t k = 0; r >= 0 && k < info->n_references; k++)
            if (!obi_strv_builder_contains(known, info->references[k]) &&
                !obi_strv_builder_contains(&seen, info->references[k]) &&
                obi_strv_builder_add(&seen, info->references[k]) < 0)
                r = obi_error_oom(err);
    }
    if (r >= 0 && n > 1)
        r = obi_nix_path_infos_sort_topologically((const obi_nix_path_info **)infos, n, err);
    for (size_t i = 0; r >= 0 && i < n; i++)
        if (obi_strv_builder_add(known, infos[i]->path) < 0)
            r = obi_error_oom(err);
    if (r < 0) {
        obi_nix_path_infos_free(infos, n);
        return r;
    }
    *out = infos;
    *n_out = n;
    return 0;
}

/* Sends a finished build's outputs to Nix's import (started for the first), with what they
 * refer to that Nix lacks. */
static int register_outputs(session *s, const finished_build *job, obi_error **err)
{
    registrar *reg = &s->registrar;
    cleanup_free char **roots = calloc(job->n + 1, sizeof *roots);
    if (!roots)
        return obi_error_oom(err);
    for (size_t i = 0; i < job->n; i++)
        roots[i] = job->infos[i]->path;
    obi_nix_path_info **infos = NULL;
    size_t n = 0;
    int r = unregistered_closure(s, roots, job->n, job->infos, job->n, &reg->sent, &infos, &n, err);
    if (r >= 0 && n > 0 && !reg->importer)
        r = obi_nix_store_importer_start(s->opts->nix_store, &reg->importer, err);
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = obi_nix_store_importer_add(reg->importer, s->opts->store->blobs,
                                       s->opts->store->directories, infos[i], err);
    obi_nix_path_infos_free(infos, n);
    return r;
}

/* Registers a finished build's outputs in Nix when asked to, then records them and, for
 * outputs whose paths were not known before the build, where they were realised (for the
 * derivation and, when resolved, for the resolved one too). Nix's import goes first, and after
 * the last build its stream is ended at once: nix-store imports the outputs, commits and exits
 * while the records are written (their fsyncs, ~3 ms quiet, 12-24 ms under I/O load), so after
 * the last build both overlap instead of adding up. */
static int finish_records(session *s, const finished_build *job, obi_error **err)
{
    cleanup_error obi_error *register_err = NULL;
    int registered = s->opts->register_in_nix ? register_outputs(s, job, &register_err) : 0;
    /* the last build's: nix-store finishes and exits while the records are written */
    if (registered >= 0 && job->last && s->registrar.importer)
        registered = obi_nix_store_importer_end_input(s->registrar.importer, &register_err);
    /* recorded whether or not Nix took them: they were built and passed every check */
    for (size_t i = 0; i < job->n; i++) {
        const obi_nix_path_info *info = job->infos[i];
        int r = obi_nix_path_info_record(s->opts->store, s->opts->path_infos, info, err);
        if (r < 0)
            return obi_error_prefix(err, r, "recording %s", info->path);
        if (job->realised && job->drv_path &&
            (r = obi_nix_realisation_put(s->opts->path_infos, job->drv_path, job->names[i],
                                         info->path, err)) < 0)
            return r;
        if (job->realised && job->resolved_path &&
            (r = obi_nix_realisation_put(s->opts->path_infos, job->resolved_path, job->names[i],
                                         info->path, err)) < 0)
            return r;
    }
    if (registered < 0)
        return obi_error_prefix(err, obi_error_move(err, &register_err), "registering %s in Nix",
                                job->infos[0]->path);
    return 0;
}

/* The session stops as on a failed build: running builds are cancelled, none starts. */
static void stop_session(session *s)
{
    pthread_mutex_lock(&s->lock);
    if (!s->stop && write(s->cancel_pipe[1], "x", 1) < 0) {
        /* a full pipe is readable already */
    }
    s->stop = true;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* The registrar thread: finished builds in the order they finished, until closed and drained.
 * After its first failure it drops the rest and stops the session. */
static void *registrar_main(void *arg)
{
    session *s = arg;
    registrar *reg = &s->registrar;
    /* libcrypto is loaded on its first use (sha256.c): here, beside the first build's inputs,
     * not inside its request (placeholders), where it cost ~2 ms before the first container */
    obi_md_free(obi_md_new("sha256"));
    pthread_mutex_lock(&reg->lock);
    for (;;) {
        while (!reg->queue && !reg->closing)
            pthread_cond_wait(&reg->wake, &reg->lock);
        finished_build *job = reg->queue;
        if (!job)
            break;
        if (!(reg->queue = job->next))
            reg->tail = &reg->queue;
        pthread_mutex_unlock(&reg->lock);
        if (!reg->error && finish_records(s, job, &reg->error) < 0)
            stop_session(s);
        finished_build_free(job);
        pthread_mutex_lock(&reg->lock);
    }
    pthread_mutex_unlock(&reg->lock);
    /* here: nix-store dies with the thread that started it (PR_SET_PDEATHSIG) */
    if (reg->importer)
        obi_nix_store_importer_finish(steal_pointer(&reg->importer), &reg->import_error);
    return NULL;
}

static int registrar_start(session *s, obi_error **err)
{
    registrar *reg = &s->registrar;
    reg->tail = &reg->queue;
    int e = pthread_create(&reg->thread, NULL, registrar_main, s);
    if (e != 0)
        return obi_error_set_errno(err, e, "starting the registrar thread");
    reg->started = true;
    return 0;
}

/* Hands a finished build to the registrar (it takes the job). */
static void registrar_add(session *s, finished_build *job)
{
    registrar *reg = &s->registrar;
    pthread_mutex_lock(&reg->lock);
    *reg->tail = job;
    reg->tail = &job->next;
    pthread_cond_signal(&reg->wake);
    pthread_mutex_unlock(&reg->lock);
}

/* Waits until every finished build is recorded (and registered), then ends Nix's import. Its
 * failure comes first: nix-store's own message says more than a broken pipe. */
static int registrar_finish(session *s, obi_error **err)
{
    registrar *reg = &s->registrar;
    if (!reg->started)
        return 0;
    pthread_mutex_lock(&reg->lock);
    reg->closing = true;
    pthread_cond_signal(&reg->wake);
    pthread_mutex_unlock(&reg->lock);
    pthread_join(reg->thread, NULL);
    reg->started = false;
    if (reg->import_error)
        return obi_error_move(err, &reg->import_error);
    return reg->error ? obi_error_move(err, &reg->error) : 0;
}

/* What a build leaves to the registrar: copies of its outputs' records. */
static int leave_records(session *s, const drv_node *node, const obi_derivation *drv,
                         const char *resolved_path, const built_output *outputs, obi_error **err)
{
    finished_build *job = calloc(1, sizeof *job);
    if (!job || !(job->names = calloc(drv->n_outputs + 1, sizeof *job->names)) ||
        !(job->infos = calloc(drv->n_outputs + 1, sizeof *job->infos))) {
        finished_build_free(job);
        return obi_error_oom(err);
    }
    const char *base;
    cleanup_error obi_error *not_store = NULL;
    bool ok = true;
    if (obi_nix_store_path_parse(node->drv_path, &base, &not_store) == 0)
        ok = (job->drv_path = strdup(node->drv_path)) != NULL;
    if (ok && resolved_path)
        ok = (job->resolved_path = strdup(resolved_path)) != NULL;
    job->realised = node->kind == OBI_DRV_FLOATING || node->kind == OBI_DRV_DEFERRED;
    job->last = node == s->nodes[0]; /* every other node is an input of it, built before */
    for (size_t i = 0; ok && i < drv->n_outputs; i++, job->n++)
        ok = (job->names[i] = strdup(drv->outputs[i].name)) &&
             (job->infos[i] = obi_nix_path_info_copy(outputs[i].info));
    if (!ok) {
        finished_build_free(job);
        return obi_error_oom(err);
    }
    registrar_add(s, job);
    return 0;
}

/* ---- one build ---- */

/* Input paths' closure as store paths (the request's inputs are named by basename). */
static int closure_paths(const obi_build_request *req, obi_strv_builder *out, obi_error **err)
{
    for (size_t i = 0; i < req->n_inputs; i++) {
        cleanup_free char *path = NULL;
        if (asprintf(&path, OBI_NIX_STORE_DIR "/%s", (const char *)req->inputs[i].name.data) < 0 ||
            obi_strv_builder_add(out, path) < 0)
            return obi_error_oom(err);
    }
    return 0;
}

/* Where each output of drv is built: its known path, or a scratch path for a floating one. */
static int build_paths(const char *drv_path, const obi_derivation *drv, char ***out,
                       obi_error **err)
{
    cleanup_strv char **paths = calloc(drv->n_outputs + 1, sizeof *paths);
    if (!paths)
        return obi_error_oom(err);
    for (size_t i = 0; i < drv->n_outputs; i++) {
        int r = obi_derivation_output_path(drv, &drv->outputs[i], &paths[i], err);
        if (r < 0)
            return r;
        if (!paths[i] &&
            !(paths[i] = obi_nix_ca_scratch_path(drv_path, drv->name, drv->outputs[i].name)))
            return obi_error_oom(err);
    }
    *out = steal_pointer(&paths);
    return 0;
}

static int run_build(session *s, const drv_node *node, const obi_build_request *req,
                     obi_build **build, obi_error **err)
{
    const obi_nix_build_options *opts = s->opts;
    build_log log = {opts, NULL, OBI_BUF_INIT};
    obi_build_call call = OBI_BUILD_CALL_INIT;
    call.cancel_fd = s->cancel_pipe[0];
    call.keep_failed = opts->keep_failed;
    if (opts->on_output) {
        if (opts->max_jobs > 1 && asprintf(&log.prefix, "%s> ", node->drv->name) < 0)
            return obi_error_oom(err);
        call.on_output = build_log_output;
        call.output_ctx = &log;
    }
    int r = obi_build_service_do_build_call(opts->builder, req, &call, build, err);
    build_log_finish(&log);
    if (r >= 0 &&
        ((*build)->n_outputs != req->n_outputs || (req->n_outputs && !(*build)->outputs_needles)))
        r = obi_error_set(err, -EIO, "the builder returned %zu outputs for %zu",
                          (*build)->n_outputs, req->n_outputs);
    return r;
}

static int build_node(session *s, drv_node *node, obi_error **err)
{
    const obi_nix_build_options *opts = s->opts;
    /* content-addressed inputs, or own paths that wait for them: resolve first (Nix builds the
     * resolved derivation in place of the one given) */
    cleanup_derivation obi_derivation *resolved = NULL;
    cleanup_free char *resolved_path = NULL;
    bool must_resolve = node->kind == OBI_DRV_DEFERRED ||
                        (node->kind == OBI_DRV_FLOATING && node->drv->n_input_drvs > 0);
    int r = 0;
    if (must_resolve && (r = resolve(s, node, &resolved, &resolved_path, err)) < 0)
        return r;
    const obi_derivation *drv = resolved ? resolved : node->drv;
    const char *drv_path = resolved ? resolved_path : node->drv_path;

    cleanup_derivation_attrs obi_derivation_attrs *attrs = NULL;
    if ((r = obi_derivation_attrs_new(drv, drv_path, &attrs, err)) < 0 ||
        (r = obi_nix_check_can_build(s->machine, drv_path, drv, attrs, err)) < 0)
        return r;
    cleanup_strv char **output_paths = NULL;
    if ((r = build_paths(drv_path, drv, &output_paths, err)) < 0 || !output_paths)
        return r < 0 ? r : obi_error_oom(err);

    obi_strv_builder inputs = {0};
    obi_node *nodes = NULL;
    size_t n_nodes = 0;
    r = input_paths(s, node, drv, &inputs, err);
    if (r >= 0)
        r = gather_inputs(s, &inputs, &nodes, &n_nodes, err);
    obi_strv_builder_clear(&inputs);
    if (r < 0) {
        obi_nix_nodes_free(nodes, n_nodes);
        return obi_error_prefix(err, r, "%s: inputs", node->drv_path);
    }
    /* the request first without export graphs: its inputs are the closure they must lie in */
    cleanup_build_request obi_build_request *req = NULL;
    obi_derivation_request_options request_opts = {
        .build_cores = opts->build_cores,
        .attrs = attrs,
        .output_paths = output_paths,
        .kvm = obi_nix_machine_has_feature(s->machine, "kvm") && access("/dev/kvm", F_OK) == 0,
    };
    _cleanup_(export_graphs_clear) export_graphs graphs = {0};
    obi_strv_builder input_closure = {0};
    r = obi_derivation_to_build_request(drv, nodes, n_nodes, &request_opts, &req, err);
    if (r >= 0)
        r = closure_paths(req, &input_closure, err);
    if (r >= 0)
        r = resolve_export_graphs(s, attrs, &input_closure, &graphs, err);
    obi_strv_builder_clear(&input_closure);
    if (r >= 0 && graphs.n > 0) {
        obi_build_request_free(steal_pointer(&req));
        request_opts.export_graphs = graphs.graphs;
        request_opts.n_export_graphs = graphs.n;
        r = obi_derivation_to_build_request(drv, nodes, n_nodes, &request_opts, &req, err);
    }
    obi_nix_nodes_free(nodes, n_nodes);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", node->drv_path);

    cleanup_build obi_build *build = NULL;
    if ((r = run_build(s, node, req, &build, err)) < 0)
        return obi_error_prefix(err, r, "build of %s", node->drv_path);

    built_output *outputs = calloc(drv->n_outputs + 1, sizeof *outputs);
    if (!outputs)
        return obi_error_oom(err);
    r = scan_outputs(s, drv, output_paths, req, build, outputs, err);
    if (r >= 0)
        r = finish_outputs(s, drv_path, drv,
                           resolved ? node->kind == OBI_DRV_DEFERRED ? OBI_DRV_INPUT_ADDRESSED
                                                                     : node->kind
                                    : node->kind,
                           attrs, output_paths, outputs, err);
    if (r >= 0)
        r = leave_records(s, node, drv, resolved_path, outputs, err);
    if (r < 0) {
        built_outputs_free(outputs, drv->n_outputs);
        return obi_error_prefix(err, r, "build of %s", node->drv_path);
    }
    /* the node's outputs (drv and the resolved one list them in the same order) */
    for (size_t i = 0; i < drv->n_outputs; i++) {
        free(node->output_paths[i]);
        node->output_paths[i] = strdup(outputs[i].info->path);
        node->infos[i] = steal_pointer(&outputs[i].info);
        if (!node->output_paths[i]) {
            built_outputs_free(outputs, drv->n_outputs);
            return obi_error_oom(err);
        }
    }
    built_outputs_free(outputs, drv->n_outputs);
    return 0;
}

/* ---- the scheduler ---- */

/* The next node whose inputs are built, in load order (inputs were loaded after their
 * dependents, so the last ones are the leaves: taken from the end). */
static drv_node *next_ready(session *s)
{
    for (size_t i = s->n_nodes; i-- > 0;) {
        drv_node *node = s->nodes[i];
        if (node->state == NODE_WAITING && node->pending == 0)
            return node;
    }
    return NULL;
}

static void skip_dependents(session *s, drv_node *node)
{
    for (size_t i = 0; i < node->n_dependents; i++) {
        drv_node *dep = s->nodes[node->dependents[i]];
        if (dep->state == NODE_WAITING) {
            dep->state = NODE_SKIPPED;
            skip_dependents(s, dep);
        }
    }
}

/* Called with the lock held, by the worker that built node, which then takes the next ready
 * node itself: other workers are woken only for the nodes beyond that one, or all of them when
 * the session ends (stopped, or nothing runs nor is ready). A worker woken for nothing (every
 * step of a chain, with -j 2) took the CPU and the lock from the one starting the next step. */
static void node_done(session *s, drv_node *node, int r, obi_error *error)
{
    s->running--;
    size_t ready = 0;
    if (r < 0) {
        node->state = NODE_FAILED;
        node->error = error;
        if (!s->stop && write(s->cancel_pipe[1], "x", 1) < 0) {
            /* a full pipe is readable already */
        }
        s->stop = true;
        skip_dependents(s, node);
    } else {
        node->state = NODE_BUILT;
        s->n_built++;
        for (size_t i = 0; i < node->n_dependents; i++) {
            drv_node *dependent = s->nodes[node->dependents[i]];
            if (--dependent->pending == 0 && dependent->state == NODE_WAITING)
                ready++;
        }
    }
    if (s->stop || (ready == 0 && s->running == 0)) {
        pthread_cond_broadcast(&s->changed);
        return;
    }
    for (size_t i = 1; i < ready; i++)
        pthread_cond_signal(&s->changed);
}

static void *worker(void *arg)
{
    session *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        drv_node *node = s->stop ? NULL : next_ready(s);
        if (!node) {
            if (s->running == 0)
                break;
            pthread_cond_wait(&s->changed, &s->lock);
            continue;
        }
        node->state = NODE_RUNNING;
        s->running++;
        pthread_mutex_unlock(&s->lock);
        obi_error *error = NULL;
        int r = build_node(s, node, &error);
        pthread_mutex_lock(&s->lock);
        node_done(s, node, r, error);
    }
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* The caller's cancel fd (opts->call) cancels the whole session, as a failure does: running
 * builds are stopped through the session's cancel pipe and no new one starts. */
static void *forward_cancel(void *arg)
{
    session *s = arg;
    struct pollfd fds[2] = {{s->opts->call->cancel_fd, POLLIN, 0}, {s->forward_stop[0], POLLIN, 0}};
    while (poll(fds, 2, -1) < 0 && errno == EINTR)
        ;
    if (fds[1].revents)
        return NULL;
    pthread_mutex_lock(&s->lock);
    if (!s->stop && write(s->cancel_pipe[1], "x", 1) < 0) {
        /* a full pipe is readable already */
    }
    s->stop = true;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int run_all(session *s, obi_error **err)
{
    unsigned jobs = s->opts->max_jobs ? s->opts->max_jobs : 1;
    size_t to_build = 0;
    for (size_t i = 0; i < s->n_nodes; i++)
        to_build += s->nodes[i]->build;
    if (jobs > to_build)
        jobs = (unsigned)(to_build ? to_build : 1);
    int r = to_build ? registrar_start(s, err) : 0;
    if (r < 0)
        return r;
    pthread_t *threads = calloc(jobs, sizeof *threads);
    if (!threads) {
        registrar_finish(s, NULL);
        return obi_error_oom(err);
    }
    unsigned started = 0;
    for (; started + 1 < jobs; started++)
        if (pthread_create(&threads[started], NULL, worker, s) != 0)
            break;
    pthread_t forwarder;
    bool forwarding = s->opts->call && s->opts->call->cancel_fd >= 0 &&
                      pipe2(s->forward_stop, O_CLOEXEC) == 0 &&
                      pthread_create(&forwarder, NULL, forward_cancel, s) == 0;
    worker(s); /* this thread works too */
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    if (forwarding) {
        if (write(s->forward_stop[1], "x", 1) < 0) {
            /* cannot happen on a fresh pipe; the join below would then wait for the caller */
        }
        pthread_join(forwarder, NULL);
    }
    /* the builds' records (and registrations) are done before any result */
    cleanup_error obi_error *registrar_err = NULL;
    int registered = registrar_finish(s, &registrar_err);
    /* the first failure in load order, the top derivation's own before its inputs' */
    for (size_t i = 0; i < s->n_nodes; i++) {
        drv_node *node = s->nodes[i];
        if (node->state != NODE_FAILED || node->error->code == -ECANCELED)
            continue;
        int code = node->error->code;
        obi_error_move(err, &node->error);
        return i == 0 ? code : obi_error_prefix(err, code, "building input %s", node->drv_path);
    }
    if (registered < 0)
        return obi_error_move(err, &registrar_err);
    for (size_t i = 0; i < s->n_nodes; i++)
        if (s->nodes[i]->state == NODE_FAILED) {
            int code = s->nodes[i]->error->code;
            obi_error_move(err, &s->nodes[i]->error);
            return code;
        }
    return 0;
}

/* ---- the result ---- */

static int collect_result(session *s, obi_nix_build_result **out, obi_error **err)
{
    drv_node *top = s->nodes[0];
    cleanup_nix_build_result obi_nix_build_result *result = calloc(1, sizeof *result);
    if (!result || !(result->outputs = calloc(top->drv->n_outputs + 1, sizeof *result->outputs)))
        return obi_error_oom(err);
    result->n_built = s->n_built;
    for (size_t i = 0; i < top->drv->n_outputs; i++) {
        obi_nix_build_output *o = &result->outputs[i];
        if (!(o->name = strdup(top->drv->outputs[i].name)))
            return obi_error_oom(err);
        result->n_outputs++;
        if (top->infos[i]) {
            o->info = steal_pointer(&top->infos[i]);
            continue;
        }
        int r = top->output_paths[i] ? any_path_info(s, top->output_paths[i], &o->info, err)
                                     : obi_error_set(err, -ENOENT, "output '%s' of %s has no path",
                                                     o->name, top->drv_path);
        if (r < 0)
            return obi_error_prefix(err, r, "output '%s'", o->name);
    }
    *out = steal_pointer(&result);
    return 0;
}

/* One session: the graph from drv_path (its derivation given, or read from the file), the
 * builds, the result. */
static int run_session(const char *drv_path, const obi_derivation *given,
                       const obi_nix_build_options *opts, obi_nix_build_result **out,
                       obi_error **err)
{
    _cleanup_(session_clear) session s = {
        .opts = opts, .given = given, .cancel_pipe = {-1, -1}, .forward_stop = {-1, -1}};
    pthread_mutex_init(&s.lock, NULL);
    pthread_mutex_init(&s.import_lock, NULL);
    pthread_mutex_init(&s.facts_lock, NULL);
    pthread_cond_init(&s.changed, NULL);
    pthread_mutex_init(&s.registrar.lock, NULL);
    pthread_cond_init(&s.registrar.wake, NULL);
    _cleanup_(obi_nix_machine_clear) obi_nix_machine detected = {0};
    int r = 0;
    if (!(s.machine = opts->machine) && (r = obi_nix_machine_detect(&detected, err)) < 0)
        return r;
    if (!s.machine)
        s.machine = &detected;
    if (pipe2(s.cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    size_t top = 0;
    if ((r = load(&s, drv_path, NULL, 0, 0, &top, err)) < 0)
        return r;
    if ((r = run_all(&s, err)) < 0)
        return r;
    return collect_result(&s, out, err);
}

int obi_nix_build(const char *drv_path, const obi_nix_build_options *opts,
                  obi_nix_build_result **out, obi_error **err)
{
    return run_session(drv_path, NULL, opts, out, err);
}

int obi_nix_build_derivation(const char *drv_path, const obi_derivation *drv,
                             const obi_nix_build_options *opts, obi_nix_build_result **out,
                             obi_error **err)
{
    return run_session(drv_path, drv, opts, out, err);
}

void obi_nix_build_result_free(obi_nix_build_result *result)
{
    if (!result)
        return;
    for (size_t i = 0; i < result->n_outputs; i++) {
        free(result->outputs[i].name);
        obi_nix_path_info_free(result->outputs[i].info);
    }
    free(result->outputs);
    free(result);
}

/* ---- making results Nix's ---- */

int obi_nix_build_register(const obi_nix_build_result *result, const obi_nix_build_options *opts,
                           size_t *n_registered, obi_error **err)
{
    session s = {.opts = opts};
    cleanup_free char **roots = calloc(result->n_outputs + 1, sizeof *roots);
    if (!roots)
        return obi_error_oom(err);
    for (size_t i = 0; i < result->n_outputs; i++)
        roots[i] = result->outputs[i].info->path;
    cleanup_strv_builder obi_strv_builder known = {0};
    obi_nix_path_info **infos = NULL;
    size_t n = 0;
    int r = unregistered_closure(&s, roots, result->n_outputs, NULL, 0, &known, &infos, &n, err);
    if (r >= 0 && n > 0)
        r = obi_nix_store_import(opts->store->blobs, opts->store->directories, opts->nix_store,
                                 (const obi_nix_path_info *const *)infos, n, err);
    obi_nix_path_infos_free(infos, n);
    if (r >= 0 && n_registered)
        *n_registered = n;
    return r < 0 ? r : 0;
}

json_t *obi_nix_build_result_to_json(const obi_nix_build_result *result)
{
    json_t *root = json_object(), *outputs = json_object();
    bool ok = root && outputs && json_object_set(root, "outputs", outputs) == 0;
    for (size_t i = 0; ok && i < result->n_outputs; i++) {
        const obi_nix_path_info *info = result->outputs[i].info;
        cleanup_free char *nar_hash = obi_nar_hash_to_string(&info->nar);
        json_t *refs = json_array(), *output = json_object();
        ok = nar_hash && refs && output;
        for (size_t k = 0; ok && k < info->n_references; k++)
            ok = json_array_append_new(refs, json_string(info->references[k])) == 0;
        ok = ok && json_object_set_new(output, "path", json_string(info->path)) == 0 &&
             json_object_set_new(output, "narHash", json_string(nar_hash)) == 0 &&
             json_object_set(output, "references", refs) == 0 &&
             json_object_set(outputs, result->outputs[i].name, output) == 0;
        json_decref(refs);
        json_decref(output);
    }
    json_decref(outputs);
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}
