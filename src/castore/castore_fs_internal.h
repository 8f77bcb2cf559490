/*
 * Private to src/castore (and its unit tests): the two parts of the castore FUSE filesystem
 * (castore_fs.h) that hold state, apart from libfuse so that they can be tested without a mount.
 *
 * The inode table (castore_fs_inodes.c) gives every distinct object one inode: a directory, a
 * file and an executable file by digest, a symlink by target. Its number (st_ino) is derived
 * from that key, so it is the same for the same digest wherever the object appears, in this
 * mount and any other; the FUSE node id is the inode's address (inodes live as long as the
 * table). A directory's contents are loaded on first use through a loader and kept while the
 * kernel knows the inode (its lookup count), then dropped; a reference count keeps contents in
 * use alive across that.
 *
 * A blob stream (castore_fs_stream.c) reads one open file: from the blob's local file with
 * pread where the blob service has local files, otherwise through one sequential reader of the
 * blob service kept open across reads, a ring window (from a per-filesystem budget) of the
 * bytes last read (so that reads the
 * kernel sends out of order are served without reading again) and a small read-ahead past each
 * read. A read before the window reopens the reader; reads ahead of it read on. A stream that
 * reads to the end checks the content against the digest and size.
 *
 * The INIT watch (castore_fs_init.c) sits in the connection's I/O: it reads the kernel's INIT
 * request and adds to libfuse's reply the flags libfuse 3.14 does not know, where the kernel
 * offered them.
 */
#ifndef OCIBUILD_CASTORE_FS_INTERNAL_H
#define OCIBUILD_CASTORE_FS_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "ocibuild/blake3.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"

/* ---- inode table ---- */

/* A loaded directory's contents, reference counted: the inode holds one reference while it
 * keeps them, every user one more. */
typedef struct fs_dir {
    obi_directory *dir;
    size_t n_entries; /* directories, then files, then symlinks */
    unsigned refs;    /* under the table's lock */
} fs_dir;

typedef struct fs_inode {
    uint64_t ino;       /* st_ino: from the key, stable per digest */
    obi_node_kind kind; /* the root is a directory */
    bool executable;    /* file */
    obi_digest digest;  /* directory, file */
    uint64_t size;      /* file: length; directory: recursive entry count */
    obi_bytes target;   /* symlink */
    /* Under the table's lock: */
    uint64_t nlookup; /* the kernel's lookup count (the root's is never dropped) */
    fs_dir *contents; /* directory contents while kept, or NULL */
} fs_inode;

/* Loads the Directory of a directory inode (checked against its digest and size). */
typedef int (*fs_dir_loader)(void *ctx, const fs_inode *inode, obi_directory **out,
                             obi_error **err);

typedef struct fs_inode_table fs_inode_table;

/* root (ownership taken, also on failure) becomes the root inode's contents, never dropped. */
int fs_inode_table_new(obi_directory *root, fs_dir_loader load, void *load_ctx,
                       fs_inode_table **out, obi_error **err);
void fs_inode_table_free(fs_inode_table *table);
/* The FUSE node id of an inode, and back (1 is the root). */
uint64_t fs_inode_nodeid(const fs_inode_table *table, const fs_inode *inode);
fs_inode *fs_inode_from_nodeid(fs_inode_table *table, uint64_t nodeid);
fs_inode *fs_inode_table_root(fs_inode_table *table);
/* The inode of node (a directory, file or symlink entry), made on first sight, with its lookup
 * count raised by one (a FUSE entry reply: lookup, readdirplus). */
int fs_inode_table_lookup_node(fs_inode_table *table, const obi_node *node, fs_inode **out,
                               obi_error **err);
/* The kernel forgot n lookups: at 0 a directory's contents are dropped (once unused). */
void fs_inode_table_forget(fs_inode_table *table, fs_inode *inode, uint64_t n);
/* Number of inodes made so far (the root included). */
size_t fs_inode_table_count(fs_inode_table *table);
/* st_ino of an object: kind, executable and the digest (symlinks: the target's BLAKE3). */
uint64_t fs_inode_number(obi_node_kind kind, bool executable, const obi_digest *digest);

