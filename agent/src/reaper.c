/* reaper.c - the agent's housekeeping thread: once a second it expires
 * sessions that were idle too long or lived too long. It never calls
 * waitpid(-1): other threads wait for their own children (mkfs, helpers),
 * and a sandbox's PID 1 is reaped by its teardown. */
#include "session.h"

#include <errno.h>
#include <time.h>

#include "kf/log.h"

static pthread_t g_reaper;
static int g_reaper_running;

static void *reaper_loop(void *arg) {
    kf_agent *a = arg;
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_mutex_lock(&a->table_lock);
        if (!a->stopping)
            pthread_cond_timedwait(&a->table_cond, &a->table_lock, &ts);
        int stop = a->stopping;
        pthread_mutex_unlock(&a->table_lock);
        if (stop)
            break;
        kf_op_expire_due(a);
    }
    return NULL;
}

int kf_reaper_start(kf_agent *a) {
    if (pthread_create(&g_reaper, NULL, reaper_loop, a) != 0)
        return -EAGAIN;
    g_reaper_running = 1;
    return 0;
}

void kf_reaper_stop(kf_agent *a) {
    (void)a;
    if (g_reaper_running)
        pthread_join(g_reaper, NULL);
    g_reaper_running = 0;
}
