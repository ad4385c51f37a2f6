/* test_etcd_json.c - unit tests of the etcd gateway encoding (etcd_json.c):
 * base64, prefix range ends, exact int64s, omitted default fields, txn and
 * watch bodies, gateway errors, and malformed input. No server needed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "etcd_internal.h"

static void test_base64(void **state) {
    (void)state;
    static const struct { const char *plain; size_t len; const char *b64; } v[] = {
        {"", 0, ""},           {"f", 1, "Zg=="},         {"fo", 2, "Zm8="},
        {"foo", 3, "Zm9v"},    {"foob", 4, "Zm9vYg=="},  {"fooba", 5, "Zm9vYmE="},
        {"foobar", 6, "Zm9vYmFy"}, {"\0\xff\xfe", 3, "AP/+"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *enc = kf_etcd_b64_encode(v[i].plain, v[i].len);
        assert_non_null(enc);
        assert_string_equal(enc, v[i].b64);
        char *dec = NULL;
        size_t dlen = 99;
        assert_int_equal(kf_etcd_b64_decode(enc, strlen(enc), &dec, &dlen), 0);
        assert_int_equal(dlen, v[i].len);
        assert_memory_equal(dec, v[i].plain, v[i].len);
        assert_int_equal(dec[dlen], '\0');
        free(enc);
        free(dec);
    }
    /* Every byte value survives. */
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    char *enc = kf_etcd_b64_encode(all, sizeof(all));
    char *dec = NULL;
    size_t dlen = 0;
    assert_int_equal(kf_etcd_b64_decode(enc, strlen(enc), &dec, &dlen), 0);
    assert_int_equal(dlen, 256);
    assert_memory_equal(dec, all, 256);
    free(enc);
    free(dec);
    /* Strict decoding. */
    static const char *bad[] = {"Zg=", "Zg", "Z===", "Zm9v\n", "Zm 9", "Zm=v", "Zh==", "Zm9=", "====", "Zm9v*A=="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        dec = (char *)1;
        assert_int_equal(kf_etcd_b64_decode(bad[i], strlen(bad[i]), &dec, &dlen), -EBADMSG);
        assert_null(dec);
    }
}

static void check_end(const char *prefix, size_t len, const char *want, size_t want_len) {
    unsigned char out[16];
    size_t n = kf_etcd_prefix_end(prefix, len, out);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
}

static void test_prefix_end(void **state) {
    (void)state;
    check_end("abc", 3, "abd", 3);
    check_end("/nodes/", 7, "/nodes0", 7);
    check_end("a\xff", 2, "b", 1);
    check_end("a\xff\xff\xff", 4, "b", 1);
    check_end("a\xfe\xff", 3, "a\xff", 2);
    check_end("\xff", 1, "\0", 1);          /* all 0xff: no upper bound */
    check_end("\xff\xff\xff", 3, "\0", 1);
    check_end("", 0, "\0", 1);              /* empty: the whole keyspace */
    check_end("\0", 1, "\x01", 1);
}

static cJSON *parse(const char *s) {
    cJSON *j = NULL;
    assert_int_equal(kf_etcd_json_parse(s, strlen(s), &j, NULL), 0);
    return j;
}

