/* kernel_client.c - the agent's Jupyter client for one kernel: connection
 * files, the zmq sockets (shell/control DEALER, iopub SUB, hb REQ), the
 * kernel_info handshake and the execute request/reply/output loop.
 *
 * Owns: the sockets (not the context), the HMAC codec, a reusable send
 * buffer and the receive frame slots. The wire format lives in
 * jupyter_msg.c and the output translation in kernel_output.c; this file
 * does the I/O. Cost per received message: one zmq_msg_recv per frame (no
 * copy), one HMAC, two small JSON parses, plus the content parse only for
 * messages of the current execution. See kernel_client.h for the contracts.
 */
#include "kernel_client.h"

#include "jupyter_msg.h"
#include "kernel_output.h"
#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* Fixed "port" suffixes of the ipc socket paths (ipykernel binds
 * "<ip>-<port>" as given). */
enum { PORT_SHELL = 1, PORT_IOPUB = 2, PORT_STDIN = 3, PORT_CONTROL = 4, PORT_HB = 5 };

#define SOCKET_WAIT_STEP_MS 5
#define KERNEL_INFO_RETRY_MS 100
/* Messages handled per socket before the deadline and the other sockets
 * are looked at again, so a flooding kernel cannot starve them. */
#define PUMP_BATCH 64

struct kf_kernel_conn {
    void *shell, *control, *iopub, *hb;
    /* O_PATH fds of the checked socket files; zmq connects through
     * /proc/self/fd/N, so the inode we checked is the one we reach. */
    int sockfds[4];
    size_t n_sockfds;
    kf_jmsg_codec *codec;
    char session[KF_JMSG_ID_LEN + 1];
    kf_jbuf sendbuf;
    zmq_msg_t frames[KF_JMSG_MAX_FRAMES];
    zmq_msg_t drain; /* receives the parts of an over-limit message */
    unsigned dropped; /* messages dropped as bad/over-limit (logged sparsely) */

    /* The current execution (kf_kernel_exec_start). */
    char cur_id[KF_JMSG_ID_LEN + 1];
    int have_exec, got_reply, got_idle;
    kf_exec_outcome outcome;
};

/* ---- connection file ---------------------------------------------------- */

