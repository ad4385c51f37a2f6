/* execute.c - see execute.h. Runs on the Execute handler's thread, which
 * holds the session lock for the whole execution. */
#include "execute.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "metrics.h"

#define STEP_MS 100 /* how often a waiting execution looks at its client */

typedef struct exec_ctx {
    const kf_exec_sink *sink;
    uint64_t max_bytes;
    uint64_t bytes;
    int truncated;
    int quiet;     /* drop everything (client gone) */
    int sink_failed;
} exec_ctx;

/* Text fields of a protobuf message must be UTF-8: replace bad bytes. */
static char *utf8_copy(const char *s, size_t len) {
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    memcpy(out, s, len);
    out[len] = '\0';
    if (!kf_utf8_valid(out, len)) {
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)out[i] >= 0x80)
                out[i] = '?';
    }
    return out;
}

static int emit(exec_ctx *x, const Kfleet__V1__ExecuteEvent *ev) {
    if (x->quiet || x->sink_failed)
        return 0;
    int r = x->sink->emit(x->sink->ud, ev);
    if (r < 0) {
        x->sink_failed = 1;
        return r;
    }
    return 0;
}

static int emit_notice(exec_ctx *x, const char *text) {
    Kfleet__V1__ExecuteEvent ev = KFLEET__V1__EXECUTE_EVENT__INIT;
    ev.event_case = KFLEET__V1__EXECUTE_EVENT__EVENT_NOTICE;
    ev.notice = (char *)text;
    return emit(x, &ev);
}

static size_t event_bytes(const kf_kernel_event *ev) {
    size_t n = ev->text_len;
    for (size_t i = 0; i < ev->n_items; i++)
        n += ev->items[i].len;
    if (ev->ename)
        n += strlen(ev->ename);
    if (ev->evalue)
        n += strlen(ev->evalue);
    for (size_t i = 0; i < ev->n_traceback; i++)
        n += strlen(ev->traceback[i]);
    return n;
}

static int on_event(void *ud, const kf_kernel_event *ev) {
    exec_ctx *x = ud;
    if (x->quiet || x->sink_failed)
        return 0;
    size_t n = event_bytes(ev);
    if (x->truncated)
        return 0;
    if (x->bytes + n > x->max_bytes) {
        x->truncated = 1;
        char msg[128];
        snprintf(msg, sizeof(msg), "output truncated: this execution produced more than %llu bytes",
                 (unsigned long long)x->max_bytes);
        return emit_notice(x, msg);
    }
    x->bytes += n;

    Kfleet__V1__ExecuteEvent out = KFLEET__V1__EXECUTE_EVENT__INIT;
    int r = 0;
    switch (ev->kind) {
    case KF_KEV_STREAM: {
        Kfleet__V1__StreamOutput so = KFLEET__V1__STREAM_OUTPUT__INIT;
        so.name = ev->stream_is_stderr ? KFLEET__V1__STREAM_NAME__STREAM_NAME_STDERR
                                       : KFLEET__V1__STREAM_NAME__STREAM_NAME_STDOUT;
        so.text = utf8_copy(ev->text, ev->text_len);
        if (!so.text)
            return -ENOMEM;
        out.event_case = KFLEET__V1__EXECUTE_EVENT__EVENT_STREAM;
        out.stream = &so;
        r = emit(x, &out);
        free(so.text);
        return r;
    }
    case KF_KEV_DISPLAY:
    case KF_KEV_RESULT: {
        Kfleet__V1__DisplayData dd = KFLEET__V1__DISPLAY_DATA__INIT;
        Kfleet__V1__MimeItem *items = calloc(ev->n_items ? ev->n_items : 1, sizeof(*items));
        Kfleet__V1__MimeItem **ptrs = calloc(ev->n_items ? ev->n_items : 1, sizeof(*ptrs));
        if (!items || !ptrs) {
            free(items);
            free(ptrs);
            return -ENOMEM;
        }
        for (size_t i = 0; i < ev->n_items; i++) {
            kfleet__v1__mime_item__init(&items[i]);
            items[i].mime_type = (char *)ev->items[i].mime_type;
            items[i].data.data = (uint8_t *)ev->items[i].data;
            items[i].data.len = ev->items[i].len;
            ptrs[i] = &items[i];
        }
        dd.n_items = ev->n_items;
        dd.items = ptrs;
        dd.is_result = ev->kind == KF_KEV_RESULT;
        dd.execution_count = ev->execution_count > 0 ? (uint32_t)ev->execution_count : 0;
        out.event_case = KFLEET__V1__EXECUTE_EVENT__EVENT_DISPLAY;
        out.display = &dd;
        r = emit(x, &out);
        free(items);
        free(ptrs);
        return r;
    }
    case KF_KEV_ERROR: {
        Kfleet__V1__ErrorOutput eo = KFLEET__V1__ERROR_OUTPUT__INIT;
        eo.ename = utf8_copy(ev->ename ? ev->ename : "", ev->ename ? strlen(ev->ename) : 0);
        eo.evalue = utf8_copy(ev->evalue ? ev->evalue : "", ev->evalue ? strlen(ev->evalue) : 0);
        char **tb = calloc(ev->n_traceback ? ev->n_traceback : 1, sizeof(char *));
        for (size_t i = 0; tb && i < ev->n_traceback; i++)
            tb[i] = utf8_copy(ev->traceback[i], strlen(ev->traceback[i]));
        eo.n_traceback = tb ? ev->n_traceback : 0;
        eo.traceback = tb;
        out.event_case = KFLEET__V1__EXECUTE_EVENT__EVENT_ERROR;
        out.error = &eo;
        r = emit(x, &out);
        for (size_t i = 0; tb && i < ev->n_traceback; i++)
            free(tb[i]);
        free(tb);
        free(eo.ename);
        free(eo.evalue);
        return r;
    }
    }
    return 0;
}

