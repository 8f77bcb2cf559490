/*
 * Unit tests for ocibuild's record of the store paths it built: put/get round trip, unknown
 * paths, and records that are broken or belong to another path being refused with the file
 * named; deriver and content address kept, copies deep; realisations of floating outputs, with
 * output names that could leave the store's directory refused.
 */
#include "test_helpers.h"

#include <stdio.h>
#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/nix_path_info.h"

#define OUT "/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep"
#define DEV "/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev"
#define DRV "/nix/store/0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x-dep.drv"

static obi_nix_path_info *make_info(void)
{
    obi_nix_path_info *info = calloc(1, sizeof *info);
    info->path = strdup(OUT);
    obi_digest digest;
    memset(digest.bytes, 3, sizeof digest.bytes);
    assert_int_equal(obi_node_init_file(&info->node, &OUT[11], strlen(&OUT[11]), &digest, 5, true),
                     0);
    memset(info->nar.sha256, 9, sizeof info->nar.sha256);
    info->nar.size = 128;
    info->references = calloc(3, sizeof *info->references);
    info->references[0] = strdup(DEV);
    info->references[1] = strdup(OUT);
    info->n_references = 2;
    return info;
}

static char *record_path(const char *dir)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s.json", dir, &OUT[11]) > 0);
    return path;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_path_info_round_trips_through_the_store(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_nix_path_info_store obi_nix_path_info_store *store = NULL;
    assert_ok(obi_nix_path_info_store_open(dir, &store, err_ptr_));
    cleanup_nix_path_info obi_nix_path_info *info = make_info();
    assert_ok(obi_nix_path_info_put(store, info, err_ptr_));
    cleanup_nix_path_info obi_nix_path_info *back = NULL;
    assert_ok(obi_nix_path_info_get(store, OUT, &back, err_ptr_));
    assert_string_equal(back->path, OUT);
    assert_int_equal(back->node.kind, OBI_NODE_FILE);
    assert_true(back->node.executable);
    assert_true(obi_digest_equal(&back->node.digest, &info->node.digest));
    assert_memory_equal(back->nar.sha256, info->nar.sha256, 32);
    assert_int_equal(back->nar.size, 128);
    assert_int_equal(back->n_references, 2);
    assert_string_equal(back->references[0], DEV);
    assert_string_equal(back->references[1], OUT);
    assert_null(back->references[2]);
    obi_test_tmpdir_remove(dir);
}

static void test_path_info_unknown_path_is_enoent(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_nix_path_info_store obi_nix_path_info_store *store = NULL;
    assert_ok(obi_nix_path_info_store_open(dir, &store, err_ptr_));
    obi_nix_path_info *info = NULL;
    obi_error *err = NULL;
    assert_int_equal(obi_nix_path_info_get(store, DEV, &info, &err), -ENOENT);
    assert_null(info);
    obi_error_free(err);
    assert_fails_with(err, obi_nix_path_info_get(store, "/tmp/x", &info, &err), -EINVAL,
                      "'/tmp/x' is not in /nix/store");
    obi_test_tmpdir_remove(dir);
}

static void test_path_info_refuses_broken_records_naming_the_file(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_nix_path_info_store obi_nix_path_info_store *store = NULL;
    assert_ok(obi_nix_path_info_store_open(dir, &store, err_ptr_));
    cleanup_free char *file = record_path(dir);
    obi_nix_path_info *info = NULL;
    obi_error *err = NULL;

    write_text(file, "{not json");
    assert_fails_with(err, obi_nix_path_info_get(store, OUT, &info, &err), -EINVAL, file);

    write_text(file, "{\"path\":\"" OUT "\"}");
    assert_fails_with(err, obi_nix_path_info_get(store, OUT, &info, &err), -EINVAL,
                      "expected path, node, narHash, narSize and references");

    /* a valid record, but for another path */
    cleanup_nix_path_info obi_nix_path_info *other = make_info();
    free(other->path);
    other->path = strdup(DEV);
    assert_int_equal(obi_node_set_name(&other->node, &DEV[11], strlen(&DEV[11])), 0);
    assert_ok(obi_nix_path_info_put(store, other, err_ptr_));
    cleanup_free char *dev_file = NULL;
    assert_true(asprintf(&dev_file, "%s/%s.json", dir, &DEV[11]) > 0);
    assert_int_equal(rename(dev_file, file), 0);
    assert_fails_with(err, obi_nix_path_info_get(store, OUT, &info, &err), -EINVAL,
                      "records " DEV ", not " OUT);
    assert_null(info);
    obi_test_tmpdir_remove(dir);
}

