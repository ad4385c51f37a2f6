/* test_request_id.c - request ids of idempotent CreateSession
 * (kf/request_id.h): the id check at its edges, the fingerprint's
 * canonical form (label order does not count, every field does, no two
 * label sets hash alike by shifting a boundary), SHA-256 itself, and the
 * status codes of the shared errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kf/request_id.h"

static void test_id_check(void **state) {
    (void)state;
    kf_error err = {0};
    char id[KF_REQUEST_ID_MAX + 2];
    memset(id, 'x', KF_REQUEST_ID_MAX);
    id[KF_REQUEST_ID_MAX] = '\0';
    assert_int_equal(kf_request_id_check(id, &err), 0);
    assert_int_equal(kf_request_id_check(" ~!/..%", &err), 0);
    id[KF_REQUEST_ID_MAX] = 'x';
    id[KF_REQUEST_ID_MAX + 1] = '\0';
    assert_int_equal(kf_request_id_check(id, &err), -EINVAL);
    assert_int_equal(err.status, KF_ST_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "129 bytes"));
    assert_int_equal(kf_request_id_check("", &err), -EINVAL);
    assert_int_equal(kf_request_id_check("a\tb", &err), -EINVAL);
    assert_non_null(strstr(err.msg, "0x09 at offset 1"));
    assert_int_equal(kf_request_id_check("a\x7f", &err), -EINVAL);
    assert_int_equal(kf_request_id_check("caf\xc3\xa9", &err), -EINVAL);
    assert_non_null(strstr(err.msg, "0xc3 at offset 3"));
}

static void fp_of(const Kfleet__V1__Limits *l, const char *const *kv, size_t n, char out[KF_REQUEST_FP_LEN + 1]) {
    Kfleet__V1__CreateSessionRequest req = KFLEET__V1__CREATE_SESSION_REQUEST__INIT;
    Kfleet__V1__CreateSessionRequest__LabelsEntry e[4], *p[4];
    for (size_t i = 0; i < n; i++) {
        kfleet__v1__create_session_request__labels_entry__init(&e[i]);
        e[i].key = (char *)kv[2 * i];
        e[i].value = (char *)kv[2 * i + 1];
        p[i] = &e[i];
    }
    req.limits = (Kfleet__V1__Limits *)l;
    req.labels = p;
    req.n_labels = n;
    assert_int_equal(kf_request_fingerprint(&req, out), 0);
    assert_int_equal(strlen(out), KF_REQUEST_FP_LEN);
}

static void test_fingerprint(void **state) {
    (void)state;
    Kfleet__V1__Limits l = KFLEET__V1__LIMITS__INIT;
    char a[KF_REQUEST_FP_LEN + 1], b[KF_REQUEST_FP_LEN + 1], text_fp[KF_REQUEST_FP_LEN + 1];
    /* no limits at all and all-zero limits are the same request */
    fp_of(NULL, NULL, 0, a);
    fp_of(&l, NULL, 0, b);
    assert_string_equal(a, b);
    /* the documented canonical text */
    const char *text = "memory_bytes=0;cpu_millis=0;pids=0;exec_timeout_ms=0;disk_bytes=0;"
                       "disk_inodes=0;idle_timeout_s=0;max_lifetime_s=0";
    assert_int_equal(kf_sha256_hex(text, strlen(text), text_fp), 0);
    assert_string_equal(a, text_fp);
    l.max_lifetime_s = 1;
    fp_of(&l, NULL, 0, b);
    assert_string_not_equal(a, b);
    /* label order does not count; a shifted key/value boundary does */
    const char *x[] = {"zone", "z1", "team", "t"}, *y[] = {"team", "t", "zone", "z1"};
    fp_of(&l, x, 2, a);
    fp_of(&l, y, 2, b);
    assert_string_equal(a, b);
    const char *s1[] = {"a", "bc"}, *s2[] = {"ab", "c"};
    fp_of(&l, s1, 1, a);
    fp_of(&l, s2, 1, b);
    assert_string_not_equal(a, b);
}

static void test_sha256(void **state) {
    (void)state;
    char out[KF_REQUEST_FP_LEN + 1];
    assert_int_equal(kf_sha256_hex("abc", 3, out), 0);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_errors(void **state) {
    (void)state;
    kf_error err = {0};
    assert_int_equal(kf_request_err_conflict(&err, "r1", "s-1"), -EEXIST);
    assert_int_equal(err.status, KF_ST_ALREADY_EXISTS);
    assert_non_null(strstr(err.msg, "request id r1 was used for a different request"));
    assert_int_equal(kf_request_err_gone(&err, "r1", "s-1"), -ESTALE);
    assert_int_equal(err.status, KF_ST_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "already created session s-1, which no longer exists"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_check),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
