/*
 * The castore FUSE filesystem (see include/ocibuild/castore_fs.h): libfuse3's low-level API
 * over the inode table and blob streams of castore_fs_internal.h. libfuse is loaded on first
 * use; the session runs libfuse's multithreaded loop on a thread of its own (signals blocked,
 * so they go to the caller's threads) from mount until close, which unmounts, ends the loop and
 * joins it. The kernel is told that nothing ever changes: entries, attributes, negative
 * lookups, directory listings, symlink targets and file pages are cached without a time limit
 * (but large local files are read with direct I/O: reads_direct). The session reads and writes
 * /dev/fuse as libfuse would, with the INIT handshake watched (castore_fs_init.c) for the one
 * flag libfuse 3.14 cannot ask for.
 */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "castore_fs_internal.h"
#include "ocibuild/buf.h"
#include "ocibuild/castore_fs.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/dynlib.h"
#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/process.h"

/* How long the kernel may cache what it was told: contents never change. */
#define CACHE_FOREVER (365.0 * 24 * 3600)
/* st_blksize: tools that size their reads by it (cat, cp) ask for 1 MiB. */
#define PREFERRED_IO_SIZE (1 << 20)
/* The largest read the kernel sends (max_pages, which libfuse derives from max_write). libfuse
 * splices a read reply through a pipe of its own that must hold the reply's header and data
 * plus 3 pages it reserves; without CAP_SYS_RESOURCE a pipe grows to pipe-max-size (1 MiB by
 * default) at most, so a 1 MiB read would not fit and libfuse would copy it through a fresh
 * buffer instead (pread + writev, 2x the server's CPU: bench/README.md "FUSE inputs"). */
#define MAX_READ_PAGES 252
/* Local blob files of at least this size are read with direct I/O (reads_direct). */
#define DIRECT_READ_MIN (16u << 20)

/* ---- libfuse, loaded on first use (dynlib.h) ---- */

#define LIBFUSE_SONAME "libfuse3.so.3"
/* fuse_session_loop_mt resolves to its default version, FUSE_3.12, whose config is the opaque
 * one of fuse_loop_cfg_create: the declaration this header gives a versioned libfuse. */
#define LIBFUSE_FUNCTIONS(X)                                                                       \
    X(fuse_add_direntry)                                                                           \
    X(fuse_add_direntry_plus)                                                                      \
    X(fuse_loop_cfg_create)                                                                        \
    X(fuse_loop_cfg_destroy)                                                                       \
    X(fuse_loop_cfg_set_idle_threads)                                                              \
    X(fuse_loop_cfg_set_max_threads)                                                               \
    X(fuse_opt_free_args)                                                                          \
    X(fuse_reply_attr)                                                                             \
    X(fuse_reply_buf)                                                                              \
    X(fuse_reply_data)                                                                             \
    X(fuse_reply_entry)                                                                            \
    X(fuse_reply_err)                                                                              \
    X(fuse_reply_none)                                                                             \
    X(fuse_reply_open)                                                                             \
    X(fuse_reply_readlink)                                                                         \
    X(fuse_reply_statfs)                                                                           \
    X(fuse_req_userdata)                                                                           \
    X(fuse_session_custom_io)                                                                      \
    X(fuse_session_destroy)                                                                        \
    X(fuse_session_exit)                                                                           \
    X(fuse_session_fd)                                                                             \
    X(fuse_session_loop_mt)                                                                        \
    X(fuse_session_mount)                                                                          \
    X(fuse_session_new)                                                                            \
    X(fuse_session_unmount)                                                                        \
    X(fuse_set_log_func)

static struct {
/* A declarator: `name` is the member's name here, it cannot be parenthesized. */
#define LIBFUSE_DECLARE(name) __typeof__(name) *name; // NOLINT(bugprone-macro-parentheses)
    LIBFUSE_FUNCTIONS(LIBFUSE_DECLARE)
#undef LIBFUSE_DECLARE
} lib;

static int lib_load_result;
static obi_error *lib_load_error;
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

/* libfuse's messages while a mount is being made on this thread (they explain its failure). */
static __thread obi_buf *captured_log;

__attribute__((format(printf, 2, 0))) static void capture_log(enum fuse_log_level level,
                                                              const char *fmt, va_list ap)
{
    (void)level;
    if (!captured_log)
        return; /* afterwards: libfuse's complaints about single requests, dropped */
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = 0;
    if (*line)
        obi_buf_appendf(captured_log, "%s%s", captured_log->len ? "; " : "", line);
}

