/* plan_model.c - the workload model's arithmetic: the random number
 * generator and the duration samplers, the daily arrival curve, node counts
 * per group, the departure heap, and the closed forms (means, Erlang B) the
 * simulation is checked against. No allocation anywhere in this file.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "plan_internal.h"

/* ---- random numbers ------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kf_plan_rng_seed(kf_plan_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t kf_plan_rng_next(kf_plan_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double kf_plan_rng_unit(kf_plan_rng *r) { return ((kf_plan_rng_next(r) >> 11) + 1) * 0x1.0p-53; }

double kf_plan_dist_sample(const kf_plan_dist *d, kf_plan_rng *r) {
    switch (d->kind) {
    case KF_PLAN_EXPONENTIAL:
        return -d->a * log(kf_plan_rng_unit(r));
    case KF_PLAN_LOGNORMAL: {
        if (d->a <= 0)
            return 0;
        /* mean a: mu = ln a - sigma^2/2. Box-Muller, one of the pair. */
        double u1 = kf_plan_rng_unit(r), u2 = kf_plan_rng_unit(r);
        double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        return exp(log(d->a) - d->b * d->b / 2 + d->b * z);
    }
    case KF_PLAN_UNIFORM:
        return d->a + (d->b - d->a) * kf_plan_rng_unit(r);
    case KF_PLAN_FIXED:
    default:
        return d->a;
    }
}

double kf_plan_dist_mean(const kf_plan_dist *d) {
    return d->kind == KF_PLAN_UNIFORM ? (d->a + d->b) / 2 : d->a;
}

double kf_plan_mean_hold(const kf_plan_config *c) {
    return kf_plan_dist_mean(&c->duration) + c->abandon * kf_plan_dist_mean(&c->idle);
}

/* ---- the daily curve -------------------------------------------------------------- */

double kf_plan_rate_at(const kf_plan_config *c, double t) {
    const kf_plan_point *p = c->curve;
    unsigned n = c->npoints;
    if (n == 1)
        return p[0].rate;
    double tod = fmod(t, KF_PLAN_DAY_S);
    const kf_plan_point *a, *b;
    double a_at, b_at;
    if (tod < p[0].at || tod >= p[n - 1].at) { /* the segment across midnight */
        a = &p[n - 1];
        b = &p[0];
        a_at = a->at - (tod < p[0].at ? KF_PLAN_DAY_S : 0);
        b_at = b->at + (tod < p[0].at ? 0 : KF_PLAN_DAY_S);
    } else { /* the last point at or before tod: O(log n) */
        unsigned lo = 0, hi = n - 1;
        while (hi - lo > 1) {
            unsigned mid = (lo + hi) / 2;
            if (p[mid].at <= tod)
                lo = mid;
            else
                hi = mid;
        }
        a = &p[lo];
        b = &p[hi];
        a_at = a->at;
        b_at = b->at;
    }
    return a->rate + (b->rate - a->rate) * (tod - a_at) / (b_at - a_at);
}

double kf_plan_mean_rate(const kf_plan_config *c) {
    if (c->npoints == 1)
        return c->curve[0].rate;
    double area = 0;
    for (unsigned i = 0; i < c->npoints; i++) {
        const kf_plan_point *a = &c->curve[i], *b = &c->curve[(i + 1) % c->npoints];
        double len = b->at - a->at + (i + 1 == c->npoints ? KF_PLAN_DAY_S : 0);
        area += (a->rate + b->rate) / 2 * len;
    }
    return area / KF_PLAN_DAY_S;
}

double kf_plan_peak_rate(const kf_plan_config *c) {
    double m = 0;
    for (unsigned i = 0; i < c->npoints; i++)
        m = fmax(m, c->curve[i].rate);
    return m;
}

/* ---- nodes ------------------------------------------------------------------------- */