static void set_state(kf_agent *a, kf_session *s, kf_session_state from, kf_session_state to) {
    pthread_mutex_lock(&a->table_lock);
    if (s->state == from)
        s->state = to;
    pthread_mutex_unlock(&a->table_lock);
}

static int session_state(kf_agent *a, kf_session *s) {
    pthread_mutex_lock(&a->table_lock);
    int st = s->state;
    pthread_mutex_unlock(&a->table_lock);
    return st;
}

static uint64_t oom_count(kf_session *s) {
    char cg[64];
    uint64_t n = 0;
    snprintf(cg, sizeof(cg), "kfleet/%s", s->sbid);
    kf_cgroup_oom_kills(cg, &n);
    return n;
}

/* Waits for the current execution until `until` (monotonic ms). Returns 0
 * done, -ETIMEDOUT, -ECHILD (kernel died), -ECANCELED (client gone). */
static int wait_until(kf_session *s, exec_ctx *x, int64_t until, kf_exec_outcome *oc, kf_error *err) {
    for (;;) {
        int64_t now = kf_mono_ms();
        if (now >= until)
            return -ETIMEDOUT;
        int64_t step = now + STEP_MS < until ? now + STEP_MS : until;
        int r = kf_kernel_exec_wait(s->conn, step, s->kernel_pidfd, on_event, x, oc, err);
        if (r == -ETIMEDOUT) {
            if (!x->quiet && x->sink->cancelled(x->sink->ud))
                return -ECANCELED;
            continue;
        }
        if (r < 0 && x->sink_failed)
            return -ECANCELED;
        return r;
    }
}

static int emit_result(exec_ctx *x, Kfleet__V1__ExecStatus st, kf_session *s, int64_t t0,
                       int restarted, const char *message) {
    Kfleet__V1__ExecuteResult res = KFLEET__V1__EXECUTE_RESULT__INIT;
    res.status = st;
    res.execution_count = s->exec_count;
    res.duration_ms = (uint64_t)(kf_mono_ms() - t0);
    res.output_truncated = x->truncated;
    res.kernel_restarted = restarted;
    res.message = (char *)(message ? message : "");
    Kfleet__V1__ExecuteEvent ev = KFLEET__V1__EXECUTE_EVENT__INIT;
    ev.event_case = KFLEET__V1__EXECUTE_EVENT__EVENT_RESULT;
    ev.result = &res;
    x->quiet = 0;
    return emit(x, &ev);
}

