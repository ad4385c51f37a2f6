/* placement.c - the placement object: the node table, interned labels,
 * scoring, reserve/release accounting, kf_placement_pick() and its
 * explanation for users. The ordered indexes it keeps up to date live in
 * placement_index.c; the id maps in placement_map.c. See placement.h for the
 * contract and the cost of each call.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "placement_internal.h"

#define ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define NODE_FLAGS (KF_PLACE_NODE_READY | KF_PLACE_NODE_CORDONED | KF_PLACE_NODE_DRAINING)

uint64_t kf_place_tie_key(uint64_t seed, const char *id) {
    uint64_t h = 0xcbf29ce484222325ULL ^ seed; /* FNV-1a 64 */
    for (const unsigned char *s = (const unsigned char *)id; *s; s++)
        h = (h ^ *s) * 0x100000001b3ULL;
    h ^= h >> 30; /* splitmix64 finalizer: FNV alone barely moves the high bits */
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

static const char *node_key(const kf_placement *p, int32_t v) { return p->nodes[v].id; }
static const char *label_key(const kf_placement *p, int32_t v) { return p->labels[v].str; }

static uint32_t share(uint64_t used, uint64_t cap) {
    if (used >= cap)
        return KF_PLACE_SCALE;
    return (uint32_t)((unsigned __int128)used * KF_PLACE_SCALE / cap);
}

/* Sets free capacity and score from capacity, usage, warm pool and policy. */
static void node_rank(const kf_place_policy *pol, kf__pnode *n) {
    n->free_mem = n->mem_used >= n->mem_cap ? 0 : n->mem_cap - n->mem_used;
    n->free_cpu = n->cpu_used >= n->cpu_cap ? 0 : n->cpu_cap - n->cpu_used;
    n->free_slots = n->slots_used >= n->slot_cap ? 0 : n->slot_cap - n->slots_used;
    uint32_t load = share(n->mem_used, n->mem_cap);
    uint32_t c = share(n->cpu_used, n->cpu_cap), s = share(n->slots_used, n->slot_cap);
    load = c > load ? c : load;
    load = s > load ? s : load;
    n->score = pol->mode == KF_PLACE_BINPACK ? (int64_t)load : (int64_t)KF_PLACE_SCALE - load;
    if (n->warm > 0)
        n->score += pol->warm_bonus;
}

static int schedulable(const kf__pnode *n) {
    return (n->flags & NODE_FLAGS) == KF_PLACE_NODE_READY;
}

static int32_t label_ref(int32_t node, unsigned slot) {
    return (int32_t)((uint32_t)node << KF__LABEL_SHIFT | slot);
}

/* Ranks node i and makes it a member of its indexes if it can take sessions. */
static void node_link(kf_placement *p, int32_t i) {
    kf__pnode *n = &p->nodes[i];
    node_rank(&p->policy, n);
    if (!schedulable(n))
        return;
    kf__ptree_insert(kf__ptree_all(p), &p->root, i);
    for (unsigned s = 0; s < n->nlabels; s++) {
        kf__plabel *l = &p->labels[n->label[s]];
        kf__ptree_insert(kf__ptree_label(p), &l->root, label_ref(i, s));
        l->count++;
    }
    n->indexed = 1;
}

static void node_unlink(kf_placement *p, int32_t i) {
    kf__pnode *n = &p->nodes[i];
    if (!n->indexed)
        return;
    kf__ptree_erase(kf__ptree_all(p), &p->root, i);
    for (unsigned s = 0; s < n->nlabels; s++) {
        kf__plabel *l = &p->labels[n->label[s]];
        kf__ptree_erase(kf__ptree_label(p), &l->root, label_ref(i, s));
        l->count--;
    }
    n->indexed = 0;
}

/* New usage for node i: a rank change moves it in its indexes; otherwise
 * only the free-capacity summaries on its paths are refreshed. */
static void node_set_usage(kf_placement *p, int32_t i, uint64_t mem, uint64_t cpu,
                           uint32_t slots, uint32_t warm) {
    kf__pnode *n = &p->nodes[i];
    kf__pnode next = *n;
    next.mem_used = mem;
    next.cpu_used = cpu;
    next.slots_used = slots;
    next.warm = warm;
    node_rank(&p->policy, &next);
    if (n->indexed && next.score == n->score) {
        *n = next;
        kf__ptree_refresh(kf__ptree_all(p), p->root, i);
        for (unsigned s = 0; s < n->nlabels; s++)
            kf__ptree_refresh(kf__ptree_label(p), p->labels[n->label[s]].root, label_ref(i, s));
        return;
    }
    node_unlink(p, i);
    *n = next;
    node_link(p, i);
}

