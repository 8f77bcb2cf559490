/*
 * Deployment documents: every rule of spec/service.md's YAML section,
 * capability names, and error messages that name the position, service and key.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ocibuild/deployment.h"
#include "test_helpers.h"

#define HEADER "version: v1\ndeployment: web-stack\nservices:\n"

static obi_deployment *parse_ok(const char *text)
{
    obi_deployment *d = NULL;
    assert_ok(obi_deployment_parse(text, strlen(text), "t.yaml", &d, err_ptr_));
    return d;
}

static void expect_error(const char *text, const char *needle)
{
    obi_deployment *d = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_deployment_parse(text, strlen(text), "t.yaml", &d, &err), -EINVAL,
                      needle);
    assert_null(d);
}

static void test_deployment_parses_every_field(void **state)
{
    (void)state;
    const char *text = HEADER
        "  web:\n"
        "    rtype: service\n"
        "    image: { name: oci:/srv/images/web:1.0 }\n"
        "    command: { entrypoint: [/bin/httpd], args: [-f, -p, \"8080\"], workdir: /www }\n"
        "    env:\n"
        "      LOG_LEVEL: info\n"
        "      HOME_DIR: $E:HOME\n"
        "      DB_PASSWORD: $S:db-pass\n"
        "    resources:\n"
        "      cpu: 0.5\n"
        "      memory: 512Mi\n"
        "      gpu: { count: 2, vendor: amd, distributed: { backend: gloo, master_port: 1234 } }\n"
        "    devices: [ { path: /dev/kvm, read: true, write: true, mknod: false } ]\n"
        "    storage:\n"
        "      - { type: bind, source: /srv/data, target: /data, readonly: true }\n"
        "      - { type: named, name: cache, target: /cache }\n"
        "      - { type: anonymous, target: /scratch }\n"
        "      - { type: tmpfs, target: /run/app, size: 64Mi, mode: \"1777\" }\n"
        "      - { type: s3, bucket: models, prefix: v1/, target: /models, readonly: true }\n"
        "    capabilities: [NET_ADMIN, cap_sys_time, Cap_Net_Admin]\n"
        "    privileged: false\n"
        "    host_network: true\n"
        "    hostname: web\n"
        "    scale: { mode: fixed, replicas: 2 }\n"
        "    depends: [ { service: db, condition: started } ]\n"
        "  db:\n"
        "    rtype: cron\n"
        "    schedule: \"*/5 * * * *\"\n"
        "    image: { rootfs: /srv/db }\n";
    obi_deployment *d = parse_ok(text);
    assert_string_equal(d->name, "web-stack");
    assert_int_equal(d->service_count, 2);
    const obi_service *web = obi_deployment_find(d, "web");
    assert_non_null(web);
    assert_int_equal(web->rtype, OBI_RTYPE_SERVICE);
    assert_int_equal(web->image_kind, OBI_IMAGE_OCI);
    assert_string_equal(web->image_path, "/srv/images/web");
    assert_string_equal(web->image_tag, "1.0");
    assert_string_equal(web->entrypoint[0], "/bin/httpd");
    assert_null(web->entrypoint[1]);
    assert_string_equal(web->args[2], "8080");
    assert_string_equal(web->workdir, "/www");
    assert_int_equal(web->env_count, 3);
    assert_string_equal(web->env[1].name, "HOME_DIR");
    assert_string_equal(web->env[1].value, "$E:HOME");
    assert_true(web->has_cpu);
    assert_true(web->cpu > 0.49 && web->cpu < 0.51);
    assert_int_equal(web->memory, 536870912);
    assert_true(web->has_gpu);
    assert_int_equal(web->gpu.count, 2);
    assert_int_equal(web->gpu.vendor, OBI_GPU_AMD);
    assert_true(web->gpu.distributed);
    assert_int_equal(web->gpu.backend, OBI_GPU_BACKEND_GLOO);
    assert_int_equal(web->gpu.master_port, 1234);
    assert_int_equal(web->device_count, 1);
    assert_true(web->devices[0].read && web->devices[0].write && !web->devices[0].mknod);
    assert_int_equal(web->storage_count, 5);
    assert_int_equal(web->storage[0].type, OBI_STORAGE_BIND);
    assert_string_equal(web->storage[0].source, "/srv/data");
    assert_true(web->storage[0].readonly);
    assert_int_equal(web->storage[1].type, OBI_STORAGE_NAMED);
    assert_string_equal(web->storage[1].name, "cache");
    assert_int_equal(web->storage[2].type, OBI_STORAGE_ANONYMOUS);
    assert_int_equal(web->storage[3].type, OBI_STORAGE_TMPFS);
    assert_int_equal(web->storage[3].size, 64u << 20);
    assert_int_equal(web->storage[3].mode, 01777);
    assert_int_equal(web->storage[4].type, OBI_STORAGE_S3);
    assert_string_equal(web->storage[4].bucket, "models");
    assert_string_equal(web->storage[4].prefix, "v1/");
    assert_true(web->has_capabilities);
    assert_string_equal(web->capabilities[0], "CAP_NET_ADMIN");
    assert_string_equal(web->capabilities[1], "CAP_SYS_TIME");
    assert_null(web->capabilities[2]); /* the duplicate is dropped */
    assert_true(web->host_network);
    assert_false(web->privileged);
    assert_string_equal(web->hostname, "web");
    assert_int_equal(web->replicas, 2);
    assert_int_equal(web->depend_count, 1);
    assert_string_equal(web->depends[0].service, "db");
    const obi_service *db = obi_deployment_find(d, "db");
    assert_int_equal(db->rtype, OBI_RTYPE_CRON);
    assert_string_equal(db->schedule, "*/5 * * * *");
    assert_int_equal(db->image_kind, OBI_IMAGE_ROOTFS);
    assert_string_equal(db->image_rootfs, "/srv/db");
    obi_deployment_free(d);
}

