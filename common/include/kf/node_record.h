/* node_record.h - what a node publishes about itself in etcd, and where:
 * the key layout shared by the agents (writers of node and usage records)
 * and the scheduler and kfleetctl (readers; writers of admin records).
 * ARCHITECTURE.md "etcd key layout" is the prose version of this file.
 *
 *   /kfleet/nodes/<node>  node record, on the node's lease
 *   /kfleet/usage/<node>  usage record, on the node's lease, <= 1 write/s
 *   /kfleet/admin/<node>  admin record, no lease (outlives the agent)
 *   /kfleet/pools/<node>  pool record, no lease: the warm-pool size the
 *                         scheduler's leader asks of the node
 *
 * Values are JSON objects. Integers are JSON numbers up to 10^15 - 1 (what
 * cJSON prints exactly) and decimal strings above; readers accept both and
 * parse strings without a double.
 *
 * The encoders and the parser are pure (no I/O, no locks, no globals), so
 * they are unit-tested alone and fuzzable. Strings they return are malloc'd;
 * the caller frees them.
 */
#ifndef KF_NODE_RECORD_H
#define KF_NODE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kf/error.h"

#define KF_KEY_NODES "/kfleet/nodes/"
#define KF_KEY_USAGE "/kfleet/usage/"
#define KF_KEY_ADMIN "/kfleet/admin/"
#define KF_KEY_DRAINS "/kfleet/drains/"
#define KF_KEY_POOLS "/kfleet/pools/"

/* A node name (the last component of its keys): 1..KF_NODE_NAME_MAX of
 * [A-Za-z0-9._-], not starting with a dot. */
#define KF_NODE_NAME_MAX 63

/* kf_node_name_valid - whether s is a node name by the rule above. */
bool kf_node_name_valid(const char *s);

/* Node labels, published for placement. Bounded: few and short. */
#define KF_MAX_LABELS 16
#define KF_LABEL_MAX 63
typedef struct kf_label {
    char key[KF_LABEL_MAX + 1];
    char value[KF_LABEL_MAX + 1];
} kf_label;

/* The node record: fixed for the life of one agent process. */
typedef struct kf_node_info {
    const char *id;          /* node name, the last key component */
    const char *address;     /* host:port the scheduler dials (kfleet.v1.Agent) */
    uint64_t memory_bytes;   /* capacity */
    uint64_t cpu_millis;
    uint64_t session_slots;
    const kf_label *labels;
    size_t n_labels;
    const char *version;     /* agent version */
    bool tls;                /* the address speaks TLS */
    int64_t started_unix_ms; /* this agent process's start */
} kf_node_info;

/* The usage record: what the node has handed out. */
typedef struct kf_node_usage {
    uint32_t sessions;
    uint32_t pool_ready;
    uint32_t pool_target;
    uint64_t memory_reserved_bytes;
    uint64_t cpu_reserved_millis;
    uint64_t creates; /* sessions created since the agent started (a sequence) */
} kf_node_usage;

/* The admin record, written by operators (kfleetctl) or the scheduler. */
#define KF_ADMIN_TEXT_MAX 255
typedef struct kf_node_admin {
    bool cordoned;
    char reason[KF_ADMIN_TEXT_MAX + 1]; /* cut to fit */
    char by[KF_ADMIN_TEXT_MAX + 1];
    int64_t at_unix_ms;
} kf_node_admin;

/* kf_admin_text_check - check a text an operator gives for the admin record
 * (`field` names it in the message: "reason", "who"): 1..KF_ADMIN_TEXT_MAX
 * bytes of valid UTF-8 without control characters. -EINVAL with
 * INVALID_ARGUMENT and the problem named in err. */
int kf_admin_text_check(const char *field, const char *text, kf_error *err);

/* kf_node_info_json - the node record: {id, address, capacity{memory_bytes,
 * cpu_millis, session_slots}, labels{k: v}, version, tls, started_unix_ms}.
 * NULL on allocation failure. */
char *kf_node_info_json(const kf_node_info *n);

/* kf_node_usage_json - the usage record: {sessions, pool_ready,
 * pool_target, memory_reserved_bytes, cpu_reserved_millis, creates,
 * updated_unix_ms}.
 * NULL on allocation failure. */
char *kf_node_usage_json(const kf_node_usage *u, int64_t now_unix_ms);

/* kf_node_usage_equal - same counters (updated_unix_ms is not compared). */
bool kf_node_usage_equal(const kf_node_usage *a, const kf_node_usage *b);

/* kf_drain_request_json - a new drain record asking the scheduler to move
 * every session off `node` (state running, its sessions listed by the
 * scheduler's runner): what `kfleet-agent --drain-on-stop` writes. The
 * record's full format is the scheduler's (scheduler/src/drain_record.c).
 * NULL on allocation failure. */
char *kf_drain_request_json(const char *node, const char *reason, const char *by, int64_t now_unix_ms,
                            int64_t deadline_unix_ms, uint32_t parallel);

/* The pool record: how many warm sandboxes the scheduler asks the node to
 * keep. KF_POOL_TARGET_MAX bounds what a reader accepts (the agent bounds
 * it further by --pool-max). */
#define KF_POOL_TARGET_MAX 100000
/* kf_pool_record_json - {target, updated_unix_ms}. NULL on ENOMEM. */
char *kf_pool_record_json(uint32_t target, int64_t now_unix_ms);
/* kf_pool_record_parse - the target of text[0..len) (untrusted). -EBADMSG
 * if it is not an object with a whole "target" in 0..KF_POOL_TARGET_MAX. */
int kf_pool_record_parse(const char *text, size_t len, uint32_t *target);

/* kf_node_admin_json - the admin record {cordoned, reason, by, at}. */
char *kf_node_admin_json(const kf_node_admin *a);

/* kf_node_admin_parse - parse text[0..len) (untrusted). Absent fields take
 * their zero value; long strings are cut. -EBADMSG if it is not a JSON
 * object or a field has the wrong type. On failure *out is zeroed. */
int kf_node_admin_parse(const char *text, size_t len, kf_node_admin *out);

#endif
