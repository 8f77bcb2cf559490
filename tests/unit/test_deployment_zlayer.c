/*
 * Deployment documents as zlayer writes them (docs/service.md, "zlayer keys"): the shapes of
 * zlayer's own shipped examples (examples/simple.yaml, full-service.yaml, the GPU and
 * cluster-spec test fixtures, written again here in the same shape, without the supervisor's
 * keys: health, init, errors), each key into its field, the keys without effect here into one
 * notice each, and the refusals that name the key.
 */
#include <signal.h>
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

static size_t notice_count(const obi_deployment *d)
{
    size_t n = 0;
    while (d->notices && d->notices[n])
        n++;
    return n;
}

static bool has_notice(const obi_deployment *d, const char *prefix)
{
    for (size_t i = 0; d->notices && d->notices[i]; i++)
        if (!strncmp(d->notices[i], prefix, strlen(prefix)))
            return true;
    return false;
}

/* zlayer's examples/simple.yaml: a registry image with its pull policy, one public endpoint,
 * two fixed replicas. */
static void test_deployment_zlayer_simple_example(void **state)
{
    (void)state;
    obi_deployment *d = parse_ok("version: v1\n"
                                 "deployment: my-simple-app\n"
                                 "services:\n"
                                 "  web:\n"
                                 "    rtype: service\n"
                                 "    image:\n"
                                 "      name: nginx:alpine\n"
                                 "      pull_policy: if_not_present\n"
                                 "    endpoints:\n"
                                 "      - name: http\n"
                                 "        protocol: http\n"
                                 "        port: 80\n"
                                 "        expose: public\n"
                                 "    scale:\n"
                                 "      mode: fixed\n"
                                 "      replicas: 2\n");
    const obi_service *web = &d->services[0];
    assert_int_equal(web->image_kind, OBI_IMAGE_REGISTRY);
    assert_int_equal(web->image_pull_policy, OBI_PULL_IF_NOT_PRESENT);
    assert_int_equal(web->endpoint_count, 1);
    assert_string_equal(web->endpoints[0].name, "http");
    assert_int_equal(web->endpoints[0].protocol, OBI_ENDPOINT_HTTP);
    assert_int_equal(web->endpoints[0].port, 80);
    assert_int_equal(web->endpoints[0].target_port, 80);
    assert_true(web->endpoints[0].public);
    assert_null(web->endpoints[0].path);
    assert_int_equal(web->scale.mode, OBI_SCALE_FIXED);
    assert_int_equal(web->replicas, 2);
    assert_int_equal(notice_count(d), 0);
    obi_deployment_free(d);
}

/* zlayer's examples/full-service.yaml, the api and database services without health, init,
 * errors and depends conditions: network overlays and join policy, adaptive scale with
 * cooldown and targets, https and http endpoints, a pull policy per image. */
