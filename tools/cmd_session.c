/* cmd_session.c - "kfleetctl session ...": create, list, get, delete,
 * interrupt and restart sessions. Each verb is one unary call (list pages
 * through ListSessions until the server has no more).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/util.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "kfleetctl.h"
#include "output.h"

/* More labels than this is a mistake, not a use. */
#define MAX_LABELS 64
/* Guards against a server that keeps returning page tokens. */
#define MAX_LIST_PAGES 10000

static const char *state_name(int state, char *buf, size_t size) {
    return kf_enum_short_name(&kfleet__v1__session_state__descriptor, state, "SESSION_STATE_", buf, size);
}

/* ---- create ---------------------------------------------------------------- */

static const char create_help[] =
    "Usage: kfleetctl session create [OPTIONS]\n"
    "\n"
    "Create a session and print its id (with -o json, the whole session).\n"
    "Limits not given take the server's defaults.\n"
    "\n"
    "Options:\n"
    "      --memory SIZE       memory limit, e.g. 512M, 2G\n"
    "      --cpu CORES         CPU limit in cores, e.g. 1.5\n"
    "      --pids N            process limit\n"
    "      --timeout DUR       per-execution time limit, e.g. 120s, 5m\n"
    "      --disk SIZE         size of /mnt/data, e.g. 1G\n"
    "      --idle DUR          expire after this long without activity, e.g. 20m\n"
    "      --lifetime DUR      expire this long after creation at the latest\n"
    "      --label KEY=VALUE   attach a label (repeatable)\n"
    "      --request-id ID     idempotency key: a retried create with the same id\n"
    "                          returns the same session\n"
    "  -h, --help              show this help\n";

enum {
    OPT_MEMORY = KF_OPT_LOCAL,
    OPT_CPU,
    OPT_PIDS,
    OPT_TIMEOUT,
    OPT_DISK,
    OPT_IDLE,
    OPT_LIFETIME,
    OPT_LABEL,
    OPT_REQUEST_ID,
};

