/*
 * NAR -> castore (see include/ocibuild/nar_ingest.h). A recursive descent parser over the
 * canonical grammar
 *   nar   = "nix-archive-1" node
 *   node  = "(" "type" ( "regular" ["executable" ""] "contents" <u64 n> <n bytes> <pad>
 *                      | "symlink" "target" <target>
 *                      | "directory" { "entry" "(" "name" <name> "node" node ")" } ) ")"
 * where every token is a string (u64 length, bytes, zero padding to 8). Every byte read passes
 * through one place (nar_read) that counts the offset and feeds SHA-256. File contents stream
 * through a fixed buffer into a blob writer (a small file the store already has is not written
 * again, which spares a shared castore the upload); each directory level keeps the Directory
 * being filled, appended to in NAR order, which is castore's order too.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/blake3.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/nar_ingest.h"
#include "ocibuild/sha256.h"

#define NAR_CHUNK_SIZE (64u * 1024)
/* Tokens are short; a longer string where a token belongs is refused before it is read. */
#define NAR_TOKEN_MAX 16

typedef struct nar_parser {
    obi_nar_source source;
    void *ctx;
    obi_blob_service *blobs;
    obi_directory_service *directories;
    obi_directory_putter *putter; /* opened at the first directory */
    obi_sha256 *sha;
    uint64_t offset;
    uint8_t *chunk; /* NAR_CHUNK_SIZE bytes */
} nar_parser;

/* ---- reading ---- */

static int nar_read(nar_parser *p, void *buf, size_t len, obi_error **err)
{
    int r = p->source(p->ctx, buf, len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "nar: offset %llu", (unsigned long long)p->offset);
    obi_sha256_update(p->sha, buf, len);
    p->offset += len;
    return 0;
}

static int read_u64(nar_parser *p, uint64_t *out, obi_error **err)
{
    uint8_t b[8] = {0};
    int r = nar_read(p, b, sizeof b, err);
    if (r < 0)
        return r;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    *out = v;
    return 0;
}

static int read_padding(nar_parser *p, uint64_t len, obi_error **err)
{
    size_t n = (size_t)((8 - len % 8) % 8);
    uint8_t pad[8];
    uint64_t start = p->offset;
    int r = nar_read(p, pad, n, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++)
        if (pad[i] != 0)
            return obi_error_set(err, -EINVAL, "nar: offset %llu: non-zero padding",
                                 (unsigned long long)(start + i));
    return 0;
}

/* A string of at most max bytes into buf (max + 1 bytes, NUL-terminated); *len its length. */
static int read_string(nar_parser *p, const char *what, char *buf, size_t max, size_t *len,
                       obi_error **err)
{
    uint64_t start = p->offset, n = 0;
    int r = read_u64(p, &n, err);
    if (r < 0)
        return r;
    if (n > max)
        return obi_error_set(err, -EINVAL, "nar: offset %llu: %s of %llu bytes (at most %zu)",
                             (unsigned long long)start, what, (unsigned long long)n, max);
    r = nar_read(p, buf, (size_t)n, err);
    if (r >= 0)
        r = read_padding(p, n, err);
    if (r < 0)
        return r;
    buf[n] = '\0';
    *len = (size_t)n;
    return 0;
}

/* The next token must be `want`. */
static int expect(nar_parser *p, const char *want, obi_error **err)
{
    uint64_t start = p->offset;
    char token[NAR_TOKEN_MAX + 1];
    size_t len = 0;
    int r = read_string(p, "a token", token, NAR_TOKEN_MAX, &len, err);
    if (r < 0)
        return r;
    if (len != strlen(want) || memcmp(token, want, len) != 0)
        return obi_error_set(err, -EINVAL, "nar: offset %llu: expected '%s', got '%.*s'",
                             (unsigned long long)start, want, (int)len, token);
    return 0;
}

/* Reads a token into token (NAR_TOKEN_MAX + 1 bytes). */
static int read_token(nar_parser *p, char *token, obi_error **err)
{
    size_t len = 0;
    int r = read_string(p, "a token", token, NAR_TOKEN_MAX, &len, err);
    if (r >= 0 && memchr(token, '\0', len))
        token[0] = '\x01'; /* matches no token */
    return r;
}

/* ---- nodes ---- */

static int parse_node(nar_parser *p, const char *name, size_t name_len, unsigned depth,
                      obi_node *out, obi_error **err);

