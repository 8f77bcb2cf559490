/*
 * Optional shared libraries loaded on first use (dlopen) instead of at start-up. Every library
 * linked into the executable is mapped and relocated before main, by every command: a library
 * that only one rarely used path needs (libarchive, for image layers) costs each build about
 * 1.5 ms that way. Such a module declares a table of the functions it calls and loads it here
 * the first time it needs them.
 */
#ifndef OCIBUILD_DYNLIB_H
#define OCIBUILD_DYNLIB_H

#include <stddef.h>

#include "ocibuild/error.h"

typedef struct obi_dynlib_symbol {
    const char *name;
    /* Where the address goes: a pointer to a function pointer of the right type, as void ** (the
     * POSIX dlsym idiom). */
    void **address;
} obi_dynlib_symbol;

/* Loads the library `soname` (RTLD_NOW | RTLD_LOCAL; it stays loaded for the life of the
 * process) and stores the address of every symbol. Fails naming the library and the first
 * missing symbol; nothing is stored then. Not synchronized: callers load once (pthread_once). */
int obi_dynlib_load(const char *soname, const obi_dynlib_symbol *symbols, size_t n_symbols,
                    obi_error **err);

#endif
