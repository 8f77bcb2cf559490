/*
 * Unit tests for the Nix store helpers: input paths from a derivation and its input .drv files,
 * the closure query (against a stand-in nix-store script, so the argv, the parsing and the
 * failure message are checked without Nix; and read from a database laid out as Nix 2.x's,
 * which leaves to nix-store what it cannot answer), and importing store paths into castore named by
 * basename (with the real /nix/store when Nix is set up, else skipped loudly).
 */
#include "test_helpers.h"

#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/nix_store.h"

#define BASH "/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash"
#define DEV "/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev"
#define OUT "/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep"
#define DEP_DRV_PATH "/nix/store/qdpacafvf73w9pmzyjz5c218zf9p8y91-dep.drv"

static char *write_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static obi_derivation *drv_with_input(const char *dep_drv_path, const char *outputs)
{
    cleanup_free char *text = NULL;
    assert_true(asprintf(&text,
                         "Derive([(\"out\",\"/nix/store/vaf1hazi08dqf253k9wp3qr1xwdpapz9-pf\",\"\","
                         "\"\")],[(\"%s\",[%s])],[\"" BASH "\",\"" DEV "\"],\"s\",\"/b\",[],[])",
                         dep_drv_path, outputs) > 0);
    obi_derivation *drv = NULL;
    assert_ok(obi_derivation_parse(text, strlen(text), &drv, err_ptr_));
    return drv;
}

static const char DEP_DRV[] = "Derive([(\"dev\",\"" DEV "\",\"\",\"\"),(\"out\",\"" OUT
                              "\",\"\",\"\")],[],[],\"s\",\"/b\",[],[])";

static void test_input_paths_are_sources_plus_used_outputs_sorted_unique(void **state)
{
    (void)state;
    /* the input .drv is read from the store dir given, by its basename */
    char *dir = obi_test_tmpdir();
    cleanup_free char *dep = write_file(dir, strrchr(DEP_DRV_PATH, '/') + 1, DEP_DRV, 0644);
    cleanup_derivation obi_derivation *drv = drv_with_input(DEP_DRV_PATH, "\"dev\",\"out\"");
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    assert_ok(obi_derivation_input_paths(drv, dir, &paths, &n, err_ptr_));
    /* DEV is both an input source and a used output: listed once */
    assert_int_equal(n, 3);
    assert_string_equal(paths[0], BASH);
    assert_string_equal(paths[1], DEV);
    assert_string_equal(paths[2], OUT);
    assert_null(paths[3]);
    obi_test_tmpdir_remove(dir);
}

static void test_input_paths_reject_missing_output_of_input_drv(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *dep = write_file(dir, strrchr(DEP_DRV_PATH, '/') + 1, DEP_DRV, 0644);
    cleanup_derivation obi_derivation *drv = drv_with_input(DEP_DRV_PATH, "\"lib\"");
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    obi_error *err = NULL;
    assert_fails_with(err, obi_derivation_input_paths(drv, dir, &paths, &n, &err), -EINVAL,
                      "input derivation " DEP_DRV_PATH " has no output 'lib'");
    assert_null(paths);
    obi_test_tmpdir_remove(dir);
}

static void test_input_paths_report_unreadable_input_drv(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = drv_with_input(DEP_DRV_PATH, "\"out\"");
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    obi_error *err = NULL;
    assert_fails_with(err, obi_derivation_input_paths(drv, "/nonexistent", &paths, &n, &err),
                      -ENOENT,
                      "input derivation: /nonexistent/qdpacafvf73w9pmzyjz5c218zf9p8y91-dep.drv");
}

/* A stand-in for nix-store: checks its first two arguments, warns on stderr, prints its other
 * arguments (one twice) and one extra path. */
static const char FAKE_NIX_STORE[] =
    "#!/bin/sh\n"
    "[ \"$1\" = --query ] && [ \"$2\" = --requisites ] || { echo \"bad args: $*\"; exit 3; }\n"
    "shift 2\n"
    "echo 'warning: you are using a stand-in' >&2\n"
    "printf '%s\\n' \"$@\" \"$1\" /nix/store/0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x-lib\n";

