/* lost.c - what a client gets for a session whose node was lost.
 *
 * The leader marks a session's record LOST when its node left the cluster
 * and did not come back within --node-grace (node_loss.c); every replica
 * sees the mark through its session table and answers from the record,
 * without forwarding: the session's kernel and files are gone (or, if the
 * node comes back, deleted by the leader's reconcile pass), so retrying
 * cannot help. Hence FAILED_PRECONDITION, not UNAVAILABLE: UNAVAILABLE
 * stays the answer for a node that is gone but still within its grace
 * (the client may retry; the session may come back).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "lost.h"

/* "2026-11-29T10:58:03Z" */
static void iso_time(int64_t unix_ms, char *buf, size_t size) {
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, size, "unix ms %lld", (long long)unix_ms);
}

static void lost_reason(const kf_session_ref *ref, char *buf, size_t size) {
    char when[64];
    iso_time(ref->lost_unix_ms, when, sizeof(when));
    snprintf(buf, size, "lost with its node %s at %s (the node left the cluster and did not come back)",
             ref->node, when);
}

static void fill_session(kf_lost_session *ls, const char *id, const kf_session_ref *ref) {
    ls->msg = (Kfleet__V1__Session)KFLEET__V1__SESSION__INIT;
    snprintf(ls->id, sizeof(ls->id), "%s", id);
    snprintf(ls->node, sizeof(ls->node), "%s", ref->node);
    lost_reason(ref, ls->reason, sizeof(ls->reason));
    ls->msg.id = ls->id;
    ls->msg.node = ls->node;
    ls->msg.state = KFLEET__V1__SESSION_STATE__SESSION_STATE_LOST;
    ls->msg.created_unix_ms = ref->created_unix_ms;
    ls->msg.expiry_reason = ls->reason;
}

void kf_sched_lost_answer(kf_call *c, const kf_route *r, const char *id, const kf_session_ref *ref) {
    if (r->req == &kfleet__v1__get_session_request__descriptor) {
        kf_lost_session ls;
        fill_session(&ls, id, ref);
        kf_call_reply(c, &ls.msg.base);
        return;
    }
    if (r->req == &kfleet__v1__delete_session_request__descriptor) {
        if (kf_session_forget(r->s, id) < 0) {
            kf_call_finish(c, KF_ST_UNAVAILABLE, "the LOST session's record could not be deleted; retry");
            return;
        }
        kf_info("session %s (LOST with node %s) deleted", id, ref->node);
        Kfleet__V1__DeleteSessionResponse resp = KFLEET__V1__DELETE_SESSION_RESPONSE__INIT;
        kf_call_reply(c, &resp.base);
        return;
    }
    char reason[KF_LOST_REASON_MAX], msg[KF_ERROR_MSG_MAX];
    lost_reason(ref, reason, sizeof(reason));
    snprintf(msg, sizeof(msg), "session %s was %s; its state is gone: delete it and create a new one", id,
             reason);
    kf_call_finish(c, KF_ST_FAILED_PRECONDITION, msg);
}

int kf_sched_lost_sessions(kf_sched *s, const char *tenant, kf_lost_session **out, size_t *n) {
    _cleanup_free_ kf_session_item *items = NULL;
    size_t k = 0;
    *out = NULL;
    *n = 0;
    int rc = kf_session_table_lost(s->sessions, tenant, &items, &k);
    if (rc < 0)
        return rc;
    kf_lost_session *ls = calloc(k ? k : 1, sizeof(*ls));
    if (!ls)
        return -ENOMEM;
    for (size_t i = 0; i < k; i++)
        fill_session(&ls[i], items[i].id, &items[i].ref);
    *out = ls;
    *n = k;
    return 0;
}
