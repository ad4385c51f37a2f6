/* service_files.c - kfleet.v1.Sessions file handlers: upload (client
 * stream), download (server stream), list and delete under a session's
 * /mnt/data. Paths are checked by kf_path_check and resolved beneath the
 * volume root without following symlinks (files.h). Uploads are capped at
 * max_upload_bytes; a failed upload removes what it wrote. */
#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"
#include "kf/cleanup.h"
#include "kf/log.h"
#include "kfleet/v1/sessions.pb-c.h"

#define PB_FREE(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)
#define CHUNK (256 * 1024)
#define LIST_MAX 10000

kf_session *kf_svc_session_volume(kf_agent *a, const char *id, int *rootfd, kf_error *err) {
    kf_session *s = kf_agent_lookup(a, id, err);
    if (!s)
        return NULL;
    char dir[256];
    kf_sandbox_paths(a, s, "data", dir, sizeof(dir));
    if (kf_files_open_root(dir, rootfd, err) < 0) {
        kf_session_unref(a, s);
        return NULL;
    }
    return s;
}

static void fill_info(Kfleet__V1__FileInfo *fi, const char *path, const struct stat *st) {
    kfleet__v1__file_info__init(fi);
    fi->path = (char *)path;
    fi->size = (uint64_t)st->st_size;
    fi->is_dir = S_ISDIR(st->st_mode);
    fi->mtime_unix_ms = (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
    fi->mode = st->st_mode & 07777;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void kf_svc_upload(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    kf_error err = {0};
    Kfleet__V1__UploadFileRequest *m = (void *)kf_call_recv(c, &kfleet__v1__upload_file_request__descriptor, &eof);
    if (!m || m->part_case != KFLEET__V1__UPLOAD_FILE_REQUEST__PART_HEADER) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT,
                       "UploadFile: the first message must be a header with session_id and path");
        if (m)
            PB_FREE(m);
        return;
    }
    char rel[KF_PATH_MAX + 1];
    const char *path = m->header->path;
    if (kf_path_check(path, strlen(path), rel, sizeof(rel), &err) < 0) {
        PB_FREE(m);
        kf_call_fail(c, &err);
        return;
    }
    if (!strcmp(rel, ".")) {
        PB_FREE(m);
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "UploadFile: path names the volume root, not a file");
        return;
    }
    _cleanup_close_ int rootfd = -1;
    kf_session *s = kf_svc_session_volume(a, m->header->session_id, &rootfd, &err);
    mode_t mode = m->header->mode ? (m->header->mode & 0777) : 0644;
    PB_FREE(m);
    if (!s) {
        kf_call_fail(c, &err);
        return;
    }
    _cleanup_close_ int fd = -1;
    if (kf_files_open_write(rootfd, rel, mode, s->uid, s->gid, &fd, &err) < 0) {
        kf_session_unref(a, s);
        kf_call_fail(c, &err);
        return;
    }
    uint64_t total = 0;
    int r = 0;
    for (;;) {
        m = (void *)kf_call_recv(c, &kfleet__v1__upload_file_request__descriptor, &eof);
        if (!m) {
            if (!eof)
                r = kf_error_set(&err, -EBADMSG, KF_ST_INVALID_ARGUMENT,
                                 "UploadFile: malformed message or client went away");
            break;
        }
        if (m->part_case != KFLEET__V1__UPLOAD_FILE_REQUEST__PART_CHUNK) {
            PB_FREE(m);
            r = kf_error_set(&err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                             "UploadFile: only the first message may be a header");
            break;
        }
        total += m->chunk.len;
        if (total > a->cfg.max_upload_bytes) {
            PB_FREE(m);
            r = kf_error_set(&err, -EFBIG, KF_ST_RESOURCE_EXHAUSTED,
                             "UploadFile: file exceeds the %llu byte upload limit",
                             (unsigned long long)a->cfg.max_upload_bytes);
            break;
        }
        r = write_all(fd, m->chunk.data, m->chunk.len);
        PB_FREE(m);
        if (r < 0) {
            if (r == -ENOSPC || r == -EDQUOT)
                kf_error_set(&err, r, KF_ST_RESOURCE_EXHAUSTED,
                             "UploadFile: volume quota exceeded (the session's /mnt/data holds %llu bytes)",
                             (unsigned long long)s->limits.disk_bytes);
            else
                kf_error_set(&err, r, 0, "UploadFile: write failed");
            break;
        }
    }
    if (r == 0 && fsync(fd) < 0)
        r = kf_error_set(&err, -errno, (errno == ENOSPC || errno == EDQUOT) ? KF_ST_RESOURCE_EXHAUSTED : 0,
                         "UploadFile: volume quota exceeded or write failed");
    struct stat st;
    if (r == 0 && fstat(fd, &st) < 0)
        r = kf_error_set(&err, -errno, 0, "UploadFile: stat failed");
    if (r < 0) {
        kf_error derr = {0};
        kf_files_delete(rootfd, rel, &derr); /* leave nothing half-written */
        kf_session_unref(a, s);
        kf_call_fail(c, &err);
        return;
    }
    Kfleet__V1__FileInfo fi;
    fill_info(&fi, rel, &st);
    kf_call_reply(c, &fi.base);
    kf_session_unref(a, s);
}

