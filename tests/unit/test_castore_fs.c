/*
 * Unit tests for the parts of the castore FUSE filesystem that hold state, without a mount
 * (src/castore/castore_fs_internal.h): blob streams over a memory:// blob service (in order, out
 * of order, backwards, past the end, a blob that does not match its node) and the inode table
 * (numbers stable per digest, contents loaded once and dropped when the kernel forgets), and the
 * INIT watch (the flags libfuse 3.14 does not know, added to its reply only where offered).
 * Mounts themselves are tested end to end: tests/e2e/test_fuse.sh.
 */
#include <linux/fuse.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/castore/castore_fs_internal.h"
#include "ocibuild/cleanup.h"
#include "test_helpers.h"

#define BLOB_SIZE (9u << 20) /* more than two rings */

typedef struct fixture {
    fs_stream_budget budget;
    obi_blob_service *blobs;
    uint8_t *data;
    obi_digest digest;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    fs_stream_budget_init(&f->budget, FS_STREAM_BUDGET_DEFAULT);
    f->data = malloc(BLOB_SIZE);
    uint32_t x = 12345;
    for (size_t i = 0; i < BLOB_SIZE; i++) {
        x = x * 1103515245u + 12345u;
        f->data[i] = (uint8_t)(x >> 16);
    }
    obi_error *err = NULL;
    if (obi_memory_blob_service_new(&f->blobs, &err) < 0 ||
        obi_blob_put_bytes(f->blobs, f->data, BLOB_SIZE, &f->digest, &err) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    assert_int_equal(f->budget.used, 0); /* every test closed its streams */
    fs_stream_budget_destroy(&f->budget);
    obi_blob_service_free(f->blobs);
    free(f->data);
    free(f);
    return 0;
}

static void read_and_compare(fs_stream *s, const fixture *f, uint64_t offset, size_t len)
{
    cleanup_free uint8_t *buf = malloc(len);
    size_t n = 0;
    assert_ok(fs_stream_read(s, offset, len, buf, &n, err_ptr_));
    size_t expected = offset >= BLOB_SIZE                ? 0
                      : len > BLOB_SIZE - (size_t)offset ? BLOB_SIZE - (size_t)offset
                                                         : len;
    assert_int_equal(n, expected);
    if (n)
        assert_memory_equal(buf, f->data + offset, n);
}

static void test_castore_fs_stream_reads_in_order_with_one_reader(void **state)
{
    fixture *f = *state;
    fs_stream *s = NULL;
    assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE, 0, &f->budget, &s, err_ptr_));
    assert_int_equal(fs_stream_fd(s), -1); /* memory://: no local file */
    for (uint64_t off = 0; off < BLOB_SIZE; off += 128 << 10)
        read_and_compare(s, f, off, 128 << 10);
    fs_stream_stats stats = fs_stream_get_stats(s);
    assert_int_equal(stats.opens, 1);
    assert_int_equal(stats.bytes_fetched, BLOB_SIZE);
    fs_stream_close(s);
}

static void test_castore_fs_stream_serves_out_of_order_reads_from_its_window(void **state)
{
    fixture *f = *state;
    fs_stream *s = NULL;
    assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE, 0, &f->budget, &s, err_ptr_));
    /* What the kernel's racing read-ahead threads send: a later piece first. */
    read_and_compare(s, f, 3 << 20, 1 << 20);
    read_and_compare(s, f, 1 << 20, 1 << 20);
    read_and_compare(s, f, 2 << 20, 1 << 20);
    read_and_compare(s, f, 4 << 20, 1 << 20);
    read_and_compare(s, f, 2 << 20, 100); /* inside the window [1.25 MiB, 5.25 MiB) still */
    assert_int_equal(fs_stream_get_stats(s).opens, 1);
    fs_stream_close(s);
}

/* Files still open when the mount goes (the kernel sends no RELEASE for them): destroying the
 * budget closes them, their rings given back (ASan and valgrind see no leak). */