int kf_exec_run(kf_agent *a, kf_session *s, const char *code, size_t len, uint32_t timeout_ms,
                const kf_exec_sink *sink, kf_error *err) {
    if (len > a->cfg.max_code_bytes)
        return kf_error_set(err, -E2BIG, KF_ST_INVALID_ARGUMENT,
                            "code is %zu bytes; the limit is %u bytes", len, a->cfg.max_code_bytes);
    if (!kf_utf8_valid(code, len) || memchr(code, '\0', len))
        return kf_error_set(err, -EILSEQ, KF_ST_INVALID_ARGUMENT,
                            "code is not valid UTF-8 text (or contains NUL bytes)");
    if (timeout_ms == 0)
        timeout_ms = s->limits.exec_timeout_ms;
    if (timeout_ms > a->cfg.max.exec_timeout_ms)
        timeout_ms = a->cfg.max.exec_timeout_ms;

    if (pthread_mutex_trylock(&s->lock) != 0)
        return kf_error_set(err, -EBUSY, KF_ST_ABORTED,
                            "session %s is busy: another execution (or a restart) is in progress; "
                            "one execution runs at a time per session", s->id);
    pthread_mutex_lock(&a->table_lock);
    kf_session_state st = s->state;
    if (st == KF_SS_READY)
        s->state = KF_SS_BUSY;
    s->last_active_ms = kf_unix_ms();
    pthread_mutex_unlock(&a->table_lock);
    if (st != KF_SS_READY) {
        pthread_mutex_unlock(&s->lock);
        return kf_error_set(err, -ESTALE, KF_ST_FAILED_PRECONDITION, "session %s is %s", s->id,
                            kf_session_state_name(st));
    }

    exec_ctx x = {.sink = sink, .max_bytes = a->cfg.max_output_bytes};
    int64_t t0 = kf_mono_ms(), t0_us = kf_mono_us();
    int r = 0;
    if (s->notice[0]) {
        emit_notice(&x, s->notice);
        s->notice[0] = '\0';
        kf_store_save(a, s); /* once: not again after an agent restart */
    }
    /* A kernel that died while idle is restarted before we run anything. */
    if (!s->conn || kf_sandbox_alive(s) == 0 || s->kernel_pid <= 0 ||
        kf_proc_start_time(s->kernel_pid) == 0) {
        kf_error e2 = {0};
        if (kf_op_restart(a, s, "kernel found dead before execution", &e2) < 0) {
            set_state(a, s, KF_SS_BUSY, KF_SS_READY);
            pthread_mutex_unlock(&s->lock);
            return kf_error_set(err, -EIO, KF_ST_UNAVAILABLE, "session %s: %s", s->id, e2.msg);
        }
        emit_notice(&x, "the kernel had stopped since the previous execution and was restarted; "
                        "in-memory state was lost, files are kept");
    }

    uint64_t oom_before = oom_count(s);
    r = kf_kernel_exec_start(s->conn, code, len, err);
    if (r < 0) {
        set_state(a, s, KF_SS_BUSY, KF_SS_READY);
        pthread_mutex_unlock(&s->lock);
        return kf_error_wrap(err, "session %s", s->id);
    }
    s->exec_count++;

    kf_exec_outcome oc = {0};
    kf_error werr = {0};
    int64_t deadline = t0 + timeout_ms;
    r = wait_until(s, &x, deadline, &oc, &werr);
    Kfleet__V1__ExecStatus status = KFLEET__V1__EXEC_STATUS__EXEC_STATUS_OK;
    int restarted = 0;
    uint64_t oom_kills = 0; /* for the metrics: read where the outcome needs it anyway */
    char msg[256] = "";

    if (r == -ETIMEDOUT || r == -ECANCELED) {
        int timed_out = r == -ETIMEDOUT;
        if (!timed_out)
            x.quiet = 1; /* nobody to tell; just get the kernel back */
        kill(s->pid1, SIGUSR2); /* PID 1 sends SIGINT to the kernel */
        r = wait_until(s, &x, kf_mono_ms() + a->cfg.exec_grace_ms, &oc, &werr);
        if (r != 0) {
            kf_error e2 = {0};
            restarted = 1;
            if (kf_op_restart(a, s, timed_out ? "execution timeout" : "client went away", &e2) < 0)
                kf_warn("session %s: %s", s->id, e2.msg);
        }
        if (timed_out) {
            status = KFLEET__V1__EXEC_STATUS__EXEC_STATUS_TIMEOUT;
            snprintf(msg, sizeof(msg), "execution exceeded its %.1f s limit; %s", timeout_ms / 1000.0,
                     restarted ? "the kernel did not stop on interrupt and was restarted (memory state, /tmp and /home/sandbox lost)"
                               : "the kernel was interrupted (state kept)");
        } else {
            status = KFLEET__V1__EXEC_STATUS__EXEC_STATUS_INTERRUPTED;
        }
    } else if (r == -ECHILD) {
        restarted = 1;
        kf_session_state now = session_state(a, s);
        int moving = now == KF_SS_EXPORTED; /* a forced export killed it */
        int deleting = now == KF_SS_DELETING || now == KF_SS_EXPIRED || moving;
        uint64_t oom_after = oom_count(s);
        oom_kills = oom_after > oom_before ? oom_after - oom_before : 0;
        if (oom_kills) {
            status = KFLEET__V1__EXEC_STATUS__EXEC_STATUS_OUT_OF_MEMORY;
            snprintf(msg, sizeof(msg),
                     "out of memory: the kernel was killed at the session's %llu MiB limit and "
                     "restarted (memory state, /tmp and /home/sandbox lost; /mnt/data kept)",
                     (unsigned long long)(s->limits.memory_bytes >> 20));
        } else {
            status = KFLEET__V1__EXEC_STATUS__EXEC_STATUS_KERNEL_DIED;
            snprintf(msg, sizeof(msg),
                     moving     ? "the execution was stopped: the session is being moved to another node"
                     : deleting ? "the session was deleted during the execution"
                                : "the kernel died and was restarted (memory state, "
                                  "/tmp and /home/sandbox lost; /mnt/data kept)");
        }
        if (!deleting) {
            kf_error e2 = {0};
            if (kf_op_restart(a, s, "kernel died", &e2) < 0)
                kf_warn("session %s: %s", s->id, e2.msg);
        } else {
            restarted = 0;
        }
    } else if (r < 0) {
        status = KFLEET__V1__EXEC_STATUS__EXEC_STATUS_KERNEL_DIED;
        snprintf(msg, sizeof(msg), "lost contact with the kernel: %.200s", werr.msg);
    } else {
        status = oc.status == KF_EXEC_REPLY_OK      ? KFLEET__V1__EXEC_STATUS__EXEC_STATUS_OK
                 : oc.status == KF_EXEC_REPLY_ERROR ? KFLEET__V1__EXEC_STATUS__EXEC_STATUS_ERROR
                                                    : KFLEET__V1__EXEC_STATUS__EXEC_STATUS_INTERRUPTED;
        uint64_t oom_after = oom_count(s);
        oom_kills = oom_after > oom_before ? oom_after - oom_before : 0;
        if (oom_kills)
            snprintf(msg, sizeof(msg), "a process in the session was killed: out of memory");
    }
    if (!x.sink_failed)
        emit_result(&x, status, s, t0, restarted, msg);
    kf_agent_metrics_execute(a->metrics, status, t0_us, oom_kills);

    pthread_mutex_lock(&a->table_lock);
    s->last_active_ms = kf_unix_ms();
    if (s->state == KF_SS_BUSY)
        s->state = KF_SS_READY;
    pthread_mutex_unlock(&a->table_lock);
    pthread_mutex_unlock(&s->lock);
    return 0;
}
