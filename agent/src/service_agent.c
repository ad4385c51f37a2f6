/* service_agent.c - kfleet.v1.Agent, the node-internal service the
 * scheduler drives a node with: StartSession (a session under an id the
 * scheduler chose) and GetNodeStats (capacity, reservations, pool,
 * membership). Served on the same listeners as kfleet.v1.Sessions; on TCP
 * it is meant to sit behind mTLS (--tls-client-ca). */
#include "service.h"

#include <string.h>

#include "kfleet/v1/agent.pb-c.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "registry.h"

#define PB_FREE(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

void kf_svc_start_session(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    Kfleet__V1__StartSessionRequest *req =
        (void *)kf_call_recv(c, &kfleet__v1__start_session_request__descriptor, &eof);
    if (!req) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed StartSessionRequest");
        return;
    }
    kf_limits want;
    kf_svc_limits_from_pb(req->limits, &want);
    kf_error err = {0};
    kf_session *s = NULL;
    int r = kf_op_create(a, req->session_id, req->tenant, &want, &s, &err);
    PB_FREE(req);
    if (r < 0) {
        kf_call_fail(c, &err);
        return;
    }
    Kfleet__V1__Session pb;
    Kfleet__V1__Limits lim;
    kf_svc_session_to_pb(a, s, &pb, &lim);
    Kfleet__V1__StartSessionResponse resp = KFLEET__V1__START_SESSION_RESPONSE__INIT;
    resp.session = &pb;
    resp.create_seq = s->create_seq;
    kf_call_reply(c, &resp.base);
    kf_session_unref(a, s);
}

void kf_svc_node_stats(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    ProtobufCMessage *m = kf_call_recv(c, &kfleet__v1__node_stats_request__descriptor, &eof);
    if (!m) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed NodeStatsRequest");
        return;
    }
    PB_FREE(m);
    kf_node_usage u;
    kf_agent_usage(a, &u);
    kf_registry_status st = {0};
    if (a->registry)
        kf_registry_status_get(a->registry, &st);
    Kfleet__V1__NodeStats ns = KFLEET__V1__NODE_STATS__INIT;
    ns.node = a->cfg.node_name;
    ns.sessions = u.sessions;
    ns.pool_ready = u.pool_ready;
    ns.pool_target = u.pool_target;
    ns.memory_capacity_bytes = a->cfg.capacity_memory_bytes;
    ns.memory_reserved_bytes = u.memory_reserved_bytes;
    ns.cpu_capacity_millis = a->cfg.capacity_cpu_millis;
    ns.cpu_reserved_millis = u.cpu_reserved_millis;
    ns.session_slots = a->cfg.max_sessions;
    ns.version = KF_VERSION;
    ns.registered = st.registered;
    ns.cordoned = st.admin.cordoned;
    ns.cordon_reason = st.admin.reason;
    ns.cordoned_by = st.admin.by;
    kf_call_reply(c, &ns.base);
}
