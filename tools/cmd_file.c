/* cmd_file.c - "kfleetctl file ...": upload, download, list and delete
 * files under a session's /mnt/data.
 *
 * Upload is a client stream: a header message, then the file in 1 MiB
 * chunks, each sent only when gRPC has taken the previous one (so memory
 * stays at one chunk whatever the file size). Download is a server stream
 * written to a temporary file next to the target and renamed into place
 * only when the whole file has arrived, so an interrupted download never
 * leaves a truncated file under the real name.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/util.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "kfleetctl.h"
#include "output.h"

/* Chunk size of uploads; well under KF_GRPC_MAX_MESSAGE. */
#define UPLOAD_CHUNK (1024 * 1024)

/* The last component of a path, or NULL if there is none usable as a file
 * name ("dir/", ".", ".."). */
static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *b = slash ? slash + 1 : path;
    if (!*b || !strcmp(b, ".") || !strcmp(b, ".."))
        return NULL;
    return b;
}

/* Reads until buf is full or EOF. Returns bytes read or -errno. */
static ssize_t read_full(int fd, void *buf, size_t size) {
    size_t n = 0;
    while (n < size) {
        ssize_t r = read(fd, (char *)buf + n, size - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    return (ssize_t)n;
}

static int write_full(int fd, const void *buf, size_t size) {
    const char *p = buf;
    while (size > 0) {
        ssize_t w = write(fd, p, size);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        size -= (size_t)w;
    }
    return 0;
}

/* ---- upload ---------------------------------------------------------------------- */

static const char upload_help[] =
    "Usage: kfleetctl file upload [OPTIONS] ID LOCAL [REMOTE]\n"
    "\n"
    "Upload LOCAL ('-' = stdin) to REMOTE in the session's /mnt/data. REMOTE\n"
    "defaults to LOCAL's base name; it is relative to /mnt/data.\n"
    "\n"
    "Options:\n"
    "      --mode MODE   file mode, octal (default: LOCAL's permission bits,\n"
    "                    0644 for stdin)\n"
    "  -h, --help        show this help\n";

enum { OPT_MODE = KF_OPT_LOCAL };

static int verb_upload(int argc, char **argv, const kf_cli_globals *g0) {
    static const struct option longopts[] = {
        KF_CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"mode", required_argument, NULL, OPT_MODE},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "file upload";
    kf_cli_globals g = *g0;
    long mode = -1;
    int c, r;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h" KF_CLI_GLOBAL_SHORTOPTS, longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            kf_cli_help(stdout, upload_help);
            return KF_EXIT_OK;
        case OPT_MODE: {
            char *end;
            errno = 0;
            mode = strtol(optarg, &end, 8);
            if (errno || end == optarg || *end || mode < 0 || mode > 07777)
                return kf_cli_usage_error(cmd, "bad --mode '%s' (octal, e.g. 0644)", optarg);
            break;
        }
        default:
            if ((r = kf_cli_global_option(cmd, c, optarg, &g)) < 0)
                return KF_EXIT_USAGE;
            if (r == 0)
                return kf_cli_bad_option(cmd, c, argv);
        }
    }
    if ((r = kf_cli_check_args(cmd, "ID LOCAL [REMOTE]", argc, argv, 2, 3)) != KF_CLI_GO)
        return r;
    const char *id = argv[optind], *local = argv[optind + 1];
    const char *remote = optind + 2 < argc ? argv[optind + 2] : NULL;
    bool from_stdin = !strcmp(local, "-");
    if (!remote) {
        remote = from_stdin ? NULL : base_name(local);
        if (!remote)
            return kf_cli_usage_error(cmd, "cannot name the remote file after '%s'; give REMOTE", local);
    }

    _cleanup_close_ int fd = -1;
    if (from_stdin) {
        fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            fprintf(stderr, "kfleetctl: cannot read stdin: %s\n", strerror(errno));
            return KF_EXIT_USAGE;
        }
        if (mode < 0)
            mode = 0644;
    } else {
        fd = open(local, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct stat stbuf;
        if (fd < 0 || fstat(fd, &stbuf) < 0) {
            fprintf(stderr, "kfleetctl: cannot open %s: %s\n", local, strerror(errno));
            return KF_EXIT_USAGE;
        }
        if (S_ISDIR(stbuf.st_mode)) {
            fprintf(stderr, "kfleetctl: %s is a directory; upload files one by one\n", local);
            return KF_EXIT_USAGE;
        }
        if (mode < 0)
            mode = stbuf.st_mode & 0777;
    }

    _cleanup_free_ uint8_t *buf = malloc(UPLOAD_CHUNK);
    if (!buf) {
        fprintf(stderr, "kfleetctl: out of memory\n");
        return KF_EXIT_USAGE;
    }
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    _cleanup_grpc_call_ kf_grpc_call *call = NULL;
    kf_rpc_status st;
    if (kf_grpc_client_stream_start(client, KF_SESSIONS_METHOD("UploadFile"), kf_cli_timeout(&g, 0), &call,
                                    &st) < 0)
        return kf_cli_rpc_error(&st);

    Kfleet__V1__UploadFileHeader hdr = KFLEET__V1__UPLOAD_FILE_HEADER__INIT;
    hdr.session_id = (char *)id;
    hdr.path = (char *)remote;
    hdr.mode = (uint32_t)mode;
    Kfleet__V1__UploadFileRequest msg = KFLEET__V1__UPLOAD_FILE_REQUEST__INIT;
    msg.part_case = KFLEET__V1__UPLOAD_FILE_REQUEST__PART_HEADER;
    msg.header = &hdr;
    if (kf_grpc_stream_send(call, &msg.base, &st) < 0)
        return kf_cli_rpc_error(&st);

    uint64_t sent = 0;
    for (;;) {
        ssize_t n = read_full(fd, buf, UPLOAD_CHUNK);
        if (n < 0) {
            fprintf(stderr, "kfleetctl: cannot read %s: %s\n", local, strerror((int)-n));
            return KF_EXIT_USAGE; /* freeing the call cancels the upload */
        }
        if (n == 0)
            break;
        Kfleet__V1__UploadFileRequest chunk = KFLEET__V1__UPLOAD_FILE_REQUEST__INIT;
        chunk.part_case = KFLEET__V1__UPLOAD_FILE_REQUEST__PART_CHUNK;
        chunk.chunk.data = buf;
        chunk.chunk.len = (size_t)n;
        if (kf_grpc_stream_send(call, &chunk.base, &st) < 0)
            return kf_cli_rpc_error(&st);
        sent += (uint64_t)n;
        if ((size_t)n < UPLOAD_CHUNK)
            break;
    }
    _cleanup_pb_ Kfleet__V1__FileInfo *info = NULL;
    if (kf_grpc_stream_close_and_recv(call, &kfleet__v1__file_info__descriptor, (ProtobufCMessage **)&info,
                                      &st) < 0)
        return kf_cli_rpc_error(&st);
    if (info->size != sent)
        fprintf(stderr, "kfleetctl: warning: sent %" PRIu64 " bytes but the server reports %" PRIu64 "\n",
                sent, info->size);
    if (g.output == KF_OUT_JSON) {
        kf_print_pb_json(&info->base, true);
    } else {
        char sz[16];
        printf("uploaded %s (%s, %" PRIu64 " bytes)\n", info->path, kf_fmt_bytes(info->size, sz, sizeof(sz)),
               info->size);
    }
    return kf_cli_flush_stdout();
}