static void test_deployment_defaults(void **state)
{
    (void)state;
    obi_deployment *d = parse_ok(HEADER "  web: {}\n");
    const obi_service *web = &d->services[0];
    assert_int_equal(web->rtype, OBI_RTYPE_SERVICE);
    assert_int_equal(web->image_kind, OBI_IMAGE_NONE);
    assert_int_equal(web->replicas, 1);
    assert_false(web->has_capabilities);
    assert_false(web->has_cpu);
    assert_false(web->has_memory);
    assert_null(web->hostname);
    obi_deployment_free(d);
}

static void test_deployment_unknown_key_names_service_key_and_position(void **state)
{
    (void)state;
    expect_error(HEADER "  web:\n    resources:\n      cpus: 2\n",
                 "t.yaml:6:7: services.web.resources: unknown key \"cpus\"");
    expect_error(HEADER "  web:\n    imagee: {}\n", "services.web: unknown key \"imagee\"");
    expect_error("version: v1\ndeployment: abc\nservices: {a: {}}\nextra: 1\n",
                 "unknown key \"extra\"");
    expect_error(HEADER "  web:\n    storage: [{type: bind, source: /a, target: /b, size: 1}]\n",
                 "services.web.storage[0]: unknown key \"size\"");
}

static void test_deployment_rejects_duplicate_keys(void **state)
{
    (void)state;
    expect_error(HEADER "  web:\n    env: {A: 1, A: 2}\n", "duplicate key \"A\"");
}

static void test_deployment_requires_version_v1(void **state)
{
    (void)state;
    expect_error("deployment: abc\nservices: {a: {}}\n", "version: missing");
    expect_error("version: v2\ndeployment: abc\nservices: {a: {}}\n", "version: expected \"v1\"");
}

static void test_deployment_name_rule(void **state)
{
    (void)state;
    expect_error("version: v1\ndeployment: ab\nservices: {a: {}}\n", "deployment: \"ab\" must be");
    expect_error("version: v1\ndeployment: -abc\nservices: {a: {}}\n", "must be 3..63");
    expect_error("version: v1\ndeployment: ab_c\nservices: {a: {}}\n", "must be 3..63");
    char text[256];
    snprintf(text, sizeof text, "version: v1\ndeployment: %064d\nservices: {a: {}}\n", 0);
    expect_error(text, "must be 3..63");
    snprintf(text, sizeof text, "version: v1\ndeployment: a%062d\nservices: {a: {}}\n", 0);
    obi_deployment *d = parse_ok(text);
    obi_deployment_free(d);
    /* no services, or none: an empty deployment (zlayer accepts both) */
    d = parse_ok("version: v1\ndeployment: abc\n");
    assert_int_equal(d->service_count, 0);
    obi_deployment_free(d);
    d = parse_ok("version: v1\ndeployment: abc\nservices: {}\n");
    assert_int_equal(d->service_count, 0);
    obi_deployment_free(d);
    expect_error("version: v1\ndeployment: abc\nservices: {bad_name: {}}\n",
                 "services.bad_name: service name must be");
}

