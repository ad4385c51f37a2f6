/* fuzz_etcd_json.c - libFuzzer harness for the decoders of bytes an etcd
 * endpoint (or anything posing as one) sends: watch stream messages, range
 * and txn responses, gateway error objects, base64. The first input byte
 * chooses the decoder; the rest is the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    kf_error e = {0};
    switch (data[0] % 4) {
    case 0: {
        kf_etcd_watch_msg m;
        if (kf_etcd_json_watch_msg(body, len, &m, &e) == 0)
            kf_etcd_watch_msg_done(&m);
        break;
    }
    case 1:
    case 2: {
        cJSON *root = NULL;
        if (kf_etcd_json_parse(body, len, &root, &e) < 0)
            break;
        int code;
        kf_etcd_json_error(root, &code, &e);
        if (data[0] % 4 == 1) {
            kf_etcd_kvs kvs;
            if (kf_etcd_json_range_resp(root, &kvs, &e) == 0)
                kf_etcd_kvs_done(&kvs);
        } else {
            kf_etcd_txn_result r;
            if (kf_etcd_json_txn_resp(root, &r, &e) == 0)
                kf_etcd_txn_result_done(&r);
        }
        cJSON_Delete(root);
        break;
    }
    default: {
        char *out = NULL;
        size_t out_len = 0;
        if (kf_etcd_b64_decode(body, len, &out, &out_len) == 0) {
            char *again = kf_etcd_b64_encode(out, out_len);
            /* Strict decoding accepts only canonical text: it round-trips. */
            if (!again || strlen(again) != len || memcmp(again, body, len) != 0)
                abort();
            free(again);
            free(out);
        }
        break;
    }
    }
    return 0;
}
