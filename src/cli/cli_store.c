/*
 * ocibuild store SUBCOMMAND: looking into and moving trees in and out of the castore.
 *   import [--name NAME] PATH   ingest PATH; print the root Node as protobuf JSON (one line)
 *   export NODE_JSON DEST       write the node at DEST (the JSON itself, a file holding it, or
 *                               "-" for stdin); of a Build, each output into DEST/<its name>
 *   cat DIGEST                  write a blob (hex or b3:base64 digest) to stdout
 *   ls NODE_JSON                list the tree under a node: kind, size, digest, path
 *   verify                      check every object of the store (store_verify.h): one line per
 *                               faulty object on stdout, a summary on stderr, exit 1 if any
 * Every subcommand takes --store URL (default: service_addrs.h's rule, then
 * obi_default_store_url()).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_progress.h"
#include "ocibuild/buf.h"
#include "ocibuild/build_outputs.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"
#include "ocibuild/json_util.h"
#include "ocibuild/node.h"
#include "ocibuild/service_addrs.h"
#include "ocibuild/store.h"
#include "ocibuild/store_verify.h"

#define CAT_READ_SIZE (1 << 20)

typedef struct store_args {
    const char *store_url;
    const char *blob_url;
    const char *directory_url;
    const char *name;
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
    "  verify                      check every blob and directory; print each faulty one\n";

/* Parses the store options and --name; the rest are positional. Returns -1 on a usage error. */
static int parse_args(int argc, char **argv, bool allow_name, store_args *out)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, 's'},
        {"blob-service", required_argument, NULL, 'b'},
        {"directory-service", required_argument, NULL, 'd'},
        {"name", required_argument, NULL, 'n'},
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
            if (!allow_name)
                return cli_failf("--name is only valid for 'store import'"), -1;
            out->name = optarg;
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
        return cli_failf("usage: ocibuild store import [--store URL] [--name NAME] PATH");
    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (open_store(args, &store, &err) < 0)
        return cli_fail(err);
    cleanup_free char *what = NULL;
    if (asprintf(&what, "importing %s", args->positional[0]) < 0)
        return cli_failf("import: out of memory");
    cli_progress progress;
    cli_progress_init(&progress, what, true);
    obi_ingest_options options = {.name = args->name, .progress = &progress.hook};
    cleanup_node obi_node root = {0};
    int r = obi_ingest_path(store->blobs, store->directories, args->positional[0], &options, &root,
                            &err);
    cli_progress_done(&progress);
    if (r < 0)
        return cli_fail(err);
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

static int print_fault(const obi_store_fault *fault, void *ctx, obi_error **err)
{
    (void)ctx;
    (void)err;
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&fault->digest, hex);
    printf("%s %s: %s\n", obi_store_object_kind_name(fault->kind), hex, fault->problem);
    return 0;
}

static int store_verify(store_args *args)
{
    if (args->n_positional != 0)
        return cli_failf("usage: ocibuild store verify [--store URL]");
    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (open_store(args, &store, &err) < 0)
        return cli_fail(err);
    obi_store_verify_stats stats;
    int r = obi_store_verify(store, print_fault, NULL, &stats, &err);
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    if (r < 0)
        return cli_fail(err);
    fprintf(stderr, "store verify: %llu blobs (%llu bytes), %llu directories: %llu faulty\n",
            (unsigned long long)stats.blobs, (unsigned long long)stats.blob_bytes,
            (unsigned long long)stats.directories, (unsigned long long)stats.faults);
    return stats.faults ? 1 : 0;
}

typedef struct store_command {
    const char *name;
    int (*run)(store_args *args);
    bool takes_name;
} store_command;

static const store_command STORE_COMMANDS[] = {
    {"import", store_import, true}, {"export", store_export, false}, {"cat", store_cat, false},
    {"ls", store_ls, false},        {"verify", store_verify, false},
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
    for (size_t i = 0; i < OBI_ARRAY_SIZE(STORE_COMMANDS); i++) {
        if (strcmp(argv[1], STORE_COMMANDS[i].name))
            continue;
        if (cli_help_requested(argc - 1, argv + 1)) {
            fputs(STORE_USAGE, stdout);
            return 0;
        }
        store_args args = {0};
        if (parse_args(argc - 1, argv + 1, STORE_COMMANDS[i].takes_name, &args) < 0)
            return CLI_EXIT_USAGE;
        return STORE_COMMANDS[i].run(&args);
    }
    cli_failf("store: unknown subcommand '%s'", argv[1]);
    fputs(STORE_USAGE, stderr);
    return CLI_EXIT_USAGE;
}