static void test_castore_fs_stream_left_open_is_closed_with_the_budget(void **state)
{
    fixture *f = *state;
    fs_stream_budget budget;
    fs_stream_budget_init(&budget, FS_STREAM_BUDGET_DEFAULT);
    fs_stream *a = NULL, *b = NULL, *c = NULL;
    assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE, 0, &budget, &a, err_ptr_));
    assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE, 0, &budget, &b, err_ptr_));
    assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE, 0, &budget, &c, err_ptr_));
    read_and_compare(b, f, 0, 4096);
    fs_stream_close(b); /* from the middle of the list */
    assert_true(budget.used > 0);
    fs_stream_budget_destroy(&budget);
    assert_int_equal(budget.used, 0);
    assert_null(budget.open);
}

static void test_castore_fs_stream_restarts_for_a_read_before_its_window(void **state)
{
    fixture *f = *state;
    fs_stream *s = NULL;
    assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE, 0, &f->budget, &s, err_ptr_));
    read_and_compare(s, f, BLOB_SIZE - 4096, 4096); /* the last page: reads everything */
    read_and_compare(s, f, 0, 4096);                /* long gone from the window */
    assert_int_equal(fs_stream_get_stats(s).opens, 2);
    /* Reads straddling the ring's wrap, and past the end. */
    read_and_compare(s, f, FS_STREAM_WINDOW - 10, 20);
    read_and_compare(s, f, BLOB_SIZE - 10, 4096);
    read_and_compare(s, f, BLOB_SIZE + 1, 4096);
    fs_stream_close(s);
}

static void test_castore_fs_stream_fails_eio_on_a_blob_that_is_not_the_node(void **state)
{
    fixture *f = *state;
    obi_error *err = NULL;
    uint8_t buf[4096];
    size_t n = 0;
    fs_stream *s = NULL;
    /* The node says the blob is shorter than it is: the end does not come where it should. */
    assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE - 1, 0, &f->budget, &s, err_ptr_));
    assert_fails_with(err, fs_stream_read(s, BLOB_SIZE - 4096, 4096, buf, &n, &err), -EIO,
                      "blob is longer than the node's size");
    fs_stream_close(s);
    /* Longer than it is. */
    assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE + 1, 0, &f->budget, &s, err_ptr_));
    assert_fails_with(err, fs_stream_read(s, BLOB_SIZE - 4096, 4097, buf, &n, &err), -EIO,
                      "blob ends at byte 9437184, the node's size is 9437185");
    fs_stream_close(s);
    /* A digest the store does not have: the read names it, as EIO to the kernel. */
    obi_digest missing = f->digest;
    missing.bytes[0] ^= 1;
    assert_ok(fs_stream_open(f->blobs, &missing, 10, 0, &f->budget, &s, err_ptr_));
    err = NULL;
    assert_true(fs_stream_read(s, 0, 10, buf, &n, &err) < 0);
    assert_non_null(err);
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&missing, hex);
    assert_non_null(strstr(err->message, hex));
    obi_error_free(err);
    fs_stream_close(s);
}

/* A reader (a build) opening many files of a remote store: their read buffers come from the
 * mount's budget, an open past it fails with ENFILE, and closing gives the bytes back. */
static void test_castore_fs_stream_open_files_share_a_bounded_budget(void **state)
{
    fixture *f = *state;
    fs_stream_budget budget;
    fs_stream_budget_init(&budget, 3 * FS_STREAM_WINDOW);
    fs_stream *s[4] = {NULL};
    for (int i = 0; i < 3; i++)
        assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE, 0, &budget, &s[i], err_ptr_));
    assert_int_equal(budget.used, 3 * FS_STREAM_WINDOW);
    obi_error *err = NULL;
    assert_fails_with(err, fs_stream_open(f->blobs, &f->digest, BLOB_SIZE, 0, &budget, &s[3], &err),
                      -ENFILE, "would pass the limit of 12582912");
    /* A small file takes only its size. */
    fs_stream_close(s[2]);
    assert_ok(fs_stream_open(f->blobs, &f->digest, 1000, 0, &budget, &s[2], err_ptr_));
    assert_int_equal(budget.used, 2 * FS_STREAM_WINDOW + 1000);
    for (int i = 0; i < 3; i++)
        fs_stream_close(s[i]);
    assert_int_equal(budget.used, 0);
    fs_stream_budget_destroy(&budget);
}

