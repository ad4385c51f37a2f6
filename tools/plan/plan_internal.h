/* plan_internal.h - what the files of kf_plan share and nothing outside
 * tools/plan (and its unit test) sees: the YAML reader, the random number
 * generator and the samplers, the departure-event heap.
 */
#ifndef KF_PLAN_INTERNAL_H
#define KF_PLAN_INTERNAL_H

#include <cJSON.h>
#include <stdint.h>

#include "plan.h"

#define KF_PLAN_YAML_DEPTH_MAX 32
#define KF_PLAN_YAML_NODES_MAX 100000

/* kf_plan_yaml_to_json - a YAML document as a cJSON tree; every scalar
 * becomes a string (the config reader parses numbers, sizes and durations
 * itself, with messages naming the field). Refuses anchors/aliases, more
 * than one document, nesting deeper than KF_PLAN_YAML_DEPTH_MAX and more
 * than KF_PLAN_YAML_NODES_MAX nodes. Returns 0 and a tree the caller
 * frees with cJSON_Delete, or -EINVAL (err says the line and why) /
 * -ENOMEM. */
int kf_plan_yaml_to_json(const char *text, size_t len, cJSON **out, kf_error *err);

/* xoshiro256** seeded through splitmix64: fast, and the same stream on
 * every machine for a given seed. */
typedef struct kf_plan_rng {
    uint64_t s[4];
} kf_plan_rng;

void kf_plan_rng_seed(kf_plan_rng *r, uint64_t seed);
uint64_t kf_plan_rng_next(kf_plan_rng *r);
/* Uniform in (0, 1]: never 0, so log() of it is finite. */
double kf_plan_rng_unit(kf_plan_rng *r);
/* One sample of d, in seconds (>= 0). */
double kf_plan_dist_sample(const kf_plan_dist *d, kf_plan_rng *r);

/* A departure: when, from which node, of which shape. 16 bytes. */
typedef struct kf_plan_event {
    double t;
    int32_t node;
    uint32_t shape;
} kf_plan_event;

/* A binary min-heap of departures on a caller-sized array: push and pop are
 * O(log n) and never allocate. */
typedef struct kf_plan_heap {
    kf_plan_event *ev;
    size_t n, cap;
} kf_plan_heap;

/* Returns 0, or -ENOSPC when full (the caller sized it wrong). */
int kf_plan_heap_push(kf_plan_heap *h, kf_plan_event e);
/* Removes the earliest event into *e; -ENOENT when empty. */
int kf_plan_heap_pop(kf_plan_heap *h, kf_plan_event *e);

/* The arrival rate (per second) at time t, from the daily curve. */
double kf_plan_rate_at(const kf_plan_config *c, double t);

/* Node counts per group for a cluster of `nodes` nodes (0 = as given):
 * proportional to the groups' counts, largest remainders first. */
void kf_plan_group_counts(const kf_plan_config *c, uint32_t nodes, uint32_t *counts);

#endif
