/* cmd_bench.c - "kfleetctl bench": measurements, not tests. Each verb
 * prints one figure per line as "NAME VALUE UNIT" so scripts/bench.sh can
 * put it beside its baseline, measured in the same run:
 *   create  - CreateSession latency (cold or warm, as the server's pool allows)
 *   exec    - Execute round trip of a tiny statement through the server
 *   direct  - the same round trip from a bare C ZMQ client (kf_kernel) to a
 *             bare local ipykernel: the baseline for "exec"
 *   memory  - the agent's own memory per idle session (RSS delta / N) and
 *             the sessions' cgroup memory
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "cmd_bench.h"
#include "kernel_client.h"
#include "kf/cleanup.h"
#include "kf/util.h"
#include "kfleet/v1/sessions.pb-c.h"

#define MAX_COUNT 100000
#define MAX_CONCURRENCY 256

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void print_stats(const char *name, double *v, size_t n) {
    if (n == 0)
        return;
    qsort(v, n, sizeof(*v), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    size_t p99 = (size_t)((double)(n - 1) * 0.99 + 0.5);
    printf("%s.p50 %.3f ms\n%s.p99 %.3f ms\n%s.mean %.3f ms\n%s.min %.3f ms\n%s.n %zu runs\n", name,
           v[(n - 1) / 2], name, v[p99], name, sum / (double)n, name, v[0], name, n);
}

typedef struct bench_opts {
    unsigned count;
    unsigned concurrency;
    int with_request_id;
    const char *compare_server;
    const char *code;
    const char *python;
    pid_t agent_pid;
    uint64_t memory;
    int with_direct;
} bench_opts;

static int parse_opts(const char *cmd, int argc, char **argv, const kf_cli_globals *gin,
                      kf_cli_globals *g, bench_opts *o, const char *help) {
    enum { OPT_COUNT = KF_OPT_LOCAL, OPT_CODE, OPT_PYTHON, OPT_PID, OPT_MEMORY, OPT_WITH_DIRECT,
           OPT_CONCURRENCY, OPT_REQUEST_ID, OPT_COMPARE };
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"count", required_argument, NULL, OPT_COUNT},
        {"code", required_argument, NULL, OPT_CODE},
        {"python", required_argument, NULL, OPT_PYTHON},
        {"agent-pid", required_argument, NULL, OPT_PID},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"with-direct", no_argument, NULL, OPT_WITH_DIRECT},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"with-request-id", no_argument, NULL, OPT_REQUEST_ID},
        {"compare-server", required_argument, NULL, OPT_COMPARE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *g = *gin;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+:h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'h':
            kf_cli_help(stdout, help);
            return KF_EXIT_OK;
        case OPT_COUNT:
            o->count = (unsigned)strtoul(optarg, &end, 10);
            if (*end || o->count == 0 || o->count > MAX_COUNT)
                return kf_cli_usage_error(cmd, "--count must be 1..%d", MAX_COUNT);
            break;
        case OPT_CODE: o->code = optarg; break;
        case OPT_CONCURRENCY:
            o->concurrency = (unsigned)strtoul(optarg, &end, 10);
            if (*end || o->concurrency == 0 || o->concurrency > MAX_CONCURRENCY)
                return kf_cli_usage_error(cmd, "--concurrency must be 1..%d", MAX_CONCURRENCY);
            break;
        case OPT_REQUEST_ID: o->with_request_id = 1; break;
        case OPT_COMPARE:
            if (!*optarg)
                return kf_cli_usage_error(cmd, "--compare-server needs an address");
            o->compare_server = optarg;
            break;
        case OPT_WITH_DIRECT: o->with_direct = 1; break;
        case OPT_PYTHON: o->python = optarg; break;
        case OPT_PID:
            o->agent_pid = (pid_t)strtol(optarg, &end, 10);
            if (*end || o->agent_pid <= 0)
                return kf_cli_usage_error(cmd, "--agent-pid must be a pid");
            break;
        case OPT_MEMORY:
            if (kf_parse_size(optarg, &o->memory) < 0)
                return kf_cli_usage_error(cmd, "--memory: '%s' is not a size", optarg);
            break;
        default: {
            int r = kf_cli_global_option(cmd, c, optarg, g);
            if (r == 1)
                break;
            if (r < 0)
                return KF_EXIT_USAGE;
            return kf_cli_bad_option(cmd, c, argv);
        }
        }
    }
    return kf_cli_check_args(cmd, "", argc, argv, 0, 0) == KF_CLI_GO ? KF_CLI_GO : KF_EXIT_USAGE;
}

static int create_session(kf_grpc_client *cl, uint64_t memory, const char *request_id,
                          Kfleet__V1__Session **out) {
    Kfleet__V1__CreateSessionRequest req = KFLEET__V1__CREATE_SESSION_REQUEST__INIT;
    Kfleet__V1__Limits lim = KFLEET__V1__LIMITS__INIT;
    lim.memory_bytes = memory;
    req.limits = &lim;
    if (request_id)
        req.request_id = (char *)request_id;
    kf_rpc_status st;
    int r = kf_grpc_unary(cl, KF_SESSIONS_METHOD("CreateSession"), &req.base,
                          &kfleet__v1__session__descriptor, 120000, (ProtobufCMessage **)out, &st);
    if (r < 0)
        kf_cli_rpc_error(&st);
    return r;
}

static void delete_session(kf_grpc_client *cl, const char *id) {
    Kfleet__V1__DeleteSessionRequest req = KFLEET__V1__DELETE_SESSION_REQUEST__INIT;
    req.session_id = (char *)id;
    ProtobufCMessage *resp = NULL;
    kf_rpc_status st;
    if (kf_grpc_unary(cl, KF_SESSIONS_METHOD("DeleteSession"), &req.base,
                      &kfleet__v1__delete_session_response__descriptor, 60000, &resp, &st) < 0)
        kf_cli_rpc_error(&st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
}

/* One Execute call; returns 0 when it ended with EXEC_STATUS_OK. */
static int execute(kf_grpc_client *cl, const char *id, const char *code) {
    Kfleet__V1__ExecuteRequest req = KFLEET__V1__EXECUTE_REQUEST__INIT;
    req.session_id = (char *)id;
    req.code = (char *)code;
    kf_rpc_status st;
    kf_grpc_call *call = NULL;
    if (kf_grpc_server_stream_start(cl, KF_SESSIONS_METHOD("Execute"), &req.base,
                                    &kfleet__v1__execute_event__descriptor, 300000, &call, &st) < 0)
        return kf_cli_rpc_error(&st), -EIO;
    int ok = -EIO, r;
    ProtobufCMessage *m;
    while ((r = kf_grpc_stream_next(call, &m, &st)) == 1) {
        Kfleet__V1__ExecuteEvent *ev = (void *)m;
        if (ev->event_case == KFLEET__V1__EXECUTE_EVENT__EVENT_RESULT &&
            ev->result->status == KFLEET__V1__EXEC_STATUS__EXEC_STATUS_OK)
            ok = 0;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (r < 0)
        kf_cli_rpc_error(&st);
    kf_grpc_call_free(call);
    return r < 0 ? -EIO : ok;
}

static const char create_help[] =
    "Usage: kfleetctl bench create [--count N] [--memory SIZE] [--concurrency C] [--with-request-id]\n\n"
    "Creates N sessions, C at a time (C threads over one channel; default 1), timing each\n"
    "CreateSession and the whole burst (create.rate, creates/s), then deletes them outside the\n"
    "timed part. Whether a create is warm or cold depends on the servers' pools (warm_hits): for\n"
    "a warm burst N must not exceed the sum of the pools. --with-request-id gives every create a\n"
    "unique request_id (the idempotent path).\n";

typedef struct create_worker {
    kf_grpc_client *cl;
    const bench_opts *o;
    unsigned *next; /* shared index, under *mu */
    pthread_mutex_t *mu;
    double *lat;
    Kfleet__V1__Session **made;
    int failed;
} create_worker;

static void *create_loop(void *arg) {
    create_worker *w = arg;
    char rid[64];
    for (;;) {
        pthread_mutex_lock(w->mu);
        unsigned i = (*w->next)++;
        pthread_mutex_unlock(w->mu);
        if (i >= w->o->count)
            return NULL;
        if (w->o->with_request_id)
            kf_random_id(rid, sizeof(rid), "bench-", 24);
        int64_t t0 = kf_mono_us();
        if (create_session(w->cl, w->o->memory, w->o->with_request_id ? rid : NULL, &w->made[i]) < 0) {
            w->failed = 1;
            return NULL;
        }
        w->lat[i] = (double)(kf_mono_us() - t0) / 1000.0;
    }
}

static int bench_create(int argc, char **argv, const kf_cli_globals *gin) {
    kf_cli_globals g;
    bench_opts o = {.count = 10, .concurrency = 1};
    int r = parse_opts("bench create", argc, argv, gin, &g, &o, create_help);
    if (r != KF_CLI_GO)
        return r;
    kf_grpc_client *cl;
    if ((r = kf_cli_connect(&g, &cl)) != 0)
        return r;
    /* Connect the channel first: the first call of a client pays for it. */
    {
        Kfleet__V1__ListSessionsRequest lreq = KFLEET__V1__LIST_SESSIONS_REQUEST__INIT;
        ProtobufCMessage *lresp = NULL;
        kf_rpc_status lst;
        if (kf_grpc_unary(cl, KF_SESSIONS_METHOD("ListSessions"), &lreq.base,
                          &kfleet__v1__list_sessions_response__descriptor, 30000, &lresp, &lst) == 0)
            protobuf_c_message_free_unpacked(lresp, NULL);
    }
    _cleanup_free_ double *lat = calloc(o.count, sizeof(double));
    _cleanup_free_ Kfleet__V1__Session **made = calloc(o.count, sizeof(*made));
    _cleanup_free_ pthread_t *th = calloc(o.concurrency, sizeof(*th));
    _cleanup_free_ create_worker *ws = calloc(o.concurrency, sizeof(*ws));
    if (!lat || !made || !th || !ws) {
        kf_grpc_client_free(cl);
        return KF_EXIT_USAGE;
    }
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    unsigned next = 0, started = 0;
    int64_t t0 = kf_mono_us();
    for (unsigned i = 0; i < o.concurrency; i++) {
        ws[i] = (create_worker){.cl = cl, .o = &o, .next = &next, .mu = &mu, .lat = lat, .made = made};
        if (pthread_create(&th[i], NULL, create_loop, &ws[i]) != 0)
            break;
        started++;
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    double wall_ms = (double)(kf_mono_us() - t0) / 1000.0;
    size_t n = 0, warm = 0;
    int failed = started < o.concurrency;
    for (unsigned i = 0; i < started; i++)
        failed |= ws[i].failed;
    for (unsigned i = 0; i < o.count; i++) {
        if (!made[i])
            continue;
        lat[n++] = lat[i];
        warm += made[i]->from_warm_pool;
        delete_session(cl, made[i]->id);
        protobuf_c_message_free_unpacked(&made[i]->base, NULL);
    }
    kf_grpc_client_free(cl);
    print_stats("create", lat, n);
    printf("create.warm_hits %zu of %zu\n", warm, n);
    printf("create.concurrency %u threads\n", o.concurrency);
    printf("create.wall %.3f ms\n", wall_ms);
    if (wall_ms > 0)
        printf("create.rate %.1f creates/s\n", (double)n * 1000.0 / wall_ms);
    return !failed && n == o.count ? KF_EXIT_OK : KF_EXIT_USAGE;
}

/* A bare local ipykernel (no sandbox, no agent) and a C ZMQ client to it:
 * the baseline of "exec". */
typedef struct bare_kernel {
    char dir[32];
    void *zctx;
    kf_kernel_conn *kc;
    pid_t pid;
    double start_ready_ms;
} bare_kernel;

static int ignore_event(void *ud, const kf_kernel_event *ev) {
    (void)ud;
    (void)ev;
    return 0;
}

static void bare_stop(bare_kernel *b) {
    kf_kernel_conn_close(b->kc);
    b->kc = NULL;
    if (b->pid > 0) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, NULL, 0);
        b->pid = 0;
    }
    if (b->zctx)
        zmq_ctx_term(b->zctx);
    b->zctx = NULL;
    if (b->dir[0])
        kf_rm_rf(b->dir);
    b->dir[0] = '\0';
}

