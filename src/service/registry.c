/*
 * The registry client (registry.h): the pull of one image into DATA/registry over the
 * distribution API
 * (GET/HEAD /v2/<name>/manifests/<ref>, GET /v2/<name>/blobs/<digest>) with libcurl, which is
 * loaded on first use like libarchive (dynlib.h).
 *
 * One request at a time through http_exchange (no redirect followed by libcurl: this file
 * decides where a redirect may go and whether credentials go with it), wrapped by
 * registry_request, which answers a 401 once (a Bearer token from the realm, or Basic with
 * the stored credentials of registry_auth.h) and follows up to five redirects. Bodies go to a sink:
 * a bounded buffer (JSON) or a blob file hashed as it is written; a blob is renamed to its digest
 * only when size and sha256 match, and the temporary file is removed on every failure.
 */
/* libcurl's type-checking macros would expand the calls through the loaded function table */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/dynlib.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"
#include "ocibuild/json_util.h"
#include "ocibuild/registry.h"
#include "ocibuild/registry_auth.h"
#include "ocibuild/sha256.h"

#define ERROR_BODY_MAX (16u << 10)
#define REDIRECTS_MAX 5
#define DIGEST_HEX_LEN 64
#define USER_AGENT "ocibuild"

#define MEDIA_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MEDIA_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MEDIA_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MEDIA_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define ACCEPT_MANIFESTS                                                                           \
    "Accept: " MEDIA_OCI_INDEX ", " MEDIA_OCI_MANIFEST ", " MEDIA_DOCKER_LIST                      \
    ", " MEDIA_DOCKER_MANIFEST

/* ---- libcurl, loaded on first use -------------------------------------------------------- */

#define LIBCURL_SONAME "libcurl.so.4"
#define LIBCURL_FUNCTIONS(X)                                                                       \
    X(curl_easy_cleanup)                                                                           \
    X(curl_easy_escape)                                                                            \
    X(curl_easy_getinfo)                                                                           \
    X(curl_easy_init)                                                                              \
    X(curl_easy_perform)                                                                           \
    X(curl_easy_reset)                                                                             \
    X(curl_easy_setopt)                                                                            \
    X(curl_easy_strerror)                                                                          \
    X(curl_free)                                                                                   \
    X(curl_global_init)                                                                            \
    X(curl_slist_append)                                                                           \
    X(curl_slist_free_all)                                                                         \
    X(curl_url)                                                                                    \
    X(curl_url_cleanup)                                                                            \
    X(curl_url_get)                                                                                \
    X(curl_url_set)

static struct {
#define LIBCURL_DECLARE(name) __typeof__(name) *name; // NOLINT(bugprone-macro-parentheses)
    LIBCURL_FUNCTIONS(LIBCURL_DECLARE)
#undef LIBCURL_DECLARE
} curl;

static int libcurl_load_result;
static obi_error *libcurl_load_error;
static pthread_once_t libcurl_once = PTHREAD_ONCE_INIT;

