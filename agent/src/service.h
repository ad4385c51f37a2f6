/* service.h - the gRPC face of the agent: kfleet.v1.Sessions handlers.
 * Each handler runs on its own thread (kf/grpc_server.h), decodes the
 * request, calls session_ops / execute / files, and maps kf_error to a
 * gRPC status in one place (kf_call_fail). */
#ifndef KF_AGENT_SERVICE_H
#define KF_AGENT_SERVICE_H

#include "kf/grpc_server.h"
#include "session.h"

/* kf_service_methods - the method table for kf_server_new; *n gets its size. */
const kf_method *kf_service_methods(kf_agent *a, size_t *n);

/* Handlers in service_files.c */
void kf_svc_upload(kf_call *c, void *ud);
void kf_svc_download(kf_call *c, void *ud);
void kf_svc_list_files(kf_call *c, void *ud);
void kf_svc_delete_file(kf_call *c, void *ud);

/* kf_svc_session_volume - the session for a file call, and an O_PATH fd of
 * its volume root (caller closes it and unrefs the session). */
kf_session *kf_svc_session_volume(kf_agent *a, const char *id, int *rootfd, kf_error *err);

#endif
