/*
 * Shared by the libFuzzer targets in tests/fuzz/ (see docs/fuzzing.md): an assertion that
 * aborts with a message, so a broken invariant (a round trip that does not reproduce itself)
 * shows up as a crash the fuzzer saves, like a memory error does.
 */
#ifndef OCIBUILD_FUZZ_COMMON_H
#define OCIBUILD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A successful call must not leave an error behind, a failed one must explain itself. */
#define FUZZ_CHECK_ERROR(r, err)                                                                   \
    do {                                                                                           \
        if ((r) < 0)                                                                               \
            FUZZ_ASSERT((err) != NULL && (err)->message[0] != '\0');                               \
        else                                                                                       \
            FUZZ_ASSERT((err) == NULL);                                                            \
    } while (0)

/* The input as a NUL-terminated string (embedded NULs end it early, as for any C caller). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
