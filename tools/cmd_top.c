/* cmd_top.c - "kfleetctl top": a live view of the cluster's nodes from a
 * scheduler's kfleet.v1.Cluster (ListNodes + GetClusterSummary), redrawn
 * every --interval until interrupted; --once prints one frame and exits
 * (for scripts and tests; with -o json, the nodes and the summary as JSON).
 *
 * Each frame is a cluster line (nodes by state, sessions of slots, warm
 * pools, memory and cpu reserved as a share of capacity) and one row per
 * node, busiest first by its dominant share (the larger of memory, cpu and
 * slots used): the nodes an operator looks at first. On a terminal the
 * screen is cleared between frames; otherwise frames follow each other.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/util.h"
#include "kfleet/v1/cluster.pb-c.h"
#include "kfleetctl.h"
#include "output.h"

#define TOP_METHOD(m) "/kfleet.v1.Cluster/" m
#define TOP_PAGE_SIZE 1000
#define TOP_MAX_NODES 100000 /* stops a server that keeps paging */
#define TOP_DEFAULT_INTERVAL_MS 2000

static const char top_help[] =
    "Usage: kfleetctl top [--once] [--interval DUR] [--count N]\n"
    "\n"
    "A live view of the cluster's nodes (needs a scheduler, --server): per node its\n"
    "state, sessions of slots, warm pool, memory and cpu reserved of capacity and\n"
    "how long ago it reported, busiest first; above them the cluster's totals.\n"
    "Redrawn every --interval until Ctrl-C.\n"
    "\n"
    "Options:\n"
    "      --once           print one frame and exit (scripts, -o json)\n"
    "      --interval DUR   time between frames (default 2s; e.g. 500ms, 5s)\n"
    "      --count N        stop after N frames\n"
    "  -h, --help           show this help\n";

enum { OPT_ONCE = KF_OPT_LOCAL, OPT_INTERVAL, OPT_COUNT };

/* One frame's data: every page of ListNodes (kept, the nodes point into
 * them) and the summary. */
typedef struct frame {
    Kfleet__V1__ListNodesResponse **pages;
    size_t n_pages;
    const Kfleet__V1__Node **nodes;
    size_t n_nodes;
    Kfleet__V1__ClusterSummary *summary;
} frame;

static void frame_done(frame *f) {
    for (size_t i = 0; i < f->n_pages; i++)
        protobuf_c_message_free_unpacked(&f->pages[i]->base, NULL);
    free(f->pages);
    free(f->nodes);
    if (f->summary)
        protobuf_c_message_free_unpacked(&f->summary->base, NULL);
    memset(f, 0, sizeof(*f));
}

static int unary(const kf_cli_globals *g, kf_grpc_client *client, const char *method,
                 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp) {
    kf_rpc_status st;
    if (kf_grpc_unary(client, method, req, desc, kf_cli_timeout(g, KF_CLI_UNARY_TIMEOUT_MS), resp, &st) == 0)
        return 0;
    if (st.code == GRPC_STATUS_UNIMPLEMENTED) {
        fprintf(stderr, "kfleetctl: %s does not serve kfleet.v1.Cluster: it is not a scheduler (top needs "
                        "--server pointing at kfleet-scheduler)\n", g->server);
        return KF_EXIT_USAGE;
    }
    return kf_cli_rpc_error(&st);
}

/* The share (0..1000 per mille) of the node's most used resource. */
static uint64_t permille(uint64_t used, uint64_t cap) {
    if (!cap)
        return used ? 1000 : 0;
    return used >= cap ? 1000 : used * 1000 / cap;
}

static uint64_t dominant(const Kfleet__V1__Node *n) {
    if (!n->capacity || !n->usage)
        return 0;
    uint64_t m = permille(n->usage->memory_reserved_bytes, n->capacity->memory_bytes);
    uint64_t c = permille(n->usage->cpu_reserved_millis, n->capacity->cpu_millis);
    uint64_t s = permille(n->usage->sessions, n->capacity->session_slots);
    return m > c ? (m > s ? m : s) : (c > s ? c : s);
}

static int busiest_first(const void *a, const void *b) {
    const Kfleet__V1__Node *x = *(const Kfleet__V1__Node *const *)a, *y = *(const Kfleet__V1__Node *const *)b;
    uint64_t dx = dominant(x), dy = dominant(y);
    if (dx != dy)
        return dx < dy ? 1 : -1;
    return strcmp(x->id, y->id);
}

