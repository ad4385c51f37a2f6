/* etcd.c - the etcd client proper: options and endpoints, the HTTP transport
 * to etcd's JSON gateway (failover, auth tokens, size caps, error mapping),
 * and the unary calls built on it: key-value, txn, leases, the leader key
 * and compaction. The encoding lives in etcd_json.c, the watch stream in
 * etcd_watch.c, the lease keeper thread in etcd_keeper.c. */
#include "etcd_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/util.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void) {
    /* Process-wide and never undone: libcurl's global cleanup is not safe
     * while any other thread may still use libcurl. */
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void free_cjson(cJSON **p) { cJSON_Delete(*p); }
#define _cleanup_json_ _cleanup_(free_cjson)
static void free_slist(struct curl_slist **p) { curl_slist_free_all(*p); }
#define _cleanup_slist_ _cleanup_(free_slist)

/* ---- client ------------------------------------------------------------ */

static int dup_opt(const char *in, char **out) {
    *out = NULL;
    if (!in || !*in)
        return 0;
    *out = strdup(in);
    return *out ? 0 : -ENOMEM;
}

static int parse_endpoints(kf_etcd *c, const char *list, kf_error *err) {
    if (!list || !*list)
        return kf_error_set(err, -EINVAL, 0, "etcd: no endpoints given");
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        size_t n = strcspn(p, ", ");
        while (n > 0 && p[n - 1] == '/')
            n--;
        if (c->n_endpoints == KF_ETCD_MAX_ENDPOINTS)
            return kf_error_set(err, -EINVAL, 0, "etcd: more than %d endpoints", KF_ETCD_MAX_ENDPOINTS);
        bool http = n > 7 && strncmp(p, "http://", 7) == 0;
        bool https = n > 8 && strncmp(p, "https://", 8) == 0;
        if (!http && !https)
            return kf_error_set(err, -EINVAL, 0, "etcd: endpoint \"%.*s\" is not http://host:port or https://host:port",
                                (int)(n > 200 ? 200 : n), p);
        char *ep = strndup(p, n);
        if (!ep)
            return kf_error_set(err, -ENOMEM, 0, "out of memory");
        c->endpoints[c->n_endpoints++] = ep;
        p += strcspn(p, ", ");
    }
    if (c->n_endpoints == 0)
        return kf_error_set(err, -EINVAL, 0, "etcd: no endpoints given");
    return 0;
}

