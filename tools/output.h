/* output.h - how kfleetctl prints: column-aligned tables for people, JSON
 * for scripts, and the small formatters both use (sizes, ages, enum names,
 * ANSI stripping). No gRPC here; it knows protobuf-c messages only through
 * their descriptors. Internal to tools/.
 */
#ifndef KF_OUTPUT_H
#define KF_OUTPUT_H

#include <cJSON.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* kf_pb_to_json - any protobuf-c message as JSON, in the shape of the
 * proto3 JSON mapping but with the .proto field names (session_id, not
 * sessionId): enums by name, bytes as base64, 64-bit integers as exact
 * JSON numbers, repeated fields as arrays, maps as objects. Every singular
 * field is present (default values included, so scripts see a stable
 * shape) except unset oneof members and unset sub-messages. Returns a new
 * tree (cJSON_Delete) or NULL on allocation failure. */
cJSON *kf_pb_to_json(const ProtobufCMessage *m);

/* kf_print_json - print j to stdout, pretty (indented) or as one line,
 * followed by a newline. Returns 0 or -ENOMEM. */
int kf_print_json(const cJSON *j, bool pretty);
/* kf_print_pb_json - kf_pb_to_json + kf_print_json. */
int kf_print_pb_json(const ProtobufCMessage *m, bool pretty);

/* A table printed with aligned columns. Cells are copied. */
typedef struct kf_table kf_table;
/* kf_table_new - a table with `ncols` columns; headers may be NULL (no
 * header row, e.g. for "key: value" listings). NULL on ENOMEM. */
kf_table *kf_table_new(size_t ncols, const char *const *headers);
/* kf_table_row - append a row of ncols cells (NULL cell = ""). 0 or -ENOMEM. */
int kf_table_row(kf_table *t, const char *const *cells);
/* kf_table_print - print to f, two spaces between columns, no trailing
 * blanks. Widths count UTF-8 code points, not bytes. */
void kf_table_print(const kf_table *t, FILE *f);
kf_table *kf_table_free(kf_table *t);
/* kf_table_kv - a two-column row {key, value} ("key: value" listings). */
int kf_table_kv(kf_table *t, const char *key, const char *value);
static inline void kf_table_freep(kf_table **t) { kf_table_free(*t); }
#define _cleanup_table_ __attribute__((cleanup(kf_table_freep)))

/* kf_fmt_bytes - 1536 -> "1.5K", 536870912 -> "512M" (binary units, the
 * syntax kf_parse_size reads back). Returns buf. */
char *kf_fmt_bytes(uint64_t n, char *buf, size_t size);
/* kf_fmt_duration - milliseconds as "850ms", "2.0s", "3m20s", "2h5m",
 * "3d4h". Returns buf. */
char *kf_fmt_duration(uint64_t ms, char *buf, size_t size);
/* kf_fmt_time - Unix milliseconds as "2024-05-01T12:00:00Z" (UTC); "-" for
 * 0. Returns buf. */
char *kf_fmt_time(int64_t unix_ms, char *buf, size_t size);

/* kf_fmt_ago - how long before now_ms (both Unix ms) `when_ms` was, as
 * kf_fmt_duration; "-" for when_ms <= 0. Returns buf. */
char *kf_fmt_ago(int64_t when_ms, int64_t now_ms, char *buf, size_t size);
/* kf_fmt_when - "2024-05-01T12:00:00Z (3m20s ago)"; "-" for when_ms <= 0.
 * Returns buf. */
char *kf_fmt_when(int64_t when_ms, int64_t now_ms, char *buf, size_t size);

/* kf_enum_short_name - the name of an enum value without the prefix the
 * .proto convention puts on it: SESSION_STATE_READY -> "READY" with
 * prefix "SESSION_STATE_". Unknown values give the number, in buf. */
const char *kf_enum_short_name(const ProtobufCEnumDescriptor *d, int value, const char *prefix,
                               char *buf, size_t size);

/* kf_strip_ansi - remove ANSI escape sequences (SGR colours, cursor moves,
 * OSC titles) from the NUL-terminated s in place. Returns the new length. */
size_t kf_strip_ansi(char *s);

/* kf_base64 - standard base64 with padding, NUL-terminated, malloc'd
 * (caller frees). NULL on ENOMEM. */
char *kf_base64(const void *data, size_t len);

#endif
