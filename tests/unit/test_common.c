/* test_common.c - unit tests of common/: UTF-8 validation, size and
 * duration parsing, the errno -> gRPC status mapping, error wrapping, ids. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "kf/error.h"
#include "kf/util.h"

static void test_utf8(void **state) {
    (void)state;
    assert_true(kf_utf8_valid("hello", 5));
    assert_true(kf_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 16));
    assert_false(kf_utf8_valid("\xff", 1));
    assert_false(kf_utf8_valid("\xc3", 1));             /* truncated */
    assert_false(kf_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(kf_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(kf_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(kf_utf8_valid("ab\xe2\x82", 4));
    assert_true(kf_utf8_valid("", 0));
}

static void test_sizes(void **state) {
    (void)state;
    uint64_t v;
    assert_int_equal(kf_parse_size("512M", &v), 0);
    assert_int_equal(v, 512ULL << 20);
    assert_int_equal(kf_parse_size("2G", &v), 0);
    assert_int_equal(v, 2ULL << 30);
    assert_int_equal(kf_parse_size("1.5GiB", &v), 0);
    assert_int_equal(v, 3ULL << 29);
    assert_int_equal(kf_parse_size("100", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(kf_parse_size("12X", &v), -EINVAL);
    assert_int_equal(kf_parse_size("-1G", &v), -EINVAL);
    assert_int_equal(kf_parse_size("", &v), -EINVAL);
    assert_int_equal(kf_parse_duration_ms("120s", &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(kf_parse_duration_ms("2m", &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(kf_parse_duration_ms("500ms", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(kf_parse_duration_ms("30", &v), 0);
    assert_int_equal(v, 30000);
    assert_int_equal(kf_parse_duration_ms("5 days", &v), -EINVAL);
}

static void test_errors(void **state) {
    (void)state;
    kf_error e = {0};
    assert_int_equal(kf_error_set(&e, ENOENT, 0, "no file %s", "x"), -ENOENT);
    assert_int_equal(kf_error_status(&e), KF_ST_NOT_FOUND);
    assert_int_equal(kf_error_wrap(&e, "session %d", 7), -ENOENT);
    assert_string_equal(e.msg, "session 7: no file x");
    assert_int_equal(kf_status_from_errno(-ENOSPC), KF_ST_RESOURCE_EXHAUSTED);
    assert_int_equal(kf_status_from_errno(EINVAL), KF_ST_INVALID_ARGUMENT);
    assert_int_equal(kf_error_set(&e, -EIO, KF_ST_UNAVAILABLE, "down"), -EIO);
    assert_int_equal(kf_error_status(&e), KF_ST_UNAVAILABLE);
    kf_error_clear(&e);
    assert_int_equal(kf_error_status(&e), KF_ST_OK);
    assert_int_equal(kf_error_set(NULL, EPERM, 0, "x"), -EPERM);
}

static void test_ids(void **state) {
    (void)state;
    char a[32], b[32];
    assert_int_equal(kf_random_id(a, sizeof(a), "s-", 20), 0);
    assert_int_equal(kf_random_id(b, sizeof(b), "s-", 20), 0);
    assert_int_equal(strlen(a), 22);
    assert_memory_equal(a, "s-", 2);
    assert_string_not_equal(a, b);
    assert_int_equal(kf_random_id(a, 8, "s-", 20), -ENOSPC);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
