/* test_placement.c - unit tests of the placement library
 * (scheduler/placement): every filter and its reason count, spread against
 * binpack, the warm-pool bonus, labels, exclusions, the documented tie-break,
 * reserve/release accounting, the user-facing explanation, and a randomized
 * comparison of the indexed pick against the naive reference
 * (placement_naive.c) over thousands of random clusters and operations.
 * KF_TEST_SEED=n replays the randomized test with another seed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "placement.h"
#include "placement_internal.h"
#include "placement_naive.h"

#define GiB (1024ULL * 1024 * 1024)
#define MiB (1024ULL * 1024)

static kf_place_node mk(const char *id, uint64_t mem, uint64_t cpu, uint32_t slots) {
    kf_place_node n = {0};
    n.id = id;
    n.mem_capacity = mem;
    n.cpu_capacity = cpu;
    n.slot_capacity = slots;
    n.flags = KF_PLACE_NODE_READY;
    return n;
}

static kf_placement *new_placement(kf_place_mode mode, uint32_t bonus) {
    kf_place_policy pol = {mode, bonus, 0};
    kf_placement *p = NULL;
    assert_int_equal(kf_placement_new(&p, &pol), 0);
    return p;
}

static int add(kf_placement *p, kf_place_node n) {
    int i = kf_placement_add(p, &n);
    assert_true(i >= 0);
    return i;
}

static int pick(kf_placement *p, uint64_t mem, uint64_t cpu) {
    kf_place_request req = {.memory = mem, .cpu = cpu};
    kf_place_result res;
    return kf_placement_pick(p, &req, &res);
}

static void check(kf_placement *p) {
    assert_int_equal(kf__placement_check(p), 0);
}

static void test_add_find_get(void **state) {
    (void)state;
    kf_placement *p = new_placement(KF_PLACE_SPREAD, 0);
    kf_place_node n = mk("node-a", 8 * GiB, 4000, 16);
    n.nlabels = 2;
    n.labels[0] = "zone=a";
    n.labels[1] = "gpu=true";
    n.warm_ready = 3;
    int a = kf_placement_add(p, &n);
    assert_int_equal(a, 0);
    assert_int_equal(kf_placement_add(p, &n), -EEXIST);
    int b = add(p, mk("node-b", 8 * GiB, 4000, 16));
    assert_int_equal(b, 1);
    assert_int_equal(kf_placement_find(p, "node-a"), a);
    assert_int_equal(kf_placement_find(p, "node-b"), b);
    assert_int_equal(kf_placement_find(p, "node-c"), -ENOENT);
    assert_int_equal(kf_placement_count(p), 2);

    kf_place_node g;
    assert_int_equal(kf_placement_get(p, a, &g), 0);
    assert_string_equal(g.id, "node-a");
    assert_int_equal(g.mem_capacity, 8 * GiB);
    assert_int_equal(g.cpu_capacity, 4000);
    assert_int_equal(g.slot_capacity, 16);
    assert_int_equal(g.warm_ready, 3);
    assert_int_equal(g.nlabels, 2);
    assert_string_equal(g.labels[0], "zone=a");
    assert_string_equal(g.labels[1], "gpu=true");

    /* invalid descriptions */
    kf_place_node bad = mk("x", 0, 1, 1);
    assert_int_equal(kf_placement_add(p, &bad), -EINVAL);
    bad = mk("x", 1, 1, 0);
    assert_int_equal(kf_placement_add(p, &bad), -EINVAL);
    bad = mk("", 1, 1, 1);
    assert_int_equal(kf_placement_add(p, &bad), -EINVAL);
    char longid[KF_PLACE_ID_MAX + 2];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    bad = mk(longid, 1, 1, 1);
    assert_int_equal(kf_placement_add(p, &bad), -EINVAL);
    longid[KF_PLACE_ID_MAX] = '\0'; /* exactly the maximum */
    bad = mk(longid, 1, 1, 1);
    assert_true(kf_placement_add(p, &bad) >= 0);
    bad = mk("dup", 1, 1, 1);
    bad.nlabels = 2;
    bad.labels[0] = bad.labels[1] = "zone=a";
    assert_int_equal(kf_placement_add(p, &bad), -EINVAL);
    bad.nlabels = KF_PLACE_LABELS_MAX + 1;
    assert_int_equal(kf_placement_add(p, &bad), -EINVAL);
    bad = mk("flags", 1, 1, 1);
    bad.flags = 0x80;
    assert_int_equal(kf_placement_add(p, &bad), -EINVAL);

    /* remove: the index is reused, the id is forgotten */
    assert_int_equal(kf_placement_remove(p, a), 0);
    assert_int_equal(kf_placement_remove(p, a), -ENOENT);
    assert_int_equal(kf_placement_get(p, a, &g), -ENOENT);
    assert_int_equal(kf_placement_find(p, "node-a"), -ENOENT);
    assert_int_equal(kf_placement_count(p), 2);
    assert_int_equal(add(p, mk("node-c", GiB, 1000, 1)), a);
    assert_int_equal(kf_placement_end(p), 3);
    check(p);
    kf_placement_free(p);
    assert_null(kf_placement_free(NULL));
}

