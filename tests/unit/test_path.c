/* test_path.c - kf_path_check(): what a client path may be, and what it
 * becomes. Pure; runs anywhere. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "files.h"

static void ok(const char *in, const char *want) {
    char out[KF_PATH_MAX + 1];
    kf_error err = {0};
    int r = kf_path_check(in, strlen(in), out, sizeof(out), &err);
    if (r != 0)
        fail_msg("'%s' refused: %s", in, err.msg);
    assert_string_equal(out, want);
}

static void bad_len(const char *in, size_t len, const char *msg_part) {
    char out[KF_PATH_MAX + 1];
    kf_error err = {0};
    int r = kf_path_check(in, len, out, sizeof(out), &err);
    if (r == 0)
        fail_msg("'%.*s' accepted as '%s'", (int)len, in, out);
    assert_true(r < 0);
    assert_int_equal(kf_error_status(&err), KF_ST_INVALID_ARGUMENT);
    if (msg_part && !strstr(err.msg, msg_part))
        fail_msg("'%.*s': message '%s' lacks '%s'", (int)len, in, err.msg, msg_part);
}

static void bad(const char *in, const char *msg_part) {
    bad_len(in, strlen(in), msg_part);
}

static void test_accepts(void **state) {
    (void)state;
    ok("a", "a");
    ok("a/b.csv", "a/b.csv");
    ok("./a", "a");
    ok("a/./b", "a/b");
    ok(".", ".");
    ok("./", ".");
    ok("/mnt/data", ".");
    ok("/mnt/data/", ".");
    ok("/mnt/data/a/b.csv", "a/b.csv");
    ok("//mnt//data//a//b", "a/b");
    ok("a//b///c", "a/b/c");
    ok("a/b/", "a/b");
    ok("...", "...");
    ok("..a", "..a");
    ok("a..", "a..");
    ok(".hidden", ".hidden");
    ok("données/ß.txt", "données/ß.txt");
    ok("emoji-\xf0\x9f\x98\x80", "emoji-\xf0\x9f\x98\x80");
    ok("with space/and-dash_", "with space/and-dash_");
}

static void test_dotdot(void **state) {
    (void)state;
    bad("..", "..");
    bad("../etc/passwd", "..");
    bad("a/../../etc", "..");
    bad("a/..", "..");
    bad("/mnt/data/../etc", "..");
    bad("/mnt/data/..", "..");
    bad("a/b/../c", "..");
}

static void test_absolute(void **state) {
    (void)state;
    bad("/etc/shadow", "/mnt/data");
    bad("/", "/mnt/data");
    bad("/mnt", "/mnt/data");
    bad("/mnt/", "/mnt/data");
    bad("/mnt/database", "/mnt/data");
    bad("/mnt/database/x", "/mnt/data");
    bad("/mnt/dat", "/mnt/data");
    bad("/mnt/Data/x", "/mnt/data");
    bad("/tmp/x", "/mnt/data");
    bad("/data/x", "/mnt/data");
    bad("/mnt/other/data", "/mnt/data");
}

static void test_bytes(void **state) {
    (void)state;
    bad_len("", 0, "empty");
    bad_len(NULL, 0, "empty");
    bad_len("a\0b", 3, "NUL");
    bad_len("ab\0", 3, "NUL");
    bad("\xff", "UTF-8");
    bad("a/\xc3", "UTF-8");           /* truncated sequence */
    bad("\xc0\xaf", "UTF-8");         /* overlong '/' */
    bad("\xed\xa0\x80", "UTF-8");     /* surrogate */
    bad("\xf4\x90\x80\x80", "UTF-8"); /* > U+10FFFF */
    bad("a\nb", "control");
    bad("a\rb", "control");
    bad("\x1b[31m", "control");
    bad("a\tb", "control");
    bad("a\x7f", "control");
    bad("a\xc2\x85", "control"); /* U+0085 NEL */
}

static void test_lengths(void **state) {
    (void)state;
    char buf[KF_PATH_MAX + 64];
    /* component: 255 ok, 256 refused */
    memset(buf, 'a', 255);
    buf[255] = '\0';
    ok(buf, buf);
    memset(buf, 'a', 256);
    buf[256] = '\0';
    bad(buf, "component");
    /* whole path: KF_PATH_MAX ok, one more refused */
    for (size_t i = 0; i < KF_PATH_MAX; i++)
        buf[i] = (i % 100 == 99) ? '/' : 'b';
    buf[KF_PATH_MAX] = '\0';
    char out[KF_PATH_MAX + 1];
    kf_error err = {0};
    assert_int_equal(kf_path_check(buf, KF_PATH_MAX, out, sizeof(out), &err), 0);
    buf[KF_PATH_MAX] = 'b';
    buf[KF_PATH_MAX + 1] = '\0';
    bad_len(buf, KF_PATH_MAX + 1, "too long");
    /* a huge length is refused before anything reads it */
    bad_len("x", (size_t)1 << 40, "too long");
}

static void test_len_respected(void **state) {
    (void)state;
    /* only len bytes are looked at */
    char out[KF_PATH_MAX + 1];
    kf_error err = {0};
    assert_int_equal(kf_path_check("abc/../x", 3, out, sizeof(out), &err), 0);
    assert_string_equal(out, "abc");
    assert_int_equal(kf_path_check("/mnt/database", 9, out, sizeof(out), &err), 0);
    assert_string_equal(out, ".");
    /* small output buffer: refused, no overflow */
    char small[4];
    assert_true(kf_path_check("abcdef", 6, small, sizeof(small), &err) < 0);
    assert_int_equal(kf_path_check("abc", 3, small, sizeof(small), &err), 0);
    assert_string_equal(small, "abc");
    /* NULL err is fine */
    assert_int_equal(kf_path_check("..", 2, out, sizeof(out), NULL), -EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts), cmocka_unit_test(test_dotdot),  cmocka_unit_test(test_absolute),
        cmocka_unit_test(test_bytes),   cmocka_unit_test(test_lengths), cmocka_unit_test(test_len_respected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