static int key_valid(const char *key) {
    if (!key || strlen(key) != KF_KERNEL_KEY_LEN)
        return 0;
    for (const char *p = key; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

int kf_kernel_key_new(char *out) { return kf_random_id(out, KF_KERNEL_KEY_LEN + 1, "", KF_KERNEL_KEY_LEN); }

/* The file is written to a temp name, chowned and renamed: the kernel never
 * sees a partial file. No fsync: a connection file does not outlive a crash
 * of the node (its kernel is gone too), and fsync would cost milliseconds
 * on every session start. */
int kf_kernel_conn_file_write(const char *path, const char *ipc_prefix, const char *key, uid_t uid,
                              gid_t gid, kf_error *err) {
    if (!path || !ipc_prefix || !*ipc_prefix || !key_valid(key))
        return kf_error_set(err, -EINVAL, 0, "connection file: bad arguments");
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return kf_error_set(err, -ENOMEM, 0, "connection file: out of memory");
    int ok = cJSON_AddStringToObject(j, "transport", "ipc") &&
             cJSON_AddStringToObject(j, "ip", ipc_prefix) &&
             cJSON_AddNumberToObject(j, "shell_port", PORT_SHELL) &&
             cJSON_AddNumberToObject(j, "iopub_port", PORT_IOPUB) &&
             cJSON_AddNumberToObject(j, "stdin_port", PORT_STDIN) &&
             cJSON_AddNumberToObject(j, "control_port", PORT_CONTROL) &&
             cJSON_AddNumberToObject(j, "hb_port", PORT_HB) &&
             cJSON_AddStringToObject(j, "key", key) &&
             cJSON_AddStringToObject(j, "signature_scheme", "hmac-sha256") &&
             cJSON_AddStringToObject(j, "kernel_name", "");
    _cleanup_free_ char *text = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!text)
        return kf_error_set(err, -ENOMEM, 0, "connection file: out of memory");

    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
        return kf_error_set(err, -ENAMETOOLONG, 0, "connection file path too long: %s", path);
    int r = 0;
    {
        _cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
            return kf_error_set(err, -errno, 0, "create %s: %m", tmp);
        size_t len = strlen(text), off = 0;
        if (fchmod(fd, 0400) < 0 || fchown(fd, uid, gid) < 0)
            r = -errno;
        while (r == 0 && off < len) {
            ssize_t w = write(fd, text + off, len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                r = -errno;
            else
                off += (size_t)w;
        }
    }
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return kf_error_set(err, r, 0, "write connection file %s: %s", path, strerror(-r));
    }
    return 0;
}

/* ---- open / close ------------------------------------------------------- */

static int sleep_ms(int ms) { return poll(NULL, 0, ms); }

/* Wait until `path` exists as a socket owned by expect_uid. lstat: a
 * symlink in the last component is refused, never followed. The check that
 * counts is repeated on an O_PATH fd in open_socket (the kernel owns the
 * directory and could swap the path after this one). */
static int wait_socket(const char *path, uid_t expect_uid, int64_t deadline_ms, kf_error *err) {
    for (;;) {
        struct stat st;
        if (lstat(path, &st) == 0) {
            if (!S_ISSOCK(st.st_mode))
                return kf_error_set(err, -EPERM, 0, "kernel socket %s is not a socket", path);
            if (expect_uid != (uid_t)-1 && st.st_uid != expect_uid)
                return kf_error_set(err, -EPERM, 0,
                                    "kernel socket %s is owned by uid %u, expected %u", path,
                                    (unsigned)st.st_uid, (unsigned)expect_uid);
            return 0;
        }
        if (errno != ENOENT)
            return kf_error_set(err, -errno, 0, "kernel socket %s: %m", path);
        int64_t left = deadline_ms - kf_mono_ms();
        if (left <= 0)
            return kf_error_set(err, -ETIMEDOUT, 0, "kernel socket %s did not appear in time",
                                path);
        sleep_ms(left < SOCKET_WAIT_STEP_MS ? (int)left : SOCKET_WAIT_STEP_MS);
    }
}

/* open_socket - connect a zmq socket of `type` to the kernel socket
 * prefix-port. The socket file is opened O_PATH|O_NOFOLLOW, checked on that
 * fd (a socket, owned by expect_uid) and connected through /proc/self/fd/N:
 * no swap of the path between check and connect can redirect the agent.
 * The fd is kept in c->sockfds until the connection is closed. */
static void *open_socket(kf_kernel_conn *c, void *ctx, int type, const char *prefix, int port,
                         uid_t expect_uid, int64_t deadline_ms, kf_error *err, int *r) {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (snprintf(path, sizeof(path), "%s-%d", prefix, port) >= (int)sizeof(path)) {
        *r = kf_error_set(err, -ENAMETOOLONG, 0, "kernel socket prefix too long: %s", prefix);
        return NULL;
    }
    *r = wait_socket(path, expect_uid, deadline_ms, err);
    if (*r < 0)
        return NULL;
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
        (expect_uid != (uid_t)-1 && st.st_uid != expect_uid)) {
        *r = kf_error_set(err, -EPERM, 0, "kernel socket %s changed under us: refused", path);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    c->sockfds[c->n_sockfds++] = fd;
    char fdpath[32];
    snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
    void *s = zmq_socket(ctx, type);
    if (!s) {
        *r = kf_error_set(err, -errno, 0, "zmq_socket: %s", zmq_strerror(errno));
        return NULL;
    }
    int zero = 0;
    int64_t maxsize = KF_JMSG_MAX_BYTES; /* per frame: zmq drops a peer that exceeds it */
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxsize, sizeof(maxsize));
    char ep[sizeof(fdpath) + 8];
    snprintf(ep, sizeof(ep), "ipc://%s", fdpath);
    if (zmq_connect(s, ep) < 0) {
        *r = kf_error_set(err, -errno, 0, "connect %s: %s", ep, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    *r = 0;
    return s;
}

int kf_kernel_conn_open(kf_kernel_conn **out, void *zmq_ctx, const char *host_ipc_prefix,
                        const char *key, uid_t expect_uid, int64_t deadline_ms, kf_error *err) {
    if (!out || !zmq_ctx || !host_ipc_prefix || !key_valid(key))
        return kf_error_set(err, -EINVAL, 0, "kernel connection: bad arguments");
    kf_kernel_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return kf_error_set(err, -ENOMEM, 0, "kernel connection: out of memory");
    for (size_t i = 0; i < KF_JMSG_MAX_FRAMES; i++)
        zmq_msg_init(&c->frames[i]);
    zmq_msg_init(&c->drain);
    int r = kf_jmsg_new_id(c->session);
    if (r == 0)
        r = kf_jmsg_codec_new(&c->codec, key, strlen(key));
    if (r < 0) {
        kf_kernel_conn_close(c);
        return kf_error_set(err, r, 0, "kernel connection: codec setup failed");
    }
    /* Shell first: the kernel binds it first, and it is the one we need
     * its own routing id on (stdin, unused, would share it). */
    c->shell = open_socket(c, zmq_ctx, ZMQ_DEALER, host_ipc_prefix, PORT_SHELL, expect_uid,
                           deadline_ms, err, &r);
    if (c->shell && zmq_setsockopt(c->shell, ZMQ_ROUTING_ID, c->session, KF_JMSG_ID_LEN) < 0)
        r = kf_error_set(err, -errno, 0, "set routing id: %s", zmq_strerror(errno));
    if (r == 0)
        c->iopub = open_socket(c, zmq_ctx, ZMQ_SUB, host_ipc_prefix, PORT_IOPUB, expect_uid,
                               deadline_ms, err, &r);
    if (r == 0 && zmq_setsockopt(c->iopub, ZMQ_SUBSCRIBE, "", 0) < 0)
        r = kf_error_set(err, -errno, 0, "subscribe: %s", zmq_strerror(errno));
    if (r == 0)
        c->control = open_socket(c, zmq_ctx, ZMQ_DEALER, host_ipc_prefix, PORT_CONTROL, expect_uid,
                                 deadline_ms, err, &r);
    if (r == 0)
        c->hb = open_socket(c, zmq_ctx, ZMQ_REQ, host_ipc_prefix, PORT_HB, expect_uid, deadline_ms,
                            err, &r);
    if (r == 0) {
        /* A lost echo must not wedge the REQ state machine. */
        int one = 1;
        zmq_setsockopt(c->hb, ZMQ_REQ_RELAXED, &one, sizeof(one));
        zmq_setsockopt(c->hb, ZMQ_REQ_CORRELATE, &one, sizeof(one));
    }
    if (r < 0) {
        kf_kernel_conn_close(c);
        return r;
    }
    *out = c;
    return 0;
}

void kf_kernel_conn_close(kf_kernel_conn *c) {
    if (!c)
        return;
    void *socks[] = {c->shell, c->control, c->iopub, c->hb};
    for (size_t i = 0; i < KF_ARRAY_SIZE(socks); i++)
        if (socks[i])
            zmq_close(socks[i]);
    for (size_t i = 0; i < c->n_sockfds; i++)
        close(c->sockfds[i]);
    for (size_t i = 0; i < KF_JMSG_MAX_FRAMES; i++)
        zmq_msg_close(&c->frames[i]);
    zmq_msg_close(&c->drain);
    kf_jmsg_codec_free(c->codec);
    kf_jbuf_done(&c->sendbuf);
    free(c);
}

/* ---- send / receive ----------------------------------------------------- */

static int64_t unix_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* send_msg - sign and queue one message on sock without blocking. The
 * new msg_id is copied to msg_id (KF_JMSG_ID_LEN + 1) if not NULL.
 * -EAGAIN if the socket's queue is full (kernel not reading). */
static int send_msg(kf_kernel_conn *c, void *sock, const char *msg_type, const char *content,
                    size_t len, char *msg_id, kf_error *err) {
    kf_jmsg_out m;
    int r = kf_jmsg_build(c->codec, c->session, msg_type, content, len, unix_us(), &m);
    if (r < 0)
        return kf_error_set(err, r, 0, "build %s: %s", msg_type, strerror(-r));
    kf_jmsg_frame f[KF_JMSG_OUT_FRAMES];
    kf_jmsg_out_frames(&m, f);
    for (int i = 0; i < KF_JMSG_OUT_FRAMES; i++) {
        int flags = ZMQ_DONTWAIT | (i < KF_JMSG_OUT_FRAMES - 1 ? ZMQ_SNDMORE : 0);
        /* Only the first part can fail with EAGAIN: zmq then accepts the
         * rest of the message atomically. */
        while (zmq_send(sock, f[i].data, f[i].len, flags) < 0) {
            if (errno == EINTR)
                continue;
            return kf_error_set(err, -errno, errno == EAGAIN ? KF_ST_UNAVAILABLE : 0,
                                "send %s to kernel: %s", msg_type, zmq_strerror(errno));
        }
    }
    if (msg_id)
        memcpy(msg_id, m.msg_id, sizeof(m.msg_id));
    return 0;
}

static void release_frames(kf_kernel_conn *c, size_t n) {
    /* Close + init frees the payload now rather than at the next receive,
     * so a large output is not held while the kernel is idle. */
    for (size_t i = 0; i < n && i < KF_JMSG_MAX_FRAMES; i++) {
        zmq_msg_close(&c->frames[i]);
        zmq_msg_init(&c->frames[i]);
    }
}

static void note_dropped(kf_kernel_conn *c, const char *what, int r) {
    c->dropped++;
    /* 1st, 2nd, 4th, 8th...: a flooding kernel cannot flood the log. */
    if ((c->dropped & (c->dropped - 1)) == 0)
        kf_warn("kernel session %s: dropped %s message (%s); %u dropped so far", c->session, what,
                strerror(-r), c->dropped);
}

/* read_msg - receive and parse the next valid message on sock without
 * blocking. 1: *m holds it (caller: kf_jmsg_done, then release_frames
 * with *nframes). 0: nothing (more) to read. Invalid messages are dropped
 * and logged; at most PUMP_BATCH are looked at per call. Negative: a
 * socket error. */
static int read_msg(kf_kernel_conn *c, void *sock, const char *what, kf_jmsg *m, size_t *nframes) {
    for (int tries = 0; tries < PUMP_BATCH; tries++) {
        size_t n = 0, total = 0;
        int over = 0;
        for (;;) {
            zmq_msg_t *fm = n < KF_JMSG_MAX_FRAMES ? &c->frames[n] : &c->drain;
            if (zmq_msg_recv(fm, sock, ZMQ_DONTWAIT) < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN && n == 0)
                    return 0;
                release_frames(c, n);
                return -errno;
            }
            total += zmq_msg_size(fm);
            if (n >= KF_JMSG_MAX_FRAMES || total > KF_JMSG_MAX_BYTES)
                over = 1;
            n++;
            if (!zmq_msg_more(fm))
                break;
        }
        if (over) {
            release_frames(c, n);
            zmq_msg_close(&c->drain);
            zmq_msg_init(&c->drain);
            note_dropped(c, what, -E2BIG);
            continue;
        }
        kf_jmsg_frame f[KF_JMSG_MAX_FRAMES];
        for (size_t i = 0; i < n; i++)
            f[i] = (kf_jmsg_frame){zmq_msg_data(&c->frames[i]), zmq_msg_size(&c->frames[i])};
        int r = kf_jmsg_parse(c->codec, f, n, m);
        if (r < 0) {
            release_frames(c, n);
            note_dropped(c, what, r);
            continue;
        }
        /* m->content_frame points into c->frames: valid until release. */
        *nframes = n;
        return 1;
    }
    return 0;
}

/* ---- handshake ---------------------------------------------------------- */

int kf_kernel_wait_ready(kf_kernel_conn *c, int64_t deadline_ms, int watch_fd, kf_error *err) {
    int got_reply = 0, got_iopub = 0, polled = 0;
    int64_t next_send = 0;
    for (;;) {
        if (got_reply && got_iopub)
            return 0;
        int64_t now = kf_mono_ms();
        if (polled && now >= deadline_ms)
            return kf_error_set(err, -ETIMEDOUT, 0,
                                "kernel did not answer kernel_info in time (reply %s, iopub %s)",
                                got_reply ? "seen" : "missing", got_iopub ? "seen" : "missing");
        if (now >= next_send) {
            /* Repeated: the kernel may not listen yet, and the status
             * messages each request causes are what shows iopub works. */
            int r = send_msg(c, c->shell, "kernel_info_request", "{}", 2, NULL, err);
            if (r < 0 && r != -EAGAIN)
                return r;
            next_send = now + KERNEL_INFO_RETRY_MS;
        }
        int64_t until = next_send < deadline_ms ? next_send : deadline_ms;
        long timeout = until > now ? (long)(until - now) : 0;
        zmq_pollitem_t items[3] = {
            {c->shell, 0, ZMQ_POLLIN, 0},
            {c->iopub, 0, ZMQ_POLLIN, 0},
            {NULL, watch_fd, ZMQ_POLLIN, 0},
        };
        int rc = zmq_poll(items, watch_fd >= 0 ? 3 : 2, timeout);
        polled = 1;
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return kf_error_set(err, -errno, 0, "zmq_poll: %s", zmq_strerror(errno));
        }
        kf_jmsg m;
        size_t n;
        int r;
        while ((r = read_msg(c, c->iopub, "iopub", &m, &n)) > 0) {
            got_iopub = 1;
            kf_jmsg_done(&m);
            release_frames(c, n);
        }
        if (r < 0)
            return kf_error_set(err, r, 0, "receive on iopub: %s", zmq_strerror(-r));
        while ((r = read_msg(c, c->shell, "shell", &m, &n)) > 0) {
            if (!strcmp(m.msg_type, "kernel_info_reply"))
                got_reply = 1;
            kf_jmsg_done(&m);
            release_frames(c, n);
        }
        if (r < 0)
            return kf_error_set(err, r, 0, "receive on shell: %s", zmq_strerror(-r));
        if (watch_fd >= 0 && (items[2].revents & ZMQ_POLLIN) && !(got_reply && got_iopub))
            return kf_error_set(err, -ECHILD, KF_ST_UNAVAILABLE,
                                "kernel exited before it became ready");
    }
}

