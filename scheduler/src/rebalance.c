/* rebalance.c - the leader loop that spreads load as the cluster changes
 * (--rebalance): when the nodes' loads drift apart, idle sessions move
 * from the most loaded node to the least loaded ones.
 *
 * Load is placement's measure (view.c): a node's dominant share of memory,
 * cpu and session slots, from its usage record (kf_view_loads), over the
 * nodes placement may pick (cordoned and draining ones left out). After a
 * pass that moved sessions the next waits 2 x PASS_MS, so the records
 * count the moves first.
 * Hysteresis on the spread (max - min):
 *
 *   idle   -> moving  when spread > --rebalance-high (percent points)
 *   moving -> idle    when spread < --rebalance-low
 *
 * so a cluster hovering near one threshold does not flap. While moving,
 * each pass (every PASS_MS) takes the most loaded node, lists its sessions
 * on the agent and moves those idle for --rebalance-idle or longer (the
 * longest idle first; a busy one never), at most --rebalance-max-moves,
 * with kf_session_move: placement picks the target with the source and
 * every node in the upper half of the spread excluded, so a session never
 * lands on a loaded node and nothing bounces back. After each move the
 * pass updates its own copy of the two nodes' loads by the session's
 * limits and stops once the spread is below --rebalance-low, without
 * waiting for the usage records. A moved session is remembered (id, time)
 * and not moved again within --rebalance-window (bounded: MOVED_MAX ids;
 * when full, no more moves until entries age out).
 *
 * New sessions need nothing from here: spread placement already sends
 * them to the least loaded node.
 *
 * Owns: the hysteresis state and the moved ids; runs on the leader thread
 * only, no lock. A move blocks the leader thread for its export and
 * import (seconds); node loss and reconcile wait meanwhile, which the
 * per-pass bound keeps short.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drain.h"
#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "kfleet/v1/sessions.pb-c.h"

#define PASS_MS 2000
#define AGENT_TIMEOUT_MS 3000
#define MOVED_MAX 4096

typedef struct moved {
    char id[KF_SESSION_ID_MAX + 1];
    int64_t at_ms; /* monotonic */
} moved;

struct kf_rebalance {
    bool active; /* between the high and the low threshold crossings */
    moved *moved;
    size_t n_moved;
    int64_t next_ms;
    uint64_t moves_total;
};

kf_rebalance *kf_rebalance_new(void) {
    kf_rebalance *rb = calloc(1, sizeof(*rb));
    if (rb && !(rb->moved = calloc(MOVED_MAX, sizeof(*rb->moved)))) {
        free(rb);
        return NULL;
    }
    return rb;
}

kf_rebalance *kf_rebalance_free(kf_rebalance *rb) {
    if (rb) {
        free(rb->moved);
        free(rb);
    }
    return NULL;
}

/* Forgets moves older than the window. O(moved). */
static void moved_prune(kf_rebalance *rb, int64_t now, int64_t window_ms) {
    for (size_t i = 0; i < rb->n_moved;)
        if (now - rb->moved[i].at_ms >= window_ms)
            rb->moved[i] = rb->moved[--rb->n_moved];
        else
            i++;
}

static bool moved_recently(const kf_rebalance *rb, const char *id) {
    for (size_t i = 0; i < rb->n_moved; i++)
        if (!strcmp(rb->moved[i].id, id))
            return true;
    return false;
}

typedef struct cand {
    const char *id; /* into the listing */
    int64_t last_active_ms;
} cand;

static int cand_cmp(const void *a, const void *b) {
    int64_t x = ((const cand *)a)->last_active_ms, y = ((const cand *)b)->last_active_ms;
    return x < y ? -1 : x > y;
}

static size_t find_load(const kf_node_load *l, size_t n, const char *node) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(l[i].node, node))
            return i;
    return n;
}

/* The spread of loads and where its ends are. */
static uint32_t spread(const kf_node_load *l, size_t n, size_t *hi, size_t *lo) {
    uint32_t max = 0, min = UINT32_MAX;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = kf_node_load_share(&l[i]);
        if (v > max || i == 0) {
            max = v;
            *hi = i;
        }
        if (v < min) {
            min = v;
            *lo = i;
        }
    }
    return n ? max - min : 0;
}

#define PCT(v) ((v) * 100.0 / KF_PLACE_SCALE)