static int parse_u32(const char *s, uint32_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

/* Durations in seconds for the *_s fields: rounded up, so "500ms" is not 0
 * ("use the default"). */
static int parse_duration_s(const char *s, uint32_t *out) {
    uint64_t ms;
    if (kf_parse_duration_ms(s, &ms) < 0 || ms == 0 || (ms + 999) / 1000 > UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)((ms + 999) / 1000);
    return 0;
}

static int verb_create(int argc, char **argv, const kf_cli_globals *g0) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"cpu", required_argument, NULL, OPT_CPU},
        {"pids", required_argument, NULL, OPT_PIDS},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"disk", required_argument, NULL, OPT_DISK},
        {"idle", required_argument, NULL, OPT_IDLE},
        {"lifetime", required_argument, NULL, OPT_LIFETIME},
        {"label", required_argument, NULL, OPT_LABEL},
        {"request-id", required_argument, NULL, OPT_REQUEST_ID},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "session create";
    kf_cli_globals g = *g0;
    Kfleet__V1__Limits limits = KFLEET__V1__LIMITS__INIT;
    Kfleet__V1__CreateSessionRequest req = KFLEET__V1__CREATE_SESSION_REQUEST__INIT;
    Kfleet__V1__CreateSessionRequest__LabelsEntry label_store[MAX_LABELS];
    Kfleet__V1__CreateSessionRequest__LabelsEntry *labels[MAX_LABELS];
    size_t nlabels = 0;
    uint64_t v;
    int c;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            kf_cli_help(stdout, create_help);
            return KF_EXIT_OK;
        case OPT_MEMORY:
            if (kf_parse_size(optarg, &limits.memory_bytes) < 0 || limits.memory_bytes == 0)
                return kf_cli_usage_error(cmd, "bad --memory '%s' (e.g. 512M, 2G)", optarg);
            break;
        case OPT_CPU: {
            char *end;
            errno = 0;
            double cores = strtod(optarg, &end);
            if (errno || end == optarg || *end || !isfinite(cores) || cores <= 0 || cores > 4096)
                return kf_cli_usage_error(cmd, "bad --cpu '%s' (cores, e.g. 0.5, 2)", optarg);
            limits.cpu_millis = (uint32_t)lround(cores * 1000);
            if (limits.cpu_millis == 0)
                limits.cpu_millis = 1;
            break;
        }
        case OPT_PIDS:
            if (parse_u32(optarg, &limits.pids) < 0 || limits.pids == 0)
                return kf_cli_usage_error(cmd, "bad --pids '%s'", optarg);
            break;
        case OPT_TIMEOUT:
            if (kf_parse_duration_ms(optarg, &v) < 0 || v == 0 || v > UINT32_MAX)
                return kf_cli_usage_error(cmd, "bad --timeout '%s' (e.g. 30s, 2m)", optarg);
            limits.exec_timeout_ms = (uint32_t)v;
            break;
        case OPT_DISK:
            if (kf_parse_size(optarg, &limits.disk_bytes) < 0 || limits.disk_bytes == 0)
                return kf_cli_usage_error(cmd, "bad --disk '%s' (e.g. 1G)", optarg);
            break;
        case OPT_IDLE:
            if (parse_duration_s(optarg, &limits.idle_timeout_s) < 0)
                return kf_cli_usage_error(cmd, "bad --idle '%s' (e.g. 20m)", optarg);
            break;
        case OPT_LIFETIME:
            if (parse_duration_s(optarg, &limits.max_lifetime_s) < 0)
                return kf_cli_usage_error(cmd, "bad --lifetime '%s' (e.g. 8h)", optarg);
            break;
        case OPT_LABEL: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg)
                return kf_cli_usage_error(cmd, "bad --label '%s' (KEY=VALUE)", optarg);
            if (nlabels == MAX_LABELS)
                return kf_cli_usage_error(cmd, "at most %d labels", MAX_LABELS);
            *eq = '\0'; /* argv is ours to split */
            Kfleet__V1__CreateSessionRequest__LabelsEntry *e = &label_store[nlabels];
            kfleet__v1__create_session_request__labels_entry__init(e);
            e->key = optarg;
            e->value = eq + 1;
            labels[nlabels++] = e;
            break;
        }
        case OPT_REQUEST_ID:
            req.request_id = optarg;
            break;
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

    req.limits = &limits;
    req.n_labels = nlabels;
    req.labels = labels;

    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    _cleanup_pb_ Kfleet__V1__Session *s = NULL;
    kf_rpc_status st;
    if (kf_grpc_unary(client, KF_SESSIONS_METHOD("CreateSession"), &req.base,
                      &kfleet__v1__session__descriptor, kf_cli_timeout(&g, KF_CLI_UNARY_TIMEOUT_MS),
                      (ProtobufCMessage **)&s, &st) < 0)
        return kf_cli_rpc_error(&st);
    if (g.output == KF_OUT_JSON)
        kf_print_pb_json(&s->base, true);
    else
        printf("%s\n", s->id);
    return kf_cli_flush_stdout();
}

/* ---- list -------------------------------------------------------------------- */

static const char list_help[] =
    "Usage: kfleetctl session list\n"
    "\n"
    "List the sessions the server knows (all pages).\n"
    "\n"
    "Options:\n"
    "  -h, --help   show this help\n";

static void memory_cell(const Kfleet__V1__Session *s, char *buf, size_t size) {
    char used[16], lim[16];
    kf_fmt_bytes(s->memory_used_bytes, used, sizeof(used));
    if (s->limits && s->limits->memory_bytes)
        snprintf(buf, size, "%s/%s", used, kf_fmt_bytes(s->limits->memory_bytes, lim, sizeof(lim)));
    else
        snprintf(buf, size, "%s", used);
}

