/* session_ops.c - what the API does to sessions: create (claim a warm
 * sandbox or start a cold one), delete, restart the kernel, interrupt, and
 * expire idle or too-old sessions. Blocking; runs on gRPC handler threads
 * and the reaper thread. Locking rules are in session.h. */
#include "session.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "metrics.h"

static void format_duration(uint64_t s, char *out, size_t size) {
    if (s % 3600 == 0 && s >= 3600)
        snprintf(out, size, "%lluh", (unsigned long long)(s / 3600));
    else if (s % 60 == 0 && s >= 60)
        snprintf(out, size, "%llumin", (unsigned long long)(s / 60));
    else
        snprintf(out, size, "%llus", (unsigned long long)s);
}

/* Starts a fresh sandbox for `l`: used for cold creates and by the pool. */
kf_session *kf_session_start_cold(kf_agent *a, const kf_limits *l, kf_error *err) {
    kf_session *s = kf_session_new();
    if (!s) {
        kf_error_set(err, -ENOMEM, 0, "out of memory");
        return NULL;
    }
    if (kf_random_id(s->sbid, sizeof(s->sbid), "sb-", 12) < 0 || kf_agent_slot_alloc(a, &s->slot) < 0) {
        kf_error_set(err, -ENOSPC, KF_ST_RESOURCE_EXHAUSTED, "node is out of session uids");
        kf_session_unref(a, s);
        return NULL;
    }
    s->uid = a->cfg.uid_base + s->slot;
    s->gid = a->cfg.uid_base + s->slot;
    s->limits = *l;
    s->created_ms = kf_unix_ms();
    s->last_active_ms = s->created_ms;
    int r = kf_sandbox_start(a, s, err);
    if (r == 0)
        r = kf_store_save(a, s);
    if (r < 0) {
        kf_sandbox_destroy(a, s);
        kf_agent_slot_free(a, s->slot);
        kf_session_unref(a, s);
        return NULL;
    }
    return s;
}

int kf_agent_room(kf_agent *a, kf_error *err) {
    pthread_mutex_lock(&a->table_lock);
    size_t n = a->n_sessions;
    int stopping = a->stopping;
    pthread_mutex_unlock(&a->table_lock);
    if (stopping)
        return kf_error_set(err, -ESHUTDOWN, KF_ST_UNAVAILABLE, "node agent is shutting down");
    if (n >= a->cfg.max_sessions)
        return kf_error_set(err, -ENOSPC, KF_ST_RESOURCE_EXHAUSTED,
                            "node %s is full: %zu sessions (its maximum)", a->cfg.node_name, n);
    return 0;
}

int kf_op_create(kf_agent *a, const char *id, const char *tenant, const kf_limits *req,
                 kf_session **out, kf_error *err) {
    /* Checked before any work: a taken id must not cost a sandbox start. */
    if (id && kf_agent_id_check(a, id, err) < 0)
        return err ? err->code : -EINVAL;
    if (tenant && !kf_tenant_valid(tenant))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "tenant '%.64s' is malformed (0-%d of A-Z, a-z, 0-9, '.', '_', '-', '@')",
                            tenant, KF_TENANT_MAX);
    kf_limits l;
    int r = kf_limits_resolve(&a->cfg, req, &l, err);
    if (r < 0)
        return r;
    int64_t t0_us = kf_mono_us();
    if ((r = kf_agent_room(a, err)) < 0)
        return r;

    kf_session *s = kf_pool_claim(a, &l);
    if (s) {
        kf_cg_limits cl = {.memory_bytes = l.memory_bytes, .cpu_millis = l.cpu_millis, .pids = l.pids};
        char cg[64];
        snprintf(cg, sizeof(cg), "kfleet/%s", s->sbid);
        if (memcmp(&cl, &(kf_cg_limits){.memory_bytes = s->limits.memory_bytes,
                                        .cpu_millis = s->limits.cpu_millis,
                                        .pids = s->limits.pids},
                   sizeof(cl)) != 0 &&
            kf_cgroup_set_limits(cg, &cl, err) < 0) {
            kf_warn("pool claim %s: %s; starting cold", s->sbid, err->msg);
            kf_error_clear(err);
            pthread_mutex_lock(&s->lock);
            kf_sandbox_destroy(a, s);
            pthread_mutex_unlock(&s->lock);
            kf_agent_slot_free(a, s->slot);
            kf_session_unref(a, s);
            s = NULL;
        } else {
            s->limits = l;
            s->from_pool = 1;
            s->created_ms = kf_unix_ms();
        }
    }
    if (!s) {
        s = kf_session_start_cold(a, &l, err);
        if (!s) {
            kf_agent_metrics_create(a->metrics, false, false, t0_us);
            return err ? err->code : -EIO;
        }
    }
    if (id)
        snprintf(s->id, sizeof(s->id), "%s", id);
    else
        kf_random_id(s->id, sizeof(s->id), "s-", 20);
    snprintf(s->tenant, sizeof(s->tenant), "%s", tenant ? tenant : "");
    s->last_active_ms = kf_unix_ms();
    s->state = KF_SS_READY;
    r = kf_store_save(a, s);
    if (r == 0)
        r = kf_agent_insert(a, s, err);
    if (r < 0) {
        /* -EEXIST: a concurrent StartSession won the id; keep that reason. */
        if (r != -EEXIST)
            kf_error_set(err, r, 0, "cannot record session %s", s->id);
        pthread_mutex_lock(&s->lock);
        kf_sandbox_destroy(a, s);
        pthread_mutex_unlock(&s->lock);
        kf_agent_slot_free(a, s->slot);
        kf_session_unref(a, s);
        kf_agent_metrics_create(a->metrics, false, false, t0_us);
        return r;
    }
    /* After the insert: a usage snapshot that counts this create also
     * counts the session (see StartSessionResponse.create_seq). */
    pthread_mutex_lock(&a->table_lock);
    s->create_seq = ++a->creates_total;
    pthread_mutex_unlock(&a->table_lock);
    kf_agent_metrics_create(a->metrics, true, s->from_pool, t0_us);
    kf_info("session %s created (sandbox %s, %s)", s->id, s->sbid, s->from_pool ? "warm" : "cold");
    *out = s;
    return 0;
}

