/*
 * The castore node and directory model (../shared/spec/castore.md): construction, copying,
 * the validation rules (names, sort order, uniqueness across lists, symlink targets), recursive
 * sizes and lookup. The wire form lives in node_codec.c and the JSON form in node_json.c; both
 * produce and consume the structs defined in include/ocibuild/node.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"
#include "ocibuild/array.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/node.h"

int obi_bytes_set(obi_bytes *b, const void *data, size_t len)
{
    if (len == SIZE_MAX)
        return -ENOMEM;
    uint8_t *copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    if (len)
        memcpy(copy, data, len);
    copy[len] = 0;
    free(b->data);
    b->data = copy;
    b->len = len;
    return 0;
}

void obi_bytes_clear(obi_bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

void obi_node_clear(obi_node *node)
{
    if (!node)
        return;
    obi_bytes_clear(&node->name);
    obi_bytes_clear(&node->target);
    memset(node, 0, sizeof *node);
}

int obi_node_copy(obi_node *dst, const obi_node *src)
{
    obi_node n = *src;
    n.name = (obi_bytes){NULL, 0};
    n.target = (obi_bytes){NULL, 0};
    if (obi_bytes_set(&n.name, src->name.data, src->name.len) < 0)
        return -ENOMEM;
    if (src->kind == OBI_NODE_SYMLINK &&
        obi_bytes_set(&n.target, src->target.data, src->target.len) < 0) {
        obi_bytes_clear(&n.name);
        return -ENOMEM;
    }
    *dst = n;
    return 0;
}

int obi_node_init_directory(obi_node *node, const void *name, size_t name_len,
                            const obi_digest *digest, uint64_t size)
{
    obi_node n = {.kind = OBI_NODE_DIRECTORY, .digest = *digest, .size = size};
    if (obi_bytes_set(&n.name, name, name_len) < 0)
        return -ENOMEM;
    *node = n;
    return 0;
}

int obi_node_init_file(obi_node *node, const void *name, size_t name_len, const obi_digest *digest,
                       uint64_t size, bool executable)
{
    obi_node n = {.kind = OBI_NODE_FILE, .digest = *digest, .size = size, .executable = executable};
    if (obi_bytes_set(&n.name, name, name_len) < 0)
        return -ENOMEM;
    *node = n;
    return 0;
}

int obi_node_init_symlink(obi_node *node, const void *name, size_t name_len, const void *target,
                          size_t target_len)
{
    obi_node n = {.kind = OBI_NODE_SYMLINK};
    if (obi_bytes_set(&n.name, name, name_len) < 0)
        return -ENOMEM;
    if (obi_bytes_set(&n.target, target, target_len) < 0) {
        obi_bytes_clear(&n.name);
        return -ENOMEM;
    }
    *node = n;
    return 0;
}

int obi_node_set_name(obi_node *node, const void *name, size_t name_len)
{
    return obi_bytes_set(&node->name, name, name_len);
}

const char *obi_node_kind_name(obi_node_kind kind)
{
    switch (kind) {
    case OBI_NODE_DIRECTORY:
        return "directory";
    case OBI_NODE_FILE:
        return "file";
    case OBI_NODE_SYMLINK:
        return "symlink";
    }
    return "unknown";
}

char *obi_name_quote(const uint8_t *name, size_t len, char out[OBI_NAME_QUOTED_MAX])
{
    static const char hex[] = "0123456789abcdef";
    size_t shown = len > 64 ? 64 : len, o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < shown; i++) {
        uint8_t c = name[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o++] = '"';
    if (shown < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = 0;
    return out;
}

int obi_name_validate(const uint8_t *name, size_t len, const char *what, obi_error **err)
{
    if (len == 0)
        return obi_error_set(err, -EINVAL, "%s: name is empty", what);
    if (len > OBI_NAME_MAX)
        return obi_error_set(err, -EINVAL, "%s: name is %zu bytes, longer than %d", what, len,
                             OBI_NAME_MAX);
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return obi_error_set(err, -EINVAL, "%s: name is \"%.*s\"", what, (int)len,
                             (const char *)name);
    const uint8_t *slash = memchr(name, '/', len);
    if (slash)
        return obi_error_set(err, -EINVAL, "%s: name contains '/' at offset %zu", what,
                             (size_t)(slash - name));
    const uint8_t *nul = memchr(name, 0, len);
    if (nul)
        return obi_error_set(err, -EINVAL, "%s: name contains NUL at offset %zu", what,
                             (size_t)(nul - name));
    return 0;
}

/* Checks one node; `role` is "entry" inside a Directory or "node" for a root node. */
static int node_validate_as(const obi_node *node, const char *role, obi_error **err)
{
    char quoted[OBI_NAME_QUOTED_MAX], what[OBI_NAME_QUOTED_MAX + 32];
    obi_name_quote(node->name.data, node->name.len, quoted);
    snprintf(what, sizeof what, "%s %s %s", obi_node_kind_name(node->kind), role, quoted);
    if (node->kind != OBI_NODE_DIRECTORY && node->kind != OBI_NODE_FILE &&
        node->kind != OBI_NODE_SYMLINK)
        return obi_error_set(err, -EINVAL, "%s: invalid node kind %d", what, (int)node->kind);
    int r = obi_name_validate(node->name.data, node->name.len, what, err);
    if (r < 0)
        return r;
    if (node->kind == OBI_NODE_SYMLINK) {
        if (node->target.len == 0)
            return obi_error_set(err, -EINVAL, "%s: symlink target is empty", what);
        if (node->target.len > OBI_SYMLINK_TARGET_MAX)
            return obi_error_set(err, -EINVAL, "%s: symlink target is %zu bytes, longer than %d",
                                 what, node->target.len, OBI_SYMLINK_TARGET_MAX);
        const uint8_t *nul = memchr(node->target.data, 0, node->target.len);
        if (nul)
            return obi_error_set(err, -EINVAL, "%s: symlink target contains NUL at offset %zu",
                                 what, (size_t)(nul - node->target.data));
    }
    return 0;
}

