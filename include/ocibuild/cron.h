/*
 * Cron expressions for `rtype: cron` services (docs/service.md, "Cron schedules"). zlayer writes
 * them seconds first, 6 or 7 fields: "sec min hour day-of-month month day-of-week [year]"; the
 * classic 5-field form "min hour dom month dow" is accepted too (seconds 0), and so are the
 * macros @yearly/@annually, @monthly, @weekly, @daily/@midnight and @hourly.
 * Each field is `*`, `?` (day fields), a number, a name (JAN..DEC, SUN..SAT, any case), a range
 * `a-b`, a step (`a-b/n`, `a/n`, or a star followed by `/n`), or a comma list of those. Day of week
 * 0 and 7 are Sunday. When both day fields are restricted a day matching either counts (Vixie
 * cron's rule). Times are UTC. Pure: no I/O, no clock; the supervisor asks for the next time after
 * "now".
 */
#ifndef OCIBUILD_CRON_H
#define OCIBUILD_CRON_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ocibuild/error.h"

#define OBI_CRON_YEAR_MIN 1970
#define OBI_CRON_YEAR_MAX 2199

typedef struct obi_cron {
    uint64_t seconds; /* bit n: second n (0..59) */
    uint64_t minutes; /* 0..59 */
    uint32_t hours;   /* 0..23 */
    uint32_t days;    /* 1..31 */
    uint16_t months;  /* 1..12 */
    uint8_t weekdays; /* 0..6, Sunday 0 */
    bool days_star;   /* day of month was * or ? */
    bool weekdays_star;
    uint64_t years[(OBI_CRON_YEAR_MAX - OBI_CRON_YEAR_MIN) / 64 + 1]; /* bit: year - MIN */
} obi_cron;

/* Parses text; errors name the field and what is wrong with it:
 * `field 2 (minute) "75": 75 is out of range 0-59`. */
int obi_cron_parse(const char *text, obi_cron *out, obi_error **err);

/* The first time strictly after `after` that matches, in *next. -ENOENT when there is none
 * before OBI_CRON_YEAR_MAX ends (e.g. "0 0 0 30 2 *": February 30th). */
int obi_cron_next(const obi_cron *cron, time_t after, time_t *next);

#endif
