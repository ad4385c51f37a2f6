/* config.c - defaults and command-line parsing for kfleet-scheduler. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kf/metrics_http.h"
#include "scheduler.h"

void kf_sched_config_defaults(kf_sched_config *c) {
    memset(c, 0, sizeof(*c));
    snprintf(c->listen_unix, sizeof(c->listen_unix), "/run/kfleet/scheduler.sock");
    c->policy = KF_PLACE_SPREAD;
    c->max_calls = 1024;
    char host[64] = "scheduler";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(c->id, sizeof(c->id), "%s-%ld", host, (long)getpid());
    c->leader_ttl_s = 10;
    c->node_grace_s = 30;
    c->reconcile_s = 30;
    c->pool_min = 1;
    c->pool_start_ms = 3000;
    c->pool_headroom_pct = 200;
    c->pool_window_s = 60;
    c->rebalance_high_pct = 30;
    c->rebalance_low_pct = 15;
    c->rebalance_idle_s = 600;
    c->rebalance_max_moves = 2;
    c->rebalance_window_s = 1800;
}

static void usage(void) {
    printf("Usage: kfleet-scheduler --etcd URLS [OPTIONS]\n"
           "The cluster front door: serves kfleet.v1.Sessions, places new sessions on the\n"
           "nodes registered in etcd and forwards every other call to the session's node.\n\n"
           "  --etcd URLS            etcd endpoints (http(s)://host:port,...), required\n"
           "  --listen PATH          unix socket of the API (default /run/kfleet/scheduler.sock)\n"
           "  --listen-tcp HOST:PORT also listen on TCP (default: off)\n"
           "  --tls-cert FILE --tls-key FILE   serve --listen-tcp over TLS (PEM)\n"
           "  --tls-client-ca FILE   and require client certificates signed by this CA (mTLS)\n"
           "  --policy spread|binpack  placement policy (default spread)\n"
           "  --node-tls-ca FILE     CA that signed the agents' certificates (TLS to agents)\n"
           "  --node-tls-cert FILE --node-tls-key FILE   client certificate (mTLS to agents)\n"
           "  --tenants FILE         tenants, their bearer tokens and quotas (JSON, not\n"
           "                         readable by other users; re-read on SIGHUP). Default: no\n"
           "                         tenancy, every caller may use every session\n"
           "  --max-calls N          calls handled at once (default 1024)\n"
           "  --id NAME              this replica in the leader election (default hostname-pid;\n"
           "                         must differ between replicas)\n"
           "  --leader-ttl SECONDS   the leader's lease: a dead leader is replaced after about\n"
           "                         this long (default 10, 2..300)\n"
           "  --node-grace SECONDS   a node whose registration lapsed and that has not come\n"
           "                         back after this long loses its sessions: they become LOST\n"
           "                         (default 30, 0..86400)\n"
           "  --reconcile-interval SECONDS  the leader compares session records with every\n"
           "                         node's sessions this often (default 30, 1..86400)\n"
           "  --metrics-listen HOST:PORT  serve /metrics, /healthz, /readyz over HTTP\n"
           "                         (e.g. 127.0.0.1:9464; default: off)\n"
           "  --pool-sizing          the leader sizes each node's warm pool from demand:\n"
           "                         ceil(create rate x --pool-start-ms x --pool-headroom),\n"
           "                         at least --pool-min, at most the node's free capacity,\n"
           "                         written to /kfleet/pools/<node> (default: off; agents\n"
           "                         keep their --pool)\n"
           "  --pool-min N           (default 1)  --pool-start-ms MS (default 3000)\n"
           "  --pool-headroom PCT    (default 200)  --pool-window SECONDS (default 60)\n"
           "  --rebalance            the leader moves idle sessions from the most to the\n"
           "                         least loaded node when their loads differ by more than\n"
           "                         --rebalance-high percent points, until less than\n"
           "                         --rebalance-low (default: off)\n"
           "  --rebalance-high PCT   (default 30)  --rebalance-low PCT (default 15)\n"
           "  --rebalance-idle SECONDS  only sessions idle this long move (default 600)\n"
           "  --rebalance-max-moves N   moves per pass (default 2)\n"
           "  --rebalance-window SECONDS  a moved session is not moved again for this long\n"
           "                         (default 1800)\n"
           "  --debug                verbose logs\n");
}

/* A decimal in [min, max] for flag `name`. */
static int parse_u32(const char *name, const char *v, uint32_t min, uint32_t max, uint32_t *out,
                     kf_error *err) {
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || *end || end == v || v[0] == '-' || n < min || n > max)
        return kf_error_set(err, -EINVAL, 0, "--%s: '%s' is not a whole number in %u..%u", name, v,
                            min, max);
    *out = (uint32_t)n;
    return 0;
}