/* One node failing each filter, one node passing all: the reasons count each
 * node once, under its first failed filter. */
static void test_filters_each_reason(void **state) {
    (void)state;
    kf_placement *p = new_placement(KF_PLACE_SPREAD, 0);
    kf_place_node n;
    n = mk("not-ready", 16 * GiB, 8000, 8);
    n.flags = 0;
    add(p, n);
    n = mk("cordoned", 16 * GiB, 8000, 8);
    n.flags = KF_PLACE_NODE_READY | KF_PLACE_NODE_CORDONED | KF_PLACE_NODE_DRAINING;
    add(p, n);
    n = mk("draining", 16 * GiB, 8000, 8);
    n.flags = KF_PLACE_NODE_READY | KF_PLACE_NODE_DRAINING;
    add(p, n);
    int excl = add(p, mk("excluded", 16 * GiB, 8000, 8));
    n = mk("unlabeled", 16 * GiB, 8000, 8); /* lacks ssd=yes */
    add(p, n);
    n = mk("small-mem", 2 * GiB, 8000, 8);
    n.nlabels = 1;
    n.labels[0] = "ssd=yes";
    add(p, n);
    n = mk("small-cpu", 16 * GiB, 500, 8);
    n.nlabels = 1;
    n.labels[0] = "ssd=yes";
    add(p, n);
    n = mk("full", 16 * GiB, 8000, 8);
    n.slots_used = 8;
    n.nlabels = 1;
    n.labels[0] = "ssd=yes";
    add(p, n);
    n = mk("mem-and-cpu", 1 * GiB, 100, 8); /* fails memory first */
    n.nlabels = 1;
    n.labels[0] = "ssd=yes";
    add(p, n);
    check(p);

    const char *labels[] = {"ssd=yes"};
    int ex[] = {excl};
    kf_place_request req = {.memory = 4 * GiB, .cpu = 1000, .nlabels = 1, .labels = labels,
                            .nexclude = 1, .exclude = ex};
    kf_place_result res;
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);
    assert_int_equal(res.node, -1);
    assert_int_equal(res.nodes, 9);
    assert_int_equal(res.why.not_ready, 1);
    assert_int_equal(res.why.cordoned, 1);
    assert_int_equal(res.why.draining, 1);
    assert_int_equal(res.why.excluded, 1);
    assert_int_equal(res.why.labels, 1);
    assert_int_equal(res.why.memory, 2);
    assert_int_equal(res.why.cpu, 1);
    assert_int_equal(res.why.slots, 1);

    /* without reasons: same answer, no counting */
    req.flags = KF_PLACE_NO_REASONS;
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);
    assert_int_equal(res.why.memory + res.why.cordoned + res.why.labels, 0);

    n = mk("good", 16 * GiB, 8000, 8);
    n.nlabels = 1;
    n.labels[0] = "ssd=yes";
    int good = add(p, n);
    req.flags = 0;
    assert_int_equal(kf_placement_pick(p, &req, &res), good);
    assert_int_equal(res.node, good);
    assert_int_equal(res.score, KF_PLACE_SCALE); /* empty node, spread */

    /* exactly enough fits (>=, not >) */
    req.memory = 16 * GiB;
    req.cpu = 8000;
    assert_int_equal(kf_placement_pick(p, &req, &res), good);
    req.memory = 16 * GiB + 1;
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);

    /* malformed requests */
    req.memory = 0;
    req.nlabels = KF_PLACE_LABELS_MAX + 1;
    assert_int_equal(kf_placement_pick(p, &req, &res), -EINVAL);
    req.nlabels = 0;
    req.nexclude = KF_PLACE_EXCLUDE_MAX + 1;
    assert_int_equal(kf_placement_pick(p, &req, &res), -EINVAL);
    req.nexclude = 1;
    req.exclude = NULL;
    assert_int_equal(kf_placement_pick(p, &req, &res), -EINVAL);
    kf_placement_free(p);
}

/* Loads 10 %, 50 %, 90 % (dominant share): spread takes the emptiest, binpack
 * the fullest that fits. */
