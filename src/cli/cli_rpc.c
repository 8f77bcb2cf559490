/*
 * The gRPC layer, loaded on demand. The executable does not link libgrpc: its ~50 shared
 * libraries would cost every command several milliseconds of start-up (a build's overhead over
 * `runc run` is mostly start-up). grpc+unix://, grpc+http:// and grpc+https:// are registered here
 * with stubs that load a module on first use and forward to it:
 *   ocibuild-rpc-h2.so  the clients of grpc+unix:// (HTTP/2 on libnghttp2, no libgrpc: a CLI
 *                       call to a local daemon pays ~1 ms of loading instead of ~12 ms),
 *   ocibuild-rpc.so     the clients of grpc+http(s):// and the server (libgrpc); `daemon` loads
 *                       it up front.
 * (docs/rpc.md "Client transports".)
 *
 * Where a module is looked for, first hit wins:
 *   1. $OCIBUILD_RPC_MODULE (ocibuild-rpc.so) or $OCIBUILD_RPC_H2_MODULE (ocibuild-rpc-h2.so), a
 *      path to the .so; without the latter, ocibuild-rpc-h2.so beside $OCIBUILD_RPC_MODULE,
 *   2. next to the executable (the build tree: build/ocibuild, build/ocibuild-rpc.so),
 *   3. OBI_RPC_MODULE_DIR, the install location (<libdir>/ocibuild).
 * The modules resolve the library functions they use against the executable, which exports the
 * obi_* and tvix__* symbols for them (src/cli/exported-symbols.list).
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/rpc.h"
#include "ocibuild/rpc_abi.h"

#ifndef OBI_RPC_MODULE_DIR
#define OBI_RPC_MODULE_DIR "/usr/local/lib/ocibuild"
#endif

/* A loadable module and where it was found. */
typedef struct rpc_module_slot {
    const char *name; /* the file name */
    const char *env;  /* the variable naming its path */
    const obi_rpc_module *loaded;
} rpc_module_slot;

static rpc_module_slot rpc_full = {"ocibuild-rpc.so", "OCIBUILD_RPC_MODULE", NULL};
static rpc_module_slot rpc_h2 = {"ocibuild-rpc-h2.so", "OCIBUILD_RPC_H2_MODULE", NULL};

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;

/* The directory of the running executable, or NULL. */
static char *executable_dir(void)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0)
        return NULL;
    path[n] = '\0';
    char *slash = strrchr(path, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    return strdup(path);
}

/* A module's ABI as text: the digest, or what an older or foreign table holds there. */
static const char *abi_text(const obi_rpc_module *table)
{
    size_t len = strnlen(table->abi, sizeof table->abi);
    if (len != OBI_RPC_MODULE_ABI_LEN)
        return "(not a digest: a module from before ABIs were digests?)";
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789abcdef", table->abi[i]))
            return "(not a digest)";
    return table->abi;
}

/* dlopens path and checks its table; on failure appends "PATH: why" to *tried. */
static const obi_rpc_module *try_load(const char *path, obi_buf *tried)
{
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        obi_buf_appendf(tried, "\n  %s", why ? why : path);
        return NULL;
    }
    const obi_rpc_module *table = dlsym(handle, OBI_RPC_MODULE_SYMBOL);
    if (!table) {
        obi_buf_appendf(tried, "\n  %s: no symbol %s", path, OBI_RPC_MODULE_SYMBOL);
    } else if (memcmp(table->abi, OBI_RPC_MODULE_ABI, sizeof table->abi) != 0) {
        obi_buf_appendf(tried,
                        "\n  %s: module ABI %s, this ocibuild needs %s (built from other "
                        "headers: a stale build?)",
                        path, abi_text(table), OBI_RPC_MODULE_ABI);
    } else {
        return table; /* the handle stays open for the life of the process */
    }
    dlclose(handle);
    return NULL;
}

/* "DIR/NAME" for the directory of path, or NULL. */
static char *beside(const char *path, const char *name)
{
    const char *slash = strrchr(path, '/');
    char *out = NULL;
    if (slash && asprintf(&out, "%.*s/%s", (int)(slash - path), path, name) < 0)
        out = NULL;
    return out;
}

