/* main.c - kfleet-agent: the node agent. Parses flags, re-adopts the
 * sessions left running by a previous agent, starts the warm-pool and
 * reaper threads, the gRPC server and (with --etcd) the registry thread,
 * then waits for SIGTERM/SIGINT.
 * Stopping the agent does not stop sessions: they keep running and are
 * re-adopted by the next agent (kill -9 included). */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "cgroup.h"
#include "config.h"
#include "metrics.h"
#include "kf/log.h"
#include "kf/util.h"
#include "registry.h"
#include "request_ids.h"
#include "self_drain.h"
#include "service.h"
#include "session.h"
#include "session_move.h"

static void default_sandbox_bin(kf_agent_config *cfg) {
    if (cfg->sandbox_bin[0])
        return;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return;
    self[n] = '\0';
    char *dir = dirname(self);
    const char *cands[] = {"kfleet-sandbox", "sandbox/kfleet-sandbox",
                           "../libexec/kfleet/kfleet-sandbox", "../lib/kfleet/kfleet-sandbox"};
    for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
        char p[PATH_MAX + 64];
        snprintf(p, sizeof(p), "%s/%s", dir, cands[i]);
        if (access(p, X_OK) == 0 && realpath(p, cfg->sandbox_bin))
            return;
    }
}

/* --purge: tear down every sandbox this node holds (sessions and warm
 * pool), for decommissioning a node and for tests. */
static int purge(kf_agent *a) {
    kf_session **all;
    size_t n;
    if (kf_agent_list(a, &all, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            kf_error e = {0};
            int r = kf_op_delete(a, all[i]->id, &e);
            if (r == -EAGAIN) /* exported: being moved */
                r = kf_move_release(a, all[i]->id, "", &e);
            if (r < 0)
                kf_warn("purge %s: %s", all[i]->id, e.msg);
            kf_session_unref(a, all[i]);
        }
        free(all);
    }
    kf_session *s;
    while ((s = kf_pool_claim_any(a))) {
        pthread_mutex_lock(&s->lock);
        kf_sandbox_destroy(a, s);
        pthread_mutex_unlock(&s->lock);
        kf_agent_slot_free(a, s->slot);
        kf_session_unref(a, s);
    }
    kf_info("purged %zu sessions", n);
    return 0;
}

