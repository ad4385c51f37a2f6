/* pools.c - the leader loop that sizes each node's warm pool from demand
 * (--pool-sizing) and publishes the sizes in etcd.
 *
 * Demand is read from the agents' usage records: every record carries the
 * node's `creates` counter (monotonic while the agent runs), so the creates
 * of a node over the last --pool-window (default 60 s) are the counter's
 * growth since the oldest sample kept for that window (a sample every
 * window/60, at least a second apart), whichever replica placed them.
 * Per node:
 *
 *   rate_i   = max(creates_i in the window, total in the window / nodes) / window
 *   target_i = ceil(rate_i x --pool-start-ms x --pool-headroom / 100)
 *              bounded by [--pool-min, the node's free capacity]
 *
 * The cluster's share (total / placeable nodes) gives a node that just
 * joined its pool at once, before it has any history of its own: spread
 * placement sends it the next creates. As the window slides past a burst
 * the targets fall back to --pool-min, so pools shrink when demand falls.
 * Free capacity is the node's free session slots and whole default-sized
 * sessions of free memory and cpu (warm sandboxes hold a slot each).
 *
 * Each target is written to /kfleet/pools/<node> = {target, updated_unix_ms}
 * by a fenced txn (kf_leader_txn) when it changes (and once per term); the
 * agent reads it with its admin record and applies it bounded by its own
 * --pool-max. Records of nodes that left are kept (a node that comes back
 * starts from its last target, then follows this loop).
 *
 * Owns: the per-node samples (SAMPLES per node, ~1 KiB);
 * runs on the leader thread only, no lock.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/node_record.h"
#include "kf/util.h"
#include "scheduler.h"

#define TICK_MS 1000 /* targets computed (and written when changed) this often */
#define SAMPLES 62    /* per node: one per window/60, and one spare */
#define NODES_MAX 10000 /* nodes tracked; past it a new node keeps its agent's --pool */

typedef struct sample {
    int64_t at_ms; /* monotonic */
    uint64_t creates;
} sample;

typedef struct pool_node {
    char node[KF_PLACE_ID_MAX + 1];
    sample ring[SAMPLES]; /* oldest at `head` */
    size_t head, n;
    int64_t written; /* the target last written this term, -1 = none */
} pool_node;

struct kf_pools {
    pool_node *nodes;
    size_t n, cap;
    int64_t next_ms;
};

kf_pools *kf_pools_new(void) { return calloc(1, sizeof(kf_pools)); }

kf_pools *kf_pools_free(kf_pools *p) {
    if (p) {
        free(p->nodes);
        free(p);
    }
    return NULL;
}

static pool_node *node_get(kf_pools *p, const char *name) {
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->nodes[i].node, name))
            return &p->nodes[i];
    if (p->n >= NODES_MAX)
        return NULL;
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 16;
        pool_node *nn = realloc(p->nodes, nc * sizeof(*nn));
        if (!nn)
            return NULL;
        p->nodes = nn;
        p->cap = nc;
    }
    pool_node *pn = &p->nodes[p->n++];
    memset(pn, 0, sizeof(*pn));
    snprintf(pn->node, sizeof(pn->node), "%s", name);
    pn->written = -1;
    return pn;
}

/* Drops the samples older than the window, adds one when the last is
 * `every_ms` old; a counter that went back (the agent restarted) starts
 * the window over. Returns the creates within the window. */
static uint64_t node_sample(pool_node *pn, int64_t now, uint64_t creates, int64_t window_ms, int64_t every_ms) {
    if (pn->n && creates < pn->ring[(pn->head + pn->n - 1) % SAMPLES].creates)
        pn->n = 0;
    while (pn->n && now - pn->ring[pn->head].at_ms > window_ms) {
        pn->head = (pn->head + 1) % SAMPLES;
        pn->n--;
    }
    if (!pn->n || now - pn->ring[(pn->head + pn->n - 1) % SAMPLES].at_ms >= every_ms) {
        if (pn->n == SAMPLES) { /* cannot happen with every_ms = window / 60; kept safe */
            pn->head = (pn->head + 1) % SAMPLES;
            pn->n--;
        }
        pn->ring[(pn->head + pn->n) % SAMPLES] = (sample){.at_ms = now, .creates = creates};
        pn->n++;
    }
    return creates - pn->ring[pn->head].creates;
}

