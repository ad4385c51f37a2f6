/* scheduler.h - kfleet-scheduler's internal interfaces: the configuration, the
 * cluster view (view.c), the session table (session_table.c), the
 * kfleet.v1.Sessions handlers (create.c, proxy.c, service.c, lost.c) and the
 * leader: election (leader.c) and its loops (node_loss.c, reconcile.c,
 * pools.c, rebalance.c).
 *
 * Ownership: main.c owns one kf_sched for the life of the process. The view
 * and the session table each own an etcd watch thread and a mutex; handler
 * threads only read them through the functions below, which copy out what
 * they return (no pointer into a locked structure escapes its lock).
 */
#ifndef KF_SCHED_H
#define KF_SCHED_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kf/error.h"
#include "kf/etcd.h"
#include "kf/grpc_client.h"
#include "kf/grpc_server.h"
#include "kf/node_record.h"
#include "kf/request_id.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "placement.h"

#define KF_SCHED_ADDR_MAX 128
#define KF_KEY_SESSIONS "/kfleet/sessions/"
/* The scheduler leader key: holds the leader's --id, on the leader's lease. */
#define KF_KEY_LEADER "/kfleet/scheduler/leader"
#define KF_SCHED_ID_MAX 128
#define KF_SESSION_ID_MAX 64
#define KF_TENANT_NAME_MAX 63 /* the rule of Agent/StartSession's tenant */
/* What a session asking for 0 memory gets from the agents (placement and
 * tenant quotas count it so). */
#define KF_SCHED_DEFAULT_MEMORY (1024ULL * 1024 * 1024)
#define KF_SCHED_DEFAULT_CPU 1000 /* millis, the agents' default */

/* ---- config.c ----------------------------------------------------------- */

typedef struct kf_sched_config {
    char etcd_endpoints[1024];
    char listen_unix[PATH_MAX];
    char listen_tcp[KF_SCHED_ADDR_MAX];
    char node_tls_ca[PATH_MAX]; /* mTLS to agents; all empty = plaintext */
    char node_tls_cert[PATH_MAX];
    char node_tls_key[PATH_MAX];
    char tls_cert[PATH_MAX]; /* TLS on --listen-tcp; empty = plaintext */
    char tls_key[PATH_MAX];
    char tls_client_ca[PATH_MAX]; /* set: clients need a certificate from this CA */
    kf_place_mode policy;
    char tenants_file[PATH_MAX]; /* empty: no tenancy (one anonymous tenant) */
    uint32_t max_calls;
    bool log_debug;
    char id[KF_SCHED_ID_MAX];     /* --id: this replica in the leader key (default hostname-pid) */
    uint32_t leader_ttl_s;        /* --leader-ttl: the leader lease's TTL */
    uint32_t node_grace_s;        /* --node-grace: a node gone this long loses its sessions */
    uint32_t reconcile_s;         /* --reconcile-interval: records vs agents, every node */
    char metrics_listen[KF_SCHED_ADDR_MAX]; /* "" = no /metrics, /healthz, /readyz */
    /* warm pools sized from demand (pools.c); off unless --pool-sizing */
    bool pool_sizing;
    uint32_t pool_min;         /* --pool-min: a node's target never below (free capacity permitting) */
    uint32_t pool_start_ms;    /* --pool-start-ms: a cold sandbox start, kernel ready */
    uint32_t pool_headroom_pct; /* --pool-headroom: 100 = exactly the expected demand */
    uint32_t pool_window_s;    /* --pool-window: creates counted over this long */
    /* load spread (rebalance.c); off unless --rebalance */
    bool rebalance;
    uint32_t rebalance_high_pct; /* start when max - min load > this (percent points) */
    uint32_t rebalance_low_pct;  /* stop when it is < this */
    uint32_t rebalance_idle_s;   /* only sessions idle this long move */
    uint32_t rebalance_max_moves; /* per pass */
    uint32_t rebalance_window_s; /* a moved session stays put this long */
} kf_sched_config;

