/* pool.c - the warm pool: sandboxes started ahead of demand, each with a
 * ready kernel, so that a create is a claim (a pointer pop and a cgroup
 * update) instead of a start. One refill thread owns starting them, and
 * stopping the surplus when the target falls (the scheduler sizes pools
 * from demand: registry.c applies its /kfleet/pools/<node> record through
 * kf_pool_set_target); claims come from handler threads. The pool list
 * and the target are guarded by table_lock. */
#include "session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kf/log.h"
#include "kf/util.h"

/* Refill pacing: a sandbox start (mkfs, python: ~1 s of CPU) waits until
 * no claim came for REFILL_QUIET_MS, so the creates of a burst are served
 * first, but never more than REFILL_MAX_DEFER_MS, so a steady stream of
 * creates still gets its pool refilled. */
#define REFILL_QUIET_MS 50
#define REFILL_MAX_DEFER_MS 1000

static pthread_t g_pool_thread;
static int g_pool_running;

void kf_pool_add(kf_agent *a, kf_session *s) {
    pthread_mutex_lock(&a->table_lock);
    s->state = KF_SS_POOLED;
    s->pool_next = a->pool;
    a->pool = s;
    a->pool_ready++;
    pthread_mutex_unlock(&a->table_lock);
}

kf_session *kf_pool_claim(kf_agent *a, const kf_limits *l) {
    pthread_mutex_lock(&a->table_lock);
    kf_session **pp = &a->pool;
    while (*pp) {
        kf_session *s = *pp;
        /* The volume is made at start: only its size must match. */
        if (s->limits.disk_bytes == l->disk_bytes && s->limits.disk_inodes == l->disk_inodes) {
            *pp = s->pool_next;
            s->pool_next = NULL;
            s->state = KF_SS_STARTING;
            a->pool_ready--;
            a->pool_claims_total++;
            a->pool_last_claim_ms = kf_mono_ms();
            pthread_cond_broadcast(&a->table_cond);
            pthread_mutex_unlock(&a->table_lock);
            return s;
        }
        pp = &s->pool_next;
    }
    pthread_cond_broadcast(&a->table_cond); /* a miss is demand too */
    pthread_mutex_unlock(&a->table_lock);
    return NULL;
}

kf_session *kf_pool_claim_any(kf_agent *a) {
    pthread_mutex_lock(&a->table_lock);
    kf_session *s = a->pool;
    if (s) {
        a->pool = s->pool_next;
        s->pool_next = NULL;
        a->pool_ready--;
    }
    pthread_mutex_unlock(&a->table_lock);
    return s;
}

uint32_t kf_pool_set_target(kf_agent *a, uint32_t n) {
    if (n > a->cfg.pool_max)
        n = a->cfg.pool_max;
    pthread_mutex_lock(&a->table_lock);
    uint32_t was = a->pool_target;
    a->pool_target = n;
    if (n != was)
        pthread_cond_broadcast(&a->table_cond);
    pthread_mutex_unlock(&a->table_lock);
    if (n != was)
        kf_info("pool: target %u (was %u)", n, was);
    return n;
}

/* Stops one warm sandbox when the pool holds more than its target (the
 * newest: LIFO). Returns false when none had to go. */
static bool pool_trim(kf_agent *a) {
    pthread_mutex_lock(&a->table_lock);
    kf_session *s = NULL;
    if (a->pool_ready > a->pool_target && a->pool) {
        s = a->pool;
        a->pool = s->pool_next;
        s->pool_next = NULL;
        a->pool_ready--;
    }
    pthread_mutex_unlock(&a->table_lock);
    if (!s)
        return false;
    pthread_mutex_lock(&s->lock);
    kf_sandbox_destroy(a, s);
    pthread_mutex_unlock(&s->lock);
    kf_agent_slot_free(a, s->slot);
    kf_session_unref(a, s);
    kf_debug("pool: a warm sandbox stopped (above the target)");
    return true;
}

/* Returns once claims have been quiet for REFILL_QUIET_MS, or after
 * REFILL_MAX_DEFER_MS, or at once when the agent stops. */
static void refill_pace(kf_agent *a) {
    int64_t start = kf_mono_ms();
    for (;;) {
        pthread_mutex_lock(&a->table_lock);
        int64_t last = a->pool_last_claim_ms;
        int stop = a->stopping;
        pthread_mutex_unlock(&a->table_lock);
        int64_t now = kf_mono_ms();
        if (stop || now - last >= REFILL_QUIET_MS || now - start >= REFILL_MAX_DEFER_MS)
            return;
        int64_t wait = last + REFILL_QUIET_MS - now;
        usleep((useconds_t)(wait > 0 ? wait : 1) * 1000);
    }
}

static void *pool_loop(void *arg) {
    kf_agent *a = arg;
    int failures = 0;
    for (;;) {
        pthread_mutex_lock(&a->table_lock);
        while (!a->stopping && a->pool_ready <= a->pool_target &&
               (a->pool_ready >= a->pool_target ||
                a->n_sessions + a->pool_ready >= a->cfg.max_sessions)) {
            pthread_cond_wait(&a->table_cond, &a->table_lock);
        }
        int stop = a->stopping;
        int shrink = a->pool_ready > a->pool_target;
        int refill = a->pool_ready > 0 || a->pool_claims_total > 0;
        pthread_mutex_unlock(&a->table_lock);
        if (stop)
            break;
        if (shrink) {
            pool_trim(a);
            continue;
        }
        if (refill)
            refill_pace(a);
        pthread_mutex_lock(&a->table_lock);
        a->pool_starting++;
        pthread_mutex_unlock(&a->table_lock);
        kf_error err = {0};
        int64_t t0 = kf_mono_ms();
        kf_session *s = kf_session_start_cold(a, &a->cfg.defaults, &err);
        pthread_mutex_lock(&a->table_lock);
        a->pool_starting--;
        pthread_mutex_unlock(&a->table_lock);
        if (s) {
            failures = 0;
            kf_pool_add(a, s);
            kf_debug("pool: sandbox %s ready in %lld ms", s->sbid, (long long)(kf_mono_ms() - t0));
        } else {
            /* Back off so a broken host does not spin; claims fall back to cold starts. */
            failures++;
            kf_warn("pool: cannot start a warm sandbox: %s", err.msg);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += failures < 6 ? (1 << failures) : 60;
            pthread_mutex_lock(&a->table_lock);
            if (!a->stopping)
                pthread_cond_timedwait(&a->table_cond, &a->table_lock, &ts);
            pthread_mutex_unlock(&a->table_lock);
        }
    }
    return NULL;
}

int kf_pool_start(kf_agent *a) {
    if (pthread_create(&g_pool_thread, NULL, pool_loop, a) != 0)
        return -EAGAIN;
    g_pool_running = 1;
    return 0;
}

/* Stops the refill thread. Warm sandboxes are kept: they are re-adopted
 * into the pool on the next start. */
void kf_pool_stop(kf_agent *a) {
    pthread_mutex_lock(&a->table_lock);
    a->stopping = 1;
    pthread_cond_broadcast(&a->table_cond);
    pthread_mutex_unlock(&a->table_lock);
    if (g_pool_running)
        pthread_join(g_pool_thread, NULL);
    g_pool_running = 0;
}
