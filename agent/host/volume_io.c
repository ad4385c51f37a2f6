/* volume_io.c - the parts of a session move that touch a volume image
 * itself: finding its data extents, so an export sends what the files use
 * and not the image's size, and the ownership walk an import runs on the
 * received volume before any sandbox sees it.
 *
 * No state; thread-safe. The walk works on fds only (fstatat / fchownat
 * with AT_SYMLINK_NOFOLLOW, openat with O_NOFOLLOW), so a symlink planted
 * by a session is changed itself and never followed.
 */
#include "volume_io.h"

#include "kf/cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int kf_volume_data_extent(int fd, uint64_t off, uint64_t end, uint64_t *start, uint64_t *stop) {
    if (off >= end)
        return -ENXIO;
    off_t d = lseek(fd, (off_t)off, SEEK_DATA);
    if (d < 0) {
        if (errno == ENXIO)
            return -ENXIO;
        if (errno != EINVAL)
            return -errno;
        /* no SEEK_DATA here: everything is data */
        *start = off;
        *stop = end;
        return 0;
    }
    if ((uint64_t)d >= end)
        return -ENXIO;
    off_t h = lseek(fd, d, SEEK_HOLE);
    if (h < 0)
        return -errno;
    *start = (uint64_t)d;
    *stop = (uint64_t)h < end ? (uint64_t)h : end;
    return 0;
}

/* Where a directory's read stopped, and which directory it was, for the
 * way back up through "..". */
typedef struct walk_level {
    long pos;
    dev_t dev;
    ino_t ino;
} walk_level;

/* Inodes are counted in 1/2^20 units: an entry of a file with n links adds
 * 1/n, so a file linked many times counts once (e2fsck has fixed the link
 * counts before the walk). */
#define UNIT (1u << 20)

/* fdopendir that closes fd when it fails (errno kept). */
static DIR *dir_of(int fd) {
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return d;
}

int kf_volume_chown_all(const char *root_dir, uid_t uid, gid_t gid, uint64_t max_inodes, kf_error *err) {
    int fd = open(root_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kf_error_set(err, -errno, 0, "cannot open volume %s: %m", root_dir);
    struct stat root;
    if (fstat(fd, &root) < 0 || fchown(fd, uid, gid) < 0) {
        int e = -errno;
        close(fd);
        return kf_error_set(err, e, 0, "volume %s: %s", root_dir, strerror(-e));
    }
    _cleanup_closedir_ DIR *d = dir_of(fd);
    if (!d)
        return kf_error_set(err, -errno, 0, "volume %s: %m", root_dir);
    _cleanup_free_ walk_level *stack = NULL;
    size_t depth = 0, cap = 0;
    uint64_t units = UNIT; /* the root */
    const uint64_t limit = max_inodes > UINT64_MAX / UNIT ? UINT64_MAX : max_inodes * UNIT;
    struct stat cur = root;

    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                return kf_error_set(err, -errno, 0, "reading a directory of volume %s: %m", root_dir);
            if (depth == 0)
                return 0;
            /* Back up: ".." is never a symlink; check it is the parent we
             * left, then resume its listing where we stopped. */
            int up = openat(dirfd(d), "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (up < 0)
                return kf_error_set(err, -errno, 0, "volume %s: climbing back: %m", root_dir);
            closedir(d);
            if (!(d = dir_of(up)))
                return kf_error_set(err, -errno, 0, "volume %s: %m", root_dir);
            depth--;
            if (fstat(up, &cur) < 0 || cur.st_dev != stack[depth].dev || cur.st_ino != stack[depth].ino)
                return kf_error_set(err, -ESTALE, 0, "volume %s changed during the ownership walk", root_dir);
            seekdir(d, stack[depth].pos);
            continue;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return kf_error_set(err, -errno, 0, "volume %s: stat: %m", root_dir);
        units += S_ISDIR(st.st_mode) || st.st_nlink <= 1 ? UNIT : UNIT / st.st_nlink + 1;
        if (units > limit)
            return kf_error_set(err, -EFBIG, KF_ST_INVALID_ARGUMENT,
                                "volume holds more than %llu inodes (its inode quota)",
                                (unsigned long long)max_inodes);
        if (st.st_dev != root.st_dev)
            return kf_error_set(err, -EXDEV, KF_ST_INVALID_ARGUMENT, "volume %s has a mount inside",
                                root_dir);
        if (!S_ISDIR(st.st_mode)) {
            /* the entry itself: a symlink is changed, never its target */
            if (fchownat(dirfd(d), de->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                return kf_error_set(err, -errno, 0, "volume %s: chown: %m", root_dir);
            continue;
        }
        int child = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (child < 0)
            return kf_error_set(err, -errno, 0, "volume %s: open directory: %m", root_dir);
        struct stat cst;
        errno = 0;
        if (fstat(child, &cst) < 0 || cst.st_dev != st.st_dev || cst.st_ino != st.st_ino ||
            fchown(child, uid, gid) < 0) {
            int e = errno ? -errno : -ESTALE;
            close(child);
            return kf_error_set(err, e, 0, "volume %s: directory: %s", root_dir, strerror(-e));
        }
        if (depth == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            walk_level *n = realloc(stack, ncap * sizeof(*n));
            if (!n) {
                close(child);
                return kf_error_set(err, -ENOMEM, 0, "out of memory");
            }
            stack = n;
            cap = ncap;
        }
        stack[depth++] = (walk_level){.pos = telldir(d), .dev = cur.st_dev, .ino = cur.st_ino};
        closedir(d);
        if (!(d = dir_of(child)))
            return kf_error_set(err, -errno, 0, "volume %s: %m", root_dir);
        cur = cst;
    }
}
