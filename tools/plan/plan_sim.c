/* plan_sim.c - the discrete-event simulation: sessions arrive (a
 * non-homogeneous Poisson process following the daily curve, by thinning),
 * are placed by the real placement library (or the naive reference, for the
 * benchmark's baseline), hold their node's memory, cpu and slot for their
 * duration (plus the idle expiry if abandoned), and leave. A session that
 * fits nowhere is rejected, or waits in a FIFO queue up to max_wait when
 * there is one; every departure retries the queue's head.
 *
 * Everything is allocated before the first event: the placement's nodes,
 * the departure heap (sized by the cluster's slots: no more sessions can run
 * at once), the queue, the wait records and the samples. An event costs
 * O(log n) in the heap plus one pick and one reserve or release, O(log N)
 * in the placement's indexes.
 *
 * Random draws do not depend on the cluster: every arrival draws its shape
 * and holding time whether or not it is placed, so runs of the same config
 * at different node counts see the same arrivals (common random numbers,
 * which keeps the node-count search monotone in practice).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "placement_naive.h"
#include "plan_internal.h"

typedef struct waiter {
    double t;    /* arrival */
    double hold; /* holding time once placed */
    uint32_t shape;
} waiter;

typedef struct sim {
    const kf_plan_config *c;
    kf_plan_engine engine;
    kf_placement *p;
    kf_naive *nv;
    kf_place_request req[KF_PLAN_SHAPES_MAX];
    double cdf[KF_PLAN_SHAPES_MAX];
    kf_plan_heap heap;
    waiter *q;
    size_t qhead, qn, qcap;
    float *waits; /* seconds waited by sessions placed from the queue */
    size_t nwaits;
    kf_plan_rng arrivals, draws;
    uint32_t running;
    uint64_t mem_used, cpu_used;
    uint32_t iv_arrived, iv_rejected; /* since the last sample */
    double util_sum;
    size_t samples_cap;
    kf_plan_result *r;
} sim;

static void sim_done(sim *s) {
    kf_placement_free(s->p);
    kf_naive_free(s->nv);
    free(s->heap.ev);
    free(s->q);
    free(s->waits);
}

/* ---- placement, through either engine ------------------------------------------ */

static int pick(sim *s, uint32_t shape) {
    kf_place_result res;
    if (s->engine == KF_PLAN_ENGINE_NAIVE)
        return kf_naive_pick(s->nv, &s->req[shape], &res);
    return kf_placement_pick(s->p, &s->req[shape], &res);
}

static void reserve(sim *s, int node, uint32_t shape) {
    if (s->engine == KF_PLAN_ENGINE_NAIVE)
        kf_naive_reserve(s->nv, node, &s->req[shape]);
    else
        kf_placement_reserve(s->p, node, &s->req[shape]);
}

static void release(sim *s, int node, uint32_t shape) {
    if (s->engine == KF_PLAN_ENGINE_NAIVE)
        kf_naive_release(s->nv, node, &s->req[shape]);
    else
        kf_placement_release(s->p, node, &s->req[shape]);
}

/* ---- set-up ---------------------------------------------------------------------- */

static int add_nodes(sim *s, uint32_t nodes, kf_error *err) {
    const kf_plan_config *c = s->c;
    uint32_t counts[KF_PLAN_GROUPS_MAX];
    kf_plan_group_counts(c, nodes, counts);
    int idx = 0;
    for (unsigned g = 0; g < c->ngroups; g++) {
        const kf_plan_group *grp = &c->groups[g];
        for (uint32_t i = 0; i < counts[g]; i++, idx++) {
            char id[KF_PLACE_ID_MAX + 1];
            snprintf(id, sizeof(id), "%s-%05u", grp->name, i);
            kf_place_node n = {.id = id, .mem_capacity = grp->memory, .cpu_capacity = grp->cpu,
                               .slot_capacity = grp->slots, .flags = KF_PLACE_NODE_READY, .nlabels = grp->nlabels};
            for (unsigned l = 0; l < grp->nlabels; l++)
                n.labels[l] = grp->labels[l];
            int r = s->engine == KF_PLAN_ENGINE_NAIVE ? kf_naive_set(s->nv, idx, &n) : kf_placement_add(s->p, &n);
            if (r < 0)
                return kf_error_set(err, r, 0, "node %s: %s", id, strerror(-r));
            s->r->mem_capacity += grp->memory;
            s->r->cpu_capacity += grp->cpu;
            s->r->slot_capacity += grp->slots;
        }
    }
    s->r->nodes = (uint32_t)idx;
    return 0;
}

