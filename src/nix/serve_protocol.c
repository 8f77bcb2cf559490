/*
 * Nix's serve protocol on the wire (see include/ocibuild/serve_protocol.h): a buffered reader
 * that counts the offset of every byte, so each refusal names where it happened; a buffered
 * writer; and one decoder or encoder per message, each reading top to bottom in the order of
 * the fields on the wire.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/serve_protocol.h"
#include "ocibuild/strv.h"

#define SERVE_BUFFER_SIZE (64u * 1024)

/* ---- reading ---- */

struct obi_serve_reader {
    int fd;              /* -1: memory */
    const uint8_t *data; /* buffered bytes (the memory itself, or buffer) */
    size_t pos, len;
    uint8_t *buffer;
    uint64_t offset; /* of data[pos] in the stream */
    uint64_t budget; /* string bytes the current request may still hold */
};

int obi_serve_reader_new_fd(int fd, obi_serve_reader **out, obi_error **err)
{
    obi_serve_reader *r = calloc(1, sizeof *r);
    uint8_t *buffer = malloc(SERVE_BUFFER_SIZE);
    if (!r || !buffer) {
        free(r);
        free(buffer);
        return obi_error_oom(err);
    }
    r->fd = fd;
    r->buffer = buffer;
    r->data = buffer;
    r->budget = OBI_SERVE_REQUEST_BUDGET;
    *out = r;
    return 0;
}

int obi_serve_reader_new_mem(const void *data, size_t len, obi_serve_reader **out, obi_error **err)
{
    obi_serve_reader *r = calloc(1, sizeof *r);
    if (!r)
        return obi_error_oom(err);
    r->fd = -1;
    r->data = data;
    r->len = len;
    r->budget = OBI_SERVE_REQUEST_BUDGET;
    *out = r;
    return 0;
}

void obi_serve_reader_free(obi_serve_reader *reader)
{
    if (!reader)
        return;
    free(reader->buffer);
    free(reader);
}

uint64_t obi_serve_reader_offset(const obi_serve_reader *reader)
{
    return reader->offset;
}

void obi_serve_reader_set_budget(obi_serve_reader *reader, uint64_t bytes)
{
    reader->budget = bytes;
}

/* Refills the buffer: 1 when bytes are there, 0 at the end of the stream. */
static int reader_fill(obi_serve_reader *r, obi_error **err)
{
    if (r->pos < r->len)
        return 1;
    if (r->fd < 0)
        return 0;
    for (;;) {
        ssize_t n = read(r->fd, r->buffer, SERVE_BUFFER_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return obi_error_set_errno(err, errno, "serve: offset %llu: read",
                                       (unsigned long long)r->offset);
        r->pos = 0;
        r->len = (size_t)n;
        return n > 0;
    }
}

static int truncated(const obi_serve_reader *r, const char *field, obi_error **err)
{
    return obi_error_set(err, -EPIPE, "serve: the stream ends at offset %llu, in the middle of %s",
                         (unsigned long long)r->offset, field);
}

int obi_serve_read_raw(obi_serve_reader *reader, const char *field, void *buf, size_t len,
                       obi_error **err)
{
    uint8_t *p = buf;
    while (len > 0) {
        int r = reader_fill(reader, err);
        if (r < 0)
            return r;
        if (r == 0)
            return truncated(reader, field, err);
        size_t n = reader->len - reader->pos;
        if (n > len)
            n = len;
        memcpy(p, reader->data + reader->pos, n);
        reader->pos += n;
        reader->offset += n;
        p += n;
        len -= n;
    }
    return 0;
}

static uint64_t le64(const uint8_t b[8])
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

int obi_serve_read_u64(obi_serve_reader *reader, const char *field, uint64_t *out, obi_error **err)
{
    uint8_t b[8] = {0};
    int r = obi_serve_read_raw(reader, field, b, sizeof b, err);
    if (r < 0)
        return r;
    *out = le64(b);
    return 0;
}

int obi_serve_read_command(obi_serve_reader *reader, uint64_t *command, obi_error **err)
{
    int r = reader_fill(reader, err);
    if (r <= 0)
        return r;
    r = obi_serve_read_u64(reader, "the command", command, err);
    return r < 0 ? r : 1;
}

int obi_serve_read_bool(obi_serve_reader *reader, const char *field, bool *out, obi_error **err)
{
    uint64_t start = reader->offset, v = 0;
    int r = obi_serve_read_u64(reader, field, &v, err);
    if (r < 0)
        return r;
    if (v > 1)
        return obi_error_set(err, -EINVAL, "serve: offset %llu: %s: expected 0 or 1, got %llu",
                             (unsigned long long)start, field, (unsigned long long)v);
    *out = v == 1;
    return 0;
}

int obi_serve_read_string(obi_serve_reader *reader, const char *field, size_t max, char **out,
                          size_t *len, obi_error **err)
{
    uint64_t start = reader->offset, n = 0;
    int r = obi_serve_read_u64(reader, field, &n, err);
    if (r < 0)
        return r;
    if (n > max)
        return obi_error_set(err, -EINVAL,
                             "serve: offset %llu: %s: a string of %llu bytes (at most %zu here)",
                             (unsigned long long)start, field, (unsigned long long)n, max);
    if (n > reader->budget)
        return obi_error_set(err, -E2BIG,
                             "serve: offset %llu: %s: the request's strings exceed its budget "
                             "(%llu more bytes allowed, this one has %llu)",
                             (unsigned long long)start, field, (unsigned long long)reader->budget,
                             (unsigned long long)n);
    reader->budget -= n;
    cleanup_free char *s = malloc(n + 1);
    if (!s)
        return obi_error_oom(err);
    r = obi_serve_read_raw(reader, field, s, n, err);
    if (r < 0)
        return r;
    s[n] = '\0';
    if (memchr(s, '\0', n))
        return obi_error_set(err, -EINVAL, "serve: offset %llu: %s: a NUL byte in the string",
                             (unsigned long long)(start + 8 + (uint64_t)strlen(s)), field);
    uint8_t pad[8];
    size_t pad_len = (size_t)((8 - n % 8) % 8);
    uint64_t pad_start = reader->offset;
    r = obi_serve_read_raw(reader, field, pad, pad_len, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < pad_len; i++)
        if (pad[i] != 0)
            return obi_error_set(err, -EINVAL, "serve: offset %llu: %s: non-zero padding",
                                 (unsigned long long)(pad_start + i), field);
    if (len)
        *len = n;
    *out = steal_pointer(&s);
    return 0;
}

static bool is_name_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           strchr("+-._?=", c);
}

