/* metrics.h - a small metrics registry (counters, gauges, histograms with
 * fixed buckets) and its Prometheus text exposition (format 0.0.4), shared
 * by kfleet-agent and kfleet-scheduler.
 *
 * Model: a registry holds metric families (a name, a help text, a type and,
 * for histograms, the bucket bounds); a family holds series, one per set of
 * label values. Series are registered at start-up (every label value a
 * daemon uses is known then), so the hot path is one atomic add on a handle
 * and never allocates or looks anything up. What a scrape must compute
 * (sessions by state, pool sizes) is set by a collect callback the registry
 * runs before each exposition.
 *
 * Ownership and threads: the registry owns every family and series; handles
 * stay valid until kf_metrics_free. Updates (inc/add/set/observe) are safe
 * from any thread and never block for long: counters and gauges are
 * atomics, a histogram takes its own mutex for a few adds (so a scrape sees
 * its buckets, count and sum consistent). Registration and exposition take
 * the registry mutex. Every update function accepts a NULL handle and does
 * nothing, so code runs unchanged where no registry was set up (tools, unit
 * tests of other modules).
 */
#ifndef KF_METRICS_H
#define KF_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "kf/error.h"

#define KF_METRICS_MAX_LABELS 4       /* label pairs per series */
#define KF_METRICS_MAX_BUCKETS 32     /* histogram bounds (+Inf is implicit) */
#define KF_METRICS_MAX_TEXT 256       /* bytes of a name, label or help text */

typedef struct kf_metrics kf_metrics;
typedef struct kf_counter kf_counter;
typedef struct kf_gauge kf_gauge;
typedef struct kf_histogram kf_histogram;

/* One label pair. Names follow [a-zA-Z_][a-zA-Z0-9_]* and may not start
 * with "__"; values are any UTF-8 text (escaped on output). */
typedef struct kf_label_pair {
    const char *name;
    const char *value;
} kf_label_pair;

/* Called at the start of every exposition, with the registry's mutex NOT
 * held, from the scraping thread: set gauges from live state here. It must
 * be quick (it delays the scrape) and must not call kf_metrics_expose. */
typedef void (*kf_metrics_collect_fn)(void *userdata);

/* kf_metrics_new - an empty registry. -ENOMEM. */
int kf_metrics_new(kf_metrics **out);
/* kf_metrics_free - free the registry and every handle in it. No thread may
 * use a handle any more. NULL-safe; returns NULL. */
kf_metrics *kf_metrics_free(kf_metrics *m);

/* kf_metrics_set_collect - install the collect callback (NULL to remove).
 * Set it before the registry is exposed. */
void kf_metrics_set_collect(kf_metrics *m, kf_metrics_collect_fn fn, void *userdata);

/* kf_metrics_counter / _gauge / _histogram - register the series of family
 * `name` with `labels[0..n_labels)` and return its handle. The first call
 * for a name creates the family (its help, type and buckets); later calls
 * add series to it and must agree on the type (and buckets). Registering
 * the same label values twice returns the existing handle.
 * Errors (a programmer's, reported so a daemon can refuse to start): an
 * invalid name or label name, too many labels or buckets, bounds not
 * strictly increasing, a type or bucket mismatch: -EINVAL with a message;
 * -ENOMEM. Takes the registry mutex. Counter names should end in _total. */
int kf_metrics_counter(kf_metrics *m, const char *name, const char *help, const kf_label_pair *labels,
                       size_t n_labels, kf_counter **out, kf_error *err);
int kf_metrics_gauge(kf_metrics *m, const char *name, const char *help, const kf_label_pair *labels,
                     size_t n_labels, kf_gauge **out, kf_error *err);
int kf_metrics_histogram(kf_metrics *m, const char *name, const char *help, const double *bounds,
                         size_t n_bounds, const kf_label_pair *labels, size_t n_labels,
                         kf_histogram **out, kf_error *err);

/* A table of series to register in one call (kf_metrics_register). */
typedef enum kf_metric_type { KF_METRIC_COUNTER, KF_METRIC_GAUGE, KF_METRIC_HISTOGRAM } kf_metric_type;
typedef struct kf_metric_def {
    kf_metric_type type;
    const char *name;
    const char *help;
    /* Where the handle goes: a kf_counter **, kf_gauge ** or kf_histogram **
     * as `type` says. */
    void *handle;
    kf_label_pair label;   /* one label pair; .name NULL = none */
    const double *bounds;  /* histograms */
    size_t n_bounds;
} kf_metric_def;

/* kf_metrics_register - register defs[0..n) in order; stops at the first
 * error (see kf_metrics_counter), the message naming the metric. */
int kf_metrics_register(kf_metrics *m, const kf_metric_def *defs, size_t n, kf_error *err);

/* Updates. Thread-safe; NULL handle = no-op. */
void kf_counter_add(kf_counter *c, uint64_t n);
static inline void kf_counter_inc(kf_counter *c) { kf_counter_add(c, 1); }
uint64_t kf_counter_get(const kf_counter *c); /* 0 for NULL */
void kf_gauge_set(kf_gauge *g, int64_t v);
void kf_gauge_add(kf_gauge *g, int64_t delta);
int64_t kf_gauge_get(const kf_gauge *g);
/* kf_histogram_observe - count one value (seconds, bytes: the unit is the
 * metric's). NaN is ignored. */
void kf_histogram_observe(kf_histogram *h, double v);
/* kf_histogram_observe_since_us - observe the seconds elapsed since
 * `start_us` (kf_mono_us()). */
void kf_histogram_observe_since_us(kf_histogram *h, int64_t start_us);
uint64_t kf_histogram_count(kf_histogram *h);

/* Bucket sets for latencies, in seconds. */
extern const double kf_metrics_buckets_fast[];  /* 0.5 ms .. 5 s: etcd, RPCs */
extern const size_t kf_metrics_n_buckets_fast;
extern const double kf_metrics_buckets_slow[];  /* 1 ms .. 300 s: creates, executions */
extern const size_t kf_metrics_n_buckets_slow;

/* kf_metrics_expose - the Prometheus text format (0.0.4) of every family, in
 * registration order: "# HELP", "# TYPE", then one line per series
 * (histograms: _bucket{le=...} cumulative with +Inf, _sum, _count). Help
 * text escapes \ and newline; label values escape \, " and newline. Runs
 * the collect callback first. On success *out is a malloc'd NUL-terminated
 * buffer of *len bytes (caller frees). -ENOMEM. Takes the registry mutex
 * (and each histogram's, briefly). Cost: O(series), a few KiB. */
int kf_metrics_expose(kf_metrics *m, char **out, size_t *len);

#endif
