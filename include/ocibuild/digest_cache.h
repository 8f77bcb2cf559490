/*
 * The digests of host files a build names in the friendly form (`"busybox": "/bin/busybox"`),
 * remembered by file identity so that an unchanged file is not read and hashed again on every
 * build (0.8 ms for the 2 MB busybox). An entry is keyed by (device, inode, size, mtime, ctime):
 * any write changes mtime and ctime, and ctime cannot be set back by the file's owner, so a
 * changed file misses. A file changed within the clock's granularity of its last hashing would
 * keep its ctime: files changed less than OBI_DIGEST_CACHE_SETTLE_SECONDS before they were
 * hashed are not remembered (Git's "racy" rule). The cache is a directory of symlinks, key ->
 * hex digest (one readlink per lookup, creation atomic); it only names digests, the store is
 * still asked whether it has the blob.
 */
#ifndef OCIBUILD_DIGEST_CACHE_H
#define OCIBUILD_DIGEST_CACHE_H

#include <stdbool.h>
#include <sys/stat.h>

#include "ocibuild/digest.h"

#define OBI_DIGEST_CACHE_SETTLE_SECONDS 2

/* The digest remembered for the file st describes (an fstat of the open file): true on a hit. */
bool obi_digest_cache_get(const char *dir, const struct stat *st, obi_digest *out);
/* Remembers digest for the file st describes (fstat'ed again after hashing it, unchanged),
 * unless it changed too recently (see above). Best effort: a cache that cannot be written only
 * costs speed. */
void obi_digest_cache_put(const char *dir, const struct stat *st, const obi_digest *digest);

#endif
