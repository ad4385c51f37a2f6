/* test_sandbox_overlay_opts.c - kf_sb_overlay_opts(): the "lowerdir=" option
 * string of the read-only image overlays. Paths that would need escaping in
 * the option syntax are refused, not passed on. Pure; runs anywhere. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sandbox.h"

static void test_plain(void **state) {
    (void)state;
    char buf[96];
    assert_int_equal(kf_sb_overlay_opts(buf, sizeof(buf), "/proc/self/fd/5", "/proc/self/fd/6"), 0);
    assert_string_equal(buf, "lowerdir=/proc/self/fd/5:/proc/self/fd/6");
}

static void test_refused(void **state) {
    (void)state;
    char buf[96];
    const char *bad[] = {"/img:x", "/img,upperdir=/x", "/img\\", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (kf_sb_overlay_opts(buf, sizeof(buf), bad[i], "/e") != -EINVAL)
            fail_msg("layer '%s' not refused", bad[i]);
        if (kf_sb_overlay_opts(buf, sizeof(buf), "/img", bad[i]) != -EINVAL)
            fail_msg("lower layer '%s' not refused", bad[i]);
    }
}

static void test_too_long(void **state) {
    (void)state;
    char buf[24];
    assert_int_equal(kf_sb_overlay_opts(buf, sizeof(buf), "/proc/self/fd/5", "/proc/self/fd/6"),
                     -ENAMETOOLONG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
