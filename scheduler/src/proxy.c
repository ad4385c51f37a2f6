/* proxy.c - every kfleet.v1.Sessions call but CreateSession, forwarded to
 * the agent of the node that holds the session, plus ListSessions (a fan
 * out to every node).
 *
 * Messages are relayed by unpacking each one with the method's descriptor
 * and packing it again for the other side (kf_call_recv / kf_grpc_* take
 * protobuf-c messages). That is a copy per message, at most
 * KF_GRPC_MAX_MESSAGE; the agent's messages are small except file chunks,
 * and unknown fields survive (protobuf-c keeps them). A raw byte-buffer
 * relay needs raw variants of the common server/client calls (next step).
 * The final status and message of the agent are relayed as they are.
 *
 * Tenancy: every call is authenticated first (auth.c); a session of
 * another tenant is answered exactly as an unknown id (NOT_FOUND "no
 * session <id>"), so a caller learns nothing of others' sessions, and
 * ListSessions keeps only the caller's sessions.
 *
 * Each handler runs on its own server worker thread and blocks on the
 * agent; a server stream (Execute, DownloadFile) notices that its client
 * went away on the next message it relays, then cancels the agent's call
 * (the agent interrupts the execution).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "lost.h"
#include "scheduler.h"
#include "service.h"

#define UNARY_TIMEOUT_MS 120000
#define STREAM_TIMEOUT_MS 0 /* none: Execute is bounded by the agent's own limits */
#define LIST_TIMEOUT_MS 10000

/* The session id of a request: field 1 (`session_id`) of every request
 * but UploadFile, whose id is in the first message's header. */
static const char *request_session_id(const ProtobufCMessage *m) {
    if (m->descriptor == &kfleet__v1__upload_file_request__descriptor) {
        const Kfleet__V1__UploadFileRequest *u = (const void *)m;
        if (u->part_case != KFLEET__V1__UPLOAD_FILE_REQUEST__PART_HEADER || !u->header)
            return NULL;
        return u->header->session_id;
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(m->descriptor, 1);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
        return NULL;
    return *(char *const *)((const char *)m + f->offset);
}

/* Finds the agent for the session named in `req`, if it belongs to
 * `tenant`. On failure the call has been finished (NOT_FOUND /
 * UNAVAILABLE / INVALID_ARGUMENT), or answered from the record of a LOST
 * session (lost.c; -ESTALE). */
static int route(kf_sched *s, kf_call *c, const kf_route *r, const kf_tenant *tenant,
                 const ProtobufCMessage *req, kf_grpc_client **cl, kf_node_addr *n) {
    const char *id = request_session_id(req);
    if (!id || !id[0]) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "session_id is required");
        return -EINVAL;
    }
    kf_session_ref ref;
    char msg[KF_ERROR_MSG_MAX];
    /* without tenancy every record is visible, whatever tenant it names */
    if (kf_session_table_lookup(s->sessions, id, &ref) < 0 ||
        (s->tenants && strcmp(ref.tenant, tenant->name) != 0)) {
        snprintf(msg, sizeof(msg), "no session %.100s", id);
        kf_call_finish(c, KF_ST_NOT_FOUND, msg);
        return -ENOENT;
    }
    if (ref.lost) {
        kf_sched_lost_answer(c, r, id, &ref);
        return -ESTALE;
    }
    if (ref.moving_to[0]) {
        snprintf(msg, sizeof(msg),
                 "session %.100s is being moved from node %s to node %s by a drain; retry in a few seconds",
                 id, ref.node, ref.moving_to);
        kf_call_finish(c, KF_ST_UNAVAILABLE, msg);
        return -EAGAIN;
    }
    if (kf_view_node(s->view, ref.node, n) < 0) {
        snprintf(msg, sizeof(msg), "session %.100s is on node %s, which is not registered (down?)", id,
                 ref.node);
        kf_call_finish(c, KF_ST_UNAVAILABLE, msg);
        return -EHOSTDOWN;
    }
    kf_error err = {0};
    if (kf_view_client(s->view, n, cl, &err) < 0) {
        kf_call_finish(c, KF_ST_UNAVAILABLE, err.msg);
        return -EHOSTDOWN;
    }
    return 0;
}

static void finish_st(kf_call *c, const kf_rpc_status *st) {
    kf_call_finish(c, (kf_status)st->code, st->message);
}

