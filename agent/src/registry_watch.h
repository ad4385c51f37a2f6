/* registry_watch.h - the records the cluster writes for this node and the
 * agent follows: its admin record (/kfleet/admin/<node>: the cordon) and
 * its pool record (/kfleet/pools/<node>: the warm pool's target). Each is
 * read once, then followed by an etcd watch from the revision after the
 * read, so a change reaches the agent at once and none is missed.
 *
 * Owned by the registry (registry.c): its thread calls
 * kf_registry_watch_sync (at registration, then now and then) and
 * kf_registry_watch_stop; the watch threads apply what changes; any thread
 * may read the admin record with kf_registry_watch_admin.
 */
#ifndef KF_AGENT_REGISTRY_WATCH_H
#define KF_AGENT_REGISTRY_WATCH_H

#include <stdbool.h>

#include "kf/error.h"
#include "kf/etcd.h"
#include "kf/node_record.h"
#include "session.h"

typedef struct kf_registry_watch kf_registry_watch;

/* kf_registry_watch_new - set up (no I/O, no thread) for a->cfg.node_name
 * on `etcd`, which must outlive the watch. On success *out is owned by the
 * caller (kf_registry_watch_free). -ENOMEM. */
int kf_registry_watch_new(kf_agent *a, kf_etcd *etcd, kf_registry_watch **out, kf_error *err);

/* kf_registry_watch_sync - for each record: read it (blocking, one range),
 * then stop its watch, apply what was read and watch again from the read's
 * revision + 1. A record that cannot be read keeps its current value and
 * watch (a running watch reconnects by itself). Returns 0, or the first
 * error (the other record is synced all the same). One caller at a time
 * (the registry thread). */
int kf_registry_watch_sync(kf_registry_watch *w, kf_error *err);

/* kf_registry_watch_stop - stop both watches (joins their threads); no
 * change is applied after it returns. Idempotent. Same caller as sync. */
void kf_registry_watch_stop(kf_registry_watch *w);

/* kf_registry_watch_free - stop and free. NULL-safe; returns NULL. */
kf_registry_watch *kf_registry_watch_free(kf_registry_watch *w);

/* kf_registry_watch_admin - the admin record as last applied; *known is
 * false until it was read once (absent counts as read: not cordoned).
 * Thread-safe, non-blocking. */
void kf_registry_watch_admin(kf_registry_watch *w, kf_node_admin *out, bool *known);

#endif