static void cpu_cell(const Kfleet__V1__Session *s, char *buf, size_t size) {
    if (s->limits && s->limits->cpu_millis)
        snprintf(buf, size, "%g", s->limits->cpu_millis / 1000.0);
    else
        snprintf(buf, size, "-");
}

static int verb_list(int argc, char **argv, const kf_cli_globals *g0) {
    const char *cmd = "session list";
    kf_cli_globals g = *g0;
    int r = kf_cli_parse_args(cmd, list_help, "no arguments", argc, argv, &g, 0, 0);
    if (r != KF_CLI_GO)
        return r;
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;

    static const char *const headers[] = {"ID", "STATE", "NODE", "MEMORY", "CPU", "EXECS", "AGE", "IDLE"};
    _cleanup_table_ kf_table *t = kf_table_new(KF_ARRAY_SIZE(headers), headers);
    cJSON *arr = cJSON_CreateArray();
    if (!t || !arr) {
        cJSON_Delete(arr);
        fprintf(stderr, "kfleetctl: out of memory\n");
        return KF_EXIT_USAGE;
    }
    int64_t now = kf_unix_ms();
    _cleanup_free_ char *token = NULL;
    for (int page = 0; page < MAX_LIST_PAGES; page++) {
        Kfleet__V1__ListSessionsRequest req = KFLEET__V1__LIST_SESSIONS_REQUEST__INIT;
        req.page_token = token ? token : "";
        _cleanup_pb_ Kfleet__V1__ListSessionsResponse *resp = NULL;
        kf_rpc_status st;
        if (kf_grpc_unary(client, KF_SESSIONS_METHOD("ListSessions"), &req.base,
                          &kfleet__v1__list_sessions_response__descriptor,
                          kf_cli_timeout(&g, KF_CLI_UNARY_TIMEOUT_MS), (ProtobufCMessage **)&resp,
                          &st) < 0) {
            cJSON_Delete(arr);
            return kf_cli_rpc_error(&st);
        }
        for (size_t i = 0; i < resp->n_sessions; i++) {
            const Kfleet__V1__Session *s = resp->sessions[i];
            if (g.output == KF_OUT_JSON) {
                cJSON *j = kf_pb_to_json(&s->base);
                if (j)
                    cJSON_AddItemToArray(arr, j);
                continue;
            }
            char state[32], mem[40], cpu[16], execs[16], age[24], idle[24];
            snprintf(execs, sizeof(execs), "%" PRIu32, s->execution_count);
            kf_fmt_ago(s->created_unix_ms, now, age, sizeof(age));
            kf_fmt_ago(s->last_active_unix_ms, now, idle, sizeof(idle));
            memory_cell(s, mem, sizeof(mem));
            cpu_cell(s, cpu, sizeof(cpu));
            const char *row[] = {s->id, state_name(s->state, state, sizeof(state)), s->node, mem, cpu,
                                 execs, age, idle};
            kf_table_row(t, row);
        }
        if (!resp->next_page_token || !*resp->next_page_token)
            break;
        if (token && !strcmp(token, resp->next_page_token))
            break; /* a server repeating itself would loop forever */
        free(token);
        token = strdup(resp->next_page_token);
        if (!token)
            break;
    }
    if (g.output == KF_OUT_JSON) {
        cJSON *obj = cJSON_CreateObject();
        if (obj) {
            cJSON_AddItemToObject(obj, "sessions", arr);
            kf_print_json(obj, true);
            cJSON_Delete(obj);
        } else {
            cJSON_Delete(arr);
        }
    } else {
        cJSON_Delete(arr);
        kf_table_print(t, stdout);
    }
    return kf_cli_flush_stdout();
}

/* ---- get ------------------------------------------------------------------------ */

static const char get_help[] =
    "Usage: kfleetctl session get ID\n"
    "\n"
    "Show one session: state, limits, usage.\n"
    "\n"
    "Options:\n"
    "  -h, --help   show this help\n";