static void test_deployment_zlayer_full_service_example(void **state)
{
    (void)state;
    obi_deployment *d =
        parse_ok("version: v1\n"
                 "deployment: production-stack\n"
                 "services:\n"
                 "  api:\n"
                 "    rtype: service\n"
                 "    image:\n"
                 "      name: ghcr.io/myorg/api:latest\n"
                 "      pull_policy: always\n"
                 "    resources:\n"
                 "      cpu: 2.0\n"
                 "      memory: 512Mi\n"
                 "    env:\n"
                 "      NODE_ENV: production\n"
                 "      DATABASE_URL: $E:DATABASE_URL\n"
                 "    network:\n"
                 "      overlays:\n"
                 "        service: {enabled: true, encrypted: true, isolated: true}\n"
                 "        global: {enabled: true, encrypted: true}\n"
                 "      join: {mode: token, scope: service}\n"
                 "    endpoints:\n"
                 "      - {name: http, protocol: https, port: 3000, path: /api, "
                 "expose: public}\n"
                 "      - {name: metrics, protocol: http, port: 9090, "
                 "expose: internal}\n"
                 "    scale:\n"
                 "      mode: adaptive\n"
                 "      min: 2\n"
                 "      max: 50\n"
                 "      cooldown: 15s\n"
                 "      targets: {cpu: 70, rps: 800}\n"
                 "  database:\n"
                 "    rtype: service\n"
                 "    image: {name: postgres:16-alpine, pull_policy: if_not_present}\n"
                 "    endpoints:\n"
                 "      - {name: postgres, protocol: tcp, port: 5432, "
                 "expose: internal}\n"
                 "    scale: {mode: fixed, replicas: 1}\n");
    const obi_service *api = &d->services[0];
    assert_int_equal(api->image_kind, OBI_IMAGE_REGISTRY);
    assert_int_equal(api->image_pull_policy, OBI_PULL_ALWAYS);
    assert_int_equal(api->endpoint_count, 2);
    assert_int_equal(api->endpoints[0].protocol, OBI_ENDPOINT_HTTPS);
    assert_string_equal(api->endpoints[0].path, "/api");
    assert_true(api->endpoints[0].public);
    assert_false(api->endpoints[1].public);
    assert_int_equal(api->scale.mode, OBI_SCALE_ADAPTIVE);
    assert_int_equal(api->scale.min, 2);
    assert_int_equal(api->scale.max, 50);
    assert_int_equal(api->scale.cooldown_ms, 15000);
    assert_int_equal(api->scale.target_cpu, 70);
    assert_int_equal(api->scale.target_memory, 0);
    assert_int_equal(api->scale.target_rps, 800);
    assert_int_equal(api->replicas, 2); /* min: no autoscaler here */
    assert_true(has_notice(d, "services.api.network: "));
    assert_true(has_notice(d, "services.api.scale: adaptive scaling"));
    assert_int_equal(notice_count(d), 2);
    assert_int_equal(d->services[1].endpoints[0].protocol, OBI_ENDPOINT_TCP);
    obi_deployment_free(d);
}

/* The fixtures of zlayer's tests: placement (affinity, node_mode, node_selector), storage tier
 * and size, tunnels, api, cap_add, isolation, lifecycle, platform, gpu mode and model, s3
 * endpoint and credentials: all accepted, each a notice naming its key (but lifecycle, which
 * the supervisor applies). */
static void test_deployment_zlayer_fixture_keys_are_notices(void **state)
{
    (void)state;
    obi_deployment *d =
        parse_ok("version: v1\n"
                 "deployment: fixture-keys\n"
                 "tunnels:\n"
                 "  t1: {from: a, to: b, local_port: 22, remote_port: 2222}\n"
                 "api: {bind: \"127.0.0.1:3669\", future_key: 1}\n"
                 "services:\n"
                 "  worker:\n"
                 "    image: {name: busybox}\n"
                 "    affinity: spread\n"
                 "    node_mode: exclusive\n"
                 "    node_selector: {labels: {gpu: \"true\"}}\n"
                 "    platform: {os: linux, arch: arm64, osVersion: \"6.1\"}\n"
                 "    isolation: hyperv\n"
                 "    lifecycle: {delete_on_exit: true}\n"
                 "    cap_add: [SYS_ADMIN]\n"
                 "    storage:\n"
                 "      - {type: named, name: pg, target: /var/lib/pg, tier: local, size: 20Gi}\n"
                 "      - {type: s3, bucket: b, target: /b, endpoint: http://minio:9000, "
                 "credentials: minio}\n"
                 "    resources: {gpu: {count: 1, vendor: apple, mode: vm, model: M2}}\n");
    const obi_service *w = &d->services[0];
    static const char *const keys[] = {
        "tunnels: ",
        "api: ",
        "services.worker.affinity: ",
        "services.worker.node_mode: ",
        "services.worker.node_selector: ",
        "services.worker.platform: ",
        "services.worker.isolation: ",
        "services.worker.storage[0].tier: ",
        "services.worker.storage[0].size: ",
        "services.worker.storage[1].endpoint: ",
        "services.worker.storage[1].credentials: ",
        "services.worker.resources.gpu.mode: ",
        "services.worker.resources.gpu.model: ",
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (!has_notice(d, keys[i]))
            print_error("no notice for %s\n", keys[i]);
        assert_true(has_notice(d, keys[i]));
    }
    assert_int_equal(notice_count(d), sizeof keys / sizeof keys[0]);
    assert_true(w->has_capabilities);
    assert_string_equal(w->capabilities[0], "CAP_SYS_ADMIN");
    assert_true(w->delete_on_exit);
    assert_false(has_notice(d, "services.worker.lifecycle"));
    assert_string_equal(w->gpu.model, "M2");
    assert_int_equal(w->gpu.vendor, OBI_GPU_OTHER);
    /* the notices of one service, and the deployment-wide ones */
    const char **mine = obi_deployment_notices(d, "worker");
    size_t n = 0;
    while (mine[n])
        n++;
    assert_int_equal(n, notice_count(d));
    free(mine);
    const char **none = obi_deployment_notices(d, "work");
    n = 0;
    while (none[n])
        n++;
    assert_int_equal(n, 2); /* tunnels and api only: "work" is not a prefix match */
    free(none);
    obi_deployment_free(d);
}

