/*
 * Id slots (id_slot.h): claims get distinct slots and released ones come back first; when all are
 * busy a claim waits and can be cancelled; a slot whose holder died without releasing it is
 * reused once no process has its ids, and skipped while one does; the ocibuild range is read
 * from the subid files and its absence gives the fix. The ranges here are fake, far above any
 * id in use, with lock files in a temporary directory.
 */
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/id_slot.h"
#include "test_helpers.h"

#define FAKE_START 3000000000u

typedef struct fixture {
    char *dir;
    char *locks;
    obi_id_pool *pool;
} fixture;

static int setup_slots(void **state, unsigned slots)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    f->locks = obi_path_join(f->dir, "locks");
    obi_subid_range uids = {FAKE_START, slots * OBI_ID_SLOT_SIZE};
    obi_subid_range gids = {FAKE_START + 7 * OBI_ID_SLOT_SIZE, slots * OBI_ID_SLOT_SIZE + 5};
    *state = f;
    return obi_id_pool_new(&uids, &gids, f->locks, &f->pool, NULL);
}

static int setup_three(void **state)
{
    return setup_slots(state, 3);
}

static int setup_one(void **state)
{
    return setup_slots(state, 1);
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_id_pool_free(f->pool);
    free(f->locks);
    obi_test_tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static char *mark_of(const fixture *f, unsigned index)
{
    char name[16];
    snprintf(name, sizeof name, "%u", index);
    cleanup_free char *path = obi_path_join(f->locks, name);
    char *text = NULL;
    size_t len = 0;
    assert_ok(obi_read_file(path, 4096, &text, &len, err_ptr_));
    return text;
}

static void test_id_slot_claims_distinct_slots_and_reuses_released_ones(void **state)
{
    fixture *f = *state;
    assert_int_equal(obi_id_pool_slots(f->pool), 3);
    obi_id_slot a = OBI_ID_SLOT_INIT, b = OBI_ID_SLOT_INIT, c = OBI_ID_SLOT_INIT;
    assert_ok(obi_id_slot_claim(f->pool, -1, &a, err_ptr_));
    assert_ok(obi_id_slot_claim(f->pool, -1, &b, err_ptr_));
    assert_int_equal(a.index, 0);
    assert_int_equal(b.index, 1);
    assert_int_equal(a.uid, FAKE_START);
    assert_int_equal(b.uid, FAKE_START + OBI_ID_SLOT_SIZE);
    assert_int_equal(b.gid, FAKE_START + 8 * OBI_ID_SLOT_SIZE);
    cleanup_free char *mark = mark_of(f, 0);
    char want[32];
    snprintf(want, sizeof want, "pid %d\n", (int)getpid());
    assert_string_equal(mark, want);
    obi_id_slot_release(&a, true);
    assert_int_equal(a.lock_fd, -1);
    cleanup_free char *cleared = mark_of(f, 0);
    assert_string_equal(cleared, "");
    assert_ok(obi_id_slot_claim(f->pool, -1, &c, err_ptr_));
    assert_int_equal(c.index, 0);
    obi_id_slot_release(&b, true);
    obi_id_slot_release(&c, true);
    obi_id_slot_release(&c, true); /* releasing twice does nothing */
}

static void test_id_slot_spec_ids_map_root_and_the_build_user(void **state)
{
    fixture *f = *state;
    obi_id_slot slot;
    assert_int_equal(obi_id_pool_slot(f->pool, 2, &slot), 0);
    assert_int_equal(slot.lock_fd, -1);
    obi_spec_options opts = {0};
    obi_id_slot_spec_ids(&slot, &opts);
    assert_int_equal(opts.root_uid, FAKE_START + 2 * OBI_ID_SLOT_SIZE);
    assert_int_equal(opts.build_uid, FAKE_START + 2 * OBI_ID_SLOT_SIZE + 1000);
    assert_int_equal(opts.root_gid, FAKE_START + 9 * OBI_ID_SLOT_SIZE);
    assert_int_equal(opts.build_gid, FAKE_START + 9 * OBI_ID_SLOT_SIZE + 100);
    assert_int_equal(obi_id_pool_slot(f->pool, 3, &slot), -ERANGE);
}

typedef struct delayed_release {
    obi_id_slot *slot;
    unsigned delay_ms;
} delayed_release;

static void *release_later(void *arg)
{
    delayed_release *d = arg;
    struct timespec ts = {0, (long)d->delay_ms * 1000000};
    nanosleep(&ts, NULL);
    obi_id_slot_release(d->slot, true);
    return NULL;
}

static void test_id_slot_waits_for_a_busy_pool_and_can_be_cancelled(void **state)
{
    fixture *f = *state;
    obi_id_slot held = OBI_ID_SLOT_INIT, next = OBI_ID_SLOT_INIT;
    assert_ok(obi_id_slot_claim(f->pool, -1, &held, err_ptr_));
    int cancel[2];
    assert_int_equal(pipe(cancel), 0);
    assert_int_equal(write(cancel[1], "x", 1), 1);
    obi_error *err = NULL;
    assert_fails_with(err, obi_id_slot_claim(f->pool, cancel[0], &next, &err), -ECANCELED,
                      "waiting for a free id slot");
    assert_int_equal(next.lock_fd, -1);
    close(cancel[0]);
    close(cancel[1]);
    /* Without a cancel fd it waits until the holder lets go. */
    pthread_t thread;
    delayed_release d = {&held, 150};
    assert_int_equal(pthread_create(&thread, NULL, release_later, &d), 0);
    assert_ok(obi_id_slot_claim(f->pool, -1, &next, err_ptr_));
    pthread_join(thread, NULL);
    assert_int_equal(next.index, 0);
    obi_id_slot_release(&next, true);
}

/* A holder that dies without releasing: its lock goes, its mark stays. */
static void die_holding_slot(fixture *f, pid_t *helper, uid_t helper_uid)
{
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        obi_id_slot slot = OBI_ID_SLOT_INIT;
        if (obi_id_slot_claim(f->pool, -1, &slot, NULL) < 0 || slot.index != 0)
            _exit(1);
        if (helper) {
            /* A process of the build that outlives it, with one of the slot's ids. */
            pid_t child = fork();
            if (child == 0) {
                close(slot.lock_fd);
                if (setresgid(slot.gid, slot.gid, slot.gid) < 0 ||
                    setresuid(helper_uid, helper_uid, helper_uid) < 0)
                    _exit(1);
                (void)!write(ready[1], "r", 1);
                pause();
                _exit(0);
            }
            char c;
            if (read(ready[0], &c, 1) != 1)
                _exit(1);
            (void)!write(ready[1], &child, sizeof child);
        }
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (helper)
        assert_int_equal(read(ready[0], helper, sizeof *helper), (ssize_t)sizeof *helper);
    close(ready[0]);
    close(ready[1]);
    cleanup_free char *mark = mark_of(f, 0);
    assert_true(strncmp(mark, "pid ", 4) == 0);
}

static void test_id_slot_of_a_dead_holder_is_reused_once_its_ids_are_gone(void **state)
{
    fixture *f = *state;
    die_holding_slot(f, NULL, 0);
    obi_id_slot slot = OBI_ID_SLOT_INIT;
    assert_ok(obi_id_slot_claim(f->pool, -1, &slot, err_ptr_));
    assert_int_equal(slot.index, 0);
    /* A release that is not clean keeps the mark too. */
    obi_id_slot_release(&slot, false);
    cleanup_free char *mark = mark_of(f, 0);
    assert_true(strncmp(mark, "pid ", 4) == 0);
}

static bool is_alive(const char *status_path)
{
    cleanup_file FILE *f = fopen(status_path, "re");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "State:", 6))
            return !strstr(line, "Z");
    return false;
}

