/*
 * Helpers shared by the castore node files (node.c, node_codec.c, node_json.c) and nobody else:
 * quoting names for error messages and the per-kind words used in those messages.
 */
#ifndef OCIBUILD_NODE_INTERNAL_H
#define OCIBUILD_NODE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/node.h"

/* The field numbers of castore.proto that node_codec.c reads in place from canonical Directory
 * encodings (everything else reads them from protoc-c's descriptors); test_node checks them
 * against those. */
enum {
    OBI_DIRECTORY_FIELD_DIRECTORIES = 1,
    OBI_DIRECTORY_FIELD_FILES = 2,
    OBI_DIRECTORY_FIELD_SYMLINKS = 3,
    OBI_NODE_FIELD_NAME = 1,       /* DirectoryNode, FileNode, SymlinkNode */
    OBI_NODE_FIELD_DIGEST = 2,     /* DirectoryNode, FileNode */
    OBI_NODE_FIELD_TARGET = 2,     /* SymlinkNode */
    OBI_NODE_FIELD_SIZE = 3,       /* DirectoryNode, FileNode */
    OBI_NODE_FIELD_EXECUTABLE = 4, /* FileNode */
};

/* Enough for a quoted, escaped name of up to 64 shown bytes plus "...". */
#define OBI_NAME_QUOTED_MAX 300

/* Writes name as a double-quoted C-style string ("\x00" for unprintable bytes), showing at most
 * 64 bytes (then "..."), into out. Returns out. */
char *obi_name_quote(const uint8_t *name, size_t len, char out[OBI_NAME_QUOTED_MAX]);

/* "directory", "file", "symlink" or "unknown". */
const char *obi_node_kind_name(obi_node_kind kind);

/* The rules obi_directory_validate applies, one at a time, with its messages, for code that
 * checks a Directory without building one (obi_directory_check_canonical). Nodes may borrow
 * their bytes (names need not be NUL-terminated). */
int obi_node_validate_entry(const obi_node *node, obi_error **err);
/* node must sort strictly after prev in the named list. */
int obi_node_check_order(const obi_node *prev, const obi_node *node, const char *list,
                         obi_error **err);
/* The error for a name found in two lists. */
int obi_node_in_two_lists(const obi_node *node, const char *list_a, const char *list_b,
                          obi_error **err);

#endif
