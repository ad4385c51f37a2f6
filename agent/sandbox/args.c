/* args.c - the command line of kfleet-sandbox, parsed into a kf_sb_config.
 *
 * Pure: no I/O, so it is unit-tested alone (tests/unit/test_sandbox_args.c).
 * Everything the agent passes is checked here, before any namespace exists:
 * a malformed id, a root uid or a relative command is refused with a message
 * naming the argument. Grammar (options in any order, `--opt VALUE` or
 * `--opt=VALUE`):
 *
 *   --id ID --uid UID --gid GID --volume DIR --run-dir DIR [--rootfs DIR]
 *   [--tmp-size BYTES] [--home-size BYTES] [--nofile N] [--env K=V]...
 *   -- ARGV...
 */
#include "sandbox.h"

#include "kf/cleanup.h"
#include "kf/util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* The kernel's environment when no --env is given. Nothing of the host's
 * environment is ever passed on. */
static const char *const default_env[] = {
    "HOME=" KF_SB_HOME,
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "LANG=C.UTF-8",
    "USER=sandbox",
    "MPLCONFIGDIR=/tmp/.mpl",
    "PYTHONUNBUFFERED=1",
    "TERM=dumb",
};

bool kf_sb_valid_id(const char *id) {
    size_t n = strlen(id);
    if (n < 1 || n > KF_SB_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

/* A uid/gid the kernel may run as: not root, not the (uid_t)-1 "no change"
 * value, plain decimal. */
static int parse_id_number(const char *s, unsigned long *out) {
    if (!*s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0 || v >= 0xffffffffULL)
        return -EINVAL;
    *out = (unsigned long)v;
    return 0;
}

/* Env key: [A-Za-z_][A-Za-z0-9_]*, then '='. Returns the key length or 0. */
static size_t env_key_len(const char *kv) {
    size_t i = 0;
    for (; kv[i] && kv[i] != '='; i++) {
        char c = kv[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return kv[i] == '=' ? i : 0;
}

/* Directory arguments must be absolute; the helper resolves nothing relative
 * to the agent's cwd. */
static int check_dir_arg(const char *opt, const char *v, kf_error *err) {
    if (v[0] != '/')
        return kf_error_set(err, -EINVAL, 0, "%s %s: not an absolute path", opt, v);
    if (strlen(v) >= PATH_MAX - 64)
        return kf_error_set(err, -ENAMETOOLONG, 0, "%s: path too long", opt);
    return 0;
}

static int parse_size_arg(const char *opt, const char *v, uint64_t *out, kf_error *err) {
    uint64_t n;
    if (kf_parse_size(v, &n) < 0 || n < 4096 || n > (1ULL << 40))
        return kf_error_set(err, -EINVAL, 0, "%s %s: not a size between 4K and 1T", opt, v);
    *out = n;
    return 0;
}

static int add_env(char **envp, size_t *n, char *kv, kf_error *err) {
    size_t klen = env_key_len(kv);
    if (klen == 0)
        return kf_error_set(err, -EINVAL, 0, "--env %.64s: not KEY=VALUE", kv);
    for (size_t i = 0; i < *n; i++) {
        if (strncmp(envp[i], kv, klen + 1) == 0) {
            envp[i] = kv; /* same key: the caller's value wins */
            return 0;
        }
    }
    if (*n >= KF_ARRAY_SIZE(default_env) + KF_SB_MAX_ENV)
        return kf_error_set(err, -E2BIG, 0, "more than %d --env entries", KF_SB_MAX_ENV);
    envp[(*n)++] = kv;
    return 0;
}

int kf_sb_parse_args(int argc, char **argv, kf_sb_config *cfg, kf_error *err) {
    *cfg = (kf_sb_config){
        .rootfs = "/",
        .tmp_size = KF_SB_DEFAULT_TMP_SIZE,
        .home_size = KF_SB_DEFAULT_HOME_SIZE,
        .nofile = KF_SB_DEFAULT_NOFILE,
    };
    size_t cap = KF_ARRAY_SIZE(default_env) + KF_SB_MAX_ENV + 1;
    _cleanup_free_ char **envp = calloc(cap, sizeof(char *));
    if (!envp)
        return kf_error_set(err, -ENOMEM, 0, "allocating the environment");
    size_t nenv = 0;
    for (size_t i = 0; i < KF_ARRAY_SIZE(default_env); i++)
        envp[nenv++] = (char *)default_env[i];

    bool have_uid = false, have_gid = false, sep = false;
    int i = 1;
    for (; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            sep = true;
            i++;
            break;
        }
        if (strncmp(a, "--", 2) != 0)
            return kf_error_set(err, -EINVAL, 0, "unexpected argument %.64s (missing --?)", a);
        if (strlen(a) > KF_SB_MAX_ARG_LEN)
            return kf_error_set(err, -E2BIG, 0, "argument %d too long", i);
        /* --opt=value or --opt value */
        char name[32];
        char *val;
        char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        if (nlen >= sizeof(name))
            return kf_error_set(err, -EINVAL, 0, "unknown option %.64s", a);
        memcpy(name, a, nlen);
        name[nlen] = '\0';
        if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc)
                return kf_error_set(err, -EINVAL, 0, "%s needs a value", name);
            val = argv[++i];
            if (strlen(val) > KF_SB_MAX_ARG_LEN)
                return kf_error_set(err, -E2BIG, 0, "%s: value too long", name);
        }

        int r = 0;
        unsigned long n;
        if (strcmp(name, "--id") == 0) {
            if (!kf_sb_valid_id(val))
                return kf_error_set(err, -EINVAL, 0, "--id %.64s: want [a-z0-9-]{1,63}", val);
            cfg->id = val;
        } else if (strcmp(name, "--uid") == 0) {
            if (parse_id_number(val, &n) < 0)
                return kf_error_set(err, -EINVAL, 0, "--uid %.32s: want a non-root uid", val);
            cfg->uid = (uid_t)n;
            have_uid = true;
        } else if (strcmp(name, "--gid") == 0) {
            if (parse_id_number(val, &n) < 0)
                return kf_error_set(err, -EINVAL, 0, "--gid %.32s: want a non-root gid", val);
            cfg->gid = (gid_t)n;
            have_gid = true;
        } else if (strcmp(name, "--volume") == 0) {
            r = check_dir_arg(name, val, err);
            cfg->volume = val;
        } else if (strcmp(name, "--run-dir") == 0) {
            r = check_dir_arg(name, val, err);
            cfg->run_dir = val;
        } else if (strcmp(name, "--rootfs") == 0) {
            r = check_dir_arg(name, val, err);
            cfg->rootfs = val;
        } else if (strcmp(name, "--tmp-size") == 0) {
            r = parse_size_arg(name, val, &cfg->tmp_size, err);
        } else if (strcmp(name, "--home-size") == 0) {
            r = parse_size_arg(name, val, &cfg->home_size, err);
        } else if (strcmp(name, "--nofile") == 0) {
            char *end;
            errno = 0;
            unsigned long v = strtoul(val, &end, 10);
            if (errno || *end || val[0] < '0' || val[0] > '9' || v < 16 || v > KF_SB_MAX_NOFILE)
                return kf_error_set(err, -EINVAL, 0, "--nofile %.32s: want 16..%lu", val,
                                    KF_SB_MAX_NOFILE);
            cfg->nofile = v;
        } else if (strcmp(name, "--env") == 0) {
            r = add_env(envp, &nenv, val, err);
        } else {
            return kf_error_set(err, -EINVAL, 0, "unknown option %s", name);
        }
        if (r < 0)
            return r;
    }

    if (!cfg->id)
        return kf_error_set(err, -EINVAL, 0, "--id is required");
    if (!have_uid || !have_gid)
        return kf_error_set(err, -EINVAL, 0, "--uid and --gid are required");
    if (!cfg->volume)
        return kf_error_set(err, -EINVAL, 0, "--volume is required");
    if (!cfg->run_dir)
        return kf_error_set(err, -EINVAL, 0, "--run-dir is required");
    if (!sep || i >= argc)
        return kf_error_set(err, -EINVAL, 0, "missing `-- COMMAND...`");
    if (argc - i > KF_SB_MAX_ARGV)
        return kf_error_set(err, -E2BIG, 0, "kernel command has more than %d words",
                            KF_SB_MAX_ARGV);
    for (int j = i; j < argc; j++)
        if (strlen(argv[j]) > KF_SB_MAX_ARG_LEN)
            return kf_error_set(err, -E2BIG, 0, "kernel command word %d too long", j - i);
    if (argv[i][0] != '/')
        return kf_error_set(err, -EINVAL, 0, "kernel command %.64s: not an absolute path",
                            argv[i]);

    cfg->argv = &argv[i];
    envp[nenv] = NULL;
    cfg->envp = TAKE_PTR(envp);
    return 0;
}

void kf_sb_config_done(kf_sb_config *cfg) {
    if (!cfg)
        return;
    free(cfg->envp);
    cfg->envp = NULL;
}
