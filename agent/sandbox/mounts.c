/* mounts.c - the sandbox's root file system, and the mount helpers.
 *
 * Owns the layout of the new root (a small tmpfs):
 *
 *   /usr /lib /lib64 /lib32 /bin /sbin  read-only overlays of the image (or
 *                                       the image's symlinks, for merged /usr)
 *   /etc                                generated, read-only (etc.c)
 *   /proc /dev                          procdev.c
 *   /tmp                                tmpfs, --tmp-size, 1777
 *   /home/sandbox                       tmpfs, --home-size, UID:GID 0700
 *   /mnt/data                           bind of --volume (rw)
 *   /run/kernel                         bind of --run-dir (rw, noexec)
 *
 * No /sys at all. Every source (the image, the volume, the run dir) is opened
 * O_PATH before the staging tmpfs is mounted and bound (or used as an overlay
 * layer) through /proc/self/fd/N, so a source path under the staging dir
 * still works and a path swapped after the check can't redirect a mount. The
 * tree is assembled under KF_SB_STAGING, then pivot_root'ed into; the old
 * root is detached.
 *
 * Why overlays and not binds for the image: a bind shows the host's inodes,
 * the same in every session, and a read-only fd is enough to flock() or
 * fcntl-lock such a file or to watch it with inotify, which makes a covert
 * channel between sessions. A read-only overlay of the same directory has
 * inodes of its own per mount (the page cache is still the image's, so
 * memory is not duplicated). Overlay wants at least two layers when there is
 * no upper one, so each overlay stacks the image directory over an empty,
 * read-only tmpfs that exists only while the overlays are being mounted
 * (they keep private clones of their layers); nothing of it is left in the
 * tree. Overlay nests at most two deep: an image that is itself on overlayfs
 * still works.
 */
#include "sandbox.h"

#include "kf/cleanup.h"
#include "kf/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Where the empty lower layer is mounted while the overlays are built. */
#define EMPTY_LAYER "/.empty-layer"

/* The image directories made visible, in the order they are mounted. */
static const char *const system_dirs[] = {"usr", "lib", "lib64", "lib32", "bin", "sbin"};

int kf_sb_staged(char *buf, size_t size, const char *rel) {
    int n = snprintf(buf, size, "%s%s", KF_SB_STAGING, rel);
    return (n < 0 || (size_t)n >= size) ? -ENAMETOOLONG : 0;
}

int kf_sb_remount(const char *path, const char *shown, unsigned long flags, kf_error *err) {
    if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | flags, NULL) < 0)
        return kf_error_set(err, -errno, 0, "remount %s", shown);
    return 0;
}

/* A bind is made first, then its flags are applied with a remount: the
 * kernel ignores MS_RDONLY & co on the initial MS_BIND. Not recursive: the
 * sources have no sub-mounts we want to expose. */
int kf_sb_bind(const char *src, const char *path, const char *shown, unsigned long flags,
               kf_error *err) {
    if (mount(src, path, NULL, MS_BIND, NULL) < 0)
        return kf_error_set(err, -errno, 0, "bind %s", shown);
    if (flags)
        return kf_sb_remount(path, shown, flags, err);
    return 0;
}

int kf_sb_bind_fd(int src_fd, const char *path, const char *shown, unsigned long flags,
                  kf_error *err) {
    char src[64];
    snprintf(src, sizeof(src), "/proc/self/fd/%d", src_fd);
    return kf_sb_bind(src, path, shown, flags, err);
}

int kf_sb_overlay_opts(char *buf, size_t size, const char *layer, const char *below) {
    const char *layers[] = {layer, below};
    for (size_t i = 0; i < KF_ARRAY_SIZE(layers); i++)
        if (strpbrk(layers[i], ":,\\") || !layers[i][0])
            return -EINVAL;
    int n = snprintf(buf, size, "lowerdir=%s:%s", layer, below);
    return (n < 0 || (size_t)n >= size) ? -ENAMETOOLONG : 0;
}

int kf_sb_overlay_fd(int src_fd, int empty_fd, const char *path, const char *shown,
                     unsigned long flags, kf_error *err) {
    char src[32], empty[32], opts[96];
    snprintf(src, sizeof(src), "/proc/self/fd/%d", src_fd);
    snprintf(empty, sizeof(empty), "/proc/self/fd/%d", empty_fd);
    int r = kf_sb_overlay_opts(opts, sizeof(opts), src, empty);
    if (r == -EINVAL)
        return kf_error_set(err, r, 0, "overlay layer for %s: ',', ':' or '\\' in its path", shown);
    if (r < 0)
        return kf_error_set(err, r, 0, "overlay options for %s", shown);
    if (mount("overlay", path, "overlay", MS_RDONLY | flags, opts) < 0)
        return kf_error_set(err, -errno, 0, "mount read-only overlay on %s", shown);
    return 0;
}

