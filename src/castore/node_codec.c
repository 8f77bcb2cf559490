/*
 * Protobuf binary form of castore Directory and Node messages (../shared/spec/castore.md), built
 * on the protobuf-c code generated from proto/tvix/castore/v1/castore.proto, and the
 * conversions of include/ocibuild/node_pb.h for layers that embed Nodes in other messages.
 *
 * Encoding: protobuf-c 1.4 writes proto3 fields in field-number order, repeated entries in list
 * order, omits defaults (empty bytes, 0, false) and writes minimal varints, which is exactly the
 * canonical form the Directory digest is defined over (tests/unit/test_node.c checks this
 * against hand-written bytes). To avoid copying names, encoding builds protobuf-c structs that
 * borrow the model's bytes.
 *
 * Decoding: a strict wire scan runs first so that malformed input (truncated varints or
 * lengths, wrong wire types for known fields, groups) is reported with its byte offset; then
 * protobuf-c unpacks and the result is converted into the model. Any other well-formed protobuf
 * is accepted (unknown fields skipped, non-minimal varints, defaults written explicitly): the
 * digest is always computed over our canonical re-encoding, as tvix does (docs/castore.md).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "castore.pb-c.h"
#include "node_internal.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/node.h"
#include "ocibuild/node_pb.h"

/* ---- strict wire scan ---------------------------------------------------------------------- */

typedef struct wire_schema wire_schema;
typedef struct wire_field {
    uint32_t number;
    uint8_t wire_type;
    const char *name;
    const wire_schema *message; /* for embedded messages */
} wire_field;
struct wire_schema {
    const char *name;
    const wire_field *fields;
    size_t n_fields;
};

enum {
    WIRE_VARINT = 0,
    WIRE_I64 = 1,
    WIRE_LEN = 2,
    WIRE_SGROUP = 3,
    WIRE_EGROUP = 4,
    WIRE_I32 = 5
};

static const wire_field directory_node_fields[] = {
    {1, WIRE_LEN, "name", NULL}, {2, WIRE_LEN, "digest", NULL}, {3, WIRE_VARINT, "size", NULL}};
static const wire_field file_node_fields[] = {{1, WIRE_LEN, "name", NULL},
                                              {2, WIRE_LEN, "digest", NULL},
                                              {3, WIRE_VARINT, "size", NULL},
                                              {4, WIRE_VARINT, "executable", NULL}};
static const wire_field symlink_node_fields[] = {{1, WIRE_LEN, "name", NULL},
                                                 {2, WIRE_LEN, "target", NULL}};
static const wire_schema directory_node_schema = {"DirectoryNode", directory_node_fields, 3};
static const wire_schema file_node_schema = {"FileNode", file_node_fields, 4};
static const wire_schema symlink_node_schema = {"SymlinkNode", symlink_node_fields, 2};
static const wire_field directory_fields[] = {{1, WIRE_LEN, "directories", &directory_node_schema},
                                              {2, WIRE_LEN, "files", &file_node_schema},
                                              {3, WIRE_LEN, "symlinks", &symlink_node_schema}};
static const wire_field node_fields[] = {{1, WIRE_LEN, "directory", &directory_node_schema},
                                         {2, WIRE_LEN, "file", &file_node_schema},
                                         {3, WIRE_LEN, "symlink", &symlink_node_schema}};
static const wire_schema directory_schema = {"Directory", directory_fields, 3};
static const wire_schema node_schema = {"Node", node_fields, 3};

/* Reads a varint of at most 10 bytes whose value fits 64 bits. */
static int read_varint(const uint8_t *data, size_t len, size_t *pos, uint64_t *value, size_t base,
                       obi_error **err)
{
    uint64_t v = 0;
    size_t start = *pos;
    for (unsigned i = 0; i < 10; i++) {
        if (*pos >= len)
            return obi_error_set(err, -EINVAL, "truncated varint at offset %zu", base + start);
        uint8_t b = data[(*pos)++];
        if (i == 9 && b > 1)
            return obi_error_set(err, -EINVAL, "varint at offset %zu overflows 64 bits",
                                 base + start);
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *value = v;
            return 0;
        }
    }
    return obi_error_set(err, -EINVAL, "varint at offset %zu is longer than 10 bytes",
                         base + start);
}

