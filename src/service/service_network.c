/*
 * A network per deployment (include/ocibuild/service_network.h): a bridge, a namespace and veth
 * pair per replica, addresses from the deployment's /24, /etc/hosts text for the bundle writer,
 * a TCP proxy per deployment for public endpoints, and the teardown and crash sweep of all of
 * it. The host is changed through iproute2's `ip` (docs/service.md, "Networks", says why not
 * rtnetlink): every step is one command whose error output is passed on as it is. The state dir
 * records each thing before it is made, so teardown and the sweep always know what to remove.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/detached.h"
#include "ocibuild/fs.h"
#include "ocibuild/number.h"
#include "ocibuild/process.h"
#include "ocibuild/service_hosts.h"
#include "ocibuild/service_network.h"
#include "ocibuild/service_spec.h"

#define STATE_ROOT "/run/ocibuild/networks"
#define NETNS_DIR "/run/netns"
#define DEFAULT_POOL "10.231.0.0/16"
#define DEFAULT_PUBLISH_ADDRESS "0.0.0.0"
#define KEY_LEN 12
#define NETNS_PREFIX "obi-"
#define BRIDGE_PREFIX "obr"
#define VETH_PREFIX "obv"
#define MAX_HOSTS 253 /* .2 .. .254 of the /24; .1 is the bridge */
#define IP_OUTPUT_MAX 4096
#define PROXY_MAX_CONNECTIONS 256
#define PROXY_STOP_WAIT_MS 5000
#define NOBODY_ID 65534

typedef struct address {
    char *id;
    char *service;
    unsigned replica;
    unsigned host; /* the last octet */
} address;

struct obi_service_network {
    char *data_dir;
    char *deployment;
    char key[KEY_LEN + 1];
    char *dir;    /* STATE_ROOT/<key> */
    char *ip;     /* iproute2's ip */
    int subnet;   /* index in the pool, -1 before prepare */
    uint32_t net; /* the /24, host order */
    address *addresses;
    size_t address_count;
};

/* ---- names ----------------------------------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void hash_hex(const char *a, const char *b, char out[KEY_LEN + 1])
{
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, a, strlen(a) + 1);
    h = fnv1a(h, b, strlen(b));
    snprintf(out, KEY_LEN + 1, "%012llx", (unsigned long long)(h & 0xffffffffffffULL));
}

static void bridge_name(const obi_service_network *net, char out[IFNAMSIZ])
{
    snprintf(out, IFNAMSIZ, BRIDGE_PREFIX "%s", net->key);
}

static void veth_name(const obi_service_network *net, const char *id, char out[IFNAMSIZ])
{
    char hex[KEY_LEN + 1];
    hash_hex(net->key, id, hex);
    snprintf(out, IFNAMSIZ, VETH_PREFIX "%s", hex);
}

static char *netns_name(const obi_service_network *net, const char *id)
{
    char *name = NULL;
    return asprintf(&name, NETNS_PREFIX "%s-%s", net->key, id) < 0 ? NULL : name;
}

static const char *state_root(void)
{
    return STATE_ROOT;
}

/* ---- iproute2 ------------------------------------------------------------------------- */

/* Runs `ip ARGS...` (NULL-terminated); a failure names the command and quotes ip's output.
 * With missing_ok, "does not exist" answers count as success. */
