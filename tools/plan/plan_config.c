/* plan_config.c - the planner's input: reads a config (YAML through
 * plan_yaml.c, or JSON) into a kf_plan_config and checks it, field by
 * field, with messages that name the field, the value and what is allowed.
 * Unknown fields are errors (a typo must not silently mean a default).
 *
 * Values may be JSON numbers or strings with units: sizes "512M", "16G";
 * cpu "0.5" (cores) or "500m" (millicores); durations "90s", "20m", "24h",
 * "7d" (a bare number is seconds); rates "2/s", "120/m", "5000/h" (a bare
 * number is per second); fractions "1%" or 0.01.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/util.h"
#include "plan_internal.h"

#define PATH_MAX_LEN 96
#define SCALAR_MAX 64

void kf_plan_config_defaults(kf_plan_config *c) {
    memset(c, 0, sizeof(*c));
    c->seed = 1;
    c->duration_s = KF_PLAN_DAY_S;
    c->step_s = 600;
    c->max_sessions = 1000000;
    c->duration = (kf_plan_dist){KF_PLAN_EXPONENTIAL, 600, 0};
    c->idle = (kf_plan_dist){KF_PLAN_FIXED, 1200, 0};
    c->abandon = 0;
    c->policy.mode = KF_PLACE_SPREAD;
    c->queue_max = 10000;
    c->target_pct = 99;
    c->search_max_nodes = 1000;
}

/* ---- scalars ---------------------------------------------------------------- */

/* The text of a scalar (a string, or a number printed back). */
static int scalar(const cJSON *v, const char *path, char *buf, size_t size, kf_error *err) {
    if (cJSON_IsString(v)) {
        if (strlen(v->valuestring) >= size)
            return kf_error_set(err, -EINVAL, 0, "%s: value too long (at most %zu bytes)", path, size - 1);
        snprintf(buf, size, "%s", v->valuestring);
        return 0;
    }
    if (cJSON_IsNumber(v)) {
        snprintf(buf, size, "%.17g", v->valuedouble);
        return 0;
    }
    return kf_error_set(err, -EINVAL, 0, "%s: expected a value, not a list or mapping", path);
}

/* strtod of the whole prefix; *rest = what follows (units). */
static int leading_number(const char *s, double *v, const char **rest) {
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (errno || end == s || !isfinite(*v))
        return -EINVAL;
    while (isspace((unsigned char)*end))
        end++;
    *rest = end;
    return 0;
}

static int get_number(const cJSON *v, const char *path, double min, double max, double *out, kf_error *err) {
    char b[SCALAR_MAX];
    const char *rest;
    int r = scalar(v, path, b, sizeof(b), err);
    if (r < 0)
        return r;
    if (leading_number(b, out, &rest) < 0 || *rest)
        return kf_error_set(err, -EINVAL, 0, "%s: '%s' is not a number", path, b);
    if (*out < min || *out > max)
        return kf_error_set(err, -EINVAL, 0, "%s: %g is out of range (%g..%g)", path, *out, min, max);
    return 0;
}

static int get_uint(const cJSON *v, const char *path, uint64_t min, uint64_t max, uint64_t *out, kf_error *err) {
    double d;
    int r = get_number(v, path, (double)min, (double)max, &d, err);
    if (r < 0)
        return r;
    if (d != floor(d))
        return kf_error_set(err, -EINVAL, 0, "%s: %g is not a whole number", path, d);
    *out = (uint64_t)d;
    return 0;
}

static int get_size(const cJSON *v, const char *path, uint64_t *out, kf_error *err) {
    char b[SCALAR_MAX];
    int r = scalar(v, path, b, sizeof(b), err);
    if (r < 0)
        return r;
    if (kf_parse_size(b, out) < 0 || *out == 0 || *out > (1ull << 50))
        return kf_error_set(err, -EINVAL, 0, "%s: '%s' is not a size from 1 byte to 1P (e.g. 512M, 16G)", path, b);
    return 0;
}

