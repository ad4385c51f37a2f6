/* sandbox_spawn.c - the agent's side of a sandbox's life: prepare the
 * session's host resources (uid, volume, socket tmpfs, cgroup, connection
 * file), spawn the kfleet-sandbox helper (posix_spawn: this process is
 * multi-threaded and must never fork into a sandbox), connect to the kernel,
 * restart it, stop it while keeping its volume (a session being moved),
 * start it again on that kept volume, and tear everything down.
 *
 * Host layout per sandbox: STATE/sb/<sbid>/{session.json, volume.img,
 * data/ (volume mount), run/ (1 MiB tmpfs: conn.json + kernel sockets)}.
 */
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"
#include "metrics.h"
#include "volume.h"

extern char **environ;

#define RUN_TMPFS_BYTES (1024 * 1024)

void kf_sandbox_paths(const kf_agent *a, const kf_session *s, const char *leaf, char *out,
                      size_t size) {
    int n = snprintf(out, size, "%s/sb/%s%s%s", a->cfg.state_dir, s->sbid, leaf && *leaf ? "/" : "",
                     leaf ? leaf : "");
    if (n < 0 || (size_t)n >= size)
        out[0] = '\0'; /* cannot happen: state_dir is limited to 72 bytes */
}

static void cgroup_name(const kf_session *s, char *out, size_t size) {
    snprintf(out, size, "kfleet/%s", s->sbid);
}

uint64_t kf_proc_start_time(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p || p[1] == '\0')
        return 0;
    if (p[2] == 'Z' || p[2] == 'X')
        return 0; /* a zombie is not alive */
    /* field 3 is the state right after ") "; start time is field 22 */
    p += 2;
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p)
            p++;
    }
    return p ? strtoull(p, NULL, 10) : 0;
}

int kf_sandbox_alive(kf_session *s) {
    return s->pid1 > 0 && s->pid1_start != 0 && kf_proc_start_time(s->pid1) == s->pid1_start;
}

/* The kernel is PID 1's only child; after a restart, wait for a new one. */
static int find_kernel_pid(pid_t pid1, pid_t exclude, int64_t deadline_ms, pid_t *out) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid1, (int)pid1);
    for (;;) {
        _cleanup_free_ char *buf = NULL;
        if (kf_read_file(path, 65536, &buf, NULL) < 0)
            return -ESRCH;
        char *save = NULL;
        for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
            pid_t p = (pid_t)atoi(tok);
            if (p > 0 && p != exclude && kf_proc_start_time(p) != 0) {
                *out = p;
                return 0;
            }
        }
        if (kf_mono_ms() > deadline_ms)
            return -ETIMEDOUT;
        usleep(2000);
    }
}

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int kf_sandbox_connect(kf_agent *a, kf_session *s, int64_t deadline_ms, kf_error *err) {
    pid_t kpid;
    int r = find_kernel_pid(s->pid1, s->kernel_pid, deadline_ms, &kpid);
    if (r < 0)
        return kf_error_set(err, r, KF_ST_UNAVAILABLE, "kernel process of %s did not appear", s->sbid);
    if (s->kernel_pidfd >= 0)
        close(s->kernel_pidfd);
    s->kernel_pid = kpid;
    s->kernel_pidfd = pidfd_open_(kpid);
    if (s->kernel_pidfd < 0)
        return kf_error_set(err, -errno, KF_ST_UNAVAILABLE, "pidfd_open(kernel %d)", (int)kpid);
    kf_kernel_conn_close(s->conn);
    s->conn = NULL;
    char prefix[256];
    kf_sandbox_paths(a, s, "run/k", prefix, sizeof(prefix));
    r = kf_kernel_conn_open(&s->conn, a->zmq_ctx, prefix, s->key, s->uid, deadline_ms, err);
    if (r < 0)
        return kf_error_wrap(err, "connecting to the kernel of %s", s->sbid);
    r = kf_kernel_wait_ready(s->conn, deadline_ms, s->kernel_pidfd, err);
    if (r < 0)
        return kf_error_wrap(err, "kernel of %s not ready", s->sbid);
    return 0;
}

