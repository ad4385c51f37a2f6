/* request_id.h - what every server of idempotent CreateSession agrees on:
 * the shape of a client's `request_id`, the fingerprint that tells a retry
 * from another request under the same id, and the errors a client sees.
 *
 * Shared by the scheduler (records in etcd, scheduler/src/request_ids.c)
 * and a lone agent (records under its state dir, agent/src/request_ids.c),
 * so a client gets the same answers whichever it talks to. Pure: no I/O.
 */
#ifndef KF_REQUEST_ID_H
#define KF_REQUEST_ID_H

#include <stddef.h>

#include "kf/error.h"
#include "kfleet/v1/sessions.pb-c.h"

#define KF_REQUEST_ID_MAX 128
#define KF_REQUEST_FP_LEN 64 /* SHA-256, hex */

/* kf_request_id_check - 0 if `rid` is 1-KF_REQUEST_ID_MAX printable ASCII,
 * else -EINVAL / INVALID_ARGUMENT naming what is wrong. */
int kf_request_id_check(const char *rid, kf_error *err);

/* kf_request_fingerprint - SHA-256 (hex, NUL-terminated) of the request's
 * limits and labels in a canonical text form: equal for two requests
 * exactly when their limits and label sets are. 0, or -ENOMEM / -EIO. */
int kf_request_fingerprint(const Kfleet__V1__CreateSessionRequest *req, char out[KF_REQUEST_FP_LEN + 1]);

/* kf_sha256_hex - SHA-256 of `len` bytes at `data`, as 64 hex digits and a
 * NUL. 0, or -ENOMEM / -EIO. */
int kf_sha256_hex(const void *data, size_t len, char out[KF_REQUEST_FP_LEN + 1]);

/* kf_request_err_conflict - ALREADY_EXISTS: `rid` made `session_id` from a
 * request with other limits or labels. Returns -EEXIST. */
int kf_request_err_conflict(kf_error *err, const char *rid, const char *session_id);

/* kf_request_err_gone - FAILED_PRECONDITION: `rid` made `session_id`, which
 * has been deleted or has expired since. Returns -ESTALE. */
int kf_request_err_gone(kf_error *err, const char *rid, const char *session_id);

#endif
