/* config.c - defaults and command-line parsing for kfleet-agent, and the
 * checking of client-requested limits against the configured maximums. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kf/util.h"

#define MiB (1024ULL * 1024)
#define GiB (1024ULL * MiB)

void kf_agent_config_defaults(kf_agent_config *c) {
    memset(c, 0, sizeof(*c));
    snprintf(c->state_dir, sizeof(c->state_dir), "/var/lib/kfleet");
    snprintf(c->listen_unix, sizeof(c->listen_unix), "/run/kfleet/agent.sock");
    snprintf(c->sandbox_bin, sizeof(c->sandbox_bin), "%s", "");
    snprintf(c->rootfs, sizeof(c->rootfs), "/");
    snprintf(c->python, sizeof(c->python), "/usr/bin/python3");
    if (gethostname(c->node_name, sizeof(c->node_name)) < 0)
        snprintf(c->node_name, sizeof(c->node_name), "node");
    c->uid_base = 200000;
    c->uid_count = 10000;
    c->defaults = (kf_limits){
        .memory_bytes = 1 * GiB, .cpu_millis = 1000, .pids = 256, .exec_timeout_ms = 120000,
        .disk_bytes = 1 * GiB, .disk_inodes = 65536, .idle_timeout_s = 20 * 60,
        .max_lifetime_s = 12 * 3600,
    };
    c->max = (kf_limits){
        .memory_bytes = 16 * GiB, .cpu_millis = 16000, .pids = 4096, .exec_timeout_ms = 3600 * 1000,
        .disk_bytes = 64 * GiB, .disk_inodes = 4 * 1024 * 1024, .idle_timeout_s = 7 * 24 * 3600,
        .max_lifetime_s = 30 * 24 * 3600,
    };
    c->pool_size = 2;
    c->max_sessions = 1000;
    c->max_output_bytes = 16 * MiB;
    c->max_upload_bytes = 1 * GiB;
    c->max_code_bytes = 1 * MiB;
    c->exec_grace_ms = 2000;
    c->start_timeout_ms = 60000;
    c->max_calls = 1024;
}

static void usage(void) {
    printf("Usage: kfleet-agent [OPTIONS]\n"
           "Runs sandboxed Jupyter kernel sessions on this node and serves kfleet.v1.Sessions.\n\n"
           "  --state-dir DIR        session records, volumes (default /var/lib/kfleet)\n"
           "  --listen PATH          unix socket of the API (default /run/kfleet/agent.sock)\n"
           "  --listen-tcp HOST:PORT also listen on TCP (default: off)\n"
           "  --sandbox PATH         the kfleet-sandbox helper (default: next to this binary)\n"
           "  --rootfs DIR           system image for sandboxes (default /)\n"
           "  --python PATH          python inside the image (default /usr/bin/python3)\n"
           "  --node-name NAME       this node's name (default: hostname)\n"
           "  --pool N               warm sandboxes kept ready (default 2)\n"
           "  --max-sessions N       sessions on this node (default 1000)\n"
           "  --uid-base N           first per-session uid (default 200000)\n"
           "  --default-memory SIZE  (default 1G)      --max-memory SIZE (default 16G)\n"
           "  --default-timeout DUR  (default 120s)    --max-timeout DUR (default 1h)\n"
           "  --default-disk SIZE    (default 1G)      --max-disk SIZE (default 64G)\n"
           "  --idle-timeout DUR     (default 20m)     --max-lifetime DUR (default 12h)\n"
           "  --max-output SIZE      output per execution (default 16M)\n"
           "  --max-upload SIZE      per uploaded file (default 1G)\n"
           "  --exec-grace DUR       interrupt-to-restart grace (default 2s)\n"
           "  --purge                delete every session and warm sandbox on this node, then exit\n"
           "  --debug                verbose logs\n");
}

static int want_size(const char *name, const char *v, uint64_t *out, kf_error *err) {
    if (kf_parse_size(v, out) < 0)
        return kf_error_set(err, -EINVAL, 0, "--%s: '%s' is not a size (e.g. 512M, 2G)", name, v);
    return 0;
}

static int want_ms(const char *name, const char *v, uint64_t *out, kf_error *err) {
    if (kf_parse_duration_ms(v, out) < 0)
        return kf_error_set(err, -EINVAL, 0, "--%s: '%s' is not a duration (e.g. 120s, 20m)", name, v);
    return 0;
}

static int want_uint(const char *name, const char *v, uint32_t *out, kf_error *err) {
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || *end || end == v || n > UINT32_MAX)
        return kf_error_set(err, -EINVAL, 0, "--%s: '%s' is not a number", name, v);
    *out = (uint32_t)n;
    return 0;
}

static int copy_str(const char *name, const char *v, char *dst, size_t size, kf_error *err) {
    if (strlen(v) >= size)
        return kf_error_set(err, -ENAMETOOLONG, 0, "--%s: too long (max %zu)", name, size - 1);
    strcpy(dst, v);
    return 0;
}

int kf_agent_config_parse(kf_agent_config *c, int argc, char **argv, kf_error *err) {
    enum {
        O_STATE = 256, O_LISTEN, O_TCP, O_SANDBOX, O_ROOTFS, O_PYTHON, O_NODE, O_POOL, O_MAXSESS,
        O_UIDBASE, O_DMEM, O_MMEM, O_DTO, O_MTO, O_DDISK, O_MDISK, O_IDLE, O_LIFE, O_MOUT, O_MUP,
        O_GRACE, O_DEBUG, O_PURGE, O_HELP,
    };
    static const struct option opts[] = {
        {"state-dir", 1, 0, O_STATE},     {"listen", 1, 0, O_LISTEN},
        {"listen-tcp", 1, 0, O_TCP},      {"sandbox", 1, 0, O_SANDBOX},
        {"rootfs", 1, 0, O_ROOTFS},       {"python", 1, 0, O_PYTHON},
        {"node-name", 1, 0, O_NODE},      {"pool", 1, 0, O_POOL},
        {"max-sessions", 1, 0, O_MAXSESS}, {"uid-base", 1, 0, O_UIDBASE},
        {"default-memory", 1, 0, O_DMEM}, {"max-memory", 1, 0, O_MMEM},
        {"default-timeout", 1, 0, O_DTO}, {"max-timeout", 1, 0, O_MTO},
        {"default-disk", 1, 0, O_DDISK},  {"max-disk", 1, 0, O_MDISK},
        {"idle-timeout", 1, 0, O_IDLE},   {"max-lifetime", 1, 0, O_LIFE},
        {"max-output", 1, 0, O_MOUT},     {"max-upload", 1, 0, O_MUP},
        {"exec-grace", 1, 0, O_GRACE},    {"debug", 0, 0, O_DEBUG},
        {"purge", 0, 0, O_PURGE},
        {"help", 0, 0, O_HELP},           {0, 0, 0, 0},
    };
    optind = 1;
    int o, r = 0;
    uint64_t v64;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *name = o >= O_STATE && o <= O_HELP ? opts[o - O_STATE].name : "?";
        switch (o) {
        case O_STATE: r = copy_str(name, optarg, c->state_dir, sizeof(c->state_dir), err); break;
        case O_LISTEN: r = copy_str(name, optarg, c->listen_unix, sizeof(c->listen_unix), err); break;
        case O_TCP: r = copy_str(name, optarg, c->listen_tcp, sizeof(c->listen_tcp), err); break;
        case O_SANDBOX: r = copy_str(name, optarg, c->sandbox_bin, sizeof(c->sandbox_bin), err); break;
        case O_ROOTFS: r = copy_str(name, optarg, c->rootfs, sizeof(c->rootfs), err); break;
        case O_PYTHON: r = copy_str(name, optarg, c->python, sizeof(c->python), err); break;
        case O_NODE: r = copy_str(name, optarg, c->node_name, sizeof(c->node_name), err); break;
        case O_POOL: r = want_uint(name, optarg, &c->pool_size, err); break;
        case O_MAXSESS: r = want_uint(name, optarg, &c->max_sessions, err); break;
        case O_UIDBASE: r = want_uint(name, optarg, &c->uid_base, err); break;
        case O_DMEM: r = want_size(name, optarg, &c->defaults.memory_bytes, err); break;
        case O_MMEM: r = want_size(name, optarg, &c->max.memory_bytes, err); break;
        case O_DDISK: r = want_size(name, optarg, &c->defaults.disk_bytes, err); break;
        case O_MDISK: r = want_size(name, optarg, &c->max.disk_bytes, err); break;
        case O_MOUT: r = want_size(name, optarg, &c->max_output_bytes, err); break;
        case O_MUP: r = want_size(name, optarg, &c->max_upload_bytes, err); break;
        case O_DTO:
        case O_MTO:
        case O_GRACE:
            r = want_ms(name, optarg, &v64, err);
            if (r == 0 && v64 > UINT32_MAX)
                r = kf_error_set(err, -EINVAL, 0, "--%s: too long", name);
            if (r == 0)
                *(o == O_DTO ? &c->defaults.exec_timeout_ms : o == O_MTO ? &c->max.exec_timeout_ms
                                                                          : &c->exec_grace_ms) =
                    (uint32_t)v64;
            break;
        case O_IDLE:
        case O_LIFE:
            r = want_ms(name, optarg, &v64, err);
            if (r == 0 && v64 / 1000 > UINT32_MAX)
                r = kf_error_set(err, -EINVAL, 0, "--%s: too long", name);
            if (r == 0)
                *(o == O_IDLE ? &c->defaults.idle_timeout_s : &c->defaults.max_lifetime_s) =
                    (uint32_t)(v64 / 1000);
            break;
        case O_DEBUG: c->log_debug = 1; break;
        case O_PURGE: c->purge = 1; break;
        case 'h':
        case O_HELP: usage(); return 1;
        default: return kf_error_set(err, -EINVAL, 0, "unknown option (see --help)");
        }
        if (r < 0)
            return r;
    }
    if (optind < argc)
        return kf_error_set(err, -EINVAL, 0, "unexpected argument '%s' (see --help)", argv[optind]);
    if (c->defaults.exec_timeout_ms > c->max.exec_timeout_ms)
        c->max.exec_timeout_ms = c->defaults.exec_timeout_ms;
    if (c->defaults.memory_bytes > c->max.memory_bytes)
        return kf_error_set(err, -EINVAL, 0, "--default-memory is above --max-memory");
    if (c->defaults.disk_bytes > c->max.disk_bytes)
        return kf_error_set(err, -EINVAL, 0, "--default-disk is above --max-disk");
    if (strlen(c->state_dir) > 72)
        return kf_error_set(err, -ENAMETOOLONG, 0,
                            "--state-dir: at most 72 characters (unix socket paths live below it)");
    return 0;
}

#define CHECK_RANGE(field, lo, what, unit)                                                       \
    do {                                                                                          \
        if (out->field < (lo) || out->field > c->max.field)                                       \
            return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,                             \
                                "limits." what " = %llu " unit " is out of range [%llu, %llu]",   \
                                (unsigned long long)out->field, (unsigned long long)(lo),         \
                                (unsigned long long)c->max.field);                                \
    } while (0)

int kf_limits_resolve(const kf_agent_config *c, const kf_limits *req, kf_limits *out, kf_error *err) {
    *out = *req;
    /* A volume holds at most one inode per 2 KiB (ext4 needs room for its
     * inode tables); the default count shrinks with a small volume. */
    if (!out->disk_inodes && out->disk_bytes) {
        uint64_t cap = out->disk_bytes / 2048;
        out->disk_inodes = c->defaults.disk_inodes < cap ? c->defaults.disk_inodes : cap;
    }
