/* drain_api.c - kfleet.v1.Cluster DrainNode, GetDrain, WatchDrain and
 * CancelDrain. Any replica answers; the calls only read and write the
 * drain record (drain.h) and the node's cordon. The moves themselves are
 * made by the elected replica's runner (drain_runner.c), so a client that
 * goes away (Ctrl-C on `kfleetctl node drain`) changes nothing: the drain
 * goes on, and --status / --cancel find it by node.
 *
 * DrainNode cordons the node first (reason "drain: <reason>"), so no new
 * session lands there while its sessions are listed; sessions that a
 * racing create put there anyway are picked up by the runner's next pass.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "drain.h"
#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"

#define RECORD_TRIES 4
#define WATCH_POLL_MS 250

static void reply_drain(kf_call *c, const kf_drain *d) {
    kf_drain_msg m;
    if (kf_drain_msg_init(&m, d) < 0) {
        kf_call_finish(c, KF_ST_INTERNAL, "out of memory");
        return;
    }
    kf_call_reply(c, &m.st.base);
    kf_drain_msg_done(&m);
}

static int bad_arg(kf_call *c, const char *msg) {
    kf_call_finish(c, KF_ST_INVALID_ARGUMENT, msg);
    return -EINVAL;
}

/* A new running drain of `node` in *d, its sessions those the session table
 * has on the node. */
static int new_drain(kf_sched *s, const Kfleet__V1__DrainNodeRequest *req, const char *by, kf_drain *d,
                     kf_error *err) {
    memset(d, 0, sizeof(*d));
    snprintf(d->node, sizeof(d->node), "%s", req->node);
    d->state = KF_DRAIN_RUNNING;
    snprintf(d->reason, sizeof(d->reason), "%s", req->reason[0] ? req->reason : "drain");
    snprintf(d->by, sizeof(d->by), "%s", by);
    d->started_unix_ms = kf_unix_ms();
    uint32_t dl = req->deadline_s ? req->deadline_s : KF_DRAIN_DEADLINE_DEFAULT_S;
    d->deadline_unix_ms = d->started_unix_ms + (int64_t)dl * 1000;
    d->parallel = req->parallel ? req->parallel : KF_DRAIN_PARALLEL_DEFAULT;
    d->force = req->force;
    char (*ids)[KF_SESSION_ID_MAX + 1] = NULL;
    size_t n = 0;
    if (kf_session_table_on_node(s->sessions, req->node, &ids, &n) < 0)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    if (n > KF_DRAIN_SESSIONS_MAX) {
        free(ids);
        return kf_error_set(err, -E2BIG, KF_ST_FAILED_PRECONDITION,
                            "node %s holds %zu sessions; a drain moves at most %d", req->node, n,
                            KF_DRAIN_SESSIONS_MAX);
    }
    d->sess = calloc(n ? n : 1, sizeof(*d->sess));
    if (!d->sess) {
        free(ids);
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(d->sess[i].id, sizeof(d->sess[i].id), "%s", ids[i]);
        d->sess[i].state = KF_DS_PENDING;
    }
    d->n = n;
    free(ids);
    return 0;
}

void kf_sched_drain(kf_call *c, void *ud) {
    kf_sched *s = ud;
    kf_tenant tenant;
    _cleanup_pb_ Kfleet__V1__DrainNodeRequest *req =
        (void *)kf_cluster_begin(s, c, &kfleet__v1__drain_node_request__descriptor, true, &tenant);
    if (!req || kf_cluster_check_node(c, req->node) < 0)
        return;
    char msg[KF_ERROR_MSG_MAX];
    if (req->deadline_s > KF_DRAIN_DEADLINE_MAX_S) {
        snprintf(msg, sizeof(msg), "deadline_s: %u is more than the maximum %d", req->deadline_s,
                 KF_DRAIN_DEADLINE_MAX_S);
        bad_arg(c, msg);
        return;
    }
    if (req->parallel > KF_DRAIN_PARALLEL_MAX) {
        snprintf(msg, sizeof(msg), "parallel: %u is more than the maximum %d", req->parallel,
                 KF_DRAIN_PARALLEL_MAX);
        bad_arg(c, msg);
        return;
    }
    kf_error err = {0};
    char by[KF_ADMIN_TEXT_MAX + 1];
    if ((req->reason[0] && kf_admin_text_check("reason", req->reason, &err) < 0) ||
        kf_cluster_who(s, &tenant, req->who, by, sizeof(by), &err) < 0) {
        kf_call_fail(c, &err);
        return;
    }
    for (int attempt = 0; attempt < RECORD_TRIES; attempt++) {
        kf_drain cur = {0};
        int64_t rev = 0;
        int rc = kf_drain_get(s, req->node, &cur, &rev, &err);
        if (rc < 0 && rc != -ENOENT) {
            kf_call_fail(c, &err);
            return;
        }
        if (rc == 0 && cur.state == KF_DRAIN_RUNNING) { /* idempotent: the drain in progress */
            reply_drain(c, &cur);
            kf_drain_done(&cur);
            return;
        }
        kf_drain_done(&cur);
        char cordon[KF_ADMIN_TEXT_MAX + 1];
        snprintf(cordon, sizeof(cordon), "drain: %.240s", req->reason[0] ? req->reason : "no reason given");
        if (kf_admin_apply(s, req->node, cordon, by, &err) < 0) {
            kf_call_fail(c, &err);
            return;
        }
        kf_drain d;
        bool won = false;
        if (new_drain(s, req, by, &d, &err) < 0 || kf_drain_put(s, &d, rev, false, &won, NULL, &err) < 0) {
            kf_drain_done(&d);
            kf_call_fail(c, &err);
            return;
        }
        if (won) {
            kf_info("node %s: drain started by %s (%zu sessions, deadline %ds, %u at a time%s)", d.node, by,
                    d.n, (int)((d.deadline_unix_ms - d.started_unix_ms) / 1000), d.parallel,
                    d.force ? ", force" : "");
            reply_drain(c, &d);
            kf_drain_done(&d);
            return;
        }
        kf_drain_done(&d);
    }
    kf_call_finish(c, KF_ST_ABORTED, "the drain record kept changing under us; retry");
}

