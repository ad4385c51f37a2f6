/* volume.h - per-session volumes: one sparse ext4 image, loop-mounted
 * nosuid,nodev. The image size is the byte quota, its inode count the inode
 * quota. The loop device is set up with autoclear, so it goes away with the
 * last unmount. Errors: 0 / negative errno, message in *err.
 */
#ifndef KF_VOLUME_H
#define KF_VOLUME_H

#include <stdint.h>
#include <sys/types.h>

#include "kf/error.h"

/* kf_volume_create - create a sparse image of `bytes` with at most
 * `inodes` inodes (mkfs.ext4, run with posix_spawn; no journal, no reserved
 * blocks), its root directory owned by uid:gid, mode 0755. */
int kf_volume_create(const char *image, uint64_t bytes, uint64_t inodes, uid_t uid, gid_t gid,
                     kf_error *err);

/* kf_volume_fsck - check and repair an image that came from elsewhere
 * before it is mounted (e2fsck -f -p, posix_spawn, blocking; tens of ms
 * for a mostly empty image). Fixed problems are fine (e2fsck recreates a
 * missing lost+found as root 0700); problems e2fsck cannot fix in preen
 * mode are -EUCLEAN, INVALID_ARGUMENT "volume image is damaged: ...".
 * Without e2fsck on the host it does nothing and returns 0. */
int kf_volume_fsck(const char *image, kf_error *err);

/* kf_volume_mount - attach the image to a free loop device (LOOP_CONFIGURE,
 * autoclear, O_CLOEXEC fds) and mount it ext4 nosuid,nodev at mountpoint. */
int kf_volume_mount(const char *image, const char *mountpoint, kf_error *err);

/* kf_volume_umount - unmount (lazy if busy). 0 if it was not mounted. */
int kf_volume_umount(const char *mountpoint, kf_error *err);

/* kf_volume_wait_detached - wait (polling, up to timeout_ms) until no loop
 * device is backed by `image` any more: after a lazy unmount, or while an
 * autoclear detach is still under way, the file system may still write to
 * the image. 0 once free, -EBUSY (UNAVAILABLE) if still attached. Cost:
 * one sysfs read per loop device per poll. */
int kf_volume_wait_detached(const char *image, int timeout_ms, kf_error *err);

/* kf_volume_is_mounted - 1 if a file system is mounted exactly at path. */
int kf_volume_is_mounted(const char *mountpoint);

/* kf_tmpfs_mount - a size-limited tmpfs (nosuid,nodev,noexec) owned by
 * uid:gid with `mode`, for the kernel's socket directory. */
int kf_tmpfs_mount(const char *mountpoint, uint64_t bytes, uid_t uid, gid_t gid, mode_t mode,
                   kf_error *err);

#endif
