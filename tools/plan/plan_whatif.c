/* plan_whatif.c - what-ifs on a snapshot of the live cluster: the nodes as
 * kfleetctl read them from the scheduler (capacity, reported usage,
 * cordons) loaded into the real placement library, then asked "if these
 * nodes went away (a drain, a lost node or zone), would their sessions fit
 * elsewhere?" and "how many more sessions of this shape fit?". Every
 * session is placed by kf_placement_pick() exactly as the scheduler would
 * place it, so cordoned and not-ready nodes take nothing.
 *
 * Owns the placement and a copy of the node ids; the caller's node array is
 * not kept. One caller at a time.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "plan_internal.h"

/* Sessions moved by one what-if, at most (a guard on absurd usage numbers). */
#define MOVE_SESSIONS_MAX 10000000u

struct kf_plan_cluster {
    kf_placement *p;
    size_t n;
    char (*ids)[KF_PLACE_ID_MAX + 1]; /* by placement index */
};

int kf_plan_cluster_new(kf_plan_cluster **out, const kf_place_node *nodes, size_t n, const kf_place_policy *policy,
                        kf_error *err) {
    if (n > KF_PLACE_NODES_MAX)
        return kf_error_set(err, -EINVAL, 0, "%zu nodes: at most %d", n, KF_PLACE_NODES_MAX);
    kf_plan_cluster *pc = calloc(1, sizeof(*pc));
    if (!pc)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    pc->ids = calloc(n ? n : 1, sizeof(*pc->ids));
    int r = pc->ids ? kf_placement_new(&pc->p, policy) : -ENOMEM;
    if (r < 0) {
        kf_plan_cluster_free(pc);
        return kf_error_set(err, r, 0, "cannot create the placement: %s", strerror(-r));
    }
    for (size_t i = 0; i < n; i++) {
        int idx = kf_placement_add(pc->p, &nodes[i]);
        if (idx < 0) {
            kf_error_set(err, idx, 0, "node '%s': %s", nodes[i].id ? nodes[i].id : "(null)",
                         idx == -EEXIST ? "listed twice" : idx == -EINVAL ? "malformed (id, capacity or labels)"
                                                                           : strerror(-idx));
            kf_plan_cluster_free(pc);
            return idx;
        }
        /* A fresh placement hands out 0, 1, 2, ... */
        snprintf(pc->ids[idx], sizeof(pc->ids[idx]), "%s", nodes[i].id);
        pc->n++;
    }
    *out = pc;
    return 0;
}

kf_plan_cluster *kf_plan_cluster_free(kf_plan_cluster *pc) {
    if (pc) {
        kf_placement_free(pc->p);
        free(pc->ids);
        free(pc);
    }
    return NULL;
}

static bool takes_sessions(const kf_place_node *n) {
    return (n->flags & KF_PLACE_NODE_READY) && !(n->flags & (KF_PLACE_NODE_CORDONED | KF_PLACE_NODE_DRAINING));
}

