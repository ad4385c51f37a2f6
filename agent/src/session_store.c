/* session_store.c - the on-disk record of each sandbox (session.json) and
 * of expired ids (tombstones), and re-adoption after an agent restart.
 *
 * The record is the source of truth for everything the agent cannot learn
 * from the running sandbox: the client id, limits, uid slot, kernel key and
 * PID 1's pid + start time (so a recycled pid is never mistaken for it).
 * Kernels keep running while the agent is down; kf_store_recover
 * reconnects to each of them, or cleans up after the ones that died. An
 * exported session (being moved) has no kernel: its record and volume are
 * kept as they are until the move is released or resumed.
 */
#include "session.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/util.h"

static void add_u64(cJSON *o, const char *k, uint64_t v) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    cJSON_AddStringToObject(o, k, buf); /* strings: exact past 2^53 */
}

static uint64_t get_u64(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsString(v))
        return strtoull(v->valuestring, NULL, 10);
    if (cJSON_IsNumber(v))
        return (uint64_t)v->valuedouble;
    return 0;
}

static const char *get_str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

int kf_store_save(kf_agent *a, kf_session *s) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    cJSON_AddNumberToObject(o, "version", 1);
    cJSON_AddStringToObject(o, "id", s->id);
    cJSON_AddStringToObject(o, "tenant", s->tenant);
    cJSON_AddStringToObject(o, "sbid", s->sbid);
    add_u64(o, "slot", s->slot);
    add_u64(o, "uid", s->uid);
    add_u64(o, "gid", s->gid);
    cJSON_AddStringToObject(o, "key", s->key);
    add_u64(o, "pid1", (uint64_t)s->pid1);
    add_u64(o, "pid1_start", s->pid1_start);
    add_u64(o, "created_ms", (uint64_t)s->created_ms);
    add_u64(o, "last_active_ms", (uint64_t)s->last_active_ms);
    add_u64(o, "exec_count", s->exec_count);
    add_u64(o, "kernel_restarts", s->kernel_restarts);
    cJSON_AddBoolToObject(o, "from_pool", s->from_pool);
    cJSON_AddStringToObject(o, "notice", s->notice);
    pthread_mutex_lock(&a->table_lock);
    int exported = s->state == KF_SS_EXPORTED;
    char reason[sizeof(s->move_reason)];
    snprintf(reason, sizeof(reason), "%s", s->move_reason);
    pthread_mutex_unlock(&a->table_lock);
    /* An exported session has no sandbox to find after a restart: the
     * flag tells recovery to keep its volume and wait for the move. */
    cJSON_AddBoolToObject(o, "exported", exported);
    cJSON_AddStringToObject(o, "move_reason", reason);
    cJSON *l = cJSON_AddObjectToObject(o, "limits");
    add_u64(l, "memory_bytes", s->limits.memory_bytes);
    add_u64(l, "cpu_millis", s->limits.cpu_millis);
    add_u64(l, "pids", s->limits.pids);
    add_u64(l, "exec_timeout_ms", s->limits.exec_timeout_ms);
    add_u64(l, "disk_bytes", s->limits.disk_bytes);
    add_u64(l, "disk_inodes", s->limits.disk_inodes);
    add_u64(l, "idle_timeout_s", s->limits.idle_timeout_s);
    add_u64(l, "max_lifetime_s", s->limits.max_lifetime_s);
    _cleanup_free_ char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        return -ENOMEM;
    char path[256];
    kf_sandbox_paths(a, s, "session.json", path, sizeof(path));
    /* No fsync: the record must survive an agent crash, which the page
     * cache gives; after a power loss there is no running kernel to find. */
    return kf_write_file_atomic(path, text, strlen(text), 0600, 0);
}

int kf_store_tombstone(kf_agent *a, const char *id, const char *reason) {
    char path[512];
    snprintf(path, sizeof(path), "%s/tombstones/%s", a->cfg.state_dir, id);
    return kf_write_file_atomic(path, reason, strlen(reason), 0600, 0);
}