/* ---- execution ---------------------------------------------------------- */

int kf_kernel_exec_start(kf_kernel_conn *c, const char *code, size_t len, kf_error *err) {
    int r = kf_jmsg_execute_content(&c->sendbuf, code, len);
    if (r < 0)
        return kf_error_set(err, r, 0, "code of %zu bytes is too large to send", len);
    char id[KF_JMSG_ID_LEN + 1];
    r = send_msg(c, c->shell, "execute_request", c->sendbuf.data, c->sendbuf.len, id, err);
    if (r < 0)
        return r;
    memcpy(c->cur_id, id, sizeof(id));
    c->have_exec = 1;
    c->got_reply = c->got_idle = 0;
    c->outcome = (kf_exec_outcome){0};
    return 0;
}

static int on_shell(kf_kernel_conn *c, kf_jmsg *m) {
    if (strcmp(m->parent_id, c->cur_id) != 0 || strcmp(m->msg_type, "execute_reply") != 0)
        return 0;
    int r = kf_jmsg_parse_content(c->codec, m);
    if (r < 0)
        return r;
    const char *st = kf_jmsg_str(m->content, "status");
    const cJSON *ec = cJSON_GetObjectItemCaseSensitive(m->content, "execution_count");
    c->outcome.status = st && !strcmp(st, "ok")      ? KF_EXEC_REPLY_OK
                        : st && !strcmp(st, "aborted") ? KF_EXEC_REPLY_ABORTED
                                                       : KF_EXEC_REPLY_ERROR;
    c->outcome.execution_count = cJSON_IsNumber(ec) ? ec->valueint : 0;
    c->got_reply = 1;
    return 0;
}

