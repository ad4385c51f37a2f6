/* test_plan.c - unit tests of kf_plan (tools/plan): the event heap, Erlang
 * B against known values, the simulation against the Erlang-B closed form
 * for Poisson arrivals on fixed slots at several loads, determinism, the
 * queue, the node-count search, the config reader (YAML and JSON give the
 * same config; bad input names the field), the chart, and the what-ifs on a
 * small cluster (drain, cordons, zones, fit).
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan_internal.h"

#define GiB (1ull << 30)
#define MiB (1ull << 20)

/* ---- model --------------------------------------------------------------------- */

static void test_heap_orders_events(void **state) {
    (void)state;
    kf_plan_event ev[500];
    kf_plan_heap h = {.ev = ev, .cap = 500};
    kf_plan_rng r;
    kf_plan_rng_seed(&r, 3);
    for (int i = 0; i < 500; i++)
        assert_int_equal(kf_plan_heap_push(&h, (kf_plan_event){.t = kf_plan_rng_unit(&r), .node = i}), 0);
    assert_int_equal(kf_plan_heap_push(&h, (kf_plan_event){.t = 0}), -ENOSPC);
    double last = -1;
    kf_plan_event e;
    for (int i = 0; i < 500; i++) {
        assert_int_equal(kf_plan_heap_pop(&h, &e), 0);
        assert_true(e.t >= last);
        last = e.t;
    }
    assert_int_equal(kf_plan_heap_pop(&h, &e), -ENOENT);
}

static void test_erlang_b_known_values(void **state) {
    (void)state;
    assert_float_equal(kf_erlang_b(1, 1), 0.5, 1e-12);
    assert_float_equal(kf_erlang_b(2, 2), 0.4, 1e-12);         /* (4/2) / (1 + 2 + 2) */
    assert_float_equal(kf_erlang_b(10, 10), 0.214582, 1e-6);   /* tables */
    assert_float_equal(kf_erlang_b(100, 120), 0.0056901, 1e-6);
    assert_float_equal(kf_erlang_b(5, 0), 1.0, 0);
    assert_true(kf_erlang_b(10, 10000000000ull) == 0);         /* stops early */
}

static void test_curve_interpolates_and_wraps(void **state) {
    (void)state;
    kf_plan_config c;
    kf_plan_config_defaults(&c);
    c.npoints = 2;
    c.curve[0] = (kf_plan_point){6 * 3600, 10};
    c.curve[1] = (kf_plan_point){18 * 3600, 30};
    assert_float_equal(kf_plan_rate_at(&c, 12 * 3600), 20, 1e-9);
    assert_float_equal(kf_plan_rate_at(&c, 0), 20, 1e-9);                   /* midnight: halfway back */
    assert_float_equal(kf_plan_rate_at(&c, KF_PLAN_DAY_S + 6 * 3600), 10, 1e-9); /* day 2 */
    assert_float_equal(kf_plan_mean_rate(&c), 20, 1e-9);
    assert_float_equal(kf_plan_peak_rate(&c), 30, 0);
}

/* ---- simulation ------------------------------------------------------------------ */

/* `nodes` nodes of `slots` slots where memory and cpu never bind, Poisson
 * arrivals at `rate`, exponential holding of `hold` seconds. */
static void fixed_slots(kf_plan_config *c, uint32_t nodes, uint32_t slots, double rate, double hold,
                        uint32_t sessions) {
    kf_plan_config_defaults(c);
    c->seed = 11;
    c->ngroups = 1;
    c->groups[0] = (kf_plan_group){.name = "n", .count = nodes, .memory = 1024 * GiB, .cpu = 1000000, .slots = slots};
    c->nshapes = 1;
    c->shapes[0] = (kf_plan_shape){.memory = 256 * MiB, .cpu = 100, .weight = 1};
    c->duration = (kf_plan_dist){KF_PLAN_EXPONENTIAL, hold, 0};
    c->abandon = 0;
    c->npoints = 1;
    c->curve[0].rate = rate;
    c->duration_s = KF_PLAN_DURATION_MAX_S;
    c->step_s = 3600;
    c->max_sessions = sessions;
}

