/* service_sessions.c - kfleet.v1.Sessions: session lifecycle and
 * execution handlers, and the method table (both services). */
#include "service.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
#include "execute.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "kf/log.h"
#include "kf/util.h"
#include "request_ids.h"

#define PB_FREE(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

static Kfleet__V1__SessionState pb_state(kf_session_state st) {
    switch (st) {
    case KF_SS_STARTING:
    case KF_SS_POOLED: return KFLEET__V1__SESSION_STATE__SESSION_STATE_STARTING;
    case KF_SS_READY: return KFLEET__V1__SESSION_STATE__SESSION_STATE_READY;
    case KF_SS_BUSY: return KFLEET__V1__SESSION_STATE__SESSION_STATE_BUSY;
    case KF_SS_RESTARTING: return KFLEET__V1__SESSION_STATE__SESSION_STATE_RESTARTING;
    case KF_SS_DELETING: return KFLEET__V1__SESSION_STATE__SESSION_STATE_DELETING;
    case KF_SS_EXPIRED: return KFLEET__V1__SESSION_STATE__SESSION_STATE_EXPIRED;
    case KF_SS_EXPORTED: break; /* never shown: lookups answer UNAVAILABLE, lists skip it */
    }
    return KFLEET__V1__SESSION_STATE__SESSION_STATE_UNSPECIFIED;
}

void kf_svc_limits_to_pb(const kf_limits *l, Kfleet__V1__Limits *pb) {
    kfleet__v1__limits__init(pb);
    pb->memory_bytes = l->memory_bytes;
    pb->cpu_millis = l->cpu_millis;
    pb->pids = l->pids;
    pb->exec_timeout_ms = l->exec_timeout_ms;
    pb->disk_bytes = l->disk_bytes;
    pb->disk_inodes = l->disk_inodes;
    pb->idle_timeout_s = l->idle_timeout_s;
    pb->max_lifetime_s = l->max_lifetime_s;
}

void kf_svc_session_to_pb(kf_agent *a, kf_session *s, Kfleet__V1__Session *pb, Kfleet__V1__Limits *lim) {
    kfleet__v1__session__init(pb);
    kf_svc_limits_to_pb(&s->limits, lim);
    pb->id = s->id;
    pb->limits = lim;
    pb->node = a->cfg.node_name;
    pthread_mutex_lock(&a->table_lock);
    pb->state = pb_state(s->state);
    pb->last_active_unix_ms = s->last_active_ms;
    pthread_mutex_unlock(&a->table_lock);
    pb->created_unix_ms = s->created_ms;
    pb->execution_count = s->exec_count;
    pb->kernel_restarts = s->kernel_restarts;
    pb->from_warm_pool = s->from_pool;
    char cg[64];
    snprintf(cg, sizeof(cg), "kfleet/%s", s->sbid);
    uint64_t mem = 0;
    if (kf_cgroup_memory_current(cg, &mem) == 0)
        pb->memory_used_bytes = mem;
}

void kf_svc_limits_from_pb(const Kfleet__V1__Limits *pb, kf_limits *out) {
    memset(out, 0, sizeof(*out));
    if (!pb)
        return;
    out->memory_bytes = pb->memory_bytes;
    out->cpu_millis = pb->cpu_millis;
    out->pids = pb->pids;
    out->exec_timeout_ms = pb->exec_timeout_ms;
    out->disk_bytes = pb->disk_bytes;
    out->disk_inodes = pb->disk_inodes;
    out->idle_timeout_s = pb->idle_timeout_s;
    out->max_lifetime_s = pb->max_lifetime_s;
}

static void svc_create(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    Kfleet__V1__CreateSessionRequest *req =
        (void *)kf_call_recv(c, &kfleet__v1__create_session_request__descriptor, &eof);
    if (!req) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed CreateSessionRequest");
        return;
    }
    kf_limits want;
    kf_svc_limits_from_pb(req->limits, &want);
    kf_error err = {0};
    kf_session *s = NULL;
    int r;
    if (req->request_id && req->request_id[0]) {
        /* The public API has no tenants here: one scope for every client. */
        int64_t dl = kf_call_deadline_ms(c), cap = kf_mono_ms() + KF_AGENT_REQUEST_WAIT_MS;
        r = kf_requests_create(a->requests, a, NULL, req, &want, dl < cap ? dl : cap, &s, &err);
    } else {
        r = kf_op_create(a, NULL, NULL, &want, &s, &err);
    }
    PB_FREE(req);
    kf_svc_reply_created(c, a, r, s, &err);
}

