/* test_sandbox_args.c - kf_sb_parse_args(): the kfleet-sandbox command line
 * the agent builds, what is accepted and what it becomes. Pure; runs
 * anywhere. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sandbox.h"

#define BASE "kfleet-sandbox", "--id", "sb-1a2b3c", "--uid", "5001", "--gid", "5002", \
             "--volume", "/v", "--run-dir", "/r"

static int parse(char **argv, kf_sb_config *cfg, kf_error *err) {
    int argc = 0;
    while (argv[argc])
        argc++;
    return kf_sb_parse_args(argc, argv, cfg, err);
}

static const char *env_get(const kf_sb_config *cfg, const char *key) {
    size_t k = strlen(key);
    for (char **e = cfg->envp; *e; e++)
        if (strncmp(*e, key, k) == 0 && (*e)[k] == '=')
            return *e + k + 1;
    return NULL;
}

static void bad(char **argv, const char *msg_part) {
    kf_sb_config cfg;
    kf_error err = {0};
    int r = parse(argv, &cfg, &err);
    if (r == 0) {
        kf_sb_config_done(&cfg);
        fail_msg("accepted; wanted an error containing '%s'", msg_part);
    }
    assert_true(r < 0);
    if (!strstr(err.msg, msg_part))
        fail_msg("message '%s' lacks '%s'", err.msg, msg_part);
}

static void test_minimal(void **state) {
    (void)state;
    char *argv[] = {BASE, "--", "/usr/bin/python3", "-m", "ipykernel_launcher", NULL};
    kf_sb_config cfg;
    kf_error err = {0};
    if (parse(argv, &cfg, &err) != 0)
        fail_msg("refused: %s", err.msg);
    assert_string_equal(cfg.id, "sb-1a2b3c");
    assert_int_equal(cfg.uid, 5001);
    assert_int_equal(cfg.gid, 5002);
    assert_string_equal(cfg.volume, "/v");
    assert_string_equal(cfg.run_dir, "/r");
    assert_string_equal(cfg.rootfs, "/");
    assert_int_equal(cfg.tmp_size, 64ULL << 20);
    assert_int_equal(cfg.home_size, 64ULL << 20);
    assert_int_equal(cfg.nofile, 1024);
    assert_string_equal(cfg.argv[0], "/usr/bin/python3");
    assert_string_equal(cfg.argv[2], "ipykernel_launcher");
    assert_null(cfg.argv[3]);
    /* exactly the default environment */
    size_t n = 0;
    while (cfg.envp[n])
        n++;
    assert_int_equal(n, 7);
    assert_string_equal(env_get(&cfg, "HOME"), "/home/sandbox");
    assert_string_equal(env_get(&cfg, "PATH"), "/usr/local/bin:/usr/bin:/bin");
    assert_string_equal(env_get(&cfg, "TERM"), "dumb");
    assert_string_equal(env_get(&cfg, "MPLCONFIGDIR"), "/tmp/.mpl");
    kf_sb_config_done(&cfg);
}

static void test_options(void **state) {
    (void)state;
    char *argv[] = {BASE,           "--rootfs=/img", "--tmp-size", "16M",       "--home-size=1G",
                    "--nofile",     "4096",          "--env",      "FOO=a=b",   "--env",
                    "PATH=/opt/bin", "--",           "/bin/sh",    "--id",      NULL};
    kf_sb_config cfg;
    kf_error err = {0};
    if (parse(argv, &cfg, &err) != 0)
        fail_msg("refused: %s", err.msg);
    assert_string_equal(cfg.rootfs, "/img");
    assert_int_equal(cfg.tmp_size, 16ULL << 20);
    assert_int_equal(cfg.home_size, 1ULL << 30);
    assert_int_equal(cfg.nofile, 4096);
    assert_string_equal(env_get(&cfg, "FOO"), "a=b");
    /* same key replaces the default, no duplicate */
    assert_string_equal(env_get(&cfg, "PATH"), "/opt/bin");
    size_t n = 0;
    while (cfg.envp[n])
        n++;
    assert_int_equal(n, 8);
    /* after --, options belong to the kernel */
    assert_string_equal(cfg.argv[1], "--id");
    kf_sb_config_done(&cfg);
}

