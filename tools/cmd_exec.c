/* cmd_exec.c - "kfleetctl exec ID [CODE | -f FILE | -]": run code in a
 * session and render the Execute stream as it arrives.
 *
 * Table mode renders like a terminal would: stdout text to stdout, stderr
 * text and tracebacks to stderr, results and text/plain displays to stdout,
 * images saved as files (with a note on stderr), other MIME types noted by
 * size. JSON mode prints each event as one line (NDJSON, bytes base64) and
 * saves nothing. Either way the exit code says how the execution ended
 * (see kfleetctl.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "kfleetctl.h"
#include "output.h"

/* The agent refuses code larger than this; check before sending it. */
#define KF_EXEC_CODE_MAX (1024 * 1024)
/* Extra time the call gets beyond the execution's own --timeout, for the
 * server to interrupt the kernel and report the result. */
#define KF_EXEC_DEADLINE_SLACK_MS 60000

static const char exec_help[] =
    "Usage: kfleetctl exec [OPTIONS] ID [CODE | -f FILE | -]\n"
    "\n"
    "Run Python code in session ID and stream its output as it happens. The code\n"
    "comes from CODE, from FILE, or from stdin ('-' or nothing). Code that starts\n"
    "with '-' goes after '--':  kfleetctl exec ID -- '-1 + 2'\n"
    "\n"
    "stdout and results go to stdout; stderr, tracebacks and notes go to stderr.\n"
    "Images are saved as <ID>-<execution>-<n>.<ext> in the save directory.\n"
    "With -o json every event is printed as one JSON line (bytes in base64).\n"
    "\n"
    "Options:\n"
    "  -f, --file FILE       read the code from FILE (at most 1 MiB)\n"
    "      --timeout DUR     time limit of this execution, e.g. 2s, 5m (default:\n"
    "                        the session's limit)\n"
    "      --save-dir DIR    where images are saved (default: the current directory)\n"
    "      --color           keep ANSI colours in tracebacks\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit codes: 0 ok; 1 the code raised; 2 usage, connection or server error;\n"
    "3 timed out; 4 out of memory; 5 interrupted or kernel died.\n";

enum { OPT_TIMEOUT = KF_OPT_LOCAL, OPT_SAVE_DIR, OPT_COLOR };

typedef struct exec_ctx {
    const char *session;
    char session_safe[65]; /* the id as it may appear in a file name */
    const char *save_dir;  /* NULL = current directory */
    bool color;
    bool json;
    uint32_t exec_count;   /* latest execution_count seen */
    unsigned images;       /* images saved so far, numbers the files */
    bool got_result;
    int exit_code;
} exec_ctx;

/* ---- reading the code ------------------------------------------------------------ */

/* Reads all of fd, at most max bytes (-EFBIG past that). *out is NUL-
 * terminated, malloc'd. */
static int read_fd_bounded(int fd, size_t max, char **out, size_t *len) {
    size_t cap = 64 * 1024, n = 0;
    _cleanup_free_ char *buf = malloc(cap + 1);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (n == cap) {
            if (cap > max)
                return -EFBIG;
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb)
                return -ENOMEM;
            buf = nb;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max)
            return -EFBIG;
    }
    buf[n] = '\0';
    *len = n;
    *out = TAKE_PTR(buf);
    return 0;
}

/* The code as a string the server will accept: at most 1 MiB of UTF-8
 * without NUL bytes. `what` names its source in messages. */
static int check_code(const char *what, const char *code, size_t len) {
    if (len > KF_EXEC_CODE_MAX)
        return kf_cli_usage_error("exec", "%s is larger than 1 MiB, the server's limit", what);
    if (strlen(code) != len)
        return kf_cli_usage_error("exec", "%s contains a NUL byte", what);
    if (!kf_utf8_valid(code, len))
        return kf_cli_usage_error("exec", "%s is not valid UTF-8", what);
    return 0;
}

