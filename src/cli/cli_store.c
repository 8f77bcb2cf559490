/*
 * ocibuild store SUBCOMMAND: looking into and moving trees in and out of the castore.
 *   import [--name NAME] PATH   ingest PATH; print the root Node as protobuf JSON (one line)
 *   export NODE_JSON DEST       write the node at DEST (the JSON itself, a file holding it, or
 *                               "-" for stdin); of a Build, each output into DEST/<its name>
 *   cat DIGEST                  write a blob (hex or b3:base64 digest) to stdout
 *   ls NODE_JSON                list the tree under a node: kind, size, digest, path
 *   verify [--repair]           check every object of the store (store_verify.h): one line per
 *                               faulty object on stdout, a summary on stderr, exit 1 if any;
 *                               --repair removes the damaged ones, to be imported anew
 *   gc, roots, du               the store's lifecycle (cli_store_gc.c)
 *   mount [--allow-other] NODE_JSON|ROOT MOUNTPOINT
 *                               serve a tree read-only over FUSE (castore_fs.h) until SIGINT,
 *                               SIGTERM, SIGHUP or an unmount from outside (fusermount3 -u)
 * Every subcommand takes --store URL (default: service_addrs.h's rule, then
 * obi_default_store_url()).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_progress.h"
#include "ocibuild/buf.h"
#include "ocibuild/castore_fs.h"
#include "ocibuild/build_outputs.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/json_util.h"
#include "ocibuild/node.h"
#include "ocibuild/service_addrs.h"
#include "ocibuild/store.h"
#include "ocibuild/store_roots.h"
#include "ocibuild/store_verify.h"

#define CAT_READ_SIZE (1 << 20)

typedef struct store_args {
    const char *store_url;
    const char *blob_url;
    const char *directory_url;
    const char *name;
    const char *root; /* import: keep the result as this root */
    bool repair;      /* verify: remove damaged objects */
    bool allow_other;
    char **positional;
    int n_positional;
} store_args;

static const char STORE_USAGE[] =
    "usage: ocibuild store SUBCOMMAND [--store URL] [--blob-service URL]\n"
    "                                 [--directory-service URL] ARGS...\n"
    "commands:\n"
    "  import [--name NAME] PATH   ingest PATH, print the root node (protobuf JSON)\n"
    "  export NODE_JSON|FILE DEST  write the node at DEST ('-': stdin); of a Build (what\n"
    "                              build --json prints), each output into DEST/<name>\n"
    "  cat DIGEST                  write a blob to stdout (hex or b3:base64 digest)\n"
    "  ls NODE_JSON                list the tree under a node ('-' reads it from stdin)\n"
    "  verify [--repair]           check every blob and directory; print each faulty one\n"
    "                              (--repair: remove the damaged ones, to be stored anew)\n"
    "  gc [--dry-run] [--max-freed SIZE]  remove what no root or running build keeps\n"
    "  roots [--remove NAME]       list the roots (and pins of running builds), remove one\n"
    "  du                          what the store and the data dir's caches take\n"
    "  import --root NAME ...      also keep the import as the root NAME (store roots)\n"
    "  mount [--allow-other] NODE_JSON|ROOT MOUNTPOINT\n"
    "                              serve the tree read-only over FUSE until interrupted or\n"
    "                              unmounted (fusermount3 -u); NODE_JSON: a node or an array\n"
    "                              of nodes ('-': stdin), ROOT: a directory's digest\n";

typedef enum store_flag {
    FLAG_NAME = 1,        /* --name NAME */
    FLAG_ALLOW_OTHER = 2, /* --allow-other */
} store_flag;

/* Parses the store options and the command's flags; the rest are positional. Returns -1 on a
 * usage error. */