/* obi_nix_store_path_parse's check, with the message only. */
static int check_store_path(const char *s, obi_error **err)
{
    const char *base;
    return obi_nix_store_path_parse(s, &base, err);
}

int obi_serve_read_store_path(obi_serve_reader *reader, const char *field, char **out,
                              obi_error **err)
{
    uint64_t start = reader->offset;
    cleanup_free char *s = NULL;
    int r = obi_serve_read_string(reader, field, OBI_SERVE_MAX_PATH_LEN, &s, NULL, err);
    if (r < 0)
        return r;
    cleanup_error obi_error *check_err = NULL;
    if (check_store_path(s, &check_err) < 0)
        return obi_error_set(err, -EINVAL, "serve: offset %llu: %s: %s", (unsigned long long)start,
                             field, check_err->message);
    *out = steal_pointer(&s);
    return 0;
}

/* A list's count, refused above OBI_SERVE_MAX_LIST. */
static int read_count(obi_serve_reader *reader, const char *field, size_t *out, obi_error **err)
{
    uint64_t start = reader->offset, n = 0;
    int r = obi_serve_read_u64(reader, field, &n, err);
    if (r < 0)
        return r;
    if (n > OBI_SERVE_MAX_LIST)
        return obi_error_set(
            err, -E2BIG, "serve: offset %llu: %s: a list of %llu elements (at most %u)",
            (unsigned long long)start, field, (unsigned long long)n, OBI_SERVE_MAX_LIST);
    *out = (size_t)n;
    return 0;
}

typedef int (*read_element_fn)(obi_serve_reader *reader, const char *field, size_t max, char **out,
                               obi_error **err);

static int read_path_element(obi_serve_reader *reader, const char *field, size_t max, char **out,
                             obi_error **err)
{
    (void)max;
    return obi_serve_read_store_path(reader, field, out, err);
}

static int read_string_element(obi_serve_reader *reader, const char *field, size_t max, char **out,
                               obi_error **err)
{
    return obi_serve_read_string(reader, field, max, out, NULL, err);
}

/* count, then count elements read by one_fn, each named field[i]. */
static int read_list(obi_serve_reader *reader, const char *field, size_t max_each,
                     read_element_fn one_fn, char ***out, size_t *n_out, obi_error **err)
{
    size_t n = 0;
    int r = read_count(reader, field, &n, err);
    if (r < 0)
        return r;
    /* grown as elements arrive (zeroed, so always NULL-terminated): a count alone commits no
     * memory */
    cleanup_strv char **items = NULL;
    size_t cap = 0;
    if (obi_array_grow(&items, &cap, 1) < 0)
        return obi_error_oom(err);
    for (size_t i = 0; i < n; i++) {
        if (obi_array_grow(&items, &cap, i + 2) < 0)
            return obi_error_oom(err);
        char name[160];
        snprintf(name, sizeof name, "%s[%zu]", field, i);
        r = one_fn(reader, name, max_each, &items[i], err);
        if (r < 0)
            return r;
    }
    *out = steal_pointer(&items);
    *n_out = n;
    return 0;
}

