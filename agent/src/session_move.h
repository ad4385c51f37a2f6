/* session_move.h - moving a session to another node (node drain): the
 * source exports it (sandbox stopped, volume image kept, state EXPORTED),
 * the target imports the image and starts a sandbox on it, then the source
 * releases its copy, or resumes it when the move was cancelled.
 *
 * The gRPC side (service_move.c) streams the image; the functions here do
 * the state changes, the checks and the files. Locking as in session.h: an
 * export holds the session's lock while its image is streamed, so a
 * release or resume waits for it. Errors: 0 / negative errno with err set.
 */
#ifndef KF_AGENT_SESSION_MOVE_H
#define KF_AGENT_SESSION_MOVE_H

#include <stddef.h>
#include <stdint.h>

#include "session.h"

#define KF_MOVE_CHUNK_MAX (1u << 20)  /* export: bytes of image per message */
#define KF_IMPORT_PIECE_MAX (4u << 20) /* import: the most we accept per message */
#define KF_MOVE_NOTICE_MAX 255
#define KF_MOVE_REASON_MAX 127
#define KF_NODE_NAME_MAX 63

/* What travels ahead of the image (kfleet.v1.SessionImage). */
typedef struct kf_session_image {
    char id[KF_ID_MAX + 1];
    char tenant[KF_TENANT_MAX + 1];
    kf_limits limits;
    int64_t created_ms;
    uint64_t image_bytes;
    uint64_t data_bytes; /* what the extents add up to: the stream's length */
    uint32_t exec_count;
    char from_node[KF_NODE_NAME_MAX + 1];
} kf_session_image;

/* kf_move_export_begin - stop session `id` and mark it EXPORTED (recorded
 * before the sandbox is stopped, so an agent crash in between keeps the
 * volume), or take an EXPORTED one as it is (a retried export). A READY
 * session only: a running execution is FAILED_PRECONDITION "session X is
 * executing" unless `force`, which kills the sandbox first. `reason` (may
 * be empty) is what Sessions calls are told. Blocks (sandbox teardown).
 * On success: *out is referenced and its lock HELD, *img_fd is the image
 * opened read-only (caller closes), *hdr describes it; end with
 * kf_move_export_end. */
int kf_move_export_begin(kf_agent *a, const char *id, const char *reason, int force, kf_session **out,
                         int *img_fd, kf_session_image *hdr, kf_error *err);
/* kf_move_export_end - unlock and unreference what export_begin gave. */
void kf_move_export_end(kf_agent *a, kf_session *s);

/* An import in progress: owns a session not yet in the index, its
 * directory and its image being written. */
typedef struct kf_import kf_import;

/* kf_move_import_begin - check the header (id well formed and new here,
 * or a session that once moved away from here and comes back), tenant, limits, image_bytes = disk_bytes <= the node's maximum disk,
 * notice text) and create the empty sparse image. *out owned by the
 * caller until import_finish or import_abort. */
int kf_move_import_begin(kf_agent *a, const kf_session_image *hdr, const char *notice, kf_import **out,
                         kf_error *err);
/* kf_move_import_write - one piece of the image: 1..KF_IMPORT_PIECE_MAX
 * bytes within the image, after the previous piece (no overlap), at most
 * data_bytes written in all (INVALID_ARGUMENT otherwise; RESOURCE_EXHAUSTED
 * when the disk is full). */
int kf_move_import_write(kf_import *im, uint64_t offset, const void *data, size_t len, kf_error *err);
/* kf_move_import_finish - check that all data_bytes arrived (else
 * INVALID_ARGUMENT "the image stream ended after X of Y bytes"), check the
 * image (e2fsck), mount it, give every
 * inode to the new session's uid, start a sandbox on it and put the
 * session in the index, READY, with the notice for its next Execute.
 * Consumes im: on failure nothing of it is left. On success *out is
 * referenced. Blocking (a sandbox start). */
int kf_move_import_finish(kf_agent *a, kf_import *im, kf_session **out, kf_error *err);
/* kf_move_import_abort - remove everything the import made. NULL-safe. */
void kf_move_import_abort(kf_agent *a, kf_import *im);

/* kf_move_release - delete an EXPORTED session for good and keep the
 * tombstone "moved to node <moved_to>". An unknown or already released id
 * is 0; a session in any other state is FAILED_PRECONDITION. */
int kf_move_release(kf_agent *a, const char *id, const char *moved_to, kf_error *err);

/* kf_move_resume - start an EXPORTED session again on its kept volume
 * (same id, same uid), READY, with `notice` (empty: a default) for its next
 * Execute. A READY or BUSY session is returned as it is. On failure the
 * session stays EXPORTED. On success *out is referenced. Blocking. */
int kf_move_resume(kf_agent *a, const char *id, const char *notice, kf_session **out, kf_error *err);

#endif
