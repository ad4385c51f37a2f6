/* registry_watch.c - follows this node's admin and pool records through
 * two etcd watches (the keys are far apart in the keyspace, so one watch
 * over both would carry every other node's records too).
 *
 * Each record is read with a range and its watch started from the
 * range's revision + 1, so nothing written between the read and the watch
 * is lost. The etcd client's watch reconnects by itself after a broken
 * stream or an etcd restart, resuming after the last revision it
 * delivered (a compaction makes it list the key again: a RESYNC), and the
 * values applied so far stay meanwhile.
 *
 * Applying: the pool record's target goes to kf_pool_set_target (bounded
 * by --pool-max there); no record means --pool. The admin record is kept
 * here, under `mu`, for GetNodeStats, /metrics and readiness. A malformed
 * record is logged (once per version) and ignored: the last good value
 * stays.
 *
 * Threads: a record is applied by its watch's thread, or by the registry
 * thread in kf_registry_watch_sync while that watch is stopped, never by
 * both at once; so `watch` and `warned_rev` need no lock.
 */
#include "registry_watch.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/log.h"

typedef struct record record;
typedef void (*apply_fn)(record *rec, const kf_etcd_kv *kv);

struct record {
    kf_registry_watch *w;
    const char *what;      /* "admin", "pool": for messages */
    char key[128];
    apply_fn apply;        /* kv NULL = no record */
    kf_etcd_watch *watch;  /* NULL when stopped */
    int64_t warned_rev;    /* mod revision of the last malformed version logged */
};

struct kf_registry_watch {
    kf_agent *a;
    kf_etcd *etcd;
    record admin_rec, pool_rec;

    pthread_mutex_t mu;
    bool admin_known;      /* under mu */
    kf_node_admin admin;   /* under mu */
};

static void malformed(record *rec, const kf_etcd_kv *kv) {
    if (kv->mod_revision == rec->warned_rev)
        return; /* a re-read of the same version: said already */
    rec->warned_rev = kv->mod_revision;
    kf_warn("registry: %s is not a valid %s record; ignored", rec->key, rec->what);
}

static void apply_admin(record *rec, const kf_etcd_kv *kv) {
    kf_registry_watch *w = rec->w;
    kf_node_admin admin = {0};
    if (kv && kf_node_admin_parse(kv->value, kv->value_len, &admin) < 0) {
        malformed(rec, kv);
        return;
    }
    pthread_mutex_lock(&w->mu);
    bool changed = !w->admin_known || w->admin.cordoned != admin.cordoned;
    w->admin = admin;
    w->admin_known = true;
    pthread_mutex_unlock(&w->mu);
    if (changed && admin.cordoned)
        kf_info("registry: node is cordoned by '%s': %s", admin.by, admin.reason);
}

static void apply_pool(record *rec, const kf_etcd_kv *kv) {
    kf_agent *a = rec->w->a;
    uint32_t target = a->cfg.pool_size;
    if (kv && kf_pool_record_parse(kv->value, kv->value_len, &target) < 0) {
        malformed(rec, kv);
        return;
    }
    kf_pool_set_target(a, target);
}

/* Runs on the record's watch thread. */
static int on_watch(const kf_etcd_watch_notify *n, void *userdata) {
    record *rec = userdata;
    switch (n->kind) {
    case KF_ETCD_WATCH_EVENTS:
        for (size_t i = 0; i < n->n_events; i++)
            rec->apply(rec, n->events[i].type == KF_ETCD_EVENT_PUT ? &n->events[i].kv : NULL);
        break;
    case KF_ETCD_WATCH_RESYNC:
        rec->apply(rec, n->kvs->n ? &n->kvs->kvs[0] : NULL);
        break;
    case KF_ETCD_WATCH_DISCONNECTED:
        break; /* it reconnects by itself; the values applied stay */
    }
    return 0;
}

static void record_init(kf_registry_watch *w, record *rec, const char *prefix, const char *what,
                        apply_fn apply) {
    rec->w = w;
    rec->what = what;
    rec->apply = apply;
    snprintf(rec->key, sizeof(rec->key), "%s%s", prefix, w->a->cfg.node_name);
}

static int record_sync(kf_registry_watch *w, record *rec, kf_error *err) {
    size_t len = strlen(rec->key);
    kf_etcd_kvs kvs = {0};
    int rc = kf_etcd_range(w->etcd, rec->key, len, NULL, 0, 1, 0, &kvs, err);
    if (rc < 0)
        return kf_error_wrap(err, "cannot read %s", rec->key);
    rec->watch = kf_etcd_watch_stop(rec->watch);
    rec->apply(rec, kvs.n ? &kvs.kvs[0] : NULL);
    rc = kf_etcd_watch_start(w->etcd, rec->key, len, NULL, 0, kvs.revision + 1, false, on_watch, rec,
                             &rec->watch, err);
    kf_etcd_kvs_done(&kvs);
    if (rc < 0)
        return kf_error_wrap(err, "cannot watch %s", rec->key);
    return 0;
}

int kf_registry_watch_new(kf_agent *a, kf_etcd *etcd, kf_registry_watch **out, kf_error *err) {
    kf_registry_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    w->a = a;
    w->etcd = etcd;
    pthread_mutex_init(&w->mu, NULL);
    record_init(w, &w->admin_rec, KF_KEY_ADMIN, "admin", apply_admin);
    record_init(w, &w->pool_rec, KF_KEY_POOLS, "pool", apply_pool);
    *out = w;
    return 0;
}

int kf_registry_watch_sync(kf_registry_watch *w, kf_error *err) {
    int rc = record_sync(w, &w->admin_rec, err);
    kf_error other = {0};
    int rc2 = record_sync(w, &w->pool_rec, rc < 0 ? &other : err);
    return rc < 0 ? rc : rc2;
}

void kf_registry_watch_stop(kf_registry_watch *w) {
    w->admin_rec.watch = kf_etcd_watch_stop(w->admin_rec.watch);
    w->pool_rec.watch = kf_etcd_watch_stop(w->pool_rec.watch);
}

kf_registry_watch *kf_registry_watch_free(kf_registry_watch *w) {
    if (!w)
        return NULL;
    kf_registry_watch_stop(w);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return NULL;
}

void kf_registry_watch_admin(kf_registry_watch *w, kf_node_admin *out, bool *known) {
    pthread_mutex_lock(&w->mu);
    *out = w->admin;
    *known = w->admin_known;
    pthread_mutex_unlock(&w->mu);
}
