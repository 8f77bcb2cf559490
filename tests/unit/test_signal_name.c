/*
 * Signal names (signal_name.h): the one parser of stop_signal, an image's StopSignal and the stop
 * annotation. A table of texts and the signal each names, and of texts that name none.
 */
#include <signal.h>

#include "ocibuild/signal_name.h"
#include "test_helpers.h"

static void test_signal_name_parses_names_aliases_realtime_and_numbers(void **state)
{
    (void)state;
    const struct {
        const char *text;
        int number;
    } named[] = {
        {"SIGTERM", SIGTERM},
        {"TERM", SIGTERM},
        {"sigterm", SIGTERM},
        {"SigUsr1", SIGUSR1},
        {"USR2", SIGUSR2},
        {"SIGKILL", SIGKILL},
        {"SIGWINCH", SIGWINCH},
        {"SIGSYS", SIGSYS},
        {"SIGIOT", SIGABRT},
        {"CLD", SIGCHLD},
        {"SIGIO", SIGIO},
        {"SIGPOLL", SIGIO},
        {"SIGRTMIN", SIGRTMIN},
        {"SIGRTMIN+3", SIGRTMIN + 3},
        {"rtmax-1", SIGRTMAX - 1},
        {"RTMAX", SIGRTMAX},
        {"15", SIGTERM},
        {"1", 1},
        {"64", 64},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        if (obi_signal_parse(named[i].text) != named[i].number)
            print_error("%s -> %d, not %d\n", named[i].text, obi_signal_parse(named[i].text),
                        named[i].number);
        assert_int_equal(obi_signal_parse(named[i].text), named[i].number);
    }
}

static void test_signal_name_refuses_what_names_no_signal(void **state)
{
    (void)state;
    const char *none[] = {NULL,       "",       "0",      "65",        "-1",         "SIG",
                          "SIGFOO",   "TERM ",  " TERM",  "SIGTERM15", "SIGRTMIN-1", "RTMAX+1",
                          "RTMIN+31", "RTMIN+", "RTMIN3", "15s",       "0x0f",       "SIGSIGTERM"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        if (obi_signal_parse(none[i]))
            print_error("\"%s\" -> %d\n", none[i] ? none[i] : "(null)", obi_signal_parse(none[i]));
        assert_int_equal(obi_signal_parse(none[i]), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signal_name_parses_names_aliases_realtime_and_numbers),
        cmocka_unit_test(test_signal_name_refuses_what_names_no_signal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