static const wire_field *schema_field(const wire_schema *schema, uint64_t number)
{
    for (size_t i = 0; i < schema->n_fields; i++)
        if (schema->fields[i].number == number)
            return &schema->fields[i];
    return NULL;
}

static int wire_scan(const uint8_t *data, size_t len, const wire_schema *schema, size_t base,
                     obi_error **err)
{
    size_t pos = 0;
    while (pos < len) {
        size_t key_at = pos;
        uint64_t key = 0, v = 0;
        int r = read_varint(data, len, &pos, &key, base, err);
        if (r < 0)
            return r;
        uint64_t number = key >> 3;
        unsigned wt = key & 7;
        if (number == 0 || number > 536870911)
            return obi_error_set(err, -EINVAL, "%s: invalid field number %llu at offset %zu",
                                 schema->name, (unsigned long long)number, base + key_at);
        const wire_field *f = schema_field(schema, number);
        if (f && f->wire_type != wt)
            return obi_error_set(
                err, -EINVAL, "%s.%s (field %llu) at offset %zu: wire type %u, expected %u",
                schema->name, f->name, (unsigned long long)number, base + key_at, wt, f->wire_type);
        switch (wt) {
        case WIRE_VARINT:
            r = read_varint(data, len, &pos, &v, base, err);
            if (r < 0)
                return r;
            break;
        case WIRE_I64:
        case WIRE_I32: {
            size_t width = wt == WIRE_I64 ? 8 : 4;
            if (len - pos < width)
                return obi_error_set(
                    err, -EINVAL, "%s: field %llu at offset %zu: truncated %zu-byte value",
                    schema->name, (unsigned long long)number, base + key_at, width);
            pos += width;
            break;
        }
        case WIRE_LEN: {
            size_t len_at = pos;
            r = read_varint(data, len, &pos, &v, base, err);
            if (r < 0)
                return r;
            if (v > len - pos)
                return obi_error_set(err, -EINVAL,
                                     "%s: length %llu at offset %zu exceeds the remaining %zu "
                                     "bytes",
                                     schema->name, (unsigned long long)v, base + len_at, len - pos);
            if (f && f->message) {
                r = wire_scan(data + pos, (size_t)v, f->message, base + pos, err);
                if (r < 0)
                    return obi_error_prefix(err, r, "%s.%s", schema->name, f->name);
            }
            pos += (size_t)v;
            break;
        }
        default:
            return obi_error_set(err, -EINVAL,
                                 "%s: field %llu at offset %zu: unsupported wire type %u",
                                 schema->name, (unsigned long long)number, base + key_at, wt);
        }
    }
    return 0;
}

/* ---- protobuf-c -> model ------------------------------------------------------------------- */

static int digest_from_pb(const ProtobufCBinaryData *pb, obi_digest *out, const char *what,
                          const ProtobufCBinaryData *name, obi_error **err)
{
    if (pb->len != OBI_DIGEST_LEN) {
        char q[OBI_NAME_QUOTED_MAX];
        return obi_error_set(err, -EINVAL, "%s %s: digest is %zu bytes, expected %d", what,
                             obi_name_quote(name->data, name->len, q), pb->len, OBI_DIGEST_LEN);
    }
    memcpy(out->bytes, pb->data, OBI_DIGEST_LEN);
    return 0;
}

static int directory_node_from_pb(const Tvix__Castore__V1__DirectoryNode *pb, obi_node *out,
                                  const char *what, obi_error **err)
{
    obi_digest d;
    int r = digest_from_pb(&pb->digest, &d, what, &pb->name, err);
    if (r < 0)
        return r;
    if (obi_node_init_directory(out, pb->name.data, pb->name.len, &d, pb->size) < 0)
        return obi_error_oom(err);
    return 0;
}

static int file_node_from_pb(const Tvix__Castore__V1__FileNode *pb, obi_node *out, const char *what,
                             obi_error **err)
{
    obi_digest d;
    int r = digest_from_pb(&pb->digest, &d, what, &pb->name, err);
    if (r < 0)
        return r;
    if (obi_node_init_file(out, pb->name.data, pb->name.len, &d, pb->size, pb->executable) < 0)
        return obi_error_oom(err);
    return 0;
}

