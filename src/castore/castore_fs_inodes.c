/*
 * The castore filesystem's inode table (see castore_fs_internal.h): one inode per distinct
 * object, found by a key that is the BLAKE3 of the object's kind and digest (a symlink's:
 * its target's), in a digest map; st_ino is the key's first 63 bits. Inodes live as long as
 * the table, so their address serves as the FUSE node id. Directory contents come and go with
 * the kernel's lookup count, behind a reference count, all under one mutex.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "castore_fs_internal.h"
#include "ocibuild/digest_map.h"
#include "ocibuild/blake3.h"
#include "ocibuild/cleanup.h"

#define ROOT_NODEID 1 /* FUSE_ROOT_ID */

struct fs_inode_table {
    pthread_mutex_t lock;
    obi_digest_map by_key; /* key -> fs_inode (owned) */
    fs_inode root;
    size_t count;
    fs_dir_loader load;
    void *load_ctx;
};

static void inode_free(void *value)
{
    fs_inode *inode = value;
    obi_bytes_clear(&inode->target);
    if (inode->contents) {
        obi_directory_free(inode->contents->dir);
        free(inode->contents);
    }
    free(inode);
}

static fs_dir *dir_wrap(obi_directory *dir)
{
    fs_dir *contents = calloc(1, sizeof *contents);
    if (!contents)
        return NULL;
    contents->dir = dir;
    contents->n_entries = dir->n_directories + dir->n_files + dir->n_symlinks;
    return contents;
}

/* The key of an object: BLAKE3("d" | "f" | "x" | "l", digest). */
static void object_key(obi_node_kind kind, bool executable, const obi_digest *digest,
                       obi_digest *key)
{
    uint8_t material[1 + OBI_DIGEST_LEN];
    material[0] = kind == OBI_NODE_DIRECTORY ? 'd'
                  : kind == OBI_NODE_SYMLINK ? 'l'
                  : executable               ? 'x'
                                             : 'f';
    memcpy(material + 1, digest->bytes, OBI_DIGEST_LEN);
    obi_digest_of(material, sizeof material, key);
}

static uint64_t number_of_key(const obi_digest *key)
{
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | key->bytes[i];
    n &= ~(1ULL << 63);       /* some tools print inode numbers as signed */
    return n < 2 ? n + 2 : n; /* 0 is no inode, 1 the root's */
}

uint64_t fs_inode_number(obi_node_kind kind, bool executable, const obi_digest *digest)
{
    obi_digest key;
    object_key(kind, executable, digest, &key);
    return number_of_key(&key);
}

int fs_inode_table_new(obi_directory *root, fs_dir_loader load, void *load_ctx,
                       fs_inode_table **out, obi_error **err)
{
    cleanup_directory obi_directory *owned = root;
    fs_inode_table *table = calloc(1, sizeof *table);
    if (!table)
        return obi_error_oom(err);
    table->root.contents = dir_wrap(owned);
    if (!table->root.contents) {
        free(table);
        return obi_error_oom(err);
    }
    table->root.contents->refs = 1;
    table->root.contents->dir = steal_pointer(&owned);
    table->root.ino = ROOT_NODEID;
    table->root.kind = OBI_NODE_DIRECTORY;
    table->root.nlookup = 1;
    table->root.size = obi_directory_size(table->root.contents->dir);
    table->count = 1;
    table->load = load;
    table->load_ctx = load_ctx;
    obi_digest_map_init(&table->by_key, inode_free);
    pthread_mutex_init(&table->lock, NULL);
    *out = table;
    return 0;
}

void fs_inode_table_free(fs_inode_table *table)
{
    if (!table)
        return;
    obi_digest_map_clear(&table->by_key);
    obi_directory_free(table->root.contents->dir);
    free(table->root.contents);
    pthread_mutex_destroy(&table->lock);
    free(table);
}

uint64_t fs_inode_nodeid(const fs_inode_table *table, const fs_inode *inode)
{
    return inode == &table->root ? ROOT_NODEID : (uint64_t)(uintptr_t)inode;
}

fs_inode *fs_inode_from_nodeid(fs_inode_table *table, uint64_t nodeid)
{
    /* The kernel only sends node ids this table handed out. */
    if (nodeid == ROOT_NODEID)
        return &table->root;
    return (fs_inode *)(uintptr_t)nodeid; // NOLINT(performance-no-int-to-ptr): it is the address
}

fs_inode *fs_inode_table_root(fs_inode_table *table)
{
    return &table->root;
}

size_t fs_inode_table_count(fs_inode_table *table)
{
    pthread_mutex_lock(&table->lock);
    size_t n = table->count;
    pthread_mutex_unlock(&table->lock);
    return n;
}

