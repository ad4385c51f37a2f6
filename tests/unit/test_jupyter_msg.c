/* test_jupyter_msg.c - unit tests of the Jupyter wire codec (jupyter_msg.c)
 * and of the output translation (kernel_output.c): signatures against a
 * reference HMAC, malformed and over-limit input, base64, MIME bundles.
 * No kernel, no sockets. Also prints the codec's cost per message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jupyter_msg.h"
#include "kernel_output.h"

static const char KEY[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const char SESSION[] = "00112233445566778899aabbccddeeff";

static kf_jmsg_codec *codec_new(const char *key) {
    kf_jmsg_codec *s = NULL;
    assert_int_equal(kf_jmsg_codec_new(&s, key, strlen(key)), 0);
    return s;
}

#define FR(str) ((kf_jmsg_frame){(str), sizeof(str) - 1})

/* Frames of a received message: [ids...] delim sig header parent meta content. */
typedef struct {
    kf_jmsg_frame f[16];
    size_t n;
    char sig[KF_JMSG_SIG_LEN + 1];
} wire;

static void wire_make(kf_jmsg_codec *s, wire *w, const char *topic, const char *header,
                      const char *parent, const char *content) {
    memset(w, 0, sizeof(*w));
    if (topic)
        w->f[w->n++] = (kf_jmsg_frame){topic, strlen(topic)};
    w->f[w->n++] = FR(KF_JMSG_DELIM);
    size_t sig_at = w->n++;
    w->f[w->n++] = (kf_jmsg_frame){header, strlen(header)};
    w->f[w->n++] = (kf_jmsg_frame){parent, strlen(parent)};
    w->f[w->n++] = FR("{}");
    w->f[w->n++] = (kf_jmsg_frame){content, strlen(content)};
    assert_int_equal(kf_jmsg_sign(s, &w->f[sig_at + 1], w->sig), 0);
    w->f[sig_at] = (kf_jmsg_frame){w->sig, KF_JMSG_SIG_LEN};
}

static void test_sign_known_answer(void **state) {
    (void)state;
    kf_jmsg_codec *s = codec_new(KEY);
    kf_jmsg_frame f[4] = {FR("{\"msg_id\":\"a\",\"msg_type\":\"status\"}"), FR("{}"), FR("{}"),
                          FR("{\"execution_state\":\"idle\"}")};
    char sig[KF_JMSG_SIG_LEN + 1];
    /* Twice: the second run re-uses the key schedule. Reference value from
     * Python's hmac.new(key, digestmod=sha256). */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kf_jmsg_sign(s, f, sig), 0);
        assert_string_equal(sig, "b09fc1065c6a2565dfb258bcfde127b6dd137325eb8fc1bbe24141d986f69583");
    }
    kf_jmsg_codec_free(s);
}

static void test_build_parse_round_trip(void **state) {
    (void)state;
    kf_jmsg_codec *s = codec_new(KEY);
    const char code[] = "print(\"a\\tb\")\n\x01\x1f \xc3\xa9 \\ \"q\"";
    kf_jbuf b = {0};
    assert_int_equal(kf_jmsg_execute_content(&b, code, strlen(code)), 0);
    kf_jmsg_out out;
    assert_int_equal(kf_jmsg_build(s, SESSION, "execute_request", b.data, b.len, 1700000000123456,
                                   &out), 0);
    assert_int_equal(strlen(out.msg_id), KF_JMSG_ID_LEN);
    assert_non_null(strstr(out.header, "\"date\":\"2023-11-14T22:13:20.123456Z\""));
    assert_non_null(strstr(out.header, "\"username\":\"kfleet\""));
    assert_non_null(strstr(out.header, "\"version\":\"5.3\""));

    /* As a DEALER peer would receive it: a routing id frame first. */
    kf_jmsg_frame f[1 + KF_JMSG_OUT_FRAMES];
    f[0] = FR("routing-id");
    kf_jmsg_out_frames(&out, f + 1);
    kf_jmsg m;
    assert_int_equal(kf_jmsg_parse(s, f, 7, &m), 0);
    assert_string_equal(m.msg_type, "execute_request");
    assert_string_equal(m.msg_id, out.msg_id);
    assert_string_equal(m.parent_id, "");
    assert_null(m.content);
    assert_int_equal(kf_jmsg_parse_content(s, &m), 0);
    assert_string_equal(kf_jmsg_str(m.content, "code"), code);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(m.content, "silent")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(m.content, "store_history")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(m.content, "allow_stdin")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(m.content, "stop_on_error")));
    kf_jmsg_done(&m);

    /* Two builds never share a msg_id. */
    kf_jmsg_out out2;
    assert_int_equal(kf_jmsg_build(s, SESSION, "kernel_info_request", "{}", 2, 0, &out2), 0);
    assert_string_not_equal(out.msg_id, out2.msg_id);
    /* Arguments that would need escaping in the header are refused. */
    assert_int_equal(kf_jmsg_build(s, SESSION, "bad\"type", "{}", 2, 0, &out2), -EINVAL);
    assert_int_equal(kf_jmsg_build(s, "", "kernel_info_request", "{}", 2, 0, &out2), -EINVAL);
    kf_jbuf_done(&b);
    kf_jmsg_codec_free(s);
}

