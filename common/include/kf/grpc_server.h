/* grpc_server.h - a small blocking-handler server over gRPC core (C API).
 *
 * A pool of worker threads waits on the server's completion queue; the
 * worker that receives a call runs its handler itself on the call's own
 * pluck completion queue, as straight-line blocking code (recv, send, send,
 * finish), and a spare worker is started whenever none is left waiting.
 * The number of calls handled at once is bounded (max_calls); past it a
 * call is refused with RESOURCE_EXHAUSTED.
 *
 * A kf_call belongs to its handler thread: only that thread may use it.
 * Ownership of messages: kf_call_recv returns a message the caller frees
 * with protobuf_c_message_free_unpacked(m, NULL); kf_call_send copies.
 */
#ifndef KF_GRPC_SERVER_H
#define KF_GRPC_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "kf/error.h"

typedef struct kf_server kf_server;
typedef struct kf_call kf_call;

typedef void (*kf_handler_fn)(kf_call *call, void *userdata);

typedef struct kf_method {
    const char *path; /* "/kfleet.v1.Sessions/CreateSession" */
    kf_handler_fn fn;
    void *userdata;
} kf_method;

/* kf_server_new - methods is copied (the strings must outlive the server).
 * Calls gRPC init. */
int kf_server_new(kf_server **out, const kf_method *methods, size_t n, size_t max_calls);

/* kf_server_listen - add a listening address: "unix:/path" or "host:port".
 * Before kf_server_start only. */
int kf_server_listen(kf_server *s, const char *addr, kf_error *err);

/* Server-side TLS for kf_server_listen_tls. Files are PEM, read once at
 * listen time (each at most KF_TLS_FILE_MAX bytes). */
typedef struct kf_server_tls {
    const char *cert_file;      /* certificate chain (required) */
    const char *key_file;       /* its private key (required) */
    /* NULL: no client certificate is asked for. Set: every client must
     * present a certificate that verifies against these roots (mTLS); a
     * client without one fails the handshake. */
    const char *client_ca_file;
} kf_server_tls;

/* kf_server_listen_tls - like kf_server_listen, over TLS (host:port only).
 * -ENOENT/-EACCES/-EFBIG with the file named when a PEM cannot be read,
 * -EINVAL when gRPC rejects the credentials, -EADDRNOTAVAIL when the
 * address cannot be bound (a cert/key mismatch shows up here too). */
int kf_server_listen_tls(kf_server *s, const char *addr, const kf_server_tls *tls, kf_error *err);

/* kf_server_tls_flags_check - the daemons' --tls-cert/--tls-key/
 * --tls-client-ca/--listen-tcp flags ("" = not given) fit together: cert
 * and key go together, a client CA needs them, and they need a TCP
 * listener. -EINVAL naming the flags, else 0. */
int kf_server_tls_flags_check(const char *cert, const char *key, const char *client_ca,
                              const char *listen_tcp, kf_error *err);

/* kf_server_start - start serving (spawns the first workers). */
int kf_server_start(kf_server *s, kf_error *err);

/* kf_server_free - stop accepting, cancel calls in flight, wait for every
 * handler to return, tear everything down. NULL-safe. Blocks. */
void kf_server_free(kf_server *s);

/* Handler-side API. All block the handler thread only. */

/* kf_call_recv - next client message, unpacked as desc. Returns NULL at the
 * end of the client's stream (*eof = 1) or on error/malformed/cancelled
 * input (*eof = 0). */
ProtobufCMessage *kf_call_recv(kf_call *c, const ProtobufCMessageDescriptor *desc, int *eof);

/* kf_call_send - send one message (initial metadata goes with the first).
 * Waits until gRPC has taken it (this is the stream's flow control).
 * Returns 0, or -ECANCELED when the client is gone. */
int kf_call_send(kf_call *c, const ProtobufCMessage *msg);

/* Raw variants, for relaying messages without decoding them: the bytes of
 * one message as gRPC carries them. */

/* kf_call_recv_raw - next client message. Returns 1 with *out a buffer the
 * caller destroys (grpc_byte_buffer_destroy), 0 at the end of the client's
 * stream, or a negative errno (-ECANCELED: the call broke or was
 * cancelled) with *out NULL. Messages over KF_GRPC_MAX_MESSAGE never
 * arrive (gRPC fails the call). */
int kf_call_recv_raw(kf_call *c, grpc_byte_buffer **out);

/* kf_call_send_raw - like kf_call_send; `buf` stays the caller's. */
int kf_call_send_raw(kf_call *c, grpc_byte_buffer *buf);

/* kf_call_finish - send the final status (and message text). Once only. */
int kf_call_finish(kf_call *c, kf_status status, const char *message);

/* kf_call_reply - unary success: send msg then status OK. */
int kf_call_reply(kf_call *c, const ProtobufCMessage *msg);

/* kf_call_fail - finish with the status and message carried by e. */
int kf_call_fail(kf_call *c, const kf_error *e);

/* kf_call_cancelled - non-blocking: 1 if the client cancelled or went away,
 * or the call's deadline passed. */
int kf_call_cancelled(kf_call *c);

/* kf_call_metadata - value of a request metadata key (lowercase), copied
 * into buf (NUL-terminated). Returns 0, -ENOENT, or -ENOSPC. */
int kf_call_metadata(kf_call *c, const char *key, char *buf, size_t size);

/* kf_call_deadline_ms - the call's deadline as kf_mono_ms() time, or
 * INT64_MAX when there is none. */
int64_t kf_call_deadline_ms(kf_call *c);
/* kf_call_status - the status the handler finished the call with (for
 * metrics around a handler): KF_ST_OK while unfinished, KF_ST_CANCELLED if
 * the client was gone before the reply. */
kf_status kf_call_status(kf_call *c);

const char *kf_call_method(kf_call *c);

#endif
