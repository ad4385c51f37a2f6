/* main.c - kfleet-scheduler: the cluster front door. Serves the public
 * kfleet.v1.Sessions service (the same one a single agent serves, so
 * kfleetctl works against either), places new sessions on the nodes
 * registered in etcd and forwards every other call to the session's node;
 * and kfleet.v1.Cluster (nodes, their state, cordon/uncordon) for operators.
 * Any number of replicas run at once, each serving every request; one,
 * elected through the etcd leader key, also runs the background loops
 * (node loss -> LOST sessions, reconcile of records against the agents;
 * leader.c). With --tenants every call
 * carries a bearer token naming its tenant, which sees only its own
 * sessions and is held to its quotas.
 *
 * Threads:
 *  - main thread ............ start-up, then sigwait(SIGTERM/SIGINT: orderly
 *                             teardown of server, watches, etcd; SIGHUP:
 *                             re-read the tenants file)
 *  - gRPC server workers .... (common/src/grpc_server.c) wait on the server
 *                             completion queue; the worker that takes a call
 *                             runs its handler as blocking code: a handler
 *                             reads the view and the session table under
 *                             their locks (copies out), then talks to etcd
 *                             and to one agent with no lock held
 *  - view watch threads (3) . (view.c) /kfleet/nodes/, /kfleet/usage/,
 *                             /kfleet/admin/ -> node entries + kf_placement,
 *                             under the view's mutex
 *  - session watch thread ... (session_table.c) /kfleet/sessions/ -> the
 *                             id -> node table, under its mutex
 *  - leader election thread . (leader.c) campaigns for KF_KEY_LEADER; while
 *                             leader, every 500 ms: one node-loss pass
 *                             (node_loss.c) and, when due, one reconcile
 *                             pass (reconcile.c); owns their state and an
 *                             etcd client of its own; blocks on etcd and
 *                             agents with bounded timeouts
 *  - leader lease keeper .... (etcd_keeper.c) refreshes the election lease
 *                             every TTL/3; a loss clears "leading" at once
 *  - leader key watch ....... (etcd_watch.c) wakes the election thread when
 *                             the key changes (a dead leader's key expired)
 *  - gRPC core's own threads (timers, executor)
 *  - nng's HTTP threads ..... (--metrics-listen, sched_metrics.c) /metrics,
 *                             /healthz, /readyz: copy the view out, no etcd I/O
 * The etcd client is shared (its unary calls run on 32 HTTP handles, so
 * concurrent creates' txns are in flight together); each watch has its
 * own HTTP handle.
 */
#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kf/log.h"
#include "kf/util.h"
#include "sched_metrics.h"
#include "scheduler.h"

#define START_LIST_WAIT_MS 5000

