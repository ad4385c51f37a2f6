/* session_move.c - the node's half of moving a session (node drain):
 * export (stop the sandbox, keep the volume, state EXPORTED), import (a
 * sandbox on an image from another node), release (the moved session's
 * copy goes for good) and resume (a cancelled move: the session runs here
 * again). See session_move.h for the contracts.
 *
 * What an import receives is data from another node and is treated as
 * such: every size is checked against this node's limits before it is
 * used, the image is checked by e2fsck before it is mounted, and its
 * ownership walk never follows a symlink (volume_io.c). A failed import
 * leaves nothing behind; a failed export or resume leaves the session
 * EXPORTED with its volume, so the move can be retried or resumed.
 */
#include "session_move.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "volume.h"
#include "volume_io.h"

#define DEFAULT_IMPORT_NOTICE                                                                      \
    "the kernel was restarted because the session moved to another node: files in /mnt/data were " \
    "kept, in-memory state was not"
#define DEFAULT_RESUME_NOTICE                                                                      \
    "kernel restarted: a move of this session to another node was cancelled; files in /mnt/data "  \
    "were kept, in-memory state was not"

struct kf_import {
    kf_session *s;      /* not in the index yet */
    int fd;             /* the image being written */
    uint64_t image_bytes;
    uint64_t data_bytes; /* promised by the header */
    uint64_t written;
    uint64_t next;       /* the lowest offset the next piece may start at */
    char from_node[KF_NODE_NAME_MAX + 1];
};

/* Text a peer or the scheduler gives (reason, notice): bounded UTF-8
 * without control characters, since it ends up in protobuf strings and
 * logs. */
static int text_check(const char *field, const char *text, size_t max, kf_error *err) {
    size_t n = strlen(text);
    if (n > max)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "%s is %zu bytes (at most %zu)", field, n,
                            max);
    if (!kf_utf8_valid(text, n) || kf_control_char_at(text, n) >= 0)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "%s must be UTF-8 text without control characters", field);
    return 0;
}

