/* kernel_output.h - translate the content of an iopub output message
 * (stream, display_data, execute_result, error) into a kf_kernel_event.
 * Pure (no I/O), so it is unit-tested and fuzzed without a kernel. Internal
 * to kf_kernel. */
#ifndef KF_KERNEL_OUTPUT_H
#define KF_KERNEL_OUTPUT_H

#include <cjson/cJSON.h>

#include "kernel_client.h"

/* At most this many MIME entries of one display are delivered; the rest are
 * dropped (a kernel controls the count). */
#define KF_KERNEL_MAX_MIME_ITEMS 32
/* At most this many traceback lines are delivered. */
#define KF_KERNEL_MAX_TRACEBACK 4096

/* kf_kernel_output_is_event - true if msg_type is one we translate. */
int kf_kernel_output_is_event(const char *msg_type);

/* kf_mime_is_binary - true if values of this MIME type travel base64
 * encoded (image/... except SVG, audio/..., video/..., font/..., application/pdf,
 * application/octet-stream, application/zip...). */
int kf_mime_is_binary(const char *mime_type);

/* kf_kernel_output_dispatch - build the event for `msg_type` from `content`
 * and call cb once. `content` is modified (base64 strings are decoded in
 * place). Allocates only for JSON-valued MIME entries (serialised) and the
 * traceback pointer array. Returns 0, cb's negative value, -EBADMSG when
 * the content lacks required fields (caller logs and drops it), -ENOMEM.
 * Unknown msg_types: 0, cb not called. */
int kf_kernel_output_dispatch(const char *msg_type, cJSON *content, kf_kernel_event_cb cb,
                              void *userdata);

#endif
