/*
 * The on-disk directory service (objectstore+file:///ROOT or a plain path): Directory messages
 * in their canonical encoding, keyed by digest, in SQLite at ROOT/directories.sqlite:
 *
 *     CREATE TABLE directories (digest BLOB PRIMARY KEY, data BLOB NOT NULL)
 *
 * WAL mode with synchronous=FULL (a committed transaction survives a crash or power loss) and
 * a busy timeout, so several processes can share one store. Within a process, one connection
 * per service, used under a mutex. The -wal file persists between connections (emptied when the
 * last one closes, after its checkpoint): by default SQLite deletes it and its -shm index on
 * every last close, and a short-lived process (one `ocibuild build`) paid ~2.5 ms creating and
 * deleting both on each run.
 *
 * A putter validates each directory and checks its children (put earlier in this putter, or
 * stored) as it arrives, but keeps them in memory; finish writes them all in ONE transaction
 * (BEGIN IMMEDIATE ... COMMIT), so either the whole tree becomes visible or nothing does, and
 * a putter closed without finish never touched the database. Rows are only ever inserted
 * (INSERT OR IGNORE: the same digest means the same bytes), so a child seen as stored stays
 * stored. get re-hashes the row and fails naming the digest when it does not match its key.
 *
 * The database is opened on first use, not with the service (~0.5 ms of a short-lived process
 * that may need no directory before its work is under way): a build opens it while its
 * container starts (obi_store_connect). An open that fails is the failing call's error, and is
 * tried again on the next.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/array.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest_map.h"
#include "ocibuild/fs.h"
#include "ocibuild/store_backend.h"
#include "store_internal.h"

#define BUSY_TIMEOUT_MS 60000

typedef struct local_directory_service {
    obi_directory_service base;
    pthread_mutex_t lock;
    sqlite3 *db;
    sqlite3_stmt *select;
    sqlite3_stmt *insert;
    bool connected; /* db open and both statements prepared (connect_locked) */
    obi_local_root root;
    char *path;
} local_directory_service;

static int sqlite_error(local_directory_service *svc, int rc, obi_error **err, const char *what)
{
    int code = rc == SQLITE_NOMEM ? -ENOMEM : (rc == SQLITE_BUSY ? -EBUSY : -EIO);
    return obi_error_set(err, code, "%s: %s: %s", svc->path, what, sqlite3_errmsg(svc->db));
}

static int prepare(local_directory_service *svc, const char *sql, sqlite3_stmt **stmt,
                   obi_error **err)
{
    int rc = sqlite3_prepare_v2(svc->db, sql, -1, stmt, NULL);
    return rc == SQLITE_OK ? 0 : sqlite_error(svc, rc, err, sql);
}