static int node_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n > KF_NODE_NAME_MAX || (n && s[0] == '.'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

/* ---- export --------------------------------------------------------------- */

static int open_image(kf_agent *a, kf_session *s, int *fd_out, uint64_t *size, kf_error *err) {
    char img[256];
    kf_sandbox_paths(a, s, "volume.img", img, sizeof(img));
    _cleanup_close_ int fd = open(img, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return kf_error_set(err, -errno, KF_ST_INTERNAL, "session %s: cannot open its volume image: %m", s->id);
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return kf_error_set(err, -EIO, KF_ST_INTERNAL, "session %s: its volume image is not a file", s->id);
    *size = (uint64_t)st.st_size;
    *fd_out = TAKE_FD(fd);
    return 0;
}

int kf_move_export_begin(kf_agent *a, const char *id, const char *reason, int force, kf_session **out,
                         int *img_fd, kf_session_image *hdr, kf_error *err) {
    int r = text_check("reason", reason, KF_MOVE_REASON_MAX, err);
    if (r < 0)
        return r;
    kf_session *s = kf_agent_lookup_any(a, id, err);
    if (!s)
        return err ? err->code : -ENOENT;

    if (pthread_mutex_trylock(&s->lock) != 0) {
        /* Someone holds the kernel: an execution, a restart, or another
         * export streaming the image. */
        pthread_mutex_lock(&a->table_lock);
        kf_session_state st = s->state;
        int take = force && (st == KF_SS_READY || st == KF_SS_BUSY || st == KF_SS_RESTARTING);
        if (take) {
            /* Marked first: the execution that dies next must not restart
             * the kernel (kf_op_restart refuses an EXPORTED session). */
            s->state = KF_SS_EXPORTED;
            snprintf(s->move_reason, sizeof(s->move_reason), "%s", reason);
        }
        pthread_mutex_unlock(&a->table_lock);
        if (st != KF_SS_EXPORTED && !take) {
            r = kf_error_set(err, -EBUSY, KF_ST_FAILED_PRECONDITION,
                             /* READY with the lock held: an execution starting */
                             st == KF_SS_BUSY || st == KF_SS_READY
                                 ? "session %s is executing (force stops the execution)"
                                 : "session %s is %s",
                             id, kf_session_state_name(st));
            kf_session_unref(a, s);
            return r;
        }
        if (take) {
            if (kf_store_save(a, s) < 0)
                kf_warn("session %s: cannot record the export before stopping it", id);
            if (kf_sandbox_alive(s))
                kill(s->pid1, SIGKILL); /* the execution ends now */
        }
        pthread_mutex_lock(&s->lock);
    }

    /* Under the session lock: nobody else touches the sandbox now. */
    pthread_mutex_lock(&a->table_lock);
    kf_session_state st = s->state;
    if (st == KF_SS_READY) {
        s->state = KF_SS_EXPORTED;
        snprintf(s->move_reason, sizeof(s->move_reason), "%s", reason);
    } else if (st == KF_SS_EXPORTED && reason[0]) {
        snprintf(s->move_reason, sizeof(s->move_reason), "%s", reason);
    }
    pthread_mutex_unlock(&a->table_lock);
    if (st != KF_SS_READY && st != KF_SS_EXPORTED) {
        r = kf_error_set(err, -EBUSY, KF_ST_FAILED_PRECONDITION, "session %s is %s", id,
                         kf_session_state_name(st));
        goto fail;
    }
    /* Recorded before the sandbox goes: after a crash in between, recovery
     * keeps the volume instead of calling the session lost. */
    if ((r = kf_store_save(a, s)) < 0) {
        if (st == KF_SS_READY) {
            pthread_mutex_lock(&a->table_lock);
            s->state = KF_SS_READY;
            s->move_reason[0] = '\0';
            pthread_mutex_unlock(&a->table_lock);
        }
        kf_error_set(err, r, KF_ST_INTERNAL, "session %s: cannot record its export", id);
        goto fail;
    }
    kf_sandbox_stop(a, s); /* idempotent: a retried export finds it stopped */
    kf_store_save(a, s);   /* pid1 = 0 now */
    kf_info("session %s exported%s (%s)", id, st == KF_SS_READY || force ? "" : " again",
            s->move_reason[0] ? s->move_reason : "no reason given");

    /* The image must be at rest before it is read: nothing may still
     * write to it through a loop device (a lazy unmount). */
    char img[256];
    kf_sandbox_paths(a, s, "volume.img", img, sizeof(img));
    if ((r = kf_volume_wait_detached(img, 5000, err)) < 0)
        goto fail;
    uint64_t size = 0, data = 0, start = 0, stop = 0;
    if ((r = open_image(a, s, img_fd, &size, err)) < 0)
        goto fail;
    /* The stream's length goes ahead of it (two lseeks per extent). */
    for (uint64_t off = 0; (r = kf_volume_data_extent(*img_fd, off, size, &start, &stop)) == 0; off = stop)
        data += stop - start;
    if (r != -ENXIO) {
        close(*img_fd);
        *img_fd = -1;
        kf_error_set(err, r, KF_ST_INTERNAL, "session %s: looking for data in its volume image", id);
        goto fail;
    }
    memset(hdr, 0, sizeof(*hdr));
    snprintf(hdr->id, sizeof(hdr->id), "%s", s->id);
    snprintf(hdr->tenant, sizeof(hdr->tenant), "%s", s->tenant);
    hdr->limits = s->limits;
    hdr->created_ms = s->created_ms;
    hdr->image_bytes = size;
    hdr->data_bytes = data;
    hdr->exec_count = s->exec_count;
    snprintf(hdr->from_node, sizeof(hdr->from_node), "%s", a->cfg.node_name);
    *out = s;
    return 0;
fail:
    pthread_mutex_unlock(&s->lock);
    kf_session_unref(a, s);
    return r;
}

void kf_move_export_end(kf_agent *a, kf_session *s) {
    if (!s)
        return;
    pthread_mutex_unlock(&s->lock);
    kf_session_unref(a, s);
}

/* ---- import --------------------------------------------------------------- */

void kf_move_import_abort(kf_agent *a, kf_import *im) {
    if (!im)
        return;
    if (im->fd >= 0)
        close(im->fd);
    if (im->s) {
        pthread_mutex_lock(&im->s->lock);
        kf_sandbox_destroy(a, im->s);
        pthread_mutex_unlock(&im->s->lock);
        kf_agent_slot_free(a, im->s->slot);
        kf_session_unref(a, im->s);
    }
    free(im);
}

int kf_move_import_begin(kf_agent *a, const kf_session_image *hdr, const char *notice, kf_import **out,
                         kf_error *err) {
    int r;
    if ((r = kf_agent_id_check_import(a, hdr->id, err)) < 0)
        return r;
    if (!kf_tenant_valid(hdr->tenant))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "tenant '%.64s' is malformed (0-%d of A-Z, a-z, 0-9, '.', '_', '-', '@')",
                            hdr->tenant, KF_TENANT_MAX);
    if ((r = text_check("notice", notice, KF_MOVE_NOTICE_MAX, err)) < 0 ||
        (r = text_check("header.from_node", hdr->from_node, KF_NODE_NAME_MAX, err)) < 0)
        return r;
    if (hdr->image_bytes == 0 || hdr->image_bytes > a->cfg.max.disk_bytes)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "header.image_bytes = %llu: this node takes volumes of 1 to %llu bytes",
                            (unsigned long long)hdr->image_bytes, (unsigned long long)a->cfg.max.disk_bytes);
    if (hdr->data_bytes > hdr->image_bytes)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "header.data_bytes = %llu is more than header.image_bytes = %llu",
                            (unsigned long long)hdr->data_bytes, (unsigned long long)hdr->image_bytes);
    kf_limits l;
    if ((r = kf_limits_resolve(&a->cfg, &hdr->limits, &l, err)) < 0)
        return r;
    if (hdr->image_bytes != l.disk_bytes)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "header.image_bytes = %llu differs from limits.disk_bytes = %llu",
                            (unsigned long long)hdr->image_bytes, (unsigned long long)l.disk_bytes);
    if ((r = kf_agent_room(a, err)) < 0)
        return r;

    kf_import *im = calloc(1, sizeof(*im));
    kf_session *s = kf_session_new();
    if (!im || !s) {
        free(im);
        kf_session_unref(a, s);
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    }
    im->fd = -1;
    im->image_bytes = hdr->image_bytes;
    im->data_bytes = hdr->data_bytes;
    snprintf(im->from_node, sizeof(im->from_node), "%s", hdr->from_node);
    if (kf_random_id(s->sbid, sizeof(s->sbid), "sb-", 12) < 0 || kf_agent_slot_alloc(a, &s->slot) < 0) {
        free(im);
        kf_session_unref(a, s);
        return kf_error_set(err, -ENOSPC, KF_ST_RESOURCE_EXHAUSTED, "node is out of session uids");
    }
    im->s = s;
    s->uid = a->cfg.uid_base + s->slot;
    s->gid = a->cfg.uid_base + s->slot;
    s->limits = l;
    snprintf(s->id, sizeof(s->id), "%s", hdr->id);
    snprintf(s->tenant, sizeof(s->tenant), "%s", hdr->tenant);
    int64_t now = kf_unix_ms();
    /* The lifetime runs from the first creation, wherever it was. */
    s->created_ms = hdr->created_ms > 0 && hdr->created_ms <= now ? hdr->created_ms : now;
    s->last_active_ms = now;
    s->exec_count = hdr->exec_count;
    snprintf(s->notice, sizeof(s->notice), "%s", notice[0] ? notice : DEFAULT_IMPORT_NOTICE);

    char dir[256], img[256], data[256], run[256];
    kf_sandbox_paths(a, s, NULL, dir, sizeof(dir));
    kf_sandbox_paths(a, s, "volume.img", img, sizeof(img));
    kf_sandbox_paths(a, s, "data", data, sizeof(data));
    kf_sandbox_paths(a, s, "run", run, sizeof(run));
    if ((r = kf_mkdir_p(dir, 0700)) < 0 || mkdir(data, 0755) < 0 || mkdir(run, 0700) < 0) {
        r = kf_error_set(err, r < 0 ? r : -errno, 0, "cannot create %s", dir);
        kf_move_import_abort(a, im);
        return r;
    }
    im->fd = open(img, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (im->fd < 0 || ftruncate(im->fd, (off_t)im->image_bytes) < 0) {
        r = kf_error_set(err, -errno, 0, "cannot create the volume image %s: %m", img);
        kf_move_import_abort(a, im);
        return r;
    }
    *out = im;
    return 0;
}

