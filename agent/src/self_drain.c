/* self_drain.c - `kfleet-agent --drain-on-stop DUR`: on SIGTERM, before
 * stopping, the agent cordons its node and asks the cluster to drain it
 * (it writes a running drain record, /kfleet/drains/<node>, unless one is
 * running already), then keeps serving while the elected scheduler moves
 * its sessions away (ExportSession / ReleaseSession come in as usual). It
 * stops when it holds no session any more, when the drain ended (done,
 * cancelled, deadline), or after DUR, whichever comes first. Sessions
 * still here then stay on disk and are adopted by the next start, as
 * without the option: nothing is lost.
 *
 * The node stays cordoned afterwards (like `kfleetctl node drain`): an
 * operator uncordons it when the maintenance is over.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "kf/node_record.h"
#include "kf/util.h"
#include "registry.h"
#include "self_drain.h"

#define POLL_MS 500
#define PARALLEL 4
#define BY "kfleet-agent"

static size_t sessions_held(kf_agent *a) {
    kf_node_usage u;
    kf_agent_usage(a, &u);
    return u.sessions;
}

/* The record's state, "" if there is none, NULL on an etcd error. */
static const char *drain_state(kf_etcd *e, const char *key, char *buf, size_t size) {
    kf_etcd_kv kv = {0};
    int rc = kf_etcd_get(e, key, strlen(key), &kv, NULL);
    if (rc == -ENOENT) {
        buf[0] = '\0';
        return buf;
    }
    if (rc < 0)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(kv.value, kv.value_len);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "state");
    snprintf(buf, size, "%s", cJSON_IsString(st) ? st->valuestring : "?");
    cJSON_Delete(j);
    kf_etcd_kv_done(&kv);
    return buf;
}

/* Cordon (if not yet) and write the drain request (if none runs). */
static int request(kf_agent *a, kf_etcd *e, const char *dkey, int64_t deadline, kf_error *err) {
    const char *node = a->cfg.node_name;
    char akey[sizeof(KF_KEY_ADMIN) + 128];
    snprintf(akey, sizeof(akey), "%s%s", KF_KEY_ADMIN, node);
    kf_etcd_kv kv = {0};
    kf_node_admin adm = {0};
    int rc = kf_etcd_get(e, akey, strlen(akey), &kv, err);
    if (rc == 0) {
        kf_node_admin_parse(kv.value, kv.value_len, &adm);
        kf_etcd_kv_done(&kv);
    } else if (rc != -ENOENT) {
        return rc;
    }
    kf_error_clear(err);
    if (!adm.cordoned) {
        adm = (kf_node_admin){.cordoned = true, .at_unix_ms = kf_unix_ms()};
        snprintf(adm.reason, sizeof(adm.reason), "drain: the agent is stopping (SIGTERM)");
        snprintf(adm.by, sizeof(adm.by), BY);
        _cleanup_free_ char *aj = kf_node_admin_json(&adm);
        if (!aj)
            return kf_error_set(err, -ENOMEM, 0, "out of memory");
        if ((rc = kf_etcd_put(e, akey, strlen(akey), aj, strlen(aj), 0, NULL, err)) < 0)
            return rc;
    }
    char st[32];
    if (!drain_state(e, dkey, st, sizeof(st)))
        return kf_error_set(err, -EIO, 0, "cannot read %s", dkey);
    if (!strcmp(st, "running"))
        return 0; /* an operator's drain is on already */
    _cleanup_free_ char *dj = kf_drain_request_json(node, "the agent is stopping (SIGTERM)", BY, kf_unix_ms(),
                                                    deadline, PARALLEL);
    if (!dj)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    return kf_etcd_put(e, dkey, strlen(dkey), dj, strlen(dj), 0, NULL, err);
}

void kf_self_drain(kf_agent *a, const sigset_t *stop) {
    uint32_t max_s = a->cfg.drain_on_stop_s;
    kf_etcd *e = a->registry ? kf_registry_etcd(a->registry) : NULL;
    if (!max_s || !e)
        return;
    size_t held = sessions_held(a);
    if (!held) {
        kf_info("drain on stop: no session here");
        return;
    }
    int64_t deadline = kf_unix_ms() + (int64_t)max_s * 1000;
    char dkey[sizeof(KF_KEY_DRAINS) + 128];
    snprintf(dkey, sizeof(dkey), "%s%s", KF_KEY_DRAINS, a->cfg.node_name);
    kf_error err = {0};
    if (request(a, e, dkey, deadline, &err) < 0) {
        kf_warn("drain on stop: cannot ask for a drain (%s); stopping with %zu session(s) kept here", err.msg,
                held);
        return;
    }
    kf_info("drain on stop: node cordoned, drain asked for %zu session(s); waiting up to %us", held, max_s);
    int64_t last_log = 0;
    for (;;) {
        held = sessions_held(a);
        char st[32];
        const char *state = drain_state(e, dkey, st, sizeof(st));
        if (!held) {
            kf_info("drain on stop: every session moved away");
            return;
        }
        if (state && strcmp(state, "running") != 0) {
            kf_info("drain on stop: the drain ended (%s) with %zu session(s) still here; they stay for the next "
                    "start",
                    state[0] ? state : "record gone", held);
            return;
        }
        int64_t now = kf_unix_ms();
        if (now >= deadline) {
            kf_warn("drain on stop: %us passed with %zu session(s) still here; they stay for the next start", max_s,
                    held);
            return;
        }
        if (now - last_log >= 5000) {
            kf_info("drain on stop: %zu session(s) still here", held);
            last_log = now;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = POLL_MS * 1000000L};
        int sig = sigtimedwait(stop, NULL, &ts);
        if (sig > 0) {
            kf_warn("drain on stop: signal %d: stopping now with %zu session(s) kept here", sig, held);
            return;
        }
    }
}