int kf_plan_parse_cpu(const char *s, uint64_t *millis) {
    const char *rest;
    double d;
    if (leading_number(s, &d, &rest) < 0 || (*rest && strcmp(rest, "m")))
        return -EINVAL;
    double m = *rest ? d : d * 1000;
    if (m < 1 || m > 1e9 || m != floor(m))
        return -ERANGE;
    *millis = (uint64_t)m;
    return 0;
}

static int get_cpu(const cJSON *v, const char *path, uint64_t *out, kf_error *err) {
    char b[SCALAR_MAX];
    int r = scalar(v, path, b, sizeof(b), err);
    if (r < 0)
        return r;
    r = kf_plan_parse_cpu(b, out);
    if (r == -EINVAL)
        return kf_error_set(err, -EINVAL, 0, "%s: '%s' is not a cpu amount (cores, e.g. 0.5, or millicores, e.g. 500m)",
                            path, b);
    if (r < 0)
        return kf_error_set(err, -EINVAL, 0, "%s: '%s' is out of range (1m..1000000 cores, whole millicores)", path, b);
    return 0;
}

/* A duration in seconds within [min, max]. */
static int get_duration(const cJSON *v, const char *path, double min, double max, double *out, kf_error *err) {
    static const struct {
        const char *unit;
        double s;
    } units[] = {{"", 1}, {"ms", 0.001}, {"s", 1}, {"m", 60}, {"min", 60}, {"h", 3600}, {"d", 86400}};
    char b[SCALAR_MAX];
    const char *rest;
    double d;
    int r = scalar(v, path, b, sizeof(b), err);
    if (r < 0)
        return r;
    if (leading_number(b, &d, &rest) == 0 && d >= 0) {
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strcmp(rest, units[i].unit))
                continue;
            *out = d * units[i].s;
            if (*out < min || *out > max)
                return kf_error_set(err, -EINVAL, 0, "%s: %s is out of range (%gs..%gs)", path, b, min, max);
            return 0;
        }
    }
    return kf_error_set(err, -EINVAL, 0, "%s: '%s' is not a duration (e.g. 500ms, 90s, 20m, 24h, 7d)", path, b);
}

/* Sessions per second: "2/s", "120/m", "5000/h", "100000/d", or a number. */
static int get_rate(const cJSON *v, const char *path, double *out, kf_error *err) {
    char b[SCALAR_MAX];
    const char *rest;
    double d, per = 1;
    int r = scalar(v, path, b, sizeof(b), err);
    if (r < 0)
        return r;
    if (leading_number(b, &d, &rest) < 0 || d < 0)
        goto bad;
    if (*rest) {
        if (!strcmp(rest, "/s"))
            per = 1;
        else if (!strcmp(rest, "/m") || !strcmp(rest, "/min"))
            per = 60;
        else if (!strcmp(rest, "/h"))
            per = 3600;
        else if (!strcmp(rest, "/d"))
            per = 86400;
        else
            goto bad;
    }
    *out = d / per;
    if (*out > 1e6)
        return kf_error_set(err, -EINVAL, 0, "%s: %s is above 1000000/s", path, b);
    return 0;
bad:
    return kf_error_set(err, -EINVAL, 0, "%s: '%s' is not a rate (e.g. 2/s, 120/m, 5000/h; >= 0)", path, b);
}

/* A fraction in [0, 1]: "1%" or 0.01. */
static int get_fraction(const cJSON *v, const char *path, double *out, kf_error *err) {
    char b[SCALAR_MAX];
    const char *rest;
    int r = scalar(v, path, b, sizeof(b), err);
    if (r < 0)
        return r;
    if (leading_number(b, out, &rest) < 0 || (*rest && strcmp(rest, "%")))
        return kf_error_set(err, -EINVAL, 0, "%s: '%s' is not a fraction (e.g. 0.01 or 1%%)", path, b);
    if (*rest)
        *out /= 100;
    if (*out < 0 || *out > 1)
        return kf_error_set(err, -EINVAL, 0, "%s: '%s' is out of range (0..1, or 0%%..100%%)", path, b);
    return 0;
}