static void test_deployment_zlayer_bundle_fields(void **state)
{
    (void)state;
    obi_deployment *d = parse_ok(HEADER "  web:\n"
                                        "    devices: [{path: /dev/kvm, mknod: true}, {path: "
                                        "/dev/fuse, write: false}]\n"
                                        "    ulimits:\n"
                                        "      NOFILE: {soft: 65536, hard: 65536}\n"
                                        "      memlock: {soft: -1, hard: -1}\n"
                                        "      nproc: {hard: 100}\n"
                                        "    dns: [1.1.1.1, \"2606:4700::1111\"]\n"
                                        "    cgroup_parent: tenants/a/\n"
                                        "    cap_drop: [NET_RAW, net_raw]\n"
                                        "    extra_groups: [audio, \"44\"]\n"
                                        "    stop_signal: SIGQUIT\n"
                                        "    stop_grace_period: 1m 30s\n"
                                        "    network_mode: {bridge: {name: n1}}\n"
                                        "    resources:\n"
                                        "      pids_limit: 0\n"
                                        "      memory: 1Gi\n"
                                        "      memory_swap: -1\n"
                                        "      gpu: {sharing: mps}\n"
                                        "  job: {network_mode: host, stop_signal: \"9\"}\n");
    const obi_service *web = &d->services[0];
    assert_true(web->devices[0].read && web->devices[0].write && web->devices[0].mknod);
    assert_true(web->devices[1].read && !web->devices[1].write && !web->devices[1].mknod);
    assert_int_equal(web->ulimit_count, 3);
    assert_string_equal(web->ulimits[0].type, "RLIMIT_NOFILE");
    assert_int_equal(web->ulimits[0].soft, 65536);
    assert_string_equal(web->ulimits[1].type, "RLIMIT_MEMLOCK");
    assert_true(web->ulimits[1].soft == UINT64_MAX && web->ulimits[1].hard == UINT64_MAX);
    assert_true(web->ulimits[2].soft == 100 && web->ulimits[2].hard == 100);
    assert_string_equal(web->dns[1], "2606:4700::1111");
    assert_string_equal(web->cgroup_parent, "/tenants/a");
    assert_string_equal(web->cap_drop[0], "CAP_NET_RAW");
    assert_null(web->cap_drop[1]);
    assert_string_equal(web->extra_groups[0], "audio");
    assert_string_equal(web->extra_groups[1], "44");
    assert_false(web->has_capabilities);
    assert_int_equal(web->stop_signal, 3);
    assert_int_equal(web->stop_grace_ms, 90000);
    assert_false(web->host_network);
    assert_true(web->has_pids_limit);
    assert_int_equal(web->pids_limit, -1);
    assert_int_equal(web->memory_swap, -1);
    assert_int_equal(web->gpu.sharing, OBI_GPU_SHARING_MPS);
    assert_string_equal(web->gpu.mps_pipe_dir, "/tmp/nvidia-mps");
    assert_string_equal(web->gpu.mps_log_dir, "/tmp/nvidia-log");
    assert_true(has_notice(d, "services.web.network_mode: "));
    assert_true(d->services[1].host_network);
    assert_int_equal(d->services[1].stop_signal, 9);
    assert_false(has_notice(d, "services.job.network_mode"));
    obi_deployment_free(d);
}

