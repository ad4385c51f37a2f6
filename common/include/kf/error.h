/* error.h - the one error convention of kfleet.
 *
 * Every fallible function returns 0 on success or a negative errno-style
 * code on failure. Where a caller needs a message a user can act on, the
 * function also takes a `kf_error *err` (may be NULL) that it fills; callers
 * add context as the error travels up with kf_error_wrap() (crun's
 * libcrun_error_t + crun_error_wrap). The `status` field carries the gRPC
 * status code the error maps to; internal errors are mapped to gRPC in one
 * place (kf_error_status()), so handlers never guess.
 */
#ifndef KF_ERROR_H
#define KF_ERROR_H

#include <stdarg.h>

/* Same numbers as grpc_status_code, so common/ needs no gRPC header. */
typedef enum kf_status {
    KF_ST_OK = 0,
    KF_ST_CANCELLED = 1,
    KF_ST_UNKNOWN = 2,
    KF_ST_INVALID_ARGUMENT = 3,
    KF_ST_DEADLINE_EXCEEDED = 4,
    KF_ST_NOT_FOUND = 5,
    KF_ST_ALREADY_EXISTS = 6,
    KF_ST_PERMISSION_DENIED = 7,
    KF_ST_RESOURCE_EXHAUSTED = 8,
    KF_ST_FAILED_PRECONDITION = 9,
    KF_ST_ABORTED = 10,
    KF_ST_OUT_OF_RANGE = 11,
    KF_ST_UNIMPLEMENTED = 12,
    KF_ST_INTERNAL = 13,
    KF_ST_UNAVAILABLE = 14,
    KF_ST_DATA_LOSS = 15,
    KF_ST_UNAUTHENTICATED = 16,
} kf_status;

#define KF_ERROR_MSG_MAX 512

typedef struct kf_error {
    int code;       /* negative errno; 0 = no error */
    kf_status status; /* gRPC status this error maps to */
    char msg[KF_ERROR_MSG_MAX];
} kf_error;

/* kf_error_set - record an error. `code` is a negative errno (a positive one
 * is negated). `status` 0 means "derive from code" (kf_status_from_errno).
 * NULL-safe on `e`. Returns the negative code, so `return kf_error_set(...)`. */
int kf_error_set(kf_error *e, int code, kf_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* kf_error_wrap - prefix the message with context ("ctx: old message").
 * Keeps code and status. Returns e->code (or -EIO if e is NULL). */
int kf_error_wrap(kf_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* kf_error_status - the gRPC status for an error: its own status if set,
 * else derived from its errno code. */
kf_status kf_error_status(const kf_error *e);

/* kf_status_from_errno - the mapping of errno codes to gRPC status codes,
 * the single place where that choice is made. Accepts negative or positive. */
kf_status kf_status_from_errno(int code);

/* kf_error_clear - reset for reuse. */
void kf_error_clear(kf_error *e);

#endif
