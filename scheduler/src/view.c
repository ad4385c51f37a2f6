/* view.c - the scheduler's cached view of the cluster: three etcd watches
 * (/kfleet/nodes/, /kfleet/usage/, /kfleet/admin/; each lists first, then
 * follows events) merged per node into a kf_placement, and the gRPC clients
 * for the agents (one per advertised address, cached until exit).
 *
 * `mu` guards the node entries and the placement; the watch threads write,
 * the handler threads pick and reserve. A node takes part in placement only
 * while its node record exists (it is on the agent's lease, so a stopped or
 * dead agent drops out when its lease ends); its admin record may come and
 * go independently and survives it. Nodes are kept in a plain array looked
 * up linearly (O(N) per watch event; fine for the hundreds of nodes of v0,
 * a hash map when that changes); picks are O(log N) in kf_placement. An
 * entry, once created, stays until exit (a node name seen once costs ~300
 * bytes for the life of the process).
 *
 * Usage: the agents publish absolute counters at most once a second. So
 * that back-to-back creates see each other, a pick reserves the request on
 * the chosen node's entry at once; the node's next usage record replaces
 * that estimate with the truth.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/node_record.h"
#include "kf/util.h"
#include "scheduler.h"

enum { K_NODES, K_USAGE, K_ADMIN, K_N };
static const char *const prefixes[K_N] = {KF_KEY_NODES, KF_KEY_USAGE, KF_KEY_ADMIN};

typedef struct node_ent {
    char name[KF_PLACE_ID_MAX + 1];
    /* node record */
    bool has_node;
    char address[KF_SCHED_ADDR_MAX];
    bool tls;
    int64_t node_mod_rev;
    uint64_t mem_cap, cpu_cap;
    uint32_t slot_cap;
    /* usage record (or our reservations since the last one) */
    uint64_t mem_used, cpu_used;
    uint32_t sessions, pool_ready;
    /* admin record */
    bool cordoned;
    int idx; /* in the placement; -1 if not placeable */
} node_ent;

typedef struct channel {
    char address[KF_SCHED_ADDR_MAX];
    bool tls;
    kf_grpc_client *client;
} channel;

typedef struct watch_ctx {
    kf_view *v;
    int kind;
} watch_ctx;

struct kf_view {
    const kf_sched_config *cfg;
    kf_etcd *etcd;
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* signalled when a range is first listed */
    bool listed[K_N];    /* under mu */
    kf_placement *place; /* under mu */
    node_ent **nodes;    /* under mu */
    size_t n_nodes, cap_nodes;
    watch_ctx ctx[K_N];
    kf_etcd_watch *watch[K_N];

    pthread_mutex_t chan_mu;
    channel *chans; /* under chan_mu; clients live until kf_view_free */
    size_t n_chans;
};

/* ---- JSON fields (integers as numbers or decimal strings) -------------- */

static uint64_t json_u64(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsNumber(f))
        return f->valuedouble > 0 ? (uint64_t)f->valuedouble : 0;
    if (cJSON_IsString(f) && f->valuestring) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(f->valuestring, &end, 10);
        if (!errno && *end == '\0' && end != f->valuestring)
            return n;
    }
    return 0;
}

/* ---- node entries (under mu) ------------------------------------------- */

static node_ent *ent_find(kf_view *v, const char *name) {
    for (size_t i = 0; i < v->n_nodes; i++)
        if (!strcmp(v->nodes[i]->name, name))
            return v->nodes[i];
    return NULL;
}

static node_ent *ent_get(kf_view *v, const char *name) {
    node_ent *e = ent_find(v, name);
    if (e)
        return e;
    if (v->n_nodes == v->cap_nodes) {
        size_t nc = v->cap_nodes ? v->cap_nodes * 2 : 16;
        node_ent **nn = realloc(v->nodes, nc * sizeof(*nn));
        if (!nn)
            return NULL;
        v->nodes = nn;
        v->cap_nodes = nc;
    }
    e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->idx = -1;
    v->nodes[v->n_nodes++] = e;
    return e;
}