static int parse_args(int argc, char **argv, unsigned flags, store_args *out)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, 's'},
        {"blob-service", required_argument, NULL, 'b'},
        {"directory-service", required_argument, NULL, 'd'},
        {"name", required_argument, NULL, 'n'},
        {"root", required_argument, NULL, 'r'},
        {"repair", no_argument, NULL, 'R'},
        {"allow-other", no_argument, NULL, 'o'},
        {NULL, 0, NULL, 0},
    };
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 's':
            out->store_url = optarg;
            break;
        case 'b':
            out->blob_url = optarg;
            break;
        case 'd':
            out->directory_url = optarg;
            break;
        case 'n':
            if (!(flags & FLAG_NAME))
                return cli_failf("--name is only valid for 'store import'"), -1;
            out->name = optarg;
            break;
        case 'r':
            if (!(flags & FLAG_NAME))
                return cli_failf("--root is only valid for 'store import'"), -1;
            out->root = optarg;
            break;
        case 'R':
            if (strcmp(argv[0], "verify") != 0)
                return cli_failf("--repair is only valid for 'store verify'"), -1;
            out->repair = true;
            break;
        case 'o':
            if (!(flags & FLAG_ALLOW_OTHER))
                return cli_failf("--allow-other is only valid for 'store mount'"), -1;
            out->allow_other = true;
            break;
        default:
            return cli_failf("store %s: unknown or incomplete option '%s'", argv[0],
                             argv[optind - 1]),
                   -1;
        }
    }
    out->positional = argv + optind;
    out->n_positional = argc - optind;
    return 0;
}

/* --blob-service / --directory-service override --store; without them the environment
 * (service_addrs.h), else the local store. */
static int open_store(const store_args *args, obi_store **out, obi_error **err)
{
    obi_service_flags flags = {args->store_url, args->blob_url, args->directory_url, NULL};
    obi_service_addrs addrs = {0};
    int r = obi_service_addrs_resolve(&flags, &addrs, err);
    if (r < 0)
        return obi_error_prefix(err, r, "open store");
    r = obi_store_open(addrs.blobs, addrs.directories, out, err);
    obi_service_addrs_clear(&addrs);
    return r < 0 ? obi_error_prefix(err, r, "open store") : 0;
}

/* JSON from an argument: "-" reads stdin, text starting with '{' is the JSON itself, anything
 * else names a file holding it. Errors name where it came from. */
static int load_json_arg(const char *arg, json_t **out, obi_error **err)
{
    json_error_t jerr;
    const char *text = arg + strspn(arg, " \t\n");
    bool literal = text[0] == '{', from_stdin = !strcmp(arg, "-");
    json_t *json = from_stdin ? json_loadf(stdin, 0, &jerr)
                   : literal  ? json_loads(arg, 0, &jerr)
                              : json_load_file(arg, 0, &jerr);
    const char *where = from_stdin ? "node JSON from stdin" : literal ? "node JSON" : arg;
    if (!json && jerr.line < 1)
        return obi_error_set(err, -EINVAL, "%s: %s", where, jerr.text);
    if (!json)
        return obi_error_set(err, -EINVAL, "%s: %s (line %d, column %d)", where, jerr.text,
                             jerr.line, jerr.column);
    *out = json;
    return 0;
}

/* The node from a JSON argument (load_json_arg). */
static int node_from_json_value(const json_t *json, obi_node *out, obi_error **err)
{
    int r = obi_node_from_json(json, out, err);
    if (r < 0)
        return obi_error_prefix(err, r, "node JSON");
    r = obi_node_validate(out, err);
    if (r < 0) {
        obi_node_clear(out);
        return obi_error_prefix(err, r, "node JSON");
    }
    return 0;
}

static int read_node_arg(const char *arg, obi_node *out, obi_error **err)
{
    cleanup_json json_t *json = NULL;
    int r = load_json_arg(arg, &json, err);
    return r < 0 ? r : node_from_json_value(json, out, err);
}