static void libcurl_load(void)
{
    static const obi_dynlib_symbol symbols[] = {
#define LIBCURL_SYMBOL(name) {#name, (void **)&curl.name},
        LIBCURL_FUNCTIONS(LIBCURL_SYMBOL)
#undef LIBCURL_SYMBOL
    };
    libcurl_load_result = obi_dynlib_load(LIBCURL_SONAME, symbols,
                                          sizeof symbols / sizeof symbols[0], &libcurl_load_error);
    if (libcurl_load_result == 0 && curl.curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        libcurl_load_result = -EIO;
}

static int libcurl_ready(obi_error **err)
{
    pthread_once(&libcurl_once, libcurl_load);
    if (libcurl_load_result < 0)
        return obi_error_set(err, libcurl_load_result, "%s",
                             libcurl_load_error && libcurl_load_error->message
                                 ? libcurl_load_error->message
                                 : "cannot initialise libcurl");
    return 0;
}

/* ---- HTTP -------------------------------------------------------------------------------- */

/* Where a response body goes: a buffer of at most max bytes, or a file hashed as written
 * (which must not grow beyond max). Bodies of error statuses go to err_body instead. */
typedef struct body_sink {
    obi_buf *buf;
    int fd;
    obi_sha256 *sha;
    uint64_t max;
    uint64_t written;
    bool too_large;
    int write_errno;
    /* a blob's progress */
    const obi_registry_options *opts;
    const char *digest;
} body_sink;

typedef struct http_response {
    long status;
    char *content_type;
    char *content_digest; /* Docker-Content-Digest */
    char *www_authenticate;
    obi_buf err_body;
} http_response;

static void http_response_clear(http_response *resp)
{
    free(resp->content_type);
    free(resp->content_digest);
    free(resp->www_authenticate);
    obi_buf_free(&resp->err_body);
    memset(resp, 0, sizeof *resp);
}

typedef struct exchange {
    http_response *resp;
    body_sink *sink;
} exchange;

static size_t on_header(char *data, size_t size, size_t n, void *ctx)
{
    exchange *ex = ctx;
    size_t len = size * n;
    if (len >= 5 && !strncmp(data, "HTTP/", 5)) {
        http_response *resp = ex->resp;
        free(resp->content_type);
        free(resp->content_digest);
        free(resp->www_authenticate);
        resp->content_type = resp->content_digest = resp->www_authenticate = NULL;
        return len;
    }
    static const struct {
        const char *name;
        size_t offset;
    } wanted[] = {
        {"content-type", offsetof(http_response, content_type)},
        {"docker-content-digest", offsetof(http_response, content_digest)},
        {"www-authenticate", offsetof(http_response, www_authenticate)},
    };
    const char *colon = memchr(data, ':', len);
    if (!colon)
        return len;
    size_t name_len = (size_t)(colon - data);
    for (size_t i = 0; i < OBI_ARRAY_SIZE(wanted); i++) {
        if (strlen(wanted[i].name) != name_len || strncasecmp(data, wanted[i].name, name_len))
            continue;
        const char *v = colon + 1, *end = data + len;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
            end--;
        char **slot = (char **)((char *)ex->resp + wanted[i].offset);
        if (!*slot) /* the first of repeated headers (several challenges: the first) */
            *slot = strndup(v, (size_t)(end - v));
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
    exchange *ex = ctx;
    size_t len = size * n;
    body_sink *sink = ex->sink;
    /* the status is known once the headers are in */
    if (ex->resp->status < 200 || ex->resp->status >= 300 || !sink) {
        size_t room =
            ex->resp->err_body.len < ERROR_BODY_MAX ? ERROR_BODY_MAX - ex->resp->err_body.len : 0;
        if (room && obi_buf_append(&ex->resp->err_body, data, len < room ? len : room) < 0)
            return 0;
        return len;
    }
    if (sink->written + len > sink->max) {
        sink->too_large = true;
        return 0; /* aborts the transfer */
    }
    if (sink->buf && obi_buf_append(sink->buf, data, len) < 0) {
        sink->write_errno = ENOMEM;
        return 0;
    }
    if (sink->fd >= 0) {
        int r = obi_write_all(sink->fd, data, len);
        if (r < 0) {
            sink->write_errno = -r;
            return 0;
        }
    }
    if (sink->sha)
        obi_sha256_update(sink->sha, data, len);
    sink->written += len;
    if (sink->opts && sink->opts->progress)
        sink->opts->progress(sink->opts->progress_ctx, sink->digest, sink->written, sink->max,
                             false);
    return len;
}

typedef struct registry_client {
    CURL *easy;
    const obi_image_ref *ref;
    const obi_registry_options *opts;
    bool insecure;
    char *origin;        /* "https://host[:port]" */
    char *authorization; /* "Authorization: ..." for the origin, once known */
    obi_registry_credentials creds;
    char *auth_file; /* where credentials were looked for (for messages) */
    bool creds_looked;
} registry_client;

/* The status line arrives before the body: on_body knows from it whether the body is the
 * content or an error document. */
static size_t on_header_status(char *data, size_t size, size_t n, void *ctx)
{
    exchange *ex = ctx;
    if (size * n >= 5 && !strncmp(data, "HTTP/", 5)) {
        const char *sp = memchr(data, ' ', size * n);
        ex->resp->status = sp ? strtol(sp + 1, NULL, 10) : 0;
    }
    return on_header(data, size, n, ctx);
}

static bool host_insecure(const obi_registry_options *opts, const char *host)
{
    for (size_t i = 0; opts && i < opts->n_insecure_hosts; i++)
        if (!strcmp(opts->insecure_hosts[i], host))
            return true;
    return false;
}

/* scheme, host and port of url ("https", "h", "443"), from libcurl's URL parser. */
typedef struct url_parts {
    char *scheme, *host, *port;
} url_parts;

static void url_parts_clear(url_parts *u)
{
    if (u->scheme)
        curl.curl_free(u->scheme);
    if (u->host)
        curl.curl_free(u->host);
    if (u->port)
        curl.curl_free(u->port);
    memset(u, 0, sizeof *u);
}

static int url_split(const char *url, url_parts *out)
{
    CURLU *u = curl.curl_url();
    if (!u)
        return -ENOMEM;
    url_parts parts = {0};
    int r = 0;
    if (curl.curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl.curl_url_get(u, CURLUPART_SCHEME, &parts.scheme, 0) != CURLUE_OK ||
        curl.curl_url_get(u, CURLUPART_HOST, &parts.host, 0) != CURLUE_OK ||
        curl.curl_url_get(u, CURLUPART_PORT, &parts.port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        r = -EINVAL;
    curl.curl_url_cleanup(u);
    if (r < 0) {
        url_parts_clear(&parts);
        return r;
    }
    *out = parts;
    return 0;
}

/* Whether a and b have the same scheme, host and port: credentials go only there. */
static bool same_origin(const char *a, const char *b)
{
    url_parts pa = {0}, pb = {0};
    bool same = url_split(a, &pa) == 0 && url_split(b, &pb) == 0 &&
                !strcasecmp(pa.scheme, pb.scheme) && !strcasecmp(pa.host, pb.host) &&
                !strcmp(pa.port, pb.port);
    url_parts_clear(&pa);
    url_parts_clear(&pb);
    return same;
}

/* A URL this client may request: https, or http to a host named insecure (host, or
 * host:port as written in --insecure-registry). */
static int url_allowed(const registry_client *client, const char *url, const char *what,
                       obi_error **err)
{
    if (strncasecmp(url, "https://", 8) && strncasecmp(url, "http://", 7))
        return obi_error_set(err, -EPERM, "%s \"%s\": only http and https are followed", what, url);
    url_parts parts = {0};
    if (url_split(url, &parts) < 0)
        return obi_error_set(err, -EINVAL, "%s \"%s\": not a URL", what, url);
    int r = 0;
    if (!strcasecmp(parts.scheme, "http")) {
        cleanup_free char *host_port = obi_strdup_printf("%s:%s", parts.host, parts.port);
        if (!host_port)
            r = obi_error_oom(err);
        else if (!host_insecure(client->opts, parts.host) &&
                 !host_insecure(client->opts, host_port))
            r = obi_error_set(err, -EPERM,
                              "%s \"%s\": plain HTTP to %s is refused (name it with "
                              "--insecure-registry to allow it)",
                              what, url, host_port);
    }
    url_parts_clear(&parts);
    return r;
}

/* The message of a registry's error body ({"errors":[{"code":..,"message":..}]}), or "". */
static char *error_body_message(const obi_buf *body)
{
    if (!body->len)
        return strdup("");
    cleanup_json json_t *doc = json_loadb((const char *)body->data, body->len, 0, NULL);
    json_t *first = json_array_get(json_object_get(doc, "errors"), 0);
    const char *code = json_string_value(json_object_get(first, "code"));
    const char *message = json_string_value(json_object_get(first, "message"));
    if (!code && !message)
        return strdup("");
    return obi_strdup_printf(" (%s%s%s)", code ? code : "", code && message ? ": " : "",
                             message ? message : "");
}

/* One request to url, no redirect followed: *location gets a redirect's target. */
static int http_exchange(registry_client *client, const char *method, const char *url,
                         const char *accept, const char *authorization, body_sink *sink,
                         http_response *resp, char **location, obi_error **err)
{
    CURL *easy = client->easy;
    curl.curl_easy_reset(easy);
    struct curl_slist *headers = NULL, *grown;
    if (accept && (grown = curl.curl_slist_append(headers, accept)))
        headers = grown;
    if (authorization && (grown = curl.curl_slist_append(headers, authorization)))
        headers = grown;
    exchange ex = {resp, sink};
    curl.curl_easy_setopt(easy, CURLOPT_URL, url);
    curl.curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl.curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl.curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl.curl_easy_setopt(easy, CURLOPT_USERAGENT, USER_AGENT);
    curl.curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a stalled transfer (under 1 byte/s for a minute) ends instead of hanging up forever */
    curl.curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl.curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, 60L);
    curl.curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl.curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header_status);
    curl.curl_easy_setopt(easy, CURLOPT_HEADERDATA, &ex);
    curl.curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl.curl_easy_setopt(easy, CURLOPT_WRITEDATA, &ex);
    if (!strcmp(method, "HEAD"))
        curl.curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    CURLcode rc = curl.curl_easy_perform(easy);
    curl.curl_slist_free_all(headers);
    if (sink && sink->too_large)
        return obi_error_set(err, -EFBIG, "%s %s: the answer is larger than %llu bytes", method,
                             url, (unsigned long long)sink->max);
    if (sink && sink->write_errno)
        return obi_error_set_errno(err, sink->write_errno, "%s %s: write", method, url);
    if (rc != CURLE_OK)
        return obi_error_set(err, -EIO, "%s %s: %s", method, url, curl.curl_easy_strerror(rc));
    curl.curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &resp->status);
    *location = NULL;
    if (resp->status >= 300 && resp->status < 400) {
        char *target = NULL;
        curl.curl_easy_getinfo(easy, CURLINFO_REDIRECT_URL, &target);
        if (!target)
            return obi_error_set(err, -EPROTO, "%s %s: HTTP %ld without a Location", method, url,
                                 resp->status);
        if (!(*location = strdup(target)))
            return obi_error_oom(err);
    }
    return 0;
}

static int client_open(registry_client *client, const obi_image_ref *ref,
                       const obi_registry_options *opts, obi_error **err)
{
    int r = libcurl_ready(err);
    if (r < 0)
        return r;
    *client = (registry_client){.ref = ref, .opts = opts};
    client->insecure = host_insecure(opts, ref->host) || host_insecure(opts, ref->domain);
    client->origin = obi_strdup_printf("%s://%s", client->insecure ? "http" : "https", ref->host);
    if (!client->origin || !(client->easy = curl.curl_easy_init()))
        return obi_error_oom(err);
    return 0;
}

static void client_close(registry_client *client)
{
    if (client->easy)
        curl.curl_easy_cleanup(client->easy);
    free(client->origin);
    if (client->authorization)
        explicit_bzero(client->authorization, strlen(client->authorization));
    free(client->authorization);
    obi_registry_credentials_clear(&client->creds);
    free(client->auth_file);
    memset(client, 0, sizeof *client);
}

static int client_credentials(registry_client *client, obi_error **err)
{
    if (client->creds_looked)
        return client->creds.user_pass ? 1 : 0;
    client->creds_looked = true;
    return obi_registry_credentials_find(client->ref, client->opts ? client->opts->auth_file : NULL,
                                         &client->creds, &client->auth_file, err);
}

static char *basic_header(const char *user_pass)
{
    size_t len = strlen(user_pass);
    cleanup_free char *b64 = malloc(obi_base64_encoded_len(len) + 1);
    if (!b64)
        return NULL;
    obi_base64_encode((const uint8_t *)user_pass, len, b64);
    char *header = obi_strdup_printf("Authorization: Basic %s", b64);
    explicit_bzero(b64, strlen(b64));
    return header;
}

static char *query_escape(registry_client *client, const char *s)
{
    char *e = curl.curl_easy_escape(client->easy, s, 0);
    char *copy = e ? strdup(e) : NULL;
    if (e)
        curl.curl_free(e);
    return copy;
}

/* Asks the challenge's realm for a token for ref's repository (with the stored credentials
 * when there are any) and keeps "Authorization: Bearer <token>". */
static int fetch_bearer_token(registry_client *client, const obi_auth_challenge *ch,
                              obi_error **err)
{
    if (!ch->realm)
        return obi_error_set(err, -EPROTO, "registry %s: Bearer challenge without a realm",
                             client->ref->host);
    int r = url_allowed(client, ch->realm, "token realm", err);
    if (r < 0)
        return r;
    cleanup_free char *default_scope =
        obi_strdup_printf("repository:%s:pull", client->ref->repository);
    cleanup_free char *service = ch->service ? query_escape(client, ch->service) : strdup("");
    cleanup_free char *scope =
        default_scope ? query_escape(client, ch->scope ? ch->scope : default_scope) : NULL;
    if (!service || !scope)
        return obi_error_oom(err);
    cleanup_free char *url = obi_strdup_printf("%s%sservice=%s&scope=%s", ch->realm,
                                               strchr(ch->realm, '?') ? "&" : "?", service, scope);
    if (!url)
        return obi_error_oom(err);
    if ((r = client_credentials(client, err)) < 0)
        return r;
    cleanup_free char *basic =
        client->creds.user_pass ? basic_header(client->creds.user_pass) : NULL;
    if (client->creds.user_pass && !basic)
        return obi_error_oom(err);
    obi_buf body = OBI_BUF_INIT;
    body_sink sink = {.buf = &body, .fd = -1, .max = OBI_REGISTRY_JSON_MAX};
    http_response resp = {0};
    cleanup_free char *location = NULL;
    r = http_exchange(client, "GET", url, "Accept: application/json", basic, &sink, &resp,
                      &location, err);
    if (basic)
        explicit_bzero(basic, strlen(basic));
    if (r == 0 && resp.status != 200) {
        cleanup_free char *detail = error_body_message(&resp.err_body);
        if (resp.status == 401 || resp.status == 403)
            r = obi_error_set(err, -EACCES,
                              "registry %s: the token service %s refused %s (HTTP %ld)%s",
                              client->ref->host, ch->realm,
                              client->creds.user_pass ? "the credentials" : "an anonymous pull",
                              resp.status, detail ? detail : "");
        else
            r = obi_error_set(err, -EPROTO, "registry %s: token service %s: HTTP %ld%s",
                              client->ref->host, ch->realm, resp.status, detail ? detail : "");
    }
    cleanup_json json_t *doc = NULL;
    if (r == 0 && !(doc = json_loadb(body.data ? (const char *)body.data : "", body.len, 0, NULL)))
        r = obi_error_set(err, -EPROTO, "registry %s: token service %s: not JSON",
                          client->ref->host, ch->realm);
    const char *token = NULL;
    if (r == 0) {
        token = json_string_value(json_object_get(doc, "token"));
        if (!token)
            token = json_string_value(json_object_get(doc, "access_token"));
        if (!token || !*token || strpbrk(token, "\r\n"))
            r = obi_error_set(err, -EPROTO, "registry %s: token service %s: no token in answer",
                              client->ref->host, ch->realm);
    }
    if (r == 0) {
        free(client->authorization);
        if (!(client->authorization = obi_strdup_printf("Authorization: Bearer %s", token)))
            r = obi_error_oom(err);
    }
    if (body.data)
        explicit_bzero(body.data, body.len);
    obi_buf_free(&body);
    http_response_clear(&resp);
    return r;
}

/* Answers a 401 from the registry: Bearer or Basic, as its challenge asks. */
static int answer_challenge(registry_client *client, const http_response *resp, bool retried,
                            obi_error **err)
{
    if (!resp->www_authenticate)
        return obi_error_set(err, -EACCES, "registry %s: HTTP 401 without a challenge",
                             client->ref->host);
    obi_auth_challenge ch = {0};
    int r = obi_auth_challenge_parse(resp->www_authenticate, &ch, err);
    if (r < 0)
        return obi_error_prefix(err, r, "registry %s", client->ref->host);
    if (!strcmp(ch.scheme, "bearer") && !retried) {
        r = fetch_bearer_token(client, &ch, err);
    } else if (!strcmp(ch.scheme, "basic")) {
        r = client_credentials(client, err);
        if (r == 0)
            r = obi_error_set(err, -EACCES,
                              "registry %s: %s needs credentials and there are none for it "
                              "(looked in %s)",
                              client->ref->host, client->ref->canonical,
                              client->auth_file ? client->auth_file
                                                : "no auth file: give one with --registry-auth, "
                                                  "or $REGISTRY_AUTH_FILE");
        else if (r > 0 && retried)
            r = obi_error_set(err, -EACCES,
                              "registry %s: the credentials from %s were refused (HTTP 401)",
                              client->ref->host, client->creds.source);
        else if (r > 0) {
            free(client->authorization);
            client->authorization = basic_header(client->creds.user_pass);
            r = client->authorization ? 0 : obi_error_oom(err);
        }
    } else if (!strcmp(ch.scheme, "bearer")) {
        r = obi_error_set(err, -EACCES, "registry %s: the token for %s was refused (HTTP 401)",
                          client->ref->host, client->ref->canonical);
    } else {
        r = obi_error_set(err, -ENOTSUP,
                          "registry %s: authentication scheme \"%s\" is not supported",
                          client->ref->host, ch.scheme);
    }
    obi_auth_challenge_clear(&ch);
    return r;
}

/* method on origin + path with authentication and redirects; resp holds the final answer
 * (a 2xx, or an error status the caller explains). */
static int registry_request(registry_client *client, const char *method, const char *path,
                            const char *accept, body_sink *sink, http_response *resp,
                            obi_error **err)
{
    cleanup_free char *url = obi_strdup_printf("%s%s", client->origin, path);
    if (!url)
        return obi_error_oom(err);
    bool retried = false;
    int redirects = 0;
    for (;;) {
        http_response_clear(resp);
        cleanup_free char *location = NULL;
        /* credentials only ever to the registry's own origin */
        const char *authorization = same_origin(url, client->origin) ? client->authorization : NULL;
        if (sink && sink->fd >= 0) { /* a retry starts the file again */
            if (ftruncate(sink->fd, 0) < 0 || lseek(sink->fd, 0, SEEK_SET) < 0)
                return obi_error_set_errno(err, errno, "blob %s", sink->digest);
            sink->written = 0;
        }
        if (sink && sink->sha) {
            obi_sha256_free(sink->sha);
            if (!(sink->sha = obi_sha256_new()))
                return obi_error_oom(err);
        }
        if (sink && sink->buf) {
            obi_buf_clear(sink->buf);
            sink->written = 0;
        }
        int r =
            http_exchange(client, method, url, accept, authorization, sink, resp, &location, err);
        if (r < 0)
            return r;
        if (resp->status == 401 && same_origin(url, client->origin) && !retried) {
            if ((r = answer_challenge(client, resp, false, err)) < 0)
                return r;
            retried = true;
            continue;
        }
        if (resp->status == 401 && same_origin(url, client->origin))
            return answer_challenge(client, resp, true, err);
        if (location) {
            if (++redirects > REDIRECTS_MAX)
                return obi_error_set(err, -ELOOP, "%s %s: more than %d redirects", method, path,
                                     REDIRECTS_MAX);
            if ((r = url_allowed(client, location, "redirect to", err)) < 0)
                return obi_error_prefix(err, r, "%s %s", method, url);
            free(url);
            url = steal_pointer(&location);
            continue;
        }
        return 0;
    }
}

/* The error for a non-2xx final answer. */
static int status_error(const registry_client *client, const char *what, http_response *resp,
                        obi_error **err)
{
    cleanup_free char *detail = error_body_message(&resp->err_body);
    int code = resp->status == 404 ? -ENOENT : resp->status == 403 ? -EACCES : -EPROTO;
    return obi_error_set(err, code, "registry %s: %s: HTTP %ld%s", client->ref->host, what,
                         resp->status, detail ? detail : "");
}

/* ---- the cache: DATA/registry ------------------------------------------------------------ */

char *obi_registry_layout_dir(const char *data_dir)
{
    return obi_path_join(data_dir, "registry");
}

typedef struct cache {
    char *dir;   /* DATA/registry */
    char *blobs; /* DATA/registry/blobs/sha256 */
    char *refs;  /* DATA/registry/refs */
    int lock;    /* DATA/registry/.lock, shared while pulling */
} cache;

static void cache_close(cache *c)
{
    free(c->dir);
    free(c->blobs);
    free(c->refs);
    if (c->lock >= 0)
        close(c->lock);
    c->lock = -1;
}

/* Removes temporary blob files that a crashed pull left (".tmp" in the name): only while no
 * other pull runs, which the exclusive lock proves. */
static void cache_sweep(const cache *c)
{
    cleanup_dir DIR *dir = opendir(c->blobs);
    struct dirent *de;
    while (dir && (de = readdir(dir)))
        if (strstr(de->d_name, ".tmp"))
            unlinkat(dirfd(dir), de->d_name, 0);
}

static int cache_open(const char *data_dir, cache *out, obi_error **err)
{
    cache c = {obi_registry_layout_dir(data_dir), NULL, NULL, -1};
    if (c.dir) {
        c.blobs = obi_path_join(c.dir, "blobs/sha256");
        c.refs = obi_path_join(c.dir, "refs");
    }
    cleanup_free char *layout_file = c.dir ? obi_path_join(c.dir, "oci-layout") : NULL;
    cleanup_free char *lock_path = c.dir ? obi_path_join(c.dir, ".lock") : NULL;
    int r = 0;
    if (!c.blobs || !c.refs || !layout_file || !lock_path)
        r = obi_error_oom(err);
    if (r == 0)
        r = obi_mkdir_p(c.blobs, 0700, err);
    if (r == 0)
        r = obi_mkdir_p(c.refs, 0700, err);
    if (r == 0 && access(layout_file, F_OK) < 0) {
        static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
        /* no sync: nothing reads it back, it only marks the directory as a layout */
        r = obi_write_file(layout_file, layout, sizeof layout - 1, 0600, err);
    }
    if (r == 0) {
        c.lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (c.lock < 0)
            r = obi_error_set_errno(err, errno, "open %s", lock_path);
    }
    if (r == 0 && flock(c.lock, LOCK_EX | LOCK_NB) == 0)
        cache_sweep(&c);
    if (r == 0 && flock(c.lock, LOCK_SH) < 0)
        r = obi_error_set_errno(err, errno, "lock %s", lock_path);
    if (r < 0) {
        cache_close(&c);
        return r;
    }
    *out = c;
    return 0;
}

static char *blob_path(const cache *c, const char *hex)
{
    return obi_path_join(c->blobs, hex);
}

static bool blob_present(const cache *c, const char *hex)
{
    cleanup_free char *path = blob_path(c, hex);
    struct stat st;
    return path && lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void sha256_hex(const void *data, size_t len, char hex[DIGEST_HEX_LEN + 1])
{
    uint8_t digest[OBI_SHA256_LEN];
    obi_sha256_oneshot(data, len, digest);
    obi_hex_encode(digest, OBI_SHA256_LEN, hex);
}

/* A small document (manifest, index) whose sha256 is hex, written into the cache. */
static int blob_store_bytes(const cache *c, const char *hex, const obi_buf *bytes, obi_error **err)
{
    if (blob_present(c, hex))
        return 0;
    cleanup_free char *path = blob_path(c, hex);
    if (!path)
        return obi_error_oom(err);
    return obi_write_file_atomic(path, bytes->data ? (const char *)bytes->data : "", bytes->len,
                                 0600, err);
}

/* The record of a reference: "TOP MANIFEST\n", the digest the registry gave for it and the
 * host platform's manifest (the same unless TOP is an index). Named by the sha256 of the
 * canonical reference. */
static char *ref_record_path(const cache *c, const obi_image_ref *ref)
{
    char hex[DIGEST_HEX_LEN + 1];
    sha256_hex(ref->canonical, strlen(ref->canonical), hex);
    return obi_path_join(c->refs, hex);
}

typedef struct ref_record {
    char top[DIGEST_HEX_LEN + 1];
    char manifest[DIGEST_HEX_LEN + 1];
} ref_record;

/* 1 with *out when the record is there and every blob the manifest names is cached. */
static int ref_record_read(const cache *c, const obi_image_ref *ref, ref_record *out)
{
    cleanup_free char *path = ref_record_path(c, ref);
    cleanup_free char *text = NULL;
    size_t len = 0;
    cleanup_error obi_error *ignored = NULL;
    if (!path || obi_read_file(path, 1024, &text, &len, &ignored) < 0)
        return 0;
    ref_record rec;
    if (sscanf(text, "%64[0-9a-f] %64[0-9a-f]", rec.top, rec.manifest) != 2 ||
        strlen(rec.top) != DIGEST_HEX_LEN || strlen(rec.manifest) != DIGEST_HEX_LEN)
        return 0;
    cleanup_free char *manifest_path = blob_path(c, rec.manifest);
    cleanup_free char *manifest_text = NULL;
    if (!manifest_path ||
        obi_read_file(manifest_path, OBI_REGISTRY_JSON_MAX, &manifest_text, &len, &ignored) < 0)
        return 0;
    cleanup_json json_t *manifest = json_loadb(manifest_text, len, 0, NULL);
    json_t *layers = json_object_get(manifest, "layers");
    const char *config =
        json_string_value(json_object_get(json_object_get(manifest, "config"), "digest"));
    if (!json_is_array(layers) || !config || !obi_image_digest_ok(config) ||
        !blob_present(c, config + 7))
        return 0;
    size_t i;
    json_t *layer;
    json_array_foreach(layers, i, layer)
    {
        const char *d = json_string_value(json_object_get(layer, "digest"));
        if (!d || !obi_image_digest_ok(d) || !blob_present(c, d + 7))
            return 0;
    }
    *out = rec;
    return 1;
}

static int ref_record_write(const cache *c, const obi_image_ref *ref, const ref_record *rec,
                            obi_error **err)
{
    cleanup_free char *path = ref_record_path(c, ref);
    cleanup_free char *text =
        obi_strdup_printf("%s %s\n%s\n", rec->top, rec->manifest, ref->canonical);
    if (!path || !text)
        return obi_error_oom(err);
    return obi_write_file_atomic(path, text, strlen(text), 0600, err);
}

/* ---- the pull ---------------------------------------------------------------------------- */

/* A layer or config blob into the cache: streamed to a temporary file, hashed and counted as
 * it arrives, renamed to its digest only when both match; removed on every failure. */
static int blob_fetch(registry_client *client, const cache *c, const char *digest, json_int_t size,
                      bool report, obi_error **err)
{
    const char *hex = digest + 7;
    if (blob_present(c, hex))
        return 0;
    cleanup_free char *final = blob_path(c, hex);
    cleanup_free char *tmp = obi_strdup_printf("%s/%s.tmp.XXXXXX", c->blobs, hex);
    cleanup_free char *path = obi_strdup_printf("/v2/%s/blobs/%s", client->ref->repository, digest);
    if (!final || !tmp || !path)
        return obi_error_oom(err);
    cleanup_close int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "create %s", tmp);
    body_sink sink = {.fd = fd,
                      .sha = obi_sha256_new(),
                      .max = (uint64_t)size,
                      .opts = report ? client->opts : NULL,
                      .digest = digest};
    http_response resp = {0};
    int r = sink.sha ? 0 : obi_error_oom(err);
    if (r == 0)
        r = registry_request(client, "GET", path, NULL, &sink, &resp, err);
    if (r == 0 && resp.status != 200)
        r = status_error(client, path, &resp, err);
    char got[DIGEST_HEX_LEN + 1] = "";
    if (r == 0 && sink.written != (uint64_t)size)
        r = obi_error_set(err, -EBADMSG, "blob %s: %llu bytes, its descriptor says %lld", digest,
                          (unsigned long long)sink.written, (long long)size);
    if (r == 0) {
        uint8_t raw[OBI_SHA256_LEN];
        obi_sha256_final(sink.sha, raw);
        obi_hex_encode(raw, OBI_SHA256_LEN, got);
        if (strcmp(got, hex))
            r = obi_error_set(err, -EBADMSG, "blob %s: the registry sent bytes whose sha256 is %s",
                              digest, got);
    }
    if (r == 0 && (fsync(fd) < 0 || fchmod(fd, 0600) < 0))
        r = obi_error_set_errno(err, errno, "write %s", tmp);
    if (r == 0 && rename(tmp, final) < 0)
        r = obi_error_set_errno(err, errno, "rename %s", tmp);
    if (r < 0)
        unlink(tmp);
    obi_sha256_free(sink.sha);
    http_response_clear(&resp);
    if (report && client->opts && client->opts->progress)
        client->opts->progress(client->opts->progress_ctx, digest, sink.written, (uint64_t)size,
                               true);
    return r;
}

/* GET (or HEAD) a manifest or index by tag or digest; body and its sha256 hex out. */
static int manifest_fetch(registry_client *client, const char *reference, bool head, obi_buf *body,
                          http_response *resp, char hex[DIGEST_HEX_LEN + 1], obi_error **err)
{
    cleanup_free char *path =
        obi_strdup_printf("/v2/%s/manifests/%s", client->ref->repository, reference);
    if (!path)
        return obi_error_oom(err);
    body_sink sink = {.buf = body, .fd = -1, .max = OBI_REGISTRY_JSON_MAX};
    int r = registry_request(client, head ? "HEAD" : "GET", path, ACCEPT_MANIFESTS,
                             head ? NULL : &sink, resp, err);
    if (r == 0 && resp->status != 200)
        r = status_error(client, path, resp, err);
    if (r < 0)
        return obi_error_prefix(err, r, "image %s", client->ref->canonical);
    if (head) {
        const char *d = resp->content_digest;
        if (!d || !obi_image_digest_ok(d))
            return 1; /* no usable digest: the caller GETs */
        snprintf(hex, DIGEST_HEX_LEN + 1, "%s", d + 7);
        return 0;
    }
    sha256_hex(body->data ? (const char *)body->data : "", body->len, hex);
    bool by_digest = !strncmp(reference, "sha256:", 7);
    if (by_digest && strcmp(hex, reference + 7))
        return obi_error_set(err, -EBADMSG,
                             "image %s: manifest %s: the registry sent bytes whose "
                             "sha256 is %s",
                             client->ref->canonical, reference, hex);
    return 0;
}

/* The host's platform as OCI names it: GOARCH and (for arm) the variant. */
static void host_platform(const char **arch, const char **variant)
{
    static const struct {
        const char *machine, *arch, *variant;
    } table[] = {
        {"x86_64", "amd64", NULL},    {"aarch64", "arm64", NULL}, {"armv7l", "arm", "v7"},
        {"armv6l", "arm", "v6"},      {"i686", "386", NULL},      {"i386", "386", NULL},
        {"ppc64le", "ppc64le", NULL}, {"s390x", "s390x", NULL},   {"riscv64", "riscv64", NULL},
    };
    struct utsname u;
    *arch = "amd64";
    *variant = NULL;
    if (uname(&u) < 0)
        return;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(table); i++)
        if (!strcmp(u.machine, table[i].machine)) {
            *arch = table[i].arch;
            *variant = table[i].variant;
            return;
        }
    static __thread char machine[sizeof u.machine];
    snprintf(machine, sizeof machine, "%s", u.machine);
    *arch = machine;
}