static void test_id(void **state) {
    (void)state;
    assert_true(kf_sb_valid_id("sb-1a2b3c"));
    assert_true(kf_sb_valid_id("a"));
    char max[64];
    memset(max, 'a', 63);
    max[63] = '\0';
    assert_true(kf_sb_valid_id(max));
    char over[65];
    memset(over, 'a', 64);
    over[64] = '\0';
    assert_false(kf_sb_valid_id(over));
    assert_false(kf_sb_valid_id(""));
    assert_false(kf_sb_valid_id("SB-1"));
    assert_false(kf_sb_valid_id("sb_1"));
    assert_false(kf_sb_valid_id("sb.1"));
    assert_false(kf_sb_valid_id("sb/1"));
    assert_false(kf_sb_valid_id("sb 1"));
}

static void test_refused(void **state) {
    (void)state;
    bad((char *[]){"x", "--uid", "1", "--gid", "1", "--volume", "/v", "--run-dir", "/r", "--",
                   "/bin/sh", NULL},
        "--id is required");
    bad((char *[]){"x", "--id", "A", "--", "/bin/sh", NULL}, "--id");
    bad((char *[]){"x", "--id", "a", "--uid", "0", "--", "/bin/sh", NULL}, "--uid");
    bad((char *[]){"x", "--id", "a", "--uid", "4294967295", "--", "/bin/sh", NULL}, "--uid");
    bad((char *[]){"x", "--id", "a", "--uid", "-5", "--", "/bin/sh", NULL}, "--uid");
    bad((char *[]){"x", "--id", "a", "--uid", "12x", "--", "/bin/sh", NULL}, "--uid");
    bad((char *[]){"x", "--id", "a", "--gid", "0", "--", "/bin/sh", NULL}, "--gid");
    bad((char *[]){BASE, NULL}, "missing `-- COMMAND...`");
    bad((char *[]){BASE, "--", NULL}, "missing `-- COMMAND...`");
    bad((char *[]){BASE, "--", "python3", NULL}, "not an absolute path");
    bad((char *[]){BASE, "--volume", "rel/dir", "--", "/bin/sh", NULL}, "--volume");
    bad((char *[]){BASE, "--rootfs", "img", "--", "/bin/sh", NULL}, "--rootfs");
    bad((char *[]){BASE, "--tmp-size", "lots", "--", "/bin/sh", NULL}, "--tmp-size");
    bad((char *[]){BASE, "--tmp-size", "1", "--", "/bin/sh", NULL}, "--tmp-size");
    bad((char *[]){BASE, "--nofile", "0", "--", "/bin/sh", NULL}, "--nofile");
    bad((char *[]){BASE, "--nofile", "99999999", "--", "/bin/sh", NULL}, "--nofile");
    bad((char *[]){BASE, "--env", "NOVALUE", "--", "/bin/sh", NULL}, "--env");
    bad((char *[]){BASE, "--env", "=x", "--", "/bin/sh", NULL}, "--env");
    bad((char *[]){BASE, "--env", "A-B=x", "--", "/bin/sh", NULL}, "--env");
    bad((char *[]){BASE, "--bogus", "1", "--", "/bin/sh", NULL}, "unknown option");
    bad((char *[]){BASE, "stray", "--", "/bin/sh", NULL}, "unexpected argument");
    bad((char *[]){BASE, "--nofile", NULL}, "needs a value");
}

static void test_env_limit(void **state) {
    (void)state;
    enum { N = KF_SB_MAX_ENV + 1 };
    static char kv[N][16];
    char *argv[11 + 2 * N + 3];
    char *base[] = {BASE};
    int n = 0;
    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
        argv[n++] = base[i];
    for (int i = 0; i < N; i++) {
        snprintf(kv[i], sizeof(kv[i]), "K%d=v", i);
        argv[n++] = "--env";
        argv[n++] = kv[i];
    }
    argv[n++] = "--";
    argv[n++] = "/bin/sh";
    argv[n] = NULL;
    bad(argv, "--env entries");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal), cmocka_unit_test(test_options),  cmocka_unit_test(test_id),
        cmocka_unit_test(test_refused), cmocka_unit_test(test_env_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
