/* metrics_http.h - a daemon's HTTP side for monitoring, on nng's HTTP server:
 *
 *   GET /metrics  200, the registry in the Prometheus text format (0.0.4)
 *   GET /healthz  200 "ok" while the process serves
 *   GET /readyz   200 "ready", or 503 "not ready: <reason>" as the daemon's
 *                 readiness callback says
 *
 * Nothing else: another path is 404, another method 405 (nng answers both),
 * a request body is refused (the handlers accept 0 bytes of it), and nng
 * bounds the request line and headers. HEAD works on the three paths.
 *
 * Threads: the handlers run on nng's worker threads. They never block: the
 * metrics callback snapshots the registry (kf_metrics_expose, which runs the
 * daemon's collect callback), the readiness callback reads flags.
 */
#ifndef KF_METRICS_HTTP_H
#define KF_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "kf/error.h"
#include "kf/metrics.h"

#define KF_METRICS_LISTEN_MAX 128

/* Readiness: true when ready; otherwise write a short reason for an
 * operator into reason[0..size) and return false. Called from nng's
 * threads: thread-safe and non-blocking. */
typedef bool (*kf_ready_fn)(void *userdata, char *reason, size_t size);

typedef struct kf_metrics_http kf_metrics_http;

/* kf_metrics_listen_check - 0 if `addr` is HOST:PORT (HOST a name, an IPv4
 * address or a bracketed IPv6 address; PORT 1..65535), else -EINVAL with a
 * message naming the option. For option parsing. */
int kf_metrics_listen_check(const char *addr, kf_error *err);

/* kf_metrics_http_start - serve the three paths on `addr` (HOST:PORT) for
 * registry `m` and readiness `ready(ud)` (both borrowed: they must outlive
 * the server). Returns once listening; -EADDRINUSE and the like with a
 * message naming the address. On success *out is owned by the caller. */
int kf_metrics_http_start(const char *addr, kf_metrics *m, kf_ready_fn ready, void *ud,
                          kf_metrics_http **out, kf_error *err);

/* kf_metrics_http_stop - stop accepting, close the connections, wait for
 * running handlers and free. Call before what the callbacks read goes away.
 * NULL-safe; returns NULL. */
kf_metrics_http *kf_metrics_http_stop(kf_metrics_http *h);

#endif