int kf_move_import_write(kf_import *im, uint64_t offset, const void *data, size_t len, kf_error *err) {
    if (len == 0 || len > KF_IMPORT_PIECE_MAX)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "image piece at offset %llu is %zu bytes (1 to %u)", (unsigned long long)offset,
                            len, KF_IMPORT_PIECE_MAX);
    if (offset > im->image_bytes || len > im->image_bytes - offset)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "image piece at offset %llu (%zu bytes) lies past the image's end (%llu bytes)",
                            (unsigned long long)offset, len, (unsigned long long)im->image_bytes);
    if (offset < im->next)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "image piece at offset %llu overlaps or precedes the previous one (ending at %llu)",
                            (unsigned long long)offset, (unsigned long long)im->next);
    if (len > im->data_bytes - im->written)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "more image data than the header's data_bytes = %llu",
                            (unsigned long long)im->data_bytes);
    const char *p = data;
    size_t left = len;
    off_t at = (off_t)offset;
    while (left > 0) {
        ssize_t w = pwrite(im->fd, p, left, at);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOSPC || errno == EDQUOT)
                return kf_error_set(err, -errno, KF_ST_RESOURCE_EXHAUSTED,
                                    "this node has no disk space left for the image");
            return kf_error_set(err, -errno, 0, "writing the image: %m");
        }
        p += w;
        at += w;
        left -= (size_t)w;
    }
    im->written += len;
    im->next = offset + len;
    return 0;
}

