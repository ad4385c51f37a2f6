/* placement_naive.c - the naive reference placement (see placement_naive.h):
 * filter every node, score, qsort, take the first. Baseline and test oracle
 * only. The candidate buffer is kept between picks so the baseline is timed
 * on its algorithm, not on malloc.
 */
#include "placement_naive.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct nnode {
    int present;
    char id[KF_PLACE_ID_MAX + 1];
    uint64_t mem_cap, cpu_cap, mem_used, cpu_used;
    uint32_t slot_cap, slots_used, warm;
    unsigned flags;
    unsigned nlabels;
    char labels[KF_PLACE_LABELS_MAX][KF_PLACE_LABEL_MAX + 1];
} nnode;

typedef struct cand {
    int64_t score;
    uint64_t tie;
    const char *id;
    int idx;
} cand;

struct kf_naive {
    kf_place_policy pol;
    nnode *nodes;
    cand *cands;
    int cap;
};

int kf_naive_new(kf_naive **out, const kf_place_policy *policy) {
    kf_naive *nv = calloc(1, sizeof(*nv));
    if (!nv)
        return -ENOMEM;
    if (policy)
        nv->pol = *policy;
    *out = nv;
    return 0;
}

kf_naive *kf_naive_free(kf_naive *nv) {
    if (nv) {
        free(nv->nodes);
        free(nv->cands);
        free(nv);
    }
    return NULL;
}

void kf_naive_set_policy(kf_naive *nv, const kf_place_policy *policy) {
    nv->pol = *policy;
}

int kf_naive_set(kf_naive *nv, int idx, const kf_place_node *node) {
    if (idx >= nv->cap) {
        int cap = nv->cap ? nv->cap : 16;
        while (cap <= idx)
            cap *= 2;
        nnode *n = realloc(nv->nodes, (size_t)cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        memset(n + nv->cap, 0, (size_t)(cap - nv->cap) * sizeof(*n));
        nv->nodes = n;
        cand *c = realloc(nv->cands, (size_t)cap * sizeof(*c));
        if (!c)
            return -ENOMEM;
        nv->cands = c;
        nv->cap = cap;
    }
    nnode *n = &nv->nodes[idx];
    memset(n, 0, sizeof(*n));
    n->present = 1;
    strncpy(n->id, node->id, KF_PLACE_ID_MAX);
    n->mem_cap = node->mem_capacity;
    n->cpu_cap = node->cpu_capacity;
    n->slot_cap = node->slot_capacity;
    n->mem_used = node->mem_used;
    n->cpu_used = node->cpu_used;
    n->slots_used = node->slots_used;
    n->warm = node->warm_ready;
    n->flags = node->flags;
    n->nlabels = node->nlabels;
    for (unsigned i = 0; i < node->nlabels; i++)
        strncpy(n->labels[i], node->labels[i], KF_PLACE_LABEL_MAX);
    return 0;
}

void kf_naive_remove(kf_naive *nv, int idx) {
    nv->nodes[idx].present = 0;
}

void kf_naive_reserve(kf_naive *nv, int idx, const kf_place_request *req) {
    nnode *n = &nv->nodes[idx];
    n->mem_used += req->memory;
    n->cpu_used += req->cpu;
    n->slots_used++;
    if ((req->flags & KF_PLACE_CLAIM_WARM) && n->warm > 0)
        n->warm--;
}

void kf_naive_release(kf_naive *nv, int idx, const kf_place_request *req) {
    nnode *n = &nv->nodes[idx];
    n->mem_used -= req->memory;
    n->cpu_used -= req->cpu;
    n->slots_used--;
}

void kf_naive_set_usage(kf_naive *nv, int idx, uint64_t mem, uint64_t cpu, uint32_t slots) {
    nv->nodes[idx].mem_used = mem;
    nv->nodes[idx].cpu_used = cpu;
    nv->nodes[idx].slots_used = slots;
}

void kf_naive_set_warm(kf_naive *nv, int idx, uint32_t warm) {
    nv->nodes[idx].warm = warm;
}

void kf_naive_set_flags(kf_naive *nv, int idx, unsigned flags) {
    nv->nodes[idx].flags = flags;
}

static uint64_t avail(uint64_t cap, uint64_t used) {
    return used >= cap ? 0 : cap - used;
}

static int64_t share(uint64_t used, uint64_t cap) {
    if (used >= cap)
        return KF_PLACE_SCALE;
    return (int64_t)((unsigned __int128)used * KF_PLACE_SCALE / cap);
}

static int64_t score(const kf_place_policy *pol, const nnode *n) {
    int64_t load = share(n->mem_used, n->mem_cap);
    if (share(n->cpu_used, n->cpu_cap) > load)
        load = share(n->cpu_used, n->cpu_cap);
    if (share(n->slots_used, n->slot_cap) > load)
        load = share(n->slots_used, n->slot_cap);
    int64_t s = pol->mode == KF_PLACE_BINPACK ? load : KF_PLACE_SCALE - load;
    return s + (n->warm > 0 ? pol->warm_bonus : 0);
}

static int has_label(const nnode *n, const char *l) {
    for (unsigned i = 0; i < n->nlabels; i++)
        if (strcmp(n->labels[i], l) == 0)
            return 1;
    return 0;
}

static int by_rank(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    if (x->tie != y->tie)
        return x->tie < y->tie ? -1 : 1;
    return strcmp(x->id, y->id);
}

int kf_naive_pick(kf_naive *nv, const kf_place_request *req, kf_place_result *out) {
    memset(out, 0, sizeof(*out));
    out->node = -1;
    int nc = 0;
    for (int i = 0; i < nv->cap; i++) {
        const nnode *n = &nv->nodes[i];
        if (!n->present)
            continue;
        out->nodes++;
        int excluded = 0, labels = 1;
        for (unsigned k = 0; k < req->nexclude; k++)
            excluded |= req->exclude[k] == i;
        for (unsigned k = 0; k < req->nlabels; k++)
            labels &= has_label(n, req->labels[k]);
        if (excluded)
            out->why.excluded++;
        else if (!(n->flags & KF_PLACE_NODE_READY))
            out->why.not_ready++;
        else if (n->flags & KF_PLACE_NODE_CORDONED)
            out->why.cordoned++;
        else if (n->flags & KF_PLACE_NODE_DRAINING)
            out->why.draining++;
        else if (!labels)
            out->why.labels++;
        else if (avail(n->mem_cap, n->mem_used) < req->memory)
            out->why.memory++;
        else if (avail(n->cpu_cap, n->cpu_used) < req->cpu)
            out->why.cpu++;
        else if (avail(n->slot_cap, n->slots_used) < 1)
            out->why.slots++;
        else
            nv->cands[nc++] = (cand){score(&nv->pol, n), kf_place_tie_key(nv->pol.tie_seed, n->id),
                                     n->id, i};
    }
    if (nc == 0)
        return -ENOSPC;
    qsort(nv->cands, (size_t)nc, sizeof(cand), by_rank);
    memset(out, 0, sizeof(*out)); /* on success only node and score are set */
    out->node = nv->cands[0].idx;
    out->score = nv->cands[0].score;
    return out->node;
}
