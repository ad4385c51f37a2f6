/* log.h - leveled logging to stderr (journald picks it up under systemd).
 * Thread-safe: each call writes one line with a single write(2). */
#ifndef KF_LOG_H
#define KF_LOG_H

typedef enum { KF_LOG_DEBUG = 0, KF_LOG_INFO, KF_LOG_WARN, KF_LOG_ERROR } kf_log_level;

void kf_log_set_level(kf_log_level lvl);
/* kf_log_set_ident - the program name shown on each line (static storage). */
void kf_log_set_ident(const char *ident);
void kf_log(kf_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define kf_debug(...) kf_log(KF_LOG_DEBUG, __VA_ARGS__)
#define kf_info(...) kf_log(KF_LOG_INFO, __VA_ARGS__)
#define kf_warn(...) kf_log(KF_LOG_WARN, __VA_ARGS__)
#define kf_err(...) kf_log(KF_LOG_ERROR, __VA_ARGS__)

#endif
