/* init.c - the PID 1 loop of a session.
 *
 * PID 1 reaps every process of the session (orphans are reparented to it),
 * and acts on signals from the agent, read through a signalfd:
 *
 *   SIGCHLD                  reap; if the kernel died, note it and wait (the
 *                            agent sees that through its pidfd and asks for
 *                            a restart)
 *   SIGUSR1                  restart: kill everything else in the pid
 *                            namespace (daemons included), reap all, start a
 *                            fresh kernel with the same argv; the kernel's
 *                            process empties /tmp, /dev/shm and the home
 *                            before it execs (scratch.c: their tmpfs pages
 *                            stay charged to the session, so a kernel
 *                            OOM-killed after filling them would leave the
 *                            next one no memory)
 *   SIGUSR2                  interrupt: SIGINT to the kernel's process group
 *   SIGTERM, SIGINT, SIGHUP  tear down: kill everything, reap, exit 0
 *
 * The kernel's uid can't signal PID 1 (different uid, and PID 1 of a pid
 * namespace only gets signals it handles); only the agent (root, parent
 * namespace) can. Logs go to PID 1's stderr, i.e. kernel.log.
 */
#include "sandbox.h"

#include "kf/log.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

/* Reap what has exited, without blocking. Clears *kernel_pid if the kernel
 * is among them. */
static void reap_exited(pid_t *kernel_pid) {
    for (;;) {
        int st;
        pid_t p = waitpid(-1, &st, WNOHANG);
        if (p <= 0)
            return; /* 0: others still running; -1/ECHILD: none left */
        if (p == *kernel_pid) {
            if (WIFEXITED(st))
                kf_warn("kernel (pid %d) exited with status %d", (int)p, WEXITSTATUS(st));
            else
                kf_warn("kernel (pid %d) killed by signal %d", (int)p, WTERMSIG(st));
            *kernel_pid = 0;
        }
    }
}

/* Kill every other process of the pid namespace and wait until none is
 * left. From PID 1, kill(-1) reaches exactly the namespace; SIGKILL can't be
 * caught, and a fork racing with it fails (fatal signal pending), so the
 * blocking waitpid loop ends with ECHILD. Blocks while a process is stuck
 * in uninterruptible sleep. */
static void kill_all(pid_t *kernel_pid) {
    if (kill(-1, SIGKILL) < 0 && errno != ESRCH)
        kf_err("kill(-1, SIGKILL): %s", strerror(errno));
    for (;;) {
        pid_t p = waitpid(-1, NULL, 0);
        if (p < 0 && errno == EINTR)
            continue;
        if (p < 0)
            break;
    }
    *kernel_pid = 0;
}

int kf_sb_init_loop(const kf_sb_config *cfg, int sigfd, pid_t kernel_pid) {
    for (;;) {
        struct signalfd_siginfo si[16];
        ssize_t n = read(sigfd, si, sizeof(si));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            kf_err("read signalfd: %s", strerror(errno));
            kill_all(&kernel_pid);
            return 1;
        }
        for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++) {
            switch (si[i].ssi_signo) {
            case SIGCHLD:
                reap_exited(&kernel_pid);
                break;
            case SIGUSR1: {
                kf_info("restart requested");
                kill_all(&kernel_pid);
                kf_error e = {0};
                if (kf_sb_kernel_start(cfg, &kernel_pid, &e) < 0)
                    kf_err("%s: %s", e.msg, strerror(-e.code));
                else
                    kf_info("kernel restarted, pid %d", (int)kernel_pid);
                break;
            }
            case SIGUSR2:
                /* The kernel called setsid: its pgid is its pid. */
                if (kernel_pid > 0 && kill(-kernel_pid, SIGINT) < 0)
                    kf_warn("interrupt kernel: %s", strerror(errno));
                break;
            case SIGTERM:
            case SIGINT:
            case SIGHUP:
                kf_info("teardown (signal %u)", si[i].ssi_signo);
                kill_all(&kernel_pid);
                return 0;
            default:
                break;
            }
        }
    }
}
