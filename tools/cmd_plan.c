/* cmd_plan.c - "kfleetctl plan ...": capacity planning. `simulate` runs
 * the kf_plan simulation (tools/plan) of a workload file and prints how many
 * nodes the target needs, utilisation and headroom over time and the
 * Erlang-B cross-check, as a table or JSON, optionally with an SVG chart.
 * The what-ifs against the live cluster (drain, lose, fit) are in
 * cmd_plan_cluster.c. No network here.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmd_plan.h"
#include "kf/cleanup.h"
#include "kf/util.h"
#include "output.h"
#include "plan.h"

/* Rows of the time-series table (the JSON and the chart get every sample). */
#define SERIES_ROWS_MAX 48

static const char simulate_help[] =
    "Usage: kfleetctl plan simulate FILE [--nodes N] [--seed N] [--svg FILE]\n"
    "\n"
    "Simulate the workload described in FILE (YAML or JSON; see README.md and\n"
    "deploy/examples/plan.yaml) with the scheduler's placement code. With a target\n"
    "in the file, find the fewest nodes that meet it; otherwise simulate the nodes\n"
    "as given. Prints rejections, waits, utilisation and headroom over time and the\n"
    "Erlang-B figure for the same cluster taken as fixed slots.\n"
    "\n"
    "Options:\n"
    "      --nodes N      simulate exactly N nodes (spread over the node shapes in\n"
    "                     proportion to their counts), no search\n"
    "      --seed N       override the file's seed\n"
    "      --svg FILE     also write a chart of load against capacity over time\n"
    "      --baseline     place with the naive reference instead (slow; benchmarks)\n"
    "  -o json            the result as JSON, with every sample\n"
    "  -h, --help         show this help\n";

int kf_plan_read_file(const char *cmd, const char *path, char **out, size_t *len) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "kfleetctl %s: cannot open %s: %s\n", cmd, path, strerror(errno));
        return KF_EXIT_USAGE;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)KF_PLAN_INPUT_MAX) {
        fprintf(stderr, "kfleetctl %s: %s: not a regular file of at most %u bytes\n", cmd, path, KF_PLAN_INPUT_MAX);
        return KF_EXIT_USAGE;
    }
    _cleanup_free_ char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        fprintf(stderr, "kfleetctl %s: out of memory\n", cmd);
        return KF_EXIT_USAGE;
    }
    size_t n = 0;
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "kfleetctl %s: cannot read %s: %s\n", cmd, path, r < 0 ? strerror(errno) : "short read");
            return KF_EXIT_USAGE;
        }
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    *out = TAKE_PTR(buf);
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- JSON --------------------------------------------------------------------- */

/* A double as JSON: null for infinity (a rejected session "waits forever"). */
static void add_num(cJSON *o, const char *k, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

static cJSON *run_json(const kf_plan_result *r, bool samples) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    add_num(o, "nodes", r->nodes);
    cJSON *cap = cJSON_AddObjectToObject(o, "capacity");
    add_num(cap, "memory_bytes", (double)r->mem_capacity);
    add_num(cap, "cpu_millis", (double)r->cpu_capacity);
    add_num(cap, "session_slots", (double)r->slot_capacity);
    add_num(o, "simulated_seconds", r->sim_end_s);
    add_num(o, "arrived", (double)r->arrived);
    add_num(o, "accepted", (double)r->accepted);
    add_num(o, "rejected", (double)r->rejected);
    add_num(o, "pending", (double)r->pending);
    add_num(o, "waited", (double)r->waited);
    add_num(o, "rejection_rate", r->rejection_rate);
    cJSON *w = cJSON_AddObjectToObject(o, "wait_seconds");
    add_num(w, "p50", r->wait_p50);
    add_num(w, "p95", r->wait_p95);
    add_num(w, "p99", r->wait_p99);
    add_num(w, "max", r->wait_max);
    add_num(w, "target_percentile", r->wait_pct);
    add_num(o, "peak_sessions", r->peak_running);
    add_num(o, "peak_utilisation", r->peak_util);
    add_num(o, "mean_utilisation", r->mean_util);
    add_num(o, "headroom_at_peak", 1 - r->peak_util);
    add_num(o, "events", (double)r->events);
    if (samples) {
        cJSON *arr = cJSON_AddArrayToObject(o, "samples");
        for (size_t i = 0; arr && i < r->nsamples; i++) {
            const kf_plan_sample *s = &r->samples[i];
            cJSON *x = cJSON_CreateObject();
            if (!x)
                break;
            add_num(x, "t", s->t);
            add_num(x, "running", s->running);
            add_num(x, "waiting", s->waiting);
            add_num(x, "arrived", s->arrived);
            add_num(x, "rejected", s->rejected);
            add_num(x, "memory_bytes", (double)s->mem_used);
            add_num(x, "cpu_millis", (double)s->cpu_used);
            add_num(x, "utilisation", kf_plan_sample_util(r, s));
            cJSON_AddItemToArray(arr, x);
        }
    }
    return o;
}

