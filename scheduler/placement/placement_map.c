/* placement_map.c - string -> index lookup for node ids and interned labels:
 * linear probing at most half full, deletion by backward shift (no
 * tombstones, so churn never degrades it). Keys are not stored; the owner
 * reads them back with keyof(). Get and delete are O(1) expected; put is
 * amortized O(1) and allocates only when the table doubles.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "placement_internal.h"

uint32_t kf__pmap_hash(const char *s) {
    uint32_t h = 2166136261u; /* FNV-1a 32 */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

int32_t kf__pmap_get(const kf_placement *p, const kf__pmap *m, kf__pmap_keyof keyof,
                     const char *key, uint32_t h) {
    if (m->mask == 0)
        return KF__NIL;
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        int32_t v = m->val[i];
        if (v == KF__NIL)
            return KF__NIL;
        if (m->hash[i] == h && strcmp(keyof(p, v), key) == 0)
            return v;
    }
}

static void place(kf__pmap *m, uint32_t h, int32_t val) {
    uint32_t i = h & m->mask;
    while (m->val[i] != KF__NIL)
        i = (i + 1) & m->mask;
    m->val[i] = val;
    m->hash[i] = h;
}

static int grow(kf__pmap *m) {
    uint32_t cap = m->mask ? (m->mask + 1) * 2 : 16;
    kf__pmap n = {0};
    n.val = malloc(cap * sizeof(*n.val));
    n.hash = malloc(cap * sizeof(*n.hash));
    if (!n.val || !n.hash) {
        free(n.val);
        free(n.hash);
        return -ENOMEM;
    }
    n.mask = cap - 1;
    n.used = m->used;
    for (uint32_t i = 0; i < cap; i++)
        n.val[i] = KF__NIL;
    for (uint32_t i = 0; m->mask && i <= m->mask; i++)
        if (m->val[i] != KF__NIL)
            place(&n, m->hash[i], m->val[i]);
    kf__pmap_done(m);
    *m = n;
    return 0;
}

int kf__pmap_put(kf__pmap *m, uint32_t h, int32_t val) {
    if (m->mask == 0 || (m->used + 1) * 2 > m->mask + 1) {
        int r = grow(m);
        if (r < 0)
            return r;
    }
    place(m, h, val);
    m->used++;
    return 0;
}

void kf__pmap_del(const kf_placement *p, kf__pmap *m, kf__pmap_keyof keyof, const char *key,
                  uint32_t h) {
    if (m->mask == 0)
        return;
    uint32_t i = h & m->mask;
    for (;; i = (i + 1) & m->mask) {
        if (m->val[i] == KF__NIL)
            return;
        if (m->hash[i] == h && strcmp(keyof(p, m->val[i]), key) == 0)
            break;
    }
    /* Backward shift: pull later entries of the probe run into the hole
     * unless that would move one before its home slot. */
    for (uint32_t j = (i + 1) & m->mask;; j = (j + 1) & m->mask) {
        if (m->val[j] == KF__NIL)
            break;
        uint32_t home = m->hash[j] & m->mask;
        /* entry j may move to i iff home is not cyclically in (i, j] */
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->val[i] = m->val[j];
            m->hash[i] = m->hash[j];
            i = j;
        }
    }
    m->val[i] = KF__NIL;
    m->used--;
}

void kf__pmap_done(kf__pmap *m) {
    free(m->val);
    free(m->hash);
    memset(m, 0, sizeof(*m));
}
