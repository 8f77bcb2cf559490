/*
 * The protobuf wire reader, writer and the checks driven by protoc-c's descriptors
 * (include/ocibuild/pb_wire.h). The reader is the only code in the project that decodes varints
 * and keys; the castore, builder and rpc codecs all go through it.
 *
 * obi_pb_check walks a message once, recursing into embedded messages, and keeps nothing: on
 * success it allocates nothing. When it fails, the field path is rebuilt from a chain of stack
 * frames (one per embedded message), counting the earlier occurrences of each repeated field
 * to give its index, so the common case pays nothing for good messages.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/pb_wire.h"

/* ---- reader -------------------------------------------------------------------------------- */

obi_pb_reader obi_pb_reader_nested(const obi_pb_reader *parent, const obi_pb_field *f)
{
    return (obi_pb_reader){f->data, f->len, 0, parent->base + (size_t)(f->data - parent->data)};
}

int obi_pb_read_varint(obi_pb_reader *r, uint64_t *out, bool *minimal, obi_error **err)
{
    size_t start = r->pos;
    /* One byte: most keys, lengths and numbers (bench/README.md "Protobuf decoding"). */
    if (start < r->len && r->data[start] < 0x80) {
        *out = r->data[r->pos++];
        if (minimal)
            *minimal = true;
        return 0;
    }
    uint64_t v = 0;
    for (unsigned i = 0; i < OBI_PB_VARINT_MAX; i++) {
        if (r->pos >= r->len)
            return obi_error_set(err, -EINVAL, "truncated varint at byte offset %zu",
                                 r->base + start);
        uint8_t b = r->data[r->pos++];
        /* The tenth byte holds bit 63 only; anything more (or a continuation) overflows. */
        if (i == OBI_PB_VARINT_MAX - 1 && b > 1)
            return obi_error_set(err, -EINVAL, "varint at byte offset %zu overflows 64 bits",
                                 r->base + start);
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (minimal)
                *minimal = i == 0 || b != 0;
            *out = v;
            return 0;
        }
    }
    return obi_error_set(err, -EINVAL, "varint at byte offset %zu overflows 64 bits",
                         r->base + start); /* not reached: the tenth byte decides */
}

int obi_pb_read_key(obi_pb_reader *r, obi_pb_field *f, obi_error **err)
{
    size_t start = r->pos;
    uint64_t key = 0;
    bool minimal = true;
    int rc = obi_pb_read_varint(r, &key, &minimal, err);
    if (rc < 0)
        return rc;
    /* A key is a 32-bit varint: protobuf-c refuses one written in more bytes, however small. */
    if (r->pos - start > OBI_PB_KEY_MAX)
        return obi_error_set(err, -EINVAL, "key at byte offset %zu is longer than %d bytes",
                             r->base + start, OBI_PB_KEY_MAX);
    uint64_t number = key >> 3;
    if (number == 0 || number > OBI_PB_FIELD_NUMBER_MAX)
        return obi_error_set(err, -EINVAL, "invalid field number %llu at byte offset %zu",
                             (unsigned long long)number, r->base + start);
    *f = (obi_pb_field){.number = (uint32_t)number,
                        .wire_type = (obi_pb_wire_type)(key & 7),
                        .offset = r->base + start,
                        .minimal = minimal};
    return 0;
}

int obi_pb_read_value(obi_pb_reader *r, obi_pb_field *f, obi_error **err)
{
    bool minimal = true;
    int rc = 0;
    switch (f->wire_type) {
    case OBI_PB_VARINT:
        rc = obi_pb_read_varint(r, &f->value, &minimal, err);
        break;
    case OBI_PB_I64:
    case OBI_PB_I32: {
        size_t width = f->wire_type == OBI_PB_I64 ? 8 : 4;
        if (r->len - r->pos < width)
            return obi_error_set(err, -EINVAL, "truncated %zu-byte value at byte offset %zu", width,
                                 r->base + r->pos);
        f->value = 0;
        for (size_t i = 0; i < width; i++)
            f->value |= (uint64_t)r->data[r->pos + i] << (8 * i);
        r->pos += width;
        break;
    }
    case OBI_PB_LEN: {
        size_t len_at = r->pos;
        uint64_t len = 0;
        rc = obi_pb_read_varint(r, &len, &minimal, err);
        if (rc < 0)
            break;
        /* A 32-bit varint too: protobuf-c refuses a length written in more bytes. */
        if (r->pos - len_at > OBI_PB_LENGTH_MAX)
            return obi_error_set(err, -EINVAL, "length at byte offset %zu is longer than %d bytes",
                                 r->base + len_at, OBI_PB_LENGTH_MAX);
        if (len > r->len - r->pos)
            return obi_error_set(err, -EINVAL,
                                 "length %llu at byte offset %zu exceeds the remaining %zu bytes",
                                 (unsigned long long)len, r->base + len_at, r->len - r->pos);
        f->data = r->data + r->pos;
        f->len = (size_t)len;
        r->pos += (size_t)len;
        break;
    }
    case OBI_PB_SGROUP:
    case OBI_PB_EGROUP:
        return obi_error_set(err, -EINVAL, "wire type %u (%s) is not supported", f->wire_type,
                             obi_pb_wire_type_name(f->wire_type));
    default:
        return obi_error_set(err, -EINVAL, "wire type %u is invalid", f->wire_type);
    }
    if (rc < 0)
        return rc;
    f->minimal = f->minimal && minimal;
    return 0;
}

