/* placement.h - where a new session goes: the scheduler's placement engine,
 * a pure library (no I/O, no threads, no global state) that the scheduler
 * runs against its cached view of the cluster and that `kfleetctl plan` runs
 * in the inner loop of its simulation.
 *
 * A kf_placement holds the nodes (capacity, usage, warm-pool count, labels,
 * admin state) and the policy. kf_placement_pick() filters nodes (ready, not
 * cordoned or draining, not excluded, required labels, resources fit) and
 * returns the best-scoring one. Nodes that can take sessions are kept in
 * ordered, augmented indexes (one for all, one per label) so a decision costs
 * O(log N) in the common case, never a sort; a usage change costs O(log N)
 * per index the node is in. Nothing is allocated per decision or per
 * reserve/release.
 *
 * Not thread-safe: one kf_placement belongs to one caller at a time (the
 * scheduler holds its view lock around every call). Errors are negative errno
 * codes (-EINVAL bad argument, -ENOENT no such node, -EEXIST duplicate id,
 * -ENOMEM, -ENOSPC no node fits).
 *
 * Score (higher is better), integer and exact, so any two implementations of
 * this contract agree bit for bit (tests/unit/test_placement.c checks the
 * index against a naive reference that scores every node and sorts):
 *
 *   share(used, cap) = used >= cap ? 1000000 : floor(used * 1000000 / cap)
 *   load             = max(share(memory), share(cpu), share(sessions))
 *   spread:  score   = 1000000 - load      (the node with the most headroom)
 *   binpack: score   = load                 (the fullest node that still fits)
 *   score           += warm_bonus if the node has a warm sandbox ready
 *
 * The load is the node's dominant share before the new session (not after),
 * so a node's rank does not depend on the request and can be indexed.
 * Ties on score are broken by the lower kf_place_tie_key(policy.tie_seed,
 * node id), then by the node id in byte order: the same cluster, policy and
 * request always give the same node. Scheduler replicas given different seeds
 * break ties differently, which keeps them from all committing to the same
 * empty node at once.
 *
 * Topology (zone, rack) is expressed as labels ("zone=eu-1a"); a request that
 * must land in a zone asks for that label.
 */
#ifndef KF_PLACEMENT_H
#define KF_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#define KF_PLACE_ID_MAX 63         /* bytes in a node id, without the NUL */
#define KF_PLACE_LABELS_MAX 8      /* labels per node, and per request */
#define KF_PLACE_LABEL_MAX 63      /* bytes in one "key=value" label, without the NUL */
#define KF_PLACE_EXCLUDE_MAX 64    /* excluded nodes per request */
#define KF_PLACE_NODES_MAX (1 << 20)
#define KF_PLACE_SCALE 1000000     /* a share of 100 %, in score points */

typedef struct kf_placement kf_placement;

typedef enum kf_place_mode {
    KF_PLACE_SPREAD = 0,  /* least loaded node first: headroom, blast radius */
    KF_PLACE_BINPACK = 1, /* most loaded node that fits: frees whole nodes */
} kf_place_mode;

typedef struct kf_place_policy {
    kf_place_mode mode;
    /* Score points (KF_PLACE_SCALE = 100 % load) added to a node with at
     * least one warm sandbox ready: a create there is a claim, not a cold
     * start. 0 = ignore the pool; 200000 = a warm node wins unless it is 20
     * points of load worse. At most KF_PLACE_SCALE. */
    uint32_t warm_bonus;
    uint64_t tie_seed; /* see kf_place_tie_key() */
} kf_place_policy;

/* Admin and health state of a node. A node takes new sessions only if it is
 * READY and neither CORDONED nor DRAINING. */
#define KF_PLACE_NODE_READY 0x1u
#define KF_PLACE_NODE_CORDONED 0x2u
#define KF_PLACE_NODE_DRAINING 0x4u

/* A node as the caller describes it (input of add/update), or as
 * kf_placement_get() reports it (then the strings belong to the kf_placement
 * and stay valid until the next call that modifies it). */
