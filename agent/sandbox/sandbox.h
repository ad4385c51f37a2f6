/* sandbox.h - internal interface between the files of kfleet-sandbox.
 *
 * kfleet-sandbox is the small single-threaded helper the agent spawns to
 * build one session's sandbox and to be its PID 1 (see main.c for the setup
 * sequence and the protocol with the agent). Each .c file owns one step:
 *
 *   args.c     command line -> struct kf_sb_config (pure, no I/O)
 *   mounts.c   the new root: system overlays, tmpfs dirs, volume, pivot_root
 *   procdev.c  /proc (masked) and the minimal /dev
 *   etc.c      the generated, read-only /etc
 *   netlo.c    bringing `lo` up in the empty network namespace
 *   privs.c    capabilities, uid/gid, rlimits (kernel and PID 1)
 *   seccomp.c  the syscall filter the kernel runs under
 *   kernel.c   starting the kernel process (fork, drop, exec, report)
 *   scratch.c  emptying /tmp, /dev/shm and the home between two kernels
 *   init.c     the PID 1 loop: reap, restart, interrupt, tear down
 *
 * Every function returns 0 or a negative errno and, where it takes a
 * `kf_error *err`, fills it with the step that failed (no strerror text:
 * main.c appends that once, when it writes the `error` line).
 */
#ifndef KF_SANDBOX_H
#define KF_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kf/error.h"

#define KF_SB_ID_MAX 63
#define KF_SB_MAX_ENV 256       /* --env entries, on top of the defaults */
#define KF_SB_MAX_ARGV 256      /* words after `--` */
#define KF_SB_MAX_ARG_LEN 4096  /* any single argument */
#define KF_SB_DEFAULT_TMP_SIZE (64ULL << 20)
#define KF_SB_DEFAULT_HOME_SIZE (64ULL << 20)
#define KF_SB_DEFAULT_NOFILE 1024UL
#define KF_SB_MAX_NOFILE 1048576UL /* the kernel's default fs.nr_open */

/* Fixed paths inside the sandbox. */
#define KF_SB_HOME "/home/sandbox"
#define KF_SB_DATA "/mnt/data"
#define KF_SB_RUN "/run/kernel"
#define KF_SB_KERNEL_LOG KF_SB_RUN "/kernel.log"

/* Where the new root is assembled before pivot_root. A tmpfs is mounted over
 * the host path *inside our private mount namespace only*: it shadows nothing
 * any other process sees and creates nothing on the host, so nothing can
 * leak when the session ends. All sources are held as O_PATH fds opened
 * before the staging mount, so a source under /tmp is still reachable. */
#define KF_SB_STAGING "/tmp"

typedef struct kf_sb_config {
    const char *id;
    uid_t uid;
    gid_t gid;
    const char *volume;
    const char *run_dir;
    const char *rootfs;
    uint64_t tmp_size;
    uint64_t home_size;
    unsigned long nofile;
    /* The kernel's whole environment, NULL-terminated: the defaults with any
     * --env K=V replacing a default of the same K or appended. The array is
     * owned (kf_sb_config_done frees it); the strings point into argv or
     * static storage. */
    char **envp;
    /* The kernel command (points into main's argv), NULL-terminated. */
    char **argv;
} kf_sb_config;

/* args.c */

/* kf_sb_parse_args - parse the command line (see main.c for the grammar) into
 * *cfg. Pure: no I/O, nothing but memory allocated. On failure returns a
 * negative errno with err saying which argument is wrong; *cfg then needs no
 * kf_sb_config_done. Pointers in *cfg point into argv, which must outlive it. */
int kf_sb_parse_args(int argc, char **argv, kf_sb_config *cfg, kf_error *err);

/* kf_sb_config_done - free what kf_sb_parse_args allocated. NULL-safe. */
void kf_sb_config_done(kf_sb_config *cfg);

/* kf_sb_valid_id - true if id matches [a-z0-9-]{1,63}. */
bool kf_sb_valid_id(const char *id);

/* mounts.c */

/* kf_sb_build_root - in the (already private) mount namespace, assemble the
 * whole sandbox tree under KF_SB_STAGING, pivot into it, make / read-only and
 * chdir to the home. Must run as root in the new pid namespace (for /proc).
 * On failure the namespace is left half-built: the caller exits, which
 * throws it away. */
int kf_sb_build_root(const kf_sb_config *cfg, kf_error *err);

/* Mount helpers shared by mounts.c, procdev.c and etc.c. `path` is a full
 * (staging) path; `shown` is the in-sandbox path used in error messages. */
int kf_sb_bind(const char *src, const char *path, const char *shown, unsigned long flags,
               kf_error *err);
int kf_sb_bind_fd(int src_fd, const char *path, const char *shown, unsigned long flags,
                  kf_error *err);
/* kf_sb_overlay_fd - mount at path a read-only overlay showing the directory
 * src_fd (an O_PATH fd) stacked over the empty directory empty_fd: the same
 * files as a read-only bind, but inodes of this mount's own, so locks and
 * inotify watches on them are not shared with other sessions. `flags` are
 * added to MS_RDONLY. Both fds are only needed during the call. */
int kf_sb_overlay_fd(int src_fd, int empty_fd, const char *path, const char *shown,
                     unsigned long flags, kf_error *err);
/* kf_sb_overlay_opts - the mount options "lowerdir=LAYER:BELOW" into buf.
 * Pure. -EINVAL if a path is empty or holds ',', ':' or '\' (the option
 * syntax would need escapes; we refuse instead), -ENAMETOOLONG if it doesn't
 * fit. */