/* Sorts strv (n strings) and drops duplicates; returns the new count. */
static size_t sort_unique(char **strv, size_t n)
{
    if (n > 1)
        qsort(strv, n, sizeof *strv, obi_strv_item_compare);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (kept > 0 && strcmp(strv[kept - 1], strv[i]) == 0) {
            free(strv[i]);
            strv[i] = NULL;
            continue;
        }
        strv[kept] = strv[i];
        if (kept != i)
            strv[i] = NULL;
        kept++;
    }
    return kept;
}

int obi_serve_read_store_paths(obi_serve_reader *reader, const char *field, char ***out,
                               size_t *n_out, obi_error **err)
{
    char **items = NULL;
    size_t n = 0;
    int r = read_list(reader, field, OBI_SERVE_MAX_PATH_LEN, read_path_element, &items, &n, err);
    if (r < 0)
        return r;
    *n_out = sort_unique(items, n);
    *out = items;
    return 0;
}

int obi_serve_read_strings(obi_serve_reader *reader, const char *field, size_t max_each,
                           char ***out, size_t *n_out, obi_error **err)
{
    return read_list(reader, field, max_each, read_string_element, out, n_out, err);
}

/* ---- writing ---- */

struct obi_serve_writer {
    int fd; /* -1: into buf */
    obi_buf *buf;
    uint8_t *buffer;
    size_t used;
    uint64_t offset;
};

int obi_serve_writer_new_fd(int fd, obi_serve_writer **out, obi_error **err)
{
    obi_serve_writer *w = calloc(1, sizeof *w);
    uint8_t *buffer = malloc(SERVE_BUFFER_SIZE);
    if (!w || !buffer) {
        free(w);
        free(buffer);
        return obi_error_oom(err);
    }
    w->fd = fd;
    w->buffer = buffer;
    *out = w;
    return 0;
}

int obi_serve_writer_new_buf(obi_buf *buf, obi_serve_writer **out, obi_error **err)
{
    obi_serve_writer *w = calloc(1, sizeof *w);
    if (!w)
        return obi_error_oom(err);
    w->fd = -1;
    w->buf = buf;
    *out = w;
    return 0;
}

void obi_serve_writer_free(obi_serve_writer *writer)
{
    if (!writer)
        return;
    free(writer->buffer);
    free(writer);
}

uint64_t obi_serve_writer_offset(const obi_serve_writer *writer)
{
    return writer->offset;
}

int obi_serve_writer_flush(obi_serve_writer *writer, obi_error **err)
{
    if (writer->fd < 0 || writer->used == 0)
        return 0;
    size_t done = 0;
    while (done < writer->used) {
        ssize_t n = write(writer->fd, writer->buffer + done, writer->used - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return obi_error_set_errno(err, errno, "serve: write");
        done += (size_t)n;
    }
    writer->used = 0;
    return 0;
}

int obi_serve_write_raw(obi_serve_writer *writer, const void *data, size_t len, obi_error **err)
{
    writer->offset += len;
    if (writer->fd < 0)
        return obi_buf_append(writer->buf, data, len) < 0 ? obi_error_oom(err) : 0;
    const uint8_t *p = data;
    while (len > 0) {
        if (writer->used == SERVE_BUFFER_SIZE) {
            int r = obi_serve_writer_flush(writer, err);
            if (r < 0)
                return r;
        }
        size_t n = SERVE_BUFFER_SIZE - writer->used;
        if (n > len)
            n = len;
        memcpy(writer->buffer + writer->used, p, n);
        writer->used += n;
        p += n;
        len -= n;
    }
    return 0;
}

int obi_serve_write_u64(obi_serve_writer *writer, uint64_t value, obi_error **err)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(value >> (8 * i));
    return obi_serve_write_raw(writer, b, sizeof b, err);
}

int obi_serve_write_bytes(obi_serve_writer *writer, const void *data, size_t len, obi_error **err)
{
    static const uint8_t zeros[8];
    int r = obi_serve_write_u64(writer, len, err);
    if (r >= 0)
        r = obi_serve_write_raw(writer, data, len, err);
    if (r >= 0 && len % 8)
        r = obi_serve_write_raw(writer, zeros, 8 - len % 8, err);
    return r;
}

int obi_serve_write_string(obi_serve_writer *writer, const char *s, obi_error **err)
{
    return obi_serve_write_bytes(writer, s, strlen(s), err);
}

int obi_serve_write_strings(obi_serve_writer *writer, char *const *strv, size_t n, obi_error **err)
{
    int r = obi_serve_write_u64(writer, n, err);
    for (size_t i = 0; r >= 0 && i < n; i++)
        r = obi_serve_write_string(writer, strv[i], err);
    return r;
}

