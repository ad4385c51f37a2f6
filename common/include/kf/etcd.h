/* etcd.h - a small etcd v3 client over etcd's JSON gateway (HTTP/1.1 +
 * libcurl + cJSON), for the cluster state the agents and the scheduler keep.
 *
 * What it covers: range / put / delete / txn, leases (grant, keepalive,
 * revoke, and a background keeper thread), watches that resume from the last
 * revision seen after a reconnect and re-list after compaction, and a leader
 * key built from a lease and a txn. Options: several endpoints with failover,
 * timeouts, TLS (CA, client certificate) and etcd user/password auth.
 *
 * Conventions:
 * - Every fallible call returns 0 or a negative errno and fills `err` (may be
 *   NULL) with a message and the gRPC status it maps to. Connection problems
 *   are KF_ST_UNAVAILABLE; a server-side gRPC error keeps etcd's own status
 *   (e.g. "required revision has been compacted" -> OUT_OF_RANGE, -ERANGE).
 *   A malformed response is -EBADMSG; a response over the size cap -EFBIG.
 * - Keys and values are byte strings with explicit lengths (they may hold NUL
 *   bytes). Everything the library returns is NUL-terminated as well, so text
 *   keys can be used as C strings.
 * - int64 fields (revisions, lease ids) are exact: etcd sends them as JSON
 *   strings and they are parsed with strtoll, never through a double.
 * - All calls block. Unary calls end within `request_timeout_ms` per endpoint
 *   tried.
 * - Failover: a request that could not be sent moves on to the next endpoint.
 *   Reads (range, keepalive, TTL) also move on after a failure mid-request;
 *   writes (put, delete, txn, grant, revoke) do not, since the first attempt
 *   may have been applied: they fail with "outcome unknown" and the caller
 *   re-reads (kf_etcd_campaign does this itself).
 *
 * Threads: a kf_etcd client may be shared by any number of threads. Unary
 * calls run on a small set of HTTP handles (32, each on its own keep-alive
 * connection, one request at a time each), so up to 32 threads' calls are
 * in flight at once and etcd can batch their writes into one WAL fsync;
 * more callers wait for a handle (~1 ms per call on loopback). A watch and a lease keeper each own a
 * thread and an HTTP handle of their own, and use the client only for its
 * configuration, its auth token and (watch re-list) unary calls. They must be
 * stopped before the client is freed.
 */
#ifndef KF_ETCD_H
#define KF_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kf/error.h"

/* Client-side limits. Server defaults are smaller (1.5 MiB per request,
 * 128 ops per txn); these stop a client from building absurd requests and a
 * server (or something posing as one) from making us allocate without bound. */
#define KF_ETCD_MAX_KEY (64u * 1024)                     /* bytes */
#define KF_ETCD_MAX_VALUE (16u * 1024 * 1024)            /* bytes */
#define KF_ETCD_MAX_TXN_OPS 128                          /* compares, and ops per branch */
#define KF_ETCD_MAX_KVS 1000000                          /* kvs in one response */
#define KF_ETCD_MAX_ENDPOINTS 16
#define KF_ETCD_DEFAULT_MAX_RESPONSE (64u * 1024 * 1024) /* bytes per body / stream message */

typedef struct kf_etcd kf_etcd;

typedef struct kf_etcd_opts {
    /* Comma-separated "http://host:port" / "https://host:port" list
     * (required). A request that cannot connect moves on to the next one. */
    const char *endpoints;
    int request_timeout_ms;  /* whole unary request; 0 = 5000 */
    int connect_timeout_ms;  /* TCP + TLS handshake; 0 = 2000 */
    /* A watch stream that delivers no byte for this long is dropped and
     * re-established. The server sends a progress notification every
     * --experimental-watch-progress-notify-interval (10 min by default), so
     * this must be longer than that. 0 = 15 minutes; < 0 = never. */
    int watch_idle_timeout_ms;
    size_t max_response_bytes; /* 0 = KF_ETCD_DEFAULT_MAX_RESPONSE */
    /* TLS, for https endpoints. NULL = the system CA store, no client cert. */
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    /* etcd auth. With a username, the client authenticates before its first
     * request (POST /v3/auth/authenticate), sends the token in the
     * Authorization header and authenticates again when the server says the
     * token is invalid (expired, or the server restarted). */
    const char *username;
    const char *password;
    /* Optional: called after every request made with kf_etcd_http (unary
     * calls, keepalives, a watch's re-list; not the watch stream itself)
     * with the API path ("/v3/kv/range"), its duration in microseconds
     * (all endpoints tried, auth included) and its result (0 or -errno).
     * Runs on the requesting thread, with the client's request mutex held
     * for unary calls: it must be thread-safe and must not block or call the
     * client (a metrics histogram). */
    void (*observe)(void *userdata, const char *path, int64_t duration_us, int result);
    void *observe_userdata;
} kf_etcd_opts;

