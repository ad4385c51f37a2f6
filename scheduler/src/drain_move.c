/* drain_move.c - moving one session off a node, for a drain or a
 * rebalance (rebalance.c): the steps and their undo.
 *
 *  1. read /kfleet/sessions/<id>; pick a target with the placement library
 *     (the source and the caller's nodes excluded; the pick reserves the
 *     session there);
 *  2. mark the record "moving_to": target (txn on its mod revision): every
 *     replica answers calls on the session with UNAVAILABLE "being moved"
 *     from then on;
 *  3. kfleet.v1.Agent/ExportSession on the source (it stops the sandbox,
 *     keeps the volume, streams the image's data extents) relayed chunk by
 *     chunk into ImportSession on the target, whose first chunk carries
 *     the notice the session's next Execute shows;
 *  4. the record names the target, "moving_to" dropped (txn);
 *  5. ReleaseSession on the source (image and record go; a tombstone says
 *     where it went).
 * Undo, for a failure in 2-4: delete any half-made copy on the target,
 * ResumeSession on the source (same volume, new kernel, a notice saying
 * the move failed) unless the source refused the export before stopping
 * anything (an executing session), drop "moving_to". A record found with "moving_to" (the
 * scheduler that made the move died in the middle) is undone the same way
 * before moving again.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drain.h"
#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "kfleet/v1/agent.pb-c.h"
#include "kfleet/v1/sessions.pb-c.h"

#define MOVE_TIMEOUT_MS 300000 /* one session's export + import, at most */
#define CALL_TIMEOUT_MS 60000
#define RECORD_TRIES 4

/* The session record of id: its JSON (parsed), what it says, its revision. */
typedef struct rec {
    char key[sizeof(KF_KEY_SESSIONS) + KF_SESSION_ID_MAX];
    cJSON *json;
    kf_session_ref ref;
    int64_t rev;
} rec;

static int rec_read(kf_sched *s, const char *id, rec *r, kf_error *err) {
    snprintf(r->key, sizeof(r->key), "%s%s", KF_KEY_SESSIONS, id);
    cJSON_Delete(r->json);
    r->json = NULL;
    kf_etcd_kv kv = {0};
    int rc = kf_etcd_get(s->etcd, r->key, strlen(r->key), &kv, err);
    if (rc < 0)
        return rc;
    r->rev = kv.mod_revision;
    rc = kf_session_parse_record(kv.value, kv.value_len, &r->ref);
    if (rc == 0)
        r->json = cJSON_ParseWithLength(kv.value, kv.value_len);
    kf_etcd_kv_done(&kv);
    if (rc < 0 || !r->json)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "session record %s is malformed", id);
    return 0;
}

/* Rewrites the record with node = `node` and moving_to = `moving` ("" =
 * none) if it is still at r->rev. *won false: it changed meanwhile. */
static int rec_write(kf_sched *s, rec *r, const char *node, const char *moving, bool *won, kf_error *err) {
    cJSON_DeleteItemFromObjectCaseSensitive(r->json, "node");
    cJSON_DeleteItemFromObjectCaseSensitive(r->json, "moving_to");
    if (!cJSON_AddStringToObject(r->json, "node", node) ||
        (moving[0] && !cJSON_AddStringToObject(r->json, "moving_to", moving)))
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    _cleanup_free_ char *v = cJSON_PrintUnformatted(r->json);
    if (!v)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    kf_etcd_cmp cmp = {.key = r->key, .key_len = strlen(r->key), .target = KF_ETCD_CMP_MOD,
                       .result = KF_ETCD_CMP_EQUAL, .number = r->rev};
    kf_etcd_op op = {.type = KF_ETCD_OP_PUT, .key = r->key, .key_len = strlen(r->key), .value = v,
                     .value_len = strlen(v)};
    kf_etcd_txn_result res = {0};
    /* fenced: a deposed leader's half-done move is left for the next one to undo */
    int rc = kf_leader_txn_result(s->leader, &cmp, 1, &op, 1, won, &res, err);
    if (rc == 0 && *won) {
        r->rev = res.revision;
        snprintf(r->ref.node, sizeof(r->ref.node), "%s", node);
        snprintf(r->ref.moving_to, sizeof(r->ref.moving_to), "%s", moving);
        kf_session_table_put(s->sessions, r->key + strlen(KF_KEY_SESSIONS), &r->ref);
    }
    kf_etcd_txn_result_done(&res);
    return rc;
}

