/*
 * Ingest (include/ocibuild/ingest.h): walks a filesystem tree depth first, in name order, with
 * the iterative walk of fs_walk.h (O(1) descriptors and stack, up to OBI_DIRECTORY_MAX_DEPTH
 * levels). Each entry is classified with fstatat(AT_SYMLINK_NOFOLLOW) and then opened with
 * O_NOFOLLOW relative to its directory's descriptor; the opened file is checked to be the same
 * inode, so a name swapped for a symlink or a fifo mid-walk is an error, never followed or
 * blocked on. The Directory being built for each level of the current path is kept on a stack.
 * Files are hashed before they are written wherever the store may have them: a small file (up
 * to 64 KiB) always, in memory; a large one when the store had the blob asked for last (a
 * re-import), in a pass over the file (after a miss, only every 16th small file asks the store).
 * A blob the store has is not written at all; a missing one is copied into a writer told its
 * digest (the on-disk store prepares it beside its final name), and the writer's own hash of
 * what it wrote must match (else the file changed: an error). Other large files stream through
 * the read buffer into a writer in one pass. Every byte goes to the optional reference scanner
 * once. Blobs are finished as pending (no fsync per file); directories are put leaves first
 * into one putter. At the end one barrier (obi_blob_service_sync) makes every blob durable, and
 * only then are the directories committed (docs/store.md, "Crash safety").
 * With obi_ingest_options.adopt (a rootful build's outputs, into the on-disk store), a file
 * the store can take as it is (obi_local_blob_adopt_prepare: one link, the blobs' filesystem,
 * no xattrs, no writer left; it is then the store owner's, 0444) is hashed and, when the store
 * lacks it, linked in as a pending blob itself: no copy, no new inode (docs/store.md,
 * "Adopting a build's outputs"). Any other file is ingested as above.
 *
 * Into the on-disk store (whose blob service is safe to use from several threads), with no
 * reference scanner, files are ingested on every core: the walk opens and checks each file and
 * hands it to a small pool of worker threads through a short queue, taking the file itself when
 * the queue is full; each thread has its own read buffer. A file's FileNode is then a
 * placeholder until its thread is done, so a directory the walk left is put later, in the
 * order the walk left them (children first), once every file in its tree is in (the walking
 * thread fills in what is done as it goes: what is held stays about what is in flight). The
 * first failure in walk order is the one reported, whichever thread met it, as a walk on one
 * thread would have; files after it that no thread started are skipped. OBI_INGEST_THREADS=N
 * sets the number of worker threads (0: none; default: the CPUs this process may use, minus
 * one, at most 3).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/blake3.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/fs_walk.h"
#include "ocibuild/ingest.h"
#include "store_internal.h"

#define INGEST_READ_SIZE (1 << 20)
/* Files up to this size are read whole first and not written when the store has them. */
#define INGEST_SMALL_FILE (64 << 10)
/* After a miss, small files are written without asking the store, except every this many. */
#define INGEST_ASK_EVERY 16
/* Worker threads at most, and files opened and waiting for one at most. */
#define POOL_MAX_WORKERS 3
#define POOL_QUEUE 8

typedef struct ingest ingest;

/* What one thread needs to ingest a file's contents: its own read buffer, and what it last
 * learned of the store (the hash-first heuristic). */
typedef struct ingest_lane {
    ingest *ig;
    uint8_t *buf;       /* INGEST_READ_SIZE bytes */
    const char *path;   /* the file's path, for messages */
    bool expect_stored; /* the store had the last blob asked for: hash large files first */
    unsigned unasked;   /* small files written without asking since the last miss */
} ingest_lane;

/* A regular file the walk opened and checked, ingested by whichever thread takes it. Its
 * FileNode is dir->files[index], a placeholder until the end. */
typedef struct file_job {
    uint64_t seq;   /* walk order */
    int fd;         /* closed once ingested */
    struct stat st; /* its fstat when opened */
    char *path;     /* freed once ingested */
    obi_directory *dir;
    size_t index;
    obi_digest digest;
    uint64_t size;
    int r;
    obi_error *error; /* r < 0 */
    bool done;        /* set (release) once the fields above are final */
} file_job;

/* A directory left by the walk while files in its tree may not be in yet: put once they are
 * (every job up to last_seq). Its DirectoryNode is parent->directories[index] (no parent: the
 * root). */
typedef struct deferred_directory {
    obi_directory *dir;
    char *path;
    obi_directory *parent;
    size_t index;
    uint64_t last_seq;
} deferred_directory;

typedef struct ingest_pool {
    pthread_mutex_t lock; /* guards the queue, running and stopping; failed_seq's writes */
    pthread_cond_t queued, idle;
    file_job *queue[POOL_QUEUE];
    size_t head, count, running;
    /* the first job (in walk order) that failed, UINT64_MAX: none; read without the lock */
    uint64_t failed_seq;
    bool stopping;
    pthread_t threads[POOL_MAX_WORKERS];
    ingest_lane lanes[POOL_MAX_WORKERS];
    size_t n_threads;
    /* the walking thread's alone: jobs and directories in walk order, those before harvested
     * and first_dir done with (their entries NULL) */
    file_job **jobs;
    size_t n_jobs, jobs_cap, harvested;
    deferred_directory *dirs;
    size_t n_dirs, dirs_cap, first_dir;
} ingest_pool;

