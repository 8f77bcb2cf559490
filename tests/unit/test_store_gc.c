/*
 * Roots, pins and the garbage collector on a real on-disk store (store_roots.h, store_gc.h):
 * what a root or a live pin keeps survives with its whole closure, the rest goes, and the
 * store verifies clean afterwards; dead pins and dead indirect roots are retired; a writer
 * holding gc off is waited for and what it pinned is kept; a damaged live directory stops gc
 * before it removes anything; the input cache loses exactly the entries of what went.
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/build_inputs.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/node.h"
#include "ocibuild/store.h"
#include "ocibuild/store_gc.h"
#include "ocibuild/store_roots.h"
#include "ocibuild/store_verify.h"
#include "test_helpers.h"

typedef struct fixture {
    char *tmp;
    obi_store *store;
    obi_node kept;  /* top/ = {readme, sub/ = {leaf}}, rooted by the tests that want it */
    obi_node loose; /* a file nothing keeps */
    obi_digest leaf, readme, sub;
} fixture;

static obi_digest put_blob(fixture *f, const char *text)
{
    obi_digest d;
    assert_ok(obi_blob_put_bytes(f->store->blobs, text, strlen(text), &d, err_ptr_));
    return d;
}

static void put_tree(fixture *f)
{
    f->leaf = put_blob(f, "leaf contents");
    f->readme = put_blob(f, "readme contents");
    cleanup_directory obi_directory *sub = obi_directory_new();
    obi_node node = {0};
    assert_ok(obi_node_init_file(&node, "leaf", 4, &f->leaf, 13, false));
    assert_ok(obi_directory_add(sub, &node));
    obi_node_clear(&node);
    assert_ok(obi_directory_digest(sub, &f->sub, err_ptr_));
    cleanup_directory obi_directory *top = obi_directory_new();
    assert_ok(obi_node_init_directory(&node, "sub", 3, &f->sub, obi_directory_size(sub)));
    assert_ok(obi_directory_add(top, &node));
    obi_node_clear(&node);
    assert_ok(obi_node_init_file(&node, "readme", 6, &f->readme, 15, false));
    assert_ok(obi_directory_add(top, &node));
    obi_node_clear(&node);
    cleanup_directory_putter obi_directory_putter *p = NULL;
    obi_digest top_digest;
    assert_ok(obi_directory_open_put(f->store->directories, &p, err_ptr_));
    assert_ok(obi_directory_put(p, sub, NULL, err_ptr_));
    assert_ok(obi_directory_put(p, top, NULL, err_ptr_));
    assert_ok(obi_directory_putter_finish(p, &top_digest, err_ptr_));
    assert_ok(obi_node_init_directory(&f->kept, "top", 3, &top_digest, obi_directory_size(top)));
    obi_digest loose = put_blob(f, "nobody wants this");
    assert_ok(obi_node_init_file(&f->loose, "loose", 5, &loose, 17, false));
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->tmp = obi_test_tmpdir();
    cleanup_free char *root = obi_path_join(f->tmp, "store");
    assert_ok(obi_store_open(root, root, &f->store, err_ptr_));
    assert_non_null(f->store->local_root);
    put_tree(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_node_clear(&f->kept);
    obi_node_clear(&f->loose);
    obi_store_close(f->store);
    obi_test_tmpdir_remove(f->tmp);
    free(f);
    return 0;
}

static obi_store_gc_stats collect(fixture *f, const obi_store_gc_options *options)
{
    obi_store_gc_options defaults = {0};
    obi_store_gc_stats stats;
    obi_store_gc *gc = NULL;
    assert_ok(obi_store_gc_begin(f->store, &gc, err_ptr_));
    assert_ok(obi_store_gc_sweep(gc, options ? options : &defaults, &stats, err_ptr_));
    obi_store_gc_end(gc);
    return stats;
}

static bool has_blob(fixture *f, const obi_digest *d)
{
    return obi_blob_has(f->store->blobs, d, NULL) == 1;
}

static bool has_directory(fixture *f, const obi_digest *d)
{
    cleanup_directory obi_directory *dir = NULL;
    return obi_directory_get(f->store->directories, d, &dir, NULL) == 0;
}

static void assert_verifies_clean(fixture *f)
{
    obi_store_verify_stats stats;
    assert_ok(obi_store_verify(f->store, NULL, NULL, &stats, err_ptr_));
    assert_int_equal(stats.faults, 0);
}

static void assert_tree_kept(fixture *f)
{
    assert_true(has_directory(f, &f->kept.digest));
    assert_true(has_directory(f, &f->sub));
    assert_true(has_blob(f, &f->leaf));
    assert_true(has_blob(f, &f->readme));
}

static void test_store_gc_keeps_a_rooted_closure_and_collects_the_rest(void **state)
{
    fixture *f = *state;
    assert_ok(obi_store_root_add(f->store, "keep/top", &f->kept, 1, err_ptr_));
    obi_store_gc_stats stats = collect(f, NULL);
    assert_tree_kept(f);
    assert_false(has_blob(f, &f->loose.digest));
    assert_int_equal(stats.roots, 1);
    assert_int_equal(stats.live_blobs, 2);
    assert_int_equal(stats.live_directories, 2);
    assert_int_equal(stats.blobs_removed, 1);
    assert_int_equal(stats.bytes_freed, 17);
    assert_verifies_clean(f);
}

static void test_store_gc_without_roots_collects_everything_and_verifies_clean(void **state)
{
    fixture *f = *state;
    obi_store_gc_stats stats = collect(f, NULL);
    assert_int_equal(stats.blobs_removed, 3);
    assert_int_equal(stats.directories_removed, 2);
    assert_false(has_directory(f, &f->kept.digest));
    assert_false(has_blob(f, &f->leaf));
    assert_verifies_clean(f);
}

static void test_store_gc_dry_run_removes_nothing(void **state)
{
    fixture *f = *state;
    obi_store_gc_options options = {.dry_run = true};
    obi_store_gc_stats stats = collect(f, &options);
    assert_int_equal(stats.blobs_removed, 3);
    assert_true(stats.bytes_freed >= 13 + 15 + 17);
    assert_tree_kept(f);
    assert_true(has_blob(f, &f->loose.digest));
}

static void test_store_gc_max_freed_stops_early_and_leaves_a_clean_store(void **state)
{
    fixture *f = *state;
    /* every unreachable directory goes first (their rows count), then blobs until the limit */
    obi_store_gc_options options = {.max_freed = 1};
    obi_store_gc_stats stats = collect(f, &options);
    assert_int_equal(stats.directories_removed, 2);
    assert_int_equal(stats.blobs_removed, 0);
    assert_verifies_clean(f);
    /* blobs of 13, 15 and 17 bytes: the limit is passed after one or two of them */
    options.max_freed = 14;
    stats = collect(f, &options);
    assert_in_range(stats.blobs_removed, 1, 2);
    assert_verifies_clean(f);
}

static void test_store_gc_keeps_what_a_live_pin_holds(void **state)
{
    fixture *f = *state;
    cleanup_store_pin obi_store_pin *pin = NULL;
    assert_ok(obi_store_pin_new(f->store, &pin, err_ptr_));
    assert_ok(obi_store_pin_add(pin, &f->kept, err_ptr_));
    assert_ok(obi_store_pin_add(pin, &f->loose, err_ptr_));
    collect(f, NULL);
    assert_tree_kept(f);
    assert_true(has_blob(f, &f->loose.digest));
    /* freed, the pin keeps nothing */
    obi_store_pin_free(steal_pointer(&pin));
    collect(f, NULL);
    assert_false(has_blob(f, &f->loose.digest));
    assert_false(has_directory(f, &f->kept.digest));
}

static void test_store_gc_retires_the_pin_of_a_dead_process(void **state)
{
    fixture *f = *state;
    pid_t child = fork();
    if (child == 0) {
        obi_store_pin *pin = NULL;
        /* dies holding its pin, as a SIGKILLed build would */
        _exit(obi_store_pin_new(f->store, &pin, NULL) < 0 ||
                      obi_store_pin_add(pin, &f->kept, NULL) < 0
                  ? 1
                  : 0);
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(WEXITSTATUS(status), 0);
    cleanup_free char *pins = obi_path_join(f->store->local_root, OBI_TEMP_ROOTS_DIR);
    cleanup_dir DIR *dir = opendir(pins);
    assert_non_null(dir);
    collect(f, NULL);
    assert_false(has_directory(f, &f->kept.digest));
    /* and its file is gone */
    rewinddir(dir);
    struct dirent *de;
    size_t files = 0;
    while ((de = readdir(dir)))
        files += de->d_name[0] != '.';
    assert_int_equal(files, 0);
}

/* Pin files (temproots/, not counting names starting with '.'). */
static size_t count_pin_files(fixture *f)
{
    cleanup_free char *pins = obi_path_join(f->store->local_root, OBI_TEMP_ROOTS_DIR);
    cleanup_dir DIR *dir = opendir(pins);
    if (!dir)
        return 0;
    struct dirent *de;
    size_t files = 0;
    while ((de = readdir(dir)))
        files += de->d_name[0] != '.';
    return files;
}

/* The size of the one pin file there is. */
static off_t pin_file_size(fixture *f)
{
    cleanup_free char *pins = obi_path_join(f->store->local_root, OBI_TEMP_ROOTS_DIR);
    cleanup_dir DIR *dir = opendir(pins);
    assert_non_null(dir);
    struct dirent *de;
    struct stat st = {0};
    size_t files = 0;
    while ((de = readdir(dir)))
        if (de->d_name[0] != '.' && ++files)
            assert_int_equal(fstatat(dirfd(dir), de->d_name, &st, 0), 0);
    assert_int_equal(files, 1);
    return st.st_size;
}

static obi_store_pin *pin_one(fixture *f, const obi_node *node)
{
    obi_store_pin *pin = NULL;
    assert_ok(obi_store_pin_new(f->store, &pin, err_ptr_));
    assert_ok(obi_store_pin_add(pin, node, err_ptr_));
    return pin;
}

static int count_pin_roots(const obi_store_root *root, void *ctx, obi_error **err)
{
    (void)err;
    *(size_t *)ctx += root->pin;
    return 0;
}

static void test_store_pins_of_one_process_share_one_file(void **state)
{
    fixture *f = *state;
    obi_store_pin *pins[3];
    for (size_t i = 0; i < OBI_ARRAY_SIZE(pins); i++)
        pins[i] = pin_one(f, i % 2 ? &f->loose : &f->kept);
    assert_int_equal(count_pin_files(f), 1);
    size_t listed = 0;
    assert_ok(obi_store_roots_list(f->store, true, false, count_pin_roots, &listed, err_ptr_));
    assert_int_equal(listed, 1);
    /* many more, each freed again, while the first ones live */
    for (int i = 0; i < 200; i++)
        obi_store_pin_free(pin_one(f, &f->loose));
    assert_int_equal(count_pin_files(f), 1);
    obi_store_pin_free(pins[0]);
    obi_store_pin_free(pins[1]);
    assert_int_equal(count_pin_files(f), 1);
    /* the process's last pin takes the file with it */
    obi_store_pin_free(pins[2]);
    assert_int_equal(count_pin_files(f), 0);
}

static void test_store_gc_collects_what_a_freed_pin_held_while_others_live(void **state)
{
    fixture *f = *state;
    cleanup_store_pin obi_store_pin *tree = pin_one(f, &f->kept);
    obi_store_pin *loose = pin_one(f, &f->loose);
    obi_store_pin_free(loose);
    assert_int_equal(count_pin_files(f), 1);
    collect(f, NULL);
    assert_tree_kept(f);
    assert_false(has_blob(f, &f->loose.digest));
    assert_verifies_clean(f);
}

static void test_store_gc_keeps_an_object_pinned_twice_and_released_once(void **state)
{
    fixture *f = *state;
    cleanup_store_pin obi_store_pin *tree = pin_one(f, &f->kept);
    obi_store_pin *first = pin_one(f, &f->loose);
    obi_store_pin *second = pin_one(f, &f->loose);
    obi_store_pin_free(first);
    collect(f, NULL);
    assert_true(has_blob(f, &f->loose.digest));
    obi_store_pin_free(second);
    collect(f, NULL);
    assert_false(has_blob(f, &f->loose.digest));
    assert_tree_kept(f);
}

static void test_store_pin_file_compaction_keeps_live_pins_and_bounds_the_file(void **state)
{
    fixture *f = *state;
    cleanup_store_pin obi_store_pin *tree = pin_one(f, &f->kept);
    cleanup_store_pin obi_store_pin *middle = NULL;
    /* ~90 bytes a round: 270 KB without compaction, which starts at 64 KiB released */
    for (int i = 0; i < 3000; i++) {
        if (i == 1500)
            middle = pin_one(f, &f->loose);
        obi_store_pin_free(pin_one(f, &f->loose));
        assert_true(pin_file_size(f) < (68 << 10));
    }
    collect(f, NULL);
    assert_tree_kept(f);
    assert_true(has_blob(f, &f->loose.digest));
    obi_store_pin_free(steal_pointer(&middle));
    collect(f, NULL);
    assert_tree_kept(f);
    assert_false(has_blob(f, &f->loose.digest));
    assert_int_equal(count_pin_files(f), 1);
}

typedef struct pin_thread {
    fixture *f;
    int failures;
} pin_thread;

static void *pin_and_free_in_a_loop(void *arg)
{
    pin_thread *t = arg;
    for (int i = 0; i < 300; i++) {
        obi_store_pin *pin = NULL;
        if (obi_store_pin_new(t->f->store, &pin, NULL) < 0 ||
            obi_store_pin_add(pin, &t->f->loose, NULL) < 0)
            t->failures++;
        obi_store_pin_free(pin);
    }
    return NULL;
}

static void test_store_pins_of_many_threads_share_one_file(void **state)
{
    fixture *f = *state;
    cleanup_store_pin obi_store_pin *tree = pin_one(f, &f->kept);
    pthread_t threads[4];
    pin_thread args[4];
    for (size_t i = 0; i < OBI_ARRAY_SIZE(threads); i++) {
        args[i] = (pin_thread){f, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, pin_and_free_in_a_loop, &args[i]), 0);
    }
    for (size_t i = 0; i < OBI_ARRAY_SIZE(threads); i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
    assert_int_equal(count_pin_files(f), 1);
    collect(f, NULL);
    assert_tree_kept(f);
    assert_false(has_blob(f, &f->loose.digest));
}

static void test_store_pins_of_a_forked_child_go_to_a_file_of_its_own(void **state)
{
    fixture *f = *state;
    cleanup_store_pin obi_store_pin *tree = pin_one(f, &f->kept);
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t child = fork();
    if (child == 0) {
        close(ready[0]);
        close(go[1]);
        /* its copy of the parent's pin, freed, must not release the parent's */
        obi_store_pin_free(steal_pointer(&tree));
        obi_store_pin *own = NULL;
        int r = obi_store_pin_new(f->store, &own, NULL);
        if (r == 0)
            r = obi_store_pin_add(own, &f->loose, NULL);
        char c;
        _exit(r == 0 && write(ready[1], "x", 1) == 1 && read(go[0], &c, 1) >= 0 ? 0 : 1);
    }
    close(ready[1]);
    close(go[0]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1); /* 0 when the child failed */
    assert_int_equal(count_pin_files(f), 2);
    collect(f, NULL);
    assert_tree_kept(f);
    assert_true(has_blob(f, &f->loose.digest));
    /* the child exits without freeing its pin: its file is swept, the parent's stays */
    close(go[1]);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(WEXITSTATUS(status), 0);
    collect(f, NULL);
    assert_tree_kept(f);
    assert_false(has_blob(f, &f->loose.digest));
    assert_int_equal(count_pin_files(f), 1);
    close(ready[0]);
}

static void test_store_gc_sweeps_the_pin_file_of_a_killed_process(void **state)
{
    fixture *f = *state;
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(ready[0]);
        obi_store_pin *pin = NULL;
        if (obi_store_pin_new(f->store, &pin, NULL) < 0 ||
            obi_store_pin_add(pin, &f->kept, NULL) < 0 || write(ready[1], "x", 1) != 1)
            _exit(1);
        for (;;)
            pause(); /* until killed, or its parent dies (a failed test) */
    }
    close(ready[1]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    collect(f, NULL);
    assert_tree_kept(f);
    assert_int_equal(kill(child, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status));
    collect(f, NULL);
    assert_false(has_directory(f, &f->kept.digest));
    assert_int_equal(count_pin_files(f), 0);
    close(ready[0]);
}

/* In a child (rlimits and signal dispositions are process-wide): a pin whose line cannot be
 * written whole fails and keeps nothing, and the next line still starts a line of its own. */
static int pin_past_a_failed_write(fixture *f)
{
    obi_store_pin *tree = NULL, *failed = NULL, *after = NULL;
    if (obi_store_pin_new(f->store, &tree, NULL) < 0 || obi_store_pin_add(tree, &f->kept, NULL) < 0)
        return 1;
    /* room for 20 more bytes: the next line is cut there */
    struct rlimit saved, small;
    signal(SIGXFSZ, SIG_IGN);
    if (getrlimit(RLIMIT_FSIZE, &saved) < 0)
        return 2;
    small = saved;
    small.rlim_cur = (rlim_t)pin_file_size(f) + 20;
    if (setrlimit(RLIMIT_FSIZE, &small) < 0)
        return 3;
    obi_error *err = NULL;
    int r = obi_store_pin_new(f->store, &failed, NULL);
    if (r == 0)
        r = obi_store_pin_add(failed, &f->loose, &err);
    bool named = err && strstr(err->message, "write ");
    obi_error_free(err);
    if (r != -EFBIG || !named || setrlimit(RLIMIT_FSIZE, &saved) < 0)
        return 4;
    if (obi_store_pin_new(f->store, &after, NULL) < 0 ||
        obi_store_pin_add(after, &f->kept, NULL) < 0)
        return 5;
    return 0;
}

static void test_store_pin_whose_line_cannot_be_written_leaves_the_file_readable(void **state)
{
    fixture *f = *state;
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(ready[0]);
        char code = (char)pin_past_a_failed_write(f);
        if (write(ready[1], &code, 1) != 1)
            _exit(1);
        for (;;)
            pause(); /* until killed, or its parent dies (a failed test) */
    }
    close(ready[1]);
    char code = -1;
    assert_int_equal(read(ready[0], &code, 1), 1);
    assert_int_equal(code, 0);
    collect(f, NULL); /* fails if the file does not parse */
    assert_int_equal(kill(child, SIGKILL), 0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    close(ready[0]);
    assert_tree_kept(f);
    assert_false(has_blob(f, &f->loose.digest));
}

static void test_store_gc_removes_a_dead_compaction_and_leaves_other_hidden_files(void **state)
{
    fixture *f = *state;
    cleanup_free char *pins = obi_path_join(f->store->local_root, OBI_TEMP_ROOTS_DIR);
    cleanup_free char *leftover = obi_path_join(pins, ".0123456789abcdef0123456789abcdef");
    cleanup_free char *hidden = obi_path_join(pins, ".keep");
    assert_ok(obi_mkdir_p(pins, 0755, err_ptr_));
    assert_ok(obi_write_file(leftover, "1 blob x\n", 9, 0644, err_ptr_));
    assert_ok(obi_write_file(hidden, "", 0, 0644, err_ptr_));
    /* while its writer holds it, it is neither read (it does not parse) nor removed */
    cleanup_close int writer = open(leftover, O_RDONLY | O_CLOEXEC);
    assert_int_equal(flock(writer, LOCK_EX), 0);
    collect(f, NULL);
    assert_int_equal(access(leftover, F_OK), 0);
    close(steal_fd(&writer));
    collect(f, NULL);
    assert_int_equal(access(leftover, F_OK), -1);
    assert_int_equal(access(hidden, F_OK), 0);
}

static void test_store_gc_reads_older_pin_files_and_unfinished_lines(void **state)
{
    fixture *f = *state;
    cleanup_free char *pins = obi_path_join(f->store->local_root, OBI_TEMP_ROOTS_DIR);
    cleanup_free char *path = obi_path_join(pins, "0123456789abcdef0123456789abcdef");
    assert_ok(obi_mkdir_p(pins, 0755, err_ptr_));
    /* an older ocibuild's pin (no numbers), and a release not written to its end */
    char loose[OBI_DIGEST_HEX_LEN + 1], kept[OBI_DIGEST_HEX_LEN + 1], text[300];
    obi_digest_to_hex(&f->loose.digest, loose);
    obi_digest_to_hex(&f->kept.digest, kept);
    snprintf(text, sizeof text, "blob %s\n7 directory %s\n7 relea", loose, kept);
    assert_ok(obi_write_file(path, text, strlen(text), 0644, err_ptr_));
    cleanup_close int owner = open(path, O_RDONLY | O_CLOEXEC);
    assert_int_equal(flock(owner, LOCK_EX), 0);
    collect(f, NULL);
    assert_tree_kept(f);
    assert_true(has_blob(f, &f->loose.digest));
    /* a line that is none of the three stops gc, naming the file and the line */
    assert_ok(obi_write_file(path, "7 released\nx y\n", 15, 0644, err_ptr_));
    obi_store_gc *gc = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_store_gc_begin(f->store, &gc, &err), -EINVAL,
                      "0123456789abcdef0123456789abcdef: line 2");
    assert_true(has_blob(f, &f->loose.digest));
}

static void test_store_gc_indirect_root_lives_as_long_as_its_file(void **state)
{
    fixture *f = *state;
    cleanup_free char *file = obi_path_join(f->tmp, "result.root");
    assert_ok(obi_store_root_add_indirect(f->store, file, &f->kept, 1, err_ptr_));
    collect(f, NULL);
    assert_tree_kept(f);
    assert_int_equal(unlink(file), 0);
    obi_store_gc_stats stats = collect(f, NULL);
    assert_int_equal(stats.roots, 0);
    assert_false(has_directory(f, &f->kept.digest));
    /* the dangling link was removed */
    cleanup_free char *auto_dir = obi_path_join(f->store->local_root, "gcroots/auto");
    cleanup_dir DIR *dir = opendir(auto_dir);
    assert_non_null(dir);
    struct dirent *de;
    size_t links = 0;
    while ((de = readdir(dir)))
        links += de->d_name[0] != '.';
    assert_int_equal(links, 0);
}

static void test_store_gc_waits_for_a_writer_and_keeps_what_it_pinned(void **state)
{
    fixture *f = *state;
    int go[2], done[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    /* forked before the writer holds gc off: a child inheriting the held lock would hold it too */
    pid_t child = fork();
    if (child == 0) {
        close(go[1]);
        close(done[0]);
        char c;
        obi_store *store = NULL;
        obi_store_gc *gc = NULL;
        obi_store_gc_stats stats;
        obi_store_gc_options options = {0};
        int r = read(go[0], &c, 1) == 1 ? 0 : -EIO;
        if (r == 0)
            r = obi_store_open(f->store->local_root, f->store->local_root, &store, NULL);
        if (r == 0)
            r = obi_store_gc_begin(store, &gc, NULL);
        if (r == 0)
            r = obi_store_gc_sweep(gc, &options, &stats, NULL);
        obi_store_gc_end(gc);
        obi_store_close(store);
        _exit(r == 0 && write(done[1], "x", 1) == 1 ? 0 : 1);
    }
    close(go[0]);
    close(done[1]);
    cleanup_store_pin obi_store_pin *pin = NULL;
    assert_ok(obi_store_pin_new(f->store, &pin, err_ptr_));
    assert_ok(obi_store_pin_hold_gc(pin, err_ptr_));
    assert_int_equal(write(go[1], "x", 1), 1);
    /* the "import": an object found present, then pinned, while gc waits */
    struct pollfd pfd = {done[0], POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, 300), 0);
    assert_ok(obi_store_pin_add(pin, &f->loose, err_ptr_));
    obi_store_pin_release_gc(pin);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(WEXITSTATUS(status), 0);
    close(go[1]);
    close(done[0]);
    assert_true(has_blob(f, &f->loose.digest));
    assert_false(has_directory(f, &f->kept.digest));
}

/* Descriptors of this process open on ROOT/gc.lock. */
static int count_gc_lock_fds(fixture *f)
{
    char *lock = obi_path_join(f->store->local_root, "gc.lock");
    DIR *dir = opendir("/proc/self/fd");
    assert_non_null(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dir))) {
        char link[300], target[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len > 0) {
            target[len] = 0;
            n += !strcmp(target, lock);
        }
    }
    closedir(dir);
    free(lock);
    return n;
}

