/* test_metrics.c - the metrics registry and its Prometheus text exposition:
 * the exact text of counters, gauges and histograms (cumulative buckets,
 * a value on a bound counted in it, +Inf equal to the count, _sum), escaping
 * of help text and label values, the collect callback, registration errors,
 * NULL handles, and exact totals under concurrent updates. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kf/metrics.h"
#include "kf/metrics_http.h"

static char *expose(kf_metrics *m) {
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(kf_metrics_expose(m, &text, &len), 0);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

static void test_counter_and_gauge_text(void **state) {
    (void)state;
    kf_metrics *m;
    assert_int_equal(kf_metrics_new(&m), 0);
    kf_counter *a, *b, *plain;
    kf_gauge *g;
    kf_label_pair la = {"state", "ready"}, lb = {"state", "busy"};
    assert_int_equal(kf_metrics_counter(m, "kfleet_x_total", "Things done.", &la, 1, &a, NULL), 0);
    assert_int_equal(kf_metrics_counter(m, "kfleet_x_total", "ignored", &lb, 1, &b, NULL), 0);
    assert_int_equal(kf_metrics_counter(m, "kfleet_y_total", "Plain.", NULL, 0, &plain, NULL), 0);
    assert_int_equal(kf_metrics_gauge(m, "kfleet_g", "A gauge.", NULL, 0, &g, NULL), 0);
    /* the same labels again: the same handle */
    kf_counter *a2;
    assert_int_equal(kf_metrics_counter(m, "kfleet_x_total", "x", &la, 1, &a2, NULL), 0);
    assert_ptr_equal(a, a2);

    kf_counter_inc(a);
    kf_counter_add(b, 41);
    kf_counter_inc(b);
    kf_gauge_set(g, 7);
    kf_gauge_add(g, -10);
    char *t = expose(m);
    assert_string_equal(t, "# HELP kfleet_x_total Things done.\n"
                           "# TYPE kfleet_x_total counter\n"
                           "kfleet_x_total{state=\"ready\"} 1\n"
                           "kfleet_x_total{state=\"busy\"} 42\n"
                           "# HELP kfleet_y_total Plain.\n"
                           "# TYPE kfleet_y_total counter\n"
                           "kfleet_y_total 0\n"
                           "# HELP kfleet_g A gauge.\n"
                           "# TYPE kfleet_g gauge\n"
                           "kfleet_g -3\n");
    free(t);
    kf_metrics_free(m);
}

static void test_histogram_text(void **state) {
    (void)state;
    kf_metrics *m;
    assert_int_equal(kf_metrics_new(&m), 0);
    kf_histogram *h;
    const double bounds[] = {0.005, 0.1, 1};
    kf_label_pair l = {"op", "range"};
    assert_int_equal(kf_metrics_histogram(m, "kfleet_h_seconds", "Latency.", bounds, 3, &l, 1, &h, NULL), 0);
    kf_histogram_observe(h, 0.001);
    kf_histogram_observe(h, 0.1);  /* on a bound: counted in it (le) */
    kf_histogram_observe(h, 0.25);
    kf_histogram_observe(h, 7.5);  /* past the last bound: only +Inf */
    kf_histogram_observe(h, NAN);  /* ignored */
    assert_int_equal(kf_histogram_count(h), 4);
    char *t = expose(m);
    /* the sum is a float: read it back and compare it apart */
    char *sum = strstr(t, "kfleet_h_seconds_sum{op=\"range\"} ");
    assert_non_null(sum);
    char *val = strchr(sum, '}') + 2;
    char *end;
    double v = strtod(val, &end);
    assert_true(fabs(v - 7.851) < 1e-9);
    assert_true(end > val && *end == '\n');
    memmove(val, "%SUM%", 5);
    memmove(val + 5, end, strlen(end) + 1);
    assert_string_equal(t, "# HELP kfleet_h_seconds Latency.\n"
                           "# TYPE kfleet_h_seconds histogram\n"
                           "kfleet_h_seconds_bucket{op=\"range\",le=\"0.005\"} 1\n"
                           "kfleet_h_seconds_bucket{op=\"range\",le=\"0.1\"} 2\n"
                           "kfleet_h_seconds_bucket{op=\"range\",le=\"1\"} 3\n"
                           "kfleet_h_seconds_bucket{op=\"range\",le=\"+Inf\"} 4\n"
                           "kfleet_h_seconds_sum{op=\"range\"} %SUM%\n"
                           "kfleet_h_seconds_count{op=\"range\"} 4\n");
    free(t);
    kf_metrics_free(m);
}

