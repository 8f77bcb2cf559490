/*
 * Nix's serve protocol, the one `nix-store --serve --write` speaks on stdin/stdout over ssh
 * (versions 2.4 to 2.7, as Nix 2.8's build hook and Hydra's queue runner use them; docs/farm.md
 * "The protocol"): framing, the requests of each command decoded into structs, the replies
 * encoded, and the export format (`nix-store --export`) that ImportPaths and ExportPaths carry.
 *
 * Framing: every number is a u64 little-endian; a string is its length as a number, the bytes,
 * then zero bytes up to a multiple of 8; a list is a count then its elements. Decoding is
 * strict and every refusal names the byte offset from the start of the stream and the field:
 *   "serve: offset 48: AddToStoreNar.references[1]: '/tmp/x' is not a store path"
 * Reads and writes go through a buffered reader and writer over a file descriptor or memory
 * (unit tests and the fuzzer). What the commands do is the server loop's business (nix_serve.h);
 * this module only knows the bytes.
 */
#ifndef OCIBUILD_SERVE_PROTOCOL_H
#define OCIBUILD_SERVE_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/buf.h"
#include "ocibuild/derivation.h"
#include "ocibuild/error.h"
#include "ocibuild/sha256.h"

#define OBI_SERVE_MAGIC_1 0x390c9debu /* client hello */
#define OBI_SERVE_MAGIC_2 0x5452eecbu /* server hello */
#define OBI_SERVE_EXPORT_MAGIC 0x4558494eu
/* The version this side speaks (major 2 in the high byte, minor in the low byte). */
#define OBI_SERVE_VERSION ((2u << 8) | 7u)
/* The oldest client minor version served (Nix 2.8's own client needs 4 or more). */
#define OBI_SERVE_MIN_CLIENT_MINOR 4u
#define OBI_SERVE_MINOR(version) ((unsigned)((version)&0xffu))

typedef enum obi_serve_command {
    OBI_SERVE_QUERY_VALID_PATHS = 1,
    OBI_SERVE_QUERY_PATH_INFOS = 2,
    OBI_SERVE_DUMP_STORE_PATH = 3,
    OBI_SERVE_IMPORT_PATHS = 4,
    OBI_SERVE_EXPORT_PATHS = 5,
    OBI_SERVE_BUILD_PATHS = 6,
    OBI_SERVE_QUERY_CLOSURE = 7,
    OBI_SERVE_BUILD_DERIVATION = 8,
    OBI_SERVE_ADD_TO_STORE_NAR = 9,
} obi_serve_command;

/* BuildResult::Status, in Nix's order (never renumbered). */
typedef enum obi_serve_build_status {
    OBI_SERVE_BUILT = 0,
    OBI_SERVE_SUBSTITUTED = 1,
    OBI_SERVE_ALREADY_VALID = 2,
    OBI_SERVE_PERMANENT_FAILURE = 3,
    OBI_SERVE_INPUT_REJECTED = 4,
    OBI_SERVE_OUTPUT_REJECTED = 5,
    OBI_SERVE_TRANSIENT_FAILURE = 6,
    OBI_SERVE_CACHED_FAILURE = 7,
    OBI_SERVE_TIMED_OUT = 8,
    OBI_SERVE_MISC_FAILURE = 9,
    OBI_SERVE_DEPENDENCY_FAILED = 10,
    OBI_SERVE_LOG_LIMIT_EXCEEDED = 11,
    OBI_SERVE_NOT_DETERMINISTIC = 12,
} obi_serve_build_status;

/* Limits on what one request may make this side hold (the peer is authenticated, not trusted):
 * a store path string, any other string, the elements of one list, and the bytes of all strings
 * of one request together (obi_serve_reader_set_budget starts a new request). */
#define OBI_SERVE_MAX_PATH_LEN 4096
#define OBI_SERVE_MAX_STRING (64u * 1024 * 1024)
#define OBI_SERVE_MAX_LIST (1u << 20)
#define OBI_SERVE_REQUEST_BUDGET (256u * 1024 * 1024)

/* ---- reading ---- */

typedef struct obi_serve_reader obi_serve_reader;

/* Reads from fd (borrowed) through a 64 KiB buffer. */
int obi_serve_reader_new_fd(int fd, obi_serve_reader **out, obi_error **err);
/* Reads len bytes of data (borrowed; must outlive the reader). */
int obi_serve_reader_new_mem(const void *data, size_t len, obi_serve_reader **out, obi_error **err);
void obi_serve_reader_free(obi_serve_reader *reader);
static inline void obi_serve_reader_freep(obi_serve_reader **r)
{
    obi_serve_reader_free(*r);
}
#define cleanup_serve_reader __attribute__((cleanup(obi_serve_reader_freep)))

/* Bytes consumed since the start of the stream. */
uint64_t obi_serve_reader_offset(const obi_serve_reader *reader);
/* Starts a request: its strings may hold `bytes` bytes together (OBI_SERVE_REQUEST_BUDGET
 * for the server; a string past it is refused with -E2BIG before it is allocated). */
void obi_serve_reader_set_budget(obi_serve_reader *reader, uint64_t bytes);

