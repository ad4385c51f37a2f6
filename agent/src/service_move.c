/* service_move.c - kfleet.v1.Agent's move calls: ExportSession (a server
 * stream: a header, then the volume image's data extents, holes skipped),
 * ImportSession (a client stream of the same, relayed by the scheduler),
 * ReleaseSession and ResumeSession. The state changes and checks are in
 * session_move.c; here are the messages and the image's bytes.
 *
 * An export holds the session's lock while it streams (flow control: one
 * message at a time), so a release or resume of that session waits for it.
 */
#include "service.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kfleet/v1/agent.pb-c.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "session_move.h"
#include "volume_io.h"

#define PB_FREE(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

static void image_to_pb(const kf_session_image *h, Kfleet__V1__SessionImage *pb, Kfleet__V1__Limits *lim) {
    kfleet__v1__session_image__init(pb);
    kf_svc_limits_to_pb(&h->limits, lim);
    pb->session_id = (char *)h->id;
    pb->limits = lim;
    pb->tenant = (char *)h->tenant;
    pb->created_unix_ms = h->created_ms;
    pb->image_bytes = h->image_bytes;
    pb->data_bytes = h->data_bytes;
    pb->execution_count = h->exec_count;
    pb->from_node = (char *)h->from_node;
}

/* Strings longer than the fields hold are refused by the checks that
 * follow (id, tenant) or by this length check (from_node). */
static int image_from_pb(const Kfleet__V1__SessionImage *pb, kf_session_image *h, kf_error *err) {
    memset(h, 0, sizeof(*h));
    if (strlen(pb->session_id) > KF_ID_MAX || strlen(pb->tenant) > KF_TENANT_MAX ||
        strlen(pb->from_node) > KF_NODE_NAME_MAX)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "header: session_id, tenant or from_node is too long (%d, %d, %d bytes at most)",
                            KF_ID_MAX, KF_TENANT_MAX, KF_NODE_NAME_MAX);
    snprintf(h->id, sizeof(h->id), "%s", pb->session_id);
    snprintf(h->tenant, sizeof(h->tenant), "%s", pb->tenant);
    snprintf(h->from_node, sizeof(h->from_node), "%s", pb->from_node);
    kf_svc_limits_from_pb(pb->limits, &h->limits);
    h->created_ms = pb->created_unix_ms;
    h->image_bytes = pb->image_bytes;
    h->data_bytes = pb->data_bytes;
    h->exec_count = pb->execution_count;
    return 0;
}

/* Sends the image's data extents, at most KF_MOVE_CHUNK_MAX per message.
 * Returns 0, -ECANCELED when the client went away, or an I/O error. */
static int send_extents(kf_call *c, int fd, uint64_t size, uint8_t *buf, uint64_t *sent, kf_error *err) {
    uint64_t off = 0, start, stop;
    int r;
    while ((r = kf_volume_data_extent(fd, off, size, &start, &stop)) == 0) {
        for (uint64_t at = start; at < stop;) {
            size_t want = stop - at < KF_MOVE_CHUNK_MAX ? (size_t)(stop - at) : KF_MOVE_CHUNK_MAX;
            ssize_t n = pread(fd, buf, want, (off_t)at);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return kf_error_set(err, n < 0 ? -errno : -EIO, KF_ST_INTERNAL,
                                    "reading the volume image at %llu", (unsigned long long)at);
            Kfleet__V1__ExportChunk ch = KFLEET__V1__EXPORT_CHUNK__INIT;
            ch.offset = at;
            ch.data.data = buf;
            ch.data.len = (size_t)n;
            if (kf_call_send(c, &ch.base) < 0)
                return kf_error_set(err, -ECANCELED, KF_ST_CANCELLED, "the receiver went away");
            at += (uint64_t)n;
            *sent += (uint64_t)n;
        }
        off = stop;
    }
    if (r != -ENXIO)
        return kf_error_set(err, r, KF_ST_INTERNAL, "looking for data in the volume image");
    return 0;
}

