/* etcd_internal.h - what the etcd client's source files share and nothing
 * outside them uses: the pure JSON/base64 codec (etcd_json.c, unit-tested on
 * its own), the client struct and its HTTP transport (etcd.c), used by the
 * watch (etcd_watch.c) and the lease keeper (etcd_keeper.c). */
#ifndef KF_ETCD_INTERNAL_H
#define KF_ETCD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "kf/etcd.h"

/* ---- codec (etcd_json.c): pure, no I/O, no global state ---------------- */

/* Standard base64 with padding (what etcd's gateway reads and writes).
 * encode: malloc'd NUL-terminated text, NULL if out of memory.
 * decode: strict (length a multiple of 4, padding only at the end, no
 * whitespace); *out is malloc'd with a NUL after the *out_len bytes.
 * -EBADMSG on bad input, -ENOMEM. */
char *kf_etcd_b64_encode(const void *data, size_t len);
int kf_etcd_b64_decode(const char *text, size_t text_len, char **out, size_t *out_len);

/* kf_etcd_json_int64 - the int64 field `name` of `obj`. etcd sends int64s as
 * JSON strings; they are parsed exactly (strtoll). An absent or null field
 * is 0 (the gateway omits defaults). A number, or a string that is not a
 * whole int64, is -EBADMSG. */
int kf_etcd_json_int64(const cJSON *obj, const char *name, int64_t *out);
/* kf_etcd_json_bool - absent (omitted default) and anything but `true` are
 * false. */
bool kf_etcd_json_bool(const cJSON *obj, const char *name);
/* kf_etcd_json_add_int64 / add_bytes - add a field as the gateway wants it:
 * int64 as a decimal string, bytes as base64. 0 or -ENOMEM. */
int kf_etcd_json_add_int64(cJSON *obj, const char *name, int64_t v);
int kf_etcd_json_add_bytes(cJSON *obj, const char *name, const void *data, size_t len);

/* kf_etcd_json_parse - parse a response body of `len` bytes (not necessarily
 * NUL-terminated) into an object. -EBADMSG (with a message) if it is not a
 * JSON object. */
int kf_etcd_json_parse(const char *buf, size_t len, cJSON **out, kf_error *err);

/* kf_etcd_grpc_errno - the errno a gRPC status code maps to. */
int kf_etcd_grpc_errno(int grpc_code);
/* kf_etcd_json_error - if `root` is a gateway error ({"error":"..","code":N}
 * unary, or {"error":{"grpc_code":N,"message":".."}} in a stream), fill
 * `err` (status = etcd's gRPC code) and return the negative errno; else 0.
 * *grpc_code (may be NULL) receives the code. */
int kf_etcd_json_error(const cJSON *root, int *grpc_code, kf_error *err);

/* Response decoders. On failure the output is left zeroed. */
int kf_etcd_json_kv(const cJSON *obj, kf_etcd_kv *kv, kf_error *err);
int kf_etcd_json_range_resp(const cJSON *obj, kf_etcd_kvs *out, kf_error *err);
int kf_etcd_json_txn_resp(const cJSON *root, kf_etcd_txn_result *out, kf_error *err);
/* header.revision of a response (0 if absent). */
int kf_etcd_json_header_rev(const cJSON *root, int64_t *rev);

/* Request encoders: a new cJSON object (caller deletes), or NULL if out of
 * memory. Arguments are validated by the caller, except in txn_req (whole
 * arrays: -EINVAL with a message, -ENOMEM). */
cJSON *kf_etcd_json_range_req(const void *key, size_t key_len, const void *end, size_t end_len,
                              int64_t limit, int64_t revision);
cJSON *kf_etcd_json_put_req(const void *key, size_t key_len, const void *val, size_t val_len,
                            int64_t lease);
cJSON *kf_etcd_json_delete_req(const void *key, size_t key_len, const void *end, size_t end_len);
int kf_etcd_json_txn_req(const kf_etcd_cmp *cmps, size_t n_cmps, const kf_etcd_op *success,
                         size_t n_success, const kf_etcd_op *failure, size_t n_failure,
                         cJSON **out, kf_error *err);
cJSON *kf_etcd_json_watch_req(const void *key, size_t key_len, const void *end, size_t end_len,
                              int64_t start_revision, bool prev_kv);

/* One message of a watch stream. */
typedef struct kf_etcd_watch_msg {
    int64_t header_revision;
    int64_t compact_revision;
    bool created;
    bool canceled;
    char *cancel_reason; /* malloc'd or NULL */
    kf_etcd_event *events;
    size_t n_events;
} kf_etcd_watch_msg;

