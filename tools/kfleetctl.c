/* kfleetctl.c - the kfleet command-line client: global options, the noun
 * table, top-level help, and the helpers every command file shares
 * (option errors, connecting, printing gRPC errors).
 *
 *   kfleetctl [--server ADDR] [--token T] [-o table|json] NOUN VERB ...
 *
 * Each noun lives in its own file (cmd_session.c, cmd_exec.c, cmd_file.c,
 * cmd_node.c, cmd_top.c, cmd_bench.c, cmd_plan.c) and receives argv starting at the noun. The server address
 * defaults to $KFLEET_SERVER, else the local agent's socket; the token to
 * $KFLEET_TOKEN.
 */
#include <errno.h>
#include <grpc/support/log.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_bench.h"
#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "kfleetctl.h"

typedef struct kf_cli_noun {
    const char *name;
    const char *synopsis;
    const char *summary;
    int (*run)(int argc, char **argv, const kf_cli_globals *g);
} kf_cli_noun;

static const kf_cli_noun nouns[] = {
    {"session", "create|list|get|delete|interrupt|restart", "manage sessions", kf_cmd_session},
    {"exec", "ID [CODE | -f FILE | -]", "run code in a session, streaming its output", kf_cmd_exec},
    {"file", "upload|download|list|delete", "move files in and out of a session's /mnt/data", kf_cmd_file},
    {"node", "list|get|cordon|uncordon", "inspect and cordon the cluster's nodes (scheduler)", kf_cmd_node},
    {"top", "[--once]", "a live view of the cluster's nodes (scheduler)", kf_cmd_top},
    {"bench", "...", "load-test a server", kf_cmd_bench},
    {"plan", "simulate|drain|lose|fit", "capacity planning: simulate a workload, what-ifs of the cluster", kf_cmd_plan},
};

const char kf_cli_global_help[] =
    "Global options (accepted before the command and among its options):\n"
    "  -s, --server ADDR         server: unix:/path or host:port (default $KFLEET_SERVER,\n"
    "                            else " KF_CLI_DEFAULT_SERVER ")\n"
    "      --token TOKEN         bearer token sent with every call (default $KFLEET_TOKEN)\n"
    "  -o, --output FORMAT       table (default) or json\n"
    "      --tls                 use TLS (implied by --cacert, --cert, --key)\n"
    "      --cacert, --tls-ca FILE  PEM roots to trust instead of the system's\n"
    "      --cert, --tls-cert FILE  client certificate (PEM), with --key\n"
    "      --key, --tls-key FILE    client private key (PEM)\n"
    "      --tls-server-name N   name to check the server certificate against\n"
    "      --rpc-timeout DUR     deadline of every call (default 60s for single calls,\n"
    "                            none for exec and file transfers)\n"
    "      --verbose             log call details to stderr\n"
    "  -h, --help                show help (after any noun or verb, too)\n";

static void usage(FILE *f) {
    fprintf(f, "Usage: kfleetctl [OPTIONS] NOUN VERB [ARGS...]\n\n"
               "Run code in kfleet's sandboxed Python kernels and manage their sessions and files.\n\n"
               "Commands:\n");
    for (size_t i = 0; i < KF_ARRAY_SIZE(nouns); i++) {
        char left[64];
        snprintf(left, sizeof(left), "%s %s", nouns[i].name, nouns[i].synopsis);
        fprintf(f, "  %-50s %s\n", left, nouns[i].summary);
    }
    fprintf(f, "\n%s      --version             print the version\n\n"
               "Run 'kfleetctl NOUN --help' for a noun's verbs and 'kfleetctl NOUN VERB --help'\n"
               "for a verb's options.\n\n"
               "Exit codes: 0 success; 1 the executed code raised; 2 usage, connection or server\n"
               "error; 3 execution timed out; 4 out of memory; 5 interrupted or kernel died.\n",
            kf_cli_global_help);
}

/* ---- helpers shared by the command files --------------------------------- */

int kf_cli_global_option(const char *cmd, int c, const char *arg, kf_cli_globals *g) {
    uint64_t ms;
    switch (c) {
    case 's':
        if (!*arg) {
            kf_cli_usage_error(cmd, "--server needs an address");
            return -1;
        }
        g->server = arg;
        return 1;
    case KF_OPT_TOKEN:
        g->token = arg;
        return 1;
    case 'o':
        if (!strcmp(arg, "table")) {
            g->output = KF_OUT_TABLE;
        } else if (!strcmp(arg, "json")) {
            g->output = KF_OUT_JSON;
        } else {
            kf_cli_usage_error(cmd, "unknown output format '%s' (use table or json)", arg);
            return -1;
        }
        return 1;
    case KF_OPT_TLS:
        g->tls = true;
        return 1;
    case KF_OPT_CACERT:
        g->tls_ca = arg;
        return 1;
    case KF_OPT_CERT:
        g->tls_cert = arg;
        return 1;
    case KF_OPT_KEY:
        g->tls_key = arg;
        return 1;
    case KF_OPT_TLS_NAME:
        g->tls_server_name = arg;
        return 1;
    case KF_OPT_RPC_TIMEOUT:
        if (kf_parse_duration_ms(arg, &ms) < 0 || ms == 0 || ms > INT32_MAX) {
            kf_cli_usage_error(cmd, "bad --rpc-timeout '%s' (e.g. 30s, 500ms, 2m)", arg);
            return -1;
        }
        g->rpc_timeout_ms = (int64_t)ms;
        return 1;
    case KF_OPT_VERBOSE:
        g->verbose = true;
        kf_log_set_level(KF_LOG_DEBUG);
        return 1;
    default:
        return 0;
    }
}

