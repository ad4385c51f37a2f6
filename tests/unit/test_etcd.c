/* test_etcd.c - the etcd client against a real etcd server that the test
 * starts itself (loopback only, fresh data dir, free ports): key-value,
 * txn, leases and their expiry, the keeper, watches across a server restart
 * and a compaction, the leader key, endpoint failover, and auth.
 * Skips (77) when /usr/bin/etcd is not installed. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "etcd_server.h"
#include "kf/etcd.h"
#include "kf/util.h"

static server srv = {.pid = -1}; /* the plain-http server most tests share */

static int server_setup(void **state) {
    (void)state;
    if (server_init(&srv, false) < 0)
        return -1;
    return etcd_spawn(&srv);
}

static int server_teardown(void **state) {
    (void)state;
    server_done(&srv);
    return 0;
}

static kf_etcd *client(const char *endpoints, const char *user, const char *pw) {
    kf_etcd_opts o = {.endpoints = endpoints ? endpoints : srv.url,
                      .request_timeout_ms = 3000,
                      .connect_timeout_ms = 1000,
                      .username = user,
                      .password = pw};
    kf_etcd *c = NULL;
    kf_error e = {0};
    int r = kf_etcd_client_new(&o, &c, &e);
    if (r < 0)
        fprintf(stderr, "client: %s\n", e.msg);
    assert_int_equal(r, 0);
    return c;
}

