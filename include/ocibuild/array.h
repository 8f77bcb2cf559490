/*
 * Growable arrays: the one helper behind every list that grows as it is filled (the names of a
 * directory, a walk's levels, a Directory's nodes, an environment, ...). The caller keeps the
 * pointer, the count and the capacity (in elements) where it likes; obi_array_grow makes room
 * for `need` elements:
 *
 *     if (obi_array_grow(&names, &cap, n + 1) < 0)
 *         return obi_error_oom(err);
 *     names[n++] = name;
 *
 * Capacity grows geometrically (to max(need, 2 * cap, OBI_ARRAY_MIN_CAP)), so n appends cost
 * O(n) copies, and every size is checked for overflow. The added elements are zeroed, so a list
 * of pointers or structs reads as empty until filled. On failure (-ENOMEM, also when the size
 * would not fit a size_t) nothing changes: the array keeps its elements and its capacity, and
 * is freed as before. Byte buffers are obi_buf (buf.h), which keeps a NUL past its end.
 */
#ifndef OCIBUILD_ARRAY_H
#define OCIBUILD_ARRAY_H

#include <stddef.h>

#define OBI_ARRAY_MIN_CAP 4

/* Ensures *cap >= need for the array *items of elem_size-byte elements (see above). */
int obi_array_grow_sized(void **items, size_t *cap, size_t need, size_t elem_size);

/* obi_array_grow(&items, &cap, need): the same for a typed array (items a T *, cap a size_t).
 * &items is evaluated twice (to read and to write back), so it must have no side effects. */

#define obi_array_grow(itemsp, capp, need)                                                         \
    ({                                                                                             \
        void *obi_array_ = *(itemsp);                                                              \
        int obi_array_r_ = obi_array_grow_sized(&obi_array_, (capp), (need), sizeof **(itemsp));   \
        *(itemsp) = obi_array_;                                                                    \
        obi_array_r_;                                                                              \
    })

/* The capacity of an array of n elements grown one at a time from empty by obi_array_grow: 0
 * for n == 0, else the larger of OBI_ARRAY_MIN_CAP and the next power of two >= n. For arrays
 * that keep no capacity of their own (a Directory's node lists, node.h). */
size_t obi_array_cap_for(size_t n);

#endif
