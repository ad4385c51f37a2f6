/* etcd_json.c - the encoding of etcd's v3 JSON gateway, with no I/O: base64
 * keys and values, int64 fields as decimal strings (parsed exactly, never
 * through a double), omitted default fields (false, 0, "" and the first enum
 * value are left out of responses), prefix range ends, gateway error objects,
 * and the request/response bodies of range, put, delete, txn and watch.
 * Every decoder treats its input as untrusted: malformed or oversized input
 * is -EBADMSG with a message, never a crash. */
#include "etcd_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"

/* ---- base64 ------------------------------------------------------------ */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *kf_etcd_b64_encode(const void *data, size_t len) {
    const unsigned char *in = data;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    size_t olen = (len + 2) / 3 * 4;
    char *out = malloc(olen + 1);
    if (!out)
        return NULL;
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = b64_alphabet[v >> 18];
        *o++ = b64_alphabet[(v >> 12) & 63];
        *o++ = b64_alphabet[(v >> 6) & 63];
        *o++ = b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *o++ = b64_alphabet[v >> 18];
        *o++ = b64_alphabet[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *o++ = b64_alphabet[v >> 18];
        *o++ = b64_alphabet[(v >> 12) & 63];
        *o++ = b64_alphabet[(v >> 6) & 63];
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

static int b64_value(unsigned char ch) {
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

int kf_etcd_b64_decode(const char *text, size_t text_len, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (text_len % 4 != 0)
        return -EBADMSG;
    size_t pad = 0;
    if (text_len >= 4 && text[text_len - 1] == '=')
        pad = text[text_len - 2] == '=' ? 2 : 1;
    size_t olen = text_len / 4 * 3 - pad;
    _cleanup_free_ char *buf = malloc(olen + 1);
    if (!buf)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < text_len; i += 4) {
        bool last = i + 4 == text_len;
        int v[4];
        for (size_t j = 0; j < 4; j++) {
            unsigned char ch = (unsigned char)text[i + j];
            if (last && ch == '=' && j >= 4 - pad) {
                v[j] = 0;
                continue;
            }
            v[j] = b64_value(ch);
            if (v[j] < 0)
                return -EBADMSG;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t take = last ? 3 - pad : 3;
        /* Canonical form only: the bits dropped by padding must be zero. */
        if (last && pad == 1 && (w & 0xff) != 0)
            return -EBADMSG;
        if (last && pad == 2 && (w & 0xffff) != 0)
            return -EBADMSG;
        unsigned char bytes[3] = {(unsigned char)(w >> 16), (unsigned char)(w >> 8), (unsigned char)w};
        memcpy(buf + o, bytes, take);
        o += take;
    }
    buf[o] = '\0';
    *out = TAKE_PTR(buf);
    *out_len = o;
    return 0;
}

/* ---- prefix range end ------------------------------------------------- */

size_t kf_etcd_prefix_end(const void *prefix, size_t len, unsigned char *out) {
    const unsigned char *p = prefix;
    /* Keys are compared as unsigned bytes; "ab\xff" has no successor of the
     * same length, so the end is the successor of "ab": "ac". */
    while (len > 0 && p[len - 1] == 0xff)
        len--;
    if (len == 0) {
        out[0] = '\0'; /* etcd: range_end "\0" = no upper bound */
        return 1;
    }
    memcpy(out, p, len);
    out[len - 1]++;
    return len;
}

/* ---- scalar fields ----------------------------------------------------- */

int kf_etcd_json_int64(const cJSON *obj, const char *name, int64_t *out) {
    *out = 0;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!f || cJSON_IsNull(f))
        return 0;
    if (!cJSON_IsString(f) || !f->valuestring)
        return -EBADMSG;
    const char *s = f->valuestring;
    /* strtoll accepts leading spaces and '+'; etcd never sends them. */
    const char *d = s[0] == '-' ? s + 1 : s;
    if (*d < '0' || *d > '9')
        return -EBADMSG;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || !end || *end != '\0')
        return -EBADMSG;
    *out = (int64_t)v;
    return 0;
}

bool kf_etcd_json_bool(const cJSON *obj, const char *name) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, name));
}

int kf_etcd_json_add_int64(cJSON *obj, const char *name, int64_t v) {
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRId64, v);
    return cJSON_AddStringToObject(obj, name, buf) ? 0 : -ENOMEM;
}

