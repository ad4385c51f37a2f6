/* test_commit_batch.c - the scheduler's group commit of new session records
 * (scheduler/src/commit_batch.c) against a real etcd that the test starts:
 * a lone commit; a burst of concurrent commits folded into fewer txns, each
 * record written; a burst mixing entries that must lose (an existing
 * session key, a stale node revision, two creates of one request id) with
 * entries that must win, each told apart exactly; and a dead etcd, whose
 * error reaches every waiting entry. Skips (77) without /usr/bin/etcd. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "etcd_server.h"
#include "kf/etcd.h"
#include "scheduler.h"

#define BURST 48

static server srv = {.pid = -1};
static kf_etcd *etcd;

static int setup(void **state) {
    (void)state;
    if (server_init(&srv, false) < 0 || etcd_spawn(&srv) < 0)
        return -1;
    kf_etcd_opts o = {.endpoints = srv.url, .request_timeout_ms = 3000, .connect_timeout_ms = 1000};
    kf_error e = {0};
    return kf_etcd_client_new(&o, &etcd, &e);
}

static int teardown(void **state) {
    (void)state;
    etcd = kf_etcd_client_free(etcd);
    server_done(&srv);
    return 0;
}

/* Puts a node record; returns its mod revision. */
static int64_t put_node(const char *key) {
    int64_t rev = 0;
    kf_error e = {0};
    assert_int_equal(kf_etcd_put(etcd, key, strlen(key), "{}", 2, 0, &rev, &e), 0);
    return rev;
}

static bool has_value(const char *key, const char *value) {
    kf_etcd_kv kv;
    kf_error e = {0};
    if (kf_etcd_get(etcd, key, strlen(key), &kv, &e) < 0)
        return false;
    bool eq = !strcmp(kv.value, value);
    kf_etcd_kv_done(&kv);
    return eq;
}

typedef struct job {
    kf_commit_batch *b;
    pthread_barrier_t *go;
    kf_commit_entry e;
    char key[64], record[64], rkey[64];
} job;

static void *run_job(void *arg) {
    job *j = arg;
    pthread_barrier_wait(j->go);
    kf_commit_batch_run(j->b, &j->e);
    return NULL;
}

