/* config.c - defaults and command-line parsing for kfleet-scheduler. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"

void kf_sched_config_defaults(kf_sched_config *c) {
    memset(c, 0, sizeof(*c));
    snprintf(c->listen_unix, sizeof(c->listen_unix), "/run/kfleet/scheduler.sock");
    c->policy = KF_PLACE_SPREAD;
    c->max_calls = 1024;
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
           "  --debug                verbose logs\n");
}

static int copy_str(const char *name, const char *v, char *dst, size_t size, kf_error *err) {
    if (strlen(v) >= size)
        return kf_error_set(err, -ENAMETOOLONG, 0, "--%s: too long (max %zu)", name, size - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

int kf_sched_config_parse(kf_sched_config *c, int argc, char **argv, kf_error *err) {
    enum { O_ETCD = 256, O_LISTEN, O_LISTEN_TCP, O_POLICY, O_CA, O_CERT, O_KEY, O_MAX_CALLS, O_DEBUG,
           O_TENANTS, O_TLS_CERT, O_TLS_KEY, O_TLS_CLIENT_CA };
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
        {"tls-cert", required_argument, NULL, O_TLS_CERT},
        {"tls-key", required_argument, NULL, O_TLS_KEY},
        {"tls-client-ca", required_argument, NULL, O_TLS_CLIENT_CA},
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
        case O_POLICY:
            if (!strcmp(optarg, "spread"))
                c->policy = KF_PLACE_SPREAD;
            else if (!strcmp(optarg, "binpack"))
                c->policy = KF_PLACE_BINPACK;
            else
                rc = kf_error_set(err, -EINVAL, 0, "--policy: '%s' is not spread or binpack", optarg);
            break;
        case O_MAX_CALLS: {
            char *end;
            errno = 0;
            unsigned long n = strtoul(optarg, &end, 10);
            if (errno || *end || end == optarg || n == 0 || n > 100000)
                rc = kf_error_set(err, -EINVAL, 0, "--max-calls: '%s' is not 1..100000", optarg);
            else
                c->max_calls = (uint32_t)n;
            break;
        }
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
    if (!c->tls_cert[0] != !c->tls_key[0])
        return kf_error_set(err, -EINVAL, 0, "--tls-cert and --tls-key go together");
    if (c->tls_client_ca[0] && !c->tls_cert[0])
        return kf_error_set(err, -EINVAL, 0, "--tls-client-ca needs --tls-cert and --tls-key");
    if (c->tls_cert[0] && !c->listen_tcp[0])
        return kf_error_set(err, -EINVAL, 0, "--tls-cert applies to --listen-tcp, which is not set");
    if (!c->node_tls_cert[0] != !c->node_tls_key[0])
        return kf_error_set(err, -EINVAL, 0, "--node-tls-cert and --node-tls-key go together");
    return 0;
}