static cJSON *erlang_json(const kf_plan_erlang *e) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    add_num(o, "servers", (double)e->servers);
    add_num(o, "offered_erlangs", e->offered);
    add_num(o, "blocking", e->blocking);
    add_num(o, "peak_offered_erlangs", e->peak_offered);
    add_num(o, "peak_blocking", e->peak_blocking);
    return o;
}

/* ---- table -------------------------------------------------------------------- */

static void pct(double v, char *b, size_t n) {
    if (isfinite(v))
        snprintf(b, n, "%.2f%%", 100 * v);
    else
        snprintf(b, n, "-");
}

static void secs(double v, char *b, size_t n) {
    if (!isfinite(v))
        snprintf(b, n, "rejected");
    else
        snprintf(b, n, "%.1fs", v);
}

static void summary_rows(kf_table *t, const kf_plan_result *r, const kf_plan_result *below, bool queue) {
    const kf_plan_result *cols[2] = {r, below && below->nodes ? below : NULL};
    char a[2][64];
#define ROW(label, ...)                                                                                              \
    do {                                                                                                             \
        for (int i = 0; i < 2; i++) {                                                                                \
            const kf_plan_result *x = cols[i];                                                                       \
            if (x) {                                                                                                 \
                __VA_ARGS__;                                                                                         \
            } else {                                                                                                 \
                a[i][0] = '\0';                                                                                      \
            }                                                                                                        \
        }                                                                                                            \
        const char *row[] = {label, a[0], a[1]};                                                                     \
        kf_table_row(t, row);                                                                                        \
    } while (0)
    ROW("nodes", snprintf(a[i], 64, "%u", x->nodes));
    ROW("sessions arrived", snprintf(a[i], 64, "%" PRIu64, x->arrived));
    ROW("rejected", snprintf(a[i], 64, "%" PRIu64 " (%.3f%%)", x->rejected, 100 * x->rejection_rate));
    if (queue) {
        ROW("waited in the queue", snprintf(a[i], 64, "%" PRIu64, x->waited));
        ROW("wait p50 / p95 / p99", {
            char p50[16], p95[16], p99[16];
            secs(x->wait_p50, p50, sizeof(p50));
            secs(x->wait_p95, p95, sizeof(p95));
            secs(x->wait_p99, p99, sizeof(p99));
            snprintf(a[i], 64, "%s / %s / %s", p50, p95, p99);
        });
    }
    ROW("peak sessions", snprintf(a[i], 64, "%u of %" PRIu64 " slots", x->peak_running, x->slot_capacity));
    ROW("peak utilisation", pct(x->peak_util, a[i], 64));
    ROW("mean utilisation", pct(x->mean_util, a[i], 64));
    ROW("headroom at peak", pct(1 - x->peak_util, a[i], 64));
#undef ROW
}

static void print_series(const kf_plan_result *r) {
    static const char *const headers[] = {"TIME", "RUNNING", "WAITING", "ARRIVED", "REJECTED", "MEMORY", "CPU",
                                          "UTIL", "HEADROOM"};
    _cleanup_table_ kf_table *t = kf_table_new(KF_ARRAY_SIZE(headers), headers);
    if (!t || r->nsamples < 2)
        return;
    size_t every = (r->nsamples + SERIES_ROWS_MAX - 1) / SERIES_ROWS_MAX;
    uint32_t arrived = 0, rejected = 0;
    for (size_t i = 0; i < r->nsamples; i++) {
        const kf_plan_sample *s = &r->samples[i];
        arrived += s->arrived;
        rejected += s->rejected;
        if (i % every && i + 1 != r->nsamples)
            continue;
        char tm[24], run[16], wait[16], arr[16], rej[16], mem[16], cpu[16], util[16], head[16];
        kf_fmt_duration((uint64_t)(s->t * 1000), tm, sizeof(tm));
        snprintf(run, sizeof(run), "%u", s->running);
        snprintf(wait, sizeof(wait), "%u", s->waiting);
        snprintf(arr, sizeof(arr), "%u", arrived);
        snprintf(rej, sizeof(rej), "%u", rejected);
        double mu = (double)s->mem_used / (double)r->mem_capacity, cu = (double)s->cpu_used / (double)r->cpu_capacity;
        double u = kf_plan_sample_util(r, s);
        pct(mu, mem, sizeof(mem));
        pct(cu, cpu, sizeof(cpu));
        pct(u, util, sizeof(util));
        pct(1 - u, head, sizeof(head));
        const char *row[] = {i ? tm : "0s", run, wait, arr, rej, mem, cpu, util, head};
        kf_table_row(t, row);
        arrived = rejected = 0;
    }
    printf("\nOver time (ARRIVED and REJECTED since the previous row; UTIL = the largest of memory, cpu and slots):\n");
    kf_table_print(t, stdout);
}

