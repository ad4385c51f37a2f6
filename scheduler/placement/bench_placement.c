/* bench_placement.c - kf-bench-placement: placement decisions per second,
 * in process, at 100, 1,000 and 10,000 nodes, for the placement library and
 * for the naive baseline (placement_naive.c: filter every node, qsort the
 * candidates by score, take the first) on the same workload in the same run.
 *
 * Workload (deterministic, --seed): three node shapes, zone labels, 10 % of
 * nodes with a GPU label, warm pools. Requests of 256 MiB..2 GiB and
 * 50m..500m cpu (idle-heavy notebook sessions); 10 % require a zone, 2 % a
 * GPU. The cluster is first filled to 60 % of its session slots by direct
 * reservations (untimed); then each timed decision releases the
 * oldest session, picks, reserves on the chosen node and claims a warm
 * sandbox there if one is ready; every 16 decisions one node's pool is
 * refilled. So usage, scores and warm bonuses change under every decision
 * as they would in the scheduler or in `kfleetctl plan`.
 *
 * Prints figures only, no verdict. Both implementations follow the same
 * contract, so the first decisions of both runs are compared and the
 * agreement is printed.
 *
 * Usage: kf-bench-placement [--seconds S] [--seed N]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "placement.h"
#include "placement_naive.h"

#define GiB (1024ULL * 1024 * 1024)
#define MiB (1024ULL * 1024)

typedef struct impl {
    const char *name;
    void *ctx;
    int (*pick)(void *ctx, const kf_place_request *req, kf_place_result *res);
    void (*reserve)(void *ctx, int node, const kf_place_request *req);
    void (*release)(void *ctx, int node, const kf_place_request *req);
    void (*set_warm)(void *ctx, int node, uint32_t warm);
} impl;

/* ---- the library ---- */
static int lib_pick(void *c, const kf_place_request *req, kf_place_result *res) {
    return kf_placement_pick(c, req, res);
}
static void lib_reserve(void *c, int node, const kf_place_request *req) {
    kf_placement_reserve(c, node, req);
}
static void lib_release(void *c, int node, const kf_place_request *req) {
    kf_placement_release(c, node, req);
}
static void lib_set_warm(void *c, int node, uint32_t warm) {
    kf_placement_set_warm(c, node, warm);
}

/* ---- the naive baseline ---- */
static int nv_pick(void *c, const kf_place_request *req, kf_place_result *res) {
    return kf_naive_pick(c, req, res);
}
static void nv_reserve(void *c, int node, const kf_place_request *req) {
    kf_naive_reserve(c, node, req);
}
static void nv_release(void *c, int node, const kf_place_request *req) {
    kf_naive_release(c, node, req);
}
static void nv_set_warm(void *c, int node, uint32_t warm) {
    kf_naive_set_warm(c, node, warm);
}

static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *zones[] = {"zone=a", "zone=b", "zone=c"};

/* Node i of the benchmark cluster. */
static void cluster_node(int i, uint64_t *rs, char *id, size_t idsz, kf_place_node *n) {
    static const struct {
        uint64_t mem, cpu;
        uint32_t slots;
    } shape[] = {{64 * GiB, 16000, 64}, {32 * GiB, 8000, 32}, {128 * GiB, 32000, 128}};
    snprintf(id, idsz, "node-%05d", i);
    memset(n, 0, sizeof(*n));
    n->id = id;
    int s = (int)(rnd(rs) % 3);
    n->mem_capacity = shape[s].mem;
    n->cpu_capacity = shape[s].cpu;
    n->slot_capacity = shape[s].slots;
    n->warm_ready = (uint32_t)(rnd(rs) % 4);
    n->flags = KF_PLACE_NODE_READY;
    if (rnd(rs) % 50 == 0)
        n->flags |= KF_PLACE_NODE_CORDONED;
    n->labels[n->nlabels++] = zones[i % 3];
    if (rnd(rs) % 10 == 0)
        n->labels[n->nlabels++] = "gpu=true";
}

