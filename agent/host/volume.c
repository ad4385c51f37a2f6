/* volume.c - per-session volumes: a sparse ext4 image per session,
 * attached to a loop device with autoclear and mounted nosuid,nodev, plus
 * the small tmpfs mounts a session needs.
 *
 * The image's size is the byte quota and its inode count the inode quota,
 * so a session filling its volume hits ENOSPC inside the image and never
 * touches the host disk. mkfs.ext4 runs through posix_spawn (the agent is
 * multi-threaded: no fork, no system()). Nothing here keeps state; every
 * function may be called from several threads at once — loop devices are
 * claimed with LOOP_CONFIGURE, which fails with EBUSY if another thread (or
 * process) won the same free device, and we then ask for the next one.
 */
#include "volume.h"

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/loop.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MKFS_STDERR_MAX 1024
#define LOOP_ATTEMPTS 64

static const char *const mkfs_paths[] = {"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"};
static const char *const fsck_paths[] = {"/usr/sbin/e2fsck", "/sbin/e2fsck"};

/* Run argv[0] (an absolute path) with a fixed environment, stdin/stdout on
 * /dev/null, stderr captured into errbuf. Blocks until the child exits.
 * Returns 0 if it exited 0, -EIO with its stderr otherwise; *exit_code
 * (may be NULL) gets its exit status, -1 if a signal killed it. */
static int run_capture(char *const argv[], char *errbuf, size_t errsize, int *exit_code) {
    static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};
    errbuf[0] = '\0';
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    _cleanup_close_ int rd = p[0];
    _cleanup_close_ int wr = p[1];
    _cleanup_close_ int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        return -errno;

    posix_spawn_file_actions_t fa;
    int r = posix_spawn_file_actions_init(&fa);
    if (r != 0)
        return -r;
    /* dup2 clears O_CLOEXEC on the target; everything else stays closed. */
    r = posix_spawn_file_actions_adddup2(&fa, devnull, STDIN_FILENO);
    if (r == 0)
        r = posix_spawn_file_actions_adddup2(&fa, devnull, STDOUT_FILENO);
    if (r == 0)
        r = posix_spawn_file_actions_adddup2(&fa, wr, STDERR_FILENO);
    pid_t pid = -1;
    if (r == 0)
        r = posix_spawn(&pid, argv[0], &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return -r;
    close(TAKE_FD(wr));

    size_t n = 0;
    char sink[256];
    for (;;) {
        ssize_t k;
        if (n + 1 < errsize)
            k = read(rd, errbuf + n, errsize - 1 - n);
        else
            k = read(rd, sink, sizeof(sink)); /* drain so the child never blocks */
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        if (n + 1 < errsize)
            n += (size_t)k;
    }
    errbuf[n] = '\0';
    /* one line for the error message: newlines and tabs become spaces */
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = ((unsigned char)errbuf[i] < 0x20) ? ' ' : errbuf[i];
        if (ch == ' ' && (o == 0 || errbuf[o - 1] == ' '))
            continue;
        errbuf[o++] = ch;
    }
    n = o;
    errbuf[n] = '\0';
    while (n > 0 && (errbuf[n - 1] == '\n' || errbuf[n - 1] == ' '))
        errbuf[--n] = '\0';

    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    if (exit_code)
        *exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (!errbuf[0])
        snprintf(errbuf, errsize, WIFEXITED(st) ? "exit status %d" : "killed by signal %d",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return -EIO;
}

