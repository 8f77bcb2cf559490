/*
 * String vectors and their builder (see include/ocibuild/strv.h). The builder keeps room for
 * the terminating NULL, so the items are a valid vector after every add.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/array.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/strv.h"

void obi_strv_free(char **strv)
{
    if (!strv)
        return;
    for (char **s = strv; *s; s++)
        free(*s);
    free(strv);
}

int obi_strv_builder_add(obi_strv_builder *b, const char *s)
{
    char *copy = strdup(s);
    if (!copy || obi_array_grow(&b->items, &b->cap, b->n + 2) < 0) {
        free(copy);
        return -ENOMEM;
    }
    b->items[b->n++] = copy;
    b->items[b->n] = NULL;
    return 0;
}

bool obi_strv_builder_contains(const obi_strv_builder *b, const char *s)
{
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->items[i], s) == 0)
            return true;
    return false;
}

int obi_strv_item_compare(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void obi_strv_builder_sort_unique(obi_strv_builder *b)
{
    if (b->n < 2)
        return;
    qsort(b->items, b->n, sizeof *b->items, obi_strv_item_compare);
    size_t kept = 1;
    for (size_t i = 1; i < b->n; i++) {
        if (strcmp(b->items[kept - 1], b->items[i]) == 0)
            free(b->items[i]);
        else
            b->items[kept++] = b->items[i];
    }
    b->n = kept;
    b->items[kept] = NULL;
}

char **obi_strv_builder_steal(obi_strv_builder *b, size_t *n_out)
{
    if (!b->items && obi_array_grow(&b->items, &b->cap, 1) < 0)
        return NULL; /* the one element is zeroed: the terminating NULL */
    if (n_out)
        *n_out = b->n;
    char **items = b->items;
    *b = (obi_strv_builder){0};
    return items;
}

void obi_strv_builder_clear(obi_strv_builder *b)
{
    obi_strv_free(b->items);
    *b = (obi_strv_builder){0};
}