/* A one-byte key with a one-byte varint or length that fits: most fields, read here in one step
 * (bench/README.md "Protobuf decoding"). true with f filled and r past the field; false with
 * nothing changed, for obi_pb_read_key and obi_pb_read_value to read it (or say what is wrong). */
static inline bool read_short_field(obi_pb_reader *r, obi_pb_field *f)
{
    const uint8_t *d = r->data + r->pos;
    size_t left = r->len - r->pos;
    if (left < 2 || d[0] >= 0x80 || d[0] < 8 || d[1] >= 0x80)
        return false;
    obi_pb_wire_type wire_type = (obi_pb_wire_type)(d[0] & 7);
    bool len = wire_type == OBI_PB_LEN;
    if (!(wire_type == OBI_PB_VARINT || (len && d[1] <= left - 2)))
        return false;
    *f = (obi_pb_field){.number = d[0] >> 3u,
                        .wire_type = wire_type,
                        .offset = r->base + r->pos,
                        .value = len ? 0 : d[1],
                        .data = len ? d + 2 : NULL,
                        .len = len ? d[1] : 0,
                        .minimal = true};
    r->pos += 2 + f->len;
    return true;
}

int obi_pb_next(obi_pb_reader *r, obi_pb_field *f, obi_error **err)
{
    if (obi_pb_reader_done(r))
        return 0;
    if (read_short_field(r, f))
        return 1;
    int rc = obi_pb_read_key(r, f, err);
    if (rc < 0)
        return rc;
    rc = obi_pb_read_value(r, f, err);
    if (rc < 0)
        return obi_error_prefix(err, rc, "field %u at byte offset %zu", f->number, f->offset);
    return 1;
}

/* ---- writer -------------------------------------------------------------------------------- */

size_t obi_pb_put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

size_t obi_pb_put_key(uint8_t *out, uint32_t number, obi_pb_wire_type wire_type)
{
    return obi_pb_put_varint(out, (uint64_t)number << 3 | (uint64_t)wire_type);
}

size_t obi_pb_put_len_header(uint8_t *out, uint32_t number, size_t len)
{
    size_t n = obi_pb_put_key(out, number, OBI_PB_LEN);
    return n + obi_pb_put_varint(out + n, len);
}

/* ---- types --------------------------------------------------------------------------------- */

obi_pb_wire_type obi_pb_wire_type_of(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return OBI_PB_I32;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return OBI_PB_I64;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
        return OBI_PB_LEN;
    default: /* the integer types, bool and enums */
        return OBI_PB_VARINT;
    }
}

const char *obi_pb_wire_type_name(unsigned wire_type)
{
    static const char *const NAMES[] = {
        [OBI_PB_VARINT] = "varint",        [OBI_PB_I64] = "64-bit",
        [OBI_PB_LEN] = "length-delimited", [OBI_PB_SGROUP] = "start group",
        [OBI_PB_EGROUP] = "end group",     [OBI_PB_I32] = "32-bit",
    };
    return wire_type < OBI_ARRAY_SIZE(NAMES) ? NAMES[wire_type] : "invalid";
}

/* Repeated scalars may come packed (one LEN field of values) or not; parsers take both. */
static bool is_packable(const ProtobufCFieldDescriptor *fd)
{
    return fd->label == PROTOBUF_C_LABEL_REPEATED && obi_pb_wire_type_of(fd->type) != OBI_PB_LEN;
}

