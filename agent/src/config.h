/* config.h - kfleet-agent configuration: where state lives, what it listens
 * on, session defaults and the hard maximums a client can ask for. Filled
 * from the command line (kf_agent_config_parse); immutable after start. */
#ifndef KF_AGENT_CONFIG_H
#define KF_AGENT_CONFIG_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "kf/error.h"
#include "kf/node_record.h" /* kf_label */

typedef struct kf_limits {
    uint64_t memory_bytes;
    uint32_t cpu_millis;
    uint32_t pids;
    uint32_t exec_timeout_ms;
    uint64_t disk_bytes;
    uint64_t disk_inodes;
    uint32_t idle_timeout_s;
    uint32_t max_lifetime_s;
} kf_limits;

typedef struct kf_agent_config {
    char state_dir[256];      /* sessions' records, volumes, mount points */
    char listen_unix[256];    /* unix socket path of the gRPC API */
    char listen_tcp[128];     /* optional "host:port" */
    char metrics_listen[128]; /* optional "host:port" of /metrics, /healthz, /readyz */
    char sandbox_bin[PATH_MAX];
    char rootfs[PATH_MAX];    /* system image for sandboxes */
    char python[PATH_MAX];    /* interpreter inside the image */
    char node_name[64];
    uint32_t uid_base, uid_count; /* per-session uids: [base, base+count) */
    kf_limits defaults;
    kf_limits max;
    uint32_t pool_size;       /* warm sandboxes kept ready without a scheduler's target */
    uint32_t pool_max;        /* bound on the scheduler's target (/kfleet/pools/<node>) */
    uint32_t max_sessions;
    uint64_t max_output_bytes; /* per execution */
    uint64_t max_upload_bytes;
    uint32_t max_code_bytes;
    uint32_t exec_grace_ms;    /* after an interrupt, before a restart */
    uint32_t start_timeout_ms; /* sandbox + kernel ready */
    uint32_t max_calls;        /* gRPC calls handled at once */
    int log_debug;
    int purge;                 /* --purge: destroy every sandbox and exit */

    /* TLS for --listen-tcp (all empty = plaintext). With tls_client_ca the
     * listener requires a client certificate signed by it (mTLS). */
    char tls_cert[PATH_MAX];
    char tls_key[PATH_MAX];
    char tls_client_ca[PATH_MAX];

    /* Cluster registration (registry.c); off unless etcd_endpoints is set. */
    char etcd_endpoints[1024];
    char etcd_ca[PATH_MAX];
    char etcd_cert[PATH_MAX];
    char etcd_key[PATH_MAX];
    char etcd_user[128];
    char etcd_password_file[PATH_MAX];
    uint32_t lease_ttl_s;      /* node lease TTL */
    uint32_t drain_on_stop_s;  /* SIGTERM: drain first, for at most this long (0 = no) */
    char advertise[128];       /* address the scheduler dials; default listen_tcp */
    kf_label labels[KF_MAX_LABELS];
    size_t n_labels;
    /* What this node offers (published; GetNodeStats). Defaults: MemTotal
     * and online CPUs * 1000; session slots are max_sessions. */
    uint64_t capacity_memory_bytes;
    uint32_t capacity_cpu_millis;
} kf_agent_config;

/* kf_agent_config_defaults - the built-in defaults. */
void kf_agent_config_defaults(kf_agent_config *c);

/* kf_agent_config_parse - apply command-line flags. Returns 0, 1 when
 * --help was printed, or a negative errno with a message in err. */
int kf_agent_config_parse(kf_agent_config *c, int argc, char **argv, kf_error *err);

/* kf_limits_resolve - fill zero fields of `req` from defaults and check
 * every field against the maximums. INVALID_ARGUMENT naming the field and
 * the allowed range on failure. */
int kf_limits_resolve(const kf_agent_config *c, const kf_limits *req, kf_limits *out, kf_error *err);

#endif
