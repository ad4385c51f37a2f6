/* main.c - kfleet-sandbox: build one session's sandbox and be its PID 1.
 *
 * The agent is multi-threaded and never forks itself into a sandbox; it
 * posix_spawn()s this single-threaded helper:
 *
 *   kfleet-sandbox --id ID --uid UID --gid GID --volume DIR --run-dir DIR
 *       [--rootfs DIR] [--tmp-size BYTES] [--home-size BYTES] [--nofile N]
 *       [--env K=V]... -- ARGV...
 *
 * Protocol on the helper's stdio:
 *   fd 0  pipe from the agent. The helper reads ONE byte before doing
 *         anything; in between the agent puts the helper's pid into the
 *         session's cgroup, so every process of the session starts in it.
 *         EOF instead of the byte: exit 1, nothing built.
 *   fd 1  pipe to the agent. Exactly one line:
 *           ok <PID1_HOST_PID>\n      sandbox built and the kernel exec'ed
 *           error <step>: <strerror>\n
 *         then the helper exits (0 / 1). PID 1 keeps running, reparented to
 *         the agent (a child subreaper) or to init.
 *   fd 2  log. PID 1 keeps it only until the sandbox is built; from then on
 *         its and the kernel's stdout/stderr go to /run/kernel/kernel.log and
 *         stdin is /dev/null, so no agent pipe stays open in the session.
 *
 * Setup sequence:
 *   1. close every fd but 0, 1, 2; parse the arguments (reported after 2.)
 *   2. read the go byte from fd 0
 *   3. unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC)
 *   4. make / MS_REC|MS_PRIVATE before any mount, so nothing propagates back
 *      to the host
 *   5. unshare(CLONE_NEWPID) + fork: the child is PID 1 of the session; the
 *      outer process only waits for PID 1's report and relays it on fd 1
 *   6. in PID 1 (signals blocked, signalfd ready, so no SIGCHLD is lost):
 *      a. unshare(CLONE_NEWNS) once more: pivot_root moves the root of every
 *         process of a mount namespace, and the outer process (still
 *         relaying the report, in the parent pid namespace) must keep the
 *         host's view; RLIMIT_NOFILE/RLIMIT_CORE while still fully root
 *      b. sethostname(ID); bring `lo` up (nothing else exists in the netns)
 *      c. build the root under a tmpfs (mounts.c): the image's /usr, /lib*,
 *         /bin, /sbin as per-session read-only overlays (own inodes: no lock
 *         or inotify channel between sessions), generated /etc ro (etc.c:
 *         image directories as overlays, image files copied), /proc masked,
 *         minimal /dev, /tmp, /home/sandbox, /mnt/data, /run/kernel; no /sys
 *      d. pivot_root(".", "."), detach the old root, remount / read-only,
 *         chdir /home/sandbox
 *      e. stdin from /dev/null, stdout/stderr to kernel.log (O_APPEND,
 *         owned by UID)
 *      f. reduce PID 1 to CAP_KILL/SETUID/SETGID/SETPCAP, no_new_privs, not
 *         dumpable
 *      g. start the kernel (kernel.c: setsid, drop privileges, empty /tmp,
 *         /dev/shm and the home as the session's user (scratch.c), seccomp,
 *         exec; exec failure reported through a close-on-exec pipe); every
 *         restart (SIGUSR1, init.c) goes through the same steps
 *      h. report "ok" to the outer process, run the PID 1 loop (init.c)
 */
#include "sandbox.h"