bool obi_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* ---- strict check -------------------------------------------------------------------------- */

/* One message being checked: its bytes, and how it was reached from its parent (NULL at the
 * top): through field `field`, whose key is at parent_key_pos in the parent's bytes. */
typedef struct check_frame check_frame;
struct check_frame {
    const check_frame *parent;
    const ProtobufCFieldDescriptor *field;
    size_t parent_key_pos;
    const uint8_t *data;
    size_t len;
};

/* How many times field `number` occurs in data before key_pos (data was read up to there). */
static size_t occurrences_before(const uint8_t *data, size_t len, uint32_t number, size_t key_pos)
{
    obi_pb_reader r = obi_pb_reader_of(data, len);
    obi_pb_field f;
    size_t n = 0;
    while (r.pos < key_pos && obi_pb_next(&r, &f, NULL) > 0)
        n += f.number == number;
    return n;
}

typedef struct path_buf {
    char text[512];
    size_t len;
} path_buf;

static void path_append(path_buf *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void path_append(path_buf *p, const char *fmt, ...)
{
    if (p->len >= sizeof p->text - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->text + p->len, sizeof p->text - p->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        p->len = p->len + (size_t)n < sizeof p->text ? p->len + (size_t)n : sizeof p->text - 1;
}

/* Appends "name" or "name[i]" for field fd whose key is at key_pos in data. */
static void path_append_field(path_buf *p, const ProtobufCFieldDescriptor *fd, const uint8_t *data,
                              size_t len, size_t key_pos)
{
    path_append(p, "%s%s", p->len ? "." : "", fd->name);
    if (fd->label == PROTOBUF_C_LABEL_REPEATED)
        path_append(p, "[%zu]", occurrences_before(data, len, fd->id, key_pos));
}

/* The path of the message of `frame` ("" at the top, "build_request", "files[2]"). */
static void path_of_frame(path_buf *p, const check_frame *frame)
{
    if (!frame->parent)
        return;
    path_of_frame(p, frame->parent);
    path_append_field(p, frame->field, frame->parent->data, frame->parent->len,
                      frame->parent_key_pos);
}

/* Prefixes err with where the field whose key is at key_pos of frame's message is: "path.name[i]
 * (field N) at byte offset M" for a known field, "path: field N at byte offset M" otherwise. */
static int prefix_field(obi_error **err, int code, const check_frame *frame,
                        const ProtobufCFieldDescriptor *fd, const obi_pb_field *f, size_t key_pos)
{
    path_buf p = {.len = 0};
    p.text[0] = '\0';
    path_of_frame(&p, frame);
    if (fd) {
        path_append_field(&p, fd, frame->data, frame->len, key_pos);
        return obi_error_prefix(err, code, "%s (field %u) at byte offset %zu", p.text, f->number,
                                f->offset);
    }
    return obi_error_prefix(err, code, "%s%sfield %u at byte offset %zu", p.text, p.len ? ": " : "",
                            f->number, f->offset);
}

static int prefix_message(obi_error **err, int code, const check_frame *frame)
{
    path_buf p = {.len = 0};
    p.text[0] = '\0';
    path_of_frame(&p, frame);
    return p.len ? obi_error_prefix(err, code, "%s", p.text) : code;
}

static bool wire_type_fits(const ProtobufCFieldDescriptor *fd, obi_pb_wire_type wire_type)
{
    return wire_type == obi_pb_wire_type_of(fd->type) ||
           (wire_type == OBI_PB_LEN && is_packable(fd));
}

/* The values of a packed repeated scalar field. */
static int check_packed(const ProtobufCFieldDescriptor *fd, const obi_pb_reader *r,
                        const obi_pb_field *f, obi_error **err)
{
    obi_pb_reader values = obi_pb_reader_nested(r, f);
    obi_pb_field v = {.wire_type = obi_pb_wire_type_of(fd->type)};
    while (!obi_pb_reader_done(&values)) {
        int rc = obi_pb_read_value(&values, &v, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int check_message(const ProtobufCMessageDescriptor *desc, const check_frame *frame,
                         obi_pb_reader *r, unsigned depth, obi_error **err);

/* The value of a known field, read into f. */
static int check_known_value(const ProtobufCFieldDescriptor *fd, const check_frame *frame,
                             obi_pb_reader *r, const obi_pb_field *f, size_t key_pos,
                             unsigned depth, obi_error **err)
{
    if (f->wire_type != OBI_PB_LEN)
        return 0;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (memchr(f->data, '\0', f->len))
            return obi_error_set(err, -EINVAL, "string contains NUL");
        if (!obi_utf8_valid(f->data, f->len))
            return obi_error_set(err, -EINVAL, "string is not valid UTF-8");
        return 0;
    case PROTOBUF_C_TYPE_BYTES:
        return 0;
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (depth >= OBI_PB_DEPTH_MAX)
            return obi_error_set(err, -EINVAL, "messages nested deeper than %d", OBI_PB_DEPTH_MAX);
        check_frame child = {frame, fd, key_pos, f->data, f->len};
        obi_pb_reader nested = obi_pb_reader_nested(r, f);
        return check_message(fd->descriptor, &child, &nested, depth + 1, err);
    }
    default:
        return check_packed(fd, r, f, err);
    }
}

static int check_message(const ProtobufCMessageDescriptor *desc, const check_frame *frame,
                         obi_pb_reader *r, unsigned depth, obi_error **err)
{
    while (!obi_pb_reader_done(r)) {
        size_t key_pos = r->pos;
        obi_pb_field f;
        /* A short field is read whole (its value cannot be at fault); otherwise the key first,
         * so that a wrong wire type is named before what its value would make of the rest. */
        bool read = read_short_field(r, &f);
        int rc = read ? 0 : obi_pb_read_key(r, &f, err);
        if (rc < 0)
            return prefix_message(err, rc, frame);
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field(desc, f.number);
        if (fd && !wire_type_fits(fd, f.wire_type)) {
            obi_pb_wire_type want = obi_pb_wire_type_of(fd->type);
            rc = obi_error_set(err, -EINVAL, "wire type %u (%s), expected %u (%s)", f.wire_type,
                               obi_pb_wire_type_name(f.wire_type), want,
                               obi_pb_wire_type_name(want));
            return prefix_field(err, rc, frame, fd, &f, key_pos);
        }
        rc = read ? 0 : obi_pb_read_value(r, &f, err);
        if (rc < 0)
            return prefix_field(err, rc, frame, fd, &f, key_pos);
        if (!fd)
            continue;
        rc = check_known_value(fd, frame, r, &f, key_pos, depth, err);
        if (rc < 0) {
            /* Errors of embedded messages carry their own path; the others get this field's. */
            bool nested = fd->type == PROTOBUF_C_TYPE_MESSAGE && depth < OBI_PB_DEPTH_MAX;
            return nested ? rc : prefix_field(err, rc, frame, fd, &f, key_pos);
        }
    }
    return 0;
}

int obi_pb_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                 obi_error **err)
{
    obi_pb_reader r = obi_pb_reader_of(data, len);
    check_frame top = {NULL, NULL, 0, data, len};
    return check_message(desc, &top, &r, 0, err);
}

int obi_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                  ProtobufCMessage **out, obi_error **err)
{
    int rc = obi_pb_check(desc, data, len, err);
    if (rc < 0)
        return rc;
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, len, data);
    if (!msg) /* it passed the check, so what is left is running out of memory */
        return obi_error_oom(err);
    *out = msg;
    return 0;
}