static void lib_load(void)
{
    static const obi_dynlib_symbol symbols[] = {
#define LIBFUSE_SYMBOL(name) {#name, (void **)&lib.name},
        LIBFUSE_FUNCTIONS(LIBFUSE_SYMBOL)
#undef LIBFUSE_SYMBOL
    };
    lib_load_result = obi_dynlib_load(LIBFUSE_SONAME, symbols, sizeof symbols / sizeof symbols[0],
                                      &lib_load_error);
    if (lib_load_result == 0)
        lib.fuse_set_log_func(capture_log);
}

static int lib_ready(obi_error **err)
{
    pthread_once(&lib_once, lib_load);
    if (lib_load_result < 0)
        return obi_error_set(err, lib_load_result, "%s (apt-get install libfuse3-3)",
                             lib_load_error && lib_load_error->message ? lib_load_error->message
                                                                       : "cannot load libfuse3");
    return 0;
}

/* ---- the filesystem ---- */

struct obi_castore_fs {
    obi_blob_service *blobs;
    obi_directory_service *directories;
    fs_inode_table *inodes;
    struct fuse_session *session;
    char *mountpoint;
    uid_t uid;
    gid_t gid;
    size_t readahead;
    fs_stream_budget read_buffers; /* the rings of open files (castore_fs_internal.h) */
    fs_init_watch init;            /* what the kernel and libfuse agreed on */
    unsigned max_threads;
    obi_castore_fs_log_fn log;
    void *log_ctx;
    pthread_mutex_t error_lock;
    char *first_error; /* the first error answered to the kernel */
    pthread_t loop;
    bool loop_running;
    int loop_done[2];   /* written once the loop has returned */
    int watcher_socket; /* fusermount3's auto_unmount watcher waits for its end to close */
    pid_t watcher;      /* that fusermount3, or 0 */
};

/* An error answered to the kernel: its message goes to the log, and the first one is kept
 * (obi_castore_fs_first_error). Readers see EIO for anything the store failed to deliver (a
 * missing or corrupt blob or directory, a refused connection): its own errno (ENOENT above
 * all) would tell a reader that a listed entry is not there. ENOMEM stays, and ENFILE (the
 * open files' read buffers are spent) tells the reader to close some. */
static int report(obi_castore_fs *fs, obi_error **err, int code)
{
    if (*err && (*err)->message) {
        if (fs->log)
            fs->log(fs->log_ctx, (*err)->message);
        pthread_mutex_lock(&fs->error_lock);
        if (!fs->first_error)
            fs->first_error = strdup((*err)->message);
        pthread_mutex_unlock(&fs->error_lock);
    }
    obi_error_free(*err);
    *err = NULL;
    return code == -ENOMEM || code == -ENFILE ? -code : EIO;
}

static int load_directory(void *ctx, const fs_inode *inode, obi_directory **out, obi_error **err)
{
    obi_castore_fs *fs = ctx;
    cleanup_directory obi_directory *dir = NULL;
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&inode->digest, hex);
    int r = obi_directory_get(fs->directories, &inode->digest, &dir, err);
    if (r < 0)
        return obi_error_prefix(err, r, "directory %s", hex);
    /* Whatever the service checked: names are what the kernel will look up beneath us. */
    if ((r = obi_directory_validate(dir, err)) < 0)
        return obi_error_prefix(err, r, "directory %s", hex);
    obi_digest got;
    if ((r = obi_directory_digest(dir, &got, err)) < 0)
        return obi_error_prefix(err, r, "directory %s", hex);
    if (!obi_digest_equal(&got, &inode->digest))
        return obi_error_set(err, -EIO, "directory %s: the service returned another directory",
                             hex);
    uint64_t size = obi_directory_size(dir);
    if (size != inode->size)
        return obi_error_set(err, -EIO, "directory %s: %llu entries, its node says %llu", hex,
                             (unsigned long long)size, (unsigned long long)inode->size);
    *out = steal_pointer(&dir);
    return 0;
}

static void fill_attr(const obi_castore_fs *fs, const fs_inode *inode, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_ino = inode->ino;
    st->st_nlink = 1; /* unknown, as btrfs says for directories: find makes no assumption */
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_size = (off_t)inode->size;
    st->st_blksize = PREFERRED_IO_SIZE;
    st->st_blocks = (blkcnt_t)((inode->size + 511) / 512);
    st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = 1;
    switch (inode->kind) {
    case OBI_NODE_DIRECTORY:
        st->st_mode = S_IFDIR | OBI_EXPORT_DIRECTORY_MODE;
        st->st_blocks = 0;
        break;
    case OBI_NODE_FILE:
        st->st_mode =
            S_IFREG | (inode->executable ? OBI_EXPORT_EXECUTABLE_MODE : OBI_EXPORT_FILE_MODE);
        break;
    case OBI_NODE_SYMLINK:
        st->st_mode = S_IFLNK | 0777;
        st->st_blocks = 0;
        break;
    }
}

