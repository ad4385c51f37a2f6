/* leader.c - scheduler leader election, and the thread that runs the
 * leader's loops while this replica leads.
 *
 * Every replica serves every request; only the leader runs the background
 * loops (node_loss.c, reconcile.c, pools.c with --pool-sizing, rebalance.c
 * with --rebalance). The election uses the etcd client's
 * leader key (KF_KEY_LEADER = this replica's --id, on a lease of
 * --leader-ttl seconds):
 *
 *  - the election thread grants a lease and hands it to a lease keeper
 *    (refreshes every TTL/3, reports a loss once);
 *  - it campaigns (one txn: put the key if absent); the winner's key
 *    create_revision is the term's fencing token: every write of the loops
 *    goes through kf_leader_txn, which adds "create_revision(key) == token"
 *    to the txn's compares, so a deposed leader's writes never land;
 *  - a watch on the key wakes the followers when it is deleted (resign or
 *    lease expiry), so a dead leader is replaced about one TTL after its
 *    last refresh (etcd expires leases on a ~0.5 s tick);
 *  - while leading, the thread re-campaigns every tick (a cheap check that
 *    the key still holds its id on its lease) and runs one pass of each loop;
 *  - the keeper's loss report clears `leading` at once (the loops check it
 *    between steps, and their fenced writes fail anyway); the thread then
 *    revokes the old lease (best effort: it frees the key if etcd kept it,
 *    e.g. across an etcd restart) and campaigns again on a new lease;
 *  - on stop a leader resigns and revokes its lease, so a successor takes
 *    over at once instead of after the TTL.
 *
 * Owns: its own etcd client (so the loops and the campaign never queue
 * behind handler calls on the shared one), the lease, the keeper, the
 * watch, and the loops' state. `mu` guards the flags the keeper and watch
 * threads set; `leading` and `token` are atomics read by anyone.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "drain.h"
#include "scheduler.h"

#define TICK_MS 500           /* the leader's loop period */
#define BACKOFF_MIN_MS 250    /* after an etcd error */
#define BACKOFF_MAX_MS 4000

struct kf_leader {
    kf_sched *s;
    kf_etcd *etcd;
    pthread_t thread;
    bool running;

    pthread_mutex_t mu;
    pthread_cond_t cv;   /* CLOCK_MONOTONIC */
    bool stop;           /* under mu */
    bool lease_lost;     /* under mu: the keeper's report */
    uint64_t key_events; /* under mu: the leader key changed */

    atomic_bool leading;
    atomic_int_fast64_t token; /* create_revision of the key this term */

    /* the election thread's own */
    int64_t lease;
    int64_t ttl_s;
    kf_etcd_keeper *keeper;
    kf_etcd_watch *watch;
    char followed[KF_SCHED_ID_MAX]; /* the leader last logged */
    char last_warn[KF_ERROR_MSG_MAX];
};

static void warn_once(kf_leader *l, const char *msg) {
    if (!strcmp(l->last_warn, msg))
        return;
    snprintf(l->last_warn, sizeof(l->last_warn), "%s", msg);
    kf_warn("leader election: %s", msg);
}

static void on_lease_lost(int64_t lease, int code, const char *message, void *ud) {
    kf_leader *l = ud;
    (void)code;
    atomic_store(&l->leading, false); /* the loops stop at their next check */
    pthread_mutex_lock(&l->mu);
    l->lease_lost = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    kf_warn("leader election: lease %" PRIx64 " lost: %s", (uint64_t)lease, message);
}

