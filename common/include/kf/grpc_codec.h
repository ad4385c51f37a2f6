/* grpc_codec.h - protobuf-c messages <-> gRPC core byte buffers, shared by
 * the servers (agent, scheduler) and the clients (kfleetctl, scheduler). */
#ifndef KF_GRPC_CODEC_H
#define KF_GRPC_CODEC_H

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

/* Largest message either side accepts (bytes). Uploads stream in chunks
 * well below this. */
#define KF_GRPC_MAX_MESSAGE (8 * 1024 * 1024)

/* Largest TLS PEM file (certificate, key, CA bundle) either side reads:
 * PEM files are small; anything larger is not a certificate. */
#define KF_TLS_FILE_MAX (1024 * 1024)

/* kf_pb_to_buffer - serialise msg into a new byte buffer (caller destroys
 * it with grpc_byte_buffer_destroy). Returns NULL only on allocation failure. */
grpc_byte_buffer *kf_pb_to_buffer(const ProtobufCMessage *msg);

/* kf_pb_from_buffer - unpack buf as `desc`; NULL on malformed input or when
 * the message exceeds KF_GRPC_MAX_MESSAGE. Free the result with
 * protobuf_c_message_free_unpacked(msg, NULL). buf is not consumed. */
ProtobufCMessage *kf_pb_from_buffer(grpc_byte_buffer *buf, const ProtobufCMessageDescriptor *desc);

#endif