void kf_sched_config_defaults(kf_sched_config *c);
/* Returns 0, 1 for --help (printed), or a negative errno with err set. */
int kf_sched_config_parse(kf_sched_config *c, int argc, char **argv, kf_error *err);

/* ---- view.c: /kfleet/{nodes,usage,admin}/ -> cached nodes + placement --- */

typedef struct kf_view kf_view;

/* A node's dialing details, copied out of the view. */
typedef struct kf_node_addr {
    char node[KF_PLACE_ID_MAX + 1];
    char address[KF_SCHED_ADDR_MAX];
    bool tls;
    int64_t mod_revision; /* of /kfleet/nodes/<node> when copied */
} kf_node_addr;

/* kf_view_start - start the three watches (list first, then events) on etcd
 * `c` (borrowed; must outlive the view). Waits up to wait_ms for the first
 * listing of each range. */
int kf_view_start(kf_etcd *c, const kf_sched_config *cfg, int wait_ms, kf_view **out,
                  kf_error *err);
/* kf_view_free - stop the watches, free the nodes and agent channels.
 * Every handler must have returned. NULL-safe; returns NULL. */
kf_view *kf_view_free(kf_view *v);

/* kf_view_place - pick a node for req (excluding the named nodes) and
 * reserve the request on it for session `id` in the cached view, so the
 * next pick sees it before the node's usage record counts it. -ENOSPC
 * with `explain` filled (kf_place_explain) when nothing fits. Takes the
 * view lock. */
int kf_view_place(kf_view *v, const kf_place_request *req, char (*exclude)[KF_PLACE_ID_MAX + 1],
                  size_t n_exclude, const char *id, kf_node_addr *out, char *explain,
                  size_t explain_size);
/* kf_view_started - session `id` started on `node` as the node's create
 * number `create_seq` (StartSessionResponse): its reservation ends once a
 * usage record of the node counts that many creates (0: unknown; it ends
 * after a bound). */
void kf_view_started(kf_view *v, const char *node, const char *id, uint64_t create_seq);
/* kf_view_unreserve - end session `id`'s reservation on `node` (its commit
 * or start failed, or it was deleted). Harmless if it has none left. */
void kf_view_unreserve(kf_view *v, const char *node, const char *id);
/* kf_view_node - the dialing details of a registered node; -ENOENT. */
int kf_view_node(kf_view *v, const char *node, kf_node_addr *out);
/* kf_view_nodes - every registered node (malloc'd array, caller frees). */
int kf_view_nodes(kf_view *v, kf_node_addr **out, size_t *n);
/* A node's load as its agent reports it. Reservations are left out: a
 * moved session's lasts ~10 s past the record that counts it, and the
 * leader loops look at the steady state, not at a burst in flight. */
typedef struct kf_node_load {
    char node[KF_PLACE_ID_MAX + 1];
    uint64_t mem_cap, cpu_cap, slot_cap;
    uint64_t mem_used, cpu_used, slots_used;
    uint64_t creates; /* the usage record's create counter (0 without one) */
} kf_node_load;
/* kf_node_load_share - the dominant share of l, KF_PLACE_SCALE = 100 %
 * (placement's load). Pure. */
uint32_t kf_node_load_share(const kf_node_load *l);
/* kf_view_loads - every node placement may pick (registered, with
 * capacity, not cordoned: a draining node is cordoned), sorted by name;
 * *out malloc'd (caller frees). O(N log N) under the view lock. -ENOMEM. */
int kf_view_loads(kf_view *v, kf_node_load **out, size_t *n);
/* Everything the view knows of one node, copied out (kfleet.v1.Cluster).
 * ~3 KiB, most of it the labels. */