int kf_volume_create(const char *image, uint64_t bytes, uint64_t inodes, uid_t uid, gid_t gid,
                     kf_error *err) {
    if (!image || !*image || bytes < (1u << 20) || bytes > (UINT64_MAX >> 2) || inodes > UINT32_MAX)
        return kf_error_set(err, -EINVAL, 0, "invalid volume size (%" PRIu64 " bytes, %" PRIu64 " inodes)",
                            bytes, inodes);
    const char *mkfs = NULL;
    for (size_t i = 0; i < KF_ARRAY_SIZE(mkfs_paths) && !mkfs; i++)
        if (access(mkfs_paths[i], X_OK) == 0)
            mkfs = mkfs_paths[i];
    if (!mkfs)
        return kf_error_set(err, -ENOENT, KF_ST_FAILED_PRECONDITION, "mkfs.ext4 not found (install e2fsprogs)");

    {
        _cleanup_close_ int fd = open(image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return kf_error_set(err, -errno, 0, "cannot create volume image %s: %m", image);
        if (ftruncate(fd, (off_t)bytes) < 0) {
            int e = -errno;
            unlink(image);
            return kf_error_set(err, e, 0, "cannot size volume image %s: %s", image, strerror(-e));
        }
    }

    char nbuf[32], ebuf[96];
    snprintf(nbuf, sizeof(nbuf), "%" PRIu64, inodes);
    snprintf(ebuf, sizeof(ebuf), "root_owner=%u:%u,lazy_itable_init=1,nodiscard", (unsigned)uid,
             (unsigned)gid);
    /* -F: the target is a regular file; no journal (a session volume does
     * not outlive a host crash in a useful state, and it saves space and
     * writes); -m 0: no blocks reserved for root, the quota is the size. */
    char *argv[16];
    size_t a = 0;
    argv[a++] = (char *)mkfs;
    argv[a++] = "-q";
    argv[a++] = "-F";
    argv[a++] = "-O";
    argv[a++] = "^has_journal";
    argv[a++] = "-m";
    argv[a++] = "0";
    if (inodes) {
        argv[a++] = "-N";
        argv[a++] = nbuf;
    }
    argv[a++] = "-E";
    argv[a++] = ebuf;
    argv[a++] = (char *)image;
    argv[a] = NULL;

    char out[MKFS_STDERR_MAX];
    int r = run_capture(argv, out, sizeof(out), NULL);
    if (r < 0) {
        unlink(image);
        return kf_error_set(err, r, KF_ST_INTERNAL, "mkfs.ext4 %s failed: %s", image, out);
    }
    return 0;
}

int kf_volume_fsck(const char *image, kf_error *err) {
    const char *fsck = NULL;
    for (size_t i = 0; i < KF_ARRAY_SIZE(fsck_paths) && !fsck; i++)
        if (access(fsck_paths[i], X_OK) == 0)
            fsck = fsck_paths[i];
    if (!fsck)
        return 0;
    /* -f: the image says it is clean, but it came from another node; -p:
     * fix what is safe to fix, without questions. Exit 0 = clean, 1 =
     * fixed; anything else is damage we do not mount. */
    char *argv[] = {(char *)fsck, "-f", "-p", (char *)image, NULL};
    char out[MKFS_STDERR_MAX];
    int code = -1;
    if (run_capture(argv, out, sizeof(out), &code) == 0 || code == 1)
        return 0;
    return kf_error_set(err, -EUCLEAN, KF_ST_INVALID_ARGUMENT, "volume image is damaged: %s", out);
}

/* Claim a free loop device for imgfd (autoclear). On success *loopfd is the
 * open device and *num its number; the caller must keep *loopfd open until
 * the mount holds the device (autoclear detaches on the last close). */
static int loop_attach(int imgfd, const char *image, int *loopfd, int *num, kf_error *err) {
    _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return kf_error_set(err, -errno, KF_ST_FAILED_PRECONDITION, "cannot open /dev/loop-control: %m");
    int use_configure = 1;
    for (int attempt = 0; attempt < LOOP_ATTEMPTS; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0)
            return kf_error_set(err, -errno, KF_ST_RESOURCE_EXHAUSTED, "no free loop device: %m");
        char dev[32];
        snprintf(dev, sizeof(dev), "/dev/loop%d", n);
        _cleanup_close_ int fd = open(dev, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT || errno == ENXIO) {
                /* the node can appear a moment after LOOP_CTL_GET_FREE */
                usleep(1000);
                continue;
            }
            return kf_error_set(err, -errno, 0, "cannot open %s: %m", dev);
        }
        int r;
        if (use_configure) {
            struct loop_config cfg;
            memset(&cfg, 0, sizeof(cfg));
            cfg.fd = (uint32_t)imgfd;
            cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
            snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", image);
            r = ioctl(fd, LOOP_CONFIGURE, &cfg);
            if (r < 0 && (errno == EINVAL || errno == ENOTTY)) {
                use_configure = 0; /* kernel < 5.8 */
                attempt--;
                continue;
            }
        } else {
            r = ioctl(fd, LOOP_SET_FD, imgfd);
            if (r == 0) {
                struct loop_info64 info;
                memset(&info, 0, sizeof(info));
                info.lo_flags = LO_FLAGS_AUTOCLEAR;
                snprintf((char *)info.lo_file_name, sizeof(info.lo_file_name), "%s", image);
                if (ioctl(fd, LOOP_SET_STATUS64, &info) < 0) {
                    int e = -errno;
                    ioctl(fd, LOOP_CLR_FD, 0);
                    return kf_error_set(err, e, 0, "%s: LOOP_SET_STATUS64: %s", dev, strerror(-e));
                }
            }
        }
        if (r < 0) {
            if (errno == EBUSY)
                continue; /* lost the race for this device: next one */
            return kf_error_set(err, -errno, 0, "cannot attach %s to %s: %m", image, dev);
        }
        *loopfd = TAKE_FD(fd);
        *num = n;
        return 0;
    }
    return kf_error_set(err, -EBUSY, KF_ST_UNAVAILABLE, "no loop device could be claimed after %d attempts",
                        LOOP_ATTEMPTS);
}

