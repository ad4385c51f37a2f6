/* config.c - defaults and command-line parsing for kfleet-agent, and the
 * checking of client-requested limits against the configured maximums. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/grpc_server.h"
#include "kf/metrics_http.h"
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
    c->pool_max = 0; /* resolved after parsing: max(--pool, 16) */
    c->max_sessions = 1000;
    c->max_output_bytes = 16 * MiB;
    c->max_upload_bytes = 1 * GiB;
    c->max_code_bytes = 1 * MiB;
    c->exec_grace_ms = 2000;
    c->start_timeout_ms = 60000;
    c->max_calls = 1024;
    c->lease_ttl_s = 10;
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
           "  --pool N               warm sandboxes kept ready (default 2); a scheduler's\n"
           "                         target (/kfleet/pools/<node>) replaces it when present\n"
           "  --pool-max N           at most this many warm sandboxes whatever the\n"
           "                         scheduler asks (default max(--pool, 16))\n"
           "  --max-sessions N       sessions on this node (default 1000)\n"
           "  --uid-base N           first per-session uid (default 200000)\n"
           "  --default-memory SIZE  (default 1G)      --max-memory SIZE (default 16G)\n"
           "  --default-timeout DUR  (default 120s)    --max-timeout DUR (default 1h)\n"
           "  --default-disk SIZE    (default 1G)      --max-disk SIZE (default 64G)\n"
           "  --idle-timeout DUR     (default 20m)     --max-lifetime DUR (default 12h)\n"
           "  --max-output SIZE      output per execution (default 16M)\n"
           "  --max-upload SIZE      per uploaded file (default 1G)\n"
           "  --exec-grace DUR       interrupt-to-restart grace (default 2s)\n"
           "  --metrics-listen HOST:PORT  serve /metrics, /healthz, /readyz over HTTP\n"
           "                         (e.g. 127.0.0.1:9465; default: off)\n"
           "  --tls-cert FILE --tls-key FILE   serve --listen-tcp over TLS (PEM)\n"
           "  --tls-client-ca FILE   and require client certificates signed by this CA (mTLS)\n"
           "Cluster (all optional; without --etcd the node stands alone):\n"
           "  --etcd URLS            register this node in etcd (http(s)://host:port,...)\n"
           "  --etcd-ca FILE  --etcd-cert FILE  --etcd-key FILE   TLS to etcd\n"
           "  --etcd-user USER --etcd-password-file FILE         etcd auth\n"
           "  --lease-ttl DUR        node lease TTL (default 10s)\n"
           "  --advertise HOST:PORT  address the scheduler dials (default: --listen-tcp)\n"
           "  --label KEY=VALUE      node label for placement (repeatable, at most 16)\n"
           "  --capacity-memory SIZE memory offered (default: MemTotal)\n"
           "  --capacity-cpu N       cores offered, e.g. 4 or 3.5 (default: online CPUs)\n"
           "  --drain-on-stop DUR    on SIGTERM, cordon this node and ask the scheduler to move\n"
           "                         its sessions away; stop when they are gone or after DUR\n"
           "                         (default 0: stop at once, sessions stay for the next start)\n"
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

/* A label key: 1-63 of [A-Za-z0-9._/-]; a value: 0-63 of [A-Za-z0-9._-]. */
static int label_chars_ok(const char *s, size_t n, int is_key) {
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-' || (is_key && ch == '/')))
            return 0;
    }
    return 1;
}

