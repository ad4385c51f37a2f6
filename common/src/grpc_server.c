/* grpc_server.c - the blocking-handler server over gRPC core.
 *
 * Threads: one accept thread loops on the server's completion queue (a
 * "next" queue) and owns the outstanding grpc_server_request_call slots; on
 * each arrival it re-posts the slot and starts a detached handler thread for
 * the call. Listeners are plaintext or TLS (optionally mutual). Each call
 * has a private "pluck" completion queue, so its handler
 * waits for its own batches only. The live-call count (under g->lock) bounds
 * the handler threads and lets kf_server_free wait for all of them.
 */
#include "kf/grpc_server.h"
#include "kf/cleanup.h"
#include "kf/grpc_codec.h"
#include "kf/log.h"
#include "kf/util.h"

#include <errno.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define KF_ACCEPT_SLOTS 16
#define KF_SPARE_WORKERS 4 /* idle workers kept waiting for the next call */

typedef struct accept_slot {
    struct kf_server *srv;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_completion_queue *call_cq;
} accept_slot;

struct kf_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    kf_method *methods;
    size_t n_methods;
    size_t max_calls;
    int workers;      /* worker threads alive (under lock) */
    int idle_workers; /* of those, waiting on the queue */
    int max_workers;
    accept_slot slots[KF_ACCEPT_SLOTS];
    pthread_mutex_t lock;
    pthread_cond_t idle;
    size_t live_calls;
    int shutting_down;
    struct kf_call *calls; /* live calls, for cancel on shutdown */
};

struct kf_call {
    kf_server *srv;
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_call_details details;
    grpc_metadata_array md;
    const kf_method *method;
    int sent_initial_md;
    int finished;
    kf_status status; /* what the call was finished with */
    int close_done;
    int cancelled;
    int recv_eof;
    char path[256];
    struct kf_call *next, *prev;
};

static gpr_timespec deadline_in_ms(int64_t ms) {
    if (ms < 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Runs one batch on the call's own queue and waits for it. */
static int call_batch(kf_call *c, const grpc_op *ops, size_t n, void *tag) {
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        kf_warn("grpc: start_batch on %s failed: %d", c->path, (int)e);
        return -EIO;
    }
    grpc_event ev = grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE)
        return -EIO;
    return ev.success ? 0 : -ECANCELED;
}

static int close_tag_marker;

static void post_close(kf_call *c) {
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &close_tag_marker, NULL) != GRPC_CALL_OK)
        c->close_done = 1;
}

int kf_call_cancelled(kf_call *c) {
    if (c->close_done)
        return c->cancelled || !c->finished;
    grpc_event ev = grpc_completion_queue_pluck(c->cq, &close_tag_marker,
                                                gpr_time_0(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_OP_COMPLETE) {
        c->close_done = 1;
        return 1;
    }
    if (gpr_time_cmp(c->details.deadline, gpr_now(c->details.deadline.clock_type)) < 0)
        return 1;
    return 0;
}

int kf_call_recv_raw(kf_call *c, grpc_byte_buffer **out) {
    *out = NULL;
    if (c->recv_eof)
        return 0;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = out;
    int r = call_batch(c, &op, 1, &op);
    if (r < 0) {
        grpc_byte_buffer_destroy(*out);
        *out = NULL;
        return r;
    }
    if (!*out) {
        c->recv_eof = 1;
        return 0;
    }
    return 1;
}

ProtobufCMessage *kf_call_recv(kf_call *c, const ProtobufCMessageDescriptor *desc, int *eof) {
    grpc_byte_buffer *buf = NULL;
    int r = kf_call_recv_raw(c, &buf);
    *eof = r == 0;
    if (r <= 0)
        return NULL;
    ProtobufCMessage *m = kf_pb_from_buffer(buf, desc);
    grpc_byte_buffer_destroy(buf);
    return m;
}

int kf_call_send_raw(kf_call *c, grpc_byte_buffer *buf) {
    if (c->finished)
        return -EINVAL;
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!c->sent_initial_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = buf;
    n++;
    int r = call_batch(c, ops, n, ops);
    c->sent_initial_md = 1;
    return r;
}

int kf_call_send(kf_call *c, const ProtobufCMessage *msg) {
    grpc_byte_buffer *bb = kf_pb_to_buffer(msg);
    if (!bb)
        return -ENOMEM;
    int r = kf_call_send_raw(c, bb);
    grpc_byte_buffer_destroy(bb);
    return r;
}

int kf_call_finish(kf_call *c, kf_status status, const char *message) {
    if (c->finished)
        return -EALREADY;
    grpc_op ops[2];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    if (!c->sent_initial_md) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    grpc_slice details = grpc_slice_from_copied_string(message ? message : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)status;
    ops[n].data.send_status_from_server.status_details = &details;
    n++;
    int r = call_batch(c, ops, n, ops);
    grpc_slice_unref(details);
    c->sent_initial_md = 1;
    c->finished = 1;
    c->status = status;
    return r;
}

kf_status kf_call_status(kf_call *c) { return c->status; }

int kf_call_reply(kf_call *c, const ProtobufCMessage *msg) {
    int r = kf_call_send(c, msg);
    if (r < 0) {
        c->finished = 1; /* client is gone; nothing more to send */
        c->status = KF_ST_CANCELLED;
        return r;
    }
    return kf_call_finish(c, KF_ST_OK, "");
}

int kf_call_fail(kf_call *c, const kf_error *e) {
    kf_status st = kf_error_status(e);
    if (st == KF_ST_OK)
        st = KF_ST_INTERNAL;
    return kf_call_finish(c, st, e && e->msg[0] ? e->msg : "internal error");
}

int kf_call_metadata(kf_call *c, const char *key, char *buf, size_t size) {
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_metadata *m = &c->md.metadata[i];
        size_t klen = GRPC_SLICE_LENGTH(m->key);
        if (klen != strlen(key) || memcmp(GRPC_SLICE_START_PTR(m->key), key, klen) != 0)
            continue;
        size_t vlen = GRPC_SLICE_LENGTH(m->value);
        if (vlen + 1 > size)
            return -ENOSPC;
        memcpy(buf, GRPC_SLICE_START_PTR(m->value), vlen);
        buf[vlen] = '\0';
        return 0;
    }
    return -ENOENT;
}