#define KF_NODE_VERSION_MAX 63
typedef struct kf_node_status {
    char node[KF_PLACE_ID_MAX + 1];
    bool registered; /* its node record exists (the agent holds a live lease) */
    /* from the node record (zero unless registered) */
    char address[KF_SCHED_ADDR_MAX];
    bool tls;
    char version[KF_NODE_VERSION_MAX + 1];
    int64_t started_unix_ms;
    uint64_t memory_bytes, cpu_millis, session_slots; /* capacity */
    kf_label labels[KF_MAX_LABELS];
    size_t n_labels;
    /* the usage record as the agent wrote it (not the scheduler's estimate) */
    kf_node_usage usage;
    int64_t usage_updated_unix_ms;
    /* the admin record */
    bool has_admin;
    kf_node_admin admin;
    /* its drain record, added by the Cluster handlers (kf_cluster_add_drains) */
    int drain_state; /* 0 = none, else kf_drain_state (drain.h) */
} kf_node_status;

/* kf_view_status - the status of a node that is registered or has an
 * admin record; -ENOENT otherwise. Takes the view lock. */
int kf_view_status(kf_view *v, const char *node, kf_node_status *out);
/* kf_view_statuses - the nodes kf_view_status knows whose name sorts
 * after `after` (NULL = all), sorted by name: *out is a malloc'd array
 * (caller frees) of which the first *n (<= max) are the page; *more says
 * whether more followed. O(N log N) in the nodes listed. -ENOMEM. */
int kf_view_statuses(kf_view *v, const char *after, size_t max, kf_node_status **out, size_t *n,
                     bool *more);
/* kf_view_set_admin - apply an admin record the caller just wrote to etcd
 * at `revision` (NULL = deleted) without waiting for the watch, so the
 * next pick sees it. Watch events older than `revision` are ignored. */
void kf_view_set_admin(kf_view *v, const char *node, const kf_node_admin *admin, int64_t revision);
/* kf_view_ready - true once every range was listed and while every watch
 * is connected to etcd; else false with the reason in reason[0..size).
 * For /readyz: takes the view lock briefly, no etcd request. */
bool kf_view_ready(kf_view *v, char *reason, size_t size);
/* kf_view_client - the (cached) gRPC client for an agent address; one per
 * address, kept until kf_view_free, so a handler may use it unlocked. */
int kf_view_client(kf_view *v, const kf_node_addr *node, kf_grpc_client **out, kf_error *err);

/* ---- tenants.c: --tenants FILE -> token -> tenant, quotas ------------- */

typedef struct kf_tenant {
    char name[KF_TENANT_NAME_MAX + 1];
    uint64_t max_sessions;     /* 0 = no limit */
    uint64_t max_memory_bytes; /* 0 = no limit (sum of the sessions' memory limits) */
    bool admin;                /* may change the cluster (cordon, uncordon) */
} kf_tenant;

typedef struct kf_tenants kf_tenants;

/* kf_tenant_name_valid - the tenant name rule of kfleet.v1.Agent/StartSession:
 * 1..KF_TENANT_NAME_MAX of A-Z a-z 0-9 . _ - @. */
bool kf_tenant_name_valid(const char *s);

/* kf_tenants_load - read and check the tenants file. Refuses (-EPERM) a
 * file other users may read or write, and any malformed entry, with the
 * reason in err (never a token). */
int kf_tenants_load(const char *path, kf_tenants **out, kf_error *err);
/* kf_tenants_reload - re-read the file and swap the set in whole; on any
 * error the old set stays. Takes the tenants lock briefly. */
int kf_tenants_reload(kf_tenants *t, const char *path, kf_error *err);
kf_tenants *kf_tenants_free(kf_tenants *t);
/* kf_tenants_auth - the tenant a token belongs to (copied out), compared
 * in constant time against every token; -EACCES if none. */
int kf_tenants_auth(kf_tenants *t, const char *token, kf_tenant *out);

/* ---- session_table.c: /kfleet/sessions/ -> id -> node, tenant ----------- */

typedef struct kf_session_table kf_session_table;

