/*
 * Helpers shared by the BuildRequest files (request.c, request_codec.c, request_json.c,
 * request_validate.c); not part of the public interface.
 */
#ifndef OCIBUILD_REQUEST_INTERNAL_H
#define OCIBUILD_REQUEST_INTERNAL_H

#include <stddef.h>

/* An array of n owned strings (not NULL-terminated). */
void obi_strings_free(char **v, size_t n);
/* Deep copy; *out is NULL when n is 0. Returns 0 or -ENOMEM. */
int obi_strings_copy(char *const *src, size_t n, char ***out);

#endif