/* rec_write, reading the record again after a lost race (only moves and
 * deletes write a session record; a delete makes this -ENOENT). */
static int rec_set(kf_sched *s, rec *r, const char *id, const char *node, const char *moving, kf_error *err) {
    for (int i = 0; i < RECORD_TRIES; i++) {
        bool won = false;
        int rc = rec_write(s, r, node, moving, &won, err);
        if (rc < 0 || won)
            return rc;
        if ((rc = rec_read(s, id, r, err)) < 0)
            return rc;
    }
    return kf_error_set(err, -EAGAIN, KF_ST_ABORTED, "session record %s kept changing", id);
}

static int client_of(kf_sched *s, const char *node, kf_grpc_client **cl, kf_error *err) {
    kf_node_addr a;
    if (kf_view_node(s->view, node, &a) < 0)
        return kf_error_set(err, -EHOSTDOWN, KF_ST_UNAVAILABLE, "node %s is not registered", node);
    return kf_view_client(s->view, &a, cl, err);
}

/* A unary call on `node`'s agent; 0 or an error naming the call. */
static int agent_call(kf_sched *s, const char *node, const char *method, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, kf_error *err) {
    kf_grpc_client *cl;
    int rc = client_of(s, node, &cl, err);
    if (rc < 0)
        return rc;
    _cleanup_pb_ ProtobufCMessage *resp = NULL;
    kf_rpc_status st = {0};
    rc = kf_grpc_unary(cl, method, req, resp_desc, CALL_TIMEOUT_MS, &resp, &st);
    if (rc < 0)
        return kf_error_set(err, rc, (kf_status)st.code, "%s on %s: %s", strrchr(method, '/') + 1, node,
                            st.message[0] ? st.message : kf_grpc_status_name(st.code));
    return 0;
}

static void delete_on(kf_sched *s, const char *node, const char *id) {
    Kfleet__V1__DeleteSessionRequest req = KFLEET__V1__DELETE_SESSION_REQUEST__INIT;
    req.session_id = (char *)id;
    kf_error e = {0};
    if (agent_call(s, node, "/kfleet.v1.Sessions/DeleteSession", &req.base,
                   &kfleet__v1__delete_session_response__descriptor, &e) < 0 &&
        e.status != KF_ST_NOT_FOUND)
        kf_warn("session %s: no delete on %s: %s", id, node, e.msg);
}

/* Undo: the session runs on `from` again, the record says so. `resume`
 * false: the source refused the export before stopping anything (the
 * session is executing), so it runs as it was; a ResumeSession would only
 * queue behind its execution. */
static void undo(kf_sched *s, rec *r, const char *id, const char *from, const char *to, const char *why,
                 bool resume) {
    if (to[0])
        delete_on(s, to, id);
    kf_error e = {0};
    if (resume) {
        Kfleet__V1__ResumeSessionRequest req = KFLEET__V1__RESUME_SESSION_REQUEST__INIT;
        char notice[512];
        snprintf(notice, sizeof(notice),
                 "kernel restarted: moving this session off node %s failed (%.300s); files in /mnt/data "
                 "were kept, in-memory state was not",
                 from, why);
        req.session_id = (char *)id;
        req.notice = notice;
        if (agent_call(s, from, "/kfleet.v1.Agent/ResumeSession", &req.base, &kfleet__v1__session__descriptor,
                       &e) < 0 &&
            e.status != KF_ST_FAILED_PRECONDITION)
            kf_warn("session %s: not resumed on %s: %s", id, from, e.msg);
    }
    kf_error_clear(&e);
    if (rec_set(s, r, id, from, "", &e) < 0)
        kf_warn("session %s: record still says it is moving: %s", id, e.msg);
}