/* ---- structure ---------------------------------------------------------------- */

static int check_object(const cJSON *o, const char *path, const char *const *known, kf_error *err) {
    if (!cJSON_IsObject(o))
        return kf_error_set(err, -EINVAL, 0, "%s: expected a mapping", path);
    for (const cJSON *it = o->child; it; it = it->next) {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = !strcmp(it->string, *k);
        if (!ok) {
            char list[256] = "";
            size_t n = 0;
            for (const char *const *k = known; *k && n < sizeof(list); k++)
                n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", *k);
            return kf_error_set(err, -EINVAL, 0, "%s: unknown field '%s' (known: %s)", path, it->string, list);
        }
    }
    return 0;
}

static const cJSON *field(const cJSON *o, const char *name) { return cJSON_GetObjectItemCaseSensitive(o, name); }

/* "parent.name" and "parent[i]", cut to PATH_MAX_LEN (paths are ours, short). */
static void subpath(char *buf, const char *parent, const char *name) {
    if (snprintf(buf, PATH_MAX_LEN, "%s%s%s", parent, *parent ? "." : "", name) >= PATH_MAX_LEN)
        buf[PATH_MAX_LEN - 1] = '\0';
}

static void indexpath(char *buf, const char *parent, size_t i) {
    if (snprintf(buf, PATH_MAX_LEN, "%s[%zu]", parent, i) >= PATH_MAX_LEN)
        buf[PATH_MAX_LEN - 1] = '\0';
}

/* A distribution: a scalar duration (fixed) or {dist, mean|value|min+max, sigma}. */
static int get_dist(const cJSON *v, const char *path, kf_plan_dist *d, kf_error *err) {
    static const char *const known[] = {"dist", "mean", "value", "sigma", "min", "max", NULL};
    char p[PATH_MAX_LEN], kind[SCALAR_MAX];
    const double lo = 0, hi = KF_PLAN_DURATION_MAX_S;
    int r;
    if (!cJSON_IsObject(v)) {
        d->kind = KF_PLAN_FIXED;
        d->b = 0;
        return get_duration(v, path, lo, hi, &d->a, err);
    }
    if ((r = check_object(v, path, known, err)) < 0)
        return r;
    subpath(p, path, "dist");
    if (!field(v, "dist"))
        return kf_error_set(err, -EINVAL, 0, "%s: missing (fixed, exponential, lognormal or uniform)", p);
    if ((r = scalar(field(v, "dist"), p, kind, sizeof(kind), err)) < 0)
        return r;
    const char *need[3] = {NULL, NULL, NULL};
    if (!strcmp(kind, "fixed")) {
        d->kind = KF_PLAN_FIXED;
        need[0] = "value";
    } else if (!strcmp(kind, "exponential")) {
        d->kind = KF_PLAN_EXPONENTIAL;
        need[0] = "mean";
    } else if (!strcmp(kind, "lognormal")) {
        d->kind = KF_PLAN_LOGNORMAL;
        need[0] = "mean";
        need[1] = "sigma";
    } else if (!strcmp(kind, "uniform")) {
        d->kind = KF_PLAN_UNIFORM;
        need[0] = "min";
        need[1] = "max";
    } else {
        return kf_error_set(err, -EINVAL, 0, "%s: '%s' is not fixed, exponential, lognormal or uniform", p, kind);
    }
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) - 1; i++) {
        const char *k = known[i];
        bool wanted = !strcmp(k, "dist") || (need[0] && !strcmp(k, need[0])) || (need[1] && !strcmp(k, need[1]));
        subpath(p, path, k);
        if (!wanted && field(v, k))
            return kf_error_set(err, -EINVAL, 0, "%s: not a parameter of a %s distribution", p, kind);
        if (wanted && !field(v, k))
            return kf_error_set(err, -EINVAL, 0, "%s: missing (a %s distribution needs it)", p, kind);
    }
    subpath(p, path, need[0]);
    if ((r = get_duration(field(v, need[0]), p, lo, hi, &d->a, err)) < 0)
        return r;
    d->b = 0;
    if (d->kind == KF_PLAN_LOGNORMAL) {
        subpath(p, path, "sigma");
        return get_number(field(v, "sigma"), p, 0, 4, &d->b, err);
    }
    if (d->kind == KF_PLAN_UNIFORM) {
        subpath(p, path, "max");
        if ((r = get_duration(field(v, "max"), p, lo, hi, &d->b, err)) < 0)
            return r;
        if (d->b < d->a)
            return kf_error_set(err, -EINVAL, 0, "%s: %gs is below min (%gs)", p, d->b, d->a);
    }
    return 0;
}