int obi_node_validate(const obi_node *node, obi_error **err)
{
    return node_validate_as(node, "node", err);
}

obi_directory *obi_directory_new(void)
{
    return calloc(1, sizeof(obi_directory));
}

static void node_list_free(obi_node *nodes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        obi_node_clear(&nodes[i]);
    free(nodes);
}

void obi_directory_free(obi_directory *dir)
{
    if (!dir)
        return;
    node_list_free(dir->directories, dir->n_directories);
    node_list_free(dir->files, dir->n_files);
    node_list_free(dir->symlinks, dir->n_symlinks);
    free(dir);
}

/* The lists keep no capacity: they only ever grow one node at a time, so theirs is the one
 * obi_array_cap_for gives for their count. */
static int list_append(obi_node **nodes, size_t *n, obi_node *node)
{
    size_t count = *n, cap = obi_array_cap_for(count);
    if (obi_array_grow(nodes, &cap, count + 1) < 0)
        return -ENOMEM;
    (*nodes)[count] = *node;
    *n = count + 1;
    memset(node, 0, sizeof *node);
    return 0;
}

int obi_directory_append_owned(obi_directory *dir, obi_node *node)
{
    switch (node->kind) {
    case OBI_NODE_DIRECTORY:
        return list_append(&dir->directories, &dir->n_directories, node);
    case OBI_NODE_FILE:
        return list_append(&dir->files, &dir->n_files, node);
    case OBI_NODE_SYMLINK:
        return list_append(&dir->symlinks, &dir->n_symlinks, node);
    }
    return -EINVAL;
}

int obi_directory_add(obi_directory *dir, const obi_node *node)
{
    if (node->kind != OBI_NODE_DIRECTORY && node->kind != OBI_NODE_FILE &&
        node->kind != OBI_NODE_SYMLINK)
        return -EINVAL;
    obi_node copy;
    if (obi_node_copy(&copy, node) < 0)
        return -ENOMEM;
    int r = obi_directory_append_owned(dir, &copy);
    if (r < 0)
        obi_node_clear(&copy);
    return r;
}

int obi_name_compare(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
    size_t n = a_len < b_len ? a_len : b_len;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return a_len < b_len ? -1 : a_len > b_len ? 1 : 0;
}

static int node_name_cmp(const void *a, const void *b)
{
    const obi_node *x = a, *y = b;
    return obi_name_compare(x->name.data, x->name.len, y->name.data, y->name.len);
}

void obi_directory_sort(obi_directory *dir)
{
    if (dir->n_directories > 1)
        qsort(dir->directories, dir->n_directories, sizeof(obi_node), node_name_cmp);
    if (dir->n_files > 1)
        qsort(dir->files, dir->n_files, sizeof(obi_node), node_name_cmp);
    if (dir->n_symlinks > 1)
        qsort(dir->symlinks, dir->n_symlinks, sizeof(obi_node), node_name_cmp);
}

