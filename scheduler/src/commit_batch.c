/* commit_batch.c - group commit of new session records.
 *
 * Every CreateSession commits its session record (and, with a request id,
 * its request record) in an etcd txn guarded by compares: the session key
 * is absent, the node record is the one placement relied on, the request
 * key is absent. Through the JSON gateway each txn costs etcd an HTTP
 * request, a loopback gRPC call and a raft entry, which under a burst of
 * creates makes etcd the bottleneck of the create path. So commits that
 * arrive while others are in flight are folded into one txn:
 *
 *   - a commit runs at once when fewer than KF_COMMIT_INFLIGHT txns are in
 *     flight (a lone create waits for nobody); otherwise it queues;
 *   - whichever waiting thread finds a free slot takes up to
 *     KF_COMMIT_BATCH_MAX queued entries (never two with the same key: etcd
 *     refuses a txn that puts one key twice) and runs them as one txn: the
 *     union of their compares (a node's compare once), all their puts;
 *   - the txn succeeded: every entry won. A compare failed, or etcd refused
 *     the txn without applying it (a request lease that is gone, a bad
 *     argument): each entry is committed again on its own, which tells
 *     exactly which lost (and whether its request id was taken); each is
 *     answered as soon as its own txn ran. A
 *     transport failure (outcome unknown) is every entry's error: each
 *     create then deletes its records, as an unbatched create would (its
 *     request record only if the value is still its own: create.c).
 *
 * Entries live on their callers' stacks; the queue and the in-flight count
 * are under b->mu, and an entry's result fields are written by the thread
 * that ran its txn before it sets `done` under the lock; after that the
 * entry is never touched (its owner may have returned).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kf/log.h"
#include "sched_metrics.h"
#include "scheduler.h"

#define KF_COMMIT_INFLIGHT 2 /* txns of new sessions in flight at once */
#define KF_COMMIT_BATCH_MAX 32 /* entries per txn: <= 3 compares and 2 puts each (etcd: 128) */

struct kf_commit_batch {
    kf_etcd *etcd;
    struct kf_sched_metrics *metrics; /* NULL: none */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kf_commit_entry *head, **tail;
    unsigned inflight;
    uint64_t txns, entries; /* committed so far (under mu): the batching the metrics show */
};

int kf_commit_batch_new(kf_etcd *etcd, struct kf_sched_metrics *metrics, kf_commit_batch **out) {
    kf_commit_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->etcd = etcd;
    b->metrics = metrics;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->tail = &b->head;
    *out = b;
    return 0;
}

kf_commit_batch *kf_commit_batch_free(kf_commit_batch *b) {
    if (!b)
        return NULL;
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
    return NULL;
}

void kf_commit_batch_stats(kf_commit_batch *b, uint64_t *txns, uint64_t *entries) {
    pthread_mutex_lock(&b->mu);
    *txns = b->txns;
    *entries = b->entries;
    pthread_mutex_unlock(&b->mu);
}

static kf_etcd_cmp cmp_absent(const char *key) {
    return (kf_etcd_cmp){.key = key, .key_len = strlen(key), .target = KF_ETCD_CMP_CREATE,
                         .result = KF_ETCD_CMP_EQUAL, .number = 0};
}

static kf_etcd_op put_op(const char *key, const char *value, int64_t lease) {
    return (kf_etcd_op){.type = KF_ETCD_OP_PUT, .key = key, .key_len = strlen(key), .value = value,
                        .value_len = strlen(value), .lease = lease};
}

/* One entry in a txn of its own; on a failed compare a request record that
 * exists (read in the failure branch) means its request id was taken. */
static void commit_one(kf_etcd *etcd, kf_commit_entry *e) {
    kf_etcd_cmp cmps[3] = {
        cmp_absent(e->key),
        {.key = e->node_key, .key_len = strlen(e->node_key), .target = KF_ETCD_CMP_MOD,
         .result = KF_ETCD_CMP_EQUAL, .number = e->node_mod_revision},
    };
    kf_etcd_op puts[2] = {put_op(e->key, e->record, 0)};
    e->won = e->rid_taken = false;
    if (!e->request_key) {
        e->rc = kf_etcd_txn(etcd, cmps, 2, puts, 1, NULL, 0, &e->won, NULL, &e->err);
        return;
    }
    cmps[2] = cmp_absent(e->request_key);
    puts[1] = put_op(e->request_key, e->request_record, e->lease);
    kf_etcd_op check = {.type = KF_ETCD_OP_RANGE, .key = e->request_key, .key_len = strlen(e->request_key)};
    kf_etcd_txn_result res = {0};
    e->rc = kf_etcd_txn(etcd, cmps, 3, puts, 2, &check, 1, &e->won, &res, &e->err);
    if (e->rc == 0 && !e->won && res.n == 1 && res.results[0].kvs.n > 0)
        e->rid_taken = true;
    kf_etcd_txn_result_done(&res);
}