static bool id_valid(const char *id) {
    if (!id[0])
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.' || *p == '@' || *p == ':'))
            return false;
    return true;
}

static int copy_str(const char *name, const char *v, char *dst, size_t size, kf_error *err) {
    if (strlen(v) >= size)
        return kf_error_set(err, -ENAMETOOLONG, 0, "--%s: too long (max %zu)", name, size - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

int kf_sched_config_parse(kf_sched_config *c, int argc, char **argv, kf_error *err) {
    enum { O_ETCD = 256, O_LISTEN, O_LISTEN_TCP, O_POLICY, O_CA, O_CERT, O_KEY, O_MAX_CALLS, O_DEBUG,
           O_TENANTS, O_ID, O_LEADER_TTL, O_NODE_GRACE, O_RECONCILE, O_METRICS, O_TLS_CERT, O_TLS_KEY,
           O_TLS_CLIENT_CA, O_POOL_SIZING, O_POOL_MIN, O_POOL_START, O_POOL_HEADROOM, O_POOL_WINDOW,
           O_REBALANCE, O_RB_HIGH, O_RB_LOW, O_RB_IDLE, O_RB_MOVES, O_RB_WINDOW };
    static const struct option opts[] = {
        {"etcd", required_argument, NULL, O_ETCD},
        {"listen", required_argument, NULL, O_LISTEN},
        {"listen-tcp", required_argument, NULL, O_LISTEN_TCP},
        {"policy", required_argument, NULL, O_POLICY},
        {"node-tls-ca", required_argument, NULL, O_CA},
        {"node-tls-cert", required_argument, NULL, O_CERT},
        {"node-tls-key", required_argument, NULL, O_KEY},
        {"max-calls", required_argument, NULL, O_MAX_CALLS},
        {"tenants", required_argument, NULL, O_TENANTS},
        {"id", required_argument, NULL, O_ID},
        {"leader-ttl", required_argument, NULL, O_LEADER_TTL},
        {"node-grace", required_argument, NULL, O_NODE_GRACE},
        {"reconcile-interval", required_argument, NULL, O_RECONCILE},
        {"metrics-listen", required_argument, NULL, O_METRICS},
        {"tls-cert", required_argument, NULL, O_TLS_CERT},
        {"tls-key", required_argument, NULL, O_TLS_KEY},
        {"tls-client-ca", required_argument, NULL, O_TLS_CLIENT_CA},
        {"pool-sizing", no_argument, NULL, O_POOL_SIZING},
        {"pool-min", required_argument, NULL, O_POOL_MIN},
        {"pool-start-ms", required_argument, NULL, O_POOL_START},
        {"pool-headroom", required_argument, NULL, O_POOL_HEADROOM},
        {"pool-window", required_argument, NULL, O_POOL_WINDOW},
        {"rebalance", no_argument, NULL, O_REBALANCE},
        {"rebalance-high", required_argument, NULL, O_RB_HIGH},
        {"rebalance-low", required_argument, NULL, O_RB_LOW},
        {"rebalance-idle", required_argument, NULL, O_RB_IDLE},
        {"rebalance-max-moves", required_argument, NULL, O_RB_MOVES},
        {"rebalance-window", required_argument, NULL, O_RB_WINDOW},
        {"debug", no_argument, NULL, O_DEBUG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o, rc = 0;
    optind = 1;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case O_ETCD: rc = copy_str("etcd", optarg, c->etcd_endpoints, sizeof(c->etcd_endpoints), err); break;
        case O_LISTEN: rc = copy_str("listen", optarg, c->listen_unix, sizeof(c->listen_unix), err); break;
        case O_LISTEN_TCP: rc = copy_str("listen-tcp", optarg, c->listen_tcp, sizeof(c->listen_tcp), err); break;
        case O_CA: rc = copy_str("node-tls-ca", optarg, c->node_tls_ca, sizeof(c->node_tls_ca), err); break;
        case O_CERT: rc = copy_str("node-tls-cert", optarg, c->node_tls_cert, sizeof(c->node_tls_cert), err); break;
        case O_KEY: rc = copy_str("node-tls-key", optarg, c->node_tls_key, sizeof(c->node_tls_key), err); break;
        case O_TLS_CERT: rc = copy_str("tls-cert", optarg, c->tls_cert, sizeof(c->tls_cert), err); break;
        case O_TLS_KEY: rc = copy_str("tls-key", optarg, c->tls_key, sizeof(c->tls_key), err); break;
        case O_TLS_CLIENT_CA:
            rc = copy_str("tls-client-ca", optarg, c->tls_client_ca, sizeof(c->tls_client_ca), err);
            break;
        case O_TENANTS: rc = copy_str("tenants", optarg, c->tenants_file, sizeof(c->tenants_file), err); break;
        case O_METRICS:
            rc = kf_metrics_listen_check(optarg, err);
            if (rc == 0)
                rc = copy_str("metrics-listen", optarg, c->metrics_listen, sizeof(c->metrics_listen), err);
            break;
        case O_POLICY:
            if (!strcmp(optarg, "spread"))
                c->policy = KF_PLACE_SPREAD;
            else if (!strcmp(optarg, "binpack"))
                c->policy = KF_PLACE_BINPACK;
            else
                rc = kf_error_set(err, -EINVAL, 0, "--policy: '%s' is not spread or binpack", optarg);
            break;
        case O_MAX_CALLS: rc = parse_u32("max-calls", optarg, 1, 100000, &c->max_calls, err); break;
        case O_ID:
            rc = copy_str("id", optarg, c->id, sizeof(c->id), err);
            if (rc == 0 && !id_valid(c->id))
                rc = kf_error_set(err, -EINVAL, 0,
                                  "--id: '%s' must be 1-%zu of A-Z, a-z, 0-9, '-', '_', '.', '@', ':'",
                                  optarg, sizeof(c->id) - 1);
            break;
        case O_LEADER_TTL: rc = parse_u32("leader-ttl", optarg, 2, 300, &c->leader_ttl_s, err); break;
        case O_NODE_GRACE: rc = parse_u32("node-grace", optarg, 0, 86400, &c->node_grace_s, err); break;
        case O_RECONCILE: rc = parse_u32("reconcile-interval", optarg, 1, 86400, &c->reconcile_s, err); break;
        case O_POOL_SIZING: c->pool_sizing = true; break;
        case O_POOL_MIN: rc = parse_u32("pool-min", optarg, 0, 1000, &c->pool_min, err); break;
        case O_POOL_START: rc = parse_u32("pool-start-ms", optarg, 1, 600000, &c->pool_start_ms, err); break;
        case O_POOL_HEADROOM: rc = parse_u32("pool-headroom", optarg, 1, 10000, &c->pool_headroom_pct, err); break;
        case O_POOL_WINDOW: rc = parse_u32("pool-window", optarg, 5, 86400, &c->pool_window_s, err); break;
        case O_REBALANCE: c->rebalance = true; break;
        case O_RB_HIGH: rc = parse_u32("rebalance-high", optarg, 1, 100, &c->rebalance_high_pct, err); break;
        case O_RB_LOW: rc = parse_u32("rebalance-low", optarg, 0, 100, &c->rebalance_low_pct, err); break;
        case O_RB_IDLE: rc = parse_u32("rebalance-idle", optarg, 0, 30 * 86400, &c->rebalance_idle_s, err); break;
        case O_RB_MOVES: rc = parse_u32("rebalance-max-moves", optarg, 1, 64, &c->rebalance_max_moves, err); break;
        case O_RB_WINDOW: rc = parse_u32("rebalance-window", optarg, 0, 30 * 86400, &c->rebalance_window_s, err); break;
        case O_DEBUG: c->log_debug = true; break;
        case 'h': usage(); return 1;
        default: return kf_error_set(err, -EINVAL, 0, "unknown option (see --help)");
        }
        if (rc < 0)
            return rc;
    }
    if (optind < argc)
        return kf_error_set(err, -EINVAL, 0, "unexpected argument '%s'", argv[optind]);
    if (!c->etcd_endpoints[0])
        return kf_error_set(err, -EINVAL, 0, "--etcd is required");
    if (kf_server_tls_flags_check(c->tls_cert, c->tls_key, c->tls_client_ca, c->listen_tcp, err) < 0)
        return err->code;
    if (c->rebalance_low_pct >= c->rebalance_high_pct)
        return kf_error_set(err, -EINVAL, 0, "--rebalance-low must be below --rebalance-high (hysteresis)");
    if (!c->node_tls_cert[0] != !c->node_tls_key[0])
        return kf_error_set(err, -EINVAL, 0, "--node-tls-cert and --node-tls-key go together");
    return 0;
}