static void test_deployment_rtype_rules(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {rtype: daemon}\n",
                 "services.web.rtype: expected service, job or cron");
    expect_error(HEADER "  web: {rtype: cron}\n", "services.web: rtype cron needs a schedule");
    expect_error(HEADER "  web: {rtype: job, schedule: \"@daily\"}\n",
                 "only valid with rtype cron");
    expect_error(HEADER "  web: {rtype: cron, schedule: \"* * *\"}\n",
                 "services.web.schedule: \"* * *\" is not a cron expression");
    expect_error(HEADER "  web: {rtype: cron, schedule: \"* * * * * * * *\"}\n", "got 8");
    expect_error(HEADER "  web: {rtype: cron, schedule: \"0 75 * * * *\"}\n",
                 "field 2 (minute) \"75\": 75 is out of range 0-59");
    expect_error(HEADER "  web: {rtype: cron, schedule: \"* * * * $(rm)\"}\n", "not a cron");
    expect_error(HEADER "  web: {rtype: cron, schedule: \"@sometimes\"}\n", "not a cron");
    obi_deployment *d = parse_ok(HEADER "  web: {rtype: job}\n");
    assert_int_equal(d->services[0].rtype, OBI_RTYPE_JOB);
    obi_deployment_free(d);
    d = parse_ok(HEADER "  a: {rtype: cron, schedule: \"0 */2 * JAN-MAR MON,FRI\"}\n"
                        "  b: {rtype: cron, schedule: \"30 0 0 1 * ?\"}\n"
                        "  c: {rtype: cron, schedule: \"@daily\"}\n"
                        "  d: {rtype: cron, schedule: \"0 0 12 * * MON-FRI *\"}\n");
    assert_string_equal(d->services[2].schedule, "@daily");
    obi_deployment_free(d);
}

static void test_deployment_image_rules(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {image: {}}\n", "exactly one of \"name\" and \"rootfs\"");
    expect_error(HEADER "  web: {image: {name: oci:/a, rootfs: /b}}\n", "exactly one of");
    expect_error(HEADER "  web: {image: {name: \"docker.io/nginx latest\"}}\n",
                 "services.web.image.name: image \"docker.io/nginx latest\": repository component");
    expect_error(HEADER "  web: {image: {name: docker.io/Nginx}}\n",
                 "services.web.image.name: image \"docker.io/Nginx\": repository component");
    expect_error(HEADER "  web: {image: \"nginx:\"}\n", "services.web.image: image \"nginx:\"");
    expect_error(HEADER "  web: {image: \"oci:/a\"}\n", "an OCI layout is written {name:");
    expect_error(HEADER "  web: {image: {name: nginx, pull_policy: sometimes}}\n",
                 "services.web.image.pull_policy: expected always, if_not_present, never or newer");
    /* Parsed from text there is no file to be relative to. */
    expect_error(HEADER "  web: {image: {name: \"oci:relative/x\"}}\n",
                 "must be an absolute path, or one relative to the file");
    expect_error(HEADER "  web: {image: {rootfs: rel}}\n", "services.web.image.rootfs");
    expect_error(HEADER "  web: {image: {name: \"oci:/a:\"}}\n", "empty tag");
    obi_deployment *d = parse_ok(HEADER "  web: {image: {name: \"oci:/srv/x.y/img\"}}\n");
    assert_string_equal(d->services[0].image_path, "/srv/x.y/img");
    assert_null(d->services[0].image_tag);
    obi_deployment_free(d);
    /* registry references: a plain string, or name with a policy (if_not_present by default) */
    d = parse_ok(HEADER "  web: {image: \"nginx:alpine\"}\n"
                        "  db: {image: {name: \"ghcr.io/o/db@sha256:"
                        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\","
                        " pull_policy: newer}}\n");
    const obi_service *web = obi_deployment_find(d, "web"), *db = obi_deployment_find(d, "db");
    assert_int_equal(web->image_kind, OBI_IMAGE_REGISTRY);
    assert_string_equal(web->image_ref->canonical, "docker.io/library/nginx:alpine");
    assert_int_equal(web->image_pull_policy, OBI_PULL_IF_NOT_PRESENT);
    assert_int_equal(db->image_kind, OBI_IMAGE_REGISTRY);
    assert_string_equal(db->image_ref->repository, "o/db");
    assert_null(db->image_ref->tag);
    assert_int_equal(db->image_pull_policy, OBI_PULL_NEWER);
    obi_deployment_free(d);
}

