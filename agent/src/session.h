/* session.h - a session, the agent's table of them, and the operations
 * on them (create, claim from the pool, delete, restart, expire, re-adopt).
 *
 * Ownership and locking:
 *  - kf_agent owns the table; `table_lock` guards the id index, the pool
 *    list, tombstones, the uid slots and every session's `state` field.
 *  - a kf_session is reference counted (kf_session_unref); a lookup returns
 *    a reference. Its `lock` serialises everything that touches the kernel
 *    (an execution, a restart, teardown) and is held for their duration; an
 *    Execute that finds it held answers ABORTED ("busy") instead of waiting.
 *  - the kernel connection (`conn`) and pidfds belong to whoever holds
 *    `lock`.
 *
 * State machine (see ARCHITECTURE.md):
 *   STARTING -> POOLED (warm, no client yet) -> READY <-> BUSY
 *   READY/BUSY -> RESTARTING -> READY;  READY -> DELETING -> gone
 *   READY -> EXPIRED (idle or lifetime) -> gone, tombstone kept
 *   READY/BUSY -> EXPORTED (sandbox stopped, volume kept; session_move.c)
 *     -> released: gone, tombstone "moved to node X"; or resumed: READY
 */
#ifndef KF_AGENT_SESSION_H
#define KF_AGENT_SESSION_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "kernel_client.h"
#include "kf/error.h"

#define KF_ID_MAX 64
#define KF_TENANT_MAX 63

typedef enum {
    KF_SS_STARTING = 1,
    KF_SS_POOLED,
    KF_SS_READY,
    KF_SS_BUSY,
    KF_SS_RESTARTING,
    KF_SS_DELETING,
    KF_SS_EXPIRED,
    KF_SS_EXPORTED, /* being moved: no sandbox, volume image kept, persisted */
} kf_session_state;

typedef struct kf_session {
    /* immutable after creation (or after a pool claim, under table_lock) */
    char id[KF_ID_MAX + 1];   /* client-visible session id; "" while pooled */
    char tenant[KF_TENANT_MAX + 1]; /* StartSession's tenant; "" if none */
    char sbid[32];            /* sandbox id: directory and cgroup name */
    uint32_t slot;            /* uid = uid_base + slot */
    uid_t uid;
    gid_t gid;
    kf_limits limits;
    char key[KF_KERNEL_KEY_LEN + 1];
    int64_t created_ms;       /* unix ms */
    int from_pool;

    /* under table_lock */
    kf_session_state state;
    int refs;
    int in_table;
    int64_t last_active_ms;   /* unix ms */
    char move_reason[128];    /* why it is EXPORTED ("node drain"); "" otherwise */

    /* under lock */
    pthread_mutex_t lock;
    pid_t pid1;               /* host pid of the sandbox's PID 1 */
    uint64_t pid1_start;      /* its start time (clock ticks), guards pid reuse */
    pid_t kernel_pid;         /* host pid of the kernel */
    int kernel_pidfd;
    kf_kernel_conn *conn;
    uint32_t exec_count;
    uint32_t kernel_restarts;
    uint64_t create_seq; /* the node's creates_total right after this create; 0 if adopted */
    char notice[256];         /* told to the client with the next Execute (persisted) */

    struct kf_session *pool_next;
} kf_session;

typedef struct kf_tombstone {
    char id[KF_ID_MAX + 1];
    char reason[160];
    int64_t when_ms;
} kf_tombstone;

/* A tombstone whose reason starts with this is a session that moved away:
 * its id answers NOT_FOUND (it lives elsewhere), not FAILED_PRECONDITION. */
#define KF_TOMB_MOVED_PREFIX "moved to node "


#define KF_TOMBSTONES 4096

