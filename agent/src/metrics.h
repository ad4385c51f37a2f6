/* metrics.h - kfleet-agent's metrics: what it registers in a kf_metrics
 * registry, the calls that count events (NULL-safe on the metrics, so code
 * paths run the same without them), and its /metrics, /healthz, /readyz
 * server (--metrics-listen).
 *
 * Lifecycle (main.c): kf_agent_metrics_new before the registry and the
 * gRPC server (the etcd client takes the observe hook at creation);
 * kf_agent_metrics_serve once the gRPC server listens; kf_agent_metrics_stop
 * first at stop (the HTTP handlers read the table and the registry), and
 * kf_agent_metrics_free last, once no thread counts events any more.
 */
#ifndef KF_AGENT_METRICS_H
#define KF_AGENT_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "kf/error.h"
#include "kf/etcd_metrics.h"
#include "session.h"

typedef struct kf_agent_metrics kf_agent_metrics;

/* kf_agent_metrics_new - register the agent's series (sessions by state and
 * pool sizes are read from the table at each scrape). -ENOMEM/-EINVAL. */
int kf_agent_metrics_new(kf_agent *a, kf_agent_metrics **out, kf_error *err);
/* kf_agent_metrics_serve - start the HTTP server on a->cfg.metrics_listen
 * (nothing when it is empty). -EADDRINUSE etc. with err set. */
int kf_agent_metrics_serve(kf_agent_metrics *m, kf_error *err);
/* kf_agent_metrics_stop - stop the HTTP server (waits for its handlers).
 * NULL-safe, idempotent. */
void kf_agent_metrics_stop(kf_agent_metrics *m);
/* kf_agent_metrics_free - stop the HTTP server if still up, free.
 * NULL-safe; returns NULL. */
kf_agent_metrics *kf_agent_metrics_free(kf_agent_metrics *m);

/* The etcd client's observe hook data (kf_etcd_opts.observe_userdata with
 * kf_etcd_metrics_observe); NULL for NULL. */
kf_etcd_metrics *kf_agent_metrics_etcd(kf_agent_metrics *m);

/* Events. Thread-safe, non-blocking; NULL m = nothing. */
/* A session was created (warm: claimed from the pool), started at start_us
 * (kf_mono_us), or its create failed (ok false). */
void kf_agent_metrics_create(kf_agent_metrics *m, bool ok, bool warm, int64_t start_us);
/* An execution ended with `status` (kfleet.v1.ExecStatus), having started
 * at start_us; `oom_kills` processes of the session were OOM-killed during it. */
void kf_agent_metrics_execute(kf_agent_metrics *m, int status, int64_t start_us, uint64_t oom_kills);
/* A kernel was restarted (timeout, death, OOM, client's request, re-adoption). */
void kf_agent_metrics_kernel_restart(kf_agent_metrics *m);

#endif
