/* jupyter_msg.c - the Jupyter wire codec: HMAC-SHA256 signing (OpenSSL
 * EVP_MAC), message building without allocation, verification and parsing
 * of received frames (cJSON), and base64 decoding. No I/O. See
 * jupyter_msg.h for the contracts; everything parsed here is untrusted.
 */
#include "jupyter_msg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

struct kf_jmsg_codec {
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx;
    kf_jbuf scratch; /* NUL-terminated copy of the JSON frame being parsed */
};

static const char hexdig[] = "0123456789abcdef";

static void hex_encode(const unsigned char *in, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 0xf];
    }
    out[2 * n] = '\0';
}

int kf_jmsg_codec_new(kf_jmsg_codec **out, const char *key, size_t key_len) {
    if (!out || !key || key_len == 0)
        return -EINVAL;
    kf_jmsg_codec *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    s->ctx = s->mac ? EVP_MAC_CTX_new(s->mac) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (!s->ctx || !EVP_MAC_init(s->ctx, (const unsigned char *)key, key_len, params)) {
        kf_jmsg_codec_free(s);
        return -EIO;
    }
    *out = s;
    return 0;
}

kf_jmsg_codec *kf_jmsg_codec_free(kf_jmsg_codec *s) {
    if (!s)
        return NULL;
    EVP_MAC_CTX_free(s->ctx);
    EVP_MAC_free(s->mac);
    kf_jbuf_done(&s->scratch);
    free(s);
    return NULL;
}

int kf_jmsg_sign(kf_jmsg_codec *s, const kf_jmsg_frame f[4], char *sig) {
    /* Re-initialising with a NULL key keeps the key schedule set by
     * kf_jmsg_codec_new: no allocation, no re-hash of the key. */
    if (!EVP_MAC_init(s->ctx, NULL, 0, NULL))
        return -EIO;
    for (int i = 0; i < 4; i++)
        if (!EVP_MAC_update(s->ctx, f[i].data, f[i].len))
            return -EIO;
    unsigned char mac[32];
    size_t maclen = 0;
    if (!EVP_MAC_final(s->ctx, mac, &maclen, sizeof(mac)) || maclen != sizeof(mac))
        return -EIO;
    hex_encode(mac, sizeof(mac), sig);
    return 0;
}

int kf_jmsg_new_id(char *out) {
    unsigned char rnd[KF_JMSG_ID_LEN / 2];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        return -EIO;
    hex_encode(rnd, sizeof(rnd), out);
    return 0;
}

