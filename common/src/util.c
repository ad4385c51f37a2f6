/* util.c - clocks, ids, bounded file I/O, atomic writes, UTF-8 and size
 * parsing. See util.h for the contracts. */
#include "kf/util.h"
#include "kf/cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t kf_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t kf_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t kf_unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kf_cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t ca;
    int r = pthread_condattr_init(&ca);
    if (r)
        return -r;
    r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (!r)
        r = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return -r;
}

struct timespec kf_mono_deadline(int64_t ms) {
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    return dl;
}

int kf_random_id(char *out, size_t size, const char *prefix, size_t nhex) {
    size_t plen = strlen(prefix);
    if (plen + nhex + 1 > size || nhex > 64)
        return -ENOSPC;
    unsigned char rnd[32];
    size_t need = (nhex + 1) / 2;
    if (getrandom(rnd, need, 0) != (ssize_t)need)
        return -EIO;
    memcpy(out, prefix, plen);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < nhex; i++)
        out[plen + i] = hex[(rnd[i / 2] >> ((i & 1) ? 0 : 4)) & 0xf];
    out[plen + nhex] = '\0';
    return 0;
}

int kf_read_file(const char *path, size_t max, char **out, size_t *len) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    size_t cap = 4096, n = 0;
    _cleanup_free_ char *buf = malloc(cap + 1);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (n == cap) {
            if (cap >= max)
                return -EFBIG;
            cap = cap * 2 > max ? max : cap * 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb)
                return -ENOMEM;
            buf = nb;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    *out = TAKE_PTR(buf);
    return 0;
}

int kf_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, int flags) {
    char tmp[PATH_MAX];
    /* per thread: two threads may replace the same file at once */
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)gettid()) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int r = 0;
    {
        _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
            return -errno;
        const char *p = data;
        size_t left = len;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                r = -errno;
                break;
            }
            p += w;
            left -= (size_t)w;
        }
        if (r == 0 && (flags & KF_WRITE_DURABLE) && fdatasync(fd) < 0)
            r = -errno;
    }
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

int kf_write_string(const char *path, const char *s) {
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    size_t len = strlen(s);
    ssize_t w = write(fd, s, len);
    if (w < 0)
        return -errno;
    return (size_t)w == len ? 0 : -EIO;
}

int kf_mkdir_p(const char *path, mode_t mode) {
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof(buf))
        return -ENAMETOOLONG;
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int rm_one(const char *fpath, const struct stat *sb, int typeflag, struct FTW *ftwbuf) {
    (void)sb;
    (void)ftwbuf;
    int r = (typeflag == FTW_DP) ? rmdir(fpath) : unlink(fpath);
    if (r < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int kf_rm_rf(const char *path) {
    /* FTW_PHYS: never follow symlinks; FTW_MOUNT: stay on this file system,
     * so a still-mounted volume is never emptied by accident. */
    int r = nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    if (r < 0 && errno == ENOENT)
        return 0;
    return r < 0 ? -errno : r;
}

ssize_t kf_control_char_at(const char *buf, size_t len) {
    const unsigned char *s = (const unsigned char *)buf;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] == 0x7f || (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f))
            return (ssize_t)i;
    return -1;
}

int kf_utf8_valid(const char *buf, size_t len) {
    const unsigned char *s = (const unsigned char *)buf;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        for (size_t k = 1; k <= n; k++) {
            if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000))
            return 0; /* overlong */
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

int kf_parse_size(const char *s, uint64_t *out) {
    if (!s || !*s)
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0 || !isfinite(v))
        return -EINVAL;
    double mul = 1;
    if (*end) {
        switch (*end) {
        case 'k': case 'K': mul = 1024.0; break;
        case 'm': case 'M': mul = 1024.0 * 1024; break;
        case 'g': case 'G': mul = 1024.0 * 1024 * 1024; break;
        case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
        default: return -EINVAL;
        }
        end++;
        if (*end == 'i')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
        if (*end)
            return -EINVAL;
    }
    double r = v * mul;
    if (r > 9.0e18)
        return -EINVAL;
    *out = (uint64_t)r;
    return 0;
}

int kf_parse_duration_ms(const char *s, uint64_t *out) {
    if (!s || !*s)
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0 || !isfinite(v))
        return -EINVAL;
    double mul;
    if (!*end || !strcmp(end, "s"))
        mul = 1000;
    else if (!strcmp(end, "ms"))
        mul = 1;
    else if (!strcmp(end, "m"))
        mul = 60000;
    else if (!strcmp(end, "h"))
        mul = 3600000;
    else
        return -EINVAL;
    double r = v * mul;
    if (r > 9.0e15)
        return -EINVAL;
    *out = (uint64_t)r;
    return 0;
}