static void test_topic_frame_and_parent(void **state) {
    (void)state;
    kf_jmsg_codec *s = codec_new(KEY);
    wire w;
    wire_make(s, &w, "kernel.abc.status", "{\"msg_id\":\"m1\",\"msg_type\":\"status\"}",
              "{\"msg_id\":\"p1\",\"msg_type\":\"execute_request\"}",
              "{\"execution_state\":\"idle\"}");
    kf_jmsg m;
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), 0);
    assert_string_equal(m.msg_type, "status");
    assert_string_equal(m.parent_id, "p1");
    assert_int_equal(m.n_buffers, 0);
    assert_int_equal(kf_jmsg_parse_content(s, &m), 0);
    assert_string_equal(kf_jmsg_str(m.content, "execution_state"), "idle");
    kf_jmsg_done(&m);
    kf_jmsg_codec_free(s);
}

static void test_bad_hmac(void **state) {
    (void)state;
    kf_jmsg_codec *s = codec_new(KEY);
    wire w;
    wire_make(s, &w, NULL, "{\"msg_id\":\"m\",\"msg_type\":\"status\"}", "{}", "{\"x\":1}");
    kf_jmsg m;
    /* Flipped signature character. */
    w.sig[10] ^= 1;
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), -EPERM);
    w.sig[10] ^= 1;
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), 0);
    kf_jmsg_done(&m);
    /* Tampered content. */
    w.f[5] = FR("{\"x\":2}");
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), -EPERM);
    w.f[5] = FR("{\"x\":1}");
    /* Short signature frame. */
    w.f[1].len = 63;
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), -EPERM);
    w.f[1].len = 64;
    /* Other key. */
    kf_jmsg_codec *other = codec_new("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
    assert_int_equal(kf_jmsg_parse(other, w.f, w.n, &m), -EPERM);
    kf_jmsg_codec_free(other);
    kf_jmsg_codec_free(s);
}

static void test_missing_delimiter_and_truncated(void **state) {
    (void)state;
    kf_jmsg_codec *s = codec_new(KEY);
    wire w;
    wire_make(s, &w, "topic", "{\"msg_id\":\"m\",\"msg_type\":\"status\"}", "{}", "{}");
    kf_jmsg m;
    kf_jmsg_frame nodelim[8];
    memcpy(nodelim, w.f, sizeof(w.f[0]) * w.n);
    nodelim[1] = FR("<IDS|MSG");
    assert_int_equal(kf_jmsg_parse(s, nodelim, w.n, &m), -EBADMSG);
    for (size_t n = 0; n < w.n; n++)
        assert_int_equal(kf_jmsg_parse(s, w.f, n, &m), -EBADMSG);
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), 0);
    kf_jmsg_done(&m);
    kf_jmsg_codec_free(s);
}

