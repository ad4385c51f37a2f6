/* request_ids.c - idempotent CreateSession: a client's `request_id` ->
 * the session it made, kept in etcd so every scheduler replica, and a
 * replica started after a crash, answers a retried create the same way.
 *
 * Owns: the request records /kfleet/requests/<tenant>/<encoded request id>
 * = {"session_id", "fingerprint", "created_unix_ms"} and the retention
 * lease they are attached to. create.c writes a record in the same txn as
 * the session record (guarded by create_revision == 0, so of two racing
 * creates exactly one commits) and deletes both together when the start
 * fails; this file checks request ids, builds keys and records, and
 * answers a create whose request id is already known (kf_request_replay).
 *
 * Retention: one lease of KF_REQUEST_LEASE_TTL_S (25 h) per scheduler,
 * shared by every record it writes and replaced by a fresh one every hour,
 * so a record is kept between 24 and 25 hours after its create, and costs
 * no etcd write beyond the create's own txn (one lease grant an hour).
 * Deleting a session does not delete its request record: within the
 * retention a retry is told the session is gone instead of making another.
 *
 * The request id check and the fingerprint (SHA-256 of the request's
 * limits and labels, so "the same request id with different limits" is
 * told apart from a retry without storing the request) are common's
 * (kf/request_id.h): a lone agent answers the same way.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/request_id.h"
#include "kf/util.h"
#include "kfleet/v1/agent.pb-c.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "scheduler.h"

#define LEASE_ROTATE_MS (3600LL * 1000)
#define REPLAY_POLL_MIN_MS 10
#define REPLAY_POLL_MAX_MS 200
#define AGENT_CALL_TIMEOUT_MS 10000

struct kf_request_ids {
    kf_etcd *etcd;
    pthread_mutex_t mu;
    int64_t lease;      /* under mu; 0 = none yet */
    int64_t granted_ms; /* under mu; kf_mono_ms() of the grant */
};

int kf_request_ids_new(kf_etcd *etcd, kf_request_ids **out) {
    kf_request_ids *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->etcd = etcd;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return 0;
}

kf_request_ids *kf_request_ids_free(kf_request_ids *r) {
    if (!r)
        return NULL;
    pthread_mutex_destroy(&r->mu);
    free(r);
    return NULL;
}

int kf_request_lease(kf_request_ids *r, int64_t *lease, kf_error *err) {
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    if (!r->lease || kf_mono_ms() - r->granted_ms >= LEASE_ROTATE_MS) {
        /* Granting under the lock: at most once an hour, and concurrent
         * creates should share the lease rather than each grant one. */
        int64_t id;
        rc = kf_etcd_lease_grant(r->etcd, KF_REQUEST_LEASE_TTL_S, &id, NULL, err);
        if (rc == 0) {
            r->lease = id;
            r->granted_ms = kf_mono_ms();
        }
    }
    *lease = r->lease;
    pthread_mutex_unlock(&r->mu);
    return rc < 0 ? kf_error_wrap(err, "request-id retention lease") : 0;
}

void kf_request_lease_lost(kf_request_ids *r, int64_t lease) {
    pthread_mutex_lock(&r->mu);
    if (r->lease == lease)
        r->lease = 0;
    pthread_mutex_unlock(&r->mu);
}

/* Key bytes: [A-Za-z0-9._~-] as they are, every other byte as %XX, so a
 * request id holding '/' cannot reach outside its tenant's prefix. */
static bool plain(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '~' || ch == '-';
}

void kf_request_key(const char *tenant, const char *rid, char *out, size_t size) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = (size_t)snprintf(out, size, "%s%s/", KF_KEY_REQUESTS, tenant);
    for (const unsigned char *p = (const unsigned char *)rid; *p && o + 4 < size; p++) {
        if (plain(*p)) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o < size ? o : size - 1] = '\0';
}

