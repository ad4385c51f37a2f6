/* cmd_drain.c - "kfleetctl node drain": start a node's drain and follow it,
 * or show (--status) or cancel (--cancel) the one in progress.
 *
 * The drain runs in the scheduler, not here: this command asks for it
 * (DrainNode), then follows WatchDrain, printing a line per session as it
 * moves (or fails, or is left) and, on a terminal, a progress bar. Ctrl-C
 * only stops following: it says so and exits 130; the drain goes on.
 *
 * Exit: 0 when the drain completed (every session moved), 1 when it ended
 * otherwise (cancelled, deadline passed), 2 for usage and RPC errors.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/util.h"
#include "kfleet/v1/cluster.pb-c.h"
#include "kfleetctl.h"
#include "output.h"

#define CLUSTER_METHOD(m) "/kfleet.v1.Cluster/" m
#define BAR_WIDTH 30
#define EXIT_NOT_DONE 1
#define EXIT_DETACHED 130
#define SESSIONS_SHOWN_MAX 4096 /* per-session states remembered to print changes */

static const char drain_help[] =
    "Usage: kfleetctl node drain NODE [--deadline D] [--parallel N] [--force] [--reason TEXT]\n"
    "                                  [--who NAME] [--no-wait]\n"
    "       kfleetctl node drain NODE --status\n"
    "       kfleetctl node drain NODE --cancel\n"
    "\n"
    "Cordon NODE, then move every session off it: each session keeps its id and its\n"
    "files in /mnt/data; its kernel restarts on the new node, and the session's next\n"
    "execution starts with a notice saying so. The scheduler runs the drain: Ctrl-C\n"
    "stops following it here, it does not cancel it (use --cancel).\n"
    "\n"
    "Options:\n"
    "      --deadline D    how long the moves may take (default 10m, at most 24h);\n"
    "                      sessions not moved by then stay on the node, or with\n"
    "                      --force are deleted; both are reported\n"
    "      --parallel N    sessions moved at a time (default 4, at most 64)\n"
    "      --force         delete the sessions that could not be moved in time\n"
    "      --reason TEXT   why (recorded with the node's cordon)\n"
    "      --who NAME      who asks, recorded when the scheduler has no tenants\n"
    "      --no-wait       start the drain and return at once\n"
    "      --status        show the node's current or last drain\n"
    "      --cancel        stop the drain: no new moves start (the node stays cordoned)\n"
    "  -h, --help          show this help\n"
    "\n"
    "Exit status: 0 drained, 1 the drain ended otherwise (cancelled, deadline), 2\n"
    "usage or server error, 130 stopped following (the drain goes on).\n";

enum { OPT_DEADLINE = KF_OPT_LOCAL, OPT_PARALLEL, OPT_FORCE, OPT_REASON, OPT_WHO, OPT_NO_WAIT, OPT_STATUS,
       OPT_CANCEL };

static const char *node_being_watched;

static void on_sigint(int sig) {
    (void)sig;
    static const char a[] = "\nkfleetctl: stopped following; the drain goes on (see: kfleetctl node drain ";
    static const char b[] = " --status, or --cancel)\n";
    ssize_t r = write(STDERR_FILENO, a, sizeof(a) - 1);
    if (node_being_watched)
        r = write(STDERR_FILENO, node_being_watched, strlen(node_being_watched));
    r = write(STDERR_FILENO, b, sizeof(b) - 1);
    (void)r;
    _exit(EXIT_DETACHED);
}

static const char *sess_state(int st, char *buf, size_t size) {
    return kf_enum_short_name(&kfleet__v1__drain_session_state__descriptor, st, "DRAIN_SESSION_STATE_", buf, size);
}

static const char *drain_state(int st, char *buf, size_t size) {
    return kf_enum_short_name(&kfleet__v1__drain_state__descriptor, st, "DRAIN_STATE_", buf, size);
}

static void print_status(const Kfleet__V1__DrainStatus *d) {
    char b[64], x[64];
    int64_t now = kf_unix_ms();
    _cleanup_(kf_table_freep) kf_table *t = kf_table_new(2, NULL);
    if (!t)
        return;
    kf_table_kv(t, "node:", d->node);
    kf_table_kv(t, "state:", drain_state(d->state, b, sizeof(b)));
    kf_table_kv(t, "reason:", d->reason);
    kf_table_kv(t, "by:", d->by);
    kf_table_kv(t, "started:", kf_fmt_when(d->started_unix_ms, now, x, sizeof(x)));
    kf_table_kv(t, "deadline:", kf_fmt_when(d->deadline_unix_ms, now, x, sizeof(x)));
    if (d->ended_unix_ms)
        kf_table_kv(t, "ended:", kf_fmt_when(d->ended_unix_ms, now, x, sizeof(x)));
    snprintf(b, sizeof(b), "%u at a time%s", d->parallel, d->force ? ", force" : "");
    kf_table_kv(t, "moves:", b);
    snprintf(b, sizeof(b), "%u moved, %u failed, %u left, %u deleted, of %u", d->moved, d->failed, d->left,
             d->deleted, d->total);
    kf_table_kv(t, "sessions:", b);
    if (d->message[0])
        kf_table_kv(t, "message:", d->message);
    kf_table_print(t, stdout);
    if (!d->n_sessions)
        return;
    static const char *const hdr[] = {"SESSION", "STATE", "TARGET", "ATTEMPTS", "MESSAGE"};
    _cleanup_(kf_table_freep) kf_table *st = kf_table_new(5, hdr);
    for (size_t i = 0; st && i < d->n_sessions; i++) {
        const Kfleet__V1__DrainSession *s = d->sessions[i];
        char state[32], att[16];
        snprintf(att, sizeof(att), "%u", s->attempts);
        const char *cells[] = {s->session_id, sess_state(s->state, state, sizeof(state)),
                               s->target_node[0] ? s->target_node : "-", att, s->message};
        kf_table_row(st, cells);
    }
    printf("\n");
    if (st)
        kf_table_print(st, stdout);
}

