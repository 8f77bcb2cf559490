/*
 * A read-only FUSE filesystem over the castore (what `tvix-store mount` does, and what tvix's
 * OCI build service mounts as a build's inputs): a tree of castore nodes served straight from a
 * blob and a directory service, so that a reader fetches only the bytes it touches.
 *
 * What it shows: directories (0555), files (0444), executable files (0555) and symlinks, every
 * entry owned by one uid/gid (options; by default the caller's) with every time 1, as the
 * materialized input cache shows them (build.md). st_ino is derived from the object's kind and
 * digest (a symlink's: its target), so the same digest has the same inode number wherever it
 * appears, in any mount. Contents never change, so the kernel keeps entries, attributes,
 * symlink targets, directory listings and file pages cached for as long as it likes (the page
 * cache is kept across opens; large local files are read with direct I/O from the blob file,
 * whose page cache is the cache, docs/castore.md "Mounting"). Reads are up to 1008 KiB;
 * directories are listed with readdirplus. Files are read through the blob service: local blob
 * files with splice, other backends through one sequential reader per open file with a small
 * read-ahead (castore_fs_internal.h).
 *
 * The server runs on its own threads (libfuse's multithreaded loop) from mount until close.
 * libfuse3 is loaded on first use (dynlib.h), so programs that never mount do not map it.
 * Mounting needs /dev/fuse and, without root, fusermount3 (Debian's fuse3 package); letting
 * other users in (allow_other: a container's users are others) needs root or `user_allow_other`
 * in /etc/fuse.conf. Only castore's store API is used (store.h).
 */
#ifndef OCIBUILD_CASTORE_FS_H
#define OCIBUILD_CASTORE_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "ocibuild/error.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"

typedef struct obi_castore_fs obi_castore_fs;

/* A line of libfuse's own messages (no newline). */
typedef void (*obi_castore_fs_log_fn)(void *ctx, const char *line);

typedef struct obi_castore_fs_options {
    bool set_owner; /* false: entries belong to the caller's effective uid and gid */
    uid_t uid;
    gid_t gid;
    bool allow_other;          /* other users may enter (checked against the modes above) */
    bool nodes_by_name;        /* the root holds the nodes by name, even one directory node */
    unsigned max_threads;      /* server threads at most; 0: OBI_CASTORE_FS_DEFAULT_THREADS */
    size_t readahead;          /* bytes read past a read from a reader; 0: the default (256 KiB) */
    obi_castore_fs_log_fn log; /* errors answered to readers, as they happen; NULL: none */
    void *log_ctx;
} obi_castore_fs_options;

#define OBI_CASTORE_FS_OPTIONS_INIT                                                                \
    {                                                                                              \
        false, 0, 0, false, false, 0, 0, NULL, NULL                                                \
    }
#define OBI_CASTORE_FS_DEFAULT_THREADS 8

/* Mounts at mountpoint (an existing empty directory) a filesystem whose root is:
 * - for one directory node (unless options say nodes_by_name), that directory's contents;
 * - otherwise a directory holding each node under its name (the names must be distinct and
 *   valid: a build's inputs, whose names the caller resolves beneath the mount and which must
 *   never be an entry of an input's own contents: always nodes_by_name).
 * The services are borrowed and must outlive the filesystem. Fails naming what is missing when
 * FUSE cannot be used (no /dev/fuse, libfuse3, fusermount3, or the right to allow_other). */
int obi_castore_fs_mount(obi_blob_service *blobs, obi_directory_service *directories,
                         const obi_node *nodes, size_t n_nodes, const char *mountpoint,
                         const obi_castore_fs_options *options, obi_castore_fs **out,
                         obi_error **err);

/* Waits until the filesystem is unmounted from outside (fusermount3 -u, umount) or cancel_fd
 * (if >= 0) becomes readable: 1 for the first, 0 for the second. */
int obi_castore_fs_wait(obi_castore_fs *fs, int cancel_fd, obi_error **err);

/* Unmounts (when still mounted), stops the server and frees. Root unmounts with MNT_FORCE
 * first, which also ends requests a reader that outlived its mount still has pending (a
 * container that is being killed); others through fusermount3 -u -z. NULL is fine. */
int obi_castore_fs_close(obi_castore_fs *fs, obi_error **err);
void obi_castore_fs_closep(obi_castore_fs **fs);
#define cleanup_castore_fs __attribute__((cleanup(obi_castore_fs_closep)))

const char *obi_castore_fs_mountpoint(const obi_castore_fs *fs);
/* The first error the filesystem answered a reader with (a blob it could not read, a directory
 * it could not fetch), for the message of whatever failed because of it; caller frees; NULL
 * when there was none (or no memory). */
char *obi_castore_fs_first_error(obi_castore_fs *fs);

/* 0 when this process can mount (with allow_other if asked): /dev/fuse exists, libfuse3
 * loads, and without root fusermount3 is installed and, for allow_other, /etc/fuse.conf says
 * user_allow_other. Otherwise -ENOTSUP (or the load's error) naming what is missing. */
int obi_castore_fs_available(bool allow_other, obi_error **err);

#endif
