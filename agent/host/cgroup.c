/* cgroup.c - one cgroup per session, on cgroup v1 (including hybrid hosts)
 * or v2, chosen once at start-up.
 *
 * Creating, configuring, attaching to and deleting cgroups goes through
 * libcgroup. Small counter files (cgroup.procs, memory.oom_control,
 * memory.events, memory.usage_in_bytes, memory.current) are read directly
 * from the controller's mount, and two v2-only steps libcgroup 2.0 has no
 * call for are done by hand: enabling controllers in the ancestors'
 * cgroup.subtree_control, and cgroup.kill.
 *
 * Owns the module state below: the mode and the mount point of each
 * controller, fixed by kf_cgroup_init() (or the test hook) before any other
 * call and read-only afterwards, so every function is safe to call from
 * several threads at once.
 *
 * Test hook: kf_cgroup_init_for_test() points the module at an arbitrary
 * cgroup2 mount (libcgroup only knows the mounts it found in cgroup_init).
 * In that mode the create/attach/delete steps write the cgroup files
 * directly; everything else (settings, kill, counters) is the same code the
 * production v2 path runs.
 */
#include "cgroup_internal.h"

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <libcgroup.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define CG_ROOT "/sys/fs/cgroup"
#define CG_KILL_TIMEOUT_MS 2000
#define CG_DELETE_TIMEOUT_MS 2000
#define CG_PROCS_MAX_BYTES (4u << 20)

/* Controllers a session cgroup gets, in the order settings are applied. */
static const char *const cg_controllers[] = {"memory", "cpu", "pids"};
#define CG_NCTRL KF_ARRAY_SIZE(cg_controllers)

static struct {
    kf_cgroup_mode mode;
    int direct;                   /* test hook: bypass libcgroup (v2 only) */
    char mount[CG_NCTRL][PATH_MAX]; /* per controller; "" = not mounted */
    char v2_root[PATH_MAX];
    int ready;
} g;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_once_ret;
static pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- pure part ---------------------------------------------------------- */

/* Append (controller, file, value) if there is room. value: the literal
 * `str` if non-NULL, else the decimal `v` followed by `suffix`. */
static void set_one(kf_cg_setting *out, size_t max, size_t *n, const char *ctrl, const char *file,
                    const char *str, uint64_t v, const char *suffix) {
    if (*n >= max)
        return;
    out[*n].controller = ctrl;
    out[*n].file = file;
    if (str)
        snprintf(out[*n].value, sizeof(out[*n].value), "%s", str);
    else
        snprintf(out[*n].value, sizeof(out[*n].value), "%" PRIu64 "%s", v, suffix ? suffix : "");
    (*n)++;
}

static uint64_t cpu_quota_us(uint32_t millis) {
    /* period 100 ms: 1000 millis (one core) = 100000 us per period. The
     * kernel refuses quotas below 1 ms. */
    uint64_t q = (uint64_t)millis * 100;
    return q < 1000 ? 1000 : q;
}

size_t kf_cgroup_settings(kf_cgroup_mode mode, const kf_cg_limits *l, kf_cg_setting *out, size_t max) {
    size_t n = 0;
    if (!l || !out)
        return 0;
    if (mode == KF_CG_V2) {
        if (l->memory_bytes)
            set_one(out, max, &n, "memory", "memory.max", NULL, l->memory_bytes, NULL);
        else
            set_one(out, max, &n, "memory", "memory.max", "max", 0, NULL);
        set_one(out, max, &n, "memory", "memory.swap.max", "0", 0, NULL);
        if (l->cpu_millis)
            set_one(out, max, &n, "cpu", "cpu.max", NULL, cpu_quota_us(l->cpu_millis), " 100000");
        else
            set_one(out, max, &n, "cpu", "cpu.max", "max 100000", 0, NULL);
        if (l->pids)
            set_one(out, max, &n, "pids", "pids.max", NULL, l->pids, NULL);
        else
            set_one(out, max, &n, "pids", "pids.max", "max", 0, NULL);
        return n;
    }
    /* v1: memsw (memory + swap) gets the same value as memory, so no swap
     * is usable; it is skipped at apply time where the file is missing
     * (kernel without swap accounting). memsw must stay >= the memory
     * limit, so when limits grow it is written first (see apply_v1). */
    if (l->memory_bytes) {
        set_one(out, max, &n, "memory", "memory.limit_in_bytes", NULL, l->memory_bytes, NULL);
        set_one(out, max, &n, "memory", "memory.memsw.limit_in_bytes", NULL, l->memory_bytes, NULL);
    } else {
        set_one(out, max, &n, "memory", "memory.limit_in_bytes", "-1", 0, NULL);
        set_one(out, max, &n, "memory", "memory.memsw.limit_in_bytes", "-1", 0, NULL);
    }
    set_one(out, max, &n, "cpu", "cpu.cfs_period_us", "100000", 0, NULL);
    if (l->cpu_millis)
        set_one(out, max, &n, "cpu", "cpu.cfs_quota_us", NULL, cpu_quota_us(l->cpu_millis), NULL);
    else
        set_one(out, max, &n, "cpu", "cpu.cfs_quota_us", "-1", 0, NULL);
    if (l->pids)
        set_one(out, max, &n, "pids", "pids.max", NULL, l->pids, NULL);
    else
        set_one(out, max, &n, "pids", "pids.max", "max", 0, NULL);
    return n;
}

