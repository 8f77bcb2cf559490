/*
 * Pins of an on-disk store (include/ocibuild/store_roots.h, "pins"): what running processes
 * rely on, kept as Nix keeps temporary roots, in one file per process (and store),
 * ROOT/temproots/TOKEN. The file is a log of pins taken and released, appended to under one
 * mutex by every pin of the process, locked exclusively while the process has a pin there,
 * compacted when released lines make up most of it, and removed with the process's last pin.
 * store_roots.c lists it for gc (obi_pin_file_read) and removes it once its owner is dead.
 * The protocol with gc.lock is docs/store.md's, "Garbage collection".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"
#include "ocibuild/store_roots.h"
#include "store_internal.h"

#define PIN_TOKEN_LEN 32            /* hex digits: 128 random bits */
#define PIN_LINE_MAX 128            /* "ID directory HEX\n" */
#define PIN_COMPACT_MIN (64u << 10) /* released bytes in a file before it is compacted */

/* ---- the file's format ---- */

/* A pin file is a log, one line per event:
 *
 *     ID blob HEX         pin number ID keeps this object (and its closure)
 *     ID directory HEX
 *     ID released         pin ID keeps nothing any more
 *
 * Its live records are those of pins not released. A line "blob HEX" without a number is an
 * older ocibuild's pin (a file per pin, removed with it): live with the file. A last line
 * without its newline is being written and is ignored (an unfinished release keeps more). */
typedef struct pin_record {
    uint64_t id;
    obi_store_ref ref;
} pin_record;

typedef struct pin_log {
    pin_record *records; /* live ones, in file order */
    size_t n_records;
} pin_log;

static int compare_ids(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* "ID " at the start of s: its length (0 without a number), *id set. */
static size_t parse_pin_id(const char *s, size_t len, uint64_t *id)
{
    size_t digits = 0;
    *id = 0;
    while (digits < len && digits < 19 && s[digits] >= '0' && s[digits] <= '9')
        *id = *id * 10 + (uint64_t)(s[digits++] - '0');
    return digits > 0 && digits < len && s[digits] == ' ' ? digits + 1 : 0;
}

/* Grows *array (of *capacity elements of size) to hold one more than n. */
static int grow(void **array, size_t *capacity, size_t n, size_t size)
{
    if (n < *capacity)
        return 0;
    size_t more = *capacity ? 2 * *capacity : 16;
    void *grown = realloc(*array, more * size);
    if (!grown)
        return -ENOMEM;
    *array = grown;
    *capacity = more;
    return 0;
}

static int pin_log_parse(const char *text, size_t len, const char *display, pin_log *out,
                         obi_error **err)
{
    cleanup_free pin_record *records = NULL;
    cleanup_free uint64_t *released = NULL;
    size_t n = 0, capacity = 0, n_released = 0, released_capacity = 0, line = 1;
    for (size_t at = 0; at < len; line++) {
        const char *start = text + at;
        const char *end = memchr(start, '\n', len - at);
        if (!end)
            break;
        size_t line_len = (size_t)(end - start);
        at += line_len + 1;
        if (line_len == 0)
            continue;
        uint64_t id;
        size_t skip = parse_pin_id(start, line_len, &id);
        if (skip && line_len - skip == 8 && !memcmp(start + skip, "released", 8)) {
            if (grow((void **)&released, &released_capacity, n_released, sizeof *released) < 0)
                return obi_error_oom(err);
            released[n_released++] = id;
            continue;
        }
        pin_record record = {id, {0}};
        const char *wrong = obi_store_ref_parse(start + skip, line_len - skip, &record.ref);
        if (wrong)
            return obi_error_set(err, -EINVAL,
                                 "%s: line %zu: expected \"ID blob HEX\", \"ID directory HEX\" "
                                 "or \"ID released\" (%s)",
                                 display, line, wrong);
        if (grow((void **)&records, &capacity, n, sizeof *records) < 0)
            return obi_error_oom(err);
        records[n++] = record;
    }
    if (n_released > 1)
        qsort(released, n_released, sizeof *released, compare_ids);
    size_t live = 0;
    for (size_t i = 0; i < n; i++)
        if (records[i].id == 0 || !n_released ||
            !bsearch(&records[i].id, released, n_released, sizeof *released, compare_ids))
            records[live++] = records[i];
    out->records = steal_pointer(&records);
    out->n_records = live;
    return 0;
}

/* Reads up to len bytes of fd from its start into a NUL-terminated buffer. */
static int read_fd_prefix(int fd, size_t len, const char *display, char **out, size_t *out_len,
                          obi_error **err)
{
    cleanup_free char *text = malloc(len + 1);
    if (!text)
        return obi_error_oom(err);
    ssize_t n = pread(fd, text, len, 0);
    size_t got = 0;
    while (n > 0 && (got += (size_t)n) < len)
        n = pread(fd, text + got, len - got, (off_t)got);
    if (n < 0)
        return obi_error_set_errno(err, errno, "read %s", display);
    text[got] = '\0';
    *out = steal_pointer(&text);
    *out_len = got;
    return 0;
}

int obi_pin_file_read(int fd, const char *path, obi_store_ref **refs_out, size_t *n_out,
                      obi_error **err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "stat %s", path);
    if ((uint64_t)st.st_size > OBI_ROOT_FILE_MAX)
        return obi_error_set(err, -EFBIG, "%s: larger than %u bytes", path, OBI_ROOT_FILE_MAX);
    cleanup_free char *text = NULL;
    size_t len = 0;
    int r = read_fd_prefix(fd, (size_t)st.st_size, path, &text, &len, err);
    pin_log log = {0};
    if (r == 0)
        r = pin_log_parse(text, len, path, &log, err);
    cleanup_free pin_record *records = log.records;
    if (r < 0)
        return r;
    obi_store_ref *refs = calloc(log.n_records ? log.n_records : 1, sizeof *refs);
    if (!refs)
        return obi_error_oom(err);
    for (size_t i = 0; i < log.n_records; i++)
        refs[i] = records[i].ref;
    *refs_out = refs;
    *n_out = log.n_records;
    return 0;
}

