/* kfleetctl.h - what the kfleetctl command files share: the global options,
 * the exit codes, option-parsing and dispatch helpers, and the entry point
 * of each noun (one file per noun: cmd_session.c, cmd_exec.c, cmd_file.c,
 * cmd_node.c, cmd_top.c, cmd_bench.c, cmd_plan.c). Internal to tools/.
 *
 * Every command returns its process exit code; nothing below main() calls
 * exit(). Messages for the user go to stderr prefixed with "kfleetctl";
 * results go to stdout, as a table or as JSON (-o json).
 */
#ifndef KF_KFLEETCTL_H
#define KF_KFLEETCTL_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kf/grpc_client.h"

#ifndef KF_VERSION
#define KF_VERSION "0.1.0"
#endif

#define KF_CLI_DEFAULT_SERVER "unix:/run/kfleet/agent.sock"
/* Deadline of a unary call unless --rpc-timeout says otherwise. Creating a
 * session may wait for a cold kernel start, hence not shorter. */
#define KF_CLI_UNARY_TIMEOUT_MS 60000
#define KF_SESSIONS_METHOD(m) "/kfleet.v1.Sessions/" m

/* Exit codes, the contract scripts rely on. */
enum {
    KF_EXIT_OK = 0,
    KF_EXIT_EXCEPTION = 1,   /* exec: the code raised */
    KF_EXIT_USAGE = 2,       /* bad command line, transport or gRPC error */
    KF_EXIT_TIMEOUT = 3,     /* exec: the execution hit its time limit */
    KF_EXIT_OOM = 4,         /* exec: out of memory */
    KF_EXIT_INTERRUPTED = 5, /* exec: interrupted, or the kernel died */
};

typedef enum kf_out_format { KF_OUT_TABLE = 0, KF_OUT_JSON } kf_out_format;

/* The options that apply to every command. Strings point into argv or the
 * environment (not owned). */
typedef struct kf_cli_globals {
    const char *server;
    const char *token;
    kf_out_format output;
    bool tls;
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
    const char *tls_server_name;
    int64_t rpc_timeout_ms; /* 0 = each command's default */
    bool verbose;
} kf_cli_globals;

/* Global options are accepted before the noun and among any command's own
 * options ("kfleetctl session list -o json"). A command puts these in its
 * getopt tables and passes every option it does not know itself to
 * kf_cli_global_option. Command-local long options use ids >= KF_OPT_LOCAL. */
enum {
    KF_OPT_TOKEN = 0x100,
    KF_OPT_TLS,
    KF_OPT_CACERT,
    KF_OPT_CERT,
    KF_OPT_KEY,
    KF_OPT_TLS_NAME,
    KF_OPT_RPC_TIMEOUT,
    KF_OPT_VERBOSE,
    KF_OPT_LOCAL = 0x200,
};
#define KF_CLI_GLOBAL_SHORTOPTS "s:o:"
#define KF_CLI_GLOBAL_LONGOPTS                                                                     \
    {"server", required_argument, NULL, 's'}, {"token", required_argument, NULL, KF_OPT_TOKEN},     \
        {"output", required_argument, NULL, 'o'}, {"tls", no_argument, NULL, KF_OPT_TLS},           \
        {"cacert", required_argument, NULL, KF_OPT_CACERT},                                        \
        {"tls-ca", required_argument, NULL, KF_OPT_CACERT},                                        \
        {"cert", required_argument, NULL, KF_OPT_CERT}, {"key", required_argument, NULL, KF_OPT_KEY}, \
        {"tls-cert", required_argument, NULL, KF_OPT_CERT},                                        \
        {"tls-key", required_argument, NULL, KF_OPT_KEY},                                          \
        {"tls-server-name", required_argument, NULL, KF_OPT_TLS_NAME},                             \
        {"rpc-timeout", required_argument, NULL, KF_OPT_RPC_TIMEOUT},                              \
        {"verbose", no_argument, NULL, KF_OPT_VERBOSE}

/* The help text for the options above, for usage screens. */
extern const char kf_cli_global_help[];

/* kf_cli_global_option - apply getopt result `c` (with optarg `arg`) if it
 * is a global option. Returns 1 if it was, 0 if `c` is not a global option
 * (the caller reports it with kf_cli_bad_option), -1 if the value is bad
 * (message already printed; exit KF_EXIT_USAGE). */
int kf_cli_global_option(const char *cmd, int c, const char *arg, kf_cli_globals *g);

