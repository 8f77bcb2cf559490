/*
 * Progress of long work (an import, an export, a build's input materialization), for whoever
 * shows it: the bytes of file contents and the files done so far, reported after every file
 * and every chunk (1 MiB) from the working thread, and, where one hook serves several pieces of
 * work (a build service materializing each build's inputs), the end of each. The library only
 * counts; the CLI decides whether a person sees a line.
 */
#ifndef OCIBUILD_PROGRESS_H
#define OCIBUILD_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct obi_progress {
    void (*fn)(void *ctx, uint64_t bytes, uint64_t files);
    void *ctx;
    void (*end)(void *ctx); /* optional: this piece of work is over, the next report is anew */
} obi_progress;

/* Calls progress (which may be NULL) with the totals so far. */
static inline void obi_progress_report(const obi_progress *progress, uint64_t bytes, uint64_t files)
{
    if (progress && progress->fn)
        progress->fn(progress->ctx, bytes, files);
}

/* Calls progress's end, if it has one. */
static inline void obi_progress_end(const obi_progress *progress)
{
    if (progress && progress->end)
        progress->end(progress->ctx);
}

#endif
