/* kernel_client.h - the agent's side of the Jupyter messaging protocol (5.3)
 * to one ipykernel, over libzmq ipc:// sockets, HMAC-SHA256 signed.
 *
 * A kf_kernel_conn owns the shell, control, iopub (SUB) and hb sockets of one
 * kernel. It is used by one thread at a time (the caller serialises with the
 * session lock; handing a conn between threads under a mutex is the full
 * fence libzmq asks for). All calls block for at most the deadline given.
 * Errors: 0 or negative errno, with a message in *err when err != NULL.
 */
#ifndef KF_KERNEL_CLIENT_H
#define KF_KERNEL_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kf/error.h"

#define KF_KERNEL_KEY_LEN 64 /* hex chars of the HMAC key */

typedef struct kf_kernel_conn kf_kernel_conn;

/* kf_kernel_conn_file_write - write a Jupyter connection file (mode 0400,
 * owned by uid:gid) for transport "ipc" with `ipc_prefix` as "ip" (the path
 * prefix the KERNEL sees, e.g. "/run/kernel/k"), fixed port suffixes, and
 * `key` (KF_KERNEL_KEY_LEN hex chars, NUL-terminated). */
int kf_kernel_conn_file_write(const char *path, const char *ipc_prefix, const char *key, uid_t uid,
                              gid_t gid, kf_error *err);

/* kf_kernel_key_new - a fresh random hex key (out has KF_KERNEL_KEY_LEN+1 bytes). */
int kf_kernel_key_new(char *out);

/* kf_kernel_conn_open - connect to a kernel whose sockets are at
 * `host_ipc_prefix` + "-<port>" on the host (the same sockets the kernel
 * bound as ipc_prefix inside its sandbox). Before connecting, each socket
 * path must exist (waits until deadline_ms, monotonic) and be a socket owned
 * by `expect_uid` (lstat, no symlink followed); pass (uid_t)-1 to skip the
 * owner check. `zmq_ctx` is the agent's shared zmq context. */
int kf_kernel_conn_open(kf_kernel_conn **out, void *zmq_ctx, const char *host_ipc_prefix,
                        const char *key, uid_t expect_uid, int64_t deadline_ms, kf_error *err);

/* kf_kernel_conn_close - close all sockets (linger 0) and free. NULL-safe. */
void kf_kernel_conn_close(kf_kernel_conn *c);

/* kf_kernel_wait_ready - send kernel_info_request until a kernel_info_reply
 * arrives on shell AND a message has arrived on iopub (slow-joiner fix),
 * or until deadline_ms (monotonic) -> -ETIMEDOUT. If watch_fd >= 0 (a pidfd
 * of the kernel process) becomes readable first -> -ECHILD. */
int kf_kernel_wait_ready(kf_kernel_conn *c, int64_t deadline_ms, int watch_fd, kf_error *err);

typedef enum {
    KF_KEV_STREAM = 1,  /* stream: name + text */
    KF_KEV_DISPLAY,     /* display_data: mime items */
    KF_KEV_RESULT,      /* execute_result: mime items + execution_count */
    KF_KEV_ERROR,       /* error: ename, evalue, traceback */
} kf_kernel_event_kind;

typedef struct kf_mime_item {
    const char *mime_type;
    const char *data; /* decoded bytes: base64 already decoded for binary types */
    size_t len;
} kf_mime_item;

typedef struct kf_kernel_event {
    kf_kernel_event_kind kind;
    int stream_is_stderr;   /* KF_KEV_STREAM */
    const char *text;       /* KF_KEV_STREAM (UTF-8) */
    size_t text_len;
    const kf_mime_item *items; /* KF_KEV_DISPLAY / KF_KEV_RESULT */
    size_t n_items;
    int execution_count;    /* KF_KEV_RESULT */
    const char *ename, *evalue; /* KF_KEV_ERROR */
    const char *const *traceback;
    size_t n_traceback;
} kf_kernel_event;

/* Called for each output of the running execution, in order. Pointers are
 * valid only during the call. Return 0 to go on; a negative value makes
 * kf_kernel_exec_wait return that value at once (the execution keeps
 * running in the kernel). */
typedef int (*kf_kernel_event_cb)(void *userdata, const kf_kernel_event *ev);

typedef enum {
    KF_EXEC_REPLY_OK = 1,
    KF_EXEC_REPLY_ERROR,
    KF_EXEC_REPLY_ABORTED,
} kf_exec_reply_status;

typedef struct kf_exec_outcome {
    kf_exec_reply_status status;
    int execution_count;
} kf_exec_outcome;

/* kf_kernel_exec_start - send execute_request for `code` (len bytes; the
 * caller has checked UTF-8). store_history true, allow_stdin false. Remembers
 * the request's msg_id as the "current" execution; outputs of older
 * executions are ignored from then on. */
int kf_kernel_exec_start(kf_kernel_conn *c, const char *code, size_t len, kf_error *err);

/* kf_kernel_exec_wait - deliver the current execution's outputs to cb until
 * both its execute_reply (shell) and its status:idle (iopub) have arrived
 * -> 0 with *out filled. Returns -ETIMEDOUT when deadline_ms (monotonic)
 * passes first (call again to keep waiting, e.g. after an interrupt),
 * -ECHILD if watch_fd (kernel pidfd, or -1) becomes readable, or cb's
 * negative value. Messages with a bad signature are dropped and logged. */
int kf_kernel_exec_wait(kf_kernel_conn *c, int64_t deadline_ms, int watch_fd,
                        kf_kernel_event_cb cb, void *userdata, kf_exec_outcome *out, kf_error *err);

/* kf_kernel_interrupt - send interrupt_request on control; does not wait
 * (the running execution then ends with an error reply). Only for kernels
 * with interrupt_mode "message"; ipykernel's default is a SIGINT to its
 * process group, which is the caller's to send. */
int kf_kernel_interrupt(kf_kernel_conn *c, kf_error *err);

/* kf_kernel_shutdown - send shutdown_request (restart false/true) on
 * control; does not wait. The caller still reaps/kills the process. */
int kf_kernel_shutdown(kf_kernel_conn *c, int restart, kf_error *err);

/* kf_kernel_heartbeat - one echo on hb; 0 when it came back before
 * deadline_ms (monotonic), else -ETIMEDOUT. Blocks up to the deadline. A
 * late echo of an earlier ping is discarded, never mistaken for this one. */
int kf_kernel_heartbeat(kf_kernel_conn *c, int64_t deadline_ms, kf_error *err);

#endif
