/* registry.c - the registry thread: registers this node in etcd under a
 * lease, keeps the lease alive (through a lease keeper thread), publishes
 * the node's usage when it changes (polled once a second, so at most one
 * write a second), reads the node's admin and pool records at each
 * registration and has them followed by watches (registry_watch.c: the
 * pool record's target becomes the warm pool's size, bounded by
 * --pool-max; without a record the pool keeps --pool), and
 * registers again, with backoff, whenever the lease is lost (keeper report,
 * a write refused for an unknown lease, etcd restarted or wiped). On stop it
 * revokes the lease so the node's records vanish at once.
 *
 * Takeover: the last lease is kept in STATE/node.lease. The node and usage
 * records are written together (one txn) only if the node record is absent
 * or still sits on that lease,
 * so a restarted agent (even after kill -9) takes its record over at once,
 * while a second agent started under the same node name waits instead of
 * fighting over it.
 *
 * The thread owns the etcd client, the lease, the keeper, the record
 * watches and the last usage published; `mu` guards only the flags the
 * keeper and handler threads touch (stop, lost, registered).
 */
#include "registry.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/etcd.h"
#include "kf/log.h"
#include "kf/util.h"
#include "metrics.h"
#include "registry_watch.h"

#define USAGE_INTERVAL_MS 1000 /* poll, and at most one usage write, per second */
/* The watches carry every change of the admin and pool records; this
 * re-read is a safety net for the one case they cannot see: an etcd whose
 * revision went back (restored from a backup) while our lease survived it.
 * A watch then resumes at a revision the store has not reached and stays
 * silent until it does. Two ranges and two new streams a minute are cheap. */
#define RESYNC_INTERVAL_MS 60000
#define RESYNC_RETRY_MS 1000 /* after a failed read */
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000
#define ETCD_REQUEST_TIMEOUT_MS 3000 /* also bounds how long a stop can wait */
#define ETCD_CONNECT_TIMEOUT_MS 1000
#define PASSWORD_MAX 1024

struct kf_registry {
    kf_agent *a;
    kf_etcd *etcd;
    char node_key[128];
    char usage_key[128];
    char lease_path[300]; /* STATE/node.lease */
    char *node_json;      /* the node record, fixed for this process */

    pthread_t thread;
    bool running;

    pthread_mutex_t mu;
    pthread_cond_t cv;    /* CLOCK_MONOTONIC */
    bool stop;            /* under mu */
    bool lost;            /* under mu: the keeper reported the lease lost */
    char lost_why[KF_ERROR_MSG_MAX + 64]; /* under mu */
    bool registered;                      /* under mu */

    /* the registry thread's own */
    int64_t lease;        /* 0 = not registered */
    int64_t ttl_s;
    int64_t prev_lease;   /* a lease our records may still sit on */
    kf_etcd_keeper *keeper;
    kf_registry_watch *records; /* the admin and pool records */
    kf_node_usage published;
    bool published_ok;
    char last_warn[KF_ERROR_MSG_MAX + 128];
};

/* Logs a warning unless it repeats the previous one (etcd down = one line,
 * not one per retry). */
static void warn_once(kf_registry *r, const char *msg) {
    if (!strcmp(r->last_warn, msg))
        return;
    snprintf(r->last_warn, sizeof(r->last_warn), "%s", msg);
    kf_warn("registry: %s", msg);
}

static void set_registered(kf_registry *r, bool on) {
    pthread_mutex_lock(&r->mu);
    r->registered = on;
    pthread_mutex_unlock(&r->mu);
}

static void save_lease(kf_registry *r, int64_t lease) {
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%" PRId64 "\n", lease);
    if (kf_write_file_atomic(r->lease_path, buf, (size_t)n, 0600, 0) < 0)
        kf_warn("registry: cannot write %s: %s", r->lease_path, strerror(errno));
}

static int64_t load_lease(kf_registry *r) {
    _cleanup_free_ char *text = NULL;
    if (kf_read_file(r->lease_path, 64, &text, NULL) < 0)
        return 0;
    return strtoll(text, NULL, 10);
}