int kf_etcd_json_add_bytes(cJSON *obj, const char *name, const void *data, size_t len) {
    _cleanup_free_ char *b = kf_etcd_b64_encode(data, len);
    if (!b)
        return -ENOMEM;
    return cJSON_AddStringToObject(obj, name, b) ? 0 : -ENOMEM;
}

int kf_etcd_json_header_rev(const cJSON *root, int64_t *rev) {
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "header");
    if (!h) {
        *rev = 0;
        return 0;
    }
    if (!cJSON_IsObject(h))
        return -EBADMSG;
    return kf_etcd_json_int64(h, "revision", rev);
}

/* ---- parsing and errors ------------------------------------------------ */

int kf_etcd_json_parse(const char *buf, size_t len, cJSON **out, kf_error *err) {
    *out = NULL;
    if (len == 0)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent an empty response");
    cJSON *root = cJSON_ParseWithLength(buf, len);
    if (!root) {
        /* Quote the start of it, printable bytes only (buf has no NUL). */
        char head[41];
        size_t n = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
        for (size_t i = 0; i < n; i++)
            head[i] = buf[i] >= 0x20 && buf[i] < 0x7f ? buf[i] : '?';
        head[n] = '\0';
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent malformed JSON (%zu bytes: \"%s%s\")", len,
                            head, len > n ? "..." : "");
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent JSON that is not an object");
    }
    *out = root;
    return 0;
}

int kf_etcd_grpc_errno(int code) {
    switch (code) {
    case 0: return 0;
    case 1: return -ECANCELED;            /* CANCELLED */
    case 3: return -EINVAL;               /* INVALID_ARGUMENT */
    case 4: return -ETIMEDOUT;            /* DEADLINE_EXCEEDED */
    case 5: return -ENOENT;               /* NOT_FOUND */
    case 6: return -EEXIST;               /* ALREADY_EXISTS */
    case 7: return -EACCES;               /* PERMISSION_DENIED */
    case 8: return -ENOSPC;               /* RESOURCE_EXHAUSTED (quota, too many requests) */
    case 9: return -EPERM;                /* FAILED_PRECONDITION */
    case 10: return -EBUSY;               /* ABORTED */
    case 11: return -ERANGE;              /* OUT_OF_RANGE (compacted / future revision) */
    case 12: return -EOPNOTSUPP;          /* UNIMPLEMENTED */
    case 14: return -EAGAIN;              /* UNAVAILABLE (no leader, shutting down) */
    case 16: return -EACCES;              /* UNAUTHENTICATED */
    default: return -EIO;                 /* UNKNOWN, INTERNAL, DATA_LOSS, ... */
    }
}

int kf_etcd_json_error(const cJSON *root, int *grpc_code, kf_error *err) {
    if (grpc_code)
        *grpc_code = 0;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (!e)
        return 0;
    const cJSON *msg = NULL, *code = NULL;
    if (cJSON_IsObject(e)) { /* in a stream */
        msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        code = cJSON_GetObjectItemCaseSensitive(e, "grpc_code");
    } else {
        msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        if (!cJSON_IsString(msg))
            msg = e;
        code = cJSON_GetObjectItemCaseSensitive(root, "code");
    }
    /* The code is an int32 JSON number: exact as a double. */
    int c = 2;
    if (cJSON_IsNumber(code) && code->valuedouble >= 1 && code->valuedouble <= 16)
        c = (int)code->valuedouble;
    if (grpc_code)
        *grpc_code = c;
    const char *text = cJSON_IsString(msg) && msg->valuestring ? msg->valuestring : "(no message)";
    return kf_error_set(err, kf_etcd_grpc_errno(c), (kf_status)c, "%s", text);
}

/* ---- kv and range ------------------------------------------------------ */

static int json_bytes(const cJSON *obj, const char *name, char **out, size_t *out_len) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!f || cJSON_IsNull(f)) { /* omitted: empty */
        *out = calloc(1, 1);
        *out_len = 0;
        return *out ? 0 : -ENOMEM;
    }
    if (!cJSON_IsString(f) || !f->valuestring)
        return -EBADMSG;
    return kf_etcd_b64_decode(f->valuestring, strlen(f->valuestring), out, out_len);
}

void kf_etcd_kv_done(kf_etcd_kv *kv) {
    if (!kv)
        return;
    free(kv->key);
    free(kv->value);
    memset(kv, 0, sizeof(*kv));
}

