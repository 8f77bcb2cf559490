/*
 * Log level names (log_level.h): a table indexed by level, read both ways.
 */
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/log_level.h"

static const char *const LOG_LEVEL_NAMES[] = {
    [OBI_LOG_ERROR] = "error",
    [OBI_LOG_WARN] = "warn",
    [OBI_LOG_INFO] = "info",
    [OBI_LOG_DEBUG] = "debug",
};

int obi_log_level_parse(const char *text, obi_log_level *out, obi_error **err)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(LOG_LEVEL_NAMES); i++)
        if (!strcmp(text, LOG_LEVEL_NAMES[i])) {
            *out = (obi_log_level)i;
            return 0;
        }
    return obi_error_set(err, -EINVAL, "log level '%s': expected error, warn, info or debug", text);
}