static int read_arrivals(const cJSON *v, kf_plan_config *c, kf_error *err) {
    static const char *const known[] = {"rate", "curve", NULL};
    char p[PATH_MAX_LEN];
    int r;
    if ((r = check_object(v, "arrivals", known, err)) < 0)
        return r;
    const cJSON *rate = field(v, "rate"), *curve = field(v, "curve");
    if (!!rate == !!curve)
        return kf_error_set(err, -EINVAL, 0, "arrivals: give either rate (constant) or curve (daily), not %s",
                            rate ? "both" : "neither");
    if (rate) {
        c->npoints = 1;
        c->curve[0].at = 0;
        return get_rate(rate, "arrivals.rate", &c->curve[0].rate, err);
    }
    if (!cJSON_IsArray(curve) || cJSON_GetArraySize(curve) < 1 ||
        (unsigned)cJSON_GetArraySize(curve) > KF_PLAN_CURVE_MAX)
        return kf_error_set(err, -EINVAL, 0, "arrivals.curve: expected a list of 1..%u points {at, rate}",
                            KF_PLAN_CURVE_MAX);
    c->npoints = 0;
    static const char *const pknown[] = {"at", "rate", NULL};
    for (const cJSON *pt = curve->child; pt; pt = pt->next) {
        char pp[PATH_MAX_LEN];
        kf_plan_point *q = &c->curve[c->npoints];
        indexpath(pp, "arrivals.curve", c->npoints);
        if ((r = check_object(pt, pp, pknown, err)) < 0)
            return r;
        if (!field(pt, "at") || !field(pt, "rate"))
            return kf_error_set(err, -EINVAL, 0, "%s: needs at (time of day) and rate", pp);
        subpath(p, pp, "at");
        if ((r = get_duration(field(pt, "at"), p, 0, KF_PLAN_DAY_S - 0.001, &q->at, err)) < 0)
            return r;
        if (c->npoints > 0 && q->at <= c->curve[c->npoints - 1].at)
            return kf_error_set(err, -EINVAL, 0, "%s: %gs is not after the previous point (%gs); points go in order",
                                p, q->at, c->curve[c->npoints - 1].at);
        subpath(p, pp, "rate");
        if ((r = get_rate(field(pt, "rate"), p, &q->rate, err)) < 0)
            return r;
        c->npoints++;
    }
    return 0;
}

static int read_shape(const cJSON *v, const char *path, kf_plan_shape *s, kf_error *err) {
    static const char *const known[] = {"memory", "cpu", "weight", NULL};
    char p[PATH_MAX_LEN];
    int r;
    if ((r = check_object(v, path, known, err)) < 0)
        return r;
    if (!field(v, "memory") || !field(v, "cpu"))
        return kf_error_set(err, -EINVAL, 0, "%s: needs memory and cpu", path);
    subpath(p, path, "memory");
    if ((r = get_size(field(v, "memory"), p, &s->memory, err)) < 0)
        return r;
    subpath(p, path, "cpu");
    if ((r = get_cpu(field(v, "cpu"), p, &s->cpu, err)) < 0)
        return r;
    s->weight = 1;
    subpath(p, path, "weight");
    if (field(v, "weight") && (r = get_number(field(v, "weight"), p, 1e-9, 1e9, &s->weight, err)) < 0)
        return r;
    return 0;
}

