/*
 * The gRPC layer, loaded on demand. The executable does not link libgrpc: its ~50 shared
 * libraries would cost every command several milliseconds of start-up (a build's overhead over
 * `runc run` is mostly start-up). grpc+unix://, grpc+http:// and grpc+https:// are registered here
 * with stubs that load ocibuild-rpc.so on first use and forward to it; `daemon` loads it up front.
 *
 * Where the module is looked for, first hit wins:
 *   1. $OCIBUILD_RPC_MODULE (a path to the .so),
 *   2. next to the executable (the build tree: build/ocibuild, build/ocibuild-rpc.so),
 *   3. OBI_RPC_MODULE_DIR, the install location (<libdir>/ocibuild).
 * The module resolves the library functions it uses against the executable, which exports the
 * obi_* and tvix__* symbols for it (src/cli/exported-symbols.list).
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
#define MODULE_NAME "ocibuild-rpc.so"

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static const obi_rpc_module *loaded;

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

int cli_rpc_load(const obi_rpc_module **out, obi_error **err)
{
    pthread_mutex_lock(&load_lock);
    if (loaded) {
        *out = loaded;
        pthread_mutex_unlock(&load_lock);
        return 0;
    }
    cleanup_buf obi_buf tried = OBI_BUF_INIT;
    const char *override = getenv("OCIBUILD_RPC_MODULE");
    if (override && *override) {
        loaded = try_load(override, &tried);
    } else {
        cleanup_free char *dir = executable_dir();
        cleanup_free char *beside = NULL;
        if (dir && asprintf(&beside, "%s/%s", dir, MODULE_NAME) < 0)
            beside = NULL;
        if (beside && access(beside, F_OK) == 0)
            loaded = try_load(beside, &tried);
        if (!loaded)
            loaded = try_load(OBI_RPC_MODULE_DIR "/" MODULE_NAME, &tried);
    }
    const obi_rpc_module *result = loaded;
    pthread_mutex_unlock(&load_lock);
    if (!result) {
        cleanup_free char *reasons = obi_buf_steal(&tried);
        return obi_error_set(err, -ENOENT,
                             "gRPC support: cannot load %s (set OCIBUILD_RPC_MODULE to its path)%s",
                             MODULE_NAME, reasons ? reasons : "");
    }
    *out = result;
    return 0;
}

static int lazy_blob_service_open(const obi_url *url, obi_blob_service **out, obi_error **err)
{
    const obi_rpc_module *rpc;
    int r = cli_rpc_load(&rpc, err);
    return r < 0 ? r : rpc->blob_service_open(url, out, err);
}

static int lazy_directory_service_open(const obi_url *url, obi_directory_service **out,
                                       obi_error **err)
{
    const obi_rpc_module *rpc;
    int r = cli_rpc_load(&rpc, err);
    return r < 0 ? r : rpc->directory_service_open(url, out, err);
}

static int lazy_build_service_open(const obi_url *url, obi_store *store, obi_build_service **out,
                                   obi_error **err)
{
    const obi_rpc_module *rpc;
    int r = cli_rpc_load(&rpc, err);
    return r < 0 ? r : rpc->build_service_open(url, store, out, err);
}

static int lazy_path_info_store_open(const obi_url *url, obi_nix_path_info_store **out,
                                     obi_error **err)
{
    const obi_rpc_module *rpc;
    int r = cli_rpc_load(&rpc, err);
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
