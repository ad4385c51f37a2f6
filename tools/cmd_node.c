/* cmd_node.c - "kfleetctl node ...": list, get, cordon and uncordon the
 * cluster's nodes through kfleet.v1.Cluster, which only kfleet-scheduler
 * serves (an agent answers UNIMPLEMENTED, reported as "not a scheduler").
 * Each verb is one unary call, list pages through ListNodes and adds the
 * totals of GetClusterSummary.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/util.h"
#include "kfleet/v1/cluster.pb-c.h"
#include "kfleetctl.h"
#include "output.h"

#define CLUSTER_METHOD(m) "/kfleet.v1.Cluster/" m
/* Guards against a server that keeps returning page tokens. */
#define MAX_LIST_PAGES 10000
/* Code points of a reason shown in the list table (get shows all of it). */
#define REASON_CELL_MAX 40
#define WHO_MAX 63

static const char *state_name(int state, char *buf, size_t size) {
    return kf_enum_short_name(&kfleet__v1__node_state__descriptor, state, "NODE_STATE_", buf, size);
}

/* A failed call; UNIMPLEMENTED means the server does not serve the
 * service at all, i.e. it is an agent, not a scheduler. */
int kf_node_rpc_error(const kf_cli_globals *g, const kf_rpc_status *st) {
    if (st->code == GRPC_STATUS_UNIMPLEMENTED) {
        fprintf(stderr,
                "kfleetctl: %s does not serve kfleet.v1.Cluster: it is not a scheduler (node commands "
                "need --server pointing at kfleet-scheduler)\n",
                g->server);
        return KF_EXIT_USAGE;
    }
    return kf_cli_rpc_error(st);
}

static int call(const kf_cli_globals *g, kf_grpc_client *client, const char *method,
                const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                ProtobufCMessage **resp) {
    kf_rpc_status st;
    if (kf_grpc_unary(client, method, req, resp_desc, kf_cli_timeout(g, KF_CLI_UNARY_TIMEOUT_MS), resp, &st) < 0)
        return kf_node_rpc_error(g, &st);
    return 0;
}

/* ---- cells ------------------------------------------------------------------ */

static void cores(uint64_t millis, char *buf, size_t size) { snprintf(buf, size, "%g", millis / 1000.0); }

static void used_of(uint64_t used, uint64_t cap, char *buf, size_t size) {
    snprintf(buf, size, "%" PRIu64 "/%" PRIu64, used, cap);
}

static void memory_cell(uint64_t used, uint64_t cap, char *buf, size_t size) {
    char u[16], c[16];
    snprintf(buf, size, "%s/%s", kf_fmt_bytes(used, u, sizeof(u)), kf_fmt_bytes(cap, c, sizeof(c)));
}

static void cpu_cell(uint64_t used, uint64_t cap, char *buf, size_t size) {
    char u[24], c[24];
    cores(used, u, sizeof(u));
    cores(cap, c, sizeof(c));
    snprintf(buf, size, "%s/%s", u, c);
}

/* s cut to `max` code points (UTF-8), "..." marking the cut. */
static void cut_cell(const char *s, size_t max, char *buf, size_t size) {
    size_t cps = 0, i = 0;
    for (; s[i]; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80 && cps++ == max)
            break;
    }
    if (!s[i])
        snprintf(buf, size, "%s", s);
    else
        snprintf(buf, size, "%.*s...", (int)i, s);
}

/* ---- list ------------------------------------------------------------------- */

static const char list_help[] =
    "Usage: kfleetctl node list\n"
    "\n"
    "List the cluster's nodes: state, sessions, warm pool, memory and cpu reserved\n"
    "of capacity, and for cordoned nodes why, by whom and since when; then the\n"
    "cluster's totals. Needs a scheduler (--server).\n"
    "\n"
    "Options:\n"
    "  -h, --help   show this help\n";

static void list_row(kf_table *t, const Kfleet__V1__Node *n) {
    const Kfleet__V1__NodeCapacity *c = n->capacity;
    const Kfleet__V1__NodeUsage *u = n->usage;
    const Kfleet__V1__NodeAdmin *a = n->admin;
    char state[32], sess[48], pool[48], mem[48], cpu[64], reason[REASON_CELL_MAX * 4 + 4], since[32];
    Kfleet__V1__NodeCapacity c0 = KFLEET__V1__NODE_CAPACITY__INIT;
    Kfleet__V1__NodeUsage u0 = KFLEET__V1__NODE_USAGE__INIT;
    if (!c)
        c = &c0;
    if (!u)
        u = &u0;
    used_of(u->sessions, c->session_slots, sess, sizeof(sess));
    used_of(u->pool_ready, u->pool_target, pool, sizeof(pool));
    memory_cell(u->memory_reserved_bytes, c->memory_bytes, mem, sizeof(mem));
    cpu_cell(u->cpu_reserved_millis, c->cpu_millis, cpu, sizeof(cpu));
    bool cordoned = a && a->cordoned;
    cut_cell(cordoned ? a->reason : "-", REASON_CELL_MAX, reason, sizeof(reason));
    kf_fmt_ago(cordoned ? a->at_unix_ms : 0, kf_unix_ms(), since, sizeof(since));
    const char *row[] = {n->id, state_name(n->state, state, sizeof(state)), sess, pool, mem, cpu,
                         reason, cordoned ? a->by : "-", since};
    kf_table_row(t, row);
}

