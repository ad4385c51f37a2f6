/* kernel.c - starting the kernel process, a child of PID 1.
 *
 * The kernel is forked from PID 1 (never exec'ed in place) so that PID 1
 * survives it and can start a fresh one on request. In the child, in order:
 * default signal state, setsid (its pgid = its pid, for interrupts), stdio
 * from PID 1 (/dev/null, kernel.log), privileges dropped for good (privs.c),
 * the scratch dirs emptied as the session's user (scratch.c), the seccomp
 * filter, every other fd closed, execve. A close-on-exec pipe
 * tells the parent whether the exec happened: EOF with no data means it did;
 * otherwise the child wrote which step failed and why.
 */
#include "sandbox.h"

#include "kf/cleanup.h"
#include "kf/log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Report a failed step to the parent and die: the negative errno as an int,
 * then the message. One write, far below PIPE_BUF, so it arrives whole. */
static _Noreturn void child_fail(int status_fd, const kf_error *e) {
    struct {
        int code;
        char msg[KF_ERROR_MSG_MAX];
    } rep;
    rep.code = e->code;
    size_t len = strnlen(e->msg, sizeof(rep.msg));
    memcpy(rep.msg, e->msg, len);
    ssize_t w = write(status_fd, &rep, sizeof(rep.code) + len);
    (void)w;
    _exit(127);
}

/* Close every fd above stdio except `keep`. */
static void close_others(int keep) {
    if (keep > 3)
        close_range(3, (unsigned)keep - 1, 0);
    close_range((unsigned)keep + 1, ~0U, 0);
}

static _Noreturn void child_run(const kf_sb_config *cfg, int status_fd) {
    kf_error e = {0};

    /* PID 1 blocks these and ignores SIGPIPE: give the kernel a clean slate
     * (the mask and ignored signals survive execve). */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL); /* fails harmlessly for SIGKILL, SIGSTOP, 32, 33 */

    /* 0, 1, 2 are PID 1's /dev/null and kernel.log, inherited as they are;
     * the close-on-exec status pipe stays until execve; nothing else. */
    close_others(status_fd);

    if (setsid() < 0) {
        kf_error_set(&e, -errno, 0, "setsid");
        child_fail(status_fd, &e);
    }
    if (kf_sb_drop_to_user(cfg, &e) < 0)
        child_fail(status_fd, &e);
    /* Here, not in a process of its own: after a restart the agent takes
     * the new child of PID 1 for the kernel. Best effort: a kernel with a
     * fuller /tmp beats no kernel (errors are logged). Empty at the first
     * start, so nearly free then. */
    (void)kf_sb_clear_scratch();
    if (kf_sb_seccomp_load(&e) < 0)
        child_fail(status_fd, &e);
    /* libseccomp opened nothing we keep, but make sure: only 0-2 and the
     * close-on-exec status pipe reach execve. */
    close_others(status_fd);
    execve(cfg->argv[0], cfg->argv, cfg->envp);
    kf_error_set(&e, -errno, 0, "execve %s", cfg->argv[0]);
    child_fail(status_fd, &e);
}

int kf_sb_kernel_start(const kf_sb_config *cfg, pid_t *pid_out, kf_error *err) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return kf_error_set(err, -errno, 0, "status pipe for the kernel");
    _cleanup_close_ int rd = p[0];
    _cleanup_close_ int wr = p[1];

    pid_t pid = fork();
    if (pid < 0)
        return kf_error_set(err, -errno, 0, "fork the kernel");
    if (pid == 0) {
        close(rd);
        child_run(cfg, wr);
    }
    close(TAKE_FD(wr));

    struct {
        int code;
        char msg[KF_ERROR_MSG_MAX];
    } rep;
    ssize_t n;
    do
        n = read(rd, &rep, sizeof(rep) - 1);
    while (n < 0 && errno == EINTR);
    if (n == 0) {
        *pid_out = pid;
        return 0;
    }
    int code = -EIO;
    if (n >= (ssize_t)sizeof(rep.code)) {
        code = rep.code < 0 ? rep.code : -EIO;
        ((char *)&rep)[n] = '\0';
    } else {
        snprintf(rep.msg, sizeof(rep.msg), "short status from the kernel process");
    }
    /* The child exits right after writing; reap it here so the caller's
     * SIGCHLD handling never sees this pid as "the kernel". */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return kf_error_set(err, code, 0, "start kernel: %s", rep.msg);
}