char *kf_request_record(const char *session_id, const char *fp) {
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddStringToObject(j, "session_id", session_id);
    cJSON_AddStringToObject(j, "fingerprint", fp);
    cJSON_AddNumberToObject(j, "created_unix_ms", (double)kf_unix_ms());
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* What a request record says. -EBADMSG if it is malformed. */
typedef struct request_rec {
    char session_id[KF_SESSION_ID_MAX + 1];
    char fp[KF_REQUEST_FP_LEN + 1];
    int64_t created_unix_ms;
} request_rec;

static int parse_rec(const char *v, size_t len, request_rec *out) {
    cJSON *j = cJSON_ParseWithLength(v, len);
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(j, "session_id");
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(j, "fingerprint");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "created_unix_ms");
    int rc = -EBADMSG;
    if (cJSON_IsString(sid) && sid->valuestring[0] && strlen(sid->valuestring) <= KF_SESSION_ID_MAX &&
        cJSON_IsString(fp) && strlen(fp->valuestring) <= KF_REQUEST_FP_LEN && cJSON_IsNumber(t)) {
        snprintf(out->session_id, sizeof(out->session_id), "%s", sid->valuestring);
        snprintf(out->fp, sizeof(out->fp), "%s", fp->valuestring);
        out->created_unix_ms = (int64_t)t->valuedouble;
        rc = 0;
    }
    cJSON_Delete(j);
    return rc;
}

/* Reads the request record: 0 found, -ENOENT absent, other < 0 error. */
static int read_rec(kf_sched *s, const kf_create_req *cr, request_rec *out, kf_error *err) {
    kf_etcd_kv kv = {0};
    int rc = kf_etcd_get(s->etcd, cr->key, strlen(cr->key), &kv, err);
    if (rc < 0)
        return rc;
    rc = parse_rec(kv.value, kv.value_len, out);
    kf_etcd_kv_done(&kv);
    if (rc < 0)
        return kf_error_set(err, rc, KF_ST_INTERNAL, "malformed request record %s", cr->key);
    return 0;
}

/* One unary call to the agent holding `node`, answered with a message of
 * `resp_desc`; resp as kf_grpc_unary. */
static int agent_call(kf_sched *s, const kf_node_addr *n, const char *method,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                      int64_t timeout_ms, ProtobufCMessage **resp, kf_rpc_status *st) {
    kf_grpc_client *cl;
    kf_error e = {0};
    if (kf_view_client(s->view, n, &cl, &e) < 0) {
        st->code = GRPC_STATUS_UNAVAILABLE;
        snprintf(st->message, sizeof(st->message), "%s", e.msg);
        return -EHOSTDOWN;
    }
    return kf_grpc_unary(cl, method, req, resp_desc, timeout_ms, resp, st);
}

/* Finishes the call with status st and a formatted message; returns 1
 * (kf_request_replay's "answered"). */
