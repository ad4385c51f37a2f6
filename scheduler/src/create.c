/* create.c - CreateSession: check the tenant's quotas, place, commit, start.
 *
 * With a client request_id, step 2 also writes the request record, in the
 * same txn, only if absent. That compare is how a retry is recognised
 * (no read before the commit: a create costs no etcd request beyond its
 * share of a txn): a commit that lost because the request id is recorded,
 * and a create that quotas or placement would refuse, are answered from
 * the record (request_ids.c: the same session, or why not).
 *
 * 0. the caller's tenant (auth.c) must stay within its max_sessions and
 *    max_memory_bytes, counted from the session table. v0: the check and
 *    the commit are not one atomic step, so creates of one tenant racing
 *    each other can pass the quota by the number in flight (one, for a
 *    client that waits for each create);
 * 1. pick a node in the cached view (kf_view_place reserves the request
 *    there, so concurrent creates spread);
 * 2. commit /kfleet/sessions/<id> = {id, node, tenant, created_unix_ms, limits} in
 *    a txn (shared with concurrent creates: commit_batch.c) that requires the key to be absent and the node record to be
 *    the one we placed on (its mod revision): a node that re-registered or
 *    left meanwhile makes the commit fail and placement runs again; with a
 *    request id also /kfleet/requests/<tenant>/<id> -> the session, only if
 *    absent (the loser of two racing creates of one request id answers as
 *    a retry of the winner's);
 * 3. kfleet.v1.Agent/StartSession on that node with the id and tenant;
 * 4. on failure the record (with its request record, if that is this
 *    attempt's own) is deleted (never leaked) and the next node is
 *    tried once, under a fresh id (the failed node may hold the old one,
 *    e.g. a tombstone); the client gets the agent's Session, or the last
 *    error.
 *
 * Requested limits left at 0 are placed as the agents' defaults (1 GiB,
 * 1 cpu); the agent applies its own defaults and reports them in the
 * Session, and its usage record corrects the view within a second.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/node_record.h"
#include "kf/util.h"
#include "kfleet/v1/agent.pb-c.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "sched_metrics.h"
#include "scheduler.h"

#define DEFAULT_MEMORY KF_SCHED_DEFAULT_MEMORY
#define DEFAULT_CPU KF_SCHED_DEFAULT_CPU
#define COMMIT_TRIES 4     /* placements retried after a lost commit race */
#define START_TRIES 2      /* nodes tried when StartSession fails */
#define START_TIMEOUT_MS 120000

int64_t kf_sched_timeout_ms(kf_call *c, int64_t dflt_ms) {
    int64_t dl = kf_call_deadline_ms(c);
    if (dl == INT64_MAX)
        return dflt_ms;
    int64_t left = dl - kf_mono_ms();
    return left > 1 ? left : 1;
}

static void add_u64(cJSON *o, const char *name, uint64_t v) {
    if (v < 1000000000000000ULL) {
        cJSON_AddNumberToObject(o, name, (double)v);
    } else {
        char buf[24];
        snprintf(buf, sizeof(buf), "%" PRIu64, v);
        cJSON_AddStringToObject(o, name, buf);
    }
}