static void test_path_info_refuses_node_named_otherwise(void **state)
{
    (void)state;
    cleanup_nix_path_info obi_nix_path_info *info = make_info();
    assert_int_equal(obi_node_set_name(&info->node, "other", 5), 0);
    json_t *json = obi_nix_path_info_to_json(info);
    assert_non_null(json);
    obi_nix_path_info *back = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_path_info_from_json(json, &back, &err), -EINVAL,
                      "node is not named '"
                      "qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep"
                      "'");
    json_decref(json);
}

static void test_path_info_found_by_hash_part_and_by_url(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *url = NULL;
    assert_true(asprintf(&url, "file://%s", dir) > 0);
    cleanup_nix_path_info_store obi_nix_path_info_store *store = NULL;
    assert_ok(obi_nix_path_info_store_open_url(url, &store, err_ptr_));
    cleanup_nix_path_info obi_nix_path_info *info = make_info();
    info->ca = strdup("fixed:r:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic");
    assert_ok(obi_nix_path_info_put(store, info, err_ptr_));
    cleanup_nix_path_info obi_nix_path_info *back = NULL;
    assert_ok(
        obi_nix_path_info_get_by_hash(store, "qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff", &back, err_ptr_));
    assert_string_equal(back->path, OUT);
    assert_string_equal(back->ca, info->ca);
    /* written again (a rebuild): the link is replaced, not duplicated */
    assert_ok(obi_nix_path_info_put(store, info, err_ptr_));
    cleanup_nix_path_info obi_nix_path_info *again = NULL;
    assert_ok(
        obi_nix_path_info_get_by_hash(store, "qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff", &again, err_ptr_));

    obi_nix_path_info *none = NULL;
    obi_error *err = NULL;
    assert_int_equal(
        obi_nix_path_info_get_by_hash(store, "miggdwz67ak98cf5cwvahjy6vcxk793b", &none, &err),
        -ENOENT);
    obi_error_free(err);
    err = NULL;
    assert_fails_with(err, obi_nix_path_info_get_by_hash(store, "../../etc", &none, &err), -EINVAL,
                      "is not the hash part of a store path");
    /* a link that points elsewhere is refused, not followed */
    cleanup_free char *link = NULL;
    assert_true(asprintf(&link, "%s/miggdwz67ak98cf5cwvahjy6vcxk793b", dir) > 0);
    assert_int_equal(symlink("../../etc/passwd", link), 0);
    assert_fails_with(
        err, obi_nix_path_info_get_by_hash(store, "miggdwz67ak98cf5cwvahjy6vcxk793b", &none, &err),
        -EINVAL, "points to '../../etc/passwd'");

    cleanup_nix_path_info_store obi_nix_path_info_store *plain = NULL;
    assert_ok(obi_nix_path_info_store_open_url(dir, &plain, err_ptr_));
    obi_nix_path_info_store *bad = NULL;
    assert_fails_with(err, obi_nix_path_info_store_open_url("relative/dir", &bad, &err), -EINVAL,
                      "the directory must be absolute");
    assert_fails_with(err, obi_nix_path_info_store_open_url("s3://bucket", &bad, &err), -EINVAL,
                      "unsupported scheme 's3://'");
    obi_test_tmpdir_remove(dir);
}

static void test_path_info_put_refuses_invalid_records(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_nix_path_info_store obi_nix_path_info_store *store = NULL;
    assert_ok(obi_nix_path_info_store_open(dir, &store, err_ptr_));
    obi_error *err = NULL;
    cleanup_nix_path_info obi_nix_path_info *bad_ca = make_info();
    bad_ca->ca = strdup("fixed:crc32:00");
    assert_fails_with(err, obi_nix_path_info_put(store, bad_ca, &err), -EINVAL,
                      "ca: 'fixed:crc32:00' is not a content address");
    cleanup_nix_path_info obi_nix_path_info *bad_ref = make_info();
    free(bad_ref->references[0]);
    bad_ref->references[0] = strdup("/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-a b");
    assert_fails_with(err, obi_nix_path_info_put(store, bad_ref, &err), -EINVAL, "references[0]");
    obi_test_tmpdir_remove(dir);
}