static void test_deployment_zlayer_validation_gaps_are_refused(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {scale: {replicas: 3}}\n",
                 "t.yaml:4:16: services.web.scale: missing key \"mode\"");
    expect_error(HEADER "  web: {scale: {mode: fixed}}\n",
                 "services.web.scale.replicas: missing: scale mode fixed needs it");
    expect_error(HEADER "  web: {scale: {mode: fixed, replicas: 2, min: 1}}\n",
                 "services.web.scale: unknown key \"min\"");
    expect_error(HEADER "  web: {scale: {mode: manual, replicas: 2}}\n",
                 "unknown key \"replicas\"");
    expect_error(HEADER "  web: {scale: {mode: adaptive, min: 1, max: 2, targets: {cpu: 101}}}\n",
                 "services.web.scale.targets.cpu: 101 is out of range 0..100");
    expect_error(HEADER "  web: {scale: {mode: adaptive, min: 1, max: 2, cooldown: soon}}\n",
                 "services.web.scale.cooldown: duration \"soon\"");
    expect_error(HEADER "  web: {storage: [{type: anonymous, target: /a, readonly: false}]}\n",
                 "services.web.storage[0].readonly: anonymous storage starts empty");
    expect_error(HEADER "  web: {storage: [{type: bind, source: /a, target: /a, tier: local}]}\n",
                 "services.web.storage[0]: unknown key \"tier\"");
}