int kf_cgroup_detect_mode(kf_cgroup_mode *mode) {
    struct statfs sfs;
    if (statfs(CG_ROOT, &sfs) < 0)
        return -errno;
    *mode = (sfs.f_type == CGROUP2_SUPER_MAGIC) ? KF_CG_V2 : KF_CG_V1;
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static int cg_errno(int ret) {
    if (ret == 0)
        return 0;
    if (ret == ECGOTHER) {
        int e = cgroup_get_last_errno();
        return e > 0 ? -e : -EIO;
    }
    if (ret == ECGROUPNOTEXIST)
        return -ENOENT;
    if (ret == ECGROUPNOTALLOWED || ret == ECGROUPNOTOWNER)
        return -EPERM;
    if (ret == ECGINVAL)
        return -EINVAL;
    return ret > 0 && ret < 4096 ? -ret : -EIO;
}

static int cg_fail(kf_error *err, int ret, const char *what, const char *name) {
    int code = cg_errno(ret);
    const char *why = ret >= 50000 ? cgroup_strerror(ret) : strerror(-code);
    if (ret == ECGOTHER)
        why = strerror(-code);
    return kf_error_set(err, code, KF_ST_INTERNAL, "cgroup %s: %s: %s", name, what, why);
}

/* A session cgroup name: relative, no "..", no empty components. */
static int name_ok(const char *name) {
    if (!name || !*name || name[0] == '/' || strlen(name) > 200)
        return 0;
    const char *p = name;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
                return 0;
        p += len;
        if (*p == '/')
            p++;
        if (!*p && e)
            return 0; /* trailing slash */
    }
    return 1;
}

static int ctrl_index(const char *ctrl) {
    for (size_t i = 0; i < CG_NCTRL; i++)
        if (!strcmp(cg_controllers[i], ctrl))
            return (int)i;
    return -1;
}

/* Directory of `name` under controller `ctrl` (v2: the unified root). */
static int cg_dir(const char *ctrl, const char *name, char *buf, size_t size) {
    const char *base;
    if (g.mode == KF_CG_V2) {
        base = g.v2_root;
    } else {
        int i = ctrl_index(ctrl);
        if (i < 0 || !g.mount[i][0])
            return -ENOENT;
        base = g.mount[i];
    }
    if (snprintf(buf, size, "%s/%s", base, name) >= (int)size)
        return -ENAMETOOLONG;
    return 0;
}

static int cg_file(const char *ctrl, const char *name, const char *file, char *buf, size_t size) {
    char dir[PATH_MAX];
    int r = cg_dir(ctrl, name, dir, sizeof(dir));
    if (r < 0)
        return r;
    if (snprintf(buf, size, "%s/%s", dir, file) >= (int)size)
        return -ENAMETOOLONG;
    return 0;
}

static int write_str(const char *path, const char *s) {
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    size_t len = strlen(s);
    ssize_t w = write(fd, s, len);
    if (w < 0)
        return -errno;
    return (size_t)w == len ? 0 : -EIO;
}

/* Value of the line "key N" in a flat-keyed file (memory.events,
 * memory.oom_control). -ENODATA if the key is absent. */