static int ip_run(const obi_service_network *net, bool missing_ok, obi_error **err, ...)
{
    const char *argv[16] = {net->ip};
    size_t n = 1;
    va_list ap;
    va_start(ap, err);
    for (const char *a; n < OBI_ARRAY_SIZE(argv) - 1 && (a = va_arg(ap, const char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    cleanup_free char *output = NULL;
    int code = 0;
    int r = obi_run_capture((char *const *)argv, true, IP_OUTPUT_MAX, &output, &code, err);
    if (r < 0)
        return r;
    if (code == 0)
        return 0;
    if (missing_ok && (strstr(output, "Cannot find device") || strstr(output, "No such file") ||
                       strstr(output, "does not exist")))
        return 0;
    cleanup_buf obi_buf cmd = OBI_BUF_INIT;
    for (size_t i = 0; i < n; i++)
        if (obi_buf_appendf(&cmd, "%s%s", i ? " " : "", argv[i]) < 0)
            return obi_error_oom(err);
    output[strcspn(output, "\n")] = '\0';
    return obi_error_set(err, -EIO, "%.*s: exit %d: %s", (int)cmd.len, (const char *)cmd.data, code,
                         output);
}

static bool link_exists(const char *name)
{
    return if_nametoindex(name) != 0;
}

/* ---- the state dir -------------------------------------------------------------------- */

/* Takes the host-wide lock of the state root (made 0700 when missing). */
static int lock_root(int *fd_out, obi_error **err)
{
    int r = obi_mkdir_p(state_root(), 0700, err);
    if (r < 0)
        return r;
    cleanup_free char *path = obi_path_join(state_root(), ".lock");
    if (!path)
        return obi_error_oom(err);
    cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s", path);
    while (flock(fd, LOCK_EX) < 0)
        if (errno != EINTR)
            return obi_error_set_errno(err, errno, "flock %s", path);
    *fd_out = steal_fd(&fd);
    return 0;
}

static int read_state(const obi_service_network *net, const char *name, char **text,
                      obi_error **err)
{
    cleanup_free char *path = obi_path_join(net->dir, name);
    if (!path)
        return obi_error_oom(err);
    size_t len;
    cleanup_error obi_error *read_err = NULL;
    int r = obi_read_file(path, 1 << 20, text, &len, &read_err);
    return r == -ENOENT ? -ENOENT : r < 0 ? obi_error_move(err, &read_err) : 0;
}

static int write_state(const obi_service_network *net, const char *name, const char *text,
                       obi_error **err)
{
    cleanup_free char *path = obi_path_join(net->dir, name);
    if (!path)
        return obi_error_oom(err);
    return obi_write_file_atomic(path, text, strlen(text), 0600, err);
}

static void addresses_clear(obi_service_network *net)
{
    for (size_t i = 0; i < net->address_count; i++) {
        free(net->addresses[i].id);
        free(net->addresses[i].service);
    }
    free(net->addresses);
    net->addresses = NULL;
    net->address_count = 0;
}

static int address_add(obi_service_network *net, const char *id, const char *service,
                       unsigned replica, unsigned host, obi_error **err)
{
    address *grown = reallocarray(net->addresses, net->address_count + 1, sizeof *grown);
    if (!grown)
        return obi_error_oom(err);
    net->addresses = grown;
    address *a = &grown[net->address_count];
    *a = (address){strdup(id), strdup(service), replica, host};
    if (!a->id || !a->service) {
        free(a->id);
        free(a->service);
        return obi_error_oom(err);
    }
    net->address_count++;
    return 0;
}

/* Reads subnet and addresses (both may be missing). */
static int load_state(obi_service_network *net, obi_error **err)
{
    cleanup_free char *subnet = NULL;
    cleanup_free char *text = NULL;
    int r = read_state(net, "subnet", &subnet, err);
    if (r < 0 && r != -ENOENT)
        return r;
    unsigned long long index = 0;
    if (r == 0) {
        subnet[strcspn(subnet, "\n")] = '\0';
        if (!obi_parse_decimal(subnet, 65535, &index))
            return obi_error_set(err, -EINVAL, "%s/subnet: not a subnet index", net->dir);
        net->subnet = (int)index;
    }
    addresses_clear(net);
    if ((r = read_state(net, "addresses", &text, err)) == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *fields[4] = {NULL};
        char *inner = NULL;
        size_t n = 0;
        for (char *f = strtok_r(line, " ", &inner); f && n < 4; f = strtok_r(NULL, " ", &inner))
            fields[n++] = f;
        unsigned long long host = 0, replica = 0;
        if (n != 4 || !obi_parse_decimal(fields[1], MAX_HOSTS + 1, &host) || host < 2 ||
            !obi_parse_decimal(fields[3], UINT32_MAX, &replica))
            return obi_error_set(err, -EINVAL, "%s/addresses: bad line for \"%s\"", net->dir,
                                 fields[0] ? fields[0] : "");
        if ((r = address_add(net, fields[0], fields[2], (unsigned)replica, (unsigned)host, err)) <
            0)
            return r;
    }
    return 0;
}

static int save_addresses(const obi_service_network *net, obi_error **err)
{
    cleanup_buf obi_buf text = OBI_BUF_INIT;
    for (size_t i = 0; i < net->address_count; i++) {
        const address *a = &net->addresses[i];
        if (obi_buf_appendf(&text, "%s %u %s %u\n", a->id, a->host, a->service, a->replica) < 0)
            return obi_error_oom(err);
    }
    return write_state(net, "addresses", text.len ? (const char *)text.data : "", err);
}

static const address *address_find(const obi_service_network *net, const char *id)
{
    for (size_t i = 0; i < net->address_count; i++)
        if (!strcmp(net->addresses[i].id, id))
            return &net->addresses[i];
    return NULL;
}

static void format_ip(uint32_t addr, char out[INET_ADDRSTRLEN])
{
    struct in_addr in = {htonl(addr)};
    inet_ntop(AF_INET, &in, out, INET_ADDRSTRLEN);
}

/* ---- open / close --------------------------------------------------------------------- */

bool obi_service_uses_network(const obi_service *svc)
{
    return !svc->host_network;
}

bool obi_deployment_uses_network(const obi_deployment *d)
{
    for (size_t i = 0; i < d->service_count; i++)
        if (obi_service_uses_network(&d->services[i]))
            return true;
    return false;
}

void obi_replica_network_clear(obi_replica_network *rn)
{
    free(rn->netns_path);
    free(rn->hosts);
    free(rn->userns_path);
    rn->netns_path = rn->hosts = rn->userns_path = NULL;
}

void obi_service_network_close(obi_service_network *net)
{
    if (!net)
        return;
    addresses_clear(net);
    free(net->data_dir);
    free(net->deployment);
    free(net->dir);
    free(net->ip);
    free(net);
}
OBI_DEFINE_CLEANUP(obi_service_network, obi_service_network_close)
#define cleanup_network _cleanup_(obi_service_network_closep)

int obi_service_network_open(const char *data_dir, const char *deployment,
                             obi_service_network **out, bool *exists, obi_error **err)
{
    cleanup_network obi_service_network *net = calloc(1, sizeof *net);
    if (!net)
        return obi_error_oom(err);
    net->subnet = -1;
    hash_hex(data_dir, deployment, net->key);
    if (!(net->data_dir = strdup(data_dir)) || !(net->deployment = strdup(deployment)) ||
        !(net->dir = obi_path_join(state_root(), net->key)))
        return obi_error_oom(err);
    if (!(net->ip = obi_find_executable("ip", "/usr/sbin:/sbin:/usr/bin:/bin")))
        return obi_error_set(err, -ENOENT,
                             "the service network needs iproute2's ip, which is not installed "
                             "(apt-get install iproute2), or host_network: true");
    struct stat st;
    bool found = stat(net->dir, &st) == 0;
    int r;
    if (found && (r = load_state(net, err)) < 0)
        return r;
    if (exists)
        *exists = found;
    *out = steal_pointer(&net);
    return 0;
}

/* ---- prepare: subnet, bridge, addresses ------------------------------------------------- */

typedef struct pool {
    uint32_t base;  /* host order */
    unsigned count; /* /24s in it */
} pool;

static int parse_pool(pool *out, obi_error **err)
{
    const char *text = getenv("OCIBUILD_SERVICE_SUBNETS");
    if (!text || !*text)
        text = DEFAULT_POOL;
    char addr[INET_ADDRSTRLEN];
    unsigned prefix = 0;
    struct in_addr in;
    const char *slash = strchr(text, '/');
    unsigned long long value = 0;
    if (!slash || (size_t)(slash - text) >= sizeof addr ||
        !obi_parse_decimal(slash + 1, 32, &value))
        return obi_error_set(err, -EINVAL, "OCIBUILD_SERVICE_SUBNETS=%s: not ADDRESS/PREFIX", text);
    snprintf(addr, sizeof addr, "%.*s", (int)(slash - text), text);
    prefix = (unsigned)value;
    if (inet_pton(AF_INET, addr, &in) != 1 || prefix < 8 || prefix > 24)
        return obi_error_set(err, -EINVAL,
                             "OCIBUILD_SERVICE_SUBNETS=%s: an IPv4 network with a prefix of /8 "
                             "to /24 is needed",
                             text);
    uint32_t mask = prefix ? ~0U << (32 - prefix) : 0;
    out->base = ntohl(in.s_addr) & mask;
    out->count = 1U << (24 - prefix);
    return 0;
}

/* Whether an address of some interface on the host falls in the /24 at net. */
static bool subnet_in_use_on_host(uint32_t net)
{
    struct ifaddrs *list = NULL;
    if (getifaddrs(&list) < 0)
        return false;
    bool used = false;
    for (struct ifaddrs *i = list; i && !used; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
            used = (ntohl(((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr.s_addr) &
                    0xffffff00U) == net;
    freeifaddrs(list);
    return used;
}

/* The subnet indexes recorded by every network's state dir but ours. */
static bool subnet_recorded_elsewhere(const obi_service_network *net, unsigned index)
{
    cleanup_dir DIR *dir = opendir(state_root());
    struct dirent *d;
    while (dir && (d = readdir(dir))) {
        if (d->d_name[0] == '.' || !strcmp(d->d_name, net->key))
            continue;
        cleanup_free char *path = NULL;
        if (asprintf(&path, "%s/%s/subnet", state_root(), d->d_name) < 0)
            return true;
        cleanup_free char *text = NULL;
        size_t len;
        cleanup_error obi_error *ignored = NULL;
        unsigned long long value;
        if (obi_read_file(path, 64, &text, &len, &ignored) == 0) {
            text[strcspn(text, "\n")] = '\0';
            if (obi_parse_decimal(text, 65535, &value) && value == index)
                return true;
        }
    }
    return false;
}

static int allocate_subnet(obi_service_network *net, const pool *p, obi_error **err)
{
    if (net->subnet >= 0 && (unsigned)net->subnet < p->count)
        return 0;
    for (unsigned i = 0; i < p->count; i++) {
        if (subnet_recorded_elsewhere(net, i) || subnet_in_use_on_host(p->base + (i << 8)))
            continue;
        char text[16];
        snprintf(text, sizeof text, "%u\n", i);
        int r = write_state(net, "subnet", text, err);
        if (r < 0)
            return r;
        net->subnet = (int)i;
        return 0;
    }
    char first[INET_ADDRSTRLEN];
    format_ip(p->base, first);
    return obi_error_set(err, -ENOSPC,
                         "no free /24 left in the service network pool %s (%u of them, each "
                         "taken by a deployment or a host interface); set "
                         "OCIBUILD_SERVICE_SUBNETS to a larger private range",
                         first, p->count);
}

static int make_bridge(obi_service_network *net, obi_error **err)
{
    char bridge[IFNAMSIZ], gateway[INET_ADDRSTRLEN + 4];
    bridge_name(net, bridge);
    format_ip(net->net + 1, gateway);
    strcat(gateway, "/24");
    int r;
    if (!link_exists(bridge) &&
        (r = ip_run(net, false, err, "link", "add", bridge, "type", "bridge", (char *)NULL)) < 0)
        return r;
    /* "replace": the same address again is no error (a second up) */
    if ((r = ip_run(net, false, err, "addr", "replace", gateway, "dev", bridge, (char *)NULL)) < 0)
        return r;
    return ip_run(net, false, err, "link", "set", bridge, "up", (char *)NULL);
}

/* Gives every replica of d that uses the network an address (lowest free host number). */
/* Whether id is a replica of d on the network. */
static bool plan_has_replica(const obi_deployment *d, const address *a)
{
    const obi_service *svc = obi_deployment_find(d, a->service);
    return svc && obi_service_uses_network(svc) && a->replica >= 1 && a->replica <= svc->replicas;
}

/* Drops the addresses of replicas d no longer names once their namespace is gone (`down` of a
 * scaled-down replica removed it), so hosts files stop naming them. */
static bool prune_addresses(obi_service_network *net, const obi_deployment *d)
{
    size_t kept = 0;
    for (size_t i = 0; i < net->address_count; i++) {
        address *a = &net->addresses[i];
        cleanup_free char *ns = netns_name(net, a->id);
        cleanup_free char *path = ns ? obi_path_join(NETNS_DIR, ns) : NULL;
        if (plan_has_replica(d, a) || !path || access(path, F_OK) == 0) {
            net->addresses[kept++] = *a;
            continue;
        }
        free(a->id);
        free(a->service);
    }
    bool changed = kept != net->address_count;
    net->address_count = kept;
    return changed;
}

static int assign_addresses(obi_service_network *net, const obi_deployment *d, obi_error **err)
{
    bool changed = prune_addresses(net, d);
    for (size_t s = 0; s < d->service_count; s++) {
        const obi_service *svc = &d->services[s];
        if (!obi_service_uses_network(svc))
            continue;
        for (unsigned rep = 1; rep <= svc->replicas; rep++) {
            cleanup_free char *id = obi_service_container_id(svc->name, rep);
            if (!id)
                return obi_error_oom(err);
            if (address_find(net, id))
                continue;
            unsigned host = 2;
            for (size_t i = 0; i < net->address_count; i++)
                if (net->addresses[i].host == host) {
                    host++;
                    i = (size_t)-1; /* start over: the list is not sorted */
                }
            if (host > MAX_HOSTS + 1)
                return obi_error_set(err, -ENOSPC,
                                     "deployment %s: more than %u replicas on its network (a "
                                     "/24): services.%s replica %u has no address left",
                                     d->name, MAX_HOSTS, svc->name, rep);
            int r = address_add(net, id, svc->name, rep, host, err);
            if (r < 0)
                return r;
            changed = true;
        }
    }
    return changed ? save_addresses(net, err) : 0;
}

int obi_service_network_prepare(obi_service_network *net, const obi_deployment *d, obi_error **err)
{
    pool p = {0, 0};
    int r = parse_pool(&p, err);
    if (r < 0)
        return r;
    cleanup_close int lock = -1;
    if ((r = lock_root(&lock, err)) < 0)
        return r;
    if ((r = obi_mkdir_p(net->dir, 0700, err)) < 0)
        return r;
    cleanup_free char *owner = NULL;
    if (asprintf(&owner, "%s\n%s\n", net->data_dir, net->deployment) < 0)
        return obi_error_oom(err);
    if ((r = write_state(net, "owner", owner, err)) < 0 || (r = allocate_subnet(net, &p, err)) < 0)
        return obi_error_prefix(err, r, "network of %s", net->deployment);
    net->net = p.base + ((uint32_t)net->subnet << 8);
    if ((r = make_bridge(net, err)) < 0 || (r = assign_addresses(net, d, err)) < 0)
        return obi_error_prefix(err, r, "network of %s", net->deployment);
    return 0;
}

/* ---- replicas ------------------------------------------------------------------------- */

/* The replica's /etc/hosts: every replica of the deployment by address; host-gateway is the
 * bridge's address (.1), at which replicas reach the host. */
static int hosts_text(const obi_service_network *net, const obi_service *svc, const char *id,
                      char **out, obi_error **err)
{
    cleanup_buf obi_buf text = OBI_BUF_INIT;
    int r = obi_hosts_begin(&text, id, net->deployment, NULL, err);
    if (r < 0)
        return r;
    for (size_t i = 0; i < net->address_count; i++) {
        const address *a = &net->addresses[i];
        char ip[INET_ADDRSTRLEN];
        format_ip(net->net + a->host, ip);
        /* <service>-<n>, the container id, the service name (every replica: a resolver that
         * reads all lines spreads over them, the usual ones take the first), and this
         * replica's own hostname on its own line */
        if (obi_buf_appendf(&text, "%s\t%s-%u %s %s", ip, a->service, a->replica, a->id,
                            a->service) < 0 ||
            (!strcmp(a->id, id) && svc->hostname && strcmp(svc->hostname, a->service) &&
             obi_buf_appendf(&text, " %s", svc->hostname) < 0) ||
            obi_buf_appendf(&text, "\n") < 0)
            return obi_error_oom(err);
    }
    char gateway[INET_ADDRSTRLEN];
    format_ip(net->net + 1, gateway);
    return obi_hosts_finish(&text, svc, gateway, out, err);
}

int obi_service_network_attach(obi_service_network *net, const obi_service *svc, unsigned replica,
                               obi_replica_network *out, obi_error **err)
{
    cleanup_free char *id = obi_service_container_id(svc->name, replica);
    if (!id)
        return obi_error_oom(err);
    const address *a = address_find(net, id);
    if (!a || net->subnet < 0)
        return obi_error_set(err, -ENOENT, "%s has no address on the network of %s", id,
                             net->deployment);
    cleanup_free char *ns = netns_name(net, id);
    cleanup_free char *ns_path = ns ? obi_path_join(NETNS_DIR, ns) : NULL;
    if (!ns_path)
        return obi_error_oom(err);
    char veth[IFNAMSIZ], bridge[IFNAMSIZ], cidr[INET_ADDRSTRLEN + 4];
    veth_name(net, id, veth);
    bridge_name(net, bridge);
    format_ip(net->net + a->host, cidr);
    strcat(cidr, "/24");
    /* a namespace and veth a crash (or a stopped replica's last run) left are made anew */
    int r = obi_service_network_detach(net, id, err);
    if (r < 0)
        return r;
    if ((r = ip_run(net, false, err, "netns", "add", ns, (char *)NULL)) < 0 ||
        (r = ip_run(net, false, err, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                    "netns", ns, (char *)NULL)) < 0 ||
        (r = ip_run(net, false, err, "link", "set", veth, "master", bridge, "up", (char *)NULL)) <
            0 ||
        (r = ip_run(net, false, err, "-n", ns, "addr", "add", cidr, "dev", "eth0", (char *)NULL)) <
            0 ||
        (r = ip_run(net, false, err, "-n", ns, "link", "set", "eth0", "up", (char *)NULL)) < 0 ||
        (r = ip_run(net, false, err, "-n", ns, "link", "set", "lo", "up", (char *)NULL)) < 0)
        return obi_error_prefix(err, r, "network of %s", id);
    obi_replica_network rn = {steal_pointer(&ns_path), NULL, NULL};
    if ((r = hosts_text(net, svc, id, &rn.hosts, err)) < 0) {
        obi_replica_network_clear(&rn);
        return r;
    }
    *out = rn;
    return 0;
}

static int detach_by_name(obi_service_network *net, const char *ns, const char *veth,
                          obi_error **err)
{
    int r = 0;
    if (veth && link_exists(veth))
        r = ip_run(net, true, err, "link", "del", veth, (char *)NULL);
    cleanup_free char *path = obi_path_join(NETNS_DIR, ns);
    if (!path)
        return obi_error_oom(err);
    if (r == 0 && access(path, F_OK) == 0)
        r = ip_run(net, true, err, "netns", "del", ns, (char *)NULL);
    return r;
}

int obi_service_network_detach(obi_service_network *net, const char *id, obi_error **err)
{
    cleanup_free char *ns = netns_name(net, id);
    if (!ns)
        return obi_error_oom(err);
    char veth[IFNAMSIZ];
    veth_name(net, id, veth);
    return detach_by_name(net, ns, veth, err);
}

/* ---- the proxy ------------------------------------------------------------------------ */

typedef struct listener {
    int fd;
    uint32_t *backends; /* replica addresses, host order */
    size_t backend_count;
    unsigned target_port;
    unsigned next;
} listener;

/* Kills the proxy's process group if its lock is held, then waits until the lock is free (the
 * proxy and every connection process gone). */
static int proxy_stop(obi_service_network *net, obi_error **err)
{
    cleanup_free char *lock_path = obi_path_join(net->dir, "proxy.lock");
    if (!lock_path)
        return obi_error_oom(err);
    cleanup_close int fd = open(lock_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : obi_error_set_errno(err, errno, "open %s", lock_path);
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
        return 0;
    cleanup_free char *text = NULL;
    unsigned long long pid = 0;
    if (read_state(net, "proxy.pid", &text, err) == 0) {
        text[strcspn(text, "\n")] = '\0';
        if (obi_parse_decimal(text, INT32_MAX, &pid) && pid > 1)
            kill(-(pid_t)pid, SIGKILL);
    }
    for (int waited = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; waited += 10) {
        if (waited >= PROXY_STOP_WAIT_MS)
            return obi_error_set(err, -ETIMEDOUT, "the proxy of %s (pid %llu) did not exit",
                                 net->deployment, pid);
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Copies both ways between a and b until both directions have ended. */
static void relay(int a, int b)
{
    int fds[2] = {a, b};
    bool open_in[2] = {true, true};
    char buf[16384];
    while (open_in[0] || open_in[1]) {
        struct pollfd p[2] = {{a, open_in[0] ? POLLIN : 0, 0}, {b, open_in[1] ? POLLIN : 0, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        for (int i = 0; i < 2; i++) {
            if (!open_in[i] || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t got = read(fds[i], buf, sizeof buf);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0 || obi_write_all(fds[1 - i], buf, (size_t)got) < 0) {
                open_in[i] = false;
                shutdown(fds[1 - i], SHUT_WR);
                if (got < 0)
                    return;
            }
        }
    }
}

static int connect_backend(listener *l)
{
    for (size_t tries = 0; tries < l->backend_count; tries++) {
        uint32_t addr = l->backends[l->next++ % l->backend_count];
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)l->target_port),
                                  .sin_addr = {htonl(addr)}};
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0)
            return fd;
        if (fd >= 0)
            close(fd);
    }
    return -1;
}

/* The proxy process: accepts on every listener and relays each connection in a child of its
 * own (at most PROXY_MAX_CONNECTIONS at a time), to the service's replicas in turn. */
static void proxy_main(listener *ls, size_t n, const char *pid_path, int ready_fd)
{
    prctl(PR_SET_NAME, "obi-proxy");
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "%d\n", (int)getpid());
    obi_error *ignored = NULL;
    if (obi_write_file_atomic(pid_path, pid_text, strlen(pid_text), 0600, &ignored) < 0)
        _exit(1);
    /* nothing privileged is left to do: the ports are bound */
    if (setgroups(0, NULL) < 0 || setresgid(NOBODY_ID, NOBODY_ID, NOBODY_ID) < 0 ||
        setresuid(NOBODY_ID, NOBODY_ID, NOBODY_ID) < 0)
        _exit(1);
    (void)!write(ready_fd, "0", 1);
    close(ready_fd);
    signal(SIGPIPE, SIG_IGN);
    struct pollfd p[64];
    unsigned active = 0;
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            active--;
        for (size_t i = 0; i < n; i++)
            p[i] = (struct pollfd){ls[i].fd, active < PROXY_MAX_CONNECTIONS ? POLLIN : 0, 0};
        if (poll(p, n, 500) <= 0)
            continue;
        for (size_t i = 0; i < n; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            int client = accept4(ls[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (client < 0)
                continue;
            unsigned first = ls[i].next++;
            pid_t child = fork();
            if (child == 0) {
                for (size_t j = 0; j < n; j++)
                    close(ls[j].fd);
                ls[i].next = first;
                int backend = connect_backend(&ls[i]);
                if (backend >= 0)
                    relay(client, backend);
                _exit(0);
            }
            if (child > 0)
                active++;
            close(client);
        }
    }
}

/* Closes every fd of this process but the listeners, the ready pipe and the lock (the proxy
 * must not hold `up`'s deployment lock, or anything else it inherited). */
typedef struct proxy_start {
    listener *ls;
    size_t n;
    const char *pid_path;
} proxy_start;

static void proxy_start_main(void *ctx, int ready_fd)
{
    const proxy_start *start = ctx;
    proxy_main(start->ls, start->n, start->pid_path, ready_fd);
}

static void listeners_free(listener *ls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ls[i].fd >= 0)
            close(ls[i].fd);
        free(ls[i].backends);
    }
    free(ls);
}

/* A listening TCP socket on address:port (IPv4 or IPv6; port 0: the kernel picks one, written
 * back to *port). what names the key in errors. */
static int bind_listener(const char *what, const char *host_addr, unsigned *port, int *fd_out,
                         obi_error **err)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host_addr, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)*port);
        len = sizeof *sin;
    } else if (inet_pton(AF_INET6, host_addr, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)*port);
        len = sizeof *sin6;
    } else {
        return obi_error_set(err, -EINVAL, "%s: %s is not an IP address", what, host_addr);
    }
    cleanup_close int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0 && ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 128) < 0) {
        if (errno == EADDRNOTAVAIL)
            return obi_error_set(err, -EADDRNOTAVAIL,
                                 "%s: %s is not an address of this host (publish on one of its "
                                 "own, 0.0.0.0 or ::)",
                                 what, host_addr);
        return obi_error_set_errno(err, errno, "%s: publish on %s port %u", what, host_addr, *port);
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return obi_error_set_errno(err, errno, "%s: getsockname", what);
    *port = ntohs(ss.ss_family == AF_INET ? sin->sin_port : sin6->sin6_port);
    *fd_out = steal_fd(&fd);
    return 0;
}

