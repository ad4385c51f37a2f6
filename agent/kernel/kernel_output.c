/* kernel_output.c - iopub output content -> kf_kernel_event. See
 * kernel_output.h. Strings in the event point into the cJSON tree, so text
 * outputs cost no copy; base64 payloads are decoded in place. */
#include "kernel_output.h"

#include "jupyter_msg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int kf_kernel_output_is_event(const char *t) {
    return !strcmp(t, "stream") || !strcmp(t, "display_data") || !strcmp(t, "execute_result") ||
           !strcmp(t, "error");
}

static int has_prefix(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static int has_suffix(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

int kf_mime_is_binary(const char *m) {
    if (has_prefix(m, "image/"))
        return strcmp(m, "image/svg+xml") != 0;
    return has_prefix(m, "audio/") || has_prefix(m, "video/") || has_prefix(m, "font/") ||
           !strcmp(m, "application/pdf") || !strcmp(m, "application/octet-stream") ||
           !strcmp(m, "application/zip") || !strcmp(m, "application/gzip");
}

/* JSON-valued MIME types carry a JSON value, not a string of JSON text. */
static int mime_is_json(const char *m) {
    return !strcmp(m, "application/json") || has_suffix(m, "+json");
}

/* Join an array of strings (the nbformat "multiline string" form). NULL
 * if any element is not a string. */
static char *join_lines(const cJSON *arr, size_t *len) {
    size_t total = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsString(e))
            return NULL;
        total += strlen(e->valuestring);
    }
    char *out = malloc(total + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    cJSON_ArrayForEach(e, arr) {
        size_t l = strlen(e->valuestring);
        memcpy(out + n, e->valuestring, l);
        n += l;
    }
    out[n] = '\0';
    *len = n;
    return out;
}

/* Fill items from a mimebundle. Entries that cannot be decoded are
 * skipped. owned[i] is a buffer to free after the callback, or NULL. */
static int mime_items(cJSON *data, kf_mime_item *items, char **owned, size_t *n_out) {
    size_t n = 0;
    cJSON *v;
    cJSON_ArrayForEach(v, data) {
        if (n == KF_KERNEL_MAX_MIME_ITEMS)
            break;
        const char *mime = v->string;
        if (!mime)
            continue;
        kf_mime_item *it = &items[n];
        it->mime_type = mime;
        owned[n] = NULL;
        if (mime_is_json(mime)) {
            owned[n] = cJSON_PrintUnformatted(v);
            if (!owned[n])
                return -ENOMEM;
            it->data = owned[n];
            it->len = strlen(owned[n]);
        } else if (cJSON_IsString(v)) {
            size_t len = strlen(v->valuestring);
            if (kf_mime_is_binary(mime) && kf_b64_decode_inplace(v->valuestring, len, &len) < 0)
                continue;
            it->data = v->valuestring;
            it->len = len;
        } else if (cJSON_IsArray(v) && !kf_mime_is_binary(mime)) {
            size_t len = 0;
            owned[n] = join_lines(v, &len);
            if (!owned[n])
                continue;
            it->data = owned[n];
            it->len = len;
        } else {
            continue;
        }
        n++;
    }
    *n_out = n;
    return 0;
}

static int dispatch_display(kf_kernel_event *ev, cJSON *content, kf_kernel_event_cb cb,
                            void *userdata) {
    cJSON *data = cJSON_GetObjectItemCaseSensitive(content, "data");
    if (!cJSON_IsObject(data))
        return -EBADMSG;
    kf_mime_item items[KF_KERNEL_MAX_MIME_ITEMS];
    char *owned[KF_KERNEL_MAX_MIME_ITEMS];
    size_t n = 0;
    int r = mime_items(data, items, owned, &n);
    if (r == 0) {
        ev->items = items;
        ev->n_items = n;
        r = cb(userdata, ev);
    } else {
        /* mime_items failed on entry n: free what was made so far,
         * including that entry's slot (NULL). */
        n++;
    }
    for (size_t i = 0; i < n && i < KF_KERNEL_MAX_MIME_ITEMS; i++)
        free(owned[i]);
    return r;
}

int kf_kernel_output_dispatch(const char *msg_type, cJSON *content, kf_kernel_event_cb cb,
                              void *userdata) {
    kf_kernel_event ev = {0};
    if (!strcmp(msg_type, "stream")) {
        const char *name = kf_jmsg_str(content, "name");
        const char *text = kf_jmsg_str(content, "text");
        if (!name || !text)
            return -EBADMSG;
        ev.kind = KF_KEV_STREAM;
        ev.stream_is_stderr = !strcmp(name, "stderr");
        ev.text = text;
        ev.text_len = strlen(text);
        return cb(userdata, &ev);
    }
    if (!strcmp(msg_type, "display_data")) {
        ev.kind = KF_KEV_DISPLAY;
        return dispatch_display(&ev, content, cb, userdata);
    }
    if (!strcmp(msg_type, "execute_result")) {
        ev.kind = KF_KEV_RESULT;
        const cJSON *ec = cJSON_GetObjectItemCaseSensitive(content, "execution_count");
        ev.execution_count = cJSON_IsNumber(ec) ? ec->valueint : 0;
        return dispatch_display(&ev, content, cb, userdata);
    }
    if (!strcmp(msg_type, "error")) {
        ev.kind = KF_KEV_ERROR;
        ev.ename = kf_jmsg_str(content, "ename");
        ev.evalue = kf_jmsg_str(content, "evalue");
        if (!ev.ename)
            ev.ename = "";
        if (!ev.evalue)
            ev.evalue = "";
        const cJSON *tb = cJSON_GetObjectItemCaseSensitive(content, "traceback");
        size_t n = 0;
        const char **lines = NULL;
        if (cJSON_IsArray(tb)) {
            int total = cJSON_GetArraySize(tb);
            size_t cap = total > KF_KERNEL_MAX_TRACEBACK ? KF_KERNEL_MAX_TRACEBACK : (size_t)total;
            if (cap) {
                lines = malloc(cap * sizeof(*lines));
                if (!lines)
                    return -ENOMEM;
            }
            const cJSON *e;
            cJSON_ArrayForEach(e, tb) {
                if (n == cap)
                    break;
                if (cJSON_IsString(e))
                    lines[n++] = e->valuestring;
            }
        }
        ev.traceback = lines;
        ev.n_traceback = n;
        int r = cb(userdata, &ev);
        free(lines);
        return r;
    }
    return 0;
}