/* Each reader below names `field` in its errors; a stream that ends early is -EPIPE ("ends at
 * offset N, in the middle of FIELD"). */
int obi_serve_read_u64(obi_serve_reader *reader, const char *field, uint64_t *out, obi_error **err);
/* A number that must be 0 or 1. */
int obi_serve_read_bool(obi_serve_reader *reader, const char *field, bool *out, obi_error **err);
/* A string of at most max bytes, without NUL bytes, with zero padding; *out is NUL-terminated
 * (caller frees), *len (optional) its length. */
int obi_serve_read_string(obi_serve_reader *reader, const char *field, size_t max, char **out,
                          size_t *len, obi_error **err);
/* Exactly len raw bytes (NAR contents): no framing. */
int obi_serve_read_raw(obi_serve_reader *reader, const char *field, void *buf, size_t len,
                       obi_error **err);
/* A string that must be a store path (obi_nix_store_path_parse). */
int obi_serve_read_store_path(obi_serve_reader *reader, const char *field, char **out,
                              obi_error **err);
/* A set of store paths (count, then paths): sorted bytewise, duplicates dropped as Nix's
 * std::set does; NULL-terminated (obi_strv_free). */
int obi_serve_read_store_paths(obi_serve_reader *reader, const char *field, char ***out,
                               size_t *n_out, obi_error **err);
/* A list of strings in the order sent; NULL-terminated. */
int obi_serve_read_strings(obi_serve_reader *reader, const char *field, size_t max_each,
                           char ***out, size_t *n_out, obi_error **err);
/* The next command number: 1 with it, 0 when the stream ended cleanly before it (the client
 * is done), negative when it ended in the middle of the number. */
int obi_serve_read_command(obi_serve_reader *reader, uint64_t *command, obi_error **err);

/* ---- writing ---- */

typedef struct obi_serve_writer obi_serve_writer;

/* Writes to fd (borrowed) through a 64 KiB buffer; nothing is sent before a flush or a full
 * buffer. */
int obi_serve_writer_new_fd(int fd, obi_serve_writer **out, obi_error **err);
/* Appends to buf (borrowed). */
int obi_serve_writer_new_buf(obi_buf *buf, obi_serve_writer **out, obi_error **err);
void obi_serve_writer_free(obi_serve_writer *writer);
static inline void obi_serve_writer_freep(obi_serve_writer **w)
{
    obi_serve_writer_free(*w);
}
#define cleanup_serve_writer __attribute__((cleanup(obi_serve_writer_freep)))

/* Bytes written (flushed or not) since the start. */
uint64_t obi_serve_writer_offset(const obi_serve_writer *writer);
int obi_serve_write_u64(obi_serve_writer *writer, uint64_t value, obi_error **err);
int obi_serve_write_bytes(obi_serve_writer *writer, const void *data, size_t len, obi_error **err);
int obi_serve_write_string(obi_serve_writer *writer, const char *s, obi_error **err);
/* count, then each string (n strings of strv). */
int obi_serve_write_strings(obi_serve_writer *writer, char *const *strv, size_t n, obi_error **err);
/* Raw bytes, no framing (NAR contents). */
int obi_serve_write_raw(obi_serve_writer *writer, const void *data, size_t len, obi_error **err);
int obi_serve_writer_flush(obi_serve_writer *writer, obi_error **err);

/* ---- the hello ---- */

/* Server side: reads the client's magic, writes magic 2 and OBI_SERVE_VERSION, flushes, reads
 * the client's version. A client of another major version or older than
 * OBI_SERVE_MIN_CLIENT_MINOR is refused; a newer minor is served as OBI_SERVE_VERSION. */
int obi_serve_handshake(obi_serve_reader *reader, obi_serve_writer *writer,
                        unsigned *client_version, obi_error **err);

/* ---- path infos (AddToStoreNar, ImportPaths, QueryPathInfos, ExportPaths) ---- */

typedef struct obi_serve_path_info {
    char *path;
    char *deriver;     /* "" when unknown */
    char **references; /* sorted, unique, NULL-terminated */
    size_t n_references;
    uint8_t nar_hash[OBI_SHA256_LEN];
    uint64_t nar_size;
    uint64_t registration_time;
    bool ultimate;
    char **sigs; /* NULL-terminated */
    size_t n_sigs;
    char *ca; /* "" or a content address ("fixed:r:sha256:<nixbase32>", "text:sha256:...") */
} obi_serve_path_info;

obi_serve_path_info *obi_serve_path_info_new(void);
void obi_serve_path_info_free(obi_serve_path_info *info);
static inline void obi_serve_path_info_freep(obi_serve_path_info **i)
{
    obi_serve_path_info_free(*i);
}
#define cleanup_serve_path_info __attribute__((cleanup(obi_serve_path_info_freep)))

/* AddToStoreNar's fields after the command number, up to the NAR (which follows, nar_size
 * bytes): path, deriver, narHash (sha256: hex, nixbase32 or base64, with or without
 * "sha256:", or SRI "sha256-<base64>"), references, registrationTime, narSize (not 0),
 * ultimate, sigs, ca. */
