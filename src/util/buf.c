/*
 * obi_buf: growable byte buffer (see include/ocibuild/buf.h).
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/buf.h"

int obi_buf_reserve(obi_buf *buf, size_t extra)
{
    if (extra > SIZE_MAX - buf->len - 1)
        return -ENOMEM;
    size_t need = buf->len + extra + 1;
    if (need <= buf->cap)
        return 0;
    size_t cap = buf->cap ? buf->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(buf->data, cap);
    if (!p)
        return -ENOMEM;
    buf->data = p;
    buf->cap = cap;
    return 0;
}

int obi_buf_append(obi_buf *buf, const void *data, size_t len)
{
    int r = obi_buf_reserve(buf, len);
    if (r < 0)
        return r;
    if (len)
        memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = 0;
    return 0;
}

int obi_buf_append_str(obi_buf *buf, const char *s)
{
    return obi_buf_append(buf, s, strlen(s));
}

int obi_buf_appendf(obi_buf *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    int r = obi_buf_reserve(buf, (size_t)n);
    if (r < 0)
        return r;
    va_start(ap, fmt);
    vsnprintf((char *)buf->data + buf->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)n;
    return 0;
}

void obi_buf_clear(obi_buf *buf)
{
    buf->len = 0;
    if (buf->data)
        buf->data[0] = 0;
}

void obi_buf_free(obi_buf *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

char *obi_buf_steal(obi_buf *buf)
{
    if (!buf->data && obi_buf_reserve(buf, 0) < 0)
        return NULL;
    assert(buf->data); /* data == NULL implies cap == 0, so reserve allocated */
    buf->data[buf->len] = 0;
    char *p = (char *)buf->data;
    buf->data = NULL;
    buf->len = buf->cap = 0;
    return p;
}

char *obi_strdup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}