static int store_import(store_args *args)
{
    if (args->n_positional != 1)
        return cli_failf(
            "usage: ocibuild store import [--store URL] [--name NAME] [--root NAME] PATH");
    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (open_store(args, &store, &err) < 0 || cli_store_auto_gc(store, NULL, 0, NULL, &err) < 0)
        return cli_fail(err);
    cleanup_free char *what = NULL;
    if (asprintf(&what, "importing %s", args->positional[0]) < 0)
        return cli_failf("import: out of memory");
    cli_progress progress;
    cli_progress_init(&progress, what, true);
    obi_ingest_options options = {.name = args->name, .progress = &progress.hook};
    cleanup_node obi_node root = {0};
    /* gc held off from the first lookup until the result is rooted (a half-done import is
     * never collected); without --root the import is kept until the next gc */
    cleanup_store_pin obi_store_pin *pin = NULL;
    int r = obi_store_pin_new(store, &pin, &err);
    if (r == 0)
        r = obi_store_pin_hold_gc(pin, &err);
    if (r == 0)
        r = obi_ingest_path(store->blobs, store->directories, args->positional[0], &options, &root,
                            &err);
    cli_progress_done(&progress);
    if (r == 0 && args->root)
        r = cli_add_root(store, args->root, &root, 1, &err);
    if (r < 0)
        return cli_fail(err);
    obi_store_pin_release_gc(pin);
    json_t *json = obi_node_to_json(&root);
    cleanup_free char *text = json ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    if (!text)
        return cli_failf("import: out of memory");
    printf("%s\n", text);
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}

/* A Build (what `ocibuild build --json` prints) exports its outputs into DEST, each under its
 * name; a Node exports to DEST itself. */
static int store_export(store_args *args)
{
    if (args->n_positional != 2)
        return cli_failf("usage: ocibuild store export [--store URL] NODE_JSON|BUILD_JSON|FILE|- "
                         "DEST");
    const char *source = args->positional[0], *dest = args->positional[1];
    obi_error *err = NULL;
    cleanup_free char *what = NULL;
    if (asprintf(&what, "exporting to %s", dest) < 0)
        return cli_failf("export: out of memory");
    cli_progress progress;
    int r;
    cleanup_json json_t *json = NULL;
    if (load_json_arg(source, &json, &err) < 0)
        return cli_fail(err);
    cleanup_store obi_store *store = NULL;
    if (json_object_get(json, "outputs")) {
        cleanup_build obi_build *build = NULL;
        if (obi_build_from_json(json, &build, &err) < 0) {
            obi_error_prefix(&err, -EINVAL, "%s: Build JSON", source);
            return cli_fail(err);
        }
        if (open_store(args, &store, &err) < 0)
            return cli_fail(err);
        cli_progress_init(&progress, what, true);
        r = obi_build_outputs_export(store, build, dest, &progress.hook, &err);
        cli_progress_done(&progress);
        return r < 0 ? cli_fail(err) : 0;
    }
    cleanup_node obi_node node = {0};
    if (node_from_json_value(json, &node, &err) < 0 || open_store(args, &store, &err) < 0)
        return cli_fail(err);
    cli_progress_init(&progress, what, true);
    r = obi_export_node_progress(store->blobs, store->directories, &node, dest, &progress.hook,
                                 &err);
    cli_progress_done(&progress);
    return r < 0 ? cli_fail(err) : 0;
}

/* Hex (64 characters) or "b3:" + standard base64. */
static int parse_digest(const char *text, obi_digest *out, obi_error **err)
{
    if (!strncmp(text, "b3:", 3)) {
        cleanup_free uint8_t *bytes = NULL;
        size_t len = 0;
        int r = obi_base64_decode(text + 3, strlen(text + 3), &bytes, &len, err);
        if (r < 0)
            return obi_error_prefix(err, r, "digest %s", text);
        if (len != OBI_DIGEST_LEN)
            return obi_error_set(err, -EINVAL, "digest %s: %zu bytes, expected %d", text, len,
                                 OBI_DIGEST_LEN);
        memcpy(out->bytes, bytes, OBI_DIGEST_LEN);
        return 0;
    }
    int r = obi_digest_from_hex(text, out, err);
    return r < 0
               ? obi_error_prefix(err, r, "digest %s (expected 64 hex digits or b3:<base64>)", text)
               : 0;
}

