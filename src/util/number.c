/*
 * Strict numbers from text (see include/ocibuild/number.h): decimals, memory sizes with their
 * unit suffixes and durations with theirs (tables).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/number.h"

bool obi_parse_decimal(const char *text, unsigned long long max, unsigned long long *out)
{
    if (!text || !*text)
        return false;
    unsigned long long value = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned digit = (unsigned)(*p - '0');
        if (digit > max || value > (max - digit) / 10)
            return false; /* value * 10 + digit > max, without overflowing */
        value = value * 10 + digit;
    }
    *out = value;
    return true;
}

static const struct memory_unit {
    const char *suffix;
    uint64_t factor;
} MEMORY_UNITS[] = {
    {"Ki", 1ull << 10},   {"Mi", 1ull << 20},   {"Gi", 1ull << 30},      {"Ti", 1ull << 40},
    {"K", 1000ull},       {"k", 1000ull},       {"M", 1000000ull},       {"m", 1000000ull},
    {"G", 1000000000ull}, {"g", 1000000000ull}, {"T", 1000000000000ull}, {"t", 1000000000000ull},
};

int obi_parse_memory(const char *text, uint64_t *out, obi_error **err)
{
    if (!text || !*text)
        return obi_error_set(err, -EINVAL, "empty memory string");
    const char *p = text;
    uint64_t value = 0;
    while (isdigit((unsigned char)*p)) {
        if (__builtin_mul_overflow(value, 10, &value) ||
            __builtin_add_overflow(value, (uint64_t)(*p - '0'), &value))
            return obi_error_set(err, -ERANGE, "memory string \"%s\" overflows", text);
        p++;
    }
    if (p == text)
        return obi_error_set(err, -EINVAL, "memory string \"%s\" is not a number", text);
    if (*p == '.' || *p == ',')
        return obi_error_set(err, -EINVAL,
                             "memory string \"%s\" is fractional (use a smaller unit)", text);
    uint64_t factor = 1;
    if (*p) {
        size_t i;
        for (i = 0; i < OBI_ARRAY_SIZE(MEMORY_UNITS); i++)
            if (!strcmp(p, MEMORY_UNITS[i].suffix))
                break;
        if (i == OBI_ARRAY_SIZE(MEMORY_UNITS))
            return obi_error_set(err, -EINVAL,
                                 "memory string \"%s\" has an unknown unit \"%s\" (use Ki Mi Gi "
                                 "Ti, K M G T or bytes)",
                                 text, p);
        factor = MEMORY_UNITS[i].factor;
    }
    if (__builtin_mul_overflow(value, factor, &value))
        return obi_error_set(err, -ERANGE, "memory string \"%s\" overflows", text);
    *out = value;
    return 0;
}

/* Units per part, in nanoseconds (humantime's names). */
static const struct duration_unit {
    const char *name;
    uint64_t ns;
} DURATION_UNITS[] = {
    {"ns", 1},
    {"nsec", 1},
    {"us", 1000},
    {"usec", 1000},
    {"ms", 1000000},
    {"msec", 1000000},
    {"s", 1000000000ull},
    {"sec", 1000000000ull},
    {"secs", 1000000000ull},
    {"second", 1000000000ull},
    {"seconds", 1000000000ull},
    {"m", 60000000000ull},
    {"min", 60000000000ull},
    {"mins", 60000000000ull},
    {"minute", 60000000000ull},
    {"minutes", 60000000000ull},
    {"h", 3600000000000ull},
    {"hr", 3600000000000ull},
    {"hrs", 3600000000000ull},
    {"hour", 3600000000000ull},
    {"hours", 3600000000000ull},
    {"d", 86400000000000ull},
    {"day", 86400000000000ull},
    {"days", 86400000000000ull},
    {"w", 604800000000000ull},
    {"week", 604800000000000ull},
    {"weeks", 604800000000000ull},
};

int obi_parse_duration(const char *text, uint64_t *out_ms, obi_error **err)
{
    if (!text || !*text)
        return obi_error_set(err, -EINVAL, "empty duration");
    uint64_t total_ns = 0;
    const char *p = text;
    while (*p == ' ')
        p++;
    if (!*p)
        return obi_error_set(err, -EINVAL, "empty duration");
    while (*p) {
        uint64_t value = 0;
        const char *digits = p;
        while (isdigit((unsigned char)*p)) {
            if (__builtin_mul_overflow(value, 10, &value) ||
                __builtin_add_overflow(value, (uint64_t)(*p - '0'), &value))
                return obi_error_set(err, -ERANGE, "duration \"%s\" overflows", text);
            p++;
        }
        if (p == digits)
            return obi_error_set(err, -EINVAL,
                                 "duration \"%s\": expected a number at \"%s\" (like 30s, 5m, "
                                 "1h 30m)",
                                 text, p);
        const char *number_end = p;
        while (*p == ' ')
            p++;
        const char *unit = p;
        while (isalpha((unsigned char)*p))
            p++;
        size_t len = (size_t)(p - unit);
        const struct duration_unit *found = NULL;
        for (size_t i = 0; len && i < OBI_ARRAY_SIZE(DURATION_UNITS) && !found; i++)
            if (strlen(DURATION_UNITS[i].name) == len &&
                !strncmp(unit, DURATION_UNITS[i].name, len))
                found = &DURATION_UNITS[i];
        if (!found)
            return obi_error_set(err, -EINVAL,
                                 "duration \"%s\": %s unit after %.*s (use ms, s, m, h, d, ...)",
                                 text, len ? "unknown" : "no", (int)(number_end - digits), digits);
        uint64_t part;
        if (__builtin_mul_overflow(value, found->ns, &part) ||
            __builtin_add_overflow(total_ns, part, &total_ns))
            return obi_error_set(err, -ERANGE, "duration \"%s\" overflows", text);
        while (*p == ' ')
            p++;
    }
    *out_ms = total_ns / 1000000;
    return 0;
}

void obi_format_size(uint64_t bytes, char out[OBI_SIZE_TEXT_LEN])
{
    static const char *const UNITS[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(out, OBI_SIZE_TEXT_LEN, "%u B", (unsigned)bytes);
        return;
    }
    double value = (double)bytes;
    size_t unit = 0;
    while (value >= 1024 && unit + 1 < OBI_ARRAY_SIZE(UNITS)) {
        value /= 1024;
        unit++;
    }
    snprintf(out, OBI_SIZE_TEXT_LEN, "%.1f %s", value, UNITS[unit]);
}