/* What the table knows of a session (copied out). */
typedef struct kf_session_ref {
    char node[KF_PLACE_ID_MAX + 1];
    char tenant[KF_TENANT_NAME_MAX + 1]; /* "" without tenancy */
    uint64_t memory_bytes;               /* its memory limit (0 counted as the default) */
    uint64_t cpu_millis;                 /* its cpu limit (0 counted as the default) */
    int64_t created_unix_ms;
    bool lost;                           /* the record says state LOST (node_loss.c) */
    int64_t lost_unix_ms;                /* when the leader declared it lost */
    char moving_to[KF_PLACE_ID_MAX + 1]; /* a drain is moving it there ("" = not moving) */
} kf_session_ref;

/* A session of the table with its id (kf_session_table_lost). */
typedef struct kf_session_item {
    char id[KF_SESSION_ID_MAX + 1];
    kf_session_ref ref;
} kf_session_item;

int kf_session_table_start(kf_etcd *c, int wait_ms, kf_session_table **out, kf_error *err);
kf_session_table *kf_session_table_free(kf_session_table *t);
/* kf_session_table_lookup - where session `id` is and whose it is. On a
 * cache miss it asks etcd (the watch may lag a create by a few ms).
 * -ENOENT if the session is unknown. */
int kf_session_table_lookup(kf_session_table *t, const char *id, kf_session_ref *out);
/* kf_session_table_cached - like lookup, from the cache only (no etcd
 * round trip; for filtering many sessions at once). */
int kf_session_table_cached(kf_session_table *t, const char *id, kf_session_ref *out);
/* kf_session_table_nodes - the distinct nodes that hold at least one
 * session not yet LOST (malloc'd array of names, caller frees). O(S log S)
 * in the sessions of the table, the lock held while copying. */
int kf_session_table_nodes(kf_session_table *t, char (**out)[KF_PLACE_ID_MAX + 1], size_t *n);
/* kf_session_table_lost - the LOST sessions, of `tenant` only unless it is
 * NULL (malloc'd array, caller frees). O(sessions in the table). */
int kf_session_table_lost(kf_session_table *t, const char *tenant, kf_session_item **out, size_t *n);
/* kf_session_table_usage - the number of sessions of `tenant` (LOST ones
 * not counted: they hold nothing) and the sum of their memory limits. O(sessions in the table) under the lock: a
 * per-tenant counter is the next step for very large tables. */
void kf_session_table_usage(kf_session_table *t, const char *tenant, uint64_t *sessions,
                            uint64_t *memory_bytes);
/* kf_session_table_on_node - the ids of the sessions the table has on
 * `node`, LOST ones left out (malloc'd array, caller frees). O(sessions)
 * under the lock. */
int kf_session_table_on_node(kf_session_table *t, const char *node, char (**ids)[KF_SESSION_ID_MAX + 1],
                             size_t *n);
/* Local updates after our own commits/deletes (the watch confirms them). */
void kf_session_table_put(kf_session_table *t, const char *id, const kf_session_ref *ref);
void kf_session_table_remove(kf_session_table *t, const char *id);

/* ---- session_record.c: the /kfleet/sessions/<id> record ------------------ */

typedef struct kf_sched kf_sched;

#define KF_SESSION_KEY_MAX (sizeof(KF_KEY_SESSIONS) + KF_SESSION_ID_MAX)
/* kf_session_key - "/kfleet/sessions/<id>" into key[KF_SESSION_KEY_MAX]. */
void kf_session_key(char *key, const char *id);
/* kf_session_parse_record - the fields of a record value (untrusted JSON).
 * -EBADMSG if it names no node or has a malformed tenant. Pure. */
int kf_session_parse_record(const char *value, size_t len, kf_session_ref *out);
/* kf_session_record_lost - the record `value` rewritten with state "LOST",
 * lost_unix_ms and reason (every other field kept). malloc'd; NULL if the
 * value is not a JSON object or memory ran out. Pure. */