static int store_cat(store_args *args)
{
    if (args->n_positional != 1)
        return cli_failf("usage: ocibuild store cat [--store URL] DIGEST");
    obi_error *err = NULL;
    obi_digest digest;
    if (parse_digest(args->positional[0], &digest, &err) < 0)
        return cli_fail(err);
    cleanup_store obi_store *store = NULL;
    if (open_store(args, &store, &err) < 0)
        return cli_fail(err);
    cleanup_blob_reader obi_blob_reader *reader = NULL;
    if (obi_blob_open_read(store->blobs, &digest, &reader, &err) < 0)
        return cli_fail(err);
    cleanup_free uint8_t *buf = malloc(CAT_READ_SIZE);
    if (!buf)
        return cli_failf("cat: out of memory");
    for (;;) {
        size_t n = 0;
        if (obi_blob_read(reader, buf, CAT_READ_SIZE, &n, &err) < 0)
            return cli_fail(err);
        if (n == 0)
            break;
        int r = obi_write_all(STDOUT_FILENO, buf, n);
        if (r < 0)
            return cli_failf("write to stdout: %s", strerror(-r));
    }
    return 0;
}

static void print_entry(const char *kind, uint64_t size, const obi_digest *digest,
                        const obi_buf *path, const obi_node *node)
{
    cleanup_free char *b3 = digest ? obi_digest_to_b3_string(digest) : NULL;
    if (node->kind == OBI_NODE_SYMLINK)
        printf("%-4s %12s %-47s %s -> %s\n", kind, "-", "-", (const char *)path->data,
               (const char *)node->target.data);
    else
        printf("%-4s %12llu %-47s %s\n", kind, (unsigned long long)size, b3 ? b3 : "-",
               (const char *)path->data);
}

static int list_node(obi_directory_service *dirs, const obi_node *node, obi_buf *path,
                     obi_error **err);

static int list_children(obi_directory_service *dirs, const obi_node *list, size_t n, obi_buf *path,
                         obi_error **err)
{
    size_t len = path->len;
    for (size_t i = 0; i < n; i++) {
        path->len = len;
        if (obi_buf_append_str(path, "/") < 0 ||
            obi_buf_append(path, list[i].name.data, list[i].name.len) < 0)
            return obi_error_oom(err);
        int r = list_node(dirs, &list[i], path, err);
        if (r < 0)
            return r;
    }
    path->len = len;
    path->data[len] = 0;
    return 0;
}

static int list_node(obi_directory_service *dirs, const obi_node *node, obi_buf *path,
                     obi_error **err)
{
    switch (node->kind) {
    case OBI_NODE_FILE:
        print_entry(node->executable ? "exec" : "file", node->size, &node->digest, path, node);
        return 0;
    case OBI_NODE_SYMLINK:
        print_entry("link", 0, NULL, path, node);
        return 0;
    case OBI_NODE_DIRECTORY:
        break;
    }
    print_entry("dir", node->size, &node->digest, path, node);
    cleanup_directory obi_directory *dir = NULL;
    int r = obi_directory_get(dirs, &node->digest, &dir, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", (const char *)path->data);
    if ((r = list_children(dirs, dir->directories, dir->n_directories, path, err)) < 0 ||
        (r = list_children(dirs, dir->files, dir->n_files, path, err)) < 0 ||
        (r = list_children(dirs, dir->symlinks, dir->n_symlinks, path, err)) < 0)
        return r;
    return 0;
}

static int store_ls(store_args *args)
{
    if (args->n_positional != 1)
        return cli_failf("usage: ocibuild store ls [--store URL] NODE_JSON|-");
    obi_error *err = NULL;
    cleanup_node obi_node node = {0};
    if (read_node_arg(args->positional[0], &node, &err) < 0)
        return cli_fail(err);
    cleanup_store obi_store *store = NULL;
    if (open_store(args, &store, &err) < 0)
        return cli_fail(err);
    cleanup_buf obi_buf path = OBI_BUF_INIT;
    if (obi_buf_append(&path, node.name.data, node.name.len) < 0)
        return cli_failf("ls: out of memory");
    if (list_node(store->directories, &node, &path, &err) < 0) {
        fflush(stdout);
        return cli_fail(err);
    }
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}

/* What verify found: damaged objects are collected for --repair. */
typedef struct verify_report {
    obi_digest *damaged[2]; /* by kind: blobs, directories */
    size_t n_damaged[2];
} verify_report;

static int print_fault(const obi_store_fault *fault, void *ctx, obi_error **err)
{
    verify_report *report = ctx;
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&fault->digest, hex);
    printf("%s %s: %s\n", obi_store_object_kind_name(fault->kind), hex, fault->problem);
    if (!fault->damaged)
        return 0;
    size_t k = fault->kind == OBI_STORE_BLOB ? 0 : 1;
    obi_digest *grown = realloc(report->damaged[k], (report->n_damaged[k] + 1) * sizeof *grown);
    if (!grown)
        return obi_error_oom(err);
    grown[report->n_damaged[k]++] = fault->digest;
    report->damaged[k] = grown;
    return 0;
}