static void test_closure_runs_nix_store_query_requisites(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *fake = write_file(dir, "nix-store", FAKE_NIX_STORE, 0755);
    char *inputs[] = {(char *)OUT, (char *)BASH};
    cleanup_strv char **closure = NULL;
    size_t n = 0;
    assert_ok(obi_nix_store_closure(fake, inputs, 2, &closure, &n, err_ptr_));
    assert_int_equal(n, 3);
    assert_string_equal(closure[0], "/nix/store/0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x-lib");
    assert_string_equal(closure[1], BASH);
    assert_string_equal(closure[2], OUT);
    assert_null(closure[3]);
    obi_test_tmpdir_remove(dir);
}

static void test_closure_of_nothing_runs_nothing(void **state)
{
    (void)state;
    cleanup_strv char **closure = NULL;
    size_t n = 7;
    assert_ok(obi_nix_store_closure("/nonexistent/nix-store", NULL, 0, &closure, &n, err_ptr_));
    assert_int_equal(n, 0);
    assert_non_null(closure);
    assert_null(closure[0]);
}

static void test_closure_failure_carries_nix_store_output(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *fake = write_file(
        dir, "nix-store", "#!/bin/sh\necho \"error: path '$3' is not valid\" >&2\nexit 1\n", 0755);
    char *inputs[] = {(char *)OUT};
    cleanup_strv char **closure = NULL;
    size_t n = 0;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_store_closure(fake, inputs, 1, &closure, &n, &err), -EIO,
                      "--query --requisites failed (exit 1): error: path '" OUT "' is not valid");
    assert_null(closure);
    obi_test_tmpdir_remove(dir);
}

static void test_closure_rejects_malformed_store_path(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *fake =
        write_file(dir, "nix-store", "#!/bin/sh\necho /nix/store/not-a-store-path\n", 0755);
    char *inputs[] = {(char *)OUT};
    cleanup_strv char **closure = NULL;
    size_t n = 0;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_store_closure(fake, inputs, 1, &closure, &n, &err), -EINVAL,
                      "'/nix/store/not-a-store-path' is not a store path");
    obi_test_tmpdir_remove(dir);
}

static void test_closure_reports_missing_program(void **state)
{
    (void)state;
    char *inputs[] = {(char *)OUT};
    cleanup_strv char **closure = NULL;
    size_t n = 0;
    obi_error *err = NULL;
    int r = obi_nix_store_closure("/nonexistent/nix-store", inputs, 1, &closure, &n, &err);
    assert_true(r < 0);
    assert_non_null(err);
    assert_non_null(strstr(err->message, "/nonexistent/nix-store"));
    obi_error_free(err);
}

/* ---- the closure from Nix's database ---- */

#define LIB "/nix/store/0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x-lib"

/* A database as Nix 2.x lays it out (schema 10; the columns the query reads, and what Nix's
 * own schema requires of them): OUT refers to BASH and LIB, LIB to itself, DEV to nothing.
 * Nix's own is in WAL mode, which the e2e tests read; here the default journal: a WAL commit
 * made from this test tripped ASan's memset check on libsqlite3's own stack buffer. */
static char *write_nix_db(const char *schema)
{
    char *dir = obi_test_tmpdir();
    free(write_file(dir, "schema", schema, 0644));
    cleanup_free char *file = NULL;
    assert_true(asprintf(&file, "%s/db.sqlite", dir) > 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(file, &db), SQLITE_OK);
    const char *sql =
        "CREATE TABLE ValidPaths (id integer primary key autoincrement not null,"
        " path text unique not null, hash text not null, registrationTime integer not null,"
        " deriver text, narSize integer, ultimate integer, sigs text, ca text);"
        "CREATE TABLE Refs (referrer integer not null, reference integer not null,"
        " primary key (referrer, reference));"
        "INSERT INTO ValidPaths (id, path, hash, registrationTime) VALUES"
        " (1, '" BASH "', 'sha256:x', 1), (2, '" LIB "', 'sha256:x', 1),"
        " (3, '" OUT "', 'sha256:x', 1), (4, '" DEV "', 'sha256:x', 1);"
        "INSERT INTO Refs VALUES (3, 1), (3, 2), (2, 2);";
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    return dir;
}

