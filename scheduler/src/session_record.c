/* session_record.c - the session record /kfleet/sessions/<id>: its key, the
 * parser every reader shares (session_table.c, node_loss.c, reconcile.c),
 * the rewrite that marks it LOST, and its deletion.
 *
 * The record is JSON written by create.c: {id, node, tenant,
 * created_unix_ms, limits{...}}; the leader adds {state: "LOST",
 * lost_unix_ms, reason} when the node is declared lost (node_loss.c).
 * Integers are numbers, or decimal strings past 10^15 (create.c's add_u64).
 * Everything but kf_session_forget is pure.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kf/log.h"
#include "scheduler.h"

#define FORGET_TRIES 3

void kf_session_key(char *key, const char *id) {
    snprintf(key, KF_SESSION_KEY_MAX, "%s%.*s", KF_KEY_SESSIONS, KF_SESSION_ID_MAX, id);
}

/* A u64 as create.c writes it: a number, or a decimal string past 10^15.
 * 0 when absent or malformed. */
static uint64_t json_u64(const cJSON *v) {
    if (cJSON_IsNumber(v) && v->valuedouble > 0)
        return v->valuedouble >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v->valuedouble;
    if (cJSON_IsString(v)) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(v->valuestring, &end, 10);
        if (!errno && end != v->valuestring && !*end)
            return n;
    }
    return 0;
}

static int64_t json_i64(const cJSON *v) {
    uint64_t u = json_u64(v);
    return u > INT64_MAX ? INT64_MAX : (int64_t)u;
}

int kf_session_parse_record(const char *value, size_t len, kf_session_ref *out) {
    cJSON *j = cJSON_ParseWithLength(value, len);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "node");
    const cJSON *tn = cJSON_GetObjectItemCaseSensitive(j, "tenant");
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(j, "limits");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "state");
    int rc = -EBADMSG;
    *out = (kf_session_ref){0};
    /* A record without "tenant" (made before tenancy) belongs to the
     * anonymous tenant "". */
    if (cJSON_IsString(n) && n->valuestring[0] && strlen(n->valuestring) < sizeof(out->node) &&
        (!tn || (cJSON_IsString(tn) && strlen(tn->valuestring) < sizeof(out->tenant)))) {
        snprintf(out->node, sizeof(out->node), "%s", n->valuestring);
        if (tn)
            snprintf(out->tenant, sizeof(out->tenant), "%s", tn->valuestring);
        out->memory_bytes = json_u64(cJSON_GetObjectItemCaseSensitive(lim, "memory_bytes"));
        if (!out->memory_bytes)
            out->memory_bytes = KF_SCHED_DEFAULT_MEMORY;
        out->cpu_millis = json_u64(cJSON_GetObjectItemCaseSensitive(lim, "cpu_millis"));
        if (!out->cpu_millis)
            out->cpu_millis = KF_SCHED_DEFAULT_CPU;
        out->created_unix_ms = json_i64(cJSON_GetObjectItemCaseSensitive(j, "created_unix_ms"));
        out->lost = cJSON_IsString(st) && !strcmp(st->valuestring, "LOST");
        const cJSON *mv = cJSON_GetObjectItemCaseSensitive(j, "moving_to"); /* a drain's move (drain_move.c) */
        if (cJSON_IsString(mv) && strlen(mv->valuestring) < sizeof(out->moving_to))
            snprintf(out->moving_to, sizeof(out->moving_to), "%s", mv->valuestring);
        if (out->lost)
            out->lost_unix_ms = json_i64(cJSON_GetObjectItemCaseSensitive(j, "lost_unix_ms"));
        rc = 0;
    }
    cJSON_Delete(j);
    return rc;
}

static void replace(cJSON *o, const char *name, cJSON *v) {
    if (cJSON_GetObjectItemCaseSensitive(o, name))
        cJSON_ReplaceItemInObjectCaseSensitive(o, name, v);
    else
        cJSON_AddItemToObject(o, name, v);
}

char *kf_session_record_lost(const char *value, size_t len, int64_t lost_unix_ms, const char *reason) {
    cJSON *j = cJSON_ParseWithLength(value, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return NULL;
    }
    replace(j, "state", cJSON_CreateString("LOST"));
    replace(j, "lost_unix_ms", cJSON_CreateNumber((double)lost_unix_ms)); /* < 2^53: exact */
    replace(j, "reason", cJSON_CreateString(reason));
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

int kf_session_forget(kf_sched *s, const char *id) {
    char key[KF_SESSION_KEY_MAX];
    kf_session_key(key, id);
    kf_error err = {0};
    int rc = -EIO;
    for (int attempt = 0; attempt < FORGET_TRIES && rc < 0; attempt++) {
        if (attempt)
            usleep(100000 * attempt);
        kf_error_clear(&err);
        rc = kf_etcd_delete(s->etcd, key, strlen(key), NULL, 0, NULL, NULL, &err);
    }
    if (rc < 0)
        kf_warn("session %s: record not deleted: %s", id, err.msg);
    kf_session_table_remove(s->sessions, id);
    return rc;
}
