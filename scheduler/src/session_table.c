/* session_table.c - session id -> node and tenant, the routing table of
 * every call but CreateSession, the tenant filter of ListSessions and the
 * source of the tenants' quota usage. Fed by a watch on /kfleet/sessions/
 * (list first, then events; the records are written by create.c with a txn
 * and removed by DeleteSession), plus local updates right after our own
 * commits so a client's next call never races the watch.
 *
 * A record the leader marked LOST stays in the table with `lost` set
 * (lost.c answers for it) until DeleteSession removes it.
 *
 * A chained hash table under `mu`: lookups O(1) expected. The watch thread
 * writes; handler threads read. A miss asks etcd directly (a record written
 * by another scheduler replica that the watch has not delivered yet).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kf/log.h"
#include "kf/util.h"
#include "scheduler.h"

#define NBUCKETS 4096 /* fixed in v0; resize when clusters hold millions of sessions */

typedef struct entry {
    struct entry *next;
    char id[KF_SESSION_ID_MAX + 1];
    kf_session_ref ref;
} entry;

struct kf_session_table {
    kf_etcd *etcd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool listed;       /* under mu */
    entry *b[NBUCKETS]; /* under mu */
    size_t n;
    kf_etcd_watch *watch;
};

static size_t hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h % NBUCKETS);
}

static entry **find_slot(kf_session_table *t, const char *id) {
    entry **p = &t->b[hash(id)];
    while (*p && strcmp((*p)->id, id))
        p = &(*p)->next;
    return p;
}

static void put_locked(kf_session_table *t, const char *id, const kf_session_ref *ref) {
    if (strlen(id) > KF_SESSION_ID_MAX)
        return;
    entry **p = find_slot(t, id);
    if (!*p) {
        entry *e = calloc(1, sizeof(*e));
        if (!e)
            return;
        snprintf(e->id, sizeof(e->id), "%s", id);
        *p = e;
        t->n++;
    }
    (*p)->ref = *ref;
}

static void remove_locked(kf_session_table *t, const char *id) {
    entry **p = find_slot(t, id);
    if (*p) {
        entry *e = *p;
        *p = e->next;
        free(e);
        t->n--;
    }
}

static void clear_locked(kf_session_table *t) {
    for (size_t i = 0; i < NBUCKETS; i++) {
        while (t->b[i]) {
            entry *e = t->b[i];
            t->b[i] = e->next;
            free(e);
        }
    }
    t->n = 0;
}

static void apply_put(kf_session_table *t, const kf_etcd_kv *kv) {
    kf_session_ref ref;
    const char *id = kv->key + strlen(KF_KEY_SESSIONS);
    if (kf_session_parse_record(kv->value, kv->value_len, &ref) < 0) {
        kf_warn("malformed session record %s ignored", kv->key);
        return;
    }
    put_locked(t, id, &ref);
}

static int on_watch(const kf_etcd_watch_notify *n, void *ud) {
    kf_session_table *t = ud;
    if (n->kind == KF_ETCD_WATCH_DISCONNECTED) {
        kf_warn("etcd watch on %s: %s (reconnecting)", KF_KEY_SESSIONS, n->message);
        return 0;
    }
    pthread_mutex_lock(&t->mu);
    if (n->kind == KF_ETCD_WATCH_RESYNC) {
        clear_locked(t);
        for (size_t i = 0; i < n->kvs->n; i++)
            apply_put(t, &n->kvs->kvs[i]);
        t->listed = true;
        pthread_cond_broadcast(&t->cv);
    } else {
        for (size_t i = 0; i < n->n_events; i++) {
            const kf_etcd_event *ev = &n->events[i];
            if (ev->type == KF_ETCD_EVENT_PUT)
                apply_put(t, &ev->kv);
            else
                remove_locked(t, ev->kv.key + strlen(KF_KEY_SESSIONS));
        }
    }
    pthread_mutex_unlock(&t->mu);
    return 0;
}

int kf_session_table_start(kf_etcd *c, int wait_ms, kf_session_table **out, kf_error *err) {
    kf_session_table *t = calloc(1, sizeof(*t));
    if (!t)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    t->etcd = c;
    pthread_mutex_init(&t->mu, NULL);
    kf_cond_init_mono(&t->cv);
    int rc = kf_etcd_watch_prefix(c, KF_KEY_SESSIONS, KF_ETCD_WATCH_FROM_SNAPSHOT, false, on_watch,
                                  t, &t->watch, err);
    if (rc < 0) {
        kf_session_table_free(t);
        return rc;
    }
    struct timespec dl = kf_mono_deadline(wait_ms);
    pthread_mutex_lock(&t->mu);
    while (!t->listed)
        if (pthread_cond_timedwait(&t->cv, &t->mu, &dl) == ETIMEDOUT)
            break;
    kf_info("session table: %zu session(s)%s", t->n, t->listed ? "" : " (not listed yet)");
    pthread_mutex_unlock(&t->mu);
    *out = t;
    return 0;
}

