/*
 * Protobuf decoding benchmark (bench/README.md "Protobuf decoding"): what the project's decoders
 * cost next to protobuf-c's own unpack of the same bytes, the reference that checks nothing
 * (no UTF-8, no wire types by name, no Directory rules, no model).
 *
 * Cases, each on one message packed by protobuf-c:
 *  - "dir-check": obi_directory_check_canonical, the daemon's Directory Put (canonical form,
 *    digests, names, order, the recursive size; no allocation) vs protobuf-c unpack + free;
 *  - "dir-decode": obi_directory_decode + free (check, unpack, copy into the model) vs the same;
 *  - "req-decode": obi_build_request_decode_pb + free vs protobuf-c unpack + free.
 * Rounds alternate ours and the reference; each round runs one side for at least 0.2 s of CPU.
 * Prints the median MB/s of CPU time of each side and their ratio. Only public calls are used,
 * so the same file builds against an older tree for a before/after comparison.
 *
 * usage: bench_codec [ENTRIES [ROUNDS [CASE]]]   (defaults: 1000 entries, 5 rounds, every case;
 * one CASE is for profiling: perf record build/bench/bench_codec 1000 5 dir-check)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "build.pb-c.h"
#include "castore.pb-c.h"
#include "ocibuild/node.h"
#include "ocibuild/request.h"

typedef struct message {
    const ProtobufCMessageDescriptor *desc;
    uint8_t *data;
    size_t len;
} message;

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, obi_error *err)
{
    fprintf(stderr, "bench_codec: %s: %s\n", what, err ? err->message : "failed");
    exit(1);
}

static void dir_check(const message *m)
{
    obi_error *err = NULL;
    uint64_t size = 0;
    if (obi_directory_check_canonical(m->data, m->len, &size, NULL, NULL, &err) != 1)
        die("check Directory", err);
}

static void dir_decode(const message *m)
{
    obi_error *err = NULL;
    obi_directory *dir = NULL;
    if (obi_directory_decode(m->data, m->len, &dir, &err) < 0)
        die("decode Directory", err);
    obi_directory_free(dir);
}

static void req_decode(const message *m)
{
    obi_error *err = NULL;
    obi_build_request *req = NULL;
    if (obi_build_request_decode_pb(m->data, m->len, &req, &err) < 0)
        die("decode BuildRequest", err);
    obi_build_request_free(req);
}

static void protobuf_c_unpack(const message *m)
{
    ProtobufCMessage *msg = protobuf_c_message_unpack(m->desc, NULL, m->len, m->data);
    if (!msg)
        die("protobuf-c unpack", NULL);
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* MB/s of CPU time running fn on m for at least 0.2 s. */
static double round_mbps(void (*fn)(const message *), const message *m)
{
    double start = cpu_seconds(), elapsed = 0;
    size_t runs = 0;
    do {
        for (int i = 0; i < 16; i++)
            fn(m);
        runs += 16;
        elapsed = cpu_seconds() - start;
    } while (elapsed < 0.2);
    return (double)m->len * (double)runs / elapsed / 1e6;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *only_case;

static void run_case(const char *name, void (*ours)(const message *), const message *m, int rounds)
{
    if (only_case && strcmp(only_case, name) != 0)
        return;
    double a[64], b[64];
    for (int r = 0; r < rounds; r++) {
        a[r] = round_mbps(ours, m);
        b[r] = round_mbps(protobuf_c_unpack, m);
    }
    qsort(a, (size_t)rounds, sizeof a[0], compare_double);
    qsort(b, (size_t)rounds, sizeof b[0], compare_double);
    double ours_mbps = a[rounds / 2], ref_mbps = b[rounds / 2];
    printf("%-11s %9zu bytes  ours %8.1f MB/s  protobuf-c %8.1f MB/s  ratio %.2f\n", name, m->len,
           ours_mbps, ref_mbps, ours_mbps / ref_mbps);
}

/* A Directory of n entries, a third in each list, valid and canonical (protobuf-c packs it). */
static message directory_of(size_t n)
{
    size_t nd = n / 3, nf = n / 3, ns = n - nd - nf;
    Tvix__Castore__V1__DirectoryNode *dirs = calloc(nd, sizeof *dirs);
    Tvix__Castore__V1__FileNode *files = calloc(nf, sizeof *files);
    Tvix__Castore__V1__SymlinkNode *links = calloc(ns, sizeof *links);
    void **ptrs = calloc(n, sizeof *ptrs);
    char(*names)[32] = calloc(n, sizeof *names);
    static uint8_t digest[32] = {1, 2, 3};
    for (size_t i = 0; i < n; i++) {
        char list = i < nd ? 'd' : i < nd + nf ? 'f' : 's';
        snprintf(names[i], sizeof names[i], "%c%08zu", list, i);
        ProtobufCBinaryData name = {strlen(names[i]), (uint8_t *)names[i]};
        if (list == 'd') {
            tvix__castore__v1__directory_node__init(&dirs[i]);
            dirs[i].name = name;
            dirs[i].digest = (ProtobufCBinaryData){32, digest};
            dirs[i].size = 7;
            ptrs[i] = &dirs[i];
        } else if (list == 'f') {
            Tvix__Castore__V1__FileNode *f = &files[i - nd];
            tvix__castore__v1__file_node__init(f);
            f->name = name;
            f->digest = (ProtobufCBinaryData){32, digest};
            f->size = 4096 + i;
            f->executable = i % 2;
            ptrs[i] = f;
        } else {
            Tvix__Castore__V1__SymlinkNode *s = &links[i - nd - nf];
            tvix__castore__v1__symlink_node__init(s);
            s->name = name;
            s->target = (ProtobufCBinaryData){14, (uint8_t *)"../lib/libc.so"};
            ptrs[i] = s;
        }
    }
    Tvix__Castore__V1__Directory d;
    tvix__castore__v1__directory__init(&d);
    d.directories = (Tvix__Castore__V1__DirectoryNode **)ptrs;
    d.n_directories = nd;
    d.files = (Tvix__Castore__V1__FileNode **)(ptrs + nd);
    d.n_files = nf;
    d.symlinks = (Tvix__Castore__V1__SymlinkNode **)(ptrs + nd + nf);
    d.n_symlinks = ns;
    message m = {&tvix__castore__v1__directory__descriptor, NULL, 0};
    m.len = tvix__castore__v1__directory__get_packed_size(&d);
    m.data = malloc(m.len);
    tvix__castore__v1__directory__pack(&d, m.data);
    free(dirs);
    free(files);
    free(links);
    free(ptrs);
    free(names);
    return m;
}

/* A BuildRequest like a derivation's: n input store paths, 30 environment variables. */
static message request_of(size_t n)
{
    Tvix__Castore__V1__DirectoryNode *dirs = calloc(n, sizeof *dirs);
    Tvix__Castore__V1__Node *nodes = calloc(n, sizeof *nodes);
    Tvix__Castore__V1__Node **inputs = calloc(n, sizeof *inputs);
    char(*names)[80] = calloc(n, sizeof *names);
    static uint8_t digest[32] = {4, 5, 6};
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "%08zuaaaaaaaaaaaaaaaaaaaaaaaa-input-%zu", i, i);
        tvix__castore__v1__directory_node__init(&dirs[i]);
        dirs[i].name = (ProtobufCBinaryData){strlen(names[i]), (uint8_t *)names[i]};
        dirs[i].digest = (ProtobufCBinaryData){32, digest};
        dirs[i].size = 100;
        tvix__castore__v1__node__init(&nodes[i]);
        nodes[i].node_case = TVIX__CASTORE__V1__NODE__NODE_DIRECTORY;
        nodes[i].directory = &dirs[i];
        inputs[i] = &nodes[i];
    }
    enum { N_ENV = 30 };
    Tvix__Build__V1__BuildRequest__EnvVar env[N_ENV];
    Tvix__Build__V1__BuildRequest__EnvVar *envp[N_ENV];
    char keys[N_ENV][16];
    for (size_t i = 0; i < N_ENV; i++) {
        tvix__build__v1__build_request__env_var__init(&env[i]);
        snprintf(keys[i], sizeof keys[i], "VAR_%02zu", i);
        env[i].key = keys[i];
        env[i].value =
            (ProtobufCBinaryData){40, (uint8_t *)"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaa-value"};
        envp[i] = &env[i];
    }
    char *args[] = {"/bin/sh", "-c", "make -j2 install"};
    char *outputs[] = {"nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-out"};
    Tvix__Build__V1__BuildRequest__BuildConstraints c;
    tvix__build__v1__build_request__build_constraints__init(&c);
    c.system = "x86_64-linux";
    c.min_memory = 1 << 30;
    Tvix__Build__V1__BuildRequest r;
    tvix__build__v1__build_request__init(&r);
    r.inputs = inputs;
    r.n_inputs = n;
    r.command_args = args;
    r.n_command_args = 3;
    r.working_dir = "build";
    r.inputs_dir = "nix/store";
    r.outputs = outputs;
    r.n_outputs = 1;
    r.environment_vars = envp;
    r.n_environment_vars = N_ENV;
    r.constraints = &c;
    message m = {&tvix__build__v1__build_request__descriptor, NULL, 0};
    m.len = tvix__build__v1__build_request__get_packed_size(&r);
    m.data = malloc(m.len);
    tvix__build__v1__build_request__pack(&r, m.data);
    free(dirs);
    free(nodes);
    free(inputs);
    free(names);
    return m;
}

int main(int argc, char **argv)
{
    size_t entries = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    only_case = argc > 3 ? argv[3] : NULL;
    if (entries < 3 || rounds < 1 || rounds > 64) {
        fprintf(stderr, "usage: bench_codec [ENTRIES>=3 [ROUNDS 1..64 [CASE]]]\n");
        return 2;
    }
    message dir = directory_of(entries);
    message req = request_of(entries / 10 + 1);
    run_case("dir-check", dir_check, &dir, rounds);
    run_case("dir-decode", dir_decode, &dir, rounds);
    run_case("req-decode", req_decode, &req, rounds);
    free(dir.data);
    free(req.data);
    return 0;
}
