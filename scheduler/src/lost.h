/* lost.h - answers for sessions the leader declared LOST (lost.c), used by
 * the forwarding handlers (proxy.c). */
#ifndef KF_SCHED_LOST_H
#define KF_SCHED_LOST_H

#include "kfleet/v1/sessions.pb-c.h"
#include "scheduler.h"
#include "service.h"

/* kf_sched_lost_answer - finish call `c` (method `r`) for session `id`,
 * whose record says LOST: GetSession replies a Session in state LOST (the
 * reason in expiry_reason); DeleteSession removes the record and replies
 * OK; every other call fails with FAILED_PRECONDITION saying that the
 * session was lost with its node, and when. Blocks on etcd (delete only). */
void kf_sched_lost_answer(kf_call *c, const kf_route *r, const char *id, const kf_session_ref *ref);

#define KF_LOST_REASON_MAX (KF_PLACE_ID_MAX + 160)

/* The caller's LOST sessions for ListSessions: each item holds a Session
 * message whose strings point into the item. */
typedef struct kf_lost_session {
    Kfleet__V1__Session msg;
    char id[KF_SESSION_ID_MAX + 1];
    char node[KF_PLACE_ID_MAX + 1];
    char reason[KF_LOST_REASON_MAX];
} kf_lost_session;

/* kf_sched_lost_sessions - the LOST sessions of `tenant` (NULL: every
 * tenant), from the session table's cache (malloc'd array, caller frees). */
int kf_sched_lost_sessions(kf_sched *s, const char *tenant, kf_lost_session **out, size_t *n);

#endif