/* Receives a request whose fields are `string session_id = 1; string path =
 * 2;` (Download/List/DeleteFile), checks the path (empty = `dflt`) and opens
 * the session's volume root. On success rel holds the checked path and
 * *rootfd is the caller's; on failure err says why (the call is not
 * finished). */
static int recv_path_request(kf_call *c, kf_agent *a, const ProtobufCMessageDescriptor *d,
                             const char *dflt, char *rel, size_t rel_size, int *rootfd, kf_error *err) {
    int eof;
    ProtobufCMessage *m = kf_call_recv(c, d, &eof);
    if (!m)
        return kf_error_set(err, -EBADMSG, KF_ST_INVALID_ARGUMENT, "malformed %s", d->short_name);
    const char *id = *(char **)((char *)m + protobuf_c_message_descriptor_get_field(d, 1)->offset);
    const char *path = *(char **)((char *)m + protobuf_c_message_descriptor_get_field(d, 2)->offset);
    if (!path[0] && dflt)
        path = dflt;
    int r = kf_path_check(path, strlen(path), rel, rel_size, err);
    if (r == 0) {
        kf_session *s = kf_svc_session_volume(a, id, rootfd, err);
        r = s ? 0 : err->code;
        kf_session_unref(a, s);
    }
    PB_FREE(m);
    return r;
}

void kf_svc_download(kf_call *c, void *ud) {
    kf_agent *a = ud;
    kf_error err = {0};
    char rel[KF_PATH_MAX + 1];
    _cleanup_close_ int rootfd = -1, fd = -1;
    struct stat st;
    if (recv_path_request(c, a, &kfleet__v1__download_file_request__descriptor, NULL, rel, sizeof(rel),
                          &rootfd, &err) < 0 ||
        kf_files_open_read(rootfd, rel, &fd, &st, &err) < 0) {
        kf_call_fail(c, &err);
        return;
    }
    _cleanup_free_ uint8_t *buf = malloc(CHUNK);
    if (!buf) {
        kf_call_finish(c, KF_ST_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    int sent = 0;
    for (;;) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            kf_call_finish(c, KF_ST_INTERNAL, "DownloadFile: read failed");
            return;
        }
        if (n == 0 && sent)
            break;
        Kfleet__V1__FileChunk ch = KFLEET__V1__FILE_CHUNK__INIT;
        ch.data.data = buf;
        ch.data.len = (size_t)n;
        if (kf_call_send(c, &ch.base) < 0)
            return; /* client gone */
        sent = 1;
        if (n == 0)
            break;
    }
    kf_call_finish(c, KF_ST_OK, "");
}

void kf_svc_list_files(kf_call *c, void *ud) {
    kf_agent *a = ud;
    kf_error err = {0};
    char rel[KF_PATH_MAX + 1];
    _cleanup_close_ int rootfd = -1;
    kf_file_entry *ents = NULL;
    size_t n = 0;
    if (recv_path_request(c, a, &kfleet__v1__list_files_request__descriptor, ".", rel, sizeof(rel),
                          &rootfd, &err) < 0 ||
        kf_files_list(rootfd, rel, &ents, &n, LIST_MAX, &err) < 0) {
        kf_call_fail(c, &err);
        return;
    }
    Kfleet__V1__FileInfo *fis = calloc(n ? n : 1, sizeof(*fis));
    Kfleet__V1__FileInfo **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (!fis || !ptrs) {
        free(fis);
        free(ptrs);
        free(ents);
        kf_call_finish(c, KF_ST_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        kfleet__v1__file_info__init(&fis[i]);
        fis[i].path = ents[i].name;
        fis[i].size = ents[i].size;
        fis[i].is_dir = ents[i].is_dir;
        fis[i].mtime_unix_ms = ents[i].mtime_ms;
        fis[i].mode = ents[i].mode;
        fis[i].is_symlink = ents[i].is_symlink;
        ptrs[i] = &fis[i];
    }
    Kfleet__V1__ListFilesResponse resp = KFLEET__V1__LIST_FILES_RESPONSE__INIT;
    resp.n_files = n;
    resp.files = ptrs;
    kf_call_reply(c, &resp.base);
    free(fis);
    free(ptrs);
    free(ents);
}

void kf_svc_delete_file(kf_call *c, void *ud) {
    kf_agent *a = ud;
    kf_error err = {0};
    char rel[KF_PATH_MAX + 1];
    _cleanup_close_ int rootfd = -1;
    if (recv_path_request(c, a, &kfleet__v1__delete_file_request__descriptor, NULL, rel, sizeof(rel),
                          &rootfd, &err) < 0 ||
        kf_files_delete(rootfd, rel, &err) < 0) {
        kf_call_fail(c, &err);
        return;
    }
    Kfleet__V1__DeleteFileResponse resp = KFLEET__V1__DELETE_FILE_RESPONSE__INIT;
    kf_call_reply(c, &resp.base);
}
