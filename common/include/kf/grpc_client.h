/* grpc_client.h - a small blocking gRPC client over gRPC core's C API, for
 * kfleetctl and anything else in kfleet that calls a kfleet service.
 *
 * One kf_grpc_client owns one channel (a target such as
 * "unix:/run/kfleet/agent.sock" or "host:port", insecure or TLS) and the
 * optional bearer token sent as `authorization: Bearer <token>` on every
 * call. Each call gets its own pluck completion queue and is driven to
 * completion by the calling thread: nothing runs in the background, every
 * function here blocks until the operation it starts has completed. There
 * is never more than one batch outstanding on a call, so a call never needs
 * more than one thread; different calls may run on different threads over
 * the same client.
 *
 * Errors: functions return 0 (or 1, see kf_grpc_stream_next) on success and
 * a negative errno on failure; every failure also fills the caller's
 * kf_rpc_status with a gRPC status code and a message, so the caller can
 * print "NOT_FOUND: session s-1 not found" without knowing where the
 * failure came from. Failures that happen locally (bad options, malformed
 * response) are reported with a local status (INVALID_ARGUMENT, INTERNAL)
 * and a message saying so. The codes returned:
 *   -EPROTO   the call ended with a non-OK status from the server or the
 *             transport (UNAVAILABLE when it could not connect,
 *             DEADLINE_EXCEEDED, ...): st->code / st->message say which;
 *   -EBADMSG  the server answered OK but a message did not decode as the
 *             expected type (st->code = INTERNAL);
 *   -EINVAL   bad arguments or options; -ENOMEM; -EIO for a gRPC core
 *             failure that is a bug in this file.
 */
#ifndef KF_GRPC_CLIENT_H
#define KF_GRPC_CLIENT_H

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kf/error.h"

#define KF_RPC_STATUS_MSG_MAX 512

/* The outcome of a call as the server (or the transport) reported it. */
typedef struct kf_rpc_status {
    grpc_status_code code;
    char message[KF_RPC_STATUS_MSG_MAX]; /* NUL-terminated, maybe truncated */
} kf_rpc_status;

typedef struct kf_grpc_client_opts {
    /* gRPC target: "unix:/path", "unix-abstract:name", "host:port",
     * "dns:///host:port". Required. */
    const char *target;
    /* Bearer token sent on every call; NULL or "" = none. Must be printable
     * ASCII (it becomes a header value). */
    const char *token;
    /* TLS. Off unless `tls` is set or any of the file paths is given.
     * ca_file: PEM roots to trust (NULL = gRPC's defaults);
     * cert_file + key_file: client certificate for mTLS (both or neither).
     * The files are read once, at kf_grpc_client_new. */
    bool tls;
    const char *tls_ca_file;
    const char *tls_cert_file;
    const char *tls_key_file;
    /* Overrides the name checked against the server certificate
     * (GRPC_SSL_TARGET_NAME_OVERRIDE_ARG); NULL = the host in target. */
    const char *tls_server_name;
    /* Prepended to gRPC's user agent, e.g. "kfleetctl/0.1.0"; may be NULL. */
    const char *user_agent;
} kf_grpc_client_opts;

typedef struct kf_grpc_client kf_grpc_client;
/* One call in progress: a server stream or a client stream. */
typedef struct kf_grpc_call kf_grpc_call;

/* kf_grpc_client_new - create a client for opts->target. Does not connect:
 * gRPC connects lazily on the first call, so an unreachable target shows up
 * as UNAVAILABLE from that call. Calls grpc_init() (paired with the
 * grpc_shutdown() in kf_grpc_client_free). On success *out owns the client.
 * On failure returns a negative errno and fills err (may be NULL): -EINVAL
 * for bad options (cert without key, token with a newline), the errno of a
 * TLS file that could not be read. */
int kf_grpc_client_new(const kf_grpc_client_opts *opts, kf_grpc_client **out, kf_error *err);

/* kf_grpc_client_free - destroy the channel. Every call made on the client
 * must have been freed first. NULL-safe; returns NULL. */
kf_grpc_client *kf_grpc_client_free(kf_grpc_client *c);

/* kf_grpc_unary - one request, one response. `method` is the full path,
 * "/kfleet.v1.Sessions/GetSession". Blocks until the response arrives, the
 * call fails, or timeout_ms passes (DEADLINE_EXCEEDED); timeout_ms <= 0 =
 * no deadline. On success returns 0, *resp is a new message of type
 * resp_desc (free with protobuf_c_message_free_unpacked(*resp, NULL)) and
 * st->code is GRPC_STATUS_OK. On failure *resp is NULL and st says why. */
int kf_grpc_unary(kf_grpc_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                  ProtobufCMessage **resp, kf_rpc_status *st);

