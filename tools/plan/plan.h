/* plan.h - kf_plan: the capacity planner behind `kfleetctl plan`, a pure
 * library (no network, no threads, no global state) that links the
 * scheduler's real placement library (scheduler/placement) and nothing of
 * the scheduler daemon.
 *
 * Two halves:
 *  - a discrete-event simulation of a workload (a daily arrival curve,
 *    session duration and idle-expiry distributions, session shapes) against
 *    node shapes, every decision made by kf_placement_pick(); it answers how
 *    many nodes a target rejection rate or wait percentile needs, and how
 *    utilisation and headroom move over the day (plan_sim.c, plan_search.c);
 *  - what-ifs on a snapshot of a live cluster (plan_whatif.c): can these
 *    nodes be drained (or lost) with their sessions placed elsewhere, and
 *    how many more sessions of a shape fit.
 *
 * Errors follow kfleet's convention: 0 or a negative errno, with a kf_error
 * naming what was wrong (the config field, the value, the allowed range).
 * Everything a user controls is bounded (KF_PLAN_*_MAX).
 */
#ifndef KF_PLAN_H
#define KF_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kf/error.h"
#include "placement.h"

#define KF_PLAN_INPUT_MAX (1u << 20)       /* bytes of a config file */
#define KF_PLAN_SESSIONS_MAX 10000000u     /* simulated arrivals per run */
#define KF_PLAN_NODES_MAX 100000u          /* nodes in one simulated cluster */
#define KF_PLAN_SLOTS_MAX 100000u          /* session slots of one node */
#define KF_PLAN_DURATION_MAX_S (366.0 * 86400.0)
#define KF_PLAN_SAMPLES_MAX 10000u         /* duration / step */
#define KF_PLAN_CURVE_MAX 1440u            /* points of the daily curve */
#define KF_PLAN_SHAPES_MAX 16u
#define KF_PLAN_GROUPS_MAX 64u
#define KF_PLAN_QUEUE_MAX 1000000u         /* sessions waiting at once */
#define KF_PLAN_NAME_MAX 31u               /* bytes of a node group name */
#define KF_PLAN_DAY_S 86400.0

/* A distribution of a duration, in seconds. */
typedef enum kf_plan_dist_kind {
    KF_PLAN_FIXED = 0,   /* a = the value */
    KF_PLAN_EXPONENTIAL, /* a = the mean */
    KF_PLAN_LOGNORMAL,   /* a = the mean, b = sigma of the underlying normal */
    KF_PLAN_UNIFORM,     /* a = min, b = max */
} kf_plan_dist_kind;

typedef struct kf_plan_dist {
    kf_plan_dist_kind kind;
    double a, b;
} kf_plan_dist;

/* What one kind of session asks for; `weight` is its share of arrivals. */
typedef struct kf_plan_shape {
    uint64_t memory; /* bytes */
    uint64_t cpu;    /* millicpus */
    double weight;   /* > 0 */
} kf_plan_shape;

/* `count` nodes alike. */
typedef struct kf_plan_group {
    char name[KF_PLAN_NAME_MAX + 1];
    uint32_t count;
    uint64_t memory; /* bytes */
    uint64_t cpu;    /* millicpus */
    uint32_t slots;
    unsigned nlabels;
    char labels[KF_PLACE_LABELS_MAX][KF_PLACE_LABEL_MAX + 1]; /* "key=value" */
} kf_plan_group;

/* One point of the daily arrival curve: `rate` sessions per second at
 * `at` seconds after midnight; linear between points, wrapping at 24 h. */
typedef struct kf_plan_point {
    double at;
    double rate;
} kf_plan_point;

typedef enum kf_plan_target_kind {
    KF_PLAN_TARGET_NONE = 0,  /* simulate the nodes as given */
    KF_PLAN_TARGET_REJECTION, /* fewest nodes with rejection rate <= rejection */
    KF_PLAN_TARGET_WAIT,      /* fewest nodes with wait p<percentile> <= wait_s */
} kf_plan_target_kind;

typedef struct kf_plan_config {
    uint64_t seed;
    double duration_s;     /* simulated time */
    double step_s;         /* sampling interval of the time series */
    uint32_t max_sessions; /* the run stops after this many arrivals */
    unsigned npoints;      /* >= 1; one point = a constant rate */
    kf_plan_point curve[KF_PLAN_CURVE_MAX];
    kf_plan_dist duration; /* how long a session is used */
    kf_plan_dist idle;     /* then, if abandoned, how long it sits until expiry */
    double abandon;        /* share of sessions never deleted (0..1) */
    unsigned nshapes;
    kf_plan_shape shapes[KF_PLAN_SHAPES_MAX];
    unsigned ngroups;
    kf_plan_group groups[KF_PLAN_GROUPS_MAX];
    kf_place_policy policy;
    double max_wait_s;  /* 0 = a session that does not fit is rejected at once */
    uint32_t queue_max; /* sessions waiting at once; more are rejected */
    kf_plan_target_kind target;
    double target_rejection; /* fraction */
    double target_pct;       /* wait percentile, e.g. 99 */
    double target_wait_s;
    uint32_t search_max_nodes;
} kf_plan_config;

