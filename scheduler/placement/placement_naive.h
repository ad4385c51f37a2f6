/* placement_naive.h - the naive reference placement: the baseline of
 * kf-bench-placement and the oracle of the property test in
 * tests/unit/test_placement.c. Not linked into any daemon.
 *
 * It implements the contract of placement.h the obvious way and nothing
 * else: every pick checks every node against every filter, scores the ones
 * that pass, sorts them with qsort and takes the first. O(N log N) per pick,
 * O(1) per usage change. Strings compared as strings, no indexes, no
 * interning, so it shares no code with the library except kf_place_tie_key()
 * (a hash, part of the contract). Nodes live at indices the caller chooses,
 * so a test can mirror the library's indices.
 */
#ifndef KF_PLACEMENT_NAIVE_H
#define KF_PLACEMENT_NAIVE_H

#include "placement.h"

typedef struct kf_naive kf_naive;

int kf_naive_new(kf_naive **out, const kf_place_policy *policy);
kf_naive *kf_naive_free(kf_naive *nv);
void kf_naive_set_policy(kf_naive *nv, const kf_place_policy *policy);
/* Adds or replaces the node at `idx` (strings copied). 0 or -ENOMEM. */
int kf_naive_set(kf_naive *nv, int idx, const kf_place_node *node);
void kf_naive_remove(kf_naive *nv, int idx);
void kf_naive_reserve(kf_naive *nv, int idx, const kf_place_request *req);
void kf_naive_release(kf_naive *nv, int idx, const kf_place_request *req);
void kf_naive_set_usage(kf_naive *nv, int idx, uint64_t mem, uint64_t cpu, uint32_t slots);
void kf_naive_set_warm(kf_naive *nv, int idx, uint32_t warm);
void kf_naive_set_flags(kf_naive *nv, int idx, unsigned flags);
/* Same contract as kf_placement_pick(), reasons always counted. */
int kf_naive_pick(kf_naive *nv, const kf_place_request *req, kf_place_result *out);

#endif
