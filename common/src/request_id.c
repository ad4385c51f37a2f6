/* request_id.c - request ids of idempotent CreateSession: the check, the
 * fingerprint of a request, and the errors every server answers with (see
 * kf/request_id.h). Moved here from the scheduler so a lone agent answers
 * exactly as a scheduler does.
 *
 * The fingerprint is the SHA-256 (hex) of the request's limits and labels
 * in a canonical text form (see fingerprint_text()), so "the same request
 * id with different limits" is told apart from a retry without storing the
 * request.
 */
#include "kf/request_id.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"

int kf_request_id_check(const char *rid, kf_error *err) {
    size_t n = strlen(rid);
    if (n == 0 || n > KF_REQUEST_ID_MAX)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "request_id: %zu bytes; must be 1-%d printable ASCII characters", n,
                            KF_REQUEST_ID_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)rid[i] < 0x20 || (unsigned char)rid[i] > 0x7e)
            return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                                "request_id: byte 0x%02x at offset %zu is not printable ASCII",
                                (unsigned char)rid[i], i);
    return 0;
}

static int cmp_label(const void *a, const void *b) {
    const Kfleet__V1__CreateSessionRequest__LabelsEntry *x = *(void *const *)a, *y = *(void *const *)b;
    return strcmp(x->key ? x->key : "", y->key ? y->key : "");
}

/* The canonical text hashed: the eight limits in field order, then each
 * label (sorted by key) with length prefixes, so no two requests that
 * differ give the same text. */
static int fingerprint_text(const Kfleet__V1__CreateSessionRequest *req, EVP_MD_CTX *md) {
    static const Kfleet__V1__Limits zero = KFLEET__V1__LIMITS__INIT;
    const Kfleet__V1__Limits *l = req->limits ? req->limits : &zero;
    char buf[512];
    int n = snprintf(buf, sizeof(buf),
                     "memory_bytes=%" PRIu64 ";cpu_millis=%" PRIu32 ";pids=%" PRIu32
                     ";exec_timeout_ms=%" PRIu32 ";disk_bytes=%" PRIu64 ";disk_inodes=%" PRIu64
                     ";idle_timeout_s=%" PRIu32 ";max_lifetime_s=%" PRIu32,
                     l->memory_bytes, l->cpu_millis, l->pids, l->exec_timeout_ms, l->disk_bytes,
                     l->disk_inodes, l->idle_timeout_s, l->max_lifetime_s);
    if (!EVP_DigestUpdate(md, buf, (size_t)n))
        return -EIO;
    if (!req->n_labels)
        return 0;
    _cleanup_free_ void **sorted = malloc(req->n_labels * sizeof(*sorted));
    if (!sorted)
        return -ENOMEM;
    memcpy(sorted, req->labels, req->n_labels * sizeof(*sorted));
    qsort(sorted, req->n_labels, sizeof(*sorted), cmp_label);
    for (size_t i = 0; i < req->n_labels; i++) {
        const Kfleet__V1__CreateSessionRequest__LabelsEntry *e = sorted[i];
        const char *k = e->key ? e->key : "", *v = e->value ? e->value : "";
        n = snprintf(buf, sizeof(buf), ";label:%zu:", strlen(k));
        if (!EVP_DigestUpdate(md, buf, (size_t)n) || !EVP_DigestUpdate(md, k, strlen(k)))
            return -EIO;
        n = snprintf(buf, sizeof(buf), "=%zu:", strlen(v));
        if (!EVP_DigestUpdate(md, buf, (size_t)n) || !EVP_DigestUpdate(md, v, strlen(v)))
            return -EIO;
    }
    return 0;
}

/* The digest of what feed() hands to the context, as hex. */
static int sha256_with(int (*feed)(const void *arg, size_t len, EVP_MD_CTX *md), const void *arg,
                       size_t len, char out[KF_REQUEST_FP_LEN + 1]) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char d[32];
    unsigned int dn = 0;
    int rc = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) ? feed(arg, len, md) : -ENOMEM;
    if (rc == 0 && (!EVP_DigestFinal_ex(md, d, &dn) || dn != sizeof(d)))
        rc = -EIO;
    EVP_MD_CTX_free(md);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < sizeof(d); i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    return 0;
}

static int feed_request(const void *arg, size_t len, EVP_MD_CTX *md) {
    (void)len;
    return fingerprint_text(arg, md);
}

static int feed_bytes(const void *arg, size_t len, EVP_MD_CTX *md) {
    return EVP_DigestUpdate(md, arg, len) ? 0 : -EIO;
}

int kf_request_fingerprint(const Kfleet__V1__CreateSessionRequest *req, char out[KF_REQUEST_FP_LEN + 1]) {
    return sha256_with(feed_request, req, 0, out);
}

int kf_sha256_hex(const void *data, size_t len, char out[KF_REQUEST_FP_LEN + 1]) {
    return sha256_with(feed_bytes, data, len, out);
}

int kf_request_err_conflict(kf_error *err, const char *rid, const char *session_id) {
    return kf_error_set(err, -EEXIST, KF_ST_ALREADY_EXISTS,
                        "request id %.128s was used for a different request (other limits or "
                        "labels; session %s)",
                        rid, session_id);
}

int kf_request_err_gone(kf_error *err, const char *rid, const char *session_id) {
    return kf_error_set(err, -ESTALE, KF_ST_FAILED_PRECONDITION,
                        "request id %.128s already created session %s, which no longer exists "
                        "(deleted or expired)",
                        rid, session_id);
}