static void test_not_json(void **state) {
    (void)state;
    kf_jmsg_codec *s = codec_new(KEY);
    static const char *bad_headers[] = {
        "not json", "[1,2]", "{\"msg_id\":\"m\"}", "{\"msg_type\":\"x\"}",
        "{\"msg_id\":1,\"msg_type\":\"x\"}", "{\"msg_id\":\"m\",\"msg_type\":\"x\"} trailing",
        "{\"msg_id\":\"m\",\"msg_type\":\"x\"", "", "\"str\"",
    };
    kf_jmsg m;
    wire w;
    for (size_t i = 0; i < sizeof(bad_headers) / sizeof(*bad_headers); i++) {
        wire_make(s, &w, NULL, bad_headers[i], "{}", "{}");
        assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), -EBADMSG);
    }
    /* Embedded NUL in a frame. */
    static const char nul[] = "{\"msg_id\":\"m\",\"msg_type\":\"x\"}\0{}";
    wire_make(s, &w, NULL, "x", "{}", "{}");
    w.f[2] = (kf_jmsg_frame){nul, sizeof(nul) - 1};
    assert_int_equal(kf_jmsg_sign(s, &w.f[2], w.sig), 0);
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), -EBADMSG);
    /* Bad parent header. */
    wire_make(s, &w, NULL, "{\"msg_id\":\"m\",\"msg_type\":\"x\"}", "nope", "{}");
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), -EBADMSG);
    /* Bad content: the header parses, the content does not. */
    wire_make(s, &w, NULL, "{\"msg_id\":\"m\",\"msg_type\":\"x\"}", "{}", "{\"a\":");
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), 0);
    assert_int_equal(kf_jmsg_parse_content(s, &m), -EBADMSG);
    kf_jmsg_done(&m);
    kf_jmsg_codec_free(s);
}

static void test_limits(void **state) {
    (void)state;
    kf_jmsg_codec *s = codec_new(KEY);
    wire w;
    wire_make(s, &w, NULL, "{\"msg_id\":\"m\",\"msg_type\":\"x\"}", "{}", "{}");
    kf_jmsg m;
    /* Too many frames: ids before the delimiter. */
    kf_jmsg_frame many[KF_JMSG_MAX_FRAMES + 1];
    size_t ids = KF_JMSG_MAX_FRAMES + 1 - w.n;
    for (size_t i = 0; i < ids; i++)
        many[i] = FR("id");
    memcpy(many + ids, w.f, w.n * sizeof(w.f[0]));
    assert_int_equal(kf_jmsg_parse(s, many, KF_JMSG_MAX_FRAMES + 1, &m), -E2BIG);
    assert_int_equal(kf_jmsg_parse(s, many + 1, KF_JMSG_MAX_FRAMES, &m), 0);
    assert_int_equal(m.n_buffers, 0);
    kf_jmsg_done(&m);
    /* Too many bytes in total (a buffer frame past the content). */
    char *big = calloc(1, KF_JMSG_MAX_BYTES);
    assert_non_null(big);
    w.f[w.n++] = (kf_jmsg_frame){big, KF_JMSG_MAX_BYTES};
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), -E2BIG);
    w.f[w.n - 1].len = KF_JMSG_MAX_BYTES - 200;
    assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), 0);
    assert_int_equal(m.n_buffers, 1);
    kf_jmsg_done(&m);
    free(big);
    /* Code too large to escape within the limit. */
    kf_jbuf b = {0};
    assert_int_equal(kf_jmsg_execute_content(&b, "x", KF_JMSG_MAX_BYTES / 6 + 1), -E2BIG);
    kf_jbuf_done(&b);
    kf_jmsg_codec_free(s);
}

static void b64_check(const char *in, const void *want, size_t want_len, int want_r) {
    char *buf = strdup(in);
    size_t len = 12345;
    int r = kf_b64_decode_inplace(buf, strlen(buf), &len);
    assert_int_equal(r, want_r);
    if (r == 0) {
        assert_int_equal(len, want_len);
        assert_memory_equal(buf, want, want_len);
    }
    free(buf);
}

static void test_base64(void **state) {
    (void)state;
    static const unsigned char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    b64_check("iVBORw0KGgoAAAANSUhEUg==", png, 16, 0);
    b64_check("iVBORw0K\nGgoAAAAN\r\nSUhE Ug==\n", png, 16, 0); /* wrapped */
    b64_check("iVBORw0KGgoAAAANSUhEUg", png, 16, 0);                /* unpadded */
    b64_check("", "", 0, 0);
    b64_check("QQ==", "A", 1, 0);
    b64_check("QUI=", "AB", 2, 0);
    b64_check("QUJD", "ABC", 3, 0);
    b64_check("QUJDRA", "ABCD", 4, 0);
    b64_check("QUJD=", NULL, 0, -EBADMSG);  /* padding after a whole quantum */
    b64_check("QQ===", NULL, 0, -EBADMSG);  /* three '=' */
    b64_check("QQ==QUJD", NULL, 0, -EBADMSG); /* '=' in the middle */
    b64_check("QUJ*", NULL, 0, -EBADMSG);
    b64_check("Q", NULL, 0, -EBADMSG);
    b64_check("QUJDR", NULL, 0, -EBADMSG);
    /* Longer than one internal chunk: 10000 bytes round trip. */
    size_t n = 10000;
    unsigned char *raw = malloc(n);
    for (size_t i = 0; i < n; i++)
        raw[i] = (unsigned char)(i * 7 + 3);
    char *enc = malloc(n / 3 * 4 + 8 + n / 57 + 2); /* + a newline per 19 quanta */
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (i + 1 < n ? raw[i + 1] << 8 : 0) |
                     (i + 2 < n ? raw[i + 2] : 0);
        enc[o++] = tbl[v >> 18 & 63];
        enc[o++] = tbl[v >> 12 & 63];
        enc[o++] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        enc[o++] = i + 2 < n ? tbl[v & 63] : '=';
        if ((i / 3) % 19 == 18)
            enc[o++] = '\n';
    }
    enc[o] = '\0';
    b64_check(enc, raw, n, 0);
    free(enc);
    free(raw);
}