struct ingest {
    obi_blob_service *blobs;
    obi_directory_service *directories;
    obi_directory_putter *putter; /* opened at the first directory */
    obi_refscan_state *refscan;
    bool adopt;            /* files may become blobs as they are (obi_ingest_options.adopt) */
    ingest_lane lane;      /* the walking thread's */
    ingest_pool *pool;     /* NULL: every file on the walking thread, directories put at once */
    const char *root_name; /* the root node's name */
    const char *path;      /* the current entry's path, for messages */
    obi_directory **stack; /* stack[d]: the Directory being filled at depth d */
    size_t stack_cap;
    obi_node root;
    const obi_progress *progress;  /* NULL: none */
    pthread_mutex_t progress_lock; /* the pool's threads report too, one at a time */
    uint64_t bytes, files;         /* done so far, for progress */
};

static void report_progress(ingest *ig, uint64_t more_bytes, uint64_t more_files)
{
    if (!ig->progress)
        return;
    pthread_mutex_lock(&ig->progress_lock);
    ig->bytes += more_bytes;
    ig->files += more_files;
    obi_progress_report(ig->progress, ig->bytes, ig->files);
    pthread_mutex_unlock(&ig->progress_lock);
}

static const char *file_type_name(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFIFO:
        return "fifo";
    case S_IFSOCK:
        return "socket";
    case S_IFCHR:
        return "character device";
    case S_IFBLK:
        return "block device";
    default:
        return "unknown file type";
    }
}

/* Checks that fd (opened by name) is still the inode fstatat saw. */
static int check_same_inode(const char *path, int fd, const struct stat *before, struct stat *after,
                            obi_error **err)
{
    if (fstat(fd, after) < 0)
        return obi_error_set_errno(err, errno, "%s: fstat", path);
    if (after->st_dev != before->st_dev || after->st_ino != before->st_ino ||
        (after->st_mode & S_IFMT) != (before->st_mode & S_IFMT))
        return obi_error_set(err, -EAGAIN, "%s: changed while being ingested", path);
    return 0;
}

/* Writes the file's blob: the head already in lane->buf, then (when the head filled more than a
 * small file) the rest of fd, fed to the reference scanner as it goes. *size counts the bytes.
 * expected: the digest of the head when it is the whole file (NULL: not known). */
