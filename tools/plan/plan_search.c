/* plan_search.c - "how many nodes for this load": the fewest nodes that meet
 * the config's target (a rejection rate, or a wait percentile where a
 * rejected session counts as waiting forever), found by doubling from one
 * node and then bisecting, one full simulation (kf_plan_run) per probe:
 * O(log n) runs. Every run uses the same seed, so all probes see the same
 * arrivals and the answer does not flicker with the noise of one run.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "plan_internal.h"

static bool meets(const kf_plan_config *c, const kf_plan_result *r) {
    if (c->target == KF_PLAN_TARGET_REJECTION)
        return r->rejection_rate <= c->target_rejection;
    return r->wait_pct <= c->target_wait_s;
}

/* Runs at n nodes into *r (freeing what *r held). */
static int probe(const kf_plan_config *c, uint32_t n, kf_plan_result *r, kf_error *err) {
    kf_plan_result_done(r);
    return kf_plan_run(c, n, KF_PLAN_ENGINE_INDEX, r, err);
}

int kf_plan_search(const kf_plan_config *c, kf_plan_result *best, kf_plan_result *below, kf_error *err) {
    memset(best, 0, sizeof(*best));
    memset(below, 0, sizeof(*below));
    if (c->target == KF_PLAN_TARGET_NONE)
        return kf_error_set(err, -EINVAL, 0, "target: missing (rejection or wait), nothing to search for");
    uint32_t max = c->search_max_nodes, lo = 0, hi = 1;
    kf_plan_result cur = {0};
    int r;
    /* Invariant: lo fails (0 = not tried), *below holds lo's run; *best
     * holds the last run at hi. */
    for (;;) {
        if ((r = probe(c, hi, best, err)) < 0)
            goto fail;
        if (meets(c, best))
            break;
        if (hi == max) {
            kf_plan_result_done(below);
            return kf_error_set(err, -ERANGE, 0,
                                "even %u nodes (search.max_nodes) miss the target: rejection %.3f%%, wait p%g %gs",
                                max, 100 * best->rejection_rate, c->target_pct, best->wait_pct);
        }
        lo = hi;
        kf_plan_result t = *below;
        *below = *best;
        *best = t;
        hi = hi * 2 < max ? hi * 2 : max;
    }
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if ((r = probe(c, mid, &cur, err)) < 0)
            goto fail;
        kf_plan_result t;
        if (meets(c, &cur)) {
            hi = mid;
            t = *best;
            *best = cur;
        } else {
            lo = mid;
            t = *below;
            *below = cur;
        }
        cur = t;
    }
    kf_plan_result_done(&cur);
    if (lo == 0) {
        kf_plan_result_done(below);
        memset(below, 0, sizeof(*below));
    }
    return 0;
fail:
    kf_plan_result_done(&cur);
    kf_plan_result_done(best);
    kf_plan_result_done(below);
    return r;
}
