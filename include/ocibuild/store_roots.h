/*
 * What the garbage collector of an on-disk store must keep (store_gc.h; the protocol is
 * docs/store.md, "Garbage collection"). Everything lives under the store's ROOT:
 *
 *   gcroots/NAME    a permanent root: a text file of lines "directory HEX" or "blob HEX", each
 *                   naming an object whose whole closure is kept. NAME may hold '/' (the roots
 *                   nix-build registers are nix/<store path basename>). A symlink there is an
 *                   indirect root (Nix's --indirect): the file it points to is the root, and
 *                   once that file is gone the root is dead and gc removes the link.
 *   temproots/TOKEN the pins of one running process: what it relies on (a build's inputs, what
 *                   an import has just stored). One file per process and store, as Nix's
 *                   temporary roots: a log of "ID blob HEX" / "ID directory HEX" lines that its
 *                   pins append and "ID released" lines that freed pins leave (store_pins.c),
 *                   compacted when released lines are most of it. The process holds an
 *                   exclusive flock on it from its first pinned object until its last pin
 *                   there is freed, then removes it; a crashed owner's file can be locked by
 *                   anyone, and gc removes it.
 *   gc.lock         gc holds an exclusive flock on it from reading the roots to its last
 *                   removal. Adding to a pin (and making or compacting a pin file) takes it
 *                   shared, so nothing is pinned while gc runs; freeing a pin does not (a gc
 *                   that read the file before keeps more, never less). A writer holds it
 *                   shared (obi_store_pin_hold_gc) from before it looks for or writes its
 *                   first object until the result is pinned, so an object found present or
 *                   just written cannot be collected meanwhile.
 *
 * Rule for every user of the store: pin (or root) an object before relying on its presence.
 * Stores without a local ROOT (memory://, grpc+) have no roots: pins do nothing there, and
 * adding a permanent root is -ENOTSUP.
 */
#ifndef OCIBUILD_STORE_ROOTS_H
#define OCIBUILD_STORE_ROOTS_H

#include <stdbool.h>
#include <stddef.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"
#include "ocibuild/store_verify.h"

#define OBI_GC_ROOTS_DIR "gcroots"
#define OBI_TEMP_ROOTS_DIR "temproots"
/* Where indirect roots' links are made: gcroots/auto/<32 hex of the target path's BLAKE3>. */
#define OBI_GC_ROOTS_AUTO "auto"
/* A root or pin file larger than this is refused (a million objects). */
#define OBI_ROOT_FILE_MAX (128u << 20)

/* One object a root keeps (with everything below it). */
typedef struct obi_store_ref {
    obi_store_object_kind kind;
    obi_digest digest;
} obi_store_ref;

/* The object node keeps: its directory or blob. 1 with *out set, 0 for a symlink (nothing). */
int obi_store_ref_of_node(const obi_node *node, obi_store_ref *out);

/* A root's name: components of [A-Za-z0-9._+-], none empty, "." or "..", none starting
 * with '.', at most 255 bytes. -EINVAL naming the offending byte otherwise. */
int obi_store_root_name_check(const char *name, obi_error **err);

/* Writes (atomically, replacing one of the same name) gcroots/NAME keeping the objects of
 * nodes (symlink nodes keep nothing and are skipped). */
int obi_store_root_add(obi_store *store, const char *name, const obi_node *nodes, size_t n,
                       obi_error **err);
/* An indirect root: writes the root file at path (anywhere; made absolute) and links
 * gcroots/auto/<hash of path> to it. Removing that file retires the root. */
int obi_store_root_add_indirect(obi_store *store, const char *path, const obi_node *nodes, size_t n,
                                obi_error **err);
/* Removes gcroots/NAME (-ENOENT naming it when absent). */
int obi_store_root_remove(obi_store *store, const char *name, obi_error **err);

typedef struct obi_store_root {
    const char *name;   /* below gcroots/, or temproots/TOKEN for a process's pins */
    const char *target; /* an indirect root's file; NULL otherwise */
    bool pin;           /* the pins of a live process (every one of it on this store) */
    const obi_store_ref *refs;
    size_t n_refs;
} obi_store_root;
typedef int (*obi_store_root_fn)(const obi_store_root *root, void *ctx, obi_error **err);

/* Visits every live root: the permanent ones, then (with pins) every live process's pin.
 * Dead ones (an indirect root whose file is gone, a dead owner's pin) are skipped, and
 * removed when remove_dead is set. A root file that does not parse is -EINVAL naming the file
 * and the line. -ENOTSUP without a local ROOT. */
int obi_store_roots_list(obi_store *store, bool pins, bool remove_dead, obi_store_root_fn visit,
                         void *ctx, obi_error **err);

/* ---- pins ----
 * Pins of one process share its file (one mutex around it: pins may be used from several
 * threads, each pin by one thread at a time). After a fork the child's pins, also those it
 * inherited, go to a file of its own, and freeing an inherited pin there releases nothing of
 * the parent's; the child keeps the parent's file locked (it shares the open file, as every
 * O_CLOEXEC descriptor) until it execs or exits. */

typedef struct obi_store_pin obi_store_pin;

/* A new empty pin of this process (nothing on disk until the first add; a store without a
 * local ROOT gets a pin that does nothing). */
int obi_store_pin_new(obi_store *store, obi_store_pin **out, obi_error **err);
/* Keeps node's object (and its closure) until the pin is freed: a line in the process's pin
 * file, made by the first add. Blocks while gc runs (unless this pin holds gc off). Does not
 * check that the object is present. */
int obi_store_pin_add(obi_store_pin *pin, const obi_node *node, obi_error **err);
/* Holds gc off (waiting for a running one to finish) until obi_store_pin_release_gc: around
 * a write, from its first lookup until its result is added. */
int obi_store_pin_hold_gc(obi_store_pin *pin, obi_error **err);
void obi_store_pin_release_gc(obi_store_pin *pin);
/* Releases gc if held and what the pin kept: a release line in the process's file, or the file
 * itself with the process's last pin on the store (one that cannot be written leaves the
 * objects pinned until then). Accepts NULL. */
void obi_store_pin_free(obi_store_pin *pin);
OBI_DEFINE_CLEANUP(obi_store_pin, obi_store_pin_free)
#define cleanup_store_pin _cleanup_(obi_store_pin_freep)

#endif
