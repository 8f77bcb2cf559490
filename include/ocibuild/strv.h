/*
 * String vectors: NULL-terminated arrays of owned strings (char **), the form execve and the
 * runtime's argv take and obi_strv_free (cleanup.h) frees, and a builder that collects one (a
 * directory's names, a closure's store paths) through obi_array_grow. The builder's items are
 * NULL-terminated as soon as anything was added, so a caller may read them in between.
 */
#ifndef OCIBUILD_STRV_H
#define OCIBUILD_STRV_H

#include <stdbool.h>
#include <stddef.h>

typedef struct obi_strv_builder {
    char **items; /* NULL until the first add, then NULL-terminated */
    size_t n;     /* strings in items */
    size_t cap;
} obi_strv_builder;

/* qsort's comparator for an array of strings (char * or const char *): bytewise order, as
 * strcmp compares unsigned chars. */
int obi_strv_item_compare(const void *a, const void *b);

/* Appends a copy of s. -ENOMEM leaves the builder as it was. */
int obi_strv_builder_add(obi_strv_builder *b, const char *s);
bool obi_strv_builder_contains(const obi_strv_builder *b, const char *s);
/* Sorts the strings bytewise and frees repeated ones. */
void obi_strv_builder_sort_unique(obi_strv_builder *b);
/* Hands out the vector (an empty builder gives one of just NULL) and empties the builder; *n_out
 * (may be NULL) gets its length. NULL on out of memory (the builder is kept). */
char **obi_strv_builder_steal(obi_strv_builder *b, size_t *n_out);
/* Frees the strings and the vector and empties the builder. */
void obi_strv_builder_clear(obi_strv_builder *b);
#define cleanup_strv_builder __attribute__((cleanup(obi_strv_builder_clear)))

#endif