static void fill_entry(const obi_castore_fs *fs, const fs_inode *inode, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = fs_inode_nodeid(fs->inodes, inode);
    e->attr_timeout = e->entry_timeout = CACHE_FOREVER;
    fill_attr(fs, inode, &e->attr);
}

static obi_castore_fs *fs_of(fuse_req_t req)
{
    return lib.fuse_req_userdata(req);
}

static fs_inode *inode_of(obi_castore_fs *fs, fuse_ino_t ino)
{
    return fs_inode_from_nodeid(fs->inodes, ino);
}

/* The handles of open files and directories, which FUSE keeps for us as 64-bit integers. */
static fs_stream *stream_of(const struct fuse_file_info *fi)
{
    return (fs_stream *)(uintptr_t)fi->fh; // NOLINT(performance-no-int-to-ptr): FUSE's handle
}

static fs_dir *listing_of(const struct fuse_file_info *fi)
{
    return (fs_dir *)(uintptr_t)fi->fh; // NOLINT(performance-no-int-to-ptr): FUSE's handle
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    const unsigned wanted[] = {FUSE_CAP_READDIRPLUS, FUSE_CAP_CACHE_SYMLINKS, FUSE_CAP_SPLICE_WRITE,
                               FUSE_CAP_PARALLEL_DIROPS, FUSE_CAP_ASYNC_READ};
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++)
        if (conn->capable & wanted[i])
            conn->want |= wanted[i];
    /* readdirplus (one request lists and looks up) for the first part of a listing and for as
     * long as the reader looks at what it lists (ls -l, cp, a compiler's include search), plain
     * readdir once it does not (find, which needs only d_type: 100,000 inodes the kernel would
     * make for nothing; bench/README.md "FUSE inputs"). Nothing ever changes: no invalidation of
     * cached pages when attributes are looked at again. */
    conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
    conn->max_write = MAX_READ_PAGES * (unsigned)sysconf(_SC_PAGESIZE); /* and max_pages */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    obi_castore_fs *fs = fs_of(req);
    obi_error *err = NULL;
    fs_dir *contents = NULL;
    int r = fs_inode_table_contents(fs->inodes, inode_of(fs, parent), &contents, &err);
    if (r < 0) {
        lib.fuse_reply_err(req, report(fs, &err, r));
        return;
    }
    struct fuse_entry_param e;
    const obi_node *node = fs_dir_find(contents, (const uint8_t *)name, strlen(name));
    fs_inode *inode = NULL;
    if (!node) {
        /* A negative entry, cached like the rest. */
        memset(&e, 0, sizeof e);
        e.entry_timeout = CACHE_FOREVER;
        lib.fuse_reply_entry(req, &e);
    } else if ((r = fs_inode_table_lookup_node(fs->inodes, node, &inode, &err)) < 0) {
        lib.fuse_reply_err(req, report(fs, &err, r));
    } else {
        fill_entry(fs, inode, &e);
        if (lib.fuse_reply_entry(req, &e) != 0)
            fs_inode_table_forget(fs->inodes, inode, 1); /* the kernel never got it */
    }
    fs_dir_release(fs->inodes, contents);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    obi_castore_fs *fs = fs_of(req);
    fs_inode_table_forget(fs->inodes, inode_of(fs, ino), nlookup);
    lib.fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    obi_castore_fs *fs = fs_of(req);
    for (size_t i = 0; i < count; i++)
        fs_inode_table_forget(fs->inodes, inode_of(fs, forgets[i].ino), forgets[i].nlookup);
    lib.fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    obi_castore_fs *fs = fs_of(req);
    struct stat st;
    fill_attr(fs, inode_of(fs, ino), &st);
    lib.fuse_reply_attr(req, &st, CACHE_FOREVER);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    fs_inode *inode = inode_of(fs_of(req), ino);
    if (inode->kind != OBI_NODE_SYMLINK)
        lib.fuse_reply_err(req, EINVAL);
    else
        lib.fuse_reply_readlink(req, (const char *)inode->target.data);
}

/* Whether an open file's reads bypass the mount's page cache (FOPEN_DIRECT_IO): a large file,
 * not executable, whose blob is a local file, where the kernel also maps such files shared.
 * A read then goes from the blob file's pages (the store's page cache: the cache that counts
 * here) straight into the reader's buffer, one copy as reading the blob file takes, where the
 * mount's page cache costs a second copy and a page allocation per 4 KiB (0.3-0.4x the blob
 * file's speed against 0.9x; bench/README.md "FUSE inputs") and holds the file twice in
 * memory. Not for executables (each mmap of a direct-I/O file drops its cached pages: every
 * exec would read the binary again), small files (a header a build reads a thousand times
 * comes from the page cache without a request), nor blobs read through a reader (the page
 * cache is what spares a remote store a second fetch). */