int kf_cli_usage_error(const char *cmd, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "kfleetctl%s%s: %s\nTry 'kfleetctl%s%s --help'.\n", cmd ? " " : "", cmd ? cmd : "",
            msg, cmd ? " " : "", cmd ? cmd : "");
    return KF_EXIT_USAGE;
}

int kf_cli_other_option(const char *cmd, int c, char **argv, kf_cli_globals *g) {
    int r = kf_cli_global_option(cmd, c, optarg, g);
    if (r < 0)
        return KF_EXIT_USAGE;
    return r == 0 ? kf_cli_bad_option(cmd, c, argv) : KF_CLI_GO;
}

int kf_cli_bad_option(const char *cmd, int c, char **argv) {
    /* getopt leaves the word it was reading at argv[optind - 1] once it has
     * finished with it; for a short option optopt names the letter (the
     * word may be a cluster such as "-xq"). optopt is 0 for an unknown long
     * option. */
    const char *word = optind > 0 ? argv[optind - 1] : "?";
    bool is_long = !strncmp(word, "--", 2);
    char shortopt[3] = {'-', (char)optopt, '\0'};
    const char *name = word;
    if (!is_long && optopt > 0x20 && optopt < 0x7f)
        name = shortopt;
    if (c == ':')
        return kf_cli_usage_error(cmd, "flag '%s' needs a value", name);
    if (c == '?')
        return kf_cli_usage_error(cmd, "unknown flag '%s'", name);
    /* A global option the command chose not to accept. */
    return kf_cli_usage_error(cmd, "flag '%s' is not valid here", name);
}

int kf_cli_connect(const kf_cli_globals *g, kf_grpc_client **out) {
    kf_grpc_client_opts o = {
        .target = g->server,
        .token = g->token,
        .tls = g->tls,
        .tls_ca_file = g->tls_ca,
        .tls_cert_file = g->tls_cert,
        .tls_key_file = g->tls_key,
        .tls_server_name = g->tls_server_name,
        .user_agent = "kfleetctl/" KF_VERSION,
    };
    kf_error err = {0};
    int r = kf_grpc_client_new(&o, out, &err);
    if (r < 0) {
        fprintf(stderr, "kfleetctl: %s\n", err.msg[0] ? err.msg : strerror(-r));
        return KF_EXIT_USAGE;
    }
    kf_debug("server %s%s%s", g->server, g->token && *g->token ? ", with a token" : "",
             (g->tls || g->tls_ca || g->tls_cert) ? ", TLS" : "");
    return 0;
}

int kf_cli_rpc_error(const kf_rpc_status *st) {
    fprintf(stderr, "kfleetctl: %s: %s\n", kf_grpc_status_name(st->code), st->message);
    return KF_EXIT_USAGE;
}

int64_t kf_cli_timeout(const kf_cli_globals *g, int64_t dflt) {
    return g->rpc_timeout_ms > 0 ? g->rpc_timeout_ms : dflt;
}

int kf_cli_flush_stdout(void) {
    if (fflush(stdout) == 0 && !ferror(stdout))
        return 0;
    fprintf(stderr, "kfleetctl: cannot write the output: %s\n", strerror(errno));
    return KF_EXIT_USAGE;
}

void kf_cli_help(FILE *f, const char *help) {
    fprintf(f, "%s\nGlobal options (--server, --token, -o, TLS): see 'kfleetctl --help'.\n", help);
}

int kf_cli_check_args(const char *cmd, const char *synopsis, int argc, char **argv, int min_args,
                      int max_args) {
    int n = argc - optind;
    if (n < min_args)
        return kf_cli_usage_error(cmd, "expects %s", synopsis);
    if (max_args >= 0 && n > max_args)
        return kf_cli_usage_error(cmd, "unexpected argument '%s' (expects %s)", argv[optind + max_args],
                                  synopsis);
    return KF_CLI_GO;
}

int kf_cli_parse_args(const char *cmd, const char *help, const char *synopsis, int argc, char **argv,
                      kf_cli_globals *g, int min_args, int max_args) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (c == 'h') {
            kf_cli_help(stdout, help);
            return KF_EXIT_OK;
        }
        int r = kf_cli_global_option(cmd, c, optarg, g);
        if (r < 0)
            return KF_EXIT_USAGE;
        if (r == 0)
            return kf_cli_bad_option(cmd, c, argv);
    }
    return kf_cli_check_args(cmd, synopsis, argc, argv, min_args, max_args);
}

