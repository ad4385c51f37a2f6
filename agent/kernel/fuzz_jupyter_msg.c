/* fuzz_jupyter_msg.c - libFuzzer harness for the parsers of untrusted
 * kernel bytes: kf_jmsg_parse (+ content), kf_kernel_output_dispatch and
 * kf_b64_decode_inplace. The input is split into frames at "\n--\n". The
 * first input byte chooses whether the harness re-signs the JSON frames
 * with the test key, so the fuzzer gets past the HMAC check into the JSON
 * and output code instead of only exercising signature rejection. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jupyter_msg.h"
#include "kernel_output.h"

static int sink(void *ud, const kf_kernel_event *ev) {
    size_t *acc = ud;
    for (size_t i = 0; i < ev->n_items; i++)
        *acc += ev->items[i].len + (ev->items[i].len ? (unsigned char)ev->items[i].data[0] : 0);
    *acc += ev->text_len + ev->n_traceback;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static kf_jmsg_codec *codec;
    static const char key[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    if (!codec && kf_jmsg_codec_new(&codec, key, sizeof(key) - 1) < 0)
        abort();
    if (size < 1)
        return 0;
    int resign = data[0] & 1;
    char *buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data + 1, size - 1);
    size_t len = size - 1;

    kf_jmsg_frame f[KF_JMSG_MAX_FRAMES + 2];
    size_t n = 0, start = 0;
    for (size_t i = 0; i + 4 <= len && n < KF_JMSG_MAX_FRAMES + 1; i++) {
        if (!memcmp(buf + i, "\n--\n", 4)) {
            f[n++] = (kf_jmsg_frame){buf + start, i - start};
            start = i + 4;
            i += 3;
        }
    }
    f[n++] = (kf_jmsg_frame){buf + start, len - start};

    char sig[KF_JMSG_SIG_LEN + 1];
    for (size_t d = 0; resign && d + 6 <= n; d++) {
        if (f[d].len == sizeof(KF_JMSG_DELIM) - 1 && !memcmp(f[d].data, KF_JMSG_DELIM, f[d].len)) {
            if (kf_jmsg_sign(codec, &f[d + 2], sig) == 0)
                f[d + 1] = (kf_jmsg_frame){sig, KF_JMSG_SIG_LEN};
            break;
        }
    }
    kf_jmsg m;
    if (kf_jmsg_parse(codec, f, n, &m) == 0) {
        if (kf_jmsg_parse_content(codec, &m) == 0) {
            size_t acc = 0;
            kf_kernel_output_dispatch(m.msg_type, m.content, sink, &acc);
        }
        kf_jmsg_done(&m);
    }
    size_t out;
    kf_b64_decode_inplace(buf, len, &out);
    free(buf);
    return 0;
}