static int32_t label_find(const kf_placement *p, const char *s) {
    return kf__pmap_get(p, &p->label_map, label_key, s, kf__pmap_hash(s));
}

/* Takes a reference on label s, interning it if new. Returns its id or
 * -ENOMEM. */
static int32_t label_hold(kf_placement *p, const char *s) {
    uint32_t h = kf__pmap_hash(s);
    int32_t id = kf__pmap_get(p, &p->label_map, label_key, s, h);
    if (id >= 0) {
        p->labels[id].refs++;
        return id;
    }
    if (p->label_free == KF__NIL && p->labels_end == p->labels_cap) {
        int32_t cap = p->labels_cap ? p->labels_cap * 2 : 16;
        kf__plabel *l = realloc(p->labels, (size_t)cap * sizeof(*l));
        if (!l)
            return -ENOMEM;
        p->labels = l;
        p->labels_cap = cap;
    }
    int from_free = p->label_free != KF__NIL;
    id = from_free ? p->label_free : p->labels_end;
    kf__plabel *l = &p->labels[id];
    int32_t next_free = from_free ? l->next_free : KF__NIL;
    memset(l, 0, sizeof(*l));
    snprintf(l->str, sizeof(l->str), "%s", s);
    l->root = KF__NIL;
    l->next_free = KF__NIL;
    if (kf__pmap_put(&p->label_map, h, id) < 0) {
        l->str[0] = '\0';
        l->next_free = next_free;
        return -ENOMEM; /* entry stays free (or unused past labels_end) */
    }
    l->refs = 1;
    if (from_free)
        p->label_free = next_free;
    else
        p->labels_end++;
    return id;
}

static void label_drop(kf_placement *p, int32_t id) {
    kf__plabel *l = &p->labels[id];
    if (--l->refs > 0)
        return;
    kf__pmap_del(p, &p->label_map, label_key, l->str, kf__pmap_hash(l->str));
    l->str[0] = '\0';
    l->next_free = p->label_free;
    p->label_free = id;
}

static int str_valid(const char *s, size_t max) {
    if (!s)
        return 0;
    size_t n = strnlen(s, max + 1);
    return n > 0 && n <= max;
}

static int node_valid(const kf_place_node *n) {
    if (!n || n->mem_capacity == 0 || n->cpu_capacity == 0 || n->slot_capacity == 0)
        return 0;
    if ((n->flags & ~NODE_FLAGS) || n->nlabels > KF_PLACE_LABELS_MAX)
        return 0;
    for (unsigned i = 0; i < n->nlabels; i++) {
        if (!str_valid(n->labels[i], KF_PLACE_LABEL_MAX))
            return 0;
        for (unsigned j = 0; j < i; j++)
            if (strcmp(n->labels[i], n->labels[j]) == 0)
                return 0;
    }
    return 1;
}

static int policy_valid(const kf_place_policy *pol) {
    return (pol->mode == KF_PLACE_SPREAD || pol->mode == KF_PLACE_BINPACK) &&
           pol->warm_bonus <= KF_PLACE_SCALE;
}

static kf__pnode *node_at(const kf_placement *p, int idx) {
    if (!p || idx < 0 || idx >= p->nodes_end || !p->nodes[idx].present)
        return NULL;
    return &p->nodes[idx];
}

int kf_placement_new(kf_placement **out, const kf_place_policy *policy) {
    kf_place_policy def = {KF_PLACE_SPREAD, 0, 0};
    if (!out || (policy && !policy_valid(policy)))
        return -EINVAL;
    kf_placement *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->policy = policy ? *policy : def;
    p->node_free = KF__NIL;
    p->label_free = KF__NIL;
    p->root = KF__NIL;
    *out = p;
    return 0;
}

kf_placement *kf_placement_free(kf_placement *p) {
    if (!p)
        return NULL;
    free(p->nodes);
    free(p->links);
    free(p->label_links);
    free(p->labels);
    kf__pmap_done(&p->node_map);
    kf__pmap_done(&p->label_map);
    free(p);
    return NULL;
}