static void test_id_slot_of_a_dead_holder_is_skipped_while_its_ids_run(void **state)
{
    if (geteuid() != 0) {
        print_message("!!! a process with the slot's ids needs root to setresuid; skipping\n");
        skip();
    }
    fixture *f = *state;
    pid_t helper = 0;
    die_holding_slot(f, &helper, FAKE_START + 1000);
    obi_id_slot slot = OBI_ID_SLOT_INIT;
    assert_ok(obi_id_slot_claim(f->pool, -1, &slot, err_ptr_));
    assert_int_equal(slot.index, 1); /* slot 0's build user still runs */
    /* Not our child: wait until it is dead (a zombie until init reaps it, or gone). */
    kill(helper, SIGKILL);
    char status_path[64];
    snprintf(status_path, sizeof status_path, "/proc/%d/status", (int)helper);
    for (int i = 0; i < 200 && is_alive(status_path); i++)
        usleep(10000);
    obi_id_slot again = OBI_ID_SLOT_INIT;
    assert_ok(obi_id_slot_claim(f->pool, -1, &again, err_ptr_));
    assert_int_equal(again.index, 0);
    obi_id_slot_release(&slot, true);
    obi_id_slot_release(&again, true);
}

static void test_id_pool_refuses_a_range_without_a_whole_slot(void **state)
{
    (void)state;
    obi_subid_range uids = {FAKE_START, 2 * OBI_ID_SLOT_SIZE};
    obi_subid_range gids = {FAKE_START, OBI_ID_SLOT_SIZE - 1};
    obi_id_pool *pool = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_id_pool_new(&uids, &gids, "/nonexistent", &pool, &err), -EINVAL,
                      "hold no whole slot of 65536 ids");
    assert_null(pool);
}