static int load_code(const char *file, const char *inline_code, char **out) {
    size_t len = 0;
    int r;
    if (inline_code) {
        if ((r = check_code("the code", inline_code, strlen(inline_code))) != 0)
            return r;
        *out = strdup(inline_code);
        return *out ? 0 : KF_EXIT_USAGE;
    }
    if (file && strcmp(file, "-") != 0) {
        r = kf_read_file(file, KF_EXEC_CODE_MAX, out, &len);
        if (r == -EFBIG)
            return kf_cli_usage_error("exec", "%s is larger than 1 MiB, the server's limit", file);
        if (r < 0) {
            fprintf(stderr, "kfleetctl exec: cannot read %s: %s\n", file, strerror(-r));
            return KF_EXIT_USAGE;
        }
        return check_code(file, *out, len);
    }
    if (isatty(STDIN_FILENO))
        fprintf(stderr, "kfleetctl: reading code from the terminal; end it with Ctrl-D\n");
    r = read_fd_bounded(STDIN_FILENO, KF_EXEC_CODE_MAX, out, &len);
    if (r == -EFBIG)
        return kf_cli_usage_error("exec", "the code on stdin is larger than 1 MiB, the server's limit");
    if (r < 0) {
        fprintf(stderr, "kfleetctl exec: cannot read stdin: %s\n", strerror(-r));
        return KF_EXIT_USAGE;
    }
    return check_code("the code on stdin", *out, len);
}

/* ---- rendering events --------------------------------------------------------------- */

static void put_text(FILE *f, const void *data, size_t len, bool newline) {
    if (len)
        fwrite(data, 1, len, f);
    if (newline && (len == 0 || ((const char *)data)[len - 1] != '\n'))
        fputc('\n', f);
}

static const char *image_ext(const char *mime) {
    if (!strcmp(mime, "image/png"))
        return "png";
    if (!strcmp(mime, "image/jpeg"))
        return "jpg";
    if (!strcmp(mime, "image/svg+xml"))
        return "svg";
    return NULL;
}

static void save_image(exec_ctx *x, const Kfleet__V1__MimeItem *it, const char *ext) {
    char path[PATH_MAX];
    unsigned n = ++x->images;
    const char *dir = x->save_dir;
    size_t dl = dir ? strlen(dir) : 0;
    int len;
    if (dir)
        len = snprintf(path, sizeof(path), "%s%s%s-%" PRIu32 "-%u.%s", dir,
                       dl && dir[dl - 1] == '/' ? "" : "/", x->session_safe, x->exec_count, n, ext);
    else
        len = snprintf(path, sizeof(path), "%s-%" PRIu32 "-%u.%s", x->session_safe, x->exec_count, n, ext);
    if (len < 0 || (size_t)len >= sizeof(path)) {
        fprintf(stderr, "kfleetctl: cannot save %s: the path is too long\n", it->mime_type);
        return;
    }
    int r = 0;
    if (dir)
        r = kf_mkdir_p(dir, 0755);
    if (r == 0)
        r = kf_write_file_atomic(path, it->data.data, it->data.len, 0644, 0);
    if (r < 0)
        fprintf(stderr, "kfleetctl: cannot save %s to %s: %s\n", it->mime_type, path, strerror(-r));
    else
        fprintf(stderr, "[%s saved to %s]\n", it->mime_type, path);
}

static void render_display(exec_ctx *x, const Kfleet__V1__DisplayData *d) {
    if (d->execution_count)
        x->exec_count = d->execution_count;
    for (size_t i = 0; i < d->n_items; i++) {
        const Kfleet__V1__MimeItem *it = d->items[i];
        const char *mime = it->mime_type ? it->mime_type : "";
        const char *ext = image_ext(mime);
        if (ext)
            save_image(x, it, ext);
        else if (!strcmp(mime, "text/plain"))
            put_text(stdout, it->data.data, it->data.len, true);
        else if (!strcmp(mime, "text/html") && d->n_items == 1)
            put_text(stdout, it->data.data, it->data.len, true);
        else
            fprintf(stderr, "[%s: %zu bytes]\n", mime, it->data.len);
    }
}

static void render_error(exec_ctx *x, const Kfleet__V1__ErrorOutput *e) {
    if (e->n_traceback == 0) {
        fprintf(stderr, "%s: %s\n", e->ename, e->evalue);
        return;
    }
    for (size_t i = 0; i < e->n_traceback; i++) {
        char *line = e->traceback[i];
        /* The message is ours to edit (it came from unpack). */
        size_t len = x->color ? strlen(line) : kf_strip_ansi(line);
        put_text(stderr, line, len, true);
    }
}