/* ---- download --------------------------------------------------------------------- */

static const char download_help[] =
    "Usage: kfleetctl file download ID REMOTE [LOCAL]\n"
    "\n"
    "Download REMOTE (relative to the session's /mnt/data) to LOCAL: a file, a\n"
    "directory to put it in, or '-' for stdout. LOCAL defaults to REMOTE's base\n"
    "name in the current directory. An existing file is replaced only once the\n"
    "whole download has arrived.\n"
    "\n"
    "Options:\n"
    "  -h, --help   show this help\n";

/* A temporary file that is removed unless it was renamed into place. */
typedef struct dl_tmp {
    char path[PATH_MAX];
    int fd;
} dl_tmp;

static void dl_tmp_done(dl_tmp *t) {
    if (t->fd >= 0)
        close(t->fd);
    if (t->path[0])
        unlink(t->path);
}

static int verb_download(int argc, char **argv, const kf_cli_globals *g0) {
    const char *cmd = "file download";
    kf_cli_globals g = *g0;
    int r = kf_cli_parse_args(cmd, download_help, "ID REMOTE [LOCAL]", argc, argv, &g, 2, 3);
    if (r != KF_CLI_GO)
        return r;
    const char *id = argv[optind], *remote = argv[optind + 1];
    const char *local = optind + 2 < argc ? argv[optind + 2] : NULL;
    bool to_stdout = local && !strcmp(local, "-");
    char target[PATH_MAX];
    const char *rbase = base_name(remote);

    _cleanup_(dl_tmp_done) dl_tmp tmp = {.fd = -1};
    int out = STDOUT_FILENO;
    if (!to_stdout) {
        struct stat stbuf;
        if (!local || (stat(local, &stbuf) == 0 && S_ISDIR(stbuf.st_mode))) {
            if (!rbase)
                return kf_cli_usage_error(cmd, "cannot name the local file after '%s'; give LOCAL", remote);
            size_t ll = local ? strlen(local) : 0;
            r = local ? snprintf(target, sizeof(target), "%s%s%s", local, local[ll - 1] == '/' ? "" : "/",
                                 rbase)
                      : snprintf(target, sizeof(target), "%s", rbase);
        } else {
            r = snprintf(target, sizeof(target), "%s", local);
        }
        if (r < 0 || (size_t)r >= sizeof(target))
            return kf_cli_usage_error(cmd, "the local path is too long");
        /* The temporary file goes in the target's directory so that the
         * final rename stays on one file system. */
        const char *slash = strrchr(target, '/');
        int dl = slash ? (int)(slash - target + 1) : 0;
        r = snprintf(tmp.path, sizeof(tmp.path), "%.*s.%s.kfleet-XXXXXX", dl, target, target + dl);
        if (r < 0 || (size_t)r >= sizeof(tmp.path)) {
            tmp.path[0] = '\0';
            return kf_cli_usage_error(cmd, "the local path is too long");
        }
        tmp.fd = mkostemp(tmp.path, O_CLOEXEC);
        if (tmp.fd < 0) {
            int e = errno;
            fprintf(stderr, "kfleetctl: cannot create a file next to %s: %s\n", target, strerror(e));
            tmp.path[0] = '\0';
            return KF_EXIT_USAGE;
        }
        out = tmp.fd;
    }

    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    Kfleet__V1__DownloadFileRequest req = KFLEET__V1__DOWNLOAD_FILE_REQUEST__INIT;
    req.session_id = (char *)id;
    req.path = (char *)remote;
    _cleanup_grpc_call_ kf_grpc_call *call = NULL;
    kf_rpc_status st;
    if (kf_grpc_server_stream_start(client, KF_SESSIONS_METHOD("DownloadFile"), &req.base,
                                    &kfleet__v1__file_chunk__descriptor, kf_cli_timeout(&g, 0), &call,
                                    &st) < 0)
        return kf_cli_rpc_error(&st);
    uint64_t got = 0;
    for (;;) {
        _cleanup_pb_ Kfleet__V1__FileChunk *chunk = NULL;
        r = kf_grpc_stream_next(call, (ProtobufCMessage **)&chunk, &st);
        if (r < 0)
            return kf_cli_rpc_error(&st);
        if (r == 0)
            break;
        int w = write_full(out, chunk->data.data, chunk->data.len);
        if (w < 0) {
            fprintf(stderr, "kfleetctl: cannot write %s: %s\n", to_stdout ? "stdout" : target, strerror(-w));
            return KF_EXIT_USAGE;
        }
        got += chunk->data.len;
    }
    if (to_stdout)
        return KF_EXIT_OK;

    /* Like any new file: 0666 less the umask. */
    mode_t um = umask(0);
    umask(um);
    if (fchmod(tmp.fd, 0666 & ~um) < 0 || fsync(tmp.fd) < 0 || close(TAKE_FD(tmp.fd)) < 0 ||
        rename(tmp.path, target) < 0) {
        fprintf(stderr, "kfleetctl: cannot write %s: %s\n", target, strerror(errno));
        return KF_EXIT_USAGE;
    }
    tmp.path[0] = '\0'; /* renamed: nothing to clean up */
    if (g.output == KF_OUT_JSON) {
        cJSON *j = cJSON_CreateObject();
        char num[24];
        snprintf(num, sizeof(num), "%" PRIu64, got);
        if (j && cJSON_AddStringToObject(j, "path", remote) && cJSON_AddStringToObject(j, "local", target) &&
            cJSON_AddRawToObject(j, "size", num))
            kf_print_json(j, true);
        cJSON_Delete(j);
    } else {
        char sz[16];
        printf("downloaded %s to %s (%s, %" PRIu64 " bytes)\n", remote, target,
               kf_fmt_bytes(got, sz, sizeof(sz)), got);
    }
    return kf_cli_flush_stdout();
}