/* Brings the placement in line with entry e. */
static void ent_sync(kf_view *v, node_ent *e) {
    bool placeable = e->has_node && e->mem_cap && e->cpu_cap && e->slot_cap;
    if (!placeable) {
        if (e->idx >= 0)
            kf_placement_remove(v->place, e->idx);
        e->idx = -1;
        return;
    }
    kf_place_node pn = {
        .id = e->name, .mem_capacity = e->mem_cap, .cpu_capacity = e->cpu_cap,
        .slot_capacity = e->slot_cap, .mem_used = e->mem_used, .cpu_used = e->cpu_used,
        .slots_used = e->sessions, .warm_ready = e->pool_ready,
        .flags = KF_PLACE_NODE_READY | (e->cordoned ? KF_PLACE_NODE_CORDONED : 0),
    };
    int rc;
    if (e->idx < 0) {
        rc = kf_placement_add(v->place, &pn);
        if (rc >= 0)
            e->idx = rc;
    } else {
        rc = kf_placement_update(v->place, e->idx, &pn);
    }
    if (rc < 0)
        kf_warn("placement: node %s: %s", e->name, strerror(-rc));
}

static void ent_clear(node_ent *e, int kind) {
    switch (kind) {
    case K_NODES:
        e->has_node = false;
        e->address[0] = '\0';
        break;
    case K_USAGE:
        e->mem_used = e->cpu_used = 0;
        e->sessions = e->pool_ready = 0;
        break;
    case K_ADMIN: e->cordoned = false; break;
    }
}

/* Applies one PUT (value != NULL) or DELETE of a key in range `kind`. */
static void apply(kf_view *v, int kind, const kf_etcd_kv *kv, bool is_put) {
    const char *name = kv->key + strlen(prefixes[kind]);
    if (kv->key_len <= strlen(prefixes[kind]) || strlen(name) > KF_PLACE_ID_MAX) {
        kf_warn("ignoring etcd key %s (bad node name)", kv->key);
        return;
    }
    node_ent *e = ent_get(v, name);
    if (!e)
        return;
    if (!is_put) {
        ent_clear(e, kind);
        if (kind == K_NODES)
            kf_info("node %s left", name);
        return;
    }
    if (kind == K_ADMIN) {
        kf_node_admin adm;
        if (kf_node_admin_parse(kv->value, kv->value_len, &adm) < 0) {
            kf_warn("node %s: malformed admin record ignored", name);
            return;
        }
        if (adm.cordoned != e->cordoned)
            kf_info("node %s %s", name, adm.cordoned ? "cordoned" : "uncordoned");
        e->cordoned = adm.cordoned;
        return;
    }
    cJSON *j = cJSON_ParseWithLength(kv->value, kv->value_len);
    if (!cJSON_IsObject(j)) {
        kf_warn("node %s: malformed %s record ignored", name, kind == K_NODES ? "node" : "usage");
        cJSON_Delete(j);
        return;
    }
    if (kind == K_NODES) {
        const cJSON *addr = cJSON_GetObjectItemCaseSensitive(j, "address");
        const cJSON *cap = cJSON_GetObjectItemCaseSensitive(j, "capacity");
        if (!cJSON_IsString(addr) || !addr->valuestring[0] ||
            strlen(addr->valuestring) >= sizeof(e->address) || !cJSON_IsObject(cap)) {
            kf_warn("node %s: node record without address or capacity ignored", name);
        } else {
            if (!e->has_node)
                kf_info("node %s joined at %s", name, addr->valuestring);
            e->has_node = true;
            snprintf(e->address, sizeof(e->address), "%s", addr->valuestring);
            e->tls = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "tls"));
            e->node_mod_rev = kv->mod_revision;
            e->mem_cap = json_u64(cap, "memory_bytes");
            e->cpu_cap = json_u64(cap, "cpu_millis");
            uint64_t slots = json_u64(cap, "session_slots");
            e->slot_cap = slots > UINT32_MAX ? UINT32_MAX : (uint32_t)slots;
        }
    } else {
        e->mem_used = json_u64(j, "memory_reserved_bytes");
        e->cpu_used = json_u64(j, "cpu_reserved_millis");
        uint64_t s = json_u64(j, "sessions"), p = json_u64(j, "pool_ready");
        e->sessions = s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
        e->pool_ready = p > UINT32_MAX ? UINT32_MAX : (uint32_t)p;
    }
    cJSON_Delete(j);
}

