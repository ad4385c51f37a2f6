/* cluster_nodes.c - the read side of kfleet.v1.Cluster as the scheduler
 * serves it: ListNodes, GetNode, GetClusterSummary, all answered from the
 * cached view (view.c: the node, usage and admin records as etcd's watches
 * delivered them, no round trip), and the service's method table. The
 * writes (CordonNode, UncordonNode) are in cordon.c.
 *
 * A node is listed while its agent is registered (node record on a live
 * lease) or while it has an admin record, which outlives the agent: a
 * cordoned node whose agent is down shows as NOT_READY with its cordon.
 * A node that left without an admin record is no longer listed.
 *
 * Costs: every call copies the listed nodes out of the view under its lock
 * (~3 KiB each), O(N log N) to sort; fine for the hundreds of nodes of v1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "drain.h"
#include "kf/cleanup.h"
#include "kf/log.h"

#define PAGE_DEFAULT 500
#define PAGE_MAX 1000

Kfleet__V1__NodeState kf_node_state(const kf_node_status *st) {
    if (!st->registered)
        return KFLEET__V1__NODE_STATE__NODE_STATE_NOT_READY;
    if (st->drain_state == KF_DRAIN_RUNNING)
        return KFLEET__V1__NODE_STATE__NODE_STATE_DRAINING;
    if (st->drain_state == KF_DRAIN_DONE && st->admin.cordoned && st->usage.sessions == 0)
        return KFLEET__V1__NODE_STATE__NODE_STATE_DRAINED;
    return st->admin.cordoned ? KFLEET__V1__NODE_STATE__NODE_STATE_CORDONED
                              : KFLEET__V1__NODE_STATE__NODE_STATE_READY;
}

void kf_node_msg_init(kf_node_msg *m, kf_node_status *st) {
    kfleet__v1__node__init(&m->node);
    kfleet__v1__node_capacity__init(&m->capacity);
    kfleet__v1__node_usage__init(&m->usage);
    kfleet__v1__node_admin__init(&m->admin);
    m->node.id = st->node;
    m->node.state = kf_node_state(st);
    m->node.address = st->address;
    m->node.tls = st->tls;
    m->node.version = st->version;
    m->node.started_unix_ms = st->started_unix_ms;
    for (size_t i = 0; i < st->n_labels; i++) {
        kfleet__v1__node__labels_entry__init(&m->label_store[i]);
        m->label_store[i].key = st->labels[i].key;
        m->label_store[i].value = st->labels[i].value;
        m->labels[i] = &m->label_store[i];
    }
    m->node.n_labels = st->n_labels;
    m->node.labels = m->labels;
    m->capacity.memory_bytes = st->memory_bytes;
    m->capacity.cpu_millis = st->cpu_millis;
    m->capacity.session_slots = st->session_slots;
    m->node.capacity = &m->capacity;
    m->usage.sessions = st->usage.sessions;
    m->usage.pool_ready = st->usage.pool_ready;
    m->usage.pool_target = st->usage.pool_target;
    m->usage.memory_reserved_bytes = st->usage.memory_reserved_bytes;
    m->usage.cpu_reserved_millis = st->usage.cpu_reserved_millis;
    m->node.usage = &m->usage;
    m->node.usage_updated_unix_ms = st->usage_updated_unix_ms;
    m->admin.cordoned = st->admin.cordoned;
    m->admin.reason = st->admin.reason;
    m->admin.by = st->admin.by;
    m->admin.at_unix_ms = st->admin.at_unix_ms;
    m->node.admin = &m->admin;
}

void kf_cluster_add_drains(kf_sched *s, kf_node_status *st, size_t n) {
    kf_etcd_kvs kvs = {0};
    if (!n || kf_etcd_range_prefix(s->etcd, KF_KEY_DRAINS, 0, &kvs, NULL) < 0)
        return; /* without it nodes show as cordoned, not draining: said in the log by the etcd client */
    for (size_t i = 0; i < kvs.n; i++) {
        const char *node = kvs.kvs[i].key + strlen(KF_KEY_DRAINS);
        for (size_t k = 0; k < n; k++) {
            if (strcmp(st[k].node, node) != 0)
                continue;
            kf_drain d;
            if (kf_drain_parse(kvs.kvs[i].value, kvs.kvs[i].value_len, &d) == 0)
                st[k].drain_state = (int)d.state;
            kf_drain_done(&d);
        }
    }
    kf_etcd_kvs_done(&kvs);
}