static void test_int64(void **state) {
    (void)state;
    /* 2^53 + 1 and INT64_MAX/MIN: a double would round them. */
    cJSON *j = parse("{\"a\":\"9007199254740993\",\"max\":\"9223372036854775807\","
                     "\"min\":\"-9223372036854775808\",\"over\":\"9223372036854775808\","
                     "\"num\":12,\"sp\":\" 1\",\"plus\":\"+1\",\"x\":\"12x\",\"e\":\"\",\"nul\":null}");
    int64_t v = -1;
    assert_int_equal(kf_etcd_json_int64(j, "a", &v), 0);
    assert_true(v == INT64_C(9007199254740993));
    assert_int_equal(kf_etcd_json_int64(j, "max", &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(kf_etcd_json_int64(j, "min", &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(kf_etcd_json_int64(j, "absent", &v), 0); /* omitted default */
    assert_true(v == 0);
    assert_int_equal(kf_etcd_json_int64(j, "nul", &v), 0);
    assert_true(v == 0);
    assert_int_equal(kf_etcd_json_int64(j, "over", &v), -EBADMSG);
    assert_int_equal(kf_etcd_json_int64(j, "num", &v), -EBADMSG); /* never via a double */
    assert_int_equal(kf_etcd_json_int64(j, "sp", &v), -EBADMSG);
    assert_int_equal(kf_etcd_json_int64(j, "plus", &v), -EBADMSG);
    assert_int_equal(kf_etcd_json_int64(j, "x", &v), -EBADMSG);
    assert_int_equal(kf_etcd_json_int64(j, "e", &v), -EBADMSG);
    cJSON_Delete(j);

    /* Round trip through an encoded request. */
    j = cJSON_CreateObject();
    assert_int_equal(kf_etcd_json_add_int64(j, "ID", INT64_C(7587869581034522113)), 0);
    char *s = cJSON_PrintUnformatted(j);
    assert_string_equal(s, "{\"ID\":\"7587869581034522113\"}");
    cJSON_Delete(j);
    j = parse(s);
    assert_int_equal(kf_etcd_json_int64(j, "ID", &v), 0);
    assert_true(v == INT64_C(7587869581034522113));
    cJSON_Delete(j);
    free(s);
}

static void test_range_resp(void **state) {
    (void)state;
    cJSON *j = parse("{\"header\":{\"cluster_id\":\"14841639068965178418\",\"revision\":\"9007199254740995\"},"
                     "\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":\"2\",\"mod_revision\":\"3\","
                     "\"version\":\"2\",\"value\":\"YmFy\",\"lease\":\"7587869581034522113\"},"
                     "{\"key\":\"Zm9w\",\"create_revision\":\"4\",\"mod_revision\":\"4\",\"version\":\"1\"}],"
                     "\"count\":\"5\",\"more\":true}");
    kf_etcd_kvs kvs;
    assert_int_equal(kf_etcd_json_range_resp(j, &kvs, NULL), 0);
    assert_true(kvs.revision == INT64_C(9007199254740995));
    assert_int_equal(kvs.n, 2);
    assert_int_equal(kvs.count, 5);
    assert_true(kvs.more);
    assert_string_equal(kvs.kvs[0].key, "foo");
    assert_string_equal(kvs.kvs[0].value, "bar");
    assert_true(kvs.kvs[0].lease == INT64_C(7587869581034522113));
    assert_int_equal(kvs.kvs[0].mod_revision, 3);
    /* An empty value is omitted by the gateway: empty, not an error. */
    assert_string_equal(kvs.kvs[1].key, "fop");
    assert_int_equal(kvs.kvs[1].value_len, 0);
    assert_string_equal(kvs.kvs[1].value, "");
    assert_int_equal(kvs.kvs[1].lease, 0);
    kf_etcd_kvs_done(&kvs);
    kf_etcd_kvs_done(&kvs); /* idempotent */
    cJSON_Delete(j);

    /* No kvs at all (nothing matched) and no "more"/"count". */
    j = parse("{\"header\":{\"revision\":\"7\"}}");
    assert_int_equal(kf_etcd_json_range_resp(j, &kvs, NULL), 0);
    assert_int_equal(kvs.n, 0);
    assert_false(kvs.more);
    assert_int_equal(kvs.revision, 7);
    cJSON_Delete(j);
}

static void test_txn(void **state) {
    (void)state;
    /* succeeded=false is omitted. */
    cJSON *j = parse("{\"header\":{\"revision\":\"12\"},\"responses\":[{\"response_range\":{\"header\":"
                     "{\"revision\":\"12\"},\"kvs\":[{\"key\":\"aw==\",\"value\":\"dg==\",\"mod_revision\":\"11\"}],"
                     "\"count\":\"1\"}},{\"response_delete_range\":{\"header\":{},\"deleted\":\"3\"}},"
                     "{\"response_put\":{\"header\":{\"revision\":\"12\"}}}]}");
    kf_etcd_txn_result r;
    assert_int_equal(kf_etcd_json_txn_resp(j, &r, NULL), 0);
    assert_false(r.succeeded);
    assert_int_equal(r.revision, 12);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.results[0].type, KF_ETCD_OP_RANGE);
    assert_string_equal(r.results[0].kvs.kvs[0].key, "k");
    assert_int_equal(r.results[1].type, KF_ETCD_OP_DELETE);
    assert_int_equal(r.results[1].deleted, 3);
    assert_int_equal(r.results[2].type, KF_ETCD_OP_PUT);
    kf_etcd_txn_result_done(&r);
    cJSON_Delete(j);
    j = parse("{\"header\":{\"revision\":\"13\"},\"succeeded\":true}");
    assert_int_equal(kf_etcd_json_txn_resp(j, &r, NULL), 0);
    assert_true(r.succeeded);
    assert_int_equal(r.n, 0);
    cJSON_Delete(j);

    /* Request encoding: operands present even when 0. */
    kf_etcd_cmp cmps[] = {
        {.key = "k", .key_len = 1, .target = KF_ETCD_CMP_MOD, .result = KF_ETCD_CMP_EQUAL, .number = 42},
        {.key = "k", .key_len = 1, .target = KF_ETCD_CMP_CREATE, .result = KF_ETCD_CMP_EQUAL, .number = 0},
        {.key = "k", .key_len = 1, .target = KF_ETCD_CMP_VALUE, .result = KF_ETCD_CMP_NOT_EQUAL, .value = "v", .value_len = 1},
    };
    kf_etcd_op ops[] = {
        {.type = KF_ETCD_OP_PUT, .key = "k", .key_len = 1, .value = "v", .value_len = 1, .lease = INT64_C(9007199254740993)},
        {.type = KF_ETCD_OP_DELETE, .key = "a", .key_len = 1, .range_end = "b", .range_end_len = 1},
    };
    kf_etcd_op fail = {.type = KF_ETCD_OP_RANGE, .key = "k", .key_len = 1, .limit = 1};
    cJSON *req = NULL;
    assert_int_equal(kf_etcd_json_txn_req(cmps, 3, ops, 2, &fail, 1, &req, NULL), 0);
    char *s = cJSON_PrintUnformatted(req);
    assert_string_equal(s,
        "{\"compare\":[{\"key\":\"aw==\",\"target\":\"MOD\",\"result\":\"EQUAL\",\"mod_revision\":\"42\"},"
        "{\"key\":\"aw==\",\"target\":\"CREATE\",\"result\":\"EQUAL\",\"create_revision\":\"0\"},"
        "{\"key\":\"aw==\",\"target\":\"VALUE\",\"result\":\"NOT_EQUAL\",\"value\":\"dg==\"}],"
        "\"success\":[{\"request_put\":{\"key\":\"aw==\",\"value\":\"dg==\",\"lease\":\"9007199254740993\"}},"
        "{\"request_delete_range\":{\"key\":\"YQ==\",\"range_end\":\"Yg==\"}}],"
        "\"failure\":[{\"request_range\":{\"key\":\"aw==\",\"limit\":\"1\"}}]}");
    free(s);
    cJSON_Delete(req);
    /* Bad arguments. */
    kf_error e = {0};
    kf_etcd_cmp badc = {.key = "", .key_len = 0};
    assert_int_equal(kf_etcd_json_txn_req(&badc, 1, NULL, 0, NULL, 0, &req, &e), -EINVAL);
    assert_null(req);
    kf_etcd_op bado = {.type = (kf_etcd_op_type)9, .key = "k", .key_len = 1};
    assert_int_equal(kf_etcd_json_txn_req(NULL, 0, &bado, 1, NULL, 0, &req, &e), -EINVAL);
    assert_int_equal(kf_etcd_json_txn_req(cmps, KF_ETCD_MAX_TXN_OPS + 1, NULL, 0, NULL, 0, &req, &e), -E2BIG);
}

static void test_watch_msg(void **state) {
    (void)state;
    /* A PUT event has no "type" (the enum default is omitted). */
    const char *line =
        "{\"result\":{\"header\":{\"revision\":\"5\"},\"events\":[{\"kv\":{\"key\":\"YQ==\","
        "\"create_revision\":\"4\",\"mod_revision\":\"5\",\"version\":\"2\",\"value\":\"Mg==\"},"
        "\"prev_kv\":{\"key\":\"YQ==\",\"create_revision\":\"4\",\"mod_revision\":\"4\",\"version\":\"1\","
        "\"value\":\"MQ==\"}},{\"type\":\"DELETE\",\"kv\":{\"key\":\"Yg==\",\"mod_revision\":\"5\"}}]}}";
    kf_etcd_watch_msg m;
    assert_int_equal(kf_etcd_json_watch_msg(line, strlen(line), &m, NULL), 0);
    assert_int_equal(m.n_events, 2);
    assert_int_equal(m.events[0].type, KF_ETCD_EVENT_PUT);
    assert_string_equal(m.events[0].kv.value, "2");
    assert_true(m.events[0].has_prev_kv);
    assert_string_equal(m.events[0].prev_kv.value, "1");
    assert_int_equal(m.events[1].type, KF_ETCD_EVENT_DELETE);
    assert_string_equal(m.events[1].kv.key, "b");
    assert_false(m.events[1].has_prev_kv);
    assert_false(m.created);
    assert_false(m.canceled);
    kf_etcd_watch_msg_done(&m);

    line = "{\"result\":{\"header\":{\"revision\":\"2\"},\"canceled\":true,\"compact_revision\":\"9007199254740993\"}}";
    assert_int_equal(kf_etcd_json_watch_msg(line, strlen(line), &m, NULL), 0);
    assert_true(m.canceled);
    assert_true(m.compact_revision == INT64_C(9007199254740993));
    kf_etcd_watch_msg_done(&m);

    line = "{\"result\":{\"header\":{\"revision\":\"2\"},\"created\":true}}";
    assert_int_equal(kf_etcd_json_watch_msg(line, strlen(line), &m, NULL), 0);
    assert_true(m.created);
    assert_int_equal(m.n_events, 0);
    kf_etcd_watch_msg_done(&m);

    /* An error in the middle of the stream. */
    kf_error e = {0};
    line = "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\"}}";
    assert_int_equal(kf_etcd_json_watch_msg(line, strlen(line), &m, &e), -EAGAIN);
    assert_int_equal(e.status, KF_ST_UNAVAILABLE);
    assert_string_equal(e.msg, "etcdserver: no leader");
}

static void test_errors(void **state) {
    (void)state;
    kf_error e = {0};
    cJSON *j = parse("{\"error\":\"etcdserver: mvcc: required revision has been compacted\","
                     "\"message\":\"etcdserver: mvcc: required revision has been compacted\",\"code\":11}");
    int code = 0;
    assert_int_equal(kf_etcd_json_error(j, &code, &e), -ERANGE);
    assert_int_equal(code, 11);
    assert_int_equal(e.status, KF_ST_OUT_OF_RANGE);
    assert_string_equal(e.msg, "etcdserver: mvcc: required revision has been compacted");
    cJSON_Delete(j);
    j = parse("{\"error\":\"etcdserver: invalid auth token\",\"code\":16}");
    assert_int_equal(kf_etcd_json_error(j, &code, &e), -EACCES);
    assert_true(kf_etcd_is_auth_failure(code, e.msg));
    cJSON_Delete(j);
    j = parse("{\"header\":{}}");
    assert_int_equal(kf_etcd_json_error(j, &code, &e), 0);
    cJSON_Delete(j);
}

static void test_malformed(void **state) {
    (void)state;
    static const char *inputs[] = {
        "", "{", "[]", "\"x\"", "nul", "{\"result\":5}", "{\"result\":{\"events\":{}}}",
        "{\"result\":{\"events\":[5]}}", "{\"result\":{\"events\":[{\"type\":\"BOOM\",\"kv\":{}}]}}",
        "{\"result\":{\"events\":[{\"kv\":{\"key\":\"***\"}}]}}",
        "{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ==\",\"mod_revision\":5}}]}}",
        "{\"result\":{\"events\":[{}]}}", "{\"result\":{\"header\":{\"revision\":\"1e3\"}}}",
        "{\"result\":{\"header\":[]}}",
    };
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        kf_error e = {0};
        kf_etcd_watch_msg m;
        int r = kf_etcd_json_watch_msg(inputs[i], strlen(inputs[i]), &m, &e);
        assert_int_equal(r, -EBADMSG);
        assert_true(e.msg[0] != '\0');
        assert_int_equal(m.n_events, 0);
        assert_null(m.events);
    }
    kf_etcd_kvs kvs;
    cJSON *j = parse("{\"kvs\":[{\"key\":\"YQ==\"},{\"key\":\"!\"}]}");
    assert_int_equal(kf_etcd_json_range_resp(j, &kvs, NULL), -EBADMSG);
    assert_int_equal(kvs.n, 0);
    cJSON_Delete(j);
    j = parse("{\"kvs\":\"no\"}");
    assert_int_equal(kf_etcd_json_range_resp(j, &kvs, NULL), -EBADMSG);
    cJSON_Delete(j);
    kf_etcd_txn_result r;
    j = parse("{\"responses\":[{\"response_what\":{}}]}");
    assert_int_equal(kf_etcd_json_txn_resp(j, &r, NULL), -EBADMSG);
    cJSON_Delete(j);
    /* Not NUL-terminated: the parser must stop at the length. */
    char buf[8];
    memcpy(buf, "{\"a\":1}X", 8);
    cJSON *k = NULL;
    assert_int_equal(kf_etcd_json_parse(buf, 7, &k, NULL), 0);
    cJSON_Delete(k);
    /* Malformed and short, in a buffer of exactly its size: the error
     * message quotes it without reading past the end. */
    char *short_buf = malloc(3);
    memcpy(short_buf, "{\"\x01", 3);
    kf_error e = {0};
    assert_int_equal(kf_etcd_json_parse(short_buf, 3, &k, &e), -EBADMSG);
    assert_non_null(strstr(e.msg, "\"{\"?\""));
    free(short_buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),   cmocka_unit_test(test_prefix_end), cmocka_unit_test(test_int64),
        cmocka_unit_test(test_range_resp), cmocka_unit_test(test_txn),    cmocka_unit_test(test_watch_msg),
        cmocka_unit_test(test_errors),   cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