static void test_spread_vs_binpack(void **state) {
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        kf_placement *p = new_placement(mode ? KF_PLACE_BINPACK : KF_PLACE_SPREAD, 0);
        kf_place_node n = mk("light", 10 * GiB, 10000, 100);
        n.mem_used = 1 * GiB;
        int light = add(p, n);
        n = mk("half", 10 * GiB, 10000, 100);
        n.cpu_used = 5000; /* cpu is its dominant share */
        n.mem_used = 1 * GiB;
        int half = add(p, n);
        n = mk("heavy", 10 * GiB, 10000, 100);
        n.slots_used = 90; /* slots are its dominant share */
        int heavy = add(p, n);
        check(p);

        int64_t s;
        assert_int_equal(kf_placement_score(p, half, &s), 0);
        assert_int_equal(s, mode ? 500000 : 500000);
        assert_int_equal(kf_placement_score(p, light, &s), 0);
        assert_int_equal(s, mode ? 100000 : 900000);

        if (mode == 0) {
            assert_int_equal(pick(p, GiB, 100), light);
            /* only heavy has 9.5 GiB free */
            assert_int_equal(pick(p, 9 * GiB + 512 * MiB, 100), heavy);
        } else {
            assert_int_equal(pick(p, GiB, 100), heavy);
            assert_int_equal(pick(p, 9 * GiB + 512 * MiB, 100), heavy);
            /* heavy keeps 500m cpu free, half 5000m: bigger requests move
             * down the ranking to the next node that fits */
            assert_int_equal(kf_placement_set_usage(p, heavy, 0, 9500, 90), 0);
            assert_int_equal(pick(p, GiB, 4000), half);
            assert_int_equal(pick(p, GiB, 6000), light);
        }
        check(p);
        kf_placement_free(p);
    }
}

static void test_warm_preference(void **state) {
    (void)state;
    kf_placement *p = new_placement(KF_PLACE_SPREAD, 200000);
    kf_place_node n = mk("cold", 10 * GiB, 10000, 100);
    n.mem_used = 3 * GiB; /* 30 % */
    int cold = add(p, n);
    n = mk("warm", 10 * GiB, 10000, 100);
    n.mem_used = 4 * GiB; /* 40 % but a warm sandbox is ready */
    n.warm_ready = 1;
    int warm = add(p, n);
    assert_int_equal(pick(p, GiB, 100), warm);
    int64_t s;
    assert_int_equal(kf_placement_score(p, warm, &s), 0);
    assert_int_equal(s, 600000 + 200000);

    /* the pool drains: back to least loaded */
    assert_int_equal(kf_placement_set_warm(p, warm, 0), 0);
    assert_int_equal(pick(p, GiB, 100), cold);
    assert_int_equal(kf_placement_set_warm(p, warm, 2), 0);
    assert_int_equal(pick(p, GiB, 100), warm);

    /* a reservation that claims the last warm sandbox drops the bonus in
     * the same re-rank; a plain one leaves the pool alone */
    kf_place_request claim = {.memory = 0, .cpu = 0, .flags = KF_PLACE_CLAIM_WARM};
    kf_place_request plain = {0};
    assert_int_equal(kf_placement_reserve(p, warm, &plain), 0);
    assert_int_equal(kf_placement_reserve(p, warm, &claim), 0);
    kf_place_node g;
    assert_int_equal(kf_placement_get(p, warm, &g), 0);
    assert_int_equal(g.warm_ready, 1);
    assert_int_equal(g.slots_used, 2);
    assert_int_equal(kf_placement_reserve(p, warm, &claim), 0);
    assert_int_equal(kf_placement_get(p, warm, &g), 0);
    assert_int_equal(g.warm_ready, 0);
    assert_int_equal(pick(p, GiB, 100), cold);
    assert_int_equal(kf_placement_reserve(p, warm, &claim), 0); /* none left: no-op */
    assert_int_equal(kf_placement_get(p, warm, &g), 0);
    assert_int_equal(g.warm_ready, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(kf_placement_release(p, warm, &plain), 0);
    assert_int_equal(kf_placement_set_warm(p, warm, 2), 0);
    check(p);

    /* a bonus smaller than the load gap does not win */
    kf_place_policy pol = {KF_PLACE_SPREAD, 50000, 0};
    assert_int_equal(kf_placement_set_policy(p, &pol), 0);
    assert_int_equal(pick(p, GiB, 100), cold);
    /* binpack: warm is both fuller and warm */
    pol.mode = KF_PLACE_BINPACK;
    assert_int_equal(kf_placement_set_policy(p, &pol), 0);
    assert_int_equal(pick(p, GiB, 100), warm);
    /* a warm node that cannot fit the request is not chosen */
    assert_int_equal(pick(p, 6 * GiB + 1, 100), cold);
    pol.warm_bonus = KF_PLACE_SCALE + 1;
    assert_int_equal(kf_placement_set_policy(p, &pol), -EINVAL);
    check(p);
    kf_placement_free(p);
}

static int add_labeled(kf_placement *p, const char *id, const char *l0, const char *l1,
                       uint64_t mem_used) {
    kf_place_node n = mk(id, 16 * GiB, 8000, 32);
    n.mem_used = mem_used;
    if (l0)
        n.labels[n.nlabels++] = l0;
    if (l1)
        n.labels[n.nlabels++] = l1;
    return add(p, n);
}

static void test_labels(void **state) {
    (void)state;
    kf_placement *p = new_placement(KF_PLACE_SPREAD, 0);
    int a1 = add_labeled(p, "a1", "zone=a", NULL, 1 * GiB);
    int a2 = add_labeled(p, "a2", "zone=a", "gpu=true", 8 * GiB);
    int b1 = add_labeled(p, "b1", "zone=b", NULL, 4 * GiB);
    int b2 = add_labeled(p, "b2", "zone=b", "gpu=true", 2 * GiB);
    int none = add_labeled(p, "none", NULL, NULL, 0);
    kf_place_result res;
    kf_place_request req = {.memory = GiB, .cpu = 100};
    assert_int_equal(kf_placement_pick(p, &req, &res), none);

    const char *zb[] = {"zone=b"};
    req.nlabels = 1;
    req.labels = zb;
    assert_int_equal(kf_placement_pick(p, &req, &res), b2);

    const char *gpu_a[] = {"gpu=true", "zone=a"};
    req.nlabels = 2;
    req.labels = gpu_a;
    assert_int_equal(kf_placement_pick(p, &req, &res), a2);
    req.memory = 9 * GiB; /* a2 has 8 GiB free */
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);
    assert_int_equal(res.why.labels, 4); /* a1 lacks gpu, b1 b2 none lack zone=a */
    assert_int_equal(res.why.memory, 1);

    /* a label no node has: every node is counted under labels */
    const char *unknown[] = {"zone=z"};
    req.memory = GiB;
    req.nlabels = 1;
    req.labels = unknown;
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);
    assert_int_equal(res.why.labels, 5);

    /* labels follow updates; "key=value" matches exactly, not by prefix */
    const char *za[] = {"zone=a"};
    req.labels = za;
    assert_int_equal(kf_placement_pick(p, &req, &res), a1);
    kf_place_node n = mk(NULL, 16 * GiB, 8000, 32);
    n.mem_used = 1 * GiB;
    n.nlabels = 1;
    n.labels[0] = "zone=aa";
    assert_int_equal(kf_placement_update(p, a1, &n), 0);
    assert_int_equal(kf_placement_pick(p, &req, &res), a2);
    n.id = "other";
    assert_int_equal(kf_placement_update(p, a1, &n), -EINVAL);
    assert_int_equal(kf_placement_remove(p, a2), 0);
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);
    check(p);
    (void)b1;
    kf_placement_free(p);
}

