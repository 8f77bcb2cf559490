/*
 * Reference scanning (castore.md "Reference scanning"): which of N needles (arbitrary non-empty
 * byte strings, typically the 32-character nixbase32 hash parts of store paths) occur in a
 * stream of bytes. A scanner is built once from the needles and is immutable (it may be shared
 * between threads); each stream is scanned through a cheap per-stream state that collects the
 * set of needles found. Ingest feeds file contents and symlink targets into a state, one stream
 * per file (names are not scanned); the states of one output can be merged.
 *
 * Matches may overlap and may straddle the boundaries between feed calls; they are all found
 * and there are no false positives. Duplicate needles are each reported.
 */
#ifndef OCIBUILD_REFSCAN_H
#define OCIBUILD_REFSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"

typedef struct obi_refscan obi_refscan;
typedef struct obi_refscan_state obi_refscan_state;

typedef struct obi_refscan_needle {
    const void *data;
    size_t len; /* >= 1 */
} obi_refscan_needle;

/* Builds a scanner; the needles are copied. An empty needle is an error naming its index.
 * Zero needles is allowed (nothing is ever found). */
int obi_refscan_new(const obi_refscan_needle *needles, size_t n_needles, obi_refscan **out,
                    obi_error **err);
/* Same, from NUL-terminated strings. */
int obi_refscan_new_strings(const char *const *needles, size_t n_needles, obi_refscan **out,
                            obi_error **err);
void obi_refscan_free(obi_refscan *scanner);
size_t obi_refscan_needle_count(const obi_refscan *scanner);

/* A scan state for one scanner (which must outlive it): an empty found-set and the start of
 * a stream. */
int obi_refscan_state_new(const obi_refscan *scanner, obi_refscan_state **out, obi_error **err);
void obi_refscan_state_free(obi_refscan_state *state);
/* Scans the next len bytes of the current stream. */
void obi_refscan_feed(obi_refscan_state *state, const void *data, size_t len);
/* Ends the current stream: what follows is a new stream (no match spans the two). The
 * found-set is kept. */
void obi_refscan_end_stream(obi_refscan_state *state);
/* Scans data as one whole stream of its own (end_stream, feed, end_stream). */
void obi_refscan_scan(obi_refscan_state *state, const void *data, size_t len);
/* Adds from's found-set to into's (both must come from the same scanner). */
int obi_refscan_state_merge(obi_refscan_state *into, const obi_refscan_state *from,
                            obi_error **err);
bool obi_refscan_state_found(const obi_refscan_state *state, size_t needle_index);
size_t obi_refscan_state_found_count(const obi_refscan_state *state);
/* Ascending indexes of the needles found; *out is malloc'd (NULL when none are found). */
int obi_refscan_state_result(const obi_refscan_state *state, size_t **out, size_t *n_out,
                             obi_error **err);

OBI_DEFINE_CLEANUP(obi_refscan, obi_refscan_free)
OBI_DEFINE_CLEANUP(obi_refscan_state, obi_refscan_state_free)
#define cleanup_refscan __attribute__((cleanup(obi_refscan_freep)))
#define cleanup_refscan_state __attribute__((cleanup(obi_refscan_state_freep)))

#endif
