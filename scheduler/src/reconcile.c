/* reconcile.c - the leader's reconcile loop: session records against what
 * each agent really holds, so neither side leaks and nothing LOST comes back.
 *
 * A node is reconciled when it registers (first seen by this leader, or
 * its node record changed: a restarted agent, a node back after a cut
 * link) and otherwise every --reconcile-interval. One pass over a node:
 *
 *  1. ListSessions on the agent (kfleet.v1.Sessions on its advertised
 *     address), THEN one range of /kfleet/sessions/. In that order: a
 *     create commits its record before StartSession, so every session in
 *     the listing had its record committed before the range is read;
 *  2. a session the agent holds whose record is LOST or missing is deleted
 *     on the agent (DeleteSession). The leader does it, not the agent, so
 *     agents need no knowledge of records and one place decides. A missing
 *     record means the session was given up: a LOST session the client
 *     already deleted, a create that failed after the start went through,
 *     or a session made on the agent directly, bypassing the scheduler
 *     (not supported in a cluster with a scheduler);
 *  3. a live record on this node whose session the agent did not list is
 *     checked with GetSession on the agent: gone for a known reason
 *     (FAILED_PRECONDITION: expired, deleted, lost in an agent restart) ->
 *     the record is deleted; unknown to the agent (NOT_FOUND) -> deleted
 *     once the record is older than a create can take (START_WINDOW_MS),
 *     so an in-flight create is never undone. Record deletes are fenced
 *     txns that also require the record unchanged.
 *
 * A node that does not answer is tried again after RETRY_MS. Runs on the
 * leader thread only; `kf_reconcile` belongs to it. Cost per pass: one
 * ListSessions per node due, one range of every record (O(S)), lookups by
 * binary search (the range comes sorted by key).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "scheduler.h"

#define AGENT_TIMEOUT_MS 3000 /* a node that does not answer delays the pass (and node loss) this long */
#define RETRY_MS 5000
#define START_WINDOW_MS (130 * 1000) /* create.c's StartSession timeout + margin */

typedef struct seen_node {
    char name[KF_PLACE_ID_MAX + 1];
    int64_t mod_rev;  /* of its node record at the last pass */
    int64_t next_ms;  /* monotonic: the next periodic pass */
} seen_node;

struct kf_reconcile {
    seen_node *seen;
    size_t n;
};

kf_reconcile *kf_reconcile_new(void) {
    return calloc(1, sizeof(kf_reconcile));
}

kf_reconcile *kf_reconcile_free(kf_reconcile *rc) {
    if (rc) {
        free(rc->seen);
        free(rc);
    }
    return NULL;
}

static seen_node *find_seen(kf_reconcile *rc, const char *name) {
    for (size_t i = 0; i < rc->n; i++)
        if (!strcmp(rc->seen[i].name, name))
            return &rc->seen[i];
    return NULL;
}

static int cmp_kv_key(const void *key, const void *elem) {
    return strcmp(key, ((const kf_etcd_kv *)elem)->key);
}

static const kf_etcd_kv *find_record(const kf_etcd_kvs *kvs, const char *id) {
    char key[KF_SESSION_KEY_MAX];
    kf_session_key(key, id);
    return bsearch(key, kvs->kvs, kvs->n, sizeof(*kvs->kvs), cmp_kv_key);
}

static bool listed(const Kfleet__V1__ListSessionsResponse *l, const char *id) {
    for (size_t i = 0; i < l->n_sessions; i++) /* O(n) per record: nodes hold <= ~1000 */
        if (l->sessions[i]->id && !strcmp(l->sessions[i]->id, id))
            return true;
    return false;
}

static void delete_on_agent(kf_sched *s, kf_grpc_client *cl, const char *node, const char *id,
                            const char *why) {
    Kfleet__V1__DeleteSessionRequest req = KFLEET__V1__DELETE_SESSION_REQUEST__INIT;
    req.session_id = (char *)id;
    _cleanup_pb_ ProtobufCMessage *resp = NULL;
    kf_rpc_status st = {0};
    if (!kf_leader_is(s->leader))
        return;
    if (kf_grpc_unary(cl, "/kfleet.v1.Sessions/DeleteSession", &req.base,
                      &kfleet__v1__delete_session_response__descriptor, AGENT_TIMEOUT_MS, &resp, &st) == 0 ||
        st.code == GRPC_STATUS_NOT_FOUND)
        kf_warn("reconcile: session %s deleted on node %s: %s", id, node, why);
    else
        kf_warn("reconcile: session %s on node %s not deleted (%s): %s: %s", id, node, why,
                kf_grpc_status_name(st.code), st.message);
}

static void delete_record(kf_sched *s, const kf_etcd_kv *kv, const char *why) {
    kf_etcd_cmp cmp = {.key = kv->key, .key_len = kv->key_len, .target = KF_ETCD_CMP_MOD,
                       .result = KF_ETCD_CMP_EQUAL, .number = kv->mod_revision};
    kf_etcd_op del = {.type = KF_ETCD_OP_DELETE, .key = kv->key, .key_len = kv->key_len};
    kf_error err = {0};
    bool ok = false;
    if (kf_leader_txn(s->leader, &cmp, 1, &del, 1, &ok, &err) < 0)
        kf_warn("reconcile: record %s not deleted: %s", kv->key, err.msg);
    else if (ok)
        kf_info("reconcile: record %s deleted: %s", kv->key, why);
}

