/* privs.c - capabilities, credentials and resource limits.
 *
 * Two consumers: PID 1, which stays root in the session's namespaces but
 * keeps only the four capabilities it needs to start and kill kernels; and
 * each kernel process, which gives up everything before exec: bounding and
 * ambient sets emptied, groups dropped, uid/gid switched for good,
 * no_new_privs set, and the result verified rather than assumed.
 */
#include "sandbox.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

/* What PID 1 keeps: CAP_SETUID/CAP_SETGID to become the kernel's user,
 * CAP_SETPCAP to empty the kernel's bounding set, CAP_KILL to kill(-1) the
 * kernel's processes (other uid) on restart and teardown. Nothing that could
 * mount, trace, or reach outside the namespaces. */
static const cap_value_t pid1_caps[] = {CAP_KILL, CAP_SETUID, CAP_SETGID, CAP_SETPCAP};

static bool is_pid1_cap(int c) {
    for (size_t i = 0; i < sizeof(pid1_caps) / sizeof(pid1_caps[0]); i++)
        if (pid1_caps[i] == c)
            return true;
    return false;
}

/* Drop every capability from the bounding set except `keep` (may be NULL).
 * Loops to 63 rather than trusting a compile-time CAP_LAST_CAP: a newer
 * kernel may know more capabilities than our headers; EINVAL marks the end. */
static int drop_bounding(bool (*keep)(int), kf_error *err) {
    for (int c = 0; c < 64; c++) {
        if (keep && keep(c))
            continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break;
            return kf_error_set(err, -errno, 0, "drop capability %d from the bounding set", c);
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return kf_error_set(err, -errno, 0, "clear ambient capabilities");
    return 0;
}

int kf_sb_set_rlimits(unsigned long nofile, kf_error *err) {
    struct rlimit nf = {.rlim_cur = nofile, .rlim_max = nofile};
    if (setrlimit(RLIMIT_NOFILE, &nf) < 0)
        return kf_error_set(err, -errno, 0, "set RLIMIT_NOFILE to %lu", nofile);
    struct rlimit core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &core) < 0)
        return kf_error_set(err, -errno, 0, "set RLIMIT_CORE to 0");
    return 0;
}

int kf_sb_restrict_pid1(kf_error *err) {
    int r = drop_bounding(is_pid1_cap, err);
    if (r < 0)
        return r;
    cap_t caps = cap_init();
    if (!caps)
        return kf_error_set(err, -errno, 0, "cap_init");
    int n = (int)(sizeof(pid1_caps) / sizeof(pid1_caps[0]));
    if (cap_set_flag(caps, CAP_EFFECTIVE, n, pid1_caps, CAP_SET) < 0 ||
        cap_set_flag(caps, CAP_PERMITTED, n, pid1_caps, CAP_SET) < 0 || cap_set_proc(caps) < 0) {
        r = kf_error_set(err, -errno, 0, "reduce PID 1 capabilities");
        cap_free(caps);
        return r;
    }
    cap_free(caps);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return kf_error_set(err, -errno, 0, "set no_new_privs on PID 1");
    /* Not dumpable: the kernel's uid can't ptrace or read /proc/1/mem, and
     * /proc/1/fd etc. become root-owned. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return kf_error_set(err, -errno, 0, "clear PID 1 dumpable");
    return 0;
}

/* Verify, after the fact, that no capability survived in any set. */
static int verify_no_caps(kf_error *err) {
    cap_t have = cap_get_proc();
    cap_t none = cap_init();
    int diff = (have && none) ? cap_compare(have, none) : -1;
    cap_free(have);
    cap_free(none);
    if (diff != 0)
        return kf_error_set(err, -EPERM, 0, "capabilities remain after dropping privileges");
    for (int c = 0; c < 64; c++) { /* -1 (EINVAL) past the last */
        if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) > 0)
            return kf_error_set(err, -EPERM, 0, "capability %d remains in the bounding set", c);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) > 0)
            return kf_error_set(err, -EPERM, 0, "capability %d remains in the ambient set", c);
    }
    return 0;
}

int kf_sb_drop_to_user(const kf_sb_config *cfg, kf_error *err) {
    int r = drop_bounding(NULL, err);
    if (r < 0)
        return r;
    if (setgroups(0, NULL) < 0)
        return kf_error_set(err, -errno, 0, "setgroups");
    if (setresgid(cfg->gid, cfg->gid, cfg->gid) < 0)
        return kf_error_set(err, -errno, 0, "setresgid %lu", (unsigned long)cfg->gid);
    /* From uid 0 to a non-zero uid in all three ids: the kernel clears the
     * permitted and effective sets (no SECBIT_KEEP_CAPS). */
    if (setresuid(cfg->uid, cfg->uid, cfg->uid) < 0)
        return kf_error_set(err, -errno, 0, "setresuid %lu", (unsigned long)cfg->uid);
    if ((r = kf_sb_set_rlimits(cfg->nofile, err)) < 0)
        return r;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return kf_error_set(err, -errno, 0, "set no_new_privs");
    return verify_no_caps(err);
}
