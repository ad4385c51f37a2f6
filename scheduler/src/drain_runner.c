/* drain_runner.c - the elected scheduler's drain loop: every running drain
 * in etcd gets a worker thread that moves its sessions, `parallel` at a
 * time (a mover thread each, drain_move.c), and writes every change back to
 * the drain record.
 *
 * A worker's pass (every PASS_MS):
 *  - the record is read: a cancel (CancelDrain) stops new moves at once;
 *  - sessions the table shows on the node but the record lacks (a create
 *    that raced the cordon) are added as pending;
 *  - finished movers report: moved, gone, or failed (retried RETRY_MS
 *    later, until the deadline);
 *  - while the drain runs and its deadline is ahead, pending and due
 *    failed sessions start moving, up to `parallel` in flight;
 *  - with nothing in flight: every session moved (or gone) -> done; the
 *    drain was cancelled -> it stays cancelled; the deadline passed ->
 *    incomplete, each session left (or, with force, deleted);
 *  - a changed record is written with a txn on its revision; losing means
 *    someone else wrote (CancelDrain): the worker reads the record again
 *    and keeps its state if it is no longer running.
 * When leadership ends (kf_drain_runner_stop), workers start nothing new,
 * wait for their movers and write what they know; the next leader's
 * workers go on from the record (a session left "moving" by a scheduler
 * that died is undone first, see drain_move.c).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drain.h"
#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"

#define PASS_MS 200
#define SCAN_MS 500  /* how often the runner looks for new drains */
#define RETRY_MS 2000
#define WORKERS_MAX 256

typedef struct worker worker;

typedef struct mover {
    worker *w;
    size_t idx;          /* in w->d.sess */
    pthread_t th;
    bool done;           /* under w->mu */
    int rc;              /* under w->mu, once done */
    char target[KF_PLACE_ID_MAX + 1];
    kf_error err;
} mover;

struct worker {
    kf_drain_runner *r;
    char node[KF_PLACE_ID_MAX + 1];
    pthread_t th;
    atomic_bool finished;
    pthread_mutex_t mu;
    kf_drain d;         /* the worker's copy; movers only touch their slot under mu */
    int64_t rev;
    mover **movers;     /* by session index; NULL = none in flight */
    int64_t *retry_at;  /* by session index: unix ms */
    size_t cap;
};

struct kf_drain_runner {
    kf_sched *s;
    pthread_t th;
    atomic_bool stop;
    worker *workers[WORKERS_MAX];
    size_t n_workers;
};

/* ---- movers -------------------------------------------------------------- */

static void *mover_main(void *arg) {
    mover *m = arg;
    worker *w = m->w;
    char id[KF_SESSION_ID_MAX + 1];
    pthread_mutex_lock(&w->mu);
    snprintf(id, sizeof(id), "%s", w->d.sess[m->idx].id);
    pthread_mutex_unlock(&w->mu);
    kf_error err = {0};
    int rc = kf_drain_move(w->r->s, id, w->node, m->target, sizeof(m->target), &err);
    pthread_mutex_lock(&w->mu);
    m->rc = rc;
    m->err = err;
    m->done = true;
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Make room for the per-session arrays after sessions were added. */
static int worker_grow(worker *w) {
    if (w->d.n <= w->cap)
        return 0;
    size_t nc = w->d.n;
    mover **nm = realloc(w->movers, nc * sizeof(*nm));
    if (!nm)
        return -ENOMEM;
    w->movers = nm;
    int64_t *nr = realloc(w->retry_at, nc * sizeof(*nr));
    if (!nr)
        return -ENOMEM;
    w->retry_at = nr;
    for (size_t i = w->cap; i < nc; i++) {
        w->movers[i] = NULL;
        w->retry_at[i] = 0;
    }
    w->cap = nc;
    return 0;
}

/* Sessions on the node the record does not list yet. Returns true if any. */
static bool add_new_sessions(worker *w) {
    char (*ids)[KF_SESSION_ID_MAX + 1] = NULL;
    size_t n = 0;
    bool added = false;
    if (kf_session_table_on_node(w->r->s->sessions, w->node, &ids, &n) < 0)
        return false;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < n; i++) {
        if (kf_drain_find(&w->d, ids[i]) || w->d.n >= KF_DRAIN_SESSIONS_MAX)
            continue;
        kf_drain_sess *ns = realloc(w->d.sess, (w->d.n + 1) * sizeof(*ns));
        if (!ns)
            break;
        w->d.sess = ns;
        w->d.sess[w->d.n] = (kf_drain_sess){.state = KF_DS_PENDING};
        snprintf(w->d.sess[w->d.n].id, sizeof(w->d.sess[0].id), "%s", ids[i]);
        w->d.n++;
        added = true;
    }
    pthread_mutex_unlock(&w->mu);
    free(ids);
    return added && worker_grow(w) == 0;
}

