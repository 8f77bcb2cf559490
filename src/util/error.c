/*
 * obi_error: heap-allocated error messages with context prefixes (see include/ocibuild/error.h),
 * and the one static error for running out of memory, which is never allocated, written or freed.
 */
#define OBI_ERROR_IMPLEMENTATION /* defines the functions error.h declares */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"

/* Read-only: a write through an obi_error pointer that forgot about it faults at once. */
static const obi_error oom_error = {.code = -ENOMEM, .message = "out of memory"};

static int is_oom_error(const obi_error *error)
{
    return error == &oom_error;
}

int obi_error_oom(obi_error **err)
{
    if (err && !*err)
        *err = (obi_error *)&oom_error; /* const in memory; obi_error_* never write into it */
    return oom_error.code;
}

/* A heap error owning message (non-NULL), or NULL when out of memory (message then freed). */
static obi_error *error_new(int code, char *message)
{
    obi_error *e = message ? malloc(sizeof *e) : NULL;
    if (!e) {
        free(message);
        return NULL;
    }
    e->code = code;
    e->message = message;
    return e;
}

/* Sets *err to {code, message} (taking message, which may be NULL when it could not be made),
 * or to the out-of-memory error when that cannot be allocated. */
static int set_message(obi_error **err, int code, char *message)
{
    if (code >= 0)
        code = -EIO;
    if (!err || *err) {
        free(message);
        return code;
    }
    *err = error_new(code, message);
    if (!*err)
        obi_error_oom(err);
    return code;
}

int obi_error_set(obi_error **err, int code, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    return set_message(err, code, msg);
}

int obi_error_set_errno(obi_error **err, int errnum, const char *fmt, ...)
{
    char *head = NULL, *msg = NULL;
    va_list ap;
    if (errnum < 0)
        errnum = -errnum;
    if (errnum == 0)
        errnum = EIO;
    va_start(ap, fmt);
    if (vasprintf(&head, fmt, ap) < 0)
        head = NULL;
    va_end(ap);
    if (head && asprintf(&msg, "%s: %s", head, strerror(errnum)) < 0)
        msg = NULL;
    free(head);
    return set_message(err, -errnum, msg);
}

int obi_error_prefix(obi_error **err, int code, const char *fmt, ...)
{
    if (!err)
        return code < 0 ? code : -EIO;
    if (!*err)
        return obi_error_set(err, code, "unknown error");
    char *head = NULL, *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&head, fmt, ap) < 0)
        head = NULL;
    va_end(ap);
    if (head && asprintf(&msg, "%s: %s", head, (*err)->message) >= 0) {
        if (is_oom_error(*err)) {
            obi_error *e = error_new((*err)->code, msg); /* NULL: *err stays the static one */
            if (e)
                *err = e;
        } else {
            free((*err)->message);
            (*err)->message = msg;
        }
    }
    free(head);
    return (*err)->code;
}

void obi_error_free(obi_error *error)
{
    if (!error || is_oom_error(error))
        return;
    free(error->message);
    free(error);
}

int obi_error_move(obi_error **dst, obi_error **src)
{
    int code = *src ? (*src)->code : -EIO;
    if (dst) {
        obi_error_free(*dst);
        *dst = *src;
    } else {
        obi_error_free(*src);
    }
    *src = NULL;
    return code;
}