/* Unary: one request, one response. */
static void relay_unary(kf_call *c, kf_grpc_client *cl, const kf_route *r,
                                    const ProtobufCMessage *req) {
    _cleanup_pb_ ProtobufCMessage *resp = NULL;
    kf_rpc_status st = {0};
    if (kf_grpc_unary(cl, r->path, req, r->resp, kf_sched_timeout_ms(c, UNARY_TIMEOUT_MS), &resp,
                      &st) == 0)
        kf_call_reply(c, resp);
    else
        finish_st(c, &st);
}

static void relay_server_stream(kf_call *c, kf_grpc_client *cl, const kf_route *r,
                                const ProtobufCMessage *req) {
    _cleanup_grpc_call_ kf_grpc_call *up = NULL;
    kf_rpc_status st = {0};
    if (kf_grpc_server_stream_start(cl, r->path, req, r->resp,
                                    kf_sched_timeout_ms(c, STREAM_TIMEOUT_MS), &up, &st) < 0) {
        finish_st(c, &st);
        return;
    }
    for (;;) {
        _cleanup_pb_ ProtobufCMessage *m = NULL;
        int rc = kf_grpc_stream_next(up, &m, &st);
        if (rc < 0 || rc == 0) {
            finish_st(c, &st);
            return;
        }
        if (kf_call_send(c, m) < 0)
            return; /* client gone; freeing `up` cancels the agent's call */
    }
}

static void relay_client_stream(kf_call *c, kf_grpc_client *cl, const kf_route *r,
                                const ProtobufCMessage *first) {
    _cleanup_grpc_call_ kf_grpc_call *up = NULL;
    kf_rpc_status st = {0};
    if (kf_grpc_client_stream_start(cl, r->path, kf_sched_timeout_ms(c, STREAM_TIMEOUT_MS), &up,
                                    &st) < 0 ||
        kf_grpc_stream_send(up, first, &st) < 0) {
        finish_st(c, &st);
        return;
    }
    for (;;) {
        int eof = 0;
        _cleanup_pb_ ProtobufCMessage *m = kf_call_recv(c, r->req, &eof);
        if (!m && eof)
            break;
        if (!m) {
            kf_call_finish(c, KF_ST_CANCELLED, "the client stream broke (cancelled or malformed)");
            return; /* freeing `up` cancels the agent's call: it deletes the partial file */
        }
        if (kf_grpc_stream_send(up, m, &st) < 0) {
            finish_st(c, &st);
            return;
        }
    }
    _cleanup_pb_ ProtobufCMessage *resp = NULL;
    if (kf_grpc_stream_close_and_recv(up, r->resp, &resp, &st) == 0)
        kf_call_reply(c, resp);
    else
        finish_st(c, &st);
}

/* The common start of a forwarded call: authenticate, receive the request
 * and find the session's node. Returns the request (caller frees), or NULL
 * once the call has been finished with the reason. */
static ProtobufCMessage *accept_routed(kf_call *c, const kf_route *r, kf_grpc_client **cl,
                                       kf_node_addr *n) {
    kf_tenant tenant;
    if (kf_sched_authenticate(r->s, c, &tenant) < 0)
        return NULL;
    int eof = 0;
    ProtobufCMessage *req = kf_call_recv(c, r->req, &eof);
    if (!req) {
        char msg[128];
        snprintf(msg, sizeof(msg), "malformed or missing %s", r->req->short_name);
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, msg);
        return NULL;
    }
    if (route(r->s, c, r, &tenant, req, cl, n) < 0) {
        protobuf_c_message_free_unpacked(req, NULL);
        return NULL;
    }
    return req;
}

void kf_sched_proxy(kf_call *c, void *ud) {
    const kf_route *r = ud;
    kf_grpc_client *cl;
    kf_node_addr n;
    _cleanup_pb_ ProtobufCMessage *req = accept_routed(c, r, &cl, &n);
    if (!req)
        return;
    switch (r->kind) {
    case KF_ROUTE_UNARY: relay_unary(c, cl, r, req); break;
    case KF_ROUTE_SERVER_STREAM: relay_server_stream(c, cl, r, req); break;
    case KF_ROUTE_CLIENT_STREAM: relay_client_stream(c, cl, r, req); break;
    }
}

/* DeleteSession: forwarded; the record goes once the agent confirmed (or
 * no longer knows the session), before the client hears back, so its next
 * create already sees the tenant's quota freed. */