int main(int argc, char **argv) {
    kf_log_set_ident("kfleet-agent");
    kf_agent_config cfg;
    kf_agent_config_defaults(&cfg);
    kf_error err = {0};
    int r = kf_agent_config_parse(&cfg, argc, argv, &err);
    if (r == 1)
        return 0;
    if (r < 0) {
        fprintf(stderr, "kfleet-agent: %s\n", err.msg);
        return 2;
    }
    if (cfg.log_debug)
        kf_log_set_level(KF_LOG_DEBUG);
    default_sandbox_bin(&cfg);
    if (!cfg.sandbox_bin[0] || access(cfg.sandbox_bin, X_OK) != 0) {
        fprintf(stderr, "kfleet-agent: the kfleet-sandbox helper was not found (use --sandbox PATH)\n");
        return 2;
    }
    if (access(cfg.python, X_OK) != 0) {
        fprintf(stderr, "kfleet-agent: %s is not executable (use --python)\n", cfg.python);
        return 2;
    }
    if (geteuid() != 0) {
        fprintf(stderr, "kfleet-agent: must run as root (namespaces, cgroups, loop mounts)\n");
        return 2;
    }

    /* Every thread inherits this mask; main waits for the signals below. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Sandboxes' PID 1s become our children when their helper exits. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);

    static kf_agent agent;
    kf_agent *a = &agent;
    if (kf_agent_init(a, &cfg, &err) < 0 || kf_cgroup_init(&err) < 0) {
        kf_err("%s", err.msg);
        return 1;
    }
    a->zmq_ctx = zmq_ctx_new();
    if (kf_mkdir_p(cfg.state_dir, 0700) < 0) {
        kf_err("cannot create %s: %s", cfg.state_dir, strerror(errno));
        return 1;
    }
    kf_info("starting: node %s, state %s, cgroup v%d, pool %u", cfg.node_name, cfg.state_dir,
            kf_cgroup_mode_get() == KF_CG_V2 ? 2 : 1, cfg.pool_size);
    kf_store_recover(a);
    if (cfg.purge)
        return purge(a);
    /* After recovery: a record whose create a crash cut short is kept
     * only if its session was re-adopted. */
    if (kf_requests_open(a, KF_AGENT_REQUESTS_MAX, &a->requests, &err) < 0) {
        kf_err("%s", err.msg);
        return 1;
    }

    if (kf_agent_metrics_new(a, &a->metrics, &err) < 0) {
        kf_err("%s", err.msg);
        return 1;
    }
    size_t n_methods;
    const kf_method *methods = kf_service_methods(a, &n_methods);
    kf_server *srv;
    if (kf_server_new(&srv, methods, n_methods, cfg.max_calls) < 0) {
        kf_err("cannot create the gRPC server");
        return 1;
    }
    char sockdir[sizeof(cfg.listen_unix)];
    snprintf(sockdir, sizeof(sockdir), "%s", cfg.listen_unix);
    kf_mkdir_p(dirname(sockdir), 0755);
    unlink(cfg.listen_unix);
    char addr[sizeof(cfg.listen_unix) + 8];
    snprintf(addr, sizeof(addr), "unix:%s", cfg.listen_unix);
    kf_server_tls tls = {.cert_file = cfg.tls_cert, .key_file = cfg.tls_key,
                         .client_ca_file = cfg.tls_client_ca[0] ? cfg.tls_client_ca : NULL};
    if (kf_server_listen(srv, addr, &err) < 0 ||
        (cfg.listen_tcp[0] && !cfg.tls_cert[0] && kf_server_listen(srv, cfg.listen_tcp, &err) < 0) ||
        (cfg.listen_tcp[0] && cfg.tls_cert[0] &&
         kf_server_listen_tls(srv, cfg.listen_tcp, &tls, &err) < 0) ||
        (cfg.etcd_endpoints[0] && kf_registry_new(a, &a->registry, &err) < 0) ||
        kf_server_start(srv, &err) < 0) {
        kf_err("%s", err.msg);
        return 1;
    }
    chmod(cfg.listen_unix, 0660);
    if (kf_agent_metrics_serve(a->metrics, &err) < 0) {
        kf_err("%s", err.msg);
        return 1;
    }
    if (kf_pool_start(a) < 0 || kf_reaper_start(a) < 0) {
        kf_err("cannot start background threads");
        return 1;
    }
    /* Published only now that the advertised address answers. */
    if (a->registry && kf_registry_start(a->registry, &err) < 0) {
        kf_err("%s", err.msg);
        return 1;
    }
    kf_info("serving kfleet.v1.Sessions and kfleet.v1.Agent on %s%s%s%s", addr,
            cfg.listen_tcp[0] ? " and " : "", cfg.listen_tcp,
            !cfg.tls_cert[0] ? "" : cfg.tls_client_ca[0] ? " (mTLS)" : " (TLS)");

    int sig = 0;
    sigwait(&stop, &sig);
    if (sig == SIGTERM)
        kf_self_drain(a, &stop); /* with --drain-on-stop: move the sessions away first */
    kf_info("signal %d: stopping (sessions keep running)", sig);
    kf_agent_metrics_stop(a->metrics); /* its handlers read the table and the registry */
    kf_pool_stop(a);
    kf_reaper_stop(a);
    kf_server_free(srv);
    /* After the server: no handler reads it any more. Revokes the lease. */
    a->registry = kf_registry_free(a->registry);
    a->requests = kf_requests_free(a->requests);
    unlink(cfg.listen_unix);
    kf_session **all;
    size_t n;
    if (kf_agent_list(a, &all, &n) == 0) {
        for (size_t i = 0; i < n; i++) {
            pthread_mutex_lock(&all[i]->lock);
            kf_store_save(a, all[i]);
            kf_kernel_conn_close(all[i]->conn);
            all[i]->conn = NULL;
            pthread_mutex_unlock(&all[i]->lock);
            kf_session_unref(a, all[i]);
        }
        free(all);
    }
    for (kf_session *p = a->pool; p; p = p->pool_next) {
        kf_kernel_conn_close(p->conn);
        p->conn = NULL;
    }
    zmq_ctx_term(a->zmq_ctx);
    a->metrics = kf_agent_metrics_free(a->metrics); /* every thread that counts has stopped */
    kf_info("stopped");
    return 0;
}
