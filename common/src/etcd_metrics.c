/* etcd_metrics.c - etcd request latency and errors per request kind, fed by
 * the etcd client's observe hook (kf/etcd_metrics.h). Owns only the table
 * of handles; the series live in the daemon's registry.
 */
#include "kf/etcd_metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"

static const struct {
    const char *path, *op;
} ops[] = {
    {"/v3/kv/range", "range"},
    {"/v3/kv/put", "put"},
    {"/v3/kv/deleterange", "delete"},
    {"/v3/kv/txn", "txn"},
    {"/v3/kv/compaction", "compact"},
    {"/v3/lease/grant", "lease_grant"},
    {"/v3/lease/keepalive", "lease_keepalive"},
    {"/v3/lease/revoke", "lease_revoke"},
    {"/v3/lease/timetolive", "lease_ttl"},
    {NULL, "other"}, /* last: anything else */
};
#define N_OPS KF_ARRAY_SIZE(ops)

struct kf_etcd_metrics {
    kf_histogram *latency[N_OPS];
    kf_counter *errors[N_OPS];
};

int kf_etcd_metrics_new(kf_metrics *m, kf_etcd_metrics **out, kf_error *err) {
    *out = NULL;
    kf_etcd_metrics *em = calloc(1, sizeof(*em));
    if (!em)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    for (size_t i = 0; i < N_OPS; i++) {
        kf_label_pair l = {"op", ops[i].op};
        int r = kf_metrics_histogram(m, "kfleet_etcd_request_duration_seconds",
                                     "Time of one etcd request (all endpoints tried), by request kind.",
                                     kf_metrics_buckets_fast, kf_metrics_n_buckets_fast, &l, 1,
                                     &em->latency[i], err);
        if (r == 0)
            r = kf_metrics_counter(m, "kfleet_etcd_request_errors_total",
                                   "etcd requests that failed (unreachable, timed out, refused), by request kind.",
                                   &l, 1, &em->errors[i], err);
        if (r < 0) {
            free(em);
            return r;
        }
    }
    *out = em;
    return 0;
}

kf_etcd_metrics *kf_etcd_metrics_free(kf_etcd_metrics *em) {
    free(em);
    return NULL;
}

void kf_etcd_metrics_observe(void *userdata, const char *path, int64_t duration_us, int result) {
    kf_etcd_metrics *em = userdata;
    if (!em)
        return;
    size_t i = 0;
    while (ops[i].path && strcmp(ops[i].path, path))
        i++;
    kf_histogram_observe(em->latency[i], (double)duration_us / 1e6);
    if (result < 0)
        kf_counter_inc(em->errors[i]);
}