int main(int argc, char **argv) {
    kf_log_set_ident("kfleet-scheduler");
    static kf_sched sched;
    kf_sched *s = &sched;
    kf_sched_config_defaults(&s->cfg);
    kf_error err = {0};
    int r = kf_sched_config_parse(&s->cfg, argc, argv, &err);
    if (r == 1)
        return 0;
    if (r < 0) {
        fprintf(stderr, "kfleet-scheduler: %s\n", err.msg);
        return 2;
    }
    if (s->cfg.log_debug)
        kf_log_set_level(KF_LOG_DEBUG);

    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* every thread inherits it */
    signal(SIGPIPE, SIG_IGN);

    if (s->cfg.tenants_file[0] && kf_tenants_load(s->cfg.tenants_file, &s->tenants, &err) < 0) {
        fprintf(stderr, "kfleet-scheduler: %s\n", err.msg);
        return 2;
    }

    if (kf_sched_metrics_new(s, &s->metrics, &err) < 0) {
        kf_err("%s", err.msg);
        return 1;
    }
    kf_etcd_opts eo = {.endpoints = s->cfg.etcd_endpoints, .request_timeout_ms = 3000,
                       .connect_timeout_ms = 1000, .observe = kf_etcd_metrics_observe,
                       .observe_userdata = kf_sched_metrics_etcd(s->metrics)};
    if (kf_etcd_client_new(&eo, &s->etcd, &err) < 0 ||
        (kf_request_ids_new(s->etcd, &s->requests) < 0 && kf_error_set(&err, -ENOMEM, 0, "out of memory") < 0) ||
        (kf_commit_batch_new(s->etcd, s->metrics, &s->commits) < 0 && kf_error_set(&err, -ENOMEM, 0, "out of memory") < 0) ||
        kf_view_start(s->etcd, &s->cfg, START_LIST_WAIT_MS, &s->view, &err) < 0 ||
        kf_session_table_start(s->etcd, START_LIST_WAIT_MS, &s->sessions, &err) < 0 ||
        kf_leader_start(s, &s->leader, &err) < 0) {
        kf_err("%s", err.msg);
        return 1;
    }

    size_t n_methods;
    const kf_method *methods = kf_sched_methods(s, &n_methods);
    kf_server *srv;
    if (kf_server_new(&srv, methods, n_methods, s->cfg.max_calls) < 0) {
        kf_err("cannot create the gRPC server");
        return 1;
    }
    char sockdir[sizeof(s->cfg.listen_unix)];
    memcpy(sockdir, s->cfg.listen_unix, sizeof(sockdir)); /* NUL-terminated by the parser */
    kf_mkdir_p(dirname(sockdir), 0755);
    unlink(s->cfg.listen_unix);
    char addr[sizeof(s->cfg.listen_unix) + 8];
    snprintf(addr, sizeof(addr), "unix:%.*s", (int)sizeof(s->cfg.listen_unix) - 1, s->cfg.listen_unix);
    kf_server_tls tls = {.cert_file = s->cfg.tls_cert, .key_file = s->cfg.tls_key,
                         .client_ca_file = s->cfg.tls_client_ca[0] ? s->cfg.tls_client_ca : NULL};
    if (kf_server_listen(srv, addr, &err) < 0 ||
        (s->cfg.listen_tcp[0] && !s->cfg.tls_cert[0] && kf_server_listen(srv, s->cfg.listen_tcp, &err) < 0) ||
        (s->cfg.listen_tcp[0] && s->cfg.tls_cert[0] && kf_server_listen_tls(srv, s->cfg.listen_tcp, &tls, &err) < 0) ||
        kf_server_start(srv, &err) < 0 || kf_sched_metrics_serve(s->metrics, &err) < 0) {
        kf_err("%s", err.msg);
        return 1;
    }
    chmod(s->cfg.listen_unix, 0660);
    kf_info("serving kfleet.v1.Sessions and kfleet.v1.Cluster on %s%s%s%s (policy %s)", addr,
            s->cfg.listen_tcp[0] ? " and " : "", s->cfg.listen_tcp,
            !s->cfg.tls_cert[0] ? "" : s->cfg.tls_client_ca[0] ? " (mTLS)" : " (TLS)",
            s->cfg.policy == KF_PLACE_BINPACK ? "binpack" : "spread");

    int sig = 0;
    for (;;) {
        sigwait(&stop, &sig);
        if (sig != SIGHUP)
            break;
        if (!s->tenants) {
            kf_info("SIGHUP: no --tenants file to re-read");
            continue;
        }
        kf_error e = {0};
        if (kf_tenants_reload(s->tenants, s->cfg.tenants_file, &e) < 0)
            kf_err("SIGHUP: tenants not reloaded, the previous ones stay: %s", e.msg);
    }
    kf_info("signal %d: stopping", sig);
    kf_sched_metrics_stop(s->metrics); /* its handlers read the view */
    s->leader = kf_leader_free(s->leader); /* resigns: a successor takes over at once */
    kf_server_free(srv);                    /* waits for every handler */
    s->sessions = kf_session_table_free(s->sessions);
    s->view = kf_view_free(s->view);
    s->requests = kf_request_ids_free(s->requests);
    s->commits = kf_commit_batch_free(s->commits);
    s->etcd = kf_etcd_client_free(s->etcd);
    s->tenants = kf_tenants_free(s->tenants);
    s->metrics = kf_sched_metrics_free(s->metrics);
    unlink(s->cfg.listen_unix);
    kf_info("stopped");
    return 0;
}