char *kf_session_record_lost(const char *value, size_t len, int64_t lost_unix_ms, const char *reason);
/* kf_session_forget - delete a session's record (retried: a delete is
 * idempotent) and drop it from the session table. 0 or the last error,
 * logged. Blocks on etcd. */
int kf_session_forget(kf_sched *s, const char *id);

/* ---- request_ids.c: idempotent CreateSession by client request id ------ */

#define KF_KEY_REQUESTS "/kfleet/requests/"
/* /kfleet/requests/<tenant>/<request id, each byte as itself or %XX> */
#define KF_REQUEST_KEY_MAX (sizeof(KF_KEY_REQUESTS) + KF_TENANT_NAME_MAX + 1 + 3 * KF_REQUEST_ID_MAX + 1)
#define KF_REQUEST_LEASE_TTL_S (25 * 3600) /* records live 24-25 h (lease replaced hourly) */
#define KF_REQUEST_TAKEOVER_MS 130000      /* > create.c's StartSession deadline */
#define KF_REQUEST_WAIT_MS 150000          /* a retry waits at most this for the first start */

typedef struct kf_request_ids kf_request_ids;
typedef struct kf_sched kf_sched;

/* A create's request id, checked, with its etcd key and fingerprint. */
typedef struct kf_create_req {
    const char *id; /* the client's request_id (borrowed from the request) */
    char key[KF_REQUEST_KEY_MAX];
    char fp[KF_REQUEST_FP_LEN + 1];
} kf_create_req;

int kf_request_ids_new(kf_etcd *etcd, kf_request_ids **out);
kf_request_ids *kf_request_ids_free(kf_request_ids *r);
/* kf_request_lease - the retention lease to attach request records to
 * (granted on first use and replaced every hour; blocks on etcd then). */
int kf_request_lease(kf_request_ids *r, int64_t *lease, kf_error *err);
/* kf_request_lease_lost - etcd no longer knows `lease` (a txn said so):
 * the next kf_request_lease grants a new one. */
void kf_request_lease_lost(kf_request_ids *r, int64_t lease);
/* kf_request_key - the record's key (rid must have passed the check). */
void kf_request_key(const char *tenant, const char *rid, char *out, size_t size);
/* kf_request_record - the record's JSON (malloc'd; NULL: no memory). */
char *kf_request_record(const char *session_id, const char *fp);
/* kf_request_replay - answer a create whose request id may be known.
 * Returns 0 when no record exists (the caller creates), 1 when the call
 * has been finished: the same session (waiting, bounded, for the create
 * that committed it to start it, or starting it itself once that create
 * must have died), or ALREADY_EXISTS (different limits), FAILED_PRECONDITION
 * (the session is gone), UNAVAILABLE (still starting at the deadline).
 * Blocks on etcd and the agent; takes no lock across those calls. */
int kf_request_replay(kf_sched *s, kf_call *c, const kf_create_req *cr, const kf_tenant *tenant,
                      const Kfleet__V1__CreateSessionRequest *req);

/* ---- commit_batch.c: group commit of new session records ---------------- */

typedef struct kf_commit_batch kf_commit_batch;
struct kf_sched_metrics;

/* One create's commit: the records to put and what they rely on. The
 * caller owns the entry (on its stack) and every string it points to. */
typedef struct kf_commit_entry {
    const char *key;           /* /kfleet/sessions/<id>: must be absent */
    const char *node_key;      /* /kfleet/nodes/<node>: must still have... */
    int64_t node_mod_revision; /* ...this mod revision (placement relied on it) */
    const char *record;        /* the session record */
    const char *request_key;   /* NULL: no request id; else must be absent */
    const char *request_record;
    int64_t lease; /* of the request record */
    /* results */
    int rc;         /* 0, or the error of the txn (then `err`) */
    bool won;       /* the compares held and both records are written */
    bool rid_taken; /* !won because the request key exists (another create of it won) */
    kf_error err;
    /* private to commit_batch.c */
    bool done;
    struct kf_commit_entry *next;
} kf_commit_entry;

