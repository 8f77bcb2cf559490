/*
 * Progress of long work (an import, an export), for whoever shows it: the bytes of file
 * contents and the files done so far, reported after every file and every chunk (1 MiB) from
 * the working thread. The library only counts; the CLI decides whether a person sees a line.
 */
#ifndef OCIBUILD_PROGRESS_H
#define OCIBUILD_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct obi_progress {
    void (*fn)(void *ctx, uint64_t bytes, uint64_t files);
    void *ctx;
} obi_progress;

/* Calls progress (which may be NULL) with the totals so far. */
static inline void obi_progress_report(const obi_progress *progress, uint64_t bytes, uint64_t files)
{
    if (progress && progress->fn)
        progress->fn(progress->ctx, bytes, files);
}

#endif
