/*
 * Service addresses (rpc.md): "scheme://[host[:port]][/path][?k=v&k2=v2]" or a plain path.
 *
 * One parser for build, blob and directory service URLs; the store and build-service layers
 * decide what a scheme means. The path and the query keys and values are percent-decoded;
 * the host is kept as written (an IPv6 literal keeps its brackets, "[::1]"). Text without
 * "scheme://" is a plain path (scheme "", path verbatim, no decoding). Errors quote the URL
 * and name the offending part and its byte offset.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/array.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/hex.h"
#include "ocibuild/url.h"

void obi_url_free(obi_url *url)
{
    if (!url)
        return;
    free(url->scheme);
    free(url->host);
    free(url->port);
    free(url->path);
    for (size_t i = 0; i < url->n_params; i++) {
        free(url->params[i].key);
        free(url->params[i].value);
    }
    free(url->params);
    free(url);
}

const char *obi_url_param_get(const obi_url *url, const char *key)
{
    for (size_t i = 0; i < url->n_params; i++)
        if (strcmp(url->params[i].key, key) == 0)
            return url->params[i].value;
    return NULL;
}

static int url_error(obi_error **err, const char *text, const char *what, size_t offset)
{
    return obi_error_set(err, -EINVAL, "invalid URL '%s': %s at byte offset %zu", text, what,
                         offset);
}

/* Percent-decodes text[start, end) into a fresh string; `part` names it in errors. */
static int percent_decode(const char *text, size_t start, size_t end, const char *part, char **out,
                          obi_error **err)
{
    cleanup_free char *decoded = malloc(end - start + 1);
    if (!decoded)
        return obi_error_oom(err);
    size_t n = 0;
    for (size_t i = start; i < end; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f || c == ' ') {
            char what[96];
            snprintf(what, sizeof what, "control character or space in the %s", part);
            return url_error(err, text, what, i);
        }
        if (c != '%') {
            decoded[n++] = (char)c;
            continue;
        }
        int hi = i + 1 < end ? obi_hex_digit_value(text[i + 1]) : -1;
        int lo = i + 2 < end ? obi_hex_digit_value(text[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            char what[96];
            snprintf(what, sizeof what, "bad percent-escape in the %s (expected %%XX)", part);
            return url_error(err, text, what, i);
        }
        if (hi == 0 && lo == 0) {
            char what[96];
            snprintf(what, sizeof what, "%%00 (NUL) in the %s", part);
            return url_error(err, text, what, i);
        }
        decoded[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    decoded[n] = 0;
    *out = steal_pointer(&decoded);
    return 0;
}

static bool is_scheme_char(char c)
{
    return isalnum((unsigned char)c) || c == '+' || c == '-' || c == '.';
}

/* Length of "scheme" when text starts with "scheme://", else 0. */
static size_t scheme_length(const char *text)
{
    if (!isalpha((unsigned char)text[0]))
        return 0;
    size_t n = 1;
    while (is_scheme_char(text[n]))
        n++;
    return strncmp(text + n, "://", 3) == 0 ? n : 0;
}

static bool is_host_char(char c)
{
    return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* Parses the authority text[start, end) into host and port. */
static int parse_authority(const char *text, size_t start, size_t end, obi_url *url,
                           obi_error **err)
{
    size_t host_end;
    size_t i = start;
    if (i < end && text[i] == '[') {
        /* IPv6 literal: "[" hex digits, ':' and '.' "]" */
        i++;
        while (i < end && (isxdigit((unsigned char)text[i]) || text[i] == ':' || text[i] == '.'))
            i++;
        if (i >= end || text[i] != ']')
            return url_error(err, text, "unterminated or malformed IPv6 host (expected ']')", i);
        if (i == start + 1)
            return url_error(err, text, "empty IPv6 host", i);
        host_end = ++i;
    } else {
        while (i < end && is_host_char(text[i]))
            i++;
        host_end = i;
    }
    if (i < end && text[i] != ':') {
        if (text[i] == '@')
            return url_error(err, text, "user information is not supported in the host", i);
        return url_error(err, text, "invalid character in the host", i);
    }
    url->host = strndup(text + start, host_end - start);
    if (!url->host)
        return obi_error_oom(err);
    if (i == end)
        return 0;
    size_t port_start = ++i;
    if (port_start == end)
        return url_error(err, text, "empty port after ':'", port_start);
    if (host_end == start)
        return url_error(err, text, "port without a host", start);
    unsigned long port = 0;
    for (; i < end; i++) {
        if (!isdigit((unsigned char)text[i]))
            return url_error(err, text, "port is not a decimal number", i);
        port = port * 10 + (unsigned long)(text[i] - '0');
        if (port > 65535)
            return url_error(err, text, "port out of range (1..65535)", port_start);
    }
    if (port == 0)
        return url_error(err, text, "port out of range (1..65535)", port_start);
    url->port = strndup(text + port_start, end - port_start);
    if (!url->port)
        return obi_error_oom(err);
    return 0;
}

/* Parses "k=v&k2=v2" in text[start, end) into url's (empty) parameters. */
static int parse_query(const char *text, size_t start, size_t end, obi_url *url, obi_error **err)
{
    size_t i = start, cap = 0;
    while (i < end) {
        size_t seg_end = i;
        while (seg_end < end && text[seg_end] != '&')
            seg_end++;
        if (seg_end == i)
            return url_error(err, text, "empty query parameter", i);
        size_t eq = i;
        while (eq < seg_end && text[eq] != '=')
            eq++;
        if (eq == i)
            return url_error(err, text, "query parameter without a name", i);
        if (obi_array_grow(&url->params, &cap, url->n_params + 1) < 0)
            return obi_error_oom(err);
        obi_url_param *param = &url->params[url->n_params++]; /* zeroed: key, value NULL */
        int r = percent_decode(text, i, eq, "query parameter name", &param->key, err);
        if (r < 0)
            return r;
        size_t value_start = eq < seg_end ? eq + 1 : seg_end;
        r = percent_decode(text, value_start, seg_end, "query parameter value", &param->value, err);
        if (r < 0)
            return r;
        i = seg_end + 1;
        if (seg_end < end && i == end)
            return url_error(err, text, "empty query parameter", i);
    }
    return 0;
}

static int parse_plain_path(const char *text, obi_url *url, obi_error **err)
{
    for (size_t i = 0; text[i]; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            return url_error(err, text, "control character in the path", i);
    url->scheme = strdup("");
    url->host = strdup("");
    url->path = strdup(text);
    if (!url->scheme || !url->host || !url->path)
        return obi_error_oom(err);
    return 0;
}

int obi_url_parse(const char *text, obi_url **out, obi_error **err)
{
    if (!text || !*text)
        return obi_error_set(err, -EINVAL, "invalid URL '': empty");
    obi_url *url = calloc(1, sizeof *url);
    if (!url)
        return obi_error_oom(err);
    cleanup_url obi_url *owned = url;

    size_t scheme_len = scheme_length(text);
    if (scheme_len == 0) {
        const char *separator = strstr(text, "://");
        if (separator && !memchr(text, '/', (size_t)(separator - text))) {
            size_t bad = 0;
            while (bad < (size_t)(separator - text) &&
                   (bad == 0 ? isalpha((unsigned char)text[0]) : is_scheme_char(text[bad])))
                bad++;
            return url_error(err, text,
                             "invalid scheme (a letter, then letters, digits, '+', '-', '.')", bad);
        }
        int r = parse_plain_path(text, url, err);
        if (r < 0)
            return r;
        *out = steal_pointer(&owned);
        return 0;
    }
    url->scheme = strndup(text, scheme_len);
    if (!url->scheme)
        return obi_error_oom(err);
    for (char *c = url->scheme; *c; c++)
        *c = (char)tolower((unsigned char)*c);

    size_t len = strlen(text);
    size_t hash = strcspn(text, "#");
    if (hash < len)
        return url_error(err, text, "fragments ('#') are not supported", hash);
    size_t authority_start = scheme_len + 3;
    size_t query = authority_start + strcspn(text + authority_start, "?");
    size_t path_start = authority_start + strcspn(text + authority_start, "/?");

    int r = parse_authority(text, authority_start, path_start, url, err);
    if (r < 0)
        return r;
    r = percent_decode(text, path_start, query, "path", &url->path, err);
    if (r < 0)
        return r;
    if (query < len) {
        r = parse_query(text, query + 1, len, url, err);
        if (r < 0)
            return r;
    }
    *out = steal_pointer(&owned);
    return 0;
}