/* kf_cli_bad_option - print "kfleetctl CMD: unknown flag '--x'" (or "flag
 * '--x' needs a value" for ':'), using getopt's optopt/optind. Set opterr
 * to 0 and start the option string with "+:" or ":" so getopt stays quiet
 * and reports a missing value as ':'. Returns KF_EXIT_USAGE. */
int kf_cli_bad_option(const char *cmd, int c, char **argv);
/* kf_cli_other_option - the `default:` of every verb's getopt loop: apply
 * `c` if it is a global option (KF_CLI_GO), else report it (unknown flag,
 * missing or bad value) and return the exit code. */
int kf_cli_other_option(const char *cmd, int c, char **argv, kf_cli_globals *g);

/* kf_cli_usage_error - "kfleetctl CMD: <message>" and a hint to run
 * "kfleetctl CMD --help". Returns KF_EXIT_USAGE. */
int kf_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* kf_cli_connect - a client for g->server with g's token and TLS options.
 * Returns 0, or prints why not and returns KF_EXIT_USAGE. */
int kf_cli_connect(const kf_cli_globals *g, kf_grpc_client **out);

/* kf_cli_rpc_error - "kfleetctl: NOT_FOUND: <server message>" on stderr.
 * Returns KF_EXIT_USAGE. */
int kf_cli_rpc_error(const kf_rpc_status *st);

/* The deadline for a call: --rpc-timeout if given, else `dflt` (0 = none). */
int64_t kf_cli_timeout(const kf_cli_globals *g, int64_t dflt);

/* kf_cli_flush_stdout - flush stdout and report a failed write ("No space
 * left", a closed pipe). Returns 0 or KF_EXIT_USAGE. */
int kf_cli_flush_stdout(void);

/* kf_cli_help - print a verb's help text and a pointer to the global
 * options. */
void kf_cli_help(FILE *f, const char *help);

/* What kf_cli_parse_args returns when the command should go on. */
#define KF_CLI_GO (-1)

/* kf_cli_parse_args - parse the options of a verb that has none of its own
 * (only the global ones and -h), then check that between min_args and
 * max_args positional arguments remain; `synopsis` ("ID [PATH]") names them
 * in the error. Returns KF_CLI_GO with the arguments at argv[optind...],
 * or the exit code to return (0 after --help, 2 after an error). */
int kf_cli_parse_args(const char *cmd, const char *help, const char *synopsis, int argc, char **argv,
                      kf_cli_globals *g, int min_args, int max_args);

/* kf_cli_check_args - the positional-argument check of kf_cli_parse_args,
 * for verbs that run their own getopt loop. */
int kf_cli_check_args(const char *cmd, const char *synopsis, int argc, char **argv, int min_args,
                      int max_args);

/* A verb of a noun: "session create". `args` is the one-line synopsis after
 * the verb; `run` gets argv starting at the verb (argv[0] = verb name). */
typedef struct kf_cli_verb {
    const char *name;
    const char *args;
    const char *summary;
    int (*run)(int argc, char **argv, const kf_cli_globals *g);
} kf_cli_verb;

/* kf_cli_dispatch - run the verb named by argv[1] of a noun (argv[0] is the
 * noun), after any global options between the two. Prints the noun's usage
 * for -h/--help (exit 0) and when the verb is missing or unknown (exit 2). */
int kf_cli_dispatch(const char *noun, const char *summary, const kf_cli_verb *verbs, size_t nverbs,
                    int argc, char **argv, const kf_cli_globals *g);

/* Nouns. argv[0] is the noun. */
int kf_cmd_session(int argc, char **argv, const kf_cli_globals *g);
int kf_cmd_exec(int argc, char **argv, const kf_cli_globals *g);
int kf_cmd_file(int argc, char **argv, const kf_cli_globals *g);
int kf_cmd_node(int argc, char **argv, const kf_cli_globals *g);
int kf_cmd_plan(int argc, char **argv, const kf_cli_globals *g);
int kf_cmd_top(int argc, char **argv, const kf_cli_globals *g);

/* cmd_node.c, shared with cmd_drain.c: a failed kfleet.v1.Cluster call
 * reported (UNIMPLEMENTED: "not a scheduler"), and the default --who. */
int kf_node_rpc_error(const kf_cli_globals *g, const kf_rpc_status *st);
const char *kf_node_default_who(void);
/* cmd_drain.c: "kfleetctl node drain". */
int kf_cmd_node_drain(int argc, char **argv, const kf_cli_globals *g);

#endif