/* After "contents": the size, the bytes (into a blob), the padding. */
static int parse_contents(nar_parser *p, obi_digest *digest, uint64_t *size, obi_error **err)
{
    int r = read_u64(p, size, err);
    if (r < 0)
        return r;
    uint64_t left = *size;
    if (left <= NAR_CHUNK_SIZE) {
        /* small: hashed first, and not written again when the store already has it */
        r = nar_read(p, p->chunk, (size_t)left, err);
        if (r < 0)
            return r;
        obi_blake3(p->chunk, (size_t)left, digest->bytes);
        cleanup_error obi_error *ignored = NULL;
        if (obi_blob_has(p->blobs, digest, &ignored) == 1)
            return read_padding(p, *size, err);
    }
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    r = obi_blob_open_write(p->blobs, &writer, err);
    if (r >= 0 && *size <= NAR_CHUNK_SIZE) {
        r = obi_blob_write(writer, p->chunk, (size_t)left, err);
        left = 0;
    }
    while (r >= 0 && left > 0) {
        size_t n = left < NAR_CHUNK_SIZE ? (size_t)left : NAR_CHUNK_SIZE;
        r = nar_read(p, p->chunk, n, err);
        if (r >= 0)
            r = obi_blob_write(writer, p->chunk, n, err);
        left -= n;
    }
    if (r >= 0)
        r = obi_blob_finish_pending(writer, digest, err);
    if (r >= 0)
        r = read_padding(p, *size, err);
    return r;
}

static int parse_regular(nar_parser *p, const char *name, size_t name_len, obi_node *out,
                         obi_error **err)
{
    char token[NAR_TOKEN_MAX + 1];
    uint64_t start = p->offset;
    int r = read_token(p, token, err);
    if (r < 0)
        return r;
    bool executable = strcmp(token, "executable") == 0;
    if (executable) {
        char empty[1];
        size_t len = 0;
        r = read_string(p, "the executable marker's value", empty, 0, &len, err);
        if (r < 0)
            return r;
        start = p->offset;
        r = read_token(p, token, err);
        if (r < 0)
            return r;
    }
    if (strcmp(token, "contents") != 0)
        return obi_error_set(err, -EINVAL, "nar: offset %llu: expected %s, got '%s'",
                             (unsigned long long)start,
                             executable ? "'contents'" : "'executable' or 'contents'", token);
    obi_digest digest;
    uint64_t size = 0;
    r = parse_contents(p, &digest, &size, err);
    if (r >= 0)
        r = expect(p, ")", err);
    if (r < 0)
        return r;
    if (obi_node_init_file(out, name, name_len, &digest, size, executable) < 0)
        return obi_error_oom(err);
    return 0;
}

static int parse_symlink(nar_parser *p, const char *name, size_t name_len, obi_node *out,
                         obi_error **err)
{
    int r = expect(p, "target", err);
    if (r < 0)
        return r;
    uint64_t start = p->offset;
    char target[OBI_SYMLINK_TARGET_MAX + 1];
    size_t len = 0;
    r = read_string(p, "a symlink target", target, OBI_SYMLINK_TARGET_MAX, &len, err);
    if (r < 0)
        return r;
    if (len == 0 || memchr(target, '\0', len))
        return obi_error_set(err, -EINVAL, "nar: offset %llu: symlink target %s",
                             (unsigned long long)start, len ? "has a NUL byte" : "is empty");
    r = expect(p, ")", err);
    if (r < 0)
        return r;
    if (obi_node_init_symlink(out, name, name_len, target, len) < 0)
        return obi_error_oom(err);
    return 0;
}

/* One "entry" after its keyword: ( name <name> node <node> ). The name must sort after prev. */
static int parse_entry(nar_parser *p, obi_directory *dir, char *prev, size_t *prev_len,
                       unsigned depth, obi_error **err)
{
    int r = expect(p, "(", err);
    if (r >= 0)
        r = expect(p, "name", err);
    if (r < 0)
        return r;
    uint64_t start = p->offset;
    char name[OBI_NAME_MAX + 1];
    size_t len = 0;
    r = read_string(p, "an entry name", name, OBI_NAME_MAX, &len, err);
    if (r < 0)
        return r;
    cleanup_error obi_error *name_err = NULL;
    if (obi_name_validate((const uint8_t *)name, len, "entry name", &name_err) < 0)
        return obi_error_set(err, -EINVAL, "nar: offset %llu: %s", (unsigned long long)start,
                             name_err->message);
    if (*prev_len > 0 &&
        obi_name_compare((const uint8_t *)prev, *prev_len, (const uint8_t *)name, len) >= 0)
        return obi_error_set(err, -EINVAL,
                             "nar: offset %llu: entry '%s' does not sort after '%s' (NAR "
                             "directories are sorted, names unique)",
                             (unsigned long long)start, name, prev);
    memcpy(prev, name, len + 1);
    *prev_len = len;
    r = expect(p, "node", err);
    if (r < 0)
        return r;
    obi_node child = {0};
    r = parse_node(p, name, len, depth + 1, &child, err);
    if (r >= 0 && obi_directory_append_owned(dir, &child) < 0)
        r = obi_error_oom(err);
    obi_node_clear(&child);
    if (r >= 0)
        r = expect(p, ")", err);
    return r;
}