static void test_deployment_command_and_env_rules(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {command: {entrypoint: /bin/sh}}\n",
                 "services.web.command.entrypoint: expected a list of strings");
    expect_error(HEADER "  web: {command: {args: [[a]]}}\n", "services.web.command.args[0]");
    expect_error(HEADER "  web: {command: {workdir: www}}\n", "must be an absolute path");
    expect_error(HEADER "  web: {command: {shell: x}}\n", "unknown key \"shell\"");
    expect_error(HEADER "  web: {env: [A]}\n", "services.web.env: expected a mapping");
    expect_error(HEADER "  web: {env: {\"1A\": x}}\n", "services.web.env.1A: invalid environment");
    expect_error(HEADER "  web: {env: {\"A=B\": x}}\n", "invalid environment variable name");
    expect_error(HEADER "  web: {env: {A: {b: c}}}\n", "services.web.env.A: expected a string");
}

static void test_deployment_resources_rules(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {resources: {cpu: lots}}\n", "services.web.resources.cpu");
    expect_error(HEADER "  web: {resources: {cpu: 0}}\n", "services.web.resources.cpu");
    expect_error(HEADER "  web: {resources: {cpu: -1}}\n", "services.web.resources.cpu");
    expect_error(HEADER "  web: {resources: {memory: 12.5Mi}}\n",
                 "services.web.resources.memory: memory string \"12.5Mi\" is fractional");
    expect_error(HEADER "  web: {resources: {memory: 0}}\n", "must be greater than 0");
    expect_error(HEADER "  web: {resources: {gpu: {count: 0}}}\n",
                 "services.web.resources.gpu.count");
    expect_error(HEADER "  web: {resources: {gpu: {cores: 1}}}\n", "unknown key \"cores\"");
    expect_error(HEADER "  web: {resources: {gpu: {distributed: {backend: smoke}}}}\n",
                 "services.web.resources.gpu.distributed.backend: expected nccl, gloo or mpi");
    expect_error(HEADER "  web: {resources: {gpu: {distributed: {master_port: 70000}}}}\n",
                 "master_port: 70000 is out of range");
    obi_deployment *d = parse_ok(HEADER "  web: {resources: {gpu: {distributed: {}}}}\n");
    const obi_gpu *gpu = &d->services[0].gpu;
    assert_int_equal(gpu->count, 1);
    assert_int_equal(gpu->vendor, OBI_GPU_NVIDIA);
    assert_int_equal(gpu->backend, OBI_GPU_BACKEND_NCCL);
    assert_int_equal(gpu->master_port, 29500);
    obi_deployment_free(d);
    d = parse_ok(HEADER "  web: {resources: {gpu: {vendor: Intel}}}\n"
                        "  w2: {resources: {gpu: {vendor: acme}}}\n");
    assert_int_equal(d->services[0].gpu.vendor, OBI_GPU_INTEL);
    assert_int_equal(d->services[1].gpu.vendor, OBI_GPU_OTHER);
    obi_deployment_free(d);
}

static void test_deployment_devices_rules(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {devices: [{read: true}]}\n",
                 "services.web.devices[0]: missing key \"path\"");
    expect_error(HEADER "  web: {devices: [{path: kvm}]}\n", "services.web.devices[0].path");
    expect_error(HEADER "  web: {devices: [{path: /dev/kvm, read: maybe}]}\n",
                 "services.web.devices[0].read: expected true or false");
    expect_error(HEADER "  web: {devices: {path: /dev/kvm}}\n",
                 "services.web.devices: expected a list");
}