/* One key-value pair as etcd stores it. key and value are malloc'd and
 * NUL-terminated (key_len / value_len do not count the NUL). */
typedef struct kf_etcd_kv {
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
} kf_etcd_kv;

/* The result of a range. */
typedef struct kf_etcd_kvs {
    kf_etcd_kv *kvs;
    size_t n;
    int64_t revision; /* store revision the range was served at */
    int64_t count;    /* keys in the range (may exceed n when limited) */
    bool more;        /* true if the limit cut the result short */
} kf_etcd_kvs;

/* kf_etcd_kv_done / kf_etcd_kvs_done - free the contents (not the struct),
 * leaving it zeroed. NULL-safe, idempotent. */
void kf_etcd_kv_done(kf_etcd_kv *kv);
void kf_etcd_kvs_done(kf_etcd_kvs *kvs);

/* kf_etcd_client_new - parse the options and set up a client. Does no
 * network I/O (so it succeeds with every endpoint down; the first request
 * reports that). Strings in `opts` are copied. -EINVAL on a bad endpoint list
 * or option. On success *out is owned by the caller (kf_etcd_client_free). */
int kf_etcd_client_new(const kf_etcd_opts *opts, kf_etcd **out, kf_error *err);

/* kf_etcd_client_free - free the client. Every watch and keeper started on
 * it must have been stopped. NULL-safe; returns NULL. */
kf_etcd *kf_etcd_client_free(kf_etcd *c);

/* ---- key-value --------------------------------------------------------- */

/* kf_etcd_put - set key = value, attached to `lease` (0 = none). *rev (may be
 * NULL) receives the revision of the write. */
int kf_etcd_put(kf_etcd *c, const void *key, size_t key_len, const void *value, size_t value_len,
                int64_t lease, int64_t *rev, kf_error *err);

/* kf_etcd_get - the current pair stored at `key`. -ENOENT (NOT_FOUND) if the
 * key does not exist. On success *kv is filled (caller: kf_etcd_kv_done). */
int kf_etcd_get(kf_etcd *c, const void *key, size_t key_len, kf_etcd_kv *kv, kf_error *err);

/* kf_etcd_range - the pairs in [key, range_end), sorted by key, at most
 * `limit` of them (0 = no limit). range_end NULL (or length 0) = just `key`;
 * range_end "\0" (length 1) = every key >= `key`. `revision` > 0 reads the
 * store as it was at that revision (-ERANGE if compacted), 0 = now.
 * On success *out is filled (caller: kf_etcd_kvs_done); on failure it is
 * left zeroed. O(n) in the size of the result, which is capped by
 * max_response_bytes. */
int kf_etcd_range(kf_etcd *c, const void *key, size_t key_len, const void *range_end,
                  size_t range_end_len, int64_t limit, int64_t revision, kf_etcd_kvs *out,
                  kf_error *err);

/* kf_etcd_range_prefix - kf_etcd_range over every key starting with the
 * NUL-terminated `prefix` ("" = the whole keyspace), at the current revision. */
int kf_etcd_range_prefix(kf_etcd *c, const char *prefix, int64_t limit, kf_etcd_kvs *out,
                         kf_error *err);

/* kf_etcd_delete - delete `key`, or [key, range_end) if range_end is given.
 * *deleted (may be NULL) receives how many keys went; deleting nothing is not
 * an error. *rev (may be NULL) receives the store revision after the call. */
int kf_etcd_delete(kf_etcd *c, const void *key, size_t key_len, const void *range_end,
                   size_t range_end_len, int64_t *deleted, int64_t *rev, kf_error *err);

/* kf_etcd_delete_prefix - delete every key starting with `prefix`. */
int kf_etcd_delete_prefix(kf_etcd *c, const char *prefix, int64_t *deleted, kf_error *err);