typedef struct live {
    int node;
    uint64_t mem, cpu;
} live;

typedef struct workload {
    uint64_t rs;
    live *ring;
    size_t cap, head, n; /* FIFO of placed sessions */
    int nodes;
    uint64_t failed;
} workload;

static void next_request(workload *w, kf_place_request *req, const char **labels) {
    static const uint64_t mems[] = {256 * MiB, 512 * MiB, 1 * GiB, 2 * GiB};
    static const uint64_t cpus[] = {50, 100, 200, 500};
    uint64_t r = rnd(&w->rs);
    memset(req, 0, sizeof(*req));
    req->memory = mems[r & 3];
    req->cpu = cpus[(r >> 2) & 3];
    unsigned k = (unsigned)((r >> 8) % 100);
    req->labels = labels;
    if (k < 10)
        labels[req->nlabels++] = zones[(r >> 16) % 3];
    else if (k < 12)
        labels[req->nlabels++] = "gpu=true";
    req->flags = KF_PLACE_NO_REASONS; /* what the planner's inner loop asks for */
}

/* One decision: pick, then reserve and claim a warm sandbox. Returns the
 * node or -1. */
static int decide(const impl *im, workload *w) {
    kf_place_request req;
    const char *labels[2];
    kf_place_result res;
    next_request(w, &req, labels);
    int node = im->pick(im->ctx, &req, &res);
    if (node < 0) {
        w->failed++;
        return -1;
    }
    req.flags |= KF_PLACE_CLAIM_WARM;
    im->reserve(im->ctx, node, &req);
    live *l = &w->ring[(w->head + w->n) % w->cap];
    l->node = node;
    l->mem = req.memory;
    l->cpu = req.cpu;
    w->n++;
    return node;
}

static void release_oldest(const impl *im, workload *w) {
    live *l = &w->ring[w->head];
    kf_place_request req = {.memory = l->mem, .cpu = l->cpu};
    im->release(im->ctx, l->node, &req);
    w->head = (w->head + 1) % w->cap;
    w->n--;
}

typedef struct run {
    double per_s;
    uint64_t decisions;
    uint64_t failed;
    uint64_t check;        /* FNV over the choices of the first check_at decisions */
} run;

/* Times decisions for `seconds` (at least `min_decisions`); records the
 * checksum of the first `check_at` choices. */
static run measure(const impl *im, workload *w, double seconds, uint64_t min_decisions,
                   uint64_t check_at) {
    run r = {0};
    uint64_t h = 1469598103934665603ULL;
    double t0 = now_s(), t = t0;
    uint64_t d = 0;
    while (d < min_decisions || t - t0 < seconds) {
        for (int k = 0; k < 64; k++, d++) {
            if (w->n == w->cap)
                release_oldest(im, w);
            int node = decide(im, w);
            if (d < check_at)
                h = (h ^ (uint64_t)(uint32_t)node) * 1099511628211ULL;
            if (d % 16 == 15) { /* the agent refills one pool */
                int n = (int)(rnd(&w->rs) % (uint64_t)w->nodes);
                im->set_warm(im->ctx, n, 1 + (uint32_t)(rnd(&w->rs) % 3));
            }
        }
        t = now_s();
    }
    r.decisions = d;
    r.failed = w->failed;
    r.per_s = (double)d / (t - t0);
    r.check = h;
    return r;
}

/* Builds the cluster in `im`, fills each node to 60 % of its slots, times
 * steady-state decisions. */