void kf_store_tombstone_forget(kf_agent *a, const char *id) {
    char path[512];
    snprintf(path, sizeof(path), "%s/tombstones/%s", a->cfg.state_dir, id);
    unlink(path);
}

static void load_tombstones(kf_agent *a) {
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/tombstones", a->cfg.state_dir);
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (!d)
        return;
    int64_t now = kf_unix_ms();
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !kf_session_id_valid(de->d_name))
            continue;
        char path[600];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) < 0)
            continue;
        int64_t when = (int64_t)st.st_mtime * 1000;
        if (now - when > 7LL * 24 * 3600 * 1000) { /* keep a week */
            unlink(path);
            continue;
        }
        _cleanup_free_ char *reason = NULL;
        if (kf_read_file(path, 512, &reason, NULL) == 0)
            kf_agent_tombstone_load(a, de->d_name, reason, when);
    }
}

static kf_session *parse_record(const char *text) {
    cJSON *o = cJSON_Parse(text);
    if (!o)
        return NULL;
    kf_session *s = kf_session_new();
    if (!s) {
        cJSON_Delete(o);
        return NULL;
    }
    snprintf(s->id, sizeof(s->id), "%s", get_str(o, "id"));
    snprintf(s->tenant, sizeof(s->tenant), "%s", get_str(o, "tenant")); /* absent in older records */
    snprintf(s->sbid, sizeof(s->sbid), "%s", get_str(o, "sbid"));
    snprintf(s->key, sizeof(s->key), "%s", get_str(o, "key"));
    s->slot = (uint32_t)get_u64(o, "slot");
    s->uid = (uid_t)get_u64(o, "uid");
    s->gid = (gid_t)get_u64(o, "gid");
    s->pid1 = (pid_t)get_u64(o, "pid1");
    s->pid1_start = get_u64(o, "pid1_start");
    s->created_ms = (int64_t)get_u64(o, "created_ms");
    s->last_active_ms = (int64_t)get_u64(o, "last_active_ms");
    s->exec_count = (uint32_t)get_u64(o, "exec_count");
    s->kernel_restarts = (uint32_t)get_u64(o, "kernel_restarts");
    s->from_pool = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "from_pool"));
    snprintf(s->notice, sizeof(s->notice), "%s", get_str(o, "notice"));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "exported")))
        s->state = KF_SS_EXPORTED;
    snprintf(s->move_reason, sizeof(s->move_reason), "%s", get_str(o, "move_reason"));
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(o, "limits");
    s->limits.memory_bytes = get_u64(l, "memory_bytes");
    s->limits.cpu_millis = (uint32_t)get_u64(l, "cpu_millis");
    s->limits.pids = (uint32_t)get_u64(l, "pids");
    s->limits.exec_timeout_ms = (uint32_t)get_u64(l, "exec_timeout_ms");
    s->limits.disk_bytes = get_u64(l, "disk_bytes");
    s->limits.disk_inodes = get_u64(l, "disk_inodes");
    s->limits.idle_timeout_s = (uint32_t)get_u64(l, "idle_timeout_s");
    s->limits.max_lifetime_s = (uint32_t)get_u64(l, "max_lifetime_s");
    cJSON_Delete(o);
    return s;
}

/* Removes what is left of a recovered sandbox that cannot go on, with a
 * tombstone saying why for its id. Takes the reference to s. */
static void drop_lost(kf_agent *a, kf_session *s, const char *reason) {
    if (s->id[0]) {
        kf_store_tombstone(a, s->id, reason);
        kf_agent_tombstone_load(a, s->id, reason, kf_unix_ms());
    }
    kf_sandbox_destroy(a, s);
    kf_agent_slot_free(a, s->slot);
    kf_session_unref(a, s);
}