static int parse_directory(nar_parser *p, const char *name, size_t name_len, unsigned depth,
                           obi_node *out, obi_error **err)
{
    if (depth >= OBI_DIRECTORY_MAX_DEPTH)
        return obi_error_set(err, -ELOOP, "nar: offset %llu: directories nested deeper than %d",
                             (unsigned long long)p->offset, OBI_DIRECTORY_MAX_DEPTH);
    cleanup_directory obi_directory *dir = obi_directory_new();
    cleanup_free char *prev = malloc(OBI_NAME_MAX + 1);
    if (!dir || !prev)
        return obi_error_oom(err);
    size_t prev_len = 0;
    for (;;) {
        uint64_t start = p->offset;
        char token[NAR_TOKEN_MAX + 1];
        int r = read_token(p, token, err);
        if (r < 0)
            return r;
        if (strcmp(token, ")") == 0)
            break;
        if (strcmp(token, "entry") != 0)
            return obi_error_set(err, -EINVAL,
                                 "nar: offset %llu: expected 'entry' or ')', got "
                                 "'%s'",
                                 (unsigned long long)start, token);
        r = parse_entry(p, dir, prev, &prev_len, depth, err);
        if (r < 0)
            return r;
    }
    if (!p->putter) {
        int r = obi_directory_open_put(p->directories, &p->putter, err);
        if (r < 0)
            return r;
    }
    obi_digest digest;
    int r = obi_directory_put(p->putter, dir, &digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "nar: offset %llu", (unsigned long long)p->offset);
    if (obi_node_init_directory(out, name, name_len, &digest, obi_directory_size(dir)) < 0)
        return obi_error_oom(err);
    return 0;
}

static int parse_node(nar_parser *p, const char *name, size_t name_len, unsigned depth,
                      obi_node *out, obi_error **err)
{
    int r = expect(p, "(", err);
    if (r >= 0)
        r = expect(p, "type", err);
    if (r < 0)
        return r;
    uint64_t start = p->offset;
    char type[NAR_TOKEN_MAX + 1];
    r = read_token(p, type, err);
    if (r < 0)
        return r;
    if (strcmp(type, "regular") == 0)
        return parse_regular(p, name, name_len, out, err);
    if (strcmp(type, "symlink") == 0)
        return parse_symlink(p, name, name_len, out, err);
    if (strcmp(type, "directory") == 0)
        return parse_directory(p, name, name_len, depth, out, err);
    return obi_error_set(err, -EINVAL,
                         "nar: offset %llu: expected 'regular', 'directory' or 'symlink', got "
                         "'%s'",
                         (unsigned long long)start, type);
}

/* ---- the whole NAR ---- */

int obi_nar_ingest(obi_blob_service *blobs, obi_directory_service *directories,
                   obi_nar_source source, void *ctx, const char *name, obi_node *out,
                   obi_nar_hash *hash, obi_error **err)
{
    nar_parser p = {
        .source = source,
        .ctx = ctx,
        .blobs = blobs,
        .directories = directories,
        .sha = obi_sha256_new(),
        .chunk = malloc(NAR_CHUNK_SIZE),
    };
    obi_node root = {0};
    int r = p.sha && p.chunk ? 0 : obi_error_oom(err);
    if (r >= 0)
        r = expect(&p, "nix-archive-1", err);
    if (r >= 0)
        r = parse_node(&p, name, strlen(name), 0, &root, err);
    /* the barrier: every blob durable before a directory refers to it, and before we return */
    if (r >= 0)
        r = obi_blob_service_sync(blobs, err);
    if (r >= 0 && p.putter) {
        obi_digest committed;
        r = obi_directory_putter_finish(p.putter, &committed, err);
        if (r < 0)
            obi_error_prefix(err, r, "nar: commit directories");
        else if (root.kind == OBI_NODE_DIRECTORY && !obi_digest_equal(&committed, &root.digest))
            r = obi_error_set(err, -EIO, "nar: the directory service committed another root");
    }
    obi_directory_putter_close(p.putter);
    free(p.chunk);
    if (r >= 0) {
        obi_sha256_final(p.sha, hash->sha256);
        hash->size = p.offset;
    }
    obi_sha256_free(p.sha);
    if (r < 0) {
        obi_node_clear(&root);
        return r;
    }
    *out = root;
    return 0;
}

typedef struct memory_source {
    const uint8_t *data;
    size_t len, pos;
} memory_source;

static int read_memory(void *ctx, void *buf, size_t len, obi_error **err)
{
    memory_source *m = ctx;
    if (len > m->len - m->pos)
        return obi_error_set(err, -EPIPE, "the NAR ends here, %zu bytes early",
                             len - (m->len - m->pos));
    memcpy(buf, m->data + m->pos, len);
    m->pos += len;
    return 0;
}

int obi_nar_ingest_bytes(obi_blob_service *blobs, obi_directory_service *directories,
                         const void *data, size_t len, const char *name, obi_node *out,
                         obi_nar_hash *hash, obi_error **err)
{
    memory_source m = {data, len, 0};
    obi_node node = {0};
    int r = obi_nar_ingest(blobs, directories, read_memory, &m, name, &node, hash, err);
    if (r < 0)
        return r;
    if (m.pos != len) {
        obi_node_clear(&node);
        return obi_error_set(err, -EINVAL, "nar: offset %zu: %zu bytes after the end of the NAR",
                             m.pos, len - m.pos);
    }
    *out = node;
    return 0;
}
