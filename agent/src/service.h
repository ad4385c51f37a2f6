/* service.h - the gRPC face of the agent: kfleet.v1.Sessions handlers and
 * the node-internal kfleet.v1.Agent ones.
 * Each handler runs on its own thread (kf/grpc_server.h), decodes the
 * request, calls session_ops / execute / files, and maps kf_error to a
 * gRPC status in one place (kf_call_fail). */
#ifndef KF_AGENT_SERVICE_H
#define KF_AGENT_SERVICE_H

#include "kf/grpc_server.h"
#include "session.h"

/* kf_service_methods - the method table for kf_server_new; *n gets its size. */
const kf_method *kf_service_methods(kf_agent *a, size_t *n);

/* Handlers in service_agent.c (kfleet.v1.Agent, node-internal) */
void kf_svc_start_session(kf_call *c, void *ud);
void kf_svc_node_stats(kf_call *c, void *ud);

/* Handlers in service_move.c (kfleet.v1.Agent: moving a session) */
void kf_svc_export_session(kf_call *c, void *ud);
void kf_svc_import_session(kf_call *c, void *ud);
void kf_svc_release_session(kf_call *c, void *ud);
void kf_svc_resume_session(kf_call *c, void *ud);

/* kf_svc_session_to_pb - fill pb and its limits from s (takes table_lock
 * briefly). Strings in pb point into s and the config: keep s referenced
 * while pb is used. */
struct Kfleet__V1__Session;
struct Kfleet__V1__Limits;
void kf_svc_session_to_pb(kf_agent *a, kf_session *s, struct Kfleet__V1__Session *pb,
                          struct Kfleet__V1__Limits *lim);

/* kf_svc_limits_to_pb - kf_limits into a (re-initialised) pb message. */
void kf_svc_limits_to_pb(const kf_limits *l, struct Kfleet__V1__Limits *pb);

/* kf_svc_limits_from_pb - request limits (NULL = all defaults) to kf_limits;
 * zero fields are resolved later by kf_limits_resolve. */
void kf_svc_limits_from_pb(const struct Kfleet__V1__Limits *pb, kf_limits *out);

/* Handlers in service_files.c */
void kf_svc_upload(kf_call *c, void *ud);
void kf_svc_download(kf_call *c, void *ud);
void kf_svc_list_files(kf_call *c, void *ud);
void kf_svc_delete_file(kf_call *c, void *ud);

/* kf_svc_session_volume - the session for a file call, and an O_PATH fd of
 * its volume root (caller closes it and unrefs the session). */
kf_session *kf_svc_session_volume(kf_agent *a, const char *id, int *rootfd, kf_error *err);

/* kf_svc_reply_created - answer a create (r = kf_op_create's result): the
 * Session on success, the error otherwise. Drops the reference to s. */
void kf_svc_reply_created(kf_call *c, kf_agent *a, int r, kf_session *s, const kf_error *err);

#endif