/* Returns cb's negative value to stop; malformed content is dropped. */
static int on_iopub(kf_kernel_conn *c, kf_jmsg *m, kf_kernel_event_cb cb, void *userdata) {
    if (strcmp(m->parent_id, c->cur_id) != 0)
        return 0; /* an older execution, or the handshake */
    int is_status = !strcmp(m->msg_type, "status");
    if (!is_status && !kf_kernel_output_is_event(m->msg_type))
        return 0; /* execute_input, clear_output, update_display_data, comm_* */
    int r = kf_jmsg_parse_content(c->codec, m);
    if (r == 0 && is_status) {
        const char *st = kf_jmsg_str(m->content, "execution_state");
        if (st && !strcmp(st, "idle"))
            c->got_idle = 1;
        return 0;
    }
    if (r == 0)
        r = kf_kernel_output_dispatch(m->msg_type, m->content, cb, userdata);
    if (r == -EBADMSG) {
        note_dropped(c, m->msg_type, r);
        return 0;
    }
    return r;
}

/* Handle what is queued on iopub, then shell, without blocking. */
static int pump(kf_kernel_conn *c, kf_kernel_event_cb cb, void *userdata, kf_error *err) {
    kf_jmsg m;
    size_t n;
    int r;
    while ((r = read_msg(c, c->iopub, "iopub", &m, &n)) > 0) {
        r = on_iopub(c, &m, cb, userdata);
        kf_jmsg_done(&m);
        release_frames(c, n);
        if (r < 0)
            return r == -ENOMEM ? kf_error_set(err, r, 0, "out of memory handling output") : r;
    }
    if (r < 0)
        return kf_error_set(err, r, 0, "receive on iopub: %s", zmq_strerror(-r));
    while ((r = read_msg(c, c->shell, "shell", &m, &n)) > 0) {
        r = on_shell(c, &m);
        kf_jmsg_done(&m);
        release_frames(c, n);
        if (r == -EBADMSG)
            note_dropped(c, "execute_reply", r);
        else if (r < 0)
            return kf_error_set(err, r, 0, "handling execute_reply: %s", strerror(-r));
    }
    if (r < 0)
        return kf_error_set(err, r, 0, "receive on shell: %s", zmq_strerror(-r));
    return 0;
}