/* ---- the hello ---- */

int obi_serve_handshake(obi_serve_reader *reader, obi_serve_writer *writer,
                        unsigned *client_version, obi_error **err)
{
    uint64_t magic = 0, version = 0;
    int r = obi_serve_read_u64(reader, "the client's magic number", &magic, err);
    if (r < 0)
        return r;
    if (magic != OBI_SERVE_MAGIC_1)
        return obi_error_set(err, -EPROTO,
                             "serve: offset 0: the client's magic number: expected 0x%x, got "
                             "0x%llx (not a nix-store --serve client)",
                             OBI_SERVE_MAGIC_1, (unsigned long long)magic);
    r = obi_serve_write_u64(writer, OBI_SERVE_MAGIC_2, err);
    if (r >= 0)
        r = obi_serve_write_u64(writer, OBI_SERVE_VERSION, err);
    if (r >= 0)
        r = obi_serve_writer_flush(writer, err);
    if (r >= 0)
        r = obi_serve_read_u64(reader, "the client's version", &version, err);
    if (r < 0)
        return r;
    if ((version & ~0xffull) != 0x200 || OBI_SERVE_MINOR(version) < OBI_SERVE_MIN_CLIENT_MINOR)
        return obi_error_set(err, -EPROTO,
                             "serve: offset 8: the client's version: 0x%llx is not served "
                             "(versions 2.%u to 2.%u are)",
                             (unsigned long long)version, OBI_SERVE_MIN_CLIENT_MINOR,
                             OBI_SERVE_MINOR(OBI_SERVE_VERSION));
    unsigned minor = OBI_SERVE_MINOR(version);
    if (minor > OBI_SERVE_MINOR(OBI_SERVE_VERSION))
        minor = OBI_SERVE_MINOR(OBI_SERVE_VERSION);
    *client_version = 0x200u | minor;
    return 0;
}

/* ---- hashes ---- */

char *obi_serve_nar_hash_string(const uint8_t hash[OBI_SHA256_LEN])
{
    char encoded[64];
    obi_nixbase32_encode(hash, OBI_SHA256_LEN, encoded);
    char *s = NULL;
    if (asprintf(&s, "sha256:%s", encoded) < 0)
        return NULL;
    return s;
}

int obi_serve_parse_sha256(const char *text, uint8_t out[OBI_SHA256_LEN], obi_error **err)
{
    const char *rest = text;
    bool sri = false;
    if (strncmp(rest, "sha256:", 7) == 0) {
        rest += 7;
    } else if (strncmp(rest, "sha256-", 7) == 0) {
        rest += 7;
        sri = true;
    } else if (strchr(rest, ':') || strchr(rest, '-')) {
        return obi_error_set(err, -EINVAL, "'%s' is not a sha256 hash", text);
    }
    size_t len = strlen(rest);
    if (!sri && len == 2 * OBI_SHA256_LEN) {
        if (obi_hex_decode(rest, len, out, OBI_SHA256_LEN) < 0)
            return obi_error_set(err, -EINVAL, "'%s': invalid base-16 hash", text);
        return 0;
    }
    if (!sri && len == 52) {
        cleanup_error obi_error *decode_err = NULL;
        if (obi_nixbase32_decode(rest, len, out, OBI_SHA256_LEN, &decode_err) < 0)
            return obi_error_set(err, -EINVAL, "'%s': %s", text, decode_err->message);
        return 0;
    }
    if (len == 44) {
        cleanup_free uint8_t *bytes = NULL;
        size_t n = 0;
        cleanup_error obi_error *decode_err = NULL;
        if (obi_base64_decode(rest, len, &bytes, &n, &decode_err) < 0)
            return obi_error_set(err, -EINVAL, "'%s': %s", text, decode_err->message);
        if (n != OBI_SHA256_LEN)
            return obi_error_set(err, -EINVAL, "'%s': not 32 bytes", text);
        memcpy(out, bytes, OBI_SHA256_LEN);
        return 0;
    }
    return obi_error_set(err, -EINVAL,
                         "'%s' is not a sha256 hash (64 hex, 52 base-32 or 44 base-64 characters)",
                         text);
}

/* ---- path infos ---- */

obi_serve_path_info *obi_serve_path_info_new(void)
{
    obi_serve_path_info *info = calloc(1, sizeof *info);
    if (!info)
        return NULL;
    info->deriver = strdup("");
    info->ca = strdup("");
    info->references = calloc(1, sizeof *info->references);
    info->sigs = calloc(1, sizeof *info->sigs);
    if (!info->deriver || !info->ca || !info->references || !info->sigs) {
        obi_serve_path_info_free(info);
        return NULL;
    }
    return info;
}

