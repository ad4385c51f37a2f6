/* test_cgroup.c - kf_cgroup_settings(): the files and values written for
 * each cgroup mode. Pure; runs anywhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cgroup.h"

static const kf_cg_setting *find(const kf_cg_setting *s, size_t n, const char *file) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s[i].file, file))
            return &s[i];
    return NULL;
}

static void expect_setting(const kf_cg_setting *s, size_t n, const char *ctrl, const char *file,
                           const char *value) {
    const kf_cg_setting *x = find(s, n, file);
    assert_non_null(x);
    assert_string_equal(x->controller, ctrl);
    assert_string_equal(x->value, value);
}

static void test_v1_limits(void **state) {
    (void)state;
    kf_cg_limits l = {.memory_bytes = 512u << 20, .cpu_millis = 1500, .pids = 256};
    kf_cg_setting s[16];
    size_t n = kf_cgroup_settings(KF_CG_V1, &l, s, 16);
    assert_int_equal(n, 5);
    expect_setting(s, n, "memory", "memory.limit_in_bytes", "536870912");
    expect_setting(s, n, "memory", "memory.memsw.limit_in_bytes", "536870912");
    expect_setting(s, n, "cpu", "cpu.cfs_period_us", "100000");
    expect_setting(s, n, "cpu", "cpu.cfs_quota_us", "150000");
    expect_setting(s, n, "pids", "pids.max", "256");
    /* no v2 names leak into v1 */
    assert_null(find(s, n, "memory.max"));
    assert_null(find(s, n, "cpu.max"));
    /* order: the memory limit precedes memsw (fresh cgroup: lower first),
     * the period precedes the quota */
    assert_string_equal(s[0].file, "memory.limit_in_bytes");
    assert_string_equal(s[1].file, "memory.memsw.limit_in_bytes");
    assert_string_equal(s[2].file, "cpu.cfs_period_us");
}

static void test_v1_unlimited(void **state) {
    (void)state;
    kf_cg_limits l = {0};
    kf_cg_setting s[16];
    size_t n = kf_cgroup_settings(KF_CG_V1, &l, s, 16);
    assert_int_equal(n, 5);
    expect_setting(s, n, "memory", "memory.limit_in_bytes", "-1");
    expect_setting(s, n, "memory", "memory.memsw.limit_in_bytes", "-1");
    expect_setting(s, n, "cpu", "cpu.cfs_quota_us", "-1");
    expect_setting(s, n, "pids", "pids.max", "max");
}

static void test_v2_limits(void **state) {
    (void)state;
    kf_cg_limits l = {.memory_bytes = 1ull << 30, .cpu_millis = 250, .pids = 64};
    kf_cg_setting s[16];
    size_t n = kf_cgroup_settings(KF_CG_V2, &l, s, 16);
    assert_int_equal(n, 4);
    expect_setting(s, n, "memory", "memory.max", "1073741824");
    expect_setting(s, n, "memory", "memory.swap.max", "0");
    expect_setting(s, n, "cpu", "cpu.max", "25000 100000");
    expect_setting(s, n, "pids", "pids.max", "64");
    assert_null(find(s, n, "memory.limit_in_bytes"));
    assert_null(find(s, n, "memory.memsw.limit_in_bytes"));
    assert_null(find(s, n, "cpu.cfs_quota_us"));
}

static void test_v2_unlimited(void **state) {
    (void)state;
    kf_cg_limits l = {0};
    kf_cg_setting s[16];
    size_t n = kf_cgroup_settings(KF_CG_V2, &l, s, 16);
    assert_int_equal(n, 4);
    expect_setting(s, n, "memory", "memory.max", "max");
    expect_setting(s, n, "memory", "memory.swap.max", "0"); /* swap is always 0 */
    expect_setting(s, n, "cpu", "cpu.max", "max 100000");
    expect_setting(s, n, "pids", "pids.max", "max");
}

static void test_cpu_minimum(void **state) {
    (void)state;
    /* the kernel refuses quotas below 1 ms: 1 milli-core is clamped */
    kf_cg_limits l = {.cpu_millis = 1};
    kf_cg_setting s[16];
    size_t n = kf_cgroup_settings(KF_CG_V2, &l, s, 16);
    expect_setting(s, n, "cpu", "cpu.max", "1000 100000");
    n = kf_cgroup_settings(KF_CG_V1, &l, s, 16);
    expect_setting(s, n, "cpu", "cpu.cfs_quota_us", "1000");
    l.cpu_millis = 4000; /* four cores */
    n = kf_cgroup_settings(KF_CG_V2, &l, s, 16);
    expect_setting(s, n, "cpu", "cpu.max", "400000 100000");
}

static void test_max_respected(void **state) {
    (void)state;
    kf_cg_limits l = {.memory_bytes = 1, .cpu_millis = 1, .pids = 1};
    kf_cg_setting s[2];
    memset(s, 0xa5, sizeof(s));
    assert_int_equal(kf_cgroup_settings(KF_CG_V1, &l, s, 2), 2);
    assert_int_equal(kf_cgroup_settings(KF_CG_V2, &l, s, 0), 0);
    assert_int_equal(kf_cgroup_settings(KF_CG_V2, NULL, s, 2), 0);
}

static void test_large_values(void **state) {
    (void)state;
    kf_cg_limits l = {.memory_bytes = UINT64_MAX, .cpu_millis = UINT32_MAX, .pids = UINT32_MAX};
    kf_cg_setting s[16];
    size_t n = kf_cgroup_settings(KF_CG_V2, &l, s, 16);
    expect_setting(s, n, "memory", "memory.max", "18446744073709551615");
    expect_setting(s, n, "cpu", "cpu.max", "429496729500 100000");
    expect_setting(s, n, "pids", "pids.max", "4294967295");
}

static void test_detect_mode(void **state) {
    (void)state;
    kf_cgroup_mode m = 0;
    if (kf_cgroup_detect_mode(&m) < 0)
        skip();
    assert_true(m == KF_CG_V1 || m == KF_CG_V2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_limits),    cmocka_unit_test(test_v1_unlimited),
        cmocka_unit_test(test_v2_limits),    cmocka_unit_test(test_v2_unlimited),
        cmocka_unit_test(test_cpu_minimum),  cmocka_unit_test(test_max_respected),
        cmocka_unit_test(test_large_values), cmocka_unit_test(test_detect_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
