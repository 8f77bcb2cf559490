/*
 * obi_buf: a growable byte buffer (always NUL-terminated past len, so text can be used as a
 * C string). Used for encoders, log capture and string building; obi_strdup_printf for a
 * formatted string in one go.
 */
#ifndef OCIBUILD_BUF_H
#define OCIBUILD_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct obi_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} obi_buf;

#define OBI_BUF_INIT                                                                               \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

int obi_buf_reserve(obi_buf *buf, size_t extra);
int obi_buf_append(obi_buf *buf, const void *data, size_t len);
int obi_buf_append_str(obi_buf *buf, const char *s);
int obi_buf_appendf(obi_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void obi_buf_clear(obi_buf *buf);
/* Releases the storage and resets buf to empty. */
void obi_buf_free(obi_buf *buf);
/* Returns the storage (NUL-terminated, never NULL on success) and resets buf. */
char *obi_buf_steal(obi_buf *buf);
/* A new formatted string (caller frees), or NULL without memory: asprintf as an expression. */
char *obi_strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline void obi_buf_freep(obi_buf *buf)
{
    obi_buf_free(buf);
}
#define cleanup_buf __attribute__((cleanup(obi_buf_freep)))

#endif