static int add_label(kf_agent_config *c, const char *v, kf_error *err) {
    const char *eq = strchr(v, '=');
    if (!eq)
        return kf_error_set(err, -EINVAL, 0, "--label: '%s' is not KEY=VALUE", v);
    size_t kn = (size_t)(eq - v), vn = strlen(eq + 1);
    if (kn == 0 || kn > KF_LABEL_MAX || vn > KF_LABEL_MAX || !label_chars_ok(v, kn, 1) ||
        !label_chars_ok(eq + 1, vn, 0))
        return kf_error_set(err, -EINVAL, 0,
                            "--label: '%s': key 1-%d of [A-Za-z0-9._/-], value 0-%d of [A-Za-z0-9._-]",
                            v, KF_LABEL_MAX, KF_LABEL_MAX);
    for (size_t i = 0; i < c->n_labels; i++)
        if (strlen(c->labels[i].key) == kn && !memcmp(c->labels[i].key, v, kn))
            return kf_error_set(err, -EINVAL, 0, "--label: key '%.*s' given twice", (int)kn, v);
    if (c->n_labels >= KF_MAX_LABELS)
        return kf_error_set(err, -E2BIG, 0, "--label: at most %d labels", KF_MAX_LABELS);
    kf_label *l = &c->labels[c->n_labels++];
    memcpy(l->key, v, kn);
    l->key[kn] = '\0';
    memcpy(l->value, eq + 1, vn + 1);
    return 0;
}

/* Cores, possibly fractional ("4", "3.5"), or millicores ("3500m"). */
static int want_cpu(const char *name, const char *v, uint32_t *out, kf_error *err) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    double millis = *end == 'm' && end[1] == '\0' ? d : *end == '\0' ? d * 1000 : -1;
    if (errno || end == v || millis < 1 || millis > 1e9)
        return kf_error_set(err, -EINVAL, 0, "--%s: '%s' is not a CPU count (e.g. 4, 3.5, 3500m)",
                            name, v);
    *out = (uint32_t)millis;
    return 0;
}

/* MemTotal from /proc/meminfo, in bytes; 0 if unreadable. */
static uint64_t mem_total(void) {
    _cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
    char line[128];
    unsigned long long kib;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
            return (uint64_t)kib * 1024;
    return 0;
}

