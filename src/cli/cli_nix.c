/*
 * Nix helpers on the command line, mostly for comparing with Nix itself:
 *   ocibuild nar-hash PATH...          "sha256:<nixbase32>" per path, like
 *                                      `nix-hash --type sha256 --base32` (plus the prefix)
 *   ocibuild show-derivation DRV...    the JSON `nix show-derivation` prints
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/derivation.h"
#include "ocibuild/json_util.h"
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
    cleanup_json json_t *all = json_object();
    if (!all)
        return cli_failf("out of memory");
    for (int i = 1; i < argc; i++) {
        obi_error *err = NULL;
        cleanup_derivation obi_derivation *drv = NULL;
        if (obi_derivation_read_file(argv[i], &drv, &err) < 0)
            return cli_fail(err);
        json_t *json = obi_derivation_to_json(drv);
        if (!json || json_object_set_new(all, argv[i], json) < 0)
            return cli_failf("%s: cannot represent as JSON (not UTF-8?)", argv[i]);
    }
    if (json_dumpf(all, stdout, JSON_INDENT(2) | JSON_SORT_KEYS) < 0 ||
        fputc('\n', stdout) == EOF || fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}