/* Collects finished movers into the record. Returns how many are still in
 * flight; *dirty set if a state changed. */
static size_t reap_movers(worker *w, bool *dirty) {
    size_t in_flight = 0;
    for (size_t i = 0; i < w->d.n && i < w->cap; i++) {
        mover *m = w->movers[i];
        if (!m)
            continue;
        pthread_mutex_lock(&w->mu);
        bool done = m->done;
        pthread_mutex_unlock(&w->mu);
        if (!done) {
            in_flight++;
            continue;
        }
        pthread_join(m->th, NULL);
        kf_drain_sess *ds = &w->d.sess[i];
        snprintf(ds->target, sizeof(ds->target), "%s", m->target);
        if (m->rc == 0) {
            ds->state = KF_DS_MOVED;
            ds->message[0] = '\0';
        } else if (m->rc == -ENOENT) {
            ds->state = KF_DS_GONE;
            snprintf(ds->message, sizeof(ds->message), "deleted or expired meanwhile");
        } else {
            ds->state = KF_DS_FAILED;
            snprintf(ds->message, sizeof(ds->message), "%.200s", m->err.msg);
            w->retry_at[i] = kf_unix_ms() + RETRY_MS;
            kf_warn("drain of %s: session %s not moved (attempt %u): %s", w->node, ds->id, ds->attempts,
                    m->err.msg);
        }
        free(m);
        w->movers[i] = NULL;
        *dirty = true;
    }
    return in_flight;
}

static void start_movers(worker *w, size_t *in_flight, bool *dirty) {
    int64_t now = kf_unix_ms();
    for (size_t i = 0; i < w->d.n && i < w->cap && *in_flight < w->d.parallel; i++) {
        kf_drain_sess *ds = &w->d.sess[i];
        bool due = ds->state == KF_DS_PENDING || ds->state == KF_DS_MOVING ||
                   (ds->state == KF_DS_FAILED && now >= w->retry_at[i]);
        if (!due || w->movers[i])
            continue;
        mover *m = calloc(1, sizeof(*m));
        if (!m)
            return;
        m->w = w;
        m->idx = i;
        pthread_mutex_lock(&w->mu);
        ds->state = KF_DS_MOVING;
        ds->attempts++;
        pthread_mutex_unlock(&w->mu);
        if (pthread_create(&m->th, NULL, mover_main, m) != 0) {
            ds->state = KF_DS_FAILED;
            free(m);
            return;
        }
        w->movers[i] = m;
        (*in_flight)++;
        *dirty = true;
    }
}

