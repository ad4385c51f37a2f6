/* volume_io.h - moving a volume image between nodes: reading its data
 * extents (holes are not sent), and giving every inode of an imported
 * volume to the session that takes it over.
 *
 * An imported image is data from another node: the walk here never follows
 * a symlink, never leaves the volume's file system, and stops at a bound on
 * the inodes it visits. Errors: 0 / negative errno, message in *err.
 */
#ifndef KF_VOLUME_IO_H
#define KF_VOLUME_IO_H

#include <stdint.h>
#include <sys/types.h>

#include "kf/error.h"

/* kf_volume_data_extent - the next stretch of data of the image open at fd
 * at or after `off`, clipped to `end`: 0 with [*start, *stop), -ENXIO when
 * only holes (or nothing) remain before `end`, another negative errno on
 * an I/O error. A file system without SEEK_DATA reports the rest as data.
 * Cost: two lseeks. */
int kf_volume_data_extent(int fd, uint64_t off, uint64_t end, uint64_t *start, uint64_t *stop);

/* kf_volume_chown_all - give every inode of the file system mounted at
 * root_dir to uid:gid (the root directory included; symlinks themselves,
 * never their targets). Never follows a symlink, never crosses into
 * another file system, and refuses (-EFBIG) a tree of more than
 * `max_inodes` inodes (hard links count once). Holds two fds at most
 * whatever the depth (it climbs back through ".." and seekdir), so it
 * must only run where nothing else changes the tree: an imported volume
 * before any sandbox uses it. Blocking, O(entries). */
int kf_volume_chown_all(const char *root_dir, uid_t uid, gid_t gid, uint64_t max_inodes, kf_error *err);

#endif