/* kf_commit_batch_new - commits go through `etcd`; `metrics` (may be NULL)
 * counts the txns and the records in them. */
int kf_commit_batch_new(kf_etcd *etcd, struct kf_sched_metrics *metrics, kf_commit_batch **out);
kf_commit_batch *kf_commit_batch_free(kf_commit_batch *b);
/* kf_commit_batch_run - commit `e`, folded into one etcd txn with other
 * commits that are waiting at the same time (see the file comment). Blocks
 * until its txn has run; returns e->rc. rc < 0 may mean the outcome is
 * unknown (a transport failure; -ENOENT: the lease is gone, nothing was
 * written): the caller deletes what it may have put, guarded so that it
 * never deletes another create's request record. */
int kf_commit_batch_run(kf_commit_batch *b, kf_commit_entry *e);
/* kf_commit_batch_stats - txns run and entries committed through them. */
void kf_commit_batch_stats(kf_commit_batch *b, uint64_t *txns, uint64_t *entries);

/* ---- the daemon ---------------------------------------------------------- */

typedef struct kf_leader kf_leader;

struct kf_sched {
    kf_sched_config cfg;
    kf_etcd *etcd;
    kf_view *view;
    kf_session_table *sessions;
    kf_tenants *tenants; /* NULL: no tenancy, every caller is the anonymous tenant "" */
    kf_leader *leader;
    struct kf_sched_metrics *metrics; /* sched_metrics.c; set before any thread starts */
    kf_request_ids *requests;
    kf_commit_batch *commits;
};

/* ---- leader.c: election; the leader's loops run on its thread ------------ */

/* kf_leader_start - start the election thread: a lease of --leader-ttl kept
 * alive by a keeper, a watch on KF_KEY_LEADER, a campaign whenever the key
 * is free; while leader it runs the node-loss, reconcile, pools and rebalance loops every
 * tick. Uses an etcd client of its own (so its calls never queue behind the
 * handlers'). Returns at once; *out owned by the caller (kf_leader_free). */
int kf_leader_start(kf_sched *s, kf_leader **out, kf_error *err);
/* kf_leader_free - stop the thread; a leader resigns (deletes the key if it
 * still holds it) and revokes its lease, so another replica takes over at
 * once. Blocks up to one etcd request timeout. NULL-safe; returns NULL. */
kf_leader *kf_leader_free(kf_leader *l);
/* kf_leader_is - true while this replica holds the leader key on a live
 * lease. Cleared at once when the lease is reported lost. Lock-free. */
bool kf_leader_is(kf_leader *l);
/* kf_leader_txn - kf_etcd_txn on the leader's client, fenced: the compare
 * "leader key's create_revision == the one this term won with" is added in
 * front of `cmps` (at most KF_ETCD_MAX_TXN_OPS - 1), so a deposed leader's
 * write never lands. -ESTALE (FAILED_PRECONDITION) without running the txn
 * when not leader; *ok false when any compare failed. */
int kf_leader_txn(kf_leader *l, const kf_etcd_cmp *cmps, size_t n_cmps, const kf_etcd_op *ops,
                  size_t n_ops, bool *ok, kf_error *err);
/* kf_leader_txn_result - kf_leader_txn with the txn's result (the store
 * revision after it, for a later compare on what it wrote). */
int kf_leader_txn_result(kf_leader *l, const kf_etcd_cmp *cmps, size_t n_cmps, const kf_etcd_op *ops,
                         size_t n_ops, bool *ok, kf_etcd_txn_result *out, kf_error *err);
/* kf_leader_etcd - the leader's own etcd client (reads of the loops). */
kf_etcd *kf_leader_etcd(kf_leader *l);

/* ---- node_loss.c: sessions of a node gone past the grace become LOST ----- */