static void test_deployment_zlayer_refusals_name_the_key(void **state)
{
    (void)state;
    expect_error(HEADER "  web: {cap_add: [KILL], capabilities: [CHOWN]}\n",
                 "services.web.cap_add: cap_add is zlayer's alias");
    expect_error(HEADER "  web: {cap_drop: [FLY]}\n",
                 "services.web.cap_drop[0]: unknown capability \"FLY\"");
    expect_error(HEADER "  web: {node_mode: solo}\n",
                 "services.web.node_mode: expected one of shared, dedicated, exclusive");
    expect_error(HEADER "  web: {node_selector: {label: {a: b}}}\n",
                 "services.web.node_selector: unknown key \"label\"");
    expect_error(HEADER "  web: {affinity: {pin: 2, spread: x}}\n", "services.web.affinity");
    expect_error(HEADER "  web: {network: {join: {mode: anyone}}}\n",
                 "services.web.network.join.mode: expected one of open, token, closed");
    expect_error(HEADER "  web: {wasm: {idle_timeout: forever}}\n",
                 "services.web.wasm.idle_timeout: duration \"forever\"");
    expect_error(HEADER "  web: {logs: {max_size_bytes: -1}}\n",
                 "services.web.logs.max_size_bytes: expected an integer");
    expect_error(HEADER "  web: {tty: maybe}\n", "services.web.tty: expected true or false");
    expect_error(HEADER "  web: {image: {name: nginx, source_policy: nearest}}\n",
                 "services.web.image.source_policy: expected one of local_first");
    expect_error(HEADER "  web: {resources: {gpu: {sharing: shared}}}\n",
                 "services.web.resources.gpu.sharing: expected exclusive, mps or time-slice");
    expect_error(HEADER "  web: {resources: {gpu: {time_slice_index: 1}}}\n",
                 "services.web.resources.gpu.time_slice_index: only used with sharing: "
                 "time-slice");
    expect_error(HEADER "  web: {resources: {gpu: {scheduling: asap}}}\n",
                 "services.web.resources.gpu.scheduling: expected one of best-effort, gang, "
                 "spread");
    expect_error(HEADER "  web: {resources: {memory: 1Gi, memory_swap: 512Mi}}\n",
                 "memory_swap (memory plus swap) needs memory, and must not be below it");
    expect_error(HEADER "  web: {resources: {oom_score_adj: -1001}}\n",
                 "services.web.resources.oom_score_adj: -1001 is out of range -1000..1000");
    expect_error(HEADER "  web: {resources: {cpuset: \"0;1\"}}\n", "is not a CPU list");
    expect_error(HEADER "  web: {ulimits: {nofile: {}}}\n",
                 "services.web.ulimits.nofile: give soft, hard or both");
    expect_error(HEADER "  web: {ulimits: {nofile: {soft: 1}, NOFILE: {soft: 2}}}\n",
                 "services.web.ulimits.NOFILE: named twice");
    expect_error(HEADER "  web: {cgroup_parent: \"system.slice:docker:x\"}\n",
                 "is not a cgroup path");
    expect_error(HEADER "  web: {network_mode: \"container:\"}\n", "unknown network mode");
    expect_error(HEADER "  web: {stop_signal: SIGFOO}\n",
                 "services.web.stop_signal: expected a signal like SIGTERM");
    expect_error(HEADER "  web: {extra_hosts: [\"db\"]}\n",
                 "services.web.extra_hosts[0]: \"db\" is not HOSTNAME:IP");
    /* a name must not add or comment out lines of the replica's /etc/hosts */
    expect_error(HEADER "  web: {extra_hosts: [\"ok:1.2.3.4\", \"a b:1.2.3.4\"]}\n",
                 "services.web.extra_hosts[1]: \"a b:1.2.3.4\" is not HOSTNAME:IP");
    expect_error(HEADER "  web: {extra_hosts: [\"#x:1.2.3.4\"]}\n",
                 "services.web.extra_hosts[0]: \"#x:1.2.3.4\" is not HOSTNAME:IP");
    expect_error(HEADER "  web: {extra_hosts: [\"x:1.2.3.4\\n9.9.9.9 evil\"]}\n",
                 "services.web.extra_hosts[0]: ");
    expect_error(HEADER "  web: {pid_mode: host}\n",
                 "services.web.pid_mode: host needs userns_mode: host or privileged: true");
    expect_error(HEADER "  web: {ipc_mode: host, userns_mode: private}\n",
                 "services.web.ipc_mode: host needs userns_mode: host or privileged: true");
    expect_error(HEADER "  web: {pid_mode: sideways}\n",
                 "services.web.pid_mode: expected host, private, service:NAME or container:NAME");
    expect_error(HEADER "  web: {init_container: maybe}\n",
                 "services.web.init_container: expected true or false");
    expect_error(HEADER "  web: {extra_groups: [\"a b\"]}\n",
                 "services.web.extra_groups[0]: \"a b\" is not a group name or gid");
    expect_error(HEADER "  web: {sysctls: {\"../x\": \"1\"}}\n",
                 "services.web.sysctls.../x: not a valid sysctl name");
    expect_error(HEADER "  web: {port_mappings: [{host_port: 80}]}\n",
                 "services.web.port_mappings[0]: missing key \"container_port\"");
    expect_error(HEADER "  web: {port_mappings: [{container_port: 80, host_ip: localhost}]}\n",
                 "services.web.port_mappings[0].host_ip: \"localhost\" is not an IPv4");
    expect_error(HEADER "  web: {endpoints: [{name: a, protocol: tcp, port: 1, path: /x}]}\n",
                 "path is only for http, https and websocket endpoints");
    expect_error(HEADER "  web: {endpoints: [{name: a, protocol: http, port: 1, path: x}]}\n",
                 "services.web.endpoints[0].path: \"x\" is not a URL path");
    expect_error(HEADER "  web: {endpoints: [{name: a, protocol: http, port: 1, "
                        "target_role: primary}]}\n",
                 "services.web.endpoints[0].target_role: names a replica group");
    expect_error("version: v1\ndeployment: abc\ntunnels: {t: {from: a, to: b, local_port: 1}}\n",
                 "tunnels.t: missing key \"remote_port\"");
    expect_error("version: v1\ndeployment: abc\nexternals: {e: {endpoints: []}}\n",
                 "externals.e: missing key \"backends\"");
    expect_error("version: v1\ndeployment: abc\napi: {swagger: sometimes}\n",
                 "api.swagger: expected true or false");
}