int kf_sb_tmpfs(const char *path, const char *shown, unsigned long flags, const char *opts,
                kf_error *err) {
    if (mount("tmpfs", path, "tmpfs", flags, opts) < 0)
        return kf_error_set(err, -errno, 0, "mount tmpfs on %s", shown);
    return 0;
}

int kf_sb_make_target(const char *path, const char *shown, bool dir, kf_error *err) {
    if (dir) {
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return kf_error_set(err, -errno, 0, "mkdir %s", shown);
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return kf_error_set(err, -errno, 0, "create %s", shown);
    close(fd);
    return 0;
}

/* Make the in-sandbox directory `rel` (and its parents) in the staging tree. */
static int make_dir(const char *rel, kf_error *err) {
    char path[PATH_MAX];
    if (kf_sb_staged(path, sizeof(path), rel) < 0)
        return kf_error_set(err, -ENAMETOOLONG, 0, "path %s", rel);
    for (char *p = path + strlen(KF_SB_STAGING) + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = kf_sb_make_target(path, rel, true, err);
        *p = '/';
        if (r < 0)
            return r;
    }
    return kf_sb_make_target(path, rel, true, err);
}

/* Open a source directory the agent named, refusing anything that isn't a
 * directory (O_DIRECTORY) and a final symlink (O_NOFOLLOW). */
static int open_source(const char *opt, const char *dir, int *out, kf_error *err) {
    int fd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kf_error_set(err, -errno, 0, "open %s %s", opt, dir);
    *out = fd;
    return 0;
}

/* Mount the empty lower layer of the overlays: a tiny read-only tmpfs with
 * one inode (its root), so it stays empty. *out gets an O_PATH fd of it. */
static int mount_empty_layer(int *out, kf_error *err) {
    char path[PATH_MAX];
    int r;
    kf_sb_staged(path, sizeof(path), EMPTY_LAYER);
    if ((r = kf_sb_make_target(path, EMPTY_LAYER, true, err)) < 0)
        return r;
    if ((r = kf_sb_tmpfs(path, EMPTY_LAYER, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         "size=4k,nr_inodes=1,mode=0555", err)) < 0)
        return r;
    int fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kf_error_set(err, -errno, 0, "open %s", EMPTY_LAYER);
    *out = fd;
    return 0;
}

/* Once every overlay is mounted: they hold private clones of the layer, so
 * the tmpfs and its mount point leave the tree. */
static int drop_empty_layer(kf_error *err) {
    char path[PATH_MAX];
    kf_sb_staged(path, sizeof(path), EMPTY_LAYER);
    if (umount2(path, MNT_DETACH) < 0)
        return kf_error_set(err, -errno, 0, "detach %s", EMPTY_LAYER);
    if (rmdir(path) < 0)
        return kf_error_set(err, -errno, 0, "remove %s", EMPTY_LAYER);
    return 0;
}

/* Mount the image's usr, lib... as read-only overlays; where the image has a
 * symlink (merged /usr: bin -> usr/bin) make the same symlink; skip what's
 * absent. */
static int mount_system_dirs(int rootfs_fd, int empty_fd, kf_error *err) {
    for (size_t i = 0; i < KF_ARRAY_SIZE(system_dirs); i++) {
        const char *name = system_dirs[i];
        char rel[32], path[PATH_MAX];
        snprintf(rel, sizeof(rel), "/%s", name);
        kf_sb_staged(path, sizeof(path), rel);
        struct stat st;
        if (fstatat(rootfs_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT)
                continue;
            return kf_error_set(err, -errno, 0, "stat image %s", rel);
        }
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlinkat(rootfs_fd, name, target, sizeof(target) - 1);
            if (n < 0)
                return kf_error_set(err, -errno, 0, "readlink image %s", rel);
            target[n] = '\0';
            if (symlink(target, path) < 0)
                return kf_error_set(err, -errno, 0, "symlink %s -> %s", rel, target);
            continue;
        }
        if (!S_ISDIR(st.st_mode))
            continue;
        _cleanup_close_ int fd = openat(rootfs_fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return kf_error_set(err, -errno, 0, "open image %s", rel);
        int r = kf_sb_make_target(path, rel, true, err);
        if (r < 0)
            return r;
        r = kf_sb_overlay_fd(fd, empty_fd, path, rel, MS_NOSUID | MS_NODEV, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The per-session writable places: /tmp, /home/sandbox, /mnt/data, /run/kernel. */
static int mount_session_dirs(const kf_sb_config *cfg, int volume_fd, int run_fd, kf_error *err) {
    char path[PATH_MAX], opts[128];
    int r;

    if ((r = make_dir("/tmp", err)) < 0)
        return r;
    kf_sb_staged(path, sizeof(path), "/tmp");
    snprintf(opts, sizeof(opts), "size=%llu,mode=1777", (unsigned long long)cfg->tmp_size);
    if ((r = kf_sb_tmpfs(path, "/tmp", MS_NOSUID | MS_NODEV, opts, err)) < 0)
        return r;

    if ((r = make_dir(KF_SB_HOME, err)) < 0)
        return r;
    kf_sb_staged(path, sizeof(path), KF_SB_HOME);
    snprintf(opts, sizeof(opts), "size=%llu,mode=0700,uid=%lu,gid=%lu",
             (unsigned long long)cfg->home_size, (unsigned long)cfg->uid, (unsigned long)cfg->gid);
    if ((r = kf_sb_tmpfs(path, KF_SB_HOME, MS_NOSUID | MS_NODEV, opts, err)) < 0)
        return r;

    if ((r = make_dir(KF_SB_DATA, err)) < 0)
        return r;
    kf_sb_staged(path, sizeof(path), KF_SB_DATA);
    if ((r = kf_sb_bind_fd(volume_fd, path, KF_SB_DATA, MS_NOSUID | MS_NODEV, err)) < 0)
        return r;

    if ((r = make_dir(KF_SB_RUN, err)) < 0)
        return r;
    kf_sb_staged(path, sizeof(path), KF_SB_RUN);
    return kf_sb_bind_fd(run_fd, path, KF_SB_RUN, MS_NOSUID | MS_NODEV | MS_NOEXEC, err);
}

/* Enter the staging tree: pivot_root(".", ".") stacks the old root on top of
 * the new one at "/", and the detach unmounts it (and everything under it)
 * from this namespace. Afterwards no path leads back to the host. */
static int enter_root(kf_error *err) {
    if (chdir(KF_SB_STAGING) < 0)
        return kf_error_set(err, -errno, 0, "chdir to the new root");
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return kf_error_set(err, -errno, 0, "pivot_root");
    if (umount2(".", MNT_DETACH) < 0)
        return kf_error_set(err, -errno, 0, "detach the old root");
    if (chdir("/") < 0)
        return kf_error_set(err, -errno, 0, "chdir /");
    if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        return kf_error_set(err, -errno, 0, "remount / read-only");
    if (chdir(KF_SB_HOME) < 0)
        return kf_error_set(err, -errno, 0, "chdir %s", KF_SB_HOME);
    return 0;
}

int kf_sb_build_root(const kf_sb_config *cfg, kf_error *err) {
    _cleanup_close_ int rootfs_fd = -1, volume_fd = -1, run_fd = -1, empty_fd = -1;
    int r;
    if ((r = open_source("--rootfs", cfg->rootfs, &rootfs_fd, err)) < 0 ||
        (r = open_source("--volume", cfg->volume, &volume_fd, err)) < 0 ||
        (r = open_source("--run-dir", cfg->run_dir, &run_fd, err)) < 0)
        return r;

    /* The new root: small, it only holds mount points and symlinks. */
    if ((r = kf_sb_tmpfs(KF_SB_STAGING, "/", MS_NOSUID | MS_NODEV, "size=1m,mode=0755", err)) < 0)
        return r;
    if ((r = mount_empty_layer(&empty_fd, err)) < 0)
        return r;
    if ((r = mount_system_dirs(rootfs_fd, empty_fd, err)) < 0)
        return kf_error_wrap(err, "system image");
    if ((r = make_dir("/etc", err)) < 0 || (r = kf_sb_mount_etc(cfg, rootfs_fd, empty_fd, err)) < 0)
        return r;
    if ((r = drop_empty_layer(err)) < 0)
        return r;
    /* /dev first: /proc is masked with the session's own /dev/null. */
    if ((r = make_dir("/dev", err)) < 0 || (r = kf_sb_mount_dev(cfg->tmp_size, err)) < 0)
        return r;
    if ((r = make_dir("/proc", err)) < 0 || (r = kf_sb_mount_proc(err)) < 0)
        return r;
    if ((r = mount_session_dirs(cfg, volume_fd, run_fd, err)) < 0)
        return r;
    return enter_root(err);
}
