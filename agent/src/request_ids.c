/* request_ids.c - idempotent CreateSession on a lone agent (see
 * request_ids.h for the contract).
 *
 * Owns: the records, in memory (a hash by name and a list in creation
 * order, under `mu`) and on disk, one file per record:
 *   STATE/requests/<name> = {"tenant", "request_id", "session_id",
 *                            "fingerprint", "created_unix_ms", "done"}
 * where <name> is the SHA-256 (hex) of tenant NUL request id, so any
 * request id of up to 128 bytes gives a short, safe file name.
 *
 * A create writes its record twice, each atomically (temp file + rename,
 * no fsync: it must survive an agent crash, as session.json does): before
 * kf_op_create as "pending" with the session id it chose, and after it as
 * "done". Racing creates of one id find the pending entry and wait on
 * `cv`. After kill -9, a pending record is done if its session was
 * re-adopted and dropped otherwise (its create never finished), so a
 * session the client may have been told about is never made twice, and a
 * failed create leaves nothing.
 *
 * Retention: a record answers for KF_AGENT_REQUEST_TTL_MS after its
 * create (wall clock, so a restart does not extend it); at most `max` are
 * kept, the oldest evicted first. Expired records are dropped when a
 * create meets them and at start. Pending records are never evicted, so
 * the bound may be exceeded by the creates in flight. Cost: ~250 bytes of
 * memory and one small file per record (~25 MB at 100,000).
 */
#include "request_ids.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/request_id.h"
#include "kf/util.h"

#define BUCKETS (1u << 17)
#define RECORD_MAX 4096 /* bytes of a record file */
#define PATH_LEN 600    /* the dir (< 300) and a file name (<= 255) */

typedef struct rid_entry {
    struct rid_entry *hnext;       /* hash chain */
    struct rid_entry *prev, *next; /* creation order, oldest first */
    int64_t created_unix_ms;
    bool done; /* false: its create is in flight, and owns the entry */
    char name[KF_REQUEST_FP_LEN + 1];
    char session_id[KF_ID_MAX + 1];
    char fp[KF_REQUEST_FP_LEN + 1];
} rid_entry;

struct kf_agent_requests {
    char dir[300];
    size_t max;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* an entry became done or was dropped */
    rid_entry **buckets;
    rid_entry *oldest, *newest;
    size_t n;
};

static rid_entry **bucket(kf_agent_requests *r, const char *name) {
    /* the name is a digest: its first hex digits are a uniform hash */
    uint32_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h << 4 | (uint32_t)(name[i] <= '9' ? name[i] - '0' : name[i] - 'a' + 10);
    return &r->buckets[h & (BUCKETS - 1)];
}

static rid_entry *find(kf_agent_requests *r, const char *name) {
    for (rid_entry *e = *bucket(r, name); e; e = e->hnext)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

/* Appends e as the newest. Under mu. */
static void link_entry(kf_agent_requests *r, rid_entry *e) {
    rid_entry **b = bucket(r, e->name);
    e->hnext = *b;
    *b = e;
    e->prev = r->newest;
    e->next = NULL;
    if (r->newest)
        r->newest->next = e;
    else
        r->oldest = e;
    r->newest = e;
    r->n++;
}

static void path_of(const kf_agent_requests *r, const char *name, char *out, size_t size) {
    snprintf(out, size, "%s/%s", r->dir, name);
}

/* Unlinks e from memory, and with `file` deletes its record, and frees
 * it. Under mu (deleting there keeps a later record of the same name
 * from being deleted instead). */
static void drop(kf_agent_requests *r, rid_entry *e, bool file) {
    rid_entry **p = bucket(r, e->name);
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        r->oldest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        r->newest = e->prev;
    r->n--;
    if (file) {
        char path[PATH_LEN];
        path_of(r, e->name, path, sizeof(path));
        unlink(path);
    }
    free(e);
}

static bool expired(const rid_entry *e, int64_t now_unix_ms) {
    return e->done && now_unix_ms - e->created_unix_ms >= KF_AGENT_REQUEST_TTL_MS;
}

/* Makes room for one more record: drops expired ones, then the oldest
 * done ones past max. O(1) per record dropped. Under mu. */
static void make_room(kf_agent_requests *r, size_t room) {
    int64_t now = kf_unix_ms();
    while (r->oldest && r->oldest->done && (expired(r->oldest, now) || r->n + room > r->max))
        drop(r, r->oldest, true);
}

/* Writes e's record, as pending or `done`. e's fields other than `done`
 * are fixed once it is linked, so this needs no lock. */
static int save(const kf_agent_requests *r, const rid_entry *e, bool done, const char *tenant,
                const char *rid) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    cJSON_AddStringToObject(o, "tenant", tenant);
    cJSON_AddStringToObject(o, "request_id", rid);
    cJSON_AddStringToObject(o, "session_id", e->session_id);
    cJSON_AddStringToObject(o, "fingerprint", e->fp);
    cJSON_AddNumberToObject(o, "created_unix_ms", (double)e->created_unix_ms);
    cJSON_AddBoolToObject(o, "done", done);
    _cleanup_free_ char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        return -ENOMEM;
    char path[PATH_LEN];
    path_of(r, e->name, path, sizeof(path));
    return kf_write_file_atomic(path, text, strlen(text), 0600, 0);
}