static void test_deployment_zlayer_endpoint_and_port_fields(void **state)
{
    (void)state;
    obi_deployment *d = parse_ok(HEADER "  web:\n"
                                        "    endpoints:\n"
                                        "      - {name: ws, protocol: websocket, port: 443, "
                                        "target_port: 8443, host: \"*.example.com\"}\n"
                                        "      - {name: dns, protocol: udp, port: 53}\n"
                                        "    port_mappings:\n"
                                        "      - {container_port: 80}\n"
                                        "      - {host_port: 5353, container_port: 53, protocol: "
                                        "udp, host_ip: \"::1\"}\n");
    const obi_service *web = &d->services[0];
    assert_int_equal(web->endpoints[0].protocol, OBI_ENDPOINT_WEBSOCKET);
    assert_int_equal(web->endpoints[0].target_port, 8443);
    assert_string_equal(web->endpoints[0].host, "*.example.com");
    assert_false(web->endpoints[0].public);
    assert_int_equal(web->endpoints[1].protocol, OBI_ENDPOINT_UDP);
    assert_int_equal(web->port_mapping_count, 2);
    assert_int_equal(web->port_mappings[0].host_port, 0);
    assert_null(web->port_mappings[0].host_ip); /* where endpoints are published */
    assert_int_equal(web->port_mappings[0].container_port, 80);
    assert_false(web->port_mappings[0].udp);
    assert_true(web->port_mappings[1].udp);
    assert_int_equal(web->port_mappings[1].host_port, 5353);
    assert_string_equal(web->port_mappings[1].host_ip, "::1");
    assert_false(has_notice(d, "services.web.port_mappings"));
    assert_int_equal(notice_count(d), 0);
    obi_deployment_free(d);
}

/* extra_hosts, the namespace modes, init_container and the stop keys mean something on one
 * node: parsed into the service, no notice (but service:/container: and a Docker remap, which
 * keep the replica's own namespace). */
static void test_deployment_zlayer_host_keys_take_effect(void **state)
{
    (void)state;
    obi_deployment *d = parse_ok(HEADER "  web:\n"
                                        "    extra_hosts: [\"db.local:10.1.2.3\", "
                                        "\"gw:host-gateway\", \"v6:2001:db8::1\"]\n"
                                        "    pid_mode: host\n"
                                        "    ipc_mode: host\n"
                                        "    userns_mode: host\n"
                                        "    init_container: true\n"
                                        "    stop_signal: SIGUSR1\n"
                                        "    stop_grace_period: 2s\n"
                                        "  job:\n"
                                        "    pid_mode: \"service:web\"\n"
                                        "    ipc_mode: shareable\n"
                                        "    userns_mode: default-remap\n");
    const obi_service *web = &d->services[0], *job = &d->services[1];
    assert_string_equal(web->extra_hosts[0], "db.local:10.1.2.3");
    assert_string_equal(web->extra_hosts[1], "gw:host-gateway");
    assert_string_equal(web->extra_hosts[2], "v6:2001:db8::1");
    assert_null(web->extra_hosts[3]);
    assert_int_equal(web->pid_mode, OBI_NAMESPACE_HOST);
    assert_int_equal(web->ipc_mode, OBI_NAMESPACE_HOST);
    assert_true(web->userns_host);
    assert_true(web->init_container);
    assert_int_equal(web->stop_signal, SIGUSR1);
    assert_int_equal(web->stop_grace_ms, 2000);
    assert_int_equal(job->pid_mode, OBI_NAMESPACE_PRIVATE);
    assert_int_equal(job->ipc_mode, OBI_NAMESPACE_PRIVATE);
    assert_false(job->userns_host);
    assert_false(job->init_container);
    assert_null(job->extra_hosts);
    assert_true(has_notice(d, "services.job.pid_mode: "));
    assert_true(has_notice(d, "services.job.userns_mode: "));
    assert_int_equal(notice_count(d), 2);
    obi_deployment_free(d);
    /* with the host's network there is nothing to publish and no hosts file of ours */
    d = parse_ok(HEADER "  web:\n"
                        "    host_network: true\n"
                        "    extra_hosts: [\"db:10.1.2.3\"]\n"
                        "    port_mappings: [{container_port: 80}]\n");
    assert_true(has_notice(d, "services.web: port_mappings with the host's network"));
    assert_true(has_notice(d, "services.web: extra_hosts with the host's network"));
    assert_int_equal(notice_count(d), 2);
    obi_deployment_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deployment_zlayer_simple_example),
        cmocka_unit_test(test_deployment_zlayer_full_service_example),
        cmocka_unit_test(test_deployment_zlayer_fixture_keys_are_notices),
        cmocka_unit_test(test_deployment_zlayer_bundle_fields),
        cmocka_unit_test(test_deployment_zlayer_validation_gaps_are_refused),
        cmocka_unit_test(test_deployment_zlayer_refusals_name_the_key),
        cmocka_unit_test(test_deployment_zlayer_endpoint_and_port_fields),
        cmocka_unit_test(test_deployment_zlayer_host_keys_take_effect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