void kf_placement_get_policy(const kf_placement *p, kf_place_policy *out) {
    *out = p->policy;
}

int kf_placement_set_policy(kf_placement *p, const kf_place_policy *policy) {
    if (!p || !policy || !policy_valid(policy))
        return -EINVAL;
    p->policy = *policy;
    /* Every rank may change: rebuild the indexes rather than move each node. */
    p->root = KF__NIL;
    for (int32_t l = 0; l < p->labels_end; l++) {
        p->labels[l].root = KF__NIL;
        p->labels[l].count = 0;
    }
    for (int32_t i = 0; i < p->nodes_end; i++) {
        kf__pnode *n = &p->nodes[i];
        if (!n->present)
            continue;
        n->indexed = 0;
        n->tie = kf_place_tie_key(p->policy.tie_seed, n->id);
        node_link(p, i);
    }
    return 0;
}

static int grow_nodes(kf_placement *p) {
    if (p->nodes_cap >= KF_PLACE_NODES_MAX)
        return -E2BIG;
    int32_t cap = p->nodes_cap ? p->nodes_cap * 2 : 16;
    if (cap > KF_PLACE_NODES_MAX)
        cap = KF_PLACE_NODES_MAX;
    kf__pnode *n = realloc(p->nodes, (size_t)cap * sizeof(*n));
    if (!n)
        return -ENOMEM;
    p->nodes = n;
    kf__plink *l = realloc(p->links, (size_t)cap * sizeof(*l));
    if (!l)
        return -ENOMEM;
    p->links = l;
    l = realloc(p->label_links, ((size_t)cap << KF__LABEL_SHIFT) * sizeof(*l));
    if (!l)
        return -ENOMEM;
    p->label_links = l;
    p->nodes_cap = cap;
    return 0;
}

/* Interns node's labels into ids[]. On failure drops what it took. */
static int hold_labels(kf_placement *p, const kf_place_node *node, int32_t *ids) {
    for (unsigned i = 0; i < node->nlabels; i++) {
        int32_t id = label_hold(p, node->labels[i]);
        if (id < 0) {
            while (i-- > 0)
                label_drop(p, ids[i]);
            return id;
        }
        ids[i] = id;
    }
    return 0;
}

/* Copies the description (not the id) into n. */
static void node_fill(kf__pnode *n, const kf_place_node *node, const int32_t *ids) {
    n->mem_cap = node->mem_capacity;
    n->cpu_cap = node->cpu_capacity;
    n->slot_cap = node->slot_capacity;
    n->mem_used = node->mem_used;
    n->cpu_used = node->cpu_used;
    n->slots_used = node->slots_used;
    n->warm = node->warm_ready;
    n->flags = node->flags;
    n->nlabels = (uint8_t)node->nlabels;
    for (unsigned i = 0; i < KF_PLACE_LABELS_MAX; i++)
        n->label[i] = i < node->nlabels ? ids[i] : KF__NIL;
}

int kf_placement_add(kf_placement *p, const kf_place_node *node) {
    if (!p || !node_valid(node) || !str_valid(node->id, KF_PLACE_ID_MAX))
        return -EINVAL;
    uint32_t h = kf__pmap_hash(node->id);
    if (kf__pmap_get(p, &p->node_map, node_key, node->id, h) >= 0)
        return -EEXIST;
    if (p->node_free == KF__NIL && p->nodes_end == p->nodes_cap) {
        int r = grow_nodes(p);
        if (r < 0)
            return r;
    }
    int32_t ids[KF_PLACE_LABELS_MAX];
    int r = hold_labels(p, node, ids);
    if (r < 0)
        return r;
    int32_t i = p->node_free != KF__NIL ? p->node_free : p->nodes_end;
    kf__pnode *n = &p->nodes[i];
    int32_t next_free = i == p->node_free ? n->next_free : KF__NIL;
    memset(n, 0, sizeof(*n));
    snprintf(n->id, sizeof(n->id), "%s", node->id); /* node_key() reads it */
    r = kf__pmap_put(&p->node_map, h, i);
    if (r < 0) {
        n->next_free = next_free;
        for (unsigned j = 0; j < node->nlabels; j++)
            label_drop(p, ids[j]);
        return r;
    }
    if (i == p->node_free)
        p->node_free = next_free;
    else
        p->nodes_end++;
    n->present = 1;
    n->next_free = KF__NIL;
    n->tie = kf_place_tie_key(p->policy.tie_seed, n->id);
    node_fill(n, node, ids);
    node_link(p, i);
    p->count++;
    return i;
}