/* A compaction writes ".TOKEN" and renames it over "TOKEN" (pin_file_compact). */
bool obi_pin_file_is_compaction(const char *name)
{
    return name[0] == '.' && strlen(name + 1) == PIN_TOKEN_LEN &&
           strspn(name + 1, "0123456789abcdef") == PIN_TOKEN_LEN;
}

/* ---- the process's files ---- */

/* A process's pin file: every pin of the process on one store appends to it, under
 * pin_files_lock. It is made (under gc.lock shared, like every line added to it) by the first
 * object pinned, locked exclusively until the last pin of the process on that store is freed,
 * and then removed. A freed pin leaves a release line; when released lines make up most of the
 * file, it is compacted. */
typedef struct pin_file {
    struct pin_file *next;
    char *root;          /* the store's ROOT */
    char *path;          /* ROOT/temproots/TOKEN */
    int fd;              /* O_RDWR | O_APPEND, flock'ed exclusively */
    pid_t owner;         /* a child forked from owner makes a file of its own */
    unsigned users;      /* owner's pins that wrote into it and are not freed */
    uint64_t last_id;    /* the number of the last pin that joined */
    size_t len;          /* of the file */
    size_t dead;         /* bytes of released pins' lines and of release lines */
    size_t compact_from; /* dead bytes from which to try compacting again after a failure */
} pin_file;

struct obi_store_pin {
    char *root;     /* NULL: a store without roots, nothing to do */
    pin_file *file; /* the file it wrote into; NULL before its first object */
    uint64_t id;    /* its number in file */
    size_t bytes;   /* of its lines in file */
    unsigned holds; /* of the process's hold on gc.lock (obi_store_gc_hold) */
};

/* Every pin file this process made, and after a fork its parent's (owner tells them apart). */
static pthread_mutex_t pin_files_lock = PTHREAD_MUTEX_INITIALIZER;
static pin_file *pin_files;
static pthread_once_t pin_files_once = PTHREAD_ONCE_INIT;

/* A fork while another thread appends must not leave the child a lock nobody will release. */
static void pin_files_before_fork(void)
{
    pthread_mutex_lock(&pin_files_lock);
}

static void pin_files_after_fork(void)
{
    pthread_mutex_unlock(&pin_files_lock);
}

static void pin_files_init(void)
{
    pthread_atfork(pin_files_before_fork, pin_files_after_fork, pin_files_after_fork);
}

static void pin_files_enter(void)
{
    pthread_once(&pin_files_once, pin_files_init);
    pthread_mutex_lock(&pin_files_lock);
}

static void pin_files_leave(void)
{
    pthread_mutex_unlock(&pin_files_lock);
}

/* Creates and locks ROOT/temproots/<random token>; gc.lock is held shared by the caller, so
 * no gc can see it unlocked. */