/* Step 3 for one record whose session the agent did not list. */
static void check_missing(kf_sched *s, kf_grpc_client *cl, const char *node, const kf_etcd_kv *kv,
                          const kf_session_ref *ref) {
    const char *id = kv->key + strlen(KF_KEY_SESSIONS);
    Kfleet__V1__GetSessionRequest req = KFLEET__V1__GET_SESSION_REQUEST__INIT;
    req.session_id = (char *)id;
    _cleanup_pb_ ProtobufCMessage *resp = NULL;
    kf_rpc_status st = {0};
    if (kf_grpc_unary(cl, "/kfleet.v1.Sessions/GetSession", &req.base, &kfleet__v1__session__descriptor,
                      AGENT_TIMEOUT_MS, &resp, &st) == 0)
        return; /* started after the listing */
    char why[KF_RPC_STATUS_MSG_MAX + KF_PLACE_ID_MAX + 32];
    if (st.code == GRPC_STATUS_FAILED_PRECONDITION) {
        snprintf(why, sizeof(why), "node %s says: %s", node, st.message);
        delete_record(s, kv, why);
    } else if (st.code == GRPC_STATUS_NOT_FOUND && kf_unix_ms() - ref->created_unix_ms > START_WINDOW_MS) {
        snprintf(why, sizeof(why), "node %s does not know the session", node);
        delete_record(s, kv, why);
    }
}

static void reconcile_node(kf_sched *s, const kf_node_addr *n, kf_grpc_client *cl,
                           const Kfleet__V1__ListSessionsResponse *l, const kf_etcd_kvs *kvs) {
    for (size_t i = 0; i < l->n_sessions && kf_leader_is(s->leader); i++) {
        const char *id = l->sessions[i]->id;
        if (!id || !id[0])
            continue;
        const kf_etcd_kv *kv = find_record(kvs, id);
        kf_session_ref ref;
        if (!kv)
            delete_on_agent(s, cl, n->node, id, "it has no session record");
        else if (kf_session_parse_record(kv->value, kv->value_len, &ref) == 0 && ref.lost)
            delete_on_agent(s, cl, n->node, id, "its record says LOST (the node was declared lost)");
    }
    for (size_t i = 0; i < kvs->n && kf_leader_is(s->leader); i++) {
        kf_session_ref ref;
        const kf_etcd_kv *kv = &kvs->kvs[i];
        if (kf_session_parse_record(kv->value, kv->value_len, &ref) < 0 || ref.lost ||
            strcmp(ref.node, n->node) || listed(l, kv->key + strlen(KF_KEY_SESSIONS)))
            continue;
        check_missing(s, cl, n->node, kv, &ref);
    }
}

int kf_reconcile_tick(kf_sched *s, kf_reconcile *rc) {
    _cleanup_free_ kf_node_addr *nodes = NULL;
    size_t n = 0;
    int r = kf_view_nodes(s->view, &nodes, &n);
    if (r < 0)
        return r;
    int64_t now = kf_mono_ms();
    _cleanup_free_ Kfleet__V1__ListSessionsResponse **lists = calloc(n ? n : 1, sizeof(*lists));
    _cleanup_free_ kf_grpc_client **clients = calloc(n ? n : 1, sizeof(*clients));
    seen_node *grown = realloc(rc->seen, (rc->n + n + 1) * sizeof(*grown));
    if (!lists || !clients || !grown)
        return -ENOMEM;
    rc->seen = grown;
    size_t n_due = 0;
    /* 1. list every node due, before the records are read */
    for (size_t i = 0; i < n && kf_leader_is(s->leader); i++) {
        seen_node *sn = find_seen(rc, nodes[i].node);
        if (sn && sn->mod_rev == nodes[i].mod_revision && now < sn->next_ms)
            continue;
        if (!sn) {
            sn = &rc->seen[rc->n++];
            *sn = (seen_node){0};
            snprintf(sn->name, sizeof(sn->name), "%s", nodes[i].node);
        }
        sn->mod_rev = nodes[i].mod_revision;
        sn->next_ms = now + RETRY_MS;
        Kfleet__V1__ListSessionsRequest req = KFLEET__V1__LIST_SESSIONS_REQUEST__INIT;
        kf_rpc_status st = {0};
        kf_error err = {0};
        ProtobufCMessage *resp = NULL;
        if (kf_view_client(s->view, &nodes[i], &clients[i], &err) < 0 ||
            kf_grpc_unary(clients[i], "/kfleet.v1.Sessions/ListSessions", &req.base,
                          &kfleet__v1__list_sessions_response__descriptor, AGENT_TIMEOUT_MS, &resp,
                          &st) < 0) {
            kf_warn("reconcile: node %s not listed (again in %d s): %s", nodes[i].node, RETRY_MS / 1000,
                    st.message[0] ? st.message : err.msg);
            continue;
        }
        lists[i] = (void *)resp;
        sn->next_ms = now + (int64_t)s->cfg.reconcile_s * 1000;
        n_due++;
    }
    if (n_due) {
        kf_etcd_kvs kvs = {0};
        kf_error err = {0};
        r = kf_etcd_range_prefix(kf_leader_etcd(s->leader), KF_KEY_SESSIONS, 0, &kvs, &err);
        if (r < 0) {
            kf_warn("reconcile: cannot read the session records: %s", err.msg);
            for (size_t i = 0; i < n; i++) /* retry those nodes at the next tick */
                if (lists[i])
                    find_seen(rc, nodes[i].node)->next_ms = now;
        }
        for (size_t i = 0; r == 0 && i < n; i++)
            if (lists[i])
                reconcile_node(s, &nodes[i], clients[i], lists[i], &kvs);
        kf_etcd_kvs_done(&kvs);
    }
    for (size_t i = 0; i < n; i++)
        if (lists[i])
            protobuf_c_message_free_unpacked(&lists[i]->base, NULL);
    return r;
}
