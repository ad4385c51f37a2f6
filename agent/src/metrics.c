/* metrics.c - kfleet-agent's metrics (see metrics.h): the series it
 * registers, the scrape-time collection of sessions by state and pool
 * sizes, and its readiness. Owns its kf_daemon_metrics (registry, etcd
 * series, HTTP server); reads the agent under its table_lock.
 *
 * Series (all prefixed kfleet_agent_ except the shared etcd ones):
 *   sessions{state}                 gauge     sessions by state (pooled = warm sandboxes)
 *   pool_ready, pool_target         gauge     the warm pool
 *   session_creates_total{start}    counter   start = warm | cold
 *   session_create_failures_total   counter
 *   session_create_duration_seconds histogram
 *   executions_total{status}        counter   by final status
 *   execute_duration_seconds        histogram whole executions, to the final status
 *   execution_timeouts_total        counter   executions stopped at their time limit
 *   oom_kills_total                 counter   processes OOM-killed during executions
 *   kernel_restarts_total           counter
 *   registered                      gauge     1 while the node is registered in etcd
 *   kfleet_build_info{daemon,version} gauge   1
 */
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/daemon_metrics.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "registry.h"

#define N_STATES (KF_SS_EXPIRED + 1)
#define N_EXEC_STATUS (KFLEET__V1__EXEC_STATUS__EXEC_STATUS_KERNEL_DIED + 1)

struct kf_agent_metrics {
    kf_agent *a;
    kf_daemon_metrics dm;
    kf_gauge *sessions[N_STATES];
    kf_gauge *pool_ready, *pool_target, *registered;
    kf_counter *creates_warm, *creates_cold, *create_failures;
    kf_histogram *create_seconds, *execute_seconds;
    kf_counter *executions[N_EXEC_STATUS];
    kf_counter *timeouts, *oom_kills, *kernel_restarts;
};

static const char *const exec_status_names[N_EXEC_STATUS] = {
    "unspecified", "ok", "error", "timeout", "out_of_memory", "interrupted", "kernel_died"};

/* At each scrape: sessions by state and the pool, O(table capacity) under
 * table_lock (a few thousand slots at most). */
static void collect(void *ud) {
    kf_agent_metrics *m = ud;
    kf_agent *a = m->a;
    int64_t n[N_STATES] = {0};
    pthread_mutex_lock(&a->table_lock);
    for (size_t i = 0; i < a->sessions_cap; i++)
        if (a->sessions[i] && a->sessions[i]->state < N_STATES)
            n[a->sessions[i]->state]++;
    n[KF_SS_POOLED] += (int64_t)a->pool_ready;
    n[KF_SS_STARTING] += (int64_t)a->pool_starting;
    int64_t ready = (int64_t)a->pool_ready, target = a->pool_target;
    pthread_mutex_unlock(&a->table_lock);
    for (int st = KF_SS_STARTING; st < N_STATES; st++)
        kf_gauge_set(m->sessions[st], n[st]);
    kf_gauge_set(m->pool_ready, ready);
    kf_gauge_set(m->pool_target, target);
    if (a->registry) {
        kf_registry_status rs;
        kf_registry_status_get(a->registry, &rs);
        kf_gauge_set(m->registered, rs.registered);
    }
}

/* Ready: serving, and registered in etcd when given --etcd. */
static bool ready(void *ud, char *reason, size_t size) {
    kf_agent_metrics *m = ud;
    kf_agent *a = m->a;
    if (!a->cfg.etcd_endpoints[0])
        return true;
    kf_registry_status rs = {0};
    if (a->registry)
        kf_registry_status_get(a->registry, &rs);
    if (!rs.registered) {
        snprintf(reason, size, "node %s is not registered in etcd (%s)", a->cfg.node_name,
                 a->cfg.etcd_endpoints);
        return false;
    }
    return true;
}

#define C(field, name, help) {KF_METRIC_COUNTER, name, help, &m->field, {0}, NULL, 0}
#define G(field, name, help) {KF_METRIC_GAUGE, name, help, &m->field, {0}, NULL, 0}
#define H(field, name, help)                                                                         \
    {KF_METRIC_HISTOGRAM, name, help, &m->field, {0}, kf_metrics_buckets_slow, kf_metrics_n_buckets_slow}