/* Runs n jobs at once (a barrier releases them together). */
static void run_all(job *jobs, size_t n) {
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)n);
    pthread_t th[BURST];
    for (size_t i = 0; i < n; i++) {
        jobs[i].go = &go;
        assert_int_equal(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
    }
    for (size_t i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
}

static void fill(job *j, kf_commit_batch *b, const char *prefix, size_t i, const char *node_key, int64_t rev) {
    memset(j, 0, sizeof(*j));
    j->b = b;
    snprintf(j->key, sizeof(j->key), "%s/s-%zu", prefix, i);
    snprintf(j->record, sizeof(j->record), "{\"id\":\"s-%zu\"}", i);
    j->e = (kf_commit_entry){.key = j->key, .node_key = node_key, .node_mod_revision = rev, .record = j->record};
}

static void test_lone(void **state) {
    (void)state;
    kf_commit_batch *b;
    assert_int_equal(kf_commit_batch_new(etcd, NULL, &b), 0);
    int64_t rev = put_node("lone/nodes/a");
    job j;
    fill(&j, b, "lone", 1, "lone/nodes/a", rev);
    assert_int_equal(kf_commit_batch_run(b, &j.e), 0);
    assert_true(j.e.won);
    assert_true(has_value("lone/s-1", "{\"id\":\"s-1\"}"));
    /* The same key again loses (it exists now). */
    assert_int_equal(kf_commit_batch_run(b, &j.e), 0);
    assert_false(j.e.won);
    assert_false(j.e.rid_taken);
    uint64_t txns, entries;
    kf_commit_batch_stats(b, &txns, &entries);
    assert_int_equal(txns, 2);
    assert_int_equal(entries, 2);
    kf_commit_batch_free(b);
}

static void test_burst_batched(void **state) {
    (void)state;
    kf_commit_batch *b;
    assert_int_equal(kf_commit_batch_new(etcd, NULL, &b), 0);
    int64_t ra = put_node("burst/nodes/a"), rb = put_node("burst/nodes/b");
    static job jobs[BURST];
    for (size_t i = 0; i < BURST; i++)
        fill(&jobs[i], b, "burst", i, i % 2 ? "burst/nodes/b" : "burst/nodes/a", i % 2 ? rb : ra);
    run_all(jobs, BURST);
    for (size_t i = 0; i < BURST; i++) {
        assert_int_equal(jobs[i].e.rc, 0);
        assert_true(jobs[i].e.won);
        assert_true(has_value(jobs[i].key, jobs[i].record));
    }
    uint64_t txns, entries;
    kf_commit_batch_stats(b, &txns, &entries);
    fprintf(stderr, "burst of %d commits: %llu txns\n", BURST, (unsigned long long)txns);
    assert_int_equal(entries, BURST);
    assert_true(txns < BURST / 2); /* folded: two in flight, the rest queue behind them */
    kf_commit_batch_free(b);
}

static void test_losers_told_apart(void **state) {
    (void)state;
    kf_commit_batch *b;
    assert_int_equal(kf_commit_batch_new(etcd, NULL, &b), 0);
    int64_t ra = put_node("mix/nodes/a");
    int64_t stale = put_node("mix/nodes/b");
    put_node("mix/nodes/b"); /* re-registered: placement's revision is stale */
    kf_error e = {0};
    assert_int_equal(kf_etcd_put(etcd, "mix/s-0", 7, "old", 3, 0, NULL, &e), 0);
    static job jobs[BURST];
    for (size_t i = 0; i < BURST; i++)
        fill(&jobs[i], b, "mix", i, "mix/nodes/a", ra);
    /* job 0: its key exists; job 1: a stale node; jobs 2 and 3: one request id */
    jobs[1].e.node_key = "mix/nodes/b";
    jobs[1].e.node_mod_revision = stale;
    for (size_t i = 2; i <= 4; i++) {
        snprintf(jobs[i].rkey, sizeof(jobs[i].rkey), "mix/requests/%s", i == 4 ? "other" : "same");
        jobs[i].e.request_key = jobs[i].rkey;
        jobs[i].e.request_record = jobs[i].record;
    }
    run_all(jobs, BURST);
    for (size_t i = 0; i < BURST; i++)
        assert_int_equal(jobs[i].e.rc, 0);
    assert_false(jobs[0].e.won);
    assert_true(has_value("mix/s-0", "old"));
    assert_false(jobs[1].e.won);
    assert_false(jobs[1].e.rid_taken);
    assert_false(has_value("mix/s-1", jobs[1].record));
    /* exactly one of the two creates of request "same" won; the other was told its id is taken */
    assert_true(jobs[2].e.won != jobs[3].e.won);
    job *loser = jobs[2].e.won ? &jobs[3] : &jobs[2], *winner = jobs[2].e.won ? &jobs[2] : &jobs[3];
    assert_true(loser->e.rid_taken);
    assert_true(has_value("mix/requests/same", winner->record));
    assert_false(has_value(loser->key, loser->record));
    for (size_t i = 4; i < BURST; i++) {
        assert_true(jobs[i].e.won);
        assert_true(has_value(jobs[i].key, jobs[i].record));
    }
    assert_true(has_value("mix/requests/other", jobs[4].record));
    kf_commit_batch_free(b);
}

static void test_etcd_down(void **state) {
    (void)state;
    kf_commit_batch *b;
    assert_int_equal(kf_commit_batch_new(etcd, NULL, &b), 0);
    int64_t ra = put_node("down/nodes/a");
    etcd_kill(&srv, SIGKILL);
    static job jobs[8];
    for (size_t i = 0; i < 8; i++)
        fill(&jobs[i], b, "down", i, "down/nodes/a", ra);
    run_all(jobs, 8);
    for (size_t i = 0; i < 8; i++) {
        assert_true(jobs[i].e.rc < 0);
        assert_false(jobs[i].e.won);
        assert_true(jobs[i].e.err.msg[0] != '\0');
    }
    kf_commit_batch_free(b);
}

int main(void) {
    if (access(ETCD_BIN, X_OK) != 0) {
        fprintf(stderr, "%s not installed: skipping\n", ETCD_BIN);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lone),
        cmocka_unit_test(test_burst_batched),
        cmocka_unit_test(test_losers_told_apart),
        cmocka_unit_test(test_etcd_down), /* last: it kills the server */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
