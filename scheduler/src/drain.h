/* drain.h - node drains: the record every scheduler replica reads and the
 * elected one advances (drain_record.c), the kfleet.v1.Cluster calls that
 * start, show, watch and cancel a drain (drain_api.c), and the runner that
 * moves the sessions (drain_runner.c, drain_move.c).
 *
 * The record, /kfleet/drains/<node> (JSON, no lease: it outlives every
 * process), is the drain's whole state: its parameters, its state and one
 * entry per session with what happened to it. DrainNode writes it with
 * state running and the node's sessions pending; the runner writes each
 * change; CancelDrain flips the state. Every write is a txn on the record's
 * mod revision, so a cancel and the runner's progress never overwrite each
 * other (the loser reads again and merges).
 */
#ifndef KF_SCHED_DRAIN_H
#define KF_SCHED_DRAIN_H

#include "kfleet/v1/cluster.pb-c.h"
#include "scheduler.h"

#define KF_DRAIN_SESSIONS_MAX 2048 /* sessions a drain tracks (one record < etcd's 1.5 MiB) */
#define KF_DRAIN_MSG_MAX 200       /* bytes of a per-session or drain message */
#define KF_DRAIN_DEADLINE_DEFAULT_S 600
#define KF_DRAIN_DEADLINE_MAX_S 86400
#define KF_DRAIN_PARALLEL_DEFAULT 4
#define KF_DRAIN_PARALLEL_MAX 64

/* Values are those of kfleet.v1.DrainState / DrainSessionState. */
typedef enum kf_drain_state {
    KF_DRAIN_RUNNING = 1,
    KF_DRAIN_DONE = 2,
    KF_DRAIN_CANCELLED = 3,
    KF_DRAIN_INCOMPLETE = 4,
} kf_drain_state;

typedef enum kf_drain_sess_state {
    KF_DS_PENDING = 1,
    KF_DS_MOVING = 2,
    KF_DS_MOVED = 3,
    KF_DS_FAILED = 4,
    KF_DS_LEFT = 5,
    KF_DS_DELETED = 6,
    KF_DS_GONE = 7,
} kf_drain_sess_state;

typedef struct kf_drain_sess {
    char id[KF_SESSION_ID_MAX + 1];
    kf_drain_sess_state state;
    char target[KF_PLACE_ID_MAX + 1];
    char message[KF_DRAIN_MSG_MAX + 1];
    uint32_t attempts;
} kf_drain_sess;

typedef struct kf_drain {
    char node[KF_PLACE_ID_MAX + 1];
    kf_drain_state state;
    char reason[KF_ADMIN_TEXT_MAX + 1];
    char by[KF_ADMIN_TEXT_MAX + 1];
    int64_t started_unix_ms, deadline_unix_ms, ended_unix_ms;
    uint32_t parallel;
    bool force;
    char message[KF_DRAIN_MSG_MAX + 1];
    kf_drain_sess *sess; /* malloc'd, n entries */
    size_t n;
} kf_drain;

/* ---- drain_record.c ------------------------------------------------------ */

/* kf_drain_parse - a record into *out (sess malloc'd: kf_drain_done).
 * -EBADMSG for a malformed record (what is wrong is logged), -ENOMEM. */
int kf_drain_parse(const char *json, size_t len, kf_drain *out);
/* kf_drain_json - the record as JSON (malloc'd), NULL on ENOMEM. */
char *kf_drain_json(const kf_drain *d);
void kf_drain_done(kf_drain *d);
/* kf_drain_get - read node's record; *rev its mod revision. -ENOENT if
 * none (err untouched), other errors with err set. */
int kf_drain_get(kf_sched *s, const char *node, kf_drain *out, int64_t *rev, kf_error *err);
/* kf_drain_put - write d if the record is still at revision `rev` (0 =
 * absent); `fenced` (the runner's writes): only while this replica leads
 * (kf_leader_txn). *won false: it changed meanwhile; *new_rev the revision
 * after a won write. */
int kf_drain_put(kf_sched *s, const kf_drain *d, int64_t rev, bool fenced, bool *won, int64_t *new_rev,
                 kf_error *err);
/* kf_drain_find - the entry of session id, or NULL. */
kf_drain_sess *kf_drain_find(kf_drain *d, const char *id);
/* kf_drain_ended - state is not running. */
static inline bool kf_drain_ended(const kf_drain *d) { return d->state != KF_DRAIN_RUNNING; }

/* A DrainStatus message pointing into a kf_drain (valid while both live). */
typedef struct kf_drain_msg {
    Kfleet__V1__DrainStatus st;
    Kfleet__V1__DrainSession *items;
    Kfleet__V1__DrainSession **ptrs;
} kf_drain_msg;
int kf_drain_msg_init(kf_drain_msg *m, const kf_drain *d);
void kf_drain_msg_done(kf_drain_msg *m);

/* ---- cordon.c ------------------------------------------------------------ */

/* kf_admin_apply - cordon `node` with `reason` (NULL: uncordon), recorded
 * as by `by`; idempotent (see cordon.c). NOT_FOUND for an unknown node,
 * ABORTED if the record kept changing. */
int kf_admin_apply(kf_sched *s, const char *node, const char *reason, const char *by, kf_error *err);

/* ---- drain_runner.c ------------------------------------------------------- */

typedef struct kf_drain_runner kf_drain_runner;

/* kf_drain_runner_start - advance every running drain in etcd from now on
 * (the elected scheduler calls it when it wins, stop when it loses). */
int kf_drain_runner_start(kf_sched *s, kf_drain_runner **out, kf_error *err);
/* kf_drain_runner_stop - stop starting moves, wait for the ones in flight
 * (each ends or rolls back), join. NULL-safe; returns NULL. */
kf_drain_runner *kf_drain_runner_stop(kf_drain_runner *r);

/* ---- drain_move.c -------------------------------------------------------- */

/* kf_drain_move - move session `id` from `from` to a node placement picks
 * (never `from`): stop it there (ExportSession), copy its volume into a
 * new sandbox on the target (ImportSession) with a notice for its next
 * Execute, switch the session record, release the source. On failure the
 * session is resumed on `from` (files kept, kernel restarted, a notice
 * saying so) and err says why. *target receives the chosen node.
 * Returns 0, -ENOENT if the session is gone (deleted meanwhile), or an
 * error. Blocking (up to the agents' timeouts). */
int kf_drain_move(kf_sched *s, const char *id, const char *from, char *target, size_t target_size,
                  kf_error *err);
/* kf_session_move - kf_drain_move that also keeps off the nodes in
 * avoid[0..n_avoid) (borrowed) and names `cause` ("a drain of node X") in
 * the export reason and the notice. Same returns. */
int kf_session_move(kf_sched *s, const char *id, const char *from, char (*avoid)[KF_PLACE_ID_MAX + 1],
                    size_t n_avoid, const char *cause, char *target, size_t target_size, kf_error *err);
/* kf_drain_delete - delete session `id` on `from` and its record (a forced
 * drain's end). */
int kf_drain_delete(kf_sched *s, const char *id, const char *from, kf_error *err);

/* ---- drain_api.c --------------------------------------------------------- */

void kf_sched_drain(kf_call *c, void *ud);
void kf_sched_get_drain(kf_call *c, void *ud);
void kf_sched_watch_drain(kf_call *c, void *ud);
void kf_sched_cancel_drain(kf_call *c, void *ud);

#endif