void kf_svc_reply_created(kf_call *c, kf_agent *a, int r, kf_session *s, const kf_error *err) {
    if (r < 0) {
        kf_call_fail(c, err);
        return;
    }
    Kfleet__V1__Session pb;
    Kfleet__V1__Limits lim;
    kf_svc_session_to_pb(a, s, &pb, &lim);
    kf_call_reply(c, &pb.base);
    kf_session_unref(a, s);
}

static char *recv_session_id(kf_call *c, const ProtobufCMessageDescriptor *d, ProtobufCMessage **msg) {
    int eof;
    *msg = kf_call_recv(c, d, &eof);
    if (!*msg) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed request");
        return NULL;
    }
    /* every request with a session starts with `string session_id = 1` */
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
    return *(char **)((char *)*msg + f->offset);
}

static kf_session *lookup_or_fail(kf_call *c, kf_agent *a, const char *id) {
    kf_error err = {0};
    kf_session *s = kf_agent_lookup(a, id, &err);
    if (!s)
        kf_call_fail(c, &err);
    return s;
}

/* Receives a request that starts with the session id and looks the session
 * up; NULL once the call was failed with the reason. */
static kf_session *recv_session(kf_call *c, kf_agent *a, const ProtobufCMessageDescriptor *d) {
    ProtobufCMessage *m;
    char *id = recv_session_id(c, d, &m);
    if (!id)
        return NULL;
    kf_session *s = lookup_or_fail(c, a, id);
    PB_FREE(m);
    return s;
}

static void svc_get(kf_call *c, void *ud) {
    kf_agent *a = ud;
    kf_session *s = recv_session(c, a, &kfleet__v1__get_session_request__descriptor);
    if (!s)
        return;
    Kfleet__V1__Session pb;
    Kfleet__V1__Limits lim;
    kf_svc_session_to_pb(a, s, &pb, &lim);
    kf_call_reply(c, &pb.base);
    kf_session_unref(a, s);
}

static void svc_list(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    ProtobufCMessage *m = kf_call_recv(c, &kfleet__v1__list_sessions_request__descriptor, &eof);
    if (!m) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed ListSessionsRequest");
        return;
    }
    PB_FREE(m);
    kf_session **all;
    size_t n;
    if (kf_agent_list(a, &all, &n) < 0) {
        kf_call_finish(c, KF_ST_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    Kfleet__V1__Session *pbs = calloc(n ? n : 1, sizeof(*pbs));
    Kfleet__V1__Limits *lims = calloc(n ? n : 1, sizeof(*lims));
    Kfleet__V1__Session **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (pbs && lims && ptrs) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            /* a session being moved answers nothing here until it lands */
            pthread_mutex_lock(&a->table_lock);
            int moving = all[i]->state == KF_SS_EXPORTED;
            pthread_mutex_unlock(&a->table_lock);
            if (moving)
                continue;
            kf_svc_session_to_pb(a, all[i], &pbs[k], &lims[k]);
            ptrs[k] = &pbs[k];
            k++;
        }
        Kfleet__V1__ListSessionsResponse resp = KFLEET__V1__LIST_SESSIONS_RESPONSE__INIT;
        resp.n_sessions = k;
        resp.sessions = ptrs;
        kf_call_reply(c, &resp.base);
    } else {
        kf_call_finish(c, KF_ST_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        kf_session_unref(a, all[i]);
    free(all);
    free(pbs);
    free(lims);
    free(ptrs);
}

static void svc_delete(kf_call *c, void *ud) {
    kf_agent *a = ud;
    ProtobufCMessage *m;
    char *id = recv_session_id(c, &kfleet__v1__delete_session_request__descriptor, &m);
    if (!id)
        return;
    kf_error err = {0};
    int r = kf_op_delete(a, id, &err);
    PB_FREE(m);
    if (r < 0) {
        kf_call_fail(c, &err);
        return;
    }
    Kfleet__V1__DeleteSessionResponse resp = KFLEET__V1__DELETE_SESSION_RESPONSE__INIT;
    kf_call_reply(c, &resp.base);
}

static int sink_emit(void *ud, const Kfleet__V1__ExecuteEvent *ev) {
    return kf_call_send(ud, &ev->base);
}

static int sink_cancelled(void *ud) { return kf_call_cancelled(ud); }

static void svc_execute(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    Kfleet__V1__ExecuteRequest *req = (void *)kf_call_recv(c, &kfleet__v1__execute_request__descriptor, &eof);
    if (!req) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed ExecuteRequest");
        return;
    }
    kf_session *s = lookup_or_fail(c, a, req->session_id);
    if (!s) {
        PB_FREE(req);
        return;
    }
    kf_exec_sink sink = {.emit = sink_emit, .cancelled = sink_cancelled, .ud = c};
    kf_error err = {0};
    int r = kf_exec_run(a, s, req->code, strlen(req->code), req->timeout_ms, &sink, &err);
    PB_FREE(req);
    kf_session_unref(a, s);
    if (r < 0)
        kf_call_fail(c, &err);
    else
        kf_call_finish(c, KF_ST_OK, "");
}

