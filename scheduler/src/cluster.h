/* cluster.h - what the kfleet.v1.Cluster handlers share (cluster_nodes.c:
 * the read calls and the method table; cordon.c: the admin writes): the
 * Node message built from a view status, and the handlers themselves.
 * Internal to scheduler/src.
 */
#ifndef KF_SCHED_CLUSTER_H
#define KF_SCHED_CLUSTER_H

#include "kfleet/v1/cluster.pb-c.h"
#include "scheduler.h"

#define KF_CLUSTER_METHOD(m) "/kfleet.v1.Cluster/" m

/* A Node message and the storage of its parts. Its strings point into the
 * kf_node_status it was built from (borrowed: that status must outlive it;
 * it is never freed with protobuf_c_message_free_unpacked). */
typedef struct kf_node_msg {
    Kfleet__V1__Node node;
    Kfleet__V1__NodeCapacity capacity;
    Kfleet__V1__NodeUsage usage;
    Kfleet__V1__NodeAdmin admin;
    Kfleet__V1__Node__LabelsEntry label_store[KF_MAX_LABELS];
    Kfleet__V1__Node__LabelsEntry *labels[KF_MAX_LABELS];
} kf_node_msg;

/* kf_node_state - the state of a node as kfleet.v1.Cluster reports it. */
Kfleet__V1__NodeState kf_node_state(const kf_node_status *st);

/* kf_node_msg_init - fill m from st (see kf_node_msg for ownership). */
void kf_node_msg_init(kf_node_msg *m, kf_node_status *st);

/* kf_cluster_begin - the common start of every Cluster call: authenticate
 * (auth.c), then, when `admin_only`, require a tenant marked admin, then
 * receive the request. Returns the request (caller frees), or NULL once
 * the call has been finished with the reason (UNAUTHENTICATED,
 * PERMISSION_DENIED, INVALID_ARGUMENT). *tenant gets the caller's tenant. */
ProtobufCMessage *kf_cluster_begin(kf_sched *s, kf_call *c, const ProtobufCMessageDescriptor *req_desc,
                                   bool admin_only, kf_tenant *tenant);

/* kf_cluster_check_node - 0 if `node` is a well-formed node name; else
 * the call is finished with INVALID_ARGUMENT naming the problem and
 * -EINVAL is returned. */
int kf_cluster_check_node(kf_call *c, const char *node);

/* kf_cluster_reply_node - reply with the view's status of `node` (as the
 * view holds it now); a node the view no longer knows is answered as
 * NOT_READY with nothing but its id. */
void kf_cluster_reply_node(kf_sched *s, kf_call *c, const char *node);

/* cluster_nodes.c: the kfleet.v1.Cluster method table. */
const kf_method *kf_sched_cluster_methods(kf_sched *s, size_t *n);

/* cordon.c */
/* kf_cluster_add_drains - set each status's drain_state from the drain
 * records (one etcd range; left 0 if etcd does not answer). */
void kf_cluster_add_drains(kf_sched *s, kf_node_status *st, size_t n);

/* kf_cluster_who - who a change is recorded as by: the caller's tenant
 * with tenancy, else the request's `who` (checked) or "anonymous". */
int kf_cluster_who(const kf_sched *s, const kf_tenant *t, const char *who, char *out, size_t size,
                   kf_error *err);

void kf_sched_cordon(kf_call *c, void *ud);
void kf_sched_uncordon(kf_call *c, void *ud);

#endif