static int on_key(const kf_etcd_watch_notify *n, void *ud) {
    kf_leader *l = ud;
    if (n->kind == KF_ETCD_WATCH_DISCONNECTED)
        return 0;
    pthread_mutex_lock(&l->mu);
    l->key_events++;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* Waits until `ms` passed, the key changed, the lease was lost or stop.
 * Returns false on stop. */
static bool wait_event(kf_leader *l, int64_t ms) {
    struct timespec dl = kf_mono_deadline(ms);
    pthread_mutex_lock(&l->mu);
    uint64_t seen = l->key_events;
    while (!l->stop && !l->lease_lost && l->key_events == seen)
        if (pthread_cond_timedwait(&l->cv, &l->mu, &dl) == ETIMEDOUT)
            break;
    bool go_on = !l->stop;
    pthread_mutex_unlock(&l->mu);
    return go_on;
}

static void set_leading(kf_leader *l, bool on, int64_t token, const char *other) {
    bool was = atomic_load(&l->leading);
    if (on) {
        atomic_store(&l->token, token);
        atomic_store(&l->leading, true);
        if (!was)
            kf_info("leader: this replica (%s) is now the leader (term %" PRId64 ")", l->s->cfg.id,
                    token);
        l->followed[0] = '\0';
        return;
    }
    atomic_store(&l->leading, false);
    if (was)
        kf_warn("leader: this replica (%s) is no longer the leader%s%s", l->s->cfg.id,
                other ? "; new leader " : "", other ? other : "");
    if (other && strcmp(l->followed, other)) {
        snprintf(l->followed, sizeof(l->followed), "%s", other);
        kf_info("leader: following %s", other);
    }
}

/* Drops the lease (after a loss report or before stopping). */
static void drop_lease(kf_leader *l) {
    l->keeper = kf_etcd_lease_keeper_stop(l->keeper);
    if (l->lease) {
        kf_error e = {0};
        if (kf_etcd_lease_revoke(l->etcd, l->lease, &e) < 0 && e.code != -ENOENT)
            kf_debug("leader: old lease not revoked: %s", e.msg);
    }
    l->lease = 0;
    pthread_mutex_lock(&l->mu);
    l->lease_lost = false;
    pthread_mutex_unlock(&l->mu);
}

static int new_lease(kf_leader *l, kf_error *err) {
    int64_t id, ttl;
    int rc = kf_etcd_lease_grant(l->etcd, l->s->cfg.leader_ttl_s, &id, &ttl, err);
    if (rc < 0)
        return rc;
    rc = kf_etcd_lease_keeper_start(l->etcd, id, ttl, on_lease_lost, l, &l->keeper, err);
    if (rc < 0) {
        kf_etcd_lease_revoke(l->etcd, id, NULL);
        return rc;
    }
    l->lease = id;
    l->ttl_s = ttl;
    return 0;
}

static void *leader_main(void *arg) {
    kf_leader *l = arg;
    kf_sched *s = l->s;
    kf_node_loss *loss = NULL;
    kf_reconcile *rec = NULL;
    kf_pools *pools = NULL;
    kf_rebalance *rebal = NULL;
    kf_drain_runner *drains = NULL;
    int64_t backoff = BACKOFF_MIN_MS;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        bool stop = l->stop, lost = l->lease_lost;
        pthread_mutex_unlock(&l->mu);
        if (stop)
            break;
        if (lost) {
            set_leading(l, false, 0, NULL);
            drains = kf_drain_runner_stop(drains);
            drop_lease(l);
        }
        kf_error err = {0};
        if (!l->lease && new_lease(l, &err) < 0) {
            warn_once(l, err.msg);
            if (!wait_event(l, backoff))
                break;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        bool won = false;
        int64_t rev = 0;
        _cleanup_free_ char *who = NULL;
        if (kf_etcd_campaign(l->etcd, KF_KEY_LEADER, s->cfg.id, l->lease, &won, &who, &rev, &err) < 0) {
            /* Keep `leading` as it is: only the lease decides (the keeper
             * reports within the TTL); fenced writes fail meanwhile. */
            warn_once(l, err.msg);
            if (!wait_event(l, backoff))
                break;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        l->last_warn[0] = '\0';
        if (!won) {
            set_leading(l, false, 0, who);
            loss = kf_node_loss_free(loss);
            rec = kf_reconcile_free(rec);
            pools = kf_pools_free(pools);
            rebal = kf_rebalance_free(rebal);
            drains = kf_drain_runner_stop(drains);
            /* a backstop in case a watch event is missed */
            if (!wait_event(l, l->ttl_s * 1000 / 2))
                break;
            continue;
        }
        if (!atomic_load(&l->leading)) {
            /* A new term: the loops start from nothing (a node's grace
             * is counted from when this leader first saw it gone). */
            loss = kf_node_loss_free(loss);
            rec = kf_reconcile_free(rec);
            loss = kf_node_loss_new();
            rec = kf_reconcile_new();
            pools = kf_pools_free(pools);
            rebal = kf_rebalance_free(rebal);
            if (s->cfg.pool_sizing)
                pools = kf_pools_new();
            if (s->cfg.rebalance)
                rebal = kf_rebalance_new();
            drains = kf_drain_runner_stop(drains);
            if (kf_drain_runner_start(s, &drains, &err) < 0)
                kf_err("leader: drains will not run: %s", err.msg);
        }
        set_leading(l, true, rev, NULL);
        if (loss)
            kf_node_loss_tick(s, loss);
        if (rec && kf_leader_is(l))
            kf_reconcile_tick(s, rec);
        if (pools && kf_leader_is(l))
            kf_pools_tick(s, pools);
        if (rebal && kf_leader_is(l))
            kf_rebalance_tick(s, rebal);
        if (!wait_event(l, TICK_MS))
            break;
    }
    loss = kf_node_loss_free(loss);
    rec = kf_reconcile_free(rec);
    pools = kf_pools_free(pools);
    rebal = kf_rebalance_free(rebal);
    drains = kf_drain_runner_stop(drains);
    return NULL;
}

int kf_leader_start(kf_sched *s, kf_leader **out, kf_error *err) {
    kf_leader *l = calloc(1, sizeof(*l));
    if (!l)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    l->s = s;
    pthread_mutex_init(&l->mu, NULL);
    kf_cond_init_mono(&l->cv);
    atomic_init(&l->leading, false);
    atomic_init(&l->token, 0);
    l->ttl_s = s->cfg.leader_ttl_s;
    kf_etcd_opts eo = {.endpoints = s->cfg.etcd_endpoints, .request_timeout_ms = 2000,
                       .connect_timeout_ms = 1000};
    int rc = kf_etcd_client_new(&eo, &l->etcd, err);
    if (rc == 0)
        rc = kf_etcd_watch_start(l->etcd, KF_KEY_LEADER, strlen(KF_KEY_LEADER), NULL, 0, 0, false, on_key,
                                 l, &l->watch, err);
    if (rc == 0) {
        rc = -pthread_create(&l->thread, NULL, leader_main, l);
        if (rc < 0)
            kf_error_set(err, rc, 0, "leader thread: %s", strerror(-rc));
    }
    if (rc < 0) {
        kf_leader_free(l);
        return rc;
    }
    l->running = true;
    kf_info("leader election: campaigning as %s (lease TTL %u s)", s->cfg.id, s->cfg.leader_ttl_s);
    *out = l;
    return 0;
}

kf_leader *kf_leader_free(kf_leader *l) {
    if (!l)
        return NULL;
    if (l->running) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    l->watch = kf_etcd_watch_stop(l->watch);
    bool was = atomic_exchange(&l->leading, false);
    if (was && l->lease) {
        kf_error e = {0};
        bool held = false;
        if (kf_etcd_resign(l->etcd, KF_KEY_LEADER, l->s->cfg.id, &held, &e) < 0)
            kf_warn("leader: resign failed (the key lapses with the lease): %s", e.msg);
        else if (held)
            kf_info("leader: resigned");
    }
    drop_lease(l);
    l->etcd = kf_etcd_client_free(l->etcd);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
    return NULL;
}

bool kf_leader_is(kf_leader *l) {
    return l && atomic_load(&l->leading);
}

kf_etcd *kf_leader_etcd(kf_leader *l) {
    return l->etcd;
}

int kf_leader_txn(kf_leader *l, const kf_etcd_cmp *cmps, size_t n_cmps, const kf_etcd_op *ops,
                  size_t n_ops, bool *ok, kf_error *err) {
    return kf_leader_txn_result(l, cmps, n_cmps, ops, n_ops, ok, NULL, err);
}

int kf_leader_txn_result(kf_leader *l, const kf_etcd_cmp *cmps, size_t n_cmps, const kf_etcd_op *ops,
                         size_t n_ops, bool *ok, kf_etcd_txn_result *out, kf_error *err) {
    *ok = false;
    if (n_cmps + 1 > KF_ETCD_MAX_TXN_OPS)
        return kf_error_set(err, -E2BIG, 0, "fenced txn: too many compares (%zu)", n_cmps);
    if (!kf_leader_is(l))
        return kf_error_set(err, -ESTALE, KF_ST_FAILED_PRECONDITION, "not the leader");
    kf_etcd_cmp all[KF_ETCD_MAX_TXN_OPS];
    all[0] = (kf_etcd_cmp){.key = KF_KEY_LEADER, .key_len = strlen(KF_KEY_LEADER),
                           .target = KF_ETCD_CMP_CREATE, .result = KF_ETCD_CMP_EQUAL,
                           .number = atomic_load(&l->token)};
    memcpy(all + 1, cmps, n_cmps * sizeof(*cmps));
    return kf_etcd_txn(l->etcd, all, n_cmps + 1, ops, n_ops, NULL, 0, ok, out, err);
}