static int fetch(const kf_cli_globals *g, kf_grpc_client *client, frame *f) {
    const char *token = "";
    for (;;) {
        Kfleet__V1__ListNodesRequest req = KFLEET__V1__LIST_NODES_REQUEST__INIT;
        req.page_size = TOP_PAGE_SIZE;
        req.page_token = (char *)token;
        Kfleet__V1__ListNodesResponse *resp = NULL;
        int r = unary(g, client, TOP_METHOD("ListNodes"), &req.base, &kfleet__v1__list_nodes_response__descriptor,
                      (ProtobufCMessage **)&resp);
        if (r != 0)
            return r;
        Kfleet__V1__ListNodesResponse **pages = realloc(f->pages, (f->n_pages + 1) * sizeof(*pages));
        const Kfleet__V1__Node **nodes =
            pages ? realloc(f->nodes, (f->n_nodes + resp->n_nodes + 1) * sizeof(*nodes)) : NULL;
        if (pages)
            f->pages = pages;
        if (!nodes) {
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            fprintf(stderr, "kfleetctl: out of memory\n");
            return KF_EXIT_USAGE;
        }
        f->nodes = nodes;
        f->pages[f->n_pages++] = resp;
        for (size_t i = 0; i < resp->n_nodes; i++)
            f->nodes[f->n_nodes++] = resp->nodes[i];
        bool repeated = strcmp(token, "") && !strcmp(token, resp->next_page_token);
        if (!resp->next_page_token[0] || repeated || f->n_nodes >= TOP_MAX_NODES)
            break;
        token = resp->next_page_token; /* lives in the kept page */
    }
    Kfleet__V1__GetClusterSummaryRequest sreq = KFLEET__V1__GET_CLUSTER_SUMMARY_REQUEST__INIT;
    return unary(g, client, TOP_METHOD("GetClusterSummary"), &sreq.base, &kfleet__v1__cluster_summary__descriptor,
                 (ProtobufCMessage **)&f->summary);
}

static void pct(uint64_t used, uint64_t cap, char *buf, size_t size) {
    if (!cap)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%" PRIu64 "%%", permille(used, cap) / 10);
}

static void print_frame(const kf_cli_globals *g, frame *f) {
    static const Kfleet__V1__NodeCapacity c0 = KFLEET__V1__NODE_CAPACITY__INIT;
    static const Kfleet__V1__NodeUsage u0 = KFLEET__V1__NODE_USAGE__INIT;
    const Kfleet__V1__ClusterSummary *s = f->summary;
    const Kfleet__V1__NodeCapacity *cc = s->capacity ? s->capacity : &c0;
    const Kfleet__V1__NodeUsage *cu = s->usage ? s->usage : &u0;
    char when[32], mem[24], cpu[24];
    int64_t now = kf_unix_ms();
    pct(cu->memory_reserved_bytes, cc->memory_bytes, mem, sizeof(mem));
    pct(cu->cpu_reserved_millis, cc->cpu_millis, cpu, sizeof(cpu));
    printf("kfleet top - %s - %s\n", g->server, kf_fmt_time(now, when, sizeof(when)));
    printf("nodes: %" PRIu64 " (%" PRIu64 " ready, %" PRIu64 " cordoned, %" PRIu64 " not ready, %" PRIu64
           " draining)  sessions: %" PRIu64 "/%" PRIu64 "  pool: %" PRIu64 "/%" PRIu64 "  memory: %s  cpu: %s\n\n",
           s->nodes, s->ready, s->cordoned, s->not_ready, s->draining, cu->sessions, cc->session_slots,
           cu->pool_ready, cu->pool_target, mem, cpu);

    qsort(f->nodes, f->n_nodes, sizeof(*f->nodes), busiest_first);
    static const char *const headers[] = {"NODE", "STATE", "SESSIONS", "POOL", "MEM%", "CPU%", "REPORTED"};
    _cleanup_table_ kf_table *t = kf_table_new(KF_ARRAY_SIZE(headers), headers);
    if (!t)
        return;
    for (size_t i = 0; i < f->n_nodes; i++) {
        const Kfleet__V1__Node *n = f->nodes[i];
        const Kfleet__V1__NodeCapacity *c = n->capacity ? n->capacity : &c0;
        const Kfleet__V1__NodeUsage *u = n->usage ? n->usage : &u0;
        char state[32], sess[48], pool[48], m[24], p[24], ago[32];
        const char *sname =
            kf_enum_short_name(&kfleet__v1__node_state__descriptor, n->state, "NODE_STATE_", state, sizeof(state));
        snprintf(sess, sizeof(sess), "%" PRIu64 "/%" PRIu64, u->sessions, c->session_slots);
        snprintf(pool, sizeof(pool), "%" PRIu64 "/%" PRIu64, u->pool_ready, u->pool_target);
        pct(u->memory_reserved_bytes, c->memory_bytes, m, sizeof(m));
        pct(u->cpu_reserved_millis, c->cpu_millis, p, sizeof(p));
        if (n->usage_updated_unix_ms > 0)
            kf_fmt_ago(n->usage_updated_unix_ms, now, ago, sizeof(ago));
        else
            snprintf(ago, sizeof(ago), "-");
        const char *row[] = {n->id, sname, sess, pool, m, p, ago};
        kf_table_row(t, row);
    }
    kf_table_print(t, stdout);
}