static void test_db_closure_reads_references_from_nix_database(void **state)
{
    (void)state;
    char *dir = write_nix_db("10");
    char *inputs[] = {(char *)OUT, (char *)DEV};
    cleanup_strv char **closure = NULL;
    size_t n = 0;
    obi_error *err = NULL; /* never set: the database either answers or leaves it */
    assert_int_equal(obi_nix_db_closure(dir, inputs, 2, &closure, &n, &err), 1);
    assert_int_equal(n, 4); /* sorted, LIB's self-reference once */
    assert_string_equal(closure[0], LIB);
    assert_string_equal(closure[1], BASH);
    assert_string_equal(closure[2], DEV);
    assert_string_equal(closure[3], OUT);
    assert_null(closure[4]);
    assert_null(err);
    obi_test_tmpdir_remove(dir);
}

/* What the database cannot answer goes to nix-store (which says why): a path it does not hold,
 * a schema this reader does not know, no database at all. */
static void test_db_closure_leaves_to_nix_store_what_it_cannot_answer(void **state)
{
    (void)state;
    char *dir = write_nix_db("10");
    char *unknown[] = {(char *)OUT, (char *)"/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-gone"};
    cleanup_strv char **closure = NULL;
    size_t n = 0;
    obi_error *err = NULL; /* never set: the database either answers or leaves it */
    assert_int_equal(obi_nix_db_closure(dir, unknown, 2, &closure, &n, &err), 0);
    assert_null(closure);
    obi_test_tmpdir_remove(dir);

    dir = write_nix_db("11");
    char *known[] = {(char *)OUT};
    assert_int_equal(obi_nix_db_closure(dir, known, 1, &closure, &n, &err), 0);
    assert_null(closure);
    obi_test_tmpdir_remove(dir);

    assert_int_equal(obi_nix_db_closure("/nonexistent/db", known, 1, &closure, &n, &err), 0);
    assert_null(closure);
    assert_null(err);
}

static void test_import_rejects_paths_outside_the_store(void **state)
{
    (void)state;
    cleanup_blob_service obi_blob_service *blobs = NULL;
    cleanup_directory_service obi_directory_service *directories = NULL;
    assert_ok(obi_memory_blob_service_new(&blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&directories, err_ptr_));
    char *paths[] = {(char *)"/etc/hostname"};
    obi_node *nodes = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_import_paths(blobs, directories, paths, 1, &nodes, &err),
                      -EINVAL, "import /etc/hostname: '/etc/hostname' is not in /nix/store");
    assert_null(nodes);
}

/* The first entry of /nix/store that is a store path (not .links etc.), or NULL. */
static char *some_store_path(void)
{
    DIR *d = opendir(OBI_NIX_STORE_DIR);
    if (!d)
        return NULL;
    char *found = NULL;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        char *path = NULL;
        if (asprintf(&path, OBI_NIX_STORE_DIR "/%s", de->d_name) < 0)
            break;
        const char *base;
        obi_error *err = NULL;
        if (strlen(de->d_name) > 4 && strcmp(de->d_name + strlen(de->d_name) - 4, ".drv") &&
            obi_nix_store_path_parse(path, &base, &err) == 0)
            found = steal_pointer(&path);
        obi_error_free(err);
        free(path);
    }
    closedir(d);
    return found;
}

static void test_import_names_nodes_by_store_basename(void **state)
{
    (void)state;
    cleanup_free char *path = some_store_path();
    if (!path) {
        print_message("SKIP: no store path in " OBI_NIX_STORE_DIR
                      " (run tests/e2e/nix_setup.sh and nix-store --add something)\n");
        skip();
    }
    cleanup_blob_service obi_blob_service *blobs = NULL;
    cleanup_directory_service obi_directory_service *directories = NULL;
    assert_ok(obi_memory_blob_service_new(&blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&directories, err_ptr_));
    char *paths[] = {path};
    obi_node *nodes = NULL;
    assert_ok(obi_nix_import_paths(blobs, directories, paths, 1, &nodes, err_ptr_));
    assert_string_equal((const char *)nodes[0].name.data, path + strlen(OBI_NIX_STORE_DIR "/"));
    obi_nix_nodes_free(nodes, 1);
}

/* _end_input ends the stream at once: nix-store reads its end and exits before _finish is
 * called (the last build's records are written meanwhile); nothing can be added after it. */
