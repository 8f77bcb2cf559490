/*
 * The store's lifecycle commands (docs/store.md, "Garbage collection"):
 *   store gc [--dry-run] [--max-freed SIZE] [--input-cache DIR]
 *       removes what no root or running process keeps (store_gc.h), then the input cache's
 *       entries of what went and the image cache's entries no replica uses (lifecycle.h); one
 *       line per object on stdout, a summary on stderr
 *   store roots [--remove NAME]
 *       lists the roots and the pins of running processes, or removes a root
 *   store du [--input-cache DIR]
 *       what the store, its temporary files and the data dir's caches take
 * Each also takes the store options of the other store commands (--store URL). The input cache
 * is the data dir's (<data dir>/input-cache) when the store is the data dir's store, or DIR.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ocibuild/build_inputs.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/lifecycle.h"
#include "ocibuild/number.h"
#include "ocibuild/store_gc.h"
#include "ocibuild/store_roots.h"

typedef struct gc_args {
    const char *store_url;
    const char *blob_url;
    const char *directory_url;
    const char *input_cache;
    const char *remove;
    bool dry_run;
    uint64_t max_freed;
} gc_args;

enum {
    OPT_STORE = 256,
    OPT_BLOB,
    OPT_DIRECTORY,
    OPT_DRY_RUN,
    OPT_MAX_FREED,
    OPT_INPUT_CACHE,
    OPT_REMOVE
};

/* Parses the options a command allows (a string of OPT_ codes); 0, or the exit code. */
static int parse_gc_args(int argc, char **argv, const char *usage, const int *allowed, gc_args *out)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, OPT_STORE},
        {"blob-service", required_argument, NULL, OPT_BLOB},
        {"directory-service", required_argument, NULL, OPT_DIRECTORY},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"max-freed", required_argument, NULL, OPT_MAX_FREED},
        {"input-cache", required_argument, NULL, OPT_INPUT_CACHE},
        {"remove", required_argument, NULL, OPT_REMOVE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        bool ok = c == OPT_STORE || c == OPT_BLOB || c == OPT_DIRECTORY;
        for (const int *a = allowed; *a && !ok; a++)
            ok = *a == c;
        if (c == 'h') {
            fputs(usage, stdout);
            return -1;
        }
        if (!ok) {
            cli_failf("store %s: unknown or incomplete option '%s'", argv[0], argv[optind - 1]);
            fputs(usage, stderr);
            return 2;
        }
        obi_error *err = NULL;
        switch (c) {
        case OPT_STORE:
            out->store_url = optarg;
            break;
        case OPT_BLOB:
            out->blob_url = optarg;
            break;
        case OPT_DIRECTORY:
            out->directory_url = optarg;
            break;
        case OPT_DRY_RUN:
            out->dry_run = true;
            break;
        case OPT_MAX_FREED:
            if (obi_parse_memory(optarg, &out->max_freed, &err) < 0) {
                obi_error_prefix(&err, -EINVAL, "--max-freed");
                return cli_fail(err) + 1;
            }
            break;
        case OPT_INPUT_CACHE:
            out->input_cache = optarg;
            break;
        case OPT_REMOVE:
            out->remove = optarg;
            break;
        }
    }
    if (optind != argc) {
        cli_failf("store %s: unexpected argument '%s'", argv[0], argv[optind]);
        fputs(usage, stderr);
        return 2;
    }
    return 0;
}

static int open_gc_store(const gc_args *args, obi_store **out, obi_error **err)
{
    const char *blobs = args->blob_url ? args->blob_url : args->store_url;
    const char *directories = args->directory_url ? args->directory_url : args->store_url;
    int r = obi_store_open(blobs, directories, out, err);
    return r < 0 ? obi_error_prefix(err, r, "open store") : 0;
}

/* "<n> bytes (1.5 MiB)" into buf. */
static const char *human_bytes(uint64_t bytes, char buf[48])
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    double value = (double)bytes;
    size_t unit = 0;
    if (bytes < 1024) {
        snprintf(buf, 48, "%llu bytes", (unsigned long long)bytes);
        return buf;
    }
    for (value /= 1024; value >= 1024 && unit + 1 < OBI_ARRAY_SIZE(units); unit++)
        value /= 1024;
    snprintf(buf, 48, "%llu bytes (%.1f %s)", (unsigned long long)bytes, value, units[unit]);
    return buf;
}