/* Whether a gc could take gc.lock now (a descriptor of its own, not waiting). */
static bool gc_could_run(fixture *f)
{
    char *lock = obi_path_join(f->store->local_root, "gc.lock");
    int fd = open(lock, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    bool could = flock(fd, LOCK_EX | LOCK_NB) == 0;
    close(fd); /* drops it again */
    free(lock);
    return could;
}

/* The process's holds on gc.lock are counted on one descriptor, kept open: gc is kept out
 * until the last release. A forked child neither keeps the parent's lock (its copy of the
 * descriptor is closed at the fork) nor drops it (releasing a hold it inherited with a pin, or
 * taking and releasing one of its own on a descriptor of its own). */
static void test_store_gc_holds_are_counted_on_one_descriptor_and_fork_safe(void **state)
{
    fixture *f = *state;
    cleanup_store_pin obi_store_pin *a = NULL;
    cleanup_store_pin obi_store_pin *b = NULL;
    assert_ok(obi_store_pin_new(f->store, &a, err_ptr_));
    assert_ok(obi_store_pin_new(f->store, &b, err_ptr_));
    int before = count_gc_lock_fds(f);
    assert_ok(obi_store_pin_hold_gc(a, err_ptr_));
    assert_ok(obi_store_pin_hold_gc(b, err_ptr_));
    assert_ok(obi_store_pin_add(b, &f->loose, err_ptr_)); /* a third hold, for the add */
    assert_true(count_gc_lock_fds(f) <= 1);
    assert_false(gc_could_run(f));
    obi_store_pin_release_gc(a);
    assert_false(gc_could_run(f));
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t child = fork();
    if (child == 0) {
        close(ready[0]);
        close(go[1]);
        int ok = count_gc_lock_fds(f) == 0; /* its copy closed at the fork */
        obi_store_pin_release_gc(b);        /* the parent's hold, copied: not the child's */
        obi_store_pin *own = NULL;
        ok = ok && obi_store_pin_new(f->store, &own, NULL) == 0 &&
             obi_store_pin_hold_gc(own, NULL) == 0;
        obi_store_pin_release_gc(own); /* its own descriptor unlocked, not the parent's */
        obi_store_pin_free(own);
        char c;
        _exit(ok && write(ready[1], "x", 1) == 1 && read(go[0], &c, 1) >= 0 ? 0 : 1);
    }
    close(ready[1]);
    close(go[0]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1); /* 0 when the child failed */
    assert_false(gc_could_run(f));
    obi_store_pin_release_gc(b);
    assert_true(gc_could_run(f)); /* the child, still alive, holds nothing */
    assert_int_equal(count_gc_lock_fds(f), before > 0 ? before : 1); /* kept open */
    close(go[1]);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(WEXITSTATUS(status), 0);
    close(ready[0]);
}

static void test_store_gc_stops_at_a_damaged_live_directory(void **state)
{
    fixture *f = *state;
    assert_ok(obi_store_root_add(f->store, "top", &f->kept, 1, err_ptr_));
    cleanup_free char *path = obi_path_join(f->store->local_root, "directories.sqlite");
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "UPDATE directories SET data = x'0a00' WHERE digest = ?1",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(stmt, 1, f->sub.bytes, OBI_DIGEST_LEN, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    obi_store_gc *gc = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_store_gc_begin(f->store, &gc, &err), -EIO, "store verify");
    assert_true(has_blob(f, &f->leaf));
    assert_true(has_blob(f, &f->loose.digest));
}

static void test_store_roots_refuse_bad_names_and_bad_files(void **state)
{
    fixture *f = *state;
    static const char *const bad[] = {"",     "..", "a/../b", ".hidden",
                                      "a//b", "a/", "sp ace", "new\nline"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(bad); i++) {
        obi_error *err = NULL;
        assert_fails_with(err, obi_store_root_add(f->store, bad[i], &f->kept, 1, &err), -EINVAL,
                          "root name");
    }
    cleanup_free char *file = obi_path_join(f->store->local_root, "gcroots/broken");
    cleanup_free char *roots = obi_path_join(f->store->local_root, "gcroots");
    assert_ok(obi_mkdir_p(roots, 0755, err_ptr_));
    assert_ok(obi_write_file(file, "blob 00\n", 8, 0644, err_ptr_));
    obi_store_gc *gc = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_store_gc_begin(f->store, &gc, &err), -EINVAL, "broken: line 1");
    assert_true(has_blob(f, &f->loose.digest));
    /* a crashed atomic write's leftover is no root: gc removes it */
    assert_int_equal(unlink(file), 0);
    cleanup_free char *leftover = obi_path_join(roots, "mine.tmp.123.AbCdEf");
    assert_ok(obi_write_file(leftover, "blob 00\n", 8, 0644, err_ptr_));
    obi_store_gc_stats stats = collect(f, NULL);
    assert_int_equal(stats.roots, 0);
    assert_int_equal(access(leftover, F_OK), -1);
}