static int read_keyed(const char *path, const char *key, uint64_t *v) {
    _cleanup_free_ char *buf = NULL;
    int r = kf_read_file(path, 64 * 1024, &buf, NULL);
    if (r < 0)
        return r;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (!strncmp(line, key, klen) && line[klen] == ' ') {
            char *end;
            errno = 0;
            unsigned long long x = strtoull(line + klen + 1, &end, 10);
            if (errno || end == line + klen + 1)
                return -EBADMSG;
            *v = x;
            return 0;
        }
        line = nl ? nl + 1 : NULL;
    }
    return -ENODATA;
}

static int read_u64(const char *path, uint64_t *v) {
    _cleanup_free_ char *buf = NULL;
    int r = kf_read_file(path, 256, &buf, NULL);
    if (r < 0)
        return r;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(buf, &end, 10);
    if (errno || end == buf)
        return -EBADMSG;
    *v = x;
    return 0;
}

static int file_exists(const char *path) {
    return access(path, F_OK) == 0;
}

static void sleep_ms(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- init --------------------------------------------------------------- */

static void once_init(void) {
    int r = cgroup_init();
    g_once_ret = r;
}

static int init_locked(kf_cgroup_mode mode, const char *v2_root, int direct, kf_error *err) {
    memset(g.mount, 0, sizeof(g.mount));
    g.mode = mode;
    g.direct = direct;
    if (mode == KF_CG_V2) {
        if (snprintf(g.v2_root, sizeof(g.v2_root), "%s", v2_root) >= (int)sizeof(g.v2_root))
            return kf_error_set(err, -ENAMETOOLONG, 0, "cgroup root path too long");
        for (size_t i = 0; i < CG_NCTRL; i++)
            snprintf(g.mount[i], sizeof(g.mount[i]), "%s", g.v2_root);
        g.ready = 1;
        return 0;
    }
    g.v2_root[0] = '\0';
    for (size_t i = 0; i < CG_NCTRL; i++) {
        char *mp = NULL;
        int r = cgroup_get_subsys_mount_point(cg_controllers[i], &mp);
        if (r != 0 || !mp) {
            free(mp);
            return kf_error_set(err, -ENODEV, KF_ST_FAILED_PRECONDITION,
                                "cgroup v1 controller '%s' is not mounted", cg_controllers[i]);
        }
        snprintf(g.mount[i], sizeof(g.mount[i]), "%s", mp);
        free(mp);
    }
    g.ready = 1;
    return 0;
}

int kf_cgroup_init(kf_error *err) {
    pthread_once(&g_once, once_init);
    if (g_once_ret != 0)
        return cg_fail(err, g_once_ret, "libcgroup initialisation", "-");
    pthread_mutex_lock(&g_init_lock);
    int r = 0;
    if (!g.ready) {
        kf_cgroup_mode mode = KF_CG_V1;
        r = kf_cgroup_detect_mode(&mode);
        if (r < 0)
            r = kf_error_set(err, r, KF_ST_FAILED_PRECONDITION, "cannot stat %s: %s", CG_ROOT,
                             strerror(-r));
        else
            r = init_locked(mode, CG_ROOT, 0, err);
    }
    pthread_mutex_unlock(&g_init_lock);
    return r;
}

int kf_cgroup_init_for_test(kf_cgroup_mode mode, const char *root, kf_error *err) {
    if (mode == KF_CG_V1) {
        pthread_mutex_lock(&g_init_lock);
        g.ready = 0;
        pthread_mutex_unlock(&g_init_lock);
        return kf_cgroup_init(err);
    }
    if (!root)
        return kf_error_set(err, -EINVAL, 0, "v2 test root missing");
    pthread_mutex_lock(&g_init_lock);
    int r = init_locked(KF_CG_V2, root, 1, err);
    pthread_mutex_unlock(&g_init_lock);
    return r;
}

kf_cgroup_mode kf_cgroup_mode_get(void) {
    return g.mode;
}

/* ---- v2 helpers ----------------------------------------------------------- */

/* Enable memory/cpu/pids for the children of every ancestor of `name`
 * (root down to the parent), creating missing ancestors. Only controllers
 * offered by the ancestor's cgroup.controllers are requested, so a tree
 * without them (the test mount) is left alone. An ancestor that holds
 * processes cannot enable controllers ("no internal processes"): that
 * is reported, since the session would run without limits. */
static int v2_prepare_ancestors(const char *name, kf_error *err) {
    char rel[PATH_MAX];
    snprintf(rel, sizeof(rel), "%s", name);
    char *slash = strrchr(rel, '/');
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", g.v2_root);
    char *p = rel;
    for (;;) {
        /* dir is an existing ancestor: enable controllers for its children. */
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/cgroup.controllers", dir);
        _cleanup_free_ char *avail = NULL;
        if (kf_read_file(path, 4096, &avail, NULL) == 0) {
            snprintf(path, sizeof(path), "%s/cgroup.subtree_control", dir);
            for (size_t i = 0; i < CG_NCTRL; i++) {
                /* word match in the space-separated list */
                const char *c = cg_controllers[i];
                size_t cl = strlen(c);
                int found = 0;
                for (const char *s = avail; (s = strstr(s, c)); s += cl)
                    if ((s == avail || s[-1] == ' ') && (s[cl] == ' ' || s[cl] == '\n' || !s[cl])) {
                        found = 1;
                        break;
                    }
                if (!found)
                    continue;
                char word[32];
                snprintf(word, sizeof(word), "+%s", c);
                int r = write_str(path, word);
                if (r < 0)
                    return kf_error_set(err, r, KF_ST_FAILED_PRECONDITION,
                                        "cannot enable %s in %s (processes in an inner cgroup?): %s",
                                        c, path, strerror(-r));
            }
        }
        if (!slash || p > slash)
            break;
        char *e = strchr(p, '/');
        *e = '\0';
        size_t dl = strlen(dir);
        if (snprintf(dir + dl, sizeof(dir) - dl, "/%s", p) >= (int)(sizeof(dir) - dl))
            return kf_error_set(err, -ENAMETOOLONG, 0, "cgroup path too long");
        *e = '/';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            return kf_error_set(err, -errno, 0, "cannot create cgroup %s: %m", dir);
        p = e + 1;
    }
    return 0;
}

/* ---- create / limits / attach ------------------------------------------- */

/* Write the limits of an existing cgroup (libcgroup's modify, or direct
 * writes in test mode). Settings whose file is absent in this cgroup are
 * skipped: memsw without swap accounting, memory.swap.max without swap, a
 * controller not enabled on the (test) mount. v1 ordering: memsw must stay
 * >= memory.limit_in_bytes, so when the limit grows memsw goes first. */
static int apply_values(const char *name, const kf_cg_limits *l, kf_error *err) {
    kf_cg_setting s[8];
    size_t n = kf_cgroup_settings(g.mode, l, s, KF_ARRAY_SIZE(s));
    if (g.mode == KF_CG_V1 && n >= 2 && !strcmp(s[1].file, "memory.memsw.limit_in_bytes")) {
        char path[PATH_MAX];
        uint64_t cur = 0;
        int grow = !l->memory_bytes;
        if (!grow && cg_file("memory", name, "memory.limit_in_bytes", path, sizeof(path)) == 0 &&
            read_u64(path, &cur) == 0)
            grow = l->memory_bytes > cur;
        if (grow) {
            kf_cg_setting t = s[0];
            s[0] = s[1];
            s[1] = t;
        }
    }
    int present[8] = {0};
    size_t npresent = 0;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        present[i] = cg_file(s[i].controller, name, s[i].file, path, sizeof(path)) == 0 &&
                     file_exists(path);
        npresent += (size_t)present[i];
    }
    if (npresent == 0)
        return 0;

    if (g.direct) {
        for (size_t i = 0; i < n; i++) {
            char path[PATH_MAX];
            if (!present[i] || cg_file(s[i].controller, name, s[i].file, path, sizeof(path)) < 0)
                continue;
            int r = write_str(path, s[i].value);
            if (r < 0)
                return kf_error_set(err, r, 0, "cgroup %s: %s=%s: %s", name, s[i].file, s[i].value,
                                    strerror(-r));
        }
        return 0;
    }

    struct cgroup *cg = cgroup_new_cgroup(name);
    if (!cg)
        return kf_error_set(err, -ENOMEM, 0, "cgroup %s: out of memory", name);
    int r = 0;
    struct cgroup_controller *ctl[CG_NCTRL] = {0};
    for (size_t i = 0; i < n && r == 0; i++) {
        if (!present[i])
            continue;
        int ci = ctrl_index(s[i].controller);
        if (!ctl[ci] && !(ctl[ci] = cgroup_add_controller(cg, cg_controllers[ci]))) {
            r = kf_error_set(err, -ENOMEM, 0, "cgroup %s: out of memory", name);
            break;
        }
        int cr = cgroup_add_value_string(ctl[ci], s[i].file, s[i].value);
        if (cr != 0)
            r = cg_fail(err, cr, s[i].file, name);
    }
    if (r == 0) {
        int cr = cgroup_modify_cgroup(cg);
        if (cr != 0)
            r = cg_fail(err, cr, "set limits", name);
    }
    cgroup_free(&cg);
    return r;
}