static int sim_init(sim *s, const kf_plan_config *c, uint32_t nodes, kf_plan_engine engine, kf_plan_result *r,
                    kf_error *err) {
    int rc;
    s->c = c;
    s->engine = engine;
    s->r = r;
    rc = engine == KF_PLAN_ENGINE_NAIVE ? kf_naive_new(&s->nv, &c->policy) : kf_placement_new(&s->p, &c->policy);
    if (rc < 0)
        return kf_error_set(err, rc, 0, "cannot create the placement: %s", strerror(-rc));
    if ((rc = add_nodes(s, nodes, err)) < 0)
        return rc;
    double wsum = 0;
    for (unsigned i = 0; i < c->nshapes; i++)
        wsum += c->shapes[i].weight;
    double acc = 0;
    for (unsigned i = 0; i < c->nshapes; i++) {
        acc += c->shapes[i].weight / wsum;
        s->cdf[i] = acc;
        s->req[i] = (kf_place_request){.memory = c->shapes[i].memory, .cpu = c->shapes[i].cpu,
                                       .flags = KF_PLACE_NO_REASONS};
    }
    s->cdf[c->nshapes - 1] = 1.0;
    /* At most min(slots, arrivals) sessions run at once: pick never fills a
     * slot twice. */
    s->heap.cap = r->slot_capacity < c->max_sessions ? (size_t)r->slot_capacity : c->max_sessions;
    s->heap.ev = malloc((s->heap.cap + 1) * sizeof(*s->heap.ev));
    if (c->max_wait_s > 0) {
        s->qcap = c->queue_max;
        s->q = malloc(s->qcap * sizeof(*s->q));
        s->waits = malloc((size_t)c->max_sessions * sizeof(*s->waits));
    }
    r->nsamples = 0;
    size_t nsamples = (size_t)floor(c->duration_s / c->step_s) + 2;
    r->samples = calloc(nsamples, sizeof(*r->samples));
    s->samples_cap = nsamples;
    if (!s->heap.ev || (c->max_wait_s > 0 && (!s->q || !s->waits)) || !r->samples)
        return kf_error_set(err, -ENOMEM, 0, "out of memory for a simulation of %u nodes", r->nodes);
    kf_plan_rng_seed(&s->arrivals, c->seed);
    kf_plan_rng_seed(&s->draws, c->seed ^ 0x6a09e667f3bcc909ull);
    return 0;
}

/* ---- events ---------------------------------------------------------------------- */

static void sample(sim *s, double t) {
    kf_plan_result *r = s->r;
    if (r->nsamples == s->samples_cap)
        return; /* rounding of the step added one more than allocated */
    kf_plan_sample *x = &r->samples[r->nsamples++];
    *x = (kf_plan_sample){.t = t, .running = s->running, .waiting = (uint32_t)s->qn, .arrived = s->iv_arrived,
                          .rejected = s->iv_rejected, .mem_used = s->mem_used, .cpu_used = s->cpu_used};
    s->iv_arrived = s->iv_rejected = 0;
    double u = kf_plan_sample_util(r, x);
    s->util_sum += u;
    r->peak_util = fmax(r->peak_util, u);
}

static void place(sim *s, int node, uint32_t shape, double t, double hold) {
    reserve(s, node, shape);
    s->running++;
    s->mem_used += s->req[shape].memory;
    s->cpu_used += s->req[shape].cpu;
    if (s->running > s->r->peak_running)
        s->r->peak_running = s->running;
    s->r->accepted++;
    /* Cannot fail: running <= slots and <= arrivals, the heap's size. */
    (void)kf_plan_heap_push(&s->heap, (kf_plan_event){.t = t + hold, .node = node, .shape = shape});
}

static void reject(sim *s) {
    s->r->rejected++;
    s->iv_rejected++;
}

/* Drops waiters whose max_wait has passed (deadlines are in queue order,
 * so they are all at the head), then places waiters from the head while
 * they fit. */
static void serve_queue(sim *s, double t, bool try_place) {
    while (s->qn > 0) {
        waiter *w = &s->q[s->qhead];
        if (t - w->t > s->c->max_wait_s) {
            reject(s);
        } else {
            int node;
            if (!try_place || (node = pick(s, w->shape)) < 0)
                return;
            place(s, node, w->shape, t, w->hold);
            s->waits[s->nwaits++] = (float)(t - w->t);
            s->r->waited++;
        }
        s->qhead = (s->qhead + 1) % s->qcap;
        s->qn--;
    }
}

static void arrive(sim *s, double t) {
    uint32_t shape = 0;
    double u = kf_plan_rng_unit(&s->draws);
    while (shape + 1 < s->c->nshapes && u > s->cdf[shape])
        shape++;
    double hold = kf_plan_dist_sample(&s->c->duration, &s->draws);
    double ab = kf_plan_rng_unit(&s->draws), idle = kf_plan_dist_sample(&s->c->idle, &s->draws);
    if (ab <= s->c->abandon)
        hold += idle;
    s->r->arrived++;
    s->iv_arrived++;
    if (s->q)
        serve_queue(s, t, false);
    int node;
    if (s->qn == 0 && (node = pick(s, shape)) >= 0) {
        place(s, node, shape, t, hold);
    } else if (s->q && s->qn < s->qcap) {
        s->q[(s->qhead + s->qn) % s->qcap] = (waiter){.t = t, .hold = hold, .shape = shape};
        s->qn++;
    } else {
        reject(s);
    }
}