int kf_etcd_client_new(const kf_etcd_opts *opts, kf_etcd **out, kf_error *err) {
    *out = NULL;
    if (!opts)
        return kf_error_set(err, -EINVAL, 0, "etcd: no options");
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return kf_error_set(err, -EIO, KF_ST_INTERNAL, "libcurl initialisation failed: %s",
                            curl_easy_strerror(curl_init_rc));
    if (opts->request_timeout_ms < 0 || opts->connect_timeout_ms < 0)
        return kf_error_set(err, -EINVAL, 0, "etcd: negative timeout");
    if ((opts->password && !opts->username) || ((opts->cert_file != NULL) != (opts->key_file != NULL)))
        return kf_error_set(err, -EINVAL, 0, "etcd: a password needs a username, a client cert needs its key");
    kf_etcd *c = calloc(1, sizeof(*c));
    if (!c)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    for (size_t i = 0; i < KF_ETCD_HANDLES; i++)
        pthread_mutex_init(&c->lock[i], NULL);
    pthread_mutex_init(&c->auth_lock, NULL);
    int r = parse_endpoints(c, opts->endpoints, err);
    if (r < 0)
        goto fail;
    c->request_timeout_ms = opts->request_timeout_ms ? opts->request_timeout_ms : 5000;
    c->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 2000;
    c->watch_idle_timeout_ms = opts->watch_idle_timeout_ms == 0 ? 15 * 60 * 1000L : opts->watch_idle_timeout_ms;
    c->max_response = opts->max_response_bytes ? opts->max_response_bytes : KF_ETCD_DEFAULT_MAX_RESPONSE;
    c->observe = opts->observe;
    c->observe_ud = opts->observe_userdata;
    if (dup_opt(opts->ca_file, &c->ca_file) < 0 || dup_opt(opts->cert_file, &c->cert_file) < 0 ||
        dup_opt(opts->key_file, &c->key_file) < 0 || dup_opt(opts->username, &c->username) < 0 ||
        dup_opt(opts->password, &c->password) < 0) {
        r = kf_error_set(err, -ENOMEM, 0, "out of memory");
        goto fail;
    }
    if (c->username && !c->password && !(c->password = strdup(""))) {
        r = kf_error_set(err, -ENOMEM, 0, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < KF_ETCD_HANDLES; i++)
        if (!(c->h[i] = curl_easy_init())) {
            r = kf_error_set(err, -ENOMEM, 0, "etcd: cannot create an HTTP handle");
            goto fail;
        }
    *out = c;
    return 0;
fail:
    kf_etcd_client_free(c);
    return r;
}

kf_etcd *kf_etcd_client_free(kf_etcd *c) {
    if (!c)
        return NULL;
    for (size_t i = 0; i < c->n_endpoints; i++)
        free(c->endpoints[i]);
    for (size_t i = 0; i < KF_ETCD_HANDLES; i++)
        if (c->h[i])
            curl_easy_cleanup(c->h[i]);
    free(c->ca_file);
    free(c->cert_file);
    free(c->key_file);
    free(c->username);
    if (c->password) {
        explicit_bzero(c->password, strlen(c->password));
        free(c->password);
    }
    free(c->token);
    for (size_t i = 0; i < KF_ETCD_HANDLES; i++)
        pthread_mutex_destroy(&c->lock[i]);
    pthread_mutex_destroy(&c->auth_lock);
    free(c);
    return NULL;
}

/* ---- transport --------------------------------------------------------- */

typedef struct body_buf {
    char *data;
    size_t len, cap, max;
    bool overflow;
} body_buf;

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    body_buf *b = userdata;
    size_t n = size * nmemb;
    if (n > b->max - b->len) {
        b->overflow = true;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static int abort_check(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    const atomic_bool *flag = clientp;
    return flag && atomic_load(flag) ? 1 : 0;
}

void kf_etcd_handle_setup(const kf_etcd *c, CURL *h) {
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 10L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 5L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->cert_file)
        curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
    if (c->key_file)
        curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
}

int kf_etcd_curl_error(CURLcode rc, const char *endpoint, const char *detail, kf_error *err) {
    int code;
    kf_status st = KF_ST_UNAVAILABLE;
    switch (rc) {
    case CURLE_COULDNT_CONNECT: code = -ECONNREFUSED; break;
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY: code = -EHOSTUNREACH; break;
    case CURLE_OPERATION_TIMEDOUT: code = -ETIMEDOUT; st = KF_ST_DEADLINE_EXCEEDED; break;
    case CURLE_OUT_OF_MEMORY: code = -ENOMEM; st = KF_ST_RESOURCE_EXHAUSTED; break;
    default: code = -ECONNRESET; break;
    }
    return kf_error_set(err, code, st, "etcd at %s unreachable: %s%s%s", endpoint, curl_easy_strerror(rc),
                        detail && *detail ? ": " : "", detail ? detail : "");
}

bool kf_etcd_is_auth_failure(int grpc_code, const char *message) {
    if (grpc_code == 16)
        return true;
    /* Auth was enabled after we started without a token. */
    return message && strstr(message, "user name is empty") != NULL;
}

/* One POST; no failover, no auth logic. *http receives the status (0 if the
 * transfer failed), *sent whether any request bytes may have left. */
static CURLcode http_once(kf_etcd *c, CURL *h, const char *url, const char *body, size_t body_len,
                          struct curl_slist *hdrs, const atomic_bool *abort_flag, body_buf *buf, long *http,
                          bool *sent, char *errbuf) {
    *http = 0;
    *sent = false;
    buf->len = 0;
    buf->overflow = false;
    errbuf[0] = '\0';
    kf_etcd_handle_setup(c, h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, buf);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->request_timeout_ms);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, abort_flag ? 0L : 1L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, abort_check);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)abort_flag);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    long req_size = 0;
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &req_size);
    *sent = req_size > 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, http);
    return rc;
}