/* Create the bare cgroup in every controller. */
static int create_bare(const char *name, kf_error *err) {
    if (g.direct) {
        char dir[PATH_MAX];
        int r = cg_dir("memory", name, dir, sizeof(dir));
        if (r < 0)
            return kf_error_set(err, r, 0, "cgroup %s: bad path", name);
        if (mkdir(dir, 0755) < 0)
            return kf_error_set(err, -errno, 0, "cgroup %s: mkdir: %m", name);
        return 0;
    }
    struct cgroup *cg = cgroup_new_cgroup(name);
    if (!cg)
        return kf_error_set(err, -ENOMEM, 0, "cgroup %s: out of memory", name);
    int r = 0;
    for (size_t i = 0; i < CG_NCTRL && r == 0; i++)
        if (!cgroup_add_controller(cg, cg_controllers[i]))
            r = kf_error_set(err, -ENOMEM, 0, "cgroup %s: out of memory", name);
    if (r == 0) {
        int cr = cgroup_create_cgroup(cg, 0);
        if (cr != 0)
            r = cg_fail(err, cr, "create", name);
    }
    cgroup_free(&cg);
    return r;
}

int kf_cgroup_create(const char *name, const kf_cg_limits *l, kf_error *err) {
    if (!g.ready)
        return kf_error_set(err, -EINVAL, KF_ST_INTERNAL, "cgroup module not initialised");
    if (!name_ok(name) || !l)
        return kf_error_set(err, -EINVAL, 0, "invalid cgroup name");
    if (g.mode == KF_CG_V2) {
        int r = v2_prepare_ancestors(name, err);
        if (r < 0)
            return r;
    }
    char dir[PATH_MAX];
    if (cg_dir("memory", name, dir, sizeof(dir)) == 0 && file_exists(dir))
        return kf_error_set(err, -EEXIST, 0, "cgroup %s already exists", name);
    int r = create_bare(name, err);
    if (r < 0)
        return r;
    r = apply_values(name, l, err);
    if (r < 0) {
        kf_error tmp;
        kf_cgroup_destroy(name, &tmp);
    }
    return r;
}

