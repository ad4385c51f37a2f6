/* etcd_watch.c - a watch on a key range, kept alive across connection loss.
 *
 * Each watch owns one thread, one curl easy handle and one curl multi handle
 * (the multi is only there so kf_etcd_watch_stop can wake the poll at once
 * with curl_multi_wakeup). The thread POSTs a create_request to /v3/watch
 * and reads the endless response body: newline-separated JSON messages that
 * arrive in arbitrary chunks, so the bytes are buffered and split on '\n'.
 *
 * Resume point: `next_rev` is the first revision not yet delivered. It moves
 * past each batch of events, and with progress notifications (which etcd
 * only sends to a watcher that has caught up) to header.revision + 1, so a
 * reconnect (next endpoint, backoff 100 ms doubling to 3 s) asks for exactly
 * what is missing. If the server compacted that history away it cancels the
 * watch with compact_revision: the thread then lists the range (RESYNC) and
 * watches from the listing's revision + 1.
 *
 * Fields below the "thread only" line are touched by the watch thread alone;
 * the owner shares only `stop`, `last_rev`, `connected`, the wake-up condvar and `multi`. */
#include "etcd_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kf/cleanup.h"
#include "kf/util.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 3000

struct kf_etcd_watch {
    kf_etcd *c;
    char *key;
    size_t key_len;
    char *end;
    size_t end_len;
    bool prev_kv;
    kf_etcd_watch_fn cb;
    void *userdata;
    pthread_t thread;
    CURLM *multi;
    atomic_bool stop;
    _Atomic int64_t last_rev;
    atomic_bool connected; /* a stream is established (created), until it breaks */
    pthread_mutex_t mu;
    pthread_cond_t cv;

    /* ---- thread only ---- */
    CURL *h;
    int64_t next_rev;    /* 0 = "from now" (until the server says where now is) */
    bool need_snapshot;
    bool ended;          /* the callback asked to end the watch */
    /* Per connection. */
    char *buf;
    size_t buf_len, buf_cap;
    bool created;
    bool resync;
    int64_t compact_rev;
    bool auth_failed;
    int stream_code;     /* error seen in the stream (0 = none) */
    char stream_msg[KF_ERROR_MSG_MAX];
};

static void set_next(kf_etcd_watch *w, int64_t next) {
    if (next <= w->next_rev)
        return;
    w->next_rev = next;
    atomic_store(&w->last_rev, next - 1);
}

static bool watch_sleep(kf_etcd_watch *w, int64_t ms) {
    int64_t until = kf_mono_ms() + ms;
    struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000};
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop) && kf_mono_ms() < until)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&w->mu);
    return atomic_load(&w->stop);
}

static void notify_disconnected(kf_etcd_watch *w, int code, const char *msg) {
    atomic_store(&w->connected, false);
    kf_etcd_watch_notify n = {.kind = KF_ETCD_WATCH_DISCONNECTED,
                              .revision = w->next_rev - 1,
                              .code = code,
                              .message = msg};
    if (w->cb(&n, w->userdata) != 0)
        w->ended = true;
}

/* List the range through the stream handle (idle between connections) and
 * hand it over as a RESYNC. */
static int snapshot(kf_etcd_watch *w, kf_error *err) {
    cJSON *req = kf_etcd_json_range_req(w->key, w->key_len, w->end, w->end_len, 0, 0);
    if (!req)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    cJSON *resp = NULL;
    int r = kf_etcd_http(w->c, w->h, "/v3/kv/range", req, KF_ETCD_IDEMPOTENT, &w->stop, &resp, err);
    cJSON_Delete(req);
    if (r < 0)
        return kf_error_wrap(err, "watch re-list");
    kf_etcd_kvs kvs;
    r = kf_etcd_json_range_resp(resp, &kvs, err);
    cJSON_Delete(resp);
    if (r < 0)
        return r;
    if (kvs.revision <= 0) {
        kf_etcd_kvs_done(&kvs);
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "watch re-list: response without a revision");
    }
    /* Jump to the listing: it already holds everything up to its revision. */
    w->next_rev = kvs.revision + 1;
    atomic_store(&w->last_rev, kvs.revision);
    kf_etcd_watch_notify n = {.kind = KF_ETCD_WATCH_RESYNC,
                              .kvs = &kvs,
                              .revision = kvs.revision,
                              .compact_revision = w->compact_rev};
    if (w->cb(&n, w->userdata) != 0)
        w->ended = true;
    kf_etcd_kvs_done(&kvs);
    return 0;
}