static int authenticate_locked(kf_etcd *c, CURL *h, kf_error *err) {
    _cleanup_json_ cJSON *req = cJSON_CreateObject();
    if (!req || !cJSON_AddStringToObject(req, "name", c->username) ||
        !cJSON_AddStringToObject(req, "password", c->password))
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    _cleanup_free_ char *body = cJSON_PrintUnformatted(req);
    _cleanup_slist_ struct curl_slist *hdrs = NULL;
    struct curl_slist *t = curl_slist_append(NULL, "Content-Type: application/json");
    if (t && (hdrs = t) && (t = curl_slist_append(hdrs, "Expect:")))
        hdrs = t;
    if (!body || !t) {
        if (body)
            explicit_bzero(body, strlen(body));
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    }
    body_buf buf = {.max = 1 << 20};
    char errbuf[CURL_ERROR_SIZE];
    int r = 0;
    size_t n = c->n_endpoints;
    for (size_t i = 0; i < n; i++) {
        unsigned idx = atomic_load(&c->endpoint) % n;
        char url[1024];
        snprintf(url, sizeof(url), "%s/v3/auth/authenticate", c->endpoints[idx]);
        long http;
        bool sent;
        CURLcode rc = http_once(c, h, url, body, strlen(body), hdrs, NULL, &buf, &http, &sent, errbuf);
        if (rc != CURLE_OK) {
            r = kf_etcd_curl_error(rc, c->endpoints[idx], errbuf, err);
            unsigned expect = idx;
            atomic_compare_exchange_strong(&c->endpoint, &expect, (idx + 1) % n);
            continue;
        }
        _cleanup_json_ cJSON *resp = NULL;
        kf_error le = {0};
        r = kf_etcd_json_parse(buf.data, buf.len, &resp, err);
        if (r == 0 && (r = kf_etcd_json_error(resp, NULL, &le)) < 0) {
            r = kf_error_set(err, -EACCES, KF_ST_UNAUTHENTICATED, "etcd authentication as \"%s\" failed: %s",
                             c->username, le.msg);
        } else if (r == 0) {
            const cJSON *tok = cJSON_GetObjectItemCaseSensitive(resp, "token");
            if (!cJSON_IsString(tok) || !tok->valuestring || !*tok->valuestring ||
                strpbrk(tok->valuestring, "\r\n")) {
                r = kf_error_set(err, -EBADMSG, KF_ST_INTERNAL,
                                 "etcd authentication returned no token (is auth enabled on the server?)");
            } else {
                free(c->token);
                c->token = strdup(tok->valuestring);
                r = c->token ? 0 : kf_error_set(err, -ENOMEM, 0, "out of memory");
            }
        }
        break;
    }
    explicit_bzero(body, strlen(body));
    free(buf.data);
    return r;
}

int kf_etcd_auth_headers(kf_etcd *c, CURL *h, struct curl_slist **out, char **token_out, kf_error *err) {
    *out = NULL;
    if (token_out)
        *token_out = NULL;
    _cleanup_slist_ struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *t = hdrs ? curl_slist_append(hdrs, "Expect:") : NULL;
    if (!t)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    if (c->username) {
        pthread_mutex_lock(&c->auth_lock);
        int r = c->token ? 0 : authenticate_locked(c, h, err);
        _cleanup_free_ char *line = NULL;
        if (r == 0 && asprintf(&line, "Authorization: %s", c->token) < 0)
            r = kf_error_set(err, -ENOMEM, 0, "out of memory");
        if (r == 0 && token_out && !(*token_out = strdup(c->token)))
            r = kf_error_set(err, -ENOMEM, 0, "out of memory");
        pthread_mutex_unlock(&c->auth_lock);
        if (r < 0)
            return r;
        if (!curl_slist_append(hdrs, line))
            return kf_error_set(err, -ENOMEM, 0, "out of memory");
    }
    *out = TAKE_PTR(hdrs);
    return 0;
}

void kf_etcd_token_invalidate(kf_etcd *c, const char *token) {
    if (!token)
        return;
    pthread_mutex_lock(&c->auth_lock);
    if (c->token && strcmp(c->token, token) == 0) {
        free(c->token);
        c->token = NULL;
    }
    pthread_mutex_unlock(&c->auth_lock);
}

