/* grpc_client.c - blocking unary, server-streaming and client-streaming
 * calls over gRPC core's C API. See grpc_client.h for the contracts.
 *
 * Every call has its own pluck completion queue and at most one batch in
 * flight: each function starts a batch and plucks its tag before returning,
 * so when a function returns nothing is pending on the queue and the call
 * can be freed at any time. Whenever a batch fails (ev.success == 0) the real
 * reason is in the call's status, so the failure path always goes and
 * receives the status (finish_call) rather than reporting "batch failed".
 */
#include "kf/grpc_client.h"
#include "kf/cleanup.h"
#include "kf/grpc_codec.h"
#include "kf/log.h"
#include "kf/util.h"

#include <assert.h>
#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kf_grpc_client {
    grpc_channel *channel;
    /* Sent on every call; count 0 when there is no token. */
    grpc_metadata md[1];
    size_t md_count;
};

enum call_kind { CALL_UNARY, CALL_SERVER_STREAM, CALL_CLIENT_STREAM, CALL_RAW };

struct kf_grpc_call {
    enum call_kind kind;
    grpc_completion_queue *cq;
    grpc_call *call;
    const ProtobufCMessageDescriptor *resp_desc;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    bool initial_md_requested; /* a RECV_INITIAL_METADATA has been started */
    bool half_closed;
    bool finished;             /* `final` holds the outcome */
    int final_r;
    kf_rpc_status final;
};

const char *kf_grpc_status_name(grpc_status_code code) {
    static const char *const names[] = {
        [GRPC_STATUS_OK] = "OK",
        [GRPC_STATUS_CANCELLED] = "CANCELLED",
        [GRPC_STATUS_UNKNOWN] = "UNKNOWN",
        [GRPC_STATUS_INVALID_ARGUMENT] = "INVALID_ARGUMENT",
        [GRPC_STATUS_DEADLINE_EXCEEDED] = "DEADLINE_EXCEEDED",
        [GRPC_STATUS_NOT_FOUND] = "NOT_FOUND",
        [GRPC_STATUS_ALREADY_EXISTS] = "ALREADY_EXISTS",
        [GRPC_STATUS_PERMISSION_DENIED] = "PERMISSION_DENIED",
        [GRPC_STATUS_RESOURCE_EXHAUSTED] = "RESOURCE_EXHAUSTED",
        [GRPC_STATUS_FAILED_PRECONDITION] = "FAILED_PRECONDITION",
        [GRPC_STATUS_ABORTED] = "ABORTED",
        [GRPC_STATUS_OUT_OF_RANGE] = "OUT_OF_RANGE",
        [GRPC_STATUS_UNIMPLEMENTED] = "UNIMPLEMENTED",
        [GRPC_STATUS_INTERNAL] = "INTERNAL",
        [GRPC_STATUS_UNAVAILABLE] = "UNAVAILABLE",
        [GRPC_STATUS_DATA_LOSS] = "DATA_LOSS",
        [GRPC_STATUS_UNAUTHENTICATED] = "UNAUTHENTICATED",
    };
    if ((unsigned)code < KF_ARRAY_SIZE(names) && names[code])
        return names[code];
    return "UNKNOWN";
}

static int status_set(kf_rpc_status *st, int r, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int status_set(kf_rpc_status *st, int r, grpc_status_code code, const char *fmt, ...) {
    if (st) {
        st->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->message, sizeof(st->message), fmt, ap);
        va_end(ap);
    }
    return r;
}