ProtobufCMessage *kf_cluster_begin(kf_sched *s, kf_call *c, const ProtobufCMessageDescriptor *req_desc,
                                   bool admin_only, kf_tenant *tenant) {
    if (kf_sched_authenticate(s, c, tenant) < 0)
        return NULL;
    if (admin_only && s->tenants && !tenant->admin) {
        char msg[KF_ERROR_MSG_MAX];
        snprintf(msg, sizeof(msg),
                 "tenant %s may not change the cluster (%s needs a tenant with \"admin\": true in the "
                 "tenants file)",
                 tenant->name, kf_call_method(c));
        kf_info("%s", msg);
        kf_call_finish(c, KF_ST_PERMISSION_DENIED, msg);
        return NULL;
    }
    int eof = 0;
    ProtobufCMessage *req = kf_call_recv(c, req_desc, &eof);
    if (!req) {
        char msg[128];
        snprintf(msg, sizeof(msg), "malformed or missing %s", req_desc->short_name);
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, msg);
    }
    return req;
}

int kf_cluster_check_node(kf_call *c, const char *node) {
    if (kf_node_name_valid(node))
        return 0;
    char msg[KF_ERROR_MSG_MAX];
    if (!node[0])
        snprintf(msg, sizeof(msg), "node is required");
    else
        snprintf(msg, sizeof(msg),
                 "node: '%.*s' is not a node name (1-%d of A-Z a-z 0-9 . _ -, not starting with a dot)",
                 KF_NODE_NAME_MAX + 1, node, KF_NODE_NAME_MAX);
    kf_call_finish(c, KF_ST_INVALID_ARGUMENT, msg);
    return -EINVAL;
}

void kf_cluster_reply_node(kf_sched *s, kf_call *c, const char *node) {
    _cleanup_free_ kf_node_status *st = calloc(1, sizeof(*st));
    _cleanup_free_ kf_node_msg *m = calloc(1, sizeof(*m));
    if (!st || !m) {
        kf_call_finish(c, KF_ST_INTERNAL, "out of memory");
        return;
    }
    if (kf_view_status(s->view, node, st) < 0)
        snprintf(st->node, sizeof(st->node), "%s", node);
    kf_cluster_add_drains(s, st, 1);
    kf_node_msg_init(m, st);
    kf_call_reply(c, &m->node.base);
}

static void get_node(kf_call *c, void *ud) {
    kf_sched *s = ud;
    kf_tenant tenant;
    _cleanup_pb_ Kfleet__V1__GetNodeRequest *req =
        (void *)kf_cluster_begin(s, c, &kfleet__v1__get_node_request__descriptor, false, &tenant);
    if (!req || kf_cluster_check_node(c, req->node) < 0)
        return;
    kf_node_status st;
    if (kf_view_status(s->view, req->node, &st) < 0) {
        char msg[KF_ERROR_MSG_MAX];
        snprintf(msg, sizeof(msg), "no node %s", req->node);
        kf_call_finish(c, KF_ST_NOT_FOUND, msg);
        return;
    }
    kf_cluster_reply_node(s, c, req->node);
}

static void list_nodes(kf_call *c, void *ud) {
    kf_sched *s = ud;
    kf_tenant tenant;
    _cleanup_pb_ Kfleet__V1__ListNodesRequest *req =
        (void *)kf_cluster_begin(s, c, &kfleet__v1__list_nodes_request__descriptor, false, &tenant);
    if (!req)
        return;
    char msg[KF_ERROR_MSG_MAX];
    if (req->page_size > PAGE_MAX) {
        snprintf(msg, sizeof(msg), "page_size %u is above the maximum %d", req->page_size, PAGE_MAX);
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, msg);
        return;
    }
    /* the token is the last node name of the previous page */
    if (req->page_token[0] && !kf_node_name_valid(req->page_token)) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "page_token is not one ListNodes returned");
        return;
    }
    size_t max = req->page_size ? req->page_size : PAGE_DEFAULT;
    _cleanup_free_ kf_node_status *st = NULL;
    size_t n = 0;
    bool more = false;
    if (kf_view_statuses(s->view, req->page_token[0] ? req->page_token : NULL, max, &st, &n, &more) < 0) {
        kf_call_finish(c, KF_ST_INTERNAL, "out of memory");
        return;
    }
    kf_cluster_add_drains(s, st, n);
    _cleanup_free_ kf_node_msg *msgs = calloc(n ? n : 1, sizeof(*msgs));
    _cleanup_free_ Kfleet__V1__Node **nodes = calloc(n ? n : 1, sizeof(*nodes));
    if (!msgs || !nodes) {
        kf_call_finish(c, KF_ST_INTERNAL, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        kf_node_msg_init(&msgs[i], &st[i]);
        nodes[i] = &msgs[i].node;
    }
    Kfleet__V1__ListNodesResponse resp = KFLEET__V1__LIST_NODES_RESPONSE__INIT;
    resp.n_nodes = n;
    resp.nodes = nodes;
    resp.next_page_token = more && n ? st[n - 1].node : "";
    kf_call_reply(c, &resp.base);
}

