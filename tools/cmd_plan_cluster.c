/* cmd_plan_cluster.c - "kfleetctl plan drain|lose|fit": what-ifs against the
 * live cluster. Reads every node through the scheduler's kfleet.v1.Cluster
 * service (ListNodes, paged), loads them into the real placement library
 * through kf_plan's what-if API (tools/plan/plan_whatif.c) and answers:
 *
 *   drain NODE...        do these nodes' sessions fit elsewhere now?
 *   lose  --zone Z | --count N | NODE...
 *                        the same for nodes lost (a zone = the nodes labelled
 *                        zone=Z; --count N = the N busiest)
 *   fit   --memory M --cpu C
 *                        how many more sessions of that shape fit?
 *
 * Cordoned and not-registered nodes take nothing, as in the scheduler.
 * Nothing is written to the cluster: the answers are computed here.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_plan.h"
#include "kf/cleanup.h"
#include "kf/util.h"
#include "kfleet/v1/cluster.pb-c.h"
#include "output.h"
#include "plan.h"

#define CLUSTER_METHOD(m) "/kfleet.v1.Cluster/" m
#define MAX_LIST_PAGES 10000 /* a server that keeps returning page tokens */
#define FIT_LIMIT_MAX 10000000ull

/* ---- reading the cluster ---------------------------------------------------------- */

typedef char label_buf[KF_PLACE_LABELS_MAX][KF_PLACE_LABEL_MAX + 1];

typedef struct snapshot {
    Kfleet__V1__ListNodesResponse **pages; /* own the node ids */
    size_t npages;
    kf_place_node *nodes;
    label_buf *labels;
    size_t n, cap;
    kf_plan_cluster *pc;
} snapshot;

static void snapshot_done(snapshot *s) {
    for (size_t i = 0; i < s->npages; i++)
        protobuf_c_message_free_unpacked(&s->pages[i]->base, NULL);
    free(s->pages);
    free(s->nodes);
    free(s->labels);
    kf_plan_cluster_free(s->pc);
}

static uint32_t clamp32(uint64_t v) { return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v; }

/* One listed node as the placement sees it. A node that is not registered
 * has no capacity: it is given 1 of each (the placement wants > 0) and no
 * READY flag, so it takes nothing. Labels that do not fit the placement's
 * limits (8 per node, 63 bytes) are left out. */
static void to_place_node(const Kfleet__V1__Node *n, kf_place_node *p, label_buf *lb) {
    const Kfleet__V1__NodeCapacity *c = n->capacity;
    const Kfleet__V1__NodeUsage *u = n->usage;
    bool registered = n->state == KFLEET__V1__NODE_STATE__NODE_STATE_READY ||
                      n->state == KFLEET__V1__NODE_STATE__NODE_STATE_CORDONED ||
                      n->state == KFLEET__V1__NODE_STATE__NODE_STATE_DRAINING;
    *p = (kf_place_node){.id = n->id};
    p->mem_capacity = c && c->memory_bytes ? c->memory_bytes : 1;
    p->cpu_capacity = c && c->cpu_millis ? c->cpu_millis : 1;
    p->slot_capacity = c && c->session_slots ? clamp32(c->session_slots) : 1;
    if (u) {
        p->mem_used = u->memory_reserved_bytes;
        p->cpu_used = u->cpu_reserved_millis;
        p->slots_used = clamp32(u->sessions);
    }
    if (registered)
        p->flags |= KF_PLACE_NODE_READY;
    if (n->state == KFLEET__V1__NODE_STATE__NODE_STATE_CORDONED || (n->admin && n->admin->cordoned))
        p->flags |= KF_PLACE_NODE_CORDONED;
    if (n->state == KFLEET__V1__NODE_STATE__NODE_STATE_DRAINING)
        p->flags |= KF_PLACE_NODE_DRAINING;
    for (size_t i = 0; i < n->n_labels && p->nlabels < KF_PLACE_LABELS_MAX; i++) {
        char *dst = (*lb)[p->nlabels];
        int len = snprintf(dst, KF_PLACE_LABEL_MAX + 1, "%s=%s", n->labels[i]->key, n->labels[i]->value);
        if (len < 2 || len > KF_PLACE_LABEL_MAX)
            continue;
        p->labels[p->nlabels++] = dst;
    }
}