static uint64_t sub0(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

/* Free capacity on the nodes that take sessions. */
static void free_capacity(const kf_plan_cluster *pc, kf_plan_move *m) {
    m->free_slots = m->free_memory = m->free_cpu = 0;
    for (int i = 0; i < kf_placement_end(pc->p); i++) {
        kf_place_node n;
        if (kf_placement_get(pc->p, i, &n) < 0 || !takes_sessions(&n))
            continue;
        m->free_slots += sub0(n.slot_capacity, n.slots_used);
        m->free_memory += sub0(n.mem_capacity, n.mem_used);
        m->free_cpu += sub0(n.cpu_capacity, n.cpu_used);
    }
}

/* Places one session of req; on the first failure (*why still empty) asks
 * the placement for its reasons and explains them. Returns the node or < 0. */
static int place_one(kf_plan_cluster *pc, kf_place_request *req, char *why, size_t why_size) {
    kf_place_result res;
    int node = kf_placement_pick(pc->p, req, &res);
    if (node >= 0) {
        kf_placement_reserve(pc->p, node, req);
        return node;
    }
    if (why_size && !why[0]) {
        req->flags &= ~KF_PLACE_NO_REASONS;
        if (kf_placement_pick(pc->p, req, &res) == -ENOSPC)
            kf_place_explain(req, &res, why, why_size);
        req->flags |= KF_PLACE_NO_REASONS;
    }
    return node;
}

typedef struct moved {
    uint64_t memory, cpu;
} moved;

static int by_size_desc(const void *a, const void *b) {
    const moved *x = a, *y = b;
    if (x->memory != y->memory)
        return x->memory < y->memory ? 1 : -1;
    return (x->cpu < y->cpu) - (x->cpu > y->cpu);
}

int kf_plan_remove_nodes(kf_plan_cluster *pc, const char *const *ids, size_t n, kf_plan_move *out, kf_error *err) {
    memset(out, 0, sizeof(*out));
    _cleanup_free_ int *idx = calloc(n ? n : 1, sizeof(*idx));
    if (!idx)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    /* Every id first, so a typo changes nothing. */
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        idx[i] = kf_placement_find(pc->p, ids[i]);
        if (idx[i] < 0)
            return kf_error_set(err, -ENOENT, KF_ST_NOT_FOUND, "no node '%s' in the cluster", ids[i]);
        for (size_t j = 0; j < i; j++)
            if (idx[j] == idx[i])
                idx[i] = -1; /* named twice: moved once */
        kf_place_node nd;
        if (idx[i] >= 0 && kf_placement_get(pc->p, idx[i], &nd) == 0)
            total += nd.slots_used;
    }
    if (total > MOVE_SESSIONS_MAX)
        return kf_error_set(err, -E2BIG, 0, "%llu sessions to move, more than %u", (unsigned long long)total,
                            MOVE_SESSIONS_MAX);
    _cleanup_free_ moved *s = calloc(total ? total : 1, sizeof(*s));
    if (!s)
        return kf_error_set(err, -ENOMEM, 0, "out of memory for %llu sessions", (unsigned long long)total);
    size_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        kf_place_node nd;
        if (idx[i] < 0 || kf_placement_get(pc->p, idx[i], &nd) < 0)
            continue;
        /* The node's sessions as equal shares of its reserved totals; the
         * first (total mod count) get one unit more, so the sums are exact. */
        uint32_t k = nd.slots_used;
        for (uint32_t j = 0; j < k; j++, ns++) {
            s[ns].memory = nd.mem_used / k + (j < nd.mem_used % k);
            s[ns].cpu = nd.cpu_used / k + (j < nd.cpu_used % k);
        }
        kf_placement_set_flags(pc->p, idx[i], nd.flags | KF_PLACE_NODE_CORDONED);
        kf_placement_set_usage(pc->p, idx[i], 0, 0, 0);
        out->nodes_removed++;
    }
    qsort(s, ns, sizeof(*s), by_size_desc);
    out->sessions = ns;
    for (size_t i = 0; i < ns; i++) {
        kf_place_request req = {.memory = s[i].memory, .cpu = s[i].cpu, .flags = KF_PLACE_NO_REASONS};
        if (place_one(pc, &req, out->why, sizeof(out->why)) >= 0)
            out->placed++;
        else
            out->unplaced++;
    }
    free_capacity(pc, out);
    return 0;
}

int64_t kf_plan_fit(kf_plan_cluster *pc, uint64_t memory, uint64_t cpu, uint64_t limit, char *why, size_t why_size) {
    if (why_size)
        why[0] = '\0';
    kf_place_request req = {.memory = memory, .cpu = cpu, .flags = KF_PLACE_NO_REASONS};
    int64_t n = 0;
    while ((uint64_t)n < limit) {
        int node = place_one(pc, &req, why, why_size);
        if (node == -EINVAL)
            return -EINVAL;
        if (node < 0)
            break;
        n++;
    }
    if ((uint64_t)n >= limit && why_size)
        snprintf(why, why_size, "stopped at the limit of %llu sessions", (unsigned long long)limit);
    return n;
}

size_t kf_plan_nodes_with_label(const kf_plan_cluster *pc, const char *label, const char **ids, size_t max) {
    size_t k = 0;
    for (int i = 0; i < kf_placement_end(pc->p) && k < max; i++) {
        kf_place_node n;
        if (kf_placement_get(pc->p, i, &n) < 0)
            continue;
        for (unsigned l = 0; l < n.nlabels; l++)
            if (!strcmp(n.labels[l], label)) {
                ids[k++] = pc->ids[i];
                break;
            }
    }
    return k;
}

typedef struct busy {
    uint32_t sessions;
    uint64_t memory;
    const char *id;
} busy;

static int by_busy_desc(const void *a, const void *b) {
    const busy *x = a, *y = b;
    if (x->sessions != y->sessions)
        return x->sessions < y->sessions ? 1 : -1;
    if (x->memory != y->memory)
        return x->memory < y->memory ? 1 : -1;
    return strcmp(x->id, y->id);
}

size_t kf_plan_busiest_nodes(const kf_plan_cluster *pc, size_t count, const char **ids, size_t max) {
    _cleanup_free_ busy *b = calloc(pc->n ? pc->n : 1, sizeof(*b));
    if (!b)
        return 0;
    size_t n = 0;
    for (int i = 0; i < kf_placement_end(pc->p) && n < pc->n; i++) {
        kf_place_node nd;
        if (kf_placement_get(pc->p, i, &nd) == 0)
            b[n++] = (busy){nd.slots_used, nd.mem_used, pc->ids[i]};
    }
    qsort(b, n, sizeof(*b), by_busy_desc);
    size_t k = 0;
    for (; k < n && k < count && k < max; k++)
        ids[k] = b[k].id;
    return k;
}