static void print_session_details(const Kfleet__V1__Session *s) {
    _cleanup_table_ kf_table *t = kf_table_new(2, NULL);
    if (!t)
        return;
    char b[128];
    int64_t now = kf_unix_ms();
    kf_table_kv(t, "id:", s->id);
    kf_table_kv(t, "state:", state_name(s->state, b, sizeof(b)));
    if (s->expiry_reason && *s->expiry_reason)
        kf_table_kv(t, "expiry reason:", s->expiry_reason);
    kf_table_kv(t, "node:", s->node);
    kf_table_kv(t, "created:", kf_fmt_when(s->created_unix_ms, now, b, sizeof(b)));
    kf_table_kv(t, "last active:", kf_fmt_when(s->last_active_unix_ms, now, b, sizeof(b)));
    snprintf(b, sizeof(b), "%" PRIu32, s->execution_count);
    kf_table_kv(t, "executions:", b);
    snprintf(b, sizeof(b), "%" PRIu32, s->kernel_restarts);
    kf_table_kv(t, "kernel restarts:", b);
    kf_table_kv(t, "from warm pool:", s->from_warm_pool ? "yes" : "no");
    memory_cell(s, b, sizeof(b));
    kf_table_kv(t, "memory (used/limit):", b);
    const Kfleet__V1__Limits *l = s->limits;
    if (l) {
        cpu_cell(s, b, sizeof(b));
        kf_table_kv(t, "cpu (cores):", b);
        snprintf(b, sizeof(b), "%" PRIu32, l->pids);
        kf_table_kv(t, "pids:", l->pids ? b : "-");
        kf_table_kv(t, "exec timeout:", l->exec_timeout_ms ? kf_fmt_duration(l->exec_timeout_ms, b, sizeof(b)) : "-");
        kf_table_kv(t, "disk:", l->disk_bytes ? kf_fmt_bytes(l->disk_bytes, b, sizeof(b)) : "-");
        snprintf(b, sizeof(b), "%" PRIu64, l->disk_inodes);
        kf_table_kv(t, "disk inodes:", l->disk_inodes ? b : "-");
        kf_table_kv(t, "idle timeout:",
           l->idle_timeout_s ? kf_fmt_duration((uint64_t)l->idle_timeout_s * 1000, b, sizeof(b)) : "-");
        kf_table_kv(t, "max lifetime:",
           l->max_lifetime_s ? kf_fmt_duration((uint64_t)l->max_lifetime_s * 1000, b, sizeof(b)) : "-");
    }
    kf_table_print(t, stdout);
}

static int verb_get(int argc, char **argv, const kf_cli_globals *g0) {
    const char *cmd = "session get";
    kf_cli_globals g = *g0;
    int r = kf_cli_parse_args(cmd, get_help, "ID", argc, argv, &g, 1, 1);
    if (r != KF_CLI_GO)
        return r;
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    Kfleet__V1__GetSessionRequest req = KFLEET__V1__GET_SESSION_REQUEST__INIT;
    req.session_id = argv[optind];
    _cleanup_pb_ Kfleet__V1__Session *s = NULL;
    kf_rpc_status st;
    if (kf_grpc_unary(client, KF_SESSIONS_METHOD("GetSession"), &req.base, &kfleet__v1__session__descriptor,
                      kf_cli_timeout(&g, KF_CLI_UNARY_TIMEOUT_MS), (ProtobufCMessage **)&s, &st) < 0)
        return kf_cli_rpc_error(&st);
    if (g.output == KF_OUT_JSON)
        kf_print_pb_json(&s->base, true);
    else
        print_session_details(s);
    return kf_cli_flush_stdout();
}

/* ---- delete, interrupt, restart: ID in, empty message out ----------------------- */

typedef struct simple_verb {
    const char *cmd;
    const char *help;
    const char *method;
    const ProtobufCMessageDescriptor *req_desc;
    const ProtobufCMessageDescriptor *resp_desc;
    const char *done; /* "deleted" */
} simple_verb;