/* The end of a drain with nothing in flight: true if it ended now. */
static bool try_finish(worker *w, bool past_deadline) {
    kf_sched *s = w->r->s;
    kf_drain *d = &w->d;
    if (d->state == KF_DRAIN_CANCELLED)
        return true;
    size_t open = 0;
    for (size_t i = 0; i < d->n; i++)
        open += d->sess[i].state != KF_DS_MOVED && d->sess[i].state != KF_DS_GONE;
    if (open && !past_deadline)
        return false;
    if (!open) {
        d->state = KF_DRAIN_DONE;
        snprintf(d->message, sizeof(d->message), "all %zu session(s) moved off the node", d->n);
    } else {
        size_t deleted = 0;
        for (size_t i = 0; i < d->n; i++) {
            kf_drain_sess *ds = &d->sess[i];
            if (ds->state == KF_DS_MOVED || ds->state == KF_DS_GONE)
                continue;
            kf_error err = {0};
            if (d->force && kf_drain_delete(s, ds->id, d->node, &err) == 0) {
                ds->state = KF_DS_DELETED;
                snprintf(ds->message, sizeof(ds->message), "not moved by the deadline; deleted (force)");
                deleted++;
            } else {
                ds->state = KF_DS_LEFT;
                if (d->force)
                    snprintf(ds->message, sizeof(ds->message), "not moved by the deadline; delete failed: %.150s",
                             err.msg);
                else if (!ds->message[0])
                    snprintf(ds->message, sizeof(ds->message), "not moved by the deadline; left on the node");
            }
        }
        d->state = KF_DRAIN_INCOMPLETE;
        snprintf(d->message, sizeof(d->message), "deadline passed: %zu session(s) not moved, %zu deleted", open,
                 deleted);
    }
    d->ended_unix_ms = kf_unix_ms();
    kf_info("node %s: drain %s: %s", d->node, d->state == KF_DRAIN_DONE ? "done" : "incomplete", d->message);
    return true;
}

/* Reads the record: a state set from outside (CancelDrain, the only other
 * writer while the drain runs) is taken over with its revision, so the
 * next write merges it with the sessions' states. */
static void refresh(worker *w) {
    kf_drain cur = {0};
    int64_t rev = 0;
    if (kf_drain_get(w->r->s, w->node, &cur, &rev, NULL) < 0)
        return;
    if (cur.state != KF_DRAIN_RUNNING && w->d.state == KF_DRAIN_RUNNING) {
        w->d.state = cur.state;
        w->d.ended_unix_ms = cur.ended_unix_ms;
        snprintf(w->d.message, sizeof(w->d.message), "%s", cur.message);
        w->rev = rev;
        kf_info("node %s: drain %s from outside; no new moves", w->node,
                cur.state == KF_DRAIN_CANCELLED ? "cancelled" : "ended");
    }
    kf_drain_done(&cur);
}

/* Writes the worker's record; on a lost race adopts an outside change of
 * state (a cancel) and tries again next pass. */
static void write_back(worker *w, bool *dirty) {
    kf_sched *s = w->r->s;
    kf_error err = {0};
    bool won = false;
    int64_t nrev = 0;
    if (kf_drain_put(s, &w->d, w->rev, true, &won, &nrev, &err) < 0) {
        kf_warn("drain of %s: record not written: %s", w->node, err.msg);
        return;
    }
    if (won) {
        w->rev = nrev;
        *dirty = false;
        return;
    }
    kf_drain cur = {0};
    int64_t rev = 0;
    if (kf_drain_get(s, w->node, &cur, &rev, &err) < 0)
        return;
    w->rev = rev;
    if (cur.state != KF_DRAIN_RUNNING && w->d.state == KF_DRAIN_RUNNING) {
        w->d.state = cur.state;
        w->d.ended_unix_ms = cur.ended_unix_ms;
        snprintf(w->d.message, sizeof(w->d.message), "%s", cur.message);
    }
    kf_drain_done(&cur);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    kf_drain_runner *r = w->r;
    bool dirty = false, ended = false;
    /* moves a dead scheduler left in flight start over (drain_move.c undoes them) */
    for (size_t i = 0; i < w->d.n; i++)
        if (w->d.sess[i].state == KF_DS_MOVING)
            w->d.sess[i].state = KF_DS_PENDING;
    while (!ended) {
        bool stopping = atomic_load(&r->stop);
        refresh(w); /* one etcd read a pass: a cancel stops new moves at once */
        dirty |= add_new_sessions(w);
        size_t in_flight = reap_movers(w, &dirty);
        bool past = kf_unix_ms() >= w->d.deadline_unix_ms;
        if (!stopping && !past && w->d.state == KF_DRAIN_RUNNING)
            start_movers(w, &in_flight, &dirty);
        if (in_flight == 0) {
            if (stopping)
                break;
            if (try_finish(w, past)) {
                dirty = true;
                ended = true;
            }
        }
        if (dirty)
            write_back(w, &dirty);
        if (ended && dirty) { /* a lost race at the very end: once more */
            write_back(w, &dirty);
        }
        if (!ended)
            usleep(PASS_MS * 1000);
    }
    if (dirty)
        write_back(w, &dirty);
    atomic_store(&w->finished, true);
    return NULL;
}