static int bench_one(const impl *im, int nodes, uint64_t seed, double seconds,
                     uint64_t min_decisions, uint64_t check_at, int (*add)(void *, int,
                     const kf_place_node *), run *out) {
    if (nodes <= 0)
        return -EINVAL;
    uint64_t rs = seed;
    for (int i = 0; i < nodes; i++) {
        char id[32];
        kf_place_node n;
        cluster_node(i, &rs, id, sizeof(id), &n);
        if (add(im->ctx, i, &n) < 0)
            return -ENOMEM;
    }
    workload w = {.rs = seed ^ 0x5eed, .nodes = nodes};
    uint32_t *fill = calloc((size_t)nodes, sizeof(*fill));
    if (!fill)
        return -ENOMEM;
    rs = seed;
    for (int i = 0; i < nodes; i++) {
        char id[32];
        kf_place_node n;
        cluster_node(i, &rs, id, sizeof(id), &n);
        fill[i] = n.slot_capacity * 6 / 10;
        w.cap += fill[i];
    }
    w.ring = calloc(w.cap, sizeof(*w.ring));
    if (!w.ring) {
        free(fill);
        return -ENOMEM;
    }
    /* Fill by direct reservations, round robin over the nodes, so the
     * untimed set-up does not cost the baseline minutes at 10,000 nodes. */
    for (uint32_t round = 0; w.n < w.cap; round++) {
        for (int i = 0; i < nodes && w.n < w.cap; i++) {
            if (round >= fill[i])
                continue;
            kf_place_request req;
            const char *labels[2];
            next_request(&w, &req, labels);
            im->reserve(im->ctx, i, &req);
            w.ring[w.n++] = (live){i, req.memory, req.cpu};
        }
    }
    free(fill);
    *out = measure(im, &w, seconds, min_decisions, check_at);
    free(w.ring);
    return 0;
}

static int lib_add(void *c, int i, const kf_place_node *n) {
    int r = kf_placement_add(c, n);
    return r == i ? 0 : -EINVAL;
}
static int nv_add(void *c, int i, const kf_place_node *n) {
    return kf_naive_set(c, i, n);
}

int main(int argc, char **argv) {
    double seconds = 1.0;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else {
            fprintf(stderr, "usage: %s [--seconds S] [--seed N]\n", argv[0]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    kf_place_policy pol = {KF_PLACE_SPREAD, 100000, 0};
    static const int sizes[] = {100, 1000, 10000};

    printf("placement decisions/s, in process, one thread (decision = pick + reserve + warm\n"
           "claim, with one release per decision at 60 %% slot occupancy); %.1f s per figure\n"
           "baseline = naive reference: filter all nodes, qsort candidates by score\n\n",
           seconds);
    printf("%7s %14s %10s %14s %10s %9s %s\n", "nodes", "library/s", "us/dec", "baseline/s",
           "us/dec", "speedup", "same choices (first n)");
    for (int mode = 0; mode < 2; mode++) {
        pol.mode = mode ? KF_PLACE_BINPACK : KF_PLACE_SPREAD;
        printf("%s, warm bonus %u:\n", mode ? "binpack" : "spread", pol.warm_bonus);
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            int n = sizes[s];
            kf_naive *nv = NULL;
            kf_placement *p = NULL;
            if (kf_naive_new(&nv, &pol) < 0 || kf_placement_new(&p, &pol) < 0) {
                fprintf(stderr, "out of memory\n");
                return 1;
            }
            impl base = {"baseline", nv, nv_pick, nv_reserve, nv_release, nv_set_warm};
            impl lib = {"library", p, lib_pick, lib_reserve, lib_release, lib_set_warm};
            run rb, rl;
            /* the baseline first: its decision count bounds the comparison */
            if (bench_one(&base, n, seed + (uint64_t)n, seconds / 2, 256, UINT64_MAX, nv_add,
                          &rb) < 0 ||
                bench_one(&lib, n, seed + (uint64_t)n, seconds, rb.decisions,
                          rb.decisions, lib_add, &rl) < 0) {
                fprintf(stderr, "out of memory\n");
                return 1;
            }
            printf("%7d %14.0f %10.3f %14.0f %10.3f %8.1fx %s (%llu)\n", n, rl.per_s,
                   1e6 / rl.per_s, rb.per_s, 1e6 / rb.per_s, rl.per_s / rb.per_s,
                   rl.check == rb.check ? "yes" : "NO", (unsigned long long)rb.decisions);
            kf_placement_free(p);
            kf_naive_free(nv);
        }
    }
    return 0;
}
