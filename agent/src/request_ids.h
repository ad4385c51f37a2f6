/* request_ids.h - idempotent CreateSession on a lone agent: a client's
 * request_id -> the session it made, kept under STATE/requests so a retry
 * gets the same answer after the agent restarts, kill -9 included.
 *
 * The same semantics as the scheduler's (scheduler/src/request_ids.c,
 * ARCHITECTURE.md "Idempotent create"), with the checks, the fingerprint
 * and the error messages from common (kf/request_id.h).
 */
#ifndef KF_AGENT_REQUEST_IDS_H
#define KF_AGENT_REQUEST_IDS_H

#include <stddef.h>
#include <stdint.h>

#include "kfleet/v1/sessions.pb-c.h"
#include "session.h"

#define KF_AGENT_REQUESTS_MAX 100000              /* records kept; the oldest go first */
#define KF_AGENT_REQUEST_TTL_MS (24LL * 3600 * 1000) /* a record answers for 24 h */
#define KF_AGENT_REQUEST_WAIT_MS 150000           /* a retry waits at most this for the first create */

typedef struct kf_agent_requests kf_agent_requests;

/* kf_requests_open - load the records under STATE/requests, at most `max`
 * (the oldest beyond it, expired records and malformed files are deleted).
 * A record whose create a crash cut short is kept only if its session was
 * re-adopted: call after kf_store_recover. Blocks on the disk (one small
 * file per record: about a second for 100,000). 0 and *out (free with
 * kf_requests_free), or a negative errno with err set. */
int kf_requests_open(kf_agent *a, size_t max, kf_agent_requests **out, kf_error *err);
/* kf_requests_free - NULL-safe; returns NULL. No create may be running. */
kf_agent_requests *kf_requests_free(kf_agent_requests *r);

/* kf_requests_create - CreateSession for `req`, which has a request_id,
 * in the scope of `tenant` (NULL = none). Checks the id (INVALID_ARGUMENT)
 * and then, for that id:
 *  - unknown (or its record expired): creates a session with limits
 *    `want` (kf_op_create) and records it; a failed create leaves no record;
 *  - made by a request with other limits or labels: ALREADY_EXISTS;
 *  - made a session that still exists: that session;
 *  - made a session deleted or expired since: FAILED_PRECONDITION;
 *  - being created by another call: waits for it (until `deadline_ms`,
 *    kf_mono_ms() time; then UNAVAILABLE) and answers as above, or makes
 *    the attempt itself if that call failed.
 * So racing creates of one id make one session. Blocks (a cold start,
 * waiting); the lock is never held across a create or a file write.
 * 0 with *out referenced (caller unrefs), or a negative errno with err set. */
int kf_requests_create(kf_agent_requests *r, kf_agent *a, const char *tenant,
                       const Kfleet__V1__CreateSessionRequest *req, const kf_limits *want,
                       int64_t deadline_ms, kf_session **out, kf_error *err);

#endif