static int keep_page(snapshot *s, Kfleet__V1__ListNodesResponse *page) {
    Kfleet__V1__ListNodesResponse **pages = realloc(s->pages, (s->npages + 1) * sizeof(*pages));
    if (!pages)
        return -ENOMEM;
    s->pages = pages;
    s->pages[s->npages++] = page;
    if (s->n + page->n_nodes > s->cap) {
        size_t cap = (s->n + page->n_nodes) * 2;
        kf_place_node *nodes = realloc(s->nodes, cap * sizeof(*nodes));
        if (nodes)
            s->nodes = nodes;
        label_buf *labels = realloc(s->labels, cap * sizeof(*labels));
        if (labels)
            s->labels = labels;
        if (!nodes || !labels)
            return -ENOMEM;
        s->cap = cap;
    }
    for (size_t i = 0; i < page->n_nodes; i++, s->n++)
        to_place_node(page->nodes[i], &s->nodes[s->n], &s->labels[s->n]);
    /* Label pointers point into s->labels, which may have moved: redo them. */
    for (size_t i = 0; i < s->n; i++)
        for (unsigned l = 0; l < s->nodes[i].nlabels; l++)
            s->nodes[i].labels[l] = s->labels[i][l];
    return 0;
}

static int rpc_error(const kf_cli_globals *g, const kf_rpc_status *st) {
    if (st->code == GRPC_STATUS_UNIMPLEMENTED) {
        fprintf(stderr,
                "kfleetctl: %s does not serve kfleet.v1.Cluster: it is not a scheduler (plan's what-ifs read "
                "the live cluster through kfleet-scheduler: --server)\n",
                g->server);
        return KF_EXIT_USAGE;
    }
    return kf_cli_rpc_error(st);
}

/* Reads every node and loads them into the placement with `policy`. */
static int read_cluster(const kf_cli_globals *g, const kf_place_policy *policy, snapshot *s) {
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    int r = kf_cli_connect(g, &client);
    if (r != 0)
        return r;
    const char *token = "";
    for (int page = 0; page < MAX_LIST_PAGES; page++) {
        Kfleet__V1__ListNodesRequest req = KFLEET__V1__LIST_NODES_REQUEST__INIT;
        req.page_size = 1000;
        req.page_token = (char *)token;
        Kfleet__V1__ListNodesResponse *resp = NULL;
        kf_rpc_status st;
        if (kf_grpc_unary(client, CLUSTER_METHOD("ListNodes"), &req.base, &kfleet__v1__list_nodes_response__descriptor,
                          kf_cli_timeout(g, KF_CLI_UNARY_TIMEOUT_MS), (ProtobufCMessage **)&resp, &st) < 0)
            return rpc_error(g, &st);
        if (keep_page(s, resp) < 0) {
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            fprintf(stderr, "kfleetctl: out of memory reading the nodes\n");
            return KF_EXIT_USAGE;
        }
        if (!resp->next_page_token[0] || !strcmp(token, resp->next_page_token))
            break; /* the last page, or a server repeating itself */
        token = resp->next_page_token; /* lives in the kept page */
    }
    kf_error err = {0};
    if (kf_plan_cluster_new(&s->pc, s->nodes, s->n, policy, &err) < 0) {
        fprintf(stderr, "kfleetctl: the cluster's nodes: %s\n", err.msg);
        return KF_EXIT_USAGE;
    }
    return 0;
}

/* ---- options ---------------------------------------------------------------------- */

enum { OPT_FROM_CLUSTER = KF_OPT_LOCAL, OPT_POLICY, OPT_ZONE, OPT_COUNT, OPT_MEMORY, OPT_CPU, OPT_LIMIT };

typedef struct whatif_opts {
    kf_place_policy policy;
    const char *zone;
    long long count; /* -1 = not given */
    uint64_t memory, cpu, limit;
} whatif_opts;

/* The options of the three verbs; `allowed` lists the verb's own (as OPT_*
 * ids, 0-terminated). Returns KF_CLI_GO or an exit code. */