int kf_placement_update(kf_placement *p, int idx, const kf_place_node *node) {
    kf__pnode *n = node_at(p, idx);
    if (!n)
        return -ENOENT;
    if (!node_valid(node) || (node->id && strcmp(node->id, n->id) != 0))
        return -EINVAL;
    int32_t ids[KF_PLACE_LABELS_MAX];
    int r = hold_labels(p, node, ids); /* before dropping: no -ENOMEM halfway */
    if (r < 0)
        return r;
    node_unlink(p, idx);
    for (unsigned s = 0; s < n->nlabels; s++)
        label_drop(p, n->label[s]);
    node_fill(n, node, ids);
    node_link(p, idx);
    return 0;
}

int kf_placement_remove(kf_placement *p, int idx) {
    kf__pnode *n = node_at(p, idx);
    if (!n)
        return -ENOENT;
    node_unlink(p, idx);
    for (unsigned s = 0; s < n->nlabels; s++)
        label_drop(p, n->label[s]);
    kf__pmap_del(p, &p->node_map, node_key, n->id, kf__pmap_hash(n->id));
    memset(n, 0, sizeof(*n));
    n->next_free = p->node_free;
    p->node_free = idx;
    p->count--;
    return 0;
}

int kf_placement_find(const kf_placement *p, const char *id) {
    if (!p || !id)
        return -ENOENT;
    int32_t i = kf__pmap_get(p, &p->node_map, node_key, id, kf__pmap_hash(id));
    return i >= 0 ? i : -ENOENT;
}

int kf_placement_get(const kf_placement *p, int idx, kf_place_node *out) {
    const kf__pnode *n = node_at(p, idx);
    if (!n)
        return -ENOENT;
    memset(out, 0, sizeof(*out));
    out->id = n->id;
    out->mem_capacity = n->mem_cap;
    out->cpu_capacity = n->cpu_cap;
    out->slot_capacity = n->slot_cap;
    out->mem_used = n->mem_used;
    out->cpu_used = n->cpu_used;
    out->slots_used = n->slots_used;
    out->warm_ready = n->warm;
    out->flags = n->flags;
    out->nlabels = n->nlabels;
    for (unsigned s = 0; s < n->nlabels; s++)
        out->labels[s] = p->labels[n->label[s]].str;
    return 0;
}

size_t kf_placement_count(const kf_placement *p) {
    return p ? p->count : 0;
}

int kf_placement_end(const kf_placement *p) {
    return p ? p->nodes_end : 0;
}

int kf_placement_score(const kf_placement *p, int idx, int64_t *score) {
    const kf__pnode *n = node_at(p, idx);
    if (!n)
        return -ENOENT;
    *score = n->score;
    return 0;
}

int kf_placement_reserve(kf_placement *p, int idx, const kf_place_request *req) {
    kf__pnode *n = node_at(p, idx);
    if (!n)
        return -ENOENT;
    if (!req)
        return -EINVAL;
    /* saturate: usage past 2^64 is a caller bug, not something to wrap */
    uint64_t mem = n->mem_used + req->memory < n->mem_used ? UINT64_MAX : n->mem_used + req->memory;
    uint64_t cpu = n->cpu_used + req->cpu < n->cpu_used ? UINT64_MAX : n->cpu_used + req->cpu;
    uint32_t slots = n->slots_used == UINT32_MAX ? UINT32_MAX : n->slots_used + 1;
    uint32_t warm = n->warm - ((req->flags & KF_PLACE_CLAIM_WARM) && n->warm > 0);
    node_set_usage(p, idx, mem, cpu, slots, warm);
    return 0;
}

int kf_placement_release(kf_placement *p, int idx, const kf_place_request *req) {
    kf__pnode *n = node_at(p, idx);
    if (!n)
        return -ENOENT;
    if (!req || req->memory > n->mem_used || req->cpu > n->cpu_used || n->slots_used == 0)
        return -EINVAL;
    node_set_usage(p, idx, n->mem_used - req->memory, n->cpu_used - req->cpu, n->slots_used - 1,
                   n->warm);
    return 0;
}