/* --repair: removes the damaged objects, so that importing or building them again stores them
 * anew (a directory that only names a missing object stays: storing that object repairs it). */
static int remove_damaged(obi_store *store, const verify_report *report, obi_error **err)
{
    for (size_t i = 0; i < report->n_damaged[0]; i++) {
        int r = obi_blob_service_remove(store->blobs, &report->damaged[0][i], NULL, err);
        if (r < 0)
            return r;
    }
    return obi_directory_service_remove(store->directories, report->damaged[1],
                                        report->n_damaged[1], NULL, err);
}

static int store_verify(store_args *args)
{
    if (args->n_positional != 0)
        return cli_failf("usage: ocibuild store verify [--store URL] [--repair]");
    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (open_store(args, &store, &err) < 0)
        return cli_fail(err);
    obi_store_verify_stats stats;
    verify_report report = {{NULL, NULL}, {0, 0}};
    int r = obi_store_verify(store, print_fault, &report, &stats, &err);
    if (r == 0 && args->repair)
        r = remove_damaged(store, &report, &err);
    size_t removed = report.n_damaged[0] + report.n_damaged[1];
    free(report.damaged[0]);
    free(report.damaged[1]);
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    if (r < 0)
        return cli_fail(err);
    fprintf(stderr, "store verify: %llu blobs (%llu bytes), %llu directories: %llu faulty\n",
            (unsigned long long)stats.blobs, (unsigned long long)stats.blob_bytes,
            (unsigned long long)stats.directories, (unsigned long long)stats.faults);
    if (args->repair)
        fprintf(stderr,
                "store verify: removed %zu damaged objects; import or build them again to "
                "store them anew\n",
                removed);
    return stats.faults ? 1 : 0;
}

/* ---- mount ---- */

/* The mount's root from the argument: a node or an array of nodes as JSON ("-": stdin), or a
 * directory's digest (its size is read from the directory itself). */
static int read_mount_root(const char *arg, obi_store *store, obi_node **nodes_out, size_t *n_out,
                           obi_error **err)
{
    const char *start = arg + strspn(arg, " \t\n");
    if (*start != '{' && *start != '[' && strcmp(arg, "-") != 0) {
        obi_digest digest;
        cleanup_directory obi_directory *dir = NULL;
        int r = parse_digest(arg, &digest, err);
        if (r < 0 || (r = obi_directory_get(store->directories, &digest, &dir, err)) < 0)
            return r;
        obi_node *node = calloc(1, sizeof *node);
        if (!node ||
            obi_node_init_directory(node, "root", 4, &digest, obi_directory_size(dir)) < 0) {
            free(node);
            return obi_error_oom(err);
        }
        *nodes_out = node;
        *n_out = 1;
        return 0;
    }
    json_error_t jerr;
    cleanup_json json_t *json =
        strcmp(arg, "-") ? json_loads(arg, 0, &jerr) : json_loadf(stdin, 0, &jerr);
    if (!json)
        return obi_error_set(err, -EINVAL, "node JSON: %s (line %d, column %d)", jerr.text,
                             jerr.line, jerr.column);
    size_t n = json_is_array(json) ? json_array_size(json) : 1;
    obi_node *nodes = calloc(n ? n : 1, sizeof *nodes);
    if (!nodes)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_is_array(json) ? json_array_get(json, i) : json;
        int r = obi_node_from_json(item, &nodes[i], err);
        if (r < 0) {
            for (size_t j = 0; j < i; j++)
                obi_node_clear(&nodes[j]);
            free(nodes);
            return obi_error_prefix(err, r, "node JSON[%zu]", i);
        }
    }
    *nodes_out = nodes;
    *n_out = n;
    return 0;
}

