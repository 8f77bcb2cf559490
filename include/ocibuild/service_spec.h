/*
 * Service spec generation (spec/service.md, "The generated config.json"): one service of a
 * deployment plus a replica number -> an OCI runtime config (jansson). The OCI runtime defaults
 * come from oci_defaults.h, shared with builds; bundles around the config are written by
 * service_bundle.h. The host is consulted only for device nodes (below a configurable /dev
 * root, so tests use a fake tree), the cgroup version, for user names the rootfs's /etc/passwd
 * and /etc/group, the capability bounding set of this process (what it can pass on to a
 * container) and the host ids of the replicas' user namespace (/etc/subuid and /etc/subgid);
 * the last two can be given instead, for tests. Anything skipped (a missing device node) is
 * reported as a warning string that the caller prints.
 *
 * Sandbox (docs/service.md, "User namespaces"): a replica runs in a user namespace whose root
 * is host id base of the range owned by OBI_SERVICE_ID_OWNER, unless the service is privileged
 * (then it is the host's root, the documented exception). Volumes and tmpfs mounts are nosuid,
 * nodev. Capabilities are those the host can grant: privileged and default sets are cut to the
 * bounding set, an explicit list naming one outside it is refused.
 */
#ifndef OCIBUILD_SERVICE_SPEC_H
#define OCIBUILD_SERVICE_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "ocibuild/deployment.h"
#include "ocibuild/error.h"
#include "ocibuild/idmap.h"
#include "ocibuild/image.h"
#include "ocibuild/secrets.h"

typedef enum obi_cgroup_mode {
    OBI_CGROUP_DETECT = 0,
    OBI_CGROUP_V1,
    OBI_CGROUP_V2,
} obi_cgroup_mode;

typedef struct obi_service_spec_options {
    unsigned replica;              /* 1..replicas; 0 means 1 */
    const char *dev_root;          /* where host device nodes are read; NULL: "/dev" */
    const char *rootfs;            /* for user name lookups; NULL: names are an error */
    const obi_image_config *image; /* NULL: no image config */
    obi_secrets *secrets;          /* NULL: `$S:` references are errors */
    char *const *args_override;    /* NULL-terminated; NULL: none */
    const char *cwd_override;      /* NULL: none */
    char *const *extra_env;        /* "KEY=value", NULL-terminated; NULL: none */
    const char *data_dir;          /* volumes live below it; NULL: obi_default_data_dir() */
    obi_cgroup_mode cgroup;        /* the /sys/fs/cgroup mount type; DETECT reads the host */
    const obi_idmap *ids;          /* the replicas' user namespace; NULL: obi_service_ids_lookup
                                      (read only for services that are not privileged) */
    const uint64_t *bounding_set;  /* what the host can grant, bit N = capability N; NULL: this
                                      process's capability bounding set */
    const char *netns_path;        /* the deployment network's namespace of this replica
                                      (service_network.h) to join; NULL: a new, empty one */
    const char *hosts;             /* its /etc/hosts: the bundle writer puts it at
                                      BUNDLE/hosts, the config binds it read-only; NULL: the
                                      image's */
    const char *userns_path;       /* rootless (service_rootless_net.h): the user namespace to
                                      join with netns_path; NULL: a new one */
} obi_service_spec_options;

/* The system user whose /etc/subuid and /etc/subgid ranges hold the replicas' host ids
 * (scripts/install-deps.sh creates it and its 65536 ids). */
#define OBI_SERVICE_ID_OWNER "ocibuild-svc"

/* The replicas' user namespace: container ids 0..count-1 are host ids uid.. and gid.. from the
 * ranges of OBI_SERVICE_ID_OWNER in subuid_path and subgid_path (NULL: /etc/subuid and
 * /etc/subgid). No range: -ENOENT with the command that makes one. */
int obi_service_ids_lookup(const char *subuid_path, const char *subgid_path, obi_idmap *out,
                           obi_error **err);

/* Whether replicas of svc run in a user namespace (all but privileged services). */
bool obi_service_uses_userns(const obi_service *svc);
/* The user namespace of svc's replicas: *out NULL for privileged services, else opts->ids or,
 * without them, the ids obi_service_ids_lookup finds (stored in *buf; errors prefixed with
 * "services.<name>"). */
int obi_service_replica_ids(const obi_service *svc, const obi_service_spec_options *opts,
                            obi_idmap *buf, const obi_idmap **out, obi_error **err);

/* The capabilities this process can pass on to a container: its bounding set, bit N =
 * capability N (prctl PR_CAPBSET_READ). */
uint64_t obi_service_bounding_set(void);

/* "<service>-rep-<replica>"; caller frees. */
char *obi_service_container_id(const char *service, unsigned replica);

/* Host directory mounted for svc->storage[index] of replica (tmpfs: NULL). Named volumes:
 * DATA/volumes/<deployment>/<name>; anonymous: DATA/anonymous/<deployment>/<container id>/<index>;
 * s3: DATA/s3/<bucket>[/<prefix>] (prepared by whoever syncs the bucket). Caller frees. */
char *obi_service_storage_source(const obi_deployment *deployment, const obi_service *svc,
                                 unsigned replica, size_t index, const char *data_dir);

/* dns: the replica's resolv.conf, a file named OBI_SERVICE_RESOLV_CONF in its bundle (written
 * by service_bundle.h) that the config binds read-only over /etc/resolv.conf. Whether svc has
 * one (dns given, not on the host's network), and its text: a nameserver line per address,
 * then "options edns0", as zlayer writes it. Caller frees the text; NULL: out of memory. */
#define OBI_SERVICE_RESOLV_CONF "resolv.conf"
/* The deployment network's /etc/hosts (opts->hosts), a file of that name in the bundle
 * (written by service_bundle.h), bound read-only over /etc/hosts. */
#define OBI_SERVICE_HOSTS "hosts"

/* init_container: the host's tini (Debian's tini package; scripts/install-deps.sh) and where a
 * replica sees it, as PID 1 running the replica's command after "--". */
#define OBI_SERVICE_INIT_PATH "/usr/bin/tini-static"
#define OBI_SERVICE_INIT_TARGET "/dev/init"

/* Annotations recording the stop signal ("SIGUSR1": stop_signal, else the image config's
 * StopSignal) and stop_grace_period ("2000ms"), applied by the lifecycle when it stops a
 * replica: the first is the image-spec's name for a config's StopSignal. */
#define OBI_ANNOTATION_STOP_SIGNAL "org.opencontainers.image.stopSignal"
#define OBI_ANNOTATION_STOP_GRACE "org.ocibuild.stopGracePeriod"
bool obi_service_has_resolv_conf(const obi_service *svc);
char *obi_service_resolv_conf(const obi_service *svc);

/* Generates the config. *warnings (optional) receives a NULL-terminated list (or NULL when
 * there are none) that the caller frees with obi_strv_free. */
int obi_service_spec_generate(const obi_deployment *deployment, const obi_service *svc,
                              const obi_service_spec_options *opts, json_t **out, char ***warnings,
                              obi_error **err);

/* Resolves an image `User` ("uid[:gid]", names looked up in ROOTFS/etc/passwd and /etc/group;
 * a numeric uid without gid means gid = uid, a user name without group its passwd gid). */
int obi_resolve_user(const char *user, const char *rootfs, unsigned *uid, unsigned *gid,
                     obi_error **err);

#endif