int kf_volume_mount(const char *image, const char *mountpoint, kf_error *err) {
    if (!image || !mountpoint)
        return kf_error_set(err, -EINVAL, 0, "volume image or mount point missing");
    _cleanup_close_ int imgfd = open(image, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (imgfd < 0)
        return kf_error_set(err, -errno, 0, "cannot open volume image %s: %m", image);
    struct stat st;
    if (fstat(imgfd, &st) < 0)
        return kf_error_set(err, -errno, 0, "cannot stat %s: %m", image);
    if (!S_ISREG(st.st_mode))
        return kf_error_set(err, -EINVAL, 0, "volume image %s is not a regular file", image);

    _cleanup_close_ int loopfd = -1;
    int num = -1;
    int r = loop_attach(imgfd, image, &loopfd, &num, err);
    if (r < 0)
        return r;
    char dev[32];
    snprintf(dev, sizeof(dev), "/dev/loop%d", num);
    /* On failure closing loopfd (scope exit) detaches the device again. */
    if (mount(dev, mountpoint, "ext4", MS_NOSUID | MS_NODEV, "") < 0)
        return kf_error_set(err, -errno, 0, "cannot mount %s (%s) at %s: %m", image, dev, mountpoint);
    return 0;
}

int kf_volume_umount(const char *mountpoint, kf_error *err) {
    if (!mountpoint)
        return kf_error_set(err, -EINVAL, 0, "mount point missing");
    if (umount2(mountpoint, UMOUNT_NOFOLLOW) == 0)
        return 0;
    if (errno == EINVAL || errno == ENOENT)
        return 0; /* not a mount point (or gone): nothing to do */
    if (errno == EBUSY) {
        /* Something still holds a file open (a straggling process): detach
         * now, the kernel finishes (and autoclear frees the loop device)
         * when the last reference goes. */
        kf_warn("%s busy, detaching lazily", mountpoint);
        if (umount2(mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
            return 0;
    }
    return kf_error_set(err, -errno, 0, "cannot unmount %s: %m", mountpoint);
}

/* 1 if a loop device is backed by the file at `real` (a canonical path). */
static int loop_backed(const char *real) {
    _cleanup_closedir_ DIR *d = opendir("/sys/block");
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "loop", 4) != 0)
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "/sys/block/%.32s/loop/backing_file", de->d_name);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        if (kf_read_file(p, PATH_MAX + 16, &buf, &len) < 0)
            continue;
        while (len && buf[len - 1] == '\n')
            buf[--len] = '\0';
        if (!strcmp(buf, real))
            return 1;
    }
    return 0;
}

int kf_volume_wait_detached(const char *image, int timeout_ms, kf_error *err) {
    char real[PATH_MAX];
    if (!realpath(image, real))
        return kf_error_set(err, -errno, 0, "volume image %s: %m", image);
    int64_t deadline = kf_mono_ms() + timeout_ms;
    while (loop_backed(real)) {
        if (kf_mono_ms() >= deadline)
            return kf_error_set(err, -EBUSY, KF_ST_UNAVAILABLE,
                                "volume image %s is still attached to a loop device; retry shortly", image);
        usleep(10000);
    }
    return 0;
}

int kf_volume_is_mounted(const char *mountpoint) {
    struct statx stx;
    if (statx(AT_FDCWD, mountpoint, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_BASIC_STATS, &stx) < 0)
        return 0;
    if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
        return (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) ? 1 : 0;
    /* Kernels before 5.8: a different device than the parent directory.
     * Misses a bind mount of the same file system, which we never make. */
    char parent[PATH_MAX];
    if (snprintf(parent, sizeof(parent), "%s/..", mountpoint) >= (int)sizeof(parent))
        return 0;
    struct stat a, b;
    if (lstat(mountpoint, &a) < 0 || stat(parent, &b) < 0)
        return 0;
    return a.st_dev != b.st_dev || a.st_ino == b.st_ino;
}

int kf_tmpfs_mount(const char *mountpoint, uint64_t bytes, uid_t uid, gid_t gid, mode_t mode,
                   kf_error *err) {
    if (!mountpoint || bytes == 0)
        return kf_error_set(err, -EINVAL, 0, "tmpfs needs a mount point and a size limit");
    char opts[128];
    snprintf(opts, sizeof(opts), "size=%" PRIu64 ",mode=%o,uid=%u,gid=%u", bytes, (unsigned)(mode & 07777),
             (unsigned)uid, (unsigned)gid);
    if (mount("tmpfs", mountpoint, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)
        return kf_error_set(err, -errno, 0, "cannot mount tmpfs at %s: %m", mountpoint);
    return 0;
}