static int read_session(const cJSON *v, kf_plan_config *c, kf_error *err) {
    static const char *const known[] = {"duration", "idle_expiry", "abandon", "memory", "cpu", "shapes", NULL};
    int r;
    if ((r = check_object(v, "session", known, err)) < 0)
        return r;
    if (!field(v, "duration"))
        return kf_error_set(err, -EINVAL, 0, "session.duration: missing (how long a session is used)");
    if ((r = get_dist(field(v, "duration"), "session.duration", &c->duration, err)) < 0)
        return r;
    if (field(v, "idle_expiry") && (r = get_dist(field(v, "idle_expiry"), "session.idle_expiry", &c->idle, err)) < 0)
        return r;
    if (field(v, "abandon") && (r = get_fraction(field(v, "abandon"), "session.abandon", &c->abandon, err)) < 0)
        return r;
    const cJSON *shapes = field(v, "shapes");
    if (shapes && (field(v, "memory") || field(v, "cpu")))
        return kf_error_set(err, -EINVAL, 0, "session: give memory and cpu, or shapes, not both");
    if (!shapes) {
        if (!field(v, "memory") || !field(v, "cpu"))
            return kf_error_set(err, -EINVAL, 0, "session: needs memory and cpu (or a list of shapes)");
        c->nshapes = 1;
        c->shapes[0].weight = 1;
        if ((r = get_size(field(v, "memory"), "session.memory", &c->shapes[0].memory, err)) < 0)
            return r;
        return get_cpu(field(v, "cpu"), "session.cpu", &c->shapes[0].cpu, err);
    }
    if (!cJSON_IsArray(shapes) || cJSON_GetArraySize(shapes) < 1 ||
        (unsigned)cJSON_GetArraySize(shapes) > KF_PLAN_SHAPES_MAX)
        return kf_error_set(err, -EINVAL, 0, "session.shapes: expected a list of 1..%u {memory, cpu, weight}",
                            KF_PLAN_SHAPES_MAX);
    c->nshapes = 0;
    for (const cJSON *s = shapes->child; s; s = s->next) {
        char p[PATH_MAX_LEN];
        indexpath(p, "session.shapes", c->nshapes);
        if ((r = read_shape(s, p, &c->shapes[c->nshapes], err)) < 0)
            return r;
        c->nshapes++;
    }
    return 0;
}

static int label_check(const char *path, const char *k, const char *val, char *out, kf_error *err) {
    int n = snprintf(out, KF_PLACE_LABEL_MAX + 1, "%s=%s", k, val);
    if (!*k || n > (int)KF_PLACE_LABEL_MAX)
        return kf_error_set(err, -EINVAL, 0, "%s.%s: a label key=value is 1..%d bytes", path, k, KF_PLACE_LABEL_MAX);
    return 0;
}