/* Starts the kernel with `python` and waits until it answers. */
static int bare_start(bare_kernel *b, const char *python) {
    memset(b, 0, sizeof(*b));
    snprintf(b->dir, sizeof(b->dir), "/tmp/kfbench-XXXXXX");
    if (!mkdtemp(b->dir)) {
        b->dir[0] = '\0';
        fprintf(stderr, "kfleetctl bench: mkdtemp: %s\n", strerror(errno));
        return -errno;
    }
    char conn[64], prefix[64], key[KF_KERNEL_KEY_LEN + 1];
    snprintf(conn, sizeof(conn), "%s/conn.json", b->dir);
    snprintf(prefix, sizeof(prefix), "%s/k", b->dir);
    kf_error err = {0};
    b->zctx = zmq_ctx_new();
    char *argv[] = {(char *)python, "-m", "ipykernel_launcher", "-f", conn, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    extern char **environ;
    int64_t t0 = kf_mono_us();
    int r = kf_kernel_key_new(key);
    if (r == 0)
        r = kf_kernel_conn_file_write(conn, prefix, key, getuid(), getgid(), &err);
    if (r == 0)
        r = -posix_spawn(&b->pid, python, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r == 0)
        r = kf_kernel_conn_open(&b->kc, b->zctx, prefix, key, (uid_t)-1, kf_mono_ms() + 60000, &err);
    if (r == 0)
        r = kf_kernel_wait_ready(b->kc, kf_mono_ms() + 60000, -1, &err);
    if (r < 0) {
        fprintf(stderr, "kfleetctl bench: bare kernel: %s\n", err.msg[0] ? err.msg : strerror(-r));
        bare_stop(b);
        return r;
    }
    b->start_ready_ms = (double)(kf_mono_us() - t0) / 1000.0;
    return 0;
}

/* One round trip of `code` on the bare kernel. */
static int bare_exec(bare_kernel *b, const char *code) {
    kf_error err = {0};
    kf_exec_outcome oc;
    if (kf_kernel_exec_start(b->kc, code, strlen(code), &err) < 0 ||
        kf_kernel_exec_wait(b->kc, kf_mono_ms() + 60000, -1, ignore_event, NULL, &oc, &err) < 0) {
        fprintf(stderr, "kfleetctl bench: bare kernel: %s\n", err.msg);
        return -EIO;
    }
    return 0;
}

static const char exec_help[] =
    "Usage: kfleetctl bench exec [--count N] [--code CODE] [--with-direct] [--compare-server ADDR]\n\n"
    "Creates a session and times N Execute round trips of CODE (default 1+1) after 20 warm-up runs.\n"
    "--with-direct also starts a bare local ipykernel and alternates each round trip through the\n"
    "server with one straight to that kernel from a C ZMQ client (figures direct.*), so the two see\n"
    "the same machine at the same moments.\n"
    "--compare-server ADDR alternates each round trip with one on the same session through ADDR\n"
    "(plaintext, no token: e.g. the agent's socket behind a scheduler; figures compare.*), taking\n"
    "turns at going first. \"{node}\" in ADDR becomes the node the session was placed on.\n";

/* One timed Execute through cl; the time in ms, or < 0 on failure. */
static double timed_exec(kf_grpc_client *cl, const char *id, const char *code) {
    int64_t t0 = kf_mono_us();
    if (execute(cl, id, code) < 0)
        return -1;
    return (double)(kf_mono_us() - t0) / 1000.0;
}

static int bench_exec(int argc, char **argv, const kf_cli_globals *gin) {
    kf_cli_globals g;
    bench_opts o = {.count = 200, .code = "1+1", .python = "/usr/bin/python3"};
    int r = parse_opts("bench exec", argc, argv, gin, &g, &o, exec_help);
    if (r != KF_CLI_GO)
        return r;
    kf_grpc_client *cl, *cmp = NULL;
    if ((r = kf_cli_connect(&g, &cl)) != 0)
        return r;
    Kfleet__V1__Session *s = NULL;
    if (create_session(cl, 0, NULL, &s) < 0) {
        kf_grpc_client_free(cl);
        return KF_EXIT_USAGE;
    }
    if (o.compare_server) {
        char target[1024];
        const char *at = strstr(o.compare_server, "{node}");
        if (at)
            snprintf(target, sizeof(target), "%.*s%s%s", (int)(at - o.compare_server), o.compare_server,
                     s->node, at + 6);
        else
            snprintf(target, sizeof(target), "%s", o.compare_server);
        kf_cli_globals cg = {.server = target};
        if ((r = kf_cli_connect(&cg, &cmp)) != 0) {
            delete_session(cl, s->id);
            protobuf_c_message_free_unpacked(&s->base, NULL);
            kf_grpc_client_free(cl);
            return r;
        }
    }
    bare_kernel b = {0};
    int ok = !o.with_direct || bare_start(&b, o.python) == 0;
    _cleanup_free_ double *lat = calloc(o.count, sizeof(double));
    _cleanup_free_ double *dlat = calloc(o.count, sizeof(double));
    _cleanup_free_ double *clat = calloc(o.count, sizeof(double));
    size_t n = 0;
    for (int i = 0; ok && i < 20; i++)
        ok = execute(cl, s->id, o.code) == 0 && (!o.with_direct || bare_exec(&b, o.code) == 0) &&
             (!cmp || execute(cmp, s->id, o.code) == 0);
    for (unsigned i = 0; ok && i < o.count && lat && dlat && clat; i++) {
        if (cmp && i % 2 && (clat[n] = timed_exec(cmp, s->id, o.code)) < 0)
            break;
        if ((lat[n] = timed_exec(cl, s->id, o.code)) < 0)
            break;
        if (cmp && !(i % 2) && (clat[n] = timed_exec(cmp, s->id, o.code)) < 0)
            break;
        if (o.with_direct) {
            int64_t t0 = kf_mono_us();
            if (bare_exec(&b, o.code) < 0)
                break;
            dlat[n] = (double)(kf_mono_us() - t0) / 1000.0;
        }
        n++;
    }
    if (o.with_direct)
        bare_stop(&b);
    delete_session(cl, s->id);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    kf_grpc_client_free(cl);
    kf_grpc_client_free(cmp);
    print_stats("exec", lat, n);
    if (o.with_direct)
        print_stats("direct", dlat, n);
    if (o.compare_server)
        print_stats("compare", clat, n);
    return n == o.count ? KF_EXIT_OK : KF_EXIT_USAGE;
}

static const char direct_help[] =
    "Usage: kfleetctl bench direct [--count N] [--code CODE] [--python PATH]\n\n"
    "The baseline of 'bench exec' alone: starts a bare local ipykernel (no sandbox, no agent) and\n"
    "times N round trips of CODE from a C ZMQ client, after 20 warm-up runs.\n";

static int bench_direct(int argc, char **argv, const kf_cli_globals *gin) {
    kf_cli_globals g;
    bench_opts o = {.count = 200, .code = "1+1", .python = "/usr/bin/python3"};
    int r = parse_opts("bench direct", argc, argv, gin, &g, &o, direct_help);
    if (r != KF_CLI_GO)
        return r;
    bare_kernel b;
    if (bare_start(&b, o.python) < 0)
        return KF_EXIT_USAGE;
    printf("direct.start_ready %.3f ms\n", b.start_ready_ms);
    _cleanup_free_ double *lat = calloc(o.count, sizeof(double));
    size_t n = 0;
    for (unsigned i = 0; i < o.count + 20 && lat; i++) {
        int64_t s0 = kf_mono_us();
        if (bare_exec(&b, o.code) < 0)
            break;
        if (i >= 20)
            lat[n++] = (double)(kf_mono_us() - s0) / 1000.0;
    }
    bare_stop(&b);
    print_stats("direct", lat, n);
    return n == o.count ? KF_EXIT_OK : KF_EXIT_USAGE;
}

static long rss_kib(pid_t pid) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    _cleanup_free_ char *buf = NULL;
    if (kf_read_file(path, 1 << 16, &buf, NULL) < 0)
        return -1;
    char *p = strstr(buf, "VmRSS:");
    return p ? strtol(p + 6, NULL, 10) : -1;
}