static void test_deployment_storage_rules(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {storage: [{type: nfs, target: /a}]}\n",
                 "services.web.storage[0].type: expected bind, named, anonymous, tmpfs or s3");
    expect_error(HEADER "  web: {storage: [{target: /a}]}\n", "missing key \"type\"");
    expect_error(HEADER "  web: {storage: [{type: bind, target: /a}]}\n", "missing key \"source\"");
    expect_error(HEADER "  web: {storage: [{type: named, target: /a}]}\n", "missing key \"name\"");
    expect_error(HEADER "  web: {storage: [{type: named, name: ../x, target: /a}]}\n",
                 "services.web.storage[0].name");
    expect_error(HEADER "  web: {storage: [{type: anonymous}]}\n", "missing key \"target\"");
    expect_error(HEADER "  web: {storage: [{type: anonymous, target: /a/../b}]}\n",
                 "without \"..\"");
    expect_error(HEADER "  web: {storage: [{type: tmpfs, target: /a, mode: \"999\"}]}\n",
                 "services.web.storage[0].mode: expected an octal mode");
    expect_error(HEADER "  web: {storage: [{type: tmpfs, target: /a, size: 1MB}]}\n",
                 "unknown unit \"MB\"");
    expect_error(HEADER "  web: {storage: [{type: tmpfs, target: /a, readonly: true}]}\n",
                 "unknown key \"readonly\"");
    expect_error(HEADER "  web: {storage: [{type: s3, bucket: b, prefix: /abs, target: /a}]}\n",
                 "must be a relative path");
    expect_error(HEADER "  web: {storage: [{type: s3, bucket: b, prefix: ../up, target: /a}]}\n",
                 "must be a relative path");
    expect_error(HEADER "  web: {storage: [{type: anonymous, target: /a},"
                        " {type: tmpfs, target: /a}]}\n",
                 "services.web.storage[1]: target \"/a\" is already mounted");
}

static void test_deployment_capability_rules(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {capabilities: [NET_ADMIN, CAP_FLY]}\n",
                 "services.web.capabilities[1]: unknown capability \"CAP_FLY\"");
    obi_deployment *d = parse_ok(HEADER "  web: {capabilities: []}\n");
    assert_true(d->services[0].has_capabilities);
    assert_null(d->services[0].capabilities[0]);
    obi_deployment_free(d);
}

static void test_deployment_scale_hostname_and_flags(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {scale: {mode: elastic}}\n",
                 "services.web.scale.mode: expected fixed, adaptive or manual");
    expect_error(HEADER "  web: {scale: {mode: fixed, replicas: 0}}\n",
                 "services.web.scale.replicas: 0 is out of range");
    expect_error(HEADER "  web: {scale: {mode: fixed, replicas: two}}\n", "expected an integer");
    expect_error(HEADER "  web: {hostname: \"a b\"}\n", "not a valid hostname");
    expect_error(HEADER "  web: {privileged: yes}\n",
                 "services.web.privileged: expected true or false");
    expect_error(HEADER "  web: {host_network: 1}\n", "services.web.host_network");
}

static void test_deployment_depends_rules(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {depends: [{service: db}]}\n",
                 "services.web.depends[0].service: unknown service \"db\"");
    expect_error(HEADER "  web: {depends: [{service: web}]}\n", "dependency cycle web -> web");
    expect_error(HEADER "  a: {depends: [{service: b}]}\n  b: {depends: [{service: c}]}\n"
                        "  c: {depends: [{service: a}]}\n",
                 "dependency cycle a -> b -> c -> a");
    expect_error(HEADER "  a: {}\n  web: {depends: [{service: a, condition: alive}]}\n",
                 "services.web.depends[0].condition: expected one of started, healthy, ready");
    obi_deployment *d = parse_ok(HEADER "  web: {depends: [{service: db}, {service: cache}]}\n"
                                        "  cache: {depends: [{service: db}]}\n  db: {}\n");
    const obi_service **order = NULL;
    assert_ok(obi_deployment_start_order(d, &order, err_ptr_));
    assert_string_equal(order[0]->name, "db");
    assert_string_equal(order[1]->name, "cache");
    assert_string_equal(order[2]->name, "web");
    /* zlayer's defaults: healthy, 300 s, fail */
    assert_string_equal(d->services[0].depends[0].condition, "healthy");
    assert_int_equal(d->services[0].depends[0].cond, OBI_DEPEND_HEALTHY);
    assert_int_equal(d->services[0].depends[0].timeout_ms, 300000);
    assert_int_equal(d->services[0].depends[0].on_timeout, OBI_FAILURE_FAIL);
    free(order);
    obi_deployment_free(d);
}