/* One more listener relaying to target_port of svc's replicas. */
static int add_listener(const obi_service_network *net, const obi_service *svc, const char *what,
                        const char *host_addr, unsigned *port, unsigned target_port, listener **ls,
                        size_t *n, obi_error **err)
{
    if (*n >= 64)
        return obi_error_set(err, -E2BIG, "more than 64 published ports");
    listener *grown = reallocarray(*ls, *n + 1, sizeof *grown);
    if (!grown)
        return obi_error_oom(err);
    *ls = grown;
    listener *l = &grown[(*n)++];
    *l = (listener){-1, calloc(svc->replicas, sizeof(uint32_t)), 0, target_port, 0};
    if (!l->backends)
        return obi_error_oom(err);
    for (size_t i = 0; i < net->address_count; i++)
        if (!strcmp(net->addresses[i].service, svc->name) &&
            net->addresses[i].replica <= svc->replicas)
            l->backends[l->backend_count++] = net->net + net->addresses[i].host;
    return bind_listener(what, host_addr, port, &l->fd, err);
}

/* svc's public TCP endpoints, on bind_address. */
static int add_endpoint_listeners(const obi_service_network *net, const obi_service *svc,
                                  const char *bind_address, listener **ls, size_t *n,
                                  obi_error **err)
{
    for (size_t e = 0; e < svc->endpoint_count; e++) {
        const obi_endpoint *ep = &svc->endpoints[e];
        if (!ep->public)
            continue;
        cleanup_free char *what =
            obi_strdup_printf("services.%s.endpoints.%s", svc->name, ep->name);
        if (!what)
            return obi_error_oom(err);
        if (ep->protocol == OBI_ENDPOINT_UDP)
            return obi_error_set(err, -ENOTSUP,
                                 "%s: udp endpoints cannot be published (the proxy relays TCP); "
                                 "use host_network: true",
                                 what);
        unsigned port = ep->port;
        int r = add_listener(net, svc, what, bind_address, &port, ep->target_port, ls, n, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* svc's port_mappings (Docker's -p): host_ip (default bind_address), host_port (0: the kernel
 * picks one, reported), tcp only. */
static int add_port_mapping_listeners(const obi_service_network *net, const obi_service *svc,
                                      const char *bind_address, obi_network_report_fn report,
                                      void *report_ctx, listener **ls, size_t *n, obi_error **err)
{
    for (size_t i = 0; i < svc->port_mapping_count; i++) {
        const obi_port_mapping *pm = &svc->port_mappings[i];
        cleanup_free char *what = obi_strdup_printf("services.%s.port_mappings[%zu]", svc->name, i);
        if (!what)
            return obi_error_oom(err);
        if (pm->udp)
            return obi_error_set(err, -ENOTSUP,
                                 "%s: protocol udp cannot be published (the proxy relays TCP); "
                                 "use host_network: true",
                                 what);
        const char *host_addr = pm->host_ip ? pm->host_ip : bind_address;
        unsigned port = pm->host_port;
        int r = add_listener(net, svc, what, host_addr, &port, pm->container_port, ls, n, err);
        if (r < 0)
            return r;
        if (pm->host_port == 0 && report) {
            cleanup_free char *message =
                obi_strdup_printf("%s: container port %u published on %s port %u (any free port)",
                                  what, pm->container_port, host_addr, port);
            if (message)
                report(message, report_ctx);
        }
    }
    return 0;
}

/* One listener per public TCP endpoint and per port mapping, bound here so that a taken port
 * is `up`'s error. */
static int make_listeners(obi_service_network *net, const obi_deployment *d,
                          obi_network_report_fn report, void *report_ctx, listener **out,
                          size_t *count, obi_error **err)
{
    const char *bind_address = getenv("OCIBUILD_PUBLISH_ADDRESS");
    if (!bind_address || !*bind_address)
        bind_address = DEFAULT_PUBLISH_ADDRESS;
    listener *ls = NULL;
    size_t n = 0;
    int r = 0;
    for (size_t s = 0; r == 0 && s < d->service_count; s++) {
        const obi_service *svc = &d->services[s];
        if (!obi_service_uses_network(svc))
            continue; /* host_network replicas listen on the host themselves */
        r = add_endpoint_listeners(net, svc, bind_address, &ls, &n, err);
        if (r == 0)
            r = add_port_mapping_listeners(net, svc, bind_address, report, report_ctx, &ls, &n,
                                           err);
    }
    if (r < 0) {
        listeners_free(ls, n);
        return r;
    }
    *out = ls;
    *count = n;
    return 0;
}

int obi_service_network_publish(obi_service_network *net, const obi_deployment *d,
                                obi_network_report_fn report, void *report_ctx, obi_error **err)
{
    int r = proxy_stop(net, err);
    if (r < 0)
        return r;
    listener *ls = NULL;
    size_t n = 0;
    if ((r = make_listeners(net, d, report, report_ctx, &ls, &n, err)) < 0)
        return r;
    if (n == 0) {
        listeners_free(ls, n);
        return 0;
    }
    cleanup_free char *lock_path = obi_path_join(net->dir, "proxy.lock");
    cleanup_free char *pid_path = obi_path_join(net->dir, "proxy.pid");
    cleanup_close int lock = lock_path && pid_path
                                 ? open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)
                                 : -1;
    cleanup_free int *keep = calloc(n + 1, sizeof *keep);
    if (!lock_path || !pid_path || !keep)
        r = obi_error_oom(err);
    else if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) < 0)
        r = obi_error_set_errno(err, errno, "lock %s", lock_path);
    if (r < 0) {
        listeners_free(ls, n);
        return r;
    }
    /* a grandchild in a group of its own with the listeners and the lock (children share it:
     * it is free once the last one has gone) and nothing else */
    for (size_t i = 0; i < n; i++)
        keep[i] = ls[i].fd;
    keep[n] = lock;
    obi_detached_options opts = {.grandchild = true, .keep_fds = keep, .keep_count = n + 1};
    proxy_start start = {ls, n, pid_path};
    int fd = -1;
    r = obi_spawn_detached(&opts, proxy_start_main, &start, &fd, NULL, err);
    listeners_free(ls, n);
    if (r < 0)
        return r;
    cleanup_close int read_end = fd;
    char ok = 0;
    while (read(read_end, &ok, 1) < 0 && errno == EINTR) {
    }
    /* flock(2) locks belong to the open file: our copy closing leaves the proxy holding it */
    close(steal_fd(&lock));
    if (ok != '0')
        return obi_error_set(err, -EIO, "the proxy of %s did not start", net->deployment);
    return 0;
}