static gpr_timespec deadline_after(int64_t timeout_ms) {
    if (timeout_ms <= 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

/* Header values must be printable ASCII (RFC 7230 field-value, no CR/LF). */
static bool header_value_ok(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

static int read_pem(const char *what, const char *path, char **out, kf_error *err) {
    size_t len;
    int r = kf_read_file(path, KF_TLS_FILE_MAX, out, &len);
    if (r < 0)
        return kf_error_set(err, r, 0, "cannot read TLS %s %s: %s", what, path, strerror(-r));
    return 0;
}

static grpc_channel_credentials *make_creds(const kf_grpc_client_opts *o, kf_error *err, int *r) {
    bool tls = o->tls || o->tls_ca_file || o->tls_cert_file || o->tls_key_file;
    *r = 0;
    if (!tls)
        return grpc_insecure_credentials_create();
    if (!o->tls_cert_file != !o->tls_key_file) {
        *r = kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                          "a TLS client certificate needs both a certificate and a key file");
        return NULL;
    }
    _cleanup_free_ char *ca = NULL, *cert = NULL, *key = NULL;
    if (o->tls_ca_file && (*r = read_pem("CA file", o->tls_ca_file, &ca, err)) < 0)
        return NULL;
    if (o->tls_cert_file && (*r = read_pem("certificate", o->tls_cert_file, &cert, err)) < 0)
        return NULL;
    if (o->tls_key_file && (*r = read_pem("key", o->tls_key_file, &key, err)) < 0)
        return NULL;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    /* gRPC copies the PEM strings; ours are freed on return. */
    grpc_channel_credentials *creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    if (key)
        explicit_bzero(key, strlen(key));
    if (!creds)
        *r = kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "TLS credentials were rejected by gRPC");
    return creds;
}

int kf_grpc_client_new(const kf_grpc_client_opts *opts, kf_grpc_client **out, kf_error *err) {
    assert(opts && out);
    *out = NULL;
    if (!opts->target || !*opts->target)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "no server address given");
    if (opts->token && !header_value_ok(opts->token))
        return kf_error_set(
            err, -EINVAL, KF_ST_INVALID_ARGUMENT,
            "the token contains characters not allowed in a header (newline, control or non-ASCII)");

    kf_grpc_client *c = calloc(1, sizeof(*c));
    if (!c)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    grpc_init();

    int r;
    grpc_channel_credentials *creds = make_creds(opts, err, &r);
    if (!creds) {
        kf_grpc_client_free(c);
        return r < 0 ? r : kf_error_set(err, -EIO, 0, "cannot create channel credentials");
    }

    grpc_arg args[4];
    size_t nargs = 0;
    args[nargs++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                               .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                               .value.integer = KF_GRPC_MAX_MESSAGE};
    args[nargs++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                               .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                               .value.integer = KF_GRPC_MAX_MESSAGE};
    if (opts->user_agent)
        args[nargs++] = (grpc_arg){.type = GRPC_ARG_STRING,
                                   .key = GRPC_ARG_PRIMARY_USER_AGENT_STRING,
                                   .value.string = (char *)opts->user_agent};
    if (opts->tls_server_name)
        args[nargs++] = (grpc_arg){.type = GRPC_ARG_STRING,
                                   .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                   .value.string = (char *)opts->tls_server_name};
    grpc_channel_args chargs = {.num_args = nargs, .args = args};
    c->channel = grpc_channel_create(opts->target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (!c->channel) {
        kf_grpc_client_free(c);
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "cannot create a channel to %s",
                            opts->target);
    }

    if (opts->token && *opts->token) {
        size_t n = strlen("Bearer ") + strlen(opts->token) + 1;
        _cleanup_free_ char *v = malloc(n);
        if (!v) {
            kf_grpc_client_free(c);
            return kf_error_set(err, -ENOMEM, 0, "out of memory");
        }
        snprintf(v, n, "Bearer %s", opts->token);
        c->md[0].key = grpc_slice_from_static_string("authorization");
        c->md[0].value = grpc_slice_from_copied_string(v);
        c->md_count = 1;
        explicit_bzero(v, n);
    }
    *out = c;
    return 0;
}

kf_grpc_client *kf_grpc_client_free(kf_grpc_client *c) {
    if (!c)
        return NULL;
    for (size_t i = 0; i < c->md_count; i++) {
        grpc_slice_unref(c->md[i].key);
        grpc_slice_unref(c->md[i].value);
    }
    if (c->channel)
        grpc_channel_destroy(c->channel);
    free(c);
    grpc_shutdown();
    return NULL;
}