typedef struct kf_place_node {
    const char *id;          /* unique, 1..KF_PLACE_ID_MAX bytes */
    uint64_t mem_capacity;   /* bytes, > 0 */
    uint64_t cpu_capacity;   /* millicpus, > 0 */
    uint32_t slot_capacity;  /* sessions, > 0 */
    uint64_t mem_used;       /* may exceed capacity (overcommit): then full */
    uint64_t cpu_used;
    uint32_t slots_used;
    uint32_t warm_ready;     /* warm sandboxes ready to claim */
    unsigned flags;          /* KF_PLACE_NODE_* */
    unsigned nlabels;        /* <= KF_PLACE_LABELS_MAX, no duplicates */
    const char *labels[KF_PLACE_LABELS_MAX]; /* "key=value", 1..KF_PLACE_LABEL_MAX bytes */
} kf_place_node;

/* kf_place_request flags */
#define KF_PLACE_NO_REASONS 0x1u /* pick: on -ENOSPC skip the O(N) reason breakdown */
#define KF_PLACE_CLAIM_WARM 0x2u /* reserve: the session takes a warm sandbox if one
                                    is ready (warm_ready - 1), in the same re-rank */

/* What one session needs. A session always takes one slot. */
typedef struct kf_place_request {
    uint64_t memory;             /* bytes */
    uint64_t cpu;                /* millicpus */
    unsigned nlabels;            /* <= KF_PLACE_LABELS_MAX */
    const char *const *labels;   /* all must be on the node, exact "key=value" */
    unsigned nexclude;           /* <= KF_PLACE_EXCLUDE_MAX */
    const int *exclude;          /* node indices never chosen: the node that just
                                    lost a commit race, a node being drained */
    unsigned flags;              /* KF_PLACE_NO_REASONS | KF_PLACE_CLAIM_WARM */
} kf_place_request;

/* Why nodes were rejected: each node is counted once, under the first filter
 * it fails, in this order (the order of the fields). */
typedef struct kf_place_reasons {
    uint32_t excluded;  /* in req->exclude */
    uint32_t not_ready;
    uint32_t cordoned;
    uint32_t draining;
    uint32_t labels;    /* lacks a required label */
    uint32_t memory;    /* free memory < request */
    uint32_t cpu;       /* free cpu < request */
    uint32_t slots;     /* no free session slot */
} kf_place_reasons;

typedef struct kf_place_result {
    int node;               /* chosen node index, -1 if none */
    int64_t score;          /* its score */
    uint32_t nodes;         /* nodes known when the pick failed */
    kf_place_reasons why;   /* on -ENOSPC, unless KF_PLACE_NO_REASONS */
} kf_place_result;

/* kf_placement_new - an empty placement with `policy` (NULL: spread, no warm
 * bonus, seed 0). Returns 0 or -EINVAL / -ENOMEM. O(1). */
int kf_placement_new(kf_placement **out, const kf_place_policy *policy);

/* kf_placement_free - frees everything. NULL-safe; returns NULL. O(1). */
kf_placement *kf_placement_free(kf_placement *p);

/* kf_placement_set_policy - change mode, bonus or seed; re-ranks every node.
 * Returns 0 or -EINVAL. O(N log N). */
int kf_placement_set_policy(kf_placement *p, const kf_place_policy *policy);
void kf_placement_get_policy(const kf_placement *p, kf_place_policy *out);

/* kf_placement_add - adds a node (strings are copied). Returns its index
 * (>= 0), a handle that stays valid until the node is removed (a later add
 * may reuse it), or -EINVAL (bad field), -EEXIST (id known), -E2BIG
 * (KF_PLACE_NODES_MAX), -ENOMEM. Amortized O((1 + labels) log N); allocates
 * only when the node table or the label table grows. */
int kf_placement_add(kf_placement *p, const kf_place_node *node);

/* kf_placement_update - replaces everything about node `idx` (capacity,
 * usage, warm pool, flags, labels); node->id must be NULL or the same id.
 * Returns 0 or -ENOENT / -EINVAL / -ENOMEM (then the node is unchanged).
 * O((1 + labels) log N). */
int kf_placement_update(kf_placement *p, int idx, const kf_place_node *node);

/* kf_placement_remove - forgets node `idx`. Returns 0 or -ENOENT.
 * O((1 + labels) log N). */
