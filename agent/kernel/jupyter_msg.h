/* jupyter_msg.h - the Jupyter messaging 5.3 wire codec: signing and building
 * outgoing messages, verifying and parsing incoming ones, and the base64
 * decoding of binary MIME outputs.
 *
 * Pure: no sockets, no files. It works on arrays of frames (pointer +
 * length) so kernel_client.c can hand it zmq_msg_t data without copying, and
 * a fuzzer can hand it arbitrary bytes. Everything from the kernel is
 * untrusted: malformed input yields -EBADMSG (bad signature: -EPERM, over a
 * limit: -E2BIG), never a crash. The kernel side signs only the four JSON
 * frames (header, parent_header, metadata, content); extra buffers are not
 * signed, as in jupyter_client.
 */
#ifndef KF_JUPYTER_MSG_H
#define KF_JUPYTER_MSG_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define KF_JMSG_DELIM "<IDS|MSG>"
#define KF_JMSG_ID_LEN 32          /* hex chars of msg_id and session ids */
#define KF_JMSG_SIG_LEN 64         /* hex chars of an HMAC-SHA256 */
#define KF_JMSG_HEADER_MAX 256     /* our headers are ~200 bytes */
#define KF_JMSG_MAX_FRAMES 64      /* routing ids + delimiter + 5 + buffers */
#define KF_JMSG_MAX_BYTES (64u << 20) /* all frames of one message together */
#define KF_JMSG_USERNAME "kfleet"
#define KF_JMSG_VERSION "5.3"

typedef struct kf_jmsg_frame {
    const void *data;
    size_t len;
} kf_jmsg_frame;

/* A codec: the keyed HMAC-SHA256 context (key schedule computed once; each
 * sign/verify then costs two SHA-256 passes and no allocation) and a scratch
 * buffer that JSON frames are copied into to NUL-terminate them (cJSON
 * before 1.7.18 may read past the end of a length-bounded buffer). Not
 * thread-safe: one per connection. */
typedef struct kf_jmsg_codec kf_jmsg_codec;

/* kf_jmsg_codec_new - key it with `key` (the bytes of the connection file's
 * "key" string, i.e. the hex text itself, as jupyter_client does). key_len
 * must be > 0. -EINVAL / -ENOMEM / -EIO (OpenSSL failure). */
int kf_jmsg_codec_new(kf_jmsg_codec **out, const char *key, size_t key_len);
/* kf_jmsg_codec_free - NULL-safe; returns NULL. */
kf_jmsg_codec *kf_jmsg_codec_free(kf_jmsg_codec *s);

/* kf_jmsg_sign - hex HMAC-SHA256 over header, parent, metadata, content
 * (frames f[0..4)) into sig (KF_JMSG_SIG_LEN + 1 bytes, NUL-terminated). */
int kf_jmsg_sign(kf_jmsg_codec *s, const kf_jmsg_frame f[4], char *sig);

/* kf_jmsg_new_id - KF_JMSG_ID_LEN random lowercase hex chars + NUL
 * (getrandom, never blocks after boot). */
int kf_jmsg_new_id(char *out);

/* An outgoing message, built in place: no allocation. */
typedef struct kf_jmsg_out {
    char msg_id[KF_JMSG_ID_LEN + 1];
    char sig[KF_JMSG_SIG_LEN + 1];
    char header[KF_JMSG_HEADER_MAX];
    size_t header_len;
    const char *content; /* borrowed from the caller of kf_jmsg_build */
    size_t content_len;
} kf_jmsg_out;

#define KF_JMSG_OUT_FRAMES 6

/* kf_jmsg_build - fill `out` with a new message of `msg_type` in `session`
 * (KF_JMSG_ID_LEN hex chars), empty parent header and metadata, the given
 * content (a JSON object text; borrowed, must outlive out), a fresh random
 * msg_id and the date `unix_us` (microseconds since the epoch), signed.
 * msg_type must be a plain identifier ([a-z_]). -EINVAL on bad arguments. */