static void test_exclusions(void **state) {
    (void)state;
    kf_placement *p = new_placement(KF_PLACE_SPREAD, 0);
    int n0 = add_labeled(p, "n0", NULL, NULL, 1 * GiB);
    int n1 = add_labeled(p, "n1", NULL, NULL, 2 * GiB);
    int n2 = add_labeled(p, "n2", NULL, NULL, 3 * GiB);
    kf_place_result res;
    int ex[3] = {n0, -1, 12345}; /* unknown indices are harmless */
    kf_place_request req = {.memory = GiB, .cpu = 100, .nexclude = 3, .exclude = ex};
    assert_int_equal(kf_placement_pick(p, &req, &res), n1);
    ex[1] = n1;
    assert_int_equal(kf_placement_pick(p, &req, &res), n2);
    ex[2] = n2;
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);
    assert_int_equal(res.why.excluded, 3);
    kf_placement_free(p);
}

/* Identical nodes: the lowest kf_place_tie_key(seed, id) wins, whatever the
 * order the nodes were added in; another seed gives that seed's minimum. */
static void test_tie_break(void **state) {
    (void)state;
    char ids[64][16];
    for (uint64_t seed = 0; seed < 8; seed++) {
        kf_place_policy pol = {seed % 2 ? KF_PLACE_BINPACK : KF_PLACE_SPREAD, 0, seed * 7919};
        kf_placement *fwd = NULL, *rev = NULL;
        assert_int_equal(kf_placement_new(&fwd, &pol), 0);
        assert_int_equal(kf_placement_new(&rev, &pol), 0);
        int best = -1;
        uint64_t best_key = UINT64_MAX;
        for (int i = 0; i < 64; i++) {
            snprintf(ids[i], sizeof(ids[i]), "node-%02d", i);
            uint64_t k = kf_place_tie_key(pol.tie_seed, ids[i]);
            if (k < best_key) {
                best_key = k;
                best = i;
            }
            assert_int_equal(add(fwd, mk(ids[i], 8 * GiB, 4000, 10)), i);
        }
        for (int i = 63; i >= 0; i--)
            add(rev, mk(ids[i], 8 * GiB, 4000, 10));
        for (int rep = 0; rep < 3; rep++) {
            int a = pick(fwd, GiB, 100), b = pick(rev, GiB, 100);
            assert_string_equal(ids[a], ids[best]);
            assert_int_equal(b, 63 - best);
        }
        kf_placement_free(fwd);
        kf_placement_free(rev);
    }
    /* the key itself is stable (part of the contract) */
    assert_true(kf_place_tie_key(0, "node-a") == kf_place_tie_key(0, "node-a"));
    assert_true(kf_place_tie_key(0, "node-a") != kf_place_tie_key(1, "node-a"));
    assert_true(kf_place_tie_key(0, "node-a") != kf_place_tie_key(0, "node-b"));
}