static void test_importer_ended_input_lets_nix_store_finish_before_the_wait(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *saved = NULL, *done = NULL, *script = NULL;
    assert_true(asprintf(&saved, "%s/stream", dir) > 0);
    assert_true(asprintf(&done, "%s/done", dir) > 0);
    assert_true(asprintf(&script,
                         "#!/bin/sh\n[ \"$1\" = --import ] || exit 3\ncat > '%s'\n"
                         "touch '%s'\n",
                         saved, done) > 0);
    cleanup_free char *fake = write_file(dir, "nix-store", script, 0755);
    obi_nix_store_importer *imp = NULL;
    assert_ok(obi_nix_store_importer_start(fake, &imp, err_ptr_));
    assert_ok(obi_nix_store_importer_end_input(imp, err_ptr_));
    struct stat st;
    for (int i = 0; i < 500 && stat(done, &st) != 0; i++) /* up to 5 s */
        usleep(10000);
    assert_int_equal(stat(done, &st), 0);
    obi_nix_path_info info = {.path = (char *)OUT};
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_store_importer_add(imp, NULL, NULL, &info, &err), -EPIPE,
                      "the stream was ended before " OUT);
    assert_ok(obi_nix_store_importer_finish(imp, err_ptr_));
    cleanup_free char *stream = NULL;
    size_t len = 0;
    assert_ok(obi_read_file(saved, 1024, &stream, &len, err_ptr_));
    assert_int_equal(len, 8); /* only the end marker, u64 0 */
    for (size_t i = 0; i < len; i++)
        assert_int_equal(stream[i], 0);
    obi_test_tmpdir_remove(dir);
}

static void test_store_path_parse_checks_hash_part(void **state)
{
    (void)state;
    const char *base = NULL;
    assert_ok(obi_nix_store_path_parse(BASH, &base, err_ptr_));
    assert_string_equal(base, &BASH[strlen("/nix/store/")]);
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_nix_store_path_parse("/nix/store/esmjp5dzhqrpk3ffx5p6d567nx3xzsag-x", &base, &err),
        -EINVAL, "hash part: nixbase32: invalid character at offset 0");
    assert_fails_with(err, obi_nix_store_path_parse(BASH "/bin/bash", &base, &err), -EINVAL,
                      "has a '/'");
    assert_fails_with(err, obi_nix_store_path_parse("/nix/store/short-x", &base, &err), -EINVAL,
                      "is not a store path");
}

static void test_store_path_parse_checks_the_name_as_nix_2_8(void **state)
{
    (void)state;
    const char *base;
    assert_ok(obi_nix_store_path_parse(
        "/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-.dot+plus-_?=", &base, err_ptr_));
    obi_error *err = NULL;
    assert_fails_with(
        err,
        obi_nix_store_path_parse("/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-a b", &base, &err),
        -EINVAL, "illegal character ' ' in its name");
    assert_fails_with(
        err,
        obi_nix_store_path_parse("/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-a\\n", &base, &err),
        -EINVAL, "illegal character");
    char long_name[300];
    snprintf(long_name, sizeof long_name, "/nix/store/gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-%0212d", 0);
    assert_fails_with(err, obi_nix_store_path_parse(long_name, &base, &err), -EINVAL,
                      "longer than 211 characters");
    long_name[strlen(long_name) - 1] = '\0';
    assert_ok(obi_nix_store_path_parse(long_name, &base, err_ptr_));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_paths_are_sources_plus_used_outputs_sorted_unique),
        cmocka_unit_test(test_input_paths_reject_missing_output_of_input_drv),
        cmocka_unit_test(test_input_paths_report_unreadable_input_drv),
        cmocka_unit_test(test_closure_runs_nix_store_query_requisites),
        cmocka_unit_test(test_closure_of_nothing_runs_nothing),
        cmocka_unit_test(test_closure_failure_carries_nix_store_output),
        cmocka_unit_test(test_closure_rejects_malformed_store_path),
        cmocka_unit_test(test_closure_reports_missing_program),
        cmocka_unit_test(test_db_closure_reads_references_from_nix_database),
        cmocka_unit_test(test_db_closure_leaves_to_nix_store_what_it_cannot_answer),
        cmocka_unit_test(test_import_rejects_paths_outside_the_store),
        cmocka_unit_test(test_import_names_nodes_by_store_basename),
        cmocka_unit_test(test_importer_ended_input_lets_nix_store_finish_before_the_wait),
        cmocka_unit_test(test_store_path_parse_checks_hash_part),
        cmocka_unit_test(test_store_path_parse_checks_the_name_as_nix_2_8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