static int pin_file_create(const char *root, pid_t owner, pin_file **out, obi_error **err)
{
    cleanup_free char *dir = obi_path_join(root, OBI_TEMP_ROOTS_DIR);
    if (!dir)
        return obi_error_oom(err);
    int r;
    bool dir_made = false; /* by the store's first pin: made when the create says it is not */
    for (int attempt = 0; attempt < 100; attempt++) {
        uint8_t random[PIN_TOKEN_LEN / 2];
        if (getrandom(random, sizeof random, 0) != (ssize_t)sizeof random)
            return obi_error_set_errno(err, errno, "getrandom");
        char token[PIN_TOKEN_LEN + 1];
        obi_hex_encode(random, sizeof random, token);
        cleanup_free char *path = obi_path_join(dir, token);
        if (!path)
            return obi_error_oom(err);
        int flags = O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC;
        cleanup_close int fd = open(path, flags, 0644);
        if (fd < 0 && errno == ENOENT && !dir_made) {
            if ((r = obi_mkdir_p(dir, 0755, err)) < 0)
                return r;
            dir_made = true;
            fd = open(path, flags, 0644);
        }
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            return obi_error_set_errno(err, errno, "create %s", path);
        if (flock(fd, LOCK_EX) < 0) {
            r = obi_error_set_errno(err, errno, "flock %s", path);
            unlink(path);
            return r;
        }
        pin_file *file = calloc(1, sizeof *file);
        if (!file || !(file->root = strdup(root))) {
            free(file);
            unlink(path);
            return obi_error_oom(err);
        }
        file->path = steal_pointer(&path);
        file->fd = steal_fd(&fd);
        file->owner = owner;
        *out = file;
        return 0;
    }
    return obi_error_set(err, -EEXIST, "create a pin file in %s: every name taken", dir);
}

/* Removes the file of the process's last pin on its store. */
static void pin_file_remove(pin_file *file)
{
    for (pin_file **at = &pin_files; *at; at = &(*at)->next) {
        if (*at == file) {
            *at = file->next;
            break;
        }
    }
    unlink(file->path);
    close(file->fd);
    free(file->root);
    free(file->path);
    free(file);
}

/* Appends line, or nothing: a failed write is cut off again, so the next line starts on a
 * line of its own. */
static int pin_file_append(pin_file *file, const char *line, size_t len, obi_error **err)
{
    int r = obi_write_all(file->fd, line, len);
    if (r < 0) {
        if (ftruncate(file->fd, (off_t)file->len) < 0) {
            /* the partial line stays, and the next one is appended to it: gc then stops at the
             * file, naming the line, and removes nothing */
        }
        return obi_error_set_errno(err, -r, "write %s", file->path);
    }
    file->len += len;
    return 0;
}

/* The process's file for pin's store, joining it (or making it) when pin has none yet, or
 * when pin was made before a fork: its lines in the parent's file are the parent's. */
static int pin_join_file(obi_store_pin *pin, obi_error **err)
{
    pid_t self = getpid();
    if (pin->file && pin->file->owner == self)
        return 0;
    pin_file *file = pin_files;
    while (file && (file->owner != self || strcmp(file->root, pin->root) != 0))
        file = file->next;
    if (!file) {
        int r = pin_file_create(pin->root, self, &file, err);
        if (r < 0)
            return r;
        file->next = pin_files;
        pin_files = file;
    }
    file->users++;
    pin->file = file;
    pin->id = ++file->last_id;
    pin->bytes = 0;
    return 0;
}

static int format_pin_line(char *line, size_t size, uint64_t id, const obi_store_ref *ref)
{
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&ref->digest, hex);
    return snprintf(line, size, "%" PRIu64 " %s %s\n", id, obi_store_object_kind_name(ref->kind),
                    hex);
}