/* ---- loading ------------------------------------------------------------ */

static bool hex_name(const char *s) {
    size_t n = strspn(s, "0123456789abcdef");
    return n == KF_REQUEST_FP_LEN && !s[n];
}

/* Reads one record file into a new entry; NULL if it is malformed. The
 * tenant and request id are rewritten as they were (a pending record that
 * turns out done). */
static rid_entry *load_one(const char *path, const char *name, char *tenant, char *rid) {
    _cleanup_free_ char *text = NULL;
    if (kf_read_file(path, RECORD_MAX, &text, NULL) < 0)
        return NULL;
    cJSON *o = cJSON_Parse(text);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "tenant");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "request_id");
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(o, "session_id");
    const cJSON *fp = cJSON_GetObjectItemCaseSensitive(o, "fingerprint");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(o, "created_unix_ms");
    rid_entry *e = NULL;
    if (cJSON_IsString(t) && strlen(t->valuestring) <= KF_TENANT_MAX && cJSON_IsString(q) &&
        strlen(q->valuestring) <= KF_REQUEST_ID_MAX && cJSON_IsString(sid) &&
        kf_session_id_valid(sid->valuestring) && cJSON_IsString(fp) &&
        strlen(fp->valuestring) == KF_REQUEST_FP_LEN && cJSON_IsNumber(at) && (e = calloc(1, sizeof(*e)))) {
        memcpy(e->name, name, KF_REQUEST_FP_LEN); /* checked by hex_name(); calloc'd the NUL */
        snprintf(e->session_id, sizeof(e->session_id), "%s", sid->valuestring);
        snprintf(e->fp, sizeof(e->fp), "%s", fp->valuestring);
        e->created_unix_ms = (int64_t)at->valuedouble;
        e->done = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "done"));
        strcpy(tenant, t->valuestring);
        strcpy(rid, q->valuestring);
    }
    cJSON_Delete(o);
    return e;
}

/* A pending record after a restart: its create finished exactly if the
 * session was re-adopted. */
static bool settle_pending(kf_agent *a, const kf_agent_requests *r, rid_entry *e, const char *tenant,
                           const char *rid) {
    kf_error err = {0};
    kf_session *s = kf_agent_lookup_any(a, e->session_id, &err);
    if (!s)
        return false;
    kf_session_unref(a, s);
    e->done = true;
    if (save(r, e, true, tenant, rid) < 0)
        kf_warn("request id record %s: cannot mark it done", e->name);
    return true;
}

static int cmp_age(const void *x, const void *y) {
    const rid_entry *a = *(rid_entry *const *)x, *b = *(rid_entry *const *)y;
    return (a->created_unix_ms > b->created_unix_ms) - (a->created_unix_ms < b->created_unix_ms);
}

int kf_requests_open(kf_agent *a, size_t max, kf_agent_requests **out, kf_error *err) {
    kf_agent_requests *r = calloc(1, sizeof(*r));
    if (!r || !(r->buckets = calloc(BUCKETS, sizeof(*r->buckets)))) {
        free(r);
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    }
    r->max = max ? max : 1;
    pthread_mutex_init(&r->mu, NULL);
    kf_cond_init_mono(&r->cv);
    snprintf(r->dir, sizeof(r->dir), "%s/requests", a->cfg.state_dir);
    int rc = kf_mkdir_p(r->dir, 0700);
    _cleanup_closedir_ DIR *d = rc < 0 ? NULL : opendir(r->dir);
    if (!d) {
        rc = rc < 0 ? rc : -errno;
        kf_requests_free(r);
        return kf_error_set(err, rc, 0, "cannot open %s/requests", a->cfg.state_dir);
    }
    rid_entry **all = NULL;
    size_t n = 0, cap = 0, dropped = 0;
    int64_t now = kf_unix_ms();
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[PATH_LEN], tenant[KF_TENANT_MAX + 1], rid[KF_REQUEST_ID_MAX + 1];
        path_of(r, de->d_name, path, sizeof(path));
        rid_entry *e = hex_name(de->d_name) ? load_one(path, de->d_name, tenant, rid) : NULL;
        if (e && !e->done && !settle_pending(a, r, e, tenant, rid)) {
            free(e);
            e = NULL;
        }
        if (e && expired(e, now)) {
            free(e);
            e = NULL;
        }
        if (e && n == cap) {
            cap = cap ? 2 * cap : 1024;
            rid_entry **grown = realloc(all, cap * sizeof(*all));
            if (!grown) {
                free(e);
                e = NULL;
            } else {
                all = grown;
            }
        }
        if (!e) {
            unlink(path); /* a temp file a crash left, malformed, expired or unfinished */
            dropped++;
            continue;
        }
        all[n++] = e;
    }
    if (n)
        qsort(all, n, sizeof(*all), cmp_age);
    for (size_t i = 0; i < n; i++)
        link_entry(r, all[i]);
    free(all);
    make_room(r, 0);
    kf_info("request ids: %zu records loaded, %zu files dropped", r->n, dropped);
    *out = r;
    return 0;
}