kf_session_table *kf_session_table_free(kf_session_table *t) {
    if (!t)
        return NULL;
    t->watch = kf_etcd_watch_stop(t->watch);
    clear_locked(t);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
    return NULL;
}

int kf_session_table_cached(kf_session_table *t, const char *id, kf_session_ref *out) {
    if (!id[0] || strlen(id) > KF_SESSION_ID_MAX)
        return -ENOENT;
    pthread_mutex_lock(&t->mu);
    entry *e = *find_slot(t, id);
    if (e)
        *out = e->ref;
    pthread_mutex_unlock(&t->mu);
    return e ? 0 : -ENOENT;
}

int kf_session_table_lookup(kf_session_table *t, const char *id, kf_session_ref *out) {
    if (!id[0] || strlen(id) > KF_SESSION_ID_MAX)
        return -ENOENT;
    if (kf_session_table_cached(t, id, out) == 0)
        return 0;
    char key[KF_SESSION_KEY_MAX];
    kf_session_key(key, id);
    kf_etcd_kv kv = {0};
    if (kf_etcd_get(t->etcd, key, strlen(key), &kv, NULL) < 0)
        return -ENOENT;
    int rc = kf_session_parse_record(kv.value, kv.value_len, out) < 0 ? -ENOENT : 0;
    kf_etcd_kv_done(&kv);
    return rc;
}

void kf_session_table_usage(kf_session_table *t, const char *tenant, uint64_t *sessions,
                            uint64_t *memory_bytes) {
    uint64_t n = 0, mem = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < NBUCKETS; i++)
        for (const entry *e = t->b[i]; e; e = e->next)
            if (!e->ref.lost && !strcmp(e->ref.tenant, tenant)) {
                n++;
                mem = mem + e->ref.memory_bytes < mem ? UINT64_MAX : mem + e->ref.memory_bytes;
            }
    pthread_mutex_unlock(&t->mu);
    *sessions = n;
    *memory_bytes = mem;
}

int kf_session_table_on_node(kf_session_table *t, const char *node, char (**ids)[KF_SESSION_ID_MAX + 1],
                             size_t *n) {
    pthread_mutex_lock(&t->mu);
    size_t k = 0;
    char(*a)[KF_SESSION_ID_MAX + 1] = calloc(t->n ? t->n : 1, sizeof(*a));
    for (size_t i = 0; a && i < NBUCKETS; i++)
        for (const entry *e = t->b[i]; e; e = e->next)
            if (!strcmp(e->ref.node, node) && !e->ref.lost && k < t->n)
                memcpy(a[k++], e->id, sizeof(a[0]));
    pthread_mutex_unlock(&t->mu);
    if (!a)
        return -ENOMEM;
    *ids = a;
    *n = k;
    return 0;
}

void kf_session_table_put(kf_session_table *t, const char *id, const kf_session_ref *ref) {
    pthread_mutex_lock(&t->mu);
    put_locked(t, id, ref);
    pthread_mutex_unlock(&t->mu);
}

void kf_session_table_remove(kf_session_table *t, const char *id) {
    pthread_mutex_lock(&t->mu);
    remove_locked(t, id);
    pthread_mutex_unlock(&t->mu);
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(a, b);
}

int kf_session_table_nodes(kf_session_table *t, char (**out)[KF_PLACE_ID_MAX + 1], size_t *n) {
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&t->mu);
    char(*names)[KF_PLACE_ID_MAX + 1] = calloc(t->n ? t->n : 1, sizeof(*names));
    size_t k = 0;
    if (names)
        for (size_t i = 0; i < NBUCKETS; i++)
            for (const entry *e = t->b[i]; e; e = e->next)
                if (!e->ref.lost && k < t->n)
                    memcpy(names[k++], e->ref.node, sizeof(names[0]));
    pthread_mutex_unlock(&t->mu);
    if (!names)
        return -ENOMEM;
    qsort(names, k, sizeof(names[0]), cmp_name);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (!u || strcmp(names[u - 1], names[i]))
            memmove(names[u++], names[i], sizeof(names[0]));
    *out = names;
    *n = u;
    return 0;
}

int kf_session_table_lost(kf_session_table *t, const char *tenant, kf_session_item **out, size_t *n) {
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&t->mu);
    size_t k = 0, cap = 0;
    for (size_t i = 0; i < NBUCKETS; i++)
        for (const entry *e = t->b[i]; e; e = e->next)
            cap += e->ref.lost && (!tenant || !strcmp(e->ref.tenant, tenant));
    kf_session_item *items = calloc(cap ? cap : 1, sizeof(*items));
    if (items)
        for (size_t i = 0; i < NBUCKETS; i++)
            for (const entry *e = t->b[i]; e; e = e->next)
                if (e->ref.lost && (!tenant || !strcmp(e->ref.tenant, tenant)) && k < cap) {
                    memcpy(items[k].id, e->id, sizeof(items[k].id));
                    items[k++].ref = e->ref;
                }
    pthread_mutex_unlock(&t->mu);
    if (!items)
        return -ENOMEM;
    *out = items;
    *n = k;
    return 0;
}