static void test_path_info_keeps_deriver_and_ca_and_copies_deeply(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_nix_path_info_store obi_nix_path_info_store *store = NULL;
    assert_ok(obi_nix_path_info_store_open(dir, &store, err_ptr_));
    cleanup_nix_path_info obi_nix_path_info *info = make_info();
    info->deriver = strdup(DRV);
    info->ca = strdup("fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s");
    cleanup_nix_path_info obi_nix_path_info *copy = obi_nix_path_info_copy(info);
    assert_non_null(copy);
    assert_ptr_not_equal(copy->deriver, info->deriver);
    assert_ok(obi_nix_path_info_put(store, copy, err_ptr_));
    cleanup_nix_path_info obi_nix_path_info *back = NULL;
    assert_ok(obi_nix_path_info_get(store, OUT, &back, err_ptr_));
    assert_string_equal(back->deriver, DRV);
    assert_string_equal(back->ca, info->ca);
    assert_int_equal(back->n_references, 2);
    obi_test_tmpdir_remove(dir);
}

static void test_realisations_round_trip_and_refuse_bad_names(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_nix_path_info_store obi_nix_path_info_store *store = NULL;
    assert_ok(obi_nix_path_info_store_open(dir, &store, err_ptr_));
    obi_error *err = NULL;
    char *path = NULL;
    assert_fails_with(err, obi_nix_realisation_get(store, DRV, "out", &path, &err), -ENOENT,
                      "realisations");
    assert_ok(obi_nix_realisation_put(store, DRV, "out", OUT, err_ptr_));
    assert_ok(obi_nix_realisation_get(store, DRV, "out", &path, err_ptr_));
    assert_string_equal(path, OUT);
    free(path);
    path = NULL;
    assert_fails_with(err, obi_nix_realisation_put(store, DRV, "../x", OUT, &err), -EINVAL,
                      "output name");
    assert_fails_with(err, obi_nix_realisation_put(store, "/tmp/x.drv", "out", OUT, &err), -EINVAL,
                      "/tmp/x.drv");
    assert_null(path);
    obi_test_tmpdir_remove(dir);
}

static void test_path_info_lists_records_only_sorted(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_nix_path_info_store obi_nix_path_info_store *store = NULL;
    assert_ok(obi_nix_path_info_store_open(dir, &store, err_ptr_));
    cleanup_nix_path_info obi_nix_path_info *info = make_info();
    assert_ok(obi_nix_path_info_put(store, info, err_ptr_));
    /* what an interrupted put leaves behind is not a record */
    char *tmp = NULL;
    assert_true(asprintf(&tmp, "%s/%s.json.tmp.1.abcdef", dir, &DEV[11]) > 0);
    write_text(tmp, "{");
    free(tmp);
    cleanup_strv char **paths = NULL;
    size_t n = 0;
    assert_ok(obi_nix_path_info_list(store, &paths, &n, err_ptr_));
    assert_int_equal(n, 1); /* not the hash-part link beside the record either */
    assert_string_equal(paths[0], OUT);
    assert_null(paths[1]);
    obi_test_tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_info_round_trips_through_the_store),
        cmocka_unit_test(test_path_info_lists_records_only_sorted),
        cmocka_unit_test(test_path_info_unknown_path_is_enoent),
        cmocka_unit_test(test_path_info_refuses_broken_records_naming_the_file),
        cmocka_unit_test(test_path_info_refuses_node_named_otherwise),
        cmocka_unit_test(test_path_info_found_by_hash_part_and_by_url),
        cmocka_unit_test(test_path_info_put_refuses_invalid_records),
        cmocka_unit_test(test_path_info_keeps_deriver_and_ca_and_copies_deeply),
        cmocka_unit_test(test_realisations_round_trip_and_refuse_bad_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
