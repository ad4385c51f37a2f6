/* drain_record.c - the drain record /kfleet/drains/<node>: JSON in and
 * out, read and guarded write, and its DrainStatus message.
 *
 * {"node", "state": "running|done|cancelled|incomplete", "reason", "by",
 *  "started_unix_ms", "deadline_unix_ms", "ended_unix_ms", "parallel",
 *  "force", "message",
 *  "sessions": [{"id", "state": "pending|moving|moved|failed|left|deleted|
 *                gone", "target", "message", "attempts"}]}
 *
 * Parsing is strict about what the runner relies on (node, state, known
 * session states, at most KF_DRAIN_SESSIONS_MAX entries) and cuts strings
 * to their fields' sizes; a malformed record is reported and left alone.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drain.h"
#include "kf/cleanup.h"
#include "kf/log.h"

static void cjson_deletep(cJSON **j) { cJSON_Delete(*j); }
#define _cleanup_cjson_ _cleanup_(cjson_deletep)

static const char *const drain_states[] = {NULL, "running", "done", "cancelled", "incomplete"};
static const char *const sess_states[] = {NULL, "pending", "moving", "moved", "failed", "left", "deleted", "gone"};

static int state_of(const char *const *names, size_t n, const cJSON *v) {
    if (!cJSON_IsString(v))
        return -1;
    for (size_t i = 1; i < n; i++)
        if (!strcmp(v->valuestring, names[i]))
            return (int)i;
    return -1;
}

static int64_t get_i64(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsNumber(v))
        return (int64_t)v->valuedouble;
    if (cJSON_IsString(v))
        return strtoll(v->valuestring, NULL, 10);
    return 0;
}

static void get_str(const cJSON *o, const char *k, char *dst, size_t size) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    snprintf(dst, size, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

int kf_drain_parse(const char *json, size_t len, kf_drain *out) {
    memset(out, 0, sizeof(*out));
    _cleanup_cjson_ cJSON *j = cJSON_ParseWithLength(json, len);
    const cJSON *sessions = cJSON_GetObjectItemCaseSensitive(j, "sessions");
    int st = state_of(drain_states, KF_ARRAY_SIZE(drain_states), cJSON_GetObjectItemCaseSensitive(j, "state"));
    get_str(j, "node", out->node, sizeof(out->node));
    if (!cJSON_IsObject(j) || st < 0 || !out->node[0] || (sessions && !cJSON_IsArray(sessions)) ||
        cJSON_GetArraySize(sessions) > KF_DRAIN_SESSIONS_MAX) {
        kf_warn("malformed drain record (node '%s')", out->node);
        return -EBADMSG;
    }
    out->state = (kf_drain_state)st;
    get_str(j, "reason", out->reason, sizeof(out->reason));
    get_str(j, "by", out->by, sizeof(out->by));
    get_str(j, "message", out->message, sizeof(out->message));
    out->started_unix_ms = get_i64(j, "started_unix_ms");
    out->deadline_unix_ms = get_i64(j, "deadline_unix_ms");
    out->ended_unix_ms = get_i64(j, "ended_unix_ms");
    int64_t par = get_i64(j, "parallel");
    out->parallel = par < 1 ? 1 : par > KF_DRAIN_PARALLEL_MAX ? KF_DRAIN_PARALLEL_MAX : (uint32_t)par;
    out->force = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "force"));
    size_t n = (size_t)cJSON_GetArraySize(sessions);
    out->sess = calloc(n ? n : 1, sizeof(*out->sess));
    if (!out->sess)
        return -ENOMEM;
    const cJSON *e;
    cJSON_ArrayForEach(e, sessions) {
        kf_drain_sess *ds = &out->sess[out->n];
        int ss = state_of(sess_states, KF_ARRAY_SIZE(sess_states), cJSON_GetObjectItemCaseSensitive(e, "state"));
        get_str(e, "id", ds->id, sizeof(ds->id));
        if (ss < 0 || !ds->id[0]) {
            kf_warn("drain record of %s: malformed session entry skipped", out->node);
            continue;
        }
        ds->state = (kf_drain_sess_state)ss;
        get_str(e, "target", ds->target, sizeof(ds->target));
        get_str(e, "message", ds->message, sizeof(ds->message));
        int64_t a = get_i64(e, "attempts");
        ds->attempts = a < 0 ? 0 : a > 1000 ? 1000 : (uint32_t)a;
        out->n++;
    }
    return 0;
}

char *kf_drain_json(const kf_drain *d) {
    _cleanup_cjson_ cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    bool ok = cJSON_AddStringToObject(j, "node", d->node) &&
              cJSON_AddStringToObject(j, "state", drain_states[d->state]) &&
              cJSON_AddStringToObject(j, "reason", d->reason) && cJSON_AddStringToObject(j, "by", d->by) &&
              cJSON_AddNumberToObject(j, "started_unix_ms", (double)d->started_unix_ms) &&
              cJSON_AddNumberToObject(j, "deadline_unix_ms", (double)d->deadline_unix_ms) &&
              cJSON_AddNumberToObject(j, "ended_unix_ms", (double)d->ended_unix_ms) &&
              cJSON_AddNumberToObject(j, "parallel", d->parallel) &&
              cJSON_AddBoolToObject(j, "force", d->force) && cJSON_AddStringToObject(j, "message", d->message);
    cJSON *arr = ok ? cJSON_AddArrayToObject(j, "sessions") : NULL;
    for (size_t i = 0; arr && i < d->n; i++) {
        const kf_drain_sess *ds = &d->sess[i];
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(arr, e) || !cJSON_AddStringToObject(e, "id", ds->id) ||
            !cJSON_AddStringToObject(e, "state", sess_states[ds->state]) ||
            !cJSON_AddStringToObject(e, "target", ds->target) ||
            !cJSON_AddStringToObject(e, "message", ds->message) ||
            !cJSON_AddNumberToObject(e, "attempts", ds->attempts))
            return NULL;
    }
    return arr ? cJSON_PrintUnformatted(j) : NULL;
}

void kf_drain_done(kf_drain *d) {
    free(d->sess);
    d->sess = NULL;
    d->n = 0;
}

kf_drain_sess *kf_drain_find(kf_drain *d, const char *id) {
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->sess[i].id, id))
            return &d->sess[i];
    return NULL;
}

int kf_drain_get(kf_sched *s, const char *node, kf_drain *out, int64_t *rev, kf_error *err) {
    char key[sizeof(KF_KEY_DRAINS) + KF_PLACE_ID_MAX];
    snprintf(key, sizeof(key), "%s%s", KF_KEY_DRAINS, node);
    kf_etcd_kv kv = {0};
    int rc = kf_etcd_get(s->etcd, key, strlen(key), &kv, err);
    if (rc == -ENOENT) {
        kf_error_clear(err);
        return -ENOENT;
    }
    if (rc < 0)
        return rc;
    *rev = kv.mod_revision;
    rc = kf_drain_parse(kv.value, kv.value_len, out);
    kf_etcd_kv_done(&kv);
    if (rc < 0)
        return kf_error_set(err, rc, KF_ST_INTERNAL, "the drain record of node %s is malformed", node);
    return 0;
}

int kf_drain_put(kf_sched *s, const kf_drain *d, int64_t rev, bool fenced, bool *won, int64_t *new_rev,
                 kf_error *err) {
    char key[sizeof(KF_KEY_DRAINS) + KF_PLACE_ID_MAX];
    snprintf(key, sizeof(key), "%s%s", KF_KEY_DRAINS, d->node);
    _cleanup_free_ char *json = kf_drain_json(d);
    if (!json)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    kf_etcd_cmp cmp = {.key = key, .key_len = strlen(key), .target = KF_ETCD_CMP_MOD,
                       .result = KF_ETCD_CMP_EQUAL, .number = rev};
    kf_etcd_op op = {.type = KF_ETCD_OP_PUT, .key = key, .key_len = strlen(key), .value = json,
                     .value_len = strlen(json)};
    kf_etcd_txn_result res = {0};
    int rc = fenced ? kf_leader_txn_result(s->leader, &cmp, 1, &op, 1, won, &res, err)
                    : kf_etcd_txn(s->etcd, &cmp, 1, &op, 1, NULL, 0, won, &res, err);
    if (new_rev)
        *new_rev = res.revision;
    kf_etcd_txn_result_done(&res);
    return rc;
}

int kf_drain_msg_init(kf_drain_msg *m, const kf_drain *d) {
    kfleet__v1__drain_status__init(&m->st);
    m->items = calloc(d->n ? d->n : 1, sizeof(*m->items));
    m->ptrs = calloc(d->n ? d->n : 1, sizeof(*m->ptrs));
    if (!m->items || !m->ptrs) {
        kf_drain_msg_done(m);
        return -ENOMEM;
    }
    Kfleet__V1__DrainStatus *st = &m->st;
    st->node = (char *)d->node;
    st->state = (Kfleet__V1__DrainState)d->state;
    st->reason = (char *)d->reason;
    st->by = (char *)d->by;
    st->started_unix_ms = d->started_unix_ms;
    st->deadline_unix_ms = d->deadline_unix_ms;
    st->ended_unix_ms = d->ended_unix_ms;
    st->parallel = d->parallel;
    st->force = d->force;
    st->message = (char *)d->message;
    for (size_t i = 0; i < d->n; i++) {
        const kf_drain_sess *ds = &d->sess[i];
        Kfleet__V1__DrainSession *it = &m->items[i];
        kfleet__v1__drain_session__init(it);
        it->session_id = (char *)ds->id;
        it->state = (Kfleet__V1__DrainSessionState)ds->state;
        it->target_node = (char *)ds->target;
        it->message = (char *)ds->message;
        it->attempts = ds->attempts;
        m->ptrs[i] = it;
        st->total++;
        st->moved += ds->state == KF_DS_MOVED;
        st->failed += ds->state == KF_DS_FAILED;
        st->left += ds->state == KF_DS_LEFT;
        st->deleted += ds->state == KF_DS_DELETED;
    }
    st->n_sessions = d->n;
    st->sessions = m->ptrs;
    return 0;
}

void kf_drain_msg_done(kf_drain_msg *m) {
    free(m->items);
    free(m->ptrs);
    m->items = NULL;
    m->ptrs = NULL;
}
