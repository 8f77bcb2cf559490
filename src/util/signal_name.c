/*
 * Signal names (include/ocibuild/signal_name.h): glibc's abbreviations (sigabbrev_np) for the
 * standard signals, a few aliases of theirs, and SIGRTMIN/SIGRTMAX offsets for real-time ones,
 * the names the OCI image spec allows in a config's StopSignal ("SIGKILL", "SIGRTMIN+3").
 */
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/number.h"
#include "ocibuild/signal_name.h"

/* Names sigabbrev_np does not give: Linux's second names of a standard signal. */
static const struct {
    const char *name;
    int number;
} ALIASES[] = {{"IOT", SIGIOT}, {"CLD", SIGCHLD}, {"IO", SIGIO}};

/* "RTMIN", "RTMIN+N", "RTMAX", "RTMAX-N" within SIGRTMIN..SIGRTMAX; 0 otherwise. */
static int realtime_signal(const char *name)
{
    bool from_min = !strncasecmp(name, "RTMIN", 5), from_max = !strncasecmp(name, "RTMAX", 5);
    if (!from_min && !from_max)
        return 0;
    const char *rest = name + 5;
    unsigned long long offset = 0;
    if (*rest && (*rest != (from_min ? '+' : '-') ||
                  !obi_parse_decimal(rest + 1, (unsigned long long)(SIGRTMAX - SIGRTMIN), &offset)))
        return 0;
    return from_min ? SIGRTMIN + (int)offset : SIGRTMAX - (int)offset;
}

int obi_signal_parse(const char *text)
{
    if (!text)
        return 0;
    unsigned long long number;
    if (obi_parse_decimal(text, NSIG - 1, &number))
        return (int)number; /* 0 stays 0: no signal */
    const char *name = strncasecmp(text, "SIG", 3) ? text : text + 3;
    for (int sig = 1; sig < NSIG; sig++) {
        const char *abbrev = sigabbrev_np(sig);
        if (abbrev && !strcasecmp(abbrev, name))
            return sig;
    }
    for (size_t i = 0; i < OBI_ARRAY_SIZE(ALIASES); i++)
        if (!strcasecmp(ALIASES[i].name, name))
            return ALIASES[i].number;
    return realtime_signal(name);
}