static void test_reserve_release(void **state) {
    (void)state;
    kf_placement *p = new_placement(KF_PLACE_SPREAD, 0);
    int a = add(p, mk("a", 4 * GiB, 2000, 3));
    int b = add(p, mk("b", 4 * GiB, 2000, 3));
    kf_place_request req = {.memory = GiB, .cpu = 500};
    kf_place_result res;
    kf_place_node g;

    /* spread alternates as usage changes */
    int first = kf_placement_pick(p, &req, &res);
    assert_true(first == a || first == b);
    assert_int_equal(kf_placement_reserve(p, first, &req), 0);
    int second = kf_placement_pick(p, &req, &res);
    assert_int_equal(second, first == a ? b : a);
    assert_int_equal(kf_placement_get(p, first, &g), 0);
    assert_int_equal(g.mem_used, GiB);
    assert_int_equal(g.cpu_used, 500);
    assert_int_equal(g.slots_used, 1);
    int64_t s;
    assert_int_equal(kf_placement_score(p, first, &s), 0);
    assert_int_equal(s, KF_PLACE_SCALE - 333333); /* 1 of 3 slots dominates */

    /* fill a: 3 slots */
    assert_int_equal(kf_placement_reserve(p, a, &req), 0);
    assert_int_equal(kf_placement_reserve(p, a, &req), 0);
    if (first != a)
        assert_int_equal(kf_placement_reserve(p, a, &req), 0);
    assert_int_equal(kf_placement_get(p, a, &g), 0);
    assert_int_equal(g.slots_used, 3);
    for (int i = 0; i < 3 - (first == b); i++)
        assert_int_equal(kf_placement_reserve(p, b, &req), 0);
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);
    assert_int_equal(res.why.slots, 2);
    check(p);

    /* reserve never refuses (committed elsewhere): usage past capacity */
    kf_place_request big = {.memory = 8 * GiB, .cpu = 100};
    assert_int_equal(kf_placement_reserve(p, a, &big), 0);
    assert_int_equal(kf_placement_get(p, a, &g), 0);
    assert_int_equal(g.mem_used, 11 * GiB);
    assert_int_equal(kf_placement_release(p, a, &big), 0);

    /* release restores, and refuses to go below zero */
    assert_int_equal(kf_placement_release(p, a, &req), 0);
    assert_int_equal(kf_placement_pick(p, &req, &res), a);
    kf_place_request huge = {.memory = 100 * GiB};
    assert_int_equal(kf_placement_release(p, a, &huge), -EINVAL);
    assert_int_equal(kf_placement_get(p, a, &g), 0);
    assert_int_equal(g.mem_used, 2 * GiB);
    assert_int_equal(g.slots_used, 2);
    assert_int_equal(kf_placement_release(p, a, &req), 0);
    assert_int_equal(kf_placement_release(p, a, &req), 0);
    assert_int_equal(kf_placement_release(p, a, &req), -EINVAL); /* no slot left */
    assert_int_equal(kf_placement_get(p, a, &g), 0);
    assert_int_equal(g.mem_used + g.cpu_used + g.slots_used, 0);
    assert_int_equal(kf_placement_reserve(p, 99, &req), -ENOENT);
    assert_int_equal(kf_placement_release(p, -1, &req), -ENOENT);
    check(p);
    kf_placement_free(p);
}