/* kf_plan_config_defaults - one exponential session shape-less config with
 * everything optional set to its default (seed 1, 24 h, 10 min step, 10^6
 * sessions, spread, no queue, search up to 1000 nodes). */
void kf_plan_config_defaults(kf_plan_config *c);

/* kf_plan_config_parse - a config from YAML or JSON text (JSON when the
 * first non-blank byte is '{'). At most KF_PLAN_INPUT_MAX bytes. Returns 0,
 * or -EINVAL with err naming the field, the value and what is allowed
 * ("session.memory: '12Q' is not a size (e.g. 512M, 2G)"). YAML anchors and
 * aliases are refused. The file format is documented in README.md and
 * deploy/examples/plan.yaml. */
int kf_plan_config_parse(const char *text, size_t len, kf_plan_config *out, kf_error *err);

/* kf_plan_config_check - the cross-field checks parse ends with (also for a
 * config built in code). 0 or -EINVAL with err. */
int kf_plan_config_check(const kf_plan_config *c, kf_error *err);

/* kf_plan_parse_cpu - cores ("0.5", "2") or millicores ("500m") into
 * millicores. 0, -EINVAL (not a cpu amount) or -ERANGE (outside 1m..10^6
 * cores, or not whole millicores). */
int kf_plan_parse_cpu(const char *s, uint64_t *millis);

/* Which placement makes the decisions: the real one, or the naive
 * reference (placement_naive.c, the benchmark's baseline). */
typedef enum kf_plan_engine { KF_PLAN_ENGINE_INDEX = 0, KF_PLAN_ENGINE_NAIVE } kf_plan_engine;

/* One point of the time series: the state at time t. */
typedef struct kf_plan_sample {
    double t;            /* seconds since the start */
    uint32_t running;    /* sessions placed and not ended */
    uint32_t waiting;    /* sessions in the queue */
    uint32_t arrived;    /* arrivals since the previous sample */
    uint32_t rejected;   /* rejections since the previous sample */
    uint64_t mem_used;   /* bytes reserved */
    uint64_t cpu_used;   /* millicpus reserved */
} kf_plan_sample;

typedef struct kf_plan_result {
    uint32_t nodes;
    uint64_t mem_capacity, cpu_capacity, slot_capacity;
    double sim_end_s;      /* simulated time reached */
    uint64_t arrived, accepted, rejected, pending; /* pending: still queued at the end */
    uint64_t waited;       /* accepted after waiting in the queue */
    double rejection_rate; /* rejected / (arrived - pending) */
    double wait_p50, wait_p95, wait_p99, wait_pct, wait_max; /* seconds; wait_pct = the target's */
    uint32_t peak_running;
    double peak_util, mean_util; /* dominant share (memory, cpu, slots) of capacity */
    uint64_t events;             /* arrivals + departures processed */
    size_t nsamples;
    kf_plan_sample *samples; /* owned; kf_plan_result_done frees */
} kf_plan_result;

/* kf_plan_run - simulate `c` on a cluster of `nodes` nodes (0 = each
 * group's own count; otherwise spread over the groups in proportion to
 * their counts) with `engine` placing. Deterministic for a given config and
 * node count. Allocates once up front (nodes, the event heap sized by the
 * cluster's slots, the queue, the samples), never per event: each event is
 * O(log n) in the heap plus one placement pick and reserve/release.
 * Returns 0 and fills *out (free with kf_plan_result_done), or -EINVAL /
 * -ENOMEM with err. */
int kf_plan_run(const kf_plan_config *c, uint32_t nodes, kf_plan_engine engine, kf_plan_result *out,
                kf_error *err);
void kf_plan_result_done(kf_plan_result *r);

/* kf_plan_sample_util - the utilisation of sample s of run r: the largest
 * of its memory, cpu and slot shares of r's capacity (0..1, or above with
 * overcommit). */
double kf_plan_sample_util(const kf_plan_result *r, const kf_plan_sample *s);

/* kf_plan_search - the fewest nodes (<= c->search_max_nodes) that meet the
 * config's target, by doubling and then bisection over kf_plan_run (the same
 * seed for every run, so the runs see the same arrivals). Fills *best with
 * the run at the answer and *below with the run at one node fewer (nodes = 0
 * and nothing allocated if the answer is 1). Returns 0, -ERANGE (with err)
 * when even search_max_nodes misses the target (then *best is that run), or
 * -EINVAL if the config has no target. */