static int exec_sql(local_directory_service *svc, const char *sql, obi_error **err)
{
    int rc = sqlite3_exec(svc->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sqlite_error(svc, rc, err, sql);
}

/* ---- the database, opened on first use ---- */

static void disconnect_locked(local_directory_service *svc)
{
    sqlite3_finalize(svc->select);
    sqlite3_finalize(svc->insert);
    sqlite3_close(svc->db);
    svc->select = svc->insert = NULL;
    svc->db = NULL;
    svc->connected = false;
}

/* Opens the database and prepares the statements, once (svc->lock held). */
static int connect_locked(local_directory_service *svc, obi_error **err)
{
    if (svc->connected)
        return 0;
    int rc =
        sqlite3_open_v2(svc->path, &svc->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int r = svc->db ? sqlite_error(svc, rc, err, "open")
                        : obi_error_set(err, -ENOMEM, "%s: open: out of memory", svc->path);
        disconnect_locked(svc);
        return obi_error_prefix(err, r, "local directory service");
    }
    sqlite3_busy_timeout(svc->db, BUSY_TIMEOUT_MS);
    int persist_wal = 1;
    sqlite3_file_control(svc->db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
    int r = exec_sql(svc, "PRAGMA journal_mode=WAL", err);
    if (r == 0)
        r = exec_sql(svc, "PRAGMA synchronous=FULL", err);
    if (r == 0) /* the kept -wal is truncated to nothing after checkpoints: nothing to replay */
        r = exec_sql(svc, "PRAGMA journal_size_limit=0", err);
    if (r == 0)
        r = exec_sql(svc,
                     "CREATE TABLE IF NOT EXISTS directories "
                     "(digest BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID",
                     err);
    if (r == 0)
        r = prepare(svc, "SELECT data FROM directories WHERE digest = ?1", &svc->select, err);
    if (r == 0)
        r = prepare(svc, "INSERT OR IGNORE INTO directories (digest, data) VALUES (?1, ?2)",
                    &svc->insert, err);
    if (r < 0) {
        disconnect_locked(svc);
        return obi_error_prefix(err, r, "local directory service");
    }
    svc->connected = true;
    return 0;
}

/* ---- reading ---- */

/* Runs a SELECT of one row's data under svc->lock (held by the caller). 1 found (*data and
 * *len valid until the statement is reset), 0 absent. */
static int select_row(local_directory_service *svc, const obi_digest *digest, const uint8_t **data,
                      size_t *len, obi_error **err)
{
    int r = connect_locked(svc, err);
    if (r < 0)
        return r;
    sqlite3_reset(svc->select);
    int rc = sqlite3_bind_blob(svc->select, 1, digest->bytes, OBI_DIGEST_LEN, SQLITE_STATIC);
    if (rc != SQLITE_OK)
        return sqlite_error(svc, rc, err, "bind");
    rc = sqlite3_step(svc->select);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return sqlite_error(svc, rc, err, "select");
    *data = sqlite3_column_blob(svc->select, 0);
    *len = (size_t)sqlite3_column_bytes(svc->select, 0);
    return 1;
}

/* Loads, verifies and decodes one directory. 1 found, 0 absent, negative on error. */
static int load_directory(local_directory_service *svc, const obi_digest *digest,
                          obi_directory **out, obi_error **err)
{
    pthread_mutex_lock(&svc->lock);
    const uint8_t *data = NULL;
    size_t len = 0;
    int r = select_row(svc, digest, &data, &len, err);
    if (r == 1) {
        r = obi_directory_decode_verified(digest, data, len, out, err);
        if (r == 0)
            r = 1;
    }
    sqlite3_reset(svc->select);
    pthread_mutex_unlock(&svc->lock);
    return r;
}

static int local_directory_get(obi_directory_service *base, const obi_digest *digest,
                               obi_directory **out, obi_error **err)
{
    int r = load_directory((local_directory_service *)base, digest, out, err);
    if (r == 0) {
        char hex[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(digest, hex);
        return obi_error_set(err, -ENOENT, "directory %s not found", hex);
    }
    return r < 0 ? r : 0;
}

static int local_stored_size(void *ctx, const obi_digest *digest, uint64_t *size, obi_error **err)
{
    cleanup_directory obi_directory *dir = NULL;
    int r = load_directory(ctx, digest, &dir, err);
    if (r == 1)
        *size = obi_directory_size(dir);
    return r;
}

/* ---- putter ---- */

/* Inserts every pending directory in one transaction; svc->lock held. */
static int insert_pending(local_directory_service *svc, const obi_digest_map *pending,
                          obi_error **err)
{
    int r = connect_locked(svc, err);
    if (r == 0)
        r = exec_sql(svc, "BEGIN IMMEDIATE", err);
    if (r < 0)
        return r;
    for (size_t i = 0; r == 0 && i < pending->capacity; i++) {
        const obi_digest_map_entry *entry = &pending->slots[i];
        if (!entry->value)
            continue;
        const obi_encoded_directory *encoded = entry->value;
        sqlite3_reset(svc->insert);
        int rc = sqlite3_bind_blob(svc->insert, 1, entry->key.bytes, OBI_DIGEST_LEN, SQLITE_STATIC);
        /* a zero-length blob must not bind as NULL */
        if (rc == SQLITE_OK)
            rc = encoded->len ? sqlite3_bind_blob(svc->insert, 2, encoded->data, (int)encoded->len,
                                                  SQLITE_STATIC)
                              : sqlite3_bind_zeroblob(svc->insert, 2, 0);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(svc->insert);
        if (rc != SQLITE_DONE)
            r = sqlite_error(svc, rc, err, "insert");
        sqlite3_reset(svc->insert);
    }
    if (r == 0)
        r = exec_sql(svc, "COMMIT", err);
    if (r < 0)
        sqlite3_exec(svc->db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

static int local_commit_pending(void *ctx, obi_digest_map *pending, obi_error **err)
{
    local_directory_service *svc = ctx;
    /* blobs of this ROOT still pending in this process become durable first */
    int r = obi_local_blob_sync_root(&svc->root, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&svc->lock);
    r = insert_pending(svc, pending, err);
    pthread_mutex_unlock(&svc->lock);
    return r;
}

static int local_directory_open_put(obi_directory_service *base, obi_directory_putter **out,
                                    obi_error **err)
{
    return obi_pending_putter_new(local_stored_size, local_commit_pending, base, base, out, err);
}

/* ---- listing ---- */

/* Reads every key under the lock (the connection is shared), then visits them without it. */
static int local_directory_list(obi_directory_service *base, obi_digest_visit_fn visit, void *ctx,
                                obi_error **err)
{
    local_directory_service *svc = (local_directory_service *)base;
    cleanup_free obi_digest *digests = NULL;
    size_t n = 0, capacity = 0;
    int r = 0;
    pthread_mutex_lock(&svc->lock);
    sqlite3_stmt *list = NULL;
    int rc = SQLITE_OK;
    if ((r = connect_locked(svc, err)) == 0 &&
        (rc = sqlite3_prepare_v2(svc->db, "SELECT digest FROM directories", -1, &list, NULL)) !=
            SQLITE_OK)
        r = sqlite_error(svc, rc, err, "list");
    while (r == 0 && (rc = sqlite3_step(list)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(list, 0) != OBI_DIGEST_LEN)
            continue; /* not a digest: no directory anyone can ask for */
        if (obi_array_grow(&digests, &capacity, n + 1) < 0) {
            r = obi_error_oom(err);
            break;
        }
        memcpy(digests[n++].bytes, sqlite3_column_blob(list, 0), OBI_DIGEST_LEN);
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = sqlite_error(svc, rc, err, "list");
    sqlite3_finalize(list);
    pthread_mutex_unlock(&svc->lock);
    return r < 0 ? r : obi_digest_list_visit(digests, n, visit, ctx, err);
}

/* ---- removal (the garbage collector, store_gc.h) ---- */

/* Deletes the n rows in one transaction; svc->lock held. */
static int delete_rows(local_directory_service *svc, const obi_digest *digests, size_t n,
                       uint64_t *freed, obi_error **err)
{
    sqlite3_stmt *length = NULL, *delete = NULL;
    int r = prepare(svc, "SELECT length(data) FROM directories WHERE digest = ?1", &length, err);
    if (r == 0)
        r = prepare(svc, "DELETE FROM directories WHERE digest = ?1", &delete, err);
    if (r == 0)
        r = exec_sql(svc, "BEGIN IMMEDIATE", err);
    for (size_t i = 0; r == 0 && i < n; i++) {
        sqlite3_reset(length);
        sqlite3_reset(delete);
        int rc = sqlite3_bind_blob(length, 1, digests[i].bytes, OBI_DIGEST_LEN, SQLITE_STATIC);
        if (rc == SQLITE_OK && (rc = sqlite3_step(length)) == SQLITE_ROW) {
            *freed += (uint64_t)sqlite3_column_int64(length, 0);
            rc = SQLITE_DONE;
        }
        if (rc == SQLITE_DONE)
            rc = sqlite3_bind_blob(delete, 1, digests[i].bytes, OBI_DIGEST_LEN, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(delete);
        if (rc != SQLITE_DONE)
            r = sqlite_error(svc, rc, err, "delete");
    }
    if (r == 0)
        r = exec_sql(svc, "COMMIT", err);
    else
        sqlite3_exec(svc->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_finalize(length);
    sqlite3_finalize(delete);
    return r;
}

static int local_directory_remove(obi_directory_service *base, const obi_digest *digests, size_t n,
                                  uint64_t *freed, obi_error **err)
{
    local_directory_service *svc = (local_directory_service *)base;
    uint64_t total = 0;
    pthread_mutex_lock(&svc->lock);
    int r = n ? connect_locked(svc, err) : 0;
    if (r == 0 && n)
        r = delete_rows(svc, digests, n, &total, err);
    pthread_mutex_unlock(&svc->lock);
    if (freed)
        *freed = r < 0 ? 0 : total;
    return r;
}

/* ---- service ---- */

static void local_directory_service_free(obi_directory_service *base)
{
    local_directory_service *svc = (local_directory_service *)base;
    disconnect_locked(svc);
    pthread_mutex_destroy(&svc->lock);
    obi_local_root_clear(&svc->root);
    free(svc->path);
    free(svc);
}

static int local_directory_connect(obi_directory_service *base, obi_error **err)
{
    local_directory_service *svc = (local_directory_service *)base;
    pthread_mutex_lock(&svc->lock);
    int r = connect_locked(svc, err);
    pthread_mutex_unlock(&svc->lock);
    return r;
}

static const struct obi_directory_service_ops local_directory_ops = {
    .get = local_directory_get,
    .open_put = local_directory_open_put,
    .get_recursive = NULL,
    .list = local_directory_list,
    .remove = local_directory_remove,
    .connect = local_directory_connect,
    .free = local_directory_service_free,
};

int obi_local_directory_service_open(const char *root, obi_directory_service **out, obi_error **err)
{
    _cleanup_(obi_local_root_clear) obi_local_root id = {0};
    int r = obi_local_root_open(root, "local directory service", &id, err);
    if (r < 0)
        return r;
    local_directory_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_oom(err);
    svc->base.ops = &local_directory_ops;
    pthread_mutex_init(&svc->lock, NULL);
    _cleanup_(obi_directory_service_freep) obi_directory_service *owned = &svc->base;
    svc->root = id;
    id.path = NULL; /* moved */
    svc->path = obi_path_join(svc->root.path, "directories.sqlite");
    if (!svc->path)
        return obi_error_oom(err);
    *out = steal_pointer(&owned);
    return 0;
}
