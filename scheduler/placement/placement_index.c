/* placement_index.c - the ordered indexes a pick walks: treaps keyed by node
 * rank, each member summarizing the largest free memory, cpu and slot count in
 * its subtree.
 *
 * Rank order is the pick order: higher score first, then lower tie key, then
 * id bytes. A search goes depth-first from the best rank and prunes every
 * subtree whose summaries show no single resource large enough; the first
 * member that fits and passes the remaining checks is the answer. Priorities
 * are derived from the tie key, so the shape of a treap depends only on its
 * members, never on the order of updates or on a random generator.
 *
 * Costs (n members, depth O(log n) expected): insert, erase, refresh
 * O(log n); search O(log n) when pruning works, O(n) at worst (see
 * kf_placement_pick() in placement.h). Recursion depth is the treap depth.
 * Nothing here allocates.
 */
#include <string.h>

#include "placement_internal.h"

#define LK(t, ref) ((t).links[(ref)])
#define ND(t, ref) ((t).nodes[(ref) >> (t).shift])

/* a ranks before b */
static inline int before(kf__ptree t, int32_t a, int32_t b) {
    const kf__pnode *x = &ND(t, a), *y = &ND(t, b);
    if (x->score != y->score)
        return x->score > y->score;
    if (x->tie != y->tie)
        return x->tie < y->tie;
    if (x != y)
        return strcmp(x->id, y->id) < 0;
    return a < b; /* never: a node is in an index once */
}

static inline uint32_t prio_of(uint64_t tie, int32_t ref) {
    uint64_t h = tie ^ ((uint64_t)(uint32_t)ref * 0x9e3779b97f4a7c15ULL);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (uint32_t)h;
}

/* What a member contributes to its subtree's summary. Every session needs a
 * slot, so a node without one contributes no memory or cpu either: otherwise
 * full nodes with memory left would send searches into subtrees where
 * nothing fits (the common case under binpack, which ranks full nodes
 * first). */
static inline void own(const kf__pnode *n, uint64_t *mem, uint64_t *cpu, uint32_t *slots) {
    int open = n->free_slots > 0;
    *mem = open ? n->free_mem : 0;
    *cpu = open ? n->free_cpu : 0;
    *slots = n->free_slots;
}

static inline void pull(kf__ptree t, int32_t x) {
    kf__plink *k = &LK(t, x);
    uint64_t mem, cpu;
    uint32_t slots;
    own(&ND(t, x), &mem, &cpu, &slots);
    if (k->l != KF__NIL) {
        const kf__plink *c = &LK(t, k->l);
        mem = c->max_mem > mem ? c->max_mem : mem;
        cpu = c->max_cpu > cpu ? c->max_cpu : cpu;
        slots = c->max_slots > slots ? c->max_slots : slots;
    }
    if (k->r != KF__NIL) {
        const kf__plink *c = &LK(t, k->r);
        mem = c->max_mem > mem ? c->max_mem : mem;
        cpu = c->max_cpu > cpu ? c->max_cpu : cpu;
        slots = c->max_slots > slots ? c->max_slots : slots;
    }
    k->max_mem = mem;
    k->max_cpu = cpu;
    k->max_slots = slots;
}

/* Splits subtree `s` into members ranked before `x` (*a) and the rest (*b). */
static void split(kf__ptree t, int32_t s, int32_t x, int32_t *a, int32_t *b) {
    if (s == KF__NIL) {
        *a = *b = KF__NIL;
        return;
    }
    if (before(t, s, x)) {
        split(t, LK(t, s).r, x, &LK(t, s).r, b);
        *a = s;
    } else {
        split(t, LK(t, s).l, x, a, &LK(t, s).l);
        *b = s;
    }
    pull(t, s);
}

/* Joins a and b, every member of a ranked before every member of b. */
static int32_t merge(kf__ptree t, int32_t a, int32_t b) {
    if (a == KF__NIL)
        return b;
    if (b == KF__NIL)
        return a;
    if (LK(t, a).prio > LK(t, b).prio) {
        LK(t, a).r = merge(t, LK(t, a).r, b);
        pull(t, a);
        return a;
    }
    LK(t, b).l = merge(t, a, LK(t, b).l);
    pull(t, b);
    return b;
}

static int32_t insert(kf__ptree t, int32_t s, int32_t x) {
    if (s == KF__NIL || LK(t, x).prio > LK(t, s).prio) {
        int32_t a, b;
        split(t, s, x, &a, &b);
        LK(t, x).l = a;
        LK(t, x).r = b;
        pull(t, x);
        return x;
    }
    if (before(t, x, s))
        LK(t, s).l = insert(t, LK(t, s).l, x);
    else
        LK(t, s).r = insert(t, LK(t, s).r, x);
    pull(t, s);
    return s;
}

