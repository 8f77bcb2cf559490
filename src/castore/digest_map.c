/*
 * Digest -> pointer hash map (see include/ocibuild/digest_map.h).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/digest_map.h"

void obi_digest_map_init(obi_digest_map *map, void (*free_value)(void *value))
{
    memset(map, 0, sizeof *map);
    map->free_value = free_value;
}

void obi_digest_map_clear(obi_digest_map *map)
{
    for (size_t i = 0; i < map->capacity; i++)
        if (map->slots[i].value && map->free_value)
            map->free_value(map->slots[i].value);
    free(map->slots);
    map->slots = NULL;
    map->capacity = map->count = 0;
}

static size_t slot_of(const obi_digest *key, size_t capacity)
{
    uint64_t h;
    memcpy(&h, key->bytes, sizeof h);
    return (size_t)h & (capacity - 1);
}

static obi_digest_map_entry *find_slot(obi_digest_map_entry *slots, size_t capacity,
                                       const obi_digest *key)
{
    size_t i = slot_of(key, capacity);
    while (slots[i].value && !obi_digest_equal(&slots[i].key, key))
        i = (i + 1) & (capacity - 1);
    return &slots[i];
}

void *obi_digest_map_get(const obi_digest_map *map, const obi_digest *key)
{
    if (map->capacity == 0)
        return NULL;
    return find_slot(map->slots, map->capacity, key)->value;
}

static int grow(obi_digest_map *map)
{
    size_t capacity = map->capacity ? map->capacity * 2 : 16;
    obi_digest_map_entry *slots = calloc(capacity, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < map->capacity; i++)
        if (map->slots[i].value)
            *find_slot(slots, capacity, &map->slots[i].key) = map->slots[i];
    free(map->slots);
    map->slots = slots;
    map->capacity = capacity;
    return 0;
}

int obi_digest_map_insert(obi_digest_map *map, const obi_digest *key, void *value)
{
    if (obi_digest_map_get(map, key))
        return 0;
    /* keep the load factor at most 1/2 */
    if ((map->count + 1) * 2 > map->capacity) {
        int r = grow(map);
        if (r < 0)
            return r;
    }
    obi_digest_map_entry *slot = find_slot(map->slots, map->capacity, key);
    slot->key = *key;
    slot->value = value;
    map->count++;
    return 1;
}