static void stream_error(kf_etcd_watch *w, int code, const char *msg) {
    if (w->stream_code)
        return;
    w->stream_code = code ? code : -EIO;
    snprintf(w->stream_msg, sizeof(w->stream_msg), "%s", msg);
}

/* One message. Returns false to abort the transfer. */
static bool handle_line(kf_etcd_watch *w, const char *line, size_t len) {
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (len == 0)
        return true;
    kf_error e = {0};
    kf_etcd_watch_msg m;
    int r = kf_etcd_json_watch_msg(line, len, &m, &e);
    if (r < 0) {
        stream_error(w, r, e.msg);
        return false;
    }
    bool go_on = true;
    if (m.compact_revision > 0) {
        /* History we need is gone: re-list, then watch from there. */
        w->resync = true;
        w->compact_rev = m.compact_revision;
        go_on = false;
    } else if (m.canceled) {
        const char *reason = m.cancel_reason ? m.cancel_reason : "watch canceled by the server";
        if (kf_etcd_is_auth_failure(0, reason) || strstr(reason, "Unauthenticated") ||
            strstr(reason, "invalid auth token"))
            w->auth_failed = true;
        stream_error(w, -ECONNABORTED, reason);
        go_on = false;
    } else if (m.n_events > 0) {
        kf_etcd_watch_notify n = {.kind = KF_ETCD_WATCH_EVENTS,
                                  .events = m.events,
                                  .n_events = m.n_events,
                                  .revision = m.events[m.n_events - 1].kv.mod_revision};
        set_next(w, n.revision + 1);
        if (w->cb(&n, w->userdata) != 0) {
            w->ended = true;
            go_on = false;
        }
    } else if (m.created) {
        w->created = true;
        atomic_store(&w->connected, true);
        /* "From now": now is the creation header's revision. */
        if (w->next_rev == 0 && m.header_revision > 0)
            set_next(w, m.header_revision + 1);
    } else if (m.header_revision > 0) {
        /* Progress notification: everything up to it has been sent. */
        set_next(w, m.header_revision + 1);
    }
    kf_etcd_watch_msg_done(&m);
    return go_on;
}

static size_t stream_write(char *ptr, size_t size, size_t nmemb, void *userdata) {
    kf_etcd_watch *w = userdata;
    size_t n = size * nmemb;
    if (atomic_load(&w->stop))
        return 0;
    if (n > w->c->max_response - w->buf_len) {
        stream_error(w, -EFBIG, "watch message exceeds the response size limit");
        return 0;
    }
    if (w->buf_len + n > w->buf_cap) {
        size_t cap = w->buf_cap ? w->buf_cap : 8192;
        while (cap < w->buf_len + n)
            cap *= 2;
        char *b = realloc(w->buf, cap);
        if (!b) {
            stream_error(w, -ENOMEM, "out of memory buffering a watch message");
            return 0;
        }
        w->buf = b;
        w->buf_cap = cap;
    }
    /* Only the new bytes can hold a newline. */
    size_t scan_from = w->buf_len;
    memcpy(w->buf + w->buf_len, ptr, n);
    w->buf_len += n;
    size_t start = 0;
    for (;;) {
        char *nl = memchr(w->buf + scan_from, '\n', w->buf_len - scan_from);
        if (!nl)
            break;
        size_t end = (size_t)(nl - w->buf);
        if (!handle_line(w, w->buf + start, end - start))
            return 0;
        start = scan_from = end + 1;
    }
    memmove(w->buf, w->buf + start, w->buf_len - start);
    w->buf_len -= start;
    return n;
}

/* One connection: create the watch and stream until it breaks, is
 * cancelled, or we are stopped. Outcome in the per-connection fields. */
