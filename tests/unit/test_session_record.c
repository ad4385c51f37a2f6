/* test_session_record.c - the scheduler's session record: parsing (what
 * create.c writes, records from before tenancy, hostile input), the LOST
 * rewrite keeping every other field, and exact large integers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "scheduler.h"

static int parse(const char *s, kf_session_ref *r) {
    return kf_session_parse_record(s, strlen(s), r);
}

static void test_parse_live(void **state) {
    (void)state;
    kf_session_ref r;
    assert_int_equal(parse("{\"id\":\"s-1\",\"node\":\"n1\",\"tenant\":\"acme\",\"created_unix_ms\":1700000000123,"
                           "\"limits\":{\"memory_bytes\":\"9007199254740993\",\"cpu_millis\":500}}", &r), 0);
    assert_string_equal(r.node, "n1");
    assert_string_equal(r.tenant, "acme");
    assert_int_equal(r.memory_bytes, 9007199254740993ULL);
    assert_int_equal(r.cpu_millis, 500);
    assert_int_equal(r.created_unix_ms, 1700000000123LL);
    assert_false(r.lost);
    /* before tenancy, no limits: the anonymous tenant and the defaults */
    assert_int_equal(parse("{\"node\":\"n2\"}", &r), 0);
    assert_string_equal(r.tenant, "");
    assert_int_equal(r.memory_bytes, KF_SCHED_DEFAULT_MEMORY);
    assert_int_equal(r.cpu_millis, KF_SCHED_DEFAULT_CPU);
}

static void test_parse_rejects(void **state) {
    (void)state;
    kf_session_ref r;
    const char *bad[] = {"", "[]", "{}", "{\"node\":\"\"}", "{\"node\":7}", "{\"node\":\"n\",\"tenant\":1}",
                         "{\"node\":\"n\"", "null"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(bad[i], &r), -EBADMSG);
    char big[600] = "{\"node\":\"";
    memset(big + 9, 'x', 500);
    strcpy(big + 509, "\"}");
    assert_int_equal(parse(big, &r), -EBADMSG); /* node name too long */
    /* a state other than LOST is not lost; a wrong-typed state is ignored */
    assert_int_equal(parse("{\"node\":\"n\",\"state\":\"LOSTX\"}", &r), 0);
    assert_false(r.lost);
    assert_int_equal(parse("{\"node\":\"n\",\"state\":1}", &r), 0);
    assert_false(r.lost);
}

static void test_lost_rewrite(void **state) {
    (void)state;
    const char *live = "{\"id\":\"s-1\",\"node\":\"n1\",\"tenant\":\"t\",\"created_unix_ms\":5,"
                       "\"limits\":{\"memory_bytes\":\"9007199254740993\"},\"request_id\":\"r-9\"}";
    char *lost = kf_session_record_lost(live, strlen(live), 1700000000999LL, "node n1 left");
    assert_non_null(lost);
    assert_string_equal(lost, "{\"id\":\"s-1\",\"node\":\"n1\",\"tenant\":\"t\",\"created_unix_ms\":5,"
                              "\"limits\":{\"memory_bytes\":\"9007199254740993\"},\"request_id\":\"r-9\","
                              "\"state\":\"LOST\",\"lost_unix_ms\":1700000000999,\"reason\":\"node n1 left\"}");
    kf_session_ref r;
    assert_int_equal(parse(lost, &r), 0);
    assert_true(r.lost);
    assert_int_equal(r.lost_unix_ms, 1700000000999LL);
    assert_int_equal(r.memory_bytes, 9007199254740993ULL);
    /* marking again replaces the fields instead of adding a second copy */
    char *again = kf_session_record_lost(lost, strlen(lost), 7, "again");
    assert_non_null(again);
    assert_non_null(strstr(again, "\"lost_unix_ms\":7,\"reason\":\"again\"}"));
    assert_null(strstr(strstr(again, "\"state\"") + 1, "\"state\""));
    free(again);
    free(lost);
    assert_null(kf_session_record_lost("[1]", 3, 1, "x"));
    assert_null(kf_session_record_lost("{", 1, 1, "x"));
}

static void test_key(void **state) {
    (void)state;
    char key[KF_SESSION_KEY_MAX];
    kf_session_key(key, "s-abc");
    assert_string_equal(key, "/kfleet/sessions/s-abc");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_live),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_lost_rewrite),
        cmocka_unit_test(test_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