static int parse_opts(const char *cmd, const char *help, const int *allowed, int argc, char **argv,
                      kf_cli_globals *g, whatif_opts *o) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"from-cluster", no_argument, NULL, OPT_FROM_CLUSTER},
        {"policy", required_argument, NULL, OPT_POLICY},
        {"zone", required_argument, NULL, OPT_ZONE},
        {"count", required_argument, NULL, OPT_COUNT},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"cpu", required_argument, NULL, OPT_CPU},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {NULL, 0, NULL, 0},
    };
    *o = (whatif_opts){.policy = {.mode = KF_PLACE_SPREAD}, .count = -1, .limit = 100000};
    int c;
    char *end;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (c == 'h') {
            kf_cli_help(stdout, help);
            return KF_EXIT_OK;
        }
        if (c >= KF_OPT_LOCAL && c != OPT_FROM_CLUSTER && c != OPT_POLICY) {
            bool ok = false;
            for (const int *a = allowed; *a && !ok; a++)
                ok = *a == c;
            if (!ok)
                return kf_cli_bad_option(cmd, 0, argv);
        }
        switch (c) {
        case OPT_FROM_CLUSTER: /* the only source of nodes; accepted to say so */
            break;
        case OPT_POLICY:
            if (!strcmp(optarg, "spread"))
                o->policy.mode = KF_PLACE_SPREAD;
            else if (!strcmp(optarg, "binpack"))
                o->policy.mode = KF_PLACE_BINPACK;
            else
                return kf_cli_usage_error(cmd, "bad --policy '%s' (spread or binpack)", optarg);
            break;
        case OPT_ZONE:
            if (!*optarg || strlen(optarg) + 5 > KF_PLACE_LABEL_MAX)
                return kf_cli_usage_error(cmd, "bad --zone '%s' (1..%d bytes)", optarg, KF_PLACE_LABEL_MAX - 5);
            o->zone = optarg;
            break;
        case OPT_COUNT:
            o->count = strtoll(optarg, &end, 10);
            if (*end || end == optarg || o->count < 1 || o->count > KF_PLACE_NODES_MAX)
                return kf_cli_usage_error(cmd, "bad --count '%s' (1..%d nodes)", optarg, KF_PLACE_NODES_MAX);
            break;
        case OPT_MEMORY:
            if (kf_parse_size(optarg, &o->memory) < 0 || o->memory == 0)
                return kf_cli_usage_error(cmd, "bad --memory '%s' (a size, e.g. 512M, 2G)", optarg);
            break;
        case OPT_CPU:
            if (kf_plan_parse_cpu(optarg, &o->cpu) < 0)
                return kf_cli_usage_error(cmd, "bad --cpu '%s' (cores, e.g. 0.5, or millicores, e.g. 500m)", optarg);
            break;
        case OPT_LIMIT: {
            unsigned long long v = strtoull(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > FIT_LIMIT_MAX)
                return kf_cli_usage_error(cmd, "bad --limit '%s' (1..%llu sessions)", optarg, FIT_LIMIT_MAX);
            o->limit = v;
            break;
        }
        default: {
            int r = kf_cli_global_option(cmd, c, optarg, g);
            if (r < 0)
                return KF_EXIT_USAGE;
            if (r == 0)
                return kf_cli_bad_option(cmd, c, argv);
        }
        }
    }
    return KF_CLI_GO;
}

/* ---- drain, lose ------------------------------------------------------------------ */

static const char drain_help[] =
    "Usage: kfleetctl plan drain NODE... [--policy spread|binpack]\n"
    "\n"
    "Can these nodes be drained now? Reads the live cluster from the scheduler\n"
    "(--server), takes the nodes out, and places each of their sessions on the\n"
    "other nodes with the scheduler's placement code, largest first. Cordoned and\n"
    "not-ready nodes take nothing. A node's sessions are known by its totals, so\n"
    "they are taken as equal shares of its reserved memory and cpu. Changes\n"
    "nothing in the cluster.\n"
    "\n"
    "Options:\n"
    "      --from-cluster        read the nodes from the scheduler (the default)\n"
    "      --policy MODE         spread (default) or binpack, as the scheduler runs\n"
    "  -o json                   the answer as JSON\n"
    "  -h, --help                show this help\n";

static const char lose_help[] =
    "Usage: kfleetctl plan lose (--zone ZONE | --count N | NODE...) [--policy MODE]\n"
    "\n"
    "What if we lose these nodes? As 'plan drain', for the nodes of a zone (those\n"
    "labelled zone=ZONE), the N nodes with the most sessions, or the nodes named.\n"
    "\n"
    "Options:\n"
    "      --zone ZONE           the nodes with label zone=ZONE\n"
    "      --count N             the N busiest nodes (most sessions, then memory)\n"
    "      --from-cluster        read the nodes from the scheduler (the default)\n"
    "      --policy MODE         spread (default) or binpack\n"
    "  -o json                   the answer as JSON\n"
    "  -h, --help                show this help\n";

static void free_cells(const kf_plan_move *m, char *buf, size_t size) {
    char mem[16];
    snprintf(buf, size, "%" PRIu64 " slots, %s memory, %g cpu", m->free_slots, kf_fmt_bytes(m->free_memory, mem, sizeof(mem)),
             m->free_cpu / 1000.0);
}

