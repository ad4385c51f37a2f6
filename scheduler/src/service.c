/* service.c - the method table the scheduler serves: kfleet.v1.Sessions
 * (CreateSession places (create.c), ListSessions fans out, everything else
 * is forwarded to the session's node (proxy.c)), followed by
 * kfleet.v1.Cluster (cluster_nodes.c, cordon.c). CreateSession and the
 * forwarded streams are timed around their handlers (sched_metrics.c). */
#include "cluster.h"
#include "kf/cleanup.h"
#include "kf/util.h"
#include "kfleet/v1/sessions.pb-c.h"
#include "sched_metrics.h"
#include "scheduler.h"
#include "service.h"

#include <string.h>

#define SVC "/kfleet.v1.Sessions/"
#define D(x) &kfleet__v1__##x##__descriptor

static kf_route routes[] = {
    {NULL, SVC "CreateSession", KF_ROUTE_UNARY, D(create_session_request), D(session)},
    {NULL, SVC "GetSession", KF_ROUTE_UNARY, D(get_session_request), D(session)},
    {NULL, SVC "ListSessions", KF_ROUTE_UNARY, D(list_sessions_request), D(list_sessions_response)},
    {NULL, SVC "DeleteSession", KF_ROUTE_UNARY, D(delete_session_request), D(delete_session_response)},
    {NULL, SVC "Execute", KF_ROUTE_SERVER_STREAM, D(execute_request), D(execute_event)},
    {NULL, SVC "Interrupt", KF_ROUTE_UNARY, D(interrupt_request), D(interrupt_response)},
    {NULL, SVC "RestartKernel", KF_ROUTE_UNARY, D(restart_kernel_request), D(restart_kernel_response)},
    {NULL, SVC "UploadFile", KF_ROUTE_CLIENT_STREAM, D(upload_file_request), D(file_info)},
    {NULL, SVC "DownloadFile", KF_ROUTE_SERVER_STREAM, D(download_file_request), D(file_chunk)},
    {NULL, SVC "ListFiles", KF_ROUTE_UNARY, D(list_files_request), D(list_files_response)},
    {NULL, SVC "DeleteFile", KF_ROUTE_UNARY, D(delete_file_request), D(delete_file_response)},
};

/* CreateSession and Execute, timed and counted around their handlers. */
static void metered_create(kf_call *c, void *ud) {
    kf_sched *s = ud;
    int64_t t0 = kf_mono_us();
    kf_sched_create(c, ud);
    kf_sched_metrics_create(s->metrics, kf_call_status(c) == KF_ST_OK, t0);
}

static void metered_proxy(kf_call *c, void *ud) {
    const kf_route *r = ud;
    int64_t t0 = kf_mono_us();
    kf_sched_proxy(c, ud);
    kf_sched_metrics_forwarded(r->s->metrics, r->path, t0);
}

#define N_CLUSTER_METHODS 9 /* checked below against cluster_nodes.c's table */
static kf_method methods[KF_ARRAY_SIZE(routes) + N_CLUSTER_METHODS];

const kf_method *kf_sched_methods(kf_sched *s, size_t *n) {
    for (size_t i = 0; i < KF_ARRAY_SIZE(routes); i++) {
        routes[i].s = s;
        kf_handler_fn fn = routes[i].kind == KF_ROUTE_SERVER_STREAM ? metered_proxy : kf_sched_proxy;
        void *ud = &routes[i];
        if (i == 0) {
            fn = metered_create;
            ud = s;
        } else if (i == 2) {
            fn = kf_sched_list;
        } else if (i == 3) {
            fn = kf_sched_delete;
        }
        methods[i] = (kf_method){.path = routes[i].path, .fn = fn, .userdata = ud};
    }
    size_t nc;
    const kf_method *cluster = kf_sched_cluster_methods(s, &nc);
    if (nc > N_CLUSTER_METHODS)
        nc = N_CLUSTER_METHODS; /* cannot happen: the table is static; keeps the copy in bounds */
    memcpy(&methods[KF_ARRAY_SIZE(routes)], cluster, nc * sizeof(*cluster));
    *n = KF_ARRAY_SIZE(routes) + nc;
    return methods;
}