int obi_serve_read_add_to_store_nar(obi_serve_reader *reader, obi_serve_path_info **out,
                                    obi_error **err);
/* ImportPaths, per path: the number before each NAR: 1 when a NAR follows (returns 1), 0 at
 * the end of the list (returns 0); anything else is refused. */
int obi_serve_read_import_marker(obi_serve_reader *reader, obi_error **err);
/* ImportPaths, per path: what follows the NAR: the export magic, path, references, deriver
 * and the legacy signature flag (0, or 1 then a signature that is read and dropped). Fills
 * path, deriver and references of a fresh info. */
int obi_serve_read_export_trailer(obi_serve_reader *reader, obi_serve_path_info **out,
                                  obi_error **err);
/* ExportPaths, per path, after the NAR: the export magic, path, references, deriver, 0. The
 * 1 before each NAR and the 0 after the last are the caller's (obi_serve_write_u64). */
int obi_serve_write_export_trailer(obi_serve_writer *writer, const obi_serve_path_info *info,
                                   obi_error **err);
/* One entry of QueryPathInfos' reply: path, deriver, references, download size (= NAR size),
 * NAR size, and for clients of minor 4 or more the NAR hash ("sha256:<nixbase32>"), ca and
 * sigs. The reply ends with an empty string (the caller's). */
int obi_serve_write_path_info(obi_serve_writer *writer, unsigned client_version,
                              const obi_serve_path_info *info, obi_error **err);

/* ---- builds ---- */

typedef struct obi_serve_build_options {
    uint64_t max_silent_time; /* seconds; 0: none */
    uint64_t build_timeout;   /* seconds; 0: none */
    uint64_t max_log_size;    /* bytes; 0: none (minor 2+) */
    uint64_t build_repeat;    /* extra rounds (minor 3+) */
    bool enforce_determinism; /* minor 3+ */
    bool keep_failed;         /* minor 7+ */
} obi_serve_build_options;

/* The build settings that follow BuildDerivation's and BuildPaths' paths, as many as the
 * client's version has. */
int obi_serve_read_build_options(obi_serve_reader *reader, unsigned client_version,
                                 obi_serve_build_options *out, obi_error **err);

typedef struct obi_serve_build_request {
    char *drv_path;      /* "/nix/store/<hash>-<name>.drv" */
    obi_derivation *drv; /* no input derivations; outputs, inputs and env sorted */
    obi_serve_build_options options;
} obi_serve_build_request;

void obi_serve_build_request_free(obi_serve_build_request *req);
static inline void obi_serve_build_request_freep(obi_serve_build_request **r)
{
    obi_serve_build_request_free(*r);
}
#define cleanup_serve_build_request __attribute__((cleanup(obi_serve_build_request_freep)))

/* BuildDerivation after the command number: the .drv path, the BasicDerivation (outputs with
 * path, hash algorithm and hash; input sources; platform; builder; args; env) and the build
 * options. Outputs need a store path each (floating content-addressed outputs are refused),
 * names unique and valid, hash algorithms as in .drv files; env keys unique. */
int obi_serve_read_build_derivation(obi_serve_reader *reader, unsigned client_version,
                                    obi_serve_build_request **out, obi_error **err);

typedef struct obi_serve_realisation {
    char *id;   /* DrvOutput: "sha256:<hex>!<output name>" */
    char *json; /* Realisation as Nix's JSON: {"dependentRealisations":{},"id":..,..} */
} obi_serve_realisation;

typedef struct obi_serve_build_result {
    obi_serve_build_status status;
    char *error_msg; /* "" on success */
    uint64_t times_built;
    bool is_non_deterministic;
    uint64_t start_time;
    uint64_t stop_time;
    obi_serve_realisation *built_outputs; /* sorted by id */
    size_t n_built_outputs;
} obi_serve_build_result;

void obi_serve_build_result_clear(obi_serve_build_result *result);
/* status, error message; for minor 3+ times built, non-determinism, start and stop time; for
 * minor 6+ the built outputs (a map DrvOutput -> Realisation). Nix 2.8 itself writes the
 * built outputs to every client (a misplaced parenthesis); this follows the protocol's
 * version rule instead (docs/farm.md). */
int obi_serve_write_build_result(obi_serve_writer *writer, unsigned client_version,
                                 const obi_serve_build_result *result, obi_error **err);

/* BuildPaths after the command number: the paths ("<path>" or "<drv path>!<outputs>"), then
 * the build options. *paths_out is NULL-terminated. */
int obi_serve_read_build_paths(obi_serve_reader *reader, unsigned client_version, char ***paths_out,
                               size_t *n_out, obi_serve_build_options *options, obi_error **err);

/* "sha256:" + nixbase32, as QueryPathInfos prints NAR hashes; caller frees. */
char *obi_serve_nar_hash_string(const uint8_t hash[OBI_SHA256_LEN]);
/* Parses a sha256 hash in any of Nix's spellings (see AddToStoreNar above). */
int obi_serve_parse_sha256(const char *text, uint8_t out[OBI_SHA256_LEN], obi_error **err);

#endif