int kf_move_import_finish(kf_agent *a, kf_import *im, kf_session **out, kf_error *err) {
    kf_session *s = im->s;
    char img[256], data[256], lf[300];
    kf_sandbox_paths(a, s, "volume.img", img, sizeof(img));
    kf_sandbox_paths(a, s, "data", data, sizeof(data));
    close(im->fd);
    im->fd = -1;
    int r;
    if (im->written != im->data_bytes) {
        r = kf_error_set(err, -EPIPE, KF_ST_INVALID_ARGUMENT, "the image stream ended after %llu of %llu bytes",
                         (unsigned long long)im->written, (unsigned long long)im->data_bytes);
        goto fail;
    }
    if ((r = kf_volume_fsck(img, err)) < 0 || (r = kf_volume_mount(img, data, err)) < 0)
        goto fail;
    /* e2fsck makes a lost+found (root, 0700) when the image has none, as a
     * session's volume never has; one a session made is not root's. */
    snprintf(lf, sizeof(lf), "%s/lost+found", data);
    struct stat st;
    if (lstat(lf, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0)
        rmdir(lf);
    if ((r = kf_volume_chown_all(data, s->uid, s->gid, s->limits.disk_inodes, err)) < 0)
        goto fail;
    pthread_mutex_lock(&s->lock);
    r = kf_sandbox_start_kept(a, s, err);
    pthread_mutex_unlock(&s->lock);
    if (r < 0)
        goto fail;
    s->state = KF_SS_READY; /* not in the index yet: nobody else sees it */
    if ((r = kf_store_save(a, s)) < 0) {
        kf_error_set(err, r, 0, "cannot record session %s", s->id);
        goto fail;
    }
    if ((r = kf_agent_insert(a, s, err)) < 0) /* -EEXIST: a racing create or import won */
        goto fail;
    pthread_mutex_lock(&a->table_lock);
    s->create_seq = ++a->creates_total;
    pthread_mutex_unlock(&a->table_lock);
    /* back on a node it once left: it is no longer "moved to node X" here */
    kf_agent_tombstone_forget_moved(a, s->id);
    kf_store_tombstone_forget(a, s->id);
    kf_info("session %s imported from node %s (sandbox %s, %llu bytes of image data)", s->id,
            im->from_node[0] ? im->from_node : "?", s->sbid, (unsigned long long)im->written);
    im->s = NULL;
    free(im);
    *out = s;
    return 0;
fail:
    kf_error_wrap(err, "importing session %s", s->id);
    kf_move_import_abort(a, im);
    return r;
}

/* ---- release and resume --------------------------------------------------- */

int kf_move_release(kf_agent *a, const char *id, const char *moved_to, kf_error *err) {
    if (!node_name_ok(moved_to))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "moved_to '%.64s' is not a node name (0-%d of A-Z, a-z, 0-9, '.', '_', '-')",
                            moved_to, KF_NODE_NAME_MAX);
    kf_error lerr = {0};
    kf_session *s = kf_agent_lookup_any(a, id, &lerr);
    if (!s) {
        if (lerr.status == KF_ST_INVALID_ARGUMENT) {
            if (err)
                *err = lerr;
            return lerr.code;
        }
        return 0; /* unknown, or already gone: released is released */
    }
    pthread_mutex_lock(&s->lock); /* after an export still streaming it */
    pthread_mutex_lock(&a->table_lock);
    kf_session_state st = s->state;
    if (st == KF_SS_EXPORTED)
        s->state = KF_SS_DELETING;
    pthread_mutex_unlock(&a->table_lock);
    if (st != KF_SS_EXPORTED) {
        pthread_mutex_unlock(&s->lock);
        kf_session_unref(a, s);
        return kf_error_set(err, -EBUSY, KF_ST_FAILED_PRECONDITION,
                            "session %s is %s; only an exported session can be released", id,
                            kf_session_state_name(st));
    }
    char reason[160];
    if (moved_to[0])
        snprintf(reason, sizeof(reason), KF_TOMB_MOVED_PREFIX "%s", moved_to);
    else
        snprintf(reason, sizeof(reason), KF_TOMB_MOVED_PREFIX "(unnamed)");
    kf_store_tombstone(a, s->id, reason);
    kf_agent_remove(a, s, reason);
    kf_sandbox_destroy(a, s);
    pthread_mutex_unlock(&s->lock);
    kf_agent_slot_free(a, s->slot);
    kf_info("session %s released: %s", id, reason);
    kf_session_unref(a, s);
    return 0;
}