/* ---- kernel_output ---- */

typedef struct {
    int calls;
    kf_kernel_event ev;
    char mime[4][64];
    unsigned char data[4][64];
    size_t len[4];
    size_t n_items;
    char tb0[64];
    int ret;
} capture;

static int capture_cb(void *ud, const kf_kernel_event *ev) {
    capture *c = ud;
    c->calls++;
    c->ev = *ev;
    c->n_items = ev->n_items;
    for (size_t i = 0; i < ev->n_items && i < 4; i++) {
        snprintf(c->mime[i], sizeof(c->mime[i]), "%s", ev->items[i].mime_type);
        c->len[i] = ev->items[i].len;
        memcpy(c->data[i], ev->items[i].data, ev->items[i].len < 64 ? ev->items[i].len : 64);
    }
    if (ev->n_traceback)
        snprintf(c->tb0, sizeof(c->tb0), "%s", ev->traceback[0]);
    return c->ret;
}

static void test_output_display(void **state) {
    (void)state;
    cJSON *j = cJSON_Parse("{\"data\":{\"text/plain\":\"<Figure>\","
                           "\"image/png\":\"iVBORw0KGgoAAAANSUhEUg==\\n\","
                           "\"application/json\":{\"a\":[1,2]},"
                           "\"image/svg+xml\":[\"<svg>\",\"</svg>\"],"
                           "\"image/jpeg\":\"***\"},\"metadata\":{}}");
    capture c = {0};
    assert_int_equal(kf_kernel_output_dispatch("display_data", j, capture_cb, &c), 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.ev.kind, KF_KEV_DISPLAY);
    assert_int_equal(c.n_items, 4); /* the bad image/jpeg is skipped */
    assert_string_equal(c.mime[0], "text/plain");
    assert_memory_equal(c.data[0], "<Figure>", 8);
    assert_string_equal(c.mime[1], "image/png");
    assert_int_equal(c.len[1], 16);
    assert_memory_equal(c.data[1], "\x89PNG", 4);
    assert_string_equal(c.mime[2], "application/json");
    assert_int_equal(c.len[2], strlen("{\"a\":[1,2]}"));
    assert_memory_equal(c.data[2], "{\"a\":[1,2]}", c.len[2]);
    assert_string_equal(c.mime[3], "image/svg+xml");
    assert_memory_equal(c.data[3], "<svg></svg>", 11);
    cJSON_Delete(j);

    j = cJSON_Parse("{\"data\":{\"text/plain\":\"42\"},\"execution_count\":7}");
    c = (capture){.ret = -ECANCELED};
    assert_int_equal(kf_kernel_output_dispatch("execute_result", j, capture_cb, &c), -ECANCELED);
    assert_int_equal(c.ev.kind, KF_KEV_RESULT);
    assert_int_equal(c.ev.execution_count, 7);
    cJSON_Delete(j);
}