/* The contents of a directory inode, loaded if needed; a reference for the caller. */
int fs_inode_table_contents(fs_inode_table *table, fs_inode *inode, fs_dir **out, obi_error **err);
void fs_dir_release(fs_inode_table *table, fs_dir *contents);
/* Entry i in readdir order (directories, files, symlinks; each sorted by name). */
const obi_node *fs_dir_entry(const fs_dir *contents, size_t i);
/* The entry called name, by binary search in each sorted list; NULL when absent. */
const obi_node *fs_dir_find(const fs_dir *contents, const uint8_t *name, size_t len);

/* ---- blob streams ---- */

#define FS_STREAM_WINDOW (4u << 20)      /* bytes kept behind the reader */
#define FS_STREAM_READAHEAD (256u << 10) /* read past each read, at most */

typedef struct fs_stream_stats {
    unsigned opens;         /* sequential readers opened */
    uint64_t bytes_fetched; /* bytes read from the blob service */
} fs_stream_stats;

typedef struct fs_stream fs_stream;

/* The bytes of ring windows one filesystem's open streams may hold together, so that a reader
 * opening many files (a build is not trusted) cannot make the server allocate without bound:
 * an open past it fails with ENFILE. */
typedef struct fs_stream_budget {
    pthread_mutex_t lock;
    size_t used;
    size_t limit;
    fs_stream *open; /* every stream not yet closed: the kernel may never release a file that
                      * is open when the mount goes, so destroy closes what is left */
} fs_stream_budget;
#define FS_STREAM_BUDGET_DEFAULT (256u << 20)

void fs_stream_budget_init(fs_stream_budget *budget, size_t limit);
/* Closes the streams still open (no request can be running: the session is over). */
void fs_stream_budget_destroy(fs_stream_budget *budget);

/* A stream over the blob of a file node (digest, size). Opens the local file now when the
 * blob service has one; otherwise takes its ring (the blob's size, at most FS_STREAM_WINDOW)
 * from budget now, failing with -ENFILE when the budget is spent, and opens a reader on the
 * first read. readahead: 0 means FS_STREAM_READAHEAD, at most half the ring. */
int fs_stream_open(obi_blob_service *blobs, const obi_digest *digest, uint64_t size,
                   size_t readahead, fs_stream_budget *budget, fs_stream **out, obi_error **err);
void fs_stream_close(fs_stream *stream);
/* The local file (for splicing), or -1 when the stream reads through a reader. */
int fs_stream_fd(const fs_stream *stream);
/* Up to len bytes at offset (fewer only at the end of the blob). Thread-safe. */
int fs_stream_read(fs_stream *stream, uint64_t offset, size_t len, uint8_t *buf, size_t *nread,
                   obi_error **err);
fs_stream_stats fs_stream_get_stats(fs_stream *stream);

/* ---- the INIT handshake ---- */

/* FUSE_DIRECT_IO_ALLOW_MMAP (protocol 7.39, Linux 6.6; newer than Debian 12's linux/fuse.h):
 * files opened for direct I/O may also be mapped shared. */
#define FS_INIT_DIRECT_IO_ALLOW_MMAP (1ull << 36)

typedef struct fs_init_watch {
    uint64_t wanted; /* flags of bit 32 and up to add to the reply, where offered */
    /* Set by the thread that reads the INIT request and answers it (no other request comes
     * before the answer): */
    bool seen;
    uint64_t unique;
    uint64_t offered; /* the request's flags, flags2 in the upper half */
    uint64_t granted; /* the reply's flags, as sent */
    bool replied;     /* then granted is final (atomic) */
} fs_init_watch;

/* A message read from /dev/fuse: the INIT request's flags are kept. */
void fs_init_watch_request(fs_init_watch *watch, const void *message, size_t len);
/* A message about to be written to /dev/fuse (iov as libfuse gives it to writev): the reply to
 * INIT gets the wanted flags the kernel offered (in place), and true is returned for it. */
bool fs_init_watch_reply(fs_init_watch *watch, const struct iovec *iov, int count);
/* Whether the INIT reply has gone, with flag in it. */
bool fs_init_watch_granted(const fs_init_watch *watch, uint64_t flag);

#endif