/* Runs on the keeper's thread: flag it, wake the registry thread. */
static void on_lease_lost(int64_t lease, int code, const char *message, void *userdata) {
    kf_registry *r = userdata;
    pthread_mutex_lock(&r->mu);
    r->lost = true;
    snprintf(r->lost_why, sizeof(r->lost_why), "lease %" PRId64 " lost (%s): %s", lease,
             code == -ENOENT ? "gone" : "not refreshed in time", message);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Forget the current lease (it may still exist: it becomes prev_lease, so
 * the next registration may take its records over). */
static void drop_lease(kf_registry *r, const char *why) {
    r->keeper = kf_etcd_lease_keeper_stop(r->keeper);
    pthread_mutex_lock(&r->mu);
    r->lost = false; /* the stopped keeper's report, if any, is this very loss */
    pthread_mutex_unlock(&r->mu);
    if (r->lease) {
        kf_warn("registry: %s; registering again", why);
        r->prev_lease = r->lease;
    }
    r->lease = 0;
    r->published_ok = false;
    set_registered(r, false);
}

/* Put the node and usage records on `lease`, together (one txn), if the
 * node record is absent or sits on prev_lease. -EADDRINUSE if another
 * agent's lease holds it. */
static int claim_node_key(kf_registry *r, int64_t lease, const char *usage_json, kf_error *err) {
    size_t kl = strlen(r->node_key);
    kf_etcd_op puts[2] = {
        {.type = KF_ETCD_OP_PUT, .key = r->node_key, .key_len = kl, .value = r->node_json,
         .value_len = strlen(r->node_json), .lease = lease},
        {.type = KF_ETCD_OP_PUT, .key = r->usage_key, .key_len = strlen(r->usage_key),
         .value = usage_json, .value_len = strlen(usage_json), .lease = lease},
    };
    kf_etcd_cmp absent = {.key = r->node_key, .key_len = kl, .target = KF_ETCD_CMP_CREATE,
                          .result = KF_ETCD_CMP_EQUAL, .number = 0};
    bool ok = false;
    int rc = kf_etcd_txn(r->etcd, &absent, 1, puts, 2, NULL, 0, &ok, NULL, err);
    if (rc < 0 || ok)
        return rc;
    if (r->prev_lease) {
        kf_etcd_cmp mine = {.key = r->node_key, .key_len = kl, .target = KF_ETCD_CMP_LEASE,
                            .result = KF_ETCD_CMP_EQUAL, .number = r->prev_lease};
        rc = kf_etcd_txn(r->etcd, &mine, 1, puts, 2, NULL, 0, &ok, NULL, err);
        if (rc < 0 || ok)
            return rc;
    }
    kf_etcd_kv kv = {0};
    int64_t holder = kf_etcd_get(r->etcd, r->node_key, kl, &kv, NULL) == 0 ? kv.lease : 0;
    kf_etcd_kv_done(&kv);
    return kf_error_set(err, -EADDRINUSE, KF_ST_ALREADY_EXISTS,
                        "node name %s is registered by another agent (lease %" PRId64
                        "); waiting for that lease to end",
                        r->a->cfg.node_name, holder);
}

/* Publish the usage record if it changed since the last write. A write
 * refused because the lease is gone drops the lease. */
static void publish_usage(kf_registry *r) {
    kf_node_usage u;
    kf_agent_usage(r->a, &u);
    if (r->published_ok && kf_node_usage_equal(&u, &r->published))
        return;
    _cleanup_free_ char *json = kf_node_usage_json(&u, kf_unix_ms());
    if (!json)
        return;
    kf_error err = {0};
    int rc = kf_etcd_put(r->etcd, r->usage_key, strlen(r->usage_key), json, strlen(json), r->lease,
                         NULL, &err);
    if (rc == -ENOENT) {
        drop_lease(r, "the usage write was refused: lease gone");
        return;
    }
    if (rc < 0) {
        char msg[sizeof(r->last_warn)];
        snprintf(msg, sizeof(msg), "cannot publish usage: %s", err.msg);
        warn_once(r, msg);
        r->published_ok = false;
        return;
    }
    r->published = u;
    r->published_ok = true;
}

/* Grant a lease, claim the node record (with the usage record), start the
 * keeper. On failure nothing is left on a new lease (best effort revoke). */
static int register_node(kf_registry *r, kf_error *err) {
    kf_node_usage u;
    kf_agent_usage(r->a, &u);
    _cleanup_free_ char *usage_json = kf_node_usage_json(&u, kf_unix_ms());
    if (!usage_json)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    int64_t lease = 0, ttl = 0;
    int rc = kf_etcd_lease_grant(r->etcd, r->a->cfg.lease_ttl_s, &lease, &ttl, err);
    if (rc < 0)
        return rc;
    rc = claim_node_key(r, lease, usage_json, err);
    if (rc == 0)
        rc = kf_etcd_lease_keeper_start(r->etcd, lease, ttl, on_lease_lost, r, &r->keeper, err);
    if (rc < 0) {
        /* If this fails too the lease lapses with its TTL; until then our
         * record may sit on it, so the next attempt may take it over. */
        if (kf_etcd_lease_revoke(r->etcd, lease, NULL) < 0)
            r->prev_lease = lease;
        return rc;
    }
    r->lease = lease;
    r->ttl_s = ttl;
    r->published = u;
    r->published_ok = true;
    save_lease(r, lease);
    /* Our records are on the new lease now: the old one may go. */
    if (r->prev_lease && r->prev_lease != lease)
        kf_etcd_lease_revoke(r->etcd, r->prev_lease, NULL);
    r->prev_lease = 0;
    r->last_warn[0] = '\0';
    set_registered(r, true);
    kf_info("registry: node %s registered (lease %" PRId64 ", TTL %" PRId64 " s)",
            r->a->cfg.node_name, lease, ttl);
    return 0;
}

/* Read the admin and pool records and (re)start their watches. Returns
 * the monotonic time of the next re-read. */
static int64_t resync_records(kf_registry *r, int64_t now) {
    kf_error err = {0};
    if (kf_registry_watch_sync(r->records, &err) < 0) {
        char msg[sizeof(r->last_warn)];
        snprintf(msg, sizeof(msg), "%s (the last values stay; retrying)", err.msg);
        warn_once(r, msg);
        return now + RESYNC_RETRY_MS;
    }
    return now + RESYNC_INTERVAL_MS;
}

/* Sleeps until the monotonic time `until_ms`, a lost lease or stop.
 * Returns true when stopping. */
static bool registry_sleep(kf_registry *r, int64_t until_ms) {
    struct timespec ts = {.tv_sec = until_ms / 1000, .tv_nsec = (until_ms % 1000) * 1000000};
    pthread_mutex_lock(&r->mu);
    while (!r->stop && !r->lost && kf_mono_ms() < until_ms)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT)
            break;
    bool stop = r->stop;
    pthread_mutex_unlock(&r->mu);
    return stop;
}