#define OK(call)                                                                                                  \
    do {                                                                                                          \
        kf_error e_ = {0};                                                                                        \
        kf_error *err = &e_;                                                                                      \
        int r_ = (call);                                                                                          \
        if (r_ < 0)                                                                                               \
            fprintf(stderr, "%s:%d: %s -> %d %s\n", __FILE__, __LINE__, #call, r_, e_.msg);                      \
        assert_int_equal(r_, 0);                                                                                  \
    } while (0)

/* ---- key-value and txn --------------------------------------------------- */

static void test_kv(void **state) {
    (void)state;
    kf_etcd *c = client(NULL, NULL, NULL);
    int64_t rev1 = 0, rev2 = 0;
    OK(kf_etcd_put(c, "kv/a", 4, "1", 1, 0, &rev1, err));
    OK(kf_etcd_put(c, "kv/b", 4, "", 0, 0, &rev2, err)); /* empty value */
    assert_true(rev2 == rev1 + 1);
    /* Binary key with NUL and 0xff bytes. */
    OK(kf_etcd_put(c, "kv/\xff\x00z", 6, "bin\0ary", 7, 0, NULL, err));
    OK(kf_etcd_put(c, "kw", 2, "outside", 7, 0, NULL, err));

    kf_etcd_kv kv;
    OK(kf_etcd_get(c, "kv/a", 4, &kv, err));
    assert_string_equal(kv.value, "1");
    assert_int_equal(kv.mod_revision, rev1);
    assert_int_equal(kv.version, 1);
    kf_etcd_kv_done(&kv);
    OK(kf_etcd_get(c, "kv/\xff\x00z", 6, &kv, err));
    assert_int_equal(kv.value_len, 7);
    assert_memory_equal(kv.value, "bin\0ary", 7);
    kf_etcd_kv_done(&kv);
    kf_error e = {0};
    assert_int_equal(kf_etcd_get(c, "kv/none", 7, &kv, &e), -ENOENT);
    assert_int_equal(e.status, KF_ST_NOT_FOUND);

    kf_etcd_kvs kvs;
    OK(kf_etcd_range_prefix(c, "kv/", 0, &kvs, err));
    assert_int_equal(kvs.n, 3); /* not "kw" */
    assert_string_equal(kvs.kvs[0].key, "kv/a");
    assert_string_equal(kvs.kvs[1].key, "kv/b");
    assert_int_equal(kvs.kvs[1].value_len, 0);
    assert_int_equal(kvs.kvs[2].key_len, 6);
    assert_true(kvs.revision >= rev2);
    kf_etcd_kvs_done(&kvs);
    OK(kf_etcd_range_prefix(c, "kv/", 2, &kvs, err));
    assert_int_equal(kvs.n, 2);
    assert_true(kvs.more);
    assert_int_equal(kvs.count, 3);
    kf_etcd_kvs_done(&kvs);
    /* A prefix ending in 0xff: its end is "kv0", it still excludes "kw". */
    OK(kf_etcd_range_prefix(c, "kv/\xff", 0, &kvs, err));
    assert_int_equal(kvs.n, 1);
    kf_etcd_kvs_done(&kvs);
    /* An old revision. */
    OK(kf_etcd_put(c, "kv/a", 4, "2", 1, 0, NULL, err));
    OK(kf_etcd_range(c, "kv/a", 4, NULL, 0, 0, rev1, &kvs, err));
    assert_string_equal(kvs.kvs[0].value, "1");
    kf_etcd_kvs_done(&kvs);
    /* The whole keyspace. */
    OK(kf_etcd_range_prefix(c, "", 0, &kvs, err));
    assert_true(kvs.n >= 4);
    kf_etcd_kvs_done(&kvs);

    int64_t deleted = 0;
    OK(kf_etcd_delete(c, "kv/a", 4, NULL, 0, &deleted, NULL, err));
    assert_int_equal(deleted, 1);
    OK(kf_etcd_delete(c, "kv/a", 4, NULL, 0, &deleted, NULL, err));
    assert_int_equal(deleted, 0);
    OK(kf_etcd_delete_prefix(c, "kv/", &deleted, err));
    assert_int_equal(deleted, 2);
    OK(kf_etcd_range_prefix(c, "kv/", 0, &kvs, err));
    assert_int_equal(kvs.n, 0);
    kf_etcd_kvs_done(&kvs);

    /* Bad arguments and the response cap. */
    assert_int_equal(kf_etcd_put(c, "", 0, "x", 1, 0, NULL, &e), -EINVAL);
    kf_etcd_client_free(c);
    kf_etcd_opts o = {.endpoints = srv.url, .max_response_bytes = 1024};
    OK(kf_etcd_client_new(&o, &c, err));
    char big[4096];
    memset(big, 'x', sizeof(big));
    OK(kf_etcd_put(c, "kv/big", 6, big, sizeof(big), 0, NULL, err));
    assert_int_equal(kf_etcd_get(c, "kv/big", 6, &kv, &e), -EFBIG);
    OK(kf_etcd_delete(c, "kv/big", 6, NULL, 0, NULL, NULL, err));
    kf_etcd_client_free(c);
}

static void test_txn(void **state) {
    (void)state;
    kf_etcd *c = client(NULL, NULL, NULL);
    int64_t rev = 0;
    OK(kf_etcd_put(c, "txn/k", 5, "v1", 2, 0, &rev, err));
    kf_etcd_cmp cmp = {.key = "txn/k", .key_len = 5, .target = KF_ETCD_CMP_MOD, .result = KF_ETCD_CMP_EQUAL,
                       .number = rev};
    kf_etcd_op put = {.type = KF_ETCD_OP_PUT, .key = "txn/k", .key_len = 5, .value = "v2", .value_len = 2};
    kf_etcd_op get = {.type = KF_ETCD_OP_RANGE, .key = "txn/k", .key_len = 5};
    kf_etcd_txn_result res;
    bool ok = false;
    OK(kf_etcd_txn(c, &cmp, 1, &put, 1, &get, 1, &ok, &res, err));
    assert_true(ok);
    assert_true(res.succeeded);
    assert_int_equal(res.n, 1);
    assert_int_equal(res.results[0].type, KF_ETCD_OP_PUT);
    assert_true(res.revision == rev + 1);
    kf_etcd_txn_result_done(&res);
    /* Same compare again: the mod revision moved, so the failure branch runs
     * (and the gateway omits "succeeded": false). */
    OK(kf_etcd_txn(c, &cmp, 1, &put, 1, &get, 1, &ok, &res, err));
    assert_false(ok);
    assert_false(res.succeeded);
    assert_int_equal(res.n, 1);
    assert_int_equal(res.results[0].type, KF_ETCD_OP_RANGE);
    assert_string_equal(res.results[0].kvs.kvs[0].value, "v2");
    assert_true(res.results[0].kvs.kvs[0].mod_revision == rev + 1);
    kf_etcd_txn_result_done(&res);
    /* Other targets and results. */
    kf_etcd_cmp cmps[] = {
        {.key = "txn/k", .key_len = 5, .target = KF_ETCD_CMP_VERSION, .result = KF_ETCD_CMP_EQUAL, .number = 2},
        {.key = "txn/k", .key_len = 5, .target = KF_ETCD_CMP_CREATE, .result = KF_ETCD_CMP_LESS, .number = rev + 1},
        {.key = "txn/k", .key_len = 5, .target = KF_ETCD_CMP_VALUE, .result = KF_ETCD_CMP_NOT_EQUAL, .value = "v1",
         .value_len = 2},
        {.key = "txn/k", .key_len = 5, .target = KF_ETCD_CMP_MOD, .result = KF_ETCD_CMP_GREATER, .number = rev},
        {.key = "txn/none", .key_len = 8, .target = KF_ETCD_CMP_CREATE, .result = KF_ETCD_CMP_EQUAL, .number = 0},
    };
    kf_etcd_op del = {.type = KF_ETCD_OP_DELETE, .key = "txn/", .key_len = 4, .range_end = "txn0", .range_end_len = 4};
    OK(kf_etcd_txn(c, cmps, 5, &del, 1, NULL, 0, &ok, &res, err));
    assert_true(ok);
    assert_int_equal(res.results[0].type, KF_ETCD_OP_DELETE);
    assert_int_equal(res.results[0].deleted, 1);
    kf_etcd_txn_result_done(&res);
    /* A server-side rejection is an error with etcd's message. */
    kf_etcd_op dup[2] = {put, put};
    kf_error e = {0};
    assert_int_equal(kf_etcd_txn(c, NULL, 0, dup, 2, NULL, 0, &ok, NULL, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "duplicate key"));
    kf_etcd_client_free(c);
}

/* ---- leases -------------------------------------------------------------- */

static void test_lease_expiry(void **state) {
    (void)state;
    kf_etcd *c = client(NULL, NULL, NULL);
    int64_t id = 0, ttl = 0;
    OK(kf_etcd_lease_grant(c, 2, &id, &ttl, err));
    assert_true(id != 0);
    assert_int_equal(ttl, 2);
    OK(kf_etcd_put(c, "lease/k", 7, "v", 1, id, NULL, err));
    kf_etcd_kv kv;
    OK(kf_etcd_get(c, "lease/k", 7, &kv, err));
    assert_true(kv.lease == id); /* exact, though ids exceed 2^53 in general */
    kf_etcd_kv_done(&kv);
    /* Keepalives carry it past its TTL. */
    for (int i = 0; i < 6; i++) {
        usleep(600 * 1000);
        OK(kf_etcd_lease_keepalive(c, id, &ttl, err));
        assert_int_equal(ttl, 2);
    }
    OK(kf_etcd_get(c, "lease/k", 7, &kv, err));
    kf_etcd_kv_done(&kv);
    /* Stop: it expires, its key goes, keepalive says "gone". */
    kf_error e = {0};
    int64_t t0 = kf_mono_ms();
    while (kf_etcd_get(c, "lease/k", 7, &kv, &e) == 0) {
        kf_etcd_kv_done(&kv);
        assert_true(kf_mono_ms() - t0 < 8000);
        usleep(200 * 1000);
    }
    assert_int_equal(e.code, -ENOENT);
    assert_true(kf_mono_ms() - t0 >= 1000);
    assert_int_equal(kf_etcd_lease_keepalive(c, id, &ttl, &e), -ENOENT);
    assert_int_equal(e.status, KF_ST_NOT_FOUND);
    assert_non_null(strstr(e.msg, "gone"));
    assert_int_equal(kf_etcd_lease_ttl(c, id, &ttl, &e), -ENOENT);

    /* Revoke: the key goes at once; a second revoke finds nothing. */
    OK(kf_etcd_lease_grant(c, 60, &id, NULL, err));
    OK(kf_etcd_put(c, "lease/r", 7, "v", 1, id, NULL, err));
    OK(kf_etcd_lease_ttl(c, id, &ttl, err));
    assert_true(ttl > 50 && ttl <= 60);
    OK(kf_etcd_lease_revoke(c, id, err));
    assert_int_equal(kf_etcd_get(c, "lease/r", 7, &kv, &e), -ENOENT);
    assert_int_equal(kf_etcd_lease_revoke(c, id, &e), -ENOENT);
    assert_int_equal(kf_etcd_lease_grant(c, 0, &id, NULL, &e), -EINVAL);
    kf_etcd_client_free(c);
}

typedef struct lost_rec {
    pthread_mutex_t mu;
    int calls;
    int code;
    int64_t lease;
} lost_rec;

static void on_lost(int64_t lease, int code, const char *message, void *userdata) {
    lost_rec *l = userdata;
    (void)message;
    pthread_mutex_lock(&l->mu);
    l->calls++;
    l->code = code;
    l->lease = lease;
    pthread_mutex_unlock(&l->mu);
}

static void test_lease_keeper(void **state) {
    (void)state;
    kf_etcd *c = client(NULL, NULL, NULL);
    int64_t id = 0;
    OK(kf_etcd_lease_grant(c, 2, &id, NULL, err));
    OK(kf_etcd_put(c, "keeper/k", 8, "v", 1, id, NULL, err));
    lost_rec l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    kf_etcd_keeper *k = NULL;
    OK(kf_etcd_lease_keeper_start(c, id, 2, on_lost, &l, &k, err));
    sleep(4); /* twice the TTL */
    kf_etcd_kv kv;
    OK(kf_etcd_get(c, "keeper/k", 8, &kv, err));
    kf_etcd_kv_done(&kv);
    assert_int_equal(l.calls, 0);
    /* Revoked under it: the keeper reports the loss once. */
    OK(kf_etcd_lease_revoke(c, id, err));
    int64_t t0 = kf_mono_ms();
    for (;;) {
        pthread_mutex_lock(&l.mu);
        int calls = l.calls;
        pthread_mutex_unlock(&l.mu);
        if (calls)
            break;
        assert_true(kf_mono_ms() - t0 < 3000);
        usleep(50 * 1000);
    }
    assert_int_equal(l.code, -ENOENT);
    assert_true(l.lease == id);
    int64_t s0 = kf_mono_ms();
    k = kf_etcd_lease_keeper_stop(k);
    assert_true(kf_mono_ms() - s0 < 1000);
    assert_int_equal(l.calls, 1);
    /* Stopping a healthy keeper is prompt too. */
    OK(kf_etcd_lease_grant(c, 30, &id, NULL, err));
    OK(kf_etcd_lease_keeper_start(c, id, 30, on_lost, &l, &k, err));
    s0 = kf_mono_ms();
    kf_etcd_lease_keeper_stop(k);
    assert_true(kf_mono_ms() - s0 < 1000);
    OK(kf_etcd_lease_revoke(c, id, err));
    kf_etcd_client_free(c);
}

/* ---- watch --------------------------------------------------------------- */

typedef struct ev_rec {
    int type;
    char key[64];
    char value[64];
    int64_t rev;
    bool has_prev;
    char prev[64];
} ev_rec;

typedef struct watch_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ev_rec ev[512];
    size_t n;
    int resyncs;
    int64_t resync_rev, compact_rev;
    char resync_keys[8][64];
    size_t resync_n;
    int disconnects;
    bool hold; /* block the watch thread in DISCONNECTED until cleared */
} watch_rec;