static int exit_code_for(Kfleet__V1__ExecStatus s) {
    switch (s) {
    case KFLEET__V1__EXEC_STATUS__EXEC_STATUS_OK: return KF_EXIT_OK;
    case KFLEET__V1__EXEC_STATUS__EXEC_STATUS_ERROR: return KF_EXIT_EXCEPTION;
    case KFLEET__V1__EXEC_STATUS__EXEC_STATUS_TIMEOUT: return KF_EXIT_TIMEOUT;
    case KFLEET__V1__EXEC_STATUS__EXEC_STATUS_OUT_OF_MEMORY: return KF_EXIT_OOM;
    case KFLEET__V1__EXEC_STATUS__EXEC_STATUS_INTERRUPTED:
    case KFLEET__V1__EXEC_STATUS__EXEC_STATUS_KERNEL_DIED: return KF_EXIT_INTERRUPTED;
    default: return KF_EXIT_USAGE;
    }
}

static void render_result(exec_ctx *x, const Kfleet__V1__ExecuteResult *res) {
    x->got_result = true;
    x->exit_code = exit_code_for(res->status);
    if (res->execution_count)
        x->exec_count = res->execution_count;
    if (x->json)
        return;
    if (res->output_truncated)
        fprintf(stderr, "kfleet: output was truncated (over the per-execution limit)\n");
    if (res->status != KFLEET__V1__EXEC_STATUS__EXEC_STATUS_OK) {
        double secs = (double)res->duration_ms / 1000.0;
        if (res->message && *res->message)
            fprintf(stderr, "kfleet: %s\n", res->message);
        else if (res->status == KFLEET__V1__EXEC_STATUS__EXEC_STATUS_TIMEOUT)
            fprintf(stderr, "kfleet: execution timed out after %.1f s\n", secs);
        else if (res->status == KFLEET__V1__EXEC_STATUS__EXEC_STATUS_OUT_OF_MEMORY)
            fprintf(stderr, "kfleet: execution ran out of memory after %.1f s\n", secs);
        else if (res->status == KFLEET__V1__EXEC_STATUS__EXEC_STATUS_INTERRUPTED)
            fprintf(stderr, "kfleet: execution interrupted after %.1f s\n", secs);
        else if (res->status == KFLEET__V1__EXEC_STATUS__EXEC_STATUS_KERNEL_DIED)
            fprintf(stderr, "kfleet: the kernel died after %.1f s\n", secs);
        else if (res->status != KFLEET__V1__EXEC_STATUS__EXEC_STATUS_ERROR)
            fprintf(stderr, "kfleet: execution ended with unknown status %d\n", (int)res->status);
        /* ERROR without a message: the traceback already said it. */
    }
    if (res->kernel_restarted)
        fprintf(stderr, "kfleet: the kernel was restarted; the session's Python state was lost\n");
}

static void render_event(exec_ctx *x, Kfleet__V1__ExecuteEvent *ev) {
    if (x->json) {
        kf_print_pb_json(&ev->base, false);
        if (ev->event_case == KFLEET__V1__EXECUTE_EVENT__EVENT_RESULT)
            render_result(x, ev->result);
        return;
    }
    switch (ev->event_case) {
    case KFLEET__V1__EXECUTE_EVENT__EVENT_STREAM:
        put_text(ev->stream->name == KFLEET__V1__STREAM_NAME__STREAM_NAME_STDERR ? stderr : stdout,
                 ev->stream->text, strlen(ev->stream->text), false);
        break;
    case KFLEET__V1__EXECUTE_EVENT__EVENT_DISPLAY:
        render_display(x, ev->display);
        break;
    case KFLEET__V1__EXECUTE_EVENT__EVENT_ERROR:
        render_error(x, ev->error);
        break;
    case KFLEET__V1__EXECUTE_EVENT__EVENT_RESULT:
        render_result(x, ev->result);
        break;
    case KFLEET__V1__EXECUTE_EVENT__EVENT_NOTICE:
        fprintf(stderr, "kfleet: %s\n", ev->notice);
        break;
    default:
        /* An event kind newer than this build: not ours to render. */
        break;
    }
}

/* ---- the command ------------------------------------------------------------------------ */

