/*
 * Bundle writing for replicas (service_bundle.h): config.json and the rootfs in every mode, the
 * overlay that leaves its lower layer untouched and is removed again, volumes owned by the
 * replica's root below directories closed to everyone else and never reached through a
 * symlink, the idmapped lower layer under a user namespace, a rootfs the replica's root cannot
 * reach named, and the one image resolution of `service spec|bundle|up`. Mounts and chown need
 * root: those tests are skipped loudly otherwise.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/digest.h"
#include "ocibuild/sha256.h"
#include "service_fixture.h"

#define REQUIRE_ROOT() OBI_TEST_REQUIRE_ROOT("mounts and chown need root")

static void test_bundle_write_creates_config_rootfs_and_volumes(void **state)
{
    fixture *f = *state;
    load(f, HEADER "  web:\n    storage:\n      - {type: named, name: cache, target: /cache}\n"
                   "      - {type: anonymous, target: /scratch}\n");
    obi_service_spec_options opts = default_options(f);
    char *bundle = obi_path_join(f->dir, "bundles/web-rep-1");
    char *bundles = obi_path_join(f->dir, "bundles");
    assert_int_equal(mkdir(bundles, 0711), 0); /* mkdir -p would make it 0700, unreachable */
    free(bundles);
    char **warnings = NULL;
    assert_ok(obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                       "/some/rootfs", OBI_BUNDLE_ROOTFS_SYMLINK, &warnings,
                                       err_ptr_));
    assert_null(warnings);
    char *config = obi_path_join(bundle, "config.json");
    json_error_t jerr;
    json_t *doc = json_load_file(config, 0, &jerr);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "hostname")), "web-rep-1");
    json_decref(doc);
    char *rootfs = obi_path_join(bundle, "rootfs");
    char target[256] = "";
    assert_true(readlink(rootfs, target, sizeof target - 1) > 0);
    assert_string_equal(target, "/some/rootfs");
    char *named =
        obi_service_storage_source(f->deployment, &f->deployment->services[0], 1, 0, f->data);
    char *anon =
        obi_service_storage_source(f->deployment, &f->deployment->services[0], 1, 1, f->data);
    struct stat st;
    assert_int_equal(stat(named, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(stat(anon, &st), 0);
    /* rewriting with no rootfs source replaces the symlink by an empty directory */
    assert_ok(obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                       NULL, OBI_BUNDLE_ROOTFS_SYMLINK, NULL, err_ptr_));
    assert_int_equal(lstat(rootfs, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    free(named);
    free(anon);
    free(rootfs);
    free(config);
    free(bundle);
}

/* The deployment network's /etc/hosts: written beneath the bundle (a symlink planted at
 * BUNDLE/hosts is replaced, its target untouched), bound read-only at /etc/hosts; the netns
 * path is what linux.namespaces joins. */
static void test_bundle_hosts_and_netns_of_the_deployment_network(void **state)
{
    fixture *f = *state;
    load(f, HEADER "  web: {}\n");
    obi_service_spec_options opts = default_options(f);
    opts.netns_path = "/run/netns/obi-0123456789ab-web-rep-1";
    opts.hosts = "10.231.0.2\tweb-1 web-rep-1 web\n";
    char *bundle = obi_path_join(f->dir, "b");
    char *victim = obi_path_join(f->dir, "victim");
    char *hosts = obi_path_join(bundle, "hosts");
    assert_int_equal(mkdir(bundle, 0700), 0);
    assert_ok(obi_write_file(victim, "victim\n", 7, 0600, err_ptr_));
    assert_int_equal(symlink(victim, hosts), 0);
    assert_ok(obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                       NULL, OBI_BUNDLE_ROOTFS_DIR, NULL, err_ptr_));
    char *text = NULL;
    size_t len = 0;
    assert_ok(obi_read_file(victim, 64, &text, &len, err_ptr_));
    assert_string_equal(text, "victim\n");
    free(text);
    struct stat st;
    assert_int_equal(lstat(hosts, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_ok(obi_read_file(hosts, 4096, &text, &len, err_ptr_));
    assert_string_equal(text, opts.hosts);
    free(text);
    char *config = obi_path_join(bundle, "config.json");
    json_error_t jerr;
    json_t *doc = json_load_file(config, 0, &jerr);
    assert_non_null(doc);
    json_t *mounts = json_object_get(doc, "mounts");
    json_t *last = json_array_get(mounts, json_array_size(mounts) - 1);
    assert_string_equal(json_string_value(json_object_get(last, "destination")), "/etc/hosts");
    assert_string_equal(json_string_value(json_object_get(last, "source")), "hosts");
    static const char *const ro[] = {"rbind", "ro", "nosuid", "nodev", "noexec"};
    json_t *options = json_object_get(last, "options");
    assert_int_equal(json_array_size(options), 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(json_string_value(json_array_get(options, i)), ro[i]);
    json_t *namespaces = path_get(doc, "linux.namespaces");
    bool joined = false;
    for (size_t i = 0; i < json_array_size(namespaces); i++) {
        json_t *ns = json_array_get(namespaces, i);
        if (!strcmp(json_string_value(json_object_get(ns, "type")), "network"))
            joined = !strcmp(json_string_value(json_object_get(ns, "path")), opts.netns_path);
    }
    assert_true(joined);
    /* under a user namespace a joined network namespace is the host's: /sys is bound */
    json_t *sys = json_array_get(mounts, 5);
    assert_string_equal(json_string_value(json_object_get(sys, "destination")), "/sys");
    assert_string_equal(json_string_value(json_object_get(sys, "type")), "none");
    json_decref(doc);
    free(config);
    free(hosts);
    free(victim);
    free(bundle);
}

static void test_bundle_write_path_mode_puts_absolute_rootfs_in_config(void **state)
{
    fixture *f = *state;
    load(f, HEADER "  web: {}\n");
    obi_service_spec_options opts = default_options(f);
    char *bundle = obi_path_join(f->dir, "b");
    char *source = obi_path_join(f->dir, "src-rootfs");
    char *link = obi_path_join(f->dir, "link-to-rootfs");
    assert_int_equal(mkdir(source, 0755), 0);
    assert_int_equal(symlink(source, link), 0);
    assert_ok(obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                       link, OBI_BUNDLE_ROOTFS_PATH, NULL, err_ptr_));
    char *config = obi_path_join(bundle, "config.json");
    json_error_t jerr;
    json_t *doc = json_load_file(config, 0, &jerr);
    assert_string_equal(json_string_value(path_get(doc, "root.path")), source); /* resolved */
    json_decref(doc);
    char *rootfs = obi_path_join(bundle, "rootfs");
    struct stat st;
    assert_int_equal(lstat(rootfs, &st), -1);
    /* DIR mode: an empty directory to mount onto, root.path stays "rootfs" */
    assert_ok(obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                       link, OBI_BUNDLE_ROOTFS_DIR, NULL, err_ptr_));
    assert_int_equal(lstat(rootfs, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    doc = json_load_file(config, 0, &jerr);
    assert_string_equal(json_string_value(path_get(doc, "root.path")), "rootfs");
    json_decref(doc);
    free(rootfs);
    free(config);
    free(link);
    free(source);
    free(bundle);
}

static size_t mounts_at(const char *path)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096];
    size_t n = 0, len = strlen(path);
    while (f && fgets(line, sizeof line, f)) {
        char *p = strchr(strchr(strchr(strchr(line, ' ') + 1, ' ') + 1, ' ') + 1, ' ') + 1;
        if (!strncmp(p, path, len) && p[len] == ' ')
            n++;
    }
    if (f)
        fclose(f);
    return n;
}

static void test_bundle_overlay_keeps_source_untouched_and_is_removed(void **state)
{
    REQUIRE_ROOT();
    fixture *f = *state;
    load(f, HEADER "  web: {}\n");
    obi_service_spec_options opts = default_options(f);
    char *bundle = obi_path_join(f->dir, "bundle");
    char *source = obi_path_join(f->dir, "image-rootfs");
    char *source_file = obi_path_join(source, "f");
    assert_int_equal(mkdir(source, 0755), 0);
    assert_ok(obi_write_file(source_file, "lower", 5, 0644, err_ptr_));
    obi_error *err = NULL;
    int r = obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                     source, OBI_BUNDLE_ROOTFS_OVERLAY, NULL, &err);
    if (r == -EPERM || r == -ENODEV) {
        print_message("!!! SKIPPED: overlay mount not possible here: %s\n", err->message);
        obi_error_free(err);
        assert_ok(obi_service_bundle_remove(bundle, err_ptr_));
        free(source_file);
        free(source);
        free(bundle);
        skip();
    }
    assert_int_equal(r, 0);
    char *rootfs = obi_path_join(bundle, "rootfs");
    char *seen = obi_path_join(rootfs, "f");
    char *text = NULL;
    size_t len;
    assert_ok(obi_read_file(seen, 100, &text, &len, err_ptr_));
    assert_string_equal(text, "lower");
    free(text);
    assert_ok(obi_write_file(seen, "upper", 5, 0644, err_ptr_));
    assert_ok(obi_read_file(source_file, 100, &text, &len, err_ptr_));
    assert_string_equal(text, "lower"); /* the shared image is never written */
    free(text);
    assert_int_equal(mounts_at(rootfs), 1);
    /* writing again keeps the mounted overlay (and the replica's changes) */
    assert_ok(obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                       source, OBI_BUNDLE_ROOTFS_OVERLAY, NULL, err_ptr_));
    assert_int_equal(mounts_at(rootfs), 1);
    assert_ok(obi_read_file(seen, 100, &text, &len, err_ptr_));
    assert_string_equal(text, "upper");
    free(text);
    assert_ok(obi_service_bundle_remove(bundle, err_ptr_));
    assert_int_equal(mounts_at(rootfs), 0);
    assert_int_equal(access(bundle, F_OK), -1);
    assert_int_equal(access(source_file, F_OK), 0);
    assert_ok(obi_service_bundle_remove(bundle, err_ptr_)); /* already gone: fine */
    free(seen);
    free(rootfs);
    free(source_file);
    free(source);
    free(bundle);
}

