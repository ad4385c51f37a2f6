/* seccomp.c - the syscall filter every kernel process runs under.
 *
 * A deny-list on top of an allow-by-default filter: the kernel already runs
 * as an unprivileged uid with no capabilities and no_new_privs, so most of
 * what is denied here would fail anyway; the filter removes the kernel
 * attack surface that an unprivileged process *can* reach (namespaces,
 * io_uring, bpf, userfaultfd, perf, keyrings, the TTY injection ioctls) and
 * keeps a second wall in place should a capability ever leak. Denials return
 * an errno (never kill) so that Python code gets a clean OSError.
 *
 * Only the native ABI is allowed: anything else (x86 `int 0x80`, x32)
 * returns ENOSYS through the bad-architecture action, so the filter can't be
 * bypassed through another syscall table.
 */
#include "sandbox.h"

#include "kf/cleanup.h"
#include "kf/log.h"

#include <errno.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

/* Syscalls denied outright with EPERM, and why. */
static const char *const denied[] = {
    /* Namespaces and mounts: the sandbox's shape is fixed by PID 1. A new
     * user namespace would hand out capabilities over fresh namespaces and
     * with them a large kernel surface. */
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "open_tree_attr",
    /* Looking into or writing other processes (the session's own, too:
     * daemons it started must not be hijacked). */
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    /* Keyrings are not namespaced: a key could pass data between sessions. */
    "keyctl", "add_key", "request_key",
    /* Large, frequently exploited kernel surfaces with no use in a kernel. */
    "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    /* Machine administration (needs capabilities anyway; defence in depth). */
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "syslog",
    "iopl", "ioperm", "vm86", "vm86old",
    "setdomainname", "sethostname",
    "clock_settime", "clock_adjtime", "settimeofday", "adjtimex",
};

/* Namespace flags refused in clone(2). */
static const unsigned long clone_ns_flags[] = {
    CLONE_NEWNS,  CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
    CLONE_NEWUSER, CLONE_NEWPID,   CLONE_NEWNET, CLONE_NEWTIME,
};

/* ioctls refused on any fd: TIOCSTI pushes input into a terminal (classic
 * escape into whoever owns the tty), TIOCLINUX does similar on a console. */
static const unsigned long denied_ioctls[] = {TIOCSTI, TIOCLINUX};

/* Socket families refused: vsock reaches the hypervisor/host, packet sockets
 * see raw frames. (Raw IP sockets need CAP_NET_RAW, which the kernel lacks;
 * netlink stays: glibc and Python use it to list interfaces.) */
static const int denied_families[] = {AF_VSOCK, AF_PACKET};

/* Add one rule, or skip it if this libseccomp/arch doesn't know the syscall
 * (iopl on arm64, open_tree_attr on an older libseccomp). */
static int deny(scmp_filter_ctx ctx, const char *name, uint32_t action, unsigned n,
                const struct scmp_arg_cmp *cmp, kf_error *err) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
        return 0;
    int r = seccomp_rule_add_array(ctx, action, nr, n, cmp);
    if (r < 0)
        return kf_error_set(err, r, 0, "seccomp rule for %s", name);
    return 0;
}

static int build(scmp_filter_ctx ctx, kf_error *err) {
    int r;
    /* Other ABIs: ENOSYS rather than a kill, so probing code (and tests that
     * try `int 0x80`) see a failing syscall, not a dead kernel. */
    if ((r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(ENOSYS))) < 0)
        return kf_error_set(err, r, 0, "seccomp bad-arch action");

    for (size_t i = 0; i < KF_ARRAY_SIZE(denied); i++)
        if ((r = deny(ctx, denied[i], SCMP_ACT_ERRNO(EPERM), 0, NULL, err)) < 0)
            return r;

    /* clone(2) with any namespace flag (flags are arg 0 on x86_64 and arm64).
     * One rule per flag: rules are OR'ed, conditions within a rule AND'ed. */
    for (size_t i = 0; i < KF_ARRAY_SIZE(clone_ns_flags); i++) {
        struct scmp_arg_cmp c = SCMP_A0_64(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]);
        if ((r = deny(ctx, "clone", SCMP_ACT_ERRNO(EPERM), 1, &c, err)) < 0)
            return r;
    }
    /* clone3 passes its flags in memory, which a filter can't inspect.
     * ENOSYS makes glibc fall back to clone(2), which is checked above. */
    if ((r = deny(ctx, "clone3", SCMP_ACT_ERRNO(ENOSYS), 0, NULL, err)) < 0)
        return r;

    /* The kernel reads the ioctl request as a 32-bit int: compare only the
     * low 32 bits so a request with junk in the high half is still caught. */
    for (size_t i = 0; i < KF_ARRAY_SIZE(denied_ioctls); i++) {
        struct scmp_arg_cmp c = SCMP_A1_64(SCMP_CMP_MASKED_EQ, 0xffffffffULL, denied_ioctls[i]);
        if ((r = deny(ctx, "ioctl", SCMP_ACT_ERRNO(EPERM), 1, &c, err)) < 0)
            return r;
    }

    for (size_t i = 0; i < KF_ARRAY_SIZE(denied_families); i++) {
        struct scmp_arg_cmp c = SCMP_A0_64(SCMP_CMP_EQ, (uint64_t)denied_families[i]);
        if ((r = deny(ctx, "socket", SCMP_ACT_ERRNO(EPERM), 1, &c, err)) < 0)
            return r;
    }

    /* personality(2): only PER_LINUX (0) and the 0xffffffff query. Other
     * personas turn off ASLR (ADDR_NO_RANDOMIZE) or make data executable
     * (READ_IMPLIES_EXEC). libseccomp allows one comparison per argument per
     * rule, so: deny everything but 0, and answer the query with 0 ourselves
     * (ERRNO(0) returns 0 without running the syscall). That answer is
     * exact: the persona starts as PER_LINUX and can never change here. */
    struct scmp_arg_cmp not_linux = SCMP_A0_32(SCMP_CMP_NE, 0);
    if ((r = deny(ctx, "personality", SCMP_ACT_ERRNO(EPERM), 1, &not_linux, err)) < 0)
        return r;
    struct scmp_arg_cmp query = SCMP_A0_32(SCMP_CMP_EQ, 0xffffffffU);
    if ((r = deny(ctx, "personality", SCMP_ACT_ERRNO(0), 1, &query, err)) < 0)
        return r;
    return 0;
}

int kf_sb_seccomp_load(kf_error *err) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return kf_error_set(err, -ENOMEM, 0, "seccomp_init");
    int r = build(ctx, err);
    if (r == 0) {
        r = seccomp_load(ctx);
        if (r < 0)
            kf_error_set(err, r, 0, "load the seccomp filter");
    }
    seccomp_release(ctx);
    return r;
}