/* The session record (malloc'd JSON, NULL on allocation failure). */
static char *session_record(const char *id, const char *node, const char *tenant,
                            const Kfleet__V1__Limits *l) {
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddStringToObject(j, "id", id);
    cJSON_AddStringToObject(j, "node", node);
    cJSON_AddStringToObject(j, "tenant", tenant);
    add_u64(j, "created_unix_ms", (uint64_t)kf_unix_ms());
    cJSON *lim = cJSON_AddObjectToObject(j, "limits");
    if (lim && l) {
        add_u64(lim, "memory_bytes", l->memory_bytes);
        add_u64(lim, "cpu_millis", l->cpu_millis);
        add_u64(lim, "pids", l->pids);
        add_u64(lim, "exec_timeout_ms", l->exec_timeout_ms);
        add_u64(lim, "disk_bytes", l->disk_bytes);
        add_u64(lim, "disk_inodes", l->disk_inodes);
        add_u64(lim, "idle_timeout_s", l->idle_timeout_s);
        add_u64(lim, "max_lifetime_s", l->max_lifetime_s);
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* 0 if the tenant may add a session of `memory` bytes; otherwise the
 * message names the quota that would be passed. */
static int check_quota(kf_sched *s, const kf_tenant *t, uint64_t memory, char *msg, size_t size) {
    if (!s->tenants || (!t->max_sessions && !t->max_memory_bytes))
        return 0;
    uint64_t n, used;
    kf_session_table_usage(s->sessions, t->name, &n, &used);
    if (t->max_sessions && n >= t->max_sessions) {
        snprintf(msg, size, "tenant %s: quota max_sessions=%" PRIu64 " reached (%" PRIu64 " sessions)",
                 t->name, t->max_sessions, n);
        return -EDQUOT;
    }
    if (t->max_memory_bytes && (used > t->max_memory_bytes || memory > t->max_memory_bytes - used)) {
        snprintf(msg, size,
                 "tenant %s: quota max_memory_bytes=%" PRIu64 " would be exceeded (%" PRIu64
                 " bytes in use by %" PRIu64 " sessions + %" PRIu64 " requested)",
                 t->name, t->max_memory_bytes, used, n, memory);
        return -EDQUOT;
    }
    return 0;
}

/* Commits the session record, and with a request id its request record
 * (on the retention lease), in one txn shared with concurrent creates
 * (commit_batch.c); *won false when a compare failed (lost a race), and
 * then *rid_taken says whether the request id is what was taken (another
 * create of the same request committed first). */
static int commit(kf_sched *s, const char *id, const kf_node_addr *n, const char *record,
                  const kf_create_req *cr, const char *rid_record, int64_t lease, bool *won,
                  bool *rid_taken, kf_error *err) {
    char key[sizeof(KF_KEY_SESSIONS) + KF_SESSION_ID_MAX], nkey[sizeof(KF_KEY_NODES) + KF_PLACE_ID_MAX];
    snprintf(key, sizeof(key), "%s%s", KF_KEY_SESSIONS, id);
    snprintf(nkey, sizeof(nkey), "%s%s", KF_KEY_NODES, n->node);
    kf_commit_entry e = {.key = key, .node_key = nkey, .node_mod_revision = n->mod_revision,
                         .record = record, .request_key = cr ? cr->key : NULL,
                         .request_record = rid_record, .lease = lease};
    int rc = kf_commit_batch_run(s->commits, &e);
    *won = e.won;
    *rid_taken = e.rid_taken;
    if (rc < 0)
        *err = e.err;
    return rc;
}

/* Deletes the session record of a create that failed, and the request
 * record of `cr` only if it is this attempt's own (its value is
 * `rid_record`, which names this attempt's session id): a retry of the
 * request then makes a new attempt instead of finding a session that never
 * started, and a retry that failed never deletes the record of the create
 * it retried. One txn; the session id is this attempt's alone. */
static void forget(kf_sched *s, const char *id, const kf_create_req *cr, const char *rid_record) {
    char key[sizeof(KF_KEY_SESSIONS) + KF_SESSION_ID_MAX];
    snprintf(key, sizeof(key), "%s%s", KF_KEY_SESSIONS, id);
    const char *rkey = cr && rid_record ? cr->key : "";
    kf_etcd_cmp mine = {.key = rkey, .key_len = strlen(rkey), .target = KF_ETCD_CMP_VALUE,
                        .result = KF_ETCD_CMP_EQUAL, .value = rid_record,
                        .value_len = rid_record ? strlen(rid_record) : 0};
    kf_etcd_op dels[] = {
        {.type = KF_ETCD_OP_DELETE, .key = key, .key_len = strlen(key)},
        {.type = KF_ETCD_OP_DELETE, .key = rkey, .key_len = strlen(rkey)},
    };
    kf_error e = {0};
    int rc = rkey[0] ? kf_etcd_txn(s->etcd, &mine, 1, dels, 2, dels, 1, NULL, NULL, &e)
                     : kf_etcd_txn(s->etcd, NULL, 0, dels, 1, NULL, 0, NULL, NULL, &e);
    if (rc < 0)
        kf_warn("session %s: record not deleted: %s", id, e.msg);
    kf_session_table_remove(s->sessions, id);
}

/* The request id of `req`, checked: 0 with *out NULL when it has none, 0
 * with *out = cr filled, or -EINVAL with the call finished. */
static int request_id_of(kf_call *c, const Kfleet__V1__CreateSessionRequest *req, const kf_tenant *t,
                         kf_create_req *cr, kf_create_req **out) {
    *out = NULL;
    if (!req->request_id || !req->request_id[0])
        return 0;
    kf_error err = {0};
    if (kf_request_id_check(req->request_id, &err) < 0 ||
        (kf_request_fingerprint(req, cr->fp) < 0 && kf_error_set(&err, -ENOMEM, 0, "out of memory") < 0)) {
        kf_call_fail(c, &err);
        return -EINVAL;
    }
    cr->id = req->request_id;
    kf_request_key(t->name, req->request_id, cr->key, sizeof(cr->key));
    *out = cr;
    return 0;
}

void kf_sched_create(kf_call *c, void *ud) {
    kf_sched *s = ud;
    kf_tenant tenant;
    if (kf_sched_authenticate(s, c, &tenant) < 0)
        return;
    int eof;
    _cleanup_pb_ Kfleet__V1__CreateSessionRequest *req =
        (void *)kf_call_recv(c, &kfleet__v1__create_session_request__descriptor, &eof);
    if (!req) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed CreateSessionRequest");
        return;
    }
    kf_create_req cr_store, *cr;
    if (request_id_of(c, req, &tenant, &cr_store, &cr) < 0)
        return;
    const Kfleet__V1__Limits *l = req->limits;
    kf_place_request preq = {
        .memory = l && l->memory_bytes ? l->memory_bytes : DEFAULT_MEMORY,
        .cpu = l && l->cpu_millis ? l->cpu_millis : DEFAULT_CPU,
    };
    char qmsg[KF_ERROR_MSG_MAX];
    if (check_quota(s, &tenant, preq.memory, qmsg, sizeof(qmsg)) < 0) {
        /* a retry of a create that worked must not be refused */
        if (cr && kf_request_replay(s, c, cr, &tenant, req))
            return;
        kf_info("create refused: %s", qmsg);
        kf_call_finish(c, KF_ST_RESOURCE_EXHAUSTED, qmsg);
        return;
    }
    char exclude[START_TRIES][KF_PLACE_ID_MAX + 1];
    size_t n_exclude = 0;
    kf_status last_st = KF_ST_UNAVAILABLE;
    char last_msg[KF_RPC_STATUS_MSG_MAX + 128] = "no node could start the session";
    int commits = 0, lease_retries = 0;

    while (n_exclude < START_TRIES) {
        if (commits + n_exclude > 0)
            kf_sched_metrics_retry(s->metrics); /* placing again: a lost race or a failed start */
        kf_node_addr n;
        char explain[512];
        char id[KF_SESSION_ID_MAX + 1];
        kf_random_id(id, sizeof(id), "s-", 20);
        int rc = kf_view_place(s->view, &preq, exclude, n_exclude, id, &n, explain, sizeof(explain));
        if (rc < 0) {
            if (n_exclude == 0 && commits == 0 && cr && kf_request_replay(s, c, cr, &tenant, req))
                return; /* a retry of a create that worked: no room is needed */
            if (n_exclude == 0)
                kf_call_finish(c, rc == -ENOSPC ? KF_ST_RESOURCE_EXHAUSTED : KF_ST_INTERNAL, explain);
            else
                kf_call_finish(c, last_st, last_msg);
            return;
        }
        kf_error err = {0};
        int64_t lease = 0;
        _cleanup_free_ char *record = session_record(id, n.node, tenant.name, l);
        _cleanup_free_ char *rid_record = cr ? kf_request_record(id, cr->fp) : NULL;
        bool won = false, rid_taken = false;
        if (!record || (cr && !rid_record))
            rc = kf_error_set(&err, -ENOMEM, 0, "out of memory");
        else if (cr && (rc = kf_request_lease(s->requests, &lease, &err)) < 0)
            ;
        else
            rc = commit(s, id, &n, record, cr, rid_record, lease, &won, &rid_taken, &err);
        if (rc == -ENOENT && cr && lease_retries++ == 0) {
            /* etcd lost the retention lease (restarted without its data) */
            kf_view_unreserve(s->view, n.node, id);
            kf_request_lease_lost(s->requests, lease);
            continue;
        }
        if (rc < 0) {
            /* outcome unknown for a write: delete to be sure nothing leaks */
            kf_view_unreserve(s->view, n.node, id);
            forget(s, id, cr, rid_record);
            kf_call_finish(c, KF_ST_UNAVAILABLE, err.msg);
            return;
        }
        if (!won) {
            kf_sched_metrics_conflict(s->metrics);
            kf_view_unreserve(s->view, n.node, id);
            /* Another create of this request id committed first: answer
             * as a retry (0: its attempt failed meanwhile, so try again). */
            if (rid_taken && kf_request_replay(s, c, cr, &tenant, req))
                return;
            if (++commits >= COMMIT_TRIES) {
                kf_call_finish(c, KF_ST_ABORTED, "placement kept losing commit races; retry");
                return;
            }
            kf_debug("commit on %s lost a race; placing again", n.node);
            continue;
        }
        kf_session_ref ref = {.memory_bytes = preq.memory, .cpu_millis = preq.cpu};
        snprintf(ref.node, sizeof(ref.node), "%s", n.node);
        snprintf(ref.tenant, sizeof(ref.tenant), "%s", tenant.name);
        kf_session_table_put(s->sessions, id, &ref);

        Kfleet__V1__StartSessionRequest sreq = KFLEET__V1__START_SESSION_REQUEST__INIT;
        sreq.session_id = id;
        sreq.limits = (Kfleet__V1__Limits *)l;
        sreq.tenant = tenant.name;
        kf_grpc_client *cl;
        kf_rpc_status st = {0};
        _cleanup_pb_ ProtobufCMessage *resp = NULL;
        rc = kf_view_client(s->view, &n, &cl, &err);
        if (rc == 0)
            rc = kf_grpc_unary(cl, "/kfleet.v1.Agent/StartSession", &sreq.base,
                               &kfleet__v1__start_session_response__descriptor,
                               kf_sched_timeout_ms(c, START_TIMEOUT_MS), &resp, &st);
        else
            st = (kf_rpc_status){.code = GRPC_STATUS_UNAVAILABLE};
        const Kfleet__V1__StartSessionResponse *sr = (const void *)resp;
        if (rc == 0 && !sr->session) {
            rc = -EPROTO;
            st = (kf_rpc_status){.code = GRPC_STATUS_INTERNAL};
            snprintf(st.message, sizeof(st.message), "StartSession answered without a session");
        }
        if (rc == 0) {
            kf_view_started(s->view, n.node, id, sr->create_seq);
            kf_info("session %s placed on %s%s%s", id, n.node, tenant.name[0] ? " for tenant " : "",
                    tenant.name);
            kf_call_reply(c, &sr->session->base);
            return;
        }
        const char *why = st.message[0] ? st.message : err.msg;
        kf_warn("session %s: start on %s failed: %s: %s", id, n.node,
                kf_grpc_status_name(st.code), why);
        forget(s, id, cr, rid_record);
        kf_view_unreserve(s->view, n.node, id);
        last_st = (kf_status)st.code;
        snprintf(last_msg, sizeof(last_msg), "node %s: %s", n.node, why);
        /* A client error (bad limits) would fail on any node: do not retry. */
        if (st.code == GRPC_STATUS_INVALID_ARGUMENT || st.code == GRPC_STATUS_DEADLINE_EXCEEDED ||
            st.code == GRPC_STATUS_CANCELLED)
            break;
        snprintf(exclude[n_exclude++], sizeof(exclude[0]), "%s", n.node);
    }
    kf_call_finish(c, last_st, last_msg);
}