int kf_placement_set_usage(kf_placement *p, int idx, uint64_t mem_used, uint64_t cpu_used,
                           uint32_t slots_used) {
    kf__pnode *n = node_at(p, idx);
    if (!n)
        return -ENOENT;
    node_set_usage(p, idx, mem_used, cpu_used, slots_used, n->warm);
    return 0;
}

int kf_placement_set_warm(kf_placement *p, int idx, uint32_t warm_ready) {
    kf__pnode *n = node_at(p, idx);
    if (!n)
        return -ENOENT;
    node_set_usage(p, idx, n->mem_used, n->cpu_used, n->slots_used, warm_ready);
    return 0;
}

int kf_placement_set_flags(kf_placement *p, int idx, unsigned flags) {
    kf__pnode *n = node_at(p, idx);
    if (!n)
        return -ENOENT;
    if (flags & ~NODE_FLAGS)
        return -EINVAL;
    if (flags == n->flags)
        return 0;
    node_unlink(p, idx);
    n->flags = flags;
    node_link(p, idx);
    return 0;
}

static int is_excluded(const kf_place_request *req, int32_t i) {
    for (unsigned k = 0; k < req->nexclude; k++)
        if (req->exclude[k] == i)
            return 1;
    return 0;
}

static int has_labels(const kf__pnode *n, const int32_t *ids, unsigned nids) {
    for (unsigned k = 0; k < nids; k++) {
        unsigned s = 0;
        while (s < n->nlabels && n->label[s] != ids[k])
            s++;
        if (s == n->nlabels)
            return 0;
    }
    return 1;
}

/* One pass over every node: the first filter each one fails. */
static void explain_all(const kf_placement *p, const kf_place_request *req, const int32_t *ids,
                        unsigned nids, int label_missing, kf_place_reasons *why) {
    for (int32_t i = 0; i < p->nodes_end; i++) {
        const kf__pnode *n = &p->nodes[i];
        if (!n->present)
            continue;
        if (is_excluded(req, i))
            why->excluded++;
        else if (!(n->flags & KF_PLACE_NODE_READY))
            why->not_ready++;
        else if (n->flags & KF_PLACE_NODE_CORDONED)
            why->cordoned++;
        else if (n->flags & KF_PLACE_NODE_DRAINING)
            why->draining++;
        else if (label_missing || !has_labels(n, ids, nids))
            why->labels++;
        else if (n->free_mem < req->memory)
            why->memory++;
        else if (n->free_cpu < req->cpu)
            why->cpu++;
        else if (n->free_slots < 1)
            why->slots++;
    }
}

int kf_placement_pick(const kf_placement *p, const kf_place_request *req, kf_place_result *out) {
    if (!p || !req || !out)
        return -EINVAL;
    if (req->nlabels > KF_PLACE_LABELS_MAX || (req->nlabels && !req->labels) ||
        req->nexclude > KF_PLACE_EXCLUDE_MAX || (req->nexclude && !req->exclude))
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    out->node = -1;

    /* Walk the smallest index that implies one required label; check the
     * others per candidate. */
    int32_t ids[KF_PLACE_LABELS_MAX], walk = KF__NIL;
    unsigned nids = 0;
    int label_missing = 0;
    for (unsigned k = 0; k < req->nlabels; k++) {
        int32_t id = req->labels[k] ? label_find(p, req->labels[k]) : KF__NIL;
        if (id < 0) {
            label_missing = 1;
            break;
        }
        ids[nids++] = id;
        if (walk == KF__NIL || p->labels[id].count < p->labels[walk].count)
            walk = id;
    }
    if (!label_missing) {
        /* A const view: the search only reads. */
        kf_placement *rp = (kf_placement *)p;
        int32_t rest[KF_PLACE_LABELS_MAX];
        unsigned nrest = 0;
        for (unsigned k = 0; k < nids; k++)
            if (ids[k] != walk)
                rest[nrest++] = ids[k];
        kf__pquery q = {req->memory, req->cpu, rest, nrest, req->exclude, req->nexclude};
        kf__ptree t = walk == KF__NIL ? kf__ptree_all(rp) : kf__ptree_label(rp);
        int32_t root = walk == KF__NIL ? p->root : p->labels[walk].root;
        int32_t ref = kf__ptree_search(t, root, &q);
        if (ref != KF__NIL) {
            int node = ref >> t.shift;
            out->node = node;
            out->score = p->nodes[node].score;
            return node;
        }
    }
    out->nodes = p->count;
    if (!(req->flags & KF_PLACE_NO_REASONS))
        explain_all(p, req, ids, nids, label_missing, &out->why);
    return -ENOSPC;
}

