/* log.c - one-line-per-call logging to stderr. See log.h. */
#include "kf/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static kf_log_level g_level = KF_LOG_INFO;
static const char *g_ident = "kfleet";

void kf_log_set_level(kf_log_level lvl) { g_level = lvl; }
void kf_log_set_ident(const char *ident) { g_ident = ident; }

void kf_log(kf_log_level lvl, const char *fmt, ...) {
    if (lvl < g_level)
        return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %s[%d] %s: ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, g_ident, (int)getpid(), names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
