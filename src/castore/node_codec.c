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
 * Decoding goes through obi_pb_unpack (pb_wire.h): its check reports malformed input
 * (truncated varints or lengths, wrong wire types for known fields, groups) with the field path
 * and byte offset; then protobuf-c unpacks and the result is converted into the model. Any
 * other well-formed protobuf is accepted (unknown fields skipped, non-minimal varints, defaults
 * written explicitly): the digest is always computed over our canonical re-encoding, as tvix
 * does (docs/castore.md).
 *
 * Checking in place (obi_directory_check_canonical): obi_pb_is_canonical decides the form from
 * castore.proto's table; the entries are then read through pb_wire's reader into nodes that
 * borrow the encoding's bytes, and the Directory rules applied to them.
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
#include "ocibuild/pb_wire.h"

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
    ProtobufCMessage *msg = NULL;
    int r = obi_pb_unpack(&tvix__castore__v1__directory__descriptor, data, len, &msg, err);
    if (r < 0)
        return obi_error_prefix(err, r, "decode Directory");
    r = obi_directory_from_pb((const Tvix__Castore__V1__Directory *)msg, out, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (r < 0)
        return obi_error_prefix(err, r, "decode Directory");
    return 0;
}

/* ---- canonical encodings checked in place --------------------------------------------------- */

/* Whether the encoding is canonical is obi_pb_is_canonical's question, asked of the Directory
 * table; what is left here is reading the entries of a canonical encoding (so each read below
 * cannot fail) into nodes that borrow its bytes, and applying the Directory rules to them. */

/* One DirectoryNode, FileNode or SymlinkNode body; digest_len is the length of the digest field
 * as sent (the digest itself is copied only when it is 32 bytes). */
static void entry_read(const obi_pb_reader *list, const obi_pb_field *entry, obi_node_kind kind,
                       obi_node *node, size_t *digest_len)
{
    obi_pb_reader r = obi_pb_reader_nested(list, entry);
    obi_pb_field f;
    memset(node, 0, sizeof *node);
    node->kind = kind;
    *digest_len = 0;
    while (obi_pb_next(&r, &f, NULL) > 0) {
        if (f.number == OBI_NODE_FIELD_NAME) {
            node->name = (obi_bytes){(uint8_t *)f.data, f.len}; /* borrowed */
        } else if (kind == OBI_NODE_SYMLINK) {
            if (f.number == OBI_NODE_FIELD_TARGET)
                node->target = (obi_bytes){(uint8_t *)f.data, f.len}; /* borrowed */
        } else if (f.number == OBI_NODE_FIELD_DIGEST) {
            *digest_len = f.len;
            if (f.len == OBI_DIGEST_LEN)
                memcpy(node->digest.bytes, f.data, OBI_DIGEST_LEN);
        } else if (f.number == OBI_NODE_FIELD_SIZE) {
            node->size = f.value;
        } else if (f.number == OBI_NODE_FIELD_EXECUTABLE) {
            node->executable = f.value != 0;
        }
    }
}

/* The entries of a canonical encoding, of every list or of one (only != 0). */
typedef struct entry_iter {
    obi_pb_reader r;
    uint32_t only;
} entry_iter;

static entry_iter entries_of(const uint8_t *data, size_t len, uint32_t only)
{
    return (entry_iter){obi_pb_reader_of(data, len), only};
}

static const obi_node_kind LIST_KIND[] = {
    [OBI_DIRECTORY_FIELD_DIRECTORIES] = OBI_NODE_DIRECTORY,
    [OBI_DIRECTORY_FIELD_FILES] = OBI_NODE_FILE,
    [OBI_DIRECTORY_FIELD_SYMLINKS] = OBI_NODE_SYMLINK,
};
static const char *const LIST_NAME[] = {
    [OBI_DIRECTORY_FIELD_DIRECTORIES] = "directories",
    [OBI_DIRECTORY_FIELD_FILES] = "files",
    [OBI_DIRECTORY_FIELD_SYMLINKS] = "symlinks",
};

/* True with the next entry and its list's field number; false at the end. Lists come in field
 * order, so one list ends where a later one starts. */
static bool entry_next(entry_iter *it, obi_node *node, size_t *digest_len, uint32_t *list)
{
    obi_pb_field f;
    for (;;) {
        obi_pb_reader at = it->r;
        if (obi_pb_next(&it->r, &f, NULL) <= 0)
            return false;
        if (it->only && f.number < it->only)
            continue;
        if (it->only && f.number > it->only) {
            it->r = at;
            return false;
        }
        entry_read(&it->r, &f, LIST_KIND[f.number], node, digest_len);
        *list = f.number;
        return true;
    }
}