static void add_capacity(Kfleet__V1__NodeCapacity *sum, const kf_node_status *st) {
    sum->memory_bytes += st->memory_bytes;
    sum->cpu_millis += st->cpu_millis;
    sum->session_slots += st->session_slots;
}

static void summary(kf_call *c, void *ud) {
    kf_sched *s = ud;
    kf_tenant tenant;
    _cleanup_pb_ ProtobufCMessage *req =
        kf_cluster_begin(s, c, &kfleet__v1__get_cluster_summary_request__descriptor, false, &tenant);
    if (!req)
        return;
    _cleanup_free_ kf_node_status *st = NULL;
    size_t n = 0;
    bool more = false;
    if (kf_view_statuses(s->view, NULL, SIZE_MAX, &st, &n, &more) < 0) {
        kf_call_finish(c, KF_ST_INTERNAL, "out of memory");
        return;
    }
    kf_cluster_add_drains(s, st, n);
    Kfleet__V1__ClusterSummary sum = KFLEET__V1__CLUSTER_SUMMARY__INIT;
    Kfleet__V1__NodeCapacity cap = KFLEET__V1__NODE_CAPACITY__INIT;
    Kfleet__V1__NodeCapacity sched_cap = KFLEET__V1__NODE_CAPACITY__INIT;
    Kfleet__V1__NodeUsage use = KFLEET__V1__NODE_USAGE__INIT;
    for (size_t i = 0; i < n; i++) {
        sum.nodes++;
        switch (kf_node_state(&st[i])) {
        case KFLEET__V1__NODE_STATE__NODE_STATE_READY:
            sum.ready++;
            add_capacity(&sched_cap, &st[i]);
            break;
        case KFLEET__V1__NODE_STATE__NODE_STATE_CORDONED: sum.cordoned++; break;
        case KFLEET__V1__NODE_STATE__NODE_STATE_DRAINING: sum.draining++; break;
        case KFLEET__V1__NODE_STATE__NODE_STATE_DRAINED: sum.drained++; break;
        default: sum.not_ready++; break;
        }
        if (!st[i].registered)
            continue;
        add_capacity(&cap, &st[i]);
        use.sessions += st[i].usage.sessions;
        use.pool_ready += st[i].usage.pool_ready;
        use.pool_target += st[i].usage.pool_target;
        use.memory_reserved_bytes += st[i].usage.memory_reserved_bytes;
        use.cpu_reserved_millis += st[i].usage.cpu_reserved_millis;
    }
    sum.capacity = &cap;
    sum.schedulable_capacity = &sched_cap;
    sum.usage = &use;
    kf_call_reply(c, &sum.base);
}

static kf_method methods[] = {
    {KF_CLUSTER_METHOD("ListNodes"), list_nodes, NULL},
    {KF_CLUSTER_METHOD("GetNode"), get_node, NULL},
    {KF_CLUSTER_METHOD("CordonNode"), kf_sched_cordon, NULL},
    {KF_CLUSTER_METHOD("UncordonNode"), kf_sched_uncordon, NULL},
    {KF_CLUSTER_METHOD("GetClusterSummary"), summary, NULL},
    {KF_CLUSTER_METHOD("DrainNode"), kf_sched_drain, NULL},
    {KF_CLUSTER_METHOD("GetDrain"), kf_sched_get_drain, NULL},
    {KF_CLUSTER_METHOD("WatchDrain"), kf_sched_watch_drain, NULL},
    {KF_CLUSTER_METHOD("CancelDrain"), kf_sched_cancel_drain, NULL},
};

const kf_method *kf_sched_cluster_methods(kf_sched *s, size_t *n) {
    for (size_t i = 0; i < KF_ARRAY_SIZE(methods); i++)
        methods[i].userdata = s;
    *n = KF_ARRAY_SIZE(methods);
    return methods;
}