/* The manifest of an index for linux/<host arch>[/variant]: digest out, or -ENOENT listing
 * the platforms it has. */
static int index_choose(const registry_client *client, const json_t *index, char **digest_out,
                        obi_error **err)
{
    const char *arch, *variant;
    host_platform(&arch, &variant);
    json_t *manifests = json_object_get(index, "manifests");
    if (!json_is_array(manifests))
        return obi_error_set(err, -EINVAL, "image %s: index without a manifests array",
                             client->ref->canonical);
    obi_buf seen = OBI_BUF_INIT;
    size_t i;
    json_t *m;
    const char *chosen = NULL;
    json_array_foreach(manifests, i, m)
    {
        json_t *platform = json_object_get(m, "platform");
        const char *os = json_string_value(json_object_get(platform, "os"));
        const char *a = json_string_value(json_object_get(platform, "architecture"));
        const char *v = json_string_value(json_object_get(platform, "variant"));
        const char *d = json_string_value(json_object_get(m, "digest"));
        if (!os || !a)
            continue;
        obi_buf_appendf(&seen, "%s%s/%s%s%s", seen.len ? ", " : "", os, a, v ? "/" : "",
                        v ? v : "");
        if (strcmp(os, "linux") || strcmp(a, arch) || (variant && v && strcmp(v, variant)))
            continue;
        if (!d || !obi_image_digest_ok(d)) {
            obi_buf_free(&seen);
            return obi_error_set(err, -EINVAL, "image %s: manifests[%zu]: malformed digest",
                                 client->ref->canonical, i);
        }
        chosen = d;
        break;
    }
    if (!chosen) {
        int r = obi_error_set(err, -ENOENT, "image %s: no manifest for linux/%s%s%s (it has: %s)",
                              client->ref->canonical, arch, variant ? "/" : "",
                              variant ? variant : "", seen.len ? (const char *)seen.data : "none");
        obi_buf_free(&seen);
        return r;
    }
    obi_buf_free(&seen);
    *digest_out = strdup(chosen);
    return *digest_out ? 0 : obi_error_oom(err);
}