static bool reads_direct(const obi_castore_fs *fs, const fs_inode *inode, const fs_stream *stream)
{
    return fs_stream_fd(stream) >= 0 && !inode->executable && inode->size >= DIRECT_READ_MIN &&
           fs_init_watch_granted(&fs->init, FS_INIT_DIRECT_IO_ALLOW_MMAP);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    obi_castore_fs *fs = fs_of(req);
    fs_inode *inode = inode_of(fs, ino);
    if ((fi->flags & O_ACCMODE) != O_RDONLY) {
        lib.fuse_reply_err(req, EROFS);
        return;
    }
    fs_stream *stream = NULL;
    obi_error *err = NULL;
    int r = fs_stream_open(fs->blobs, &inode->digest, inode->size, fs->readahead, &fs->read_buffers,
                           &stream, &err);
    if (r < 0) {
        lib.fuse_reply_err(req, report(fs, &err, r));
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)stream;
    fi->keep_cache = 1; /* the same bytes forever: pages read once serve every later open */
    fi->noflush = 1;
    fi->direct_io = reads_direct(fs, inode, stream);
    if (lib.fuse_reply_open(req, fi) != 0)
        fs_stream_close(stream);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)ino;
    obi_castore_fs *fs = fs_of(req);
    fs_stream *stream = stream_of(fi);
    if (fs_stream_fd(stream) >= 0) {
        /* A local blob file: libfuse splices its pages into the reply, which the kernel copies
         * once (into the mount's page cache, or with direct I/O into the reader's buffer). Not
         * SPLICE_F_MOVE: the kernel would try to steal each page from the blob file's page cache
         * (it fails on tmpfs, and would take them away from the store's readers where it works),
         * ~10% of the server's CPU for nothing. */
        struct fuse_bufvec data = FUSE_BUFVEC_INIT(size);
        data.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
        data.buf[0].fd = fs_stream_fd(stream);
        data.buf[0].pos = off;
        lib.fuse_reply_data(req, &data, 0);
        return;
    }
    cleanup_free uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        lib.fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t n = 0;
    obi_error *err = NULL;
    int r = fs_stream_read(stream, (uint64_t)off, size, buf, &n, &err);
    if (r < 0)
        lib.fuse_reply_err(req, report(fs, &err, r));
    else
        lib.fuse_reply_buf(req, (const char *)buf, n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fs_stream_close(stream_of(fi));
    lib.fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    obi_castore_fs *fs = fs_of(req);
    fs_dir *contents = NULL;
    obi_error *err = NULL;
    int r = fs_inode_table_contents(fs->inodes, inode_of(fs, ino), &contents, &err);
    if (r < 0) {
        lib.fuse_reply_err(req, report(fs, &err, r));
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)contents;
    fi->cache_readdir = 1; /* the kernel keeps the listing */
    fi->keep_cache = 1;
    if (lib.fuse_reply_open(req, fi) != 0)
        fs_dir_release(fs->inodes, contents);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    obi_castore_fs *fs = fs_of(req);
    fs_dir_release(fs->inodes, listing_of(fi));
    lib.fuse_reply_err(req, 0);
}

/* st_ino and the type bits of an entry, without making its inode (plain readdir). */
static void entry_identity(const obi_node *node, struct stat *st)
{
    memset(st, 0, sizeof *st);
    obi_digest key = node->digest;
    if (node->kind == OBI_NODE_SYMLINK)
        obi_digest_of(node->target.data, node->target.len, &key);
    st->st_ino = fs_inode_number(node->kind, node->executable, &key);
    st->st_mode = node->kind == OBI_NODE_DIRECTORY ? S_IFDIR
                  : node->kind == OBI_NODE_SYMLINK ? S_IFLNK
                                                   : S_IFREG;
}

