/* daemon_metrics.h - what every kfleet daemon's metrics have in common: the
 * registry, kfleet_build_info{daemon,version}, the etcd request metrics
 * (kf/etcd_metrics.h) and the /metrics, /healthz, /readyz server
 * (kf/metrics_http.h). kfleet-agent and kfleet-scheduler each embed one
 * and add their own series to `reg`.
 *
 * Lifecycle: kf_daemon_metrics_init before the daemon's etcd client (it
 * takes `etcd` as its observe hook data); kf_daemon_metrics_serve once the
 * daemon serves; kf_daemon_metrics_stop before what the collect and
 * readiness callbacks read goes away; kf_daemon_metrics_done last.
 */
#ifndef KF_DAEMON_METRICS_H
#define KF_DAEMON_METRICS_H

#include "kf/error.h"
#include "kf/etcd_metrics.h"
#include "kf/metrics.h"
#include "kf/metrics_http.h"

typedef struct kf_daemon_metrics {
    kf_metrics *reg;
    kf_etcd_metrics *etcd;
    kf_metrics_http *http; /* NULL unless serving */
} kf_daemon_metrics;

/* kf_daemon_metrics_init - a registry with kfleet_build_info{daemon=
 * `daemon`} and the etcd series. On failure nothing is left to free.
 * -ENOMEM / -EINVAL with err set. */
int kf_daemon_metrics_init(kf_daemon_metrics *dm, const char *daemon, kf_error *err);
/* kf_daemon_metrics_serve - serve the registry and `ready(ud)` on `listen`
 * (HOST:PORT); nothing when `listen` is empty. Errors as
 * kf_metrics_http_start. */
int kf_daemon_metrics_serve(kf_daemon_metrics *dm, const char *listen, kf_ready_fn ready, void *ud,
                            kf_error *err);
/* kf_daemon_metrics_stop - stop serving (waits for running handlers).
 * Idempotent. */
void kf_daemon_metrics_stop(kf_daemon_metrics *dm);
/* kf_daemon_metrics_done - stop serving and free the contents (not dm).
 * Idempotent. */
void kf_daemon_metrics_done(kf_daemon_metrics *dm);

#endif