int64_t kf_call_deadline_ms(kf_call *c) {
    gpr_timespec d = gpr_convert_clock_type(c->details.deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0 || d.tv_sec > INT64_MAX / 2000)
        return INT64_MAX;
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    int64_t left = gpr_time_to_millis(gpr_time_sub(d, now));
    return kf_mono_ms() + left;
}

const char *kf_call_method(kf_call *c) { return c->path; }

static void call_free(kf_call *c) {
    kf_server *s = c->srv;
    if (!c->finished)
        kf_call_finish(c, KF_ST_INTERNAL, "handler ended without a status");
    if (!c->close_done) {
        /* Completes once the status went out or the client is gone. */
        grpc_completion_queue_pluck(c->cq, &close_tag_marker, deadline_in_ms(30000), NULL);
    }
    grpc_call_unref(c->call);
    grpc_completion_queue_shutdown(c->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_pluck(c->cq, NULL, deadline_in_ms(1000), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN || ev.type == GRPC_QUEUE_TIMEOUT)
            break;
    }
    grpc_completion_queue_destroy(c->cq);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);

    pthread_mutex_lock(&s->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->live_calls--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    free(c);
}

static int post_slot(kf_server *s, accept_slot *slot) {
    slot->srv = s;
    slot->call = NULL;
    grpc_call_details_init(&slot->details);
    grpc_metadata_array_init(&slot->md);
    slot->call_cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call_error e = grpc_server_request_call(s->server, &slot->call, &slot->details, &slot->md,
                                                 slot->call_cq, s->cq, slot);
    if (e != GRPC_CALL_OK) {
        grpc_completion_queue_shutdown(slot->call_cq);
        grpc_completion_queue_destroy(slot->call_cq);
        slot->call_cq = NULL;
        grpc_call_details_destroy(&slot->details);
        grpc_metadata_array_destroy(&slot->md);
        return -EIO;
    }
    return 0;
}

/* Turns an arrived slot into a kf_call (registered as live). *over is set
 * when the call must be refused (too many in flight, or shutting down). */
