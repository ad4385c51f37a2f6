/* etc.c - the sandbox's /etc: generated, minimal, read-only.
 *
 * The image's /etc is never bound whole: it holds secrets (shadow, ssh host
 * keys, ssl/private) and the host's identity. Instead a tmpfs gets the few
 * files that name the sandbox's own users and host, plus the image entries
 * that Python, numpy and matplotlib read (loader cache, alternatives, fonts,
 * CA certificates...), where present:
 *
 *   directory  a read-only overlay of it (mounts.c), never a bind: a bind
 *              shares the image's inodes with every other session, and a
 *              lock or an inotify watch on a shared inode is a covert channel
 *   file       copied into the tmpfs (at most ETC_COPY_MAX bytes), same
 *              permission bits minus set-id, owned by root
 *   symlink    the same symlink (localtime -> /usr/share/zoneinfo/...); its
 *              target resolves inside the sandbox, on an overlay or here,
 *              and the link keeps the zone's name readable
 */
#include "sandbox.h"

#include "kf/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* Image entries (relative to the image's /etc) made visible if present.
 * Only public data: ssl/private is deliberately not listed. */
static const char *const etc_entries[] = {
    "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "fonts",
    "matplotlibrc", "python3",     "python3.11", "localtime",    "mime.types",
    "ssl/certs",    "ssl/openssl.cnf",
};

/* A copied file larger than this is refused (setup fails): the list above
 * holds small configuration files, and the copies live in the session's
 * memory. The tmpfs is sized for the generated files plus a few copies at
 * the limit; it only caps, pages are used as written. */
#define ETC_COPY_MAX (8 << 20)
#define ETC_TMPFS_OPTS "size=24m,mode=0755"

static int write_etc_file(const char *name, const char *content, kf_error *err) {
    char rel[64], path[PATH_MAX];
    snprintf(rel, sizeof(rel), "/etc/%s", name);
    kf_sb_staged(path, sizeof(path), rel);
    _cleanup_close_ int fd =
        open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return kf_error_set(err, -errno, 0, "create %s", rel);
    size_t len = strlen(content);
    if (write(fd, content, len) != (ssize_t)len)
        return kf_error_set(err, errno ? -errno : -EIO, 0, "write %s", rel);
    return 0;
}

static int generate_files(const kf_sb_config *cfg, kf_error *err) {
    char buf[512];
    int r;
    snprintf(buf, sizeof(buf),
             "root:x:0:0:root:/root:/usr/sbin/nologin\n"
             "sandbox:x:%lu:%lu::" KF_SB_HOME ":/bin/sh\n",
             (unsigned long)cfg->uid, (unsigned long)cfg->gid);
    if ((r = write_etc_file("passwd", buf, err)) < 0)
        return r;
    snprintf(buf, sizeof(buf), "root:x:0:\nsandbox:x:%lu:\n", (unsigned long)cfg->gid);
    if ((r = write_etc_file("group", buf, err)) < 0)
        return r;
    snprintf(buf, sizeof(buf), "127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost\n",
             cfg->id);
    if ((r = write_etc_file("hosts", buf, err)) < 0)
        return r;
    snprintf(buf, sizeof(buf), "%s\n", cfg->id);
    if ((r = write_etc_file("hostname", buf, err)) < 0)
        return r;
    if ((r = write_etc_file("resolv.conf", "", err)) < 0)
        return r;
    return write_etc_file("nsswitch.conf",
                          "passwd: files\ngroup: files\nshadow: files\n"
                          "hosts: files\nnetworks: files\nprotocols: files\n"
                          "services: files\n",
                          err);
}

/* Copy the image file `src` (open for reading, stat'ed as *st) to `path`.
 * Reading stops at ETC_COPY_MAX too, in case the file grew since the stat.
 * Created as PID 1 (root), so root-owned. */
