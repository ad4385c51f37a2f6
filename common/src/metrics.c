/* metrics.c - the metrics registry and its Prometheus text exposition
 * (kf/metrics.h). Owns the families and series; handles point into them.
 *
 * Families and series are singly linked lists in registration order under
 * the registry mutex; they are only ever appended to, and freed together.
 * Counter and gauge values are C11 atomics (relaxed: each is a statistic of
 * its own, no ordering with other memory is needed); a histogram's buckets,
 * count and sum change together under its own mutex.
 */
#include "kf/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kf/cleanup.h"
#include "kf/util.h"

typedef enum { T_COUNTER, T_GAUGE, T_HISTOGRAM } metric_type;

struct kf_counter {
    _Atomic uint64_t v;
};
struct kf_gauge {
    _Atomic int64_t v;
};
struct kf_histogram {
    pthread_mutex_t lock;
    const struct family *fam;
    uint64_t counts[KF_METRICS_MAX_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    uint64_t count;
    double sum;
};

typedef struct series {
    char *labels; /* rendered `a="x",b="y"` (escaped), "" without labels */
    union {
        kf_counter c;
        kf_gauge g;
        kf_histogram h;
    } u;
    struct series *next;
} series;

typedef struct family {
    char *name, *help;
    metric_type type;
    double bounds[KF_METRICS_MAX_BUCKETS];
    size_t n_bounds;
    series *first, **tail;
    struct family *next;
} family;

struct kf_metrics {
    pthread_mutex_t lock;
    family *first, **tail;
    kf_metrics_collect_fn collect;
    void *collect_ud;
};

const double kf_metrics_buckets_fast[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                          0.05,   0.1,   0.25,   0.5,   1,    2.5, 5};
const size_t kf_metrics_n_buckets_fast = KF_ARRAY_SIZE(kf_metrics_buckets_fast);
const double kf_metrics_buckets_slow[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1,     2.5,   5,    10,    30,   60,  120, 300};
const size_t kf_metrics_n_buckets_slow = KF_ARRAY_SIZE(kf_metrics_buckets_slow);

/* ---- a growable text buffer --------------------------------------------- */

typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_putn(strbuf *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void sb_printf(strbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->oom = true; /* every caller formats short items; never happens */
        return;
    }
    sb_putn(b, tmp, (size_t)n);
}

/* Escapes \ and newline (help text), plus " with `quote` (label values). */
static void sb_escaped(strbuf *b, const char *s, bool quote) {
    for (; *s; s++) {
        if (*s == '\\')
            sb_puts(b, "\\\\");
        else if (*s == '\n')
            sb_puts(b, "\\n");
        else if (quote && *s == '"')
            sb_puts(b, "\\\"");
        else
            sb_putn(b, s, 1);
    }
}

/* A float as Prometheus reads it: shortest round-tripping form, +Inf/-Inf/NaN. */
static void sb_double(strbuf *b, double v) {
    if (isnan(v)) {
        sb_puts(b, "NaN");
    } else if (isinf(v)) {
        sb_puts(b, v > 0 ? "+Inf" : "-Inf");
    } else {
        char tmp[64];
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
            if (strtod(tmp, NULL) == v)
                break;
        }
        sb_puts(b, tmp);
    }
}

/* ---- registration ------------------------------------------------------- */

static bool name_valid(const char *s, bool label) {
    if (!s || !*s || strlen(s) >= KF_METRICS_MAX_TEXT)
        return false;
    if (label && s[0] == '_' && s[1] == '_')
        return false;
    for (const char *p = s; *p; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
                  (!label && ch == ':') || (p != s && ch >= '0' && ch <= '9');
        if (!ok)
            return false;
    }
    return true;
}

int kf_metrics_new(kf_metrics **out) {
    kf_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    m->tail = &m->first;
    *out = m;
    return 0;
}

