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
 * Usage: the agents publish absolute counters at most once a second, and
 * only when they changed. So that back-to-back creates see each other, a
 * pick adds a reservation (session id, memory, cpu) to the chosen node,
 * kept apart from the node's reported usage; placement sees reported +
 * reserved. A reservation ends when
 *  - the create fails or the session is deleted (kf_view_unreserve);
 *  - a usage record already counts the session: StartSession answers with
 *    the node's create sequence number, and a record whose "creates"
 *    counter has reached it was taken after the session was in the node's
 *    table (kf_view_started), whether the session still lives or not;
 *  - it is older than RESERVE_STARTED_MS after its start, or
 *    RESERVE_PENDING_MS after the pick (an agent that restarted and
 *    counts from 0 again, a lost answer): a bound, not the normal path.
 * So a session created and deleted between two usage records leaves
 * nothing behind, and a record that arrives before the session is counted
 * does not wipe the reservation out.
 *
 * The records themselves (labels, version, the usage as reported, the
 * whole admin record) are kept beside the placement's figures for
 * kfleet.v1.Cluster (kf_view_status).
 *
 * Admin records are also applied locally by the scheduler's own cordon and
 * uncordon (kf_view_set_admin), so a create right after a cordon already
 * avoids the node; each entry remembers the etcd revision of the admin
 * state it holds and ignores older watch events.
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

#define RESERVE_STARTED_MS 10000  /* a started session's reservation, at most */
#define RESERVE_PENDING_MS 150000 /* a start in flight (> the create's start timeout) */
#define RESERVE_MAX 4096          /* reservations per node (picks beyond wait for records) */
#define PRUNE_EVERY_MS 500

typedef struct reservation {
    char id[KF_SESSION_ID_MAX + 1];
    uint64_t mem, cpu;
    uint64_t seq;    /* the node's create sequence; 0 while the start is in flight */
    int64_t till_ms; /* monotonic: dropped after this */
} reservation;

typedef struct node_ent {
    char name[KF_PLACE_ID_MAX + 1];
    /* node record */
    bool has_node;
    char address[KF_SCHED_ADDR_MAX];
    bool tls;
    int64_t node_mod_rev;
    uint64_t mem_cap, cpu_cap;
    uint32_t slot_cap;
    char version[KF_NODE_VERSION_MAX + 1];
    int64_t started_unix_ms;
    kf_label labels[KF_MAX_LABELS];
    size_t n_labels;
    /* usage record: as the agent wrote it, and the figures placement uses */
    kf_node_usage reported;
    int64_t usage_updated_unix_ms;
    uint64_t mem_used, cpu_used;
    uint32_t sessions, pool_ready;
    /* our picks the usage record does not count yet */
    reservation *res;
    size_t n_res, cap_res;
    /* admin record */
    bool has_admin;
    kf_node_admin admin;
    int64_t admin_rev; /* etcd revision of the admin state held (0 = unknown) */
    int idx;           /* in the placement; -1 if not placeable */
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
    size_t n_res;        /* under mu: reservations on all nodes */
    int64_t next_prune;  /* under mu: monotonic ms */
    watch_ctx ctx[K_N];
    kf_etcd_watch *watch[K_N];

    pthread_mutex_t chan_mu;
    channel *chans; /* under chan_mu; clients live until kf_view_free */
    size_t n_chans;
};

/* ---- JSON fields (integers as numbers or decimal strings) -------------- */

static int64_t json_i64(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsNumber(f))
        return f->valuedouble > -9.2e18 && f->valuedouble < 9.2e18 ? (int64_t)f->valuedouble : 0;
    if (cJSON_IsString(f) && f->valuestring) {
        char *end;
        errno = 0;
        long long n = strtoll(f->valuestring, &end, 10);
        if (!errno && *end == '\0' && end != f->valuestring)
            return n;
    }
    return 0;
}