void obi_serve_path_info_free(obi_serve_path_info *info)
{
    if (!info)
        return;
    free(info->path);
    free(info->deriver);
    obi_strv_free(info->references);
    obi_strv_free(info->sigs);
    free(info->ca);
    free(info);
}

/* A deriver: "" or a store path. */
static int read_deriver(obi_serve_reader *reader, const char *field, char **out, obi_error **err)
{
    uint64_t start = reader->offset;
    cleanup_free char *s = NULL;
    int r = obi_serve_read_string(reader, field, OBI_SERVE_MAX_PATH_LEN, &s, NULL, err);
    if (r < 0)
        return r;
    cleanup_error obi_error *check_err = NULL;
    if (s[0] && check_store_path(s, &check_err) < 0)
        return obi_error_set(err, -EINVAL, "serve: offset %llu: %s: %s", (unsigned long long)start,
                             field, check_err->message);
    free(*out);
    *out = steal_pointer(&s);
    return 0;
}

int obi_serve_read_add_to_store_nar(obi_serve_reader *reader, obi_serve_path_info **out,
                                    obi_error **err)
{
    cleanup_serve_path_info obi_serve_path_info *info = obi_serve_path_info_new();
    if (!info)
        return obi_error_oom(err);
    int r = obi_serve_read_store_path(reader, "AddToStoreNar.path", &info->path, err);
    if (r >= 0)
        r = read_deriver(reader, "AddToStoreNar.deriver", &info->deriver, err);
    if (r < 0)
        return r;
    uint64_t start = reader->offset;
    cleanup_free char *hash = NULL;
    r = obi_serve_read_string(reader, "AddToStoreNar.narHash", 128, &hash, NULL, err);
    if (r < 0)
        return r;
    cleanup_error obi_error *hash_err = NULL;
    if (obi_serve_parse_sha256(hash, info->nar_hash, &hash_err) < 0)
        return obi_error_set(err, -EINVAL, "serve: offset %llu: AddToStoreNar.narHash: %s",
                             (unsigned long long)start, hash_err->message);
    obi_strv_free(info->references);
    info->references = NULL;
    r = obi_serve_read_store_paths(reader, "AddToStoreNar.references", &info->references,
                                   &info->n_references, err);
    if (r >= 0)
        r = obi_serve_read_u64(reader, "AddToStoreNar.registrationTime", &info->registration_time,
                               err);
    start = reader->offset;
    if (r >= 0)
        r = obi_serve_read_u64(reader, "AddToStoreNar.narSize", &info->nar_size, err);
    if (r >= 0 && info->nar_size == 0)
        return obi_error_set(err, -EINVAL, "serve: offset %llu: AddToStoreNar.narSize: 0",
                             (unsigned long long)start);
    if (r >= 0)
        r = obi_serve_read_bool(reader, "AddToStoreNar.ultimate", &info->ultimate, err);
    if (r < 0)
        return r;
    obi_strv_free(info->sigs);
    info->sigs = NULL;
    r = obi_serve_read_strings(reader, "AddToStoreNar.sigs", 4096, &info->sigs, &info->n_sigs, err);
    if (r < 0)
        return r;
    start = reader->offset;
    free(info->ca);
    info->ca = NULL;
    r = obi_serve_read_string(reader, "AddToStoreNar.ca", 4096, &info->ca, NULL, err);
    if (r < 0)
        return r;
    cleanup_error obi_error *ca_err = NULL;
    if (info->ca[0] && obi_nix_content_address_check(info->ca, &ca_err) < 0)
        return obi_error_set(err, -EINVAL, "serve: offset %llu: AddToStoreNar.ca: %s",
                             (unsigned long long)start, ca_err->message);
    *out = steal_pointer(&info);
    return 0;
}

int obi_serve_read_import_marker(obi_serve_reader *reader, obi_error **err)
{
    uint64_t start = reader->offset, marker = 0;
    int r = obi_serve_read_u64(reader, "ImportPaths: the marker before a path", &marker, err);
    if (r < 0)
        return r;
    if (marker > 1)
        return obi_error_set(err, -EINVAL,
                             "serve: offset %llu: ImportPaths: expected 1 (a path follows) or 0 "
                             "(the end), got %llu (not the output of nix-store --export)",
                             (unsigned long long)start, (unsigned long long)marker);
    return (int)marker;
}

