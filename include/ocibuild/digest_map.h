/*
 * A hash map from digest to an owned pointer (open addressing, linear probing; digests are
 * uniformly random, so their first bytes are the hash), and with a dummy value a digest set.
 * Used by the memory backends, the directory putters, the breadth-first walk's "seen" set, the
 * store check and the gRPC client's check of a recursive Get. Not thread-safe: callers lock.
 */
#ifndef OCIBUILD_DIGEST_MAP_H
#define OCIBUILD_DIGEST_MAP_H

#include <stddef.h>

#include "ocibuild/digest.h"

typedef struct obi_digest_map_entry {
    obi_digest key;
    void *value; /* NULL marks an empty slot, so values are never NULL */
} obi_digest_map_entry;

typedef struct obi_digest_map {
    obi_digest_map_entry *slots;
    size_t capacity; /* power of two, or 0 */
    size_t count;
    void (*free_value)(void *value); /* may be NULL */
} obi_digest_map;

/* The value of every entry of a map used as a set of digests (any non-NULL pointer would do). */
#define OBI_DIGEST_SET_MEMBER ((void *)1)

void obi_digest_map_init(obi_digest_map *map, void (*free_value)(void *value));
/* Frees every value (with free_value) and the table. */
void obi_digest_map_clear(obi_digest_map *map);
void *obi_digest_map_get(const obi_digest_map *map, const obi_digest *key);
/* Inserts value unless key is present. Returns 1 if inserted (the map now owns value), 0 if
 * the key was present (value untouched, caller keeps it), -ENOMEM. value must not be NULL. */
int obi_digest_map_insert(obi_digest_map *map, const obi_digest *key, void *value);

#endif