static int symlink_node_from_pb(const Tvix__Castore__V1__SymlinkNode *pb, obi_node *out,
                                obi_error **err)
{
    if (obi_node_init_symlink(out, pb->name.data, pb->name.len, pb->target.data, pb->target.len) <
        0)
        return obi_error_oom(err);
    return 0;
}

int obi_node_from_pb(const Tvix__Castore__V1__Node *pb, obi_node *out, obi_error **err)
{
    /* Hand-built messages may set the case without the member; treat that as unset. */
    if (!pb->directory)
        return obi_error_set(err, -EINVAL, "node: none of directory, file or symlink is set");
    switch (pb->node_case) {
    case TVIX__CASTORE__V1__NODE__NODE_DIRECTORY:
        return directory_node_from_pb(pb->directory, out, "directory node", err);
    case TVIX__CASTORE__V1__NODE__NODE_FILE:
        return file_node_from_pb(pb->file, out, "file node", err);
    case TVIX__CASTORE__V1__NODE__NODE_SYMLINK:
        return symlink_node_from_pb(pb->symlink, out, err);
    default:
        return obi_error_set(err, -EINVAL, "node: none of directory, file or symlink is set");
    }
}

/* Converts the protobuf-c list pb->field with the given converter and appends it to dir. */
#define APPEND_FROM_PB(dir, pb, field, convert, ...)                                               \
    do {                                                                                           \
        for (size_t i_ = 0; i_ < (pb)->n_##field; i_++) {                                          \
            if (!(pb)->field[i_])                                                                  \
                return obi_error_set(err, -EINVAL, "%s[%zu]: missing entry", #field, i_);          \
            obi_node node_ = {0};                                                                  \
            int r_ = convert((pb)->field[i_], &node_, __VA_ARGS__);                                \
            if (r_ < 0)                                                                            \
                return r_;                                                                         \
            if (obi_directory_append_owned((dir), &node_) < 0) {                                   \
                obi_node_clear(&node_);                                                            \
                return obi_error_oom(err);                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static int directory_fill_from_pb(obi_directory *dir, const Tvix__Castore__V1__Directory *pb,
                                  obi_error **err)
{
    APPEND_FROM_PB(dir, pb, directories, directory_node_from_pb, "directory entry", err);
    APPEND_FROM_PB(dir, pb, files, file_node_from_pb, "file entry", err);
    APPEND_FROM_PB(dir, pb, symlinks, symlink_node_from_pb, err);
    return 0;
}

int obi_directory_from_pb(const Tvix__Castore__V1__Directory *pb, obi_directory **out,
                          obi_error **err)
{
    cleanup_directory obi_directory *dir = obi_directory_new();
    if (!dir)
        return obi_error_oom(err);
    int r = directory_fill_from_pb(dir, pb, err);
    if (r < 0)
        return r;
    *out = steal_pointer(&dir);
    return 0;
}

/* ---- model -> protobuf-c ------------------------------------------------------------------- */

/* Borrowed: points into the model's storage (no copy). */
static ProtobufCBinaryData pb_bytes_borrow(const obi_bytes *b)
{
    return (ProtobufCBinaryData){b->len, b->len ? b->data : NULL};
}

static ProtobufCBinaryData pb_digest_borrow(const obi_digest *d)
{
    return (ProtobufCBinaryData){OBI_DIGEST_LEN, (uint8_t *)d->bytes};
}

static void fill_directory_node(Tvix__Castore__V1__DirectoryNode *pb, const obi_node *n)
{
    tvix__castore__v1__directory_node__init(pb);
    pb->name = pb_bytes_borrow(&n->name);
    pb->digest = pb_digest_borrow(&n->digest);
    pb->size = n->size;
}

static void fill_file_node(Tvix__Castore__V1__FileNode *pb, const obi_node *n)
{
    tvix__castore__v1__file_node__init(pb);
    pb->name = pb_bytes_borrow(&n->name);
    pb->digest = pb_digest_borrow(&n->digest);
    pb->size = n->size;
    pb->executable = n->executable;
}

static void fill_symlink_node(Tvix__Castore__V1__SymlinkNode *pb, const obi_node *n)
{
    tvix__castore__v1__symlink_node__init(pb);
    pb->name = pb_bytes_borrow(&n->name);
    pb->target = pb_bytes_borrow(&n->target);
}

/* Storage for a Directory whose entries borrow the model's bytes. */
typedef struct borrowed_directory {
    Tvix__Castore__V1__Directory pb;
    Tvix__Castore__V1__DirectoryNode *dirs;
    Tvix__Castore__V1__FileNode *files;
    Tvix__Castore__V1__SymlinkNode *links;
} borrowed_directory;

static void borrowed_directory_release(borrowed_directory *b)
{
    free(b->pb.directories);
    free(b->pb.files);
    free(b->pb.symlinks);
    free(b->dirs);
    free(b->files);
    free(b->links);
}

static void *alloc_array(size_t n, size_t size)
{
    return n ? calloc(n, size) : NULL;
}

static int borrowed_directory_build(borrowed_directory *b, const obi_directory *dir)
{
    *b = (borrowed_directory){0};
    tvix__castore__v1__directory__init(&b->pb);
    size_t nd = dir->n_directories, nf = dir->n_files, ns = dir->n_symlinks;
    b->dirs = alloc_array(nd, sizeof *b->dirs);
    b->files = alloc_array(nf, sizeof *b->files);
    b->links = alloc_array(ns, sizeof *b->links);
    b->pb.directories = alloc_array(nd, sizeof *b->pb.directories);
    b->pb.files = alloc_array(nf, sizeof *b->pb.files);
    b->pb.symlinks = alloc_array(ns, sizeof *b->pb.symlinks);
    if ((nd && (!b->dirs || !b->pb.directories)) || (nf && (!b->files || !b->pb.files)) ||
        (ns && (!b->links || !b->pb.symlinks))) {
        borrowed_directory_release(b);
        return -ENOMEM;
    }
    for (size_t i = 0; i < nd; i++) {
        fill_directory_node(&b->dirs[i], &dir->directories[i]);
        b->pb.directories[i] = &b->dirs[i];
    }
    for (size_t i = 0; i < nf; i++) {
        fill_file_node(&b->files[i], &dir->files[i]);
        b->pb.files[i] = &b->files[i];
    }
    for (size_t i = 0; i < ns; i++) {
        fill_symlink_node(&b->links[i], &dir->symlinks[i]);
        b->pb.symlinks[i] = &b->links[i];
    }
    b->pb.n_directories = nd;
    b->pb.n_files = nf;
    b->pb.n_symlinks = ns;
    return 0;
}

/* Owned copies, freed by protobuf_c_message_free_unpacked with the default allocator. */
static int pb_bytes_copy(ProtobufCBinaryData *out, const void *data, size_t len)
{
    out->len = len;
    out->data = NULL;
    if (len == 0)
        return 0;
    out->data = malloc(len);
    if (!out->data)
        return -ENOMEM;
    memcpy(out->data, data, len);
    return 0;
}

static Tvix__Castore__V1__DirectoryNode *directory_node_to_pb(const obi_node *n)
{
    Tvix__Castore__V1__DirectoryNode *pb = malloc(sizeof *pb);
    if (!pb)
        return NULL;
    tvix__castore__v1__directory_node__init(pb);
    pb->size = n->size;
    if (pb_bytes_copy(&pb->name, n->name.data, n->name.len) < 0 ||
        pb_bytes_copy(&pb->digest, n->digest.bytes, OBI_DIGEST_LEN) < 0) {
        protobuf_c_message_free_unpacked(&pb->base, NULL);
        return NULL;
    }
    return pb;
}

static Tvix__Castore__V1__FileNode *file_node_to_pb(const obi_node *n)
{
    Tvix__Castore__V1__FileNode *pb = malloc(sizeof *pb);
    if (!pb)
        return NULL;
    tvix__castore__v1__file_node__init(pb);
    pb->size = n->size;
    pb->executable = n->executable;
    if (pb_bytes_copy(&pb->name, n->name.data, n->name.len) < 0 ||
        pb_bytes_copy(&pb->digest, n->digest.bytes, OBI_DIGEST_LEN) < 0) {
        protobuf_c_message_free_unpacked(&pb->base, NULL);
        return NULL;
    }
    return pb;
}

static Tvix__Castore__V1__SymlinkNode *symlink_node_to_pb(const obi_node *n)
{
    Tvix__Castore__V1__SymlinkNode *pb = malloc(sizeof *pb);
    if (!pb)
        return NULL;
    tvix__castore__v1__symlink_node__init(pb);
    if (pb_bytes_copy(&pb->name, n->name.data, n->name.len) < 0 ||
        pb_bytes_copy(&pb->target, n->target.data, n->target.len) < 0) {
        protobuf_c_message_free_unpacked(&pb->base, NULL);
        return NULL;
    }
    return pb;
}

Tvix__Castore__V1__Node *obi_node_to_pb(const obi_node *node)
{
    Tvix__Castore__V1__Node *pb = malloc(sizeof *pb);
    if (!pb)
        return NULL;
    tvix__castore__v1__node__init(pb);
    switch (node->kind) {
    case OBI_NODE_DIRECTORY:
        pb->directory = directory_node_to_pb(node);
        pb->node_case = pb->directory ? TVIX__CASTORE__V1__NODE__NODE_DIRECTORY : 0;
        break;
    case OBI_NODE_FILE:
        pb->file = file_node_to_pb(node);
        pb->node_case = pb->file ? TVIX__CASTORE__V1__NODE__NODE_FILE : 0;
        break;
    case OBI_NODE_SYMLINK:
        pb->symlink = symlink_node_to_pb(node);
        pb->node_case = pb->symlink ? TVIX__CASTORE__V1__NODE__NODE_SYMLINK : 0;
        break;
    }
    if (pb->node_case == TVIX__CASTORE__V1__NODE__NODE__NOT_SET) {
        free(pb);
        return NULL;
    }
    return pb;
}

void obi_node_pb_free(Tvix__Castore__V1__Node *pb)
{
    if (pb)
        protobuf_c_message_free_unpacked(&pb->base, NULL);
}

Tvix__Castore__V1__Directory *obi_directory_to_pb(const obi_directory *dir)
{
    Tvix__Castore__V1__Directory *pb = malloc(sizeof *pb);
    if (!pb)
        return NULL;
    tvix__castore__v1__directory__init(pb);
    pb->directories = alloc_array(dir->n_directories, sizeof *pb->directories);
    pb->files = alloc_array(dir->n_files, sizeof *pb->files);
    pb->symlinks = alloc_array(dir->n_symlinks, sizeof *pb->symlinks);
    bool ok = (!dir->n_directories || pb->directories) && (!dir->n_files || pb->files) &&
              (!dir->n_symlinks || pb->symlinks);
    /* Counts grow with the entries actually converted, so a partial result frees cleanly. */
    for (size_t i = 0; ok && i < dir->n_directories; i++) {
        pb->directories[i] = directory_node_to_pb(&dir->directories[i]);
        ok = pb->directories[i] != NULL;
        pb->n_directories += ok;
    }
    for (size_t i = 0; ok && i < dir->n_files; i++) {
        pb->files[i] = file_node_to_pb(&dir->files[i]);
        ok = pb->files[i] != NULL;
        pb->n_files += ok;
    }
    for (size_t i = 0; ok && i < dir->n_symlinks; i++) {
        pb->symlinks[i] = symlink_node_to_pb(&dir->symlinks[i]);
        ok = pb->symlinks[i] != NULL;
        pb->n_symlinks += ok;
    }
    if (!ok) {
        /* free_unpacked frees each non-NULL array and its first n entries. */
        protobuf_c_message_free_unpacked(&pb->base, NULL);
        return NULL;
    }
    return pb;
}

void obi_directory_pb_free(Tvix__Castore__V1__Directory *pb)
{
    if (pb)
        protobuf_c_message_free_unpacked(&pb->base, NULL);
}

/* ---- binary encoding and decoding ---------------------------------------------------------- */

int obi_directory_encode(const obi_directory *dir, uint8_t **out, size_t *out_len, obi_error **err)
{
    borrowed_directory b;
    if (borrowed_directory_build(&b, dir) < 0)
        return obi_error_set(err, -ENOMEM, "encode Directory: out of memory");
    size_t len = tvix__castore__v1__directory__get_packed_size(&b.pb);
    uint8_t *buf = malloc(len + 1); /* +1: a valid pointer even for the empty encoding */
    if (!buf) {
        borrowed_directory_release(&b);
        return obi_error_set(err, -ENOMEM, "encode Directory: out of memory");
    }
    size_t written = tvix__castore__v1__directory__pack(&b.pb, buf);
    borrowed_directory_release(&b);
    if (written != len) {
        free(buf);
        return obi_error_set(err, -EIO, "encode Directory: packed %zu bytes, expected %zu", written,
                             len);
    }
    *out = buf;
    *out_len = len;
    return 0;
}

int obi_directory_decode(const uint8_t *data, size_t len, obi_directory **out, obi_error **err)
{
    int r = wire_scan(data, len, &directory_schema, 0, err);
    if (r < 0)
        return obi_error_prefix(err, r, "decode Directory");
    Tvix__Castore__V1__Directory *pb = tvix__castore__v1__directory__unpack(NULL, len, data);
    if (!pb)
        return obi_error_set(err, -EINVAL, "decode Directory: malformed protobuf (%zu bytes)", len);
    r = obi_directory_from_pb(pb, out, err);
    tvix__castore__v1__directory__free_unpacked(pb, NULL);
    if (r < 0)
        return obi_error_prefix(err, r, "decode Directory");
    return 0;
}

/* ---- canonical encodings checked in place --------------------------------------------------- */

/* The canonical form (what obi_directory_encode writes): entries grouped by list in field order
 * (directories, files, symlinks), each entry's fields in field order, each at most once, defaults
 * (empty bytes, 0, false) never written, minimal varints, no unknown fields. Entries are read
 * into nodes that borrow the encoding's bytes. */

typedef struct canon_reader {
    const uint8_t *p, *end;
} canon_reader;

/* A minimal varint; false if truncated, overlong or not minimal. */
static bool canon_varint(canon_reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 10 && r->p < r->end; i++) {
        uint8_t b = *r->p++;
        if (i == 9 && b > 1)
            return false;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (b == 0 && i > 0)
                return false;
            *out = v;
            return true;
        }
    }
    return false;
}

static bool canon_bytes(canon_reader *r, const uint8_t **data, size_t *len)
{
    uint64_t n = 0;
    if (!canon_varint(r, &n) || n > (uint64_t)(r->end - r->p))
        return false;
    *data = r->p;
    *len = (size_t)n;
    r->p += n;
    return true;
}

/* One DirectoryNode, FileNode or SymlinkNode body in canonical form; digest_len is the length of
 * the digest field as sent (the digest itself is copied only when it is 32 bytes). */
static bool canon_entry(const uint8_t *data, size_t len, obi_node_kind kind, obi_node *node,
                        size_t *digest_len)
{
    static const unsigned last_field[] = {
        [OBI_NODE_DIRECTORY] = 3, [OBI_NODE_FILE] = 4, [OBI_NODE_SYMLINK] = 2};
    canon_reader r = {data, data + len};
    memset(node, 0, sizeof *node);
    node->kind = kind;
    *digest_len = 0;
    unsigned previous = 0;
    while (r.p < r.end) {
        uint64_t key = 0, value = 0;
        if (!canon_varint(&r, &key))
            return false;
        unsigned field = (unsigned)(key >> 3), wire_type = (unsigned)(key & 7);
        if (field <= previous || field > last_field[kind])
            return false;
        previous = field;
        bool varint = field >= 3 && kind != OBI_NODE_SYMLINK;
        if (wire_type != (varint ? WIRE_VARINT : WIRE_LEN))
            return false;
        if (varint) {
            if (!canon_varint(&r, &value) || value == 0 || (field == 4 && value != 1))
                return false;
            if (field == 3)
                node->size = value;
            else
                node->executable = true;
            continue;
        }
        const uint8_t *bytes = NULL;
        size_t n = 0;
        if (!canon_bytes(&r, &bytes, &n) || n == 0)
            return false;
        obi_bytes *slot = field == 1                 ? &node->name
                          : kind == OBI_NODE_SYMLINK ? &node->target
                                                     : NULL;
        if (slot) {
            *slot = (obi_bytes){(uint8_t *)bytes, n}; /* borrowed */
        } else {
            *digest_len = n;
            if (n == OBI_DIGEST_LEN)
                memcpy(node->digest.bytes, bytes, OBI_DIGEST_LEN);
        }
    }
    return true;
}

/* Walks the entries of one encoding, or of one list of it (only_field != 0). */
typedef struct canon_iter {
    canon_reader r;
    unsigned last_field;
    unsigned only_field;
} canon_iter;

static const obi_node_kind FIELD_KIND[] = {0, OBI_NODE_DIRECTORY, OBI_NODE_FILE, OBI_NODE_SYMLINK};
static const char *const LIST_NAME[] = {"", "directories", "files", "symlinks"};

/* 1 with the next entry (and its list's field number), 0 at the end, -1 if not canonical. */
static int canon_next(canon_iter *it, obi_node *node, size_t *digest_len, unsigned *field_out)
{
    if (it->r.p >= it->r.end)
        return 0;
    canon_reader at = it->r;
    uint64_t key = 0;
    if (!canon_varint(&it->r, &key))
        return -1;
    unsigned field = (unsigned)(key >> 3);
    if ((key & 7) != WIRE_LEN || field < 1 || field > 3 || field < it->last_field)
        return -1;
    if (it->only_field && field != it->only_field) {
        it->r = at;
        return 0;
    }
    it->last_field = field;
    const uint8_t *body = NULL;
    size_t len = 0;
    if (!canon_bytes(&it->r, &body, &len) ||
        !canon_entry(body, len, FIELD_KIND[field], node, digest_len))
        return -1;
    *field_out = field;
    return 1;
}

/* Where list `field` starts (an iterator over just that list). */
static canon_iter canon_list(const uint8_t *data, size_t len, unsigned field)
{
    canon_iter it = {{data, data + len}, 0, 0};
    for (;;) {
        canon_iter here = it;
        obi_node node;
        size_t digest_len;
        unsigned f = 0;
        if (canon_next(&it, &node, &digest_len, &f) <= 0 || f >= field) {
            here.only_field = field;
            return here;
        }
    }
}

static uint64_t add_saturating(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

int obi_directory_check_canonical(const uint8_t *data, size_t len, uint64_t *size_out,
                                  obi_directory_entry_fn visit, void *ctx, obi_error **err)
{
    obi_node node, prev;
    size_t digest_len = 0;
    unsigned field = 0;
    int more;
    /* What decoding would refuse first: the structure, then digests that are not 32 bytes. */
    canon_iter it = {{data, data + len}, 0, 0};
    obi_node bad_digest = {0};
    size_t bad_digest_len = OBI_DIGEST_LEN;
    while ((more = canon_next(&it, &node, &digest_len, &field)) > 0) {
        if (node.kind != OBI_NODE_SYMLINK && digest_len != OBI_DIGEST_LEN &&
            bad_digest_len == OBI_DIGEST_LEN) {
            bad_digest = node;
            bad_digest_len = digest_len;
        }
    }
    if (more < 0) {
        /* Not canonical: malformed (say where, as decoding would), or just another form. */
        int r = wire_scan(data, len, &directory_schema, 0, err);
        return r < 0 ? obi_error_prefix(err, r, "decode Directory") : 0;
    }
    if (bad_digest_len != OBI_DIGEST_LEN) {
        char q[OBI_NAME_QUOTED_MAX];
        return obi_error_set(err, -EINVAL,
                             "decode Directory: %s entry %s: digest is %zu bytes, expected %d",
                             obi_node_kind_name(bad_digest.kind),
                             obi_name_quote(bad_digest.name.data, bad_digest.name.len, q),
                             bad_digest_len, OBI_DIGEST_LEN);
    }
    /* Then what validation checks, in its order: each list's entries and order, ... */
    uint64_t size = 0;
    bool have_prev = false;
    unsigned prev_field = 0;
    it = (canon_iter){{data, data + len}, 0, 0};
    while (canon_next(&it, &node, &digest_len, &field) > 0) {
        int r = obi_node_validate_entry(&node, err);
        if (r == 0 && have_prev && prev_field == field)
            r = obi_node_check_order(&prev, &node, LIST_NAME[field], err);
        if (r < 0)
            return r;
        size = add_saturating(size, 1);
        if (node.kind == OBI_NODE_DIRECTORY)
            size = add_saturating(size, node.size);
        prev = node;
        prev_field = field;
        have_prev = true;
    }
    /* ... then names in two lists: a three-way merge of the sorted lists. */
    canon_iter lists[3];
    obi_node heads[3];
    bool has[3];
    for (unsigned l = 0; l < 3; l++) {
        lists[l] = canon_list(data, len, l + 1);
        has[l] = canon_next(&lists[l], &heads[l], &digest_len, &field) > 0;
    }
    for (;;) {
        int lowest = -1;
        for (int l = 0; l < 3; l++) {
            if (!has[l])
                continue;
            if (lowest < 0) {
                lowest = l;
                continue;
            }
            int c = obi_name_compare(heads[l].name.data, heads[l].name.len, heads[lowest].name.data,
                                     heads[lowest].name.len);
            if (c == 0)
                return obi_node_in_two_lists(&heads[l], LIST_NAME[lowest + 1], LIST_NAME[l + 1],
                                             err);
            if (c < 0)
                lowest = l;
        }
        if (lowest < 0)
            break;
        has[lowest] = canon_next(&lists[lowest], &heads[lowest], &digest_len, &field) > 0;
    }
    if (visit) {
        it = canon_list(data, len, 1);
        while (canon_next(&it, &node, &digest_len, &field) > 0) {
            int r = visit(&node, ctx, err);
            if (r < 0)
                return r;
        }
    }
    *size_out = size;
    return 1;
}

int obi_directory_digest(const obi_directory *dir, obi_digest *out, obi_error **err)
{
    cleanup_free uint8_t *buf = NULL;
    size_t len = 0;
    int r = obi_directory_encode(dir, &buf, &len, err);
    if (r < 0)
        return r;
    obi_digest_of(buf, len, out);
    return 0;
}

int obi_node_encode(const obi_node *node, uint8_t **out, size_t *out_len, obi_error **err)
{
    Tvix__Castore__V1__Node pb = TVIX__CASTORE__V1__NODE__INIT;
    Tvix__Castore__V1__DirectoryNode d;
    Tvix__Castore__V1__FileNode f;
    Tvix__Castore__V1__SymlinkNode s;
    switch (node->kind) {
    case OBI_NODE_DIRECTORY:
        fill_directory_node(&d, node);
        pb.node_case = TVIX__CASTORE__V1__NODE__NODE_DIRECTORY;
        pb.directory = &d;
        break;
    case OBI_NODE_FILE:
        fill_file_node(&f, node);
        pb.node_case = TVIX__CASTORE__V1__NODE__NODE_FILE;
        pb.file = &f;
        break;
    case OBI_NODE_SYMLINK:
        fill_symlink_node(&s, node);
        pb.node_case = TVIX__CASTORE__V1__NODE__NODE_SYMLINK;
        pb.symlink = &s;
        break;
    default:
        return obi_error_set(err, -EINVAL, "encode Node: invalid node kind %d", (int)node->kind);
    }
    size_t len = tvix__castore__v1__node__get_packed_size(&pb);
    uint8_t *buf = malloc(len + 1);
    if (!buf)
        return obi_error_set(err, -ENOMEM, "encode Node: out of memory");
    tvix__castore__v1__node__pack(&pb, buf);
    *out = buf;
    *out_len = len;
    return 0;
}

int obi_node_decode(const uint8_t *data, size_t len, obi_node *out, obi_error **err)
{
    int r = wire_scan(data, len, &node_schema, 0, err);
    if (r < 0)
        return obi_error_prefix(err, r, "decode Node");
    Tvix__Castore__V1__Node *pb = tvix__castore__v1__node__unpack(NULL, len, data);
    if (!pb)
        return obi_error_set(err, -EINVAL, "decode Node: malformed protobuf (%zu bytes)", len);
    r = obi_node_from_pb(pb, out, err);
    tvix__castore__v1__node__free_unpacked(pb, NULL);
    if (r < 0)
        return obi_error_prefix(err, r, "decode Node");
    return 0;
}