static uint64_t add_saturating(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* What decoding refuses after the structure: the first digest that is not 32 bytes. */
static int check_digest_lengths(const uint8_t *data, size_t len, obi_error **err)
{
    entry_iter it = entries_of(data, len, 0);
    obi_node node;
    size_t digest_len = 0;
    uint32_t list = 0;
    while (entry_next(&it, &node, &digest_len, &list)) {
        if (node.kind == OBI_NODE_SYMLINK || digest_len == OBI_DIGEST_LEN)
            continue;
        char q[OBI_NAME_QUOTED_MAX];
        return obi_error_set(
            err, -EINVAL, "decode Directory: %s entry %s: digest is %zu bytes, expected %d",
            obi_node_kind_name(node.kind), obi_name_quote(node.name.data, node.name.len, q),
            digest_len, OBI_DIGEST_LEN);
    }
    return 0;
}

/* What validation checks, in its order: each list's entries and order; sums the size. */
static int check_entries(const uint8_t *data, size_t len, uint64_t *size_out, obi_error **err)
{
    entry_iter it = entries_of(data, len, 0);
    obi_node node, prev;
    size_t digest_len = 0;
    uint32_t list = 0, prev_list = 0;
    uint64_t size = 0;
    while (entry_next(&it, &node, &digest_len, &list)) {
        int r = obi_node_validate_entry(&node, err);
        if (r == 0 && prev_list == list)
            r = obi_node_check_order(&prev, &node, LIST_NAME[list], err);
        if (r < 0)
            return r;
        size = add_saturating(size, 1);
        if (node.kind == OBI_NODE_DIRECTORY)
            size = add_saturating(size, node.size);
        prev = node;
        prev_list = list;
    }
    *size_out = size;
    return 0;
}

/* Then names in two lists: a three-way merge of the sorted lists. */
static int check_unique_across(const uint8_t *data, size_t len, obi_error **err)
{
    entry_iter lists[3];
    obi_node heads[3];
    bool has[3];
    size_t digest_len = 0;
    uint32_t list = 0;
    for (unsigned l = 0; l < 3; l++) {
        lists[l] = entries_of(data, len, OBI_DIRECTORY_FIELD_DIRECTORIES + l);
        has[l] = entry_next(&lists[l], &heads[l], &digest_len, &list);
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
                return obi_node_in_two_lists(&heads[l],
                                             LIST_NAME[OBI_DIRECTORY_FIELD_DIRECTORIES + lowest],
                                             LIST_NAME[OBI_DIRECTORY_FIELD_DIRECTORIES + l], err);
            if (c < 0)
                lowest = l;
        }
        if (lowest < 0)
            return 0;
        has[lowest] = entry_next(&lists[lowest], &heads[lowest], &digest_len, &list);
    }
}

int obi_directory_check_canonical(const uint8_t *data, size_t len, uint64_t *size_out,
                                  obi_directory_entry_fn visit, void *ctx, obi_error **err)
{
    if (!obi_pb_is_canonical(&tvix__castore__v1__directory__descriptor, data, len)) {
        /* Malformed (say where, as decoding would), or just another form. */
        int r = obi_pb_check(&tvix__castore__v1__directory__descriptor, data, len, err);
        return r < 0 ? obi_error_prefix(err, r, "decode Directory") : 0;
    }
    uint64_t size = 0;
    int r = check_digest_lengths(data, len, err);
    if (r == 0)
        r = check_entries(data, len, &size, err);
    if (r == 0)
        r = check_unique_across(data, len, err);
    if (r < 0)
        return r;
    if (visit) {
        entry_iter it = entries_of(data, len, OBI_DIRECTORY_FIELD_DIRECTORIES);
        obi_node node;
        size_t digest_len = 0;
        uint32_t list = 0;
        while (entry_next(&it, &node, &digest_len, &list)) {
            r = visit(&node, ctx, err);
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
    ProtobufCMessage *msg = NULL;
    int r = obi_pb_unpack(&tvix__castore__v1__node__descriptor, data, len, &msg, err);
    if (r < 0)
        return obi_error_prefix(err, r, "decode Node");
    r = obi_node_from_pb((const Tvix__Castore__V1__Node *)msg, out, err);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (r < 0)
        return obi_error_prefix(err, r, "decode Node");
    return 0;
}