int kf_jmsg_build(kf_jmsg_codec *s, const char *session, const char *msg_type,
                  const char *content, size_t content_len, int64_t unix_us, kf_jmsg_out *out);

/* kf_jmsg_out_frames - the KF_JMSG_OUT_FRAMES frames to send, in order:
 * delimiter, signature, header, parent_header, metadata, content.
 * Pointers into `m` (and its borrowed content). */
void kf_jmsg_out_frames(const kf_jmsg_out *m, kf_jmsg_frame f[KF_JMSG_OUT_FRAMES]);

/* A parsed incoming message. Strings point into the cJSON trees and are
 * never NULL after a successful parse ("" when absent). */
typedef struct kf_jmsg {
    cJSON *header;
    cJSON *parent;
    cJSON *content; /* NULL until kf_jmsg_parse_content() */
    const char *msg_type;
    const char *msg_id;
    const char *parent_id; /* parent_header.msg_id, "" if none */
    kf_jmsg_frame content_frame; /* borrowed from the frames given to parse */
    size_t n_buffers;            /* extra frames after content (ignored) */
} kf_jmsg;

/* kf_jmsg_parse - find the delimiter (skipping routing ids / the iopub
 * topic), check limits (n <= KF_JMSG_MAX_FRAMES, total <=
 * KF_JMSG_MAX_BYTES -> -E2BIG), verify the signature in constant time
 * (-EPERM), then parse header and parent_header (JSON objects; header needs
 * string msg_type and msg_id) -> 0 or -EBADMSG. The content frame is only
 * verified, not parsed: most messages are filtered out by parent_id first.
 * On success the caller owns `out` (kf_jmsg_done) and must keep the frames
 * alive until it has called kf_jmsg_parse_content. On failure `out` holds
 * nothing. Cost: one HMAC over the frames + two small JSON parses. */
int kf_jmsg_parse(kf_jmsg_codec *s, const kf_jmsg_frame *f, size_t n, kf_jmsg *out);

/* kf_jmsg_parse_content - parse the content frame (must be a JSON object)
 * into m->content. Idempotent. -EBADMSG / -ENOMEM. */
int kf_jmsg_parse_content(kf_jmsg_codec *s, kf_jmsg *m);

/* kf_jmsg_done - free the trees; `m` may be reused. */
void kf_jmsg_done(kf_jmsg *m);

/* kf_jmsg_str - the string member `name` of obj, or NULL if obj is not an
 * object or the member is absent or not a string. */
const char *kf_jmsg_str(const cJSON *obj, const char *name);

/* A growable byte buffer, reused across messages to avoid allocating per
 * message. */
typedef struct kf_jbuf {
    char *data;
    size_t len, cap;
} kf_jbuf;

/* kf_jbuf_reserve - make room for `more` bytes past len. -ENOMEM / -E2BIG
 * (past KF_JMSG_MAX_BYTES). */
int kf_jbuf_reserve(kf_jbuf *b, size_t more);
/* kf_jbuf_done - free the storage. */
void kf_jbuf_done(kf_jbuf *b);

/* kf_jmsg_execute_content - the content of an execute_request for `code`
 * (len bytes of UTF-8; not validated here), written to b (b->len reset):
 * {"code":...,"silent":false,"store_history":true,"user_expressions":{},
 *  "allow_stdin":false,"stop_on_error":true}. -E2BIG if too large. */
int kf_jmsg_execute_content(kf_jbuf *b, const char *code, size_t len);

/* kf_b64_decode_inplace - decode standard base64 in buf[0..len) into buf
 * itself (the decoded form is never longer), ignoring ASCII whitespace
 * anywhere (Jupyter may wrap lines) and tolerating missing '=' padding.
 * *out_len is the true decoded length (padding bytes excluded). -EBADMSG on
 * invalid characters or a bad length. */
int kf_b64_decode_inplace(char *buf, size_t len, size_t *out_len);

#endif
