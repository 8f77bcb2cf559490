/*
 * The protobuf wire format (protobuf.dev/programming-guides/encoding) where protobuf-c alone
 * does not do: the one reader of varints, keys and values that every codec uses, with errors
 * that name the byte offset; writing helpers for messages framed by hand; and two checks
 * driven by a message's field table.
 *
 * The field table of a message is the ProtobufCMessageDescriptor that protoc-c generates from
 * its .proto (proto/): each field's number, name, type (hence wire type), label (repeated or
 * not), oneof membership and, for embedded messages, their table. protobuf-c's pack and unpack
 * read the same table, so the checks here and the codec cannot disagree, and no table is kept
 * by hand: a field added to the .proto is checked as soon as it is there.
 *
 *  - obi_pb_check refuses, naming the field path ("environment_vars[2].key"), its number and
 *    the byte offset of its key, what protobuf-c's unpack lets through or refuses without
 *    saying where: truncated or overlong varints and lengths, field number 0, groups, a known
 *    field with the wrong wire type, string fields that are not UTF-8 or hold a NUL (protobuf-c
 *    checks neither and cuts a string at its first NUL), and the same in embedded messages.
 *    Unknown fields are skipped, as protobuf requires. obi_pb_unpack is check + unpack, the one
 *    way this project decodes a protobuf message.
 *  - obi_pb_check_canonical (and obi_pb_is_canonical, its yes or no) says whether bytes are
 *    exactly what protobuf-c's pack writes for some message (fields in number order, each at
 *    most once unless repeated, implicit defaults omitted, minimal varints, no unknown fields),
 *    and if not, which field departs where: a content-addressed store keeps such bytes as they
 *    came, since re-encoding them changes nothing (castore Directory).
 *
 * Adding a field to a message: add it to the .proto and to the model struct, and convert it in
 * the message's codec (e.g. builder/request_codec.c); checks and JSON names follow from the
 * .proto. Adding a message: list its .proto in proto/meson.build and decode it with
 * obi_pb_unpack (docs/ARCHITECTURE.md, "Protobuf").
 */
#ifndef OCIBUILD_PB_WIRE_H
#define OCIBUILD_PB_WIRE_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"

/* The longest varint (a 64-bit value), key (field number up to 2^29 - 1), length (32 bits, as
 * protobuf-c reads lengths) and, as room for a writer, key plus length. */
#define OBI_PB_VARINT_MAX 10
#define OBI_PB_KEY_MAX 5
#define OBI_PB_LENGTH_MAX 5
#define OBI_PB_LEN_HEADER_MAX (OBI_PB_KEY_MAX + OBI_PB_VARINT_MAX)
#define OBI_PB_FIELD_NUMBER_MAX 536870911u
/* Embedded messages deeper than this are refused (no schema here nests past 4). */
#define OBI_PB_DEPTH_MAX 64

typedef enum obi_pb_wire_type {
    OBI_PB_VARINT = 0,
    OBI_PB_I64 = 1,
    OBI_PB_LEN = 2,
    OBI_PB_SGROUP = 3,
    OBI_PB_EGROUP = 4,
    OBI_PB_I32 = 5,
} obi_pb_wire_type;

/* Reads one message's bytes. base is the byte offset of data[0] in the outermost message, so
 * that errors inside embedded messages give offsets a reader of the whole message can find. */
typedef struct obi_pb_reader {
    const uint8_t *data;
    size_t len;
    size_t pos;
    size_t base;
} obi_pb_reader;

/* One field as it stands on the wire. */
typedef struct obi_pb_field {
    uint32_t number;
    obi_pb_wire_type wire_type;
    size_t offset;       /* of its key, in the outermost message */
    uint64_t value;      /* VARINT, I64 and I32 (little-endian bits) */
    const uint8_t *data; /* LEN: its bytes, inside the reader's */
    size_t len;
    bool minimal; /* its key, value or length are all varints of the shortest form */
} obi_pb_field;

/* A reader at the start of data. */
static inline obi_pb_reader obi_pb_reader_of(const uint8_t *data, size_t len)
{
    return (obi_pb_reader){data, len, 0, 0};
}
/* A reader over the bytes of the LEN field f that parent just read. */
obi_pb_reader obi_pb_reader_nested(const obi_pb_reader *parent, const obi_pb_field *f);
static inline bool obi_pb_reader_done(const obi_pb_reader *r)
{
    return r->pos >= r->len;
}

