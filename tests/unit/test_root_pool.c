/*
 * Root skeleton pool (root_pool.h): a skeleton given back is taken by the next build of the
 * same key and by nobody else, keys do not mix, slots bound each key, prune removes idle and
 * surplus skeletons and a crashed prune's leftovers, and concurrent takers never share one.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/fs.h"
#include "ocibuild/root_pool.h"
#include "test_helpers.h"

typedef struct fixture {
    char *dir;
    obi_root_pool *pool;
} fixture;

static int setup_slots(void **state, unsigned slots)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    assert_ok(obi_root_pool_open(f->dir, slots, &f->pool, err_ptr_));
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_slots(state, 2);
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_root_pool_close(f->pool);
    obi_test_tmpdir_remove(f->dir);
    free(f);
    return 0;
}

/* Makes DIR/name as a small skeleton (etc/passwd inside); returns its path and inode. */
static char *make_skeleton(const fixture *f, const char *name, ino_t *inode)
{
    char *path = obi_path_join(f->dir, name);
    char *etc = obi_path_join(path, "etc");
    char *passwd = obi_path_join(etc, "passwd");
    assert_ok(obi_mkdir_p(etc, 0755, err_ptr_));
    assert_ok(obi_write_file(passwd, "root:x:0:0::/:/noshell\n", 23, 0644, err_ptr_));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    if (inode)
        *inode = st.st_ino;
    free(passwd);
    free(etc);
    return path;
}

static size_t pool_entries(const fixture *f)
{
    char *pool = obi_path_join(f->dir, OBI_ROOT_POOL_DIR);
    size_t n = 0;
    DIR *d = opendir(pool);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    free(pool);
    return n;
}

static void key_of(const char *text, char key[OBI_ROOT_POOL_KEY_LEN + 1])
{
    obi_root_pool_key(text, strlen(text), key);
}

static void test_root_pool_key_is_hex_and_depends_on_every_byte(void **state)
{
    (void)state;
    char a[OBI_ROOT_POOL_KEY_LEN + 1], b[OBI_ROOT_POOL_KEY_LEN + 1], c[OBI_ROOT_POOL_KEY_LEN + 1];
    key_of("mounts: /proc proc -", a);
    key_of("mounts: /proc proc -", b);
    key_of("mounts: /proc proc d", c);
    assert_int_equal(strlen(a), OBI_ROOT_POOL_KEY_LEN);
    assert_int_equal(strspn(a, "0123456789abcdef"), OBI_ROOT_POOL_KEY_LEN);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
}

static void test_root_pool_take_from_empty_pool_leaves_dest_alone(void **state)
{
    fixture *f = *state;
    char key[OBI_ROOT_POOL_KEY_LEN + 1];
    key_of("shape", key);
    char *dest = obi_path_join(f->dir, "bundle-root");
    assert_int_equal(obi_root_pool_take(f->pool, key, dest, NULL), 0);
    struct stat st;
    assert_int_equal(lstat(dest, &st), -1);
    free(dest);
}

static void test_root_pool_given_skeleton_is_taken_by_the_same_key_only(void **state)
{
    fixture *f = *state;
    char key[OBI_ROOT_POOL_KEY_LEN + 1], other[OBI_ROOT_POOL_KEY_LEN + 1];
    key_of("shape", key);
    key_of("another shape", other);
    ino_t inode;
    char *root = make_skeleton(f, "root", &inode);
    assert_int_equal(obi_root_pool_give(f->pool, key, root, NULL), 1);
    struct stat st;
    assert_int_equal(lstat(root, &st), -1); /* moved, not copied */
    assert_int_equal(pool_entries(f), 1);

    char *dest = obi_path_join(f->dir, "next-root");
    assert_int_equal(obi_root_pool_take(f->pool, other, dest, NULL), 0);
    assert_int_equal(obi_root_pool_take(f->pool, key, dest, NULL), 1);
    assert_int_equal(stat(dest, &st), 0);
    assert_int_equal(st.st_ino, inode);
    char *passwd = obi_path_join(dest, "etc/passwd");
    assert_int_equal(access(passwd, R_OK), 0);
    assert_int_equal(pool_entries(f), 0);
    assert_int_equal(obi_root_pool_take(f->pool, key, root, NULL), 0);
    free(passwd);
    free(dest);
    free(root);
}

