/* auth.c - who is calling: the `authorization: Bearer <token>` metadata of
 * a kfleet.v1.Sessions call -> its tenant (tenants.c). The one place that
 * turns a missing or unknown token into UNAUTHENTICATED.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "kf/log.h"
#include "scheduler.h"

#define AUTH_HEADER_MAX 1024 /* "Bearer " + the longest token tenants.c accepts, with room */

int kf_sched_authenticate(kf_sched *s, kf_call *c, kf_tenant *out) {
    *out = (kf_tenant){0};
    if (!s->tenants)
        return 0;
    char v[AUTH_HEADER_MAX];
    int rc = kf_call_metadata(c, "authorization", v, sizeof(v));
    if (rc == -ENOENT) {
        kf_call_finish(c, KF_ST_UNAUTHENTICATED, "missing bearer token");
        return -EACCES;
    }
    /* the scheme is case-insensitive (RFC 7235); one space, then the token */
    const char *tok = rc == 0 && strncasecmp(v, "Bearer ", 7) == 0 ? v + 7 : NULL;
    if (tok && !*tok) {
        kf_call_finish(c, KF_ST_UNAUTHENTICATED, "missing bearer token");
        return -EACCES;
    }
    if (!tok || kf_tenants_auth(s->tenants, tok, out) < 0) {
        explicit_bzero(v, sizeof(v));
        kf_debug("%s: invalid token", kf_call_method(c));
        kf_call_finish(c, KF_ST_UNAUTHENTICATED, "invalid token");
        return -EACCES;
    }
    explicit_bzero(v, sizeof(v));
    return 0;
}