/* Spawns the helper; returns PID 1's host pid via *pid1. */
static int spawn_helper(kf_agent *a, kf_session *s, pid_t *pid1, kf_error *err) {
    char id_arg[32], uid_arg[16], gid_arg[16], vol[256], run[256];
    snprintf(id_arg, sizeof(id_arg), "%s", s->sbid);
    snprintf(uid_arg, sizeof(uid_arg), "%u", (unsigned)s->uid);
    snprintf(gid_arg, sizeof(gid_arg), "%u", (unsigned)s->gid);
    kf_sandbox_paths(a, s, "data", vol, sizeof(vol));
    kf_sandbox_paths(a, s, "run", run, sizeof(run));
    char *argv[] = {
        a->cfg.sandbox_bin, "--id", id_arg, "--uid", uid_arg, "--gid", gid_arg,
        "--volume", vol, "--run-dir", run, "--rootfs", a->cfg.rootfs,
        /* debugpy (imported by ipykernel) warns on every start otherwise */
        "--env", "PYDEVD_DISABLE_FILE_VALIDATION=1", "--",
        a->cfg.python, "-m", "ipykernel_launcher", "-f", "/run/kernel/conn.json", NULL,
    };
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0)
        return kf_error_set(err, -errno, 0, "pipe");
    if (pipe2(out, O_CLOEXEC) < 0) {
        int e = -errno;
        close(in[0]);
        close(in[1]);
        return kf_error_set(err, e, 0, "pipe");
    }
    _cleanup_close_ int go_w = in[1], status_r = out[0];
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    sigset_t all;
    sigfillset(&all);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    pid_t helper;
    int r = posix_spawn(&helper, a->cfg.sandbox_bin, &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(in[0]);
    close(out[1]);
    if (r != 0)
        return kf_error_set(err, -r, KF_ST_INTERNAL, "cannot run %s", a->cfg.sandbox_bin);

    char cg[64];
    cgroup_name(s, cg, sizeof(cg));
    r = kf_cgroup_attach(cg, helper, err);
    if (r == 0 && write(go_w, "g", 1) != 1)
        r = kf_error_set(err, -errno, 0, "cannot start the sandbox helper");
    if (r < 0) {
        kill(helper, SIGKILL);
        waitpid(helper, NULL, 0);
        return r;
    }
    /* One status line, then the helper exits. */
    char line[512];
    size_t n = 0;
    int64_t deadline = kf_mono_ms() + a->cfg.start_timeout_ms;
    while (n < sizeof(line) - 1) {
        struct pollfd pfd = {.fd = status_r, .events = POLLIN};
        int64_t left = deadline - kf_mono_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        ssize_t k = read(status_r, line + n, sizeof(line) - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        if (memchr(line, '\n', n))
            break;
    }
    line[n] = '\0';
    char *nl = strchr(line, '\n');
    if (nl)
        *nl = '\0';
    int wst;
    if (!nl)
        kill(helper, SIGKILL);
    waitpid(helper, &wst, 0);
    if (strncmp(line, "ok ", 3) != 0)
        return kf_error_set(err, -EIO, KF_ST_INTERNAL, "sandbox set-up failed: %s",
                            n ? (strncmp(line, "error ", 6) ? line : line + 6)
                              : "helper died without a word");
    *pid1 = (pid_t)atoi(line + 3);
    return *pid1 > 1 ? 0 : kf_error_set(err, -EIO, 0, "sandbox helper sent a bad pid");
}

/* Everything after the volume: the socket tmpfs, the connection file, the
 * cgroup, the helper, the kernel. The volume is mounted on data/ already.
 * On failure the caller tears down (destroy or stop). */
static int boot(kf_agent *a, kf_session *s, kf_error *err) {
    char run[256], conn[256], cg[64];
    kf_sandbox_paths(a, s, "run", run, sizeof(run));
    kf_sandbox_paths(a, s, "run/conn.json", conn, sizeof(conn));
    cgroup_name(s, cg, sizeof(cg));
    int r;
    if ((r = kf_tmpfs_mount(run, RUN_TMPFS_BYTES, s->uid, s->gid, 0700, err)) < 0)
        return r;
    if ((r = kf_kernel_key_new(s->key)) < 0 ||
        (r = kf_kernel_conn_file_write(conn, "/run/kernel/k", s->key, s->uid, s->gid, err)) < 0)
        return r;
    kf_cg_limits cl = {.memory_bytes = s->limits.memory_bytes, .cpu_millis = s->limits.cpu_millis,
                       .pids = s->limits.pids};
    if ((r = kf_cgroup_create(cg, &cl, err)) < 0)
        return r;
    if ((r = spawn_helper(a, s, &s->pid1, err)) < 0)
        return r;
    s->pid1_start = kf_proc_start_time(s->pid1);
    {
        /* PID 1 must outlive any OOM kill in its cgroup: it is the reaper. */
        char p[64];
        snprintf(p, sizeof(p), "/proc/%d/oom_score_adj", (int)s->pid1);
        kf_write_string(p, "-1000");
    }
    s->kernel_pid = 0;
    return kf_sandbox_connect(a, s, kf_mono_ms() + a->cfg.start_timeout_ms, err);
}

int kf_sandbox_start(kf_agent *a, kf_session *s, kf_error *err) {
    char dir[256], img[256], data[256], run[256];
    kf_sandbox_paths(a, s, NULL, dir, sizeof(dir));
    kf_sandbox_paths(a, s, "volume.img", img, sizeof(img));
    kf_sandbox_paths(a, s, "data", data, sizeof(data));
    kf_sandbox_paths(a, s, "run", run, sizeof(run));
    int r;
    if ((r = kf_mkdir_p(dir, 0700)) < 0 || mkdir(data, 0755) < 0 || mkdir(run, 0700) < 0) {
        r = r < 0 ? r : -errno;
        kf_error_set(err, r, 0, "cannot create %s", dir);
        goto fail;
    }
    if ((r = kf_volume_create(img, s->limits.disk_bytes, s->limits.disk_inodes, s->uid, s->gid, err)) < 0 ||
        (r = kf_volume_mount(img, data, err)) < 0)
        goto fail;
    {
        /* mkfs's lost+found is noise in the user's /mnt/data; nothing of
         * the user's is on the fresh volume yet. */
        char lf[300];
        snprintf(lf, sizeof(lf), "%s/lost+found", data);
        rmdir(lf);
    }
    if ((r = boot(a, s, err)) < 0)
        goto fail;
    return 0;
fail:
    kf_error_wrap(err, "starting sandbox %s", s->sbid);
    kf_sandbox_destroy(a, s);
    return r;
}

int kf_sandbox_start_kept(kf_agent *a, kf_session *s, kf_error *err) {
    char img[256], data[256], run[256];
    kf_sandbox_paths(a, s, "volume.img", img, sizeof(img));
    kf_sandbox_paths(a, s, "data", data, sizeof(data));
    kf_sandbox_paths(a, s, "run", run, sizeof(run));
    int r = 0;
    if ((mkdir(data, 0755) < 0 && errno != EEXIST) || (mkdir(run, 0700) < 0 && errno != EEXIST)) {
        r = kf_error_set(err, -errno, 0, "cannot create the mount points of %s", s->sbid);
        goto fail;
    }
    if (!kf_volume_is_mounted(data) && (r = kf_volume_mount(img, data, err)) < 0)
        goto fail;
    if ((r = boot(a, s, err)) < 0)
        goto fail;
    return 0;
fail:
    kf_error_wrap(err, "starting sandbox %s on its kept volume", s->sbid);
    kf_sandbox_stop(a, s);
    return r;
}

int kf_sandbox_restart_kernel(kf_agent *a, kf_session *s, kf_error *err) {
    if (!kf_sandbox_alive(s))
        return kf_error_set(err, -ESRCH, KF_ST_UNAVAILABLE, "the sandbox of this session is gone");
    kf_kernel_conn_close(s->conn);
    s->conn = NULL;
    /* Remove the old kernel's socket files first: the agent connects
     * through the inode it checked, so a stale file left by a killed kernel
     * must not be found in place of the one the new kernel binds. */
    for (int port = 1; port <= 5; port++) {
        char sock[300], leaf[16];
        snprintf(leaf, sizeof(leaf), "run/k-%d", port);
        kf_sandbox_paths(a, s, leaf, sock, sizeof(sock));
        unlink(sock);
    }
    if (kill(s->pid1, SIGUSR1) < 0)
        return kf_error_set(err, -errno, KF_ST_UNAVAILABLE, "cannot signal the sandbox");
    s->kernel_restarts++;
    kf_agent_metrics_kernel_restart(a->metrics);
    /* Wait for the old kernel to be gone before looking for the new one. */
    if (s->kernel_pidfd >= 0) {
        struct pollfd pfd = {.fd = s->kernel_pidfd, .events = POLLIN};
        poll(&pfd, 1, 5000);
    }
    return kf_sandbox_connect(a, s, kf_mono_ms() + a->cfg.start_timeout_ms, err);
}

void kf_sandbox_stop(kf_agent *a, kf_session *s) {
    char data[256], run[256], cg[64];
    kf_sandbox_paths(a, s, "data", data, sizeof(data));
    kf_sandbox_paths(a, s, "run", run, sizeof(run));
    cgroup_name(s, cg, sizeof(cg));
    kf_kernel_conn_close(s->conn);
    s->conn = NULL;
    if (s->kernel_pidfd >= 0)
        close(s->kernel_pidfd);
    s->kernel_pidfd = -1;
    if (kf_sandbox_alive(s)) {
        kill(s->pid1, SIGKILL);
        /* Our child unless the agent restarted since; reap it if so. */
        for (int i = 0; i < 200; i++) {
            pid_t w = waitpid(s->pid1, NULL, WNOHANG);
            if (w == s->pid1 || (w < 0 && errno == ECHILD && kf_proc_start_time(s->pid1) == 0))
                break;
            usleep(5000);
        }
    }
    s->pid1 = 0;
    s->pid1_start = 0;
    s->kernel_pid = 0;
    kf_error e = {0};
    if (kf_cgroup_destroy(cg, &e) < 0)
        kf_warn("teardown %s: %s", s->sbid, e.msg);
    kf_error_clear(&e);
    if (kf_volume_umount(run, &e) < 0)
        kf_warn("teardown %s: %s", s->sbid, e.msg);
    kf_error_clear(&e);
    if (kf_volume_umount(data, &e) < 0)
        kf_warn("teardown %s: %s", s->sbid, e.msg);
}

void kf_sandbox_destroy(kf_agent *a, kf_session *s) {
    char dir[256], img[256];
    kf_sandbox_paths(a, s, NULL, dir, sizeof(dir));
    kf_sandbox_paths(a, s, "volume.img", img, sizeof(img));
    kf_sandbox_stop(a, s);
    unlink(img);
    kf_rm_rf(dir);
}
