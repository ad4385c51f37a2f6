/* sched_metrics.c - kfleet-scheduler's metrics (see sched_metrics.h): the
 * series, their scrape-time collection from the view, readiness, and the
 * HTTP server. Owns its kf_daemon_metrics (registry, etcd series, HTTP
 * server); reads the view through its copying functions (under its lock).
 *
 * Series (kfleet_scheduler_ unless said otherwise):
 *   session_creates_total                 counter   sessions created through this scheduler
 *   session_create_failures_total         counter   creates the client saw fail
 *   session_create_duration_seconds       histogram whole CreateSession, placement to reply
 *   execute_duration_seconds              histogram forwarded Execute streams, start to end
 *   placement_conflicts_total             counter   commits that lost a race
 *   session_commit_txns_total             counter   etcd txns of new sessions' records (batched)
 *   session_commits_total                 counter   records committed through those txns
 *   placement_retries_total               counter   placements run again (conflict, failed start)
 *   nodes{state}                          gauge     ready | cordoned | not_ready | draining | drained
 *   cluster_sessions                      gauge     sessions the registered nodes report
 *   cluster_pool_ready, cluster_pool_target gauge   the nodes' warm pools, summed
 *   kfleet_drains_in_progress             gauge     nodes whose drain record says running (cluster-wide)
 *   kfleet_etcd_request_duration_seconds{op}, kfleet_etcd_request_errors_total{op}
 *   kfleet_build_info{daemon,version}     gauge     1
 */
#include "sched_metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "drain.h"
#include "kf/cleanup.h"
#include "kf/daemon_metrics.h"
#include "scheduler.h"

#define N_NODE_STATES (KFLEET__V1__NODE_STATE__NODE_STATE_DRAINED + 1)

struct kf_sched_metrics {
    kf_sched *s;
    kf_daemon_metrics dm;
    kf_counter *creates, *create_failures, *conflicts, *retries, *commit_txns, *commits;
    kf_histogram *create_seconds, *execute_seconds;
    kf_gauge *nodes[N_NODE_STATES];
    kf_gauge *sessions, *pool_ready, *pool_target, *drains;
};

static const char *const node_state_names[N_NODE_STATES] = {
    NULL, "ready", "cordoned", "not_ready", "draining", "drained"};

/* At each scrape: nodes by state and the sums of what registered nodes
 * report. O(nodes) copies out of the view (as GetClusterSummary does). */
static void collect(void *ud) {
    kf_sched_metrics *m = ud;
    if (!m->s->view)
        return;
    _cleanup_free_ kf_node_status *st = NULL;
    size_t n = 0;
    bool more = false;
    if (kf_view_statuses(m->s->view, NULL, SIZE_MAX, &st, &n, &more) < 0)
        return; /* out of memory: the gauges keep their last values */
    kf_cluster_add_drains(m->s, st, n); /* one etcd range: draining/drained states */
    int64_t by_state[N_NODE_STATES] = {0}, sessions = 0, ready = 0, target = 0, drains = 0;
    for (size_t i = 0; i < n; i++) {
        drains += st[i].drain_state == KF_DRAIN_RUNNING;
        int ns = (int)kf_node_state(&st[i]);
        by_state[ns > 0 && ns < N_NODE_STATES ? ns : KFLEET__V1__NODE_STATE__NODE_STATE_NOT_READY]++;
        if (!st[i].registered)
            continue;
        sessions += st[i].usage.sessions;
        ready += st[i].usage.pool_ready;
        target += st[i].usage.pool_target;
    }
    for (int i = 1; i < N_NODE_STATES; i++)
        kf_gauge_set(m->nodes[i], by_state[i]);
    kf_gauge_set(m->drains, drains);
    kf_gauge_set(m->sessions, sessions);
    kf_gauge_set(m->pool_ready, ready);
    kf_gauge_set(m->pool_target, target);
}

/* Ready: the cluster was listed and every view watch is connected to etcd. */
static bool ready(void *ud, char *reason, size_t size) {
    kf_sched_metrics *m = ud;
    if (!m->s->view) {
        snprintf(reason, size, "starting");
        return false;
    }
    return kf_view_ready(m->s->view, reason, size);
}

#define C(field, name, help) {KF_METRIC_COUNTER, name, help, &m->field, {0}, NULL, 0}
#define G(field, name, help) {KF_METRIC_GAUGE, name, help, &m->field, {0}, NULL, 0}
#define H(field, name, help)                                                                         \
    {KF_METRIC_HISTOGRAM, name, help, &m->field, {0}, kf_metrics_buckets_slow, kf_metrics_n_buckets_slow}