static void test_explain(void **state) {
    (void)state;
    kf_placement *p = new_placement(KF_PLACE_SPREAD, 0);
    kf_place_request req = {.memory = 4 * GiB, .cpu = 2000};
    kf_place_result res;
    char msg[256];
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);
    kf_place_explain(&req, &res, msg, sizeof(msg));
    assert_string_equal(msg, "no node has 4 GiB memory and 2 cpu free (no nodes registered)");

    for (int i = 0; i < 12; i++) {
        char id[16];
        snprintf(id, sizeof(id), "n%d", i);
        kf_place_node n = mk(id, 8 * GiB, 8000, 10);
        n.mem_used = 6 * GiB;
        if (i >= 9)
            n.flags |= KF_PLACE_NODE_CORDONED;
        add(p, n);
    }
    assert_int_equal(kf_placement_pick(p, &req, &res), -ENOSPC);
    int len = kf_place_explain(&req, &res, msg, sizeof(msg));
    assert_string_equal(msg, "no node has 4 GiB memory and 2 cpu free (12 nodes: 9 lack memory, 3 cordoned)");
    assert_int_equal(len, (int)strlen(msg));
    /* truncation: returns the full length, stays terminated */
    char small[10];
    assert_int_equal(kf_place_explain(&req, &res, small, sizeof(small)), len);
    assert_string_equal(small, "no node h");

    const char *labels[] = {"zone=a", "gpu=true"};
    kf_place_request req2 = {.memory = 1536 * MiB, .cpu = 500, .nlabels = 2, .labels = labels};
    assert_int_equal(kf_placement_pick(p, &req2, &res), -ENOSPC);
    kf_place_explain(&req2, &res, msg, sizeof(msg));
    assert_string_equal(msg, "no node has 1.5 GiB memory and 500m cpu free with labels zone=a, "
                             "gpu=true (12 nodes: 9 lack a required label, 3 cordoned)");
    kf_placement_free(p);
}

static void test_flags_and_policy(void **state) {
    (void)state;
    kf_placement *p = new_placement(KF_PLACE_SPREAD, 0);
    int a = add_labeled(p, "a", "zone=a", NULL, 0);
    int b = add_labeled(p, "b", "zone=a", NULL, 8 * GiB);
    assert_int_equal(pick(p, GiB, 1), a);
    assert_int_equal(kf_placement_set_flags(p, a, KF_PLACE_NODE_READY | KF_PLACE_NODE_CORDONED), 0);
    assert_int_equal(pick(p, GiB, 1), b);
    assert_int_equal(kf_placement_set_flags(p, b, 0), 0);
    assert_int_equal(pick(p, GiB, 1), -ENOSPC);
    assert_int_equal(kf_placement_set_flags(p, a, KF_PLACE_NODE_READY), 0);
    assert_int_equal(kf_placement_set_flags(p, b, KF_PLACE_NODE_READY), 0);
    assert_int_equal(kf_placement_set_flags(p, b, 0x100), -EINVAL);
    assert_int_equal(pick(p, GiB, 1), a);
    kf_place_policy pol = {KF_PLACE_BINPACK, 0, 42};
    assert_int_equal(kf_placement_set_policy(p, &pol), 0);
    kf_place_policy got;
    kf_placement_get_policy(p, &got);
    assert_int_equal(got.tie_seed, 42);
    assert_int_equal(pick(p, GiB, 1), b);
    check(p);
    pol.mode = 7;
    assert_int_equal(kf_placement_set_policy(p, &pol), -EINVAL);
    kf_placement_free(p);
}

/* ---- randomized comparison with the naive reference ---- */

static uint64_t rng_state;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static uint64_t below(uint64_t n) { return rnd() % n; }

static const char *vocab[] = {"zone=a", "zone=b", "zone=c", "gpu=true", "ssd=yes", "pool=x"};
#define NVOCAB (sizeof(vocab) / sizeof(vocab[0]))

typedef struct sim {
    kf_placement *p;
    kf_naive *nv;
    char ids[512][24];
    int live[512];
    int nlive;
    int serial;
} sim;

static void random_node(sim *s, kf_place_node *n, char *id) {
    static const uint64_t mems[] = {4 * GiB, 8 * GiB, 16 * GiB};
    static const uint64_t cpus[] = {2000, 4000, 8000};
    static const uint32_t slots[] = {2, 4, 8, 16};
    memset(n, 0, sizeof(*n));
    n->id = id;
    n->mem_capacity = mems[below(3)];
    n->cpu_capacity = cpus[below(3)];
    n->slot_capacity = slots[below(4)];
    /* usage on a coarse grid so scores tie often; sometimes past capacity */
    n->mem_used = below(n->mem_capacity / (512 * MiB) + 3) * 512 * MiB;
    n->cpu_used = below(n->cpu_capacity / 250 + 2) * 250;
    n->slots_used = (uint32_t)below(n->slot_capacity + 2);
    n->warm_ready = below(3) == 0 ? (uint32_t)below(3) : 0;
    unsigned r = (unsigned)below(10);
    n->flags = r < 7 ? KF_PLACE_NODE_READY
               : r == 7 ? KF_PLACE_NODE_READY | KF_PLACE_NODE_CORDONED
               : r == 8 ? KF_PLACE_NODE_READY | KF_PLACE_NODE_DRAINING
                        : 0;
    for (unsigned k = 0; k < NVOCAB; k++)
        if (below(3) == 0)
            n->labels[n->nlabels++] = vocab[k];
    (void)s;
}