/* ---- one call ---------------------------------------------------------- */

/* Runs one batch and waits for it. Returns 1 if it completed successfully,
 * 0 if it completed with success == 0 (the call failed: read its status),
 * -EIO if gRPC refused the batch (a bug here; nothing was started). */
static int run_batch(kf_grpc_call *k, const grpc_op *ops, size_t nops, kf_rpc_status *why) {
    grpc_call_error ce = grpc_call_start_batch(k->call, ops, nops, k, NULL);
    if (ce != GRPC_CALL_OK)
        return status_set(why, -EIO, GRPC_STATUS_INTERNAL, "grpc_call_start_batch failed (error %d)",
                          (int)ce);
    grpc_event ev = grpc_completion_queue_pluck(k->cq, k, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE)
        return status_set(why, -EIO, GRPC_STATUS_INTERNAL, "completion queue returned event type %d",
                          (int)ev.type);
    return ev.success ? 1 : 0;
}

static void copy_details(kf_rpc_status *st, grpc_slice details) {
    size_t n = GRPC_SLICE_LENGTH(details);
    if (n >= sizeof(st->message))
        n = sizeof(st->message) - 1;
    memcpy(st->message, GRPC_SLICE_START_PTR(details), n);
    st->message[n] = '\0';
}

/* Receives the call's status and records it as the call's outcome. Adds
 * RECV_INITIAL_METADATA when nobody asked for it yet (gRPC wants it read
 * before the status can be delivered). Returns 0 for OK, -EPROTO for any
 * other status; st (if non-NULL) gets a copy. */
static int finish_call(kf_grpc_call *k, kf_rpc_status *st) {
    if (k->finished)
        goto out;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!k->initial_md_requested) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &k->initial_md;
        k->initial_md_requested = true;
    }
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[n].data.recv_status_on_client.trailing_metadata = &k->trailing_md;
    ops[n].data.recv_status_on_client.status = &code;
    ops[n].data.recv_status_on_client.status_details = &details;
    ops[n++].data.recv_status_on_client.error_string = &error_string;
    int r = run_batch(k, ops, n, &k->final);
    k->finished = true;
    if (r < 0) {
        k->final_r = r;
        goto out;
    }
    k->final.code = code;
    copy_details(&k->final, details);
    if (code != GRPC_STATUS_OK && !k->final.message[0])
        snprintf(k->final.message, sizeof(k->final.message), "%s",
                 error_string ? error_string : "(no details)");
    if (error_string)
        kf_debug("grpc call ended %s: %s", kf_grpc_status_name(code), error_string);
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    k->final_r = code == GRPC_STATUS_OK ? 0 : -EPROTO;
out:
    if (st)
        *st = k->final;
    return k->final_r;
}

/* Records a local failure `why` as the call's outcome, cancelling the call
 * so the server stops too. Copies the outcome to st; returns r. */
static int fail_call(kf_grpc_call *k, int r, const kf_rpc_status *why, kf_rpc_status *st) {
    if (!k->finished) {
        grpc_call_cancel(k->call, NULL);
        k->finished = true;
        k->final_r = r;
        k->final = *why;
    }
    if (st)
        *st = *why;
    return r;
}

/* A batch failed (success == 0) before any response: the status says why.
 * An OK status there would be a server that ended the call early without
 * an error; report that as UNKNOWN rather than success. */
static int call_failed(kf_grpc_call *k, const char *what, kf_rpc_status *st) {
    int r = finish_call(k, NULL);
    if (r == 0) {
        k->final_r = -EPROTO;
        status_set(&k->final, 0, GRPC_STATUS_UNKNOWN, "the server ended the call %s", what);
    }
    if (st)
        *st = k->final;
    return k->final_r;
}