kf_metrics *kf_metrics_free(kf_metrics *m) {
    if (!m)
        return NULL;
    for (family *f = m->first, *fn; f; f = fn) {
        fn = f->next;
        for (series *s = f->first, *sn; s; s = sn) {
            sn = s->next;
            if (f->type == T_HISTOGRAM)
                pthread_mutex_destroy(&s->u.h.lock);
            free(s->labels);
            free(s);
        }
        free(f->name);
        free(f->help);
        free(f);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
    return NULL;
}

void kf_metrics_set_collect(kf_metrics *m, kf_metrics_collect_fn fn, void *userdata) {
    pthread_mutex_lock(&m->lock);
    m->collect = fn;
    m->collect_ud = userdata;
    pthread_mutex_unlock(&m->lock);
}

/* The rendered label set, or NULL with err set. */
static char *render_labels(const kf_label_pair *labels, size_t n, kf_error *err) {
    if (n > KF_METRICS_MAX_LABELS) {
        kf_error_set(err, -EINVAL, 0, "metrics: %zu labels (max %d)", n, KF_METRICS_MAX_LABELS);
        return NULL;
    }
    strbuf b = {0};
    sb_puts(&b, "");
    for (size_t i = 0; i < n; i++) {
        if (!name_valid(labels[i].name, true) || !strcmp(labels[i].name, "le") || !labels[i].value ||
            strlen(labels[i].value) >= KF_METRICS_MAX_TEXT) {
            free(b.p);
            kf_error_set(err, -EINVAL, 0, "metrics: invalid label '%s'", labels[i].name ? labels[i].name : "");
            return NULL;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(labels[i].name, labels[j].name)) {
                free(b.p);
                kf_error_set(err, -EINVAL, 0, "metrics: label '%s' given twice", labels[i].name);
                return NULL;
            }
        sb_printf(&b, "%s%s=\"", i ? "," : "", labels[i].name);
        sb_escaped(&b, labels[i].value, true);
        sb_puts(&b, "\"");
    }
    if (b.oom) {
        free(b.p);
        kf_error_set(err, -ENOMEM, 0, "out of memory");
        return NULL;
    }
    return b.p;
}

/* Finds or creates the series; *out is its union member's address. */
static int reg(kf_metrics *m, metric_type type, const char *name, const char *help, const double *bounds,
               size_t n_bounds, const kf_label_pair *labels, size_t n_labels, series **out, kf_error *err) {
    if (!m)
        return kf_error_set(err, -EINVAL, 0, "metrics: no registry");
    if (!name_valid(name, false))
        return kf_error_set(err, -EINVAL, 0, "metrics: invalid name '%s'", name ? name : "");
    if (!help || strlen(help) >= KF_METRICS_MAX_TEXT)
        return kf_error_set(err, -EINVAL, 0, "metrics: %s: help text missing or too long", name);
    if (type == T_HISTOGRAM) {
        if (n_bounds == 0 || n_bounds > KF_METRICS_MAX_BUCKETS)
            return kf_error_set(err, -EINVAL, 0, "metrics: %s: 1..%d buckets", name, KF_METRICS_MAX_BUCKETS);
        for (size_t i = 0; i < n_bounds; i++)
            if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
                return kf_error_set(err, -EINVAL, 0, "metrics: %s: bucket bounds must increase", name);
    }
    _cleanup_free_ char *lab = render_labels(labels, n_labels, err);
    if (!lab)
        return err ? err->code : -EINVAL;

    int r = 0;
    pthread_mutex_lock(&m->lock);
    family *f = m->first;
    while (f && strcmp(f->name, name))
        f = f->next;
    if (f) {
        if (f->type != type || f->n_bounds != n_bounds ||
            (n_bounds && memcmp(f->bounds, bounds, n_bounds * sizeof(double)))) {
            r = kf_error_set(err, -EINVAL, 0, "metrics: %s registered before with another type or buckets",
                             name);
            goto out;
        }
        for (series *s = f->first; s; s = s->next)
            if (!strcmp(s->labels, lab)) {
                *out = s;
                goto out;
            }
    } else {
        f = calloc(1, sizeof(*f));
        if (!f || !(f->name = strdup(name)) || !(f->help = strdup(help))) {
            if (f)
                free(f->name);
            free(f);
            r = kf_error_set(err, -ENOMEM, 0, "out of memory");
            goto out;
        }
        f->type = type;
        f->n_bounds = n_bounds;
        if (n_bounds)
            memcpy(f->bounds, bounds, n_bounds * sizeof(double));
        f->tail = &f->first;
        *m->tail = f;
        m->tail = &f->next;
    }
    series *s = calloc(1, sizeof(*s));
    if (!s) {
        r = kf_error_set(err, -ENOMEM, 0, "out of memory");
        goto out;
    }
    s->labels = TAKE_PTR(lab);
    if (type == T_HISTOGRAM) {
        pthread_mutex_init(&s->u.h.lock, NULL);
        s->u.h.fam = f;
    }
    *f->tail = s;
    f->tail = &s->next;
    *out = s;
out:
    pthread_mutex_unlock(&m->lock);
    return r;
}

int kf_metrics_counter(kf_metrics *m, const char *name, const char *help, const kf_label_pair *labels,
                       size_t n_labels, kf_counter **out, kf_error *err) {
    series *s = NULL;
    int r = reg(m, T_COUNTER, name, help, NULL, 0, labels, n_labels, &s, err);
    *out = r < 0 ? NULL : &s->u.c;
    return r;
}

int kf_metrics_gauge(kf_metrics *m, const char *name, const char *help, const kf_label_pair *labels,
                     size_t n_labels, kf_gauge **out, kf_error *err) {
    series *s = NULL;
    int r = reg(m, T_GAUGE, name, help, NULL, 0, labels, n_labels, &s, err);
    *out = r < 0 ? NULL : &s->u.g;
    return r;
}

int kf_metrics_histogram(kf_metrics *m, const char *name, const char *help, const double *bounds,
                         size_t n_bounds, const kf_label_pair *labels, size_t n_labels,
                         kf_histogram **out, kf_error *err) {
    series *s = NULL;
    int r = reg(m, T_HISTOGRAM, name, help, bounds, n_bounds, labels, n_labels, &s, err);
    *out = r < 0 ? NULL : &s->u.h;
    return r;
}

int kf_metrics_register(kf_metrics *m, const kf_metric_def *defs, size_t n, kf_error *err) {
    for (size_t i = 0; i < n; i++) {
        const kf_metric_def *d = &defs[i];
        const kf_label_pair *l = d->label.name ? &d->label : NULL;
        size_t nl = l ? 1 : 0;
        int r;
        switch (d->type) {
        case KF_METRIC_COUNTER: r = kf_metrics_counter(m, d->name, d->help, l, nl, d->handle, err); break;
        case KF_METRIC_GAUGE: r = kf_metrics_gauge(m, d->name, d->help, l, nl, d->handle, err); break;
        case KF_METRIC_HISTOGRAM:
            r = kf_metrics_histogram(m, d->name, d->help, d->bounds, d->n_bounds, l, nl, d->handle, err);
            break;
        default: r = kf_error_set(err, -EINVAL, 0, "metrics: %s: unknown type", d->name ? d->name : "");
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- updates ------------------------------------------------------------ */

void kf_counter_add(kf_counter *c, uint64_t n) {
    if (c)
        atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

uint64_t kf_counter_get(const kf_counter *c) {
    return c ? atomic_load_explicit(&((kf_counter *)c)->v, memory_order_relaxed) : 0;
}

void kf_gauge_set(kf_gauge *g, int64_t v) {
    if (g)
        atomic_store_explicit(&g->v, v, memory_order_relaxed);
}

void kf_gauge_add(kf_gauge *g, int64_t delta) {
    if (g)
        atomic_fetch_add_explicit(&g->v, delta, memory_order_relaxed);
}

int64_t kf_gauge_get(const kf_gauge *g) {
    return g ? atomic_load_explicit(&((kf_gauge *)g)->v, memory_order_relaxed) : 0;
}

void kf_histogram_observe(kf_histogram *h, double v) {
    if (!h || isnan(v))
        return;
    const family *f = h->fam;
    size_t i = 0;
    while (i < f->n_bounds && v > f->bounds[i]) /* le: a value on a bound counts in it */
        i++;
    pthread_mutex_lock(&h->lock);
    h->counts[i]++;
    h->count++;
    h->sum += v;
    pthread_mutex_unlock(&h->lock);
}

void kf_histogram_observe_since_us(kf_histogram *h, int64_t start_us) {
    if (h)
        kf_histogram_observe(h, (double)(kf_mono_us() - start_us) / 1e6);
}

uint64_t kf_histogram_count(kf_histogram *h) {
    if (!h)
        return 0;
    pthread_mutex_lock(&h->lock);
    uint64_t n = h->count;
    pthread_mutex_unlock(&h->lock);
    return n;
}

/* ---- exposition --------------------------------------------------------- */

/* name{labels[,extra]} - the series' name and label set. */
static void sb_series(strbuf *b, const char *name, const char *suffix, const char *labels,
                      const char *extra) {
    sb_puts(b, name);
    sb_puts(b, suffix);
    if (*labels || extra) {
        sb_puts(b, "{");
        sb_puts(b, labels);
        if (extra) {
            if (*labels)
                sb_puts(b, ",");
            sb_puts(b, extra);
        }
        sb_puts(b, "}");
    }
    sb_puts(b, " ");
}

static void expose_histogram(strbuf *b, const family *f, series *s) {
    uint64_t counts[KF_METRICS_MAX_BUCKETS + 1], count;
    double sum;
    pthread_mutex_lock(&s->u.h.lock);
    memcpy(counts, s->u.h.counts, sizeof(counts));
    count = s->u.h.count;
    sum = s->u.h.sum;
    pthread_mutex_unlock(&s->u.h.lock);
    uint64_t cum = 0;
    for (size_t i = 0; i <= f->n_bounds; i++) {
        cum += counts[i];
        strbuf le = {0};
        sb_puts(&le, "le=\"");
        if (i < f->n_bounds)
            sb_double(&le, f->bounds[i]);
        else
            sb_puts(&le, "+Inf");
        sb_puts(&le, "\"");
        if (le.oom) {
            b->oom = true;
            free(le.p);
            return;
        }
        sb_series(b, f->name, "_bucket", s->labels, le.p);
        free(le.p);
        sb_printf(b, "%" PRIu64 "\n", cum);
    }
    sb_series(b, f->name, "_sum", s->labels, NULL);
    sb_double(b, sum);
    sb_puts(b, "\n");
    sb_series(b, f->name, "_count", s->labels, NULL);
    sb_printf(b, "%" PRIu64 "\n", count);
}

int kf_metrics_expose(kf_metrics *m, char **out, size_t *len) {
    pthread_mutex_lock(&m->lock);
    kf_metrics_collect_fn collect = m->collect;
    void *ud = m->collect_ud;
    pthread_mutex_unlock(&m->lock);
    if (collect)
        collect(ud);

    strbuf b = {0};
    sb_puts(&b, "");
    pthread_mutex_lock(&m->lock);
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    for (const family *f = m->first; f; f = f->next) {
        sb_printf(&b, "# HELP %s ", f->name);
        sb_escaped(&b, f->help, false);
        sb_printf(&b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (series *s = f->first; s; s = s->next) {
            switch (f->type) {
            case T_COUNTER:
                sb_series(&b, f->name, "", s->labels, NULL);
                sb_printf(&b, "%" PRIu64 "\n", kf_counter_get(&s->u.c));
                break;
            case T_GAUGE:
                sb_series(&b, f->name, "", s->labels, NULL);
                sb_printf(&b, "%" PRId64 "\n", kf_gauge_get(&s->u.g));
                break;
            case T_HISTOGRAM:
                expose_histogram(&b, f, s);
                break;
            }
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (b.oom) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