/* kf_etcd_prefix_end - the range_end that makes [prefix, end) cover exactly
 * the keys starting with `prefix`: trailing 0xff bytes dropped, then the last
 * byte incremented; "\0" (length 1) if nothing is left (an all-0xff or empty
 * prefix: every key from `prefix` on). `out` needs max(len, 1) bytes. Pure;
 * returns the length written. */
size_t kf_etcd_prefix_end(const void *prefix, size_t len, unsigned char *out);

/* ---- transactions ------------------------------------------------------ */

typedef enum kf_etcd_cmp_target {
    KF_ETCD_CMP_VERSION = 0, /* number of writes since creation (0 = absent) */
    KF_ETCD_CMP_CREATE,      /* create_revision (0 = absent) */
    KF_ETCD_CMP_MOD,         /* mod_revision */
    KF_ETCD_CMP_VALUE,       /* value bytes */
    KF_ETCD_CMP_LEASE,       /* attached lease id */
} kf_etcd_cmp_target;

typedef enum kf_etcd_cmp_result {
    KF_ETCD_CMP_EQUAL = 0,
    KF_ETCD_CMP_GREATER,
    KF_ETCD_CMP_LESS,
    KF_ETCD_CMP_NOT_EQUAL,
} kf_etcd_cmp_result;

/* One txn guard: `target` of `key` compared with `number` (VERSION, CREATE,
 * MOD, LEASE) or with value[0..value_len) (VALUE). A missing key has
 * version/create/mod revision 0; a VALUE compare on a missing key is false. */
typedef struct kf_etcd_cmp {
    const void *key;
    size_t key_len;
    kf_etcd_cmp_target target;
    kf_etcd_cmp_result result;
    int64_t number;
    const void *value;
    size_t value_len;
} kf_etcd_cmp;

typedef enum kf_etcd_op_type {
    KF_ETCD_OP_RANGE = 0,
    KF_ETCD_OP_PUT,
    KF_ETCD_OP_DELETE,
} kf_etcd_op_type;

/* One txn operation. RANGE and DELETE use key/range_end (range_end NULL =
 * the single key); PUT uses key/value/lease. `limit` applies to RANGE. */
typedef struct kf_etcd_op {
    kf_etcd_op_type type;
    const void *key;
    size_t key_len;
    const void *range_end;
    size_t range_end_len;
    const void *value;
    size_t value_len;
    int64_t lease;
    int64_t limit;
} kf_etcd_op;

/* The result of one txn operation: `kvs` for RANGE, `deleted` for DELETE
 * (PUT carries nothing beyond the txn revision). */
typedef struct kf_etcd_op_result {
    kf_etcd_op_type type;
    kf_etcd_kvs kvs;
    int64_t deleted;
} kf_etcd_op_result;

typedef struct kf_etcd_txn_result {
    bool succeeded;   /* the compares held and `success` ran */
    int64_t revision; /* store revision after the txn */
    kf_etcd_op_result *results; /* one per op of the branch that ran */
    size_t n;
} kf_etcd_txn_result;

void kf_etcd_txn_result_done(kf_etcd_txn_result *r);

/* kf_etcd_txn - atomically: if every compare holds run `success`, else run
 * `failure`. Each array holds at most KF_ETCD_MAX_TXN_OPS entries (and the
 * server's --max-txn-ops, 128 by default). A failed compare is not an error:
 * it returns 0 with *succeeded / out->succeeded false. Either out pointer may
 * be NULL; on success *out (if given) holds the results of the branch that
 * ran (caller: kf_etcd_txn_result_done). Not retried after a connection
 * failure once sent (it may have been applied): -ECONNRESET/-ETIMEDOUT with
 * "outcome unknown" - re-read and decide. */
int kf_etcd_txn(kf_etcd *c, const kf_etcd_cmp *cmps, size_t n_cmps, const kf_etcd_op *success,
                size_t n_success, const kf_etcd_op *failure, size_t n_failure, bool *succeeded,
                kf_etcd_txn_result *out, kf_error *err);

/* ---- leases ------------------------------------------------------------ */

/* kf_etcd_lease_grant - a lease of `ttl_s` seconds. *id receives its id (an
 * int64 above 2^53 in general), *granted_ttl (may be NULL) the TTL the
 * server granted (it may raise a tiny TTL to its minimum). */
int kf_etcd_lease_grant(kf_etcd *c, int64_t ttl_s, int64_t *id, int64_t *granted_ttl,
                        kf_error *err);

