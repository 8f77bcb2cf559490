/*
 * Filesystem helpers shared by every layer: recursive mkdir/remove (never crossing into other
 * mounts), whole-file read/write, crash-safe atomic replace, and the default data directory.
 */
#ifndef OCIBUILD_FS_H
#define OCIBUILD_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ocibuild/error.h"

/* mkdir -p; existing directories are fine. */
int obi_mkdir_p(const char *path, mode_t mode, obi_error **err);
/* Marks directory path as the top of a hierarchy (FS_TOPDIR_FL, chattr +T): ext4 then places
 * each new subdirectory in a block group of its own choosing (the Orlov allocator) instead of
 * its parent's. For directories whose subdirectories are created and removed all the time
 * (bundles): without it every inode lands in one block group, where ext4 (without a journal)
 * skips each recently deleted inode one by one on every allocation, up to ~0.7 ms per mkdir
 * measured here. A hint: fails only when path cannot be opened, not when the filesystem has
 * no such flag or the caller may not set it. */
int obi_mark_top_directory(const char *path, obi_error **err);
/* rm -rf that makes read-only directories writable as it goes and refuses to descend into a
 * different filesystem (a leaked bind mount is reported, never emptied). Missing path: 0.
 * Iterative (fs_walk.h): any depth, O(1) descriptors; path's parent is opened by name (the
 * caller's path), everything below it through descriptors, never through a symlink. */
int obi_rm_rf(const char *path, obi_error **err);
/* The same for the entry name in dirfd (display: its name in messages, NULL: name). */
int obi_rm_rf_at(int dirfd, const char *name, const char *display, obi_error **err);
/* The same, calling emptied(ctx) once everything below the directory name is gone, just before
 * name itself is removed (not when something below it stays). */
int obi_rm_rf_at_emptied(int dirfd, const char *name, const char *display,
                         void (*emptied)(void *ctx), void *ctx, obi_error **err);
/* The same walk keeping the directory name itself (its mode too): everything below it removed.
 * name must be a directory (-ENOTDIR otherwise, nothing removed); a missing name: 0. */
int obi_empty_dir_at(int dirfd, const char *name, const char *display, obi_error **err);
/* chown -R (lchown: symlinks themselves) of the entry name in dirfd, iteratively. */
int obi_chown_tree_at(int dirfd, const char *name, uid_t uid, gid_t gid, const char *display,
                      obi_error **err);
/* chmod -R u+rw,go+r, and +x for directories, of the entry name in dirfd, iteratively;
 * symlinks are left alone and never followed; other execute bits are kept as they are. */
int obi_make_tree_readable_at(int dirfd, const char *name, const char *display, obi_error **err);
/* du of the entry name in dirfd: files (everything but directories) and the bytes allocated to
 * everything (st_blocks; a file linked twice inside is counted twice). A missing entry is 0. */
int obi_tree_usage_at(int dirfd, const char *name, uint64_t *files, uint64_t *bytes,
                      obi_error **err);
/* Reads a whole file, refusing more than max_len bytes. *out is NUL-terminated. */
int obi_read_file(const char *path, size_t max_len, char **out, size_t *out_len, obi_error **err);
/* Reads at most the last max_len bytes of a file (for log tails). */
int obi_read_file_tail(const char *path, size_t max_len, char **out, size_t *out_len,
                       obi_error **err);
/* Creates/truncates path with mode and writes data. */
int obi_write_file(const char *path, const void *data, size_t len, mode_t mode, obi_error **err);
/* Writes the file name in dirfd with exactly data, reusing the file there (no inode made and
 * freed per write) only when it is a regular file of this process's user, with exactly mode,
 * one link, on dirfd's filesystem and open nowhere else; anything else in its place (a symlink,
 * a FIFO, a directory, another user's file, a hard link) is removed, never followed or opened
 * for writing, and the file created new with mode. display: its name in messages (NULL: name).
 * Not atomic: for files nobody reads while they are written (a bundle's config.json). */
int obi_rewrite_file_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
                        const char *display, obi_error **err);
/* The same for path (its directory opened by name). */
int obi_rewrite_file(const char *path, const void *data, size_t len, mode_t mode, obi_error **err);
/* Writes to a temporary name in the same directory, fsyncs, renames over path, fsyncs the dir. */
int obi_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                          obi_error **err);
int obi_fsync_dir(const char *dir, obi_error **err);
/* "a" + "/" + "b" (b's leading slashes dropped); NULL on out of memory. */
char *obi_path_join(const char *a, const char *b);
/* Writes all bytes, retrying on EINTR and short writes. */
int obi_write_all(int fd, const void *data, size_t len);
/* Reads up to len bytes, retrying on EINTR and short reads; returns bytes read or -errno. */
ssize_t obi_read_full(int fd, void *data, size_t len);

/* Unmounts a FUSE mount of this user that it may not unmount itself (no root): `fusermount3 -u
 * -z PATH`, lazily, so it goes even while busy or while its server is gone (ENOTCONN). */
int obi_fusermount_unmount(const char *path, obi_error **err);

/* The data directory: $OCIBUILD_DATA_DIR, else /var/lib/ocibuild for root, else
 * $XDG_DATA_HOME/ocibuild (default ~/.local/share/ocibuild). Caller frees. */
char *obi_default_data_dir(void);

#endif