/* The three requests are { string session_id = 1; }: built through the
 * descriptor so one function serves them all. */
static int run_simple(const simple_verb *v, int argc, char **argv, const kf_cli_globals *g0) {
    kf_cli_globals g = *g0;
    int r = kf_cli_parse_args(v->cmd, v->help, "ID", argc, argv, &g, 1, 1);
    if (r != KF_CLI_GO)
        return r;
    const char *id = argv[optind];
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(v->req_desc, "session_id");
    _cleanup_free_ ProtobufCMessage *req = calloc(1, v->req_desc->sizeof_message);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || !req) {
        fprintf(stderr, "kfleetctl: cannot build %s\n", v->req_desc->name);
        return KF_EXIT_USAGE;
    }
    protobuf_c_message_init(v->req_desc, req);
    *(const char **)((char *)req + f->offset) = id; /* borrowed; req is freed with free() */
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    _cleanup_pb_ ProtobufCMessage *resp = NULL;
    kf_rpc_status st;
    if (kf_grpc_unary(client, v->method, req, v->resp_desc, kf_cli_timeout(&g, KF_CLI_UNARY_TIMEOUT_MS),
                      &resp, &st) < 0)
        return kf_cli_rpc_error(&st);
    if (g.output == KF_OUT_JSON)
        kf_print_pb_json(resp, false);
    else
        printf("session %s %s\n", id, v->done);
    return kf_cli_flush_stdout();
}

static const simple_verb delete_verb = {
    "session delete",
    "Usage: kfleetctl session delete ID\n\n"
    "Delete a session: stop its kernel and remove its files.\n\n"
    "Options:\n  -h, --help   show this help\n",
    KF_SESSIONS_METHOD("DeleteSession"),
    &kfleet__v1__delete_session_request__descriptor,
    &kfleet__v1__delete_session_response__descriptor,
    "deleted",
};

static const simple_verb interrupt_verb = {
    "session interrupt",
    "Usage: kfleetctl session interrupt ID\n\n"
    "Interrupt the code running in a session (KeyboardInterrupt in the kernel).\n\n"
    "Options:\n  -h, --help   show this help\n",
    KF_SESSIONS_METHOD("Interrupt"),
    &kfleet__v1__interrupt_request__descriptor,
    &kfleet__v1__interrupt_response__descriptor,
    "interrupted",
};

static const simple_verb restart_verb = {
    "session restart",
    "Usage: kfleetctl session restart ID\n\n"
    "Restart a session's kernel. Its Python state is lost; files stay.\n\n"
    "Options:\n  -h, --help   show this help\n",
    KF_SESSIONS_METHOD("RestartKernel"),
    &kfleet__v1__restart_kernel_request__descriptor,
    &kfleet__v1__restart_kernel_response__descriptor,
    "restarted",
};

static int verb_delete(int argc, char **argv, const kf_cli_globals *g) {
    return run_simple(&delete_verb, argc, argv, g);
}
static int verb_interrupt(int argc, char **argv, const kf_cli_globals *g) {
    return run_simple(&interrupt_verb, argc, argv, g);
}
static int verb_restart(int argc, char **argv, const kf_cli_globals *g) {
    return run_simple(&restart_verb, argc, argv, g);
}

int kf_cmd_session(int argc, char **argv, const kf_cli_globals *g) {
    static const kf_cli_verb verbs[] = {
        {"create", "[OPTIONS]", "create a session, print its id", verb_create},
        {"list", "", "list sessions", verb_list},
        {"get", "ID", "show a session", verb_get},
        {"delete", "ID", "delete a session and its files", verb_delete},
        {"interrupt", "ID", "interrupt the running execution", verb_interrupt},
        {"restart", "ID", "restart the kernel (state is lost)", verb_restart},
    };
    return kf_cli_dispatch("session", "Create, inspect and delete sessions.", verbs, KF_ARRAY_SIZE(verbs),
                           argc, argv, g);
}