static bool is_index(const json_t *doc, const char *content_type)
{
    const char *media = json_string_value(json_object_get(doc, "mediaType"));
    if (!media)
        media = content_type;
    if (media && (!strncmp(media, MEDIA_OCI_INDEX, strlen(MEDIA_OCI_INDEX)) ||
                  !strncmp(media, MEDIA_DOCKER_LIST, strlen(MEDIA_DOCKER_LIST))))
        return true;
    return !media && json_is_array(json_object_get(doc, "manifests"));
}

static int parse_json(const obi_buf *body, const char *what, json_t **out, obi_error **err)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body->data ? (const char *)body->data : "", body->len, 0, &jerr);
    if (!doc || !json_is_object(doc)) {
        json_decref(doc);
        return obi_error_set(err, -EINVAL, "%s: invalid JSON at line %d: %s", what, jerr.line,
                             doc ? "not an object" : jerr.text);
    }
    *out = doc;
    return 0;
}

/* Fetches everything of ref into the cache; rec gets what was resolved. */
static int pull_all(registry_client *client, const cache *c, ref_record *rec, obi_error **err)
{
    const obi_image_ref *ref = client->ref;
    obi_buf body = OBI_BUF_INIT;
    http_response resp = {0};
    cleanup_json json_t *doc = NULL;
    int r = manifest_fetch(client, ref->digest ? ref->digest : ref->tag, false, &body, &resp,
                           rec->top, err);
    if (r == 0)
        r = parse_json(&body, ref->canonical, &doc, err);
    if (r == 0)
        r = blob_store_bytes(c, rec->top, &body, err);
    snprintf(rec->manifest, sizeof rec->manifest, "%s", rec->top);
    if (r == 0 && is_index(doc, resp.content_type)) {
        cleanup_free char *chosen = NULL;
        r = index_choose(client, doc, &chosen, err);
        json_decref(doc);
        doc = NULL;
        obi_buf_clear(&body);
        if (r == 0)
            r = manifest_fetch(client, chosen, false, &body, &resp, rec->manifest, err);
        if (r == 0)
            r = parse_json(&body, chosen, &doc, err);
        if (r == 0 && is_index(doc, resp.content_type))
            r = obi_error_set(err, -ENOTSUP, "image %s: %s is an index inside an index",
                              ref->canonical, chosen);
        if (r == 0)
            r = blob_store_bytes(c, rec->manifest, &body, err);
    }
    obi_buf_free(&body);
    http_response_clear(&resp);
    if (r < 0)
        return r;
    json_t *config = json_object_get(doc, "config");
    json_t *layers = json_object_get(doc, "layers");
    if (!json_is_object(config) || !json_is_array(layers))
        return obi_error_set(err, -EINVAL,
                             "image %s: manifest sha256:%s has no config or no layers (a "
                             "schema 1 manifest is not supported)",
                             ref->canonical, rec->manifest);
    size_t n = json_array_size(layers);
    for (size_t i = 0; i <= n && r == 0; i++) {
        json_t *desc = i < n ? json_array_get(layers, i) : config;
        json_t *digest = json_object_get(desc, "digest");
        json_t *size = json_object_get(desc, "size");
        if (!json_is_string(digest) || !obi_image_digest_ok(json_string_value(digest)) ||
            !json_is_integer(size) || json_integer_value(size) < 0) {
            r = i < n ? obi_error_set(err, -EINVAL,
                                      "image %s: layers[%zu]: needs a sha256 digest and a size",
                                      ref->canonical, i)
                      : obi_error_set(err, -EINVAL,
                                      "image %s: config: needs a sha256 digest and a size",
                                      ref->canonical);
            break;
        }
        if (i == n && json_integer_value(size) > (json_int_t)OBI_REGISTRY_JSON_MAX) {
            r = obi_error_set(err, -EFBIG, "image %s: config of %lld bytes is too large",
                              ref->canonical, (long long)json_integer_value(size));
            break;
        }
        r = blob_fetch(client, c, json_string_value(digest), json_integer_value(size), i < n, err);
        if (r < 0)
            r = obi_error_prefix(err, r, "image %s", ref->canonical);
    }
    return r;
}