static int answer(kf_call *c, kf_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int answer(kf_call *c, kf_status st, const char *fmt, ...) {
    char msg[KF_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kf_call_finish(c, st, msg);
    return 1;
}

int kf_request_replay(kf_sched *s, kf_call *c, const kf_create_req *cr, const kf_tenant *tenant,
                      const Kfleet__V1__CreateSessionRequest *req) {
    int64_t deadline = kf_mono_ms() + kf_sched_timeout_ms(c, KF_REQUEST_WAIT_MS);
    if (deadline > kf_mono_ms() + KF_REQUEST_WAIT_MS)
        deadline = kf_mono_ms() + KF_REQUEST_WAIT_MS;
    int64_t pause = REPLAY_POLL_MIN_MS;
    bool took_over = false; /* a StartSession of ours met ALREADY_EXISTS: no second one */
    for (;;) {
        request_rec rec;
        kf_error err = {0};
        int rc = read_rec(s, cr, &rec, &err);
        if (rc == -ENOENT)
            return 0; /* unknown (or the earlier attempt failed and was cleaned up): create */
        if (rc < 0) {
            kf_call_fail(c, &err);
            return 1;
        }
        if (strcmp(rec.fp, cr->fp) != 0) {
            kf_request_err_conflict(&err, cr->id, rec.session_id);
            kf_call_fail(c, &err);
            return 1;
        }
        kf_session_ref ref;
        kf_node_addr n;
        if (kf_session_table_lookup(s->sessions, rec.session_id, &ref) < 0) {
            /* The record and the session go together when a start fails, so
             * the request record still being there means it was deleted. */
            kf_error_clear(&err);
            request_rec again;
            int rr = read_rec(s, cr, &again, &err);
            if (rr == -ENOENT || (rr == 0 && strcmp(again.session_id, rec.session_id) != 0))
                continue;
            kf_request_err_gone(&err, cr->id, rec.session_id);
            kf_call_fail(c, &err);
            return 1;
        }
        if (kf_view_node(s->view, ref.node, &n) < 0)
            return answer(c, KF_ST_UNAVAILABLE,
                          "session %s (request id %.128s) is on node %s, which is not registered (down?)",
                          rec.session_id, cr->id, ref.node);
        Kfleet__V1__GetSessionRequest g = KFLEET__V1__GET_SESSION_REQUEST__INIT;
        g.session_id = rec.session_id;
        _cleanup_pb_ ProtobufCMessage *resp = NULL;
        kf_rpc_status st = {0};
        rc = agent_call(s, &n, "/kfleet.v1.Sessions/GetSession", &g.base, &kfleet__v1__session__descriptor,
                        AGENT_CALL_TIMEOUT_MS, &resp, &st);
        if (rc == 0) {
            kf_info("create with request id %.128s: session %s (made earlier)", cr->id, rec.session_id);
            kf_call_reply(c, resp);
            return 1;
        }
        if (st.code != GRPC_STATUS_NOT_FOUND || took_over) {
            kf_call_finish(c, (kf_status)st.code, st.message);
            return 1;
        }
        /* Not on the node yet: the create that committed it is still
         * starting it. Past KF_REQUEST_TAKEOVER_MS that create has given
         * up on its own StartSession (its deadline is shorter), so its
         * scheduler died between commit and start: start it here. */
        if (kf_unix_ms() - rec.created_unix_ms > KF_REQUEST_TAKEOVER_MS) {
            Kfleet__V1__StartSessionRequest sreq = KFLEET__V1__START_SESSION_REQUEST__INIT;
            sreq.session_id = rec.session_id;
            sreq.limits = req->limits;
            sreq.tenant = (char *)tenant->name;
            kf_info("request id %.128s: session %s committed but never started; starting it on %s",
                    cr->id, rec.session_id, n.node);
            _cleanup_pb_ ProtobufCMessage *sresp = NULL;
            rc = agent_call(s, &n, "/kfleet.v1.Agent/StartSession", &sreq.base,
                            &kfleet__v1__start_session_response__descriptor,
                            kf_sched_timeout_ms(c, KF_REQUEST_WAIT_MS), &sresp, &st);
            const Kfleet__V1__StartSessionResponse *sr = (const void *)sresp;
            if (rc == 0 && sr->session) {
                kf_view_started(s->view, n.node, rec.session_id, sr->create_seq);
                kf_call_reply(c, &sr->session->base);
                return 1;
            }
            if (rc == 0) {
                kf_call_finish(c, KF_ST_INTERNAL, "StartSession answered without a session");
                return 1;
            }
            if (st.code != GRPC_STATUS_ALREADY_EXISTS) {
                kf_call_finish(c, (kf_status)st.code, st.message);
                return 1;
            }
            took_over = true;
            continue; /* started meanwhile by someone else: GetSession finds it */
        }
        if (kf_mono_ms() + pause > deadline)
            return answer(c, KF_ST_UNAVAILABLE,
                          "session %s (request id %.128s) is still being started by another create; retry",
                          rec.session_id, cr->id);
        if (kf_call_cancelled(c))
            return answer(c, KF_ST_CANCELLED, "cancelled while waiting for session %s to start",
                          rec.session_id);
        usleep((useconds_t)pause * 1000);
        pause = pause * 2 > REPLAY_POLL_MAX_MS ? REPLAY_POLL_MAX_MS : pause * 2;
    }
}
