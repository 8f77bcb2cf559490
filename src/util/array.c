/*
 * Growable arrays (see include/ocibuild/array.h): one growth rule, with its overflow checks, for
 * every list in the code base.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/array.h"

int obi_array_grow_sized(void **items, size_t *cap, size_t need, size_t elem_size)
{
    assert(elem_size > 0);
    if (need <= *cap)
        return 0;
    size_t max = SIZE_MAX / elem_size;
    if (need > max)
        return -ENOMEM;
    size_t grown = *cap > max / 2 ? max : 2 * *cap;
    if (grown < OBI_ARRAY_MIN_CAP)
        grown = OBI_ARRAY_MIN_CAP;
    if (grown < need)
        grown = need;
    if (grown > max)
        grown = max;
    void *p = realloc(*items, grown * elem_size);
    if (!p)
        return -ENOMEM;
    memset((char *)p + *cap * elem_size, 0, (grown - *cap) * elem_size);
    *items = p;
    *cap = grown;
    return 0;
}

size_t obi_array_cap_for(size_t n)
{
    if (n == 0)
        return 0;
    size_t cap = OBI_ARRAY_MIN_CAP;
    while (cap < n && cap <= SIZE_MAX / 2)
        cap *= 2;
    return cap < n ? n : cap;
}