static int print_move(const kf_cli_globals *g, const char *question, const char *const *ids, size_t n,
                      const kf_plan_move *m) {
    bool fits = m->unplaced == 0;
    if (g->output == KF_OUT_JSON) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            return KF_EXIT_USAGE;
        cJSON_AddStringToObject(o, "question", question);
        cJSON *arr = cJSON_AddArrayToObject(o, "nodes");
        for (size_t i = 0; arr && i < n; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateString(ids[i]));
        cJSON_AddNumberToObject(o, "sessions", (double)m->sessions);
        cJSON_AddNumberToObject(o, "placed", (double)m->placed);
        cJSON_AddNumberToObject(o, "unplaced", (double)m->unplaced);
        cJSON_AddBoolToObject(o, "fits", fits);
        cJSON_AddStringToObject(o, "why", m->why);
        cJSON *f = cJSON_AddObjectToObject(o, "free_after");
        cJSON_AddNumberToObject(f, "session_slots", (double)m->free_slots);
        cJSON_AddNumberToObject(f, "memory_bytes", (double)m->free_memory);
        cJSON_AddNumberToObject(f, "cpu_millis", (double)m->free_cpu);
        kf_print_json(o, true);
        cJSON_Delete(o);
        return kf_cli_flush_stdout();
    }
    _cleanup_table_ kf_table *t = kf_table_new(2, NULL);
    if (!t)
        return KF_EXIT_USAGE;
    char b[KF_ERROR_MSG_MAX + 16] = "";
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof(b); i++)
        o += (size_t)snprintf(b + o, sizeof(b) - o, "%s%s", i ? ", " : "", ids[i]);
    kf_table_kv(t, "nodes:", b);
    snprintf(b, sizeof(b), "%" PRIu64, m->sessions);
    kf_table_kv(t, "sessions on them:", b);
    snprintf(b, sizeof(b), "%" PRIu64 " placed elsewhere, %" PRIu64 " not", m->placed, m->unplaced);
    kf_table_kv(t, "re-placed:", b);
    if (fits)
        snprintf(b, sizeof(b), "yes: every session fits on the other nodes");
    else
        snprintf(b, sizeof(b), "no: %s", m->why);
    kf_table_kv(t, "fits:", b);
    free_cells(m, b, sizeof(b));
    kf_table_kv(t, "free after:", b);
    printf("%s?\n", !strcmp(question, "drain") ? "Can these nodes be drained now" : "What if these nodes are lost");
    kf_table_print(t, stdout);
    return kf_cli_flush_stdout();
}

static int run_move(const kf_cli_globals *g, const char *question, snapshot *s, const char *const *ids, size_t n) {
    kf_plan_move m;
    kf_error err = {0};
    if (kf_plan_remove_nodes(s->pc, ids, n, &m, &err) < 0) {
        fprintf(stderr, "kfleetctl plan %s: %s\n", question, err.msg);
        return KF_EXIT_USAGE;
    }
    return print_move(g, question, ids, n, &m);
}

int kf_plan_verb_drain(int argc, char **argv, const kf_cli_globals *g0) {
    static const int allowed[] = {0};
    const char *cmd = "plan drain";
    kf_cli_globals g = *g0;
    whatif_opts o;
    int r = parse_opts(cmd, drain_help, allowed, argc, argv, &g, &o);
    if (r != KF_CLI_GO)
        return r;
    if ((r = kf_cli_check_args(cmd, "NODE...", argc, argv, 1, -1)) != KF_CLI_GO)
        return r;
    _cleanup_(snapshot_done) snapshot s = {0};
    if ((r = read_cluster(&g, &o.policy, &s)) != 0)
        return r;
    return run_move(&g, "drain", &s, (const char *const *)argv + optind, (size_t)(argc - optind));
}