/* Marks `e` done and wakes its owner, who may then return (and its entry
 * with it): nothing may touch `e` afterwards. */
static void finish_one(kf_commit_batch *b, kf_commit_entry *e) {
    pthread_mutex_lock(&b->mu);
    e->done = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* The entries in one txn (n >= 2; keys distinct, see take()). Returns how
 * many of es[0..n) it has finished itself (finish_one): when the txn must
 * be redone entry by entry, each is finished as soon as its own txn ran,
 * so the winners do not wait for the losers. */
static size_t commit_many(kf_commit_batch *b, kf_commit_entry **es, size_t n) {
    kf_etcd *etcd = b->etcd;
    kf_etcd_cmp cmps[3 * KF_COMMIT_BATCH_MAX];
    kf_etcd_op puts[2 * KF_COMMIT_BATCH_MAX];
    size_t nc = 0, np = 0;
    for (size_t i = 0; i < n; i++) {
        kf_commit_entry *e = es[i];
        cmps[nc++] = cmp_absent(e->key);
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !strcmp(es[j]->node_key, e->node_key) && es[j]->node_mod_revision == e->node_mod_revision;
        if (!seen)
            cmps[nc++] = (kf_etcd_cmp){.key = e->node_key, .key_len = strlen(e->node_key),
                                       .target = KF_ETCD_CMP_MOD, .result = KF_ETCD_CMP_EQUAL,
                                       .number = e->node_mod_revision};
        puts[np++] = put_op(e->key, e->record, 0);
        if (e->request_key) {
            cmps[nc++] = cmp_absent(e->request_key);
            puts[np++] = put_op(e->request_key, e->request_record, e->lease);
        }
    }
    kf_error err = {0};
    bool ok = false;
    int rc = kf_etcd_txn(etcd, cmps, nc, puts, np, NULL, 0, &ok, NULL, &err);
    /* -ENOENT: a request lease is gone; -EINVAL: refused (e.g. a server
     * --max-txn-ops below this batch's compares); nothing was written */
    if (rc == 0 && ok) {
        for (size_t i = 0; i < n; i++) {
            es[i]->rc = 0;
            es[i]->won = true;
            es[i]->rid_taken = false;
        }
        return 0;
    }
    if (rc == 0 || rc == -ENOENT || rc == -EINVAL) {
        /* nothing was written: find out entry by entry */
        if (rc == -EINVAL)
            kf_warn("batched commit of %zu sessions refused (%s); committing each alone", n, err.msg);
        else
            kf_debug("batched commit of %zu sessions %s; committing each alone", n,
                     rc == 0 ? "lost a compare" : err.msg);
        for (size_t i = 0; i < n; i++) {
            commit_one(etcd, es[i]);
            finish_one(b, es[i]);
        }
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        es[i]->rc = rc;
        es[i]->won = es[i]->rid_taken = false;
        es[i]->err = err;
    }
    return 0;
}

static bool same_key(const kf_commit_entry *a, const kf_commit_entry *b) {
    if (!strcmp(a->key, b->key))
        return true;
    return a->request_key && b->request_key && !strcmp(a->request_key, b->request_key);
}

/* Unlinks up to KF_COMMIT_BATCH_MAX queued entries, oldest first, skipping
 * any whose key is already taken (it waits for the next txn). Under mu. */
static size_t take(kf_commit_batch *b, kf_commit_entry **out) {
    size_t n = 0;
    kf_commit_entry **pp = &b->head;
    while (*pp && n < KF_COMMIT_BATCH_MAX) {
        kf_commit_entry *e = *pp;
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = same_key(out[i], e);
        if (dup) {
            pp = &e->next;
            continue;
        }
        *pp = e->next;
        e->next = NULL;
        out[n++] = e;
    }
    b->tail = &b->head;
    while (*b->tail)
        b->tail = &(*b->tail)->next;
    return n;
}

int kf_commit_batch_run(kf_commit_batch *b, kf_commit_entry *e) {
    e->done = false;
    e->next = NULL;
    e->rc = 0;
    e->err = (kf_error){0};
    pthread_mutex_lock(&b->mu);
    *b->tail = e;
    b->tail = &e->next;
    while (!e->done) {
        if (b->inflight >= KF_COMMIT_INFLIGHT || !b->head) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        kf_commit_entry *batch[KF_COMMIT_BATCH_MAX];
        size_t n = take(b, batch);
        b->inflight++;
        pthread_mutex_unlock(&b->mu);
        size_t finished = 0; /* batch[0..finished) may be gone already */
        if (n == 1)
            commit_one(b->etcd, batch[0]);
        else
            finished = commit_many(b, batch, n);
        pthread_mutex_lock(&b->mu);
        b->inflight--;
        b->txns++;
        b->entries += n;
        kf_sched_metrics_commit_txn(b->metrics, n);
        for (size_t i = finished; i < n; i++)
            batch[i]->done = true;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    return e->rc;
}