/* The input cache to prune or measure: DIR (--input-cache), else the data dir's when the store
 * is the data dir's store (a cache filled from another store is judged by that one's roots). */
static char *input_cache_dir(const char *dir, const obi_store *store)
{
    if (dir)
        return strdup(dir);
    cleanup_free char *data_dir = obi_default_data_dir();
    cleanup_free char *default_store = data_dir ? obi_path_join(data_dir, "store") : NULL;
    if (!default_store || !store->local_root || strcmp(default_store, store->local_root) != 0)
        return NULL;
    return obi_path_join(data_dir, "input-cache");
}

/* ---- roots ---- */

int cli_add_root(obi_store *store, const char *root, const obi_node *nodes, size_t n,
                 obi_error **err)
{
    bool path = root[0] == '/' || !strncmp(root, "./", 2) || !strncmp(root, "../", 3);
    return path ? obi_store_root_add_indirect(store, root, nodes, n, err)
                : obi_store_root_add(store, root, nodes, n, err);
}

/* ---- gc ---- */

static const char GC_USAGE[] =
    "usage: ocibuild store gc [--store URL] [--dry-run] [--max-freed SIZE] [--input-cache DIR]\n"
    "  removes every blob and directory no root (store roots) or running build or import\n"
    "  keeps, then the input cache's entries of what is gone and the images no service\n"
    "  replica uses; prints each object removed\n"
    "  --dry-run          print what would be removed, remove nothing\n"
    "  --max-freed SIZE   stop removing blobs after SIZE bytes (e.g. 10Gi)\n"
    "  --input-cache DIR  the input cache to prune (default: the data dir's, for its store)\n";

static int print_removed(obi_store_object_kind kind, const obi_digest *digest, uint64_t bytes,
                         void *ctx, obi_error **err)
{
    (void)err;
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(digest, hex);
    printf("%s %s %s %llu\n", *(bool *)ctx ? "would remove" : "removed",
           obi_store_object_kind_name(kind), hex, (unsigned long long)bytes);
    return 0;
}

static bool cache_entry_live(obi_store_object_kind kind, const obi_digest *digest, void *ctx)
{
    return obi_store_gc_is_live(ctx, kind, digest);
}

/* What one collection did. */
typedef struct gc_totals {
    obi_store_gc_stats store;
    obi_input_cache_prune_stats cache;
    obi_image_prune_stats images; /* images.skipped is the caller's to free */
    bool images_pruned;
} gc_totals;

/* One collection, for `store gc` and the automatic one: the store (blobs up to max_freed
 * bytes), then under the same lock the input cache (of input_cache, else the data dir's for
 * its store), then the data dir's image cache. */
static int collect(obi_store *store, const char *input_cache, bool dry_run, uint64_t max_freed,
                   obi_store_gc_remove_fn on_remove, void *ctx, gc_totals *out, obi_error **err)
{
    memset(out, 0, sizeof *out);
    cleanup_store_gc obi_store_gc *gc = NULL;
    int r = obi_store_gc_begin(store, &gc, err);
    if (r < 0)
        return r;
    obi_store_gc_options options = {dry_run, max_freed, on_remove, ctx};
    if ((r = obi_store_gc_sweep(gc, &options, &out->store, err)) < 0)
        return r;
    /* under gc's lock still: a build pins its inputs before it materializes them */
    cleanup_free char *cache = input_cache_dir(input_cache, store);
    if (cache &&
        (r = obi_input_cache_prune(cache, cache_entry_live, gc, dry_run, &out->cache, err)) < 0)
        return r;
    obi_store_gc_end(steal_pointer(&gc));
    /* the image cache, rooted by the replicas that use its entries (lifecycle.h) */
    cleanup_free char *data_dir = cache && !input_cache ? obi_default_data_dir() : NULL;
    if (!data_dir)
        return 0;
    out->images_pruned = true;
    return obi_lifecycle_prune_images(data_dir, dry_run, &out->images, err);
}

