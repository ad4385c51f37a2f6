/* etcd_keeper.c - the lease keeper: one thread per lease that refreshes it
 * every TTL/3 through its own HTTP handle and reports, once, when the lease
 * is lost. The thread owns the handle; the keeper struct is shared with the
 * owner only through `stop` (atomic) and the mutex/condvar it sleeps on. */
#include "etcd_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kf/util.h"

struct kf_etcd_keeper {
    kf_etcd *c;
    int64_t lease;
    int64_t ttl_ms;
    kf_etcd_lease_lost_fn cb;
    void *userdata;
    CURL *h;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* Sleep until the monotonic time `until_ms` or until stopped. Returns
 * true if stopped. */
static bool keeper_sleep(kf_etcd_keeper *k, int64_t until_ms) {
    struct timespec ts = {.tv_sec = until_ms / 1000, .tv_nsec = (until_ms % 1000) * 1000000};
    pthread_mutex_lock(&k->mu);
    while (!atomic_load(&k->stop) && kf_mono_ms() < until_ms)
        if (pthread_cond_timedwait(&k->cv, &k->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&k->mu);
    return atomic_load(&k->stop);
}

static void *keeper_main(void *arg) {
    kf_etcd_keeper *k = arg;
    int64_t now = kf_mono_ms();
    int64_t expires = now + k->ttl_ms; /* as far as we know */
    int64_t next = now + k->ttl_ms / 3;
    for (;;) {
        if (keeper_sleep(k, next))
            break;
        kf_error e = {0};
        int64_t ttl_s = 0;
        int r = kf_etcd_keepalive_on(k->c, k->h, &k->stop, k->lease, &ttl_s, &e);
        if (atomic_load(&k->stop))
            break;
        now = kf_mono_ms();
        if (r == 0) {
            expires = now + ttl_s * 1000;
            next = now + ttl_s * 1000 / 3;
            continue;
        }
        if (r == -ENOENT) {
            k->cb(k->lease, -ENOENT, e.msg, k->userdata);
            break;
        }
        if (now >= expires) {
            char msg[KF_ERROR_MSG_MAX + 64];
            snprintf(msg, sizeof(msg), "no keepalive of lease %" PRId64 " got through within its TTL: %s",
                     k->lease, e.msg);
            k->cb(k->lease, -ETIMEDOUT, msg, k->userdata);
            break;
        }
        /* Transient failure: retry soon, but not in a tight loop. */
        int64_t retry = (expires - now) / 4;
        next = now + (retry < 200 ? 200 : retry > 1000 ? 1000 : retry);
    }
    return NULL;
}

int kf_etcd_lease_keeper_start(kf_etcd *c, int64_t lease, int64_t ttl_s, kf_etcd_lease_lost_fn cb,
                               void *userdata, kf_etcd_keeper **out, kf_error *err) {
    *out = NULL;
    if (!c || !cb || lease == 0 || ttl_s <= 0)
        return kf_error_set(err, -EINVAL, 0, "lease keeper needs a client, a callback, a lease and a TTL");
    kf_etcd_keeper *k = calloc(1, sizeof(*k));
    if (!k)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    k->c = c;
    k->lease = lease;
    k->ttl_ms = ttl_s * 1000;
    k->cb = cb;
    k->userdata = userdata;
    atomic_init(&k->stop, false);
    pthread_mutex_init(&k->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cv, &ca);
    pthread_condattr_destroy(&ca);
    k->h = curl_easy_init();
    int r = k->h ? pthread_create(&k->thread, NULL, keeper_main, k) : ENOMEM;
    if (r != 0) {
        if (k->h)
            curl_easy_cleanup(k->h);
        pthread_cond_destroy(&k->cv);
        pthread_mutex_destroy(&k->mu);
        free(k);
        return kf_error_set(err, -r, 0, "cannot start the lease keeper: %s", strerror(r));
    }
    *out = k;
    return 0;
}

kf_etcd_keeper *kf_etcd_lease_keeper_stop(kf_etcd_keeper *k) {
    if (!k)
        return NULL;
    pthread_mutex_lock(&k->mu);
    atomic_store(&k->stop, true);
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
    curl_easy_cleanup(k->h);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
    return NULL;
}
