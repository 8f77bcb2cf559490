/*
 * castore nodes and directories (../shared/spec/castore.md): the in-memory model, its canonical
 * protobuf encoding (via the protobuf-c code generated from proto/tvix/castore/v1), digests,
 * recursive sizes, validation, and protobuf's JSON mapping for Node.
 */
#ifndef OCIBUILD_NODE_H
#define OCIBUILD_NODE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/digest.h"
#include "ocibuild/error.h"

#define OBI_NAME_MAX 255
#define OBI_SYMLINK_TARGET_MAX 4095
/* The deepest tree castore takes: directories nested at most this many levels (a Directory with
 * no subdirectories is 1 level). Ingest, export, NAR and every directory service's put refuse
 * deeper trees (docs/security.md, "Deep trees"). */
#define OBI_DIRECTORY_MAX_DEPTH 2048

typedef enum obi_node_kind {
    OBI_NODE_DIRECTORY = 1,
    OBI_NODE_FILE = 2,
    OBI_NODE_SYMLINK = 3,
} obi_node_kind;

typedef struct obi_bytes {
    uint8_t *data; /* owned; NUL-terminated for convenience (not counted in len) */
    size_t len;
} obi_bytes;

typedef struct obi_node {
    obi_node_kind kind;
    obi_bytes name;
    obi_digest digest; /* directory and file */
    uint64_t size;     /* directory: recursive entry count; file: content length */
    bool executable;   /* file */
    obi_bytes target;  /* symlink */
} obi_node;

typedef struct obi_directory {
    obi_node *directories;
    size_t n_directories;
    obi_node *files;
    size_t n_files;
    obi_node *symlinks;
    size_t n_symlinks;
} obi_directory;

/* Copies len bytes into a fresh NUL-terminated obi_bytes. */
int obi_bytes_set(obi_bytes *b, const void *data, size_t len);
void obi_bytes_clear(obi_bytes *b);

/* Frees name and target; the node itself is caller storage. */
void obi_node_clear(obi_node *node);
int obi_node_copy(obi_node *dst, const obi_node *src);
/* Constructors into caller storage; name and target are copied. */
int obi_node_init_directory(obi_node *node, const void *name, size_t name_len,
                            const obi_digest *digest, uint64_t size);
int obi_node_init_file(obi_node *node, const void *name, size_t name_len, const obi_digest *digest,
                       uint64_t size, bool executable);
int obi_node_init_symlink(obi_node *node, const void *name, size_t name_len, const void *target,
                          size_t target_len);
/* Replaces the node's name. */
int obi_node_set_name(obi_node *node, const void *name, size_t name_len);

/* A name is 1..255 bytes, not "." or "..", no '/' and no NUL. `what` prefixes the message. */
int obi_name_validate(const uint8_t *name, size_t len, const char *what, obi_error **err);
/* Name, digest and symlink-target rules for one node; errors name it. */
int obi_node_validate(const obi_node *node, obi_error **err);

obi_directory *obi_directory_new(void);
void obi_directory_free(obi_directory *dir);
static inline void obi_directory_freep(obi_directory **d)
{
    obi_directory_free(*d);
}
#define cleanup_directory __attribute__((cleanup(obi_directory_freep)))
static inline void obi_node_clearp(obi_node *n)
{
    obi_node_clear(n);
}
#define cleanup_node __attribute__((cleanup(obi_node_clearp)))
/* Appends a copy of node to the list of its kind (no sorting or validation). */
int obi_directory_add(obi_directory *dir, const obi_node *node);
/* Like obi_directory_add but moves the node: on success *node is left zeroed (cleared). */
int obi_directory_append_owned(obi_directory *dir, obi_node *node);
/* Bytewise name order (memcmp, then shorter first): the order of every castore list. */
int obi_name_compare(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len);
/* Sorts each list by name, bytewise. */
void obi_directory_sort(obi_directory *dir);
/* All rules of castore.md: names, sort order, uniqueness across lists, digests, targets. */
int obi_directory_validate(const obi_directory *dir, obi_error **err);
/* Number of entries plus the sizes of child directories; saturates at UINT64_MAX. */
uint64_t obi_directory_size(const obi_directory *dir);
/* Canonical protobuf encoding (defaults omitted, field order); *out is malloc'd. */
int obi_directory_encode(const obi_directory *dir, uint8_t **out, size_t *out_len, obi_error **err);
/* Decodes (does not validate; call obi_directory_validate). */
int obi_directory_decode(const uint8_t *data, size_t len, obi_directory **out, obi_error **err);
/* Checks an encoded Directory in place, without decoding it (so a Directory of any size costs
 * only its encoding): returns 1 when data is the canonical encoding (what obi_directory_encode
 * writes) of a valid Directory, with *size_out its obi_directory_size, after calling visit (if
 * not NULL) for each directory entry (borrowed: its name points into data and is not
 * NUL-terminated); 0 when data is well-formed protobuf but not canonical (decode it, which may
 * still refuse it, and re-encode); negative, with the message obi_directory_decode +
 * obi_directory_validate would give, when it is malformed, or canonical but invalid. */
typedef int (*obi_directory_entry_fn)(const obi_node *entry, void *ctx, obi_error **err);
int obi_directory_check_canonical(const uint8_t *data, size_t len, uint64_t *size_out,
                                  obi_directory_entry_fn visit, void *ctx, obi_error **err);
/* BLAKE3 of the canonical encoding. */
int obi_directory_digest(const obi_directory *dir, obi_digest *out, obi_error **err);
/* Looks up an entry by name in any list; NULL when absent. Linear scan, so it also works on
 * unsorted lists. */
const obi_node *obi_directory_find(const obi_directory *dir, const uint8_t *name, size_t len);

/* Node message (the oneof) in protobuf binary form. */
int obi_node_encode(const obi_node *node, uint8_t **out, size_t *out_len, obi_error **err);
int obi_node_decode(const uint8_t *data, size_t len, obi_node *out, obi_error **err);

/* protobuf JSON mapping: {"directory":{"name":"<b64>","digest":"<b64>","size":"N"}},
 * {"file":{..., "executable":true}}, {"symlink":{"name":..,"target":..}}. Defaults omitted on
 * output; uint64 as a decimal string (numbers accepted on input). */
json_t *obi_node_to_json(const obi_node *node);
int obi_node_from_json(const json_t *json, obi_node *out, obi_error **err);

#endif