/* An EXPORTED session: its sandbox was (being) stopped when the agent
 * went down. Make sure it is stopped, keep the volume, and wait for the
 * move to be released or resumed. Takes the reference to s. */
static void recover_exported(kf_agent *a, kf_session *s) {
    char img[300];
    kf_sandbox_paths(a, s, "volume.img", img, sizeof(img));
    kf_sandbox_stop(a, s); /* a stop interrupted by the agent's death */
    struct stat st;
    kf_error err = {0};
    if (lstat(img, &st) < 0 || !S_ISREG(st.st_mode) || !s->id[0]) {
        kf_warn("recover: exported session %s (sandbox %s) has no volume image; dropping it",
                s->id[0] ? s->id : "-", s->sbid);
        drop_lost(a, s, "was lost: its volume disappeared while it was being moved");
        return;
    }
    if (kf_agent_insert(a, s, &err) < 0)
        kf_warn("recover: %s: %s", s->id, err.msg);
    kf_info("recovered exported session %s (sandbox %s): waiting to be released or resumed", s->id, s->sbid);
    kf_session_unref(a, s); /* the table holds it */
}

/* Re-adopts one sandbox directory; on failure cleans it up. */
static void recover_one(kf_agent *a, const char *sbid) {
    char path[512];
    snprintf(path, sizeof(path), "%s/sb/%s/session.json", a->cfg.state_dir, sbid);
    _cleanup_free_ char *text = NULL;
    kf_session *s = NULL;
    if (kf_read_file(path, 64 * 1024, &text, NULL) == 0)
        s = parse_record(text);
    if (!s || strcmp(s->sbid, sbid) != 0) {
        kf_warn("recover: %s has no usable record; removing it", sbid);
        if (!s)
            s = kf_session_new();
        if (!s)
            return;
        snprintf(s->sbid, sizeof(s->sbid), "%s", sbid);
        s->pid1 = 0;
        kf_sandbox_destroy(a, s);
        kf_session_unref(a, s);
        return;
    }
    kf_agent_slot_mark(a, s->slot);
    kf_error err = {0};
    if (s->state == KF_SS_EXPORTED) {
        recover_exported(a, s);
        return;
    }
    int ok = kf_sandbox_alive(s);
    if (ok && kf_sandbox_connect(a, s, kf_mono_ms() + 10000, &err) < 0) {
        kf_warn("recover: %s: %s; restarting its kernel", sbid, err.msg);
        kf_error_clear(&err);
        ok = kf_sandbox_restart_kernel(a, s, &err) == 0;
        if (ok)
            snprintf(s->notice, sizeof(s->notice),
                     "the kernel was restarted when the node agent restarted; files are kept, "
                     "in-memory state is lost");
    }
    if (!ok) {
        kf_warn("recover: sandbox %s (session %s) is gone: %s", sbid, s->id[0] ? s->id : "-",
                err.msg[0] ? err.msg : "PID 1 exited");
        drop_lost(a, s, "was lost: its sandbox died while the node agent was down");
        return;
    }
    if (s->id[0]) {
        s->state = KF_SS_READY;
        if (kf_agent_insert(a, s, &err) < 0)
            kf_warn("recover: %s: %s", s->id, err.msg);
        kf_info("recovered session %s (sandbox %s, exec count %u)", s->id, sbid, s->exec_count);
        kf_session_unref(a, s); /* the table holds it */
    } else {
        kf_pool_add(a, s); /* takes our reference */
        kf_info("recovered warm sandbox %s", sbid);
    }
}

int kf_store_recover(kf_agent *a) {
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/tombstones", a->cfg.state_dir);
    kf_mkdir_p(dir, 0700);
    load_tombstones(a);
    snprintf(dir, sizeof(dir), "%s/sb", a->cfg.state_dir);
    kf_mkdir_p(dir, 0700);
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strncmp(de->d_name, "sb-", 3) != 0 || strlen(de->d_name) > 31)
            continue;
        recover_one(a, de->d_name);
    }
    return 0;
}
