/* metrics_http.c - /metrics, /healthz and /readyz on nng's HTTP server
 * (kf/metrics_http.h). Owns the nng server hold and its three handlers; the
 * registry and the readiness callback belong to the daemon.
 */
#include "kf/metrics_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "kf/log.h"

struct kf_metrics_http {
    nng_http_server *srv;
    kf_metrics *m;
    kf_ready_fn ready;
    void *ready_ud;
    char addr[KF_METRICS_LISTEN_MAX];
};

int kf_metrics_listen_check(const char *addr, kf_error *err) {
    size_t len = addr ? strlen(addr) : 0;
    if (len == 0 || len >= KF_METRICS_LISTEN_MAX)
        return kf_error_set(err, -EINVAL, 0, "--metrics-listen: give HOST:PORT (at most %d bytes)",
                            KF_METRICS_LISTEN_MAX - 1);
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr)
        return kf_error_set(err, -EINVAL, 0, "--metrics-listen: '%s' is not HOST:PORT", addr);
    /* The host: a bracketed IPv6 address, or a name / IPv4 address. */
    size_t hlen = (size_t)(colon - addr);
    if (addr[0] == '[') {
        if (hlen < 3 || addr[hlen - 1] != ']')
            return kf_error_set(err, -EINVAL, 0, "--metrics-listen: '%s': bad IPv6 address", addr);
        for (size_t i = 1; i < hlen - 1; i++)
            if (!strchr("0123456789abcdefABCDEF:.", addr[i]))
                return kf_error_set(err, -EINVAL, 0, "--metrics-listen: '%s': bad IPv6 address", addr);
    } else {
        for (size_t i = 0; i < hlen; i++) {
            char ch = addr[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '.' || ch == '-'))
                return kf_error_set(err, -EINVAL, 0, "--metrics-listen: '%s': bad host", addr);
        }
    }
    const char *p = colon + 1;
    unsigned long port = 0;
    if (!*p || strlen(p) > 5)
        return kf_error_set(err, -EINVAL, 0, "--metrics-listen: '%s': port must be 1..65535", addr);
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return kf_error_set(err, -EINVAL, 0, "--metrics-listen: '%s': port must be 1..65535", addr);
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port < 1 || port > 65535)
        return kf_error_set(err, -EINVAL, 0, "--metrics-listen: '%s': port must be 1..65535", addr);
    return 0;
}

/* Ends the request with `status`, a content type and a body; on allocation
 * failure the connection is closed (nng may send a 500). Never blocks. */
static void reply(nng_aio *aio, uint16_t status, const char *ctype, const char *body, size_t len) {
    nng_http_res *res = NULL;
    int rv = nng_http_res_alloc(&res);
    if (rv == 0 && (rv = nng_http_res_set_status(res, status)) == 0 &&
        (rv = nng_http_res_set_header(res, "Content-Type", ctype)) == 0 &&
        (rv = nng_http_res_set_header(res, "Cache-Control", "no-store")) == 0 &&
        (rv = nng_http_res_copy_data(res, body, len)) == 0) {
        nng_aio_set_output(aio, 0, res);
        nng_aio_finish(aio, 0);
        return;
    }
    if (res)
        nng_http_res_free(res);
    nng_aio_finish(aio, rv);
}

static kf_metrics_http *self_of(nng_aio *aio) {
    nng_http_handler *h = nng_aio_get_input(aio, 1);
    return nng_http_handler_get_data(h);
}

static void on_metrics(nng_aio *aio) {
    kf_metrics_http *self = self_of(aio);
    char *text = NULL;
    size_t len = 0;
    if (kf_metrics_expose(self->m, &text, &len) < 0) {
        static const char oom[] = "out of memory\n";
        reply(aio, 500, "text/plain; charset=utf-8", oom, sizeof(oom) - 1);
        return;
    }
    reply(aio, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

static void on_healthz(nng_aio *aio) {
    static const char ok[] = "ok\n";
    reply(aio, 200, "text/plain; charset=utf-8", ok, sizeof(ok) - 1);
}

static void on_readyz(nng_aio *aio) {
    kf_metrics_http *self = self_of(aio);
    char reason[256] = "";
    if (!self->ready || self->ready(self->ready_ud, reason, sizeof(reason))) {
        static const char ok[] = "ready\n";
        reply(aio, 200, "text/plain; charset=utf-8", ok, sizeof(ok) - 1);
        return;
    }
    char body[300];
    int n = snprintf(body, sizeof(body), "not ready: %s\n", reason[0] ? reason : "starting");
    reply(aio, 503, "text/plain; charset=utf-8", body,
          n < 0 ? 0 : (size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1);
}

static int add_handler(kf_metrics_http *self, const char *path, void (*cb)(nng_aio *)) {
    nng_http_handler *h;
    int rv = nng_http_handler_alloc(&h, path, cb);
    if (rv != 0)
        return rv;
    /* GET (and HEAD) only, which is nng's default; no request body at all. */
    if ((rv = nng_http_handler_set_data(h, self, NULL)) != 0 ||
        (rv = nng_http_handler_collect_body(h, true, 0)) != 0 ||
        (rv = nng_http_server_add_handler(self->srv, h)) != 0) {
        nng_http_handler_free(h);
        return rv;
    }
    return 0;
}

int kf_metrics_http_start(const char *addr, kf_metrics *m, kf_ready_fn ready, void *ud,
                          kf_metrics_http **out, kf_error *err) {
    *out = NULL;
    int r = kf_metrics_listen_check(addr, err);
    if (r < 0)
        return r;
    kf_metrics_http *self = calloc(1, sizeof(*self));
    if (!self)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    self->m = m;
    self->ready = ready;
    self->ready_ud = ud;
    snprintf(self->addr, sizeof(self->addr), "%s", addr);
    char url[KF_METRICS_LISTEN_MAX + 16];
    snprintf(url, sizeof(url), "http://%s", addr);
    nng_url *u = NULL;
    int rv = nng_url_parse(&u, url);
    if (rv == 0) {
        rv = nng_http_server_hold(&self->srv, u);
        nng_url_free(u);
    }
    if (rv == 0 && (rv = add_handler(self, "/metrics", on_metrics)) == 0 &&
        (rv = add_handler(self, "/healthz", on_healthz)) == 0 &&
        (rv = add_handler(self, "/readyz", on_readyz)) == 0)
        rv = nng_http_server_start(self->srv);
    if (rv != 0) {
        r = kf_error_set(err, rv == NNG_EADDRINUSE ? -EADDRINUSE : rv == NNG_ENOMEM ? -ENOMEM : -EIO,
                         KF_ST_UNAVAILABLE, "metrics: cannot serve HTTP on %s: %s", addr, nng_strerror(rv));
        if (self->srv)
            nng_http_server_release(self->srv);
        free(self);
        return r;
    }
    kf_info("serving /metrics, /healthz and /readyz on http://%s", addr);
    *out = self;
    return 0;
}

kf_metrics_http *kf_metrics_http_stop(kf_metrics_http *h) {
    if (!h)
        return NULL;
    /* Stop waits for the handlers in flight; release frees the server and
     * its handlers (the last hold). */
    nng_http_server_stop(h->srv);
    nng_http_server_release(h->srv);
    free(h);
    return NULL;
}