/* ---- canonical form ------------------------------------------------------------------------ */

/* Whether a varint value is one protobuf-c writes for a field of this type. */
static bool canonical_varint(ProtobufCType type, uint64_t v)
{
    switch (type) {
    case PROTOBUF_C_TYPE_BOOL:
        return v <= 1;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_SINT32:
        return v <= UINT32_MAX;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_ENUM: /* negative values are sign-extended to 64 bits */
        return v <= INT32_MAX || v >= (uint64_t)INT32_MIN;
    default:
        return true;
    }
}

static const char *varint_type_name(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_BOOL:
        return "bool";
    case PROTOBUF_C_TYPE_UINT32:
        return "uint32";
    case PROTOBUF_C_TYPE_SINT32:
        return "sint32";
    case PROTOBUF_C_TYPE_INT32:
        return "int32";
    case PROTOBUF_C_TYPE_ENUM:
        return "enum";
    default:
        return "64-bit integer";
    }
}

/* Whether a value of an implicit-presence (proto3 singular) field is its default, which
 * protobuf-c does not write. Floats compare as numbers: -0.0 is a default too. */
static bool is_default(const ProtobufCFieldDescriptor *fd, const obi_pb_field *f)
{
    switch (f->wire_type) {
    case OBI_PB_LEN:
        return f->len == 0 && fd->type != PROTOBUF_C_TYPE_MESSAGE;
    case OBI_PB_I32:
        if (fd->type == PROTOBUF_C_TYPE_FLOAT) {
            uint32_t bits = (uint32_t)f->value;
            float x;
            memcpy(&x, &bits, sizeof x);
            return x == 0;
        }
        return f->value == 0;
    case OBI_PB_I64:
        if (fd->type == PROTOBUF_C_TYPE_DOUBLE) {
            double x;
            memcpy(&x, &f->value, sizeof x);
            return x == 0;
        }
        return f->value == 0;
    default:
        return f->value == 0;
    }
}

