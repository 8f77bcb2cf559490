/*
 * The progress lines of long imports and exports, and of the layers of registry pulls
 * (cli_progress.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cli_progress.h"
#include "ocibuild/number.h"

/* Quiet imports stay quiet: the line appears after this long ($OCIBUILD_PROGRESS_DELAY_MS
 * overrides it, so tests need no second-long import). */
#define PROGRESS_DELAY_MS 1000
#define PROGRESS_EVERY_MS 200

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void print_line(const cli_progress *p, const char *end)
{
    char size[OBI_SIZE_TEXT_LEN];
    obi_format_size(p->bytes, size);
    fprintf(stderr, "\r\033[K%s: %s, %llu file%s%s", p->what, size, (unsigned long long)p->files,
            p->files == 1 ? "" : "s", end);
    fflush(stderr);
}

static void on_progress(void *ctx, uint64_t bytes, uint64_t files)
{
    cli_progress *p = ctx;
    p->bytes = bytes;
    p->files = files;
    if (!p->enabled)
        return;
    int64_t now = now_ms();
    if (!p->start_ms)
        p->start_ms = now; /* the first report of a piece of work (cli_progress_init_each) */
    if (now - p->start_ms < p->delay_ms || now - p->last_ms < PROGRESS_EVERY_MS)
        return;
    p->last_ms = now;
    p->shown = true;
    print_line(p, "");
}

/* The end of one piece of work: its line closed, the next one timed from its own start. */
static void on_end(void *ctx)
{
    cli_progress *p = ctx;
    cli_progress_done(p);
    p->start_ms = p->last_ms = 0;
    p->bytes = p->files = 0;
}

void cli_progress_init(cli_progress *progress, const char *what, bool enabled)
{
    *progress = (cli_progress){
        .hook = {on_progress, progress, NULL},
        .what = what,
        .enabled = enabled && isatty(STDERR_FILENO),
        .start_ms = now_ms(),
        .delay_ms = PROGRESS_DELAY_MS,
    };
    unsigned long long delay = 0;
    const char *env = getenv("OCIBUILD_PROGRESS_DELAY_MS");
    if (env && obi_parse_decimal(env, 3600 * 1000, &delay))
        progress->delay_ms = (int64_t)delay;
}

void cli_progress_init_each(cli_progress *progress, const char *what, bool enabled)
{
    cli_progress_init(progress, what, enabled);
    progress->hook.end = on_end;
    progress->start_ms = 0;
}

void cli_progress_done(cli_progress *progress)
{
    if (!progress->shown)
        return;
    char took[32];
    snprintf(took, sizeof took, " in %.1f s\n", (double)(now_ms() - progress->start_ms) / 1000);
    print_line(progress, took);
    progress->shown = false;
}

void cli_layer_progress_init(cli_layer_progress *progress, bool enabled)
{
    *progress = (cli_layer_progress){.enabled = enabled && isatty(STDERR_FILENO)};
}

void cli_layer_progress_report(void *ctx, const char *digest, uint64_t done, uint64_t total,
                               bool finished)
{
    cli_layer_progress *p = ctx;
    if (!p->enabled)
        return;
    int64_t now = now_ms();
    if (!finished && now - p->last_ms < PROGRESS_EVERY_MS)
        return;
    p->last_ms = now;
    char done_text[OBI_SIZE_TEXT_LEN], total_text[OBI_SIZE_TEXT_LEN];
    obi_format_size(done, done_text);
    obi_format_size(total, total_text);
    /* "sha256:" and 12 hex digits, as image tools print layers */
    fprintf(stderr, "\r\033[Kpulling %.19s: %s of %s%s", digest, done_text, total_text,
            finished ? (done == total ? ", done\n" : ", failed\n") : "");
    fflush(stderr);
}