static void print_table(const kf_plan_config *c, int search_rc, const kf_plan_result *best,
                        const kf_plan_result *below, const kf_plan_erlang *e, double wall) {
    if (c->target == KF_PLAN_TARGET_NONE)
        printf("Simulated %u nodes as given.\n", best->nodes);
    else if (search_rc == 0 && c->target == KF_PLAN_TARGET_REJECTION)
        printf("Nodes needed: %u (target: rejection <= %.3f%%)\n", best->nodes, 100 * c->target_rejection);
    else if (search_rc == 0)
        printf("Nodes needed: %u (target: wait p%g <= %gs, a rejected session counting as waiting forever)\n",
               best->nodes, c->target_pct, c->target_wait_s);
    else
        printf("Target NOT met even with %u nodes (search.max_nodes); figures at %u nodes:\n", best->nodes,
               best->nodes);
    printf("\n");
    static const char *const headers[] = {"", "AT THE ANSWER", "ONE NODE FEWER"};
    _cleanup_table_ kf_table *t = kf_table_new(below && below->nodes ? 3 : 2, headers);
    if (t) {
        summary_rows(t, best, below, c->max_wait_s > 0);
        kf_table_print(t, stdout);
    }
    printf("\nErlang-B cross-check (the %u nodes as %" PRIu64 " fixed slots of the mean session shape):\n"
           "  offered %.1f erlangs on average -> blocking %.3f%%; at the peak rate %.1f erlangs -> %.3f%%\n",
           best->nodes, e->servers, e->offered, 100 * e->blocking, e->peak_offered, 100 * e->peak_blocking);
    print_series(best);
    char d[24];
    printf("\nSimulated %s, %" PRIu64 " sessions, %" PRIu64 " events; took %.2fs.\n",
           kf_fmt_duration((uint64_t)(best->sim_end_s * 1000), d, sizeof(d)), best->arrived, best->events, wall);
}

static int write_svg(const char *cmd, const char *path, const kf_plan_config *c, const kf_plan_result *r) {
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "kfleetctl %s: cannot write %s: %s\n", cmd, path, strerror(errno));
        return KF_EXIT_USAGE;
    }
    _cleanup_fclose_ FILE *f = fdopen(fd, "w");
    if (!f) {
        fprintf(stderr, "kfleetctl %s: %s: %s\n", cmd, path, strerror(errno));
        return KF_EXIT_USAGE;
    }
    TAKE_FD(fd);
    if (kf_plan_svg(f, c, r) < 0) {
        fprintf(stderr, "kfleetctl %s: cannot write %s: %s\n", cmd, path, strerror(errno));
        return KF_EXIT_USAGE;
    }
    return 0;
}

enum { OPT_NODES = KF_OPT_LOCAL, OPT_SEED, OPT_SVG, OPT_BASELINE };