static int read_group(const cJSON *v, const char *path, unsigned idx, kf_plan_group *g, kf_error *err) {
    static const char *const known[] = {"name", "count", "memory", "cpu", "slots", "labels", NULL};
    char p[PATH_MAX_LEN];
    uint64_t u;
    int r;
    if ((r = check_object(v, path, known, err)) < 0)
        return r;
    if (!field(v, "memory") || !field(v, "cpu") || !field(v, "slots"))
        return kf_error_set(err, -EINVAL, 0, "%s: needs memory, cpu and slots", path);
    snprintf(g->name, sizeof(g->name), "g%u", idx);
    if (field(v, "name")) {
        subpath(p, path, "name");
        char b[SCALAR_MAX];
        if ((r = scalar(field(v, "name"), p, b, sizeof(b), err)) < 0)
            return r;
        size_t n = strlen(b);
        if (n == 0 || n > KF_PLAN_NAME_MAX || strspn(b, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != n)
            return kf_error_set(err, -EINVAL, 0, "%s: '%s' is not 1..%u of A-Z a-z 0-9 . _ -", p, b, KF_PLAN_NAME_MAX);
        memcpy(g->name, b, n + 1);
    }
    g->count = 1;
    subpath(p, path, "count");
    if (field(v, "count")) {
        if ((r = get_uint(field(v, "count"), p, 0, KF_PLAN_NODES_MAX, &u, err)) < 0)
            return r;
        g->count = (uint32_t)u;
    }
    subpath(p, path, "memory");
    if ((r = get_size(field(v, "memory"), p, &g->memory, err)) < 0)
        return r;
    subpath(p, path, "cpu");
    if ((r = get_cpu(field(v, "cpu"), p, &g->cpu, err)) < 0)
        return r;
    subpath(p, path, "slots");
    if ((r = get_uint(field(v, "slots"), p, 1, KF_PLAN_SLOTS_MAX, &u, err)) < 0)
        return r;
    g->slots = (uint32_t)u;
    const cJSON *labels = field(v, "labels");
    g->nlabels = 0;
    if (labels) {
        subpath(p, path, "labels");
        if (!cJSON_IsObject(labels) || cJSON_GetArraySize(labels) > KF_PLACE_LABELS_MAX)
            return kf_error_set(err, -EINVAL, 0, "%s: expected a mapping of at most %d key: value", p,
                                KF_PLACE_LABELS_MAX);
        for (const cJSON *l = labels->child; l; l = l->next) {
            char val[SCALAR_MAX], lp[PATH_MAX_LEN];
            subpath(lp, p, l->string);
            if ((r = scalar(l, lp, val, sizeof(val), err)) < 0 ||
                (r = label_check(p, l->string, val, g->labels[g->nlabels], err)) < 0)
                return r;
            g->nlabels++;
        }
    }
    return 0;
}

static int read_nodes(const cJSON *v, kf_plan_config *c, kf_error *err) {
    int r;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) < 1 || (unsigned)cJSON_GetArraySize(v) > KF_PLAN_GROUPS_MAX)
        return kf_error_set(err, -EINVAL, 0, "nodes: expected a list of 1..%u node shapes {name, count, memory, "
                                             "cpu, slots, labels}", KF_PLAN_GROUPS_MAX);
    c->ngroups = 0;
    for (const cJSON *g = v->child; g; g = g->next) {
        char p[PATH_MAX_LEN];
        indexpath(p, "nodes", c->ngroups);
        if ((r = read_group(g, p, c->ngroups, &c->groups[c->ngroups], err)) < 0)
            return r;
        for (unsigned i = 0; i < c->ngroups; i++)
            if (!strcmp(c->groups[i].name, c->groups[c->ngroups].name))
                return kf_error_set(err, -EINVAL, 0, "%s.name: '%s' is used twice", p, c->groups[i].name);
        c->ngroups++;
    }
    return 0;
}

static int read_policy(const cJSON *v, kf_plan_config *c, kf_error *err) {
    static const char *const known[] = {"mode", "seed", NULL};
    char mode[SCALAR_MAX];
    const cJSON *m = v;
    int r;
    if (cJSON_IsObject(v)) {
        if ((r = check_object(v, "policy", known, err)) < 0)
            return r;
        m = field(v, "mode");
        if (field(v, "seed") && (r = get_uint(field(v, "seed"), "policy.seed", 0, 1ull << 53, &c->policy.tie_seed, err)) < 0)
            return r;
        if (!m)
            return 0;
    }
    if ((r = scalar(m, "policy.mode", mode, sizeof(mode), err)) < 0)
        return r;
    if (!strcmp(mode, "spread"))
        c->policy.mode = KF_PLACE_SPREAD;
    else if (!strcmp(mode, "binpack"))
        c->policy.mode = KF_PLACE_BINPACK;
    else
        return kf_error_set(err, -EINVAL, 0, "policy.mode: '%s' is not spread or binpack", mode);
    return 0;
}