static kf_call *take_call(kf_server *s, accept_slot *slot, int *over) {
    kf_call *c = calloc(1, sizeof(*c));
    if (!c)
        abort(); /* out of memory in the accept path: nothing sane to do */
    c->srv = s;
    c->call = slot->call;
    c->cq = slot->call_cq;
    c->details = slot->details;
    c->md = slot->md;
    size_t ml = GRPC_SLICE_LENGTH(c->details.method);
    if (ml >= sizeof(c->path))
        ml = sizeof(c->path) - 1;
    memcpy(c->path, GRPC_SLICE_START_PTR(c->details.method), ml);
    c->path[ml] = '\0';
    for (size_t i = 0; i < s->n_methods; i++)
        if (!strcmp(s->methods[i].path, c->path))
            c->method = &s->methods[i];

    pthread_mutex_lock(&s->lock);
    *over = s->live_calls >= s->max_calls || s->shutting_down;
    s->live_calls++;
    c->next = s->calls;
    if (s->calls)
        s->calls->prev = c;
    s->calls = c;
    pthread_mutex_unlock(&s->lock);
    return c;
}

static void run_call(kf_call *c, int over) {
    post_close(c);
    if (over)
        kf_call_finish(c, KF_ST_RESOURCE_EXHAUSTED, "server busy: too many calls in flight");
    else if (c->method)
        c->method->fn(c, c->method->userdata);
    else
        kf_call_finish(c, KF_ST_UNIMPLEMENTED, "unknown method");
    call_free(c);
}

static void *worker_loop(void *arg);

static int start_worker(kf_server *s) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 512 * 1024);
    int r = pthread_create(&t, &attr, worker_loop, s);
    pthread_attr_destroy(&attr);
    return -r;
}

/* A worker waits on the server queue and runs the call that arrives on its
 * own thread, start to finish: no hand-off between accepting and handling
 * (each hand-off costs a wake-up, which a busy machine makes slow). Before
 * handling, a worker that sees nobody else waiting starts KF_SPARE_WORKERS spares, so a
 * long call (an Execute stream) never blocks the next one; spares beyond
 * KF_SPARE_WORKERS retire after their call. */
static void *worker_loop(void *arg) {
    kf_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        s->idle_workers++;
        pthread_mutex_unlock(&s->lock);
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        pthread_mutex_lock(&s->lock);
        s->idle_workers--;
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            s->workers--;
            pthread_cond_broadcast(&s->idle);
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        /* None left waiting: start KF_SPARE_WORKERS at once, so a burst of
         * calls is not accepted one thread creation at a time. */
        int spawn = 0;
        if (s->idle_workers == 0 && !s->shutting_down) {
            spawn = s->max_workers - s->workers;
            if (spawn > KF_SPARE_WORKERS)
                spawn = KF_SPARE_WORKERS;
            if (spawn < 0)
                spawn = 0;
        }
        s->workers += spawn;
        int stop = s->shutting_down;
        pthread_mutex_unlock(&s->lock);
        for (int i = 0; i < spawn; i++)
            if (start_worker(s) < 0) {
                pthread_mutex_lock(&s->lock);
                s->workers--;
                pthread_mutex_unlock(&s->lock);
            }
        if (ev.type != GRPC_OP_COMPLETE || ev.tag == (void *)s)
            continue; /* s itself is the shutdown-notify tag */
        accept_slot *slot = ev.tag;
        if (!ev.success) {
            /* server shutting down: the slot's call never came */
            grpc_completion_queue_shutdown(slot->call_cq);
            grpc_completion_queue_destroy(slot->call_cq);
            slot->call_cq = NULL;
            grpc_call_details_destroy(&slot->details);
            grpc_metadata_array_destroy(&slot->md);
            continue;
        }
        int over;
        kf_call *c = take_call(s, slot, &over);
        if (!stop && post_slot(s, slot) < 0)
            kf_warn("grpc: could not re-post an accept slot");
        run_call(c, over);
        pthread_mutex_lock(&s->lock);
        int retire = s->idle_workers >= KF_SPARE_WORKERS;
        if (retire) {
            s->workers--;
            pthread_cond_broadcast(&s->idle);
        }
        pthread_mutex_unlock(&s->lock);
        if (retire)
            return NULL;
    }
}

int kf_server_new(kf_server **out, const kf_method *methods, size_t n, size_t max_calls) {
    grpc_init();
    kf_server *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->methods = calloc(n, sizeof(*methods));
    if (!s->methods) {
        free(s);
        return -ENOMEM;
    }
    memcpy(s->methods, methods, n * sizeof(*methods));
    s->n_methods = n;
    s->max_calls = max_calls ? max_calls : 512;
    s->max_workers = (int)s->max_calls + KF_SPARE_WORKERS;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = KF_GRPC_MAX_MESSAGE;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = KF_GRPC_MAX_MESSAGE;
    grpc_channel_args ch_args = {.num_args = 2, .args = args};
    s->server = grpc_server_create(&ch_args, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    *out = s;
    return 0;
}

int kf_server_listen(kf_server *s, const char *addr, kf_error *err) {
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0)
        return kf_error_set(err, -EADDRNOTAVAIL, KF_ST_UNAVAILABLE, "cannot listen on %s", addr);
    return 0;
}

