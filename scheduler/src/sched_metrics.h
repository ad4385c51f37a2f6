/* sched_metrics.h - kfleet-scheduler's metrics: the series it registers in
 * a kf_metrics registry, the calls that count events (NULL-safe on the
 * metrics), its readiness, and its /metrics, /healthz, /readyz server
 * (--metrics-listen).
 *
 * Lifecycle (main.c): kf_sched_metrics_new before the etcd client (which
 * takes the observe hook at creation); kf_sched_metrics_serve once the gRPC
 * server listens; kf_sched_metrics_stop before the view and the etcd
 * client go (the handlers read them); kf_sched_metrics_free last.
 */
#ifndef KF_SCHED_METRICS_H
#define KF_SCHED_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "kf/error.h"
#include "kf/etcd_metrics.h"

struct kf_sched;
typedef struct kf_sched_metrics kf_sched_metrics;

/* kf_sched_metrics_new - register the scheduler's series. Nodes by state
 * and the cluster's sessions and pools are read from the view (s->view) at
 * each scrape. -ENOMEM/-EINVAL. */
int kf_sched_metrics_new(struct kf_sched *s, kf_sched_metrics **out, kf_error *err);
/* kf_sched_metrics_serve - start the HTTP server on s->cfg.metrics_listen
 * (nothing when empty). -EADDRINUSE etc. with err set. */
int kf_sched_metrics_serve(kf_sched_metrics *m, kf_error *err);
/* kf_sched_metrics_stop - stop the HTTP server (waits for its handlers).
 * NULL-safe, idempotent. */
void kf_sched_metrics_stop(kf_sched_metrics *m);
kf_sched_metrics *kf_sched_metrics_free(kf_sched_metrics *m);

/* The etcd client's observe hook data (with kf_etcd_metrics_observe). */
kf_etcd_metrics *kf_sched_metrics_etcd(kf_sched_metrics *m);

/* Events. Thread-safe, non-blocking; NULL m = nothing. */
/* CreateSession ended (ok: the client got a session), started at start_us
 * (kf_mono_us). */
void kf_sched_metrics_create(kf_sched_metrics *m, bool ok, int64_t start_us);
/* A placement commit lost its race (the node changed, or the id was taken). */
void kf_sched_metrics_conflict(kf_sched_metrics *m);
/* A txn of new session records ran (commit_batch.c): `records` of them. */
void kf_sched_metrics_commit_txn(kf_sched_metrics *m, size_t records);
/* Placement ran again (after a lost race or a failed start). */
void kf_sched_metrics_retry(kf_sched_metrics *m);
/* A forwarded call to `path` ended, started at start_us (Execute is timed). */
void kf_sched_metrics_forwarded(kf_sched_metrics *m, const char *path, int64_t start_us);

#endif
