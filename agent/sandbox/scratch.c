/* scratch.c - emptying the session's scratch file systems between kernels.
 *
 * /tmp, /dev/shm and /home/sandbox are tmpfs mounts; their pages are charged
 * to the session's memory cgroup and stay charged when the kernel that wrote
 * them dies. A kernel OOM-killed after filling them would leave every later
 * kernel with no memory to run in, so on each restart PID 1 has them emptied
 * before the new kernel starts (a restart gives fresh state anyway).
 * /mnt/data, the persistent volume, is never touched.
 *
 * Done by the new kernel's process itself (kernel.c), after it has become
 * the session's uid:gid with no capability and before it execs: everything
 * in those directories was created by that uid (/tmp and /dev/shm are
 * sticky 1777, the home is the uid's), so no privilege is needed, and no
 * extra process appears next to the kernel (the agent takes the one new
 * child of PID 1 after a restart for the kernel). Entries are removed with
 * *at calls on directory fds, never following a symlink and never leaving
 * the directory's file system, within a time bound. PID 1 has killed and
 * reaped every other process of the session first, so nothing races the
 * walk; even if something did, it can do nothing the session's own code
 * couldn't.
 */
#include "sandbox.h"

#include "kf/cleanup.h"
#include "kf/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Emptied on every restart, in this order. Not KF_SB_DATA. */
static const char *const scratch_dirs[] = {"/tmp", "/dev/shm", KF_SB_HOME};

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Open directory `name` under dirfd as a stream, refusing a symlink and a
 * directory of another file system than `dev` (when check_dev). A directory
 * of ours that we can't list, enter or unlink in gets the owner's rwx bits
 * first (its contents are about to go anyway). */
static int open_dir(int dirfd, const char *name, bool check_dev, dev_t dev, DIR **out) {
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
        if (fchmodat(dirfd, name, S_IRWXU, AT_SYMLINK_NOFOLLOW) < 0)
            return -EACCES;
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return -errno;
    struct stat st;
    int r = 0;
    if (fstat(fd, &st) < 0)
        r = -errno;
    else if (check_dev && st.st_dev != dev)
        r = -EXDEV;
    else if (st.st_uid == geteuid() && (st.st_mode & S_IRWXU) != S_IRWXU &&
             fchmod(fd, (st.st_mode & 07777) | S_IRWXU) < 0)
        r = -errno;
    DIR *d = r < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (!r)
            r = -errno;
        close(fd);
        return r;
    }
    *out = d;
    return 0;
}

/* Remove one entry of dirfd: 0 gone, 1 a directory with something in it
 * (the caller descends), <0 an error. */
static int remove_entry(int dirfd, const char *name, unsigned char type) {
    bool dir = type == DT_DIR;
    for (int attempt = 0; attempt < 2; attempt++, dir = !dir) {
        if (unlinkat(dirfd, name, dir ? AT_REMOVEDIR : 0) == 0 || errno == ENOENT)
            return 0;
        if (dir && (errno == ENOTEMPTY || errno == EEXIST))
            return 1;
        /* Wrong guess (DT_UNKNOWN, or the type changed): try the other. */
        if (errno != (dir ? ENOTDIR : EISDIR))
            return -errno;
    }
    return -EIO;
}

int kf_sb_clear_dir(const char *dir, long long deadline_ms) {
    _cleanup_closedir_ DIR *d = NULL;
    int r = open_dir(AT_FDCWD, dir, false, 0, &d);
    if (r < 0)
        return r;
    struct stat st;
    if (fstat(dirfd(d), &st) < 0)
        return -errno;
    const dev_t dev = st.st_dev;

    /* One directory at a time: scan it, removing what can go; descend into
     * the first non-empty subdirectory; when a scan finds nothing left, climb
     * back to the parent (whose next scan removes the now empty child). A
     * scan that removed something is repeated, so an entry readdir skipped
     * while the directory changed under it is still found. */
    unsigned long depth = 0;
    for (;;) {
        bool seen = false, descended = false;
        for (;;) {
            errno = 0;
            struct dirent *e = readdir(d);
            if (!e) {
                if (errno)
                    return -errno;
                break;
            }
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            seen = true;
            if (now_ms() > deadline_ms)
                return -ETIMEDOUT;
            r = remove_entry(dirfd(d), e->d_name, e->d_type);
            if (r < 0)
                return r;
            if (r == 0)
                continue;
            DIR *sub;
            if ((r = open_dir(dirfd(d), e->d_name, true, dev, &sub)) < 0)
                return r;
            closedir(d);
            d = sub;
            depth++;
            descended = true;
            break;
        }
        if (descended)
            continue;
        if (seen) {
            rewinddir(d);
            continue;
        }
        if (depth == 0)
            return 0;
        DIR *up;
        if ((r = open_dir(dirfd(d), "..", true, dev, &up)) < 0)
            return r;
        closedir(d);
        d = up;
        depth--;
    }
}

int kf_sb_clear_scratch(void) {
    int first = 0;
    long long deadline = now_ms() + KF_SB_SCRATCH_TIMEOUT_MS;
    for (size_t i = 0; i < KF_ARRAY_SIZE(scratch_dirs); i++) {
        int r = kf_sb_clear_dir(scratch_dirs[i], deadline);
        if (r < 0) {
            kf_warn("clear %s: %s (the rest of it stays)", scratch_dirs[i], strerror(-r));
            if (!first)
                first = r;
        }
    }
    return first;
}
