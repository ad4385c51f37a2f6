/* test_cgroup_v2.c - the cgroup v2 code path on a real cgroup2 mount.
 *
 * On a v2 host that is /sys/fs/cgroup; on a hybrid host the (controller-
 * less) /sys/fs/cgroup/unified. Controllers may be missing there, so limits
 * are checked only where their files exist; the tree, attach, cgroup.procs,
 * cgroup.kill and delete are always exercised. Needs root; exits 77 when
 * not root or no cgroup2 mount exists. KF_TEST_CGROUP2 overrides the mount. */
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
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cgroup_internal.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static char g_root[256];
static char g_parent[64];
static char g_name[128];

static int path_exists(const char *name, const char *file) {
    char p[512];
    snprintf(p, sizeof(p), "%s/%s%s%s", g_root, name, file ? "/" : "", file ? file : "");
    struct stat st;
    return stat(p, &st) == 0;
}

static pid_t spawn_sleeper(void) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (;;)
            pause();
    }
    return pid;
}

static int setup(void **state) {
    (void)state;
    kf_error err = {0};
    if (kf_cgroup_init_for_test(KF_CG_V2, g_root, &err) < 0) {
        fprintf(stderr, "init: %s\n", err.msg);
        return -1;
    }
    return kf_cgroup_mode_get() == KF_CG_V2 ? 0 : -1;
}

static void test_lifecycle(void **state) {
    (void)state;
    kf_error err = {0};
    kf_cg_limits l = {.memory_bytes = 64u << 20, .cpu_millis = 500, .pids = 32};
    if (kf_cgroup_create(g_name, &l, &err) < 0)
        fail_msg("create: %s", err.msg);
    assert_true(path_exists(g_name, "cgroup.procs"));
    assert_int_equal(kf_cgroup_create(g_name, &l, &err), -EEXIST);

    /* limits, where this mount offers the controllers */
    char buf[128];
    if (path_exists(g_name, "memory.max")) {
        assert_int_equal(kf_cgroup_read_setting(g_name, "memory", "memory.max", buf, sizeof(buf)), 0);
        assert_string_equal(buf, "67108864");
    }
    if (path_exists(g_name, "cpu.max")) {
        assert_int_equal(kf_cgroup_read_setting(g_name, "cpu", "cpu.max", buf, sizeof(buf)), 0);
        assert_string_equal(buf, "50000 100000");
    }
    if (path_exists(g_name, "pids.max")) {
        assert_int_equal(kf_cgroup_read_setting(g_name, "pids", "pids.max", buf, sizeof(buf)), 0);
        assert_string_equal(buf, "32");
    }

    pid_t a = spawn_sleeper(), b = spawn_sleeper();
    if (kf_cgroup_attach(g_name, a, &err) < 0 || kf_cgroup_attach(g_name, b, &err) < 0)
        fail_msg("attach: %s", err.msg);
    pid_t pids[8];
    size_t n = 0;
    assert_int_equal(kf_cgroup_procs(g_name, pids, 8, &n), 0);
    assert_int_equal(n, 2);
    assert_true((pids[0] == a && pids[1] == b) || (pids[0] == b && pids[1] == a));
    assert_int_equal(kf_cgroup_procs(g_name, pids, 1, &n), -E2BIG);

    /* deleting a populated cgroup must kill first (cgroup.kill) */
    if (kf_cgroup_destroy(g_name, &err) < 0)
        fail_msg("destroy: %s", err.msg);
    int st;
    assert_int_equal(waitpid(a, &st, 0), a);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_int_equal(waitpid(b, &st, 0), b);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_false(path_exists(g_name, NULL));
    assert_int_equal(kf_cgroup_destroy(g_name, &err), 0);
}

static void test_kill_all_keeps_cgroup(void **state) {
    (void)state;
    kf_error err = {0};
    kf_cg_limits l = {0};
    if (kf_cgroup_create(g_name, &l, &err) < 0)
        fail_msg("create: %s", err.msg);
    pid_t a = spawn_sleeper();
    if (kf_cgroup_attach(g_name, a, &err) < 0)
        fail_msg("attach: %s", err.msg);
    if (kf_cgroup_kill_all(g_name, &err) < 0)
        fail_msg("kill_all: %s", err.msg);
    int st;
    assert_int_equal(waitpid(a, &st, 0), a);
    assert_true(WIFSIGNALED(st));
    assert_true(path_exists(g_name, NULL));
    size_t n = 9;
    pid_t pids[4];
    assert_int_equal(kf_cgroup_procs(g_name, pids, 4, &n), 0);
    assert_int_equal(n, 0);
    uint64_t oom = 7;
    if (path_exists(g_name, "memory.events")) {
        assert_int_equal(kf_cgroup_oom_kills(g_name, &oom), 0);
        assert_int_equal(oom, 0);
    } else {
        assert_int_equal(kf_cgroup_oom_kills(g_name, &oom), -ENOENT);
    }
    if (kf_cgroup_destroy(g_name, &err) < 0)
        fail_msg("destroy: %s", err.msg);
    assert_false(path_exists(g_name, NULL));
}

int main(void) {
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: needs root\n");
        return 77;
    }
    const char *cands[] = {getenv("KF_TEST_CGROUP2"), "/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    g_root[0] = '\0';
    for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
        struct statfs sfs;
        if (cands[i] && statfs(cands[i], &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC) {
            snprintf(g_root, sizeof(g_root), "%s", cands[i]);
            break;
        }
    }
    if (!g_root[0]) {
        fprintf(stderr, "skipped: no cgroup2 mount\n");
        return 77;
    }
    snprintf(g_parent, sizeof(g_parent), "kfleet-test-%d", (int)getpid());
    snprintf(g_name, sizeof(g_name), "%s/sb-1", g_parent);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_kill_all_keeps_cgroup),
    };
    int r = cmocka_run_group_tests(tests, setup, NULL);
    kf_error err = {0};
    kf_cgroup_destroy(g_name, &err);
    if (kf_cgroup_destroy(g_parent, &err) < 0) {
        fprintf(stderr, "cleanup: %s\n", err.msg);
        r = r ? r : 1;
    }
    if (path_exists(g_parent, NULL)) {
        fprintf(stderr, "cleanup: %s/%s left behind\n", g_root, g_parent);
        r = r ? r : 1;
    }
    return r;
}
