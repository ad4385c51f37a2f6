/* output.c - table and JSON printing for kfleetctl. See output.h.
 *
 * The JSON side walks protobuf-c descriptors, so every message of the
 * contract prints without per-message code and a field added to the
 * .proto shows up in `-o json` as soon as the code is regenerated.
 */
#include "output.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kf/cleanup.h"

/* ---- JSON ---------------------------------------------------------------- */

/* One value of field f stored at p (an element, for repeated fields). */
static cJSON *value_to_json(const ProtobufCFieldDescriptor *f, const void *p) {
    char num[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return cJSON_CreateNumber(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return cJSON_CreateNumber(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        /* Raw text keeps all 64 bits; a double would round past 2^53. */
        snprintf(num, sizeof(num), "%" PRId64, *(const int64_t *)p);
        return cJSON_CreateRaw(num);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(num, sizeof(num), "%" PRIu64, *(const uint64_t *)p);
        return cJSON_CreateRaw(num);
    case PROTOBUF_C_TYPE_FLOAT:
        return cJSON_CreateNumber(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return cJSON_CreateNumber(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return cJSON_CreateBool(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        if (ev)
            return cJSON_CreateString(ev->name);
        return cJSON_CreateNumber(v); /* a value newer than this build */
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return cJSON_CreateString(s ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        _cleanup_free_ char *enc = kf_base64(b->data, b->len);
        return enc ? cJSON_CreateString(enc) : NULL;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? kf_pb_to_json(m) : cJSON_CreateNull();
    }
    }
    return cJSON_CreateNull();
}

static size_t element_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    }
    return 0;
}

/* A map<K,V> is a repeated "XEntry" message with fields key = 1, value = 2. */
static bool is_map_entry(const ProtobufCFieldDescriptor *f) {
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *d = f->descriptor;
    size_t n = strlen(d->name);
    return d->n_fields == 2 && n > 5 && !strcmp(d->name + n - 5, "Entry") &&
           !strcmp(d->fields[0].name, "key") && !strcmp(d->fields[1].name, "value");
}

static cJSON *map_to_json(const ProtobufCFieldDescriptor *f, ProtobufCMessage *const *entries, size_t n) {
    cJSON *obj = cJSON_CreateObject();
    const ProtobufCMessageDescriptor *d = f->descriptor;
    for (size_t i = 0; obj && i < n; i++) {
        const char *e = (const char *)entries[i];
        const ProtobufCFieldDescriptor *kf = &d->fields[0], *vf = &d->fields[1];
        char keybuf[32];
        const char *key = keybuf;
        if (kf->type == PROTOBUF_C_TYPE_STRING) {
            key = *(char *const *)(e + kf->offset);
        } else {
            /* Integer keys become strings, as in the proto3 JSON mapping. */
            cJSON *k = value_to_json(kf, e + kf->offset);
            char *txt = k ? cJSON_PrintUnformatted(k) : NULL;
            snprintf(keybuf, sizeof(keybuf), "%s", txt ? txt : "?");
            free(txt);
            cJSON_Delete(k);
        }
        cJSON *v = value_to_json(vf, e + vf->offset);
        if (!v || !cJSON_AddItemToObject(obj, key ? key : "", v)) {
            cJSON_Delete(v);
            cJSON_Delete(obj);
            return NULL;
        }
    }
    return obj;
}

cJSON *kf_pb_to_json(const ProtobufCMessage *m) {
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    cJSON *obj = cJSON_CreateObject();
    if (!obj)
        return NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *p = base + f->offset;
        cJSON *v = NULL;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)p;
            if (is_map_entry(f)) {
                v = map_to_json(f, (ProtobufCMessage *const *)arr, n);
            } else {
                v = cJSON_CreateArray();
                size_t es = element_size(f->type);
                for (size_t k = 0; v && k < n; k++) {
                    cJSON *e = value_to_json(f, arr + k * es);
                    if (!e || !cJSON_AddItemToArray(v, e)) {
                        cJSON_Delete(e);
                        cJSON_Delete(v);
                        v = NULL;
                    }
                }
            }
        } else {
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                    continue;
            } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                       f->type != PROTOBUF_C_TYPE_STRING) {
                if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset))
                    continue;
            }
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && !*(ProtobufCMessage *const *)p)
                continue;
            v = value_to_json(f, p);
        }
        if (!v || !cJSON_AddItemToObject(obj, f->name, v)) {
            cJSON_Delete(v);
            cJSON_Delete(obj);
            return NULL;
        }
    }
    return obj;
}

int kf_print_json(const cJSON *j, bool pretty) {
    _cleanup_free_ char *s = pretty ? cJSON_Print(j) : cJSON_PrintUnformatted(j);
    if (!s)
        return -ENOMEM;
    fputs(s, stdout);
    fputc('\n', stdout);
    return 0;
}

int kf_print_pb_json(const ProtobufCMessage *m, bool pretty) {
    cJSON *j = kf_pb_to_json(m);
    if (!j)
        return -ENOMEM;
    int r = kf_print_json(j, pretty);
    cJSON_Delete(j);
    return r;
}