int obi_registry_pull(const obi_image_ref *ref, obi_pull_policy policy,
                      const obi_registry_options *opts, const char *data_dir, char **manifest_hex,
                      obi_error **err)
{
    cache c = {NULL, NULL, NULL, -1};
    int r = cache_open(data_dir, &c, err);
    if (r < 0)
        return obi_error_prefix(err, r, "image %s: cache", ref->canonical);
    ref_record rec = {"", ""};
    bool cached = ref_record_read(&c, ref, &rec) == 1;
    registry_client client = {0};
    bool done = cached && (policy == OBI_PULL_IF_NOT_PRESENT || policy == OBI_PULL_NEVER);
    if (!cached && policy == OBI_PULL_NEVER)
        r = obi_error_set(err, -ENOENT,
                          "image %s is not in the cache and its pull_policy is never (pull it "
                          "once with another policy)",
                          ref->canonical);
    if (r == 0 && !done)
        r = client_open(&client, ref, opts, err);
    if (r == 0 && !done && cached && policy == OBI_PULL_NEWER) {
        /* a digest reference cannot change; a tag is asked for its digest with HEAD */
        if (ref->digest) {
            done = true;
        } else {
            obi_buf body = OBI_BUF_INIT;
            http_response resp = {0};
            char now[DIGEST_HEX_LEN + 1] = "";
            r = manifest_fetch(&client, ref->tag, true, &body, &resp, now, err);
            done = r == 0 && !strcmp(now, rec.top);
            if (r == 1)
                r = 0;
            obi_buf_free(&body);
            http_response_clear(&resp);
        }
    }
    ref_record fresh = {"", ""};
    if (r == 0 && !done)
        r = pull_all(&client, &c, &fresh, err);
    if (r == 0 && !done) {
        r = ref_record_write(&c, ref, &fresh, err);
        rec = fresh;
    }
    client_close(&client);
    cache_close(&c);
    if (r < 0)
        return r;
    if (!(*manifest_hex = strdup(rec.manifest)))
        return obi_error_oom(err);
    return 0;
}