/* The watch callback (one watch thread per range). */
static int on_watch(const kf_etcd_watch_notify *n, void *ud) {
    watch_ctx *w = ud;
    kf_view *v = w->v;
    if (n->kind == KF_ETCD_WATCH_DISCONNECTED) {
        kf_warn("etcd watch on %s: %s (reconnecting)", prefixes[w->kind], n->message);
        return 0;
    }
    pthread_mutex_lock(&v->mu);
    if (n->kind == KF_ETCD_WATCH_RESYNC) {
        for (size_t i = 0; i < v->n_nodes; i++)
            ent_clear(v->nodes[i], w->kind);
        for (size_t i = 0; i < n->kvs->n; i++)
            apply(v, w->kind, &n->kvs->kvs[i], true);
        v->listed[w->kind] = true;
        pthread_cond_broadcast(&v->cv);
    } else {
        for (size_t i = 0; i < n->n_events; i++)
            apply(v, w->kind, &n->events[i].kv, n->events[i].type == KF_ETCD_EVENT_PUT);
    }
    for (size_t i = 0; i < v->n_nodes; i++)
        ent_sync(v, v->nodes[i]);
    pthread_mutex_unlock(&v->mu);
    return 0;
}

int kf_view_start(kf_etcd *c, const kf_sched_config *cfg, int wait_ms, kf_view **out,
                  kf_error *err) {
    kf_view *v = calloc(1, sizeof(*v));
    if (!v)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    v->cfg = cfg;
    v->etcd = c;
    pthread_mutex_init(&v->mu, NULL);
    pthread_mutex_init(&v->chan_mu, NULL);
    kf_cond_init_mono(&v->cv);
    kf_place_policy pol = {.mode = cfg->policy, .warm_bonus = 0, .tie_seed = 0};
    int rc = kf_placement_new(&v->place, &pol);
    if (rc < 0) {
        kf_view_free(v);
        return kf_error_set(err, rc, 0, "placement: %s", strerror(-rc));
    }
    for (int k = 0; k < K_N; k++) {
        v->ctx[k] = (watch_ctx){.v = v, .kind = k};
        rc = kf_etcd_watch_prefix(c, prefixes[k], KF_ETCD_WATCH_FROM_SNAPSHOT, false, on_watch,
                                  &v->ctx[k], &v->watch[k], err);
        if (rc < 0) {
            kf_view_free(v);
            return rc;
        }
    }
    struct timespec dl = kf_mono_deadline(wait_ms);
    pthread_mutex_lock(&v->mu);
    while (!(v->listed[K_NODES] && v->listed[K_USAGE] && v->listed[K_ADMIN]))
        if (pthread_cond_timedwait(&v->cv, &v->mu, &dl) == ETIMEDOUT)
            break;
    bool ok = v->listed[K_NODES] && v->listed[K_USAGE] && v->listed[K_ADMIN];
    size_t n = kf_placement_count(v->place);
    pthread_mutex_unlock(&v->mu);
    if (!ok)
        kf_warn("etcd: cluster not listed within %d ms; serving anyway (the watches retry)", wait_ms);
    else
        kf_info("cluster view: %zu node(s) ready", n);
    *out = v;
    return 0;
}

kf_view *kf_view_free(kf_view *v) {
    if (!v)
        return NULL;
    for (int k = 0; k < K_N; k++)
        v->watch[k] = kf_etcd_watch_stop(v->watch[k]);
    for (size_t i = 0; i < v->n_chans; i++)
        kf_grpc_client_free(v->chans[i].client);
    free(v->chans);
    for (size_t i = 0; i < v->n_nodes; i++)
        free(v->nodes[i]);
    free(v->nodes);
    kf_placement_free(v->place);
    pthread_mutex_destroy(&v->mu);
    pthread_mutex_destroy(&v->chan_mu);
    pthread_cond_destroy(&v->cv);
    free(v);
    return NULL;
}

static void addr_from(const node_ent *e, kf_node_addr *out) {
    snprintf(out->node, sizeof(out->node), "%s", e->name);
    snprintf(out->address, sizeof(out->address), "%s", e->address);
    out->tls = e->tls;
    out->mod_revision = e->node_mod_rev;
}