static void stream_once(kf_etcd_watch *w) {
    kf_etcd *c = w->c;
    w->buf_len = 0;
    w->created = w->resync = w->auth_failed = false;
    w->stream_code = 0;
    w->stream_msg[0] = '\0';

    kf_error e = {0};
    struct curl_slist *hdrs = NULL;
    _cleanup_free_ char *token = NULL;
    int r = kf_etcd_auth_headers(c, w->h, &hdrs, &token, &e);
    if (r < 0) {
        stream_error(w, r, e.msg);
        return;
    }
    cJSON *req = kf_etcd_json_watch_req(w->key, w->key_len, w->end, w->end_len, w->next_rev, w->prev_kv);
    _cleanup_free_ char *body = req ? cJSON_PrintUnformatted(req) : NULL;
    cJSON_Delete(req);
    if (!body) {
        curl_slist_free_all(hdrs);
        stream_error(w, -ENOMEM, "out of memory");
        return;
    }
    unsigned idx = atomic_load(&c->endpoint) % c->n_endpoints;
    char url[1024];
    snprintf(url, sizeof(url), "%s/v3/watch", c->endpoints[idx]);
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *h = w->h;
    curl_easy_reset(h);
    kf_etcd_handle_setup(c, h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, stream_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    /* No CURLOPT_TIMEOUT: the body never ends. A dead peer is found by TCP
     * keepalive, a stuck server by the low-speed limit. */
    if (c->watch_idle_timeout_ms > 0) {
        long secs = (c->watch_idle_timeout_ms + 999) / 1000;
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, secs);
    }
    CURLcode rc = CURLE_OK;
    long http = 0;
    if (curl_multi_add_handle(w->multi, h) != CURLM_OK) {
        stream_error(w, -ENOMEM, "cannot add the watch transfer");
        goto out;
    }
    int running = 1;
    while (running && !atomic_load(&w->stop)) {
        if (curl_multi_perform(w->multi, &running) != CURLM_OK)
            break;
        if (!running)
            break;
        /* Returns on socket activity, curl's own timers, or a wakeup. */
        curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
    }
    int left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(w->multi, &left)))
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == h)
            rc = msg->data.result;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
    curl_multi_remove_handle(w->multi, h);
    if (atomic_load(&w->stop) || w->ended || w->resync)
        goto out;
    /* A last message without a newline (an error answer, a closed stream). */
    if (w->buf_len > 0 && !w->stream_code)
        handle_line(w, w->buf, w->buf_len);
    if (w->resync || w->ended)
        goto out;
    if (rc != CURLE_OK && !w->stream_code) {
        kf_error ce = {0};
        kf_etcd_curl_error(rc, c->endpoints[idx], errbuf, &ce);
        stream_error(w, ce.code, ce.msg);
    }
    if (http == 401)
        w->auth_failed = true;
    if (!w->stream_code) {
        char m[256];
        snprintf(m, sizeof(m), "watch stream from %s ended (HTTP %ld)", c->endpoints[idx], http);
        stream_error(w, -ECONNRESET, m);
    }
    if (w->auth_failed)
        kf_etcd_token_invalidate(c, token);
    /* Try the next endpoint next time (a single endpoint stays put). */
    unsigned expect = idx;
    atomic_compare_exchange_strong(&c->endpoint, &expect, (idx + 1) % c->n_endpoints);
out:
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
}

static void *watch_main(void *arg) {
    kf_etcd_watch *w = arg;
    int64_t backoff = 0;
    while (!atomic_load(&w->stop) && !w->ended) {
        if (w->need_snapshot) {
            kf_error e = {0};
            curl_easy_reset(w->h);
            int r = snapshot(w, &e);
            if (atomic_load(&w->stop) || w->ended)
                break;
            if (r < 0) {
                notify_disconnected(w, r, e.msg);
            } else {
                w->need_snapshot = false;
                w->compact_rev = 0;
                backoff = 0;
                continue;
            }
        } else {
            stream_once(w);
            if (atomic_load(&w->stop) || w->ended)
                break;
            if (w->resync) {
                w->need_snapshot = true;
                continue;
            }
            if (w->created)
                backoff = 0; /* it worked for a while: reconnect at once */
            notify_disconnected(w, w->stream_code, w->stream_msg);
            if (w->ended)
                break;
        }
        backoff = backoff ? backoff * 2 : BACKOFF_MIN_MS;
        if (backoff > BACKOFF_MAX_MS)
            backoff = BACKOFF_MAX_MS;
        if (watch_sleep(w, backoff))
            break;
    }
    return NULL;
}