int kf_cgroup_set_limits(const char *name, const kf_cg_limits *l, kf_error *err) {
    if (!g.ready)
        return kf_error_set(err, -EINVAL, KF_ST_INTERNAL, "cgroup module not initialised");
    if (!name_ok(name) || !l)
        return kf_error_set(err, -EINVAL, 0, "invalid cgroup name");
    return apply_values(name, l, err);
}

int kf_cgroup_attach(const char *name, pid_t pid, kf_error *err) {
    if (!g.ready)
        return kf_error_set(err, -EINVAL, KF_ST_INTERNAL, "cgroup module not initialised");
    if (!name_ok(name) || pid <= 0)
        return kf_error_set(err, -EINVAL, 0, "invalid cgroup name or pid");
    if (g.direct) {
        char path[PATH_MAX];
        char v[32];
        int r = cg_file("memory", name, "cgroup.procs", path, sizeof(path));
        if (r == 0) {
            snprintf(v, sizeof(v), "%d", (int)pid);
            r = write_str(path, v);
        }
        if (r < 0)
            return kf_error_set(err, r, 0, "cgroup %s: attach pid %d: %s", name, (int)pid, strerror(-r));
        return 0;
    }
    struct cgroup *cg = cgroup_new_cgroup(name);
    if (!cg)
        return kf_error_set(err, -ENOMEM, 0, "cgroup %s: out of memory", name);
    int r = 0;
    for (size_t i = 0; i < CG_NCTRL && r == 0; i++)
        if (!cgroup_add_controller(cg, cg_controllers[i]))
            r = kf_error_set(err, -ENOMEM, 0, "cgroup %s: out of memory", name);
    if (r == 0) {
        int cr = cgroup_attach_task_pid(cg, pid);
        if (cr != 0)
            r = cg_fail(err, cr, "attach", name);
    }
    cgroup_free(&cg);
    return r;
}

/* ---- procs / kill / destroy ---------------------------------------------- */