int kf_sched_metrics_new(kf_sched *s, kf_sched_metrics **out, kf_error *err) {
    *out = NULL;
    kf_sched_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    m->s = s;
    int r = kf_daemon_metrics_init(&m->dm, "scheduler", err);
    if (r < 0) {
        free(m);
        return r;
    }
    for (int i = 1; r == 0 && i < N_NODE_STATES; i++) {
        kf_label_pair l = {"state", node_state_names[i]};
        r = kf_metrics_gauge(m->dm.reg, "kfleet_scheduler_nodes", "Nodes known to the cluster, by state.", &l, 1,
                             &m->nodes[i], err);
    }
    const kf_metric_def defs[] = {
        C(creates, "kfleet_scheduler_session_creates_total", "Sessions created through this scheduler."),
        C(create_failures, "kfleet_scheduler_session_create_failures_total",
          "CreateSession calls that failed (no fit, quota, every start failed)."),
        H(create_seconds, "kfleet_scheduler_session_create_duration_seconds",
          "Time of CreateSession: placement, commit and the node's start."),
        H(execute_seconds, "kfleet_scheduler_execute_duration_seconds",
          "Time of a forwarded Execute, from the call to the end of its stream."),
        C(conflicts, "kfleet_scheduler_placement_conflicts_total",
          "Placement commits that lost a race (the node changed meanwhile)."),
        C(commit_txns, "kfleet_scheduler_session_commit_txns_total",
          "etcd txns that committed new sessions' records (concurrent creates share one)."),
        C(commits, "kfleet_scheduler_session_commits_total",
          "New sessions' records committed through those txns (commits / txns = the batching)."),
        C(retries, "kfleet_scheduler_placement_retries_total",
          "Placements run again after a lost race or a failed start."),
        G(sessions, "kfleet_scheduler_cluster_sessions", "Sessions the registered nodes last reported."),
        G(pool_ready, "kfleet_scheduler_cluster_pool_ready", "Warm sandboxes ready on the registered nodes."),
        G(pool_target, "kfleet_scheduler_cluster_pool_target", "Warm sandboxes the registered nodes aim to keep."),
        G(drains, "kfleet_drains_in_progress", "Node drains under way in the cluster (drain records running)."),
    };
    if (r == 0)
        r = kf_metrics_register(m->dm.reg, defs, KF_ARRAY_SIZE(defs), err);
    if (r < 0) {
        kf_sched_metrics_free(m);
        return r;
    }
    kf_metrics_set_collect(m->dm.reg, collect, m);
    *out = m;
    return 0;
}

int kf_sched_metrics_serve(kf_sched_metrics *m, kf_error *err) {
    return m ? kf_daemon_metrics_serve(&m->dm, m->s->cfg.metrics_listen, ready, m, err) : 0;
}

void kf_sched_metrics_stop(kf_sched_metrics *m) {
    if (m)
        kf_daemon_metrics_stop(&m->dm);
}

kf_sched_metrics *kf_sched_metrics_free(kf_sched_metrics *m) {
    if (!m)
        return NULL;
    kf_daemon_metrics_done(&m->dm);
    free(m);
    return NULL;
}

kf_etcd_metrics *kf_sched_metrics_etcd(kf_sched_metrics *m) { return m ? m->dm.etcd : NULL; }

void kf_sched_metrics_create(kf_sched_metrics *m, bool ok, int64_t start_us) {
    if (!m)
        return;
    kf_counter_inc(ok ? m->creates : m->create_failures);
    kf_histogram_observe_since_us(m->create_seconds, start_us);
}

void kf_sched_metrics_conflict(kf_sched_metrics *m) {
    if (m)
        kf_counter_inc(m->conflicts);
}

void kf_sched_metrics_commit_txn(kf_sched_metrics *m, size_t records) {
    if (m) {
        kf_counter_inc(m->commit_txns);
        kf_counter_add(m->commits, records);
    }
}

void kf_sched_metrics_retry(kf_sched_metrics *m) {
    if (m)
        kf_counter_inc(m->retries);
}

void kf_sched_metrics_forwarded(kf_sched_metrics *m, const char *path, int64_t start_us) {
    if (m && !strcmp(path, "/kfleet.v1.Sessions/Execute"))
        kf_histogram_observe_since_us(m->execute_seconds, start_us);
}
