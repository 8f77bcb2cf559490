/*
 * Errors: every fallible library function returns 0 or a negative errno-style code and fills
 * an obi_error with a heap-allocated message. Callers that propagate add context with
 * obi_error_prefix, so messages read "import /x/y: open: Permission denied".
 */
#ifndef OCIBUILD_ERROR_H
#define OCIBUILD_ERROR_H

#include <errno.h>
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

#if defined(__clang_analyzer__) && !defined(OBI_ERROR_IMPLEMENTATION)
/* The static analyzer (clang-tidy's clang-analyzer-*) sees one translation unit at a time, so it
 * cannot know that the setters above return a negative code and explores "success" paths after
 * `return obi_error_set(...)` in callees, reporting uninitialized out-parameters. State the
 * contract to it; compiled code is unaffected. */
static inline int obi_error_negative(int code)
{
    return code < 0 ? code : -EIO;
}
#define obi_error_set(...) obi_error_negative(obi_error_set(__VA_ARGS__))
#define obi_error_set_errno(...) obi_error_negative(obi_error_set_errno(__VA_ARGS__))
#define obi_error_prefix(...) obi_error_negative(obi_error_prefix(__VA_ARGS__))
#endif

#endif