static int print_json(frame *f) {
    cJSON *out = cJSON_CreateObject();
    cJSON *arr = out ? cJSON_AddArrayToObject(out, "nodes") : NULL;
    if (!arr) {
        cJSON_Delete(out);
        fprintf(stderr, "kfleetctl: out of memory\n");
        return KF_EXIT_USAGE;
    }
    for (size_t i = 0; i < f->n_nodes; i++)
        cJSON_AddItemToArray(arr, kf_pb_to_json(&f->nodes[i]->base));
    cJSON_AddItemToObject(out, "summary", kf_pb_to_json(&f->summary->base));
    kf_print_json(out, true);
    cJSON_Delete(out);
    return 0;
}

int kf_cmd_top(int argc, char **argv, const kf_cli_globals *g0) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"once", no_argument, NULL, OPT_ONCE},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"count", required_argument, NULL, OPT_COUNT},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "top";
    kf_cli_globals g = *g0;
    uint64_t interval_ms = TOP_DEFAULT_INTERVAL_MS;
    unsigned long count = 0; /* 0 = until interrupted */
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            kf_cli_help(stdout, top_help);
            return KF_EXIT_OK;
        case OPT_ONCE: count = 1; break;
        case OPT_INTERVAL:
            if (kf_parse_duration_ms(optarg, &interval_ms) < 0 || interval_ms < 100 || interval_ms > 3600000)
                return kf_cli_usage_error(cmd, "--interval: '%s' is not a duration of 100ms..1h", optarg);
            break;
        case OPT_COUNT: {
            char *end;
            errno = 0;
            count = strtoul(optarg, &end, 10);
            if (errno || *end || end == optarg || count == 0 || count > 1000000)
                return kf_cli_usage_error(cmd, "--count: '%s' is not 1..1000000", optarg);
            break;
        }
        default: {
            int r = kf_cli_other_option(cmd, c, argv, &g);
            if (r != KF_CLI_GO)
                return r;
        }
        }
    }
    int r = kf_cli_check_args(cmd, "no arguments", argc, argv, 0, 0);
    if (r != KF_CLI_GO)
        return r;
    if (g.output == KF_OUT_JSON && count != 1)
        return kf_cli_usage_error(cmd, "-o json prints one frame: add --once");
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    bool tty = isatty(STDOUT_FILENO);
    for (unsigned long i = 0; count == 0 || i < count; i++) {
        if (i > 0) {
            struct timespec ts = {.tv_sec = (time_t)(interval_ms / 1000),
                                  .tv_nsec = (long)(interval_ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        }
        frame f = {0};
        r = fetch(&g, client, &f);
        if (r == 0) {
            if (g.output == KF_OUT_JSON) {
                r = print_json(&f);
            } else {
                if (tty && count != 1)
                    fputs("\033[H\033[2J", stdout); /* home, clear */
                else if (i > 0)
                    putchar('\n');
                print_frame(&g, &f);
            }
        }
        frame_done(&f);
        if (r != 0)
            return r;
        if ((r = kf_cli_flush_stdout()) != 0)
            return r;
    }
    return KF_EXIT_OK;
}