typedef struct kf_node_loss kf_node_loss;
kf_node_loss *kf_node_loss_new(void);
kf_node_loss *kf_node_loss_free(kf_node_loss *nl);
/* kf_node_loss_tick - one pass (leader thread only): notes nodes that hold
 * live sessions but are not registered, and for each gone longer than
 * --node-grace marks its sessions LOST with fenced txns (each also requires
 * the node record to be absent and the session record unchanged). Blocks
 * on etcd; returns the number of sessions marked, or a negative errno. */
int kf_node_loss_tick(kf_sched *s, kf_node_loss *nl);

/* ---- reconcile.c: session records vs what each agent holds -------------- */

typedef struct kf_reconcile kf_reconcile;
kf_reconcile *kf_reconcile_new(void);
kf_reconcile *kf_reconcile_free(kf_reconcile *rc);
/* kf_reconcile_tick - one pass (leader thread only) over the nodes that
 * registered again since the last pass, or all of them every
 * --reconcile-interval: sessions an agent holds whose record is LOST or
 * missing are deleted on the agent; records whose session the agent no
 * longer has (expired, vanished) are deleted. Blocks on etcd and agents
 * (bounded timeouts). Returns 0 or a negative errno. */
int kf_reconcile_tick(kf_sched *s, kf_reconcile *rc);

/* ---- pools.c: warm pools sized from demand (--pool-sizing) -------------- */

typedef struct kf_pools kf_pools;
kf_pools *kf_pools_new(void);
kf_pools *kf_pools_free(kf_pools *p);
/* kf_pool_target - the warm-pool size for a node that saw `node_creates`
 * of the cluster's `total_creates` over the last `window_ms`, among
 * `n_nodes` placeable nodes, with room for `free_cap` more sessions:
 * ceil(max(node, total / nodes) / window x start time x headroom),
 * bounded by [cfg->pool_min, free_cap]. Pure. */
uint32_t kf_pool_target(const kf_sched_config *cfg, uint64_t node_creates, uint64_t total_creates,
                        size_t n_nodes, uint64_t window_ms, uint64_t free_cap);
/* kf_pools_tick - one pass (leader thread only; does work at most once a
 * second): samples every placeable node's create counter and writes the
 * targets that changed to /kfleet/pools/<node> (fenced). Blocks on etcd;
 * returns the number of targets written or a negative errno. */
int kf_pools_tick(kf_sched *s, kf_pools *p);

/* ---- rebalance.c: idle sessions moved off the busiest node (--rebalance) -- */

typedef struct kf_rebalance kf_rebalance;
kf_rebalance *kf_rebalance_new(void);
kf_rebalance *kf_rebalance_free(kf_rebalance *rb);
/* kf_rebalance_tick - one pass (leader thread only; does work at most every
 * 2 s): with hysteresis on the spread of the nodes' loads, moves up to
 * --rebalance-max-moves idle sessions from the most loaded node to the
 * least loaded ones (kf_session_move). Blocks for the moves (seconds each).
 * Returns the number of sessions moved or a negative errno. */
int kf_rebalance_tick(kf_sched *s, kf_rebalance *rb);

/* auth.c: kf_sched_authenticate - the caller's tenant from its
 * `authorization: Bearer <token>` metadata. Without tenancy every caller
 * is the anonymous tenant (name ""). On failure the call has been finished
 * with UNAUTHENTICATED and -EACCES is returned. */
int kf_sched_authenticate(kf_sched *s, kf_call *c, kf_tenant *out);

/* service.c: the method table: kfleet.v1.Sessions, then kfleet.v1.Cluster. */
const kf_method *kf_sched_methods(kf_sched *s, size_t *n);

/* create.c */
void kf_sched_create(kf_call *c, void *ud);
/* proxy.c */
void kf_sched_list(kf_call *c, void *ud);
void kf_sched_delete(kf_call *c, void *ud);
void kf_sched_proxy(kf_call *c, void *ud);

/* The timeout for a forwarded call: what is left of the client's deadline,
 * or `dflt_ms` when it set none. */
int64_t kf_sched_timeout_ms(kf_call *c, int64_t dflt_ms);

#endif
