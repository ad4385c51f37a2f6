/* test_node_record.c - the etcd node/usage/admin records: exact integers
 * (numbers below 10^15, strings from there on), labels, usage comparison,
 * and the admin parser on well-formed and hostile input. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kf/node_record.h"

static void test_node_info(void **state) {
    (void)state;
    kf_label labels[2] = {{"zone", "z1"}, {"disk", "ssd"}};
    kf_node_info n = {.id = "n1", .address = "127.0.0.1:7000", .memory_bytes = 8ULL << 30,
                      .cpu_millis = 3500, .session_slots = 7, .labels = labels, .n_labels = 2,
                      .version = "0.1.0", .tls = true, .started_unix_ms = 1700000000123};
    char *j = kf_node_info_json(&n);
    assert_non_null(j);
    assert_string_equal(j, "{\"id\":\"n1\",\"address\":\"127.0.0.1:7000\",\"capacity\":{\"memory_bytes\":8589934592,"
                           "\"cpu_millis\":3500,\"session_slots\":7},\"labels\":{\"zone\":\"z1\",\"disk\":\"ssd\"},"
                           "\"version\":\"0.1.0\",\"tls\":true,\"started_unix_ms\":1700000000123}");
    free(j);
}

static void test_usage_exact_integers(void **state) {
    (void)state;
    kf_node_usage u = {.sessions = 3, .pool_ready = 1, .pool_target = 2,
                       .memory_reserved_bytes = (1ULL << 53) + 1, .cpu_reserved_millis = 999999999999999ULL,
                       .creates = 7};
    char *j = kf_node_usage_json(&u, 1000000000000000LL);
    assert_non_null(j);
    assert_string_equal(j, "{\"sessions\":3,\"pool_ready\":1,\"pool_target\":2,"
                           "\"memory_reserved_bytes\":\"9007199254740993\","
                           "\"cpu_reserved_millis\":999999999999999,\"creates\":7,"
                           "\"updated_unix_ms\":\"1000000000000000\"}");
    free(j);
    kf_node_usage v = u;
    assert_true(kf_node_usage_equal(&u, &v));
    v.pool_ready = 0;
    assert_false(kf_node_usage_equal(&u, &v));
    v = u;
    v.creates++; /* a create and a delete between two records still counts as a change */
    assert_false(kf_node_usage_equal(&u, &v));
}

static void test_admin_round_trip(void **state) {
    (void)state;
    kf_node_admin a = {.cordoned = true, .reason = "disk", .by = "ops", .at_unix_ms = 1700000000000};
    char *j = kf_node_admin_json(&a);
    assert_non_null(j);
    kf_node_admin b;
    assert_int_equal(kf_node_admin_parse(j, strlen(j), &b), 0);
    assert_true(b.cordoned);
    assert_string_equal(b.reason, "disk");
    assert_string_equal(b.by, "ops");
    assert_int_equal(b.at_unix_ms, 1700000000000);
    free(j);
    const char *s = "{\"at\":\"9007199254740993\"}"; /* exact as a string; absent fields zero */
    assert_int_equal(kf_node_admin_parse(s, strlen(s), &b), 0);
    assert_false(b.cordoned);
    assert_string_equal(b.reason, "");
    assert_int_equal(b.at_unix_ms, 9007199254740993LL);
}

static void test_admin_hostile(void **state) {
    (void)state;
    const char *bad[] = {"", "not json", "[]", "null", "{\"cordoned\":\"yes\"}", "{\"reason\":5}",
                         "{\"at\":1.5}", "{\"at\":\"12x\"}", "{\"at\":1e300}", "{\"by\":{}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kf_node_admin b = {.cordoned = true};
        assert_int_equal(kf_node_admin_parse(bad[i], strlen(bad[i]), &b), -EBADMSG);
        assert_false(b.cordoned);
    }
    /* a long reason is cut, not overflowed; the length bound is honoured */
    size_t n = 4000;
    char *big = malloc(n + 32);
    assert_non_null(big);
    strcpy(big, "{\"cordoned\":true,\"reason\":\"");
    size_t off = strlen(big);
    memset(big + off, 'r', n);
    strcpy(big + off + n, "\"}");
    kf_node_admin b;
    assert_int_equal(kf_node_admin_parse(big, strlen(big), &b), 0);
    assert_int_equal(strlen(b.reason), KF_ADMIN_TEXT_MAX);
    assert_int_equal(kf_node_admin_parse(big, off, &b), -EBADMSG); /* cut mid-string */
    free(big);
}

static void test_pool_record(void **state) {
    (void)state;
    char *j = kf_pool_record_json(7, 1700000000000);
    assert_non_null(j);
    uint32_t t = 99;
    assert_int_equal(kf_pool_record_parse(j, strlen(j), &t), 0);
    assert_int_equal(t, 7);
    free(j);
    const char *ok = "{\"target\":\"0\"}";
    assert_int_equal(kf_pool_record_parse(ok, strlen(ok), &t), 0);
    assert_int_equal(t, 0);
    const char *bad[] = {"", "[]", "{}", "{\"target\":-1}", "{\"target\":1.5}", "{\"target\":\"x\"}",
                         "{\"target\":100001}", "{\"target\":true}", "{\"target\":null}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = 5;
        assert_int_equal(kf_pool_record_parse(bad[i], strlen(bad[i]), &t), -EBADMSG);
        assert_int_equal(t, 0);
    }
}

static void test_node_name(void **state) {
    (void)state;
    const char *good[] = {"a", "node-1", "n.example_2", "A-Z.a-z_0-9",
                          "123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(kf_node_name_valid(good[i]));
    const char *bad[] = {"", ".hidden", "a/b", "a b", "..", "n\n", "\xc3\xa9t\xc3\xa9", "a*",
                         "1234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(kf_node_name_valid(bad[i]));
    assert_false(kf_node_name_valid(NULL));
}

static void test_admin_text(void **state) {
    (void)state;
    kf_error e = {0};
    assert_int_equal(kf_admin_text_check("reason", "disk replacement \xe2\x80\x94 ticket #42", &e), 0);
    struct {
        const char *text;
        const char *msg;
    } bad[] = {
        {"", "reason is required"},
        {"a\nb", "reason contains a control character (byte 1)"},
        {"tab\there", "reason contains a control character (byte 3)"},
        {"del\x7f", "reason contains a control character (byte 3)"},
        {"c1 \xc2\x85", "reason contains a control character (byte 3)"},
        {"bad \xff utf8", "reason is not valid UTF-8"},
        {"overlong \xc0\xaf", "reason is not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        kf_error_clear(&e);
        assert_int_equal(kf_admin_text_check("reason", bad[i].text, &e), -EINVAL);
        assert_int_equal(e.status, KF_ST_INVALID_ARGUMENT);
        assert_string_equal(e.msg, bad[i].msg);
    }
    char big[KF_ADMIN_TEXT_MAX + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    kf_error_clear(&e);
    assert_int_equal(kf_admin_text_check("who", big, &e), -EINVAL);
    assert_string_equal(e.msg, "who is too long (256 bytes, max 255)");
    big[KF_ADMIN_TEXT_MAX] = '\0'; /* exactly the maximum */
    assert_int_equal(kf_admin_text_check("who", big, &e), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_info),
        cmocka_unit_test(test_usage_exact_integers),
        cmocka_unit_test(test_admin_round_trip),
        cmocka_unit_test(test_admin_hostile),
        cmocka_unit_test(test_pool_record),
        cmocka_unit_test(test_node_name),
        cmocka_unit_test(test_admin_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