int kf_kernel_exec_wait(kf_kernel_conn *c, int64_t deadline_ms, int watch_fd,
                        kf_kernel_event_cb cb, void *userdata, kf_exec_outcome *out, kf_error *err) {
    if (!c->have_exec)
        return kf_error_set(err, -EINVAL, KF_ST_FAILED_PRECONDITION, "no execution started");
    int polled = 0;
    for (;;) {
        if (c->got_reply && c->got_idle) {
            if (out)
                *out = c->outcome;
            return 0;
        }
        int64_t now = kf_mono_ms();
        if (polled && now >= deadline_ms)
            return kf_error_set(err, -ETIMEDOUT, 0, "execution still running at the deadline");
        long timeout = deadline_ms > now ? (long)(deadline_ms - now) : 0;
        zmq_pollitem_t items[3] = {
            {c->iopub, 0, ZMQ_POLLIN, 0},
            {c->shell, 0, ZMQ_POLLIN, 0},
            {NULL, watch_fd, ZMQ_POLLIN, 0},
        };
        int rc = zmq_poll(items, watch_fd >= 0 ? 3 : 2, timeout);
        polled = 1;
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return kf_error_set(err, -errno, 0, "zmq_poll: %s", zmq_strerror(errno));
        }
        if (rc == 0)
            continue;
        int r = pump(c, cb, userdata, err);
        if (r < 0)
            return r;
        if (watch_fd >= 0 && (items[2].revents & ZMQ_POLLIN) && !(c->got_reply && c->got_idle)) {
            /* The kernel is gone: deliver what it sent before dying (a
             * last traceback...), then report it. Its sockets are closed,
             * so nothing more arrives. */
            for (int i = 0; i < 16 && r == 0; i++)
                r = pump(c, cb, userdata, err);
            if (r < 0)
                return r;
            if (c->got_reply && c->got_idle)
                continue;
            return kf_error_set(err, -ECHILD, KF_ST_ABORTED,
                                "the kernel died during the execution");
        }
    }
}