typedef struct kf_agent {
    kf_agent_config cfg;
    void *zmq_ctx;

    pthread_mutex_t table_lock;
    pthread_cond_t table_cond;
    kf_session **sessions; /* open hash by id, capacity sessions_cap */
    size_t sessions_cap;
    size_t n_sessions;     /* client sessions (not pooled) */
    kf_session *pool;      /* warm sandboxes, LIFO */
    size_t pool_ready;
    size_t pool_starting;
    uint32_t pool_target;  /* warm sandboxes to keep: --pool, or the scheduler's
                            * /kfleet/pools/<node> record bounded by --pool-max */
    uint8_t *slots;        /* uid slot in use */
    uint32_t slot_next;    /* where the next slot search starts (round robin) */
    kf_tombstone *tombstones; /* ring */
    size_t tomb_next;
    int stopping;
    uint64_t creates_total, pool_claims_total;
    int64_t pool_last_claim_ms; /* kf_mono_ms() of the last pool claim (refill pacing) */
    /* cluster registration (registry.c): NULL without --etcd; set before
     * the server starts, freed after it stops */
    struct kf_registry *registry;
    /* idempotent CreateSession (request_ids.c): set before the server
     * starts, freed after it stops */
    struct kf_agent_requests *requests;
    /* metrics (metrics.c): set before any thread starts, freed last */
    struct kf_agent_metrics *metrics;
    /* sums of the limits of the sessions in the index (kept by insert/remove) */
    uint64_t memory_reserved_bytes;
    uint64_t cpu_reserved_millis;
} kf_agent;


/* Table. All take table_lock internally. */
int kf_agent_init(kf_agent *a, const kf_agent_config *cfg, kf_error *err);
void kf_agent_done(kf_agent *a);

/* kf_agent_lookup - a referenced session by client id, or NULL and err set:
 * NOT_FOUND "no session X", FAILED_PRECONDITION "session X expired: ..."
 * when a tombstone says so (NOT_FOUND "session X moved to node Y" for a
 * moved one), UNAVAILABLE "session X is being moved to another node (why)"
 * for an EXPORTED one. For every kfleet.v1.Sessions call. */
kf_session *kf_agent_lookup(kf_agent *a, const char *id, kf_error *err);
/* kf_agent_lookup_any - the same, but an EXPORTED session is returned too
 * (the move handlers). */
kf_session *kf_agent_lookup_any(kf_agent *a, const char *id, kf_error *err);
void kf_session_ref(kf_agent *a, kf_session *s);
void kf_session_unref(kf_agent *a, kf_session *s);

/* kf_agent_list - referenced snapshot of client sessions; caller unrefs each
 * and frees the array. */
int kf_agent_list(kf_agent *a, kf_session ***out, size_t *n);

/* kf_agent_usage - a consistent snapshot of what the node has handed out
 * (published to etcd, GetNodeStats), O(1) under table_lock, cheap enough to
 * poll. Reservations are the sum of the limits of client sessions; warm
 * sandboxes are not counted (a claim resizes them). */
void kf_agent_usage(kf_agent *a, kf_node_usage *u);

/* kf_agent_id_check - 0 if `id` is well formed and no session on this node
 * has or had it; else INVALID_ARGUMENT, or ALREADY_EXISTS naming the live
 * session or the tombstone's reason. Advisory: kf_agent_insert is the
 * authority when two creates race for one id. */
int kf_agent_id_check(kf_agent *a, const char *id, kf_error *err);
/* kf_agent_id_check_import - the same for a session moving (back) here: a
 * tombstone saying it moved away from this node does not hold it up. */
int kf_agent_id_check_import(kf_agent *a, const char *id, kf_error *err);
/* kf_agent_tombstone_forget_moved - drop the "moved to" tombstone of id
 * (in memory; kf_store_tombstone_forget removes the file) once it is back. */
void kf_agent_tombstone_forget_moved(kf_agent *a, const char *id);

/* kf_tenant_valid - 0-63 of [A-Za-z0-9._@-]. */
int kf_tenant_valid(const char *tenant);

void kf_agent_tombstone_load(kf_agent *a, const char *id, const char *reason, int64_t when_ms);
int kf_agent_slot_alloc(kf_agent *a, uint32_t *slot);
void kf_agent_slot_free(kf_agent *a, uint32_t slot);
void kf_agent_slot_mark(kf_agent *a, uint32_t slot);
/* kf_agent_insert - put a session with its id in the index (takes a ref). */
int kf_agent_insert(kf_agent *a, kf_session *s, kf_error *err);
/* kf_agent_remove - drop from the index; optional tombstone reason. */
void kf_agent_remove(kf_agent *a, kf_session *s, const char *tombstone_reason);
kf_session *kf_session_new(void);
const char *kf_session_state_name(kf_session_state st);
int kf_session_id_valid(const char *id);