static void noun_usage(FILE *f, const char *noun, const char *summary, const kf_cli_verb *verbs,
                       size_t n) {
    fprintf(f, "Usage: kfleetctl [OPTIONS] %s VERB [ARGS...]\n\n%s\n\nVerbs:\n", noun, summary);
    for (size_t i = 0; i < n; i++) {
        char left[80];
        snprintf(left, sizeof(left), "%s %s", verbs[i].name, verbs[i].args);
        fprintf(f, "  %-34s %s\n", left, verbs[i].summary);
    }
    fprintf(f, "\nRun 'kfleetctl %s VERB --help' for a verb's options; 'kfleetctl --help' for\n"
               "the global options.\n",
            noun);
}

int kf_cli_dispatch(const char *noun, const char *summary, const kf_cli_verb *verbs, size_t nverbs,
                    int argc, char **argv, const kf_cli_globals *g) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kf_cli_globals gl = *g;
    int c;
    optind = 0;
    opterr = 0;
    /* "+": stop at the verb; what follows belongs to it. */
    while ((c = getopt_long(argc, argv, "+:h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (c == 'h') {
            noun_usage(stdout, noun, summary, verbs, nverbs);
            return KF_EXIT_OK;
        }
        int r = kf_cli_global_option(noun, c, optarg, &gl);
        if (r < 0)
            return KF_EXIT_USAGE;
        if (r == 0)
            return kf_cli_bad_option(noun, c, argv);
    }
    if (optind >= argc) {
        noun_usage(stderr, noun, summary, verbs, nverbs);
        fprintf(stderr, "\nkfleetctl %s: missing verb\n", noun);
        return KF_EXIT_USAGE;
    }
    const char *verb = argv[optind];
    for (size_t i = 0; i < nverbs; i++)
        if (!strcmp(verb, verbs[i].name))
            return verbs[i].run(argc - optind, argv + optind, &gl);
    if (!strcmp(verb, "help")) {
        noun_usage(stdout, noun, summary, verbs, nverbs);
        return KF_EXIT_OK;
    }
    return kf_cli_usage_error(noun, "unknown verb '%s'", verb);
}

/* gRPC core logs its own errors (a failed TLS handshake) to stderr; the
 * failure reaches the user anyway as the call's status, so its lines are
 * shown only with --verbose. */
static void grpc_log_to_kf(gpr_log_func_args *a) {
    kf_debug("grpc %s:%d: %s", a->file, a->line, a->message);
}

/* ---- main ------------------------------------------------------------------ */

static const kf_cli_noun *find_noun(const char *name) {
    for (size_t i = 0; i < KF_ARRAY_SIZE(nouns); i++)
        if (!strcmp(name, nouns[i].name))
            return &nouns[i];
    return NULL;
}

/* "kfleetctl help [NOUN [VERB]]" = "kfleetctl NOUN [VERB] --help". */
static int run_help(int argc, char **argv, const kf_cli_globals *g) {
    if (argc < 2) {
        usage(stdout);
        return KF_EXIT_OK;
    }
    const kf_cli_noun *n = find_noun(argv[1]);
    if (!n)
        return kf_cli_usage_error(NULL, "unknown command '%s'", argv[1]);
    char help[] = "--help";
    char *av[4] = {argv[1], argc > 2 ? argv[2] : help, argc > 2 ? help : NULL, NULL};
    return n->run(argc > 2 ? 3 : 2, av, g);
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, KF_OPT_LOCAL},
        {NULL, 0, NULL, 0},
    };
    kf_log_set_ident("kfleetctl");
    kf_log_set_level(KF_LOG_WARN);
    gpr_set_log_function(grpc_log_to_kf);

    const char *env_server = getenv("KFLEET_SERVER");
    kf_cli_globals g = {
        .server = env_server && *env_server ? env_server : KF_CLI_DEFAULT_SERVER,
        .token = getenv("KFLEET_TOKEN"),
        .output = KF_OUT_TABLE,
    };

    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return KF_EXIT_OK;
        }
        if (c == KF_OPT_LOCAL) {
            printf("kfleetctl %s\n", KF_VERSION);
            return KF_EXIT_OK;
        }
        int r = kf_cli_global_option(NULL, c, optarg, &g);
        if (r < 0)
            return KF_EXIT_USAGE;
        if (r == 0)
            return kf_cli_bad_option(NULL, c, argv);
    }
    if (optind >= argc) {
        usage(stderr);
        return KF_EXIT_USAGE;
    }
    const char *name = argv[optind];
    if (!strcmp(name, "help"))
        return run_help(argc - optind, argv + optind, &g);
    const kf_cli_noun *n = find_noun(name);
    if (!n)
        return kf_cli_usage_error(NULL, "unknown command '%s'", name);
    return n->run(argc - optind, argv + optind, &g);
}
