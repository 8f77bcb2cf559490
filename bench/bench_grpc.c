/*
 * Driver for bench/grpc.sh: blob service throughput and Stat rate through any store URL (so
 * the same code measures a grpc+unix:// daemon and the local store it serves), and a plain
 * read() of a file as the baseline.
 *
 *   bench_grpc put URL FILE              store FILE as a blob (1 MiB writes), print MiB/s
 *   bench_grpc read URL HEX              read the blob to nowhere, print MiB/s
 *   bench_grpc readfile PATH             read() the file in 1 MiB pieces, print MiB/s
 *   bench_grpc stat URL HEX THREADS SEC  THREADS client threads (sharing one channel) call
 *                                        has() in a loop for SEC seconds, print requests/s
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/rpc.h"
#include "ocibuild/store.h"

#define PIECE (1024 * 1024)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(obi_error *err)
{
    fprintf(stderr, "bench_grpc: %s\n", err ? err->message : "failed");
    obi_error_free(err);
    return 1;
}

static int bench_put(const char *url, const char *path)
{
    obi_error *err = NULL;
    char *data = NULL;
    size_t len = 0;
    if (obi_read_file(path, (size_t)1 << 40, &data, &len, &err) < 0)
        return fail(err);
    obi_blob_service *svc = NULL;
    if (obi_blob_service_open(url, &svc, &err) < 0)
        return fail(err);
    double start = now();
    obi_blob_writer *writer = NULL;
    obi_digest digest;
    int r = obi_blob_open_write(svc, &writer, &err);
    for (size_t off = 0; r >= 0 && off < len; off += PIECE)
        r = obi_blob_write(writer, data + off, len - off < PIECE ? len - off : PIECE, &err);
    if (r >= 0)
        r = obi_blob_finish(writer, &digest, &err);
    double seconds = now() - start;
    obi_blob_writer_close(writer);
    obi_blob_service_free(svc);
    free(data);
    if (r < 0)
        return fail(err);
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(&digest, hex);
    printf("%.1f %s\n", (double)len / (1024.0 * 1024.0) / seconds, hex);
    return 0;
}

static int bench_read(const char *url, const char *hex)
{
    obi_error *err = NULL;
    obi_digest digest;
    if (obi_digest_from_hex(hex, &digest, &err) < 0)
        return fail(err);
    obi_blob_service *svc = NULL;
    if (obi_blob_service_open(url, &svc, &err) < 0)
        return fail(err);
    char *buf = malloc(PIECE);
    size_t total = 0;
    double start = now();
    obi_blob_reader *reader = NULL;
    int r = obi_blob_open_read(svc, &digest, &reader, &err);
    while (r >= 0) {
        size_t n = 0;
        r = obi_blob_read(reader, buf, PIECE, &n, &err);
        if (r < 0 || n == 0)
            break;
        total += n;
    }
    double seconds = now() - start;
    obi_blob_reader_close(reader);
    obi_blob_service_free(svc);
    free(buf);
    if (r < 0)
        return fail(err);
    printf("%.1f\n", (double)total / (1024.0 * 1024.0) / seconds);
    return 0;
}

static int bench_readfile(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    char *buf = malloc(PIECE);
    size_t total = 0;
    double start = now();
    for (;;) {
        ssize_t n = read(fd, buf, PIECE);
        if (n <= 0)
            break;
        total += (size_t)n;
    }
    double seconds = now() - start;
    close(fd);
    free(buf);
    printf("%.1f\n", (double)total / (1024.0 * 1024.0) / seconds);
    return 0;
}

typedef struct stat_worker {
    const char *url;
    obi_digest digest;
    double until;
    unsigned long calls;
    int failed;
} stat_worker;

static void *stat_loop(void *arg)
{
    stat_worker *w = arg;
    obi_error *err = NULL;
    obi_blob_service *svc = NULL;
    if (obi_blob_service_open(w->url, &svc, &err) < 0) {
        w->failed = 1;
        obi_error_free(err);
        return NULL;
    }
    while (now() < w->until) {
        if (obi_blob_has(svc, &w->digest, &err) != 1) {
            w->failed = 1;
            obi_error_free(err);
            break;
        }
        w->calls++;
    }
    obi_blob_service_free(svc);
    return NULL;
}

static int bench_stat(const char *url, const char *hex, int threads, double seconds)
{
    obi_error *err = NULL;
    obi_digest digest;
    if (obi_digest_from_hex(hex, &digest, &err) < 0)
        return fail(err);
    stat_worker *workers = calloc((size_t)threads, sizeof *workers);
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    double start = now();
    for (int i = 0; i < threads; i++) {
        workers[i] = (stat_worker){.url = url, .digest = digest, .until = start + seconds};
        pthread_create(&ids[i], NULL, stat_loop, &workers[i]);
    }
    unsigned long calls = 0;
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        calls += workers[i].calls;
        failed |= workers[i].failed;
    }
    double elapsed = now() - start;
    free(workers);
    free(ids);
    if (failed) {
        fprintf(stderr, "bench_grpc: a Stat failed\n");
        return 1;
    }
    printf("%.0f\n", (double)calls / elapsed);
    return 0;
}

int main(int argc, char **argv)
{
    obi_error *err = NULL;
    if (obi_rpc_init(&err) < 0)
        return fail(err);
    if (argc == 4 && !strcmp(argv[1], "put"))
        return bench_put(argv[2], argv[3]);
    if (argc == 4 && !strcmp(argv[1], "read"))
        return bench_read(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "readfile"))
        return bench_readfile(argv[2]);
    if (argc == 6 && !strcmp(argv[1], "stat"))
        return bench_stat(argv[2], argv[3], atoi(argv[4]), atof(argv[5]));
    fprintf(stderr, "usage: see bench/bench_grpc.c\n");
    return 2;
}