static int write_blob(ingest_lane *lane, int fd, size_t head, const obi_digest *expected,
                      uint64_t *size, obi_digest *digest, obi_error **err)
{
    const char *path = lane->path;
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = expected ? obi_blob_open_write_expecting(lane->ig->blobs, expected, &writer, err)
                     : obi_blob_open_write(lane->ig->blobs, &writer, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    r = obi_blob_write(writer, lane->buf, head, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    while (head > INGEST_SMALL_FILE) {
        ssize_t n = read(fd, lane->buf, INGEST_READ_SIZE);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return obi_error_set_errno(err, errno, "%s: read at offset %llu", path,
                                       (unsigned long long)*size);
        }
        if (n == 0)
            break;
        r = obi_blob_write(writer, lane->buf, (size_t)n, err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s", path);
        if (lane->ig->refscan)
            obi_refscan_feed(lane->ig->refscan, lane->buf, (size_t)n);
        *size += (uint64_t)n;
        report_progress(lane->ig, (uint64_t)n, 0);
    }
    r = obi_blob_finish_pending(writer, digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    return 0;
}

/* ---- hashing a large file through a guarded mapping ---- */

/* A re-import hashes large files through read-only mappings of the page cache instead of
 * read()ing them into a buffer: that copy was most of its kernel time (perf of a 1 GiB
 * re-import: _copy_to_iter 42% of the CPU). A file truncated under a mapping faults with SIGBUS;
 * the thread hashing it catches that (a handler installed once per process, which hands every
 * other SIGBUS to the disposition it replaced) and the file fails as "changed while being
 * ingested". With a reference scanner (it would read the mapping outside the guard), or if
 * no handler can be installed, files are read as before. */
#define MAP_WINDOW (16u << 20)

typedef struct map_guard {
    sigjmp_buf jump;
    const uint8_t *start, *end;
} map_guard;

static __thread map_guard *volatile active_guard;
static struct sigaction previous_sigbus; /* the disposition ours replaced */

static void on_sigbus(int sig, siginfo_t *info, void *context)
{
    map_guard *guard = active_guard;
    const uint8_t *addr = info->si_addr;
    if (guard && info->si_code > 0 && addr >= guard->start && addr < guard->end)
        siglongjmp(guard->jump, 1);
    /* not a fault in a guarded mapping: as if this handler were not there */
    if ((previous_sigbus.sa_flags & SA_SIGINFO) && previous_sigbus.sa_sigaction) {
        previous_sigbus.sa_sigaction(sig, info, context);
        return;
    }
    if (previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN) {
        previous_sigbus.sa_handler(sig);
        return;
    }
    /* the default: a fault happens again on return and ends the process; a sent one is resent */
    signal(SIGBUS, SIG_DFL);
    if (info->si_code <= 0)
        raise(sig);
}

/* Whether a truncated mapping would be caught here: our handler is the one, installed now if
 * it is not (first use, or someone installed another since: we then hand everything not ours
 * to that one). */
static bool sigbus_guard_ready(void)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    struct sigaction now;
    bool ours = sigaction(SIGBUS, NULL, &now) == 0;
    if (ours && (!(now.sa_flags & SA_SIGINFO) || now.sa_sigaction != on_sigbus)) {
        struct sigaction action = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO | SA_NODEFER};
        sigemptyset(&action.sa_mask);
        previous_sigbus = now;
        /* and it took (a sanitizer's runtime may keep its own) */
        ours = sigaction(SIGBUS, &action, NULL) == 0 && sigaction(SIGBUS, NULL, &now) == 0 &&
               (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_sigbus;
    }
    pthread_mutex_unlock(&lock);
    return ours;
}

/* Hashes len mapped bytes into hasher: false if they faulted (the file shrank under us). */
static bool hash_guarded(obi_blake3_hasher *hasher, const uint8_t *map, size_t len)
{
    map_guard guard = {.start = map, .end = map + len};
    if (sigsetjmp(guard.jump, 0) != 0) {
        active_guard = NULL;
        return false;
    }
    active_guard = &guard;
    obi_blake3_update(hasher, map, len);
    active_guard = NULL;
    return true;
}

/* Hashes bytes [0, st_size) of fd into hasher through mappings of MAP_WINDOW bytes: 1 when done
 * (*size = st_size; the head read before was counted in *size already), 0 when no mapping can
 * be used (nothing hashed: the caller reads instead), negative when the file shrank under us. */
static int hash_mapped(ingest_lane *lane, int fd, uint64_t st_size, uint64_t *size,
                       obi_blake3_hasher *hasher, obi_error **err)
{
    if (!sigbus_guard_ready())
        return 0;
    uint64_t counted = *size;
    for (uint64_t offset = 0; offset < st_size; offset += MAP_WINDOW) {
        size_t len = st_size - offset < MAP_WINDOW ? (size_t)(st_size - offset) : MAP_WINDOW;
        void *map = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, (off_t)offset);
        if (map == MAP_FAILED) {
            if (offset == 0)
                return 0;
            return obi_error_set_errno(err, errno, "%s: map at offset %llu", lane->path,
                                       (unsigned long long)offset);
        }
        bool hashed = hash_guarded(hasher, map, len);
        munmap(map, len);
        if (!hashed)
            return obi_error_set(err, -EAGAIN,
                                 "%s: changed while being ingested (shorter than the %llu bytes "
                                 "it had when opened)",
                                 lane->path, (unsigned long long)st_size);
        uint64_t end = offset + len;
        if (end > counted) {
            report_progress(lane->ig, end - (offset > counted ? offset : counted), 0);
            counted = end;
        }
    }
    /* a shorter file's last page reads as zeros past its end, without a fault */
    struct stat now;
    if (fstat(fd, &now) < 0)
        return obi_error_set_errno(err, errno, "%s: fstat", lane->path);
    if ((uint64_t)now.st_size < st_size)
        return obi_error_set(err, -EAGAIN,
                             "%s: changed while being ingested (shorter than the %llu bytes it "
                             "had when opened)",
                             lane->path, (unsigned long long)st_size);
    *size = counted;
    return 1;
}

/* Hashes the rest of a large file of st_size bytes when opened (its head is in lane->buf and
 * counted in *size), feeding the reference scanner: the digest the store is asked about before
 * anything is written. What the file has beyond st_size (it grew) is read and hashed too. */
static int hash_rest(ingest_lane *lane, int fd, uint64_t st_size, size_t head, uint64_t *size,
                     obi_digest *digest, obi_error **err)
{
    obi_blake3_hasher hasher;
    obi_blake3_init(&hasher);
    int r = lane->ig->refscan ? 0 : hash_mapped(lane, fd, st_size, size, &hasher, err);
    if (r < 0)
        return r;
    if (r == 0)
        obi_blake3_update(&hasher, lane->buf, head);
    for (;;) {
        ssize_t n = pread(fd, lane->buf, INGEST_READ_SIZE, (off_t)*size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return obi_error_set_errno(err, errno, "%s: read at offset %llu", lane->path,
                                       (unsigned long long)*size);
        if (n == 0)
            break;
        obi_blake3_update(&hasher, lane->buf, (size_t)n);
        if (lane->ig->refscan)
            obi_refscan_feed(lane->ig->refscan, lane->buf, (size_t)n);
        *size += (uint64_t)n;
        report_progress(lane->ig, (uint64_t)n, 0);
    }
    obi_blake3_finalize(&hasher, digest->bytes, OBI_DIGEST_LEN);
    return 0;
}

/* Copies a large file the store lacks into it, after hash_rest. The writer hashes what it
 * writes: contents that changed since they were hashed are an error, and what the store got
 * is named by its own digest either way (never by the expected one). */
static int copy_blob(ingest_lane *lane, int fd, const obi_digest *expected, uint64_t size,
                     obi_error **err)
{
    const char *path = lane->path;
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = obi_blob_open_write_expecting(lane->ig->blobs, expected, &writer, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    uint64_t copied = 0;
    for (;;) {
        ssize_t n = pread(fd, lane->buf, INGEST_READ_SIZE, (off_t)copied);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return obi_error_set_errno(err, errno, "%s: read at offset %llu", path,
                                       (unsigned long long)copied);
        if (n == 0)
            break;
        r = obi_blob_write(writer, lane->buf, (size_t)n, err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s", path);
        copied += (uint64_t)n;
    }
    obi_digest digest;
    r = obi_blob_finish_pending(writer, &digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    if (copied != size || !obi_digest_equal(&digest, expected))
        return obi_error_set(err, -EAGAIN,
                             "%s: changed while being ingested (%llu bytes hashed, "
                             "%llu then copied with other contents)",
                             path, (unsigned long long)size, (unsigned long long)copied);
    return 0;
}

/* The head of the file into lane->buf, all of it when it is small: one read for a small file
 * whose size fstat told (no second read to see the end). */
static ssize_t read_head(ingest_lane *lane, int fd, uint64_t st_size)
{
    size_t want = INGEST_SMALL_FILE + 1;
    ssize_t n;
    do
        n = read(fd, lane->buf, want);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0 || ((uint64_t)n == st_size && (size_t)n < want))
        return n;
    ssize_t more = obi_read_full(fd, lane->buf + n, want - (size_t)n);
    return more < 0 ? more : n + more;
}

/* read_head, and the head fed to the reference scanner and counted as progress: the start of
 * both the adopting and the copying path. The head's length, or an error naming the path. */
static ssize_t scan_head(ingest_lane *lane, int fd, uint64_t st_size, obi_error **err)
{
    ssize_t head = read_head(lane, fd, st_size);
    if (head < 0)
        return obi_error_set_errno(err, (int)-head, "%s: read at offset 0", lane->path);
    if (lane->ig->refscan)
        obi_refscan_feed(lane->ig->refscan, lane->buf, (size_t)head);
    report_progress(lane->ig, (uint64_t)head, 0);
    return head;
}

/* Opens the entry the walk classified as a regular file: *fd_out is that inode (never a
 * symlink or fifo swapped in since), *now its fstat. */
static int open_file(int dirfd, const char *name, const char *path, const struct stat *st,
                     int *fd_out, struct stat *now, obi_error **err)
{
    /* O_NONBLOCK: if the file was swapped for a fifo, opening must not hang. */
    cleanup_close int fd =
        openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "%s: open", path);
    int r = check_same_inode(path, fd, st, now, err);
    if (r < 0)
        return r;
    *fd_out = steal_fd(&fd);
    return 0;
}

/* Stores the contents of a file that obi_local_blob_adopt_prepare made the store's (no one can
 * change them any more): hashed, then, when the store lacks the blob, the file itself becomes
 * it (a pending blob under a temporary name, named by the barrier); copied only where it
 * cannot be linked there. The reference scanner reads every byte, as on the other paths. */
static int adopt_contents(ingest_lane *lane, int fd, uint64_t st_size, obi_digest *digest,
                          uint64_t *size_out, obi_error **err)
{
    const char *path = lane->path;
    ssize_t head = scan_head(lane, fd, st_size, err);
    if (head < 0)
        return (int)head;
    uint64_t size = (uint64_t)head;
    int r = 0;
    if (head <= INGEST_SMALL_FILE)
        obi_blake3(lane->buf, (size_t)head, digest->bytes);
    else if ((r = hash_rest(lane, fd, st_size, (size_t)head, &size, digest, err)) < 0)
        return r;
    cleanup_error obi_error *ignored = NULL;
    lane->expect_stored = obi_blob_has(lane->ig->blobs, digest, &ignored) == 1;
    if (!lane->expect_stored) {
        r = obi_local_blob_adopt_pending(lane->ig->blobs, fd, digest, err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s", path);
        if (r == 0 && head <= INGEST_SMALL_FILE)
            r = write_blob(lane, fd, (size_t)head, digest, &size, digest, err);
        else if (r == 0)
            r = copy_blob(lane, fd, digest, size, err);
        if (r < 0)
            return r;
    }
    *size_out = size;
    return 0;
}

/* Stores the contents of the open file fd (st when it was opened) as a blob: *digest and
 * *size are what the FileNode says. */
static int ingest_contents(ingest_lane *lane, int fd, const struct stat *st, obi_digest *digest,
                           uint64_t *size_out, obi_error **err)
{
    const char *path = lane->path;
    uint64_t st_size = (uint64_t)st->st_size;
    if (st_size > INGEST_SMALL_FILE)
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    if (lane->ig->refscan)
        obi_refscan_end_stream(lane->ig->refscan);
    int adopt = lane->ig->adopt ? obi_local_blob_adopt_prepare(lane->ig->blobs, fd, st, err) : 0;
    if (adopt < 0)
        return obi_error_prefix(err, adopt, "%s", path);
    if (adopt) {
        int r = adopt_contents(lane, fd, st_size, digest, size_out, err);
        if (r < 0)
            return r;
        report_progress(lane->ig, 0, 1);
        if (lane->ig->refscan)
            obi_refscan_end_stream(lane->ig->refscan);
        return 0;
    }
    ssize_t head = scan_head(lane, fd, st_size, err);
    if (head < 0)
        return (int)head;
    uint64_t size = (uint64_t)head;
    cleanup_error obi_error *ignored = NULL;
    int r;
    if (head <= INGEST_SMALL_FILE) {
        /* A small file is hashed in memory first; one the store has is not written again (a
         * rebuild's unchanged outputs create no temporary file). */
        obi_blake3(lane->buf, (size_t)head, digest->bytes);
        /* Into a store that lacks what it was asked for (a fresh import), most are written
         * without asking (a blob it did have is dropped when published: same contents); every
         * INGEST_ASK_EVERY-th still asks, so that a tree the store has again is noticed. */
        bool stored = false;
        if (lane->expect_stored || ++lane->unasked >= INGEST_ASK_EVERY) {
            lane->unasked = 0;
            stored = lane->expect_stored = obi_blob_has(lane->ig->blobs, digest, &ignored) == 1;
        }
        if (!stored && (r = write_blob(lane, fd, (size_t)head, digest, &size, digest, err)) < 0)
            return r;
    } else if (lane->expect_stored) {
        /* A large file while the store had what was asked last (a re-import): hashed first,
         * copied only if missing. */
        r = hash_rest(lane, fd, st_size, (size_t)head, &size, digest, err);
        if (r < 0)
            return r;
        lane->expect_stored = obi_blob_has(lane->ig->blobs, digest, &ignored) == 1;
        if (!lane->expect_stored && (r = copy_blob(lane, fd, digest, size, err)) < 0)
            return r;
    } else if ((r = write_blob(lane, fd, (size_t)head, NULL, &size, digest, err)) < 0) {
        /* A large file into a store that lacked the last one asked for: one pass */
        return r;
    }
    report_progress(lane->ig, 0, 1);
    if (lane->ig->refscan)
        obi_refscan_end_stream(lane->ig->refscan);
    *size_out = size;
    return 0;
}

/* A file on the walking thread, start to end. */
static int ingest_file(ingest *ig, int dirfd, const char *name, const struct stat *st,
                       const char *node_name, obi_node *out, obi_error **err)
{
    cleanup_close int fd = -1;
    struct stat now;
    int r = open_file(dirfd, name, ig->path, st, &fd, &now, err);
    if (r < 0)
        return r;
    ig->lane.path = ig->path;
    obi_digest digest;
    uint64_t size;
    r = ingest_contents(&ig->lane, fd, &now, &digest, &size, err);
    if (r < 0)
        return r;
    r = obi_node_init_file(out, node_name, strlen(node_name), &digest, size,
                           (now.st_mode & S_IXUSR) != 0);
    if (r < 0)
        return obi_error_set(err, r, "%s: out of memory", ig->path);
    return 0;
}

/* ---- the pool: files on every core ---- */

static uint64_t pool_failed_seq(ingest_pool *pool)
{
    return __atomic_load_n(&pool->failed_seq, __ATOMIC_ACQUIRE);
}

static bool pool_failed(ingest_pool *pool)
{
    return pool_failed_seq(pool) != UINT64_MAX;
}

/* Ingests a job's file on the calling thread, unless an earlier file already failed (then the
 * walk stops and this one does not matter). */
static void run_job(ingest_lane *lane, ingest_pool *pool, file_job *job)
{
    if (job->seq < pool_failed_seq(pool)) {
        lane->path = job->path;
        job->r = ingest_contents(lane, job->fd, &job->st, &job->digest, &job->size, &job->error);
    }
    close(job->fd);
    job->fd = -1;
    free(job->path);
    job->path = NULL;
    if (job->r < 0) {
        pthread_mutex_lock(&pool->lock);
        if (job->seq < pool->failed_seq)
            __atomic_store_n(&pool->failed_seq, job->seq, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&pool->lock);
    }
    __atomic_store_n(&job->done, true, __ATOMIC_RELEASE);
}

static file_job *queue_pop(ingest_pool *pool)
{
    file_job *job = pool->queue[pool->head];
    pool->head = (pool->head + 1) % POOL_QUEUE;
    pool->count--;
    return job;
}

static void *pool_worker(void *arg)
{
    ingest_lane *lane = arg;
    ingest_pool *pool = lane->ig->pool;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (pool->count == 0 && !pool->stopping)
            pthread_cond_wait(&pool->queued, &pool->lock);
        if (pool->count == 0)
            break; /* stopping, and nothing left */
        file_job *job = queue_pop(pool);
        pool->running++;
        pthread_mutex_unlock(&pool->lock);
        run_job(lane, pool, job);
        pthread_mutex_lock(&pool->lock);
        pool->running--;
        pthread_cond_broadcast(&pool->idle);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Queues a job for the workers, or runs it here when the queue is full. */
static void pool_submit(ingest *ig, file_job *job)
{
    ingest_pool *pool = ig->pool;
    pthread_mutex_lock(&pool->lock);
    if (pool->count < POOL_QUEUE) {
        pool->queue[(pool->head + pool->count) % POOL_QUEUE] = job;
        pool->count++;
        pthread_cond_signal(&pool->queued);
        pthread_mutex_unlock(&pool->lock);
        return;
    }
    pthread_mutex_unlock(&pool->lock);
    run_job(&ig->lane, pool, job);
}

/* Every queued job done (helping with them), then the workers gone. */
static void pool_stop(ingest *ig)
{
    ingest_pool *pool = ig->pool;
    pthread_mutex_lock(&pool->lock);
    while (pool->count > 0 || pool->running > 0) {
        if (pool->count == 0) {
            pthread_cond_wait(&pool->idle, &pool->lock);
            continue;
        }
        file_job *job = queue_pop(pool);
        pthread_mutex_unlock(&pool->lock);
        run_job(&ig->lane, pool, job);
        pthread_mutex_lock(&pool->lock);
    }
    pool->stopping = true;
    pthread_cond_broadcast(&pool->queued);
    pthread_mutex_unlock(&pool->lock);
    for (size_t i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pool->n_threads = 0;
}

static void pool_free(ingest *ig)
{
    ingest_pool *pool = ig->pool;
    if (!pool)
        return;
    if (pool->n_threads > 0)
        pool_stop(ig);
    for (size_t i = 0; i < POOL_MAX_WORKERS; i++)
        free(pool->lanes[i].buf);
    for (size_t i = pool->harvested; i < pool->n_jobs; i++) {
        file_job *job = pool->jobs[i];
        if (job->fd >= 0)
            close(job->fd);
        free(job->path);
        obi_error_free(job->error);
        free(job);
    }
    free(pool->jobs);
    for (size_t i = pool->first_dir; i < pool->n_dirs; i++) {
        obi_directory_free(pool->dirs[i].dir);
        free(pool->dirs[i].path);
    }
    free(pool->dirs);
    pthread_cond_destroy(&pool->queued);
    pthread_cond_destroy(&pool->idle);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
    ig->pool = NULL;
}

/* How many worker threads: OBI_INGEST_THREADS, else one less than the CPUs we may run on. */
static size_t pool_workers(void)
{
    const char *forced = getenv("OBI_INGEST_THREADS");
    if (forced && *forced) {
        char *end = NULL;
        unsigned long n = strtoul(forced, &end, 10);
        if (*end == '\0')
            return n < POOL_MAX_WORKERS ? n : POOL_MAX_WORKERS;
    }
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof cpus, &cpus) < 0)
        return 0;
    size_t n = (size_t)CPU_COUNT(&cpus);
    return n <= 1 ? 0 : n - 1 < POOL_MAX_WORKERS ? n - 1 : POOL_MAX_WORKERS;
}

/* Starts the pool where it may be used: a blob service safe to call from several threads (the
 * on-disk one), no reference scanner (it reads one stream at a time, in walk order) and more
 * than one CPU. Without it (or if no thread starts) everything runs on the walking thread. */
static int pool_start(ingest *ig, obi_error **err)
{
    size_t workers = pool_workers();
    if (workers == 0 || ig->refscan || !obi_blob_service_is_local(ig->blobs))
        return 0;
    ingest_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return obi_error_oom(err);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->queued, NULL);
    pthread_cond_init(&pool->idle, NULL);
    pool->failed_seq = UINT64_MAX;
    ig->pool = pool;
    for (size_t i = 0; i < workers; i++) {
        ingest_lane *lane = &pool->lanes[i];
        *lane = (ingest_lane){.ig = ig, .expect_stored = true};
        lane->buf = malloc(INGEST_READ_SIZE);
        if (!lane->buf)
            break;
        if (pthread_create(&pool->threads[pool->n_threads], NULL, pool_worker, lane) != 0)
            break;
        pool->n_threads++;
    }
    if (pool->n_threads == 0)
        pool_free(ig);
    return 0;
}

/* Puts a directory whose files are all in, and fills in its node one level up. */
static int put_deferred(ingest *ig, deferred_directory *d, obi_error **err)
{
    int r;
    if (!ig->putter && (r = obi_directory_open_put(ig->directories, &ig->putter, err)) < 0)
        return obi_error_prefix(err, r, "%s", d->path);
    obi_digest digest;
    r = obi_directory_put(ig->putter, d->dir, &digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", d->path);
    uint64_t size = obi_directory_size(d->dir);
    if (d->parent) {
        d->parent->directories[d->index].digest = digest;
        d->parent->directories[d->index].size = size;
    } else if ((r = obi_node_init_directory(&ig->root, ig->root_name, strlen(ig->root_name),
                                            &digest, size)) < 0) {
        return obi_error_set(err, r, "%s: out of memory", d->path);
    }
    return 0;
}

/* Fills in the FileNodes of the files done so far (in walk order, up to the first not done or
 * failed) and puts the directories whose trees are then complete, so that what is held stays
 * about what is in flight, not the whole tree. */
static int pool_harvest(ingest *ig, obi_error **err)
{
    ingest_pool *pool = ig->pool;
    size_t done = pool->harvested;
    while (done < pool->n_jobs && __atomic_load_n(&pool->jobs[done]->done, __ATOMIC_ACQUIRE) &&
           pool->jobs[done]->r == 0)
        done++;
    for (; pool->harvested < done; pool->harvested++) {
        file_job *job = pool->jobs[pool->harvested];
        job->dir->files[job->index].digest = job->digest;
        job->dir->files[job->index].size = job->size;
        free(job);
        pool->jobs[pool->harvested] = NULL;
    }
    while (pool->first_dir < pool->n_dirs && pool->dirs[pool->first_dir].last_seq <= done) {
        deferred_directory *d = &pool->dirs[pool->first_dir];
        int r = put_deferred(ig, d, err);
        if (r < 0)
            return r;
        obi_directory_free(d->dir);
        free(d->path);
        *d = (deferred_directory){0};
        pool->first_dir++;
    }
    return 0;
}

/* A file below the root: opened and checked here (in walk order), its contents ingested by the
 * pool; its FileNode a placeholder until then. */
static int submit_file(ingest *ig, const obi_walk_entry *e, obi_error **err)
{
    ingest_pool *pool = ig->pool;
    if (pool_failed(pool)) /* the earlier failure is what ingest reports */
        return obi_error_set(err, -ECANCELED, "%s: not ingested after an earlier failure", e->path);
    if (obi_array_grow(&pool->jobs, &pool->jobs_cap, pool->n_jobs + 1) < 0)
        return obi_error_oom(err);
    file_job *job = calloc(1, sizeof *job);
    if (!job)
        return obi_error_oom(err);
    pool->jobs[pool->n_jobs++] = job; /* freed with the pool from now on */
    job->seq = pool->n_jobs;
    job->fd = -1;
    int r = open_file(e->dirfd, e->name, e->path, e->st, &job->fd, &job->st, err);
    if (r < 0)
        return r;
    const struct stat now = job->st;
    static const obi_digest unknown;
    cleanup_node obi_node node = {0};
    obi_directory *dir = ig->stack[e->depth - 1];
    job->path = strdup(e->path);
    if (!job->path ||
        obi_node_init_file(&node, e->name, strlen(e->name), &unknown, 0,
                           (now.st_mode & S_IXUSR) != 0) < 0 ||
        obi_directory_append_owned(dir, &node) < 0)
        return obi_error_set(err, -ENOMEM, "%s: out of memory", e->path);
    job->dir = dir;
    job->index = dir->n_files - 1;
    pool_submit(ig, job);
    return pool_harvest(ig, err);
}

/* A directory the walk left: its node goes up now as a placeholder, the directory is put at
 * the end. */
static int defer_directory(ingest *ig, const obi_walk_entry *e, obi_directory *directory,
                           obi_error **err)
{
    ingest_pool *pool = ig->pool;
    if (obi_array_grow(&pool->dirs, &pool->dirs_cap, pool->n_dirs + 1) < 0)
        return obi_error_oom(err);
    deferred_directory *d = &pool->dirs[pool->n_dirs];
    *d = (deferred_directory){.dir = directory, .path = strdup(e->path), .last_seq = pool->n_jobs};
    if (!d->path)
        return obi_error_oom(err);
    pool->n_dirs++; /* owns directory now */
    if (e->depth == 0)
        return pool_harvest(ig, err);
    static const obi_digest unknown;
    cleanup_node obi_node node = {0};
    d->parent = ig->stack[e->depth - 1];
    if (obi_node_init_directory(&node, e->name, strlen(e->name), &unknown, 0) < 0 ||
        obi_directory_append_owned(d->parent, &node) < 0)
        return obi_error_set(err, -ENOMEM, "%s: out of memory", e->path);
    d->index = d->parent->n_directories - 1;
    return pool_harvest(ig, err);
}

/* After the walk (which returned r): every file in, the first failure in walk order reported
 * (it comes before anything the walk itself failed on), then the rest of the placeholders
 * filled and the directories put, children first. */
static int pool_finish(ingest *ig, int r, obi_error **err)
{
    ingest_pool *pool = ig->pool;
    pool_stop(ig);
    if (pool->failed_seq != UINT64_MAX) {
        /* never harvested: harvesting stops at a failed file */
        file_job *failed = pool->jobs[pool->failed_seq - 1];
        obi_error_free(*err);
        *err = NULL;
        return obi_error_move(err, &failed->error);
    }
    if (r < 0)
        return r;
    r = pool_harvest(ig, err);
    if (r == 0 && pool->first_dir != pool->n_dirs)
        r = obi_error_set(err, -EIO, "ingest: %zu directories left unput", /* a bug */
                          pool->n_dirs - pool->first_dir);
    return r;
}

static int ingest_symlink(ingest *ig, int dirfd, const char *name, const char *node_name,
                          obi_node *out, obi_error **err)
{
    const char *path = ig->path;
    char target[OBI_SYMLINK_TARGET_MAX + 1];
    ssize_t n = readlinkat(dirfd, name, target, sizeof target);
    if (n < 0)
        return obi_error_set_errno(err, errno, "%s: readlink", path);
    if ((size_t)n > OBI_SYMLINK_TARGET_MAX)
        return obi_error_set(err, -ENAMETOOLONG, "%s: symlink target longer than %d bytes", path,
                             OBI_SYMLINK_TARGET_MAX);
    if (n == 0)
        return obi_error_set(err, -EINVAL, "%s: empty symlink target", path);
    if (ig->refscan)
        obi_refscan_scan(ig->refscan, target, (size_t)n);
    int r = obi_node_init_symlink(out, node_name, strlen(node_name), target, (size_t)n);
    if (r < 0)
        return obi_error_set(err, r, "%s: out of memory", path);
    return 0;
}

/* Hands a finished node to the Directory one level up, or keeps it as the root. */
static int add_to_parent(ingest *ig, size_t depth, obi_node *node, obi_error **err)
{
    if (depth == 0) {
        ig->root = *node;
        memset(node, 0, sizeof *node);
        return 0;
    }
    if (obi_directory_append_owned(ig->stack[depth - 1], node) < 0)
        return obi_error_set(err, -ENOMEM, "%s: out of memory", ig->path);
    return 0;
}

static int ingest_enter(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    ingest *ig = ctx;
    ig->path = e->path;
    const char *node_name = e->depth == 0 ? ig->root_name : e->name;
    cleanup_node obi_node node = {0};
    int r;
    switch (e->st->st_mode & S_IFMT) {
    case S_IFREG:
        if (ig->pool && e->depth > 0)
            return submit_file(ig, e, err);
        r = ingest_file(ig, e->dirfd, e->name, e->st, node_name, &node, err);
        break;
    case S_IFLNK:
        r = ingest_symlink(ig, e->dirfd, e->name, node_name, &node, err);
        break;
    case S_IFDIR:
        if (obi_array_grow(&ig->stack, &ig->stack_cap, e->depth + 1) < 0) /* new slots NULL */
            return obi_error_oom(err);
        ig->stack[e->depth] = obi_directory_new();
        return ig->stack[e->depth] ? 0 : obi_error_oom(err);
    default:
        return obi_error_set(err, -EINVAL, "%s: unsupported file type (%s)", e->path,
                             file_type_name(e->st->st_mode));
    }
    return r < 0 ? r : add_to_parent(ig, e->depth, &node, err);
}

/* A directory whose entries are all in: put it, and add its node one level up. */
static int ingest_leave(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    ingest *ig = ctx;
    ig->path = e->path;
    cleanup_directory obi_directory *directory = ig->stack[e->depth];
    ig->stack[e->depth] = NULL;
    if (ig->pool)
        return defer_directory(ig, e, steal_pointer(&directory), err);
    int r;
    if (!ig->putter && (r = obi_directory_open_put(ig->directories, &ig->putter, err)) < 0)
        return obi_error_prefix(err, r, "%s", e->path);
    obi_digest digest;
    r = obi_directory_put(ig->putter, directory, &digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", e->path);
    const char *node_name = e->depth == 0 ? ig->root_name : e->name;
    cleanup_node obi_node node = {0};
    r = obi_node_init_directory(&node, node_name, strlen(node_name), &digest,
                                obi_directory_size(directory));
    if (r < 0)
        return obi_error_set(err, r, "%s: out of memory", e->path);
    return add_to_parent(ig, e->depth, &node, err);
}

/* The path without trailing slashes (a trailing slash would make fstatat follow a symlink). */
static char *strip_trailing_slashes(const char *path)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    return strndup(path, len);
}

/* The basename of a stripped path; for "." and ".." that of the real path. */
static int default_root_name(const char *path, char **out, obi_error **err)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    cleanup_free char *real = NULL;
    if (!strcmp(base, ".") || !strcmp(base, "..")) {
        real = realpath(path, NULL);
        if (!real)
            return obi_error_set_errno(err, errno, "%s: realpath", path);
        slash = strrchr(real, '/');
        base = slash ? slash + 1 : real;
    }
    if (!*base)
        return obi_error_set(err, -EINVAL, "%s: has no name to give the root node; pass one", path);
    *out = strdup(base);
    return *out ? 0 : obi_error_oom(err);
}

int obi_ingest_at(obi_blob_service *blobs, obi_directory_service *directories, int dirfd,
                  const char *name, const char *display, const obi_ingest_options *options,
                  obi_node *out, obi_error **err)
{
    const char *root_name = options && options->name ? options->name : name;
    if (!display)
        display = name;
    int r = obi_name_validate((const uint8_t *)root_name, strlen(root_name), "root node name", err);
    if (r < 0)
        return obi_error_prefix(err, r, "import %s", display);
    cleanup_free uint8_t *buf = malloc(INGEST_READ_SIZE);
    if (!buf)
        return obi_error_oom(err);
    ingest ig = {
        .blobs = blobs,
        .directories = directories,
        .refscan = options ? options->refscan : NULL,
        .adopt = options && options->adopt && obi_blob_service_is_local(blobs),
        .root_name = root_name,
        .path = display,
        .progress = options ? options->progress : NULL,
    };
    ig.lane = (ingest_lane){.ig = &ig, .buf = buf, .expect_stored = true};
    pthread_mutex_init(&ig.progress_lock, NULL);
    r = pool_start(&ig, err);
    if (r < 0) {
        pthread_mutex_destroy(&ig.progress_lock);
        return obi_error_prefix(err, r, "import %s", display);
    }
    obi_walk_options walk = {
        .enter = ingest_enter,
        .leave = ingest_leave,
        .sorted = true, /* castore lists are in bytewise name order */
        .max_levels = OBI_DIRECTORY_MAX_DEPTH,
        .display = display,
    };
    r = obi_walk(dirfd, name, &walk, &ig, err);
    if (ig.pool)
        r = pool_finish(&ig, r, err);
    pool_free(&ig);
    pthread_mutex_destroy(&ig.progress_lock);
    for (size_t i = 0; i < ig.stack_cap; i++)
        obi_directory_free(ig.stack[i]);
    free(ig.stack);
    /* the barrier: every blob durable before a directory refers to it, and before we return */
    if (r == 0 && (r = obi_blob_service_sync(blobs, err)) < 0)
        obi_error_prefix(err, r, "%s", display);
    if (r == 0 && ig.putter) {
        obi_digest committed;
        r = obi_directory_putter_finish(ig.putter, &committed, err);
        if (r < 0)
            obi_error_prefix(err, r, "%s: commit directories", display);
        else if (ig.root.kind == OBI_NODE_DIRECTORY &&
                 !obi_digest_equal(&committed, &ig.root.digest))
            r = obi_error_set(err, -EIO, "%s: directory service committed a different root",
                              display);
    }
    obi_directory_putter_close(ig.putter);
    if (r < 0) {
        obi_node_clear(&ig.root);
        return obi_error_prefix(err, r, "import");
    }
    *out = ig.root;
    return 0;
}

int obi_ingest_path(obi_blob_service *blobs, obi_directory_service *directories, const char *path,
                    const obi_ingest_options *options, obi_node *out, obi_error **err)
{
    cleanup_free char *stripped = strip_trailing_slashes(path);
    if (!stripped)
        return obi_error_oom(err);
    cleanup_free char *name = NULL;
    int r;
    if (options && options->name) {
        name = strdup(options->name);
        if (!name)
            return obi_error_oom(err);
    } else if ((r = default_root_name(stripped, &name, err)) < 0) {
        return obi_error_prefix(err, r, "import");
    }
    obi_ingest_options named = options ? *options : (obi_ingest_options){0};
    named.name = name;
    /* The caller's path is resolved as given; everything below it through descriptors. */
    return obi_ingest_at(blobs, directories, AT_FDCWD, stripped, stripped, &named, out, err);
}