#define DEF(f) if (!out->f) out->f = c->defaults.f
    DEF(memory_bytes); DEF(cpu_millis); DEF(pids); DEF(exec_timeout_ms); DEF(disk_bytes);
    DEF(disk_inodes); DEF(idle_timeout_s); DEF(max_lifetime_s);
#undef DEF
    CHECK_RANGE(memory_bytes, 64 * MiB, "memory_bytes", "bytes");
    CHECK_RANGE(cpu_millis, 10, "cpu_millis", "millicores");
    CHECK_RANGE(pids, 16, "pids", "processes");
    CHECK_RANGE(exec_timeout_ms, 100, "exec_timeout_ms", "ms");
    CHECK_RANGE(disk_bytes, 4 * MiB, "disk_bytes", "bytes");
    CHECK_RANGE(disk_inodes, 64, "disk_inodes", "inodes");
    if (out->disk_inodes > out->disk_bytes / 2048)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "limits.disk_inodes = %llu is too many for a %llu byte volume (at most "
                            "one inode per 2 KiB: %llu)",
                            (unsigned long long)out->disk_inodes, (unsigned long long)out->disk_bytes,
                            (unsigned long long)(out->disk_bytes / 2048));
    CHECK_RANGE(idle_timeout_s, 1, "idle_timeout_s", "s");
    CHECK_RANGE(max_lifetime_s, 1, "max_lifetime_s", "s");
    return 0;
}