/* ---- list ------------------------------------------------------------------------------ */

static const char list_help[] =
    "Usage: kfleetctl file list ID [PATH]\n"
    "\n"
    "List a directory of the session's /mnt/data (default: /mnt/data itself).\n"
    "\n"
    "Options:\n"
    "  -h, --help   show this help\n";

static void mode_string(const Kfleet__V1__FileInfo *f, char out[11]) {
    static const char rwx[] = "rwxrwxrwx";
    out[0] = f->is_dir ? 'd' : '-';
    for (int i = 0; i < 9; i++)
        out[1 + i] = (f->mode & (0400u >> i)) ? rwx[i] : '-';
    out[10] = '\0';
}

static int verb_list(int argc, char **argv, const kf_cli_globals *g0) {
    const char *cmd = "file list";
    kf_cli_globals g = *g0;
    int r = kf_cli_parse_args(cmd, list_help, "ID [PATH]", argc, argv, &g, 1, 2);
    if (r != KF_CLI_GO)
        return r;
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    Kfleet__V1__ListFilesRequest req = KFLEET__V1__LIST_FILES_REQUEST__INIT;
    req.session_id = argv[optind];
    req.path = optind + 1 < argc ? argv[optind + 1] : "";
    _cleanup_pb_ Kfleet__V1__ListFilesResponse *resp = NULL;
    kf_rpc_status st;
    if (kf_grpc_unary(client, KF_SESSIONS_METHOD("ListFiles"), &req.base,
                      &kfleet__v1__list_files_response__descriptor,
                      kf_cli_timeout(&g, KF_CLI_UNARY_TIMEOUT_MS), (ProtobufCMessage **)&resp, &st) < 0)
        return kf_cli_rpc_error(&st);
    if (g.output == KF_OUT_JSON) {
        kf_print_pb_json(&resp->base, true);
        return kf_cli_flush_stdout();
    }
    static const char *const headers[] = {"MODE", "SIZE", "MODIFIED", "PATH"};
    _cleanup_table_ kf_table *t = kf_table_new(KF_ARRAY_SIZE(headers), headers);
    if (!t)
        return KF_EXIT_USAGE;
    for (size_t i = 0; i < resp->n_files; i++) {
        const Kfleet__V1__FileInfo *f = resp->files[i];
        char mode[11], size[16], when[32], name[PATH_MAX + 2];
        mode_string(f, mode);
        if (f->is_dir)
            snprintf(size, sizeof(size), "-");
        else
            kf_fmt_bytes(f->size, size, sizeof(size));
        kf_fmt_time(f->mtime_unix_ms, when, sizeof(when));
        snprintf(name, sizeof(name), "%s%s", f->path, f->is_dir ? "/" : "");
        const char *row[] = {mode, size, when, name};
        kf_table_row(t, row);
    }
    kf_table_print(t, stdout);
    return kf_cli_flush_stdout();
}