static void print_totals(const Kfleet__V1__ClusterSummary *s) {
    Kfleet__V1__NodeCapacity c0 = KFLEET__V1__NODE_CAPACITY__INIT;
    Kfleet__V1__NodeUsage u0 = KFLEET__V1__NODE_USAGE__INIT;
    const Kfleet__V1__NodeCapacity *c = s->capacity ? s->capacity : &c0;
    const Kfleet__V1__NodeUsage *u = s->usage ? s->usage : &u0;
    char sess[48], pool[48], mem[48], cpu[64], drain[80] = "";
    used_of(u->sessions, c->session_slots, sess, sizeof(sess));
    used_of(u->pool_ready, u->pool_target, pool, sizeof(pool));
    memory_cell(u->memory_reserved_bytes, c->memory_bytes, mem, sizeof(mem));
    cpu_cell(u->cpu_reserved_millis, c->cpu_millis, cpu, sizeof(cpu));
    if (s->draining || s->drained)
        snprintf(drain, sizeof(drain), ", %" PRIu64 " draining, %" PRIu64 " drained", s->draining, s->drained);
    printf("\nTOTAL: %" PRIu64 " nodes (%" PRIu64 " ready, %" PRIu64 " cordoned, %" PRIu64 " not ready%s); "
           "sessions %s, pool %s, memory %s, cpu %s\n",
           s->nodes, s->ready, s->cordoned, s->not_ready, drain, sess, pool, mem, cpu);
}

static int verb_list(int argc, char **argv, const kf_cli_globals *g0) {
    const char *cmd = "node list";
    kf_cli_globals g = *g0;
    int r = kf_cli_parse_args(cmd, list_help, "no arguments", argc, argv, &g, 0, 0);
    if (r != KF_CLI_GO)
        return r;
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    static const char *const headers[] = {"NODE", "STATE", "SESSIONS", "POOL", "MEMORY", "CPU",
                                          "REASON", "BY", "SINCE"};
    _cleanup_table_ kf_table *t = kf_table_new(KF_ARRAY_SIZE(headers), headers);
    cJSON *out = cJSON_CreateObject();
    cJSON *arr = out ? cJSON_AddArrayToObject(out, "nodes") : NULL;
    if (!t || !arr) {
        cJSON_Delete(out);
        fprintf(stderr, "kfleetctl: out of memory\n");
        return KF_EXIT_USAGE;
    }
    _cleanup_free_ char *token = NULL;
    for (int page = 0; page < MAX_LIST_PAGES; page++) {
        Kfleet__V1__ListNodesRequest req = KFLEET__V1__LIST_NODES_REQUEST__INIT;
        req.page_token = token ? token : "";
        _cleanup_pb_ Kfleet__V1__ListNodesResponse *resp = NULL;
        if ((r = call(&g, client, CLUSTER_METHOD("ListNodes"), &req.base,
                      &kfleet__v1__list_nodes_response__descriptor, (ProtobufCMessage **)&resp)) != 0) {
            cJSON_Delete(out);
            return r;
        }
        for (size_t i = 0; i < resp->n_nodes; i++) {
            if (g.output == KF_OUT_JSON)
                cJSON_AddItemToArray(arr, kf_pb_to_json(&resp->nodes[i]->base));
            else
                list_row(t, resp->nodes[i]);
        }
        if (!resp->next_page_token[0] || (token && !strcmp(token, resp->next_page_token)))
            break; /* the last page, or a server repeating itself */
        free(token);
        token = strdup(resp->next_page_token);
        if (!token)
            break;
    }
    Kfleet__V1__GetClusterSummaryRequest sreq = KFLEET__V1__GET_CLUSTER_SUMMARY_REQUEST__INIT;
    _cleanup_pb_ Kfleet__V1__ClusterSummary *sum = NULL;
    if ((r = call(&g, client, CLUSTER_METHOD("GetClusterSummary"), &sreq.base,
                  &kfleet__v1__cluster_summary__descriptor, (ProtobufCMessage **)&sum)) != 0) {
        cJSON_Delete(out);
        return r;
    }
    if (g.output == KF_OUT_JSON) {
        cJSON_AddItemToObject(out, "summary", kf_pb_to_json(&sum->base));
        kf_print_json(out, true);
    } else {
        kf_table_print(t, stdout);
        print_totals(sum);
    }
    cJSON_Delete(out);
    return kf_cli_flush_stdout();
}

