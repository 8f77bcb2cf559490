/*
 * Cron expressions (include/ocibuild/cron.h): a field table drives the parser, each field
 * becomes a bit set, and the next time is found by walking up from the first mismatching unit
 * (year, month, day, hour, minute, second) with timegm normalising the carries.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/cron.h"

typedef enum cron_field {
    F_SECOND,
    F_MINUTE,
    F_HOUR,
    F_DAY,
    F_MONTH,
    F_WEEKDAY,
    F_YEAR,
    F_COUNT,
} cron_field;

static const char *const MONTH_NAMES[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL",
                                          "AUG", "SEP", "OCT", "NOV", "DEC", NULL};
static const char *const WEEKDAY_NAMES[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL};

static const struct field_info {
    const char *name;
    unsigned min, max;
    const char *const *names; /* names[i] is min + i */
} FIELDS[F_COUNT] = {
    [F_SECOND] = {"second", 0, 59, NULL},
    [F_MINUTE] = {"minute", 0, 59, NULL},
    [F_HOUR] = {"hour", 0, 23, NULL},
    [F_DAY] = {"day of month", 1, 31, NULL},
    [F_MONTH] = {"month", 1, 12, MONTH_NAMES},
    [F_WEEKDAY] = {"day of week", 0, 7, WEEKDAY_NAMES}, /* 7 is Sunday again */
    [F_YEAR] = {"year", OBI_CRON_YEAR_MIN, OBI_CRON_YEAR_MAX, NULL},
};

static const struct cron_macro {
    const char *name;
    const char *expansion;
} MACROS[] = {
    {"@yearly", "0 0 0 1 1 *"}, {"@annually", "0 0 0 1 1 *"}, {"@monthly", "0 0 0 1 * *"},
    {"@weekly", "0 0 0 * * 0"}, {"@daily", "0 0 0 * * *"},    {"@midnight", "0 0 0 * * *"},
    {"@hourly", "0 0 * * * *"},
};

static void set_bit(obi_cron *c, cron_field f, unsigned v)
{
    switch (f) {
    case F_SECOND:
        c->seconds |= 1ULL << v;
        break;
    case F_MINUTE:
        c->minutes |= 1ULL << v;
        break;
    case F_HOUR:
        c->hours |= 1U << v;
        break;
    case F_DAY:
        c->days |= 1U << v;
        break;
    case F_MONTH:
        c->months |= (uint16_t)(1U << v);
        break;
    case F_WEEKDAY:
        c->weekdays |= (uint8_t)(1U << (v % 7));
        break;
    case F_YEAR:
        v -= OBI_CRON_YEAR_MIN;
        c->years[v / 64] |= 1ULL << (v % 64);
        break;
    case F_COUNT:
        break;
    }
}

/* A number or a name of field f at *p (advanced past it). */
static int parse_value(const char **p, cron_field f, unsigned *out)
{
    const struct field_info *info = &FIELDS[f];
    if (isdigit((unsigned char)**p)) {
        unsigned long v = 0;
        while (isdigit((unsigned char)**p)) {
            v = v * 10 + (unsigned long)(**p - '0');
            if (v > 100000)
                return -ERANGE;
            (*p)++;
        }
        *out = (unsigned)v;
        return 0;
    }
    for (size_t i = 0; info->names && info->names[i]; i++)
        if (!strncasecmp(*p, info->names[i], 3) && !isalpha((unsigned char)(*p)[3])) {
            *out = info->min + (unsigned)i;
            *p += 3;
            return 0;
        }
    return -EINVAL;
}

static int field_error(obi_error **err, cron_field f, unsigned index, const char *text,
                       const char *why)
{
    return obi_error_set(err, -EINVAL, "field %u (%s) \"%s\": %s", index, FIELDS[f].name, text,
                         why);
}

/* One comma-separated item: `*`, `?`, v, a-b, each optionally followed by /step. */
static int parse_item(const char *item, cron_field f, unsigned index, const char *field_text,
                      obi_cron *c, bool *star, obi_error **err)
{
    const struct field_info *info = &FIELDS[f];
    unsigned lo = info->min, hi = info->max, step = 1;
    const char *p = item;
    bool wildcard = false;
    if (*p == '*' || *p == '?') {
        if (*p == '?' && f != F_DAY && f != F_WEEKDAY)
            return field_error(err, f, index, field_text, "? is only for the day fields");
        wildcard = true;
        p++;
        if (f == F_WEEKDAY)
            hi = 6;
    } else {
        if (parse_value(&p, f, &lo) < 0)
            return field_error(err, f, index, field_text,
                               "expected a number, a name, * or ? (L, W and # are not supported)");
        hi = lo;
        if (*p == '-') {
            p++;
            if (parse_value(&p, f, &hi) < 0)
                return field_error(err, f, index, field_text, "a range needs an end");
        }
    }
    if (*p == '/') {
        p++;
        unsigned long v = 0;
        if (!isdigit((unsigned char)*p))
            return field_error(err, f, index, field_text, "a step needs a number");
        while (isdigit((unsigned char)*p) && v <= 100000)
            v = v * 10 + (unsigned long)(*p++ - '0');
        if (v == 0 || v > info->max)
            return field_error(err, f, index, field_text, "the step is out of range");
        step = (unsigned)v;
        if (!wildcard && hi == lo)
            hi = f == F_WEEKDAY ? 6 : info->max; /* a/n: from a to the end */
    }
    if (*p)
        return field_error(err, f, index, field_text, "unexpected characters");
    char why[96];
    if (lo < info->min || lo > info->max || hi < info->min || hi > info->max) {
        snprintf(why, sizeof why, "%u is out of range %u-%u",
                 lo < info->min || lo > info->max ? lo : hi, info->min, info->max);
        return field_error(err, f, index, field_text, why);
    }
    if (lo > hi) {
        snprintf(why, sizeof why, "the range %u-%u runs backwards", lo, hi);
        return field_error(err, f, index, field_text, why);
    }
    if (wildcard && step == 1)
        *star = true;
    for (unsigned v = lo; v <= hi; v += step)
        set_bit(c, f, v);
    return 0;
}