int obi_serve_read_export_trailer(obi_serve_reader *reader, obi_serve_path_info **out,
                                  obi_error **err)
{
    uint64_t start = reader->offset, magic = 0;
    int r = obi_serve_read_u64(reader, "ImportPaths: the export magic", &magic, err);
    if (r < 0)
        return r;
    if (magic != OBI_SERVE_EXPORT_MAGIC)
        return obi_error_set(err, -EINVAL,
                             "serve: offset %llu: ImportPaths: expected the export magic 0x%x "
                             "after the NAR, got 0x%llx",
                             (unsigned long long)start, OBI_SERVE_EXPORT_MAGIC,
                             (unsigned long long)magic);
    cleanup_serve_path_info obi_serve_path_info *info = obi_serve_path_info_new();
    if (!info)
        return obi_error_oom(err);
    r = obi_serve_read_store_path(reader, "ImportPaths.path", &info->path, err);
    if (r < 0)
        return r;
    obi_strv_free(info->references);
    info->references = NULL;
    r = obi_serve_read_store_paths(reader, "ImportPaths.references", &info->references,
                                   &info->n_references, err);
    if (r >= 0)
        r = read_deriver(reader, "ImportPaths.deriver", &info->deriver, err);
    bool has_sig = false;
    if (r >= 0)
        r = obi_serve_read_bool(reader, "ImportPaths: the signature flag", &has_sig, err);
    if (r >= 0 && has_sig) {
        cleanup_free char *sig = NULL;
        r = obi_serve_read_string(reader, "ImportPaths.signature", 4096, &sig, NULL, err);
    }
    if (r < 0)
        return r;
    *out = steal_pointer(&info);
    return 0;
}

int obi_serve_write_export_trailer(obi_serve_writer *writer, const obi_serve_path_info *info,
                                   obi_error **err)
{
    int r = obi_serve_write_u64(writer, OBI_SERVE_EXPORT_MAGIC, err);
    if (r >= 0)
        r = obi_serve_write_string(writer, info->path, err);
    if (r >= 0)
        r = obi_serve_write_strings(writer, info->references, info->n_references, err);
    if (r >= 0)
        r = obi_serve_write_string(writer, info->deriver, err);
    if (r >= 0)
        r = obi_serve_write_u64(writer, 0, err);
    return r;
}

int obi_serve_write_path_info(obi_serve_writer *writer, unsigned client_version,
                              const obi_serve_path_info *info, obi_error **err)
{
    int r = obi_serve_write_string(writer, info->path, err);
    if (r >= 0)
        r = obi_serve_write_string(writer, info->deriver, err);
    if (r >= 0)
        r = obi_serve_write_strings(writer, info->references, info->n_references, err);
    if (r >= 0)
        r = obi_serve_write_u64(writer, info->nar_size, err); /* download size */
    if (r >= 0)
        r = obi_serve_write_u64(writer, info->nar_size, err);
    if (r < 0 || OBI_SERVE_MINOR(client_version) < 4)
        return r;
    cleanup_free char *hash = obi_serve_nar_hash_string(info->nar_hash);
    if (!hash)
        return obi_error_oom(err);
    r = obi_serve_write_string(writer, hash, err);
    if (r >= 0)
        r = obi_serve_write_string(writer, info->ca, err);
    if (r >= 0)
        r = obi_serve_write_strings(writer, info->sigs, info->n_sigs, err);
    return r;
}

/* ---- builds ---- */

int obi_serve_read_build_options(obi_serve_reader *reader, unsigned client_version,
                                 obi_serve_build_options *out, obi_error **err)
{
    obi_serve_build_options o = {0};
    unsigned minor = OBI_SERVE_MINOR(client_version);
    int r = obi_serve_read_u64(reader, "maxSilentTime", &o.max_silent_time, err);
    if (r >= 0)
        r = obi_serve_read_u64(reader, "buildTimeout", &o.build_timeout, err);
    if (r >= 0 && minor >= 2)
        r = obi_serve_read_u64(reader, "maxLogSize", &o.max_log_size, err);
    if (r >= 0 && minor >= 3)
        r = obi_serve_read_u64(reader, "buildRepeat", &o.build_repeat, err);
    if (r >= 0 && minor >= 3)
        r = obi_serve_read_bool(reader, "enforceDeterminism", &o.enforce_determinism, err);
    if (r >= 0 && minor >= 7)
        r = obi_serve_read_bool(reader, "keepFailed", &o.keep_failed, err);
    if (r < 0)
        return r;
    *out = o;
    return 0;
}

void obi_serve_build_request_free(obi_serve_build_request *req)
{
    if (!req)
        return;
    free(req->drv_path);
    obi_derivation_free(req->drv);
    free(req);
}

static int compare_outputs(const void *a, const void *b)
{
    return strcmp(((const obi_derivation_output *)a)->name,
                  ((const obi_derivation_output *)b)->name);
}

static int compare_env(const void *a, const void *b)
{
    return strcmp(((const obi_derivation_env *)a)->key, ((const obi_derivation_env *)b)->key);
}

static bool valid_output_name(const char *name)
{
    if (!name[0])
        return false;
    for (const char *c = name; *c; c++)
        if (!is_name_char(*c))
            return false;
    return true;
}