/* kf_grpc_server_stream_start - start a server-streaming call: sends `req`
 * and half-closes. Blocks until the request is handed to the transport. The
 * messages are read with kf_grpc_stream_next. On success *out owns the call
 * (free with kf_grpc_call_free). On failure (-EPROTO etc.) *out is NULL and
 * st says why. timeout_ms as for kf_grpc_unary; it bounds the whole stream. */
int kf_grpc_server_stream_start(kf_grpc_client *c, const char *method, const ProtobufCMessage *req,
                                const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                                kf_grpc_call **out, kf_rpc_status *st);

/* kf_grpc_stream_next - the next message of a server stream. Blocks until a
 * message arrives or the stream ends. Returns
 *    1  *msg is a new message (caller frees it with
 *       protobuf_c_message_free_unpacked(*msg, NULL));
 *    0  the stream ended with status OK (st->code == GRPC_STATUS_OK);
 *   <0  the stream ended with an error or a message did not decode; st says
 *       which. A malformed message cancels the call.
 * After the end (0 or <0) further calls return the same result again. */
int kf_grpc_stream_next(kf_grpc_call *call, ProtobufCMessage **msg, kf_rpc_status *st);

/* kf_grpc_client_stream_start - start a client-streaming call. Sends only
 * the request headers; messages follow with kf_grpc_stream_send and the
 * response with kf_grpc_stream_close_and_recv. Ownership and failure as for
 * kf_grpc_server_stream_start. */
int kf_grpc_client_stream_start(kf_grpc_client *c, const char *method, int64_t timeout_ms,
                                kf_grpc_call **out, kf_rpc_status *st);

/* kf_grpc_stream_send - send one message on a client stream. Blocks until
 * gRPC has taken the message (this is the flow control: a slow server slows
 * the sender). `msg` stays the caller's. Returns 0; or, when the call has
 * already failed (the server answered early with an error, the deadline
 * passed), a negative errno with the call's final status in st -- stop
 * sending then, the call is over. */
int kf_grpc_stream_send(kf_grpc_call *call, const ProtobufCMessage *msg, kf_rpc_status *st);

/* kf_grpc_stream_close_and_recv - half-close a client stream and wait for
 * the single response and the status. Returns and owns as kf_grpc_unary. */
int kf_grpc_stream_close_and_recv(kf_grpc_call *call, const ProtobufCMessageDescriptor *resp_desc,
                                  ProtobufCMessage **resp, kf_rpc_status *st);

/* Raw calls: messages as the bytes gRPC carries (grpc_byte_buffer), for
 * relaying without decoding; one API for every call shape. Returns and
 * statuses as the typed functions above; buffers passed in stay the
 * caller's, buffers handed out are the caller's to destroy
 * (grpc_byte_buffer_destroy).
 *
 * kf_grpc_raw_start - start a call and send `first` (required); `last`
 * half-closes in the same batch (unary and server-streaming methods).
 * `reply` (may be NULL; only with `last`): the same batch also waits for
 * the first response message, *reply (NULL if the call ended without one;
 * kf_grpc_raw_recv then reports the status) - one wake-up fewer. */
int kf_grpc_raw_start(kf_grpc_client *c, const char *method, grpc_byte_buffer *first, bool last,
                      int64_t timeout_ms, kf_grpc_call **out, grpc_byte_buffer **reply,
                      kf_rpc_status *st);
/* kf_grpc_raw_send - one more message (only before the half-close). */
int kf_grpc_raw_send(kf_grpc_call *call, grpc_byte_buffer *msg, kf_rpc_status *st);
/* kf_grpc_raw_close_send - half-close (when raw_start did not). */
int kf_grpc_raw_close_send(kf_grpc_call *call, kf_rpc_status *st);
/* kf_grpc_raw_recv - the next response message: 1 with *msg set, 0 at the
 * end with status OK, < 0 at the end with an error (st says which). */
int kf_grpc_raw_recv(kf_grpc_call *call, grpc_byte_buffer **msg, kf_rpc_status *st);

/* kf_grpc_call_free - release a call. A call that has not finished is
 * cancelled (the server sees CANCELLED). NULL-safe; returns NULL. */
kf_grpc_call *kf_grpc_call_free(kf_grpc_call *call);

/* kf_grpc_status_name - "NOT_FOUND" for GRPC_STATUS_NOT_FOUND; "UNKNOWN"
 * for codes outside the enum. Static storage. */
const char *kf_grpc_status_name(grpc_status_code code);

static inline void kf_grpc_client_freep(kf_grpc_client **c) { kf_grpc_client_free(*c); }
static inline void kf_grpc_call_freep(kf_grpc_call **c) { kf_grpc_call_free(*c); }
static inline void kf_pb_message_freep(void *p) {
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_grpc_client_ __attribute__((cleanup(kf_grpc_client_freep)))
#define _cleanup_grpc_call_ __attribute__((cleanup(kf_grpc_call_freep)))
/* For any `Kfleet__V1__X *` returned by the functions above. */
#define _cleanup_pb_ __attribute__((cleanup(kf_pb_message_freep)))

#endif
