/* test_cgroup_v1.c - real cgroup v1 session cgroups on this host: create
 * with limits, read them back, attach, kill (also a fork storm), destroy,
 * and nothing is left behind. Needs root and v1 memory/cpu/pids
 * hierarchies; exits 77 (skipped) otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgroup_internal.h"

static char g_parent[64];
static char g_name[128];

static int dir_exists(const char *ctrl, const char *name) {
    char p[512];
    snprintf(p, sizeof(p), "/sys/fs/cgroup/%s/%s", ctrl, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void reap_all(void) {
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

/* A child blocked on a pipe until released, so it can be attached first. */
static pid_t spawn_waiting(int *release_fd, int forker) {
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[1]);
        char c;
        if (read(p[0], &c, 1) != 1)
            _exit(1);
        if (forker) {
            /* A fork storm: keep forking; every child forks too. */
            for (;;)
                fork();
        }
        for (;;)
            pause();
    }
    close(p[0]);
    *release_fd = p[1];
    return pid;
}

static int setup(void **state) {
    (void)state;
    kf_error err = {0};
    if (kf_cgroup_init(&err) < 0) {
        fprintf(stderr, "init: %s\n", err.msg);
        return -1;
    }
    return kf_cgroup_mode_get() == KF_CG_V1 ? 0 : -1;
}