static int read_pem(const char *what, const char *path, char **out, kf_error *err) {
    size_t len;
    int r = kf_read_file(path, KF_TLS_FILE_MAX, out, &len);
    if (r < 0)
        return kf_error_set(err, r, 0, "cannot read TLS %s %s: %s", what, path, strerror(-r));
    return 0;
}

int kf_server_listen_tls(kf_server *s, const char *addr, const kf_server_tls *tls, kf_error *err) {
    if (!tls || !tls->cert_file || !tls->key_file)
        return kf_error_set(err, -EINVAL, 0, "TLS on %s needs a certificate and a key", addr);
    if (!strncmp(addr, "unix:", 5))
        return kf_error_set(err, -EINVAL, 0, "TLS is for TCP listeners, not %s", addr);
    _cleanup_free_ char *cert = NULL, *key = NULL, *ca = NULL;
    int r;
    if ((r = read_pem("certificate", tls->cert_file, &cert, err)) < 0 ||
        (r = read_pem("key", tls->key_file, &key, err)) < 0 ||
        (tls->client_ca_file && (r = read_pem("client CA", tls->client_ca_file, &ca, err)) < 0)) {
        if (key)
            explicit_bzero(key, strlen(key));
        return r;
    }
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    /* gRPC copies the PEM strings; ours are freed (the key wiped) here. */
    grpc_server_credentials *creds = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    explicit_bzero(key, strlen(key));
    if (!creds)
        return kf_error_set(err, -EINVAL, 0, "gRPC rejected the TLS credentials for %s", addr);
    int port = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0)
        return kf_error_set(err, -EADDRNOTAVAIL, KF_ST_UNAVAILABLE,
                            "cannot listen on %s with TLS (address in use, or the key does not "
                            "match the certificate?)",
                            addr);
    return 0;
}

int kf_server_start(kf_server *s, kf_error *err) {
    grpc_server_start(s->server);
    for (size_t i = 0; i < KF_ACCEPT_SLOTS; i++)
        if (post_slot(s, &s->slots[i]) < 0)
            return kf_error_set(err, -EIO, 0, "cannot post accept slots");
    pthread_mutex_lock(&s->lock);
    s->workers = 2;
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < 2; i++)
        if (start_worker(s) < 0) {
            pthread_mutex_lock(&s->lock);
            s->workers--;
            pthread_mutex_unlock(&s->lock);
            if (i == 0)
                return kf_error_set(err, -EAGAIN, 0, "cannot start the server's threads");
        }
    return 0;
}

void kf_server_free(kf_server *s) {
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->shutting_down = 1;
    pthread_mutex_unlock(&s->lock);
    grpc_server_shutdown_and_notify(s->server, s->cq, s);
    grpc_server_cancel_all_calls(s->server);
    pthread_mutex_lock(&s->lock);
    for (kf_call *c = s->calls; c; c = c->next)
        grpc_call_cancel(c->call, NULL);
    while (s->live_calls > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    grpc_completion_queue_shutdown(s->cq);
    /* Every worker gets GRPC_QUEUE_SHUTDOWN and leaves; without workers
     * (never started) drain the queue here. */
    pthread_mutex_lock(&s->lock);
    int any = s->workers > 0;
    while (s->workers > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    if (!any)
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    pthread_cond_destroy(&s->idle);
    pthread_mutex_destroy(&s->lock);
    free(s->methods);
    free(s);
    grpc_shutdown();
}

int kf_server_tls_flags_check(const char *cert, const char *key, const char *client_ca,
                              const char *listen_tcp, kf_error *err) {
    if (!cert[0] != !key[0])
        return kf_error_set(err, -EINVAL, 0, "--tls-cert and --tls-key go together");
    if (client_ca[0] && !cert[0])
        return kf_error_set(err, -EINVAL, 0, "--tls-client-ca needs --tls-cert and --tls-key");
    if (cert[0] && !listen_tcp[0])
        return kf_error_set(err, -EINVAL, 0, "--tls-cert applies to --listen-tcp, which is not set");
    return 0;
}