static void test_output_stream_error_malformed(void **state) {
    (void)state;
    capture c = {0};
    cJSON *j = cJSON_Parse("{\"name\":\"stderr\",\"text\":\"oops\\n\"}");
    assert_int_equal(kf_kernel_output_dispatch("stream", j, capture_cb, &c), 0);
    assert_int_equal(c.ev.kind, KF_KEV_STREAM);
    assert_true(c.ev.stream_is_stderr);
    assert_int_equal(c.ev.text_len, 5);
    cJSON_Delete(j);

    c = (capture){0};
    j = cJSON_Parse("{\"ename\":\"ZeroDivisionError\",\"evalue\":\"division by zero\","
                    "\"traceback\":[\"line1\",5,\"line2\"]}");
    assert_int_equal(kf_kernel_output_dispatch("error", j, capture_cb, &c), 0);
    assert_int_equal(c.ev.kind, KF_KEV_ERROR);
    assert_int_equal(c.ev.n_traceback, 2);
    assert_string_equal(c.tb0, "line1");
    cJSON_Delete(j);

    static const char *bad[][2] = {
        {"stream", "{\"name\":\"stdout\"}"},
        {"stream", "{\"text\":5,\"name\":\"stdout\"}"},
        {"display_data", "{}"},
        {"execute_result", "{\"data\":[]}"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        c = (capture){0};
        j = cJSON_Parse(bad[i][1]);
        assert_int_equal(kf_kernel_output_dispatch(bad[i][0], j, capture_cb, &c), -EBADMSG);
        assert_int_equal(c.calls, 0);
        cJSON_Delete(j);
    }
    /* Error without fields still yields an event, with empty strings. */
    c = (capture){0};
    j = cJSON_Parse("{}");
    assert_int_equal(kf_kernel_output_dispatch("error", j, capture_cb, &c), 0);
    assert_string_equal(c.ev.ename, "");
    assert_int_equal(kf_kernel_output_dispatch("execute_input", j, capture_cb, &c), 0);
    assert_int_equal(c.calls, 1);
    cJSON_Delete(j);
}

static void test_mime_limit(void **state) {
    (void)state;
    cJSON *j = cJSON_CreateObject();
    cJSON *data = cJSON_AddObjectToObject(j, "data");
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "text/x-%d", i);
        cJSON_AddStringToObject(data, name, "v");
    }
    capture c = {0};
    assert_int_equal(kf_kernel_output_dispatch("display_data", j, capture_cb, &c), 0);
    assert_int_equal(c.n_items, KF_KERNEL_MAX_MIME_ITEMS);
    cJSON_Delete(j);
}

/* Not an assertion: the codec's cost per message, for the record. */
static void test_bench(void **state) {
    (void)state;
    kf_jmsg_codec *s = codec_new(KEY);
    wire w;
    wire_make(s, &w, "kernel.x.execute_result",
              "{\"msg_id\":\"8c4b5e0f-61a8a0b3b0c1a8f4f2c1d5e6_1234_17\",\"msg_type\":"
              "\"execute_result\",\"username\":\"kfleet\",\"session\":\"8c4b5e0f\","
              "\"date\":\"2024-01-01T00:00:00.000000Z\",\"version\":\"5.3\"}",
              "{\"msg_id\":\"00112233445566778899aabbccddeeff\",\"msg_type\":\"execute_request\","
              "\"username\":\"kfleet\",\"session\":\"00112233445566778899aabbccddeeff\","
              "\"date\":\"2024-01-01T00:00:00.000000Z\",\"version\":\"5.3\"}",
              "{\"data\":{\"text/plain\":\"2\"},\"metadata\":{},\"execution_count\":1}");
    enum { N = 20000 };
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < N; i++) {
        kf_jmsg m;
        assert_int_equal(kf_jmsg_parse(s, w.f, w.n, &m), 0);
        assert_int_equal(kf_jmsg_parse_content(s, &m), 0);
        kf_jmsg_done(&m);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double parse_us = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / N;
    kf_jbuf buf = {0};
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < N; i++) {
        kf_jmsg_out out;
        assert_int_equal(kf_jmsg_execute_content(&buf, "1+1", 3), 0);
        assert_int_equal(kf_jmsg_build(s, SESSION, "execute_request", buf.data, buf.len, 1, &out), 0);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double build_us = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / N;
    printf("bench: verify+parse (all frames) %.2f us/msg, build+sign execute_request %.2f us/msg\n",
           parse_us, build_us);
    kf_jbuf_done(&buf);
    kf_jmsg_codec_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_known_answer),
        cmocka_unit_test(test_build_parse_round_trip),
        cmocka_unit_test(test_topic_frame_and_parent),
        cmocka_unit_test(test_bad_hmac),
        cmocka_unit_test(test_missing_delimiter_and_truncated),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_output_display),
        cmocka_unit_test(test_output_stream_error_malformed),
        cmocka_unit_test(test_mime_limit),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