static void test_id_pool_default_reads_the_ocibuild_range_or_gives_the_fix(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *subuid = obi_path_join(dir, "subuid");
    cleanup_free char *subgid = obi_path_join(dir, "subgid");
    const char *uids = "alice:100000:65536\nocibuild:1879048192:262144\n";
    const char *gids = "ocibuild:1900000000:131072\n";
    assert_ok(obi_write_file(subuid, uids, strlen(uids), 0644, err_ptr_));
    assert_ok(obi_write_file(subgid, gids, strlen(gids), 0644, err_ptr_));
    setenv("OCIBUILD_SUBUID_FILE", subuid, 1);
    setenv("OCIBUILD_SUBGID_FILE", subgid, 1);
    cleanup_id_pool obi_id_pool *pool = NULL;
    assert_ok(obi_id_pool_open_default(&pool, err_ptr_));
    assert_int_equal(obi_id_pool_slots(pool), 2); /* the smaller range */
    obi_id_slot slot;
    assert_int_equal(obi_id_pool_slot(pool, 1, &slot), 0);
    assert_int_equal(slot.uid, 1879048192u + OBI_ID_SLOT_SIZE);
    assert_int_equal(slot.gid, 1900000000u + OBI_ID_SLOT_SIZE);
    /* An entry may give the user's uid instead of its name (the user database is asked only
     * when no entry names it). */
    const struct passwd *user = getpwnam(OBI_ID_SLOT_USER);
    if (user) {
        char by_uid[64];
        int n = snprintf(by_uid, sizeof by_uid, "alice:1:65536\n%u:1800000000:131072\n",
                         (unsigned)user->pw_uid);
        assert_ok(obi_write_file(subgid, by_uid, (size_t)n, 0644, err_ptr_));
        obi_id_pool_free(steal_pointer(&pool));
        assert_ok(obi_id_pool_open_default(&pool, err_ptr_));
        assert_int_equal(obi_id_pool_slot(pool, 1, &slot), 0);
        assert_int_equal(slot.gid, 1800000000u + OBI_ID_SLOT_SIZE);
    } else {
        print_message("SKIPPED part: no user %s, so no entry by its uid\n", OBI_ID_SLOT_USER);
    }
    assert_ok(obi_write_file(subgid, "alice:1:65536\n", 14, 0644, err_ptr_));
    obi_id_pool *none = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_id_pool_open_default(&none, &err), -ENOENT,
                      "has none: run scripts/install-deps.sh, or as root: `useradd --system");
    assert_fails_with(err, obi_id_pool_open_default(&none, &err), -ENOENT, subgid);
    assert_fails_with(err, obi_id_pool_open_default(&none, &err), -ENOENT,
                      "usermod --add-subuids 1879048192-1883242495 --add-subgids "
                      "1879048192-1883242495 ocibuild");
    assert_null(none);
    unsetenv("OCIBUILD_SUBUID_FILE");
    unsetenv("OCIBUILD_SUBGID_FILE");
    obi_test_tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_id_slot_claims_distinct_slots_and_reuses_released_ones,
                                        setup_three, teardown),
        cmocka_unit_test_setup_teardown(test_id_slot_spec_ids_map_root_and_the_build_user,
                                        setup_three, teardown),
        cmocka_unit_test_setup_teardown(test_id_slot_waits_for_a_busy_pool_and_can_be_cancelled,
                                        setup_one, teardown),
        cmocka_unit_test_setup_teardown(
            test_id_slot_of_a_dead_holder_is_reused_once_its_ids_are_gone, setup_three, teardown),
        cmocka_unit_test_setup_teardown(test_id_slot_of_a_dead_holder_is_skipped_while_its_ids_run,
                                        setup_three, teardown),
        cmocka_unit_test(test_id_pool_refuses_a_range_without_a_whole_slot),
        cmocka_unit_test(test_id_pool_default_reads_the_ocibuild_range_or_gives_the_fix),
    };
    return cmocka_run_group_tests_name("id_slot", tests, NULL, NULL);
}