/* Volumes are owned by the replica's root (so it can write them), and the directories above
 * them are closed to every other user, also when an older version left them 0755. */
static void test_bundle_volumes_are_owned_by_the_replica_root_and_closed(void **state)
{
    REQUIRE_ROOT();
    fixture *f = *state;
    load(f, HEADER "  web:\n    storage:\n      - {type: named, name: cache, target: /cache}\n"
                   "      - {type: anonymous, target: /scratch}\n");
    char *old_parent = obi_path_join(f->data, "volumes/web-stack");
    assert_ok(obi_mkdir_p(old_parent, 0755, err_ptr_));
    chmod(old_parent, 0755);
    obi_service_spec_options opts = default_options(f);
    char *bundle = obi_path_join(f->dir, "b");
    assert_ok(obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                       NULL, OBI_BUNDLE_ROOTFS_DIR, NULL, err_ptr_));
    static const struct {
        const char *path;
        unsigned mode, uid, gid;
    } want[] = {
        {"volumes", 0700, 0, 0},
        {"volumes/web-stack", 0700, 0, 0},
        {"volumes/web-stack/cache", 0755, 400000, 410000},
        {"anonymous", 0700, 0, 0},
        {"anonymous/web-stack", 0700, 0, 0},
        {"anonymous/web-stack/web-rep-1", 0700, 0, 0},
        {"anonymous/web-stack/web-rep-1/1", 0755, 400000, 410000},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char *path = obi_path_join(f->data, want[i].path);
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        if ((st.st_mode & 07777) != want[i].mode || st.st_uid != want[i].uid)
            print_error("%s: mode %04o owner %u\n", path, st.st_mode & 07777, st.st_uid);
        assert_int_equal(st.st_mode & 07777, want[i].mode);
        assert_int_equal(st.st_uid, want[i].uid);
        assert_int_equal(st.st_gid, want[i].gid);
        free(path);
    }
    /* the bundle: group of the replicas' root, searchable by it only */
    struct stat st;
    assert_int_equal(stat(bundle, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0710);
    assert_int_equal(st.st_gid, TEST_IDS.gid);
    /* a privileged replica's volume belongs to the host's root, as its writer does */
    load(f, HEADER
         "  web:\n    privileged: true\n    storage: [{type: named, name: p, target: /p}]\n");
    assert_ok(obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                       NULL, OBI_BUNDLE_ROOTFS_DIR, NULL, err_ptr_));
    char *privileged = obi_path_join(f->data, "volumes/web-stack/p");
    assert_int_equal(stat(privileged, &st), 0);
    assert_int_equal(st.st_uid, 0);
    free(privileged);
    free(bundle);
    free(old_parent);
}