void kf_svc_export_session(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    Kfleet__V1__ExportSessionRequest *req =
        (void *)kf_call_recv(c, &kfleet__v1__export_session_request__descriptor, &eof);
    if (!req) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed ExportSessionRequest");
        return;
    }
    kf_error err = {0};
    kf_session *s = NULL;
    _cleanup_close_ int fd = -1;
    kf_session_image hdr;
    int r = kf_move_export_begin(a, req->session_id, req->reason, req->force, &s, &fd, &hdr, &err);
    PB_FREE(req);
    if (r < 0) {
        kf_call_fail(c, &err);
        return;
    }
    _cleanup_free_ uint8_t *buf = malloc(KF_MOVE_CHUNK_MAX);
    Kfleet__V1__SessionImage img;
    Kfleet__V1__Limits lim;
    image_to_pb(&hdr, &img, &lim);
    Kfleet__V1__ExportChunk first = KFLEET__V1__EXPORT_CHUNK__INIT;
    first.header = &img;
    uint64_t sent = 0;
    if (!buf)
        r = kf_error_set(&err, -ENOMEM, KF_ST_RESOURCE_EXHAUSTED, "out of memory");
    else if (kf_call_send(c, &first.base) < 0)
        r = kf_error_set(&err, -ECANCELED, KF_ST_CANCELLED, "the receiver went away");
    else
        r = send_extents(c, fd, hdr.image_bytes, buf, &sent, &err);
    kf_move_export_end(a, s);
    if (r < 0) {
        kf_warn("export of session %s stopped after %llu bytes: %s", hdr.id, (unsigned long long)sent, err.msg);
        kf_call_fail(c, &err);
        return;
    }
    kf_info("export of session %s sent %llu of %llu bytes", hdr.id, (unsigned long long)sent,
            (unsigned long long)hdr.image_bytes);
    kf_call_finish(c, KF_ST_OK, "");
}

void kf_svc_import_session(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    kf_error err = {0};
    Kfleet__V1__ImportChunk *m = (void *)kf_call_recv(c, &kfleet__v1__import_chunk__descriptor, &eof);
    if (!m || !m->header) {
        if (m)
            PB_FREE(m);
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "ImportSession: the first message must carry the header");
        return;
    }
    kf_session_image hdr;
    kf_import *im = NULL;
    int r = image_from_pb(m->header, &hdr, &err);
    if (r == 0)
        r = kf_move_import_begin(a, &hdr, m->notice, &im, &err);
    if (r == 0 && m->data.len)
        r = kf_move_import_write(im, m->offset, m->data.data, m->data.len, &err);
    PB_FREE(m);
    while (r == 0) {
        m = (void *)kf_call_recv(c, &kfleet__v1__import_chunk__descriptor, &eof);
        if (!m) {
            if (!eof)
                r = kf_error_set(&err, -EPIPE, KF_ST_CANCELLED, "the image stream broke off");
            break;
        }
        if (m->header || m->notice[0])
            r = kf_error_set(&err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                             "only the first message carries a header and a notice");
        else
            r = kf_move_import_write(im, m->offset, m->data.data, m->data.len, &err);
        PB_FREE(m);
    }
    if (r < 0) {
        kf_warn("import of session %s failed: %s", hdr.id[0] ? hdr.id : "?", err.msg);
        kf_move_import_abort(a, im);
        kf_call_fail(c, &err);
        return;
    }
    kf_session *s = NULL;
    r = kf_move_import_finish(a, im, &s, &err);
    if (r < 0)
        kf_warn("%s", err.msg);
    kf_svc_reply_created(c, a, r, s, &err);
}

void kf_svc_release_session(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    Kfleet__V1__ReleaseSessionRequest *req =
        (void *)kf_call_recv(c, &kfleet__v1__release_session_request__descriptor, &eof);
    if (!req) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed ReleaseSessionRequest");
        return;
    }
    kf_error err = {0};
    int r = kf_move_release(a, req->session_id, req->moved_to, &err);
    PB_FREE(req);
    if (r < 0) {
        kf_call_fail(c, &err);
        return;
    }
    Kfleet__V1__ReleaseSessionResponse resp = KFLEET__V1__RELEASE_SESSION_RESPONSE__INIT;
    kf_call_reply(c, &resp.base);
}

void kf_svc_resume_session(kf_call *c, void *ud) {
    kf_agent *a = ud;
    int eof;
    Kfleet__V1__ResumeSessionRequest *req =
        (void *)kf_call_recv(c, &kfleet__v1__resume_session_request__descriptor, &eof);
    if (!req) {
        kf_call_finish(c, KF_ST_INVALID_ARGUMENT, "malformed ResumeSessionRequest");
        return;
    }
    kf_error err = {0};
    kf_session *s = NULL;
    int r = kf_move_resume(a, req->session_id, req->notice, &s, &err);
    PB_FREE(req);
    kf_svc_reply_created(c, a, r, s, &err);
}