/* The canonical check departs at field f (key at key_pos of frame's message; fd NULL for an
 * unknown field): -EINVAL with "path (field N) at byte offset M: why". Without err nothing is
 * formatted: obi_pb_is_canonical wants only the answer. */
static int not_canonical(obi_error **err, const check_frame *frame,
                         const ProtobufCFieldDescriptor *fd, const obi_pb_field *f, size_t key_pos,
                         const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int not_canonical(obi_error **err, const check_frame *frame,
                         const ProtobufCFieldDescriptor *fd, const obi_pb_field *f, size_t key_pos,
                         const char *fmt, ...)
{
    if (!err)
        return -EINVAL;
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    int rc = obi_error_set(err, -EINVAL, "%s", why);
    return prefix_field(err, rc, frame, fd, f, key_pos);
}

static int canonical_message(const ProtobufCMessageDescriptor *desc, const check_frame *frame,
                             obi_pb_reader *r, unsigned depth, obi_error **err);

/* The values of a packed repeated scalar field: a non-empty list of minimal varints (or fixed
 * values) each in the range of the field's type. */
static int canonical_packed(const ProtobufCFieldDescriptor *fd, const check_frame *frame,
                            const obi_pb_reader *r, const obi_pb_field *f, size_t key_pos,
                            obi_error **err)
{
    if (f->len == 0)
        return not_canonical(err, frame, fd, f, key_pos,
                             "an empty packed list, which protobuf-c does not write");
    obi_pb_reader values = obi_pb_reader_nested(r, f);
    obi_pb_field v = {.wire_type = obi_pb_wire_type_of(fd->type), .minimal = true};
    while (!obi_pb_reader_done(&values)) {
        size_t at = values.base + values.pos;
        int rc = obi_pb_read_value(&values, &v, err);
        if (rc < 0)
            return err ? prefix_field(err, rc, frame, fd, f, key_pos) : rc;
        if (!v.minimal)
            return not_canonical(err, frame, fd, f, key_pos,
                                 "the varint at byte offset %zu is longer than it needs to be", at);
        if (v.wire_type == OBI_PB_VARINT && !canonical_varint(fd->type, v.value))
            return not_canonical(err, frame, fd, f, key_pos,
                                 "the value at byte offset %zu is out of range for a %s", at,
                                 varint_type_name(fd->type));
    }
    return 0;
}

/* The value of a known field with the wire type protobuf-c writes, read into f. */
static int canonical_value(const ProtobufCFieldDescriptor *fd, const check_frame *frame,
                           const obi_pb_reader *r, const obi_pb_field *f, size_t key_pos,
                           unsigned depth, obi_error **err)
{
    bool implicit =
        fd->label == PROTOBUF_C_LABEL_NONE && !(fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF);
    if (implicit && is_default(fd, f))
        return not_canonical(err, frame, fd, f, key_pos,
                             "holds its default value, which protobuf-c does not write");
    if (f->wire_type == OBI_PB_VARINT)
        return canonical_varint(fd->type, f->value)
                   ? 0
                   : not_canonical(err, frame, fd, f, key_pos, "%llu is out of range for a %s",
                                   (unsigned long long)f->value, varint_type_name(fd->type));
    if (f->wire_type != OBI_PB_LEN)
        return 0;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (memchr(f->data, '\0', f->len))
            return not_canonical(err, frame, fd, f, key_pos, "string contains NUL");
        if (!obi_utf8_valid(f->data, f->len))
            return not_canonical(err, frame, fd, f, key_pos, "string is not valid UTF-8");
        return 0;
    case PROTOBUF_C_TYPE_BYTES:
        return 0;
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (depth >= OBI_PB_DEPTH_MAX)
            return not_canonical(err, frame, fd, f, key_pos, "messages nested deeper than %d",
                                 OBI_PB_DEPTH_MAX);
        check_frame child = {frame, fd, key_pos, f->data, f->len};
        obi_pb_reader nested = obi_pb_reader_nested(r, f);
        return canonical_message(fd->descriptor, &child, &nested, depth + 1, err);
    }
    default:
        return canonical_packed(fd, frame, r, f, key_pos, err);
    }
}

