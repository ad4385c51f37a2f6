/* procdev.c - the sandbox's /proc and /dev.
 *
 * /proc is a fresh procfs of the session's pid namespace (so only the
 * session's pids are visible), with the files that leak kernel memory,
 * addresses or keys masked by /dev/null and the subtrees that look writable
 * to root (/proc/sys, /proc/irq, /proc/bus, /proc/fs) bound read-only.
 *
 * /dev is a tmpfs holding only null, zero, full, random and urandom (made
 * per session with mknod, the host's numbers), the fd/stdin/stdout/stderr
 * symlinks and a
 * /dev/shm tmpfs. No tty, no ptmx, no block device; then read-only.
 */
#include "sandbox.h"

#include "kf/cleanup.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* Files hiding kernel internals: memory image, keyrings of other users,
 * timers/scheduler state of the whole machine, symbol addresses, and the
 * magic SysRq trigger. Masked where they exist. */
static const char *const proc_masked[] = {
    "/proc/kcore",      "/proc/keys",     "/proc/timer_list", "/proc/sched_debug",
    "/proc/kallsyms",   "/proc/sysrq-trigger", "/proc/latency_stats",
};
/* Subtrees with writable knobs, made read-only by a bind onto themselves. */
static const char *const proc_readonly[] = {"/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"};
/* Hardware directories replaced by an empty read-only tmpfs. */
static const char *const proc_emptied[] = {"/proc/acpi", "/proc/scsi"};

static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom"};

#define PROC_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)

int kf_sb_mount_proc(kf_error *err) {
    char path[PATH_MAX];
    int r;
    kf_sb_staged(path, sizeof(path), "/proc");
    if (mount("proc", path, "proc", PROC_FLAGS, NULL) < 0)
        return kf_error_set(err, -errno, 0, "mount proc on /proc");

    /* The session's own /dev/null (kf_sb_mount_dev ran first): a bind of
     * the host's would be an inode shared with every other session. */
    char devnull[PATH_MAX];
    kf_sb_staged(devnull, sizeof(devnull), "/dev/null");
    struct stat st;
    for (size_t i = 0; i < KF_ARRAY_SIZE(proc_masked); i++) {
        kf_sb_staged(path, sizeof(path), proc_masked[i]);
        if (lstat(path, &st) < 0)
            continue; /* not in this kernel */
        /* Reads give nothing, writes are discarded. */
        if ((r = kf_sb_bind(devnull, path, proc_masked[i], MS_RDONLY | MS_NOSUID | MS_NOEXEC,
                            err)) < 0)
            return r;
    }
    for (size_t i = 0; i < KF_ARRAY_SIZE(proc_readonly); i++) {
        kf_sb_staged(path, sizeof(path), proc_readonly[i]);
        if (lstat(path, &st) < 0)
            continue;
        if ((r = kf_sb_bind(path, path, proc_readonly[i], MS_RDONLY | PROC_FLAGS, err)) < 0)
            return r;
    }
    for (size_t i = 0; i < KF_ARRAY_SIZE(proc_emptied); i++) {
        kf_sb_staged(path, sizeof(path), proc_emptied[i]);
        if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        if ((r = kf_sb_tmpfs(path, proc_emptied[i], MS_RDONLY | PROC_FLAGS, "size=4k,mode=0555",
                             err)) < 0)
            return r;
    }
    return 0;
}

int kf_sb_mount_dev(uint64_t shm_size, kf_error *err) {
    char path[PATH_MAX], shown[64], opts[96];
    int r;

    /* The device nodes are made here, per session (mknod while PID 1 still
     * has CAP_MKNOD): binds of the host's nodes would share their inodes,
     * and flock on a shared inode is a channel between sessions. So this
     * tmpfs allows devices; it is made read-only below and nobody in the
     * session can mknod, so these five stay the only ones. */
    kf_sb_staged(path, sizeof(path), "/dev");
    if ((r = kf_sb_tmpfs(path, "/dev", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755", err)) < 0)
        return r;

    for (size_t i = 0; i < KF_ARRAY_SIZE(dev_nodes); i++) {
        char host[32];
        struct stat hst;
        snprintf(shown, sizeof(shown), "/dev/%s", dev_nodes[i]);
        snprintf(host, sizeof(host), "/dev/%s", dev_nodes[i]);
        kf_sb_staged(path, sizeof(path), shown);
        if (stat(host, &hst) < 0 || !S_ISCHR(hst.st_mode))
            return kf_error_set(err, -ENODEV, 0, "host %s is not a character device", host);
        if (mknod(path, S_IFCHR | 0666, hst.st_rdev) < 0 || chmod(path, 0666) < 0)
            return kf_error_set(err, -errno, 0, "mknod %s", shown);
    }

    static const char *const links[][2] = {
        {"/dev/fd", "/proc/self/fd"},
        {"/dev/stdin", "/proc/self/fd/0"},
        {"/dev/stdout", "/proc/self/fd/1"},
        {"/dev/stderr", "/proc/self/fd/2"},
    };
    for (size_t i = 0; i < KF_ARRAY_SIZE(links); i++) {
        kf_sb_staged(path, sizeof(path), links[i][0]);
        if (symlink(links[i][1], path) < 0)
            return kf_error_set(err, -errno, 0, "symlink %s", links[i][0]);
    }

    kf_sb_staged(path, sizeof(path), "/dev/shm");
    if ((r = kf_sb_make_target(path, "/dev/shm", true, err)) < 0)
        return r;
    snprintf(opts, sizeof(opts), "size=%llu,mode=1777", (unsigned long long)shm_size);
    if ((r = kf_sb_tmpfs(path, "/dev/shm", MS_NOSUID | MS_NODEV, opts, err)) < 0)
        return r;

    kf_sb_staged(path, sizeof(path), "/dev");
    return kf_sb_remount(path, "/dev", MS_RDONLY | MS_NOSUID | MS_NOEXEC, err);
}