static void test_matches_erlang_b_at_several_loads(void **state) {
    (void)state;
    /* 4 nodes x 5 slots = 20 servers; loads from light to overloaded. */
    const double loads[] = {10, 15, 20, 28};
    for (size_t i = 0; i < sizeof(loads) / sizeof(loads[0]); i++) {
        kf_plan_config c;
        fixed_slots(&c, 4, 5, loads[i] / 60.0, 60, 200000);
        kf_plan_result r;
        kf_error err = {0};
        assert_int_equal(kf_plan_run(&c, 0, KF_PLAN_ENGINE_INDEX, &r, &err), 0);
        kf_plan_erlang e;
        kf_plan_erlang_check(&c, 0, &e);
        assert_int_equal(e.servers, 20);
        assert_float_equal(e.offered, loads[i], 1e-9);
        print_message("load %g erlangs on 20 slots: simulated %.4f, Erlang B %.4f\n", loads[i], r.rejection_rate,
                      e.blocking);
        assert_true(fabs(r.rejection_rate - e.blocking) <= 0.01);
        assert_true(r.peak_running <= 20);
        kf_plan_result_done(&r);
    }
}

static void test_naive_engine_makes_the_same_run(void **state) {
    (void)state;
    kf_plan_config c;
    fixed_slots(&c, 6, 4, 20 / 60.0, 60, 5000);
    c.shapes[0].memory = 300 * GiB; /* memory binds too: 3 per node */
    kf_plan_result a, b;
    kf_error err = {0};
    assert_int_equal(kf_plan_run(&c, 0, KF_PLAN_ENGINE_INDEX, &a, &err), 0);
    assert_int_equal(kf_plan_run(&c, 0, KF_PLAN_ENGINE_NAIVE, &b, &err), 0);
    assert_int_equal(a.accepted, b.accepted);
    assert_int_equal(a.rejected, b.rejected);
    assert_true(a.peak_running <= 18);
    kf_plan_result_done(&a);
    kf_plan_result_done(&b);
}

static void test_same_seed_same_run(void **state) {
    (void)state;
    kf_plan_config c;
    fixed_slots(&c, 3, 5, 0.3, 60, 20000);
    kf_plan_result a, b, d;
    kf_error err = {0};
    assert_int_equal(kf_plan_run(&c, 0, KF_PLAN_ENGINE_INDEX, &a, &err), 0);
    assert_int_equal(kf_plan_run(&c, 0, KF_PLAN_ENGINE_INDEX, &b, &err), 0);
    c.seed = 12;
    assert_int_equal(kf_plan_run(&c, 0, KF_PLAN_ENGINE_INDEX, &d, &err), 0);
    assert_int_equal(a.rejected, b.rejected);
    assert_int_equal(a.events, b.events);
    assert_int_equal(a.nsamples, b.nsamples);
    assert_memory_equal(a.samples, b.samples, a.nsamples * sizeof(*a.samples));
    assert_true(a.rejected != d.rejected || a.events != d.events);
    kf_plan_result_done(&a);
    kf_plan_result_done(&b);
    kf_plan_result_done(&d);
}

static void test_queue_trades_rejections_for_waits(void **state) {
    (void)state;
    kf_plan_config c;
    fixed_slots(&c, 2, 5, 9 / 60.0, 60, 20000);
    kf_plan_result no_q, q;
    kf_error err = {0};
    assert_int_equal(kf_plan_run(&c, 0, KF_PLAN_ENGINE_INDEX, &no_q, &err), 0);
    c.max_wait_s = 120;
    assert_int_equal(kf_plan_run(&c, 0, KF_PLAN_ENGINE_INDEX, &q, &err), 0);
    assert_true(q.rejection_rate < no_q.rejection_rate);
    assert_true(q.waited > 0);
    assert_true(q.wait_max > 0 && q.wait_max <= 120);
    assert_true(q.wait_p99 <= q.wait_max);
    assert_int_equal(no_q.waited, 0);
    kf_plan_result_done(&no_q);
    kf_plan_result_done(&q);
}

static void test_search_finds_the_fewest_nodes(void **state) {
    (void)state;
    kf_plan_config c;
    fixed_slots(&c, 1, 5, 30 / 60.0, 60, 30000); /* 30 erlangs on 5-slot nodes */
    c.target = KF_PLAN_TARGET_REJECTION;
    c.target_rejection = 0.01;
    c.search_max_nodes = 50;
    kf_plan_result best, below;
    kf_error err = {0};
    assert_int_equal(kf_plan_search(&c, &best, &below, &err), 0);
    assert_true(best.rejection_rate <= 0.01);
    assert_int_equal(below.nodes, best.nodes - 1);
    assert_true(below.rejection_rate > 0.01);
    /* Erlang B at 30 erlangs: 40 servers block 1.4 %, 45 block 0.23 %. */
    assert_in_range(best.nodes, 8, 10);
    kf_plan_result_done(&best);
    kf_plan_result_done(&below);
    c.search_max_nodes = 3;
    assert_int_equal(kf_plan_search(&c, &best, &below, &err), -ERANGE);
    assert_non_null(strstr(err.msg, "search.max_nodes"));
    kf_plan_result_done(&best);
}