/* Whether a member of fd's oneof other than fd comes before key_pos in frame's message (read up
 * to there). Only oneof members pay for this, and only for the bytes before them. */
static bool oneof_member_before(const ProtobufCMessageDescriptor *desc,
                                const ProtobufCFieldDescriptor *fd, const check_frame *frame,
                                size_t key_pos)
{
    obi_pb_reader r = obi_pb_reader_of(frame->data, frame->len);
    obi_pb_field f;
    while (r.pos < key_pos && obi_pb_next(&r, &f, NULL) > 0) {
        const ProtobufCFieldDescriptor *other =
            protobuf_c_message_descriptor_get_field(desc, f.number);
        if (other && other != fd && (other->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            other->quantifier_offset == fd->quantifier_offset)
            return true;
    }
    return false;
}

static int canonical_message(const ProtobufCMessageDescriptor *desc, const check_frame *frame,
                             obi_pb_reader *r, unsigned depth, obi_error **err)
{
    const ProtobufCFieldDescriptor *previous = NULL;
    while (!obi_pb_reader_done(r)) {
        size_t key_pos = r->pos;
        obi_pb_field f;
        bool read = read_short_field(r, &f); /* as in check_message */
        int rc = read ? 0 : obi_pb_read_key(r, &f, err);
        if (rc < 0)
            return err ? prefix_message(err, rc, frame) : rc;
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field(desc, f.number);
        if (!fd)
            return not_canonical(err, frame, NULL, &f, key_pos, "not a field of %s", desc->name);
        if (!f.minimal)
            return not_canonical(err, frame, fd, &f, key_pos,
                                 "its key is a varint longer than it needs to be");
        /* protobuf-c packs repeated scalars of proto3 (PACKED) as one field, the other
         * repeated fields one entry after another. */
        bool packed = is_packable(fd) && (fd->flags & PROTOBUF_C_FIELD_FLAG_PACKED);
        bool repeats = fd->label == PROTOBUF_C_LABEL_REPEATED && !packed;
        obi_pb_wire_type want = packed ? OBI_PB_LEN : obi_pb_wire_type_of(fd->type);
        if (f.wire_type != want)
            return not_canonical(err, frame, fd, &f, key_pos,
                                 "wire type %u (%s), expected %u (%s%s)", f.wire_type,
                                 obi_pb_wire_type_name(f.wire_type), want,
                                 obi_pb_wire_type_name(want), packed ? ", packed" : "");
        if (previous && f.number < previous->id)
            return not_canonical(err, frame, fd, &f, key_pos,
                                 "comes after field %u (fields go in number order)", previous->id);
        if (fd == previous && !repeats)
            return not_canonical(err, frame, fd, &f, key_pos, "occurs more than once");
        if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            oneof_member_before(desc, fd, frame, key_pos))
            return not_canonical(
                err, frame, fd, &f, key_pos,
                "a second member of its oneof (protobuf-c keeps the last one only)");
        previous = fd;
        rc = read ? 0 : obi_pb_read_value(r, &f, err);
        if (rc < 0)
            return err ? prefix_field(err, rc, frame, fd, &f, key_pos) : rc;
        if (!f.minimal)
            return not_canonical(err, frame, fd, &f, key_pos,
                                 "its %s is a varint longer than it needs to be",
                                 f.wire_type == OBI_PB_LEN ? "length" : "value");
        rc = canonical_value(fd, frame, r, &f, key_pos, depth, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int obi_pb_check_canonical(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                           obi_error **err)
{
    obi_pb_reader r = obi_pb_reader_of(data, len);
    check_frame top = {NULL, NULL, 0, data, len};
    return canonical_message(desc, &top, &r, 0, err);
}

bool obi_pb_is_canonical(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len)
{
    return obi_pb_check_canonical(desc, data, len, NULL) == 0;
}
