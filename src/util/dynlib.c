/*
 * Optional shared libraries loaded on first use (see include/ocibuild/dynlib.h).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/dynlib.h"

int obi_dynlib_load(const char *soname, const obi_dynlib_symbol *symbols, size_t n_symbols,
                    obi_error **err)
{
    void *handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        return obi_error_set(err, -ENOENT, "cannot load %s: %s", soname,
                             why ? why : "dlopen failed");
    }
    cleanup_free void **found = calloc(n_symbols ? n_symbols : 1, sizeof *found);
    if (!found) {
        dlclose(handle);
        return obi_error_oom(err);
    }
    for (size_t i = 0; i < n_symbols; i++) {
        found[i] = dlsym(handle, symbols[i].name);
        if (!found[i]) {
            dlclose(handle);
            return obi_error_set(err, -ENOENT, "%s: missing symbol %s (an incompatible version?)",
                                 soname, symbols[i].name);
        }
    }
    for (size_t i = 0; i < n_symbols; i++)
        *symbols[i].address = found[i];
    return 0; /* the handle stays open: the addresses are used until exit */
}
