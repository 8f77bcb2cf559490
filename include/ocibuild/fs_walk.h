/*
 * Walking a directory tree with O(1) file descriptors and O(1) stack (docs/security.md, "Deep
 * trees"): removal, ownership and mode fixes, and ingest of trees a build made, which may nest
 * 100,000 directories deep. The walk is a loop, not a recursion; it holds one directory open at
 * a time (two while it steps), descends with openat(name, O_NOFOLLOW | O_DIRECTORY) and climbs
 * with openat("..") after checking that ".." is the very directory it came from (st_dev and
 * st_ino remembered on the way down), so a directory moved mid-walk is an error (-EAGAIN), never
 * a walk into somewhere else. Symlinks are never followed: they are entries like files.
 *
 * Each directory's names are read when it is entered and kept in memory (one listing per level
 * of the current path); the callbacks get the holding directory's fd and the entry's name, so
 * they act with *at calls and AT_SYMLINK_NOFOLLOW, never with a path string.
 */
#ifndef OCIBUILD_FS_WALK_H
#define OCIBUILD_FS_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "ocibuild/error.h"

typedef struct obi_walk_entry {
    int dirfd;             /* the directory holding the entry, open during the callback */
    const char *name;      /* its name in dirfd */
    const struct stat *st; /* fstatat(AT_SYMLINK_NOFOLLOW), taken just before the callback */
    size_t depth;          /* 0: the start entry, 1: its children, ... */
    const char *path;      /* for messages: the start's display name, then "/" + names */
} obi_walk_entry;

/* Returns 0 to go on, OBI_WALK_SKIP (enter only) to not descend into a directory, or a negative
 * errno with *err set to stop the walk. */
typedef int (*obi_walk_fn)(void *ctx, const obi_walk_entry *entry, obi_error **err);
#define OBI_WALK_SKIP 1

typedef struct obi_walk_options {
    obi_walk_fn enter;  /* every entry, before a directory is opened (may be NULL) */
    obi_walk_fn leave;  /* every directory entered, after all its entries (may be NULL) */
    bool sorted;        /* visit each directory's entries in bytewise name order */
    bool skip_vanished; /* an entry gone between listing and visit is skipped, not an error */
    /* A directory this many levels below the start (the start being level 1) or deeper is an
     * error naming the start and the limit (-ELOOP); 0: no limit. */
    size_t max_levels;
    const char *display; /* the start's name in messages (NULL: name) */
} obi_walk_options;

/* Walks the entry name in dirfd (a file, symlink or directory; dirfd may be an O_PATH fd),
 * depth first: enter(entry), and for a directory its entries, then leave(directory). */
int obi_walk(int dirfd, const char *name, const obi_walk_options *opts, void *ctx, obi_error **err);

/* Opens ".." of fd (O_PATH | O_DIRECTORY) and checks that it is the directory *expected
 * (st_dev, st_ino); -EAGAIN naming display otherwise. For walks that descend on their own
 * (export). */
int obi_walk_climb(int fd, const struct stat *expected, const char *display, int *parent_out,
                   obi_error **err);

#endif