/* ---- teardown and sweep --------------------------------------------------------------- */

static int teardown_locked(obi_service_network *net, obi_error **err)
{
    int first = 0;
    cleanup_error obi_error *step_err = NULL;
#define STEP(call)                                                                                 \
    do {                                                                                           \
        int step_r = (call);                                                                       \
        if (step_r < 0 && first == 0)                                                              \
            first = obi_error_move(err, &step_err);                                                \
        obi_error_free(steal_pointer(&step_err));                                                  \
    } while (0)
    STEP(proxy_stop(net, &step_err));
    for (size_t i = 0; i < net->address_count; i++)
        STEP(obi_service_network_detach(net, net->addresses[i].id, &step_err));
    /* namespaces of ids the addresses file never got (a crash between the two) */
    char prefix[sizeof NETNS_PREFIX + KEY_LEN + 1];
    snprintf(prefix, sizeof prefix, NETNS_PREFIX "%s-", net->key);
    cleanup_dir DIR *dir = opendir(NETNS_DIR);
    struct dirent *d;
    while (dir && (d = readdir(dir)))
        if (!strncmp(d->d_name, prefix, strlen(prefix)))
            STEP(detach_by_name(net, d->d_name, NULL, &step_err));
    char bridge[IFNAMSIZ];
    bridge_name(net, bridge);
    if (link_exists(bridge))
        STEP(ip_run(net, true, &step_err, "link", "del", bridge, (char *)NULL));
    if (first == 0)
        STEP(obi_rm_rf(net->dir, &step_err));
#undef STEP
    return first;
}