static void test_store_roots_need_a_local_store(void **state)
{
    (void)state;
    cleanup_store obi_store *store = NULL;
    assert_ok(obi_store_open("memory://", "memory://", &store, err_ptr_));
    assert_null(store->local_root);
    obi_node node = {0};
    obi_error *err = NULL;
    assert_fails_with(err, obi_store_root_add(store, "x", &node, 0, &err), -ENOTSUP, "on-disk");
    obi_store_gc *gc = NULL;
    assert_fails_with(err, obi_store_gc_begin(store, &gc, &err), -ENOTSUP, "on-disk");
    /* pins do nothing there */
    cleanup_store_pin obi_store_pin *pin = NULL;
    assert_ok(obi_store_pin_new(store, &pin, err_ptr_));
    assert_ok(obi_store_pin_add(pin, &node, err_ptr_));
}

static bool keep_live(obi_store_object_kind kind, const obi_digest *digest, void *ctx)
{
    return obi_store_gc_is_live(ctx, kind, digest);
}

static void test_store_gc_prunes_the_input_cache_entries_of_what_went(void **state)
{
    fixture *f = *state;
    assert_ok(obi_store_root_add(f->store, "top", &f->kept, 1, err_ptr_));
    cleanup_free char *cache = obi_path_join(f->tmp, "input-cache");
    cleanup_free char *kept = NULL, *loose = NULL;
    assert_ok(obi_input_cache_get(f->store, cache, &f->kept, NULL, &kept, err_ptr_));
    assert_ok(obi_input_cache_get(f->store, cache, &f->loose, NULL, &loose, err_ptr_));
    /* a materialization in progress for the live tree, and one for nothing live */
    char hex[OBI_DIGEST_HEX_LEN + 1], name[200];
    obi_digest_to_hex(&f->kept.digest, hex);
    snprintf(name, sizeof name, "%s/.tmp-d-%s-1234", cache, hex);
    assert_int_equal(mkdir(name, 0755), 0);
    obi_digest_to_hex(&f->loose.digest, hex);
    char stale[200];
    snprintf(stale, sizeof stale, "%s/.tmp-f-%s-5678", cache, hex);
    assert_int_equal(mkdir(stale, 0755), 0);
    obi_store_gc *gc = NULL;
    assert_ok(obi_store_gc_begin(f->store, &gc, err_ptr_));
    obi_input_cache_prune_stats stats;
    assert_ok(obi_input_cache_prune(cache, keep_live, gc, false, &stats, err_ptr_));
    obi_store_gc_end(gc);
    assert_int_equal(stats.entries, 2);
    assert_int_equal(access(kept, F_OK), 0);
    assert_int_equal(access(name, F_OK), 0);
    assert_int_equal(access(loose, F_OK), -1);
    assert_int_equal(access(stale, F_OK), -1);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_store_gc_keeps_a_rooted_closure_and_collects_the_rest),
        T(test_store_gc_without_roots_collects_everything_and_verifies_clean),
        T(test_store_gc_dry_run_removes_nothing),
        T(test_store_gc_max_freed_stops_early_and_leaves_a_clean_store),
        T(test_store_gc_keeps_what_a_live_pin_holds),
        T(test_store_gc_retires_the_pin_of_a_dead_process),
        T(test_store_pins_of_one_process_share_one_file),
        T(test_store_gc_collects_what_a_freed_pin_held_while_others_live),
        T(test_store_gc_keeps_an_object_pinned_twice_and_released_once),
        T(test_store_pin_file_compaction_keeps_live_pins_and_bounds_the_file),
        T(test_store_pins_of_many_threads_share_one_file),
        T(test_store_pins_of_a_forked_child_go_to_a_file_of_its_own),
        T(test_store_gc_sweeps_the_pin_file_of_a_killed_process),
        T(test_store_gc_reads_older_pin_files_and_unfinished_lines),
        T(test_store_gc_removes_a_dead_compaction_and_leaves_other_hidden_files),
        T(test_store_pin_whose_line_cannot_be_written_leaves_the_file_readable),
        T(test_store_gc_indirect_root_lives_as_long_as_its_file),
        T(test_store_gc_holds_are_counted_on_one_descriptor_and_fork_safe),
        T(test_store_gc_waits_for_a_writer_and_keeps_what_it_pinned),
        T(test_store_gc_stops_at_a_damaged_live_directory),
        T(test_store_roots_refuse_bad_names_and_bad_files),
        T(test_store_roots_need_a_local_store),
        T(test_store_gc_prunes_the_input_cache_entries_of_what_went),
    };
#undef T
    return cmocka_run_group_tests_name("store_gc", tests, NULL, NULL);
}
