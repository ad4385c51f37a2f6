/* cgroup_internal.h - kf_host-internal additions to cgroup.h: a test hook
 * and a raw setting reader, for unit tests and diagnostics. Not for agent
 * code paths. */
#ifndef KF_CGROUP_INTERNAL_H
#define KF_CGROUP_INTERNAL_H

#include "cgroup.h"

/* kf_cgroup_init_for_test - V1: same as kf_cgroup_init() (re-reads the
 * controller mounts). V2: point the module at the cgroup2 mount `root`
 * (e.g. a hybrid host's /sys/fs/cgroup/unified); create/attach/delete then
 * write the cgroup files directly, because libcgroup only knows the mounts
 * it found at cgroup_init(). Not thread-safe against concurrent users of
 * the module: call before starting them. */
int kf_cgroup_init_for_test(kf_cgroup_mode mode, const char *root, kf_error *err);

/* kf_cgroup_read_setting - the content of `file` of cgroup `name` under
 * `controller`, trailing newline stripped, into buf. -ENOSPC if it does not
 * fit. */
int kf_cgroup_read_setting(const char *name, const char *controller, const char *file, char *buf,
                           size_t size);

#endif