int obi_service_network_teardown(obi_service_network *net, obi_error **err)
{
    cleanup_close int lock = -1;
    int r = lock_root(&lock, err);
    if (r < 0)
        return r;
    if ((r = load_state(net, err)) < 0)
        return r;
    return teardown_locked(net, err);
}

/* Whether the owner of the state dir key still has its deployment (DATA/services/<name>). */
static bool owner_alive(const char *key, char **data_dir, char **deployment)
{
    cleanup_free char *path = NULL;
    if (asprintf(&path, "%s/%s/owner", state_root(), key) < 0)
        return true;
    cleanup_free char *text = NULL;
    size_t len;
    cleanup_error obi_error *ignored = NULL;
    if (obi_read_file(path, 8192, &text, &len, &ignored) < 0)
        return false; /* made and never finished: nothing can own it */
    char *nl = strchr(text, '\n');
    if (!nl)
        return false;
    *nl = '\0';
    char *name = nl + 1;
    name[strcspn(name, "\n")] = '\0';
    cleanup_free char *services = NULL;
    if (asprintf(&services, "%s/services/%s", text, name) < 0)
        return true;
    struct stat st;
    bool alive = stat(services, &st) == 0;
    if (!alive) {
        *data_dir = strdup(text);
        *deployment = strdup(name);
    }
    return alive;
}

