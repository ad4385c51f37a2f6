/* cordon.c - kfleet.v1.Cluster CordonNode and UncordonNode: the scheduler
 * writes a node's admin record, /kfleet/admin/<node> = {cordoned, reason,
 * by, at} (kf/node_record.h). The record has no lease, so a cordon
 * outlives agent restarts; the agents read it (GetNodeStats reports it)
 * and every scheduler's view follows it, so placement skips the node while
 * the sessions already on it keep running and answering.
 *
 * Decisions:
 *  - Idempotent: cordoning a cordoned node with the same reason writes
 *    nothing and keeps the first `by` and `at`; a different reason is a new
 *    decision and replaces the record (reason, by, at). Uncordoning deletes
 *    the record (an uncordoned node has none); uncordoning a node that is
 *    not cordoned writes nothing.
 *  - Who (`by`): with tenancy, the caller's tenant name (only admin
 *    tenants may call); without, the request's `who` (the CLI's --who) or
 *    "anonymous". Unverified without tenancy, like everything else there.
 *  - Known nodes only: a node that is neither registered nor has an admin
 *    record is NOT_FOUND ("no node X"), so a typo cannot create a record.
 *  - Read, decide, then write in a txn guarded by the record's mod revision
 *    (several scheduler replicas, or a person with etcdctl, may write at
 *    once): a lost race reads again, up to ADMIN_TRIES times.
 *  - The scheduler applies what it wrote to its own view at once
 *    (kf_view_set_admin), so a create right after the reply sees it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "drain.h"
#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"

#define ADMIN_TRIES 4
#define ANONYMOUS "anonymous"

/* The admin record of `key`: *rev its mod revision (0 = absent); *cur the
 * record, zeroed when absent or malformed (a malformed record counts as
 * not cordoned, like the agents and the view read it). */
static int read_admin(kf_sched *s, const char *key, kf_node_admin *cur, int64_t *rev, kf_error *err) {
    kf_etcd_kv kv = {0};
    memset(cur, 0, sizeof(*cur));
    *rev = 0;
    int rc = kf_etcd_get(s->etcd, key, strlen(key), &kv, err);
    if (rc == -ENOENT) {
        kf_error_clear(err);
        return 0;
    }
    if (rc < 0)
        return rc;
    *rev = kv.mod_revision;
    if (kf_node_admin_parse(kv.value, kv.value_len, cur) < 0)
        kf_warn("%s: malformed admin record; replacing it", key);
    kf_etcd_kv_done(&kv);
    return 0;
}

/* Puts `admin` (or deletes the record, admin NULL) if the record is still
 * at mod revision `rev`. *won false: someone wrote first. *new_rev is the
 * store revision after the write. */
static int write_admin(kf_sched *s, const char *key, int64_t rev, const kf_node_admin *admin, bool *won,
                       int64_t *new_rev, kf_error *err) {
    _cleanup_free_ char *json = admin ? kf_node_admin_json(admin) : NULL;
    if (admin && !json)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    kf_etcd_cmp cmp = {.key = key, .key_len = strlen(key), .target = KF_ETCD_CMP_MOD,
                       .result = KF_ETCD_CMP_EQUAL, .number = rev};
    kf_etcd_op op = {.type = admin ? KF_ETCD_OP_PUT : KF_ETCD_OP_DELETE, .key = key, .key_len = strlen(key),
                     .value = json, .value_len = json ? strlen(json) : 0};
    kf_etcd_txn_result res = {0};
    int rc = kf_etcd_txn(s->etcd, &cmp, 1, &op, 1, NULL, 0, won, &res, err);
    *new_rev = res.revision;
    kf_etcd_txn_result_done(&res);
    return rc;
}

/* Who is recorded as `by` (see the file comment). */
int kf_cluster_who(const kf_sched *s, const kf_tenant *t, const char *who, char *out, size_t size,
                  kf_error *err) {
    if (s->tenants) {
        snprintf(out, size, "%s", t->name);
        return 0;
    }
    if (!who[0]) {
        snprintf(out, size, ANONYMOUS);
        return 0;
    }
    if (!kf_tenant_name_valid(who))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "who must be 1-%d of A-Z a-z 0-9 . _ - @", KF_TENANT_NAME_MAX);
    snprintf(out, size, "%s", who);
    return 0;
}