void kf_etcd_kvs_done(kf_etcd_kvs *kvs) {
    if (!kvs)
        return;
    for (size_t i = 0; i < kvs->n; i++)
        kf_etcd_kv_done(&kvs->kvs[i]);
    free(kvs->kvs);
    memset(kvs, 0, sizeof(*kvs));
}

int kf_etcd_json_kv(const cJSON *obj, kf_etcd_kv *kv, kf_error *err) {
    memset(kv, 0, sizeof(*kv));
    if (!cJSON_IsObject(obj))
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a key-value that is not an object");
    int r = json_bytes(obj, "key", &kv->key, &kv->key_len);
    if (r == 0)
        r = json_bytes(obj, "value", &kv->value, &kv->value_len);
    if (r == 0)
        r = kf_etcd_json_int64(obj, "create_revision", &kv->create_revision);
    if (r == 0)
        r = kf_etcd_json_int64(obj, "mod_revision", &kv->mod_revision);
    if (r == 0)
        r = kf_etcd_json_int64(obj, "version", &kv->version);
    if (r == 0)
        r = kf_etcd_json_int64(obj, "lease", &kv->lease);
    if (r < 0) {
        kf_etcd_kv_done(kv);
        if (r == -ENOMEM)
            return kf_error_set(err, r, 0, "out of memory decoding a key-value");
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL,
                            "etcd sent a malformed key-value (bad base64 or int64 field)");
    }
    return 0;
}

int kf_etcd_json_range_resp(const cJSON *obj, kf_etcd_kvs *out, kf_error *err) {
    memset(out, 0, sizeof(*out));
    if (!cJSON_IsObject(obj))
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a range response that is not an object");
    kf_etcd_kvs res = {0};
    if (kf_etcd_json_header_rev(obj, &res.revision) < 0 || kf_etcd_json_int64(obj, "count", &res.count) < 0)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a malformed range header");
    res.more = kf_etcd_json_bool(obj, "more");
    const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(obj, "kvs");
    if (kvs && !cJSON_IsNull(kvs)) {
        if (!cJSON_IsArray(kvs))
            return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent \"kvs\" that is not an array");
        int n = cJSON_GetArraySize(kvs);
        if (n < 0 || n > KF_ETCD_MAX_KVS)
            return kf_error_set(err, -EFBIG, KF_ST_RESOURCE_EXHAUSTED,
                                "etcd sent %d key-values, more than the limit of %d", n, KF_ETCD_MAX_KVS);
        if (n > 0) {
            res.kvs = calloc((size_t)n, sizeof(*res.kvs));
            if (!res.kvs)
                return kf_error_set(err, -ENOMEM, 0, "out of memory for %d key-values", n);
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, kvs) {
            int r = kf_etcd_json_kv(it, &res.kvs[res.n], err);
            if (r < 0) {
                kf_etcd_kvs_done(&res);
                return r;
            }
            res.n++;
        }
    }
    *out = res;
    return 0;
}

void kf_etcd_txn_result_done(kf_etcd_txn_result *r) {
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        kf_etcd_kvs_done(&r->results[i].kvs);
    free(r->results);
    memset(r, 0, sizeof(*r));
}

int kf_etcd_json_txn_resp(const cJSON *root, kf_etcd_txn_result *out, kf_error *err) {
    memset(out, 0, sizeof(*out));
    kf_etcd_txn_result res = {0};
    if (kf_etcd_json_header_rev(root, &res.revision) < 0)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a malformed txn header");
    res.succeeded = kf_etcd_json_bool(root, "succeeded"); /* absent = false */
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "responses");
    if (rs && !cJSON_IsNull(rs)) {
        if (!cJSON_IsArray(rs))
            return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent txn \"responses\" that is not an array");
        int n = cJSON_GetArraySize(rs);
        if (n > KF_ETCD_MAX_TXN_OPS * 8)
            return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent %d txn responses", n);
        if (n > 0) {
            res.results = calloc((size_t)n, sizeof(*res.results));
            if (!res.results)
                return kf_error_set(err, -ENOMEM, 0, "out of memory for %d txn responses", n);
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, rs) {
            kf_etcd_op_result *o = &res.results[res.n];
            const cJSON *x;
            int r = 0;
            if ((x = cJSON_GetObjectItemCaseSensitive(it, "response_range"))) {
                o->type = KF_ETCD_OP_RANGE;
                r = kf_etcd_json_range_resp(x, &o->kvs, err);
            } else if ((x = cJSON_GetObjectItemCaseSensitive(it, "response_put"))) {
                o->type = KF_ETCD_OP_PUT;
            } else if ((x = cJSON_GetObjectItemCaseSensitive(it, "response_delete_range"))) {
                o->type = KF_ETCD_OP_DELETE;
                if (kf_etcd_json_int64(x, "deleted", &o->deleted) < 0)
                    r = kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a malformed delete count");
            } else {
                r = kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a txn response of unknown kind");
            }
            if (r < 0) {
                kf_etcd_txn_result_done(&res);
                return r;
            }
            res.n++;
        }
    }
    *out = res;
    return 0;
}