static void watch_free(kf_etcd_watch *w) {
    if (w->h)
        curl_easy_cleanup(w->h);
    if (w->multi)
        curl_multi_cleanup(w->multi);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->key);
    free(w->end);
    free(w->buf);
    free(w);
}

int kf_etcd_watch_start(kf_etcd *c, const void *key, size_t key_len, const void *range_end,
                        size_t range_end_len, int64_t start_revision, bool prev_kv,
                        kf_etcd_watch_fn cb, void *userdata, kf_etcd_watch **out, kf_error *err) {
    *out = NULL;
    if (!c || !cb || !key || key_len == 0 || key_len > KF_ETCD_MAX_KEY || range_end_len > KF_ETCD_MAX_KEY ||
        (range_end_len > 0 && !range_end) || start_revision < KF_ETCD_WATCH_FROM_SNAPSHOT)
        return kf_error_set(err, -EINVAL, 0, "etcd watch: bad client, callback, key, range end or start revision");
    kf_etcd_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    w->c = c;
    w->cb = cb;
    w->userdata = userdata;
    w->prev_kv = prev_kv;
    atomic_init(&w->stop, false);
    w->key = malloc(key_len);
    w->key_len = key_len;
    if (w->key)
        memcpy(w->key, key, key_len);
    if (range_end_len > 0 && (w->end = malloc(range_end_len))) {
        memcpy(w->end, range_end, range_end_len);
        w->end_len = range_end_len;
    }
    w->h = curl_easy_init();
    w->multi = curl_multi_init();
    if (!w->key || (range_end_len > 0 && !w->end) || !w->h || !w->multi) {
        watch_free(w);
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    }
    if (start_revision == KF_ETCD_WATCH_FROM_SNAPSHOT) {
        w->need_snapshot = true;
    } else if (start_revision > 0) {
        w->next_rev = start_revision;
        atomic_init(&w->last_rev, start_revision - 1);
    }
    int r = pthread_create(&w->thread, NULL, watch_main, w);
    if (r != 0) {
        watch_free(w);
        return kf_error_set(err, -r, 0, "cannot start the watch thread: %s", strerror(r));
    }
    *out = w;
    return 0;
}

int kf_etcd_watch_prefix(kf_etcd *c, const char *prefix, int64_t start_revision, bool prev_kv,
                         kf_etcd_watch_fn cb, void *userdata, kf_etcd_watch **out, kf_error *err) {
    size_t len = prefix ? strlen(prefix) : 0;
    if (len > KF_ETCD_MAX_KEY)
        return kf_error_set(err, -EINVAL, 0, "etcd watch prefix longer than %u bytes", KF_ETCD_MAX_KEY);
    _cleanup_free_ unsigned char *end = malloc(len ? len : 1);
    if (!end)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    size_t end_len = kf_etcd_prefix_end(prefix ? prefix : "", len, end);
    /* "" watches the whole keyspace: from the key "\0". */
    return kf_etcd_watch_start(c, len ? prefix : "", len ? len : 1, end, end_len, start_revision, prev_kv, cb,
                               userdata, out, err);
}

int64_t kf_etcd_watch_revision(kf_etcd_watch *w) {
    return atomic_load(&w->last_rev);
}

bool kf_etcd_watch_connected(kf_etcd_watch *w) { return atomic_load(&w->connected); }

kf_etcd_watch *kf_etcd_watch_stop(kf_etcd_watch *w) {
    if (!w)
        return NULL;
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    curl_multi_wakeup(w->multi);
    pthread_join(w->thread, NULL);
    watch_free(w);
    return NULL;
}
