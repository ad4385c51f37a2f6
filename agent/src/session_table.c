/* session_table.c - the agent's index of sessions by id, their reference
 * counts, per-session uid slots and the tombstones that let an expired id
 * answer "expired" instead of "not found". Everything here runs under
 * a->table_lock and never blocks on I/O (tombstones are persisted by the
 * caller through kf_store_tombstone). */
#include "session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/log.h"
#include "kf/util.h"

static uint64_t hash_id(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int kf_session_id_valid(const char *id) {
    size_t n = strlen(id);
    if (n == 0 || n > KF_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return 0;
    }
    return 1;
}

const char *kf_session_state_name(kf_session_state st) {
    switch (st) {
    case KF_SS_STARTING: return "starting";
    case KF_SS_POOLED: return "pooled";
    case KF_SS_READY: return "ready";
    case KF_SS_BUSY: return "busy";
    case KF_SS_RESTARTING: return "restarting";
    case KF_SS_DELETING: return "deleting";
    case KF_SS_EXPIRED: return "expired";
    case KF_SS_EXPORTED: return "being moved to another node";
    }
    return "unknown";
}

kf_session *kf_session_new(void) {
    kf_session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->kernel_pidfd = -1;
    s->refs = 1;
    s->state = KF_SS_STARTING;
    return s;
}

int kf_agent_init(kf_agent *a, const kf_agent_config *cfg, kf_error *err) {
    memset(a, 0, sizeof(*a));
    a->cfg = *cfg;
    a->pool_target = cfg->pool_size;
    pthread_mutex_init(&a->table_lock, NULL);
    pthread_cond_init(&a->table_cond, NULL);
    a->sessions_cap = 1;
    while (a->sessions_cap < (size_t)cfg->uid_count * 2)
        a->sessions_cap <<= 1;
    a->sessions = calloc(a->sessions_cap, sizeof(*a->sessions));
    a->slots = calloc(cfg->uid_count, 1);
    a->tombstones = calloc(KF_TOMBSTONES, sizeof(*a->tombstones));
    if (!a->sessions || !a->slots || !a->tombstones)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    return 0;
}

void kf_agent_done(kf_agent *a) {
    free(a->sessions);
    free(a->slots);
    free(a->tombstones);
    pthread_mutex_destroy(&a->table_lock);
    pthread_cond_destroy(&a->table_cond);
}

void kf_session_ref(kf_agent *a, kf_session *s) {
    pthread_mutex_lock(&a->table_lock);
    s->refs++;
    pthread_mutex_unlock(&a->table_lock);
}

void kf_session_unref(kf_agent *a, kf_session *s) {
    if (!s)
        return;
    pthread_mutex_lock(&a->table_lock);
    int last = --s->refs == 0;
    pthread_mutex_unlock(&a->table_lock);
    if (!last)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Linear probing with tombstone-free deletion (backward shift). */
static size_t find_index(kf_agent *a, const char *id, int *found) {
    size_t mask = a->sessions_cap - 1;
    size_t i = hash_id(id) & mask;
    while (a->sessions[i]) {
        if (!strcmp(a->sessions[i]->id, id)) {
            *found = 1;
            return i;
        }
        i = (i + 1) & mask;
    }
    *found = 0;
    return i;
}

int kf_agent_insert(kf_agent *a, kf_session *s, kf_error *err) {
    pthread_mutex_lock(&a->table_lock);
    int found;
    size_t i = find_index(a, s->id, &found);
    if (found) {
        pthread_mutex_unlock(&a->table_lock);
        return kf_error_set(err, -EEXIST, 0, "session %s already exists", s->id);
    }
    if (a->n_sessions + 1 > a->sessions_cap / 2) {
        pthread_mutex_unlock(&a->table_lock);
        return kf_error_set(err, -ENOSPC, 0, "session table full");
    }
    a->sessions[i] = s;
    s->refs++;
    s->in_table = 1;
    a->n_sessions++;
    a->memory_reserved_bytes += s->limits.memory_bytes;
    a->cpu_reserved_millis += s->limits.cpu_millis;
    pthread_mutex_unlock(&a->table_lock);
    return 0;
}

static void add_tombstone_locked(kf_agent *a, const char *id, const char *reason) {
    kf_tombstone *t = &a->tombstones[a->tomb_next];
    a->tomb_next = (a->tomb_next + 1) % KF_TOMBSTONES;
    snprintf(t->id, sizeof(t->id), "%s", id);
    snprintf(t->reason, sizeof(t->reason), "%s", reason);
    t->when_ms = kf_unix_ms();
}

void kf_agent_remove(kf_agent *a, kf_session *s, const char *tombstone_reason) {
    pthread_mutex_lock(&a->table_lock);
    int found;
    size_t i = s->id[0] ? find_index(a, s->id, &found) : (found = 0, 0);
    if (found && a->sessions[i] == s) {
        size_t mask = a->sessions_cap - 1;
        a->sessions[i] = NULL;
        /* backward-shift the cluster that follows */
        size_t j = (i + 1) & mask;
        while (a->sessions[j]) {
            kf_session *m = a->sessions[j];
            a->sessions[j] = NULL;
            int f2;
            size_t k = find_index(a, m->id, &f2);
            a->sessions[k] = m;
            j = (j + 1) & mask;
        }
        a->n_sessions--;
        a->memory_reserved_bytes -= s->limits.memory_bytes;
        a->cpu_reserved_millis -= s->limits.cpu_millis;
        s->in_table = 0;
        s->refs--;
    }
    if (tombstone_reason && s->id[0])
        add_tombstone_locked(a, s->id, tombstone_reason);
    pthread_mutex_unlock(&a->table_lock);
}

void kf_agent_usage(kf_agent *a, kf_node_usage *u) {
    pthread_mutex_lock(&a->table_lock);
    u->sessions = (uint32_t)a->n_sessions;
    u->pool_ready = (uint32_t)a->pool_ready;
    u->pool_target = a->pool_target;
    u->memory_reserved_bytes = a->memory_reserved_bytes;
    u->cpu_reserved_millis = a->cpu_reserved_millis;
    u->creates = a->creates_total;
    pthread_mutex_unlock(&a->table_lock);
}

int kf_tenant_valid(const char *tenant) {
    size_t n = strlen(tenant);
    if (n > KF_TENANT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = tenant[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-' || ch == '@'))
            return 0;
    }
    return 1;
}

static int moved_away(const kf_tombstone *t) {
    return !strncmp(t->reason, KF_TOMB_MOVED_PREFIX, strlen(KF_TOMB_MOVED_PREFIX));
}

static int id_check(kf_agent *a, const char *id, int coming_back, kf_error *err) {
    if (!kf_session_id_valid(id))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "session id '%.64s' is malformed (1-%d of a-z, 0-9, '-', '_')", id,
                            KF_ID_MAX);
    pthread_mutex_lock(&a->table_lock);
    int found;
    find_index(a, id, &found);
    int r = 0;
    if (found)
        r = kf_error_set(err, -EEXIST, KF_ST_ALREADY_EXISTS, "session %s already exists on this node", id);
    for (size_t k = 0; !r && k < KF_TOMBSTONES; k++) {
        kf_tombstone *t = &a->tombstones[k];
        if (t->id[0] && !strcmp(t->id, id) && !(coming_back && moved_away(t)))
            r = kf_error_set(err, -EEXIST, KF_ST_ALREADY_EXISTS,
                             "session id %s was used on this node (it %s)", id, t->reason);
    }
    pthread_mutex_unlock(&a->table_lock);
    return r;
}

static kf_session *lookup(kf_agent *a, const char *id, int exported_too, kf_error *err) {
    if (!kf_session_id_valid(id)) {
        kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                     "session id '%.64s' is malformed (expected letters, digits, '-', '_')", id);
        return NULL;
    }
    pthread_mutex_lock(&a->table_lock);
    int found;
    size_t i = find_index(a, id, &found);
    if (found) {
        kf_session *s = a->sessions[i];
        if (s->state == KF_SS_EXPORTED && !exported_too) {
            kf_error_set(err, -EAGAIN, KF_ST_UNAVAILABLE, "session %s is being moved to another node (%s)",
                         id, s->move_reason[0] ? s->move_reason : "no reason given");
            pthread_mutex_unlock(&a->table_lock);
            return NULL;
        }
        s->refs++;
        pthread_mutex_unlock(&a->table_lock);
        return s;
    }
    for (size_t k = 0; k < KF_TOMBSTONES; k++) {
        kf_tombstone *t = &a->tombstones[k];
        if (t->id[0] && !strcmp(t->id, id)) {
            if (moved_away(t))
                kf_error_set(err, -ENOENT, KF_ST_NOT_FOUND, "session %s %s", id, t->reason);
            else
                kf_error_set(err, -ESTALE, KF_ST_FAILED_PRECONDITION, "session %s %s", id, t->reason);
            pthread_mutex_unlock(&a->table_lock);
            return NULL;
        }
    }
    pthread_mutex_unlock(&a->table_lock);
    kf_error_set(err, -ENOENT, KF_ST_NOT_FOUND, "no session %s on this node", id);
    return NULL;
}

int kf_agent_id_check(kf_agent *a, const char *id, kf_error *err) { return id_check(a, id, 0, err); }

int kf_agent_id_check_import(kf_agent *a, const char *id, kf_error *err) { return id_check(a, id, 1, err); }

void kf_agent_tombstone_forget_moved(kf_agent *a, const char *id) {
    pthread_mutex_lock(&a->table_lock);
    for (size_t k = 0; k < KF_TOMBSTONES; k++) {
        kf_tombstone *t = &a->tombstones[k];
        if (t->id[0] && !strcmp(t->id, id) && moved_away(t))
            memset(t, 0, sizeof(*t));
    }
    pthread_mutex_unlock(&a->table_lock);
}

kf_session *kf_agent_lookup(kf_agent *a, const char *id, kf_error *err) {
    return lookup(a, id, 0, err);
}

kf_session *kf_agent_lookup_any(kf_agent *a, const char *id, kf_error *err) {
    return lookup(a, id, 1, err);
}

void kf_agent_tombstone_load(kf_agent *a, const char *id, const char *reason, int64_t when_ms) {
    pthread_mutex_lock(&a->table_lock);
    add_tombstone_locked(a, id, reason);
    a->tombstones[(a->tomb_next + KF_TOMBSTONES - 1) % KF_TOMBSTONES].when_ms = when_ms;
    pthread_mutex_unlock(&a->table_lock);
}

int kf_agent_list(kf_agent *a, kf_session ***out, size_t *n) {
    pthread_mutex_lock(&a->table_lock);
    kf_session **arr = calloc(a->n_sessions ? a->n_sessions : 1, sizeof(*arr));
    if (!arr) {
        pthread_mutex_unlock(&a->table_lock);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < a->sessions_cap && k < a->n_sessions; i++) {
        if (!a->sessions[i])
            continue;
        a->sessions[i]->refs++;
        arr[k++] = a->sessions[i];
    }
    pthread_mutex_unlock(&a->table_lock);
    *out = arr;
    *n = k;
    return 0;
}

/* Next fit, not first fit: a freed uid goes to the back of the line, so it
 * is handed out again only after every other free uid was. Nothing of a
 * deleted session survives its teardown, but a uid that is not reused at
 * once keeps whatever might have (a process caught mid-exit, a file in a
 * shared place) from belonging to the next session. */
int kf_agent_slot_alloc(kf_agent *a, uint32_t *slot) {
    pthread_mutex_lock(&a->table_lock);
    uint32_t n = a->cfg.uid_count;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (a->slot_next + k) % n;
        if (!a->slots[i]) {
            a->slots[i] = 1;
            a->slot_next = (i + 1) % n;
            *slot = i;
            pthread_mutex_unlock(&a->table_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&a->table_lock);
    return -ENOSPC;
}

void kf_agent_slot_mark(kf_agent *a, uint32_t slot) {
    pthread_mutex_lock(&a->table_lock);
    if (slot < a->cfg.uid_count) {
        a->slots[slot] = 1;
        if (slot >= a->slot_next)
            a->slot_next = (slot + 1) % a->cfg.uid_count;
    }
    pthread_mutex_unlock(&a->table_lock);
}

void kf_agent_slot_free(kf_agent *a, uint32_t slot) {
    pthread_mutex_lock(&a->table_lock);
    if (slot < a->cfg.uid_count)
        a->slots[slot] = 0;
    pthread_mutex_unlock(&a->table_lock);
}
