/*
 * Scope-bound cleanup for locals (GCC/Clang cleanup attribute), in the manner of systemd's
 * _cleanup_ and crun's cleanup_free: every early return releases what the function owns.
 * Ownership leaves a local only through steal_pointer(&p) / steal_fd(&fd).
 */
#ifndef OCIBUILD_CLEANUP_H
#define OCIBUILD_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>
#include <errno.h>

#include "ocibuild/error.h"

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void obi_freep(void *p)
{
    free(*(void **)p);
}
static inline void obi_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}
static inline void obi_fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}
static inline void obi_closedirp(DIR **d)
{
    if (*d)
        closedir(*d);
}
static inline void obi_error_freep(obi_error **e)
{
    obi_error_free(*e);
}
/* Frees a NULL-terminated array of strings and the array. */
void obi_strv_free(char **strv);
static inline void obi_strv_freep(char ***strv)
{
    obi_strv_free(*strv);
}

#define cleanup_free _cleanup_(obi_freep)
#define cleanup_close _cleanup_(obi_closep)
#define cleanup_file _cleanup_(obi_fclosep)
#define cleanup_dir _cleanup_(obi_closedirp)
#define cleanup_error _cleanup_(obi_error_freep)
#define cleanup_strv _cleanup_(obi_strv_freep)

/* Defines static inline NAMEp(TYPE **) calling FREE_FN(*p) when non-NULL. */
#define OBI_DEFINE_CLEANUP(type, free_fn)                                                          \
    /* `type` is a type name: it cannot be parenthesized. */                                       \
    static inline void free_fn##p(type **p) /* NOLINT(bugprone-macro-parentheses) */               \
    {                                                                                              \
        if (*p)                                                                                    \
            free_fn(*p);                                                                           \
    }

#define steal_pointer(pp)                                                                          \
    ({                                                                                             \
        __typeof__(*(pp)) _stolen = *(pp);                                                         \
        *(pp) = NULL;                                                                              \
        _stolen;                                                                                   \
    })

static inline int steal_fd(int *fd)
{
    int r = *fd;
    *fd = -1;
    return r;
}

#define OBI_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
