/* registry.h - the node's membership in the cluster: one thread that keeps
 * this node's records in etcd (key layout in kf/node_record.h).
 *
 * Lifecycle (main.c): kf_registry_new before the gRPC server starts (so
 * handlers can ask kf_registry_status), kf_registry_start once the server
 * listens (the advertised address answers before it is published),
 * kf_registry_free after the server has stopped (it revokes the lease, so a
 * cleanly stopped node disappears at once; after kill -9 it lapses with the
 * TTL).
 *
 * The thread owns the etcd client, the lease and its keeper, and the
 * watches on this node's admin and pool records (registry_watch.h). It
 * shares with handler threads only the status below, under mutexes.
 */
#ifndef KF_AGENT_REGISTRY_H
#define KF_AGENT_REGISTRY_H

#include <stdbool.h>

#include "kf/error.h"
#include "kf/etcd.h"
#include "kf/node_record.h"
#include "session.h"

typedef struct kf_registry kf_registry;

/* kf_registry_new - set up the etcd client from a->cfg (no network I/O:
 * it succeeds with etcd down). -EINVAL with a message on bad options or an
 * unreadable password file. On success *out is owned by the caller. */
int kf_registry_new(kf_agent *a, kf_registry **out, kf_error *err);

/* kf_registry_start - start the registry thread. Returns at once; etcd
 * being unreachable is retried in the background, not an error here. */
int kf_registry_start(kf_registry *r, kf_error *err);

/* kf_registry_free - stop the thread (waits for an etcd request in flight:
 * at most 3 s per endpoint tried), stop the record watches and the keeper,
 * revoke the lease (best effort, same bound) and free. NULL-safe; returns
 * NULL. */
kf_registry *kf_registry_free(kf_registry *r);

typedef struct kf_registry_status {
    bool registered;      /* the node record is on a live lease, as far as we know */
    bool admin_known;     /* the admin record was read at least once */
    kf_node_admin admin;  /* as last read or seen by the watch */
} kf_registry_status;

/* kf_registry_status - a copy of the current status. Thread-safe,
 * non-blocking (no etcd request). */
void kf_registry_status_get(kf_registry *r, kf_registry_status *out);

/* kf_registry_etcd - the registry's etcd client (thread-safe; lives until
 * kf_registry_free), for the SIGTERM drain (self_drain.c). */
kf_etcd *kf_registry_etcd(kf_registry *r);

#endif