static void test_svg_chart(void **state) {
    (void)state;
    kf_plan_config c;
    fixed_slots(&c, 2, 5, 12 / 60.0, 60, 5000);
    c.duration_s = 86400;
    c.step_s = 600;
    kf_plan_result r;
    kf_error err = {0};
    assert_int_equal(kf_plan_run(&c, 0, KF_PLAN_ENGINE_INDEX, &r, &err), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(kf_plan_svg(f, &c, &r), 0);
    fclose(f);
    assert_non_null(strstr(buf, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_non_null(strstr(buf, "<polyline"));
    assert_non_null(strstr(buf, "capacity (10 sessions"));
    assert_non_null(strstr(buf, "</svg>"));
    free(buf);
    kf_plan_result_done(&r);
}

/* ---- config ------------------------------------------------------------------------ */

static const char yaml_cfg[] =
    "# a day\n"
    "seed: 42\n"
    "duration: 2d\n"
    "step: 30m\n"
    "sessions: 50000\n"
    "arrivals:\n"
    "  curve:\n"
    "    - {at: 0h, rate: 20/m}\n"
    "    - {at: 12h, rate: 2/s}\n"
    "session:\n"
    "  duration: {dist: lognormal, mean: 12m, sigma: 1}\n"
    "  idle_expiry: 20m\n"
    "  abandon: 40%\n"
    "  shapes:\n"
    "    - {memory: 512M, cpu: 500m, weight: 3}\n"
    "    - {memory: 2G, cpu: 1}\n"
    "nodes:\n"
    "  - {name: std, count: 10, memory: 64G, cpu: 32, slots: 100, labels: {zone: a}}\n"
    "policy: binpack\n"
    "queue: {max_wait: 30s, max: 500}\n"
    "target: {wait: {percentile: 95, max: 10s}}\n";

static const char json_cfg[] =
    "{\"seed\": 42, \"duration\": \"2d\", \"step\": 1800, \"sessions\": 50000,"
    " \"arrivals\": {\"curve\": [{\"at\": 0, \"rate\": \"20/m\"}, {\"at\": \"12h\", \"rate\": 2}]},"
    " \"session\": {\"duration\": {\"dist\": \"lognormal\", \"mean\": \"12m\", \"sigma\": 1},"
    "   \"idle_expiry\": {\"dist\": \"fixed\", \"value\": 1200}, \"abandon\": 0.4,"
    "   \"shapes\": [{\"memory\": \"512M\", \"cpu\": 0.5, \"weight\": 3}, {\"memory\": \"2G\", \"cpu\": \"1000m\"}]},"
    " \"nodes\": [{\"name\": \"std\", \"count\": 10, \"memory\": \"64G\", \"cpu\": 32, \"slots\": 100,"
    "   \"labels\": {\"zone\": \"a\"}}],"
    " \"policy\": {\"mode\": \"binpack\"}, \"queue\": {\"max_wait\": \"30s\", \"max\": 500},"
    " \"target\": {\"wait\": {\"percentile\": 95, \"max\": \"10s\"}}}";

static void test_yaml_and_json_give_the_same_config(void **state) {
    (void)state;
    kf_plan_config *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    kf_error err = {0};
    assert_int_equal(kf_plan_config_parse(yaml_cfg, strlen(yaml_cfg), a, &err), 0);
    assert_int_equal(kf_plan_config_parse(json_cfg, strlen(json_cfg), b, &err), 0);
    assert_memory_equal(a, b, sizeof(*a));
    assert_int_equal(a->seed, 42);
    assert_float_equal(a->duration_s, 2 * 86400, 0);
    assert_int_equal(a->npoints, 2);
    assert_float_equal(a->curve[0].rate, 20 / 60.0, 1e-12);
    assert_float_equal(a->curve[1].at, 12 * 3600, 0);
    assert_int_equal(a->duration.kind, KF_PLAN_LOGNORMAL);
    assert_float_equal(a->abandon, 0.4, 1e-12);
    assert_int_equal(a->nshapes, 2);
    assert_int_equal(a->shapes[0].cpu, 500);
    assert_int_equal(a->shapes[1].memory, 2 * GiB);
    assert_string_equal(a->groups[0].labels[0], "zone=a");
    assert_int_equal(a->policy.mode, KF_PLACE_BINPACK);
    assert_int_equal(a->target, KF_PLAN_TARGET_WAIT);
    assert_float_equal(a->target_pct, 95, 0);
    free(a);
    free(b);
}

static void expect_error(const char *text, const char *needle) {
    kf_plan_config *c = calloc(1, sizeof(*c));
    kf_error err = {0};
    int r = kf_plan_config_parse(text, strlen(text), c, &err);
    if (r != -EINVAL || !strstr(err.msg, needle))
        fail_msg("config <<%s>>: got %d '%s', expected -EINVAL naming '%s'", text, r, err.msg, needle);
    free(c);
}

#define BASE "arrivals: {rate: 1/s}\nsession: {duration: 10m, memory: 1G, cpu: 1}\n"
#define NODES "nodes: [{count: 2, memory: 8G, cpu: 4, slots: 10}]\n"

static void test_bad_configs_name_the_field(void **state) {
    (void)state;
    kf_plan_config *c = calloc(1, sizeof(*c));
    kf_error err = {0};
    assert_int_equal(kf_plan_config_parse(BASE NODES, strlen(BASE NODES), c, &err), 0);
    free(c);
    expect_error(BASE, "nodes: missing");
    expect_error(BASE NODES "colour: red\n", "unknown field 'colour'");
    expect_error("arrivals: {rate: fast}\nsession: {duration: 10m, memory: 1G, cpu: 1}\n" NODES,
                 "arrivals.rate: 'fast' is not a rate");
    expect_error("arrivals: {rate: 1/s}\nsession: {duration: 10m, memory: 12Q, cpu: 1}\n" NODES,
                 "session.memory: '12Q' is not a size");
    expect_error("arrivals: {rate: 1/s}\nsession: {duration: 10m, memory: 1G, cpu: lots}\n" NODES,
                 "session.cpu: 'lots' is not a cpu amount");
    expect_error("arrivals: {rate: 1/s}\nsession: {duration: {dist: gamma, mean: 1m}, memory: 1G, cpu: 1}\n" NODES,
                 "session.duration.dist: 'gamma'");
    expect_error("arrivals: {rate: 1/s}\nsession: {duration: {dist: lognormal, mean: 1m}, memory: 1G, cpu: 1}\n" NODES,
                 "session.duration.sigma: missing");
    expect_error(BASE "nodes: [{count: 2, memory: 8G, cpu: 4, slots: 0}]\n", "nodes[0].slots: 0 is out of range");
    expect_error(BASE "nodes: [{count: 200000, memory: 8G, cpu: 4, slots: 1}]\n", "nodes[0].count");
    expect_error(BASE NODES "sessions: 20000000\n", "sessions: 2e+07 is out of range");
    expect_error(BASE NODES "duration: 400d\n", "duration: 400d is out of range");
    expect_error(BASE NODES "duration: 10d\nstep: 1s\n", "step: 1s gives more than 10000 samples");
    expect_error(BASE NODES "target: {rejection: 150%}\n", "target.rejection");
    expect_error(BASE NODES "target: {wait: {max: 10s}}\n", "target.wait needs queue.max_wait");
    expect_error(BASE NODES "policy: roundrobin\n", "policy.mode: 'roundrobin' is not spread or binpack");
    expect_error("arrivals: {curve: [{at: 5h, rate: 1}, {at: 2h, rate: 2}]}\n"
                 "session: {duration: 10m, memory: 1G, cpu: 1}\n" NODES,
                 "arrivals.curve[1].at");
    expect_error("a: &x [1]\nb: *x\n", "anchors are not supported");
    expect_error("arrivals: [unclosed\n", "line");
    expect_error("{\"arrivals\": ", "malformed JSON");
}

/* ---- what-ifs ------------------------------------------------------------------------ */

/* Three 4 GiB / 4-slot nodes in zones a, a, b; n1 holds 2 sessions
 * (n1_mem in all), n2 one of 1 GiB, n3 none. */
static kf_plan_cluster *small_cluster(unsigned n3_flags, uint64_t n1_mem) {
    kf_place_node nodes[3] = {
        {.id = "n1", .mem_capacity = 4 * GiB, .cpu_capacity = 4000, .slot_capacity = 4, .mem_used = n1_mem,
         .cpu_used = 1000, .slots_used = 2, .flags = KF_PLACE_NODE_READY, .nlabels = 1, .labels = {"zone=a"}},
        {.id = "n2", .mem_capacity = 4 * GiB, .cpu_capacity = 4000, .slot_capacity = 4, .mem_used = 1 * GiB,
         .cpu_used = 500, .slots_used = 1, .flags = KF_PLACE_NODE_READY, .nlabels = 1, .labels = {"zone=a"}},
        {.id = "n3", .mem_capacity = 4 * GiB, .cpu_capacity = 4000, .slot_capacity = 4, .flags = n3_flags,
         .nlabels = 1, .labels = {"zone=b"}},
    };
    kf_plan_cluster *pc = NULL;
    kf_error err = {0};
    assert_int_equal(kf_plan_cluster_new(&pc, nodes, 3, NULL, &err), 0);
    return pc;
}

static void test_whatif_drain_and_cordons(void **state) {
    (void)state;
    kf_plan_move m;
    kf_error err = {0};
    const char *n1[] = {"n1"};
    kf_plan_cluster *pc = small_cluster(KF_PLACE_NODE_READY, 2 * GiB);
    assert_int_equal(kf_plan_remove_nodes(pc, n1, 1, &m, &err), 0);
    assert_int_equal(m.sessions, 2);
    assert_int_equal(m.placed, 2);
    assert_int_equal(m.unplaced, 0);
    assert_int_equal(m.free_memory, 8 * GiB - 3 * GiB);
    assert_int_equal(m.free_slots, 5);
    pc = kf_plan_cluster_free(pc);

    /* n3 cordoned: only n2 takes sessions. Make n1's sessions 2 GiB each so
     * only one fits on n2 (3 GiB free). */
    pc = small_cluster(KF_PLACE_NODE_READY | KF_PLACE_NODE_CORDONED, 4 * GiB);
    assert_int_equal(kf_plan_remove_nodes(pc, n1, 1, &m, &err), 0);
    assert_int_equal(m.placed, 1);
    assert_int_equal(m.unplaced, 1);
    assert_non_null(strstr(m.why, "cordoned"));
    const char *bad[] = {"n9"};
    assert_int_equal(kf_plan_remove_nodes(pc, bad, 1, &m, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "no node 'n9'"));
    kf_plan_cluster_free(pc);
}

static void test_whatif_zone_busiest_and_fit(void **state) {
    (void)state;
    kf_plan_cluster *pc = small_cluster(KF_PLACE_NODE_READY, 2 * GiB);
    const char *ids[8];
    assert_int_equal(kf_plan_nodes_with_label(pc, "zone=a", ids, 8), 2);
    assert_string_equal(ids[0], "n1");
    assert_string_equal(ids[1], "n2");
    assert_int_equal(kf_plan_busiest_nodes(pc, 1, ids, 8), 1);
    assert_string_equal(ids[0], "n1");
    char why[256];
    /* Free: n1 2 GiB, n2 3 GiB, n3 4 GiB -> 1 + 2 + 2 sessions of 1.5 GiB. */
    assert_int_equal(kf_plan_fit(pc, 3 * GiB / 2, 100, 1000, why, sizeof(why)), 5);
    assert_non_null(strstr(why, "memory"));
    kf_plan_cluster_free(pc);

    /* Lose zone a: 3 sessions of 1 GiB land on n3. */
    pc = small_cluster(KF_PLACE_NODE_READY, 2 * GiB);
    kf_plan_move m;
    kf_error err = {0};
    size_t n = kf_plan_nodes_with_label(pc, "zone=a", ids, 8);
    assert_int_equal(kf_plan_remove_nodes(pc, ids, n, &m, &err), 0);
    assert_int_equal(m.nodes_removed, 2);
    assert_int_equal(m.placed, 3);
    assert_int_equal(m.free_slots, 1);
    assert_int_equal(kf_plan_fit(pc, GiB, 100, 1000, why, sizeof(why)), 1);
    kf_plan_cluster_free(pc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heap_orders_events),
        cmocka_unit_test(test_erlang_b_known_values),
        cmocka_unit_test(test_curve_interpolates_and_wraps),
        cmocka_unit_test(test_matches_erlang_b_at_several_loads),
        cmocka_unit_test(test_naive_engine_makes_the_same_run),
        cmocka_unit_test(test_same_seed_same_run),
        cmocka_unit_test(test_queue_trades_rejections_for_waits),
        cmocka_unit_test(test_search_finds_the_fewest_nodes),
        cmocka_unit_test(test_svg_chart),
        cmocka_unit_test(test_yaml_and_json_give_the_same_config),
        cmocka_unit_test(test_bad_configs_name_the_field),
        cmocka_unit_test(test_whatif_drain_and_cordons),
        cmocka_unit_test(test_whatif_zone_busiest_and_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