static void sim_add(sim *s) {
    if (s->nlive >= 500)
        return;
    int slot = -1;
    kf_place_node n;
    char id[24];
    snprintf(id, sizeof(id), "n%d-%llx", s->serial++, (unsigned long long)below(1 << 20));
    random_node(s, &n, id);
    int i = kf_placement_add(s->p, &n);
    assert_true(i >= 0 && i < 512);
    assert_int_equal(kf_naive_set(s->nv, i, &n), 0);
    memcpy(s->ids[i], id, sizeof(id));
    for (int k = 0; k < s->nlive; k++)
        assert_true(s->live[k] != i);
    slot = s->nlive++;
    s->live[slot] = i;
}

static void random_request(kf_place_request *req, const char **labels, int *ex, int end) {
    static const uint64_t mems[] = {0, 256 * MiB, 512 * MiB, GiB, 2 * GiB, 4 * GiB, 9 * GiB, 20 * GiB};
    static const uint64_t cpus[] = {0, 250, 500, 1000, 3000, 9000};
    memset(req, 0, sizeof(*req));
    req->memory = mems[below(8)];
    req->cpu = cpus[below(6)];
    unsigned nl = below(3) == 0 ? (unsigned)below(3) : 0;
    for (unsigned k = 0; k < nl; k++)
        labels[k] = below(20) == 0 ? "zone=z" : vocab[below(NVOCAB)];
    req->nlabels = nl;
    req->labels = labels;
    unsigned ne = below(4) == 0 ? (unsigned)below(4) : 0;
    for (unsigned k = 0; k < ne; k++)
        ex[k] = end > 0 ? (int)below((uint64_t)end) : 0;
    req->nexclude = ne;
    req->exclude = ex;
    if (below(2))
        req->flags |= KF_PLACE_CLAIM_WARM; /* for the reserve that may follow */
}

static void compare_pick(sim *s, const kf_place_request *req, int *picked) {
    kf_place_result a, b;
    int ra = kf_placement_pick(s->p, req, &a);
    int rb = kf_naive_pick(s->nv, req, &b);
    if (ra != rb || a.score != b.score || memcmp(&a.why, &b.why, sizeof(a.why)) != 0 ||
        a.nodes != b.nodes) {
        print_error("pick differs: library %d (score %lld, %u nodes) naive %d (score %lld, %u "
                    "nodes); mem %llu cpu %llu labels %u exclude %u\n",
                    ra, (long long)a.score, a.nodes, rb, (long long)b.score, b.nodes,
                    (unsigned long long)req->memory, (unsigned long long)req->cpu, req->nlabels,
                    req->nexclude);
        print_error("reasons lib/naive: ex %u/%u nr %u/%u co %u/%u dr %u/%u lab %u/%u mem %u/%u "
                    "cpu %u/%u slots %u/%u\n",
                    a.why.excluded, b.why.excluded, a.why.not_ready, b.why.not_ready,
                    a.why.cordoned, b.why.cordoned, a.why.draining, b.why.draining, a.why.labels,
                    b.why.labels, a.why.memory, b.why.memory, a.why.cpu, b.why.cpu, a.why.slots,
                    b.why.slots);
        fail();
    }
    *picked = ra;
}