/* Namespaces and bridges named like ours whose key has no state dir. */
static int sweep_orphans(obi_service_network *probe, unsigned *swept, obi_error **err)
{
    int r = 0;
    cleanup_dir DIR *dir = opendir(NETNS_DIR);
    struct dirent *d;
    while (r == 0 && dir && (d = readdir(dir))) {
        const char *name = d->d_name;
        if (strncmp(name, NETNS_PREFIX, strlen(NETNS_PREFIX)) ||
            strlen(name) < strlen(NETNS_PREFIX) + KEY_LEN + 1)
            continue;
        char key[KEY_LEN + 1];
        memcpy(key, name + strlen(NETNS_PREFIX), KEY_LEN); /* checked: long enough */
        key[KEY_LEN] = '\0';
        cleanup_free char *state = obi_path_join(state_root(), key);
        if (!state)
            return obi_error_oom(err);
        if (access(state, F_OK) == 0)
            continue;
        if ((r = detach_by_name(probe, name, NULL, err)) == 0 && swept)
            (*swept)++;
    }
    struct if_nameindex *links = if_nameindex();
    for (struct if_nameindex *l = links; r == 0 && l && l->if_index; l++) {
        if (strncmp(l->if_name, BRIDGE_PREFIX, strlen(BRIDGE_PREFIX)) ||
            strlen(l->if_name) != strlen(BRIDGE_PREFIX) + KEY_LEN)
            continue;
        cleanup_free char *state = obi_path_join(state_root(), l->if_name + 3);
        if (!state)
            r = obi_error_oom(err);
        else if (access(state, F_OK) < 0 &&
                 (r = ip_run(probe, true, err, "link", "del", l->if_name, (char *)NULL)) == 0 &&
                 swept)
            (*swept)++;
    }
    if (links)
        if_freenameindex(links);
    return r;
}