static int on_watch(const kf_etcd_watch_notify *n, void *userdata) {
    watch_rec *w = userdata;
    pthread_mutex_lock(&w->mu);
    switch (n->kind) {
    case KF_ETCD_WATCH_EVENTS:
        for (size_t i = 0; i < n->n_events && w->n < 512; i++) {
            const kf_etcd_event *e = &n->events[i];
            ev_rec *r = &w->ev[w->n++];
            r->type = e->type;
            snprintf(r->key, sizeof(r->key), "%s", e->kv.key);
            snprintf(r->value, sizeof(r->value), "%s", e->kv.value);
            r->rev = e->kv.mod_revision;
            r->has_prev = e->has_prev_kv;
            snprintf(r->prev, sizeof(r->prev), "%s", e->has_prev_kv ? e->prev_kv.value : "");
        }
        break;
    case KF_ETCD_WATCH_RESYNC:
        w->resyncs++;
        w->resync_rev = n->revision;
        w->compact_rev = n->compact_revision;
        w->resync_n = n->kvs->n;
        for (size_t i = 0; i < n->kvs->n && i < 8; i++)
            snprintf(w->resync_keys[i], 64, "%s=%s", n->kvs->kvs[i].key, n->kvs->kvs[i].value);
        break;
    case KF_ETCD_WATCH_DISCONNECTED:
        w->disconnects++;
        pthread_cond_broadcast(&w->cv);
        while (w->hold)
            pthread_cond_wait(&w->cv, &w->mu);
        break;
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static void watch_rec_init(watch_rec *w) {
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

/* Wait until at least n events (or resyncs, with `resyncs`) arrived. */
static bool wait_for(watch_rec *w, size_t n_events, int resyncs, int timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (w->n < n_events || w->resyncs < resyncs)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    bool ok = w->n >= n_events && w->resyncs >= resyncs;
    pthread_mutex_unlock(&w->mu);
    return ok;
}

static void check_ev(const watch_rec *w, size_t i, int type, const char *key, const char *value) {
    assert_true(i < w->n);
    assert_int_equal(w->ev[i].type, type);
    assert_string_equal(w->ev[i].key, key);
    if (value)
        assert_string_equal(w->ev[i].value, value);
}

static void test_watch_restart(void **state) {
    (void)state;
    kf_etcd *c = client(NULL, NULL, NULL);
    static watch_rec w;
    watch_rec_init(&w);
    kf_etcd_watch *wt = NULL;
    OK(kf_etcd_watch_prefix(c, "w/", 0, true, on_watch, &w, &wt, err));
    usleep(300 * 1000); /* "from now": let the watch be created first */
    OK(kf_etcd_put(c, "w/a", 3, "1", 1, 0, NULL, err));
    OK(kf_etcd_put(c, "w/a", 3, "2", 1, 0, NULL, err));
    OK(kf_etcd_put(c, "x/other", 7, "no", 2, 0, NULL, err));
    OK(kf_etcd_delete(c, "w/a", 3, NULL, 0, NULL, NULL, err));
    kf_etcd_op two[2] = {{.type = KF_ETCD_OP_PUT, .key = "w/b", .key_len = 3, .value = "b", .value_len = 1},
                         {.type = KF_ETCD_OP_PUT, .key = "w/c", .key_len = 3, .value = "c", .value_len = 1}};
    OK(kf_etcd_txn(c, NULL, 0, two, 2, NULL, 0, NULL, NULL, err));
    assert_true(wait_for(&w, 5, 0, 5000));
    check_ev(&w, 0, KF_ETCD_EVENT_PUT, "w/a", "1");
    assert_false(w.ev[0].has_prev);
    check_ev(&w, 1, KF_ETCD_EVENT_PUT, "w/a", "2");
    assert_true(w.ev[1].has_prev);
    assert_string_equal(w.ev[1].prev, "1");
    check_ev(&w, 2, KF_ETCD_EVENT_DELETE, "w/a", NULL);
    assert_string_equal(w.ev[2].prev, "2");
    check_ev(&w, 3, KF_ETCD_EVENT_PUT, "w/b", "b");
    check_ev(&w, 4, KF_ETCD_EVENT_PUT, "w/c", "c");
    assert_true(w.ev[3].rev == w.ev[4].rev); /* one txn, one revision */
    assert_true(kf_etcd_watch_revision(wt) >= w.ev[4].rev);

    /* Crash and restart the server on the same data dir and port, and write
     * while the watcher is away (held in its DISCONNECTED callback, so it
     * cannot reconnect early): it must resume from its last revision and
     * miss nothing. */
    pthread_mutex_lock(&w.mu);
    w.hold = true;
    pthread_mutex_unlock(&w.mu);
    etcd_kill(&srv, SIGKILL);
    pthread_mutex_lock(&w.mu);
    while (w.disconnects == 0)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(etcd_spawn(&srv), 0);
    OK(kf_etcd_put(c, "w/d", 3, "d", 1, 0, NULL, err));
    OK(kf_etcd_put(c, "w/e", 3, "e", 1, 0, NULL, err));
    OK(kf_etcd_delete(c, "w/b", 3, NULL, 0, NULL, NULL, err));
    pthread_mutex_lock(&w.mu);
    w.hold = false;
    pthread_cond_broadcast(&w.cv);
    pthread_mutex_unlock(&w.mu);
    assert_true(wait_for(&w, 8, 0, 15000));
    check_ev(&w, 5, KF_ETCD_EVENT_PUT, "w/d", "d");
    check_ev(&w, 6, KF_ETCD_EVENT_PUT, "w/e", "e");
    check_ev(&w, 7, KF_ETCD_EVENT_DELETE, "w/b", NULL);
    usleep(300 * 1000);
    pthread_mutex_lock(&w.mu);
    assert_int_equal(w.n, 8); /* no duplicates */
    for (size_t i = 1; i < w.n; i++)
        assert_true(w.ev[i].rev >= w.ev[i - 1].rev);
    assert_true(w.disconnects >= 1);
    assert_int_equal(w.resyncs, 0);
    pthread_mutex_unlock(&w.mu);

    int64_t s0 = kf_mono_ms();
    kf_etcd_watch_stop(wt);
    assert_true(kf_mono_ms() - s0 < 1000);
    kf_etcd_client_free(c);
}

static void test_watch_compaction(void **state) {
    (void)state;
    kf_etcd *c = client(NULL, NULL, NULL);
    int64_t first = 0, rev = 0;
    OK(kf_etcd_put(c, "cw/x", 4, "1", 1, 0, &first, err));
    OK(kf_etcd_put(c, "cw/x", 4, "2", 1, 0, NULL, err));
    OK(kf_etcd_put(c, "cw/y", 4, "y", 1, 0, &rev, err));
    OK(kf_etcd_compact(c, rev, err));
    kf_etcd_kvs kvs;
    kf_error e = {0};
    assert_int_equal(kf_etcd_range(c, "cw/x", 4, NULL, 0, 0, first, &kvs, &e), -ERANGE);
    assert_int_equal(e.status, KF_ST_OUT_OF_RANGE);

    /* Resuming from a compacted revision: a RESYNC listing, then events. */
    static watch_rec w;
    watch_rec_init(&w);
    kf_etcd_watch *wt = NULL;
    OK(kf_etcd_watch_prefix(c, "cw/", first, false, on_watch, &w, &wt, err));
    assert_true(wait_for(&w, 0, 1, 5000));
    assert_int_equal(w.compact_rev, rev);
    assert_true(w.resync_rev >= rev);
    assert_int_equal(w.resync_n, 2);
    assert_string_equal(w.resync_keys[0], "cw/x=2");
    assert_string_equal(w.resync_keys[1], "cw/y=y");
    OK(kf_etcd_put(c, "cw/z", 4, "z", 1, 0, NULL, err));
    assert_true(wait_for(&w, 1, 1, 5000));
    check_ev(&w, 0, KF_ETCD_EVENT_PUT, "cw/z", "z");
    kf_etcd_watch_stop(wt);

    /* List-then-watch from the start. */
    watch_rec_init(&w);
    OK(kf_etcd_watch_prefix(c, "cw/", KF_ETCD_WATCH_FROM_SNAPSHOT, false, on_watch, &w, &wt, err));
    assert_true(wait_for(&w, 0, 1, 5000));
    assert_int_equal(w.resync_n, 3);
    assert_int_equal(w.compact_rev, 0);
    OK(kf_etcd_delete(c, "cw/x", 4, NULL, 0, NULL, NULL, err));
    assert_true(wait_for(&w, 1, 1, 5000));
    check_ev(&w, 0, KF_ETCD_EVENT_DELETE, "cw/x", NULL);
    kf_etcd_watch_stop(wt);
    kf_etcd_client_free(c);
}

/* ---- leader key ---------------------------------------------------------- */

static void test_election(void **state) {
    (void)state;
    kf_etcd *a = client(NULL, NULL, NULL), *b = client(NULL, NULL, NULL);
    int64_t la = 0, lb = 0, fence = 0;
    OK(kf_etcd_lease_grant(a, 30, &la, NULL, err));
    OK(kf_etcd_lease_grant(b, 30, &lb, NULL, err));
    bool won = false;
    char *leader = NULL;
    OK(kf_etcd_campaign(a, "elect/sched", "node-a", la, &won, &leader, &fence, err));
    assert_true(won);
    assert_string_equal(leader, "node-a");
    assert_true(fence > 0);
    free(leader);
    OK(kf_etcd_campaign(b, "elect/sched", "node-b", lb, &won, &leader, NULL, err));
    assert_false(won);
    assert_string_equal(leader, "node-a");
    free(leader);
    int64_t again = 0;
    OK(kf_etcd_campaign(a, "elect/sched", "node-a", la, &won, NULL, &again, err)); /* idempotent */
    assert_true(won);
    assert_int_equal(again, fence);
    int64_t lease = 0;
    OK(kf_etcd_leader(b, "elect/sched", &leader, &lease, err));
    assert_string_equal(leader, "node-a");
    assert_true(lease == la);
    free(leader);
    bool was = true;
    OK(kf_etcd_resign(b, "elect/sched", "node-b", &was, err)); /* not b's */
    assert_false(was);
    OK(kf_etcd_leader(b, "elect/sched", &leader, NULL, err));
    free(leader);
    OK(kf_etcd_resign(a, "elect/sched", "node-a", &was, err));
    assert_true(was);
    kf_error e = {0};
    assert_int_equal(kf_etcd_leader(b, "elect/sched", &leader, NULL, &e), -ENOENT);
    OK(kf_etcd_campaign(b, "elect/sched", "node-b", lb, &won, NULL, NULL, err));
    assert_true(won);
    /* The leader's lease ends: leadership ends with it, a successor wins. */
    OK(kf_etcd_lease_revoke(b, lb, err));
    assert_int_equal(kf_etcd_leader(a, "elect/sched", &leader, NULL, &e), -ENOENT);
    OK(kf_etcd_campaign(a, "elect/sched", "node-a", la, &won, NULL, NULL, err));
    assert_true(won);
    OK(kf_etcd_lease_revoke(a, la, err));
    kf_etcd_client_free(a);
    kf_etcd_client_free(b);
}

/* ---- endpoints ----------------------------------------------------------- */

static void test_failover(void **state) {
    (void)state;
    int dead = free_port(); /* nothing listens there */
    char eps[160];
    snprintf(eps, sizeof(eps), "http://127.0.0.1:%d, %s/", dead, srv.url);
    kf_etcd *c = client(eps, NULL, NULL);
    OK(kf_etcd_put(c, "fo/k", 4, "v", 1, 0, NULL, err));
    kf_etcd_kv kv;
    OK(kf_etcd_get(c, "fo/k", 4, &kv, err));
    kf_etcd_kv_done(&kv);
    kf_etcd_client_free(c);

    snprintf(eps, sizeof(eps), "http://127.0.0.1:%d", dead);
    c = client(eps, NULL, NULL);
    kf_error e = {0};
    assert_int_equal(kf_etcd_put(c, "fo/k", 4, "v", 1, 0, NULL, &e), -ECONNREFUSED);
    assert_int_equal(e.status, KF_ST_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "unreachable"));
    kf_etcd_client_free(c);

    kf_etcd_opts bad = {.endpoints = "127.0.0.1:2379"};
    assert_int_equal(kf_etcd_client_new(&bad, &c, &e), -EINVAL);
    bad.endpoints = "";
    assert_int_equal(kf_etcd_client_new(&bad, &c, &e), -EINVAL);
}

/* ---- TLS (a server of its own) ------------------------------------------- */

static void test_tls(void **state) {
    (void)state;
    if (access(OPENSSL_BIN, X_OK) != 0)
        skip();
    static server t;
    assert_int_equal(server_init(&t, true), 0);
    if (etcd_spawn(&t) < 0) {
        server_done(&t);
        fail_msg("https etcd did not start");
    }
    kf_etcd_opts o = {.endpoints = t.url, .ca_file = t.cert, .request_timeout_ms = 3000};
    kf_etcd *c = NULL;
    OK(kf_etcd_client_new(&o, &c, err));
    OK(kf_etcd_put(c, "tls/k", 5, "v", 1, 0, NULL, err));
    kf_etcd_kv kv;
    OK(kf_etcd_get(c, "tls/k", 5, &kv, err));
    assert_string_equal(kv.value, "v");
    kf_etcd_kv_done(&kv);
    kf_etcd_client_free(c);
    /* Without the CA the self-signed certificate is refused. */
    o.ca_file = NULL;
    OK(kf_etcd_client_new(&o, &c, err));
    kf_error e = {0};
    assert_true(kf_etcd_get(c, "tls/k", 5, &kv, &e) < 0);
    assert_int_equal(e.status, KF_ST_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "certificate"));
    kf_etcd_client_free(c);
    server_done(&t);
}

/* ---- auth (last: it changes the server) ------------------------------------ */

static void test_auth(void **state) {
    (void)state;
    if (access(ETCDCTL_BIN, X_OK) != 0)
        skip();
    char ep[96];
    snprintf(ep, sizeof(ep), "--endpoints=%s", srv.url);
    char *add[] = {ETCDCTL_BIN, ep, "user", "add", "root:pw", NULL};
    char *role[] = {ETCDCTL_BIN, ep, "role", "add", "root", NULL};
    char *grant[] = {ETCDCTL_BIN, ep, "user", "grant-role", "root", "root", NULL};
    char *enable[] = {ETCDCTL_BIN, ep, "auth", "enable", NULL};
    assert_int_equal(run(add), 0);
    assert_int_equal(run(role), 0);
    assert_int_equal(run(grant), 0);
    assert_int_equal(run(enable), 0);

    kf_error e = {0};
    kf_etcd *c = client(NULL, "root", "wrong");
    assert_int_equal(kf_etcd_put(c, "auth/k", 6, "v", 1, 0, NULL, &e), -EACCES);
    assert_int_equal(e.status, KF_ST_UNAUTHENTICATED);
    assert_non_null(strstr(e.msg, "authentication"));
    kf_etcd_client_free(c);

    c = client(NULL, NULL, NULL);
    assert_true(kf_etcd_put(c, "auth/k", 6, "v", 1, 0, NULL, &e) < 0);
    assert_non_null(strstr(e.msg, "requires authentication"));
    kf_etcd_client_free(c);

    c = client(NULL, "root", "pw");
    OK(kf_etcd_put(c, "auth/k", 6, "v1", 2, 0, NULL, err));
    static watch_rec w;
    watch_rec_init(&w);
    kf_etcd_watch *wt = NULL;
    OK(kf_etcd_watch_prefix(c, "auth/", KF_ETCD_WATCH_FROM_SNAPSHOT, false, on_watch, &w, &wt, err));
    assert_true(wait_for(&w, 0, 1, 5000));
    assert_int_equal(w.resync_n, 1);
    /* A restart forgets every simple token: requests and the watch must
     * authenticate again by themselves. */
    etcd_kill(&srv, SIGKILL);
    assert_int_equal(etcd_spawn(&srv), 0);
    OK(kf_etcd_put(c, "auth/k", 6, "v2", 2, 0, NULL, err));
    assert_true(wait_for(&w, 1, 1, 15000));
    check_ev(&w, 0, KF_ETCD_EVENT_PUT, "auth/k", "v2");
    kf_etcd_kv kv;
    OK(kf_etcd_get(c, "auth/k", 6, &kv, err));
    assert_string_equal(kv.value, "v2");
    kf_etcd_kv_done(&kv);
    kf_etcd_watch_stop(wt);
    kf_etcd_client_free(c);
}

int main(void) {
    if (access(ETCD_BIN, X_OK) != 0) {
        fprintf(stderr, "%s not installed: skipping\n", ETCD_BIN);
        return 77;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv),
        cmocka_unit_test(test_txn),
        cmocka_unit_test(test_lease_expiry),
        cmocka_unit_test(test_lease_keeper),
        cmocka_unit_test(test_watch_restart),
        cmocka_unit_test(test_watch_compaction),
        cmocka_unit_test(test_election),
        cmocka_unit_test(test_failover),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_auth),
    };
    return cmocka_run_group_tests(tests, server_setup, server_teardown);
}