static void test_root_pool_keeps_at_most_its_slots_per_key(void **state)
{
    fixture *f = *state; /* 2 slots */
    char key[OBI_ROOT_POOL_KEY_LEN + 1];
    key_of("shape", key);
    char *roots[3];
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "root%d", i);
        roots[i] = make_skeleton(f, name, NULL);
    }
    assert_int_equal(obi_root_pool_give(f->pool, key, roots[0], NULL), 1);
    assert_int_equal(obi_root_pool_give(f->pool, key, roots[1], NULL), 1);
    assert_int_equal(obi_root_pool_give(f->pool, key, roots[2], NULL), 0);
    struct stat st;
    assert_int_equal(stat(roots[2], &st), 0); /* left for the caller to remove */
    assert_int_equal(pool_entries(f), 2);
    for (int i = 0; i < 3; i++)
        free(roots[i]);
}

static void test_root_pool_prune_removes_surplus_oldest_first(void **state)
{
    fixture *f = *state;
    char keys[3][OBI_ROOT_POOL_KEY_LEN + 1];
    key_of("first", keys[0]);
    key_of("second", keys[1]);
    key_of("third", keys[2]);
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "root%d", i);
        char *root = make_skeleton(f, name, NULL);
        assert_int_equal(obi_root_pool_give(f->pool, keys[i], root, NULL), 1);
        free(root);
        usleep(20000); /* distinct ctimes, whatever the filesystem's timestamp granularity */
    }
    unsigned removed = 0;
    assert_ok(obi_root_pool_prune(f->pool, 3600, 2, &removed, err_ptr_));
    assert_int_equal(removed, 1);
    assert_int_equal(pool_entries(f), 2);
    char *dest = obi_path_join(f->dir, "dest");
    assert_int_equal(obi_root_pool_take(f->pool, keys[0], dest, NULL), 0); /* the oldest went */
    assert_int_equal(obi_root_pool_take(f->pool, keys[2], dest, NULL), 1);
    free(dest);
}

static void test_root_pool_prune_removes_idle_skeletons_and_crash_leftovers(void **state)
{
    fixture *f = *state;
    char key[OBI_ROOT_POOL_KEY_LEN + 1];
    key_of("shape", key);
    char *root = make_skeleton(f, "root", NULL);
    assert_int_equal(obi_root_pool_give(f->pool, key, root, NULL), 1);
    /* What a prune killed between its rename and its removal leaves. */
    char *leftover = obi_path_join(f->dir, OBI_ROOT_POOL_DIR "/.evict-0000");
    char *leftover_file = obi_path_join(leftover, "etc/passwd");
    char *leftover_etc = obi_path_join(leftover, "etc");
    assert_ok(obi_mkdir_p(leftover_etc, 0755, err_ptr_));
    assert_ok(obi_write_file(leftover_file, "x\n", 2, 0644, err_ptr_));

    unsigned removed = 0;
    assert_ok(obi_root_pool_prune(f->pool, 3600, 64, &removed, err_ptr_));
    assert_int_equal(removed, 1); /* the leftover only: the skeleton is fresh */
    assert_int_equal(pool_entries(f), 1);
    assert_ok(obi_root_pool_prune(f->pool, 0, 64, &removed, err_ptr_));
    assert_int_equal(removed, 1); /* idle for >= 0 s */
    assert_int_equal(pool_entries(f), 0);
    free(leftover_etc);
    free(leftover_file);
    free(leftover);
    free(root);
}

/* A prune is due when none started within the interval (the stamp it leaves beside the pool);
 * an interval of 0 makes every one due. */