static void test_deployment_supervisor_keys(void **state)
{
    (void)state;
    obi_deployment *d = parse_ok(
        HEADER "  db:\n"
               "    health: {start_grace: 1s, interval: 500ms, timeout: 2s, retries: 5,\n"
               "             check: {type: http, url: \"http://localhost:8080/up\", "
               "expect_status: 204}}\n"
               "    errors: {on_init_failure: {action: backoff}, on_panic: {action: isolate}}\n"
               "    restart_policy: {kind: on_failure, max_attempts: 3, delay: 1m30s}\n"
               "  web:\n"
               "    depends: [{service: db, condition: ready, timeout: 20s, on_timeout: warn}]\n"
               "    health: {check: {type: command, command: \"test -e /ok\"}}\n"
               "    init:\n"
               "      steps:\n"
               "        - {id: a, uses: init.wait_tcp, with: {host: db, port: 5432}, retry: 2}\n"
               "        - {id: b, uses: init.wait_http, with: {url: \"http://db/\", timeout: 9},\n"
               "           timeout: 1m, on_failure: continue}\n");
    const obi_service *db = &d->services[0], *web = &d->services[1];
    assert_int_equal(db->health.kind, OBI_HEALTH_HTTP);
    assert_string_equal(db->health.url, "http://localhost:8080/up");
    assert_int_equal(db->health.expect_status, 204);
    assert_int_equal(db->health.start_grace_ms, 1000);
    assert_int_equal(db->health.interval_ms, 500);
    assert_int_equal(db->health.timeout_ms, 2000);
    assert_int_equal(db->health.retries, 5);
    assert_int_equal(db->on_init_failure, OBI_INIT_FAILURE_BACKOFF);
    assert_int_equal(db->on_panic, OBI_PANIC_ISOLATE);
    assert_true(db->has_restart_policy);
    assert_int_equal(db->restart_policy.kind, OBI_RESTART_ON_FAILURE);
    assert_int_equal(db->restart_policy.max_attempts, 3);
    assert_int_equal(db->restart_policy.delay_ms, 90000);
    assert_int_equal(web->depends[0].cond, OBI_DEPEND_READY);
    assert_int_equal(web->depends[0].timeout_ms, 20000);
    assert_int_equal(web->depends[0].on_timeout, OBI_FAILURE_WARN);
    assert_int_equal(web->health.kind, OBI_HEALTH_COMMAND);
    assert_int_equal(web->health.interval_ms, 10000); /* zlayer's defaults */
    assert_int_equal(web->health.timeout_ms, 5000);
    assert_int_equal(web->health.retries, 3);
    assert_int_equal(web->init_step_count, 2);
    assert_int_equal(web->init_steps[0].action, OBI_INIT_WAIT_TCP);
    assert_string_equal(web->init_steps[0].host, "db");
    assert_int_equal(web->init_steps[0].port, 5432);
    assert_int_equal(web->init_steps[0].retry, 2);
    assert_int_equal(web->init_steps[0].timeout_ms, 30000); /* the wait's own default */
    assert_int_equal(web->init_steps[1].action, OBI_INIT_WAIT_HTTP);
    assert_int_equal(web->init_steps[1].timeout_ms, 9000); /* the smaller of 9 s and 1 m */
    assert_int_equal(web->init_steps[1].on_failure, OBI_FAILURE_CONTINUE);
    obi_deployment_free(d);

    expect_error(HEADER "  a: {health: {check: {type: tcp}}}\n",
                 "services.a.health.check: missing \"port\" for a tcp check");
    expect_error(HEADER "  a: {health: {check: {type: tcp, port: 1, url: \"http://x/\"}}}\n",
                 "unexpected \"url\" for a tcp check");
    expect_error(HEADER "  a: {health: {check: {type: ping, port: 1}}}\n",
                 "services.a.health.check.type: expected one of tcp, http, command");
    expect_error(HEADER "  a: {health: {interval: soon, check: {type: tcp, port: 1}}}\n",
                 "services.a.health.interval: expected a duration");
    expect_error(HEADER "  a: {health: {check: {type: http, url: \"https://x/\"}}}\n",
                 "only http:// URLs");
    expect_error(HEADER "  a: {health: {start_grace: 1s}}\n", "missing key \"check\"");
    expect_error(HEADER "  a: {init: {steps: [{id: x, uses: init.s3_push, with: {}}]}}\n",
                 "services.a.init.steps[0].uses: expected one of init.wait_tcp");
    expect_error(HEADER "  a: {init: {steps: [{id: x, uses: init.wait_tcp, with: {host: h}}]}}\n",
                 "services.a.init.steps[0].with: missing key \"port\"");
    expect_error(HEADER "  a: {errors: {on_panic: {action: explode}}}\n",
                 "services.a.errors.on_panic.action: expected one of restart, shutdown, isolate");
    expect_error(HEADER "  a: {restart_policy: {kind: sometimes}}\n",
                 "services.a.restart_policy.kind: expected one of no, always");
    expect_error(HEADER "  a: {}\n  b: {depends: [{service: a, timeout: forever}]}\n",
                 "services.b.depends[0].timeout: expected a duration");
}