static int finish(const kf_cli_globals *g, const Kfleet__V1__DrainStatus *d) {
    if (g->output == KF_OUT_JSON)
        kf_print_pb_json(&d->base, true);
    else
        print_status(d);
    int r = kf_cli_flush_stdout();
    return r ? r : d->state == KFLEET__V1__DRAIN_STATE__DRAIN_STATE_DONE ? KF_EXIT_OK : EXIT_NOT_DONE;
}

/* What the follower printed last, per session, to print only changes. */
typedef struct seen {
    char id[72];
    int state;
    uint32_t attempts;
} seen;

static void print_changes(const Kfleet__V1__DrainStatus *d, seen *s, size_t *n) {
    for (size_t i = 0; i < d->n_sessions; i++) {
        const Kfleet__V1__DrainSession *x = d->sessions[i];
        size_t k = 0;
        while (k < *n && strcmp(s[k].id, x->session_id))
            k++;
        if (k == *n) {
            if (*n >= SESSIONS_SHOWN_MAX)
                continue;
            snprintf(s[k].id, sizeof(s[k].id), "%s", x->session_id);
            s[k].state = 0;
            (*n)++;
        }
        if (s[k].state == (int)x->state && s[k].attempts == x->attempts)
            continue;
        s[k].state = (int)x->state;
        s[k].attempts = x->attempts;
        char st[32];
        switch (x->state) {
        case KFLEET__V1__DRAIN_SESSION_STATE__DRAIN_SESSION_STATE_MOVED:
            printf("  %s  moved to %s\n", x->session_id, x->target_node);
            break;
        case KFLEET__V1__DRAIN_SESSION_STATE__DRAIN_SESSION_STATE_MOVING:
            printf("  %s  moving%s%s (attempt %u)\n", x->session_id, x->target_node[0] ? " to " : "",
                   x->target_node, x->attempts);
            break;
        case KFLEET__V1__DRAIN_SESSION_STATE__DRAIN_SESSION_STATE_PENDING:
            break;
        default:
            printf("  %s  %s: %s\n", x->session_id, sess_state(x->state, st, sizeof(st)), x->message);
        }
    }
}