void kf_plan_group_counts(const kf_plan_config *c, uint32_t nodes, uint32_t *counts) {
    uint64_t total = 0;
    for (unsigned i = 0; i < c->ngroups; i++)
        total += c->groups[i].count;
    if (nodes == 0) {
        for (unsigned i = 0; i < c->ngroups; i++)
            counts[i] = c->groups[i].count;
        return;
    }
    /* Largest remainder: floor shares, then one more to the groups whose
     * share lost the most, lowest index first on ties. */
    double rem[KF_PLAN_GROUPS_MAX];
    uint32_t given = 0;
    for (unsigned i = 0; i < c->ngroups; i++) {
        double share = total ? (double)nodes * c->groups[i].count / (double)total : (double)nodes / c->ngroups;
        counts[i] = (uint32_t)floor(share);
        rem[i] = share - counts[i];
        given += counts[i];
    }
    while (given < nodes) {
        unsigned best = 0;
        for (unsigned i = 1; i < c->ngroups; i++)
            if (rem[i] > rem[best])
                best = i;
        counts[best]++;
        rem[best] = -1;
        given++;
    }
}

/* ---- the departure heap -------------------------------------------------------------- */

int kf_plan_heap_push(kf_plan_heap *h, kf_plan_event e) {
    if (h->n == h->cap)
        return -ENOSPC;
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->ev[parent].t <= e.t)
            break;
        h->ev[i] = h->ev[parent];
        i = parent;
    }
    h->ev[i] = e;
    return 0;
}

int kf_plan_heap_pop(kf_plan_heap *h, kf_plan_event *e) {
    if (h->n == 0)
        return -ENOENT;
    *e = h->ev[0];
    kf_plan_event last = h->ev[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n)
            break;
        size_t m = l + 1 < n && h->ev[l + 1].t < h->ev[l].t ? l + 1 : l;
        if (last.t <= h->ev[m].t)
            break;
        h->ev[i] = h->ev[m];
        i = m;
    }
    if (n > 0)
        h->ev[i] = last;
    return 0;
}

/* ---- Erlang B ---------------------------------------------------------------------- */

double kf_erlang_b(double erlangs, uint64_t servers) {
    /* B(0) = 1; B(k) = A B(k-1) / (k + A B(k-1)): every term in [0, 1]. */
    double b = 1;
    for (uint64_t k = 1; k <= servers; k++) {
        b = erlangs * b / ((double)k + erlangs * b);
        /* Past k > A every step shrinks b: stop once it no longer matters,
         * so a cluster of 10^10 slots does not cost 10^10 steps. */
        if (b < 1e-300 && (double)k > erlangs)
            return 0;
    }
    return b;
}

void kf_plan_erlang_check(const kf_plan_config *c, uint32_t nodes, kf_plan_erlang *out) {
    /* The mean shape (weighted); a node holds as many of it as its scarcest
     * resource allows, at most its slots. */
    double wsum = 0, mem = 0, cpu = 0;
    for (unsigned i = 0; i < c->nshapes; i++) {
        wsum += c->shapes[i].weight;
        mem += c->shapes[i].weight * (double)c->shapes[i].memory;
        cpu += c->shapes[i].weight * (double)c->shapes[i].cpu;
    }
    mem /= wsum;
    cpu /= wsum;
    uint32_t counts[KF_PLAN_GROUPS_MAX];
    kf_plan_group_counts(c, nodes, counts);
    uint64_t servers = 0;
    for (unsigned i = 0; i < c->ngroups; i++) {
        const kf_plan_group *g = &c->groups[i];
        double per = fmin(g->slots, fmin(floor((double)g->memory / mem), floor((double)g->cpu / cpu)));
        servers += (uint64_t)per * counts[i];
    }
    double hold = kf_plan_mean_hold(c);
    out->servers = servers;
    out->offered = kf_plan_mean_rate(c) * hold;
    out->blocking = kf_erlang_b(out->offered, servers);
    out->peak_offered = kf_plan_peak_rate(c) * hold;
    out->peak_blocking = kf_erlang_b(out->peak_offered, servers);
}