int kf_plan_verb_lose(int argc, char **argv, const kf_cli_globals *g0) {
    static const int allowed[] = {OPT_ZONE, OPT_COUNT, 0};
    const char *cmd = "plan lose";
    kf_cli_globals g = *g0;
    whatif_opts o;
    int r = parse_opts(cmd, lose_help, allowed, argc, argv, &g, &o);
    if (r != KF_CLI_GO)
        return r;
    int ways = (o.zone != NULL) + (o.count > 0) + (optind < argc);
    if (ways != 1)
        return kf_cli_usage_error(cmd, "say which nodes: --zone ZONE, --count N or NODE... (exactly one)");
    _cleanup_(snapshot_done) snapshot s = {0};
    if ((r = read_cluster(&g, &o.policy, &s)) != 0)
        return r;
    if (optind < argc)
        return run_move(&g, "lose", &s, (const char *const *)argv + optind, (size_t)(argc - optind));
    _cleanup_free_ const char **ids = calloc(s.n ? s.n : 1, sizeof(*ids));
    if (!ids)
        return KF_EXIT_USAGE;
    size_t n;
    if (o.zone) {
        char label[KF_PLACE_LABEL_MAX + 1];
        snprintf(label, sizeof(label), "zone=%s", o.zone);
        n = kf_plan_nodes_with_label(s.pc, label, ids, s.n);
        if (n == 0) {
            fprintf(stderr, "kfleetctl %s: no node has the label %s\n", cmd, label);
            return KF_EXIT_USAGE;
        }
    } else {
        n = kf_plan_busiest_nodes(s.pc, (size_t)o.count, ids, s.n);
        if ((long long)n < o.count) {
            fprintf(stderr, "kfleetctl %s: --count %lld, but the cluster has %zu nodes\n", cmd, o.count, s.n);
            return KF_EXIT_USAGE;
        }
    }
    return run_move(&g, "lose", &s, ids, n);
}

/* ---- fit ----------------------------------------------------------------------------- */

static const char fit_help[] =
    "Usage: kfleetctl plan fit --memory SIZE --cpu CORES [--limit N] [--policy MODE]\n"
    "\n"
    "How many more sessions of this shape fit in the live cluster now? Each is\n"
    "placed by the scheduler's placement code on the nodes that take sessions\n"
    "(cordoned and not-ready nodes do not count), until one does not fit; the\n"
    "answer says what stopped it. Changes nothing in the cluster.\n"
    "\n"
    "Options:\n"
    "      --memory SIZE         memory of one session (e.g. 512M, 2G)\n"
    "      --cpu CORES           cpu of one session (e.g. 0.5, or 500m)\n"
    "      --limit N             stop counting at N (default 100000, at most 10000000)\n"
    "      --from-cluster        read the nodes from the scheduler (the default)\n"
    "      --policy MODE         spread (default) or binpack\n"
    "  -o json                   the answer as JSON\n"
    "  -h, --help                show this help\n";

int kf_plan_verb_fit(int argc, char **argv, const kf_cli_globals *g0) {
    static const int allowed[] = {OPT_MEMORY, OPT_CPU, OPT_LIMIT, 0};
    const char *cmd = "plan fit";
    kf_cli_globals g = *g0;
    whatif_opts o;
    int r = parse_opts(cmd, fit_help, allowed, argc, argv, &g, &o);
    if (r != KF_CLI_GO)
        return r;
    if ((r = kf_cli_check_args(cmd, "no arguments", argc, argv, 0, 0)) != KF_CLI_GO)
        return r;
    if (!o.memory || !o.cpu)
        return kf_cli_usage_error(cmd, "--memory SIZE and --cpu CORES are required (the session shape)");
    _cleanup_(snapshot_done) snapshot s = {0};
    if ((r = read_cluster(&g, &o.policy, &s)) != 0)
        return r;
    char why[KF_ERROR_MSG_MAX], mem[16];
    int64_t n = kf_plan_fit(s.pc, o.memory, o.cpu, o.limit, why, sizeof(why));
    if (n < 0) {
        fprintf(stderr, "kfleetctl %s: the shape is not valid for the placement\n", cmd);
        return KF_EXIT_USAGE;
    }
    if (g.output == KF_OUT_JSON) {
        cJSON *j = cJSON_CreateObject();
        if (!j)
            return KF_EXIT_USAGE;
        cJSON_AddStringToObject(j, "question", "fit");
        cJSON_AddNumberToObject(j, "memory_bytes", (double)o.memory);
        cJSON_AddNumberToObject(j, "cpu_millis", (double)o.cpu);
        cJSON_AddNumberToObject(j, "sessions", (double)n);
        cJSON_AddStringToObject(j, "stopped_by", why);
        kf_print_json(j, true);
        cJSON_Delete(j);
    } else {
        printf("%" PRId64 " more sessions of %s memory, %g cpu fit.\nStopped by: %s\n", n,
               kf_fmt_bytes(o.memory, mem, sizeof(mem)), o.cpu / 1000.0, why);
    }
    return kf_cli_flush_stdout();
}
