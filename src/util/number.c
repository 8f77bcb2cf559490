/*
 * Strict decimal numbers from text (see include/ocibuild/number.h).
 */
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