int kf_plan_search(const kf_plan_config *c, kf_plan_result *best, kf_plan_result *below, kf_error *err);

/* The Erlang-B cross-check: the cluster as `servers` identical slots. */
typedef struct kf_plan_erlang {
    uint64_t servers;    /* sessions of the mean shape that fit, summed over nodes */
    double offered;      /* mean arrival rate x mean holding time, in erlangs */
    double blocking;     /* Erlang B at `offered` */
    double peak_offered; /* at the curve's highest rate */
    double peak_blocking;
} kf_plan_erlang;

/* kf_erlang_b - the blocking probability of `servers` servers offered
 * `erlangs` of Poisson traffic (M/G/m/m), by the stable recurrence. O(m). */
double kf_erlang_b(double erlangs, uint64_t servers);

/* kf_plan_erlang_check - the closed form for the cluster of `nodes` nodes
 * (as in kf_plan_run) of config c. */
void kf_plan_erlang_check(const kf_plan_config *c, uint32_t nodes, kf_plan_erlang *out);

/* Means of the model: a distribution, the holding time, the arrival rate
 * over a day (exact for the piecewise-linear curve), the peak rate. */
double kf_plan_dist_mean(const kf_plan_dist *d);
double kf_plan_mean_hold(const kf_plan_config *c);
double kf_plan_mean_rate(const kf_plan_config *c);
double kf_plan_peak_rate(const kf_plan_config *c);

/* kf_plan_svg - an SVG chart of load against capacity over time (running
 * sessions, running + waiting, the capacity in sessions of the mean shape,
 * rejections per interval). Returns 0 or -EIO if writing failed. */
int kf_plan_svg(FILE *f, const kf_plan_config *c, const kf_plan_result *r);

/* ---- what-ifs on a live cluster (plan_whatif.c) ----------------------------- */

/* A node of the live cluster as kfleetctl read it: kf_place_node with its
 * reported usage (sessions, reserved memory/cpu) and flags (READY unless
 * not registered, CORDONED as the admin record says). Strings are the
 * caller's. */
typedef struct kf_plan_cluster kf_plan_cluster;

/* kf_plan_cluster_new - load `n` nodes (<= KF_PLACE_NODES_MAX) into a real
 * placement with `policy` (NULL = spread). Returns 0 or -EINVAL/-ENOMEM/
 * -EEXIST with err naming the node. */
int kf_plan_cluster_new(kf_plan_cluster **out, const kf_place_node *nodes, size_t n,
                        const kf_place_policy *policy, kf_error *err);
kf_plan_cluster *kf_plan_cluster_free(kf_plan_cluster *pc);

/* What happens to the sessions of nodes that go away (drain or loss). */
typedef struct kf_plan_move {
    uint32_t nodes_removed;
    uint64_t sessions;       /* sessions on them */
    uint64_t placed;         /* placed elsewhere */
    uint64_t unplaced;
    char why[KF_ERROR_MSG_MAX]; /* the first session that did not fit: why */
    /* Free capacity left on the nodes that take sessions, after the move. */
    uint64_t free_slots, free_memory, free_cpu;
} kf_plan_move;

/* kf_plan_remove_nodes - take nodes ids[0..n) out of the cluster (they no
 * longer take sessions) and place their sessions on the others with the real
 * placement, largest memory first. A node's sessions are known only by its
 * totals (count, reserved memory and cpu), so they are taken as equal
 * shares of those totals (remainders spread, so the sums are exact).
 * Cordoned and not-ready nodes take nothing. Modifies the cluster (the moved
 * sessions stay reserved). Returns 0, or -ENOENT with err for an unknown id. */
int kf_plan_remove_nodes(kf_plan_cluster *pc, const char *const *ids, size_t n, kf_plan_move *out,
                         kf_error *err);

/* kf_plan_fit - how many more sessions of (memory, cpu) fit, each placed by
 * the real placement (and reserved: the cluster is modified), up to `limit`.
 * *why says what stopped it. Returns the count (>= 0) or -EINVAL. */
int64_t kf_plan_fit(kf_plan_cluster *pc, uint64_t memory, uint64_t cpu, uint64_t limit, char *why,
                    size_t why_size);

/* Node selection helpers: the ids of nodes with label `label` ("zone=z1"),
 * or of the `count` nodes with the most sessions (ties: most memory
 * reserved, then id). Fill ids[] (pointers into the cluster, valid until it
 * is freed) with at most `max`; return how many. */
size_t kf_plan_nodes_with_label(const kf_plan_cluster *pc, const char *label, const char **ids, size_t max);
size_t kf_plan_busiest_nodes(const kf_plan_cluster *pc, size_t count, const char **ids, size_t max);

#endif