static void depart(sim *s, const kf_plan_event *e) {
    release(s, e->node, e->shape);
    s->running--;
    s->mem_used -= s->req[e->shape].memory;
    s->cpu_used -= s->req[e->shape].cpu;
    if (s->q)
        serve_queue(s, e->t, true);
}

/* The next arrival after t: candidates at the curve's peak rate, each kept
 * with probability rate(t)/peak (thinning). INFINITY past the end. */
static double next_arrival(sim *s, double t, double peak, double end) {
    for (;;) {
        t += -log(kf_plan_rng_unit(&s->arrivals)) / peak;
        if (t > end)
            return INFINITY;
        if (s->c->npoints == 1 || kf_plan_rng_unit(&s->arrivals) * peak <= kf_plan_rate_at(s->c, t))
            return t;
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The p-th percentile of the waits of `n` sessions of which only the
 * sorted `nw` nonzero ones are recorded, plus `inf` more that count as
 * waiting forever. */
static double percentile(const float *w, size_t nw, uint64_t n, uint64_t inf, double p) {
    uint64_t all = n + inf;
    if (all == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)all);
    if (rank == 0)
        rank = 1;
    uint64_t zeros = n - nw;
    if (rank <= zeros)
        return 0;
    if (rank > n)
        return INFINITY;
    return w[rank - zeros - 1];
}

static void finish(sim *s, double end) {
    kf_plan_result *r = s->r;
    if (s->q)
        serve_queue(s, end, false);
    r->pending = s->qn;
    r->sim_end_s = end;
    uint64_t done = r->arrived - r->pending;
    r->rejection_rate = done ? (double)r->rejected / (double)done : 0;
    r->mean_util = r->nsamples ? s->util_sum / (double)r->nsamples : 0;
    if (s->nwaits)
        qsort(s->waits, s->nwaits, sizeof(*s->waits), cmp_float);
    r->wait_p50 = percentile(s->waits, s->nwaits, r->accepted, 0, 50);
    r->wait_p95 = percentile(s->waits, s->nwaits, r->accepted, 0, 95);
    r->wait_p99 = percentile(s->waits, s->nwaits, r->accepted, 0, 99);
    r->wait_max = s->nwaits ? s->waits[s->nwaits - 1] : 0;
    r->wait_pct = percentile(s->waits, s->nwaits, r->accepted, r->rejected, s->c->target_pct);
}

int kf_plan_run(const kf_plan_config *c, uint32_t nodes, kf_plan_engine engine, kf_plan_result *out,
                kf_error *err) {
    memset(out, 0, sizeof(*out));
    int rc = kf_plan_config_check(c, err);
    if (rc < 0)
        return rc;
    if (nodes > KF_PLAN_NODES_MAX)
        return kf_error_set(err, -EINVAL, 0, "%u nodes: at most %u", nodes, KF_PLAN_NODES_MAX);
    sim s = {0};
    if ((rc = sim_init(&s, c, nodes, engine, out, err)) < 0)
        goto fail;
    if (out->nodes == 0) {
        rc = kf_error_set(err, -EINVAL, 0, "nodes: a cluster of 0 nodes");
        goto fail;
    }
    double end = c->duration_s, peak = kf_plan_peak_rate(c), next_sample = 0;
    double ta = next_arrival(&s, 0, peak, end);
    for (;;) {
        double td = s.heap.n ? s.heap.ev[0].t : INFINITY;
        double t = fmin(ta, td);
        if (t > end)
            break;
        while (next_sample <= t) {
            sample(&s, next_sample);
            next_sample += c->step_s;
        }
        out->events++;
        if (ta <= td) {
            arrive(&s, ta);
            if (out->arrived >= c->max_sessions) {
                end = ta; /* the session budget is spent: the run ends here */
                break;
            }
            ta = next_arrival(&s, ta, peak, end);
        } else {
            kf_plan_event e;
            kf_plan_heap_pop(&s.heap, &e);
            depart(&s, &e);
        }
    }
    while (next_sample <= end) {
        sample(&s, next_sample);
        next_sample += c->step_s;
    }
    finish(&s, end);
    sim_done(&s);
    return 0;
fail:
    sim_done(&s);
    kf_plan_result_done(out);
    return rc;
}

double kf_plan_sample_util(const kf_plan_result *r, const kf_plan_sample *s) {
    return fmax((double)s->mem_used / (double)r->mem_capacity,
                fmax((double)s->cpu_used / (double)r->cpu_capacity, (double)s->running / (double)r->slot_capacity));
}

void kf_plan_result_done(kf_plan_result *r) {
    free(r->samples);
    r->samples = NULL;
    r->nsamples = 0;
}
