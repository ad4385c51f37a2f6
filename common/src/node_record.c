/* node_record.c - JSON encoding of the node, usage and admin records kept
 * in etcd, and the checks of what names them (node names) and of what an
 * operator writes into them (layout and contracts in kf/node_record.h).
 * Pure: cJSON only. */
#include "kf/node_record.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/util.h"

/* Integers are JSON numbers up to 10^15 - 1 and decimal strings above.
 * Not 2^53: cJSON prints with 15 significant digits and accepts the result
 * if it is within an epsilon, so 2^53 comes out as 9.00719925474099e+15. */
#define KF_JSON_EXACT_MAX 999999999999999ULL

static bool add_u64(cJSON *o, const char *k, uint64_t v) {
    if (v <= KF_JSON_EXACT_MAX)
        return cJSON_AddNumberToObject(o, k, (double)v) != NULL;
    char buf[24];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    return cJSON_AddStringToObject(o, k, buf) != NULL;
}

static bool add_i64(cJSON *o, const char *k, int64_t v) {
    if (v >= -(int64_t)KF_JSON_EXACT_MAX && v <= (int64_t)KF_JSON_EXACT_MAX)
        return cJSON_AddNumberToObject(o, k, (double)v) != NULL;
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    return cJSON_AddStringToObject(o, k, buf) != NULL;
}

bool kf_node_name_valid(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > KF_NODE_NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

int kf_admin_text_check(const char *field, const char *text, kf_error *err) {
    size_t n = text ? strlen(text) : 0;
    if (n == 0)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "%s is required", field);
    if (n > KF_ADMIN_TEXT_MAX)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "%s is too long (%zu bytes, max %d)", field,
                            n, KF_ADMIN_TEXT_MAX);
    if (!kf_utf8_valid(text, n))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "%s is not valid UTF-8", field);
    ssize_t ctl = kf_control_char_at(text, n);
    if (ctl >= 0)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "%s contains a control character (byte %zd)",
                            field, ctl);
    return 0;
}

/* Prints and frees o; NULL if building failed (ok false) or printing did. */
static char *finish(cJSON *o, bool ok) {
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

char *kf_node_info_json(const kf_node_info *n) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = cJSON_AddStringToObject(o, "id", n->id) && cJSON_AddStringToObject(o, "address", n->address);
    cJSON *cap = ok ? cJSON_AddObjectToObject(o, "capacity") : NULL;
    ok = cap && add_u64(cap, "memory_bytes", n->memory_bytes) && add_u64(cap, "cpu_millis", n->cpu_millis) &&
         add_u64(cap, "session_slots", n->session_slots);
    cJSON *labels = ok ? cJSON_AddObjectToObject(o, "labels") : NULL;
    ok = labels != NULL;
    for (size_t i = 0; ok && i < n->n_labels; i++)
        ok = cJSON_AddStringToObject(labels, n->labels[i].key, n->labels[i].value) != NULL;
    ok = ok && cJSON_AddStringToObject(o, "version", n->version) && cJSON_AddBoolToObject(o, "tls", n->tls) &&
         add_i64(o, "started_unix_ms", n->started_unix_ms);
    return finish(o, ok);
}

char *kf_node_usage_json(const kf_node_usage *u, int64_t now_unix_ms) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = add_u64(o, "sessions", u->sessions) && add_u64(o, "pool_ready", u->pool_ready) &&
              add_u64(o, "pool_target", u->pool_target) &&
              add_u64(o, "memory_reserved_bytes", u->memory_reserved_bytes) &&
              add_u64(o, "cpu_reserved_millis", u->cpu_reserved_millis) &&
              add_u64(o, "creates", u->creates) &&
              add_i64(o, "updated_unix_ms", now_unix_ms);
    return finish(o, ok);
}