static int read_procs(const char *ctrl, const char *name, pid_t *out, size_t max, size_t *n) {
    char path[PATH_MAX];
    int r = cg_file(ctrl, name, "cgroup.procs", path, sizeof(path));
    if (r < 0)
        return r;
    _cleanup_free_ char *buf = NULL;
    r = kf_read_file(path, CG_PROCS_MAX_BYTES, &buf, NULL);
    if (r < 0)
        return r;
    size_t k = 0;
    char *p = buf;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        if (v > 0) {
            if (k >= max)
                return -E2BIG;
            out[k++] = (pid_t)v;
        }
        p = end;
        while (*p == '\n' || *p == ' ')
            p++;
    }
    *n = k;
    return 0;
}

int kf_cgroup_procs(const char *name, pid_t *out, size_t max, size_t *n) {
    if (!g.ready || !name_ok(name))
        return -EINVAL;
    /* pids is always present for session cgroups; memory as a fallback. */
    int r = read_procs("pids", name, out, max, n);
    if (r == -ENOENT && g.mode == KF_CG_V1)
        r = read_procs("memory", name, out, max, n);
    return r;
}

/* One round over every hierarchy the session was attached to: SIGKILL what
 * is listed. *seen = number of processes found. A fork in flight may add a
 * child after we read: the caller loops until a round finds nothing. */
static int kill_round(const char *name, size_t *seen) {
    size_t total = 0;
    int any_dir = 0;
    size_t nctrl = g.mode == KF_CG_V2 ? 1 : CG_NCTRL;
    for (size_t i = 0; i < nctrl; i++) {
        size_t cap = 1024;
        for (;;) {
            pid_t *pids = malloc(cap * sizeof(pid_t));
            if (!pids)
                return -ENOMEM;
            size_t n = 0;
            int r = read_procs(cg_controllers[i], name, pids, cap, &n);
            if (r == -E2BIG && cap < (1u << 22)) {
                free(pids);
                cap *= 4;
                continue;
            }
            if (r == 0) {
                any_dir = 1;
                for (size_t k = 0; k < n; k++)
                    kill(pids[k], SIGKILL);
                total += n;
            }
            free(pids);
            if (r < 0 && r != -ENOENT)
                return r;
            break;
        }
    }
    *seen = total;
    return any_dir ? 0 : -ENOENT;
}

int kf_cgroup_kill_all(const char *name, kf_error *err) {
    if (!g.ready)
        return kf_error_set(err, -EINVAL, KF_ST_INTERNAL, "cgroup module not initialised");
    if (!name_ok(name))
        return kf_error_set(err, -EINVAL, 0, "invalid cgroup name");
    if (g.mode == KF_CG_V2) {
        /* cgroup.kill (5.14+) kills atomically, forks included. */
        char path[PATH_MAX];
        if (cg_file("pids", name, "cgroup.kill", path, sizeof(path)) == 0) {
            int r = write_str(path, "1");
            if (r < 0 && r != -ENOENT)
                return kf_error_set(err, r, 0, "cgroup %s: cgroup.kill: %s", name, strerror(-r));
        }
    }
    int64_t deadline = kf_mono_ms() + CG_KILL_TIMEOUT_MS;
    long pause = 1;
    for (;;) {
        size_t seen = 0;
        int r = kill_round(name, &seen);
        if (r == -ENOENT)
            return 0; /* no such cgroup: nothing to kill */
        if (r < 0)
            return kf_error_set(err, r, 0, "cgroup %s: reading processes: %s", name, strerror(-r));
        if (seen == 0)
            return 0;
        if (kf_mono_ms() >= deadline)
            return kf_error_set(err, -EBUSY, KF_ST_INTERNAL,
                                "cgroup %s: %zu processes still alive after %d ms", name, seen,
                                CG_KILL_TIMEOUT_MS);
        sleep_ms(pause);
        if (pause < 20)
            pause *= 2;
    }
}

static int exists_anywhere(const char *name) {
    size_t nctrl = g.mode == KF_CG_V2 ? 1 : CG_NCTRL;
    for (size_t i = 0; i < nctrl; i++) {
        char dir[PATH_MAX];
        if (cg_dir(cg_controllers[i], name, dir, sizeof(dir)) == 0 && file_exists(dir))
            return 1;
    }
    return 0;
}

