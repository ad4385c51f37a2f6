/* node_loss.c - the leader's node-loss loop: a node that holds sessions but
 * whose node record (on the agent's lease) is gone, and that has not come
 * back within --node-grace, loses its sessions: each record becomes
 * {..., state: "LOST", lost_unix_ms, reason}. From then on every replica
 * answers calls on those sessions from the record (lost.c) instead of
 * forwarding them, and a node that comes back does not bring them back
 * (reconcile.c deletes them on the agent).
 *
 * When a node counts as gone: its record vanished when the agent's lease
 * ran out (kill -9, a cut link: --lease-ttl after the last refresh) or was
 * revoked (clean stop). The grace is counted from when this leader first
 * saw the node gone, so a new leader starts the count again (it cannot know
 * when its predecessor noticed); a restarted agent takes its record over at
 * once and never counts as gone.
 *
 * Safety: each mark is a fenced txn (kf_leader_txn) that also requires the
 * node record to be absent (create_revision 0) and the session record to
 * be the one read (mod_revision), so a node that came back, a session
 * deleted meanwhile, or a deposed leader never gets a record marked (or a
 * deleted one written back).
 *
 * Cost per tick: the distinct nodes of the session table (O(S log S) over
 * the cached sessions) and one view lookup per node; only when a node's
 * grace has run out, one range of /kfleet/sessions/ (O(S)) and one txn per
 * session of that node. Runs on the leader thread only; `kf_node_loss`
 * belongs to it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/node_record.h"
#include "kf/util.h"
#include "scheduler.h"

typedef struct gone_node {
    char name[KF_PLACE_ID_MAX + 1];
    int64_t since_ms; /* monotonic: when this leader first saw it gone */
} gone_node;

struct kf_node_loss {
    gone_node *gone;
    size_t n;
};

kf_node_loss *kf_node_loss_new(void) {
    return calloc(1, sizeof(kf_node_loss));
}

kf_node_loss *kf_node_loss_free(kf_node_loss *nl) {
    if (nl) {
        free(nl->gone);
        free(nl);
    }
    return NULL;
}

static const gone_node *find_gone(const gone_node *g, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(g[i].name, name))
            return &g[i];
    return NULL;
}

/* Marks one record LOST; 1 if it was, 0 if a compare failed. */
static int mark_lost(kf_sched *s, const kf_etcd_kv *kv, const char *node, uint32_t gone_s) {
    char nkey[sizeof(KF_KEY_NODES) + KF_PLACE_ID_MAX];
    snprintf(nkey, sizeof(nkey), "%s%s", KF_KEY_NODES, node);
    int64_t now = kf_unix_ms();
    char reason[256];
    snprintf(reason, sizeof(reason),
             "node %s left the cluster (its registration lapsed) and did not come back within %" PRIu32
             " s",
             node, gone_s);
    _cleanup_free_ char *value = kf_session_record_lost(kv->value, kv->value_len, now, reason);
    if (!value)
        return -ENOMEM;
    kf_etcd_cmp cmps[] = {
        {.key = nkey, .key_len = strlen(nkey), .target = KF_ETCD_CMP_CREATE, .result = KF_ETCD_CMP_EQUAL,
         .number = 0},
        {.key = kv->key, .key_len = kv->key_len, .target = KF_ETCD_CMP_MOD, .result = KF_ETCD_CMP_EQUAL,
         .number = kv->mod_revision},
    };
    kf_etcd_op put = {.type = KF_ETCD_OP_PUT, .key = kv->key, .key_len = kv->key_len, .value = value,
                      .value_len = strlen(value)};
    kf_error err = {0};
    bool ok = false;
    int rc = kf_leader_txn(s->leader, cmps, KF_ARRAY_SIZE(cmps), &put, 1, &ok, &err);
    if (rc < 0) {
        kf_warn("node loss: %s not marked LOST: %s", kv->key, err.msg);
        return rc;
    }
    if (ok)
        kf_warn("session %s marked LOST: %s", kv->key + strlen(KF_KEY_SESSIONS), reason);
    return ok;
}

/* Marks the live sessions of the nodes in due[0..n) LOST. */
static int mark_nodes(kf_sched *s, char (*due)[KF_PLACE_ID_MAX + 1], size_t n) {
    kf_etcd_kvs kvs = {0};
    kf_error err = {0};
    int rc = kf_etcd_range_prefix(kf_leader_etcd(s->leader), KF_KEY_SESSIONS, 0, &kvs, &err);
    if (rc < 0) {
        kf_warn("node loss: cannot read the session records: %s", err.msg);
        return rc;
    }
    int marked = 0;
    for (size_t i = 0; i < kvs.n && kf_leader_is(s->leader); i++) {
        kf_session_ref ref;
        if (kf_session_parse_record(kvs.kvs[i].value, kvs.kvs[i].value_len, &ref) < 0 || ref.lost)
            continue;
        for (size_t k = 0; k < n; k++)
            if (!strcmp(ref.node, due[k]) && mark_lost(s, &kvs.kvs[i], ref.node, s->cfg.node_grace_s) > 0)
                marked++;
    }
    kf_etcd_kvs_done(&kvs);
    return marked;
}

int kf_node_loss_tick(kf_sched *s, kf_node_loss *nl) {
    char(*nodes)[KF_PLACE_ID_MAX + 1] = NULL;
    size_t n = 0;
    int rc = kf_session_table_nodes(s->sessions, &nodes, &n);
    if (rc < 0)
        return rc;
    gone_node *gone = calloc(n ? n : 1, sizeof(*gone));
    char(*due)[KF_PLACE_ID_MAX + 1] = calloc(n ? n : 1, sizeof(*due));
    size_t n_gone = 0, n_due = 0;
    int64_t now = kf_mono_ms();
    if (!gone || !due) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        kf_node_addr a;
        if (kf_view_node(s->view, nodes[i], &a) == 0)
            continue; /* registered (again): its count starts over next time */
        const gone_node *was = find_gone(nl->gone, nl->n, nodes[i]);
        gone_node *g = &gone[n_gone++];
        memcpy(g->name, nodes[i], sizeof(g->name));
        g->since_ms = was ? was->since_ms : now;
        if (!was)
            kf_warn("node loss: node %s holds sessions but is not registered; its sessions become "
                    "LOST unless it is back within %" PRIu32 " s",
                    g->name, s->cfg.node_grace_s);
        if (now - g->since_ms >= (int64_t)s->cfg.node_grace_s * 1000)
            memcpy(due[n_due++], g->name, sizeof(due[0]));
    }
    free(nl->gone);
    nl->gone = TAKE_PTR(gone);
    nl->n = n_gone;
    rc = n_due ? mark_nodes(s, due, n_due) : 0;
out:
    free(gone);
    free(due);
    free(nodes);
    return rc;
}