static int load_module(rpc_module_slot *slot, const obi_rpc_module **out, obi_error **err)
{
    pthread_mutex_lock(&load_lock);
    if (slot->loaded) {
        *out = slot->loaded;
        pthread_mutex_unlock(&load_lock);
        return 0;
    }
    cleanup_buf obi_buf tried = OBI_BUF_INIT;
    const char *override = getenv(slot->env);
    const char *full_override = getenv(rpc_full.env);
    if ((!override || !*override) && slot != &rpc_full && full_override && *full_override) {
        cleanup_free char *beside_full = beside(full_override, slot->name);
        if (beside_full)
            slot->loaded = try_load(beside_full, &tried);
    } else if (override && *override) {
        slot->loaded = try_load(override, &tried);
    } else {
        cleanup_free char *dir = executable_dir();
        cleanup_free char *in_dir = NULL;
        if (dir && asprintf(&in_dir, "%s/%s", dir, slot->name) < 0)
            in_dir = NULL;
        if (in_dir && access(in_dir, F_OK) == 0)
            slot->loaded = try_load(in_dir, &tried);
        if (!slot->loaded) {
            cleanup_free char *installed = NULL;
            if (asprintf(&installed, "%s/%s", OBI_RPC_MODULE_DIR, slot->name) >= 0)
                slot->loaded = try_load(installed, &tried);
        }
    }
    const obi_rpc_module *result = slot->loaded;
    pthread_mutex_unlock(&load_lock);
    if (!result) {
        cleanup_free char *reasons = obi_buf_steal(&tried);
        return obi_error_set(err, -ENOENT, "gRPC support: cannot load %s (set %s to its path)%s",
                             slot->name, slot->env, reasons ? reasons : "");
    }
    *out = result;
    return 0;
}

int cli_rpc_load(const obi_rpc_module **out, obi_error **err)
{
    return load_module(&rpc_full, out, err);
}

/* The module whose clients serve url: the light one for unix sockets. */
static int load_client(const obi_url *url, const obi_rpc_module **out, obi_error **err)
{
    return load_module(strcmp(url->scheme, OBI_RPC_SCHEME_UNIX) ? &rpc_full : &rpc_h2, out, err);
}

static int lazy_blob_service_open(const obi_url *url, obi_blob_service **out, obi_error **err)
{
    const obi_rpc_module *rpc;
    int r = load_client(url, &rpc, err);
    return r < 0 ? r : rpc->blob_service_open(url, out, err);
}

static int lazy_directory_service_open(const obi_url *url, obi_directory_service **out,
                                       obi_error **err)
{
    const obi_rpc_module *rpc;
    int r = load_client(url, &rpc, err);
    return r < 0 ? r : rpc->directory_service_open(url, out, err);
}

static int lazy_build_service_open(const obi_url *url, obi_store *store, obi_build_service **out,
                                   obi_error **err)
{
    const obi_rpc_module *rpc;
    int r = load_client(url, &rpc, err);
    return r < 0 ? r : rpc->build_service_open(url, store, out, err);
}

static int lazy_path_info_store_open(const obi_url *url, obi_nix_path_info_store **out,
                                     obi_error **err)
{
    const obi_rpc_module *rpc;
    int r = load_client(url, &rpc, err);
    return r < 0 ? r : rpc->path_info_store_open(url, out, err);
}

int cli_rpc_register_schemes(obi_error **err)
{
    static const char *const schemes[] = {OBI_RPC_SCHEME_UNIX, OBI_RPC_SCHEME_HTTP,
                                          OBI_RPC_SCHEME_HTTPS};
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        int r = obi_store_register_scheme(schemes[i], lazy_blob_service_open,
                                          lazy_directory_service_open);
        if (r >= 0)
            r = obi_build_service_register_scheme(schemes[i], lazy_build_service_open);
        if (r >= 0)
            r = obi_nix_path_info_register_scheme(schemes[i], lazy_path_info_store_open);
        if (r < 0)
            return obi_error_set_errno(err, -r, "register the %s URL scheme", schemes[i]);
    }
    return 0;
}
