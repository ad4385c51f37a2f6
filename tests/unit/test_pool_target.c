/* test_pool_target.c - the warm-pool size formula of the scheduler's pool
 * sizing loop (scheduler/src/pools.c, kf_pool_target): the rate, the
 * cluster share a new node gets, and the [min, free capacity] bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "scheduler.h"

static kf_sched_config cfg(uint32_t min, uint32_t start_ms, uint32_t headroom_pct) {
    kf_sched_config c;
    kf_sched_config_defaults(&c);
    c.pool_min = min;
    c.pool_start_ms = start_ms;
    c.pool_headroom_pct = headroom_pct;
    return c;
}

static void test_rate_times_start_time(void **state) {
    (void)state;
    kf_sched_config c = cfg(0, 3000, 200);
    /* 60 creates in 60 s = 1/s; x 3 s x 2 = 6 */
    assert_int_equal(kf_pool_target(&c, 60, 60, 1, 60000, 100), 6);
    /* 61 creates: 6.1 -> ceil 7 */
    assert_int_equal(kf_pool_target(&c, 61, 61, 1, 60000, 100), 7);
    /* nothing created: 0 with --pool-min 0 */
    assert_int_equal(kf_pool_target(&c, 0, 0, 3, 60000, 100), 0);
    /* exactly 6.0 stays 6 (no rounding up of an exact product) */
    c = cfg(0, 1000, 100);
    assert_int_equal(kf_pool_target(&c, 360, 360, 1, 60000, 100), 6);
}

static void test_new_node_gets_the_cluster_share(void **state) {
    (void)state;
    kf_sched_config c = cfg(0, 3000, 200);
    /* 120 creates over 3 nodes, none on this one yet: its share is 40 -> 4 */
    assert_int_equal(kf_pool_target(&c, 0, 120, 3, 60000, 100), 4);
    /* a busy node keeps its own, higher rate */
    assert_int_equal(kf_pool_target(&c, 100, 120, 3, 60000, 100), 10);
    /* a trickle still gives a new node one warm sandbox */
    assert_int_equal(kf_pool_target(&c, 0, 2, 3, 60000, 100), 1);
}

static void test_bounds(void **state) {
    (void)state;
    kf_sched_config c = cfg(2, 3000, 200);
    assert_int_equal(kf_pool_target(&c, 0, 0, 2, 60000, 100), 2);    /* at least --pool-min */
    assert_int_equal(kf_pool_target(&c, 600, 600, 1, 60000, 5), 5);  /* at most the free capacity */
    assert_int_equal(kf_pool_target(&c, 0, 0, 2, 60000, 1), 1);      /* capacity beats the minimum */
    assert_int_equal(kf_pool_target(&c, 0, 0, 0, 0, 100), 2);        /* no window, no nodes: the minimum */
    c = cfg(0, 600000, 10000);
    assert_int_equal(kf_pool_target(&c, UINT64_MAX / 2, UINT64_MAX / 2, 1, 1, UINT64_MAX),
                     KF_POOL_TARGET_MAX);                              /* huge rates saturate */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_times_start_time),
        cmocka_unit_test(test_new_node_gets_the_cluster_share),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