int kf_cmd_exec(int argc, char **argv, const kf_cli_globals *g0) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"file", required_argument, NULL, 'f'},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"save-dir", required_argument, NULL, OPT_SAVE_DIR},
        {"color", no_argument, NULL, OPT_COLOR},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "exec";
    kf_cli_globals g = *g0;
    exec_ctx x = {0};
    const char *file = NULL;
    uint64_t timeout_ms = 0;
    int c;

    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hf:" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            kf_cli_help(stdout, exec_help);
            return KF_EXIT_OK;
        case 'f':
            file = optarg;
            break;
        case OPT_TIMEOUT:
            if (kf_parse_duration_ms(optarg, &timeout_ms) < 0 || timeout_ms == 0 || timeout_ms > UINT32_MAX)
                return kf_cli_usage_error(cmd, "bad --timeout '%s' (e.g. 2s, 500ms, 5m)", optarg);
            break;
        case OPT_SAVE_DIR:
            x.save_dir = optarg;
            break;
        case OPT_COLOR:
            x.color = true;
            break;
        default: {
            int r = kf_cli_other_option(cmd, c, argv, &g);
            if (r != KF_CLI_GO)
                return r;
        }
        }
    }
    int r = kf_cli_check_args(cmd, "ID [CODE | -f FILE | -]", argc, argv, 1, 2);
    if (r != KF_CLI_GO)
        return r;
    x.session = argv[optind];
    const char *inline_code = optind + 1 < argc ? argv[optind + 1] : NULL;
    if (inline_code && !strcmp(inline_code, "-"))
        inline_code = NULL; /* stdin */
    if (file && optind + 1 < argc)
        return kf_cli_usage_error(cmd, "give the code either as an argument or with -f, not both");
    if (!*x.session)
        return kf_cli_usage_error(cmd, "the session ID is empty");

    size_t i;
    for (i = 0; x.session[i] && i < sizeof(x.session_safe) - 1; i++) {
        char ch = x.session[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '-' || ch == '_' || ch == '.';
        x.session_safe[i] = ok ? ch : '_';
    }
    x.session_safe[i] = '\0';
    x.json = g.output == KF_OUT_JSON;

    _cleanup_free_ char *code = NULL;
    if ((r = load_code(file, inline_code, &code)) != 0)
        return r;

    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    Kfleet__V1__ExecuteRequest req = KFLEET__V1__EXECUTE_REQUEST__INIT;
    req.session_id = (char *)x.session;
    req.code = code;
    req.timeout_ms = (uint32_t)timeout_ms;
    /* Without --timeout the session's limit applies, which only the server
     * knows: no deadline then (Ctrl-C ends the call). */
    int64_t deadline = timeout_ms ? (int64_t)timeout_ms + KF_EXEC_DEADLINE_SLACK_MS : 0;

    _cleanup_grpc_call_ kf_grpc_call *call = NULL;
    kf_rpc_status st;
    int64_t t0 = kf_mono_ms();
    if (kf_grpc_server_stream_start(client, KF_SESSIONS_METHOD("Execute"), &req.base,
                                    &kfleet__v1__execute_event__descriptor, kf_cli_timeout(&g, deadline),
                                    &call, &st) < 0)
        return kf_cli_rpc_error(&st);
    for (;;) {
        _cleanup_pb_ Kfleet__V1__ExecuteEvent *ev = NULL;
        r = kf_grpc_stream_next(call, (ProtobufCMessage **)&ev, &st);
        if (r <= 0)
            break;
        render_event(&x, ev);
        fflush(stdout);
        fflush(stderr);
        if (ferror(stdout))
            break; /* reported below; freeing the call cancels it */
    }
    kf_debug("exec finished in %" PRId64 " ms", kf_mono_ms() - t0);
    if (kf_cli_flush_stdout() != 0)
        return KF_EXIT_USAGE;
    if (r < 0) {
        kf_cli_rpc_error(&st);
        /* A result that made it is still the best answer to "how did it end". */
        return x.got_result ? x.exit_code : KF_EXIT_USAGE;
    }
    if (!x.got_result) {
        fprintf(stderr, "kfleetctl: the server ended the execution without a result\n");
        return KF_EXIT_USAGE;
    }
    return x.exit_code;
}