static int parse_field(const char *text, cron_field f, unsigned index, obi_cron *c, bool *star,
                       obi_error **err)
{
    cleanup_free char *copy = strdup(text);
    if (!copy)
        return obi_error_oom(err);
    char *save = NULL;
    if (!*copy || copy[strlen(copy) - 1] == ',' || copy[0] == ',')
        return field_error(err, f, index, text, "an empty list item");
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        int r = parse_item(item, f, index, text, c, star, err);
        if (r < 0)
            return r;
    }
    return 0;
}

int obi_cron_parse(const char *text, obi_cron *out, obi_error **err)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(MACROS); i++)
        if (!strcasecmp(text, MACROS[i].name))
            text = MACROS[i].expansion;
    if (text[0] == '@')
        return obi_error_set(err, -EINVAL, "unknown macro \"%s\"", text);
    cleanup_free char *copy = strdup(text);
    if (!copy)
        return obi_error_oom(err);
    char *fields[8];
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (n == 8)
            break;
        fields[n++] = tok;
    }
    if (n < 5 || n > 7)
        return obi_error_set(err, -EINVAL,
                             "expected 5 fields (min hour dom month dow), 6 (seconds first) or 7 "
                             "(and a year), got %zu",
                             n);
    obi_cron c = {0};
    /* 5 fields start at the minute; 6 and 7 at the second */
    cron_field first = n == 5 ? F_MINUTE : F_SECOND;
    if (n == 5)
        c.seconds = 1; /* second 0 */
    bool star_unused = false;
    for (size_t i = 0; i < n; i++) {
        cron_field f = (cron_field)(first + i);
        bool *star = f == F_DAY ? &c.days_star : f == F_WEEKDAY ? &c.weekdays_star : &star_unused;
        int r = parse_field(fields[i], f, (unsigned)i + 1, &c, star, err);
        if (r < 0)
            return r;
    }
    if (n < 7)
        for (unsigned y = OBI_CRON_YEAR_MIN; y <= OBI_CRON_YEAR_MAX; y++)
            set_bit(&c, F_YEAR, y);
    *out = c;
    return 0;
}

static bool year_matches(const obi_cron *c, int year)
{
    if (year < OBI_CRON_YEAR_MIN || year > OBI_CRON_YEAR_MAX)
        return false;
    unsigned v = (unsigned)(year - OBI_CRON_YEAR_MIN);
    return c->years[v / 64] >> (v % 64) & 1;
}

static bool day_matches(const obi_cron *c, const struct tm *tm)
{
    bool dom = c->days >> tm->tm_mday & 1;
    bool dow = c->weekdays >> tm->tm_wday & 1;
    if (c->days_star || c->weekdays_star)
        return dom && dow; /* one of them is every day: the other decides */
    return dom || dow;
}

/* Normalises tm (carries) through timegm; false when out of time_t's or our range. */
static bool normalise(struct tm *tm, time_t *t)
{
    tm->tm_isdst = 0;
    *t = timegm(tm);
    return *t != (time_t)-1 && gmtime_r(t, tm) != NULL;
}

int obi_cron_next(const obi_cron *cron, time_t after, time_t *next)
{
    struct tm tm;
    time_t t = after + 1;
    if (!gmtime_r(&t, &tm))
        return -EINVAL;
    for (;;) {
        if (tm.tm_year + 1900 > OBI_CRON_YEAR_MAX)
            return -ENOENT;
        if (!year_matches(cron, tm.tm_year + 1900)) {
            tm = (struct tm){.tm_year = tm.tm_year + 1, .tm_mday = 1};
        } else if (!(cron->months >> (tm.tm_mon + 1) & 1)) {
            tm = (struct tm){.tm_year = tm.tm_year, .tm_mon = tm.tm_mon + 1, .tm_mday = 1};
        } else if (!day_matches(cron, &tm)) {
            tm.tm_mday++;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        } else if (!(cron->hours >> tm.tm_hour & 1)) {
            tm.tm_hour++;
            tm.tm_min = tm.tm_sec = 0;
        } else if (!(cron->minutes >> tm.tm_min & 1)) {
            tm.tm_min++;
            tm.tm_sec = 0;
        } else if (!(cron->seconds >> tm.tm_sec & 1)) {
            tm.tm_sec++;
        } else {
            *next = t;
            return 0;
        }
        if (!normalise(&tm, &t))
            return -ENOENT;
    }
}