#include "kf/cleanup.h"
#include "kf/log.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* PID 1 -> outer process: "ok", or an error line without the prefix. */
#define REPORT_OK "ok"

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* "<step>: <strerror>" for an error, one line (newlines in paths flattened). */
static void format_error(const kf_error *e, char *buf, size_t size) {
    snprintf(buf, size, "%s: %s", e->msg[0] ? e->msg : "unknown failure", strerror(-e->code));
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* The one line to the agent on fd 1. */
static void report_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report_line(const char *fmt, ...) {
    char line[KF_ERROR_MSG_MAX + 192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    if (write_all(STDOUT_FILENO, line, (size_t)n) < 0)
        kf_err("cannot write the report to the agent: %s", strerror(errno));
}

static int report_error(const kf_error *e) {
    char msg[KF_ERROR_MSG_MAX + 128];
    format_error(e, msg, sizeof(msg));
    kf_err("%s", msg);
    report_line("error %s", msg);
    return 1;
}

/* Point PID 1's stdio away from the agent's pipes: stdin /dev/null, stdout
 * and stderr kernel.log. The log is opened without following a symlink and
 * without blocking on a FIFO (the run dir is writable by the kernel's uid),
 * and must be a regular file. */
static int redirect_stdio(const kf_sb_config *cfg, kf_error *err) {
    _cleanup_close_ int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0)
        return kf_error_set(err, -errno, 0, "open /dev/null");
    _cleanup_close_ int log = open(KF_SB_KERNEL_LOG,
                                   O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
                                       O_NOCTTY | O_CLOEXEC,
                                   0600);
    if (log < 0)
        return kf_error_set(err, -errno, 0, "open %s", KF_SB_KERNEL_LOG);
    struct stat st;
    if (fstat(log, &st) < 0)
        return kf_error_set(err, -errno, 0, "stat %s", KF_SB_KERNEL_LOG);
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1)
        return kf_error_set(err, -EINVAL, 0, "%s is not a plain file", KF_SB_KERNEL_LOG);
    if (fchown(log, cfg->uid, cfg->gid) < 0)
        return kf_error_set(err, -errno, 0, "chown %s", KF_SB_KERNEL_LOG);
    int fl = fcntl(log, F_GETFL);
    if (fl < 0 || fcntl(log, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return kf_error_set(err, -errno, 0, "fcntl %s", KF_SB_KERNEL_LOG);
    if (dup2(null, STDIN_FILENO) < 0 || dup2(log, STDOUT_FILENO) < 0 ||
        dup2(log, STDERR_FILENO) < 0)
        return kf_error_set(err, -errno, 0, "redirect stdio to %s", KF_SB_KERNEL_LOG);
    return 0;
}

/* Everything PID 1 does before the kernel runs (steps 6a-6f). */
static int pid1_setup(const kf_sb_config *cfg, kf_error *err) {
    int r;
    /* A copy of the already private namespace: propagation stays private. */
    if (unshare(CLONE_NEWNS) < 0)
        return kf_error_set(err, -errno, 0, "unshare PID 1's mount namespace");
    if ((r = kf_sb_set_rlimits(cfg->nofile, err)) < 0)
        return r;
    if (sethostname(cfg->id, strlen(cfg->id)) < 0)
        return kf_error_set(err, -errno, 0, "sethostname %s", cfg->id);
    if ((r = kf_sb_loopback_up(err)) < 0)
        return r;
    if ((r = kf_sb_build_root(cfg, err)) < 0)
        return r;
    if ((r = redirect_stdio(cfg, err)) < 0)
        return r;
    return kf_sb_restrict_pid1(err);
}

/* PID 1's main: never returns. report_fd is the pipe to the outer process. */
static _Noreturn void pid1_main(const kf_sb_config *cfg, int report_fd, const sigset_t *mask) {
    kf_error e = {0};
    char msg[KF_ERROR_MSG_MAX + 128];

    /* Signals were blocked before the fork; take them through a signalfd
     * from here on, so a kernel exiting during setup is still reaped. */
    int sigfd = signalfd(-1, mask, SFD_CLOEXEC);
    if (sigfd < 0) {
        kf_error_set(&e, -errno, 0, "signalfd");
        goto fail;
    }
    if (pid1_setup(cfg, &e) < 0)
        goto fail;
    pid_t kernel;
    if (kf_sb_kernel_start(cfg, &kernel, &e) < 0)
        goto fail;
    kf_info("sandbox %s ready, kernel pid %d", cfg->id, (int)kernel);
    (void)write_all(report_fd, REPORT_OK, strlen(REPORT_OK));
    close(report_fd);
    _exit(kf_sb_init_loop(cfg, sigfd, kernel));

fail:
    format_error(&e, msg, sizeof(msg));
    (void)write_all(report_fd, msg, strlen(msg));
    _exit(1);
}

/* Read PID 1's report until it closes the pipe (after "ok", or by exiting). */
static size_t read_report(int fd, char *buf, size_t size) {
    size_t n = 0;
    while (n < size - 1) {
        ssize_t r = read(fd, buf + n, size - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

int main(int argc, char **argv) {
    /* 1. Nothing the agent leaked past posix_spawn reaches the session. */
    close_range(3, ~0U, 0);
    kf_log_set_ident("kfleet-sandbox");
    /* A vanished agent must give EPIPE on the report, not kill us silently. */
    signal(SIGPIPE, SIG_IGN);

    kf_sb_config cfg;
    kf_error perr = {0};
    int pr = kf_sb_parse_args(argc, argv, &cfg, &perr);

    /* 2. The go byte: the agent has put us in the session's cgroup. */
    char go;
    ssize_t n;
    do
        n = read(STDIN_FILENO, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) {
        kf_err("no go byte from the agent (%s), giving up", n == 0 ? "EOF" : strerror(errno));
        return 1;
    }
    if (pr < 0)
        return report_error(&perr);

    kf_error e = {0};
    /* 3. */
    if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC) < 0) {
        kf_error_set(&e, -errno, 0, "unshare mount/net/uts/ipc namespaces");
        return report_error(&e);
    }
    /* 4. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        kf_error_set(&e, -errno, 0, "make / private");
        return report_error(&e);
    }

    int rp[2];
    if (pipe2(rp, O_CLOEXEC) < 0) {
        kf_error_set(&e, -errno, 0, "report pipe");
        return report_error(&e);
    }
    /* Blocked in the outer process too, so PID 1 inherits the mask and
     * can't miss a signal sent before its signalfd exists. */
    sigset_t mask;
    sigemptyset(&mask);
    int sigs[] = {SIGCHLD, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGHUP};
    for (size_t i = 0; i < KF_ARRAY_SIZE(sigs); i++)
        sigaddset(&mask, sigs[i]);
    sigprocmask(SIG_BLOCK, &mask, NULL);

    /* 5. */
    if (unshare(CLONE_NEWPID) < 0) {
        kf_error_set(&e, -errno, 0, "unshare pid namespace");
        return report_error(&e);
    }
    pid_t pid1 = fork();
    if (pid1 < 0) {
        kf_error_set(&e, -errno, 0, "fork PID 1");
        return report_error(&e);
    }
    if (pid1 == 0) {
        close(rp[0]);
        pid1_main(&cfg, rp[1], &mask);
    }
    close(rp[1]);

    char rep[KF_ERROR_MSG_MAX + 128];
    read_report(rp[0], rep, sizeof(rep));
    close(rp[0]);
    /* _exit from here on: this process has a child in a pid namespace it
     * isn't in, where exit handlers that stop the world (a sanitizer's leak
     * checker) hang; there is nothing to flush (all output is write(2)). */
    if (strcmp(rep, REPORT_OK) == 0) {
        report_line("ok %d", (int)pid1);
        kf_sb_config_done(&cfg);
        _exit(0);
    }
    /* PID 1 failed (and is exiting) or died without a word. */
    int st = 0;
    while (waitpid(pid1, &st, 0) < 0 && errno == EINTR)
        ;
    if (!rep[0])
        snprintf(rep, sizeof(rep), "sandbox PID 1 died during setup (%s %d)",
                 WIFSIGNALED(st) ? "signal" : "status",
                 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    kf_err("%s", rep);
    report_line("error %s", rep);
    kf_sb_config_done(&cfg);
    _exit(1);
}