static void svc_interrupt(kf_call *c, void *ud) {
    kf_agent *a = ud;
    kf_session *s = recv_session(c, a, &kfleet__v1__interrupt_request__descriptor);
    if (!s)
        return;
    kf_error err = {0};
    if (kf_op_interrupt(a, s, &err) < 0) {
        kf_call_fail(c, &err);
    } else {
        Kfleet__V1__InterruptResponse resp = KFLEET__V1__INTERRUPT_RESPONSE__INIT;
        kf_call_reply(c, &resp.base);
    }
    kf_session_unref(a, s);
}

static void svc_restart(kf_call *c, void *ud) {
    kf_agent *a = ud;
    kf_session *s = recv_session(c, a, &kfleet__v1__restart_kernel_request__descriptor);
    if (!s)
        return;
    kf_error err = {0};
    if (pthread_mutex_trylock(&s->lock) != 0) {
        /* An execution holds the kernel: interrupt it, then wait our turn. */
        kill(s->pid1, SIGUSR2);
        pthread_mutex_lock(&s->lock);
    }
    int r = kf_op_restart(a, s, "requested by the client", &err);
    pthread_mutex_unlock(&s->lock);
    if (r < 0) {
        kf_call_fail(c, &err);
    } else {
        Kfleet__V1__RestartKernelResponse resp = KFLEET__V1__RESTART_KERNEL_RESPONSE__INIT;
        kf_call_reply(c, &resp.base);
    }
    kf_session_unref(a, s);
}

const kf_method *kf_service_methods(kf_agent *a, size_t *n) {
    static kf_method m[] = {
        {"/kfleet.v1.Sessions/CreateSession", svc_create, NULL},
        {"/kfleet.v1.Sessions/GetSession", svc_get, NULL},
        {"/kfleet.v1.Sessions/ListSessions", svc_list, NULL},
        {"/kfleet.v1.Sessions/DeleteSession", svc_delete, NULL},
        {"/kfleet.v1.Sessions/Execute", svc_execute, NULL},
        {"/kfleet.v1.Sessions/Interrupt", svc_interrupt, NULL},
        {"/kfleet.v1.Sessions/RestartKernel", svc_restart, NULL},
        {"/kfleet.v1.Sessions/UploadFile", kf_svc_upload, NULL},
        {"/kfleet.v1.Sessions/DownloadFile", kf_svc_download, NULL},
        {"/kfleet.v1.Sessions/ListFiles", kf_svc_list_files, NULL},
        {"/kfleet.v1.Sessions/DeleteFile", kf_svc_delete_file, NULL},
        {"/kfleet.v1.Agent/StartSession", kf_svc_start_session, NULL},
        {"/kfleet.v1.Agent/GetNodeStats", kf_svc_node_stats, NULL},
        {"/kfleet.v1.Agent/ExportSession", kf_svc_export_session, NULL},
        {"/kfleet.v1.Agent/ImportSession", kf_svc_import_session, NULL},
        {"/kfleet.v1.Agent/ReleaseSession", kf_svc_release_session, NULL},
        {"/kfleet.v1.Agent/ResumeSession", kf_svc_resume_session, NULL},
    };
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        m[i].userdata = a;
    *n = sizeof(m) / sizeof(m[0]);
    return m;
}