/* Only [a-z0-9_] needs no JSON escaping; that is all our ids and types use. */
static int plain_ident(const char *s, size_t max) {
    size_t i = 0;
    for (; s[i]; i++) {
        char ch = s[i];
        if (i >= max || !((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return 0;
    }
    return i > 0;
}

int kf_jmsg_build(kf_jmsg_codec *s, const char *session, const char *msg_type,
                  const char *content, size_t content_len, int64_t unix_us, kf_jmsg_out *out) {
    if (!s || !session || !msg_type || !content || !out || unix_us < 0)
        return -EINVAL;
    if (!plain_ident(session, KF_JMSG_ID_LEN) || !plain_ident(msg_type, 64))
        return -EINVAL;
    int r = kf_jmsg_new_id(out->msg_id);
    if (r < 0)
        return r;
    time_t secs = (time_t)(unix_us / 1000000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm))
        return -EINVAL;
    int n = snprintf(out->header, sizeof(out->header),
                     "{\"msg_id\":\"%s\",\"session\":\"%s\",\"username\":\"" KF_JMSG_USERNAME
                     "\",\"date\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ\",\"msg_type\":\"%s\","
                     "\"version\":\"" KF_JMSG_VERSION "\"}",
                     out->msg_id, session, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(unix_us % 1000000), msg_type);
    if (n < 0 || (size_t)n >= sizeof(out->header))
        return -EINVAL;
    out->header_len = (size_t)n;
    out->content = content;
    out->content_len = content_len;
    kf_jmsg_frame f[KF_JMSG_OUT_FRAMES];
    kf_jmsg_out_frames(out, f);
    return kf_jmsg_sign(s, f + 2, out->sig);
}

void kf_jmsg_out_frames(const kf_jmsg_out *m, kf_jmsg_frame f[KF_JMSG_OUT_FRAMES]) {
    f[0] = (kf_jmsg_frame){KF_JMSG_DELIM, sizeof(KF_JMSG_DELIM) - 1};
    f[1] = (kf_jmsg_frame){m->sig, KF_JMSG_SIG_LEN};
    f[2] = (kf_jmsg_frame){m->header, m->header_len};
    f[3] = (kf_jmsg_frame){"{}", 2};
    f[4] = (kf_jmsg_frame){"{}", 2};
    f[5] = (kf_jmsg_frame){m->content, m->content_len};
}

const char *kf_jmsg_str(const cJSON *obj, const char *name) {
    if (!cJSON_IsObject(obj))
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Parse one JSON frame that must hold an object. The frame is copied into
 * the scratch buffer to NUL-terminate it; trailing bytes (including an
 * embedded NUL) make it malformed. */
static int parse_object(kf_jmsg_codec *s, const kf_jmsg_frame *f, cJSON **out) {
    s->scratch.len = 0;
    int r = kf_jbuf_reserve(&s->scratch, f->len + 1);
    if (r < 0)
        return r;
    if (f->len)
        memcpy(s->scratch.data, f->data, f->len);
    s->scratch.data[f->len] = '\0';
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(s->scratch.data, &end, 1);
    if (!j)
        return -EBADMSG;
    if (!cJSON_IsObject(j) || end != s->scratch.data + f->len) {
        cJSON_Delete(j);
        return -EBADMSG;
    }
    *out = j;
    return 0;
}

int kf_jmsg_parse(kf_jmsg_codec *s, const kf_jmsg_frame *f, size_t n, kf_jmsg *out) {
    if (!s || !out || (!f && n))
        return -EINVAL;
    *out = (kf_jmsg){0};
    if (n > KF_JMSG_MAX_FRAMES)
        return -E2BIG;
    size_t total = 0, d = n;
    for (size_t i = 0; i < n; i++) {
        total += f[i].len;
        if (total > KF_JMSG_MAX_BYTES)
            return -E2BIG;
        if (d == n && f[i].len == sizeof(KF_JMSG_DELIM) - 1 &&
            !memcmp(f[i].data, KF_JMSG_DELIM, sizeof(KF_JMSG_DELIM) - 1))
            d = i;
    }
    if (d == n || n - d < 6) /* delimiter, sig, header, parent, metadata, content */
        return -EBADMSG;

    const kf_jmsg_frame *sigf = &f[d + 1];
    char want[KF_JMSG_SIG_LEN + 1];
    int r = kf_jmsg_sign(s, &f[d + 2], want);
    if (r < 0)
        return r;
    if (sigf->len != KF_JMSG_SIG_LEN || CRYPTO_memcmp(want, sigf->data, KF_JMSG_SIG_LEN) != 0)
        return -EPERM;

    kf_jmsg m = {.content_frame = f[d + 5], .n_buffers = n - d - 6};
    r = parse_object(s, &f[d + 2], &m.header);
    if (r < 0)
        goto fail;
    r = parse_object(s, &f[d + 3], &m.parent);
    if (r < 0)
        goto fail;
    m.msg_type = kf_jmsg_str(m.header, "msg_type");
    m.msg_id = kf_jmsg_str(m.header, "msg_id");
    if (!m.msg_type || !m.msg_id) {
        r = -EBADMSG;
        goto fail;
    }
    m.parent_id = kf_jmsg_str(m.parent, "msg_id");
    if (!m.parent_id)
        m.parent_id = "";
    *out = m;
    return 0;
fail:
    kf_jmsg_done(&m);
    return r;
}

int kf_jmsg_parse_content(kf_jmsg_codec *s, kf_jmsg *m) {
    if (m->content)
        return 0;
    return parse_object(s, &m->content_frame, &m->content);
}

void kf_jmsg_done(kf_jmsg *m) {
    if (!m)
        return;
    cJSON_Delete(m->header);
    cJSON_Delete(m->parent);
    cJSON_Delete(m->content);
    *m = (kf_jmsg){0};
}

int kf_jbuf_reserve(kf_jbuf *b, size_t more) {
    if (more > KF_JMSG_MAX_BYTES + 1 || b->len > KF_JMSG_MAX_BYTES + 1 - more)
        return -E2BIG;
    size_t need = b->len + more;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

void kf_jbuf_done(kf_jbuf *b) {
    free(b->data);
    *b = (kf_jbuf){0};
}

int kf_jmsg_execute_content(kf_jbuf *b, const char *code, size_t len) {
    static const char head[] = "{\"code\":\"";
    static const char tail[] = "\",\"silent\":false,\"store_history\":true,"
                               "\"user_expressions\":{},\"allow_stdin\":false,"
                               "\"stop_on_error\":false}";
    b->len = 0;
    /* Worst case every byte becomes \u00XX. Checked against the limit
     * before multiplying, so this cannot overflow. */
    if (len > KF_JMSG_MAX_BYTES / 6)
        return -E2BIG;
    int r = kf_jbuf_reserve(b, sizeof(head) + len * 6 + sizeof(tail));
    if (r < 0)
        return r;
    char *p = b->data;
    memcpy(p, head, sizeof(head) - 1);
    p += sizeof(head) - 1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)code[i];
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch == '\n') {
            *p++ = '\\';
            *p++ = 'n';
        } else if (ch == '\t') {
            *p++ = '\\';
            *p++ = 't';
        } else if (ch < 0x20) {
            *p++ = '\\';
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = hexdig[ch >> 4];
            *p++ = hexdig[ch & 0xf];
        } else {
            *p++ = (char)ch;
        }
    }
    memcpy(p, tail, sizeof(tail)); /* with the NUL */
    p += sizeof(tail) - 1;
    b->len = (size_t)(p - b->data);
    return 0;
}

static int is_b64_space(char ch) {
    return ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t' || ch == '\f' || ch == '\v';
}

int kf_b64_decode_inplace(char *buf, size_t len, size_t *out_len) {
    /* 1. Squeeze out whitespace (in place). */
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (!is_b64_space(buf[i]))
            buf[n++] = buf[i];
    /* 2. EVP_DecodeBlock decodes '=' as zero bits anywhere and counts the
     * padding in its result, so padding is handled here: at most two '='
     * and only at the very end, and never handed to OpenSSL. */
    size_t pad = 0;
    while (pad < n && buf[n - 1 - pad] == '=')
        pad++;
    size_t body = n - pad;
    if (pad > 2 || body % 4 == 1 || memchr(buf, '=', body))
        return -EBADMSG;
    if (pad && (body + pad) % 4 != 0)
        return -EBADMSG;
    /* 3. Decode whole quanta in chunks through a bounce buffer: the output
     * (3/4 of the input consumed so far) never overtakes the input, and
     * EVP_DecodeBlock is never asked to work in place. */
    size_t full = body - body % 4, rd = 0, wr = 0;
    unsigned char tmp[3072];
    while (rd < full) {
        size_t chunk = full - rd > 4096 ? 4096 : full - rd;
        int got = EVP_DecodeBlock(tmp, (const unsigned char *)buf + rd, (int)chunk);
        if (got < 0 || (size_t)got != chunk / 4 * 3)
            return -EBADMSG;
        memcpy(buf + wr, tmp, (size_t)got);
        rd += chunk;
        wr += (size_t)got;
    }
    /* 4. A last partial quantum (2 or 3 chars), filled with 'A' (zero
     * bits) whose decoded bytes are then dropped. */
    size_t rest = body % 4;
    if (rest) {
        unsigned char q[4] = {'A', 'A', 'A', 'A'};
        memcpy(q, buf + rd, rest);
        if (EVP_DecodeBlock(tmp, q, 4) != 3)
            return -EBADMSG;
        memcpy(buf + wr, tmp, rest - 1);
        wr += rest - 1;
    }
    *out_len = wr;
    return 0;
}