static fs_inode *inode_for_node(const obi_node *node, const obi_digest *key)
{
    fs_inode *inode = calloc(1, sizeof *inode);
    if (!inode)
        return NULL;
    inode->ino = number_of_key(key);
    inode->kind = node->kind;
    if (node->kind == OBI_NODE_SYMLINK) {
        if (obi_bytes_set(&inode->target, node->target.data, node->target.len) < 0) {
            free(inode);
            return NULL;
        }
        inode->size = node->target.len;
        return inode;
    }
    inode->executable = node->kind == OBI_NODE_FILE && node->executable;
    inode->digest = node->digest;
    inode->size = node->size;
    return inode;
}

int fs_inode_table_lookup_node(fs_inode_table *table, const obi_node *node, fs_inode **out,
                               obi_error **err)
{
    obi_digest key, target_digest;
    const obi_digest *digest = &node->digest;
    if (node->kind == OBI_NODE_SYMLINK) {
        obi_digest_of(node->target.data, node->target.len, &target_digest);
        digest = &target_digest;
    }
    object_key(node->kind, node->executable, digest, &key);
    pthread_mutex_lock(&table->lock);
    fs_inode *inode = obi_digest_map_get(&table->by_key, &key);
    if (!inode) {
        inode = inode_for_node(node, &key);
        if (!inode || obi_digest_map_insert(&table->by_key, &key, inode) < 0) {
            pthread_mutex_unlock(&table->lock);
            if (inode)
                inode_free(inode);
            return obi_error_oom(err);
        }
        table->count++;
    }
    inode->nlookup++;
    pthread_mutex_unlock(&table->lock);
    *out = inode;
    return 0;
}

/* Drops one reference; the last one frees the contents (outside the lock: a directory of
 * 100,000 entries takes a while). */
static void dir_unref_locked(fs_dir *contents, fs_dir **to_free)
{
    *to_free = --contents->refs == 0 ? contents : NULL;
}

static void dir_free(fs_dir *contents)
{
    if (!contents)
        return;
    obi_directory_free(contents->dir);
    free(contents);
}

void fs_inode_table_forget(fs_inode_table *table, fs_inode *inode, uint64_t n)
{
    if (inode == &table->root)
        return;
    fs_dir *to_free = NULL;
    pthread_mutex_lock(&table->lock);
    inode->nlookup = n < inode->nlookup ? inode->nlookup - n : 0;
    if (inode->nlookup == 0 && inode->contents) {
        dir_unref_locked(inode->contents, &to_free);
        inode->contents = NULL;
    }
    pthread_mutex_unlock(&table->lock);
    dir_free(to_free);
}

int fs_inode_table_contents(fs_inode_table *table, fs_inode *inode, fs_dir **out, obi_error **err)
{
    if (inode->kind != OBI_NODE_DIRECTORY)
        return obi_error_set(err, -ENOTDIR, "not a directory");
    pthread_mutex_lock(&table->lock);
    if (inode->contents) {
        inode->contents->refs++;
        *out = inode->contents;
        pthread_mutex_unlock(&table->lock);
        return 0;
    }
    pthread_mutex_unlock(&table->lock);

    obi_directory *dir = NULL;
    int r = table->load(table->load_ctx, inode, &dir, err);
    if (r < 0)
        return r;
    fs_dir *loaded = dir_wrap(dir);
    if (!loaded) {
        obi_directory_free(dir);
        return obi_error_oom(err);
    }
    fs_dir *unused = NULL;
    pthread_mutex_lock(&table->lock);
    if (inode->contents) {
        unused = loaded; /* another thread loaded it meanwhile */
    } else if (inode->nlookup > 0) {
        inode->contents = loaded;
        loaded->refs = 1;
    }
    fs_dir *contents = inode->contents ? inode->contents : loaded;
    contents->refs++;
    *out = contents;
    pthread_mutex_unlock(&table->lock);
    dir_free(unused);
    return 0;
}

void fs_dir_release(fs_inode_table *table, fs_dir *contents)
{
    if (!contents)
        return;
    fs_dir *to_free = NULL;
    pthread_mutex_lock(&table->lock);
    dir_unref_locked(contents, &to_free);
    pthread_mutex_unlock(&table->lock);
    dir_free(to_free);
}

const obi_node *fs_dir_entry(const fs_dir *contents, size_t i)
{
    const obi_directory *dir = contents->dir;
    if (i < dir->n_directories)
        return &dir->directories[i];
    i -= dir->n_directories;
    if (i < dir->n_files)
        return &dir->files[i];
    i -= dir->n_files;
    return i < dir->n_symlinks ? &dir->symlinks[i] : NULL;
}

static const obi_node *find_sorted(const obi_node *list, size_t n, const uint8_t *name, size_t len)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = obi_name_compare(list[mid].name.data, list[mid].name.len, name, len);
        if (c == 0)
            return &list[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const obi_node *fs_dir_find(const fs_dir *contents, const uint8_t *name, size_t len)
{
    const obi_directory *dir = contents->dir;
    const obi_node *found = find_sorted(dir->directories, dir->n_directories, name, len);
    if (!found)
        found = find_sorted(dir->files, dir->n_files, name, len);
    if (!found)
        found = find_sorted(dir->symlinks, dir->n_symlinks, name, len);
    return found;
}