/* Offsets: 0 is the start, 1 after ".", 2 after "..", 3 + i after entry i. */
static void list_directory(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi, bool plus)
{
    obi_castore_fs *fs = fs_of(req);
    fs_dir *contents = listing_of(fi);
    cleanup_free char *buf = malloc(size ? size : 1);
    if (!buf) {
        lib.fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    for (uint64_t next = (uint64_t)off; next < 2 + (uint64_t)contents->n_entries; next++) {
        const obi_node *node = next < 2 ? NULL : fs_dir_entry(contents, next - 2);
        if (next >= 2 && !node)
            break; /* cannot be: next stays below the entry count */
        const char *name = !node ? (next == 0 ? "." : "..") : (const char *)node->name.data;
        size_t need = plus ? lib.fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0)
                           : lib.fuse_add_direntry(req, NULL, 0, name, NULL, 0);
        if (need > size - used)
            break;
        struct fuse_entry_param e;
        memset(&e, 0, sizeof e);
        if (!node) {
            /* No inode for the dots: the kernel skips them in readdirplus. */
            e.attr.st_ino = inode_of(fs, ino)->ino;
            e.attr.st_mode = S_IFDIR;
        } else if (!plus) {
            entry_identity(node, &e.attr);
        } else {
            fs_inode *inode = NULL;
            obi_error *err = NULL;
            int r = fs_inode_table_lookup_node(fs->inodes, node, &inode, &err);
            if (r < 0) {
                if (used == 0) {
                    lib.fuse_reply_err(req, report(fs, &err, r));
                    return;
                }
                obi_error_free(err);
                break;
            }
            fill_entry(fs, inode, &e);
        }
        if (plus)
            lib.fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)next + 1);
        else
            lib.fuse_add_direntry(req, buf + used, size - used, name, &e.attr, (off_t)next + 1);
        used += need;
    }
    lib.fuse_reply_buf(req, buf, used);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    list_directory(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    list_directory(req, ino, size, off, fi, true);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct statvfs st;
    memset(&st, 0, sizeof st);
    st.f_bsize = st.f_frsize = 4096;
    st.f_namemax = OBI_NAME_MAX;
    st.f_files = fs_inode_table_count(fs_of(req)->inodes);
    lib.fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops OPS = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .open = op_open,
    .read = op_read,
    .release = op_release,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
};

/* ---- mounting and unmounting ---- */

/* The root: a directory node's own contents, or a directory of the nodes by name. */
static int root_directory(obi_castore_fs *fs, const obi_node *nodes, size_t n_nodes,
                          bool nodes_by_name, obi_directory **out, obi_error **err)
{
    if (n_nodes == 1 && nodes[0].kind == OBI_NODE_DIRECTORY && !nodes_by_name) {
        fs_inode probe = {
            .kind = OBI_NODE_DIRECTORY, .digest = nodes[0].digest, .size = nodes[0].size};
        return load_directory(fs, &probe, out, err);
    }
    cleanup_directory obi_directory *dir = obi_directory_new();
    if (!dir)
        return obi_error_oom(err);
    for (size_t i = 0; i < n_nodes; i++) {
        int r = obi_node_validate(&nodes[i], err);
        if (r < 0)
            return obi_error_prefix(err, r, "nodes[%zu]", i);
        if (obi_directory_add(dir, &nodes[i]) < 0)
            return obi_error_oom(err);
    }
    obi_directory_sort(dir);
    int r = obi_directory_validate(dir, err);
    if (r < 0)
        return r;
    *out = steal_pointer(&dir);
    return 0;
}

static void *loop_main(void *arg)
{
    obi_castore_fs *fs = arg;
    struct fuse_loop_config *config = lib.fuse_loop_cfg_create();
    if (config) {
        /* Idle threads are kept (libfuse's default): a limit on them made the loop start and
         * end a thread, with a splice pipe of its own, for every other read. */
        lib.fuse_loop_cfg_set_max_threads(config, fs->max_threads);
    }
    lib.fuse_session_loop_mt(fs->session, config);
    if (config)
        lib.fuse_loop_cfg_destroy(config);
    if (write(fs->loop_done[1], "x", 1) < 0) {
        /* The pipe is ours and empty: this cannot fail. */
    }
    return NULL;
}

/* The loop on its own thread, with every signal blocked (its workers inherit that), so that
 * signals reach the caller's threads. */
static int start_loop(obi_castore_fs *fs, obi_error **err)
{
    if (pipe2(fs->loop_done, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = pthread_create(&fs->loop, NULL, loop_main, fs);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0)
        return obi_error_set_errno(err, r, "start the FUSE server thread");
    fs->loop_running = true;
    return 0;
}

/* ---- the connection's I/O: libfuse's, with the INIT handshake watched (castore_fs_init.c) ---- */

static ssize_t conn_read(int fd, void *buf, size_t len, void *userdata)
{
    obi_castore_fs *fs = userdata;
    ssize_t n = read(fd, buf, len);
    if (n > 0)
        fs_init_watch_request(&fs->init, buf, (size_t)n);
    return n;
}

static void set_read_ahead(const obi_castore_fs *fs);

static ssize_t conn_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    obi_castore_fs *fs = userdata;
    bool init_reply = fs_init_watch_reply(&fs->init, iov, count);
    ssize_t n = writev(fd, iov, count);
    int saved = errno; /* libfuse reads it next */
    if (init_reply && n >= 0)
        set_read_ahead(fs); /* the kernel has taken the reply's (smaller) read-ahead by now */
    errno = saved;
    return n;
}

static ssize_t conn_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
                                unsigned flags, void *userdata)
{
    (void)userdata;
    return splice(fdin, offin, fdout, offout, len, flags);
}

