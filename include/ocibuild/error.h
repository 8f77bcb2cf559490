/*
 * Errors: every fallible library function returns 0 or a negative errno-style code and fills
 * an obi_error with a heap-allocated message. Callers that propagate add context with
 * obi_error_prefix, so messages read "import /x/y: open: Permission denied".
 */
#ifndef OCIBUILD_ERROR_H
#define OCIBUILD_ERROR_H

#include <stdarg.h>

typedef struct obi_error {
    int code;      /* negative errno-style code */
    char *message; /* never NULL once set */
} obi_error;

/* Sets *err (if err is non-NULL and *err is NULL) and returns code (negative). */
int obi_error_set(obi_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like obi_error_set with ": strerror(errnum)" appended; returns -errnum. */
int obi_error_set_errno(obi_error **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "context: " to an existing error; returns its code (or code if *err is unset). */
int obi_error_prefix(obi_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void obi_error_free(obi_error *error);
/* Moves *src into *dst (freeing what dst held); returns the code. */
int obi_error_move(obi_error **dst, obi_error **src);

#endif
