/* tenants.c - the tenants file (--tenants): which bearer token belongs to
 * which tenant, and each tenant's quotas. Owns the parsed set, swapped
 * whole under `mu` on reload (SIGHUP), so a handler sees the old set or
 * the new one, never a mix.
 *
 * File format (JSON):
 *   {"tenants": [{"name": "acme", "tokens": ["<token>", ...],
 *                 "max_sessions": 10, "max_memory_bytes": 8589934592},
 *                {"name": "ops", "tokens": [...], "admin": true}, ...]}
 * A quota left out or 0 means no limit. "admin" (default false) lets the
 * tenant change the cluster (kfleet.v1.Cluster CordonNode/UncordonNode);
 * files without it keep their meaning. The file holds secrets: one that
 * other users may read or write is refused.
 *
 * Token checks compare against every token of every tenant, each in
 * constant time and without stopping at a match, so the time taken says
 * nothing about which token (or which prefix) was close. O(tokens) per
 * call, a few ns each: fine for hundreds of tokens; a keyed hash table
 * is the next step past that.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kf/cleanup.h"
#include "kf/log.h"
#include "scheduler.h"

#define FILE_MAX (1024 * 1024)
#define TOKEN_MIN 16
#define TOKEN_MAX 512

typedef struct secret {
    char *value;
    size_t len;
    size_t tenant; /* index into set.tenants */
} secret;

typedef struct set {
    kf_tenant *tenants;
    size_t n_tenants;
    secret *tokens;
    size_t n_tokens;
} set;

struct kf_tenants {
    pthread_mutex_t mu;
    set cur; /* under mu */
};

static void set_done(set *s) {
    for (size_t i = 0; i < s->n_tokens; i++) {
        explicit_bzero(s->tokens[i].value, s->tokens[i].len);
        free(s->tokens[i].value);
    }
    free(s->tokens);
    free(s->tenants);
    *s = (set){0};
}

/* Reads the whole file, refusing one that others may read or write. */
static int read_file(const char *path, char **out, kf_error *err) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return kf_error_set(err, -errno, 0, "--tenants %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return kf_error_set(err, -errno, 0, "--tenants %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return kf_error_set(err, -EINVAL, 0, "--tenants %s: not a regular file", path);
    if (st.st_mode & (S_IROTH | S_IWOTH))
        return kf_error_set(err, -EPERM, 0,
                            "--tenants %s: mode %03o lets other users read or write the tokens; "
                            "chmod o-rw (e.g. 0600) first",
                            path, (unsigned)(st.st_mode & 0777));
    if (st.st_size > FILE_MAX)
        return kf_error_set(err, -EFBIG, 0, "--tenants %s: larger than %d bytes", path, FILE_MAX);
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            return kf_error_set(err, -e, 0, "--tenants %s: read: %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    buf[got] = '\0';
    *out = buf;
    return 0;
}

bool kf_tenant_name_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > KF_TENANT_NAME_MAX)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-' || *s == '@'))
            return false;
    return true;
}

/* Printable ASCII without spaces: what fits an `authorization` header. */
static bool token_ok(const char *s) {
    size_t n = strlen(s);
    if (n < TOKEN_MIN || n > TOKEN_MAX)
        return false;
    for (; *s; s++)
        if (*s <= ' ' || *s > '~')
            return false;
    return true;
}

static int quota(const cJSON *t, const char *key, const char *tname, uint64_t *out, kf_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, key);
    *out = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    /* doubles hold integers exactly up to 2^53: more than any quota needs */
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != floor(v->valuedouble))
        return kf_error_set(err, -EINVAL, 0, "tenant %s: %s must be a whole number >= 0", tname, key);
    *out = (uint64_t)v->valuedouble;
    return 0;
}