static void test_root_pool_prune_is_due_once_per_interval(void **state)
{
    fixture *f = *state;
    assert_true(obi_root_pool_prune_due(f->pool, 60));
    assert_ok(obi_root_pool_prune(f->pool, 0, 64, NULL, err_ptr_));
    assert_false(obi_root_pool_prune_due(f->pool, 60));
    assert_true(obi_root_pool_prune_due(f->pool, 0));
    char *stamp = obi_path_join(f->dir, OBI_ROOT_POOL_DIR ".pruned");
    struct stat st;
    assert_int_equal(stat(stamp, &st), 0);
    /* Stamped 2 minutes ago: due again; stamped in the future: due too. */
    struct timespec times[2] = {{time(NULL) - 120, 0}, {time(NULL) - 120, 0}};
    assert_int_equal(utimensat(AT_FDCWD, stamp, times, 0), 0);
    assert_true(obi_root_pool_prune_due(f->pool, 60));
    times[0].tv_sec = times[1].tv_sec = time(NULL) + 3600;
    assert_int_equal(utimensat(AT_FDCWD, stamp, times, 0), 0);
    assert_true(obi_root_pool_prune_due(f->pool, 60));
    free(stamp);
}

/* ---- concurrent takers ---- */

#define TAKERS 6
#define ROUNDS 150
#define SKELETONS 3

typedef struct taker {
    fixture *f;
    const char *key;
    int index;
    int taken;
    int errors;
} taker;

static void *take_and_give(void *arg)
{
    taker *t = arg;
    char *dest = NULL;
    if (asprintf(&dest, "%s/held-%d", t->f->dir, t->index) < 0)
        return NULL;
    char *mine = NULL;
    if (asprintf(&mine, "%s/mine-%d", dest, t->index) < 0)
        return NULL;
    for (int round = 0; round < ROUNDS; round++) {
        if (obi_root_pool_take(t->f->pool, t->key, dest, NULL) != 1)
            continue;
        t->taken++;
        /* Mark it, check nobody else's mark is in it, unmark, give back. */
        if (mkdir(mine, 0755) < 0)
            t->errors++;
        DIR *d = opendir(dest);
        struct dirent *de;
        while (d && (de = readdir(d)))
            if (!strncmp(de->d_name, "mine-", 5) && strcmp(de->d_name, mine + strlen(dest) + 1))
                t->errors++;
        if (d)
            closedir(d);
        rmdir(mine);
        if (obi_root_pool_give(t->f->pool, t->key, dest, NULL) != 1)
            t->errors++;
    }
    free(mine);
    free(dest);
    return NULL;
}

static void test_root_pool_concurrent_takers_never_share_a_skeleton(void **state)
{
    fixture *f = *state; /* setup_many: SKELETONS slots */
    char key[OBI_ROOT_POOL_KEY_LEN + 1];
    key_of("shape", key);
    for (int i = 0; i < SKELETONS; i++) {
        char name[16];
        snprintf(name, sizeof name, "root%d", i);
        char *root = make_skeleton(f, name, NULL);
        assert_int_equal(obi_root_pool_give(f->pool, key, root, NULL), 1);
        free(root);
    }
    pthread_t threads[TAKERS];
    taker takers[TAKERS];
    for (int i = 0; i < TAKERS; i++) {
        takers[i] = (taker){f, key, i, 0, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, take_and_give, &takers[i]), 0);
    }
    int taken = 0;
    for (int i = 0; i < TAKERS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(takers[i].errors, 0);
        taken += takers[i].taken;
    }
    assert_true(taken > 0);
    assert_int_equal(pool_entries(f), SKELETONS);
}

static int setup_many(void **state)
{
    return setup_slots(state, SKELETONS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_root_pool_key_is_hex_and_depends_on_every_byte),
        cmocka_unit_test_setup_teardown(test_root_pool_take_from_empty_pool_leaves_dest_alone,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_pool_given_skeleton_is_taken_by_the_same_key_only,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_pool_keeps_at_most_its_slots_per_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_root_pool_prune_is_due_once_per_interval, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_root_pool_prune_removes_surplus_oldest_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_root_pool_prune_removes_idle_skeletons_and_crash_leftovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_pool_concurrent_takers_never_share_a_skeleton,
                                        setup_many, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