static int read_queue(const cJSON *v, kf_plan_config *c, kf_error *err) {
    static const char *const known[] = {"max_wait", "max", NULL};
    uint64_t u;
    int r;
    if ((r = check_object(v, "queue", known, err)) < 0)
        return r;
    if (field(v, "max_wait") &&
        (r = get_duration(field(v, "max_wait"), "queue.max_wait", 0, KF_PLAN_DAY_S, &c->max_wait_s, err)) < 0)
        return r;
    if (field(v, "max")) {
        if ((r = get_uint(field(v, "max"), "queue.max", 1, KF_PLAN_QUEUE_MAX, &u, err)) < 0)
            return r;
        c->queue_max = (uint32_t)u;
    }
    return 0;
}

static int read_target(const cJSON *v, kf_plan_config *c, kf_error *err) {
    static const char *const known[] = {"rejection", "wait", NULL};
    static const char *const wknown[] = {"percentile", "max", NULL};
    int r;
    if ((r = check_object(v, "target", known, err)) < 0)
        return r;
    const cJSON *rej = field(v, "rejection"), *wait = field(v, "wait");
    if (!!rej == !!wait)
        return kf_error_set(err, -EINVAL, 0, "target: give either rejection or wait, not %s", rej ? "both" : "neither");
    if (rej) {
        c->target = KF_PLAN_TARGET_REJECTION;
        return get_fraction(rej, "target.rejection", &c->target_rejection, err);
    }
    c->target = KF_PLAN_TARGET_WAIT;
    if ((r = check_object(wait, "target.wait", wknown, err)) < 0)
        return r;
    if (!field(wait, "max"))
        return kf_error_set(err, -EINVAL, 0, "target.wait.max: missing (the longest acceptable wait)");
    if (field(wait, "percentile") &&
        (r = get_number(field(wait, "percentile"), "target.wait.percentile", 1, 100, &c->target_pct, err)) < 0)
        return r;
    return get_duration(field(wait, "max"), "target.wait.max", 0, KF_PLAN_DAY_S, &c->target_wait_s, err);
}

int kf_plan_config_check(const kf_plan_config *c, kf_error *err) {
    uint64_t nodes = 0;
    for (unsigned i = 0; i < c->ngroups; i++)
        nodes += c->groups[i].count;
    if (c->ngroups == 0)
        return kf_error_set(err, -EINVAL, 0, "nodes: missing (at least one node shape)");
    if (c->nshapes == 0)
        return kf_error_set(err, -EINVAL, 0, "session: missing (memory and cpu, or shapes)");
    if (c->npoints == 0)
        return kf_error_set(err, -EINVAL, 0, "arrivals: missing (rate or curve)");
    if (nodes > KF_PLAN_NODES_MAX)
        return kf_error_set(err, -EINVAL, 0, "nodes: %llu nodes in all, more than %u", (unsigned long long)nodes,
                            KF_PLAN_NODES_MAX);
    if (nodes == 0 && c->target == KF_PLAN_TARGET_NONE)
        return kf_error_set(err, -EINVAL, 0, "nodes: every count is 0 and there is no target to search for");
    if (c->step_s * KF_PLAN_SAMPLES_MAX < c->duration_s)
        return kf_error_set(err, -EINVAL, 0, "step: %gs gives more than %u samples over %gs (use at least %gs)",
                            c->step_s, KF_PLAN_SAMPLES_MAX, c->duration_s, c->duration_s / KF_PLAN_SAMPLES_MAX);
    if (c->target == KF_PLAN_TARGET_WAIT && c->max_wait_s <= 0)
        return kf_error_set(err, -EINVAL, 0, "target.wait needs queue.max_wait > 0 (without a queue nobody waits)");
    if (kf_plan_peak_rate(c) <= 0)
        return kf_error_set(err, -EINVAL, 0, "arrivals: the rate is 0 everywhere");
    return 0;
}

