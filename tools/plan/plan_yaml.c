/* plan_yaml.c - reads a planner config written in YAML into the same cJSON
 * tree a JSON config gives, so one validator (plan_config.c) serves both.
 * libyaml's event parser drives a small stack of open containers; scalars
 * are kept as strings (the validator parses them with messages naming the
 * field). It owns nothing past the call: the tree goes to the caller.
 *
 * Limits, as the input is a user's file: anchors and aliases are refused
 * (no "billion laughs"), one document, depth <= KF_PLAN_YAML_DEPTH_MAX,
 * nodes <= KF_PLAN_YAML_NODES_MAX.
 */
#include <errno.h>
#include <string.h>
#include <yaml.h>

#include "plan_internal.h"

typedef struct yaml_reader {
    cJSON *stack[KF_PLAN_YAML_DEPTH_MAX];
    char *keys[KF_PLAN_YAML_DEPTH_MAX]; /* pending key of each open mapping */
    int depth;
    size_t nodes;
    cJSON *root;
} yaml_reader;

static void reader_done(yaml_reader *y) {
    for (int i = 0; i < y->depth; i++)
        free(y->keys[i]);
    cJSON_Delete(y->root);
}

/* Adds `item` to the innermost container (as the value of its pending key
 * for a mapping, where a scalar without a pending key becomes the key), or
 * makes it the root. Takes ownership of item. */
static int attach(yaml_reader *y, cJSON *item, const char *scalar, size_t line, kf_error *err) {
    if (++y->nodes > KF_PLAN_YAML_NODES_MAX) {
        cJSON_Delete(item);
        return kf_error_set(err, -EINVAL, 0, "line %zu: more than %d YAML nodes", line, KF_PLAN_YAML_NODES_MAX);
    }
    if (y->depth == 0) {
        if (y->root) {
            cJSON_Delete(item);
            return kf_error_set(err, -EINVAL, 0, "line %zu: more than one YAML document", line);
        }
        y->root = item;
        return 0;
    }
    cJSON *top = y->stack[y->depth - 1];
    if (cJSON_IsArray(top)) {
        cJSON_AddItemToArray(top, item);
        return 0;
    }
    char **key = &y->keys[y->depth - 1];
    if (!*key) {
        if (!scalar) {
            cJSON_Delete(item);
            return kf_error_set(err, -EINVAL, 0, "line %zu: a mapping key must be a plain scalar", line);
        }
        cJSON_Delete(item);
        *key = strdup(scalar);
        return *key ? 0 : -ENOMEM;
    }
    if (cJSON_GetObjectItemCaseSensitive(top, *key)) {
        cJSON_Delete(item);
        return kf_error_set(err, -EINVAL, 0, "line %zu: key '%s' appears twice", line, *key);
    }
    cJSON_AddItemToObject(top, *key, item);
    free(*key);
    *key = NULL;
    return 0;
}

static int open_container(yaml_reader *y, cJSON *c, size_t line, kf_error *err) {
    if (!c)
        return -ENOMEM;
    if (y->depth >= KF_PLAN_YAML_DEPTH_MAX) {
        cJSON_Delete(c);
        return kf_error_set(err, -EINVAL, 0, "line %zu: nested deeper than %d", line, KF_PLAN_YAML_DEPTH_MAX);
    }
    /* attach first (the container then belongs to the tree), then push. */
    int r = attach(y, c, NULL, line, err);
    if (r < 0)
        return r;
    y->stack[y->depth] = c;
    y->keys[y->depth] = NULL;
    y->depth++;
    return 0;
}

static int handle(yaml_reader *y, const yaml_event_t *ev, kf_error *err) {
    size_t line = ev->start_mark.line + 1;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return kf_error_set(err, -EINVAL, 0, "line %zu: YAML aliases are not supported", line);
    case YAML_SCALAR_EVENT: {
        if (ev->data.scalar.anchor)
            return kf_error_set(err, -EINVAL, 0, "line %zu: YAML anchors are not supported", line);
        const char *v = (const char *)ev->data.scalar.value;
        cJSON *s = cJSON_CreateString(v);
        if (!s)
            return -ENOMEM;
        return attach(y, s, v, line, err);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        const yaml_char_t *anchor = ev->type == YAML_SEQUENCE_START_EVENT ? ev->data.sequence_start.anchor
                                                                          : ev->data.mapping_start.anchor;
        if (anchor)
            return kf_error_set(err, -EINVAL, 0, "line %zu: YAML anchors are not supported", line);
        return open_container(y, ev->type == YAML_SEQUENCE_START_EVENT ? cJSON_CreateArray() : cJSON_CreateObject(),
                              line, err);
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        y->depth--;
        free(y->keys[y->depth]);
        y->keys[y->depth] = NULL;
        return 0;
    default:
        return 0;
    }
}

int kf_plan_yaml_to_json(const char *text, size_t len, cJSON **out, kf_error *err) {
    yaml_parser_t parser;
    yaml_reader y = {0};
    int r = 0;
    bool done = false;
    if (!yaml_parser_initialize(&parser))
        return -ENOMEM;
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            r = kf_error_set(err, -EINVAL, 0, "line %zu: %s", parser.problem_mark.line + 1,
                             parser.problem ? parser.problem : "malformed YAML");
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        r = handle(&y, &ev, err);
        yaml_event_delete(&ev);
        if (r < 0)
            break;
    }
    yaml_parser_delete(&parser);
    if (r == 0 && !y.root)
        r = kf_error_set(err, -EINVAL, 0, "the config is empty");
    if (r < 0) {
        if (r == -ENOMEM)
            kf_error_set(err, -ENOMEM, 0, "out of memory reading YAML");
        reader_done(&y);
        return r;
    }
    *out = y.root;
    return 0;
}