/* ---- control and heartbeat ---------------------------------------------- */

/* Replies on control are never waited for; discard them so they do not
 * pile up. */
static void drain_control(kf_kernel_conn *c) {
    kf_jmsg m;
    size_t n;
    while (read_msg(c, c->control, "control", &m, &n) > 0) {
        kf_jmsg_done(&m);
        release_frames(c, n);
    }
}

int kf_kernel_interrupt(kf_kernel_conn *c, kf_error *err) {
    drain_control(c);
    return send_msg(c, c->control, "interrupt_request", "{}", 2, NULL, err);
}

int kf_kernel_shutdown(kf_kernel_conn *c, int restart, kf_error *err) {
    drain_control(c);
    const char *content = restart ? "{\"restart\":true}" : "{\"restart\":false}";
    return send_msg(c, c->control, "shutdown_request", content, strlen(content), NULL, err);
}

int kf_kernel_heartbeat(kf_kernel_conn *c, int64_t deadline_ms, kf_error *err) {
    static const char ping[] = "kfleet-ping";
    if (zmq_send(c->hb, ping, sizeof(ping) - 1, ZMQ_DONTWAIT) < 0)
        return kf_error_set(err, -errno, KF_ST_UNAVAILABLE, "heartbeat send: %s",
                            zmq_strerror(errno));
    for (;;) {
        int64_t now = kf_mono_ms();
        zmq_pollitem_t it = {c->hb, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, deadline_ms > now ? (long)(deadline_ms - now) : 0);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return kf_error_set(err, -errno, 0, "zmq_poll: %s", zmq_strerror(errno));
        if (rc == 0)
            return kf_error_set(err, -ETIMEDOUT, KF_ST_UNAVAILABLE, "kernel heartbeat timed out");
        char buf[64];
        int got = zmq_recv(c->hb, buf, sizeof(buf), ZMQ_DONTWAIT);
        if (got < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (got < 0)
            return kf_error_set(err, -errno, 0, "heartbeat receive: %s", zmq_strerror(errno));
        return 0;
    }
}