int kf_agent_metrics_new(kf_agent *a, kf_agent_metrics **out, kf_error *err) {
    *out = NULL;
    kf_agent_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    m->a = a;
    int r = kf_daemon_metrics_init(&m->dm, "agent", err);
    if (r < 0) {
        free(m);
        return r;
    }
    for (int st = KF_SS_STARTING; r == 0 && st < N_STATES; st++) {
        kf_label_pair l = {"state", kf_session_state_name(st)};
        r = kf_metrics_gauge(m->dm.reg, "kfleet_agent_sessions",
                             "Sandboxes on this node by state (pooled: warm, not yet a session).", &l, 1,
                             &m->sessions[st], err);
    }
    for (int i = 1; r == 0 && i < N_EXEC_STATUS; i++) {
        kf_label_pair l = {"status", exec_status_names[i]};
        r = kf_metrics_counter(m->dm.reg, "kfleet_agent_executions_total", "Executions by final status.", &l, 1,
                               &m->executions[i], err);
    }
    const kf_metric_def defs[] = {
        G(pool_ready, "kfleet_agent_pool_ready", "Warm sandboxes ready to be claimed."),
        G(pool_target, "kfleet_agent_pool_target", "Warm sandboxes the pool keeps (--pool, or the scheduler's target)."),
        {KF_METRIC_COUNTER, "kfleet_agent_session_creates_total",
         "Sessions created, by start: warm (claimed from the pool) or cold.", &m->creates_warm,
         {"start", "warm"}, NULL, 0},
        {KF_METRIC_COUNTER, "kfleet_agent_session_creates_total", "", &m->creates_cold, {"start", "cold"}, NULL, 0},
        C(create_failures, "kfleet_agent_session_create_failures_total",
          "Session creates that failed in the sandbox start or the record."),
        H(create_seconds, "kfleet_agent_session_create_duration_seconds",
          "Time to create a session (claim or cold start)."),
        H(execute_seconds, "kfleet_agent_execute_duration_seconds",
          "Time of an execution, from its start to its final status."),
        C(timeouts, "kfleet_agent_execution_timeouts_total", "Executions stopped at their time limit."),
        C(oom_kills, "kfleet_agent_oom_kills_total",
          "Processes of sessions killed at the memory limit during executions."),
        C(kernel_restarts, "kfleet_agent_kernel_restarts_total",
          "Kernel restarts (timeouts, deaths, OOM kills, client requests, re-adoption)."),
        G(registered, "kfleet_agent_registered", "1 while this node is registered in etcd (0 without --etcd)."),
    };
    if (r == 0)
        r = kf_metrics_register(m->dm.reg, defs, KF_ARRAY_SIZE(defs), err);
    if (r < 0) {
        kf_agent_metrics_free(m);
        return r;
    }
    kf_metrics_set_collect(m->dm.reg, collect, m);
    *out = m;
    return 0;
}

int kf_agent_metrics_serve(kf_agent_metrics *m, kf_error *err) {
    return m ? kf_daemon_metrics_serve(&m->dm, m->a->cfg.metrics_listen, ready, m, err) : 0;
}

void kf_agent_metrics_stop(kf_agent_metrics *m) {
    if (m)
        kf_daemon_metrics_stop(&m->dm);
}

kf_agent_metrics *kf_agent_metrics_free(kf_agent_metrics *m) {
    if (!m)
        return NULL;
    kf_daemon_metrics_done(&m->dm);
    free(m);
    return NULL;
}

kf_etcd_metrics *kf_agent_metrics_etcd(kf_agent_metrics *m) { return m ? m->dm.etcd : NULL; }

void kf_agent_metrics_create(kf_agent_metrics *m, bool ok, bool warm, int64_t start_us) {
    if (!m)
        return;
    if (!ok) {
        kf_counter_inc(m->create_failures);
        return;
    }
    kf_counter_inc(warm ? m->creates_warm : m->creates_cold);
    kf_histogram_observe_since_us(m->create_seconds, start_us);
}

void kf_agent_metrics_execute(kf_agent_metrics *m, int status, int64_t start_us, uint64_t oom_kills) {
    if (!m)
        return;
    if (status > 0 && status < N_EXEC_STATUS)
        kf_counter_inc(m->executions[status]);
    if (status == KFLEET__V1__EXEC_STATUS__EXEC_STATUS_TIMEOUT)
        kf_counter_inc(m->timeouts);
    kf_counter_add(m->oom_kills, oom_kills);
    kf_histogram_observe_since_us(m->execute_seconds, start_us);
}

void kf_agent_metrics_kernel_restart(kf_agent_metrics *m) {
    if (m)
        kf_counter_inc(m->kernel_restarts);
}
