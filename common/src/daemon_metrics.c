/* daemon_metrics.c - the metrics part every kfleet daemon shares: registry,
 * build info, etcd request metrics and the HTTP server
 * (kf/daemon_metrics.h). Owns all four; the daemon owns the struct.
 */
#include "kf/daemon_metrics.h"

#include <string.h>

int kf_daemon_metrics_init(kf_daemon_metrics *dm, const char *daemon, kf_error *err) {
    memset(dm, 0, sizeof(*dm));
    int r = kf_metrics_new(&dm->reg);
    if (r < 0)
        return kf_error_set(err, r, 0, "out of memory");
    kf_gauge *info = NULL;
    kf_label_pair build[2] = {{"daemon", daemon}, {"version", KF_VERSION}};
    r = kf_metrics_gauge(dm->reg, "kfleet_build_info", "The daemon and its version (always 1).", build, 2, &info,
                         err);
    if (r == 0)
        r = kf_etcd_metrics_new(dm->reg, &dm->etcd, err);
    if (r < 0) {
        kf_daemon_metrics_done(dm);
        return r;
    }
    kf_gauge_set(info, 1);
    return 0;
}

int kf_daemon_metrics_serve(kf_daemon_metrics *dm, const char *listen, kf_ready_fn ready, void *ud,
                            kf_error *err) {
    if (!listen || !listen[0])
        return 0;
    return kf_metrics_http_start(listen, dm->reg, ready, ud, &dm->http, err);
}

void kf_daemon_metrics_stop(kf_daemon_metrics *dm) { dm->http = kf_metrics_http_stop(dm->http); }

void kf_daemon_metrics_done(kf_daemon_metrics *dm) {
    dm->http = kf_metrics_http_stop(dm->http);
    dm->etcd = kf_etcd_metrics_free(dm->etcd);
    dm->reg = kf_metrics_free(dm->reg);
}