/* A volume path that crosses a symlink (to /etc, say) is refused, named, and nothing is made
 * or chowned at the link's target. */
static void test_bundle_volume_path_through_a_symlink_is_refused(void **state)
{
    fixture *f = *state;
    load(f, HEADER "  web: {storage: [{type: named, name: cache, target: /cache}]}\n");
    char *volumes = obi_path_join(f->data, "volumes");
    char *elsewhere = obi_path_join(f->dir, "elsewhere");
    char *link = obi_path_join(volumes, "web-stack");
    assert_ok(obi_mkdir_p(volumes, 0700, err_ptr_));
    assert_int_equal(mkdir(elsewhere, 0755), 0);
    assert_int_equal(symlink(elsewhere, link), 0);
    obi_service_spec_options opts = default_options(f);
    char *bundle = obi_path_join(f->dir, "b");
    obi_error *err = NULL;
    assert_fails_with(err,
                      obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts,
                                               bundle, NULL, OBI_BUNDLE_ROOTFS_DIR, NULL, &err),
                      -ELOOP, "volumes/web-stack: is a symlink, not followed");
    char *planted = obi_path_join(elsewhere, "cache");
    assert_int_equal(access(planted, F_OK), -1);
    struct stat st;
    assert_int_equal(stat(elsewhere, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755); /* not chmodded through the link either */
    free(planted);
    free(bundle);
    free(link);
    free(elsewhere);
    free(volumes);
}