/* Operations (session_ops.c). Blocking; callers are handler threads. */
/* kf_agent_room - 0 if the node takes one more session now; UNAVAILABLE
 * while shutting down, RESOURCE_EXHAUSTED at --max-sessions. Advisory
 * (creates in flight are not counted). */
int kf_agent_room(kf_agent *a, kf_error *err);
kf_session *kf_session_start_cold(kf_agent *a, const kf_limits *l, kf_error *err);
/* kf_op_create - a new READY session with limits `req` (zero fields take
 * the defaults): a warm sandbox when one fits, else a cold start (seconds).
 * `id` NULL = a fresh random id (CreateSession); otherwise exactly that id
 * (StartSession, the scheduler chose it): INVALID_ARGUMENT if malformed,
 * ALREADY_EXISTS if this node has or had a session by that id. `tenant`
 * (NULL = none) is recorded with the session. On success *out holds a
 * reference (caller unrefs). */
int kf_op_create(kf_agent *a, const char *id, const char *tenant, const kf_limits *req,
                 kf_session **out, kf_error *err);
int kf_op_delete(kf_agent *a, const char *id, kf_error *err);
/* kf_op_restart - restart the kernel (holds s->lock). FAILED_PRECONDITION
 * without touching anything when the session is being deleted, expired or
 * exported. */
int kf_op_restart(kf_agent *a, kf_session *s, const char *why, kf_error *err);
int kf_op_interrupt(kf_agent *a, kf_session *s, kf_error *err);
/* kf_op_expire_due - expire sessions past idle or lifetime (reaper). */
void kf_op_expire_due(kf_agent *a);

/* Sandbox life (sandbox_spawn.c). */
/* kf_sandbox_start - a new sandbox with a fresh volume; on failure nothing
 * of it is left (kf_sandbox_destroy). */
int kf_sandbox_start(kf_agent *a, kf_session *s, kf_error *err);
/* kf_sandbox_start_kept - a sandbox on the volume image already in the
 * session's directory (mounted on data/ already or not): an imported or a
 * resumed session. On failure the sandbox is stopped and the image, record
 * and directory stay (kf_sandbox_stop). Holds s->lock. */
int kf_sandbox_start_kept(kf_agent *a, kf_session *s, kf_error *err);
int kf_sandbox_restart_kernel(kf_agent *a, kf_session *s, kf_error *err); /* holds s->lock */
int kf_sandbox_connect(kf_agent *a, kf_session *s, int64_t deadline_ms, kf_error *err);
/* kf_sandbox_stop - kill the sandbox, remove its cgroup, unmount its
 * volume and socket tmpfs; keep the directory, volume image and record. */
void kf_sandbox_stop(kf_agent *a, kf_session *s); /* holds s->lock */
/* kf_sandbox_destroy - kf_sandbox_stop, then delete the image and directory. */
void kf_sandbox_destroy(kf_agent *a, kf_session *s); /* holds s->lock */
int kf_sandbox_alive(kf_session *s);
void kf_sandbox_paths(const kf_agent *a, const kf_session *s, const char *leaf, char *out, size_t size);
uint64_t kf_proc_start_time(pid_t pid);

/* Persistence (session_store.c). */
int kf_store_save(kf_agent *a, kf_session *s);
/* kf_store_recover - re-adopt every sandbox found under state_dir. */
int kf_store_recover(kf_agent *a);
int kf_store_tombstone(kf_agent *a, const char *id, const char *reason);
void kf_store_tombstone_forget(kf_agent *a, const char *id);

/* Pool (pool.c). */
kf_session *kf_pool_claim(kf_agent *a, const kf_limits *l);
/* kf_pool_claim_any - take any warm sandbox (for purge); NULL when empty. */
kf_session *kf_pool_claim_any(kf_agent *a);
int kf_pool_start(kf_agent *a);
void kf_pool_stop(kf_agent *a);
void kf_pool_add(kf_agent *a, kf_session *s);
/* kf_pool_set_target - keep `n` warm sandboxes from now on (bounded by
 * --pool-max); the pool thread starts or stops sandboxes to match. Takes
 * table_lock; returns the target set. */
uint32_t kf_pool_set_target(kf_agent *a, uint32_t n);

/* Background loop (reaper.c): expiry, dead kernels. */
int kf_reaper_start(kf_agent *a);
void kf_reaper_stop(kf_agent *a);

#endif