static int http_call(kf_etcd *c, CURL *h, const char *path, const cJSON *req, unsigned flags,
                     const atomic_bool *abort_flag, cJSON **resp, kf_error *err) {
    *resp = NULL;
    _cleanup_free_ char *body = cJSON_PrintUnformatted(req);
    if (!body)
        return kf_error_set(err, -ENOMEM, 0, "out of memory encoding an etcd request");
    size_t body_len = strlen(body);
    body_buf buf = {.max = c->max_response};
    char errbuf[CURL_ERROR_SIZE];
    size_t n = c->n_endpoints;
    size_t tries = 0;
    bool reauthed = false;
    int r = -EIO;
    while (tries < n) {
        _cleanup_slist_ struct curl_slist *hdrs = NULL;
        _cleanup_free_ char *token = NULL;
        r = kf_etcd_auth_headers(c, h, &hdrs, &token, err);
        if (r < 0)
            break;
        unsigned idx = atomic_load(&c->endpoint) % n;
        char url[1024];
        snprintf(url, sizeof(url), "%s%s", c->endpoints[idx], path);
        long http;
        bool sent;
        CURLcode rc = http_once(c, h, url, body, body_len, hdrs, abort_flag, &buf, &http, &sent, errbuf);
        if (rc != CURLE_OK) {
            if (abort_flag && atomic_load(abort_flag)) {
                r = kf_error_set(err, -ECANCELED, 0, "etcd request cancelled");
                break;
            }
            if (buf.overflow) {
                r = kf_error_set(err, -EFBIG, KF_ST_RESOURCE_EXHAUSTED,
                                 "etcd response to %s exceeds %zu bytes", path, c->max_response);
                break;
            }
            r = kf_etcd_curl_error(rc, c->endpoints[idx], errbuf, err);
            if (sent && !(flags & KF_ETCD_IDEMPOTENT)) {
                /* It may have been applied: resending could apply it twice. */
                kf_error_wrap(err, "%s: outcome unknown", path);
                break;
            }
            unsigned expect = idx;
            atomic_compare_exchange_strong(&c->endpoint, &expect, (idx + 1) % n);
            tries++;
            continue;
        }
        cJSON *root = NULL;
        r = buf.len ? kf_etcd_json_parse(buf.data, buf.len, &root, err) : -EBADMSG;
        int grpc = 0;
        if (r == 0 && (r = kf_etcd_json_error(root, &grpc, err)) == 0 && http != 200)
            r = kf_error_set(err, -EIO, KF_ST_INTERNAL, "etcd at %s answered HTTP %ld to %s", c->endpoints[idx],
                             http, path);
        if (r < 0 && !root)
            r = kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd at %s answered HTTP %ld to %s with a body that is not JSON",
                             c->endpoints[idx], http, path);
        if (r < 0 && c->username && !reauthed && (http == 401 || kf_etcd_is_auth_failure(grpc, err->msg))) {
            /* Expired token, or the server restarted and forgot it. */
            cJSON_Delete(root);
            kf_etcd_token_invalidate(c, token);
            reauthed = true;
            continue;
        }
        if (r < 0) {
            cJSON_Delete(root);
            if (!c->username && grpc && kf_etcd_is_auth_failure(grpc, err->msg))
                kf_error_wrap(err, "etcd requires authentication (no username configured)");
            break;
        }
        *resp = root;
        break;
    }
    free(buf.data);
    if (r < 0 && tries == n && n > 1)
        kf_error_wrap(err, "all %zu etcd endpoints failed; last", n);
    return r;
}

int kf_etcd_http(kf_etcd *c, CURL *h, const char *path, const cJSON *req, unsigned flags,
                 const atomic_bool *abort_flag, cJSON **resp, kf_error *err) {
    /* http_call reads its own error messages back (auth failures), so it
     * always gets an error object. */
    kf_error le = {0};
    int64_t t0 = c->observe ? kf_mono_us() : 0;
    int r = http_call(c, h, path, req, flags, abort_flag, resp, &le);
    if (c->observe)
        c->observe(c->observe_ud, path, kf_mono_us() - t0, r);
    if (r < 0 && err)
        *err = le;
    return r;
}

/* Takes one of the client's unary handles: the first free one from a
 * rotating start, else waits for the one at the start. Returns its index
 * (locked; release with pthread_mutex_unlock(&c->lock[i])). */