/* Steps 3: ExportSession on `from` relayed into ImportSession on `to`.
 * *refused: the source answered FAILED_PRECONDITION before sending
 * anything (the session is executing; nothing was stopped). */
static int copy(kf_sched *s, const char *id, const char *from, const char *to, const char *cause,
                bool *refused, kf_error *err) {
    *refused = false;
    kf_grpc_client *src, *dst;
    int rc;
    if ((rc = client_of(s, from, &src, err)) < 0 || (rc = client_of(s, to, &dst, err)) < 0)
        return rc;
    char reason[160], notice[512];
    snprintf(reason, sizeof(reason), "%s", cause);
    snprintf(notice, sizeof(notice),
             "kernel restarted by %s (the session moved to node %s): files in /mnt/data "
             "were kept, in-memory state was not",
             cause, to);
    Kfleet__V1__ExportSessionRequest ereq = KFLEET__V1__EXPORT_SESSION_REQUEST__INIT;
    ereq.session_id = (char *)id;
    ereq.reason = reason;
    _cleanup_grpc_call_ kf_grpc_call *ex = NULL, *im = NULL;
    kf_rpc_status st = {0};
    if (kf_grpc_server_stream_start(src, "/kfleet.v1.Agent/ExportSession", &ereq.base,
                                    &kfleet__v1__export_chunk__descriptor, MOVE_TIMEOUT_MS, &ex, &st) < 0 ||
        kf_grpc_client_stream_start(dst, "/kfleet.v1.Agent/ImportSession", MOVE_TIMEOUT_MS, &im, &st) < 0)
        goto rpc_fail;
    for (bool first = true;; first = false) {
        _cleanup_pb_ ProtobufCMessage *m = NULL;
        rc = kf_grpc_stream_next(ex, &m, &st);
        if (rc < 0) {
            *refused = first && st.code == GRPC_STATUS_FAILED_PRECONDITION;
            goto rpc_fail;
        }
        if (rc == 0)
            break;
        const Kfleet__V1__ExportChunk *ec = (const void *)m;
        if (first && !ec->header)
            return kf_error_set(err, -EPROTO, KF_ST_INTERNAL, "ExportSession on %s: no header first", from);
        Kfleet__V1__ImportChunk ic = KFLEET__V1__IMPORT_CHUNK__INIT;
        if (first) {
            ic.header = ec->header;
            ic.notice = notice;
        }
        ic.offset = ec->offset;
        ic.data = ec->data;
        if (kf_grpc_stream_send(im, &ic.base, &st) < 0)
            goto rpc_fail;
    }
    if (st.code != GRPC_STATUS_OK)
        goto rpc_fail;
    {
        _cleanup_pb_ ProtobufCMessage *resp = NULL;
        if (kf_grpc_stream_close_and_recv(im, &kfleet__v1__session__descriptor, &resp, &st) < 0)
            goto rpc_fail;
    }
    return 0;
rpc_fail:
    return kf_error_set(err, -EIO, (kf_status)st.code, "copying from %s to %s: %s", from, to,
                        st.message[0] ? st.message : kf_grpc_status_name(st.code));
}

int kf_drain_move(kf_sched *s, const char *id, const char *from, char *target, size_t target_size,
                  kf_error *err) {
    char cause[KF_PLACE_ID_MAX + 32];
    snprintf(cause, sizeof(cause), "a drain of node %s", from);
    return kf_session_move(s, id, from, NULL, 0, cause, target, target_size, err);
}