kf_agent_requests *kf_requests_free(kf_agent_requests *r) {
    if (!r)
        return NULL;
    while (r->oldest)
        drop(r, r->oldest, false);
    free(r->buckets);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return NULL;
}

/* ---- create ------------------------------------------------------------- */

/* The answer for a record that is done: its session, or why not. */
static int existing(kf_agent *a, const char *rid, const char *sid, kf_session **out, kf_error *err) {
    kf_error e = {0};
    kf_session *s = kf_agent_lookup(a, sid, &e);
    if (s) {
        kf_info("create with request id %.128s: session %s (made earlier)", rid, sid);
        *out = s;
        return 0;
    }
    kf_status st = kf_error_status(&e);
    if (st == KF_ST_NOT_FOUND || st == KF_ST_FAILED_PRECONDITION)
        return kf_request_err_gone(err, rid, sid);
    if (err)
        *err = e; /* being moved: UNAVAILABLE, retryable */
    return e.code;
}

/* Makes the session for a new record e (pending, owned by this call) and
 * settles the record: done, or dropped if the create failed. */
static int create_recorded(kf_agent_requests *r, kf_agent *a, rid_entry *e, const char *tenant,
                           const char *rid, const kf_limits *want, kf_session **out, kf_error *err) {
    int rc = save(r, e, false, tenant ? tenant : "", rid);
    if (rc < 0)
        kf_error_set(err, rc, 0, "cannot record request id %.128s", rid);
    else
        rc = kf_op_create(a, e->session_id, tenant, want, out, err);
    if (rc == 0 && save(r, e, true, tenant ? tenant : "", rid) < 0) /* settles on restart */
        kf_warn("request id %.128s: cannot mark its record done", rid);
    pthread_mutex_lock(&r->mu);
    if (rc < 0)
        drop(r, e, true);
    else
        e->done = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int kf_requests_create(kf_agent_requests *r, kf_agent *a, const char *tenant,
                       const Kfleet__V1__CreateSessionRequest *req, const kf_limits *want,
                       int64_t deadline_ms, kf_session **out, kf_error *err) {
    const char *rid = req->request_id;
    char fp[KF_REQUEST_FP_LEN + 1], name[KF_REQUEST_FP_LEN + 1], sid[KF_ID_MAX + 1];
    int rc = kf_request_id_check(rid, err);
    if (rc < 0)
        return rc;
    /* The scope: the tenant and the id, NUL between (neither holds one). */
    char scoped[KF_TENANT_MAX + 1 + KF_REQUEST_ID_MAX + 1];
    int len = snprintf(scoped, sizeof(scoped), "%s%c%s", tenant ? tenant : "", 0, rid);
    if ((rc = kf_request_fingerprint(req, fp)) < 0 || (rc = kf_sha256_hex(scoped, (size_t)len, name)) < 0)
        return kf_error_set(err, rc, 0, "cannot hash request id %.128s", rid);

    pthread_mutex_lock(&r->mu);
    rid_entry *e;
    while ((e = find(r, name))) {
        if (expired(e, kf_unix_ms())) {
            drop(r, e, true);
            break;
        }
        snprintf(sid, sizeof(sid), "%s", e->session_id);
        if (strcmp(e->fp, fp) != 0) {
            pthread_mutex_unlock(&r->mu);
            return kf_request_err_conflict(err, rid, sid);
        }
        if (e->done) {
            pthread_mutex_unlock(&r->mu);
            return existing(a, rid, sid, out, err);
        }
        int64_t left = deadline_ms - kf_mono_ms();
        if (left <= 0) {
            pthread_mutex_unlock(&r->mu);
            return kf_error_set(err, -EAGAIN, KF_ST_UNAVAILABLE,
                                "session %s (request id %.128s) is still being created by another "
                                "create; retry",
                                sid, rid);
        }
        struct timespec until = kf_mono_deadline(left);
        pthread_cond_timedwait(&r->cv, &r->mu, &until);
    }
    e = calloc(1, sizeof(*e));
    if (!e || kf_random_id(e->session_id, sizeof(e->session_id), "s-", 20) < 0) {
        pthread_mutex_unlock(&r->mu);
        free(e);
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    }
    memcpy(e->name, name, sizeof(name));
    memcpy(e->fp, fp, sizeof(fp));
    e->created_unix_ms = kf_unix_ms();
    make_room(r, 1);
    link_entry(r, e);
    pthread_mutex_unlock(&r->mu);
    return create_recorded(r, a, e, tenant, rid, want, out, err);
}
