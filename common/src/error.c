/* error.c - the kf_error object and the errno -> gRPC status mapping.
 * See error.h for the convention. */
#include "kf/error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int kf_error_set(kf_error *e, int code, kf_status status, const char *fmt, ...) {
    if (code > 0)
        code = -code;
    if (code == 0)
        code = -EIO;
    if (!e)
        return code;
    e->code = code;
    e->status = status ? status : kf_status_from_errno(code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return code;
}

int kf_error_wrap(kf_error *e, const char *fmt, ...) {
    if (!e)
        return -EIO;
    char prefix[KF_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    /* Room for both parts; the result is cut to the message size. */
    char joined[2 * KF_ERROR_MSG_MAX + 2];
    snprintf(joined, sizeof(joined), "%s: %s", prefix, e->msg);
    memcpy(e->msg, joined, sizeof(e->msg) - 1);
    e->msg[sizeof(e->msg) - 1] = '\0';
    if (e->code == 0)
        e->code = -EIO;
    return e->code;
}

kf_status kf_status_from_errno(int code) {
    if (code < 0)
        code = -code;
    switch (code) {
    case 0: return KF_ST_OK;
    case ENOENT: case ESRCH: return KF_ST_NOT_FOUND;
    case EEXIST: return KF_ST_ALREADY_EXISTS;
    case EINVAL: case ENAMETOOLONG: case ELOOP: case EXDEV: case EISDIR:
    case ENOTDIR: case EILSEQ: case EBADMSG:
        return KF_ST_INVALID_ARGUMENT;
    case EPERM: case EACCES: return KF_ST_PERMISSION_DENIED;
    case ENOSPC: case EDQUOT: case EFBIG: case ENOMEM: case EMFILE: case ENFILE:
    case EAGAIN: case E2BIG:
        return KF_ST_RESOURCE_EXHAUSTED;
    case EBUSY: return KF_ST_ABORTED;
    case ETIMEDOUT: return KF_ST_DEADLINE_EXCEEDED;
    case ECANCELED: return KF_ST_CANCELLED;
    case ENOTCONN: case ECONNREFUSED: case ECONNRESET: case EPIPE: case EHOSTUNREACH:
        return KF_ST_UNAVAILABLE;
    case ENOSYS: case EOPNOTSUPP: return KF_ST_UNIMPLEMENTED;
    case ESTALE: return KF_ST_FAILED_PRECONDITION;
    default: return KF_ST_INTERNAL;
    }
}

kf_status kf_error_status(const kf_error *e) {
    if (!e || e->code == 0)
        return KF_ST_OK;
    return e->status ? e->status : kf_status_from_errno(e->code);
}

void kf_error_clear(kf_error *e) {
    if (!e)
        return;
    e->code = 0;
    e->status = KF_ST_OK;
    e->msg[0] = '\0';
}
