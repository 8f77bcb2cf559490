/*
 * What test_service_spec.c and test_service_bundle.c share: a temp dir with a fake /dev and a
 * data dir (a bundle left at DIR/bundle is removed, overlay and all, even when a test fails),
 * a deployment parsed from text, spec options that depend on nothing of this machine (the
 * replicas' ids, every capability, cgroup v2), and a dotted-path JSON getter.
 */
#ifndef OCIBUILD_SERVICE_FIXTURE_H
#define OCIBUILD_SERVICE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/service_bundle.h"
#include "ocibuild/service_spec.h"
#include "test_helpers.h"

#define HEADER "version: v1\ndeployment: web-stack\nservices:\n"

/* The replicas' host range and a host that can grant every capability, unless a test says
 * otherwise: nothing here depends on /etc/subuid or on this machine's bounding set. */
static const obi_idmap TEST_IDS = {400000, 410000, 65536};
static const uint64_t ALL_CAPABILITIES = (UINT64_C(1) << 41) - 1;
/* This kind of VM: every capability but CAP_SYS_RESOURCE (24). */
static const uint64_t NO_SYS_RESOURCE = UINT64_C(0x000001fffeffffff);

typedef struct fixture {
    char *dir;
    char *dev;
    char *data;
    obi_deployment *deployment;
    json_t *config;
    char **warnings;
} fixture;

static inline int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    f->dev = obi_path_join(f->dir, "dev");
    f->data = obi_path_join(f->dir, "data");
    mkdir(f->dev, 0755);
    chmod(f->dir, 0711); /* replicas' roots pass through to bundles below it, as below /var/lib */
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    fixture *f = *state;
    char *bundle = obi_path_join(f->dir, "bundle"); /* detach an overlay a failed test left */
    obi_error *err = NULL;
    obi_service_bundle_remove(bundle, &err);
    obi_error_free(err);
    free(bundle);
    json_decref(f->config);
    obi_strv_free(f->warnings);
    obi_deployment_free(f->deployment);
    obi_test_tmpdir_remove(f->dir);
    free(f->dev);
    free(f->data);
    free(f);
    return 0;
}

static inline void load(fixture *f, const char *text)
{
    obi_deployment_free(f->deployment);
    f->deployment = NULL;
    assert_ok(obi_deployment_parse(text, strlen(text), "t.yaml", &f->deployment, err_ptr_));
}

static inline obi_service_spec_options default_options(fixture *f)
{
    obi_service_spec_options opts = {0};
    opts.dev_root = f->dev;
    opts.data_dir = f->data;
    opts.cgroup = OBI_CGROUP_V2;
    opts.ids = &TEST_IDS;
    opts.bounding_set = &ALL_CAPABILITIES;
    return opts;
}

static inline json_t *generate_with(fixture *f, const char *service,
                                    const obi_service_spec_options *o)
{
    json_decref(f->config);
    f->config = NULL;
    obi_strv_free(f->warnings);
    f->warnings = NULL;
    const obi_service *svc = obi_deployment_find(f->deployment, service);
    assert_non_null(svc);
    assert_ok(obi_service_spec_generate(f->deployment, svc, o, &f->config, &f->warnings, err_ptr_));
    return f->config;
}

static inline json_t *generate(fixture *f, const char *text)
{
    load(f, text);
    obi_service_spec_options opts = default_options(f);
    return generate_with(f, "web", &opts);
}

/* Skips the test, loudly, when not root (why: what needs it). */
#define OBI_TEST_REQUIRE_ROOT(why)                                                                 \
    do {                                                                                           \
        if (geteuid() != 0) {                                                                      \
            print_message("!!! SKIPPED: %s\n", why);                                               \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static inline json_t *path_get(json_t *root, const char *dotted)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", dotted);
    json_t *node = root;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && node;
         tok = strtok_r(NULL, ".", &save))
        node = json_object_get(node, tok);
    return node;
}

#endif
