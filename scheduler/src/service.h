/* service.h - the route table shared by service.c and the handlers: one
 * kf_route per kfleet.v1.Sessions method, passed as the handler's userdata. */
#ifndef KF_SCHED_SERVICE_H
#define KF_SCHED_SERVICE_H

#include "scheduler.h"

typedef enum kf_route_kind {
    KF_ROUTE_UNARY,
    KF_ROUTE_SERVER_STREAM,
    KF_ROUTE_CLIENT_STREAM,
} kf_route_kind;

typedef struct kf_route {
    kf_sched *s;
    const char *path;
    kf_route_kind kind;
    const ProtobufCMessageDescriptor *req;
    const ProtobufCMessageDescriptor *resp;
} kf_route;

#endif