static uint32_t u32_sat(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

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

/* Drops reservation i of e (order is not kept). */
static void res_drop(kf_view *v, node_ent *e, size_t i) {
    e->res[i] = e->res[--e->n_res];
    v->n_res--;
}

/* Drops the reservations e's usage record already counts, and the expired. */
static void res_prune(kf_view *v, node_ent *e, int64_t now) {
    for (size_t i = 0; i < e->n_res;) {
        const reservation *r = &e->res[i];
        if ((r->seq && r->seq <= e->reported.creates) || now > r->till_ms)
            res_drop(v, e, i);
        else
            i++;
    }
}

/* Brings the placement in line with entry e: reported usage plus our
 * reservations. */
static void ent_sync(kf_view *v, node_ent *e) {
    bool placeable = e->has_node && e->mem_cap && e->cpu_cap && e->slot_cap;
    if (!placeable) {
        if (e->idx >= 0)
            kf_placement_remove(v->place, e->idx);
        e->idx = -1;
        return;
    }
    uint64_t mem = e->mem_used, cpu = e->cpu_used;
    for (size_t i = 0; i < e->n_res; i++) {
        mem += e->res[i].mem;
        cpu += e->res[i].cpu;
    }
    uint64_t slots = (uint64_t)e->sessions + e->n_res;
    kf_place_node pn = {
        .id = e->name, .mem_capacity = e->mem_cap, .cpu_capacity = e->cpu_cap,
        .slot_capacity = e->slot_cap, .mem_used = mem, .cpu_used = cpu,
        .slots_used = slots > UINT32_MAX ? UINT32_MAX : (uint32_t)slots, .warm_ready = e->pool_ready,
        .flags = KF_PLACE_NODE_READY | (e->admin.cordoned ? KF_PLACE_NODE_CORDONED : 0),
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
        e->version[0] = '\0';
        e->n_labels = 0;
        e->started_unix_ms = 0;
        break;
    case K_USAGE:
        e->mem_used = e->cpu_used = 0;
        e->sessions = e->pool_ready = 0;
        e->reported = (kf_node_usage){0};
        e->usage_updated_unix_ms = 0;
        break;
    case K_ADMIN:
        e->has_admin = false;
        e->admin = (kf_node_admin){0};
        break;
    }
}

/* The labels object of a node record: string values only, bounded in
 * number and length (the agent's own rule); anything else is skipped. */
static void read_labels(node_ent *e, const cJSON *labels) {
    e->n_labels = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, labels) {
        if (e->n_labels == KF_MAX_LABELS)
            break;
        if (!l->string || !cJSON_IsString(l) || strlen(l->string) > KF_LABEL_MAX ||
            strlen(l->valuestring) > KF_LABEL_MAX)
            continue;
        kf_label *d = &e->labels[e->n_labels++];
        snprintf(d->key, sizeof(d->key), "%s", l->string);
        snprintf(d->value, sizeof(d->value), "%s", l->valuestring);
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
    if (kind == K_ADMIN) {
        if (kv->mod_revision && kv->mod_revision < e->admin_rev)
            return; /* older than what kf_view_set_admin applied */
        e->admin_rev = kv->mod_revision;
    }
    if (!is_put) {
        if (kind == K_ADMIN && e->admin.cordoned)
            kf_info("node %s uncordoned", name);
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
        if (adm.cordoned != e->admin.cordoned)
            kf_info("node %s %s", name, adm.cordoned ? "cordoned" : "uncordoned");
        e->has_admin = true;
        e->admin = adm;
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
            e->slot_cap = u32_sat(json_u64(cap, "session_slots"));
            const cJSON *ver = cJSON_GetObjectItemCaseSensitive(j, "version");
            snprintf(e->version, sizeof(e->version), "%s", cJSON_IsString(ver) ? ver->valuestring : "");
            e->started_unix_ms = json_i64(j, "started_unix_ms");
            read_labels(e, cJSON_GetObjectItemCaseSensitive(j, "labels"));
        }
    } else {
        kf_node_usage *u = &e->reported;
        uint64_t creates = json_u64(j, "creates");
        if (creates < u->creates) { /* the agent restarted: its sequence starts over */
            for (size_t i = 0; i < e->n_res;) {
                if (e->res[i].seq)
                    res_drop(v, e, i);
                else
                    i++;
            }
        }
        u->creates = creates;
        u->memory_reserved_bytes = json_u64(j, "memory_reserved_bytes");
        u->cpu_reserved_millis = json_u64(j, "cpu_reserved_millis");
        u->sessions = u32_sat(json_u64(j, "sessions"));
        u->pool_ready = u32_sat(json_u64(j, "pool_ready"));
        u->pool_target = u32_sat(json_u64(j, "pool_target"));
        e->usage_updated_unix_ms = json_i64(j, "updated_unix_ms");
        e->mem_used = u->memory_reserved_bytes;
        e->cpu_used = u->cpu_reserved_millis;
        e->sessions = u->sessions;
        e->pool_ready = u->pool_ready;
        res_prune(v, e, kf_mono_ms());
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

bool kf_view_ready(kf_view *v, char *reason, size_t size) {
    pthread_mutex_lock(&v->mu);
    int k = 0;
    while (k < K_N && v->listed[k])
        k++;
    pthread_mutex_unlock(&v->mu);
    if (k < K_N) {
        snprintf(reason, size, "the cluster (%s) has not been listed from etcd yet", prefixes[k]);
        return false;
    }
    for (k = 0; k < K_N; k++)
        if (!v->watch[k] || !kf_etcd_watch_connected(v->watch[k])) {
            snprintf(reason, size, "lost etcd: the watch on %s is reconnecting", prefixes[k]);
            return false;
        }
    return true;
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
    for (size_t i = 0; i < v->n_nodes; i++) {
        free(v->nodes[i]->res);
        free(v->nodes[i]);
    }
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

/* Expired reservations end even on a node whose records stopped (at most
 * one O(nodes) pass every PRUNE_EVERY_MS, and none without reservations). */
static void prune_all(kf_view *v, int64_t now) {
    if (!v->n_res || now < v->next_prune)
        return;
    v->next_prune = now + PRUNE_EVERY_MS;
    for (size_t i = 0; i < v->n_nodes; i++) {
        node_ent *e = v->nodes[i];
        size_t before = e->n_res;
        if (before) {
            res_prune(v, e, now);
            if (e->n_res != before)
                ent_sync(v, e);
        }
    }
}

static reservation *res_find(node_ent *e, const char *id, size_t *at) {
    for (size_t i = 0; i < e->n_res; i++)
        if (!strcmp(e->res[i].id, id)) {
            *at = i;
            return &e->res[i];
        }
    return NULL;
}

int kf_view_place(kf_view *v, const kf_place_request *req0, char (*exclude)[KF_PLACE_ID_MAX + 1],
                  size_t n_exclude, const char *id, kf_node_addr *out, char *explain,
                  size_t explain_size) {
    kf_place_request req = *req0;
    int ex[KF_PLACE_EXCLUDE_MAX];
    unsigned nex = 0;
    if (strlen(id) > KF_SESSION_ID_MAX) {
        snprintf(explain, explain_size, "internal error: session id too long");
        return -EINVAL;
    }
    int64_t now = kf_mono_ms();
    pthread_mutex_lock(&v->mu);
    prune_all(v, now);
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
    if (e->n_res == e->cap_res && e->n_res < RESERVE_MAX) {
        size_t nc = e->cap_res ? e->cap_res * 2 : 8;
        reservation *nr = realloc(e->res, nc * sizeof(*nr));
        if (nr) {
            e->res = nr;
            e->cap_res = nc;
        }
    }
    if (e->n_res < e->cap_res) { /* else unreserved: the usage records still count it */
        reservation *r = &e->res[e->n_res++];
        snprintf(r->id, sizeof(r->id), "%s", id);
        r->mem = req.memory;
        r->cpu = req.cpu;
        r->seq = 0;
        r->till_ms = now + RESERVE_PENDING_MS;
        v->n_res++;
        ent_sync(v, e);
    }
    pthread_mutex_unlock(&v->mu);
    return 0;
}

void kf_view_started(kf_view *v, const char *node, const char *id, uint64_t create_seq) {
    pthread_mutex_lock(&v->mu);
    node_ent *e = ent_find(v, node);
    size_t at;
    reservation *r = e ? res_find(e, id, &at) : NULL;
    if (r) {
        if (!create_seq || create_seq <= e->reported.creates) { /* counted already (or unknown: keep the bound) */
            if (create_seq) {
                res_drop(v, e, at);
                ent_sync(v, e);
            } else {
                r->till_ms = kf_mono_ms() + RESERVE_STARTED_MS;
            }
        } else {
            r->seq = create_seq;
            r->till_ms = kf_mono_ms() + RESERVE_STARTED_MS;
        }
    }
    pthread_mutex_unlock(&v->mu);
}

void kf_view_unreserve(kf_view *v, const char *node, const char *id) {
    pthread_mutex_lock(&v->mu);
    node_ent *e = ent_find(v, node);
    size_t at;
    if (e && res_find(e, id, &at)) {
        res_drop(v, e, at);
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

/* ---- kfleet.v1.Cluster: node status ------------------------------------- */

static void status_from(const node_ent *e, kf_node_status *out) {
    memset(out, 0, sizeof(*out));
    snprintf(out->node, sizeof(out->node), "%s", e->name);
    out->registered = e->has_node;
    if (e->has_node) {
        snprintf(out->address, sizeof(out->address), "%s", e->address);
        out->tls = e->tls;
        snprintf(out->version, sizeof(out->version), "%s", e->version);
        out->started_unix_ms = e->started_unix_ms;
        out->memory_bytes = e->mem_cap;
        out->cpu_millis = e->cpu_cap;
        out->session_slots = e->slot_cap;
        memcpy(out->labels, e->labels, e->n_labels * sizeof(e->labels[0]));
        out->n_labels = e->n_labels;
        out->usage = e->reported;
        out->usage_updated_unix_ms = e->usage_updated_unix_ms;
    }
    out->has_admin = e->has_admin;
    out->admin = e->admin;
}

/* Listed: registered, or known from an admin record. */
static bool ent_listed(const node_ent *e) { return e->has_node || e->has_admin; }

int kf_view_status(kf_view *v, const char *node, kf_node_status *out) {
    pthread_mutex_lock(&v->mu);
    node_ent *e = ent_find(v, node);
    int rc = e && ent_listed(e) ? 0 : -ENOENT;
    if (rc == 0)
        status_from(e, out);
    pthread_mutex_unlock(&v->mu);
    return rc;
}

static int status_cmp(const void *a, const void *b) {
    return strcmp(((const kf_node_status *)a)->node, ((const kf_node_status *)b)->node);
}

int kf_view_statuses(kf_view *v, const char *after, size_t max, kf_node_status **out, size_t *n,
                     bool *more) {
    pthread_mutex_lock(&v->mu);
    size_t k = 0;
    for (size_t i = 0; i < v->n_nodes; i++)
        k += ent_listed(v->nodes[i]) && (!after || strcmp(v->nodes[i]->name, after) > 0);
    kf_node_status *a = calloc(k ? k : 1, sizeof(*a));
    k = 0;
    if (a)
        for (size_t i = 0; i < v->n_nodes; i++)
            if (ent_listed(v->nodes[i]) && (!after || strcmp(v->nodes[i]->name, after) > 0))
                status_from(v->nodes[i], &a[k++]);
    pthread_mutex_unlock(&v->mu);
    if (!a)
        return -ENOMEM;
    qsort(a, k, sizeof(*a), status_cmp);
    *more = k > max;
    *out = a;
    *n = k > max ? max : k;
    return 0;
}

void kf_view_set_admin(kf_view *v, const char *node, const kf_node_admin *admin, int64_t revision) {
    pthread_mutex_lock(&v->mu);
    node_ent *e = ent_get(v, node);
    if (e && revision >= e->admin_rev) {
        e->admin_rev = revision;
        if (admin) {
            e->has_admin = true;
            e->admin = *admin;
        } else {
            ent_clear(e, K_ADMIN);
        }
        ent_sync(v, e);
    }
    pthread_mutex_unlock(&v->mu);
}

/* ---- loads, for the leader's pool sizing and rebalance ------------------ */

static uint32_t share(uint64_t used, uint64_t cap) {
    if (!cap || used >= cap)
        return KF_PLACE_SCALE;
    return (uint32_t)((double)used / (double)cap * KF_PLACE_SCALE); /* an estimate: a double is exact enough */
}

uint32_t kf_node_load_share(const kf_node_load *l) {
    uint32_t m = share(l->mem_used, l->mem_cap), c = share(l->cpu_used, l->cpu_cap),
             k = share(l->slots_used, l->slot_cap);
    return m > c ? (m > k ? m : k) : (c > k ? c : k);
}

static int load_cmp(const void *a, const void *b) {
    return strcmp(((const kf_node_load *)a)->node, ((const kf_node_load *)b)->node);
}

int kf_view_loads(kf_view *v, kf_node_load **out, size_t *n) {
    pthread_mutex_lock(&v->mu);
    kf_node_load *a = calloc(v->n_nodes ? v->n_nodes : 1, sizeof(*a));
    size_t k = 0;
    for (size_t i = 0; a && i < v->n_nodes; i++) {
        const node_ent *e = v->nodes[i];
        if (e->idx < 0 || e->admin.cordoned)
            continue;
        kf_node_load *l = &a[k++];
        snprintf(l->node, sizeof(l->node), "%s", e->name);
        l->mem_cap = e->mem_cap;
        l->cpu_cap = e->cpu_cap;
        l->slot_cap = e->slot_cap;
        l->mem_used = e->mem_used;
        l->cpu_used = e->cpu_used;
        l->slots_used = e->sessions;
        l->creates = e->reported.creates;
    }
    pthread_mutex_unlock(&v->mu);
    if (!a)
        return -ENOMEM;
    qsort(a, k, sizeof(*a), load_cmp);
    *out = a;
    *n = k;
    return 0;
}
