/* cgroup.h - one cgroup per session, through libcgroup, on cgroup v1
 * (hybrid hosts: cpu, memory, pids hierarchies) or v2 (unified), chosen at
 * run time. libcgroup 2.0 does not translate setting names between the two,
 * so kf_cgroup_settings() (pure, unit-tested) says which files get which
 * values for each mode.
 *
 * Names are relative to the controllers' roots, e.g. "kfleet/sb-1a2b".
 * Thread-safe (libcgroup is initialised once). Errors: 0 / negative errno,
 * message in *err.
 */
#ifndef KF_CGROUP_H
#define KF_CGROUP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kf/error.h"

typedef enum { KF_CG_V1 = 1, KF_CG_V2 = 2 } kf_cgroup_mode;

typedef struct kf_cg_limits {
    uint64_t memory_bytes; /* 0 = unlimited; swap is always 0 */
    uint32_t cpu_millis;   /* 0 = unlimited; 1000 = one core */
    uint32_t pids;         /* 0 = unlimited */
} kf_cg_limits;

typedef struct kf_cg_setting {
    const char *controller; /* "memory", "cpu", "pids" */
    const char *file;       /* e.g. "memory.limit_in_bytes" or "memory.max" */
    char value[64];
} kf_cg_setting;

/* kf_cgroup_settings - pure: the (controller, file, value) triples that set
 * `l` under `mode`. Returns how many were written to out (<= max). */
size_t kf_cgroup_settings(kf_cgroup_mode mode, const kf_cg_limits *l, kf_cg_setting *out, size_t max);

/* kf_cgroup_detect_mode - statfs(/sys/fs/cgroup): cgroup2 magic -> V2,
 * else V1 (including hybrid hosts). */
int kf_cgroup_detect_mode(kf_cgroup_mode *mode);

/* kf_cgroup_init - initialise libcgroup (once, idempotent) and fix the mode.
 * Call before any other kf_cgroup_ function. */
int kf_cgroup_init(kf_error *err);
kf_cgroup_mode kf_cgroup_mode_get(void);

int kf_cgroup_create(const char *name, const kf_cg_limits *l, kf_error *err);
int kf_cgroup_set_limits(const char *name, const kf_cg_limits *l, kf_error *err);
int kf_cgroup_attach(const char *name, pid_t pid, kf_error *err);

/* kf_cgroup_kill_all - SIGKILL every process in the cgroup (v2: cgroup.kill;
 * v1: freeze-free loop over cgroup.procs until empty, bounded in time). */
int kf_cgroup_kill_all(const char *name, kf_error *err);

/* kf_cgroup_destroy - kill_all, then remove the cgroup. -ENOENT-safe
 * (destroying a missing cgroup returns 0). */
int kf_cgroup_destroy(const char *name, kf_error *err);

/* Counters and usage. */
int kf_cgroup_oom_kills(const char *name, uint64_t *count);
int kf_cgroup_memory_current(const char *name, uint64_t *bytes);
/* kf_cgroup_procs - the pids in the cgroup (up to max). */
int kf_cgroup_procs(const char *name, pid_t *out, size_t max, size_t *n);

#endif