/* One output: name, path, hash algorithm, hash. */
static int read_output(obi_serve_reader *reader, size_t index, obi_derivation_output *o,
                       obi_error **err)
{
    char field[96];
    snprintf(field, sizeof field, "BuildDerivation.outputs[%zu].name", index);
    uint64_t start = reader->offset;
    int r = obi_serve_read_string(reader, field, 256, &o->name, NULL, err);
    if (r < 0)
        return r;
    if (!valid_output_name(o->name))
        return obi_error_set(err, -EINVAL, "serve: offset %llu: %s: '%s' is not an output name",
                             (unsigned long long)start, field, o->name);
    snprintf(field, sizeof field, "BuildDerivation.outputs[%zu].path", index);
    start = reader->offset;
    r = obi_serve_read_string(reader, field, OBI_SERVE_MAX_PATH_LEN, &o->path, NULL, err);
    if (r < 0)
        return r;
    if (!o->path[0])
        return obi_error_set(err, -ENOTSUP,
                             "serve: offset %llu: %s: output '%s' has no path (floating "
                             "content-addressed derivations are not built here)",
                             (unsigned long long)start, field, o->name);
    cleanup_error obi_error *check_err = NULL;
    if (check_store_path(o->path, &check_err) < 0)
        return obi_error_set(err, -EINVAL, "serve: offset %llu: %s: %s", (unsigned long long)start,
                             field, check_err->message);
    snprintf(field, sizeof field, "BuildDerivation.outputs[%zu].hashAlgo", index);
    start = reader->offset;
    r = obi_serve_read_string(reader, field, 64, &o->hash_algo, NULL, err);
    if (r < 0)
        return r;
    if (o->hash_algo[0]) {
        bool recursive = false;
        const char *algo = NULL;
        size_t len = 0;
        cleanup_error obi_error *algo_err = NULL;
        if (obi_derivation_hash_algo_parse(o->hash_algo, &recursive, &algo, &len, &algo_err) < 0)
            return obi_error_set(err, -EINVAL, "serve: offset %llu: %s: %s",
                                 (unsigned long long)start, field, algo_err->message);
    }
    snprintf(field, sizeof field, "BuildDerivation.outputs[%zu].hash", index);
    start = reader->offset;
    r = obi_serve_read_string(reader, field, 256, &o->hash, NULL, err);
    if (r < 0)
        return r;
    if (o->hash[0] && (!o->hash_algo[0] || strspn(o->hash, "0123456789abcdef") != strlen(o->hash)))
        return obi_error_set(err, -EINVAL,
                             "serve: offset %llu: %s: expected lowercase hex with a hash "
                             "algorithm, got '%s'",
                             (unsigned long long)start, field, o->hash);
    return 0;
}

static int read_outputs(obi_serve_reader *reader, obi_derivation *drv, obi_error **err)
{
    uint64_t start = reader->offset;
    size_t n = 0;
    int r = read_count(reader, "BuildDerivation.outputs", &n, err);
    if (r < 0)
        return r;
    if (n == 0)
        return obi_error_set(err, -EINVAL, "serve: offset %llu: BuildDerivation.outputs: none",
                             (unsigned long long)start);
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) {
        if (obi_array_grow(&drv->outputs, &cap, i + 1) < 0)
            return obi_error_oom(err);
        drv->n_outputs = i + 1;
        r = read_output(reader, i, &drv->outputs[i], err);
        if (r < 0)
            return r;
    }
    qsort(drv->outputs, n, sizeof *drv->outputs, compare_outputs);
    for (size_t i = 1; i < n; i++)
        if (strcmp(drv->outputs[i - 1].name, drv->outputs[i].name) == 0)
            return obi_error_set(err, -EINVAL,
                                 "serve: offset %llu: BuildDerivation.outputs: output '%s' "
                                 "appears twice",
                                 (unsigned long long)start, drv->outputs[i].name);
    return 0;
}

static int read_env(obi_serve_reader *reader, obi_derivation *drv, obi_error **err)
{
    uint64_t start = reader->offset;
    size_t n = 0;
    int r = read_count(reader, "BuildDerivation.env", &n, err);
    if (r < 0)
        return r;
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) {
        if (obi_array_grow(&drv->env, &cap, i + 1) < 0)
            return obi_error_oom(err);
        drv->n_env = i + 1;
        char field[64];
        snprintf(field, sizeof field, "BuildDerivation.env[%zu].key", i);
        r = obi_serve_read_string(reader, field, 4096, &drv->env[i].key, NULL, err);
        snprintf(field, sizeof field, "BuildDerivation.env[%zu].value", i);
        if (r >= 0)
            r = obi_serve_read_string(reader, field, OBI_SERVE_MAX_STRING, &drv->env[i].value, NULL,
                                      err);
        if (r < 0)
            return r;
    }
    if (n > 1)
        qsort(drv->env, n, sizeof *drv->env, compare_env);
    for (size_t i = 1; i < n; i++)
        if (strcmp(drv->env[i - 1].key, drv->env[i].key) == 0)
            return obi_error_set(err, -EINVAL,
                                 "serve: offset %llu: BuildDerivation.env: '%s' appears twice",
                                 (unsigned long long)start, drv->env[i].key);
    return 0;
}