static void worker_free(worker *w) {
    pthread_join(w->th, NULL);
    pthread_mutex_destroy(&w->mu);
    kf_drain_done(&w->d);
    free(w->movers);
    free(w->retry_at);
    free(w);
}

/* ---- the runner: find running drains, one worker each ------------------- */

static bool has_worker(kf_drain_runner *r, const char *node) {
    for (size_t i = 0; i < r->n_workers; i++)
        if (!strcmp(r->workers[i]->node, node))
            return true;
    return false;
}

static void start_worker(kf_drain_runner *r, kf_drain *d, int64_t rev) {
    if (r->n_workers >= WORKERS_MAX)
        return;
    worker *w = calloc(1, sizeof(*w));
    if (!w)
        return;
    w->r = r;
    snprintf(w->node, sizeof(w->node), "%s", d->node);
    w->d = *d; /* takes the sessions */
    *d = (kf_drain){0};
    w->rev = rev;
    pthread_mutex_init(&w->mu, NULL);
    if (worker_grow(w) < 0 || pthread_create(&w->th, NULL, worker_main, w) != 0) {
        kf_drain_done(&w->d);
        free(w->movers);
        free(w->retry_at);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return;
    }
    kf_info("node %s: running its drain (%zu session(s))", w->node, w->d.n);
    r->workers[r->n_workers++] = w;
}

static void scan(kf_drain_runner *r) {
    kf_etcd_kvs kvs = {0};
    kf_error err = {0};
    if (kf_etcd_range_prefix(r->s->etcd, KF_KEY_DRAINS, 0, &kvs, &err) < 0) {
        kf_debug("drains: %s", err.msg);
        return;
    }
    for (size_t i = 0; i < kvs.n; i++) {
        kf_drain d;
        if (kf_drain_parse(kvs.kvs[i].value, kvs.kvs[i].value_len, &d) < 0)
            continue;
        if (d.state == KF_DRAIN_RUNNING && !has_worker(r, d.node))
            start_worker(r, &d, kvs.kvs[i].mod_revision);
        kf_drain_done(&d);
    }
    kf_etcd_kvs_done(&kvs);
}

static void *runner_main(void *arg) {
    kf_drain_runner *r = arg;
    while (!atomic_load(&r->stop)) {
        for (size_t i = 0; i < r->n_workers;) { /* ended drains */
            if (atomic_load(&r->workers[i]->finished)) {
                worker_free(r->workers[i]);
                r->workers[i] = r->workers[--r->n_workers];
            } else {
                i++;
            }
        }
        scan(r);
        usleep(SCAN_MS * 1000);
    }
    for (size_t i = 0; i < r->n_workers; i++)
        worker_free(r->workers[i]); /* each sees stop, waits for its movers */
    r->n_workers = 0;
    return NULL;
}

int kf_drain_runner_start(kf_sched *s, kf_drain_runner **out, kf_error *err) {
    kf_drain_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    r->s = s;
    if (pthread_create(&r->th, NULL, runner_main, r) != 0) {
        free(r);
        return kf_error_set(err, -EAGAIN, 0, "cannot start the drain runner thread");
    }
    *out = r;
    return 0;
}

kf_drain_runner *kf_drain_runner_stop(kf_drain_runner *r) {
    if (!r)
        return NULL;
    atomic_store(&r->stop, true);
    pthread_join(r->th, NULL);
    free(r);
    return NULL;
}