static unsigned take_handle(kf_etcd *c) {
    unsigned start = atomic_fetch_add(&c->next_handle, 1u) % KF_ETCD_HANDLES;
    for (unsigned k = 0; k < KF_ETCD_HANDLES; k++) {
        unsigned i = (start + k) % KF_ETCD_HANDLES;
        if (pthread_mutex_trylock(&c->lock[i]) == 0)
            return i;
    }
    pthread_mutex_lock(&c->lock[start]);
    return start;
}

/* A unary call on one of the client's own handles. */
static int unary(kf_etcd *c, const char *path, const cJSON *req, unsigned flags, cJSON **resp,
                 kf_error *err) {
    unsigned i = take_handle(c);
    int r = kf_etcd_http(c, c->h[i], path, req, flags, NULL, resp, err);
    pthread_mutex_unlock(&c->lock[i]);
    return r;
}

/* ---- key-value --------------------------------------------------------- */

static int check_key(const void *key, size_t len, const void *end, size_t end_len, kf_error *err) {
    if (!key || len == 0 || len > KF_ETCD_MAX_KEY)
        return kf_error_set(err, -EINVAL, 0, "etcd key must be 1..%u bytes (got %zu)", KF_ETCD_MAX_KEY, len);
    if (end_len > KF_ETCD_MAX_KEY || (end_len > 0 && !end))
        return kf_error_set(err, -EINVAL, 0, "etcd range end must be at most %u bytes", KF_ETCD_MAX_KEY);
    return 0;
}