int kf_move_resume(kf_agent *a, const char *id, const char *notice, kf_session **out, kf_error *err) {
    int r = text_check("notice", notice, KF_MOVE_NOTICE_MAX, err);
    if (r < 0)
        return r;
    kf_session *s = kf_agent_lookup_any(a, id, err);
    if (!s)
        return err ? err->code : -ENOENT;
    pthread_mutex_lock(&s->lock);
    pthread_mutex_lock(&a->table_lock);
    kf_session_state st = s->state;
    pthread_mutex_unlock(&a->table_lock);
    if (st == KF_SS_READY || st == KF_SS_BUSY) {
        pthread_mutex_unlock(&s->lock);
        *out = s; /* resumed already */
        return 0;
    }
    if (st != KF_SS_EXPORTED) {
        pthread_mutex_unlock(&s->lock);
        kf_session_unref(a, s);
        return kf_error_set(err, -EBUSY, KF_ST_FAILED_PRECONDITION, "session %s is %s; it cannot be resumed",
                            id, kf_session_state_name(st));
    }
    /* Never two mounts of one ext4 image: an old one lazily detached must
     * be gone before the image is mounted again. */
    char img[256];
    kf_sandbox_paths(a, s, "volume.img", img, sizeof(img));
    if ((r = kf_volume_wait_detached(img, 5000, err)) < 0 || (r = kf_sandbox_start_kept(a, s, err)) < 0) {
        pthread_mutex_unlock(&s->lock);
        kf_session_unref(a, s);
        return kf_error_wrap(err, "resuming session %s (it stays exported)", id);
    }
    snprintf(s->notice, sizeof(s->notice), "%s", notice[0] ? notice : DEFAULT_RESUME_NOTICE);
    pthread_mutex_lock(&a->table_lock);
    s->state = KF_SS_READY;
    s->move_reason[0] = '\0';
    s->last_active_ms = kf_unix_ms();
    pthread_mutex_unlock(&a->table_lock);
    if (kf_store_save(a, s) < 0)
        kf_warn("session %s: cannot record its resumption", id);
    pthread_mutex_unlock(&s->lock);
    kf_info("session %s resumed: its move was cancelled", id);
    *out = s;
    return 0;
}