/* kf_etcd_lease_keepalive - refresh the lease once (one request; streaming
 * several keepalives through one gateway request is not reliable). *ttl
 * (may be NULL) receives the renewed TTL. -ENOENT (NOT_FOUND, "lease gone")
 * if the lease expired or was revoked: its keys are gone, register again. */
int kf_etcd_lease_keepalive(kf_etcd *c, int64_t id, int64_t *ttl, kf_error *err);

/* kf_etcd_lease_revoke - revoke the lease now, deleting its keys. -ENOENT if
 * it no longer exists. */
int kf_etcd_lease_revoke(kf_etcd *c, int64_t id, kf_error *err);

/* kf_etcd_lease_ttl - remaining TTL of the lease in seconds (-ENOENT if it is
 * gone). Does not refresh it. */
int kf_etcd_lease_ttl(kf_etcd *c, int64_t id, int64_t *ttl, kf_error *err);

typedef struct kf_etcd_keeper kf_etcd_keeper;

/* Called once, from the keeper's thread, when the lease is lost: `code` is
 * -ENOENT if the server says it is gone, -ETIMEDOUT if no keepalive got
 * through before the TTL ran out (the server has probably expired it).
 * `message` says which. After the call the keeper thread ends; the owner
 * still calls kf_etcd_lease_keeper_stop. Must not call keeper_stop itself. */
typedef void (*kf_etcd_lease_lost_fn)(int64_t lease, int code, const char *message, void *userdata);

/* kf_etcd_lease_keeper_start - start a thread that refreshes `lease` every
 * ttl_s/3 seconds (retrying sooner after a failed attempt) until stopped or
 * lost. It has its own HTTP handle, so it is not delayed by other calls on
 * `c`. On success *out is owned by the caller. */
int kf_etcd_lease_keeper_start(kf_etcd *c, int64_t lease, int64_t ttl_s, kf_etcd_lease_lost_fn cb,
                               void *userdata, kf_etcd_keeper **out, kf_error *err);

/* kf_etcd_lease_keeper_stop - stop the thread (promptly: an in-flight
 * request is aborted) and free the keeper. Does not revoke the lease.
 * NULL-safe; returns NULL. */
kf_etcd_keeper *kf_etcd_lease_keeper_stop(kf_etcd_keeper *k);

/* ---- watch ------------------------------------------------------------- */

typedef enum kf_etcd_event_type {
    KF_ETCD_EVENT_PUT = 0,
    KF_ETCD_EVENT_DELETE,
} kf_etcd_event_type;

typedef struct kf_etcd_event {
    kf_etcd_event_type type;
    kf_etcd_kv kv;      /* for DELETE: key and mod_revision (the delete's) */
    bool has_prev_kv;   /* only if the watch asked for prev_kv */
    kf_etcd_kv prev_kv;
} kf_etcd_event;

typedef enum kf_etcd_watch_kind {
    /* events[0..n_events): changes in revision order. One notification holds
     * whole revisions (a txn's changes arrive together). */
    KF_ETCD_WATCH_EVENTS = 0,
    /* The watch must start over from a full listing: kvs holds every pair in
     * the watched range at `revision`; replace your state with it. Events
     * after it follow. Sent when the server compacted history past the
     * revision we needed (compact_revision > 0), and first of all when the
     * watch was started with KF_ETCD_WATCH_FROM_SNAPSHOT. */
    KF_ETCD_WATCH_RESYNC,
    /* The stream broke (`code`, `message`); the watcher reconnects by itself
     * (with backoff, next endpoint) from revision + 1, so nothing is missed.
     * Informational. */
    KF_ETCD_WATCH_DISCONNECTED,
} kf_etcd_watch_kind;

typedef struct kf_etcd_watch_notify {
    kf_etcd_watch_kind kind;
    const kf_etcd_event *events; /* EVENTS */
    size_t n_events;
    const kf_etcd_kvs *kvs;      /* RESYNC */
    int64_t revision;         /* last revision delivered (everything up to it is known) */
    int64_t compact_revision; /* RESYNC after compaction: the server's compact revision */
    int code;                 /* DISCONNECTED */
    const char *message;      /* DISCONNECTED */
} kf_etcd_watch_notify;

/* The watch callback, run on the watch's own thread. Everything in `n` is
 * borrowed for the duration of the call (copy what you keep). It may call the
 * client's unary functions. Return 0 to go on, non-zero to end the watch
 * (the thread exits; still call kf_etcd_watch_stop). It must not call
 * kf_etcd_watch_stop on its own watch. */