/* One varint of at most 10 bytes whose value fits in 64 bits; *minimal (optional) says whether
 * it had no redundant trailing zero groups. -EINVAL: "truncated varint at byte offset N" or
 * "varint at byte offset N overflows 64 bits". */
int obi_pb_read_varint(obi_pb_reader *r, uint64_t *out, bool *minimal, obi_error **err);
/* A field's key: fills number, wire_type, offset and minimal. -EINVAL also for a key longer
 * than OBI_PB_KEY_MAX bytes (protobuf-c refuses those) and field number 0 or above
 * OBI_PB_FIELD_NUMBER_MAX. */
int obi_pb_read_key(obi_pb_reader *r, obi_pb_field *f, obi_error **err);
/* The value after the key just read into f, by its wire type: fills value or data and len,
 * and clears minimal if its varint was not. -EINVAL for a truncated value, a length longer
 * than OBI_PB_LENGTH_MAX bytes or beyond the message, a group (wire types 3 and 4; no message here
 * uses them) or wire types 6 and 7. Messages do not name the field: the caller knows what it is. */
int obi_pb_read_value(obi_pb_reader *r, obi_pb_field *f, obi_error **err);
/* Key and value: 1 with the next field, 0 at the end, or -EINVAL with the message of the two
 * above prefixed with "field N at byte offset M: " when the value is at fault. */
int obi_pb_next(obi_pb_reader *r, obi_pb_field *f, obi_error **err);

/* Writes v as a varint to out (OBI_PB_VARINT_MAX bytes of room); returns the bytes written. */
size_t obi_pb_put_varint(uint8_t *out, uint64_t v);
/* Writes the key of field `number` (1..OBI_PB_FIELD_NUMBER_MAX) with a wire type to out
 * (OBI_PB_KEY_MAX bytes of room); returns the bytes written. */
size_t obi_pb_put_key(uint8_t *out, uint32_t number, obi_pb_wire_type wire_type);
/* Writes the key and length of a LEN field whose len bytes follow (OBI_PB_LEN_HEADER_MAX bytes
 * of room); returns the bytes written. */
size_t obi_pb_put_len_header(uint8_t *out, uint32_t number, size_t len);

/* The wire type a field of this type is written with (packed repeated fields aside). */
obi_pb_wire_type obi_pb_wire_type_of(ProtobufCType type);
/* "varint", "64-bit", "length-delimited", "start group", "end group", "32-bit" or "invalid". */
const char *obi_pb_wire_type_name(unsigned wire_type);

/* Checks data as a `desc` message, as described at the top: 0, or -EINVAL with a message such
 * as "files[0].size (field 3) at byte offset 5: wire type 1 (64-bit), expected 0 (varint)".
 * Allocates nothing unless it fails. */
int obi_pb_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                 obi_error **err);
/* obi_pb_check, then protobuf-c's unpack; *out is freed with protobuf_c_message_free_unpacked.
 * -EINVAL naming the message, or -ENOMEM. */
int obi_pb_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                  ProtobufCMessage **out, obi_error **err);
/* Whether data is a `desc` message in the form protobuf-c's pack writes (see the top), with
 * embedded messages canonical too and strings as obi_pb_check wants them: 0, or -EINVAL naming
 * the first field that departs, its number and byte offset, and how ("directories[1] (field 1)
 * at byte offset 40: comes after field 2 (fields go in number order)"; also a key, value or
 * length in a longer varint than needed, a default written out, a field that is not repeated
 * written twice, two members of one oneof, an unknown field, a value out of its type's
 * range, an unpacked list or an empty packed one) or what obi_pb_check would say of malformed
 * input. Allocates nothing unless it fails and err is non-NULL. */
int obi_pb_check_canonical(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                           obi_error **err);
/* obi_pb_check_canonical without the why. */
bool obi_pb_is_canonical(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len);

/* Strict UTF-8, as proto3 wants of string fields: no overlong forms, no surrogates, nothing
 * above U+10FFFF. */
bool obi_utf8_valid(const uint8_t *s, size_t len);

#endif