static void test_histogram_without_labels(void **state) {
    (void)state;
    kf_metrics *m;
    assert_int_equal(kf_metrics_new(&m), 0);
    kf_histogram *h;
    const double bounds[] = {1};
    assert_int_equal(kf_metrics_histogram(m, "h", "H.", bounds, 1, NULL, 0, &h, NULL), 0);
    char *t = expose(m);
    assert_string_equal(t, "# HELP h H.\n# TYPE h histogram\n"
                           "h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n");
    free(t);
    kf_metrics_free(m);
}

static void test_escaping(void **state) {
    (void)state;
    kf_metrics *m;
    assert_int_equal(kf_metrics_new(&m), 0);
    kf_gauge *g;
    kf_label_pair l[2] = {{"reason", "a \"quoted\" \\ back\nslash"}, {"node", "n-1"}};
    assert_int_equal(kf_metrics_gauge(m, "kfleet_e", "Help with \\ and\na newline \"kept\".", l, 2, &g, NULL), 0);
    kf_gauge_set(g, 1);
    char *t = expose(m);
    assert_string_equal(t, "# HELP kfleet_e Help with \\\\ and\\na newline \"kept\".\n"
                           "# TYPE kfleet_e gauge\n"
                           "kfleet_e{reason=\"a \\\"quoted\\\" \\\\ back\\nslash\",node=\"n-1\"} 1\n");
    free(t);
    kf_metrics_free(m);
}

static void set_seven(void *ud) { kf_gauge_set(ud, 7); }

static void test_collect_callback(void **state) {
    (void)state;
    kf_metrics *m;
    assert_int_equal(kf_metrics_new(&m), 0);
    kf_gauge *g;
    assert_int_equal(kf_metrics_gauge(m, "kfleet_c", "C.", NULL, 0, &g, NULL), 0);
    kf_metrics_set_collect(m, set_seven, g);
    char *t = expose(m);
    assert_non_null(strstr(t, "\nkfleet_c 7\n"));
    free(t);
    kf_metrics_free(m);
}

static void test_registration_errors(void **state) {
    (void)state;
    kf_metrics *m;
    assert_int_equal(kf_metrics_new(&m), 0);
    kf_counter *c;
    kf_gauge *g;
    kf_histogram *h;
    kf_error err = {0};
    assert_int_equal(kf_metrics_counter(m, "9bad", "x", NULL, 0, &c, &err), -EINVAL);
    assert_null(c);
    assert_int_equal(kf_metrics_counter(m, "bad-name", "x", NULL, 0, &c, &err), -EINVAL);
    kf_label_pair reserved = {"__name", "x"}, le = {"le", "1"}, dash = {"a-b", "x"};
    assert_int_equal(kf_metrics_counter(m, "ok_total", "x", &reserved, 1, &c, &err), -EINVAL);
    assert_int_equal(kf_metrics_counter(m, "ok_total", "x", &le, 1, &c, &err), -EINVAL);
    assert_int_equal(kf_metrics_counter(m, "ok_total", "x", &dash, 1, &c, &err), -EINVAL);
    kf_label_pair twice[2] = {{"a", "1"}, {"a", "2"}};
    assert_int_equal(kf_metrics_counter(m, "ok_total", "x", twice, 2, &c, &err), -EINVAL);
    kf_label_pair five[5] = {{"a", "1"}, {"b", "1"}, {"c", "1"}, {"d", "1"}, {"e", "1"}};
    assert_int_equal(kf_metrics_counter(m, "ok_total", "x", five, 5, &c, &err), -EINVAL);
    /* a name keeps its type */
    assert_int_equal(kf_metrics_counter(m, "ok_total", "x", NULL, 0, &c, &err), 0);
    assert_int_equal(kf_metrics_gauge(m, "ok_total", "x", NULL, 0, &g, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "ok_total"));
    const double down[] = {1, 0.5}, b1[] = {1}, b2[] = {2};
    assert_int_equal(kf_metrics_histogram(m, "h", "x", down, 2, NULL, 0, &h, &err), -EINVAL);
    assert_int_equal(kf_metrics_histogram(m, "h", "x", b1, 0, NULL, 0, &h, &err), -EINVAL);
    assert_int_equal(kf_metrics_histogram(m, "h", "x", b1, 1, NULL, 0, &h, &err), 0);
    assert_int_equal(kf_metrics_histogram(m, "h", "x", b2, 1, NULL, 0, &h, &err), -EINVAL);
    /* failed registrations left nothing behind */
    char *t = expose(m);
    assert_null(strstr(t, "9bad"));
    assert_null(strstr(t, "bad-name"));
    free(t);
    kf_metrics_free(m);
}