static int copy_file(int src, const struct stat *st, const char *path, const char *rel,
                     kf_error *err) {
    if (st->st_size > ETC_COPY_MAX)
        return kf_error_set(err, -EFBIG, 0, "copy image %s: %lld bytes, over the limit of %d",
                            rel, (long long)st->st_size, ETC_COPY_MAX);
    _cleanup_close_ int dst =
        open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (dst < 0)
        return kf_error_set(err, -errno, 0, "create %s", rel);
    char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(src, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kf_error_set(err, -errno, 0, "read image %s", rel);
        if (n == 0)
            break;
        total += (size_t)n;
        if (total > ETC_COPY_MAX)
            return kf_error_set(err, -EFBIG, 0, "copy image %s: over the limit of %d bytes", rel,
                                ETC_COPY_MAX);
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(dst, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return kf_error_set(err, -errno, 0, "write %s", rel);
            off += w;
        }
    }
    /* After the writes: the creation mode went through the umask. */
    if (fchmod(dst, st->st_mode & 0777) < 0)
        return kf_error_set(err, -errno, 0, "chmod %s", rel);
    return 0;
}

/* Make one image entry visible (overlay, copy or symlink, see the top of the
 * file); absent entries and other file types are skipped. */
static int add_entry(int rootfs_fd, int empty_fd, const char *name, kf_error *err) {
    char src[PATH_MAX], rel[PATH_MAX], path[PATH_MAX];
    snprintf(src, sizeof(src), "etc/%s", name);
    snprintf(rel, sizeof(rel), "/etc/%s", name);
    if (kf_sb_staged(path, sizeof(path), rel) < 0)
        return kf_error_set(err, -ENAMETOOLONG, 0, "path %s", rel);

    struct stat st;
    if (fstatat(rootfs_fd, src, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT || errno == ENOTDIR ? 0
                                                   : kf_error_set(err, -errno, 0, "stat image %s", rel);
    if (!S_ISLNK(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return 0;

    /* Parents inside /etc (ssl/ for ssl/certs). */
    for (char *p = path + strlen(KF_SB_STAGING) + strlen("/etc/"); *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = kf_sb_make_target(path, rel, true, err);
        *p = '/';
        if (r < 0)
            return r;
    }

    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlinkat(rootfs_fd, src, target, sizeof(target) - 1);
        if (n < 0)
            return kf_error_set(err, -errno, 0, "readlink image %s", rel);
        target[n] = '\0';
        if (symlink(target, path) < 0)
            return kf_error_set(err, -errno, 0, "symlink %s", rel);
        return 0;
    }
    if (S_ISREG(st.st_mode)) {
        /* O_NONBLOCK: never hang on a FIFO swapped in after the stat. */
        _cleanup_close_ int fd =
            openat(rootfs_fd, src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
            return kf_error_set(err, -errno, 0, "open image %s", rel);
        if (fstat(fd, &st) < 0)
            return kf_error_set(err, -errno, 0, "stat image %s", rel);
        if (!S_ISREG(st.st_mode))
            return kf_error_set(err, -EINVAL, 0, "image %s is no longer a plain file", rel);
        return copy_file(fd, &st, path, rel, err);
    }
    _cleanup_close_ int fd =
        openat(rootfs_fd, src, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kf_error_set(err, -errno, 0, "open image %s", rel);
    int r = kf_sb_make_target(path, rel, true, err);
    if (r < 0)
        return r;
    return kf_sb_overlay_fd(fd, empty_fd, path, rel, MS_NOSUID | MS_NODEV | MS_NOEXEC, err);
}

int kf_sb_mount_etc(const kf_sb_config *cfg, int rootfs_fd, int empty_fd, kf_error *err) {
    char path[PATH_MAX];
    int r;
    kf_sb_staged(path, sizeof(path), "/etc");
    if ((r = kf_sb_tmpfs(path, "/etc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ETC_TMPFS_OPTS, err)) < 0)
        return r;
    if ((r = generate_files(cfg, err)) < 0)
        return kf_error_wrap(err, "/etc");
    for (size_t i = 0; i < KF_ARRAY_SIZE(etc_entries); i++)
        if ((r = add_entry(rootfs_fd, empty_fd, etc_entries[i], err)) < 0)
            return kf_error_wrap(err, "/etc");
    return kf_sb_remount(path, "/etc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, err);
}