int kf_session_move(kf_sched *s, const char *id, const char *from, char (*avoid)[KF_PLACE_ID_MAX + 1],
                    size_t n_avoid, const char *cause, char *target, size_t target_size, kf_error *err) {
    rec r = {0};
    _cleanup_free_ char(*exclude)[KF_PLACE_ID_MAX + 1] = NULL;
    int rc = rec_read(s, id, &r, err);
    if (rc < 0)
        goto out;
    if (r.ref.moving_to[0]) { /* a move interrupted by a scheduler that died */
        kf_info("session %s: undoing an interrupted move to %s", id, r.ref.moving_to);
        char to[KF_PLACE_ID_MAX + 1];
        snprintf(to, sizeof(to), "%s", r.ref.moving_to);
        undo(s, &r, id, r.ref.node, to, "the scheduler moving it stopped", true);
    }
    if (strcmp(r.ref.node, from) != 0) { /* moved already */
        snprintf(target, target_size, "%s", r.ref.node);
        goto out;
    }
    kf_place_request preq = {.memory = r.ref.memory_bytes, .cpu = r.ref.cpu_millis};
    exclude = calloc(n_avoid + 1, sizeof(*exclude));
    if (!exclude) {
        rc = kf_error_set(err, -ENOMEM, 0, "out of memory");
        goto out;
    }
    snprintf(exclude[0], sizeof(exclude[0]), "%s", from);
    if (n_avoid)
        memcpy(exclude + 1, avoid, n_avoid * sizeof(*exclude));
    kf_node_addr dst;
    char explain[512];
    if ((rc = kf_view_place(s->view, &preq, exclude, n_avoid + 1, id, &dst, explain, sizeof(explain))) < 0) {
        kf_error_set(err, rc, KF_ST_RESOURCE_EXHAUSTED, "no node can take it: %s", explain);
        goto out;
    }
    snprintf(target, target_size, "%s", dst.node);
    if ((rc = rec_set(s, &r, id, from, dst.node, err)) < 0) {
        kf_view_unreserve(s->view, dst.node, id);
        goto out;
    }
    bool refused = false;
    if ((rc = copy(s, id, from, dst.node, cause, &refused, err)) < 0 ||
        (rc = rec_set(s, &r, id, dst.node, "", err)) < 0) {
        kf_view_unreserve(s->view, dst.node, id);
        undo(s, &r, id, from, dst.node, err->msg, !refused);
        goto out;
    }
    kf_view_started(s->view, dst.node, id, 0);
    Kfleet__V1__ReleaseSessionRequest rel = KFLEET__V1__RELEASE_SESSION_REQUEST__INIT;
    rel.session_id = (char *)id;
    rel.moved_to = dst.node;
    kf_error e = {0};
    if (agent_call(s, from, "/kfleet.v1.Agent/ReleaseSession", &rel.base,
                   &kfleet__v1__release_session_response__descriptor, &e) < 0)
        kf_warn("session %s moved to %s, but %s kept its copy: %s", id, dst.node, from, e.msg);
    kf_info("session %s moved from %s to %s", id, from, dst.node);
out:
    cJSON_Delete(r.json);
    return rc;
}

int kf_drain_delete(kf_sched *s, const char *id, const char *from, kf_error *err) {
    Kfleet__V1__DeleteSessionRequest req = KFLEET__V1__DELETE_SESSION_REQUEST__INIT;
    req.session_id = (char *)id;
    int rc = agent_call(s, from, "/kfleet.v1.Sessions/DeleteSession", &req.base,
                        &kfleet__v1__delete_session_response__descriptor, err);
    if (rc < 0 && err->status != KF_ST_NOT_FOUND)
        return rc;
    kf_error_clear(err);
    char key[sizeof(KF_KEY_SESSIONS) + KF_SESSION_ID_MAX];
    snprintf(key, sizeof(key), "%s%s", KF_KEY_SESSIONS, id);
    rc = kf_etcd_delete(s->etcd, key, strlen(key), NULL, 0, NULL, NULL, err);
    kf_session_table_remove(s->sessions, id);
    kf_view_unreserve(s->view, from, id);
    return rc;
}