/* ---- inode table ---- */

static unsigned loads;

static int load_empty(void *ctx, const fs_inode *inode, obi_directory **out, obi_error **err)
{
    (void)ctx;
    (void)inode;
    loads++;
    *out = obi_directory_new();
    return *out ? 0 : obi_error_oom(err);
}

static void test_castore_fs_inode_numbers_are_stable_per_digest(void **state)
{
    fixture *f = *state;
    fs_inode_table *table = NULL;
    assert_ok(fs_inode_table_new(obi_directory_new(), load_empty, NULL, &table, err_ptr_));
    obi_node a = {0}, b = {0}, exe = {0}, dir = {0};
    assert_int_equal(obi_node_init_file(&a, "a", 1, &f->digest, BLOB_SIZE, false), 0);
    assert_int_equal(obi_node_init_file(&b, "b", 1, &f->digest, BLOB_SIZE, false), 0);
    assert_int_equal(obi_node_init_file(&exe, "x", 1, &f->digest, BLOB_SIZE, true), 0);
    assert_int_equal(obi_node_init_directory(&dir, "d", 1, &f->digest, 0), 0);
    fs_inode *ia = NULL, *ib = NULL, *ix = NULL, *id = NULL;
    assert_ok(fs_inode_table_lookup_node(table, &a, &ia, err_ptr_));
    assert_ok(fs_inode_table_lookup_node(table, &b, &ib, err_ptr_));
    assert_ok(fs_inode_table_lookup_node(table, &exe, &ix, err_ptr_));
    assert_ok(fs_inode_table_lookup_node(table, &dir, &id, err_ptr_));
    assert_ptr_equal(ia, ib); /* same object, other name: one inode */
    assert_int_equal(ia->nlookup, 2);
    assert_true(ia->ino != ix->ino && ia->ino != id->ino && ix->ino != id->ino);
    assert_int_equal(ia->ino, fs_inode_number(OBI_NODE_FILE, false, &f->digest));
    assert_true(ia->ino > 1 && ia->ino < (1ULL << 63));
    assert_int_equal(fs_inode_table_count(table), 4);

    /* Contents: loaded once while the kernel knows the inode, dropped when it forgets. */
    loads = 0;
    fs_dir *c1 = NULL, *c2 = NULL;
    assert_ok(fs_inode_table_contents(table, id, &c1, err_ptr_));
    assert_ok(fs_inode_table_contents(table, id, &c2, err_ptr_));
    assert_int_equal(loads, 1);
    assert_ptr_equal(c1, c2);
    fs_dir_release(table, c1);
    fs_inode_table_forget(table, id, 1);
    assert_null(id->contents);
    fs_dir_release(table, c2); /* the last user frees them */
    assert_ok(fs_inode_table_contents(table, id, &c1, err_ptr_));
    assert_int_equal(loads, 2);
    fs_dir_release(table, c1);
    obi_error *err = NULL;
    assert_fails_with(err, fs_inode_table_contents(table, ia, &c1, &err), -ENOTDIR,
                      "not a directory");
    obi_node_clear(&a);
    obi_node_clear(&b);
    obi_node_clear(&exe);
    obi_node_clear(&dir);
    fs_inode_table_free(table);
}

/* Four threads reading one stream at scattered offsets: every read gets the blob's bytes. */
typedef struct reader_arg {
    fs_stream *stream;
    const fixture *f;
    unsigned seed;
    int failures;
} reader_arg;