static int call_new(kf_grpc_client *c, enum call_kind kind, const char *method, int64_t timeout_ms,
                    kf_grpc_call **out, kf_rpc_status *st) {
    assert(c && method && out);
    *out = NULL;
    kf_grpc_call *k = calloc(1, sizeof(*k));
    if (!k)
        return status_set(st, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    k->kind = kind;
    grpc_metadata_array_init(&k->initial_md);
    grpc_metadata_array_init(&k->trailing_md);
    k->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (k->cq) {
        /* The method slice only needs to live through grpc_channel_create_call. */
        grpc_slice m = grpc_slice_from_static_string(method);
        k->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, k->cq, m, NULL,
                                           deadline_after(timeout_ms), NULL);
    }
    if (!k->call) {
        kf_grpc_call_free(k);
        return status_set(st, -EIO, GRPC_STATUS_INTERNAL, "cannot create a call for %s", method);
    }
    *out = k;
    return 0;
}

kf_grpc_call *kf_grpc_call_free(kf_grpc_call *k) {
    if (!k)
        return NULL;
    if (k->call) {
        if (!k->finished)
            grpc_call_cancel(k->call, NULL);
        grpc_call_unref(k->call);
    }
    grpc_metadata_array_destroy(&k->initial_md);
    grpc_metadata_array_destroy(&k->trailing_md);
    if (k->cq) {
        /* No batch is ever left in flight (see the top of the file), so
         * there is nothing to drain. */
        grpc_completion_queue_shutdown(k->cq);
        grpc_completion_queue_destroy(k->cq);
    }
    free(k);
    return NULL;
}

/* Decodes a received buffer (consumed) into *msg. A malformed message
 * ends the call with INTERNAL (a server that sends garbage once will not
 * get better). */
static int decode(kf_grpc_call *k, grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                  ProtobufCMessage **msg, kf_rpc_status *st) {
    size_t len = grpc_byte_buffer_length(bb);
    *msg = kf_pb_from_buffer(bb, desc);
    grpc_byte_buffer_destroy(bb);
    if (*msg)
        return 0;
    kf_rpc_status why;
    status_set(&why, 0, GRPC_STATUS_INTERNAL, "malformed %s from the server (%zu bytes)", desc->name, len);
    return fail_call(k, -EBADMSG, &why, st);
}

int kf_grpc_unary(kf_grpc_client *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                  ProtobufCMessage **resp, kf_rpc_status *st) {
    assert(req && resp_desc && resp);
    *resp = NULL;
    _cleanup_grpc_call_ kf_grpc_call *k = NULL;
    int r = call_new(c, CALL_UNARY, method, timeout_ms, &k, st);
    if (r < 0)
        return r;
    grpc_byte_buffer *send = kf_pb_to_buffer(req);
    if (!send)
        return status_set(st, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    grpc_byte_buffer *recv = NULL;
    grpc_op ops[5];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->md_count;
    ops[0].data.send_initial_metadata.metadata = c->md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &k->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    k->initial_md_requested = true;
    kf_rpc_status why;
    r = run_batch(k, ops, KF_ARRAY_SIZE(ops), &why);
    grpc_byte_buffer_destroy(send);
    if (r < 0) {
        grpc_byte_buffer_destroy(recv);
        return fail_call(k, r, &why, st);
    }
    /* Even on success == 0 the status says what happened. */
    kf_rpc_status fin;
    r = finish_call(k, &fin);
    if (r < 0) {
        grpc_byte_buffer_destroy(recv);
        if (st)
            *st = fin;
        return r;
    }
    if (!recv)
        return status_set(st, -EBADMSG, GRPC_STATUS_INTERNAL, "the server sent no %s", resp_desc->name);
    r = decode(k, recv, resp_desc, resp, st);
    if (r < 0)
        return r;
    if (st)
        *st = fin;
    return 0;
}

/* Starts a call: initial metadata, then `first` (if any) and the
 * half-close (if `close`), in one batch; with `reply` (only with close)
 * the same batch also waits for the first response message (*reply, NULL
 * when the call ended without one: its status is then recorded), which
 * saves a wake-up per call. On success *out owns the call. */
static int start_call(kf_grpc_client *c, enum call_kind kind, const char *method,
                      grpc_byte_buffer *first, bool close, grpc_byte_buffer **reply,
                      int64_t timeout_ms, kf_grpc_call **out, kf_rpc_status *st) {
    _cleanup_grpc_call_ kf_grpc_call *k = NULL;
    int r = call_new(c, kind, method, timeout_ms, &k, st);
    if (r < 0)
        return r;
    grpc_op ops[5];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = c->md_count;
    ops[n++].data.send_initial_metadata.metadata = c->md;
    if (first) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = first;
    }
    if (close)
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    if (reply) {
        assert(close);
        *reply = NULL;
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &k->initial_md;
        ops[n].op = GRPC_OP_RECV_MESSAGE;
        ops[n++].data.recv_message.recv_message = reply;
        k->initial_md_requested = true;
    }
    kf_rpc_status why;
    r = run_batch(k, ops, n, &why);
    k->half_closed = close;
    if (r <= 0 && reply) {
        grpc_byte_buffer_destroy(*reply);
        *reply = NULL;
    }
    if (r < 0)
        return fail_call(k, r, &why, st);
    if (r == 0)
        return call_failed(k, first ? "before reading the request" : "before it started", st);
    if (reply && !*reply)
        finish_call(k, NULL); /* ended without a message: kf_grpc_raw_recv reports how */
    *out = TAKE_PTR(k);
    return 0;
}