int kf_view_place(kf_view *v, const kf_place_request *req0, char (*exclude)[KF_PLACE_ID_MAX + 1],
                  size_t n_exclude, kf_node_addr *out, char *explain, size_t explain_size) {
    kf_place_request req = *req0;
    int ex[KF_PLACE_EXCLUDE_MAX];
    unsigned nex = 0;
    pthread_mutex_lock(&v->mu);
    for (size_t i = 0; i < n_exclude && nex < KF_PLACE_EXCLUDE_MAX; i++) {
        int idx = kf_placement_find(v->place, exclude[i]);
        if (idx >= 0)
            ex[nex++] = idx;
    }
    req.exclude = ex;
    req.nexclude = nex;
    kf_place_result res;
    int rc = kf_placement_pick(v->place, &req, &res);
    if (rc < 0) {
        kf_place_explain(&req, &res, explain, explain_size);
        pthread_mutex_unlock(&v->mu);
        return rc;
    }
    kf_place_node pn;
    kf_placement_get(v->place, rc, &pn);
    node_ent *e = ent_find(v, pn.id);
    if (!e) { /* cannot happen: every placed node has an entry */
        pthread_mutex_unlock(&v->mu);
        snprintf(explain, explain_size, "internal error: placed node has no entry");
        return -EIO;
    }
    addr_from(e, out);
    e->mem_used += req.memory;
    e->cpu_used += req.cpu;
    e->sessions++;
    ent_sync(v, e);
    pthread_mutex_unlock(&v->mu);
    return 0;
}

void kf_view_unreserve(kf_view *v, const char *node, const kf_place_request *req) {
    pthread_mutex_lock(&v->mu);
    node_ent *e = ent_find(v, node);
    if (e) {
        e->mem_used = e->mem_used > req->memory ? e->mem_used - req->memory : 0;
        e->cpu_used = e->cpu_used > req->cpu ? e->cpu_used - req->cpu : 0;
        e->sessions = e->sessions ? e->sessions - 1 : 0;
        ent_sync(v, e);
    }
    pthread_mutex_unlock(&v->mu);
}

int kf_view_node(kf_view *v, const char *node, kf_node_addr *out) {
    pthread_mutex_lock(&v->mu);
    node_ent *e = ent_find(v, node);
    int rc = e && e->has_node ? 0 : -ENOENT;
    if (rc == 0)
        addr_from(e, out);
    pthread_mutex_unlock(&v->mu);
    return rc;
}

int kf_view_nodes(kf_view *v, kf_node_addr **out, size_t *n) {
    pthread_mutex_lock(&v->mu);
    kf_node_addr *a = calloc(v->n_nodes ? v->n_nodes : 1, sizeof(*a));
    size_t k = 0;
    if (a)
        for (size_t i = 0; i < v->n_nodes; i++)
            if (v->nodes[i]->has_node)
                addr_from(v->nodes[i], &a[k++]);
    pthread_mutex_unlock(&v->mu);
    if (!a)
        return -ENOMEM;
    *out = a;
    *n = k;
    return 0;
}

int kf_view_client(kf_view *v, const kf_node_addr *node, kf_grpc_client **out, kf_error *err) {
    int rc = 0;
    pthread_mutex_lock(&v->chan_mu);
    for (size_t i = 0; i < v->n_chans; i++)
        if (!strcmp(v->chans[i].address, node->address) && v->chans[i].tls == node->tls) {
            *out = v->chans[i].client;
            goto out;
        }
    channel *nc = realloc(v->chans, (v->n_chans + 1) * sizeof(*nc));
    if (!nc) {
        rc = kf_error_set(err, -ENOMEM, 0, "out of memory");
        goto out;
    }
    v->chans = nc;
    const kf_sched_config *cfg = v->cfg;
    kf_grpc_client_opts o = {
        .target = node->address,
        .user_agent = "kfleet-scheduler/" KF_VERSION,
        .tls = node->tls,
        .tls_ca_file = node->tls && cfg->node_tls_ca[0] ? cfg->node_tls_ca : NULL,
        .tls_cert_file = node->tls && cfg->node_tls_cert[0] ? cfg->node_tls_cert : NULL,
        .tls_key_file = node->tls && cfg->node_tls_key[0] ? cfg->node_tls_key : NULL,
    };
    kf_grpc_client *cl;
    rc = kf_grpc_client_new(&o, &cl, err);
    if (rc < 0) {
        kf_error_wrap(err, "node %s (%s)", node->node, node->address);
        goto out;
    }
    channel *ch = &v->chans[v->n_chans++];
    snprintf(ch->address, sizeof(ch->address), "%s", node->address);
    ch->tls = node->tls;
    ch->client = cl;
    *out = cl;
out:
    pthread_mutex_unlock(&v->chan_mu);
    return rc;
}