static void *reader_main(void *p)
{
    reader_arg *arg = p;
    uint8_t *buf = malloc(256 << 10);
    for (int i = 0; i < 64; i++) {
        arg->seed = arg->seed * 1103515245u + 12345u;
        uint64_t off = (arg->seed >> 4) % BLOB_SIZE;
        size_t n = 0;
        obi_error *err = NULL;
        if (fs_stream_read(arg->stream, off, 256 << 10, buf, &n, &err) < 0 ||
            memcmp(buf, arg->f->data + off, n) != 0)
            arg->failures++;
        obi_error_free(err);
    }
    free(buf);
    return NULL;
}

static void test_castore_fs_stream_concurrent_readers_of_one_file(void **state)
{
    fixture *f = *state;
    fs_stream *s = NULL;
    assert_ok(fs_stream_open(f->blobs, &f->digest, BLOB_SIZE, 0, &f->budget, &s, err_ptr_));
    pthread_t threads[4];
    reader_arg args[4];
    for (unsigned i = 0; i < 4; i++) {
        args[i] = (reader_arg){s, f, i + 1, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, reader_main, &args[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    fs_stream_close(s);
}

/* ---- the INIT watch ---- */

#define ALLOW_MMAP_BIT2 (uint32_t)(FS_INIT_DIRECT_IO_ALLOW_MMAP >> 32)

typedef struct init_exchange {
    struct {
        struct fuse_in_header in;
        struct fuse_init_in init;
    } request;
    struct fuse_out_header out;
    struct fuse_init_out reply;
    struct iovec iov[2];
} init_exchange;

/* A kernel's INIT request with flags2 (when ext) and libfuse's reply to it. */
static void init_exchange_make(init_exchange *x, bool ext, uint32_t offered2)
{
    memset(x, 0, sizeof *x);
    x->request.in.len = sizeof x->request;
    x->request.in.opcode = FUSE_INIT;
    x->request.in.unique = 2;
    x->request.init.major = 7;
    x->request.init.minor = 45;
    x->request.init.flags = FUSE_ASYNC_READ | FUSE_MAX_PAGES | (ext ? FUSE_INIT_EXT : 0);
    x->request.init.flags2 = offered2;
    x->out.len = sizeof x->out + sizeof x->reply;
    x->out.unique = 2;
    x->reply.major = 7;
    x->reply.minor = 38;
    x->reply.flags = FUSE_ASYNC_READ | FUSE_MAX_PAGES | (ext ? FUSE_INIT_EXT : 0);
    x->iov[0] = (struct iovec){&x->out, sizeof x->out};
    x->iov[1] = (struct iovec){&x->reply, sizeof x->reply};
}

static void test_castore_fs_init_grants_direct_io_mmap_where_the_kernel_offers_it(void **state)
{
    (void)state;
    init_exchange x;
    init_exchange_make(&x, true, ALLOW_MMAP_BIT2 | 1u);
    fs_init_watch watch = {.wanted = FS_INIT_DIRECT_IO_ALLOW_MMAP};
    fs_init_watch_request(&watch, &x.request, sizeof x.request);
    assert_false(fs_init_watch_granted(&watch, FS_INIT_DIRECT_IO_ALLOW_MMAP)); /* not yet sent */
    assert_true(fs_init_watch_reply(&watch, x.iov, 2));
    assert_int_equal(x.reply.flags2, ALLOW_MMAP_BIT2); /* only what was wanted */
    assert_true(fs_init_watch_granted(&watch, FS_INIT_DIRECT_IO_ALLOW_MMAP));
    assert_true(fs_init_watch_granted(&watch, FUSE_ASYNC_READ)); /* libfuse's own, as sent */
}

static void test_castore_fs_init_adds_nothing_the_kernel_did_not_offer(void **state)
{
    (void)state;
    fs_init_watch watch = {.wanted = FS_INIT_DIRECT_IO_ALLOW_MMAP};
    init_exchange x;
    /* a kernel with flags2 but without the flag (Linux 6.1) */
    init_exchange_make(&x, true, 1u);
    fs_init_watch_request(&watch, &x.request, sizeof x.request);
    assert_true(fs_init_watch_reply(&watch, x.iov, 2));
    assert_int_equal(x.reply.flags2, 0);
    assert_false(fs_init_watch_granted(&watch, FS_INIT_DIRECT_IO_ALLOW_MMAP));

    /* a kernel without flags2 at all, whose request ends after flags (before 7.36) */
    watch = (fs_init_watch){.wanted = FS_INIT_DIRECT_IO_ALLOW_MMAP};
    init_exchange_make(&x, false, ALLOW_MMAP_BIT2);
    fs_init_watch_request(&watch, &x.request, sizeof x.request.in + 16);
    assert_true(fs_init_watch_reply(&watch, x.iov, 2));
    assert_int_equal(x.reply.flags2, 0);
    assert_false(fs_init_watch_granted(&watch, FS_INIT_DIRECT_IO_ALLOW_MMAP));
}

static void test_castore_fs_init_leaves_other_messages_alone(void **state)
{
    (void)state;
    fs_init_watch watch = {.wanted = FS_INIT_DIRECT_IO_ALLOW_MMAP};
    init_exchange x;
    init_exchange_make(&x, true, ALLOW_MMAP_BIT2);
    /* another request, and a message too short to be one, are not the INIT request */
    x.request.in.opcode = FUSE_LOOKUP;
    fs_init_watch_request(&watch, &x.request, sizeof x.request);
    fs_init_watch_request(&watch, &x.request, 8);
    assert_false(fs_init_watch_reply(&watch, x.iov, 2));
    assert_int_equal(x.reply.flags2, 0);
    assert_false(fs_init_watch_granted(&watch, FS_INIT_DIRECT_IO_ALLOW_MMAP));

    /* a reply to another request changes nothing and does not end the watch */
    x.request.in.opcode = FUSE_INIT;
    fs_init_watch_request(&watch, &x.request, sizeof x.request);
    x.out.unique = 4;
    assert_false(fs_init_watch_reply(&watch, x.iov, 2));
    assert_int_equal(x.reply.flags2, 0);
    assert_false(fs_init_watch_granted(&watch, FS_INIT_DIRECT_IO_ALLOW_MMAP));

    /* an error answer to INIT grants nothing, and ends the watch: nothing is changed later */
    x.out.unique = 2;
    x.out.error = -EPROTO;
    assert_true(fs_init_watch_reply(&watch, x.iov, 1));
    assert_false(fs_init_watch_granted(&watch, FS_INIT_DIRECT_IO_ALLOW_MMAP));
    x.out.error = 0;
    assert_false(fs_init_watch_reply(&watch, x.iov, 2));
    assert_int_equal(x.reply.flags2, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_castore_fs_stream_reads_in_order_with_one_reader),
        cmocka_unit_test(test_castore_fs_stream_serves_out_of_order_reads_from_its_window),
        cmocka_unit_test(test_castore_fs_stream_restarts_for_a_read_before_its_window),
        cmocka_unit_test(test_castore_fs_stream_left_open_is_closed_with_the_budget),
        cmocka_unit_test(test_castore_fs_stream_concurrent_readers_of_one_file),
        cmocka_unit_test(test_castore_fs_stream_fails_eio_on_a_blob_that_is_not_the_node),
        cmocka_unit_test(test_castore_fs_stream_open_files_share_a_bounded_budget),
        cmocka_unit_test(test_castore_fs_inode_numbers_are_stable_per_digest),
        cmocka_unit_test(test_castore_fs_init_grants_direct_io_mmap_where_the_kernel_offers_it),
        cmocka_unit_test(test_castore_fs_init_adds_nothing_the_kernel_did_not_offer),
        cmocka_unit_test(test_castore_fs_init_leaves_other_messages_alone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