int cli_store_gc(int argc, char **argv)
{
    static const int allowed[] = {OPT_DRY_RUN, OPT_MAX_FREED, OPT_INPUT_CACHE, 0};
    gc_args args = {0};
    int r = parse_gc_args(argc, argv, GC_USAGE, allowed, &args);
    if (r != 0)
        return r < 0 ? 0 : r;
    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (open_gc_store(&args, &store, &err) < 0)
        return cli_fail(err);
    gc_totals totals;
    r = collect(store, args.input_cache, args.dry_run, args.max_freed, print_removed, &args.dry_run,
                &totals, &err);
    cleanup_free char *images_skipped = totals.images.skipped;
    if (r < 0)
        return cli_fail(err);
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    const obi_store_gc_stats *stats = &totals.store;
    char freed[48], cache_freed[48], images_freed[48];
    fprintf(stderr,
            "store gc%s: %llu roots keep %llu blobs and %llu directories%s; %s %llu blobs and "
            "%llu directories, %s; input cache: %llu entries, %s\n",
            args.dry_run ? " (dry run)" : "", (unsigned long long)stats->roots,
            (unsigned long long)stats->live_blobs, (unsigned long long)stats->live_directories,
            stats->missing ? " (some missing: run store verify)" : "",
            args.dry_run ? "would remove" : "removed", (unsigned long long)stats->blobs_removed,
            (unsigned long long)stats->directories_removed, human_bytes(stats->bytes_freed, freed),
            (unsigned long long)totals.cache.entries, human_bytes(totals.cache.bytes, cache_freed));
    if (images_skipped)
        fprintf(stderr, "store gc: image cache kept: %s\n", images_skipped);
    else if (totals.images_pruned)
        fprintf(stderr, "store gc: image cache: %llu unused images, %s\n",
                (unsigned long long)totals.images.entries,
                human_bytes(totals.images.bytes, images_freed));
    return 0;
}

/* ---- automatic gc (docs/store.md "Automatic collection") ---- */

/* $NAME as a size (number.h's units), or 0 when unset or empty. */
static int size_from_env(const char *name, uint64_t *out, obi_error **err)
{
    const char *text = getenv(name);
    *out = 0;
    if (!text || !*text)
        return 0;
    int r = obi_parse_memory(text, out, err);
    return r < 0 ? obi_error_prefix(err, r, "$%s", name) : 0;
}

int cli_store_auto_gc(obi_store *store, const obi_node *keep, size_t n_keep, obi_store_pin **kept,
                      obi_error **err)
{
    if (kept)
        *kept = NULL;
    uint64_t min_free = 0, max_free = 0, available = 0;
    int r = size_from_env("OCIBUILD_MIN_FREE", &min_free, err);
    if (r >= 0)
        r = size_from_env("OCIBUILD_MAX_FREE", &max_free, err);
    if (r < 0)
        return r;
    if (max_free && max_free < min_free)
        return obi_error_set(err, -EINVAL,
                             "$OCIBUILD_MAX_FREE (%llu bytes) is less than $OCIBUILD_MIN_FREE "
                             "(%llu bytes)",
                             (unsigned long long)max_free, (unsigned long long)min_free);
    if (!min_free || !store->local_root)
        return 0; /* off, or a remote store: collected where it is served */
    if ((r = obi_store_available_bytes(store, &available, err)) < 0)
        return r;
    if (available >= min_free)
        return 0;
    char have[48], under[48], until[48], freed[48], now[48];
    fprintf(stderr,
            "ocibuild: %s free for the store %s, under $OCIBUILD_MIN_FREE (%s): collecting "
            "garbage%s%s\n",
            human_bytes(available, have), store->local_root, human_bytes(min_free, under),
            max_free ? " until $OCIBUILD_MAX_FREE is free: " : "",
            max_free ? human_bytes(max_free, until) : "");
    cleanup_store_pin obi_store_pin *pin = NULL;
    if (n_keep && (r = obi_store_pin_new(store, &pin, err)) < 0)
        return r;
    for (size_t i = 0; i < n_keep; i++)
        if ((r = obi_store_pin_add(pin, &keep[i], err)) < 0)
            return obi_error_prefix(err, r, "automatic gc: pin %zu", i);
    gc_totals totals;
    r = collect(store, NULL, false, max_free ? max_free - available : 0, NULL, NULL, &totals, err);
    free(totals.images.skipped);
    if (r < 0)
        return obi_error_prefix(err, r, "automatic gc ($OCIBUILD_MIN_FREE)");
    if ((r = obi_store_available_bytes(store, &available, err)) < 0)
        return r;
    fprintf(stderr,
            "ocibuild: gc removed %llu blobs and %llu directories (%s) and %llu input cache "
            "entries; %s free now%s\n",
            (unsigned long long)totals.store.blobs_removed,
            (unsigned long long)totals.store.directories_removed,
            human_bytes(totals.store.bytes_freed, freed), (unsigned long long)totals.cache.entries,
            human_bytes(available, now),
            available < min_free ? ", still under $OCIBUILD_MIN_FREE: the rest is rooted" : "");
    if (kept)
        *kept = steal_pointer(&pin);
    return 0;
}