char *kf_base64(const void *data, size_t len) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = data;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = tbl[v >> 18];
        *o++ = tbl[(v >> 12) & 63];
        *o++ = tbl[(v >> 6) & 63];
        *o++ = tbl[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        *o++ = tbl[v >> 18];
        *o++ = tbl[(v >> 12) & 63];
        *o++ = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

/* ---- tables -------------------------------------------------------------- */

struct kf_table {
    size_t ncols;
    size_t nrows; /* including the header row, if any */
    size_t cap;
    char **cells; /* nrows * ncols */
};

kf_table *kf_table_new(size_t ncols, const char *const *headers) {
    kf_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ncols = ncols;
    if (headers && kf_table_row(t, headers) < 0)
        return kf_table_free(t);
    return t;
}

int kf_table_row(kf_table *t, const char *const *cells) {
    if (t->nrows == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 16;
        char **nc = realloc(t->cells, ncap * t->ncols * sizeof(char *));
        if (!nc)
            return -ENOMEM;
        t->cells = nc;
        t->cap = ncap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = strdup(cells[i] ? cells[i] : "");
        if (!row[i]) {
            while (i-- > 0)
                free(row[i]);
            return -ENOMEM;
        }
    }
    t->nrows++;
    return 0;
}

/* Display width: UTF-8 code points (good enough for ids, paths, numbers). */
static size_t text_width(const char *s) {
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

void kf_table_print(const kf_table *t, FILE *f) {
    if (!t || t->nrows == 0)
        return;
    _cleanup_free_ size_t *width = calloc(t->ncols, sizeof(size_t));
    if (!width)
        return;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t w = text_width(t->cells[r * t->ncols + c]);
            if (w > width[c])
                width[c] = w;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        char *const *row = t->cells + r * t->ncols;
        /* Trailing empty cells add no padding. */
        size_t last = t->ncols;
        while (last > 1 && !row[last - 1][0])
            last--;
        for (size_t c = 0; c < last; c++) {
            fputs(row[c], f);
            if (c + 1 < last)
                fprintf(f, "%*s", (int)(width[c] - text_width(row[c]) + 2), "");
        }
        fputc('\n', f);
    }
}

int kf_table_kv(kf_table *t, const char *key, const char *value) {
    const char *row[] = {key, value};
    return kf_table_row(t, row);
}

kf_table *kf_table_free(kf_table *t) {
    if (!t)
        return NULL;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
    return NULL;
}

/* ---- formatters ------------------------------------------------------------ */

char *kf_fmt_bytes(uint64_t n, char *buf, size_t size) {
    static const char units[] = "KMGTPE";
    if (n < 1024) {
        snprintf(buf, size, "%" PRIu64, n);
        return buf;
    }
    double v = (double)n;
    size_t u = 0;
    v /= 1024;
    while (v >= 1024 && u + 1 < sizeof(units) - 1) {
        v /= 1024;
        u++;
    }
    /* One decimal below 10 and only when it says something: 1.5G, 512M. */
    if (v < 10 && (uint64_t)(v * 10) % 10 != 0)
        snprintf(buf, size, "%.1f%c", (double)(uint64_t)(v * 10) / 10, units[u]);
    else
        snprintf(buf, size, "%" PRIu64 "%c", (uint64_t)v, units[u]);
    return buf;
}

char *kf_fmt_duration(uint64_t ms, char *buf, size_t size) {
    /* Two units at most, the smaller one left out when it is zero. */
    static const struct {
        uint64_t s;
        char name;
    } units[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    uint64_t s = ms / 1000;
    if (ms < 1000) {
        snprintf(buf, size, "%" PRIu64 "ms", ms);
        return buf;
    }
    if (s < 60) {
        snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
        return buf;
    }
    size_t u = 0;
    while (s < units[u].s)
        u++;
    uint64_t big = s / units[u].s, rest = (s % units[u].s) / units[u + 1].s;
    if (rest)
        snprintf(buf, size, "%" PRIu64 "%c%" PRIu64 "%c", big, units[u].name, rest, units[u + 1].name);
    else
        snprintf(buf, size, "%" PRIu64 "%c", big, units[u].name);
    return buf;
}

char *kf_fmt_time(int64_t unix_ms, char *buf, size_t size) {
    if (unix_ms <= 0) {
        snprintf(buf, size, "-");
        return buf;
    }
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, size, "%" PRId64, unix_ms);
    return buf;
}

char *kf_fmt_ago(int64_t when_ms, int64_t now_ms, char *buf, size_t size) {
    if (when_ms <= 0)
        snprintf(buf, size, "-");
    else
        kf_fmt_duration(now_ms > when_ms ? (uint64_t)(now_ms - when_ms) : 0, buf, size);
    return buf;
}

char *kf_fmt_when(int64_t when_ms, int64_t now_ms, char *buf, size_t size) {
    char t[48], ago[48];
    if (when_ms <= 0)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%s (%s ago)", kf_fmt_time(when_ms, t, sizeof(t)),
                 kf_fmt_ago(when_ms, now_ms, ago, sizeof(ago)));
    return buf;
}

const char *kf_enum_short_name(const ProtobufCEnumDescriptor *d, int value, const char *prefix,
                               char *buf, size_t size) {
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, value);
    if (!ev) {
        snprintf(buf, size, "%d", value);
        return buf;
    }
    size_t n = prefix ? strlen(prefix) : 0;
    if (n && !strncmp(ev->name, prefix, n) && ev->name[n])
        return ev->name + n;
    return ev->name;
}

size_t kf_strip_ansi(char *s) {
    char *r = s, *w = s;
    while (*r) {
        if (*r != '\x1b') {
            *w++ = *r++;
            continue;
        }
        r++;
        if (*r == '[') {
            /* CSI: parameters and intermediates, then one final byte 0x40-0x7e. */
            r++;
            while (*r && !((unsigned char)*r >= 0x40 && (unsigned char)*r <= 0x7e))
                r++;
            if (*r)
                r++;
        } else if (*r == ']') {
            /* OSC: up to BEL or ESC '\'. */
            r++;
            while (*r && *r != '\a' && !(r[0] == '\x1b' && r[1] == '\\'))
                r++;
            if (*r == '\a')
                r++;
            else if (*r)
                r += 2;
        } else if (*r) {
            r++; /* two-byte sequence: ESC c, ESC =, ... */
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}