static void print_bar(const Kfleet__V1__DrainStatus *d) {
    uint32_t done = d->moved + d->left + d->deleted;
    uint32_t fill = d->total ? (uint32_t)((uint64_t)done * BAR_WIDTH / d->total) : BAR_WIDTH;
    char bar[BAR_WIDTH + 1];
    for (uint32_t i = 0; i < BAR_WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    fprintf(stderr, "\r[%s] %u/%u moved, %u failed", bar, d->moved, d->total, d->failed);
    fflush(stderr);
}

static int follow(const kf_cli_globals *g, kf_grpc_client *client, const char *node) {
    Kfleet__V1__GetDrainRequest req = KFLEET__V1__GET_DRAIN_REQUEST__INIT;
    req.node = (char *)node;
    _cleanup_grpc_call_ kf_grpc_call *call = NULL;
    kf_rpc_status st = {0};
    if (kf_grpc_server_stream_start(client, CLUSTER_METHOD("WatchDrain"), &req.base,
                                    &kfleet__v1__drain_status__descriptor, 0, &call, &st) < 0)
        return kf_node_rpc_error(g, &st);
    node_being_watched = node;
    signal(SIGINT, on_sigint);
    bool bar = g->output != KF_OUT_JSON && isatty(STDERR_FILENO);
    _cleanup_free_ seen *s = calloc(SESSIONS_SHOWN_MAX, sizeof(*s));
    size_t n = 0;
    _cleanup_pb_ ProtobufCMessage *last = NULL;
    if (!s)
        return KF_EXIT_USAGE;
    for (;;) {
        ProtobufCMessage *m = NULL;
        int rc = kf_grpc_stream_next(call, &m, &st);
        if (rc < 0)
            return kf_node_rpc_error(g, &st);
        if (rc == 0)
            break;
        if (last)
            protobuf_c_message_free_unpacked(last, NULL);
        last = m;
        const Kfleet__V1__DrainStatus *d = (const void *)m;
        if (g->output != KF_OUT_JSON) {
            if (bar)
                fprintf(stderr, "\r\033[K");
            print_changes(d, s, &n);
            fflush(stdout);
            if (bar)
                print_bar(d);
        }
    }
    signal(SIGINT, SIG_DFL);
    if (bar)
        fprintf(stderr, "\n");
    if (!last) {
        fprintf(stderr, "kfleetctl: the scheduler ended the watch without a status\n");
        return KF_EXIT_USAGE;
    }
    if (g->output != KF_OUT_JSON)
        printf("\n");
    return finish(g, (const void *)last);
}

int kf_cmd_node_drain(int argc, char **argv, const kf_cli_globals *g0) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"deadline", required_argument, NULL, OPT_DEADLINE},
        {"parallel", required_argument, NULL, OPT_PARALLEL},
        {"force", no_argument, NULL, OPT_FORCE},
        {"reason", required_argument, NULL, OPT_REASON},
        {"who", required_argument, NULL, OPT_WHO},
        {"no-wait", no_argument, NULL, OPT_NO_WAIT},
        {"status", no_argument, NULL, OPT_STATUS},
        {"cancel", no_argument, NULL, OPT_CANCEL},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "node drain";
    kf_cli_globals g = *g0;
    Kfleet__V1__DrainNodeRequest req = KFLEET__V1__DRAIN_NODE_REQUEST__INIT;
    req.who = (char *)kf_node_default_who();
    bool no_wait = false, status = false, cancel = false, start_opts = false;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            kf_cli_help(stdout, drain_help);
            return KF_EXIT_OK;
        case OPT_DEADLINE: {
            uint64_t ms;
            if (kf_parse_duration_ms(optarg, &ms) < 0 || ms < 1000 || ms > 86400ULL * 1000)
                return kf_cli_usage_error(cmd, "--deadline: '%s' is not a duration from 1s to 24h", optarg);
            req.deadline_s = (uint32_t)(ms / 1000);
            start_opts = true;
            break;
        }
        case OPT_PARALLEL: {
            char *end;
            errno = 0;
            unsigned long n = strtoul(optarg, &end, 10);
            if (errno || *end || end == optarg || n < 1 || n > 64)
                return kf_cli_usage_error(cmd, "--parallel: '%s' is not a number from 1 to 64", optarg);
            req.parallel = (uint32_t)n;
            start_opts = true;
            break;
        }
        case OPT_FORCE:
            req.force = true;
            start_opts = true;
            break;
        case OPT_REASON:
            req.reason = optarg;
            start_opts = true;
            break;
        case OPT_WHO:
            req.who = optarg;
            break;
        case OPT_NO_WAIT:
            no_wait = true;
            break;
        case OPT_STATUS:
            status = true;
            break;
        case OPT_CANCEL:
            cancel = true;
            break;
        default: {
            int r = kf_cli_other_option(cmd, c, argv, &g);
            if (r != KF_CLI_GO)
                return r;
        }
        }
    }
    int r = kf_cli_check_args(cmd, "NODE", argc, argv, 1, 1);
    if (r != KF_CLI_GO)
        return r;
    if (status && cancel)
        return kf_cli_usage_error(cmd, "--status and --cancel exclude each other");
    if ((status || cancel) && (start_opts || no_wait))
        return kf_cli_usage_error(cmd, "--%s takes no drain options", status ? "status" : "cancel");
    const char *node = argv[optind];
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    _cleanup_pb_ Kfleet__V1__DrainStatus *d = NULL;
    kf_rpc_status st = {0};
    int64_t to = kf_cli_timeout(&g, KF_CLI_UNARY_TIMEOUT_MS);
    if (status || cancel) {
        Kfleet__V1__GetDrainRequest gr = KFLEET__V1__GET_DRAIN_REQUEST__INIT;
        Kfleet__V1__CancelDrainRequest cr = KFLEET__V1__CANCEL_DRAIN_REQUEST__INIT;
        gr.node = cr.node = (char *)node;
        cr.who = req.who;
        if (kf_grpc_unary(client, status ? CLUSTER_METHOD("GetDrain") : CLUSTER_METHOD("CancelDrain"),
                          status ? &gr.base : &cr.base, &kfleet__v1__drain_status__descriptor, to,
                          (ProtobufCMessage **)&d, &st) < 0)
            return kf_node_rpc_error(&g, &st);
        return finish(&g, d);
    }
    req.node = (char *)node;
    if (kf_grpc_unary(client, CLUSTER_METHOD("DrainNode"), &req.base, &kfleet__v1__drain_status__descriptor, to,
                      (ProtobufCMessage **)&d, &st) < 0)
        return kf_node_rpc_error(&g, &st);
    if (no_wait)
        return finish(&g, d);
    if (g.output != KF_OUT_JSON) {
        char x[64];
        printf("draining node %s: %u session(s), %u at a time, deadline %s%s\n", d->node, d->total, d->parallel,
               kf_fmt_when(d->deadline_unix_ms, kf_unix_ms(), x, sizeof(x)), d->force ? " (force)" : "");
        fflush(stdout);
    }
    return follow(&g, client, node);
}