/* Under a user namespace the overlay's lower layer is an idmapped view: the image's files show
 * their ids shifted into the replicas' range, the cache keeps the image's own, and no mount is
 * left at BUNDLE/lower. */
static void test_bundle_overlay_in_a_user_namespace_shifts_ids(void **state)
{
    REQUIRE_ROOT();
    fixture *f = *state;
    load(f, HEADER "  web: {}\n");
    obi_service_spec_options opts = default_options(f);
    char *bundle = obi_path_join(f->dir, "bundle");
    char *source = obi_path_join(f->dir, "image-rootfs");
    char *owned = obi_path_join(source, "app");
    assert_int_equal(mkdir(source, 0755), 0);
    assert_ok(obi_write_file(owned, "x", 1, 04755, err_ptr_));
    assert_int_equal(chown(owned, 1000, 1000), 0);
    assert_int_equal(chmod(owned, 04755), 0);
    obi_error *err = NULL;
    int r = obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                     source, OBI_BUNDLE_ROOTFS_OVERLAY, NULL, &err);
    if (r == -EINVAL || r == -ENOSYS || r == -EPERM || r == -EOPNOTSUPP) {
        print_message("!!! SKIPPED: no idmapped overlay here: %s\n", err->message);
        obi_error_free(err);
        free(owned);
        free(source);
        free(bundle);
        skip();
    }
    if (r < 0)
        print_error("%s\n", err->message);
    assert_int_equal(r, 0);
    char *rootfs = obi_path_join(bundle, "rootfs");
    char *seen = obi_path_join(rootfs, "app");
    char *lower = obi_path_join(bundle, "lower");
    struct stat st;
    assert_int_equal(stat(rootfs, &st), 0); /* the image's root dir: 0 -> the range's first id */
    assert_int_equal(st.st_uid, TEST_IDS.uid);
    assert_int_equal(st.st_gid, TEST_IDS.gid);
    assert_int_equal(stat(seen, &st), 0);
    assert_int_equal(st.st_uid, TEST_IDS.uid + 1000);
    assert_int_equal(st.st_gid, TEST_IDS.gid + 1000);
    assert_int_equal(st.st_mode & 07777, 04755); /* set-uid to an id of the range, not root */
    assert_int_equal(stat(owned, &st), 0);
    assert_int_equal(st.st_uid, 1000); /* the cache is not touched */
    assert_int_equal(mounts_at(lower), 0);
    assert_int_equal(access(lower, F_OK), -1);
    assert_ok(obi_service_bundle_remove(bundle, err_ptr_));
    assert_int_equal(mounts_at(rootfs), 0);
    free(lower);
    free(seen);
    free(rootfs);
    free(owned);
    free(source);
    free(bundle);
}

/* runc would say "permission denied" when its init (the replica's root, not the host's) cannot
 * reach the rootfs; the bundle writer names the directory in the way instead. */
static void test_bundle_rootfs_the_replica_root_cannot_reach_is_named(void **state)
{
    REQUIRE_ROOT();
    fixture *f = *state;
    load(f, HEADER "  web: {}\n");
    obi_service_spec_options opts = default_options(f);
    char *closed = obi_path_join(f->dir, "closed");
    char *bundle = obi_path_join(closed, "bundle");
    assert_int_equal(mkdir(closed, 0700), 0);
    obi_error *err = NULL;
    char needle[512];
    snprintf(needle, sizeof needle,
             "the replica's root (host uid 400000, gid 410000) cannot reach its rootfs "
             "%s/rootfs: %s (mode 0700, owner 0:0): Permission denied",
             bundle, closed);
    assert_fails_with(err,
                      obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts,
                                               bundle, NULL, OBI_BUNDLE_ROOTFS_DIR, NULL, &err),
                      -EACCES, needle);
    chmod(closed, 0711);
    assert_ok(obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts, bundle,
                                       NULL, OBI_BUNDLE_ROOTFS_DIR, NULL, err_ptr_));
    free(bundle);
    free(closed);
}