/* ---- get ---------------------------------------------------------------------- */

static const char get_help[] =
    "Usage: kfleetctl node get NODE\n"
    "\n"
    "Show one node: state, address, labels, capacity, usage, and its cordon.\n"
    "\n"
    "Options:\n"
    "  -h, --help   show this help\n";

static void print_node(const Kfleet__V1__Node *n) {
    _cleanup_table_ kf_table *t = kf_table_new(2, NULL);
    if (!t)
        return;
    char b[512], x[48];
    int64_t now = kf_unix_ms();
    Kfleet__V1__NodeCapacity c0 = KFLEET__V1__NODE_CAPACITY__INIT;
    Kfleet__V1__NodeUsage u0 = KFLEET__V1__NODE_USAGE__INIT;
    const Kfleet__V1__NodeCapacity *c = n->capacity ? n->capacity : &c0;
    const Kfleet__V1__NodeUsage *u = n->usage ? n->usage : &u0;
    kf_table_kv(t, "node:", n->id);
    kf_table_kv(t, "state:", state_name(n->state, b, sizeof(b)));
    kf_table_kv(t, "address:", n->address[0] ? n->address : "-");
    kf_table_kv(t, "tls:", n->tls ? "yes" : "no");
    kf_table_kv(t, "version:", n->version[0] ? n->version : "-");
    kf_table_kv(t, "started:", kf_fmt_when(n->started_unix_ms, now, b, sizeof(b)));
    size_t o = 0;
    b[0] = '\0';
    for (size_t i = 0; i < n->n_labels && o < sizeof(b); i++)
        o += (size_t)snprintf(b + o, sizeof(b) - o, "%s%s=%s", i ? "," : "", n->labels[i]->key,
                              n->labels[i]->value);
    kf_table_kv(t, "labels:", b[0] ? b : "-");
    used_of(u->sessions, c->session_slots, b, sizeof(b));
    kf_table_kv(t, "sessions (used/slots):", b);
    used_of(u->pool_ready, u->pool_target, b, sizeof(b));
    kf_table_kv(t, "warm pool (ready/target):", b);
    memory_cell(u->memory_reserved_bytes, c->memory_bytes, b, sizeof(b));
    kf_table_kv(t, "memory (reserved/capacity):", b);
    cpu_cell(u->cpu_reserved_millis, c->cpu_millis, b, sizeof(b));
    kf_table_kv(t, "cpu cores (reserved/capacity):", b);
    snprintf(b, sizeof(b), "%s ago", kf_fmt_ago(n->usage_updated_unix_ms, now, x, sizeof(x)));
    kf_table_kv(t, "usage reported:", n->usage_updated_unix_ms > 0 ? b : "-");
    const Kfleet__V1__NodeAdmin *a = n->admin;
    kf_table_kv(t, "cordoned:", a && a->cordoned ? "yes" : "no");
    if (a && a->cordoned) {
        kf_table_kv(t, "reason:", a->reason);
        kf_table_kv(t, "by:", a->by);
        kf_table_kv(t, "since:", kf_fmt_when(a->at_unix_ms, now, b, sizeof(b)));
    }
    kf_table_print(t, stdout);
}

static int print_result(const kf_cli_globals *g, const Kfleet__V1__Node *n) {
    if (g->output == KF_OUT_JSON)
        kf_print_pb_json(&n->base, true);
    else
        print_node(n);
    return kf_cli_flush_stdout();
}

static int verb_get(int argc, char **argv, const kf_cli_globals *g0) {
    const char *cmd = "node get";
    kf_cli_globals g = *g0;
    int r = kf_cli_parse_args(cmd, get_help, "NODE", argc, argv, &g, 1, 1);
    if (r != KF_CLI_GO)
        return r;
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    Kfleet__V1__GetNodeRequest req = KFLEET__V1__GET_NODE_REQUEST__INIT;
    req.node = argv[optind];
    _cleanup_pb_ Kfleet__V1__Node *n = NULL;
    if ((r = call(&g, client, CLUSTER_METHOD("GetNode"), &req.base, &kfleet__v1__node__descriptor,
                  (ProtobufCMessage **)&n)) != 0)
        return r;
    return print_result(&g, n);
}

/* ---- cordon, uncordon ----------------------------------------------------------- */