void kf_sched_delete(kf_call *c, void *ud) {
    const kf_route *r = ud;
    kf_grpc_client *cl;
    kf_node_addr n;
    _cleanup_pb_ ProtobufCMessage *req = accept_routed(c, r, &cl, &n);
    if (!req)
        return;
    _cleanup_pb_ ProtobufCMessage *resp = NULL;
    kf_rpc_status st = {0};
    int rc = kf_grpc_unary(cl, r->path, req, r->resp, kf_sched_timeout_ms(c, UNARY_TIMEOUT_MS), &resp, &st);
    if (rc == 0 || st.code == GRPC_STATUS_NOT_FOUND) {
        const char *id = request_session_id(req);
        kf_session_forget(r->s, id); /* the record must go: retried */
        /* End the pick's reservation, if the node's usage record does not
         * count the session yet (view.c); the next record drops it anyway. */
        kf_view_unreserve(r->s->view, n.node, id);
    }
    if (rc == 0)
        kf_call_reply(c, resp);
    else
        finish_st(c, &st);
}

/* Whether a session an agent listed goes into the caller's list: it must be
 * the caller's (with tenancy), and not LOST (a node back after being
 * declared lost still holds it until the leader's reconcile deletes it;
 * the LOST entry comes from the table instead). */
static bool owned_by(kf_sched *s, const Kfleet__V1__Session *sess, const kf_tenant *tenant) {
    kf_session_ref ref;
    bool known = sess->id && kf_session_table_cached(s->sessions, sess->id, &ref) == 0;
    if (known && ref.lost)
        return false;
    return !s->tenants || (known && !strcmp(ref.tenant, tenant->name));
}

/* ListSessions (v0): asks every registered node in turn and concatenates
 * the answers; paging is not supported across nodes (the request is passed
 * on as it is), and a node that does not answer is left out with a warning.
 * O(nodes) sequential calls: parallel fan-out is a next step.
 * The LOST sessions (no node holds them) come from the session table.
 * With tenancy, a session is kept only if the session table (cache only,
 * no etcd round trip per session) says it is the caller's: sessions the
 * table does not know (made on an agent directly) are nobody's. */
void kf_sched_list(kf_call *c, void *ud) {
    const kf_route *r = ud;
    kf_tenant tenant;
    if (kf_sched_authenticate(r->s, c, &tenant) < 0)
        return;
    int eof = 0;
    _cleanup_pb_ ProtobufCMessage *req = kf_call_recv(c, r->req, &eof);
    if (!req) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed ListSessionsRequest");
        return;
    }
    _cleanup_free_ kf_node_addr *nodes = NULL;
    size_t n = 0;
    if (kf_view_nodes(r->s->view, &nodes, &n) < 0) {
        kf_call_finish(c, KF_ST_INTERNAL, "out of memory");
        return;
    }
    _cleanup_free_ Kfleet__V1__ListSessionsResponse **parts = calloc(n ? n : 1, sizeof(*parts));
    if (!parts) {
        kf_call_finish(c, KF_ST_INTERNAL, "out of memory");
        return;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        kf_grpc_client *cl;
        kf_rpc_status st = {0};
        kf_error err = {0};
        ProtobufCMessage *resp = NULL;
        if (kf_view_client(r->s->view, &nodes[i], &cl, &err) < 0 ||
            kf_grpc_unary(cl, r->path, req, r->resp, kf_sched_timeout_ms(c, LIST_TIMEOUT_MS), &resp,
                          &st) < 0) {
            kf_warn("list: node %s left out: %s", nodes[i].node, st.message[0] ? st.message : err.msg);
            continue;
        }
        parts[i] = (void *)resp;
        total += parts[i]->n_sessions;
    }
    _cleanup_free_ kf_lost_session *lost = NULL;
    size_t n_lost = 0;
    if (kf_sched_lost_sessions(r->s, r->s->tenants ? tenant.name : NULL, &lost, &n_lost) < 0)
        kf_warn("list: LOST sessions left out (out of memory)");
    Kfleet__V1__ListSessionsResponse out = KFLEET__V1__LIST_SESSIONS_RESPONSE__INIT;
    _cleanup_free_ Kfleet__V1__Session **all = calloc(total + n_lost ? total + n_lost : 1, sizeof(*all));
    if (all) {
        for (size_t i = 0; i < n_lost; i++)
            all[out.n_sessions++] = &lost[i].msg;
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; parts[i] && k < parts[i]->n_sessions; k++)
                if (owned_by(r->s, parts[i]->sessions[k], &tenant))
                    all[out.n_sessions++] = parts[i]->sessions[k];
        out.sessions = all;
        kf_call_reply(c, &out.base);
    } else {
        kf_call_finish(c, KF_ST_INTERNAL, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        if (parts[i])
            protobuf_c_message_free_unpacked(&parts[i]->base, NULL);
}