static void run_cluster(sim *s) {
    kf_place_policy pol = {below(2) ? KF_PLACE_BINPACK : KF_PLACE_SPREAD,
                           below(2) ? (uint32_t)below(300001) : 0, below(4)};
    assert_int_equal(kf_placement_new(&s->p, &pol), 0);
    assert_int_equal(kf_naive_new(&s->nv, &pol), 0);
    s->nlive = 0;
    int n = below(10) == 0 ? 100 + (int)below(300) : (int)below(40);
    for (int i = 0; i < n; i++)
        sim_add(s);
    int ops = 40;
    for (int op = 0; op < ops; op++) {
        kf_place_request req;
        const char *labels[4];
        int ex[4];
        int picked;
        int end = kf_placement_end(s->p);
        random_request(&req, labels, ex, end);
        int victim = s->nlive ? s->live[below((uint64_t)s->nlive)] : -1;
        switch (below(12)) {
        case 0: case 1: case 2: case 3: case 4:
            compare_pick(s, &req, &picked);
            if (picked >= 0 && below(4) != 0) {
                assert_int_equal(kf_placement_reserve(s->p, picked, &req), 0);
                kf_naive_reserve(s->nv, picked, &req);
            }
            break;
        case 5:
            if (victim >= 0) {
                kf_place_node g;
                assert_int_equal(kf_placement_get(s->p, victim, &g), 0);
                kf_place_request rel = {.memory = g.mem_used / 2, .cpu = g.cpu_used / 3};
                int r = kf_placement_release(s->p, victim, &rel);
                if (g.slots_used == 0) {
                    assert_int_equal(r, -EINVAL);
                } else {
                    assert_int_equal(r, 0);
                    kf_naive_release(s->nv, victim, &rel);
                }
            }
            break;
        case 6:
            if (victim >= 0) {
                unsigned f = (unsigned)below(8);
                assert_int_equal(kf_placement_set_flags(s->p, victim, f), 0);
                kf_naive_set_flags(s->nv, victim, f);
            }
            break;
        case 7:
            if (victim >= 0) {
                uint32_t w = (uint32_t)below(3);
                assert_int_equal(kf_placement_set_warm(s->p, victim, w), 0);
                kf_naive_set_warm(s->nv, victim, w);
            }
            break;
        case 8:
            if (victim >= 0) {
                kf_place_node g;
                assert_int_equal(kf_placement_get(s->p, victim, &g), 0);
                uint64_t m = below(g.mem_capacity / GiB + 2) * GiB;
                uint64_t c = below(g.cpu_capacity / 500 + 2) * 500;
                uint32_t sl = (uint32_t)below(g.slot_capacity + 1);
                assert_int_equal(kf_placement_set_usage(s->p, victim, m, c, sl), 0);
                kf_naive_set_usage(s->nv, victim, m, c, sl);
            }
            break;
        case 9:
            if (victim >= 0) {
                assert_int_equal(kf_placement_remove(s->p, victim), 0);
                kf_naive_remove(s->nv, victim);
                for (int k = 0; k < s->nlive; k++)
                    if (s->live[k] == victim)
                        s->live[k] = s->live[--s->nlive];
            }
            sim_add(s);
            break;
        case 10:
            if (victim >= 0) {
                kf_place_node n2;
                random_node(s, &n2, s->ids[victim]);
                assert_int_equal(kf_placement_update(s->p, victim, &n2), 0);
                assert_int_equal(kf_naive_set(s->nv, victim, &n2), 0);
            }
            break;
        case 11:
            if (below(4) == 0) {
                kf_place_policy np = {below(2) ? KF_PLACE_BINPACK : KF_PLACE_SPREAD,
                                      (uint32_t)below(300001), below(4)};
                assert_int_equal(kf_placement_set_policy(s->p, &np), 0);
                kf_naive_set_policy(s->nv, &np);
            }
            break;
        }
        if (op % 8 == 7)
            check(s->p);
    }
    check(s->p);
    s->p = kf_placement_free(s->p);
    s->nv = kf_naive_free(s->nv);
}

static void test_random_vs_naive(void **state) {
    (void)state;
    const char *env = getenv("KF_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : 20240611;
    rng_state = seed;
    static sim s;
    for (int c = 0; c < 3000; c++)
        run_cluster(&s);
}

/* Many nodes, many reserve/release cycles on one placement: the indexes stay
 * consistent and agree with the reference throughout. */
static void test_long_run_vs_naive(void **state) {
    (void)state;
    rng_state = 7;
    kf_place_policy pol = {KF_PLACE_BINPACK, 100000, 3};
    static sim s;
    assert_int_equal(kf_placement_new(&s.p, &pol), 0);
    assert_int_equal(kf_naive_new(&s.nv, &pol), 0);
    s.nlive = 0;
    for (int i = 0; i < 400; i++)
        sim_add(&s);
    int held[256], nheld = 0;
    kf_place_request held_req[256];
    for (int step = 0; step < 20000; step++) {
        kf_place_request req;
        const char *labels[4];
        int ex[4], picked;
        random_request(&req, labels, ex, kf_placement_end(s.p));
        req.nexclude = 0;
        req.nlabels = 0;
        compare_pick(&s, &req, &picked);
        if (picked >= 0 && nheld < 256) {
            assert_int_equal(kf_placement_reserve(s.p, picked, &req), 0);
            kf_naive_reserve(s.nv, picked, &req);
            held[nheld] = picked;
            held_req[nheld++] = req;
        }
        if (nheld > 0 && (below(2) == 0 || nheld == 256)) {
            int k = (int)below((uint64_t)nheld);
            kf_place_request rel = held_req[k];
            rel.nlabels = 0;
            rel.nexclude = 0;
            assert_int_equal(kf_placement_release(s.p, held[k], &rel), 0);
            kf_naive_release(s.nv, held[k], &rel);
            held[k] = held[--nheld];
            held_req[k] = held_req[nheld];
        }
        if (step % 1000 == 0)
            check(s.p);
    }
    check(s.p);
    s.p = kf_placement_free(s.p);
    s.nv = kf_naive_free(s.nv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_find_get),
        cmocka_unit_test(test_filters_each_reason),
        cmocka_unit_test(test_spread_vs_binpack),
        cmocka_unit_test(test_warm_preference),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_exclusions),
        cmocka_unit_test(test_tie_break),
        cmocka_unit_test(test_reserve_release),
        cmocka_unit_test(test_explain),
        cmocka_unit_test(test_flags_and_policy),
        cmocka_unit_test(test_random_vs_naive),
        cmocka_unit_test(test_long_run_vs_naive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