static void test_register_table(void **state) {
    (void)state;
    kf_metrics *m;
    assert_int_equal(kf_metrics_new(&m), 0);
    kf_counter *c = NULL;
    kf_gauge *g = NULL;
    kf_histogram *h = NULL;
    const double b[] = {1};
    const kf_metric_def defs[] = {
        {KF_METRIC_COUNTER, "t_total", "T.", &c, {"k", "v"}, NULL, 0},
        {KF_METRIC_GAUGE, "t_g", "G.", &g, {0}, NULL, 0},
        {KF_METRIC_HISTOGRAM, "t_h", "H.", &h, {0}, b, 1},
    };
    assert_int_equal(kf_metrics_register(m, defs, 3, NULL), 0);
    assert_non_null(c);
    assert_non_null(g);
    assert_non_null(h);
    kf_counter_inc(c);
    char *t = expose(m);
    assert_non_null(strstr(t, "\nt_total{k=\"v\"} 1\n"));
    assert_non_null(strstr(t, "\nt_g 0\n"));
    assert_non_null(strstr(t, "\nt_h_count 0\n"));
    free(t);
    /* the first bad entry stops it, and says which */
    kf_counter *c2 = NULL;
    const kf_metric_def bad[] = {{KF_METRIC_GAUGE, "t_total", "x", &g, {0}, NULL, 0},
                                 {KF_METRIC_COUNTER, "t2_total", "x", &c2, {0}, NULL, 0}};
    kf_error err = {0};
    assert_int_equal(kf_metrics_register(m, bad, 2, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "t_total"));
    assert_null(c2);
    kf_metrics_free(m);
}

static void test_null_handles(void **state) {
    (void)state;
    kf_counter_inc(NULL);
    kf_gauge_set(NULL, 1);
    kf_gauge_add(NULL, 1);
    kf_histogram_observe(NULL, 1);
    assert_int_equal(kf_counter_get(NULL), 0);
    assert_int_equal(kf_gauge_get(NULL), 0);
    assert_int_equal(kf_histogram_count(NULL), 0);
    assert_null(kf_metrics_free(NULL));
}

typedef struct {
    kf_counter *c;
    kf_histogram *h;
} pair;

static void *hammer(void *ud) {
    pair *p = ud;
    for (int i = 0; i < 20000; i++) {
        kf_counter_inc(p->c);
        kf_histogram_observe(p->h, (i % 3) * 0.5);
    }
    return NULL;
}

static void test_concurrent_updates(void **state) {
    (void)state;
    kf_metrics *m;
    assert_int_equal(kf_metrics_new(&m), 0);
    pair p;
    const double bounds[] = {0.5};
    assert_int_equal(kf_metrics_counter(m, "n_total", "N.", NULL, 0, &p.c, NULL), 0);
    assert_int_equal(kf_metrics_histogram(m, "d", "D.", bounds, 1, NULL, 0, &p.h, NULL), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &p), 0);
    for (int i = 0; i < 3; i++) /* scrapes while it runs */
        free(expose(m));
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(kf_counter_get(p.c), 80000);
    assert_int_equal(kf_histogram_count(p.h), 80000);
    char *t = expose(m);
    /* 0 and 0.5 fall in le=0.5: i%3 in {0,1} of 20000 per thread */
    char want[128];
    snprintf(want, sizeof(want), "d_bucket{le=\"0.5\"} %d\n", 4 * (6667 + 6667));
    assert_non_null(strstr(t, want));
    assert_non_null(strstr(t, "d_bucket{le=\"+Inf\"} 80000\n"));
    assert_non_null(strstr(t, "n_total 80000\n"));
    free(t);
    kf_metrics_free(m);
}

static void test_listen_check(void **state) {
    (void)state;
    kf_error err = {0};
    assert_int_equal(kf_metrics_listen_check("127.0.0.1:9464", &err), 0);
    assert_int_equal(kf_metrics_listen_check("localhost:1", &err), 0);
    assert_int_equal(kf_metrics_listen_check("[::1]:65535", &err), 0);
    const char *bad[] = {"", "9464", ":9464", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
                         "127.0.0.1:94x", "a b:1", "[::1:1", "http://x:1", "127.0.0.1:123456"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kf_error_clear(&err);
        assert_int_equal(kf_metrics_listen_check(bad[i], &err), -EINVAL);
        assert_non_null(strstr(err.msg, "--metrics-listen"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge_text),
        cmocka_unit_test(test_histogram_text),
        cmocka_unit_test(test_histogram_without_labels),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_collect_callback),
        cmocka_unit_test(test_registration_errors),
        cmocka_unit_test(test_register_table),
        cmocka_unit_test(test_null_handles),
        cmocka_unit_test(test_concurrent_updates),
        cmocka_unit_test(test_listen_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