/* The free capacity of a node, in default-sized sessions. */
static uint64_t node_free(const kf_node_load *l) {
    uint64_t slots = l->slot_cap > l->slots_used ? l->slot_cap - l->slots_used : 0;
    uint64_t mem = l->mem_cap > l->mem_used ? (l->mem_cap - l->mem_used) / KF_SCHED_DEFAULT_MEMORY : 0;
    uint64_t cpu = l->cpu_cap > l->cpu_used ? (l->cpu_cap - l->cpu_used) / KF_SCHED_DEFAULT_CPU : 0;
    uint64_t f = slots < mem ? slots : mem;
    return f < cpu ? f : cpu;
}

uint32_t kf_pool_target(const kf_sched_config *cfg, uint64_t node_creates, uint64_t total_creates,
                        size_t n_nodes, uint64_t window_ms, uint64_t free_cap) {
    double share = n_nodes ? (double)total_creates / (double)n_nodes : 0;
    double creates = (double)node_creates > share ? (double)node_creates : share;
    double rate = window_ms ? creates / ((double)window_ms / 1000.0) : 0; /* per second */
    double want = ceil(rate * cfg->pool_start_ms / 1000.0 * cfg->pool_headroom_pct / 100.0 - 1e-9);
    uint64_t t = want > KF_POOL_TARGET_MAX ? KF_POOL_TARGET_MAX : (uint64_t)want;
    if (t < cfg->pool_min)
        t = cfg->pool_min;
    if (t > free_cap)
        t = free_cap;
    return (uint32_t)t;
}

/* Writes node's target, fenced by the leader term. */
static int write_target(kf_sched *s, const char *node, uint32_t target) {
    char key[sizeof(KF_KEY_POOLS) + KF_PLACE_ID_MAX];
    snprintf(key, sizeof(key), "%s%s", KF_KEY_POOLS, node);
    _cleanup_free_ char *v = kf_pool_record_json(target, kf_unix_ms());
    if (!v)
        return -ENOMEM;
    kf_etcd_op op = {.type = KF_ETCD_OP_PUT, .key = key, .key_len = strlen(key), .value = v,
                     .value_len = strlen(v)};
    bool ok = false;
    kf_error err = {0};
    kf_etcd_cmp none = {0}; /* no compare but the leader's fence */
    int rc = kf_leader_txn(s->leader, &none, 0, &op, 1, &ok, &err);
    if (rc < 0 || !ok) {
        kf_warn("pools: node %s: target %u not written: %s", node, target, rc < 0 ? err.msg : "not the leader");
        return rc < 0 ? rc : -ESTALE;
    }
    return 0;
}

int kf_pools_tick(kf_sched *s, kf_pools *p) {
    int64_t now = kf_mono_ms();
    if (now < p->next_ms)
        return 0;
    p->next_ms = now + TICK_MS;
    int64_t window_ms = (int64_t)s->cfg.pool_window_s * 1000;
    int64_t every_ms = window_ms / 60 > TICK_MS ? window_ms / 60 : TICK_MS;
    kf_node_load *loads = NULL;
    size_t n = 0;
    int rc = kf_view_loads(s->view, &loads, &n);
    if (rc < 0)
        return rc;
    _cleanup_free_ uint64_t *inwin = calloc(n ? n : 1, sizeof(*inwin));
    _cleanup_free_ pool_node **pn = calloc(n ? n : 1, sizeof(*pn));
    if (!inwin || !pn) {
        free(loads);
        return -ENOMEM;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        pn[i] = node_get(p, loads[i].node);
        if (pn[i]) {
            inwin[i] = node_sample(pn[i], now, loads[i].creates, window_ms, every_ms);
            total += inwin[i];
        }
    }
    int written = 0;
    for (size_t i = 0; i < n && kf_leader_is(s->leader); i++) {
        if (!pn[i])
            continue;
        uint32_t t = kf_pool_target(&s->cfg, inwin[i], total, n, (uint64_t)window_ms, node_free(&loads[i]));
        if ((int64_t)t == pn[i]->written)
            continue;
        if (write_target(s, loads[i].node, t) == 0) {
            kf_info("pools: node %s: warm pool target %u (%llu of %llu creates in the last %u s)", loads[i].node,
                    t, (unsigned long long)inwin[i], (unsigned long long)total, s->cfg.pool_window_s);
            pn[i]->written = t;
            written++;
        }
    }
    free(loads);
    return written;
}