static int32_t erase(kf__ptree t, int32_t s, int32_t x) {
    if (s == KF__NIL)
        return KF__NIL; /* not a member: the caller's bookkeeping is wrong */
    if (s == x)
        return merge(t, LK(t, s).l, LK(t, s).r);
    if (before(t, x, s))
        LK(t, s).l = erase(t, LK(t, s).l, x);
    else
        LK(t, s).r = erase(t, LK(t, s).r, x);
    pull(t, s);
    return s;
}

static void refresh(kf__ptree t, int32_t s, int32_t x) {
    if (s == KF__NIL)
        return;
    if (s != x) {
        if (before(t, x, s))
            refresh(t, LK(t, s).l, x);
        else
            refresh(t, LK(t, s).r, x);
    }
    pull(t, s);
}

void kf__ptree_insert(kf__ptree t, int32_t *root, int32_t ref) {
    LK(t, ref).prio = prio_of(ND(t, ref).tie, ref);
    *root = insert(t, *root, ref);
}

void kf__ptree_erase(kf__ptree t, int32_t *root, int32_t ref) {
    *root = erase(t, *root, ref);
}

void kf__ptree_refresh(kf__ptree t, int32_t root, int32_t ref) {
    refresh(t, root, ref);
}

static inline int could_fit(const kf__plink *k, const kf__pquery *q) {
    return k->max_mem >= q->mem && k->max_cpu >= q->cpu && k->max_slots >= 1;
}

static int passes(const kf__pnode *n, int node, const kf__pquery *q) {
    if (n->free_mem < q->mem || n->free_cpu < q->cpu || n->free_slots < 1)
        return 0;
    for (unsigned i = 0; i < q->nlabels; i++) {
        unsigned j = 0;
        while (j < n->nlabels && n->label[j] != q->labels[i])
            j++;
        if (j == n->nlabels)
            return 0;
    }
    for (unsigned i = 0; i < q->nexclude; i++)
        if (q->exclude[i] == node)
            return 0;
    return 1;
}

/* The best-ranked member of subtree s that passes q, or KF__NIL. The right
 * spine is a loop, so recursion only follows left children. */
static int32_t search(kf__ptree t, int32_t s, const kf__pquery *q) {
    while (s != KF__NIL) {
        const kf__plink *k = &LK(t, s);
        if (!could_fit(k, q))
            return KF__NIL;
        if (k->l != KF__NIL) {
            int32_t r = search(t, k->l, q);
            if (r != KF__NIL)
                return r;
        }
        if (passes(&ND(t, s), s >> t.shift, q))
            return s;
        s = k->r;
    }
    return KF__NIL;
}

int32_t kf__ptree_search(kf__ptree t, int32_t root, const kf__pquery *q) {
    return search(t, root, q);
}

/* Returns members in subtree s, or -1; sets first and last to its extreme refs. */
static long check(kf__ptree t, int32_t s, int32_t *first, int32_t *last) {
    const kf__plink *k = &LK(t, s);
    const kf__pnode *n = &ND(t, s);
    uint64_t mem, cpu;
    uint32_t slots;
    own(n, &mem, &cpu, &slots);
    long count = 1;
    *first = *last = s;
    if (k->prio != prio_of(n->tie, s))
        return -1;
    int32_t side[2] = {k->l, k->r};
    for (int i = 0; i < 2; i++) {
        if (side[i] == KF__NIL)
            continue;
        const kf__plink *c = &LK(t, side[i]);
        int32_t f, l;
        long m = check(t, side[i], &f, &l);
        if (m < 0 || c->prio > k->prio)
            return -1;
        if (i == 0 ? !before(t, l, s) : !before(t, s, f))
            return -1;
        if (i == 0)
            *first = f;
        else
            *last = l;
        count += m;
        mem = c->max_mem > mem ? c->max_mem : mem;
        cpu = c->max_cpu > cpu ? c->max_cpu : cpu;
        slots = c->max_slots > slots ? c->max_slots : slots;
    }
    if (k->max_mem != mem || k->max_cpu != cpu || k->max_slots != slots)
        return -1;
    return count;
}

long kf__ptree_check(kf__ptree t, int32_t root) {
    int32_t f, l;
    return root == KF__NIL ? 0 : check(t, root, &f, &l);
}