int kf_etcd_put(kf_etcd *c, const void *key, size_t key_len, const void *value, size_t value_len,
                int64_t lease, int64_t *rev, kf_error *err) {
    if (rev)
        *rev = 0;
    int r = check_key(key, key_len, NULL, 0, err);
    if (r < 0)
        return r;
    if (value_len > KF_ETCD_MAX_VALUE || (value_len > 0 && !value))
        return kf_error_set(err, -EFBIG, KF_ST_INVALID_ARGUMENT, "etcd value of %zu bytes exceeds %u", value_len,
                            KF_ETCD_MAX_VALUE);
    _cleanup_json_ cJSON *req = kf_etcd_json_put_req(key, key_len, value ? value : "", value_len, lease);
    _cleanup_json_ cJSON *resp = NULL;
    if (!req)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    r = unary(c, "/v3/kv/put", req, 0, &resp, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd put");
    int64_t h = 0;
    if (kf_etcd_json_header_rev(resp, &h) < 0)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd put: malformed response header");
    if (rev)
        *rev = h;
    return 0;
}

int kf_etcd_range(kf_etcd *c, const void *key, size_t key_len, const void *range_end,
                  size_t range_end_len, int64_t limit, int64_t revision, kf_etcd_kvs *out,
                  kf_error *err) {
    memset(out, 0, sizeof(*out));
    int r = check_key(key, key_len, range_end, range_end_len, err);
    if (r < 0)
        return r;
    _cleanup_json_ cJSON *req = kf_etcd_json_range_req(key, key_len, range_end, range_end_len, limit, revision);
    _cleanup_json_ cJSON *resp = NULL;
    if (!req)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    r = unary(c, "/v3/kv/range", req, KF_ETCD_IDEMPOTENT, &resp, err);
    if (r == 0)
        r = kf_etcd_json_range_resp(resp, out, err);
    return r < 0 ? kf_error_wrap(err, "etcd range") : 0;
}

int kf_etcd_get(kf_etcd *c, const void *key, size_t key_len, kf_etcd_kv *kv, kf_error *err) {
    memset(kv, 0, sizeof(*kv));
    kf_etcd_kvs res;
    int r = kf_etcd_range(c, key, key_len, NULL, 0, 1, 0, &res, err);
    if (r < 0)
        return r;
    if (res.n == 0) {
        kf_etcd_kvs_done(&res);
        return kf_error_set(err, -ENOENT, KF_ST_NOT_FOUND, "etcd key \"%.*s\" does not exist",
                            (int)(key_len > 200 ? 200 : key_len), (const char *)key);
    }
    *kv = res.kvs[0];
    memset(&res.kvs[0], 0, sizeof(res.kvs[0]));
    kf_etcd_kvs_done(&res);
    return 0;
}

/* The [key, end) pair for a prefix; "" means the whole keyspace ("\0".."\0"). */
static int prefix_range(const char *prefix, const char **key, size_t *key_len, unsigned char **end,
                        size_t *end_len, kf_error *err) {
    size_t len = prefix ? strlen(prefix) : 0;
    if (len > KF_ETCD_MAX_KEY)
        return kf_error_set(err, -EINVAL, 0, "etcd prefix longer than %u bytes", KF_ETCD_MAX_KEY);
    *end = malloc(len ? len : 1);
    if (!*end)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    *end_len = kf_etcd_prefix_end(prefix, len, *end);
    *key = len ? prefix : "";
    *key_len = len ? len : 1; /* "" -> the key "\0", the smallest there is */
    return 0;
}

int kf_etcd_range_prefix(kf_etcd *c, const char *prefix, int64_t limit, kf_etcd_kvs *out,
                         kf_error *err) {
    memset(out, 0, sizeof(*out));
    const char *key;
    size_t key_len, end_len;
    _cleanup_free_ unsigned char *end = NULL;
    int r = prefix_range(prefix, &key, &key_len, &end, &end_len, err);
    if (r < 0)
        return r;
    return kf_etcd_range(c, key, key_len, end, end_len, limit, 0, out, err);
}

int kf_etcd_delete(kf_etcd *c, const void *key, size_t key_len, const void *range_end,
                   size_t range_end_len, int64_t *deleted, int64_t *rev, kf_error *err) {
    if (deleted)
        *deleted = 0;
    if (rev)
        *rev = 0;
    int r = check_key(key, key_len, range_end, range_end_len, err);
    if (r < 0)
        return r;
    _cleanup_json_ cJSON *req = kf_etcd_json_delete_req(key, key_len, range_end, range_end_len);
    _cleanup_json_ cJSON *resp = NULL;
    if (!req)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    r = unary(c, "/v3/kv/deleterange", req, 0, &resp, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd delete");
    int64_t d = 0, h = 0;
    if (kf_etcd_json_int64(resp, "deleted", &d) < 0 || kf_etcd_json_header_rev(resp, &h) < 0)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd delete: malformed response");
    if (deleted)
        *deleted = d;
    if (rev)
        *rev = h;
    return 0;
}

int kf_etcd_delete_prefix(kf_etcd *c, const char *prefix, int64_t *deleted, kf_error *err) {
    const char *key;
    size_t key_len, end_len;
    _cleanup_free_ unsigned char *end = NULL;
    int r = prefix_range(prefix, &key, &key_len, &end, &end_len, err);
    if (r < 0)
        return r;
    return kf_etcd_delete(c, key, key_len, end, end_len, deleted, NULL, err);
}

int kf_etcd_txn(kf_etcd *c, const kf_etcd_cmp *cmps, size_t n_cmps, const kf_etcd_op *success,
                size_t n_success, const kf_etcd_op *failure, size_t n_failure, bool *succeeded,
                kf_etcd_txn_result *out, kf_error *err) {
    if (succeeded)
        *succeeded = false;
    if (out)
        memset(out, 0, sizeof(*out));
    _cleanup_json_ cJSON *req = NULL;
    _cleanup_json_ cJSON *resp = NULL;
    int r = kf_etcd_json_txn_req(cmps, n_cmps, success, n_success, failure, n_failure, &req, err);
    if (r < 0)
        return r;
    r = unary(c, "/v3/kv/txn", req, 0, &resp, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd txn");
    kf_etcd_txn_result res;
    r = kf_etcd_json_txn_resp(resp, &res, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd txn");
    if (succeeded)
        *succeeded = res.succeeded;
    if (out)
        *out = res;
    else
        kf_etcd_txn_result_done(&res);
    return 0;
}

/* ---- leases ------------------------------------------------------------ */

int kf_etcd_lease_grant(kf_etcd *c, int64_t ttl_s, int64_t *id, int64_t *granted_ttl,
                        kf_error *err) {
    *id = 0;
    if (granted_ttl)
        *granted_ttl = 0;
    if (ttl_s <= 0)
        return kf_error_set(err, -EINVAL, 0, "etcd lease TTL must be positive (got %" PRId64 ")", ttl_s);
    _cleanup_json_ cJSON *req = cJSON_CreateObject();
    _cleanup_json_ cJSON *resp = NULL;
    if (!req || kf_etcd_json_add_int64(req, "TTL", ttl_s) < 0)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    int r = unary(c, "/v3/lease/grant", req, 0, &resp, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd lease grant");
    int64_t lid = 0, ttl = 0;
    if (kf_etcd_json_int64(resp, "ID", &lid) < 0 || kf_etcd_json_int64(resp, "TTL", &ttl) < 0 || lid == 0)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd lease grant: malformed response");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(resp, "error");
    if (cJSON_IsString(e) && *e->valuestring)
        return kf_error_set(err, -EIO, KF_ST_INTERNAL, "etcd lease grant: %s", e->valuestring);
    *id = lid;
    if (granted_ttl)
        *granted_ttl = ttl;
    return 0;
}

int kf_etcd_keepalive_on(kf_etcd *c, CURL *h, const atomic_bool *abort_flag, int64_t id, int64_t *ttl,
                         kf_error *err) {
    if (ttl)
        *ttl = 0;
    _cleanup_json_ cJSON *req = cJSON_CreateObject();
    _cleanup_json_ cJSON *resp = NULL;
    if (!req || kf_etcd_json_add_int64(req, "ID", id) < 0)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    int r = kf_etcd_http(c, h, "/v3/lease/keepalive", req, KF_ETCD_IDEMPOTENT, abort_flag, &resp, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd lease keepalive");
    /* A stream endpoint: the answer is {"result":{...}}; errors come inside. */
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(resp, "result");
    if (!cJSON_IsObject(res))
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd lease keepalive: malformed response");
    int64_t t = 0;
    if (kf_etcd_json_int64(res, "TTL", &t) < 0)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd lease keepalive: malformed TTL");
    if (t <= 0) /* TTL omitted (0): the server no longer has the lease */
        return kf_error_set(err, -ENOENT, KF_ST_NOT_FOUND, "etcd lease %" PRId64 " is gone (expired or revoked)",
                            id);
    if (ttl)
        *ttl = t;
    return 0;
}

int kf_etcd_lease_keepalive(kf_etcd *c, int64_t id, int64_t *ttl, kf_error *err) {
    unsigned i = take_handle(c);
    int r = kf_etcd_keepalive_on(c, c->h[i], NULL, id, ttl, err);
    pthread_mutex_unlock(&c->lock[i]);
    return r;
}

int kf_etcd_lease_revoke(kf_etcd *c, int64_t id, kf_error *err) {
    _cleanup_json_ cJSON *req = cJSON_CreateObject();
    _cleanup_json_ cJSON *resp = NULL;
    if (!req || kf_etcd_json_add_int64(req, "ID", id) < 0)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    /* 3.4 serves both /v3/lease/revoke and the older /v3/kv/lease/revoke. */
    int r = unary(c, "/v3/lease/revoke", req, 0, &resp, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd lease %" PRId64 " revoke", id);
    return 0;
}

int kf_etcd_lease_ttl(kf_etcd *c, int64_t id, int64_t *ttl, kf_error *err) {
    *ttl = 0;
    _cleanup_json_ cJSON *req = cJSON_CreateObject();
    _cleanup_json_ cJSON *resp = NULL;
    if (!req || kf_etcd_json_add_int64(req, "ID", id) < 0)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    int r = unary(c, "/v3/lease/timetolive", req, KF_ETCD_IDEMPOTENT, &resp, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd lease %" PRId64 " time-to-live", id);
    int64_t t = 0;
    if (kf_etcd_json_int64(resp, "TTL", &t) < 0)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd lease time-to-live: malformed TTL");
    /* A missing lease answers TTL -1. (0 is a lease about to expire.) */
    if (t < 0)
        return kf_error_set(err, -ENOENT, KF_ST_NOT_FOUND, "etcd lease %" PRId64 " is gone (expired or revoked)",
                            id);
    *ttl = t;
    return 0;
}

/* ---- leader key -------------------------------------------------------- */

int kf_etcd_campaign(kf_etcd *c, const char *key, const char *my_id, int64_t lease, bool *won,
                     char **leader, int64_t *leader_rev, kf_error *err) {
    *won = false;
    if (leader)
        *leader = NULL;
    if (leader_rev)
        *leader_rev = 0;
    if (!key || !my_id || !*my_id || lease == 0)
        return kf_error_set(err, -EINVAL, 0, "etcd campaign needs a key, a non-empty id and a lease");
    size_t klen = strlen(key), idlen = strlen(my_id);
    kf_etcd_cmp cmp = {.key = key, .key_len = klen, .target = KF_ETCD_CMP_CREATE, .result = KF_ETCD_CMP_EQUAL,
                       .number = 0};
    kf_etcd_op put = {.type = KF_ETCD_OP_PUT, .key = key, .key_len = klen, .value = my_id, .value_len = idlen,
                      .lease = lease};
    kf_etcd_op get = {.type = KF_ETCD_OP_RANGE, .key = key, .key_len = klen};
    kf_etcd_txn_result res;
    /* Both branches read the key back, so one round trip tells who won and
     * with which create_revision. */
    kf_etcd_op ops[2] = {put, get};
    int r = kf_etcd_txn(c, &cmp, 1, ops, 2, &get, 1, NULL, &res, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd campaign for %s", key);
    const kf_etcd_kvs *kvs = NULL;
    for (size_t i = 0; i < res.n; i++)
        if (res.results[i].type == KF_ETCD_OP_RANGE)
            kvs = &res.results[i].kvs;
    if (!kvs || kvs->n == 0) {
        /* Lost, and the winner's lease expired in between: try again. */
        kf_etcd_txn_result_done(&res);
        return kf_error_set(err, -EAGAIN, KF_ST_UNAVAILABLE, "etcd campaign for %s: leader vanished, retry", key);
    }
    const kf_etcd_kv *kv = &kvs->kvs[0];
    /* Winning again (our earlier put went through but its answer was lost)
     * counts as winning. */
    *won = kv->lease == lease && kv->value_len == idlen && memcmp(kv->value, my_id, idlen) == 0;
    if (leader_rev)
        *leader_rev = kv->create_revision;
    if (leader && !(*leader = strdup(kv->value)))
        r = kf_error_set(err, -ENOMEM, 0, "out of memory");
    kf_etcd_txn_result_done(&res);
    return r;
}

int kf_etcd_leader(kf_etcd *c, const char *key, char **value, int64_t *lease, kf_error *err) {
    *value = NULL;
    if (lease)
        *lease = 0;
    if (!key)
        return kf_error_set(err, -EINVAL, 0, "etcd leader: no key");
    kf_etcd_kv kv;
    int r = kf_etcd_get(c, key, strlen(key), &kv, err);
    if (r == -ENOENT)
        return kf_error_set(err, -ENOENT, KF_ST_NOT_FOUND, "no leader holds %s", key);
    if (r < 0)
        return r;
    *value = TAKE_PTR(kv.value);
    if (lease)
        *lease = kv.lease;
    kf_etcd_kv_done(&kv);
    return 0;
}

int kf_etcd_resign(kf_etcd *c, const char *key, const char *my_id, bool *was_leader, kf_error *err) {
    if (was_leader)
        *was_leader = false;
    if (!key || !my_id)
        return kf_error_set(err, -EINVAL, 0, "etcd resign needs a key and an id");
    size_t klen = strlen(key);
    kf_etcd_cmp cmp = {.key = key, .key_len = klen, .target = KF_ETCD_CMP_VALUE, .result = KF_ETCD_CMP_EQUAL,
                       .value = my_id, .value_len = strlen(my_id)};
    kf_etcd_op del = {.type = KF_ETCD_OP_DELETE, .key = key, .key_len = klen};
    bool ok = false;
    int r = kf_etcd_txn(c, &cmp, 1, &del, 1, NULL, 0, &ok, NULL, err);
    if (r < 0)
        return kf_error_wrap(err, "etcd resign from %s", key);
    if (was_leader)
        *was_leader = ok;
    return 0;
}

/* ---- maintenance ------------------------------------------------------- */

int kf_etcd_compact(kf_etcd *c, int64_t revision, kf_error *err) {
    _cleanup_json_ cJSON *req = cJSON_CreateObject();
    _cleanup_json_ cJSON *resp = NULL;
    if (!req || kf_etcd_json_add_int64(req, "revision", revision) < 0 || !cJSON_AddTrueToObject(req, "physical"))
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    int r = unary(c, "/v3/kv/compaction", req, 0, &resp, err);
    return r < 0 ? kf_error_wrap(err, "etcd compact to %" PRId64, revision) : 0;
}