/* pin_file_compact's work, under gc.lock. */
static int pin_file_rewrite(pin_file *file, obi_error **err)
{
    int r;
    cleanup_free char *text = NULL;
    size_t len = 0;
    if ((r = read_fd_prefix(file->fd, file->len, file->path, &text, &len, err)) < 0)
        return r;
    pin_log log = {0};
    r = pin_log_parse(text, len, file->path, &log, err);
    cleanup_free pin_record *records = log.records;
    if (r < 0)
        return r;
    cleanup_buf obi_buf live = OBI_BUF_INIT;
    for (size_t i = 0; i < log.n_records; i++) {
        char line[PIN_LINE_MAX];
        int line_len = format_pin_line(line, sizeof line, records[i].id, &records[i].ref);
        if (obi_buf_append(&live, line, (size_t)line_len) < 0)
            return obi_error_oom(err);
    }
    const char *token = strrchr(file->path, '/') + 1;
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%.*s.%s", (int)(token - file->path), file->path, token) < 0)
        return obi_error_oom(err);
    cleanup_close int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "create %s", tmp);
    r = flock(fd, LOCK_EX | LOCK_NB) < 0 ? -errno : obi_write_all(fd, live.data, live.len);
    if (r == 0 && rename(tmp, file->path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return obi_error_set_errno(err, -r, "compact %s into %s", file->path, tmp);
    }
    close(file->fd);
    file->fd = steal_fd(&fd);
    file->len = live.len;
    file->dead = 0;
    file->compact_from = 0;
    return 0;
}

/* Rewrites file with the lines of its live pins only: into ROOT/temproots/.TOKEN, locked,
 * renamed over it. Under gc.lock shared, taken without waiting (while gc runs: next time),
 * so no gc reads the file meanwhile. On failure the file stays as it was. */
static int pin_file_compact(pin_file *file, obi_error **err)
{
    int r = obi_store_gc_hold(file->root, false, err);
    if (r < 0)
        return r;
    r = pin_file_rewrite(file, err);
    obi_store_gc_release(file->root);
    return r;
}

/* Compacts when released lines are most of the file, and at least PIN_COMPACT_MIN bytes:
 * each compaction rewrites at most as many bytes as were appended since the last one. */
static void pin_file_maybe_compact(pin_file *file)
{
    if (file->dead < PIN_COMPACT_MIN || file->dead < file->len - file->dead ||
        file->dead < file->compact_from)
        return;
    if (pin_file_compact(file, NULL) < 0)
        file->compact_from = 2 * file->dead; /* a running gc or a full disk: not at every free */
}

/* Takes pin's lines out of the live ones: a release line, or the file with its last pin. A
 * release line that cannot be written leaves the objects pinned until the file goes. */
static void pin_leave_file(obi_store_pin *pin)
{
    pin_files_enter();
    pin_file *file = pin->file;
    if (file->owner == getpid()) {
        if (--file->users == 0) {
            pin_file_remove(file);
        } else {
            char line[32];
            int len = snprintf(line, sizeof line, "%" PRIu64 " released\n", pin->id);
            if (pin_file_append(file, line, (size_t)len, NULL) == 0) {
                file->dead += pin->bytes + (size_t)len;
                pin_file_maybe_compact(file);
            }
        }
    }
    pin_files_leave();
    pin->file = NULL;
}

int obi_store_pin_new(obi_store *store, obi_store_pin **out, obi_error **err)
{
    obi_store_pin *pin = calloc(1, sizeof *pin);
    if (!pin)
        return obi_error_oom(err);
    if (store->local_root && !(pin->root = strdup(store->local_root))) {
        free(pin);
        return obi_error_oom(err);
    }
    *out = pin;
    return 0;
}

int obi_store_pin_hold_gc(obi_store_pin *pin, obi_error **err)
{
    if (!pin->root)
        return 0;
    int r = obi_store_gc_hold(pin->root, true, err);
    if (r == 0)
        pin->holds++;
    return r;
}

void obi_store_pin_release_gc(obi_store_pin *pin)
{
    if (!pin->root || pin->holds == 0)
        return;
    pin->holds--;
    obi_store_gc_release(pin->root);
}

int obi_store_pin_add(obi_store_pin *pin, const obi_node *node, obi_error **err)
{
    obi_store_ref ref;
    if (!pin->root || !obi_store_ref_of_node(node, &ref))
        return 0;
    int r = obi_store_pin_hold_gc(pin, err);
    if (r < 0)
        return r;
    pin_files_enter();
    r = pin_join_file(pin, err);
    if (r == 0) {
        char line[PIN_LINE_MAX];
        int len = format_pin_line(line, sizeof line, pin->id, &ref);
        r = pin_file_append(pin->file, line, (size_t)len, err);
        if (r == 0)
            pin->bytes += (size_t)len;
    }
    pin_files_leave();
    obi_store_pin_release_gc(pin);
    return r;
}

void obi_store_pin_free(obi_store_pin *pin)
{
    if (!pin)
        return;
    if (pin->file)
        pin_leave_file(pin);
    while (pin->root && pin->holds > 0)
        obi_store_pin_release_gc(pin);
    free(pin->root);
    free(pin);
}
