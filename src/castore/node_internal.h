/*
 * Helpers shared by the castore node files (node.c, node_codec.c, node_json.c) and nobody else:
 * quoting names for error messages and the per-kind words used in those messages.
 */
#ifndef OCIBUILD_NODE_INTERNAL_H
#define OCIBUILD_NODE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ocibuild/node.h"

/* Enough for a quoted, escaped name of up to 64 shown bytes plus "...". */
#define OBI_NAME_QUOTED_MAX 300

/* Writes name as a double-quoted C-style string ("\x00" for unprintable bytes), showing at most
 * 64 bytes (then "..."), into out. Returns out. */
char *obi_name_quote(const uint8_t *name, size_t len, char out[OBI_NAME_QUOTED_MAX]);

/* "directory", "file", "symlink" or "unknown". */
const char *obi_node_kind_name(obi_node_kind kind);

#endif