/* On the mounted session's descriptor, before the loop reads the INIT request. No splice for
 * reading requests (libfuse would use it only for writes, which this filesystem refuses). */
static int watch_connection(obi_castore_fs *fs, obi_error **err)
{
    static const struct fuse_custom_io io = {
        .read = conn_read, .writev = conn_writev, .splice_send = conn_splice_send};
    fs->init.wanted = FS_INIT_DIRECT_IO_ALLOW_MMAP;
    int r = lib.fuse_session_custom_io(fs->session, &io, lib.fuse_session_fd(fs->session));
    if (r < 0)
        return obi_error_set_errno(err, -r, "FUSE session: custom I/O");
    return 0;
}

/* The kernel reads ahead one read of MAX_READ_PAGES on the mount rather than its default
 * 128 KiB (256 KiB for a reader that says it reads sequentially): a quarter of the requests for
 * a long read. The setting belongs to the mount's bdi, named after its device, and goes with
 * it; only root may make it, and without it reads are just smaller. After the reply to INIT,
 * which sets the read-ahead to the smaller of the bdi's and the reply's. The device comes from
 * the kernel's cached attributes of the root (AT_STATX_DONT_SYNC): no request to the server,
 * which this (loop) thread is. */
static void set_read_ahead(const obi_castore_fs *fs)
{
    struct statx stx;
    if (geteuid() != 0 || statx(AT_FDCWD, fs->mountpoint, AT_STATX_DONT_SYNC, 0, &stx) < 0)
        return;
    char path[64];
    snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", stx.stx_dev_major,
             stx.stx_dev_minor);
    cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
    char value[16];
    int len = snprintf(value, sizeof value, "%ld\n", MAX_READ_PAGES * sysconf(_SC_PAGESIZE) / 1024);
    if (fd >= 0 && write(fd, value, (size_t)len) < 0) {
        /* Not ours to set after all (root of a user namespace): the default stays. */
    }
}

/* The mount options: read-only, no set-id or devices, the kernel checks the modes. */
static void mount_options(bool allow_other, bool auto_unmount, char *out, size_t size)
{
    snprintf(out, size, "ro,nosuid,nodev,default_permissions,fsname=castore,subtype=ocibuild%s%s",
             allow_other ? ",allow_other" : "", auto_unmount ? ",auto_unmount" : "");
}

static int new_session(obi_castore_fs *fs, bool allow_other, obi_error **err)
{
    char options[160];
    mount_options(allow_other, false, options, sizeof options);
    char *argv[] = {"ocibuild", "-o", options, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    cleanup_buf obi_buf log = OBI_BUF_INIT;
    captured_log = &log;
    fs->session = lib.fuse_session_new(&args, &OPS, sizeof OPS, fs);
    captured_log = NULL;
    lib.fuse_opt_free_args(&args);
    if (!fs->session)
        return obi_error_set(err, -EINVAL, "FUSE session: %s",
                             log.len ? (const char *)log.data : "libfuse refused the options");
    return 0;
}

/* The /dev/fuse descriptor fusermount3 sends over the socket (1 byte with SCM_RIGHTS). */
static int receive_fd(int sock)
{
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    struct cmsghdr *cmsg = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
    if (!cmsg || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
    return fd;
}

/* $_FUSE_COMMFD=0 (the socket is fusermount3's stdin) in front of our environment. */
static char **fusermount_environment(void)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 2, sizeof *envp);
    if (!envp)
        return NULL;
    size_t k = 0;
    envp[k++] = "_FUSE_COMMFD=0";
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "_FUSE_COMMFD=", 13) != 0)
            envp[k++] = environ[i];
    return envp;
}

/* Mounts with fusermount3 and its auto_unmount: it stays, waiting for its socket to close, and
 * unmounts the filesystem if it is still there then (dead: this process was killed), so not
 * even SIGKILL leaves a mount behind. What libfuse would do, but with descriptors no other child
 * of this (multithreaded) process can inherit, and its messages kept for the error. */