static const char ROOTS_USAGE[] =
    "usage: ocibuild store roots [--store URL] [--remove NAME]\n"
    "  lists the roots (STORE/gcroots/NAME, one line per object: NAME KIND DIGEST; indirect\n"
    "  ones as NAME -> FILE) and the pins of running builds and imports (temproots/TOKEN)\n"
    "  --remove NAME      remove the root NAME\n";

static int print_root(const obi_store_root *root, void *ctx, obi_error **err)
{
    (void)ctx;
    (void)err;
    for (size_t i = 0; i < root->n_refs; i++) {
        char hex[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(&root->refs[i].digest, hex);
        printf("%s%s%s %s %s\n", root->name, root->target ? " -> " : "",
               root->target ? root->target : "", obi_store_object_kind_name(root->refs[i].kind),
               hex);
    }
    return 0;
}

int cli_store_roots(int argc, char **argv)
{
    static const int allowed[] = {OPT_REMOVE, 0};
    gc_args args = {0};
    int r = parse_gc_args(argc, argv, ROOTS_USAGE, allowed, &args);
    if (r != 0)
        return r < 0 ? 0 : r;
    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (open_gc_store(&args, &store, &err) < 0)
        return cli_fail(err);
    if (args.remove)
        return obi_store_root_remove(store, args.remove, &err) < 0 ? cli_fail(err) : 0;
    if (obi_store_roots_list(store, true, false, print_root, NULL, &err) < 0)
        return cli_fail(err);
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}

/* ---- du ---- */

static const char DU_USAGE[] =
    "usage: ocibuild store du [--store URL] [--input-cache DIR]\n"
    "  what the store takes (blobs, directories, temporary files), its roots, and the data\n"
    "  dir's input cache, image cache and volumes\n";

static void print_area(const char *what, uint64_t count, const char *unit, uint64_t bytes,
                       const char *where)
{
    char human[48];
    printf("%-14s %10llu %-12s %s%s%s\n", what, (unsigned long long)count, unit,
           human_bytes(bytes, human), where ? "  " : "", where ? where : "");
}

/* A directory of the data dir, measured like du (files, allocated bytes). */
static void print_data_area(const char *what, const char *dir)
{
    uint64_t files = 0, bytes = 0;
    cleanup_error obi_error *err = NULL;
    if (dir && obi_tree_usage_at(AT_FDCWD, dir, &files, &bytes, &err) == 0)
        print_area(what, files, "files", bytes, dir);
    else if (dir)
        printf("%-14s %s\n", what, err ? err->message : "?");
}

int cli_store_du(int argc, char **argv)
{
    static const int allowed[] = {OPT_INPUT_CACHE, 0};
    gc_args args = {0};
    int r = parse_gc_args(argc, argv, DU_USAGE, allowed, &args);
    if (r != 0)
        return r < 0 ? 0 : r;
    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (open_gc_store(&args, &store, &err) < 0)
        return cli_fail(err);
    obi_store_usage usage;
    if (obi_store_usage_get(store, &usage, &err) < 0)
        return cli_fail(err);
    print_area("blobs", usage.blobs, "files", usage.blob_bytes, NULL);
    print_area("directories", usage.directories, "rows", usage.directory_bytes, NULL);
    print_area("temporary", usage.temp_files, "files", usage.temp_bytes, NULL);
    printf("%-14s %10llu %-12s %llu pins of running processes\n", "roots",
           (unsigned long long)usage.roots, "roots", (unsigned long long)usage.pins);
    cleanup_free char *cache = input_cache_dir(args.input_cache, store);
    print_data_area("input cache", cache);
    cleanup_free char *data_dir = obi_default_data_dir();
    static const char *const areas[][2] = {{"image cache", "images"}, {"volumes", "volumes"}};
    for (size_t i = 0; data_dir && i < OBI_ARRAY_SIZE(areas); i++) {
        cleanup_free char *dir = obi_path_join(data_dir, areas[i][1]);
        print_data_area(areas[i][0], dir);
    }
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}
