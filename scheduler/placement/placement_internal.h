/* placement_internal.h - the layout of a kf_placement, shared by the files of
 * the placement library (placement.c: nodes, labels, pick; placement_index.c:
 * the ordered indexes; placement_map.c: id lookup). Not installed, not for
 * callers: they see only placement.h.
 *
 * Every node lives in p->nodes[] at a stable index. A node that can take
 * sessions (ready, not cordoned, not draining) is also a member of the
 * index of all such nodes and of one index per label it carries. An index is
 * a treap ordered by rank (score descending, then tie key, then id), each
 * member carrying the maximum free memory, cpu and slots of its subtree, so a
 * pick walks from the best rank and skips every subtree where no node could
 * fit. Members are named by a "ref": the node index in the all-nodes index,
 * node index * KF_PLACE_LABELS_MAX + label slot in a label index, so a node
 * can sit in several indexes with a link of its own in each.
 */
#ifndef KF_PLACEMENT_INTERNAL_H
#define KF_PLACEMENT_INTERNAL_H

#include <stdint.h>

#include "placement.h"

#define KF__NIL (-1)
#define KF__LABEL_SHIFT 3 /* log2(KF_PLACE_LABELS_MAX) */
_Static_assert((1 << KF__LABEL_SHIFT) == KF_PLACE_LABELS_MAX, "label refs pack the slot in 3 bits");

/* One membership of a node in one index. */
typedef struct kf__plink {
    int32_t l, r;       /* refs of the children, KF__NIL if none */
    uint32_t prio;      /* treap heap priority (a hash: deterministic shape) */
    uint32_t max_slots; /* maxima of free capacity over the subtree */
    uint64_t max_mem;
    uint64_t max_cpu;
} kf__plink;

typedef struct kf__pnode {
    /* what a pick reads, first */
    int64_t score;
    uint64_t tie;
    uint64_t free_mem;
    uint64_t free_cpu;
    uint32_t free_slots;
    uint8_t present;  /* slot holds a node */
    uint8_t indexed;  /* member of the indexes (schedulable) */
    uint8_t nlabels;
    int32_t label[KF_PLACE_LABELS_MAX]; /* label ids, see kf__plabel */
    /* the rest of the description */
    unsigned flags;
    uint64_t mem_cap, cpu_cap, mem_used, cpu_used;
    uint32_t slot_cap, slots_used, warm;
    int32_t next_free; /* free-slot chain while !present */
    char id[KF_PLACE_ID_MAX + 1];
} kf__pnode;

/* An interned "key=value" label and its index. */
typedef struct kf__plabel {
    uint32_t refs;   /* nodes carrying it, in any state; 0 = entry free */
    uint32_t count;  /* members of its index */
    int32_t root;
    int32_t next_free;
    char str[KF_PLACE_LABEL_MAX + 1];
} kf__plabel;

/* Open-addressing map from a string to an index (node or label id). The
 * strings are not stored: keyof() reads them back from the owner. */
typedef struct kf__pmap {
    int32_t *val;   /* KF__NIL = empty */
    uint32_t *hash;
    uint32_t mask;  /* capacity - 1, capacity a power of two; 0 = unallocated */
    uint32_t used;
} kf__pmap;

struct kf_placement {
    kf_place_policy policy;
    kf__pnode *nodes;
    kf__plink *links;        /* all-nodes index: links[node] */
    kf__plink *label_links;  /* label indexes: label_links[node << 3 | slot] */
    int32_t nodes_cap;
    int32_t nodes_end;
    int32_t node_free;       /* head of the free-slot chain */
    uint32_t count;
    int32_t root;            /* all-nodes index */
    kf__plabel *labels;
    int32_t labels_cap;
    int32_t labels_end;
    int32_t label_free;
    kf__pmap node_map;       /* id -> node index */
    kf__pmap label_map;      /* label -> label id */
};

/* One index, as placement_index.c sees it. */
typedef struct kf__ptree {
    kf__pnode *nodes;
    kf__plink *links;
    int shift; /* node of a ref = ref >> shift */
} kf__ptree;

static inline kf__ptree kf__ptree_all(kf_placement *p) {
    return (kf__ptree){p->nodes, p->links, 0};
}
static inline kf__ptree kf__ptree_label(kf_placement *p) {
    return (kf__ptree){p->nodes, p->label_links, KF__LABEL_SHIFT};
}

/* What a search looks for beyond the index it walks. */
typedef struct kf__pquery {
    uint64_t mem;
    uint64_t cpu;
    const int32_t *labels; /* required label ids the walked index does not imply */
    unsigned nlabels;
    const int *exclude;
    unsigned nexclude;
} kf__pquery;

/* placement_index.c. The caller sets the node's rank and free capacity
 * before insert and must not change its rank while it is a member (erase,
 * change, insert); a change of free capacity alone is followed by refresh. */
void kf__ptree_insert(kf__ptree t, int32_t *root, int32_t ref);
void kf__ptree_erase(kf__ptree t, int32_t *root, int32_t ref);
void kf__ptree_refresh(kf__ptree t, int32_t root, int32_t ref);
int32_t kf__ptree_search(kf__ptree t, int32_t root, const kf__pquery *q);
/* Checks heap order, key order and the subtree maxima; returns the number of
 * members or -1 if broken. O(n), for tests. */
long kf__ptree_check(kf__ptree t, int32_t root);

/* placement_map.c */
uint32_t kf__pmap_hash(const char *s);
typedef const char *(*kf__pmap_keyof)(const kf_placement *p, int32_t val);
int32_t kf__pmap_get(const kf_placement *p, const kf__pmap *m, kf__pmap_keyof keyof,
                     const char *key, uint32_t h);
int kf__pmap_put(kf__pmap *m, uint32_t h, int32_t val); /* key must be absent */
void kf__pmap_del(const kf_placement *p, kf__pmap *m, kf__pmap_keyof keyof, const char *key,
                  uint32_t h);
void kf__pmap_done(kf__pmap *m);

/* Test hook (placement.c): kf__ptree_check over every index, and that each
 * index holds exactly the schedulable nodes. Returns 0 or -1. O(N). */
int kf__placement_check(kf_placement *p);

#endif