int obi_service_network_sweep(obi_network_report_fn report, void *report_ctx, unsigned *swept,
                              obi_error **err)
{
    if (swept)
        *swept = 0;
    cleanup_free char *ip = obi_find_executable("ip", "/usr/sbin:/sbin:/usr/bin:/bin");
    if (!ip)
        return 0; /* nothing of ours can have been made without it */
    cleanup_close int lock = -1;
    int r = lock_root(&lock, err);
    if (r < 0)
        return r;
    cleanup_dir DIR *dir = opendir(state_root());
    struct dirent *d;
    while (r == 0 && dir && (d = readdir(dir))) {
        if (d->d_name[0] == '.' || strlen(d->d_name) != KEY_LEN)
            continue;
        cleanup_free char *data_dir = NULL;
        cleanup_free char *deployment = NULL;
        if (owner_alive(d->d_name, &data_dir, &deployment))
            continue;
        cleanup_network obi_service_network *net = calloc(1, sizeof *net);
        if (!net || !(net->dir = obi_path_join(state_root(), d->d_name)) ||
            !(net->ip = strdup(ip)) ||
            !(net->deployment = strdup(deployment ? deployment : d->d_name)))
            return obi_error_oom(err);
        net->subnet = -1;
        memcpy(net->key, d->d_name, KEY_LEN); /* checked: KEY_LEN bytes */
        net->key[KEY_LEN] = '\0';
        cleanup_error obi_error *load_err = NULL;
        (void)load_state(net, &load_err); /* a torn file: remove what the names say */
        if ((r = teardown_locked(net, err)) < 0)
            return obi_error_prefix(err, r, "sweep the network of %s (%s)", net->deployment,
                                    data_dir ? data_dir : "no owner");
        if (swept)
            (*swept)++;
        if (report) {
            cleanup_free char *message = NULL;
            if (asprintf(&message, "swept the network of %s (data dir %s is gone)", net->deployment,
                         data_dir ? data_dir : "unknown") >= 0)
                report(message, report_ctx);
        }
    }
    obi_service_network probe = {.ip = ip, .subnet = -1};
    return sweep_orphans(&probe, swept, err);
}