/* ---- requests ---------------------------------------------------------- */

cJSON *kf_etcd_json_range_req(const void *key, size_t key_len, const void *end, size_t end_len,
                              int64_t limit, int64_t revision) {
    cJSON *o = cJSON_CreateObject();
    if (!o || kf_etcd_json_add_bytes(o, "key", key, key_len) < 0 ||
        (end && end_len > 0 && kf_etcd_json_add_bytes(o, "range_end", end, end_len) < 0) ||
        (limit > 0 && kf_etcd_json_add_int64(o, "limit", limit) < 0) ||
        (revision > 0 && kf_etcd_json_add_int64(o, "revision", revision) < 0)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *kf_etcd_json_put_req(const void *key, size_t key_len, const void *val, size_t val_len,
                            int64_t lease) {
    cJSON *o = cJSON_CreateObject();
    if (!o || kf_etcd_json_add_bytes(o, "key", key, key_len) < 0 ||
        kf_etcd_json_add_bytes(o, "value", val, val_len) < 0 ||
        (lease != 0 && kf_etcd_json_add_int64(o, "lease", lease) < 0)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *kf_etcd_json_delete_req(const void *key, size_t key_len, const void *end, size_t end_len) {
    cJSON *o = cJSON_CreateObject();
    if (!o || kf_etcd_json_add_bytes(o, "key", key, key_len) < 0 ||
        (end && end_len > 0 && kf_etcd_json_add_bytes(o, "range_end", end, end_len) < 0)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static const char *const cmp_targets[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
static const char *const cmp_results[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
static const char *const cmp_fields[] = {"version", "create_revision", "mod_revision", "value", "lease"};

static int key_ok(const void *key, size_t len) {
    return key && len > 0 && len <= KF_ETCD_MAX_KEY;
}

static int txn_ops(cJSON *arr, const kf_etcd_op *ops, size_t n, const char *branch, kf_error *err) {
    for (size_t i = 0; i < n; i++) {
        const kf_etcd_op *op = &ops[i];
        if (!key_ok(op->key, op->key_len))
            return kf_error_set(err, -EINVAL, 0, "txn %s op %zu: key must be 1..%u bytes", branch, i,
                                KF_ETCD_MAX_KEY);
        if (op->range_end_len > KF_ETCD_MAX_KEY || (op->range_end_len > 0 && !op->range_end))
            return kf_error_set(err, -EINVAL, 0, "txn %s op %zu: bad range_end", branch, i);
        cJSON *req = NULL;
        const char *name = NULL;
        switch (op->type) {
        case KF_ETCD_OP_RANGE:
            name = "request_range";
            req = kf_etcd_json_range_req(op->key, op->key_len, op->range_end, op->range_end_len, op->limit, 0);
            break;
        case KF_ETCD_OP_PUT:
            if (op->value_len > KF_ETCD_MAX_VALUE || (op->value_len > 0 && !op->value))
                return kf_error_set(err, -EINVAL, 0, "txn %s op %zu: value must be at most %u bytes", branch,
                                    i, KF_ETCD_MAX_VALUE);
            name = "request_put";
            req = kf_etcd_json_put_req(op->key, op->key_len, op->value ? op->value : "", op->value_len,
                                       op->lease);
            break;
        case KF_ETCD_OP_DELETE:
            name = "request_delete_range";
            req = kf_etcd_json_delete_req(op->key, op->key_len, op->range_end, op->range_end_len);
            break;
        default:
            return kf_error_set(err, -EINVAL, 0, "txn %s op %zu: unknown op type %d", branch, i, (int)op->type);
        }
        cJSON *wrap = cJSON_CreateObject();
        if (!req || !wrap || !cJSON_AddItemToObject(wrap, name, req)) {
            cJSON_Delete(req);
            cJSON_Delete(wrap);
            return kf_error_set(err, -ENOMEM, 0, "out of memory encoding a txn");
        }
        if (!cJSON_AddItemToArray(arr, wrap)) {
            cJSON_Delete(wrap);
            return kf_error_set(err, -ENOMEM, 0, "out of memory encoding a txn");
        }
    }
    return 0;
}

int kf_etcd_json_txn_req(const kf_etcd_cmp *cmps, size_t n_cmps, const kf_etcd_op *success,
                         size_t n_success, const kf_etcd_op *failure, size_t n_failure,
                         cJSON **out, kf_error *err) {
    *out = NULL;
    if (n_cmps > KF_ETCD_MAX_TXN_OPS || n_success > KF_ETCD_MAX_TXN_OPS || n_failure > KF_ETCD_MAX_TXN_OPS)
        return kf_error_set(err, -E2BIG, 0, "txn has more than %d compares or ops per branch",
                            KF_ETCD_MAX_TXN_OPS);
    if ((n_cmps && !cmps) || (n_success && !success) || (n_failure && !failure))
        return kf_error_set(err, -EINVAL, 0, "txn: NULL array with a non-zero count");
    cJSON *root = cJSON_CreateObject();
    cJSON *ca = cJSON_AddArrayToObject(root, "compare");
    cJSON *sa = cJSON_AddArrayToObject(root, "success");
    cJSON *fa = cJSON_AddArrayToObject(root, "failure");
    if (!root || !ca || !sa || !fa) {
        cJSON_Delete(root);
        return kf_error_set(err, -ENOMEM, 0, "out of memory encoding a txn");
    }
    for (size_t i = 0; i < n_cmps; i++) {
        const kf_etcd_cmp *cmp = &cmps[i];
        if (!key_ok(cmp->key, cmp->key_len) || (unsigned)cmp->target >= KF_ARRAY_SIZE(cmp_targets) ||
            (unsigned)cmp->result >= KF_ARRAY_SIZE(cmp_results) ||
            (cmp->target == KF_ETCD_CMP_VALUE &&
             (cmp->value_len > KF_ETCD_MAX_VALUE || (cmp->value_len > 0 && !cmp->value)))) {
            cJSON_Delete(root);
            return kf_error_set(err, -EINVAL, 0, "txn compare %zu: bad key, target, result or value", i);
        }
        cJSON *o = cJSON_CreateObject();
        int r = o ? 0 : -ENOMEM;
        if (r == 0)
            r = kf_etcd_json_add_bytes(o, "key", cmp->key, cmp->key_len);
        if (r == 0 && !cJSON_AddStringToObject(o, "target", cmp_targets[cmp->target]))
            r = -ENOMEM;
        if (r == 0 && !cJSON_AddStringToObject(o, "result", cmp_results[cmp->result]))
            r = -ENOMEM;
        if (r == 0) {
            /* The operand field must be present even when 0, or the gateway
             * leaves the oneof unset and the compare never matches. */
            if (cmp->target == KF_ETCD_CMP_VALUE)
                r = kf_etcd_json_add_bytes(o, "value", cmp->value ? cmp->value : "", cmp->value_len);
            else
                r = kf_etcd_json_add_int64(o, cmp_fields[cmp->target], cmp->number);
        }
        if (r == 0 && !cJSON_AddItemToArray(ca, o))
            r = -ENOMEM;
        else if (r < 0)
            cJSON_Delete(o);
        if (r < 0) {
            cJSON_Delete(root);
            return kf_error_set(err, -ENOMEM, 0, "out of memory encoding a txn");
        }
    }
    int r = txn_ops(sa, success, n_success, "success", err);
    if (r == 0)
        r = txn_ops(fa, failure, n_failure, "failure", err);
    if (r < 0) {
        cJSON_Delete(root);
        return r;
    }
    *out = root;
    return 0;
}

cJSON *kf_etcd_json_watch_req(const void *key, size_t key_len, const void *end, size_t end_len,
                              int64_t start_revision, bool prev_kv) {
    cJSON *root = cJSON_CreateObject();
    cJSON *o = cJSON_AddObjectToObject(root, "create_request");
    if (!root || !o || kf_etcd_json_add_bytes(o, "key", key, key_len) < 0 ||
        (end && end_len > 0 && kf_etcd_json_add_bytes(o, "range_end", end, end_len) < 0) ||
        (start_revision > 0 && kf_etcd_json_add_int64(o, "start_revision", start_revision) < 0) ||
        (prev_kv && !cJSON_AddTrueToObject(o, "prev_kv")) ||
        !cJSON_AddTrueToObject(o, "progress_notify")) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ---- watch stream ------------------------------------------------------ */

void kf_etcd_event_done(kf_etcd_event *ev) {
    if (!ev)
        return;
    kf_etcd_kv_done(&ev->kv);
    kf_etcd_kv_done(&ev->prev_kv);
    ev->has_prev_kv = false;
}

void kf_etcd_watch_msg_done(kf_etcd_watch_msg *m) {
    if (!m)
        return;
    for (size_t i = 0; i < m->n_events; i++)
        kf_etcd_event_done(&m->events[i]);
    free(m->events);
    free(m->cancel_reason);
    memset(m, 0, sizeof(*m));
}

static int watch_event(const cJSON *it, kf_etcd_event *ev, kf_error *err) {
    memset(ev, 0, sizeof(*ev));
    if (!cJSON_IsObject(it))
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a watch event that is not an object");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "type");
    if (!t || cJSON_IsNull(t) || (cJSON_IsString(t) && strcmp(t->valuestring, "PUT") == 0) ||
        (cJSON_IsNumber(t) && t->valuedouble == 0))
        ev->type = KF_ETCD_EVENT_PUT; /* PUT is the enum default: omitted */
    else if ((cJSON_IsString(t) && strcmp(t->valuestring, "DELETE") == 0) ||
             (cJSON_IsNumber(t) && t->valuedouble == 1))
        ev->type = KF_ETCD_EVENT_DELETE;
    else
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a watch event of unknown type");
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(it, "kv");
    if (!kv)
        return kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a watch event without a kv");
    int r = kf_etcd_json_kv(kv, &ev->kv, err);
    if (r < 0)
        return r;
    const cJSON *pkv = cJSON_GetObjectItemCaseSensitive(it, "prev_kv");
    if (pkv && !cJSON_IsNull(pkv)) {
        r = kf_etcd_json_kv(pkv, &ev->prev_kv, err);
        if (r < 0) {
            kf_etcd_event_done(ev);
            return r;
        }
        ev->has_prev_kv = true;
    }
    return 0;
}

int kf_etcd_json_watch_msg(const char *line, size_t len, kf_etcd_watch_msg *m, kf_error *err) {
    memset(m, 0, sizeof(*m));
    cJSON *root = NULL;
    int r = kf_etcd_json_parse(line, len, &root, err);
    if (r < 0)
        return r;
    r = kf_etcd_json_error(root, NULL, err);
    if (r < 0) {
        cJSON_Delete(root);
        return r;
    }
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "result");
    kf_etcd_watch_msg msg = {0};
    if (!cJSON_IsObject(res)) {
        r = kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a watch message without a result");
        goto out;
    }
    if (kf_etcd_json_header_rev(res, &msg.header_revision) < 0 ||
        kf_etcd_json_int64(res, "compact_revision", &msg.compact_revision) < 0) {
        r = kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent a malformed watch header");
        goto out;
    }
    msg.created = kf_etcd_json_bool(res, "created");
    msg.canceled = kf_etcd_json_bool(res, "canceled");
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(res, "cancel_reason");
    if (cJSON_IsString(reason) && reason->valuestring && !(msg.cancel_reason = strdup(reason->valuestring))) {
        r = kf_error_set(err, -ENOMEM, 0, "out of memory");
        goto out;
    }
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(res, "events");
    if (evs && !cJSON_IsNull(evs)) {
        if (!cJSON_IsArray(evs)) {
            r = kf_error_set(err, -EBADMSG, KF_ST_INTERNAL, "etcd sent watch \"events\" that is not an array");
            goto out;
        }
        int n = cJSON_GetArraySize(evs);
        if (n > KF_ETCD_MAX_KVS) {
            r = kf_error_set(err, -EFBIG, KF_ST_RESOURCE_EXHAUSTED, "etcd sent %d events in one message", n);
            goto out;
        }
        if (n > 0 && !(msg.events = calloc((size_t)n, sizeof(*msg.events)))) {
            r = kf_error_set(err, -ENOMEM, 0, "out of memory for %d events", n);
            goto out;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, evs) {
            r = watch_event(it, &msg.events[msg.n_events], err);
            if (r < 0)
                goto out;
            msg.n_events++;
        }
    }
    r = 0;
out:
    cJSON_Delete(root);
    if (r < 0)
        kf_etcd_watch_msg_done(&msg);
    else
        *m = msg;
    return r;
}
