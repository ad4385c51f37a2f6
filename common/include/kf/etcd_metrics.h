/* etcd_metrics.h - etcd request metrics for a daemon's registry: plugs
 * into the etcd client's observe hook (kf_etcd_opts.observe).
 *
 *   kfleet_etcd_request_duration_seconds{op}  histogram (fast buckets)
 *   kfleet_etcd_request_errors_total{op}      counter
 *
 * `op` is the request kind: range, put, delete, txn, compact, lease_grant,
 * lease_keepalive, lease_revoke, lease_ttl, other. Every series is
 * registered up front, so observing is a table lookup and a histogram add.
 */
#ifndef KF_ETCD_METRICS_H
#define KF_ETCD_METRICS_H

#include <stdint.h>

#include "kf/error.h"
#include "kf/metrics.h"

typedef struct kf_etcd_metrics kf_etcd_metrics;

/* kf_etcd_metrics_new - register the series in `m` (borrowed; must outlive
 * the returned object). -EINVAL/-ENOMEM with err set. */
int kf_etcd_metrics_new(kf_metrics *m, kf_etcd_metrics **out, kf_error *err);
kf_etcd_metrics *kf_etcd_metrics_free(kf_etcd_metrics *em);

/* kf_etcd_metrics_observe - the kf_etcd_opts.observe hook; `userdata` is a
 * kf_etcd_metrics (NULL: nothing recorded). Thread-safe, non-blocking. */
void kf_etcd_metrics_observe(void *userdata, const char *path, int64_t duration_us, int result);

#endif