static void test_create_limits_destroy(void **state) {
    (void)state;
    kf_error err = {0};
    kf_cg_limits l = {.memory_bytes = 64u << 20, .cpu_millis = 500, .pids = 32};
    int r = kf_cgroup_create(g_name, &l, &err);
    if (r < 0)
        fail_msg("create: %s", err.msg);
    assert_true(dir_exists("memory", g_name));
    assert_true(dir_exists("cpu", g_name));
    assert_true(dir_exists("pids", g_name));
    /* twice: EEXIST, and the first one is untouched */
    assert_int_equal(kf_cgroup_create(g_name, &l, &err), -EEXIST);
    assert_true(dir_exists("memory", g_name));

    char buf[128];
    assert_int_equal(kf_cgroup_read_setting(g_name, "memory", "memory.limit_in_bytes", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "67108864");
    if (kf_cgroup_read_setting(g_name, "memory", "memory.memsw.limit_in_bytes", buf, sizeof(buf)) == 0)
        assert_string_equal(buf, "67108864");
    assert_int_equal(kf_cgroup_read_setting(g_name, "cpu", "cpu.cfs_quota_us", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "50000");
    assert_int_equal(kf_cgroup_read_setting(g_name, "cpu", "cpu.cfs_period_us", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "100000");
    assert_int_equal(kf_cgroup_read_setting(g_name, "pids", "pids.max", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "32");

    /* raise (memsw must be raised first), then lower, then unlimited */
    kf_cg_limits up = {.memory_bytes = 256u << 20, .cpu_millis = 2000, .pids = 100};
    if (kf_cgroup_set_limits(g_name, &up, &err) < 0)
        fail_msg("raise: %s", err.msg);
    assert_int_equal(kf_cgroup_read_setting(g_name, "memory", "memory.limit_in_bytes", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "268435456");
    if (kf_cgroup_read_setting(g_name, "memory", "memory.memsw.limit_in_bytes", buf, sizeof(buf)) == 0)
        assert_string_equal(buf, "268435456");
    kf_cg_limits down = {.memory_bytes = 32u << 20, .cpu_millis = 100, .pids = 8};
    if (kf_cgroup_set_limits(g_name, &down, &err) < 0)
        fail_msg("lower: %s", err.msg);
    assert_int_equal(kf_cgroup_read_setting(g_name, "memory", "memory.limit_in_bytes", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "33554432");
    kf_cg_limits none = {0};
    if (kf_cgroup_set_limits(g_name, &none, &err) < 0)
        fail_msg("unlimited: %s", err.msg);
    assert_int_equal(kf_cgroup_read_setting(g_name, "pids", "pids.max", buf, sizeof(buf)), 0);
    assert_string_equal(buf, "max");

    uint64_t oom = 99, cur = 99;
    assert_int_equal(kf_cgroup_oom_kills(g_name, &oom), 0);
    assert_int_equal(oom, 0);
    assert_int_equal(kf_cgroup_memory_current(g_name, &cur), 0);

    if (kf_cgroup_destroy(g_name, &err) < 0)
        fail_msg("destroy: %s", err.msg);
    assert_false(dir_exists("memory", g_name));
    assert_false(dir_exists("cpu", g_name));
    assert_false(dir_exists("pids", g_name));
    /* destroying a missing cgroup is fine */
    assert_int_equal(kf_cgroup_destroy(g_name, &err), 0);
}

static void test_attach_kill(void **state) {
    (void)state;
    kf_error err = {0};
    kf_cg_limits l = {.memory_bytes = 64u << 20, .pids = 16};
    if (kf_cgroup_create(g_name, &l, &err) < 0)
        fail_msg("create: %s", err.msg);
    int rel;
    pid_t child = spawn_waiting(&rel, 0);
    if (kf_cgroup_attach(g_name, child, &err) < 0)
        fail_msg("attach: %s", err.msg);
    pid_t pids[8];
    size_t n = 0;
    assert_int_equal(kf_cgroup_procs(g_name, pids, 8, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(pids[0], child);
    close(rel); /* child: read() returns 0 -> exits 1, unless killed first */
    if (kf_cgroup_kill_all(g_name, &err) < 0)
        fail_msg("kill_all: %s", err.msg);
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_int_equal(kf_cgroup_procs(g_name, pids, 8, &n), 0);
    assert_int_equal(n, 0);
    if (kf_cgroup_destroy(g_name, &err) < 0)
        fail_msg("destroy: %s", err.msg);
    assert_false(dir_exists("pids", g_name));
}

/* The double-forked daemon and fork bomb lines of the isolation suite: a
 * storm of forks capped by pids.max, all killed by destroy. */
static void test_fork_storm(void **state) {
    (void)state;
    kf_error err = {0};
    kf_cg_limits l = {.memory_bytes = 128u << 20, .pids = 64};
    if (kf_cgroup_create(g_name, &l, &err) < 0)
        fail_msg("create: %s", err.msg);
    int rel;
    pid_t child = spawn_waiting(&rel, 1);
    if (kf_cgroup_attach(g_name, child, &err) < 0)
        fail_msg("attach: %s", err.msg);
    assert_int_equal(write(rel, "x", 1), 1);
    close(rel);
    /* let it hit the limit */
    pid_t pids[256];
    size_t n = 0;
    for (int i = 0; i < 200; i++) {
        usleep(5000);
        reap_all();
        if (kf_cgroup_procs(g_name, pids, 256, &n) == 0 && n >= 60)
            break;
    }
    assert_true(n > 1);
    assert_true(n <= 64);
    if (kf_cgroup_destroy(g_name, &err) < 0)
        fail_msg("destroy: %s", err.msg);
    assert_false(dir_exists("memory", g_name));
    assert_false(dir_exists("pids", g_name));
    assert_false(dir_exists("cpu", g_name));
    for (int i = 0; i < 100 && waitpid(-1, NULL, WNOHANG) >= 0; i++)
        usleep(2000);
}

static void test_bad_names(void **state) {
    (void)state;
    kf_error err = {0};
    kf_cg_limits l = {0};
    const char *bad[] = {"", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a\nb"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(kf_cgroup_create(bad[i], &l, &err), -EINVAL);
}

int main(void) {
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: needs root\n");
        return 77;
    }
    struct stat st;
    if (stat("/sys/fs/cgroup/memory/cgroup.procs", &st) < 0 || stat("/sys/fs/cgroup/pids/cgroup.procs", &st) < 0 ||
        stat("/sys/fs/cgroup/cpu/cgroup.procs", &st) < 0) {
        fprintf(stderr, "skipped: no cgroup v1 memory/cpu/pids hierarchies\n");
        return 77;
    }
    /* reap the storm's orphans ourselves */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    snprintf(g_parent, sizeof(g_parent), "kfleet-test-%d", (int)getpid());
    snprintf(g_name, sizeof(g_name), "%s/sb-1", g_parent);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_create_limits_destroy),
        cmocka_unit_test(test_attach_kill),
        cmocka_unit_test(test_fork_storm),
    };
    int r = cmocka_run_group_tests(tests, setup, NULL);
    /* remove the parent the tests created (left empty by destroy) */
    kf_error err = {0};
    kf_cgroup_destroy(g_name, &err);
    if (kf_cgroup_destroy(g_parent, &err) < 0) {
        fprintf(stderr, "cleanup: %s\n", err.msg);
        r = r ? r : 1;
    }
    if (dir_exists("memory", g_parent) || dir_exists("pids", g_parent) || dir_exists("cpu", g_parent)) {
        fprintf(stderr, "cleanup: %s left behind\n", g_parent);
        r = r ? r : 1;
    }
    return r;
}