/* Tears a session down for good. Caller holds a reference, not the lock. */
static void finish_session(kf_agent *a, kf_session *s, const char *tombstone) {
    kf_agent_remove(a, s, tombstone);
    if (tombstone)
        kf_store_tombstone(a, s->id, tombstone);
    pthread_mutex_lock(&s->lock);
    kf_sandbox_destroy(a, s);
    pthread_mutex_unlock(&s->lock);
    kf_agent_slot_free(a, s->slot);
}

int kf_op_delete(kf_agent *a, const char *id, kf_error *err) {
    kf_session *s = kf_agent_lookup(a, id, err);
    if (!s)
        return err ? err->code : -ENOENT;
    pthread_mutex_lock(&a->table_lock);
    int already = s->state == KF_SS_DELETING || s->state == KF_SS_EXPIRED;
    int moving = s->state == KF_SS_EXPORTED; /* exported since the lookup */
    if (!moving)
        s->state = KF_SS_DELETING;
    pthread_mutex_unlock(&a->table_lock);
    if (moving) {
        kf_session_unref(a, s);
        return kf_error_set(err, -EAGAIN, KF_ST_UNAVAILABLE, "session %s is being moved to another node", id);
    }
    if (already) {
        kf_session_unref(a, s);
        return kf_error_set(err, -ENOENT, KF_ST_NOT_FOUND, "session %s is already being deleted", id);
    }
    /* Kill first, so a running execution ends now instead of at its limit. */
    if (kf_sandbox_alive(s))
        kill(s->pid1, SIGKILL);
    finish_session(a, s, NULL);
    kf_info("session %s deleted", id);
    kf_session_unref(a, s);
    return 0;
}

int kf_op_restart(kf_agent *a, kf_session *s, const char *why, kf_error *err) {
    pthread_mutex_lock(&a->table_lock);
    kf_session_state prev = s->state;
    int gone = prev == KF_SS_DELETING || prev == KF_SS_EXPIRED || prev == KF_SS_EXPORTED;
    if (!gone)
        s->state = KF_SS_RESTARTING;
    pthread_mutex_unlock(&a->table_lock);
    if (gone)
        return kf_error_set(err, -ESTALE, KF_ST_FAILED_PRECONDITION, "session %s is %s", s->id,
                            kf_session_state_name(prev));
    int r = kf_sandbox_restart_kernel(a, s, err);
    pthread_mutex_lock(&a->table_lock);
    if (s->state == KF_SS_RESTARTING)
        s->state = prev == KF_SS_BUSY ? KF_SS_BUSY : KF_SS_READY;
    pthread_mutex_unlock(&a->table_lock);
    kf_store_save(a, s);
    kf_info("session %s: kernel restarted (%s)%s", s->id, why, r < 0 ? " and failed" : "");
    return r;
}

int kf_op_interrupt(kf_agent *a, kf_session *s, kf_error *err) {
    (void)a;
    if (!kf_sandbox_alive(s))
        return kf_error_set(err, -ESRCH, KF_ST_UNAVAILABLE, "session %s: its sandbox is gone", s->id);
    if (kill(s->pid1, SIGUSR2) < 0)
        return kf_error_set(err, -errno, KF_ST_UNAVAILABLE, "cannot interrupt session %s", s->id);
    return 0;
}

void kf_op_expire_due(kf_agent *a) {
    kf_session **all;
    size_t n;
    if (kf_agent_list(a, &all, &n) < 0)
        return;
    int64_t now = kf_unix_ms();
    for (size_t i = 0; i < n; i++) {
        kf_session *s = all[i];
        char reason[160] = "";
        char d[32];
        pthread_mutex_lock(&a->table_lock);
        /* An EXPORTED session is neither idle nor old: its move decides. */
        int moving = s->state == KF_SS_EXPORTED;
        int idle_ok = s->state == KF_SS_READY;
        int64_t idle = now - s->last_active_ms, age = now - s->created_ms;
        pthread_mutex_unlock(&a->table_lock);
        if (moving) {
            /* nothing: released or resumed by the move */
        } else if (idle_ok && idle > (int64_t)s->limits.idle_timeout_s * 1000) {
            format_duration(s->limits.idle_timeout_s, d, sizeof(d));
            snprintf(reason, sizeof(reason), "expired after %s idle", d);
        } else if (age > (int64_t)s->limits.max_lifetime_s * 1000) {
            format_duration(s->limits.max_lifetime_s, d, sizeof(d));
            snprintf(reason, sizeof(reason), "expired: it reached its maximum lifetime of %s", d);
        }
        if (reason[0]) {
            pthread_mutex_lock(&a->table_lock);
            int mine = s->state == KF_SS_READY || s->state == KF_SS_BUSY;
            if (mine)
                s->state = KF_SS_EXPIRED;
            pthread_mutex_unlock(&a->table_lock);
            if (mine) {
                if (kf_sandbox_alive(s))
                    kill(s->pid1, SIGKILL);
                finish_session(a, s, reason);
                kf_info("session %s %s", s->id, reason);
            }
        }
        kf_session_unref(a, s);
    }
    free(all);
}