/* kf_etcd_json_watch_msg - decode one line of the stream. A gateway error
 * object in the stream returns its errno (message in err); malformed input
 * -EBADMSG. On failure *m is left zeroed. */
int kf_etcd_json_watch_msg(const char *line, size_t len, kf_etcd_watch_msg *m, kf_error *err);
void kf_etcd_watch_msg_done(kf_etcd_watch_msg *m);
void kf_etcd_event_done(kf_etcd_event *ev);

/* ---- client and transport (etcd.c) ------------------------------------- */

/* Unary requests in flight at once per client (each on its own keep-alive
 * connection). */
#define KF_ETCD_HANDLES 32

struct kf_etcd {
    /* Immutable after kf_etcd_client_new. */
    char *endpoints[KF_ETCD_MAX_ENDPOINTS];
    size_t n_endpoints;
    long request_timeout_ms;
    long connect_timeout_ms;
    long watch_idle_timeout_ms; /* <= 0: none */
    size_t max_response;
    char *ca_file, *cert_file, *key_file;
    char *username, *password;
    void (*observe)(void *userdata, const char *path, int64_t duration_us, int result);
    void *observe_ud;

    /* Index of the endpoint requests go to first; moves on after a
     * connection failure. Any thread. */
    atomic_uint endpoint;

    /* KF_ETCD_HANDLES HTTP handles for unary requests, each guarded by its
     * lock (one request at a time per handle; taken before auth_lock), so
     * up to that many requests of different threads are in flight at once
     * (etcd batches concurrent writes into one WAL fsync). */
    pthread_mutex_t lock[KF_ETCD_HANDLES];
    CURL *h[KF_ETCD_HANDLES];
    atomic_uint next_handle; /* where the search for a free handle starts */

    /* Guards `token`; held across an authenticate request so concurrent
     * threads that all saw an expired token authenticate once. */
    pthread_mutex_t auth_lock;
    char *token;
};

/* Flags for kf_etcd_http. */
#define KF_ETCD_IDEMPOTENT 1u /* safe to resend after the request may have been applied */

/* kf_etcd_http - POST the JSON `req` to `path` on the client's endpoints
 * using the caller's handle `h` (so the caller serialises use of h). Fails
 * over to the next endpoint when the request was not sent (or, with
 * KF_ETCD_IDEMPOTENT, whenever the connection failed); authenticates when
 * needed and once more on an invalid-token answer. `abort_flag` (may be
 * NULL) aborts the transfer when it becomes true (-ECANCELED). On success
 * *resp is the parsed body (caller deletes). */
int kf_etcd_http(kf_etcd *c, CURL *h, const char *path, const cJSON *req, unsigned flags,
                 const atomic_bool *abort_flag, cJSON **resp, kf_error *err);

/* kf_etcd_keepalive_on - one lease keepalive through handle `h` (shared by
 * kf_etcd_lease_keepalive and the keeper thread, which has its own handle). */
int kf_etcd_keepalive_on(kf_etcd *c, CURL *h, const atomic_bool *abort_flag, int64_t id, int64_t *ttl,
                         kf_error *err);

/* kf_etcd_handle_setup - options every handle shares: TLS files, connect
 * timeout, TCP keepalive, no signals, http(s) only, no redirects. */
void kf_etcd_handle_setup(const kf_etcd *c, CURL *h);

/* kf_etcd_auth_headers - Content-Type, an empty Expect and (with auth) the
 * Authorization header with the current token, authenticating through `h`
 * if there is none. *token_out (may be NULL) receives a malloc'd copy of the
 * token used (NULL without auth) for kf_etcd_token_invalidate. */
int kf_etcd_auth_headers(kf_etcd *c, CURL *h, struct curl_slist **out, char **token_out,
                         kf_error *err);
/* kf_etcd_token_invalidate - forget `token` if it is still the current one,
 * so the next request authenticates again. */
void kf_etcd_token_invalidate(kf_etcd *c, const char *token);
/* kf_etcd_is_auth_failure - whether a gateway error means "authenticate
 * again" (invalid/expired token, or auth got enabled under us). */
bool kf_etcd_is_auth_failure(int grpc_code, const char *message);

/* kf_etcd_curl_error - fill err for a failed transfer: UNAVAILABLE (or
 * DEADLINE_EXCEEDED for timeouts), with the endpoint and curl's words. */
int kf_etcd_curl_error(CURLcode rc, const char *endpoint, const char *detail, kf_error *err);

#endif