int kf_placement_remove(kf_placement *p, int idx);

/* kf_placement_find - the index of node `id`, or -ENOENT. O(1) expected. */
int kf_placement_find(const kf_placement *p, const char *id);

/* kf_placement_get - describes node `idx` into *out (strings owned by p).
 * Returns 0 or -ENOENT. O(labels). */
int kf_placement_get(const kf_placement *p, int idx, kf_place_node *out);

/* Number of nodes, and one past the highest index in use (iterate
 * 0..end-1 and skip -ENOENT from kf_placement_get). O(1). */
size_t kf_placement_count(const kf_placement *p);
int kf_placement_end(const kf_placement *p);

/* kf_placement_score - node `idx`'s current score (whether or not it can take
 * sessions). Returns 0 and sets *score, or -ENOENT. O(1). */
int kf_placement_score(const kf_placement *p, int idx, int64_t *score);

/* Usage changes. Each re-ranks the node in every index it is in (all nodes,
 * each of its labels): O((1 + labels) log N) expected, no allocation.
 *
 * kf_placement_reserve - account one session of req->memory/req->cpu and one
 *   slot on `idx` (and one warm sandbox with KF_PLACE_CLAIM_WARM). Never
 *   refuses for lack of room (the placement was already committed; usage may
 *   exceed capacity). Returns 0 or -ENOENT.
 * kf_placement_release - the inverse (a claimed warm sandbox is not given
 *   back: the node refills its pool and reports it with set_warm). Returns
 *   -EINVAL, changing nothing, if it would take usage below zero (an
 *   accounting bug in the caller).
 * kf_placement_set_usage - absolute usage, as reported by the node.
 * kf_placement_set_warm - warm sandboxes ready on the node.
 * kf_placement_set_flags - KF_PLACE_NODE_* (ready, cordon, drain). */
int kf_placement_reserve(kf_placement *p, int idx, const kf_place_request *req);
int kf_placement_release(kf_placement *p, int idx, const kf_place_request *req);
int kf_placement_set_usage(kf_placement *p, int idx, uint64_t mem_used, uint64_t cpu_used,
                           uint32_t slots_used);
int kf_placement_set_warm(kf_placement *p, int idx, uint32_t warm_ready);
int kf_placement_set_flags(kf_placement *p, int idx, unsigned flags);

/* kf_placement_pick - the best node for `req`. Returns its index (>= 0) and
 * fills out->node/score; -ENOSPC if no node passes every filter (then
 * out->why counts the rejected nodes by first failed filter, unless
 * KF_PLACE_NO_REASONS); -EINVAL for a malformed request. Does not reserve:
 * call kf_placement_reserve() once the placement is committed. Never
 * allocates.
 *
 * Cost: O(log N) expected to find the node when filters prune by subtree
 * (each subtree keeps the largest free memory and cpu among its nodes with a
 * free slot, and the most free slots). A required label searches that
 * label's index instead of all nodes (the smallest one when several are
 * required). The worst case is a scan of the searched index,
 * when most nodes with enough of each resource individually are excluded,
 * lack another required label, or have the memory and the cpu split across
 * different nodes. On -ENOSPC the reason breakdown is one pass over all nodes,
 * O(N * labels), skipped with KF_PLACE_NO_REASONS. */
int kf_placement_pick(const kf_placement *p, const kf_place_request *req, kf_place_result *out);

/* kf_place_explain - a sentence a user can act on for a failed pick, e.g.
 * "no node has 4 GiB memory and 2 cpu free (12 nodes: 9 lack memory,
 * 3 cordoned)". Writes at most `size` bytes including the NUL; returns what
 * snprintf would. O(1). */
int kf_place_explain(const kf_place_request *req, const kf_place_result *res, char *buf,
                     size_t size);

/* kf_place_tie_key - the tie-break key of a node: FNV-1a 64 over the id
 * bytes, starting from the FNV offset basis xor `seed`, then the splitmix64
 * finalizer. Lower key wins a tie. Pure function, exposed so other
 * implementations (and tests) break ties identically. */
uint64_t kf_place_tie_key(uint64_t seed, const char *id);

#endif