int kf_plan_config_parse(const char *text, size_t len, kf_plan_config *out, kf_error *err) {
    static const char *const known[] = {"seed", "duration", "step", "sessions", "arrivals", "session", "nodes",
                                        "policy", "queue", "target", "search", NULL};
    if (len > KF_PLAN_INPUT_MAX)
        return kf_error_set(err, -EINVAL, 0, "the config is %zu bytes, more than %u", len, KF_PLAN_INPUT_MAX);
    size_t i = 0;
    while (i < len && isspace((unsigned char)text[i]))
        i++;
    cJSON *root = NULL;
    int r;
    if (i < len && text[i] == '{') {
        root = cJSON_ParseWithLength(text, len);
        if (!root) {
            const char *at = cJSON_GetErrorPtr();
            size_t line = 1;
            for (const char *q = text; at && q < at && q < text + len; q++)
                line += *q == '\n';
            return kf_error_set(err, -EINVAL, 0, "line %zu: malformed JSON", line);
        }
    } else if ((r = kf_plan_yaml_to_json(text, len, &root, err)) < 0) {
        return r;
    }
    kf_plan_config_defaults(out);
    uint64_t u;
    const cJSON *v;
    if ((r = check_object(root, "the config", known, err)) < 0)
        goto out;
    if ((v = field(root, "seed")) && (r = get_uint(v, "seed", 0, 1ull << 53, &out->seed, err)) < 0)
        goto out;
    if ((v = field(root, "duration")) &&
        (r = get_duration(v, "duration", 1, KF_PLAN_DURATION_MAX_S, &out->duration_s, err)) < 0)
        goto out;
    if ((v = field(root, "step")) && (r = get_duration(v, "step", 1, KF_PLAN_DURATION_MAX_S, &out->step_s, err)) < 0)
        goto out;
    if ((v = field(root, "sessions"))) {
        if ((r = get_uint(v, "sessions", 1, KF_PLAN_SESSIONS_MAX, &u, err)) < 0)
            goto out;
        out->max_sessions = (uint32_t)u;
    }
    r = -EINVAL;
    if (!(v = field(root, "arrivals"))) {
        kf_error_set(err, -EINVAL, 0, "arrivals: missing (rate or curve)");
        goto out;
    }
    if ((r = read_arrivals(v, out, err)) < 0)
        goto out;
    if (!(v = field(root, "session"))) {
        r = kf_error_set(err, -EINVAL, 0, "session: missing (duration, memory, cpu)");
        goto out;
    }
    if ((r = read_session(v, out, err)) < 0)
        goto out;
    if (!(v = field(root, "nodes"))) {
        r = kf_error_set(err, -EINVAL, 0, "nodes: missing (a list of node shapes)");
        goto out;
    }
    if ((r = read_nodes(v, out, err)) < 0)
        goto out;
    if ((v = field(root, "policy")) && (r = read_policy(v, out, err)) < 0)
        goto out;
    if ((v = field(root, "queue")) && (r = read_queue(v, out, err)) < 0)
        goto out;
    if ((v = field(root, "target")) && (r = read_target(v, out, err)) < 0)
        goto out;
    if ((v = field(root, "search"))) {
        static const char *const sknown[] = {"max_nodes", NULL};
        if ((r = check_object(v, "search", sknown, err)) < 0)
            goto out;
        if (field(v, "max_nodes")) {
            if ((r = get_uint(field(v, "max_nodes"), "search.max_nodes", 1, KF_PLAN_NODES_MAX, &u, err)) < 0)
                goto out;
            out->search_max_nodes = (uint32_t)u;
        }
    }
    r = kf_plan_config_check(out, err);
out:
    cJSON_Delete(root);
    return r;
}
