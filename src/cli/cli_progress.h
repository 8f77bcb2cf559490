/*
 * A progress line on a terminal for work that takes a while (imports, exports, a build's input
 * materialization): nothing for the first second, then one line on stderr rewritten in place
 * ("importing X: 512.0 MiB, 1200 files"), and a last line with the total and the time once it is
 * done. Silent when stderr is not a terminal or when asked to be (-q), so logs and scripts never
 * see it. Registry pulls get a line per layer.
 */
#ifndef OCIBUILD_CLI_PROGRESS_H
#define OCIBUILD_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#include "ocibuild/progress.h"

typedef struct cli_progress {
    obi_progress hook; /* hand &progress->hook to the library */
    const char *what;  /* "importing /path" */
    bool enabled;
    bool shown;
    int64_t start_ms, last_ms, delay_ms;
    uint64_t bytes, files;
} cli_progress;

/* enabled: whether the caller wants it at all (false for -q); stderr must be a terminal too. */
void cli_progress_init(cli_progress *progress, const char *what, bool enabled);
/* For a hook the library uses for one piece of work after another and ends after each
 * (obi_progress_end: a build service materializing each build's inputs): the second counts
 * from each piece's first report, and each end closes its line. */
void cli_progress_init_each(cli_progress *progress, const char *what, bool enabled);
/* Ends the line, if one was shown, with the totals and the time taken. */
void cli_progress_done(cli_progress *progress);

/* The line of each layer a registry pull fetches (registry.h's obi_registry_progress_fn with
 * a cli_layer_progress as ctx): "pulling sha256:0123456789ab: 1.5 MiB of 3.0 MiB", rewritten
 * at most every 200 ms, ended by "... done"; only on a terminal. */
typedef struct cli_layer_progress {
    bool enabled;
    int64_t last_ms;
} cli_layer_progress;

void cli_layer_progress_init(cli_layer_progress *progress, bool enabled);
void cli_layer_progress_report(void *ctx, const char *digest, uint64_t done, uint64_t total,
                               bool finished);

#endif