static void test_bundle_write_requires_s3_mount_path(void **state)
{
    fixture *f = *state;
    load(f, HEADER "  web: {storage: [{type: s3, bucket: models, target: /m}]}\n");
    obi_service_spec_options opts = default_options(f);
    char *bundle = obi_path_join(f->dir, "b");
    obi_error *err = NULL;
    assert_fails_with(err,
                      obi_service_bundle_write(f->deployment, &f->deployment->services[0], &opts,
                                               bundle, NULL, OBI_BUNDLE_ROOTFS_DIR, NULL, &err),
                      -ENOENT, "services.web.storage[0]: s3 mount source");
    assert_int_equal(access(bundle, F_OK), -1); /* nothing written */
    free(bundle);
}

/* ---- the image resolution of spec, bundle and up -------------------------------------- */

/* Writes data as a blob of layout; returns its descriptor. */
static json_t *layout_blob(const char *layout, const char *media, const char *data)
{
    uint8_t digest[OBI_SHA256_LEN];
    char hex[2 * OBI_SHA256_LEN + 1], path[1024], name[80];
    obi_sha256_oneshot(data, strlen(data), digest);
    obi_hex_encode(digest, OBI_SHA256_LEN, hex);
    snprintf(path, sizeof path, "%s/blobs/sha256", layout);
    assert_ok(obi_mkdir_p(path, 0755, err_ptr_));
    snprintf(path, sizeof path, "%s/blobs/sha256/%s", layout, hex);
    assert_ok(obi_write_file(path, data, strlen(data), 0644, err_ptr_));
    snprintf(name, sizeof name, "sha256:%s", hex);
    return json_pack("{s:s, s:s, s:I}", "mediaType", media, "digest", name, "size",
                     (json_int_t)strlen(data));
}

/* An image layout at DIR/layout with one image tagged "1": no layers, Entrypoint /bin/app. */
static char *make_layout(fixture *f)
{
    char *layout = obi_path_join(f->dir, "layout");
    char *marker = obi_path_join(layout, "oci-layout");
    char *index = obi_path_join(layout, "index.json");
    assert_ok(obi_mkdir_p(layout, 0755, err_ptr_));
    assert_ok(obi_write_file(marker, "{\"imageLayoutVersion\":\"1.0.0\"}", 30, 0644, err_ptr_));
    json_t *config = layout_blob(layout, "application/vnd.oci.image.config.v1+json",
                                 "{\"config\":{\"Entrypoint\":[\"/bin/app\"]}}");
    json_t *manifest_doc =
        json_pack("{s:i, s:s, s:o, s:[]}", "schemaVersion", 2, "mediaType",
                  "application/vnd.oci.image.manifest.v1+json", "config", config, "layers");
    char *manifest_text = json_dumps(manifest_doc, JSON_COMPACT);
    json_t *manifest =
        layout_blob(layout, "application/vnd.oci.image.manifest.v1+json", manifest_text);
    json_object_set_new(manifest, "annotations",
                        json_pack("{s:s}", "org.opencontainers.image.ref.name", "1"));
    json_t *index_doc = json_pack("{s:i, s:[o]}", "schemaVersion", 2, "manifests", manifest);
    assert_int_equal(json_dump_file(index_doc, index, JSON_COMPACT), 0);
    json_decref(index_doc);
    json_decref(manifest_doc);
    free(manifest_text);
    free(index);
    free(marker);
    return layout;
}

static const obi_service *service_of(fixture *f, const char *text)
{
    load(f, text);
    return &f->deployment->services[0];
}

/* An OCI image is unpacked into the data dir's cache; the bundle's rootfs is that cache entry,
 * mounted as an overlay, and the spec options see the image's config and rootfs. */
