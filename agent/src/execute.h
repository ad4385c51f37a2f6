/* execute.h - one execution in a session's kernel: time limit, interrupt
 * and restart, OOM detection, the output cap, and the translation of
 * kernel outputs into kfleet.v1.ExecuteEvent messages for a sink. */
#ifndef KF_AGENT_EXECUTE_H
#define KF_AGENT_EXECUTE_H

#include "kfleet/v1/sessions.pb-c.h"
#include "session.h"

typedef struct kf_exec_sink {
    /* Delivers one event; returns 0, or a negative errno when the client is
     * gone (the execution is then interrupted). */
    int (*emit)(void *ud, const Kfleet__V1__ExecuteEvent *ev);
    /* Non-blocking: has the client gone away? */
    int (*cancelled)(void *ud);
    void *ud;
} kf_exec_sink;

/* kf_exec_run - run `code` in session s and stream its outputs to sink,
 * ending with an ExecuteResult event. Blocks until the execution finished,
 * timed out (interrupt, grace, then restart), or the kernel died.
 * Returns 0 once a result was emitted (whatever the code's own outcome), or
 * a negative errno with err set when the execution could not start:
 * INVALID_ARGUMENT (size, UTF-8), ABORTED (another execution is running),
 * FAILED_PRECONDITION (session being deleted), UNAVAILABLE. */
int kf_exec_run(kf_agent *a, kf_session *s, const char *code, size_t len, uint32_t timeout_ms,
                const kf_exec_sink *sink, kf_error *err);

#endif
