/* util.h - small helpers shared by every kfleet binary: clocks, random ids,
 * bounded file I/O and atomic file replacement. No global state. */
#ifndef KF_UTIL_H
#define KF_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Monotonic milliseconds / microseconds (CLOCK_MONOTONIC). */
int64_t kf_mono_ms(void);
int64_t kf_mono_us(void);
/* Wall-clock milliseconds since the epoch. */
int64_t kf_unix_ms(void);

/* kf_cond_init_mono - init a condition variable whose timed waits count
 * CLOCK_MONOTONIC (immune to wall-clock jumps). 0 or a negative errno. */
int kf_cond_init_mono(pthread_cond_t *cv);
/* kf_mono_deadline - the CLOCK_MONOTONIC instant `ms` from now, for
 * pthread_cond_timedwait on a kf_cond_init_mono condition. */
struct timespec kf_mono_deadline(int64_t ms);

/* kf_random_id - `prefix` followed by `nhex` random lowercase hex digits
 * (getrandom). Writes at most `size` bytes including the NUL. Returns 0 or
 * a negative errno (-ENOSPC if it doesn't fit). */
int kf_random_id(char *out, size_t size, const char *prefix, size_t nhex);

/* kf_read_file - read a whole file, at most `max` bytes (-EFBIG past that).
 * On success *out is a NUL-terminated malloc'd buffer (caller frees) and
 * *len its length. */
int kf_read_file(const char *path, size_t max, char **out, size_t *len);

/* kf_write_file_atomic - write `data` to `path` via a temp file + rename,
 * mode `mode`. Readers see the old or the new content, never a mix. With
 * KF_WRITE_DURABLE the data is also fdatasync'ed before the rename (it
 * survives power loss); without, it survives any process crash. */
#define KF_WRITE_DURABLE 1
int kf_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, int flags);

/* kf_write_string - write a short string to an existing file (sysfs,
 * procfs, cgroupfs style: one write, no create, no truncate). */
int kf_write_string(const char *path, const char *s);

/* kf_mkdir_p - mkdir -p with `mode` for created components. */
int kf_mkdir_p(const char *path, mode_t mode);

/* kf_rm_rf_at - remove `name` under dirfd recursively without following
 * symlinks and without crossing mount points. */
int kf_rm_rf(const char *path);

/* kf_utf8_valid - true if buf[0..len) is well-formed UTF-8 (no overlongs,
 * no surrogates, <= U+10FFFF). */
int kf_utf8_valid(const char *buf, size_t len);

/* kf_control_char_at - the offset of the first C0 control, DEL or C1
 * control (U+0080..U+009F, 0xC2 0x80..0x9F) in buf[0..len), or -1 if there
 * is none. Meant for text already checked with kf_utf8_valid. */
ssize_t kf_control_char_at(const char *buf, size_t len);

/* kf_parse_size - "512M", "2G", "1048576", "1.5G" -> bytes. Returns 0 or -EINVAL. */
int kf_parse_size(const char *s, uint64_t *out);
/* kf_parse_duration_ms - "120s", "2m", "500ms", "1h", "30" (seconds) -> ms. */
int kf_parse_duration_ms(const char *s, uint64_t *out);

#endif