static void test_deployment_rejects_bad_yaml(void **state)
{
    (void)state;
    expect_error("version: v1\n  bad: [\n", "invalid YAML");
    expect_error("- a\n- b\n", "expected a mapping");
    expect_error("", "empty document");
    expect_error(HEADER "  web: {}\n---\nversion: v1\n", "more than one YAML document");
}

static void test_deployment_load_names_file(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/d.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(HEADER "  web: {replicas: 2}\n", f);
    fclose(f);
    obi_deployment *d = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_deployment_load(path, &d, &err), -EINVAL,
                      "d.yaml:4:9: services.web");
    obi_test_tmpdir_remove(dir);
}

static void test_deployment_load_resolves_host_paths_against_its_directory(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    char *real = realpath(dir, NULL);
    char path[512], expected[600];
    snprintf(path, sizeof path, "%s/d.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(HEADER "  web:\n    image: {name: \"oci:images/app:1\"}\n"
                 "    storage: [{type: bind, source: data/www, target: /www}]\n"
                 "  db: {image: {rootfs: rootfs/db}}\n",
          f);
    fclose(f);
    obi_deployment *d = NULL;
    obi_error *err = NULL;
    assert_int_equal(obi_deployment_load(path, &d, &err), 0);
    snprintf(expected, sizeof expected, "%s/images/app", real);
    assert_string_equal(d->services[0].image_path, expected);
    assert_string_equal(d->services[0].image_tag, "1");
    snprintf(expected, sizeof expected, "%s/data/www", real);
    assert_string_equal(d->services[0].storage[0].source, expected);
    snprintf(expected, sizeof expected, "%s/rootfs/db", real);
    assert_string_equal(d->services[1].image_rootfs, expected);
    obi_deployment_free(d);
    /* ".." stays refused, relative or not. */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(HEADER "  web: {image: {rootfs: ../elsewhere}}\n", f);
    fclose(f);
    assert_fails_with(err, obi_deployment_load(path, &d, &err), -EINVAL,
                      "services.web.image.rootfs");
    free(real);
    obi_test_tmpdir_remove(dir);
}

/* Found by fuzzing: a storage item was searched for "type" before its keys were checked, and a
 * mapping used as a key reached strcmp as NULL. */
static void test_deployment_rejects_mapping_as_storage_key(void **state)
{
    (void)state;
    expect_error(HEADER "  web:\n    storage:\n      - { { type: tmpfs }: x, type: tmpfs }\n",
                 "keys must be strings");
    expect_error(HEADER "  web:\n    storage:\n      - { [a]: x }\n", "keys must be strings");
    expect_error("? [a]\n: b\nversion: v1\ndeployment: d\nservices: {}\n", "keys must be strings");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deployment_parses_every_field),
        cmocka_unit_test(test_deployment_defaults),
        cmocka_unit_test(test_deployment_unknown_key_names_service_key_and_position),
        cmocka_unit_test(test_deployment_rejects_duplicate_keys),
        cmocka_unit_test(test_deployment_requires_version_v1),
        cmocka_unit_test(test_deployment_name_rule),
        cmocka_unit_test(test_deployment_rtype_rules),
        cmocka_unit_test(test_deployment_image_rules),
        cmocka_unit_test(test_deployment_command_and_env_rules),
        cmocka_unit_test(test_deployment_resources_rules),
        cmocka_unit_test(test_deployment_devices_rules),
        cmocka_unit_test(test_deployment_storage_rules),
        cmocka_unit_test(test_deployment_capability_rules),
        cmocka_unit_test(test_deployment_scale_hostname_and_flags),
        cmocka_unit_test(test_deployment_depends_rules),
        cmocka_unit_test(test_deployment_supervisor_keys),
        cmocka_unit_test(test_deployment_rejects_bad_yaml),
        cmocka_unit_test(test_deployment_rejects_mapping_as_storage_key),
        cmocka_unit_test(test_deployment_load_names_file),
        cmocka_unit_test(test_deployment_load_resolves_host_paths_against_its_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
