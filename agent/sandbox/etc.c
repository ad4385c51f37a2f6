/* etc.c - the sandbox's /etc: generated, minimal, read-only.
 *
 * The image's /etc is never bound whole: it holds secrets (shadow, ssh host
 * keys, ssl/private) and the host's identity. Instead a tmpfs gets the few
 * files that name the sandbox's own users and host, plus read-only binds of
 * the image entries that Python, numpy and matplotlib read (loader cache,
 * alternatives, fonts, CA certificates...), where present. Symlinks in the
 * image (localtime -> /usr/share/zoneinfo/...) are copied as symlinks.
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

/* Image entries (relative to the image's /etc) bound read-only if present.
 * Only public data: ssl/private is deliberately not listed. */
static const char *const etc_binds[] = {
    "alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "fonts",
    "matplotlibrc", "python3",     "python3.11", "localtime",    "mime.types",
    "ssl/certs",    "ssl/openssl.cnf",
};

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

/* Bind (or copy, for a symlink) one image entry; absent entries are skipped. */
static int bind_entry(int rootfs_fd, const char *name, kf_error *err) {
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
    _cleanup_close_ int fd = openat(rootfs_fd, src, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return kf_error_set(err, -errno, 0, "open image %s", rel);
    int r = kf_sb_make_target(path, rel, S_ISDIR(st.st_mode), err);
    if (r < 0)
        return r;
    return kf_sb_bind_fd(fd, path, rel, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, err);
}

int kf_sb_mount_etc(const kf_sb_config *cfg, int rootfs_fd, kf_error *err) {
    char path[PATH_MAX];
    int r;
    kf_sb_staged(path, sizeof(path), "/etc");
    if ((r = kf_sb_tmpfs(path, "/etc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,mode=0755",
                         err)) < 0)
        return r;
    if ((r = generate_files(cfg, err)) < 0)
        return kf_error_wrap(err, "/etc");
    for (size_t i = 0; i < KF_ARRAY_SIZE(etc_binds); i++)
        if ((r = bind_entry(rootfs_fd, etc_binds[i], err)) < 0)
            return kf_error_wrap(err, "/etc");
    return kf_sb_remount(path, "/etc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, err);
}