static int fusermount_mount(obi_castore_fs *fs, const char *fusermount, bool allow_other,
                            int *fuse_fd, obi_error **err)
{
    char options[160];
    mount_options(allow_other, true, options, sizeof options);
    char *argv[] = {(char *)fusermount, "-o", options, "--", fs->mountpoint, NULL};
    cleanup_free char **envp = fusermount_environment();
    int sv[2] = {-1, -1}, messages[2] = {-1, -1};
    if (!envp)
        return obi_error_oom(err);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return obi_error_set_errno(err, errno, "socketpair");
    cleanup_close int ours = sv[0], theirs = sv[1];
    if (pipe2(messages, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int messages_in = messages[0], messages_out = messages[1];
    obi_spawn_options spawn = OBI_SPAWN_OPTIONS_INIT;
    spawn.stdin_fd = theirs;
    spawn.stdout_fd = -1;
    spawn.stderr_fd = messages_out;
    spawn.die_with_parent = false; /* it must outlive a killed parent to unmount */
    spawn.envp = envp;
    pid_t pid = 0;
    int r = obi_spawn(argv, &spawn, &pid, err);
    if (r < 0)
        return obi_error_prefix(err, r, "mount castore at %s", fs->mountpoint);
    close(steal_fd(&theirs));
    close(steal_fd(&messages_out));
    int fd = receive_fd(ours);
    if (fd < 0) {
        /* It failed and exits: its messages say why. */
        char text[1024];
        ssize_t n = obi_read_full(messages_in, text, sizeof text - 1);
        text[n > 0 ? n : 0] = 0;
        text[strcspn(text, "\n")] = 0;
        int status = 0;
        cleanup_error obi_error *ignored = NULL;
        obi_wait(pid, &status, &ignored);
        return obi_error_set(err, -EIO, "mount castore at %s: %s", fs->mountpoint,
                             *text ? text : "fusermount3 sent no descriptor");
    }
    fs->watcher = pid;
    fs->watcher_socket = steal_fd(&ours);
    *fuse_fd = fd;
    return 0;
}

/* Mounts: through fusermount3 where it is installed, by libfuse's own mount(2) otherwise (root
 * only; then only the bundle sweep removes what a killed process leaves). */
static int mount_session(obi_castore_fs *fs, bool allow_other, obi_error **err)
{
    cleanup_free char *fusermount = obi_find_executable("fusermount3", "/usr/bin:/bin");
    char target[64];
    const char *mountpoint = fs->mountpoint;
    int fd = -1;
    if (fusermount) {
        int r = fusermount_mount(fs, fusermount, allow_other, &fd, err);
        if (r < 0)
            return r;
        snprintf(target, sizeof target, "/dev/fd/%d", fd); /* libfuse takes it as it is */
        mountpoint = target;
    }
    cleanup_buf obi_buf log = OBI_BUF_INIT;
    captured_log = &log;
    int r = lib.fuse_session_mount(fs->session, mountpoint);
    captured_log = NULL;
    if (r != 0 && fd >= 0)
        close(fd); /* the connection ends: the watcher unmounts */
    if (r != 0)
        return obi_error_set(err, -EIO, "mount castore at %s: %s", fs->mountpoint,
                             log.len ? (const char *)log.data : "libfuse could not mount it");
    return 0;
}

int obi_castore_fs_mount(obi_blob_service *blobs, obi_directory_service *directories,
                         const obi_node *nodes, size_t n_nodes, const char *mountpoint,
                         const obi_castore_fs_options *options, obi_castore_fs **out,
                         obi_error **err)
{
    static const obi_castore_fs_options defaults = OBI_CASTORE_FS_OPTIONS_INIT;
    if (!options)
        options = &defaults;
    int r = lib_ready(err);
    if (r < 0)
        return r;
    obi_castore_fs *fs = calloc(1, sizeof *fs);
    if (!fs)
        return obi_error_oom(err);
    fs->loop_done[0] = fs->loop_done[1] = -1;
    fs->watcher_socket = -1;
    pthread_mutex_init(&fs->error_lock, NULL);
    fs_stream_budget_init(&fs->read_buffers, FS_STREAM_BUDGET_DEFAULT);
    fs->blobs = blobs;
    fs->directories = directories;
    fs->uid = options->set_owner ? options->uid : geteuid();
    fs->gid = options->set_owner ? options->gid : getegid();
    fs->readahead = options->readahead;
    fs->max_threads = options->max_threads ? options->max_threads : OBI_CASTORE_FS_DEFAULT_THREADS;
    fs->log = options->log;
    fs->log_ctx = options->log_ctx;
    fs->mountpoint = strdup(mountpoint);
    obi_directory *root = NULL;
    if (!fs->mountpoint)
        r = obi_error_oom(err);
    else if ((r = root_directory(fs, nodes, n_nodes, options->nodes_by_name, &root, err)) < 0)
        r = obi_error_prefix(err, r, "mount castore at %s", mountpoint);
    else if ((r = fs_inode_table_new(root, load_directory, fs, &fs->inodes, err)) == 0 &&
             (r = new_session(fs, options->allow_other, err)) == 0 &&
             (r = mount_session(fs, options->allow_other, err)) == 0 &&
             (r = watch_connection(fs, err)) == 0)
        r = start_loop(fs, err);
    if (r < 0) {
        cleanup_error obi_error *ignored = NULL;
        obi_castore_fs_close(fs, &ignored);
        return r;
    }
    *out = fs;
    return 0;
}

const char *obi_castore_fs_mountpoint(const obi_castore_fs *fs)
{
    return fs->mountpoint;
}

int obi_castore_fs_wait(obi_castore_fs *fs, int cancel_fd, obi_error **err)
{
    struct pollfd fds[2] = {{fs->loop_done[0], POLLIN, 0}, {cancel_fd, POLLIN, 0}};
    for (;;) {
        int n = poll(fds, cancel_fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return obi_error_set_errno(err, errno, "poll");
        if (fds[0].revents)
            return 1;
        if (fds[1].revents)
            return 0;
    }
}

static bool loop_ended(const obi_castore_fs *fs)
{
    struct pollfd pfd = {fs->loop_done[0], POLLIN, 0};
    return poll(&pfd, 1, 0) > 0;
}

/* Takes the mount away. Root: MNT_FORCE first, which makes the kernel end every pending request
 * (fuse's umount_begin), so the loop ends even when a reader still holds the filesystem. */
static int unmount(obi_castore_fs *fs, obi_error **err)
{
    if (geteuid() != 0)
        return obi_fusermount_unmount(fs->mountpoint, err);
    if (umount2(fs->mountpoint, MNT_FORCE | UMOUNT_NOFOLLOW) == 0 || errno == EINVAL ||
        errno == ENOENT)
        return 0;
    if (umount2(fs->mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW) == 0 || errno == EINVAL)
        return 0;
    return obi_error_set_errno(err, errno, "unmount %s", fs->mountpoint);
}

int obi_castore_fs_close(obi_castore_fs *fs, obi_error **err)
{
    if (!fs)
        return 0;
    int r = 0;
    if (fs->loop_running) {
        lib.fuse_session_exit(fs->session);
        if (!loop_ended(fs))
            r = unmount(fs, err);
        pthread_join(fs->loop, NULL);
    }
    if (fs->session) {
        lib.fuse_session_unmount(fs->session); /* unmounts what libfuse mounted, if still there */
        lib.fuse_session_destroy(fs->session); /* closes the device */
    }
    if (fs->watcher_socket >= 0)
        close(fs->watcher_socket); /* fusermount3 sees the mount gone and exits */
    if (fs->watcher > 0) {
        int status = 0;
        cleanup_error obi_error *ignored = NULL;
        obi_wait(fs->watcher, &status, &ignored);
    }
    for (int i = 0; i < 2; i++)
        if (fs->loop_done[i] >= 0)
            close(fs->loop_done[i]);
    fs_inode_table_free(fs->inodes);
    free(fs->mountpoint);
    free(fs->first_error);
    pthread_mutex_destroy(&fs->error_lock);
    fs_stream_budget_destroy(&fs->read_buffers);
    free(fs);
    return r;
}

char *obi_castore_fs_first_error(obi_castore_fs *fs)
{
    pthread_mutex_lock(&fs->error_lock);
    char *copy = fs->first_error ? strdup(fs->first_error) : NULL;
    pthread_mutex_unlock(&fs->error_lock);
    return copy;
}

void obi_castore_fs_closep(obi_castore_fs **fs)
{
    cleanup_error obi_error *ignored = NULL;
    obi_castore_fs_close(*fs, &ignored);
}

/* Whether /etc/fuse.conf has a line user_allow_other. */
static bool fuse_conf_allows_other(void)
{
    cleanup_file FILE *f = fopen("/etc/fuse.conf", "re");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t");
        if (!strncmp(p, "user_allow_other", 16) && strspn(p + 16, " \t\r\n") == strlen(p + 16))
            return true;
    }
    return false;
}

int obi_castore_fs_available(bool allow_other, obi_error **err)
{
    if (access("/dev/fuse", F_OK) != 0)
        return obi_error_set(err, -ENOTSUP,
                             "FUSE: /dev/fuse is missing (load the fuse module, or give the "
                             "container the device)");
    int r = lib_ready(err);
    if (r < 0)
        return obi_error_prefix(err, r, "FUSE");
    if (geteuid() == 0)
        return 0;
    if (access("/dev/fuse", R_OK | W_OK) != 0)
        return obi_error_set(err, -ENOTSUP,
                             "FUSE: this user cannot open /dev/fuse (udev makes it 0666; without "
                             "udev: chmod 0666 /dev/fuse, as scripts/install-deps.sh does)");
    cleanup_free char *fusermount = obi_find_executable("fusermount3", "/usr/bin:/bin");
    if (!fusermount)
        return obi_error_set(err, -ENOTSUP,
                             "FUSE: fusermount3 is missing, which mounts for users other than "
                             "root (apt-get install fuse3)");
    if (allow_other && !fuse_conf_allows_other())
        return obi_error_set(err, -ENOTSUP,
                             "FUSE: letting other users (a container's) into a mount needs the "
                             "line user_allow_other in /etc/fuse.conf (docs/build.md)");
    return 0;
}