/* Moves idle sessions off loads[hi]; returns the number moved. */
static int move_from(kf_sched *s, kf_rebalance *rb, kf_node_load *loads, size_t n, size_t hi) {
    const kf_sched_config *cfg = &s->cfg;
    char src[KF_PLACE_ID_MAX + 1];
    snprintf(src, sizeof(src), "%s", loads[hi].node);
    kf_node_addr addr;
    kf_grpc_client *cl;
    kf_error err = {0};
    _cleanup_pb_ ProtobufCMessage *resp = NULL;
    kf_rpc_status st = {0};
    Kfleet__V1__ListSessionsRequest req = KFLEET__V1__LIST_SESSIONS_REQUEST__INIT;
    if (kf_view_node(s->view, src, &addr) < 0 || kf_view_client(s->view, &addr, &cl, &err) < 0 ||
        kf_grpc_unary(cl, "/kfleet.v1.Sessions/ListSessions", &req.base,
                      &kfleet__v1__list_sessions_response__descriptor, AGENT_TIMEOUT_MS, &resp, &st) < 0) {
        kf_warn("rebalance: node %s not listed: %s", src, st.message[0] ? st.message : err.msg);
        return -EHOSTUNREACH;
    }
    const Kfleet__V1__ListSessionsResponse *list = (const void *)resp;
    _cleanup_free_ cand *c = calloc(list->n_sessions ? list->n_sessions : 1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int64_t now_unix = kf_unix_ms(), idle_ms = (int64_t)cfg->rebalance_idle_s * 1000;
    size_t nc = 0;
    for (size_t i = 0; i < list->n_sessions; i++) {
        const Kfleet__V1__Session *x = list->sessions[i];
        kf_session_ref ref;
        if (!x->id || x->state != KFLEET__V1__SESSION_STATE__SESSION_STATE_READY ||
            now_unix - x->last_active_unix_ms < idle_ms || moved_recently(rb, x->id) ||
            kf_session_table_cached(s->sessions, x->id, &ref) < 0 || ref.lost || ref.moving_to[0] ||
            strcmp(ref.node, src))
            continue;
        c[nc++] = (cand){.id = x->id, .last_active_ms = x->last_active_unix_ms};
    }
    qsort(c, nc, sizeof(*c), cand_cmp);
    int done = 0;
    for (size_t i = 0; i < nc && (uint32_t)done < cfg->rebalance_max_moves && kf_leader_is(s->leader); i++) {
        if (rb->n_moved == MOVED_MAX) {
            kf_warn("rebalance: %d sessions moved within the window; no more until they age out", MOVED_MAX);
            break;
        }
        /* keep off the source and every node in the upper half of the spread */
        size_t h = 0, l = 0;
        uint32_t sp = spread(loads, n, &h, &l);
        uint32_t mid = kf_node_load_share(&loads[l]) + sp / 2;
        _cleanup_free_ char(*avoid)[KF_PLACE_ID_MAX + 1] = calloc(n ? n : 1, sizeof(*avoid));
        if (!avoid)
            return -ENOMEM;
        size_t na = 0;
        for (size_t j = 0; j < n && na < KF_PLACE_EXCLUDE_MAX - 1; j++)
            if (j != hi && kf_node_load_share(&loads[j]) > mid)
                snprintf(avoid[na++], sizeof(avoid[0]), "%s", loads[j].node);
        kf_session_ref ref;
        if (kf_session_table_cached(s->sessions, c[i].id, &ref) < 0)
            continue;
        char cause[KF_PLACE_ID_MAX + 48], target[KF_PLACE_ID_MAX + 1] = "";
        snprintf(cause, sizeof(cause), "rebalancing load off node %s", src);
        kf_error e = {0};
        int rc = kf_session_move(s, c[i].id, src, avoid, na, cause, target, sizeof(target), &e);
        if (rc < 0) {
            kf_warn("rebalance: session %s stays on %s: %s", c[i].id, src, e.msg);
            if (rc == -ENOSPC)
                break; /* no node below the middle can take it */
            continue;
        }
        moved *m = &rb->moved[rb->n_moved++];
        snprintf(m->id, sizeof(m->id), "%s", c[i].id);
        m->at_ms = kf_mono_ms();
        rb->moves_total++;
        done++;
        /* our own picture until the usage records catch up */
        uint64_t mem = ref.memory_bytes, cpu = ref.cpu_millis;
        kf_node_load *from = &loads[hi];
        from->mem_used = from->mem_used > mem ? from->mem_used - mem : 0;
        from->cpu_used = from->cpu_used > cpu ? from->cpu_used - cpu : 0;
        from->slots_used = from->slots_used ? from->slots_used - 1 : 0;
        size_t t = find_load(loads, n, target);
        if (t < n) { /* the view reserved it there already; count it in our copy */
            loads[t].mem_used += mem;
            loads[t].cpu_used += cpu;
            loads[t].slots_used++;
        }
        size_t h2 = 0, l2 = 0;
        uint32_t sp2 = spread(loads, n, &h2, &l2);
        if (sp2 * 100ULL < (uint64_t)cfg->rebalance_low_pct * KF_PLACE_SCALE || h2 != hi)
            break; /* balanced, or another node is now the busiest: the next pass takes it */
    }
    return done;
}

int kf_rebalance_tick(kf_sched *s, kf_rebalance *rb) {
    const kf_sched_config *cfg = &s->cfg;
    int64_t now = kf_mono_ms();
    if (!cfg->rebalance || now < rb->next_ms)
        return 0;
    rb->next_ms = now + PASS_MS;
    moved_prune(rb, now, (int64_t)cfg->rebalance_window_s * 1000);
    kf_node_load *loads = NULL;
    size_t n = 0;
    int rc = kf_view_loads(s->view, &loads, &n);
    if (rc < 0)
        return rc;
    size_t hi = 0, lo = 0;
    uint32_t sp = n >= 2 ? spread(loads, n, &hi, &lo) : 0;
    uint64_t high = (uint64_t)cfg->rebalance_high_pct * KF_PLACE_SCALE / 100,
             low = (uint64_t)cfg->rebalance_low_pct * KF_PLACE_SCALE / 100;
    if (!rb->active && sp > high) {
        rb->active = true;
        kf_info("rebalance: loads spread %.1f%% (%s %.1f%%, %s %.1f%%) > %u%%: moving idle sessions", PCT(sp),
                loads[hi].node, PCT(kf_node_load_share(&loads[hi])), loads[lo].node,
                PCT(kf_node_load_share(&loads[lo])), cfg->rebalance_high_pct);
    } else if (rb->active && sp < low) {
        rb->active = false;
        kf_info("rebalance: balanced (spread %.1f%% < %u%%; %llu sessions moved so far)", PCT(sp),
                cfg->rebalance_low_pct, (unsigned long long)rb->moves_total);
    }
    rc = rb->active && n >= 2 ? move_from(s, rb, loads, n, hi) : 0;
    if (rc > 0)
        rb->next_ms = kf_mono_ms() + 2 * PASS_MS;
    free(loads);
    return rc;
}
