/*
 * Strict decimal numbers from text: the one rule every option, URL parameter, YAML field, pid
 * file and /proc entry of this project parses with, instead of each site's own strtoul checks
 * (or atoi, which takes "12abc" and garbage as numbers).
 */
#ifndef OCIBUILD_NUMBER_H
#define OCIBUILD_NUMBER_H

#include <stdbool.h>
#include <stdint.h>

#include "ocibuild/error.h"

/* True when text is one or more ASCII digits and nothing else (no sign, no space, no prefix)
 * whose value fits in max; then *out is set. Leading zeros are fine. */
bool obi_parse_decimal(const char *text, unsigned long long max, unsigned long long *out);

/* Memory and size strings (spec/service.md; the build limits): "512Mi", "2G", "1024" (bytes).
 * Binary units Ki Mi Gi Ti, decimal K M G T (k m g t too); no fractions; errors say why. */
int obi_parse_memory(const char *text, uint64_t *out, obi_error **err);

/* Durations as zlayer writes them (humantime): one or more NUMBER UNIT parts, optionally
 * separated by spaces (also from their units), "30s", "5m", "1h 30m", "500ms"; units ns us ms s sec
 * secs second(s) m min mins minute(s) h hr hrs hour(s) d day(s) w week(s). A bare number is an
 * error (no unit). *out is in milliseconds (sub-millisecond parts are rounded down). */
int obi_parse_duration(const char *text, uint64_t *out_ms, obi_error **err);

/* bytes for people: "512 B", "1.5 KiB", "12.0 MiB", ... up to EiB (binary units, one decimal). */
#define OBI_SIZE_TEXT_LEN 16
void obi_format_size(uint64_t bytes, char out[OBI_SIZE_TEXT_LEN]);

#endif