int kf_agent_config_parse(kf_agent_config *c, int argc, char **argv, kf_error *err) {
    enum {
        O_STATE = 256, O_LISTEN, O_TCP, O_SANDBOX, O_ROOTFS, O_PYTHON, O_NODE, O_POOL, O_MAXSESS,
        O_UIDBASE, O_DMEM, O_MMEM, O_DTO, O_MTO, O_DDISK, O_MDISK, O_IDLE, O_LIFE, O_MOUT, O_MUP,
        O_GRACE, O_DEBUG, O_PURGE, O_HELP, O_TLSCERT, O_TLSKEY, O_TLSCA, O_ETCD, O_ETCDCA,
        O_ETCDCERT, O_ETCDKEY, O_ETCDUSER, O_ETCDPW, O_LEASETTL, O_ADVERTISE, O_LABEL, O_CAPMEM,
        O_CAPCPU, O_DRAINSTOP, O_METRICS, O_POOLMAX,
    };
    static const struct option opts[] = {
        {"state-dir", 1, 0, O_STATE},     {"listen", 1, 0, O_LISTEN},
        {"listen-tcp", 1, 0, O_TCP},      {"sandbox", 1, 0, O_SANDBOX},
        {"rootfs", 1, 0, O_ROOTFS},       {"python", 1, 0, O_PYTHON},
        {"node-name", 1, 0, O_NODE},      {"pool", 1, 0, O_POOL},
        {"pool-max", 1, 0, O_POOLMAX},
        {"max-sessions", 1, 0, O_MAXSESS}, {"uid-base", 1, 0, O_UIDBASE},
        {"default-memory", 1, 0, O_DMEM}, {"max-memory", 1, 0, O_MMEM},
        {"default-timeout", 1, 0, O_DTO}, {"max-timeout", 1, 0, O_MTO},
        {"default-disk", 1, 0, O_DDISK},  {"max-disk", 1, 0, O_MDISK},
        {"idle-timeout", 1, 0, O_IDLE},   {"max-lifetime", 1, 0, O_LIFE},
        {"max-output", 1, 0, O_MOUT},     {"max-upload", 1, 0, O_MUP},
        {"exec-grace", 1, 0, O_GRACE},    {"debug", 0, 0, O_DEBUG},
        {"purge", 0, 0, O_PURGE},
        {"help", 0, 0, O_HELP},           {"tls-cert", 1, 0, O_TLSCERT},
        {"tls-key", 1, 0, O_TLSKEY},      {"tls-client-ca", 1, 0, O_TLSCA},
        {"etcd", 1, 0, O_ETCD},           {"etcd-ca", 1, 0, O_ETCDCA},
        {"etcd-cert", 1, 0, O_ETCDCERT},  {"etcd-key", 1, 0, O_ETCDKEY},
        {"etcd-user", 1, 0, O_ETCDUSER},  {"etcd-password-file", 1, 0, O_ETCDPW},
        {"lease-ttl", 1, 0, O_LEASETTL},  {"advertise", 1, 0, O_ADVERTISE},
        {"label", 1, 0, O_LABEL},         {"capacity-memory", 1, 0, O_CAPMEM},
        {"capacity-cpu", 1, 0, O_CAPCPU}, {"drain-on-stop", 1, 0, O_DRAINSTOP},
        {"metrics-listen", 1, 0, O_METRICS},
        {0, 0, 0, 0},
    };
    optind = 1;
    int o, r = 0;
    uint64_t v64;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *name = o >= O_STATE && o <= O_METRICS ? opts[o - O_STATE].name : "?";
        switch (o) {
        case O_STATE: r = copy_str(name, optarg, c->state_dir, sizeof(c->state_dir), err); break;
        case O_LISTEN: r = copy_str(name, optarg, c->listen_unix, sizeof(c->listen_unix), err); break;
        case O_TCP: r = copy_str(name, optarg, c->listen_tcp, sizeof(c->listen_tcp), err); break;
        case O_METRICS:
            r = kf_metrics_listen_check(optarg, err);
            if (r == 0)
                r = copy_str(name, optarg, c->metrics_listen, sizeof(c->metrics_listen), err);
            break;
        case O_SANDBOX: r = copy_str(name, optarg, c->sandbox_bin, sizeof(c->sandbox_bin), err); break;
        case O_ROOTFS: r = copy_str(name, optarg, c->rootfs, sizeof(c->rootfs), err); break;
        case O_PYTHON: r = copy_str(name, optarg, c->python, sizeof(c->python), err); break;
        case O_NODE: r = copy_str(name, optarg, c->node_name, sizeof(c->node_name), err); break;
        case O_POOL: r = want_uint(name, optarg, &c->pool_size, err); break;
        case O_POOLMAX: r = want_uint(name, optarg, &c->pool_max, err); break;
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
        case O_TLSCERT: r = copy_str(name, optarg, c->tls_cert, sizeof(c->tls_cert), err); break;
        case O_TLSKEY: r = copy_str(name, optarg, c->tls_key, sizeof(c->tls_key), err); break;
        case O_TLSCA: r = copy_str(name, optarg, c->tls_client_ca, sizeof(c->tls_client_ca), err); break;
        case O_ETCD: r = copy_str(name, optarg, c->etcd_endpoints, sizeof(c->etcd_endpoints), err); break;
        case O_ETCDCA: r = copy_str(name, optarg, c->etcd_ca, sizeof(c->etcd_ca), err); break;
        case O_ETCDCERT: r = copy_str(name, optarg, c->etcd_cert, sizeof(c->etcd_cert), err); break;
        case O_ETCDKEY: r = copy_str(name, optarg, c->etcd_key, sizeof(c->etcd_key), err); break;
        case O_ETCDUSER: r = copy_str(name, optarg, c->etcd_user, sizeof(c->etcd_user), err); break;
        case O_ETCDPW:
            r = copy_str(name, optarg, c->etcd_password_file, sizeof(c->etcd_password_file), err);
            break;
        case O_ADVERTISE: r = copy_str(name, optarg, c->advertise, sizeof(c->advertise), err); break;
        case O_LABEL: r = add_label(c, optarg, err); break;
        case O_CAPMEM: r = want_size(name, optarg, &c->capacity_memory_bytes, err); break;
        case O_CAPCPU: r = want_cpu(name, optarg, &c->capacity_cpu_millis, err); break;
        case O_DRAINSTOP:
            r = want_ms(name, optarg, &v64, err);
            if (r == 0 && v64 > 24ULL * 3600 * 1000)
                r = kf_error_set(err, -EINVAL, 0, "--%s: at most 24h", name);
            if (r == 0)
                c->drain_on_stop_s = (uint32_t)((v64 + 999) / 1000);
            break;
        case O_LEASETTL:
            r = want_ms(name, optarg, &v64, err);
            /* etcd's minimum TTL is a few seconds anyway; an hour is plenty. */
            if (r == 0 && (v64 < 1000 || v64 > 3600 * 1000))
                r = kf_error_set(err, -EINVAL, 0, "--%s: between 1s and 1h", name);
            if (r == 0)
                c->lease_ttl_s = (uint32_t)(v64 / 1000);
            break;
        case 'h':
        case O_HELP: usage(); return 1;
        default: return kf_error_set(err, -EINVAL, 0, "unknown option (see --help)");
        }
        if (r < 0)
            return r;
    }
    if (optind < argc)
        return kf_error_set(err, -EINVAL, 0, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!c->pool_max)
        c->pool_max = c->pool_size > 16 ? c->pool_size : 16;
    if (c->pool_size > c->pool_max)
        return kf_error_set(err, -EINVAL, 0, "--pool is above --pool-max");
    if (c->defaults.exec_timeout_ms > c->max.exec_timeout_ms)
        c->max.exec_timeout_ms = c->defaults.exec_timeout_ms;
    if (c->defaults.memory_bytes > c->max.memory_bytes)
        return kf_error_set(err, -EINVAL, 0, "--default-memory is above --max-memory");
    if (c->defaults.disk_bytes > c->max.disk_bytes)
        return kf_error_set(err, -EINVAL, 0, "--default-disk is above --max-disk");
    if (strlen(c->state_dir) > 72)
        return kf_error_set(err, -ENAMETOOLONG, 0,
                            "--state-dir: at most 72 characters (unix socket paths live below it)");
    if (kf_server_tls_flags_check(c->tls_cert, c->tls_key, c->tls_client_ca, c->listen_tcp, err) < 0)
        return err->code;
    if (!c->etcd_cert[0] != !c->etcd_key[0])
        return kf_error_set(err, -EINVAL, 0, "--etcd-cert and --etcd-key go together");
    if (!c->etcd_user[0] != !c->etcd_password_file[0])
        return kf_error_set(err, -EINVAL, 0, "--etcd-user and --etcd-password-file go together");
    if (!c->advertise[0])
        snprintf(c->advertise, sizeof(c->advertise), "%s", c->listen_tcp);
    if (c->etcd_endpoints[0] && !c->advertise[0])
        return kf_error_set(err, -EINVAL, 0,
                            "--etcd: the scheduler needs an address to reach this node "
                            "(--listen-tcp or --advertise)");
    /* The name is the last part of etcd keys: no '/', nothing empty or dotty. */
    if (c->etcd_endpoints[0] &&
        (!c->node_name[0] || c->node_name[0] == '.' ||
         !label_chars_ok(c->node_name, strlen(c->node_name), 0)))
        return kf_error_set(err, -EINVAL, 0,
                            "--node-name '%s': with --etcd it names etcd keys: use [A-Za-z0-9._-]",
                            c->node_name);
    if (!c->capacity_memory_bytes)
        c->capacity_memory_bytes = mem_total();
    if (!c->capacity_cpu_millis) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->capacity_cpu_millis = (uint32_t)(n > 0 ? n : 1) * 1000;
    }
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