static const char memory_help[] =
    "Usage: kfleetctl bench memory --agent-pid PID [--count N]\n\n"
    "Creates N idle sessions and reports the agent's resident memory per session (RSS delta / N)\n"
    "and the mean memory of a session's own cgroup (its kernel), then deletes them.\n";

static int bench_memory(int argc, char **argv, const kf_cli_globals *gin) {
    kf_cli_globals g;
    bench_opts o = {.count = 10};
    int r = parse_opts("bench memory", argc, argv, gin, &g, &o, memory_help);
    if (r != KF_CLI_GO)
        return r;
    if (!o.agent_pid)
        return kf_cli_usage_error("bench memory", "--agent-pid is required");
    kf_grpc_client *cl;
    if ((r = kf_cli_connect(&g, &cl)) != 0)
        return r;
    long before = rss_kib(o.agent_pid);
    _cleanup_free_ Kfleet__V1__Session **made = calloc(o.count, sizeof(*made));
    size_t n = 0;
    for (unsigned i = 0; i < o.count && made; i++) {
        if (create_session(cl, 0, NULL, &made[n]) < 0)
            break;
        execute(cl, made[n]->id, "x = 1");
        n++;
    }
    sleep(1);
    long after = rss_kib(o.agent_pid);
    double kernel_mem = 0;
    for (size_t i = 0; i < n; i++) {
        Kfleet__V1__GetSessionRequest req = KFLEET__V1__GET_SESSION_REQUEST__INIT;
        req.session_id = made[i]->id;
        ProtobufCMessage *resp = NULL;
        kf_rpc_status st;
        if (kf_grpc_unary(cl, KF_SESSIONS_METHOD("GetSession"), &req.base, &kfleet__v1__session__descriptor,
                          30000, &resp, &st) == 0) {
            kernel_mem += (double)((Kfleet__V1__Session *)resp)->memory_used_bytes;
            protobuf_c_message_free_unpacked(resp, NULL);
        }
    }
    for (size_t i = 0; i < n; i++) {
        delete_session(cl, made[i]->id);
        protobuf_c_message_free_unpacked(&made[i]->base, NULL);
    }
    kf_grpc_client_free(cl);
    if (n == 0 || before < 0 || after < 0)
        return KF_EXIT_USAGE;
    printf("memory.agent_rss_before %ld KiB\nmemory.agent_rss_after %ld KiB\n", before, after);
    printf("memory.agent_per_session %.1f KiB\n", (double)(after - before) / (double)n);
    printf("memory.session_cgroup_mean %.1f MiB\n", kernel_mem / (double)n / 1048576.0);
    return KF_EXIT_OK;
}

int kf_cmd_bench(int argc, char **argv, const kf_cli_globals *g) {
    static const kf_cli_verb verbs[] = {
        {"create", "[--count N] [--concurrency C]", "time CreateSession and creates/s (warm or cold per the pools)", bench_create},
        {"exec", "[--count N] [--code CODE] [--with-direct|--compare-server A]", "time Execute round trips through the server",
         bench_exec},
        {"direct", "[--count N] [--code CODE]", "baseline: a bare local ipykernel from a C ZMQ client",
         bench_direct},
        {"memory", "--agent-pid PID [--count N]", "agent memory per idle session", bench_memory},
    };
    return kf_cli_dispatch("bench", "Measure latency and memory (see scripts/bench.sh for the full run).",
                           verbs, KF_ARRAY_SIZE(verbs), argc, argv, g);
}