int kf_admin_apply(kf_sched *s, const char *node, const char *reason, const char *by, kf_error *err) {
    char key[sizeof(KF_KEY_ADMIN) + KF_NODE_NAME_MAX];
    snprintf(key, sizeof(key), "%s%s", KF_KEY_ADMIN, node);
    for (int attempt = 0; attempt < ADMIN_TRIES; attempt++) {
        kf_node_admin cur, next = {0};
        int64_t rev, new_rev = 0;
        if (read_admin(s, key, &cur, &rev, err) < 0)
            return kf_error_wrap(err, "admin record of node %s", node);
        kf_node_status st;
        if (!rev && kf_view_status(s->view, node, &st) < 0) /* known nodes only */
            return kf_error_set(err, -ENOENT, KF_ST_NOT_FOUND, "no node %s", node);
        bool cordon = reason != NULL;
        if (cordon ? cur.cordoned && !strcmp(cur.reason, reason) : !cur.cordoned) {
            /* already so: nothing to write; make sure our view agrees */
            kf_view_set_admin(s->view, node, rev ? &cur : NULL, rev);
            return 0;
        }
        if (cordon) {
            next = (kf_node_admin){.cordoned = true, .at_unix_ms = kf_unix_ms()};
            snprintf(next.reason, sizeof(next.reason), "%s", reason);
            snprintf(next.by, sizeof(next.by), "%s", by);
        }
        bool won = false;
        if (write_admin(s, key, rev, cordon ? &next : NULL, &won, &new_rev, err) < 0)
            return kf_error_wrap(err, "admin record of node %s", node);
        if (won) {
            kf_view_set_admin(s->view, node, cordon ? &next : NULL, new_rev);
            if (cordon)
                kf_info("node %s cordoned by %s: %s", node, by, reason);
            else
                kf_info("node %s uncordoned by %s", node, by);
            return 0;
        }
        kf_debug("admin record of %s changed meanwhile; reading it again", node);
    }
    return kf_error_set(err, -EAGAIN, KF_ST_ABORTED, "the admin record of node %s kept changing under us; retry",
                        node);
}

/* Both calls: authenticate (admin tenants only), check the request, then
 * kf_admin_apply: read the record, stop if it already says what is asked,
 * else write if it did not change meanwhile; reply with the node. */
static void admin_call(kf_call *c, kf_sched *s, bool cordon) {
    kf_tenant tenant;
    _cleanup_pb_ ProtobufCMessage *m = kf_cluster_begin(
        s, c, cordon ? &kfleet__v1__cordon_node_request__descriptor : &kfleet__v1__uncordon_node_request__descriptor,
        true, &tenant);
    if (!m)
        return;
    const Kfleet__V1__CordonNodeRequest *cr = cordon ? (const void *)m : NULL;
    const Kfleet__V1__UncordonNodeRequest *ur = cordon ? NULL : (const void *)m;
    const char *node = cordon ? cr->node : ur->node, *who = cordon ? cr->who : ur->who;
    if (kf_cluster_check_node(c, node) < 0)
        return;
    kf_error err = {0};
    char by[KF_ADMIN_TEXT_MAX + 1];
    if ((cordon && kf_admin_text_check("reason", cr->reason, &err) < 0) ||
        kf_cluster_who(s, &tenant, who, by, sizeof(by), &err) < 0) {
        kf_call_fail(c, &err);
        return;
    }
    if (kf_admin_apply(s, node, cordon ? cr->reason : NULL, by, &err) < 0)
        kf_call_fail(c, &err);
    else
        kf_cluster_reply_node(s, c, node);
}

void kf_sched_cordon(kf_call *c, void *ud) { admin_call(c, ud, true); }
void kf_sched_uncordon(kf_call *c, void *ud) { admin_call(c, ud, false); }
