/*
 * The digest cache of friendly-form input files (digest_cache.h): a remembered digest comes back
 * for the same identity only; a change of size, mtime, ctime, inode or device misses; a file
 * changed too recently is not remembered; a broken entry misses.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/digest_cache.h"
#include "ocibuild/fs.h"
#include "test_helpers.h"

/* The identity of a file changed long ago (an hour). */
static struct stat settled_file(void)
{
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_dev = 2049;
    st.st_ino = 123456;
    st.st_size = 1982256;
    st.st_mtim.tv_sec = time(NULL) - 3600;
    st.st_mtim.tv_nsec = 111;
    st.st_ctim = st.st_mtim;
    st.st_ctim.tv_nsec = 222;
    return st;
}

static obi_digest some_digest(uint8_t fill)
{
    obi_digest d;
    memset(d.bytes, fill, sizeof d.bytes);
    return d;
}

static void test_digest_cache_hits_the_same_file_only(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    char *cache = obi_path_join(dir, "digest-cache");
    struct stat st = settled_file();
    obi_digest stored = some_digest(0xab), found;
    assert_false(obi_digest_cache_get(cache, &st, &found)); /* no dir yet */
    obi_digest_cache_put(cache, &st, &stored);
    assert_true(obi_digest_cache_get(cache, &st, &found));
    assert_memory_equal(found.bytes, stored.bytes, sizeof stored.bytes);

    struct stat changed = st;
    changed.st_size++;
    assert_false(obi_digest_cache_get(cache, &changed, &found));
    changed = st;
    changed.st_mtim.tv_nsec++;
    assert_false(obi_digest_cache_get(cache, &changed, &found));
    changed = st;
    changed.st_ctim.tv_sec++;
    assert_false(obi_digest_cache_get(cache, &changed, &found));
    changed = st;
    changed.st_ctim.tv_nsec++;
    assert_false(obi_digest_cache_get(cache, &changed, &found));
    changed = st;
    changed.st_ino++;
    assert_false(obi_digest_cache_get(cache, &changed, &found));
    changed = st;
    changed.st_dev++;
    assert_false(obi_digest_cache_get(cache, &changed, &found));
    free(cache);
    obi_test_tmpdir_remove(dir);
}

static void test_digest_cache_forgets_files_changed_just_now(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    struct stat st = settled_file();
    obi_digest stored = some_digest(1), found;
    st.st_ctim.tv_sec = time(NULL); /* changed this second: a change now would keep the ctime */
    obi_digest_cache_put(dir, &st, &stored);
    assert_false(obi_digest_cache_get(dir, &st, &found));
    st = settled_file();
    st.st_mtim.tv_sec = time(NULL);
    obi_digest_cache_put(dir, &st, &stored);
    assert_false(obi_digest_cache_get(dir, &st, &found));
    obi_test_tmpdir_remove(dir);
}

static void test_digest_cache_broken_entry_misses(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    struct stat st = settled_file();
    obi_digest stored = some_digest(7), found;
    obi_digest_cache_put(dir, &st, &stored);
    assert_true(obi_digest_cache_get(dir, &st, &found));
    /* Replace the one entry with a link to something that is not a digest. */
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && for f in *; do rm \"$f\" && ln -s not-a-digest \"$f\"; done", dir);
    assert_int_equal(system(cmd), 0);
    assert_false(obi_digest_cache_get(dir, &st, &found));
    obi_test_tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_cache_hits_the_same_file_only),
        cmocka_unit_test(test_digest_cache_forgets_files_changed_just_now),
        cmocka_unit_test(test_digest_cache_broken_entry_misses),
    };
    return cmocka_run_group_tests_name("digest_cache", tests, NULL, NULL);
}