static void deregister(kf_registry *r) {
    r->keeper = kf_etcd_lease_keeper_stop(r->keeper);
    if (!r->lease)
        return;
    kf_error err = {0};
    int rc = kf_etcd_lease_revoke(r->etcd, r->lease, &err);
    if (rc == 0 || rc == -ENOENT) {
        unlink(r->lease_path);
        kf_info("registry: node %s deregistered", r->a->cfg.node_name);
    } else {
        kf_warn("registry: cannot revoke lease %" PRId64 " (%s); the node record lapses in %" PRId64
                " s", r->lease, err.msg, r->ttl_s);
    }
    r->lease = 0;
    set_registered(r, false);
}

static void *registry_main(void *arg) {
    kf_registry *r = arg;
    int64_t backoff = BACKOFF_MIN_MS, wake = 0, next_usage = 0, next_resync = 0;
    while (!registry_sleep(r, wake)) {
        pthread_mutex_lock(&r->mu);
        bool lost = r->lost;
        char why[sizeof(r->lost_why)];
        snprintf(why, sizeof(why), "%s", r->lost_why);
        r->lost = false;
        pthread_mutex_unlock(&r->mu);
        if (lost)
            drop_lease(r, why);
        int64_t now = kf_mono_ms();
        if (!r->lease) {
            kf_error err = {0};
            if (register_node(r, &err) < 0) {
                char msg[sizeof(r->last_warn)];
                snprintf(msg, sizeof(msg), "cannot register: %s (retrying)", err.msg);
                warn_once(r, msg);
                wake = now + backoff;
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            backoff = BACKOFF_MIN_MS;
            next_usage = now + USAGE_INTERVAL_MS; /* registering published it */
            next_resync = now; /* etcd may have been wiped: read afresh */
        }
        if (now >= next_usage) {
            publish_usage(r);
            next_usage = now + USAGE_INTERVAL_MS;
            if (!r->lease) {
                wake = now;
                continue;
            }
        }
        if (now >= next_resync)
            next_resync = resync_records(r, now);
        wake = next_usage < next_resync ? next_usage : next_resync;
    }
    kf_registry_watch_stop(r->records);
    deregister(r);
    return NULL;
}

/* The etcd password, from a file (a command line is readable by everyone
 * through /proc). Trailing newlines are dropped. */
static int read_password(const char *path, char **out, kf_error *err) {
    size_t len = 0;
    int rc = kf_read_file(path, PASSWORD_MAX, out, &len);
    if (rc < 0)
        return kf_error_set(err, rc, 0, "--etcd-password-file %s: %s", path, strerror(-rc));
    while (len && ((*out)[len - 1] == '\n' || (*out)[len - 1] == '\r'))
        (*out)[--len] = '\0';
    return 0;
}

int kf_registry_new(kf_agent *a, kf_registry **out, kf_error *err) {
    const kf_agent_config *c = &a->cfg;
    *out = NULL;
    kf_registry *r = calloc(1, sizeof(*r));
    if (!r)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    r->a = a;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(r->node_key, sizeof(r->node_key), KF_KEY_NODES "%s", c->node_name);
    snprintf(r->usage_key, sizeof(r->usage_key), KF_KEY_USAGE "%s", c->node_name);
    snprintf(r->lease_path, sizeof(r->lease_path), "%s/node.lease", c->state_dir);
    r->prev_lease = load_lease(r);

    kf_node_info info = {
        .id = c->node_name, .address = c->advertise, .memory_bytes = c->capacity_memory_bytes,
        .cpu_millis = c->capacity_cpu_millis, .session_slots = c->max_sessions, .labels = c->labels,
        .n_labels = c->n_labels, .version = KF_VERSION, .tls = c->tls_cert[0] != '\0',
        .started_unix_ms = kf_unix_ms(),
    };
    r->node_json = kf_node_info_json(&info);
    if (!r->node_json) {
        kf_registry_free(r);
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    }

    _cleanup_free_ char *password = NULL;
    int rc = 0;
    if (c->etcd_password_file[0])
        rc = read_password(c->etcd_password_file, &password, err);
    kf_etcd_opts o = {
        .endpoints = c->etcd_endpoints,
        .request_timeout_ms = ETCD_REQUEST_TIMEOUT_MS,
        .connect_timeout_ms = ETCD_CONNECT_TIMEOUT_MS,
        .ca_file = c->etcd_ca[0] ? c->etcd_ca : NULL,
        .cert_file = c->etcd_cert[0] ? c->etcd_cert : NULL,
        .key_file = c->etcd_key[0] ? c->etcd_key : NULL,
        .username = c->etcd_user[0] ? c->etcd_user : NULL,
        .password = password,
        .observe = kf_etcd_metrics_observe,
        .observe_userdata = kf_agent_metrics_etcd(a->metrics),
    };
    if (rc == 0)
        rc = kf_etcd_client_new(&o, &r->etcd, err); /* copies the strings */
    if (rc == 0)
        rc = kf_registry_watch_new(a, r->etcd, &r->records, err);
    if (password)
        explicit_bzero(password, strlen(password));
    if (rc < 0) {
        kf_registry_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int kf_registry_start(kf_registry *r, kf_error *err) {
    int rc = pthread_create(&r->thread, NULL, registry_main, r);
    if (rc != 0)
        return kf_error_set(err, -rc, 0, "cannot start the registry thread: %s", strerror(rc));
    r->running = true;
    return 0;
}

kf_registry *kf_registry_free(kf_registry *r) {
    if (!r)
        return NULL;
    if (r->running) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    r->keeper = kf_etcd_lease_keeper_stop(r->keeper);
    r->records = kf_registry_watch_free(r->records); /* before the client it uses */
    r->etcd = kf_etcd_client_free(r->etcd);
    free(r->node_json);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
    return NULL;
}

void kf_registry_status_get(kf_registry *r, kf_registry_status *out) {
    pthread_mutex_lock(&r->mu);
    out->registered = r->registered;
    pthread_mutex_unlock(&r->mu);
    kf_registry_watch_admin(r->records, &out->admin, &out->admin_known);
}

kf_etcd *kf_registry_etcd(kf_registry *r) { return r->etcd; }
