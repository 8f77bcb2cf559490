/*
 * How much a command or the daemon says: one scale for the daemon's --log-level and the
 * client commands' -q / -v / --log-level, parsed in one place.
 */
#ifndef OCIBUILD_LOG_LEVEL_H
#define OCIBUILD_LOG_LEVEL_H

#include "ocibuild/error.h"

typedef enum obi_log_level {
    OBI_LOG_ERROR = 0, /* errors only (-q: a build's log is not streamed) */
    OBI_LOG_WARN = 1,
    OBI_LOG_INFO = 2,  /* the default: a build's log; the daemon: one line per call */
    OBI_LOG_DEBUG = 3, /* -v: also where things are and how long they took */
} obi_log_level;

/* Parses "error", "warn", "info", "debug"; the error names the text and the choices. */
int obi_log_level_parse(const char *text, obi_log_level *out, obi_error **err);

#endif