int kf_sb_overlay_opts(char *buf, size_t size, const char *layer, const char *below);
int kf_sb_tmpfs(const char *path, const char *shown, unsigned long flags, const char *opts,
                kf_error *err);
int kf_sb_remount(const char *path, const char *shown, unsigned long flags, kf_error *err);
/* kf_sb_make_target - create an empty directory or file at path to mount on
 * (EEXIST is fine). */
int kf_sb_make_target(const char *path, const char *shown, bool dir, kf_error *err);
/* kf_sb_staged - staging path for in-sandbox path `rel` ("/usr" ->
 * "/tmp/usr") into buf; -ENAMETOOLONG if it doesn't fit. */
int kf_sb_staged(char *buf, size_t size, const char *rel);

/* procdev.c */

/* kf_sb_mount_proc - fresh procfs at /proc with the kernel-information files
 * masked and the writable-looking subtrees read-only. */
int kf_sb_mount_proc(kf_error *err);
/* kf_sb_mount_dev - tmpfs /dev with null, zero, full, random, urandom bound
 * from the host, the fd symlinks and a /dev/shm of `shm_size` bytes. */
int kf_sb_mount_dev(uint64_t shm_size, kf_error *err);

/* etc.c */

/* kf_sb_mount_etc - tmpfs /etc holding the generated passwd, group, hosts,
 * hostname, resolv.conf, nsswitch.conf and the harmless entries of the
 * image's /etc (rootfs_fd): directories as read-only overlays over empty_fd,
 * files copied, symlinks recreated; then made read-only. */
int kf_sb_mount_etc(const kf_sb_config *cfg, int rootfs_fd, int empty_fd, kf_error *err);

/* netlo.c */

/* kf_sb_loopback_up - set IFF_UP on `lo` of the current network namespace. */
int kf_sb_loopback_up(kf_error *err);

/* privs.c */

/* kf_sb_set_rlimits - RLIMIT_NOFILE = nofile (soft and hard), RLIMIT_CORE = 0.
 * Called once as full root in PID 1 (raising a hard limit needs
 * CAP_SYS_RESOURCE, which PID 1 then drops) and again in each kernel, where
 * it can only lower or keep. */
int kf_sb_set_rlimits(unsigned long nofile, kf_error *err);

/* kf_sb_restrict_pid1 - keep only the capabilities PID 1 needs to start and
 * kill kernels (CAP_KILL, CAP_SETUID, CAP_SETGID, CAP_SETPCAP), in both the
 * bounding and the effective/permitted sets; no_new_privs; not dumpable. */
int kf_sb_restrict_pid1(kf_error *err);

/* kf_sb_drop_to_user - in a fresh kernel process: empty the bounding and
 * ambient sets, drop supplementary groups, become uid:gid for good, set the
 * rlimits and no_new_privs, then verify that no capability is left. */
int kf_sb_drop_to_user(const kf_sb_config *cfg, kf_error *err);

/* seccomp.c */

/* kf_sb_seccomp_load - build and install the kernel's syscall filter on the
 * calling thread. Needs no_new_privs (or CAP_SYS_ADMIN). */
int kf_sb_seccomp_load(kf_error *err);

/* kernel.c */

/* kf_sb_kernel_start - fork the kernel from PID 1 and exec cfg->argv in it
 * after dropping every privilege and emptying the scratch dirs (at most
 * KF_SB_SCRATCH_TIMEOUT_MS). Blocks until the exec has either happened
 * (returns 0, *pid set) or failed (returns <0, err says which step; the child
 * has been reaped). PID 1's fds 0/1/2 (/dev/null, kernel.log, kernel.log)
 * become the kernel's; every other fd is closed in the child. */
int kf_sb_kernel_start(const kf_sb_config *cfg, pid_t *pid, kf_error *err);

/* scratch.c */

/* kf_sb_clear_scratch - remove everything in /tmp, /dev/shm and the home
 * (not the mount points, never /mnt/data), so tmpfs pages a dead kernel
 * wrote stop counting against the session's memory limit. Called in each new
 * kernel process after kf_sb_drop_to_user and before exec: it needs and must
 * have no privilege. Stops after KF_SB_SCRATCH_TIMEOUT_MS in all. Returns 0,
 * or the first error (each one is logged; what was left stays). */
#define KF_SB_SCRATCH_TIMEOUT_MS 10000
int kf_sb_clear_scratch(void);

/* kf_sb_clear_dir - remove everything below the directory `dir`, keeping
 * `dir` itself. Never follows a symlink and never leaves dir's file system.
 * Directories of the caller's uid it can't read or write into are chmod'ed
 * 0700 first. Holds two fds whatever the depth (it climbs back with ".."),
 * so it must be the only one changing the tree. Returns 0, -ETIMEDOUT once
 * CLOCK_MONOTONIC passes deadline_ms (in ms), or the first error that
 * stopped it; what is left stays as it is. */
int kf_sb_clear_dir(const char *dir, long long deadline_ms);

/* init.c */

/* kf_sb_init_loop - PID 1's life after setup: sigfd is a signalfd for the
 * blocked SIGCHLD, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGHUP; kernel_pid the
 * running kernel. Returns only to exit (0 after a requested teardown). */
int kf_sb_init_loop(const kf_sb_config *cfg, int sigfd, pid_t kernel_pid);

#endif