static int verb_simulate(int argc, char **argv, const kf_cli_globals *g0) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"nodes", required_argument, NULL, OPT_NODES},
        {"seed", required_argument, NULL, OPT_SEED},
        {"svg", required_argument, NULL, OPT_SVG},
        {"baseline", no_argument, NULL, OPT_BASELINE},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "plan simulate";
    kf_cli_globals g = *g0;
    const char *svg = NULL;
    long long nodes = -1, seed = -1;
    kf_plan_engine engine = KF_PLAN_ENGINE_INDEX;
    int c;
    char *end;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            kf_cli_help(stdout, simulate_help);
            return KF_EXIT_OK;
        case OPT_NODES:
            nodes = strtoll(optarg, &end, 10);
            if (*end || end == optarg || nodes < 1 || nodes > KF_PLAN_NODES_MAX)
                return kf_cli_usage_error(cmd, "bad --nodes '%s' (1..%u)", optarg, KF_PLAN_NODES_MAX);
            break;
        case OPT_SEED:
            seed = strtoll(optarg, &end, 10);
            if (*end || end == optarg || seed < 0)
                return kf_cli_usage_error(cmd, "bad --seed '%s' (a whole number >= 0)", optarg);
            break;
        case OPT_SVG:
            svg = optarg;
            break;
        case OPT_BASELINE:
            engine = KF_PLAN_ENGINE_NAIVE;
            break;
        default: {
            int r = kf_cli_other_option(cmd, c, argv, &g);
            if (r != KF_CLI_GO)
                return r;
        }
        }
    }
    int r = kf_cli_check_args(cmd, "FILE", argc, argv, 1, 1);
    if (r != KF_CLI_GO)
        return r;
    const char *path = argv[optind];
    _cleanup_free_ char *text = NULL;
    size_t len;
    if ((r = kf_plan_read_file(cmd, path, &text, &len)) != 0)
        return r;
    _cleanup_free_ kf_plan_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return KF_EXIT_USAGE;
    kf_error err = {0};
    if (kf_plan_config_parse(text, len, cfg, &err) < 0) {
        fprintf(stderr, "kfleetctl %s: %s: %s\n", cmd, path, err.msg);
        return KF_EXIT_USAGE;
    }
    if (seed >= 0)
        cfg->seed = (uint64_t)seed;
    if (nodes > 0)
        cfg->target = KF_PLAN_TARGET_NONE;
    kf_plan_result best = {0}, below = {0};
    double t0 = now_s();
    int src = cfg->target == KF_PLAN_TARGET_NONE || engine == KF_PLAN_ENGINE_NAIVE
                  ? kf_plan_run(cfg, nodes > 0 ? (uint32_t)nodes : 0, engine, &best, &err)
                  : kf_plan_search(cfg, &best, &below, &err);
    double wall = now_s() - t0;
    if (src < 0 && src != -ERANGE) {
        fprintf(stderr, "kfleetctl %s: %s: %s\n", cmd, path, err.msg);
        return KF_EXIT_USAGE;
    }
    kf_plan_erlang e;
    kf_plan_erlang_check(cfg, best.nodes, &e);
    if (svg && (r = write_svg(cmd, svg, cfg, &best)) != 0)
        goto out;
    if (g.output == KF_OUT_JSON) {
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddBoolToObject(o, "target_met", src == 0);
            add_num(o, "nodes_needed", cfg->target != KF_PLAN_TARGET_NONE && src == 0 ? best.nodes : NAN);
            cJSON_AddItemToObject(o, "result", run_json(&best, true));
            if (below.nodes)
                cJSON_AddItemToObject(o, "one_node_fewer", run_json(&below, false));
            cJSON_AddItemToObject(o, "erlang_b", erlang_json(&e));
            add_num(o, "wall_seconds", wall);
            kf_print_json(o, true);
            cJSON_Delete(o);
        }
    } else {
        print_table(cfg, src, &best, &below, &e, wall);
    }
    if (src == -ERANGE)
        fprintf(stderr, "kfleetctl %s: %s\n", cmd, err.msg);
    r = kf_cli_flush_stdout();
    if (r == 0 && src == -ERANGE)
        r = KF_EXIT_EXCEPTION;
out:
    kf_plan_result_done(&best);
    kf_plan_result_done(&below);
    return r;
}

int kf_cmd_plan(int argc, char **argv, const kf_cli_globals *g) {
    static const kf_cli_verb verbs[] = {
        {"simulate", "FILE", "simulate a workload: nodes needed, utilisation, headroom", verb_simulate},
        {"drain", "NODE...", "can these nodes be drained now? (live cluster)", kf_plan_verb_drain},
        {"lose", "--zone Z | --count N | NODE...", "what if we lose these nodes? (live cluster)", kf_plan_verb_lose},
        {"fit", "--memory M --cpu C", "how many more sessions of this shape fit? (live cluster)", kf_plan_verb_fit},
    };
    return kf_cli_dispatch("plan", "Capacity planning: simulate a workload, or ask what-ifs of the live cluster.",
                           verbs, KF_ARRAY_SIZE(verbs), argc, argv, g);
}
