/*
 * Nix helpers on the command line, mostly for comparing with Nix itself:
 *   ocibuild nar-hash PATH...          "sha256:<nixbase32>" per path, like
 *                                      `nix-hash --type sha256 --base32` (plus the prefix)
 *   ocibuild show-derivation DRV...    the JSON `nix show-derivation` prints
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation.h"
#include "ocibuild/buf.h"
#include "ocibuild/nar.h"

int cli_nar_hash(int argc, char **argv)
{
    static const char usage[] = "usage: ocibuild nar-hash PATH...";
    if (cli_help_requested(argc, argv))
        return puts(usage) < 0 ? CLI_EXIT_FAILURE : 0;
    if (argc > 1 && !strcmp(argv[1], "--")) {
        argv++;
        argc--;
    }
    if (argc < 2)
        return cli_failf("%s", usage);
    int status = 0;
    for (int i = 1; i < argc; i++) {
        obi_error *err = NULL;
        obi_nar_hash hash;
        if (obi_nar_hash_path(argv[i], &hash, &err) < 0) {
            status = cli_fail(err);
            continue;
        }
        cleanup_free char *text = obi_nar_hash_to_string(&hash);
        if (!text)
            return cli_failf("out of memory");
        printf("%s\n", text);
    }
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return status;
}

static int compare_arg(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cli_show_derivation(int argc, char **argv)
{
    static const char usage[] = "usage: ocibuild show-derivation FILE.drv...";
    if (cli_help_requested(argc, argv))
        return puts(usage) < 0 ? CLI_EXIT_FAILURE : 0;
    if (argc > 1 && !strcmp(argv[1], "--")) {
        argv++;
        argc--;
    }
    if (argc < 2)
        return cli_failf("%s", usage);
    /* Nix prints a set of paths: sorted, each once. */
    size_t n_args = (size_t)argc - 1;
    cleanup_free char **names = calloc(n_args, sizeof *names);
    cleanup_free obi_derivation **drvs = calloc(n_args, sizeof *drvs);
    if (!names || !drvs)
        return cli_failf("out of memory");
    memcpy(names, argv + 1, n_args * sizeof *names);
    qsort(names, n_args, sizeof *names, compare_arg);
    size_t n = 0;
    int status = 0;
    for (size_t i = 0; i < n_args && status == 0; i++) {
        if (n > 0 && !strcmp(names[n - 1], names[i]))
            continue;
        obi_error *err = NULL;
        names[n] = names[i];
        if (obi_derivation_read_file(names[n], &drvs[n], &err) < 0)
            status = cli_fail(err);
        else
            n++;
    }
    cleanup_buf obi_buf text = OBI_BUF_INIT;
    obi_error *err = NULL;
    if (status == 0 &&
        obi_derivations_show_json(names, (const obi_derivation *const *)drvs, n, &text, &err) < 0)
        status = cli_fail(err);
    for (size_t i = 0; i < n; i++)
        obi_derivation_free(drvs[i]);
    if (status != 0)
        return status;
    if (fwrite(text.data, 1, text.len, stdout) != text.len || fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}