static const char cordon_help[] =
    "Usage: kfleetctl node cordon NODE --reason TEXT [--who NAME]\n"
    "\n"
    "Stop placing new sessions on NODE. Its sessions keep running. The cordon is\n"
    "kept in etcd, so it outlives restarts of the node's agent. Cordoning again with\n"
    "the same reason changes nothing; a new reason replaces the old one.\n"
    "\n"
    "Options:\n"
    "      --reason TEXT   why (required; at most 255 bytes, no control characters)\n"
    "      --who NAME      who asks, recorded when the scheduler has no tenants\n"
    "                      (default $USER); with tenants the token's tenant is\n"
    "                      recorded instead\n"
    "  -h, --help          show this help\n";

static const char uncordon_help[] =
    "Usage: kfleetctl node uncordon NODE [--who NAME]\n"
    "\n"
    "Place new sessions on NODE again (removes its cordon). Uncordoning a node that\n"
    "is not cordoned changes nothing.\n"
    "\n"
    "Options:\n"
    "      --who NAME      who asks, logged by the scheduler (default $USER)\n"
    "  -h, --help          show this help\n";

enum { OPT_REASON = KF_OPT_LOCAL, OPT_WHO };

/* $USER if it passes the server's rule (1-63 of A-Z a-z 0-9 . _ - @), else
 * "" (the server records "anonymous"): a default must never fail a call. */
const char *kf_node_default_who(void) {
    const char *u = getenv("USER");
    if (!u || !*u || strlen(u) > WHO_MAX)
        return "";
    for (const char *p = u; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '_' || *p == '-' || *p == '@'))
            return "";
    return u;
}

static int run_admin(bool cordon, int argc, char **argv, const kf_cli_globals *g0) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"reason", required_argument, NULL, OPT_REASON},
        {"who", required_argument, NULL, OPT_WHO},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = cordon ? "node cordon" : "node uncordon";
    kf_cli_globals g = *g0;
    const char *reason = NULL, *who = kf_node_default_who();
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            kf_cli_help(stdout, cordon ? cordon_help : uncordon_help);
            return KF_EXIT_OK;
        case OPT_REASON:
            if (!cordon)
                return kf_cli_usage_error(cmd, "--reason is for cordon only");
            reason = optarg;
            break;
        case OPT_WHO:
            who = optarg;
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
    if (cordon && (!reason || !*reason))
        return kf_cli_usage_error(cmd, "--reason TEXT is required (say why the node is cordoned)");
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    _cleanup_pb_ Kfleet__V1__Node *n = NULL;
    if (cordon) {
        Kfleet__V1__CordonNodeRequest req = KFLEET__V1__CORDON_NODE_REQUEST__INIT;
        req.node = argv[optind];
        req.reason = (char *)reason;
        req.who = (char *)who;
        r = call(&g, client, CLUSTER_METHOD("CordonNode"), &req.base, &kfleet__v1__node__descriptor,
                 (ProtobufCMessage **)&n);
    } else {
        Kfleet__V1__UncordonNodeRequest req = KFLEET__V1__UNCORDON_NODE_REQUEST__INIT;
        req.node = argv[optind];
        req.who = (char *)who;
        r = call(&g, client, CLUSTER_METHOD("UncordonNode"), &req.base, &kfleet__v1__node__descriptor,
                 (ProtobufCMessage **)&n);
    }
    if (r != 0)
        return r;
    if (g.output == KF_OUT_JSON)
        return print_result(&g, n);
    char state[32];
    if (cordon)
        printf("node %s cordoned by %s: %s\n", n->id, n->admin ? n->admin->by : "?",
               n->admin ? n->admin->reason : reason);
    else
        printf("node %s uncordoned (%s)\n", n->id, state_name(n->state, state, sizeof(state)));
    return kf_cli_flush_stdout();
}

static int verb_cordon(int argc, char **argv, const kf_cli_globals *g) { return run_admin(true, argc, argv, g); }
static int verb_uncordon(int argc, char **argv, const kf_cli_globals *g) {
    return run_admin(false, argc, argv, g);
}

int kf_cmd_node(int argc, char **argv, const kf_cli_globals *g) {
    static const kf_cli_verb verbs[] = {
        {"list", "", "list nodes with their usage and the cluster's totals", verb_list},
        {"get", "NODE", "show a node", verb_get},
        {"cordon", "NODE --reason TEXT", "stop placing new sessions on a node", verb_cordon},
        {"uncordon", "NODE", "place sessions on a node again", verb_uncordon},
        {"drain", "NODE [--deadline D] [--parallel N] [--force] | --status | --cancel",
         "cordon a node and move its sessions elsewhere", kf_cmd_node_drain},
    };
    return kf_cli_dispatch("node", "Inspect the cluster's nodes, cordon and drain them (needs a scheduler).", verbs,
                           KF_ARRAY_SIZE(verbs), argc, argv, g);
}