static int mount_cancel_pipe[2] = {-1, -1};

static void on_mount_signal(int sig)
{
    (void)sig;
    int saved = errno;
    (void)!write(mount_cancel_pipe[1], "x", 1);
    errno = saved;
}

/* What the filesystem answered a reader with EIO for: one line on stderr each. */
static void log_mount_error(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "ocibuild: store mount: %s\n", line);
}

static int store_mount(store_args *args)
{
    if (args->n_positional != 2)
        return cli_failf("usage: ocibuild store mount [--store URL] [--allow-other] "
                         "NODE_JSON|ROOT MOUNTPOINT");
    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (open_store(args, &store, &err) < 0)
        return cli_fail(err);
    obi_node *nodes = NULL;
    size_t n_nodes = 0;
    if (read_mount_root(args->positional[0], store, &nodes, &n_nodes, &err) < 0)
        return cli_fail(err);
    if (pipe2(mount_cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return cli_failf("pipe: %s", strerror(errno));
    struct sigaction sa = {0};
    sa.sa_handler = on_mount_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    obi_castore_fs_options options = OBI_CASTORE_FS_OPTIONS_INIT;
    options.allow_other = args->allow_other;
    options.log = log_mount_error;
    obi_castore_fs *fs = NULL;
    int r = obi_castore_fs_available(args->allow_other, &err);
    if (r == 0)
        r = obi_castore_fs_mount(store->blobs, store->directories, nodes, n_nodes,
                                 args->positional[1], &options, &fs, &err);
    for (size_t i = 0; i < n_nodes; i++)
        obi_node_clear(&nodes[i]);
    free(nodes);
    if (r < 0)
        return cli_fail(err);
    fprintf(stderr, "ocibuild: mounted at %s\n", args->positional[1]);
    r = obi_castore_fs_wait(fs, mount_cancel_pipe[0], &err);
    int closed = obi_castore_fs_close(fs, r < 0 ? NULL : &err);
    if (r < 0 || closed < 0)
        return cli_fail(err);
    return 0;
}

typedef struct store_command {
    const char *name;
    int (*run)(store_args *args);
    unsigned flags;
} store_command;

/* Commands that parse their own options (cli_store_gc.c). */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} LIFECYCLE_COMMANDS[] = {{"gc", cli_store_gc}, {"roots", cli_store_roots}, {"du", cli_store_du}};

static const store_command STORE_COMMANDS[] = {
    {"import", store_import, FLAG_NAME},
    {"export", store_export, 0},
    {"cat", store_cat, 0},
    {"ls", store_ls, 0},
    {"verify", store_verify, 0},
    {"mount", store_mount, FLAG_ALLOW_OTHER},
};

int cli_store(int argc, char **argv)
{
    if (argc < 2) {
        fputs(STORE_USAGE, stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(STORE_USAGE, stdout);
        return 0;
    }
    for (size_t i = 0; i < OBI_ARRAY_SIZE(LIFECYCLE_COMMANDS); i++)
        if (!strcmp(argv[1], LIFECYCLE_COMMANDS[i].name))
            return LIFECYCLE_COMMANDS[i].run(argc - 1, argv + 1);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(STORE_COMMANDS); i++) {
        if (strcmp(argv[1], STORE_COMMANDS[i].name))
            continue;
        if (cli_help_requested(argc - 1, argv + 1)) {
            fputs(STORE_USAGE, stdout);
            return 0;
        }
        store_args args = {0};
        if (parse_args(argc - 1, argv + 1, STORE_COMMANDS[i].flags, &args) < 0)
            return CLI_EXIT_USAGE;
        return STORE_COMMANDS[i].run(&args);
    }
    cli_failf("store: unknown subcommand '%s'", argv[1]);
    fputs(STORE_USAGE, stderr);
    return CLI_EXIT_USAGE;
}