typedef int (*kf_etcd_watch_fn)(const kf_etcd_watch_notify *n, void *userdata);

typedef struct kf_etcd_watch kf_etcd_watch;

/* start_revision for kf_etcd_watch_start: begin with a RESYNC listing of the
 * range, then the events after it (list+watch without a gap). */
#define KF_ETCD_WATCH_FROM_SNAPSHOT (-1)

/* kf_etcd_watch_start - watch [key, range_end) (range_end NULL = the single
 * key) from `start_revision` (0 = changes from now on; > 0 = replay history
 * from that revision; KF_ETCD_WATCH_FROM_SNAPSHOT = list first). With
 * `prev_kv` each event carries the pair as it was before. Starts a thread
 * and returns at once; errors in the stream reach `cb`, never this call
 * (which only fails on bad arguments or no memory/thread). The stream
 * requests progress notifications, so the resume point advances even when
 * nothing in the range changes. On success *out is owned by the caller. */
int kf_etcd_watch_start(kf_etcd *c, const void *key, size_t key_len, const void *range_end,
                        size_t range_end_len, int64_t start_revision, bool prev_kv,
                        kf_etcd_watch_fn cb, void *userdata, kf_etcd_watch **out, kf_error *err);

/* kf_etcd_watch_prefix - kf_etcd_watch_start over every key starting with
 * the NUL-terminated `prefix`. */
int kf_etcd_watch_prefix(kf_etcd *c, const char *prefix, int64_t start_revision, bool prev_kv,
                         kf_etcd_watch_fn cb, void *userdata, kf_etcd_watch **out, kf_error *err);

/* kf_etcd_watch_revision - the last revision the watch has delivered (all
 * changes up to it were passed to cb). Thread-safe. */
int64_t kf_etcd_watch_revision(kf_etcd_watch *w);

/* kf_etcd_watch_connected - true while the watch has a stream the server
 * confirmed (created) and it has not broken since; false before the first
 * one and while reconnecting. Thread-safe, non-blocking (readiness checks). */
bool kf_etcd_watch_connected(kf_etcd_watch *w);

/* kf_etcd_watch_stop - close the stream, join the thread (promptly: the
 * poll loop is woken, no timeout is waited out), free the watch. No callback
 * runs after it returns. NULL-safe; returns NULL. */
kf_etcd_watch *kf_etcd_watch_stop(kf_etcd_watch *w);

/* ---- leader key (lease + txn) -----------------------------------------
 *
 * A leader is whoever owns `key`. Campaigning is one txn: if the key does not
 * exist (create_revision == 0), put key = my_id attached to `lease`. The
 * lease makes leadership end by itself when the leader stops refreshing it
 * (crash, partition): etcd deletes the key at expiry. A node that lost should
 * watch the key and campaign again on DELETE. The leader must keep its lease
 * alive (kf_etcd_lease_keeper) and treat losing it as losing leadership.
 * Fencing: a leader's writes can be guarded in a txn with compare
 * CREATE(key) == the create_revision it won with. */

/* kf_etcd_campaign - try once to become leader. *won is true if `key` now
 * holds my_id on `lease` (also when it already did: campaigning again, e.g.
 * after a lost response, is safe). *leader (may be NULL) receives the current
 * leader's id, malloc'd (caller frees); *leader_rev (may be NULL) the key's
 * create_revision (the fencing token). Does not block waiting to win. */
int kf_etcd_campaign(kf_etcd *c, const char *key, const char *my_id, int64_t lease, bool *won,
                     char **leader, int64_t *leader_rev, kf_error *err);

/* kf_etcd_leader - the current leader's id (malloc'd; caller frees) and its
 * lease (may be NULL). -ENOENT if there is no leader. */
int kf_etcd_leader(kf_etcd *c, const char *key, char **value, int64_t *lease, kf_error *err);

/* kf_etcd_resign - give up leadership: delete `key` if, and only if, it
 * still holds my_id (a txn, so a successor's key is never removed).
 * *was_leader (may be NULL) says whether it did. */
int kf_etcd_resign(kf_etcd *c, const char *key, const char *my_id, bool *was_leader,
                   kf_error *err);

/* ---- maintenance ------------------------------------------------------- */

/* kf_etcd_compact - compact history up to `revision` (tests, admin tools). */
int kf_etcd_compact(kf_etcd *c, int64_t revision, kf_error *err);

#endif