/* ---- delete ------------------------------------------------------------------------------ */

static const char delete_help[] =
    "Usage: kfleetctl file delete ID REMOTE\n"
    "\n"
    "Delete REMOTE (relative to the session's /mnt/data).\n"
    "\n"
    "Options:\n"
    "  -h, --help   show this help\n";

static int verb_delete(int argc, char **argv, const kf_cli_globals *g0) {
    const char *cmd = "file delete";
    kf_cli_globals g = *g0;
    int r = kf_cli_parse_args(cmd, delete_help, "ID REMOTE", argc, argv, &g, 2, 2);
    if (r != KF_CLI_GO)
        return r;
    _cleanup_grpc_client_ kf_grpc_client *client = NULL;
    if ((r = kf_cli_connect(&g, &client)) != 0)
        return r;
    Kfleet__V1__DeleteFileRequest req = KFLEET__V1__DELETE_FILE_REQUEST__INIT;
    req.session_id = argv[optind];
    req.path = argv[optind + 1];
    _cleanup_pb_ Kfleet__V1__DeleteFileResponse *resp = NULL;
    kf_rpc_status st;
    if (kf_grpc_unary(client, KF_SESSIONS_METHOD("DeleteFile"), &req.base,
                      &kfleet__v1__delete_file_response__descriptor,
                      kf_cli_timeout(&g, KF_CLI_UNARY_TIMEOUT_MS), (ProtobufCMessage **)&resp, &st) < 0)
        return kf_cli_rpc_error(&st);
    if (g.output == KF_OUT_JSON)
        kf_print_pb_json(&resp->base, false);
    else
        printf("deleted %s\n", req.path);
    return kf_cli_flush_stdout();
}

int kf_cmd_file(int argc, char **argv, const kf_cli_globals *g) {
    static const kf_cli_verb verbs[] = {
        {"upload", "ID LOCAL [REMOTE]", "upload a file (stdin with '-')", verb_upload},
        {"download", "ID REMOTE [LOCAL]", "download a file (stdout with '-')", verb_download},
        {"list", "ID [PATH]", "list a directory", verb_list},
        {"delete", "ID REMOTE", "delete a file", verb_delete},
    };
    return kf_cli_dispatch("file", "Move files in and out of a session's /mnt/data.", verbs,
                           KF_ARRAY_SIZE(verbs), argc, argv, g);
}