/* kf_drain_get with NOT_FOUND "no drain of node X" for a missing record. */
static int read_drain(kf_sched *s, const char *node, kf_drain *d, int64_t *rev, kf_error *err) {
    int rc = kf_drain_get(s, node, d, rev, err);
    if (rc == -ENOENT)
        kf_error_set(err, rc, KF_ST_NOT_FOUND, "no drain of node %s", node);
    return rc;
}

void kf_sched_get_drain(kf_call *c, void *ud) {
    kf_sched *s = ud;
    kf_tenant tenant;
    _cleanup_pb_ Kfleet__V1__GetDrainRequest *req =
        (void *)kf_cluster_begin(s, c, &kfleet__v1__get_drain_request__descriptor, false, &tenant);
    if (!req || kf_cluster_check_node(c, req->node) < 0)
        return;
    kf_drain d = {0};
    int64_t rev;
    kf_error err = {0};
    int rc = read_drain(s, req->node, &d, &rev, &err);
    if (rc < 0)
        kf_call_fail(c, &err);
    else
        reply_drain(c, &d);
    kf_drain_done(&d);
}

void kf_sched_watch_drain(kf_call *c, void *ud) {
    kf_sched *s = ud;
    kf_tenant tenant;
    _cleanup_pb_ Kfleet__V1__GetDrainRequest *req =
        (void *)kf_cluster_begin(s, c, &kfleet__v1__get_drain_request__descriptor, false, &tenant);
    if (!req || kf_cluster_check_node(c, req->node) < 0)
        return;
    int64_t last = -1;
    for (;;) {
        kf_drain d = {0};
        int64_t rev = 0;
        kf_error err = {0};
        if (read_drain(s, req->node, &d, &rev, &err) < 0) {
            kf_call_fail(c, &err);
            return;
        }
        bool ended = kf_drain_ended(&d);
        if (rev != last) {
            kf_drain_msg m;
            int ir = kf_drain_msg_init(&m, &d);
            int sr = ir < 0 ? ir : kf_call_send(c, &m.st.base);
            if (ir == 0)
                kf_drain_msg_done(&m);
            last = rev;
            if (sr < 0) {
                kf_drain_done(&d);
                return; /* client gone (or ENOMEM): nothing to finish */
            }
        }
        kf_drain_done(&d);
        if (ended) {
            kf_call_finish(c, KF_ST_OK, NULL);
            return;
        }
        if (kf_call_cancelled(c))
            return;
        usleep(WATCH_POLL_MS * 1000);
    }
}

void kf_sched_cancel_drain(kf_call *c, void *ud) {
    kf_sched *s = ud;
    kf_tenant tenant;
    _cleanup_pb_ Kfleet__V1__CancelDrainRequest *req =
        (void *)kf_cluster_begin(s, c, &kfleet__v1__cancel_drain_request__descriptor, true, &tenant);
    if (!req || kf_cluster_check_node(c, req->node) < 0)
        return;
    kf_error err = {0};
    char by[KF_ADMIN_TEXT_MAX + 1];
    if (kf_cluster_who(s, &tenant, req->who, by, sizeof(by), &err) < 0) {
        kf_call_fail(c, &err);
        return;
    }
    for (int attempt = 0; attempt < RECORD_TRIES; attempt++) {
        kf_drain d = {0};
        int64_t rev = 0;
        int rc = read_drain(s, req->node, &d, &rev, &err);
        if (rc < 0) {
            kf_call_fail(c, &err);
            return;
        }
        if (kf_drain_ended(&d)) { /* nothing to cancel: say how it ended */
            reply_drain(c, &d);
            kf_drain_done(&d);
            return;
        }
        d.state = KF_DRAIN_CANCELLED;
        d.ended_unix_ms = kf_unix_ms();
        snprintf(d.message, sizeof(d.message), "cancelled by %.63s; the node stays cordoned", by);
        bool won = false;
        rc = kf_drain_put(s, &d, rev, false, &won, NULL, &err);
        if (rc == 0 && won) {
            kf_info("node %s: drain cancelled by %s", d.node, by);
            reply_drain(c, &d);
        } else if (rc < 0) {
            kf_call_fail(c, &err);
        }
        kf_drain_done(&d);
        if (rc < 0 || won)
            return;
    }
    kf_call_finish(c, KF_ST_ABORTED, "the drain record kept changing under us; retry");
}