int kf_grpc_server_stream_start(kf_grpc_client *c, const char *method, const ProtobufCMessage *req,
                                const ProtobufCMessageDescriptor *resp_desc, int64_t timeout_ms,
                                kf_grpc_call **out, kf_rpc_status *st) {
    assert(req && resp_desc && out);
    *out = NULL;
    grpc_byte_buffer *send = kf_pb_to_buffer(req);
    if (!send)
        return status_set(st, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    int r = start_call(c, CALL_SERVER_STREAM, method, send, true, NULL, timeout_ms, out, st);
    grpc_byte_buffer_destroy(send);
    if (r == 0)
        (*out)->resp_desc = resp_desc;
    return r;
}

/* Receives the next message of a call as bytes: 1 with *bb set, else the
 * end of the call (0 = status OK, < 0 = an error status), as
 * kf_grpc_stream_next. */
static int recv_raw(kf_grpc_call *k, grpc_byte_buffer **bb, kf_rpc_status *st) {
    *bb = NULL;
    if (k->finished) {
        if (st)
            *st = k->final;
        return k->final_r;
    }
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!k->initial_md_requested) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &k->initial_md;
        k->initial_md_requested = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = bb;
    kf_rpc_status why;
    int r = run_batch(k, ops, n, &why);
    if (r < 0) {
        grpc_byte_buffer_destroy(*bb);
        *bb = NULL;
        return fail_call(k, r, &why, st);
    }
    if (r == 0 || !*bb) {
        /* End of stream (NULL message) or failure: the status tells. */
        grpc_byte_buffer_destroy(*bb);
        *bb = NULL;
        return finish_call(k, st);
    }
    return 1;
}

int kf_grpc_stream_next(kf_grpc_call *k, ProtobufCMessage **msg, kf_rpc_status *st) {
    assert(k && msg && k->kind == CALL_SERVER_STREAM && k->resp_desc);
    *msg = NULL;
    grpc_byte_buffer *recv;
    int r = recv_raw(k, &recv, st);
    if (r <= 0)
        return r;
    r = decode(k, recv, k->resp_desc, msg, st);
    return r < 0 ? r : 1;
}

int kf_grpc_client_stream_start(kf_grpc_client *c, const char *method, int64_t timeout_ms,
                                kf_grpc_call **out, kf_rpc_status *st) {
    assert(out);
    *out = NULL;
    return start_call(c, CALL_CLIENT_STREAM, method, NULL, false, NULL, timeout_ms, out, st);
}