/* Remove `name` and its children, deepest first (direct mode only). */
static int rmdir_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    int r = 0;
    while ((de = readdir(d))) {
        if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char sub[PATH_MAX];
        if (snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name) >= (int)sizeof(sub)) {
            r = -ENAMETOOLONG;
            break;
        }
        r = rmdir_tree(sub);
        if (r < 0)
            break;
    }
    closedir(d);
    if (r == 0 && rmdir(dir) < 0 && errno != ENOENT)
        r = -errno;
    return r;
}

static int delete_once(const char *name) {
    if (g.direct) {
        char dir[PATH_MAX];
        int r = cg_dir("memory", name, dir, sizeof(dir));
        return r < 0 ? r : rmdir_tree(dir);
    }
    struct cgroup *cg = cgroup_new_cgroup(name);
    if (!cg)
        return -ENOMEM;
    int r = 0;
    for (size_t i = 0; i < CG_NCTRL && r == 0; i++) {
        char dir[PATH_MAX];
        /* Only controllers where the cgroup still exists: a half-created
         * or half-deleted cgroup must still be removable. */
        if (cg_dir(cg_controllers[i], name, dir, sizeof(dir)) < 0 || !file_exists(dir))
            continue;
        if (!cgroup_add_controller(cg, cg_controllers[i]))
            r = -ENOMEM;
    }
    if (r == 0) {
        /* No IGNORE_MIGRATION: we only get here with an empty cgroup, and
         * libcgroup must not move leftovers to the parent silently. */
        int cr = cgroup_delete_cgroup_ext(cg, CGFLAG_DELETE_RECURSIVE);
        r = cg_errno(cr);
    }
    cgroup_free(&cg);
    return r;
}

int kf_cgroup_destroy(const char *name, kf_error *err) {
    if (!g.ready)
        return kf_error_set(err, -EINVAL, KF_ST_INTERNAL, "cgroup module not initialised");
    if (!name_ok(name))
        return kf_error_set(err, -EINVAL, 0, "invalid cgroup name");
    if (!exists_anywhere(name))
        return 0;
    int r = kf_cgroup_kill_all(name, err);
    if (r < 0)
        return r;
    /* A killed task leaves the cgroup shortly after the signal; rmdir can
     * still see it populated for a moment (EBUSY). */
    int64_t deadline = kf_mono_ms() + CG_DELETE_TIMEOUT_MS;
    for (;;) {
        r = delete_once(name);
        if (r == 0 || (r == -ENOENT && !exists_anywhere(name)))
            return 0;
        if (r != -EBUSY || kf_mono_ms() >= deadline)
            return kf_error_set(err, r, KF_ST_INTERNAL, "cgroup %s: delete: %s", name, strerror(-r));
        size_t seen;
        kill_round(name, &seen);
        sleep_ms(5);
    }
}

/* ---- counters ------------------------------------------------------------ */

int kf_cgroup_oom_kills(const char *name, uint64_t *count) {
    if (!g.ready || !name_ok(name) || !count)
        return -EINVAL;
    char path[PATH_MAX];
    int r = cg_file("memory", name, g.mode == KF_CG_V2 ? "memory.events" : "memory.oom_control", path,
                    sizeof(path));
    if (r < 0)
        return r;
    r = read_keyed(path, "oom_kill", count);
    if (r == -ENODATA) { /* old kernels: no oom_kill line */
        *count = 0;
        return 0;
    }
    return r;
}

int kf_cgroup_memory_current(const char *name, uint64_t *bytes) {
    if (!g.ready || !name_ok(name) || !bytes)
        return -EINVAL;
    char path[PATH_MAX];
    int r = cg_file("memory", name, g.mode == KF_CG_V2 ? "memory.current" : "memory.usage_in_bytes",
                    path, sizeof(path));
    if (r < 0)
        return r;
    return read_u64(path, bytes);
}

int kf_cgroup_read_setting(const char *name, const char *controller, const char *file, char *buf,
                           size_t size) {
    if (!g.ready || !name_ok(name) || !file || strchr(file, '/') || ctrl_index(controller) < 0 || size == 0)
        return -EINVAL;
    char path[PATH_MAX];
    int r = cg_file(controller, name, file, path, sizeof(path));
    if (r < 0)
        return r;
    _cleanup_free_ char *data = NULL;
    size_t len = 0;
    r = kf_read_file(path, 64 * 1024, &data, &len);
    if (r < 0)
        return r;
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == ' '))
        data[--len] = '\0';
    if (len >= size)
        return -ENOSPC;
    memcpy(buf, data, len + 1);
    return 0;
}