/* "/nix/store/<hash>-<name>.drv" */
static int check_drv_path(const char *path, uint64_t start, obi_error **err)
{
    size_t len = strlen(path);
    if (len < 4 || strcmp(path + len - 4, ".drv") != 0)
        return obi_error_set(err, -EINVAL,
                             "serve: offset %llu: BuildDerivation.drvPath: '%s' does not end in "
                             ".drv",
                             (unsigned long long)start, path);
    return 0;
}

int obi_serve_read_build_derivation(obi_serve_reader *reader, unsigned client_version,
                                    obi_serve_build_request **out, obi_error **err)
{
    obi_serve_build_request *req = calloc(1, sizeof *req);
    if (!req)
        return obi_error_oom(err);
    _cleanup_(obi_serve_build_request_freep) obi_serve_build_request *owned = req;
    req->drv = calloc(1, sizeof *req->drv);
    if (!req->drv)
        return obi_error_oom(err);
    obi_derivation *drv = req->drv;
    uint64_t start = reader->offset;
    int r = obi_serve_read_store_path(reader, "BuildDerivation.drvPath", &req->drv_path, err);
    if (r >= 0)
        r = check_drv_path(req->drv_path, start, err);
    if (r >= 0)
        r = read_outputs(reader, drv, err);
    if (r >= 0)
        r = obi_serve_read_store_paths(reader, "BuildDerivation.inputSrcs", &drv->input_srcs,
                                       &drv->n_input_srcs, err);
    if (r >= 0)
        r = obi_serve_read_string(reader, "BuildDerivation.platform", 256, &drv->system, NULL, err);
    if (r >= 0)
        r = obi_serve_read_string(reader, "BuildDerivation.builder", OBI_SERVE_MAX_PATH_LEN,
                                  &drv->builder, NULL, err);
    if (r >= 0)
        r = obi_serve_read_strings(reader, "BuildDerivation.args", OBI_SERVE_MAX_STRING, &drv->args,
                                   &drv->n_args, err);
    if (r >= 0)
        r = read_env(reader, drv, err);
    if (r >= 0)
        r = obi_serve_read_build_options(reader, client_version, &req->options, err);
    if (r < 0)
        return r;
    *out = steal_pointer(&owned);
    return 0;
}

void obi_serve_build_result_clear(obi_serve_build_result *result)
{
    free(result->error_msg);
    for (size_t i = 0; i < result->n_built_outputs; i++) {
        free(result->built_outputs[i].id);
        free(result->built_outputs[i].json);
    }
    free(result->built_outputs);
    memset(result, 0, sizeof *result);
}

int obi_serve_write_build_result(obi_serve_writer *writer, unsigned client_version,
                                 const obi_serve_build_result *result, obi_error **err)
{
    unsigned minor = OBI_SERVE_MINOR(client_version);
    int r = obi_serve_write_u64(writer, (uint64_t)result->status, err);
    if (r >= 0)
        r = obi_serve_write_string(writer, result->error_msg ? result->error_msg : "", err);
    if (r >= 0 && minor >= 3) {
        r = obi_serve_write_u64(writer, result->times_built, err);
        if (r >= 0)
            r = obi_serve_write_u64(writer, result->is_non_deterministic, err);
        if (r >= 0)
            r = obi_serve_write_u64(writer, result->start_time, err);
        if (r >= 0)
            r = obi_serve_write_u64(writer, result->stop_time, err);
    }
    if (r >= 0 && minor >= 6) {
        r = obi_serve_write_u64(writer, result->n_built_outputs, err);
        for (size_t i = 0; r >= 0 && i < result->n_built_outputs; i++) {
            r = obi_serve_write_string(writer, result->built_outputs[i].id, err);
            if (r >= 0)
                r = obi_serve_write_string(writer, result->built_outputs[i].json, err);
        }
    }
    return r;
}

int obi_serve_read_build_paths(obi_serve_reader *reader, unsigned client_version, char ***paths_out,
                               size_t *n_out, obi_serve_build_options *options, obi_error **err)
{
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    int r =
        obi_serve_read_strings(reader, "BuildPaths.paths", OBI_SERVE_MAX_PATH_LEN, &paths, &n, err);
    if (r >= 0)
        r = obi_serve_read_build_options(reader, client_version, options, err);
    if (r < 0)
        return r;
    *paths_out = steal_pointer(&paths);
    *n_out = n;
    return 0;
}