static void fmt_bytes(char *buf, size_t size, uint64_t b) {
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;
    uint64_t div = 1;
    while (u + 1 < ELEMS(unit) && b >= div * 1024) {
        div *= 1024;
        u++;
    }
    if (b % div == 0)
        snprintf(buf, size, "%llu %s", (unsigned long long)(b / div), unit[u]);
    else
        snprintf(buf, size, "%.1f %s", (double)b / (double)div, unit[u]);
}

static void fmt_cpu(char *buf, size_t size, uint64_t m) {
    if (m % 1000 == 0)
        snprintf(buf, size, "%llu cpu", (unsigned long long)(m / 1000));
    else
        snprintf(buf, size, "%llum cpu", (unsigned long long)m);
}

/* snprintf that appends to buf[*len..] and keeps counting past the end. */
static void add(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(char *buf, size_t size, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(*len < size ? buf + *len : NULL, *len < size ? size - *len : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n;
}

int kf_place_explain(const kf_place_request *req, const kf_place_result *res, char *buf,
                     size_t size) {
    char mem[32], cpu[32];
    size_t len = 0;
    if (size)
        buf[0] = '\0';
    fmt_bytes(mem, sizeof(mem), req->memory);
    fmt_cpu(cpu, sizeof(cpu), req->cpu);
    add(buf, size, &len, "no node has %s memory and %s free", mem, cpu);
    for (unsigned k = 0; req->labels && k < req->nlabels; k++)
        add(buf, size, &len, "%s%s", k ? ", " : req->nlabels > 1 ? " with labels " : " with label ",
            req->labels[k] ? req->labels[k] : "(null)");
    if (res->nodes == 0) {
        add(buf, size, &len, " (no nodes registered)");
        return (int)len;
    }
    add(buf, size, &len, " (%u node%s", res->nodes, res->nodes == 1 ? "" : "s");
    const kf_place_reasons *w = &res->why;
    const struct {
        uint32_t n;
        const char *what;
    } part[] = {
        {w->memory, "lack memory"},   {w->cpu, "lack cpu"},
        {w->slots, "at session limit"}, {w->labels, "lack a required label"},
        {w->cordoned, "cordoned"},    {w->draining, "draining"},
        {w->not_ready, "not ready"},  {w->excluded, "excluded"},
    };
    const char *sep = ": ";
    for (size_t k = 0; k < ELEMS(part); k++) {
        if (!part[k].n)
            continue;
        add(buf, size, &len, "%s%u %s", sep, part[k].n, part[k].what);
        sep = ", ";
    }
    add(buf, size, &len, ")");
    return (int)len;
}

int kf__placement_check(kf_placement *p) {
    long members = 0;
    uint32_t *per_label = calloc((size_t)p->labels_end + 1, sizeof(*per_label));
    if (!per_label)
        return -1;
    int bad = 0;
    uint32_t present = 0;
    for (int32_t i = 0; i < p->nodes_end; i++) {
        kf__pnode *n = &p->nodes[i];
        if (!n->present)
            continue;
        present++;
        kf__pnode copy = *n;
        node_rank(&p->policy, &copy);
        if (copy.score != n->score || copy.free_mem != n->free_mem ||
            copy.free_cpu != n->free_cpu || copy.free_slots != n->free_slots ||
            n->indexed != schedulable(n) ||
            n->tie != kf_place_tie_key(p->policy.tie_seed, n->id) ||
            kf_placement_find(p, n->id) != i)
            bad = 1;
        if (!n->indexed)
            continue;
        members++;
        for (unsigned s = 0; s < n->nlabels; s++)
            per_label[n->label[s]]++;
    }
    if (present != p->count || kf__ptree_check(kf__ptree_all(p), p->root) != members)
        bad = 1;
    for (int32_t l = 0; l < p->labels_end; l++) {
        kf__plabel *lab = &p->labels[l];
        if (lab->count != per_label[l] ||
            kf__ptree_check(kf__ptree_label(p), lab->root) != (long)per_label[l])
            bad = 1;
        if (lab->refs && label_find(p, lab->str) != l)
            bad = 1;
    }
    free(per_label);
    return bad ? -1 : 0;
}
