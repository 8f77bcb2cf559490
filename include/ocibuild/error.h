/*
 * Errors: every fallible library function returns 0 or a negative errno-style code and fills
 * an obi_error with a heap-allocated message. Callers that propagate add context with
 * obi_error_prefix, so messages read "import /x/y: open: Permission denied". Running out of
 * memory is the one error that allocates nothing (libgit2's idea): obi_error_oom points at a
 * static, read-only error that the functions below know and never free or write into.
 */
#ifndef OCIBUILD_ERROR_H
#define OCIBUILD_ERROR_H

#include <errno.h>
#include <stdarg.h>

typedef struct obi_error {
    int code;      /* negative errno-style code */
    char *message; /* never NULL once set */
} obi_error;

/* Sets *err (if err is non-NULL and *err is NULL) and returns code (negative). When the error
 * itself cannot be allocated, *err becomes the out-of-memory error (obi_error_oom) and code is
 * still returned, so *err is set whenever err was given. */
int obi_error_set(obi_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like obi_error_set with ": strerror(errnum)" appended; returns -errnum. */
int obi_error_set_errno(obi_error **err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "context: " to an existing error; returns its code (or code if *err is unset). On
 * the out-of-memory error it makes a new one (and short of memory leaves *err as it is). */
int obi_error_prefix(obi_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The error for a failed allocation: sets *err (if err is non-NULL and *err is NULL) to the
 * static error {-ENOMEM, "out of memory"} and returns -ENOMEM. Never allocates. */
int obi_error_oom(obi_error **err);
/* Frees error (NULL and the out-of-memory error are left alone). */
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
#define obi_error_oom(...) obi_error_negative(obi_error_oom(__VA_ARGS__))
#endif

#endif