static void test_source_of_an_oci_image_is_its_cache_entry(void **state)
{
    fixture *f = *state;
    char *layout = make_layout(f);
    char yaml[2048];
    snprintf(yaml, sizeof yaml, HEADER "  web: {image: {name: \"oci:%s:1\"}}\n", layout);
    const obi_service *svc = service_of(f, yaml);
    obi_service_source src;
    assert_ok(obi_service_source_open(svc, f->data, NULL, &src, err_ptr_));
    assert_non_null(src.image);
    assert_ptr_equal(src.rootfs, src.image->rootfs);
    assert_non_null(strstr(src.rootfs, "/images/"));
    assert_int_equal(strncmp(src.rootfs, f->data, strlen(f->data)), 0);
    assert_int_equal(src.mode, OBI_BUNDLE_ROOTFS_OVERLAY);
    obi_service_spec_options opts = default_options(f);
    obi_service_source_spec_options(&src, &opts);
    assert_ptr_equal(opts.image, &src.image->config);
    assert_ptr_equal(opts.rootfs, src.rootfs);
    json_t *c = generate_with(f, "web", &opts);
    assert_string_equal(json_string_value(json_array_get(path_get(c, "process.args"), 0)),
                        "/bin/app");
    obi_service_source_close(&src);
    assert_null(src.image);
    obi_service_source_close(&src); /* twice: harmless */
    free(layout);
}

/* A rootfs directory is used in place: the replica's overlay lower layer under a user
 * namespace, the directory itself for a privileged service; no image: an empty rootfs. */
static void test_source_of_a_rootfs_dir_and_of_nothing(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *yaml;
        const char *rootfs;
        obi_bundle_rootfs_mode mode;
    } CASES[] = {
        {HEADER "  web: {image: {rootfs: /srv/root}}\n", "/srv/root", OBI_BUNDLE_ROOTFS_OVERLAY},
        {HEADER "  web: {image: {rootfs: /srv/root}, privileged: true}\n", "/srv/root",
         OBI_BUNDLE_ROOTFS_PATH},
        {HEADER "  web: {}\n", NULL, OBI_BUNDLE_ROOTFS_DIR},
        {HEADER "  web: {privileged: true}\n", NULL, OBI_BUNDLE_ROOTFS_DIR},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const obi_service *svc = service_of(f, CASES[i].yaml);
        obi_service_source src;
        assert_ok(obi_service_source_open(svc, f->data, NULL, &src, err_ptr_));
        assert_null(src.image);
        if (CASES[i].rootfs)
            assert_string_equal(src.rootfs, CASES[i].rootfs);
        else
            assert_null(src.rootfs);
        assert_int_equal(src.mode, CASES[i].mode);
        obi_service_spec_options opts = {0};
        obi_service_source_spec_options(&src, &opts);
        assert_null(opts.image);
        assert_ptr_equal(opts.rootfs, src.rootfs);
        obi_service_source_close(&src);
    }
    assert_int_equal(access(f->data, F_OK), -1); /* nothing unpacked, nothing made */
}

/* A missing tag names the service's image field, and nothing is left in the cache. */
static void test_source_of_a_missing_image_names_the_field(void **state)
{
    fixture *f = *state;
    char *layout = make_layout(f);
    char yaml[2048];
    snprintf(yaml, sizeof yaml, HEADER "  web: {image: {name: \"oci:%s:2\"}}\n", layout);
    const obi_service *svc = service_of(f, yaml);
    obi_service_source src = {NULL, "untouched", OBI_BUNDLE_ROOTFS_PATH};
    obi_error *err = NULL;
    assert_fails_with(err, obi_service_source_open(svc, f->data, NULL, &src, &err), -ENOENT,
                      "services.web.image: image ");
    assert_string_equal(src.rootfs, "untouched"); /* set only on success */
    free(layout);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_bundle_write_creates_config_rootfs_and_volumes),
        T(test_bundle_hosts_and_netns_of_the_deployment_network),
        T(test_bundle_write_path_mode_puts_absolute_rootfs_in_config),
        T(test_bundle_overlay_keeps_source_untouched_and_is_removed),
        T(test_bundle_volumes_are_owned_by_the_replica_root_and_closed),
        T(test_bundle_volume_path_through_a_symlink_is_refused),
        T(test_bundle_overlay_in_a_user_namespace_shifts_ids),
        T(test_bundle_rootfs_the_replica_root_cannot_reach_is_named),
        T(test_bundle_write_requires_s3_mount_path),
        T(test_source_of_an_oci_image_is_its_cache_entry),
        T(test_source_of_a_rootfs_dir_and_of_nothing),
        T(test_source_of_a_missing_image_names_the_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