static int parse(const char *text, const char *path, set *out, kf_error *err) {
    set s = {0};
    int rc = 0;
    cJSON *j = cJSON_Parse(text);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "tenants");
    if (!cJSON_IsArray(arr)) {
        rc = kf_error_set(err, -EINVAL, 0, "--tenants %s: expected {\"tenants\": [...]}", path);
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(arr), n_tok = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, arr) {
        n_tok += (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(t, "tokens"));
    }
    s.tenants = calloc(n ? n : 1, sizeof(*s.tenants));
    s.tokens = calloc(n_tok ? n_tok : 1, sizeof(*s.tokens));
    if (!s.tenants || !s.tokens) {
        rc = kf_error_set(err, -ENOMEM, 0, "out of memory");
        goto out;
    }
    cJSON_ArrayForEach(t, arr) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(t, "name");
        if (!cJSON_IsString(name) || !kf_tenant_name_valid(name->valuestring)) {
            rc = kf_error_set(err, -EINVAL, 0,
                              "--tenants %s: tenant %zu: name must be 1-%d of A-Z a-z 0-9 . _ - @",
                              path, s.n_tenants + 1, KF_TENANT_NAME_MAX);
            goto out;
        }
        for (size_t i = 0; i < s.n_tenants; i++)
            if (!strcmp(s.tenants[i].name, name->valuestring)) {
                rc = kf_error_set(err, -EINVAL, 0, "--tenants %s: tenant %s appears twice", path,
                                  name->valuestring);
                goto out;
            }
        kf_tenant *te = &s.tenants[s.n_tenants];
        snprintf(te->name, sizeof(te->name), "%s", name->valuestring);
        if ((rc = quota(t, "max_sessions", te->name, &te->max_sessions, err)) < 0 ||
            (rc = quota(t, "max_memory_bytes", te->name, &te->max_memory_bytes, err)) < 0)
            goto out;
        const cJSON *adm = cJSON_GetObjectItemCaseSensitive(t, "admin");
        if (adm && !cJSON_IsBool(adm) && !cJSON_IsNull(adm)) {
            rc = kf_error_set(err, -EINVAL, 0, "--tenants %s: tenant %s: \"admin\" must be true or false",
                              path, te->name);
            goto out;
        }
        te->admin = cJSON_IsTrue(adm);
        const cJSON *toks = cJSON_GetObjectItemCaseSensitive(t, "tokens"), *tok;
        if (!cJSON_IsArray(toks) || cJSON_GetArraySize(toks) == 0) {
            rc = kf_error_set(err, -EINVAL, 0, "--tenants %s: tenant %s: \"tokens\" must be a non-empty list",
                              path, te->name);
            goto out;
        }
        cJSON_ArrayForEach(tok, toks) {
            /* the message never quotes a token: it may end up in a log */
            if (!cJSON_IsString(tok) || !token_ok(tok->valuestring)) {
                rc = kf_error_set(err, -EINVAL, 0,
                                  "--tenants %s: tenant %s: a token is not %d-%d printable ASCII "
                                  "characters without spaces",
                                  path, te->name, TOKEN_MIN, TOKEN_MAX);
                goto out;
            }
            for (size_t i = 0; i < s.n_tokens; i++)
                if (!strcmp(s.tokens[i].value, tok->valuestring)) {
                    rc = kf_error_set(err, -EINVAL, 0, "--tenants %s: tenant %s: a token is listed twice",
                                      path, te->name);
                    goto out;
                }
            secret *k = &s.tokens[s.n_tokens];
            k->value = strdup(tok->valuestring);
            if (!k->value) {
                rc = kf_error_set(err, -ENOMEM, 0, "out of memory");
                goto out;
            }
            k->len = strlen(k->value);
            k->tenant = s.n_tenants;
            s.n_tokens++;
        }
        s.n_tenants++;
    }
    if (s.n_tenants == 0)
        rc = kf_error_set(err, -EINVAL, 0, "--tenants %s: no tenants", path);
out:
    if (j) {
        /* wipe the parsed copies of the tokens before freeing them */
        cJSON_ArrayForEach(t, arr) {
            const cJSON *tok;
            cJSON_ArrayForEach(tok, cJSON_GetObjectItemCaseSensitive(t, "tokens")) {
                if (cJSON_IsString(tok))
                    explicit_bzero(tok->valuestring, strlen(tok->valuestring));
            }
        }
        cJSON_Delete(j);
    }
    if (rc < 0)
        set_done(&s);
    else
        *out = s;
    return rc;
}

static int load_set(const char *path, set *out, kf_error *err) {
    char *text = NULL;
    int rc = read_file(path, &text, err);
    if (rc < 0)
        return rc;
    rc = parse(text, path, out, err);
    explicit_bzero(text, strlen(text));
    free(text);
    return rc;
}

static size_t count_admins(const set *s) {
    size_t n = 0;
    for (size_t i = 0; i < s->n_tenants; i++)
        n += s->tenants[i].admin;
    return n;
}

int kf_tenants_load(const char *path, kf_tenants **out, kf_error *err) {
    kf_tenants *t = calloc(1, sizeof(*t));
    if (!t)
        return kf_error_set(err, -ENOMEM, 0, "out of memory");
    int rc = load_set(path, &t->cur, err);
    if (rc < 0) {
        free(t);
        return rc;
    }
    pthread_mutex_init(&t->mu, NULL);
    kf_info("tenants: %zu tenant(s) (%zu admin), %zu token(s) from %s", t->cur.n_tenants,
            count_admins(&t->cur), t->cur.n_tokens, path);
    *out = t;
    return 0;
}

int kf_tenants_reload(kf_tenants *t, const char *path, kf_error *err) {
    set s;
    int rc = load_set(path, &s, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&t->mu);
    set old = t->cur;
    t->cur = s;
    pthread_mutex_unlock(&t->mu);
    kf_info("tenants: reloaded %zu tenant(s) (%zu admin), %zu token(s) from %s", s.n_tenants,
            count_admins(&s), s.n_tokens, path);
    set_done(&old);
    return 0;
}

kf_tenants *kf_tenants_free(kf_tenants *t) {
    if (!t)
        return NULL;
    set_done(&t->cur);
    pthread_mutex_destroy(&t->mu);
    free(t);
    return NULL;
}

/* 1 if a[0..alen) equals b[0..blen), in time that depends only on blen
 * (the candidate the client sent), not on where they differ. */
static int ct_equal(const char *a, size_t alen, const char *b, size_t blen) {
    volatile unsigned char d = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        d |= (unsigned char)(a[i % (alen ? alen : 1)] ^ b[i]);
    return d == 0;
}

int kf_tenants_auth(kf_tenants *t, const char *token, kf_tenant *out) {
    size_t len = strlen(token);
    pthread_mutex_lock(&t->mu);
    size_t found = SIZE_MAX;
    for (size_t i = 0; i < t->cur.n_tokens; i++) {
        const secret *k = &t->cur.tokens[i];
        size_t hit = (size_t)ct_equal(k->value, k->len, token, len);
        /* branch-free select: keeps the first match, scans on regardless */
        size_t mask = (size_t)0 - (hit & (found == SIZE_MAX));
        found = (found & ~mask) | (k->tenant & mask);
    }
    if (found != SIZE_MAX)
        *out = t->cur.tenants[found];
    pthread_mutex_unlock(&t->mu);
    return found == SIZE_MAX ? -EACCES : 0;
}