int obi_node_validate_entry(const obi_node *node, obi_error **err)
{
    return node_validate_as(node, "entry", err);
}

int obi_node_check_order(const obi_node *prev, const obi_node *node, const char *list,
                         obi_error **err)
{
    int c = node_name_cmp(prev, node);
    if (c < 0)
        return 0;
    char a[OBI_NAME_QUOTED_MAX], b[OBI_NAME_QUOTED_MAX];
    obi_name_quote(node->name.data, node->name.len, a);
    if (c == 0)
        return obi_error_set(err, -EINVAL, "%s: %s appears twice", list, a);
    obi_name_quote(prev->name.data, prev->name.len, b);
    return obi_error_set(err, -EINVAL, "%s: %s is not sorted after %s", list, a, b);
}

int obi_node_in_two_lists(const obi_node *node, const char *list_a, const char *list_b,
                          obi_error **err)
{
    char q[OBI_NAME_QUOTED_MAX];
    return obi_error_set(err, -EINVAL, "%s appears in both %s and %s",
                         obi_name_quote(node->name.data, node->name.len, q), list_a, list_b);
}

static int validate_list(const obi_node *nodes, size_t n, obi_node_kind kind, const char *list,
                         obi_error **err)
{
    for (size_t i = 0; i < n; i++) {
        if (nodes[i].kind != kind)
            return obi_error_set(err, -EINVAL, "%s[%zu]: is a %s node, not a %s node", list, i,
                                 obi_node_kind_name(nodes[i].kind), obi_node_kind_name(kind));
        int r = node_validate_as(&nodes[i], "entry", err);
        if (r == 0 && i > 0)
            r = obi_node_check_order(&nodes[i - 1], &nodes[i], list, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* With every list strictly ascending, one three-way merge finds a name in two lists. */
static int validate_unique_across(const obi_directory *dir, obi_error **err)
{
    static const char *const lists[3] = {"directories", "files", "symlinks"};
    const obi_node *nodes[3] = {dir->directories, dir->files, dir->symlinks};
    const size_t n[3] = {dir->n_directories, dir->n_files, dir->n_symlinks};
    size_t at[3] = {0, 0, 0};
    for (;;) {
        int lowest = -1;
        for (int l = 0; l < 3; l++) {
            if (at[l] >= n[l])
                continue;
            if (lowest < 0) {
                lowest = l;
                continue;
            }
            int c = node_name_cmp(&nodes[l][at[l]], &nodes[lowest][at[lowest]]);
            if (c == 0)
                return obi_node_in_two_lists(&nodes[l][at[l]], lists[lowest], lists[l], err);
            if (c < 0)
                lowest = l;
        }
        if (lowest < 0)
            return 0;
        at[lowest]++;
    }
}

int obi_directory_validate(const obi_directory *dir, obi_error **err)
{
    int r =
        validate_list(dir->directories, dir->n_directories, OBI_NODE_DIRECTORY, "directories", err);
    if (r == 0)
        r = validate_list(dir->files, dir->n_files, OBI_NODE_FILE, "files", err);
    if (r == 0)
        r = validate_list(dir->symlinks, dir->n_symlinks, OBI_NODE_SYMLINK, "symlinks", err);
    if (r == 0)
        r = validate_unique_across(dir, err);
    return r;
}

static uint64_t add_saturating(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

uint64_t obi_directory_size(const obi_directory *dir)
{
    uint64_t size = 0;
    size = add_saturating(size, dir->n_directories);
    size = add_saturating(size, dir->n_files);
    size = add_saturating(size, dir->n_symlinks);
    for (size_t i = 0; i < dir->n_directories; i++)
        size = add_saturating(size, dir->directories[i].size);
    return size;
}

static const obi_node *list_find(const obi_node *nodes, size_t n, const uint8_t *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (nodes[i].name.len == len && (len == 0 || memcmp(nodes[i].name.data, name, len) == 0))
            return &nodes[i];
    return NULL;
}

const obi_node *obi_directory_find(const obi_directory *dir, const uint8_t *name, size_t len)
{
    const obi_node *n = list_find(dir->directories, dir->n_directories, name, len);
    if (!n)
        n = list_find(dir->files, dir->n_files, name, len);
    if (!n)
        n = list_find(dir->symlinks, dir->n_symlinks, name, len);
    return n;
}