/* Sends one message (bytes; they stay the caller's) on a call that has not
 * half-closed. */
static int send_raw(kf_grpc_call *k, grpc_byte_buffer *send, kf_rpc_status *st) {
    if (k->finished) {
        if (st)
            *st = k->final;
        return k->final_r;
    }
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = send;
    kf_rpc_status why;
    int r = run_batch(k, &op, 1, &why);
    if (r < 0)
        return fail_call(k, r, &why, st);
    if (r == 0) /* over: an early error from the server, the deadline */
        return call_failed(k, "before the client finished sending", st);
    return 0;
}

int kf_grpc_stream_send(kf_grpc_call *k, const ProtobufCMessage *msg, kf_rpc_status *st) {
    assert(k && msg && k->kind == CALL_CLIENT_STREAM && !k->half_closed);
    grpc_byte_buffer *send = kf_pb_to_buffer(msg);
    if (!send)
        return status_set(st, -ENOMEM, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    int r = send_raw(k, send, st);
    grpc_byte_buffer_destroy(send);
    return r;
}

/* ---- raw calls (bytes, any shape) -------------------------------------- */

int kf_grpc_raw_start(kf_grpc_client *c, const char *method, grpc_byte_buffer *first, bool last,
                      int64_t timeout_ms, kf_grpc_call **out, grpc_byte_buffer **reply,
                      kf_rpc_status *st) {
    assert(out && first && (last || !reply));
    *out = NULL;
    return start_call(c, CALL_RAW, method, first, last, reply, timeout_ms, out, st);
}

int kf_grpc_raw_send(kf_grpc_call *k, grpc_byte_buffer *msg, kf_rpc_status *st) {
    assert(k && msg && k->kind == CALL_RAW && !k->half_closed);
    return send_raw(k, msg, st);
}

int kf_grpc_raw_close_send(kf_grpc_call *k, kf_rpc_status *st) {
    assert(k && k->kind == CALL_RAW && !k->half_closed);
    if (k->finished) {
        if (st)
            *st = k->final;
        return k->final_r;
    }
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    kf_rpc_status why;
    int r = run_batch(k, &op, 1, &why);
    k->half_closed = true;
    if (r < 0)
        return fail_call(k, r, &why, st);
    if (r == 0)
        return call_failed(k, "before the client finished sending", st);
    return 0;
}

int kf_grpc_raw_recv(kf_grpc_call *k, grpc_byte_buffer **msg, kf_rpc_status *st) {
    assert(k && msg && k->kind == CALL_RAW);
    return recv_raw(k, msg, st);
}

int kf_grpc_stream_close_and_recv(kf_grpc_call *k, const ProtobufCMessageDescriptor *resp_desc,
                                  ProtobufCMessage **resp, kf_rpc_status *st) {
    assert(k && resp_desc && resp && k->kind == CALL_CLIENT_STREAM);
    *resp = NULL;
    if (k->finished) {
        if (st)
            *st = k->final;
        return k->final_r < 0 ? k->final_r : -EPROTO;
    }
    grpc_byte_buffer *recv = NULL;
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!k->half_closed) {
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        k->half_closed = true;
    }
    if (!k->initial_md_requested) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &k->initial_md;
        k->initial_md_requested = true;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &recv;
    kf_rpc_status why;
    int r = run_batch(k, ops, n, &why);
    if (r < 0) {
        grpc_byte_buffer_destroy(recv);
        return fail_call(k, r, &why, st);
    }
    kf_rpc_status fin;
    r = finish_call(k, &fin);
    if (r < 0) {
        grpc_byte_buffer_destroy(recv);
        if (st)
            *st = fin;
        return r;
    }
    if (!recv)
        return status_set(st, -EBADMSG, GRPC_STATUS_INTERNAL, "the server sent no %s", resp_desc->name);
    r = decode(k, recv, resp_desc, resp, st);
    if (r < 0)
        return r;
    if (st)
        *st = fin;
    return 0;
}