bool kf_node_usage_equal(const kf_node_usage *a, const kf_node_usage *b) {
    return a->sessions == b->sessions && a->pool_ready == b->pool_ready && a->pool_target == b->pool_target &&
           a->memory_reserved_bytes == b->memory_reserved_bytes && a->cpu_reserved_millis == b->cpu_reserved_millis &&
           a->creates == b->creates;
}

char *kf_drain_request_json(const char *node, const char *reason, const char *by, int64_t now_unix_ms,
                            int64_t deadline_unix_ms, uint32_t parallel) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = cJSON_AddStringToObject(o, "node", node) && cJSON_AddStringToObject(o, "state", "running") &&
              cJSON_AddStringToObject(o, "reason", reason) && cJSON_AddStringToObject(o, "by", by) &&
              add_i64(o, "started_unix_ms", now_unix_ms) && add_i64(o, "deadline_unix_ms", deadline_unix_ms) &&
              add_i64(o, "ended_unix_ms", 0) && add_u64(o, "parallel", parallel) &&
              cJSON_AddBoolToObject(o, "force", false) && cJSON_AddStringToObject(o, "message", "") &&
              cJSON_AddArrayToObject(o, "sessions");
    return finish(o, ok);
}

char *kf_node_admin_json(const kf_node_admin *a) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = cJSON_AddBoolToObject(o, "cordoned", a->cordoned) && cJSON_AddStringToObject(o, "reason", a->reason) &&
              cJSON_AddStringToObject(o, "by", a->by) && add_i64(o, "at", a->at_unix_ms);
    return finish(o, ok);
}

/* A string field into dst (cut to fit); absent = "". */
static int get_text(const cJSON *o, const char *k, char *dst, size_t size) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    dst[0] = '\0';
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return -EBADMSG;
    snprintf(dst, size, "%s", v->valuestring);
    return 0;
}

/* An integer given as a JSON number (exact only up to 2^53) or a decimal
 * string (exact always, parsed without a double); absent = 0. */
static int get_i64(const cJSON *o, const char *k, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    *out = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d != d || d < -9.2e18 || d > 9.2e18 || d != (double)(int64_t)d)
            return -EBADMSG;
        *out = (int64_t)d;
        return 0;
    }
    if (!cJSON_IsString(v))
        return -EBADMSG;
    char *end;
    errno = 0;
    long long n = strtoll(v->valuestring, &end, 10);
    if (errno || end == v->valuestring || *end)
        return -EBADMSG;
    *out = n;
    return 0;
}

int kf_node_admin_parse(const char *text, size_t len, kf_node_admin *out) {
    memset(out, 0, sizeof(*out));
    cJSON *o = cJSON_ParseWithLength(text, len);
    int r = -EBADMSG;
    if (cJSON_IsObject(o)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "cordoned");
        r = c && !cJSON_IsBool(c) && !cJSON_IsNull(c) ? -EBADMSG : 0;
        out->cordoned = cJSON_IsTrue(c);
        if (r == 0)
            r = get_text(o, "reason", out->reason, sizeof(out->reason));
        if (r == 0)
            r = get_text(o, "by", out->by, sizeof(out->by));
        if (r == 0)
            r = get_i64(o, "at", &out->at_unix_ms);
    }
    cJSON_Delete(o);
    if (r < 0)
        memset(out, 0, sizeof(*out));
    return r;
}

char *kf_pool_record_json(uint32_t target, int64_t now_unix_ms) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add_u64(o, "target", target) && add_i64(o, "updated_unix_ms", now_unix_ms);
    return finish(o, ok);
}

int kf_pool_record_parse(const char *text, size_t len, uint32_t *target) {
    *target = 0;
    cJSON *o = cJSON_ParseWithLength(text, len);
    int64_t n = -1;
    const cJSON *t = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "target") : NULL;
    int r = t && !cJSON_IsNull(t) ? get_i64(o, "target", &n) : -EBADMSG;
    cJSON_Delete(o);
    if (r < 0 || n < 0 || n > KF_POOL_TARGET_MAX)
        return -EBADMSG;
    *target = (uint32_t)n;
    return 0;
}
