/* files.c - client file access (download, upload, list, delete) inside a
 * session volume, and never outside it.
 *
 * Two layers. kf_path_check() is pure: it turns the client's path into a
 * normalised relative one or refuses it with a message the user can act
 * on. Everything else resolves that relative path against an fd of the
 * volume root with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): the kernel refuses, at every
 * component and atomically with the lookup, any symlink, any escape and any
 * mount crossing. Untrusted code owns the volume's contents and may swap a
 * directory for a symlink at any moment; because each step works on fds
 * obtained that way (mkdirat/unlinkat/fstatat relative to a checked
 * directory fd), a swap makes the call fail instead of redirecting it.
 *
 * No state; every function is thread-safe. fds returned are O_CLOEXEC and
 * owned by the caller.
 */
#include "files.h"

#include "kf/cleanup.h"
#include "kf/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DATA_PREFIX "/mnt/data"
#define RESOLVE_SAFE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

/* ---- kf_path_check (pure) ------------------------------------------------ */

int kf_path_check(const char *path, size_t len, char *out, size_t out_size, kf_error *err) {
    if (!path || len == 0)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "path is empty");
    if (len > KF_PATH_MAX)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "path is too long (%zu bytes, max %d)",
                            len, KF_PATH_MAX);
    if (memchr(path, '\0', len))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "path contains a NUL byte");
    if (!kf_utf8_valid(path, len))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "path is not valid UTF-8");
    ssize_t ctl = kf_control_char_at(path, len);
    if (ctl >= 0)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "path contains a control character (byte %zd)", ctl);
    if (!out || out_size < 2)
        return kf_error_set(err, -EINVAL, KF_ST_INTERNAL, "path buffer too small");

    /* Walk the components; empty ones ("//") and "." vanish. */
    size_t o = 0;    /* bytes written to out */
    int comp_no = 0; /* index of the component among the non-empty ones */
    int absolute = path[0] == '/';
    int prefix_ok = !absolute;
    for (size_t i = 0; i < len;) {
        while (i < len && path[i] == '/')
            i++;
        if (i >= len)
            break;
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        size_t clen = i - start;
        const char *c = path + start;
        if (clen == 2 && c[0] == '.' && c[1] == '.')
            return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "path must not contain '..'");
        if (clen > KF_PATH_COMPONENT_MAX)
            return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                                "path component is too long (%zu bytes, max %d)", clen,
                                KF_PATH_COMPONENT_MAX);
        if (clen == 1 && c[0] == '.')
            continue;
        if (absolute && comp_no < 2) {
            /* "/mnt/data" must be the first two components, exactly:
             * "/mnt/database" is not under it. */
            const char *want = comp_no == 0 ? "mnt" : "data";
            if (clen != strlen(want) || memcmp(c, want, clen) != 0)
                break; /* reported below */
            if (++comp_no == 2)
                prefix_ok = 1;
            continue;
        }
        comp_no++;
        if (o + (o ? 1 : 0) + clen + 1 > out_size)
            return kf_error_set(err, -ENAMETOOLONG, KF_ST_INVALID_ARGUMENT, "path is too long");
        if (o)
            out[o++] = '/';
        memcpy(out + o, c, clen);
        o += clen;
    }
    if (!prefix_ok)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT,
                            "absolute paths must be under " DATA_PREFIX ": %.*s", (int)(len > 200 ? 200 : len),
                            path);
    if (o == 0)
        out[o++] = '.';
    out[o] = '\0';
    return 0;
}

/* ---- resolution helpers -------------------------------------------------- */

/* openat2 beneath dirfd, never following a symlink; O_CLOEXEC|O_NOFOLLOW
 * always added. -errno on failure. EAGAIN (a concurrent rename seen by the
 * kernel's beneath-check) is retried a few times. */
static int open_beneath(int dirfd, const char *rel, int flags, mode_t mode) {
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = (uint64_t)(flags | O_CLOEXEC | O_NOFOLLOW);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_SAFE;
    for (int i = 0; i < 16; i++) {
        long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
        if (fd >= 0)
            return (int)fd;
        if (errno != EAGAIN && errno != EINTR)
            break;
    }
    return -errno;
}

/* Open the directory `rel` beneath dirfd. A symlink as the last component
 * makes O_DIRECTORY|O_NOFOLLOW answer ENOTDIR; report it as what it is
 * (ELOOP), by looking at the link itself through an O_PATH fd (which
 * RESOLVE_NO_SYMLINKS allows for a trailing link with O_NOFOLLOW). */
static int open_dir_beneath(int dirfd, const char *rel) {
    int fd = open_beneath(dirfd, rel, O_RDONLY | O_DIRECTORY, 0);
    if (fd != -ENOTDIR)
        return fd;
    _cleanup_close_ int pfd = open_beneath(dirfd, rel, O_PATH, 0);
    struct stat st;
    if (pfd >= 0 && fstat(pfd, &st) == 0 && S_ISLNK(st.st_mode))
        return -ELOOP;
    return -ENOTDIR;
}

/* The user-facing error for a failed operation on `path`. The one place
 * where file-system errnos become messages. */
static int path_error(kf_error *err, int code, const char *what, const char *path) {
    switch (-code) {
    case ELOOP:
        return kf_error_set(err, code, KF_ST_INVALID_ARGUMENT, "path crosses a symlink: refused: %s", path);
    case EXDEV:
        return kf_error_set(err, code, KF_ST_PERMISSION_DENIED, "path leaves the volume: refused: %s", path);
    case ENOENT:
        return kf_error_set(err, code, KF_ST_NOT_FOUND, "no such file: %s", path);
    case ENOTDIR:
        return kf_error_set(err, code, KF_ST_INVALID_ARGUMENT, "not a directory: %s", path);
    case EISDIR:
        return kf_error_set(err, code, KF_ST_INVALID_ARGUMENT, "is a directory: %s", path);
    case ENOSPC:
    case EDQUOT:
        return kf_error_set(err, code, KF_ST_RESOURCE_EXHAUSTED, "volume quota exceeded: %s", path);
    case EEXIST:
        return kf_error_set(err, code, KF_ST_ALREADY_EXISTS, "already exists: %s", path);
    case ENOTEMPTY:
        return kf_error_set(err, code, KF_ST_FAILED_PRECONDITION, "directory not empty: %s", path);
    case EACCES:
    case EPERM:
        return kf_error_set(err, code, KF_ST_PERMISSION_DENIED, "permission denied: %s", path);
    case ENAMETOOLONG:
        return kf_error_set(err, code, KF_ST_INVALID_ARGUMENT, "path is too long: %s", path);
    default:
        return kf_error_set(err, code, KF_ST_INTERNAL, "%s %s: %s", what, path, strerror(-code));
    }
}

int kf_files_error(kf_error *err, int code, const char *path) {
    return path_error(err, code < 0 ? code : -code, "error on", path ? path : "");
}

/* Normalise rel (callers may pass a client path or an already checked one). */
static int normalise(const char *rel, char *out, kf_error *err) {
    if (!rel)
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "path is empty");
    return kf_path_check(rel, strlen(rel), out, KF_PATH_MAX + 1, err);
}

/* Split "a/b/c" into dir "a/b" and base "c" (dir "." if none). path is
 * normalised and not ".". */
static void split(char *path, const char **dir, const char **base) {
    char *slash = strrchr(path, '/');
    if (!slash) {
        *dir = ".";
        *base = path;
    } else {
        *slash = '\0';
        *dir = path;
        *base = slash + 1;
    }
}

static int clear_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

/* ---- public API ----------------------------------------------------------- */

int kf_files_open_root(const char *volume_dir, int *fd_out, kf_error *err) {
    int fd = open(volume_dir, O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return kf_error_set(err, -errno, errno == ENOENT ? KF_ST_NOT_FOUND : KF_ST_INTERNAL,
                            "cannot open volume %s: %m", volume_dir);
    *fd_out = fd;
    return 0;
}

int kf_files_open_read(int rootfd, const char *rel, int *fd_out, struct stat *st, kf_error *err) {
    char p[KF_PATH_MAX + 1];
    int r = normalise(rel, p, err);
    if (r < 0)
        return r;
    /* O_NONBLOCK: opening a FIFO planted by the session must not hang us. */
    _cleanup_close_ int fd = open_beneath(rootfd, p, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0);
    if (fd < 0)
        return path_error(err, fd, "cannot open", p);
    struct stat s;
    if (fstat(fd, &s) < 0)
        return path_error(err, -errno, "cannot stat", p);
    if (S_ISDIR(s.st_mode))
        return path_error(err, -EISDIR, "cannot read", p);
    if (!S_ISREG(s.st_mode))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "not a regular file: %s", p);
    r = clear_nonblock(fd);
    if (r < 0)
        return path_error(err, r, "cannot open", p);
    if (st)
        *st = s;
    *fd_out = TAKE_FD(fd);
    return 0;
}

/* Open (creating if missing) the directory `name` under dirfd, owned by
 * uid:gid 0755 when we create it. Never follows a symlink: if `name` is or
 * becomes one, this fails with ELOOP. Returns the fd or -errno. */
static int open_or_make_dir(int dirfd, const char *name, uid_t uid, gid_t gid) {
    int created = 0;
    if (mkdirat(dirfd, name, 0700) == 0)
        created = 1; /* 0700 until chowned: nobody else sees a root-owned dir */
    else if (errno != EEXIST)
        return -errno;
    int fd = open_dir_beneath(dirfd, name);
    if (fd < 0)
        return fd;
    if (created && (fchown(fd, uid, gid) < 0 || fchmod(fd, 0755) < 0)) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

int kf_files_open_write(int rootfd, const char *rel, mode_t mode, uid_t uid, gid_t gid, int *fd_out,
                        kf_error *err) {
    char p[KF_PATH_MAX + 1];
    int r = normalise(rel, p, err);
    if (r < 0)
        return r;
    if (!strcmp(p, "."))
        return path_error(err, -EISDIR, "cannot write", "/mnt/data");
    if (mode == 0)
        mode = 0644;
    mode &= 0777; /* no setuid/setgid/sticky from a client */

    char shown[KF_PATH_MAX + 1];
    memcpy(shown, p, sizeof(shown));
    _cleanup_close_ int cur = open_dir_beneath(rootfd, ".");
    if (cur < 0)
        return path_error(err, cur, "cannot open", ".");

    /* Walk the parents, one fd per level. */
    char *c = p;
    for (char *slash; (slash = strchr(c, '/'));) {
        *slash = '\0';
        int next = open_or_make_dir(cur, c, uid, gid);
        if (next < 0) {
            /* show the prefix that failed */
            shown[slash - p] = '\0';
            return path_error(err, next, "cannot create directory", shown);
        }
        close(cur);
        cur = next;
        c = slash + 1;
    }

    /* O_NONBLOCK: a FIFO planted at the name must not hang us (and fails
     * the regular-file check below). Existing regular files are truncated. */
    _cleanup_close_ int fd = open_beneath(cur, c, O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY | O_NONBLOCK, 0600);
    if (fd < 0)
        return path_error(err, fd, "cannot create", shown);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return path_error(err, -errno, "cannot stat", shown);
    if (!S_ISREG(st.st_mode))
        return kf_error_set(err, -EINVAL, KF_ST_INVALID_ARGUMENT, "not a regular file: %s", shown);
    if (fchown(fd, uid, gid) < 0 || fchmod(fd, mode) < 0)
        return path_error(err, -errno, "cannot set owner of", shown);
    r = clear_nonblock(fd);
    if (r < 0)
        return path_error(err, r, "cannot open", shown);
    *fd_out = TAKE_FD(fd);
    return 0;
}

static void fill_entry(kf_file_entry *e, const char *name, const struct stat *st) {
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->size = (uint64_t)st->st_size;
    e->is_dir = S_ISDIR(st->st_mode);
    e->is_symlink = S_ISLNK(st->st_mode);
    e->mtime_ms = (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
    e->mode = (uint32_t)(st->st_mode & 07777);
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const kf_file_entry *)a)->name, ((const kf_file_entry *)b)->name);
}

int kf_files_list(int rootfd, const char *rel, kf_file_entry **out, size_t *n, size_t max, kf_error *err) {
    char p[KF_PATH_MAX + 1];
    int r = normalise(rel, p, err);
    if (r < 0)
        return r;
    *out = NULL;
    *n = 0;

    _cleanup_close_ int dfd = -1;
    if (!strcmp(p, ".")) {
        dfd = open_dir_beneath(rootfd, ".");
        if (dfd < 0)
            return path_error(err, dfd, "cannot open", "/mnt/data");
    } else {
        /* Look at the last component without following it: a file or a
         * symlink is listed as itself; only a real directory is opened. */
        char tmp[KF_PATH_MAX + 1];
        memcpy(tmp, p, sizeof(tmp));
        const char *dir, *base;
        split(tmp, &dir, &base);
        _cleanup_close_ int pfd = open_dir_beneath(rootfd, dir);
        if (pfd < 0)
            return path_error(err, pfd, "cannot open", p);
        struct stat st;
        if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return path_error(err, -errno, "cannot stat", p);
        if (!S_ISDIR(st.st_mode)) {
            if (max < 1)
                return kf_error_set(err, -E2BIG, KF_ST_RESOURCE_EXHAUSTED, "too many entries");
            kf_file_entry *e = calloc(1, sizeof(*e));
            if (!e)
                return kf_error_set(err, -ENOMEM, 0, "out of memory");
            fill_entry(e, base, &st);
            *out = e;
            *n = 1;
            return 0;
        }
        /* swapped for a symlink since the fstatat: ELOOP, not followed */
        dfd = open_dir_beneath(pfd, base);
        if (dfd < 0)
            return path_error(err, dfd, "cannot open", p);
    }

    DIR *d = fdopendir(dfd);
    if (!d)
        return path_error(err, -errno, "cannot list", p);
    dfd = -1; /* owned by d now */
    _cleanup_closedir_ DIR *dir = d;

    size_t cap = 0, cnt = 0;
    _cleanup_free_ kf_file_entry *v = NULL;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(dir))) {
        const char *name = de->d_name;
        if (!strcmp(name, ".") || !strcmp(name, ".."))
            continue;
        /* Names a client could not send back (not UTF-8, control
         * characters) are left out. */
        char chk[KF_PATH_MAX + 1];
        if (kf_path_check(name, strlen(name), chk, sizeof(chk), NULL) < 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT)
                continue; /* removed while we were listing */
            return path_error(err, -errno, "cannot stat", name);
        }
        if (cnt == max)
            return kf_error_set(err, -E2BIG, KF_ST_RESOURCE_EXHAUSTED,
                                "directory %s has more than %zu entries", p, max);
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            if (ncap > max)
                ncap = max;
            kf_file_entry *nv = realloc(v, ncap * sizeof(*nv));
            if (!nv)
                return kf_error_set(err, -ENOMEM, 0, "out of memory");
            v = nv;
            cap = ncap;
        }
        fill_entry(&v[cnt++], name, &st);
        errno = 0;
    }
    if (errno)
        return path_error(err, -errno, "cannot list", p);
    if (cnt)
        qsort(v, cnt, sizeof(*v), entry_cmp);
    *out = TAKE_PTR(v);
    *n = cnt;
    return 0;
}

int kf_files_delete(int rootfd, const char *rel, kf_error *err) {
    char p[KF_PATH_MAX + 1];
    int r = normalise(rel, p, err);
    if (r < 0)
        return r;
    if (!strcmp(p, "."))
        return kf_error_set(err, -EPERM, KF_ST_PERMISSION_DENIED, "the volume root cannot be deleted");
    char tmp[KF_PATH_MAX + 1];
    memcpy(tmp, p, sizeof(tmp));
    const char *dir, *base;
    split(tmp, &dir, &base);
    _cleanup_close_ int pfd = open_dir_beneath(rootfd, dir);
    if (pfd < 0)
        return path_error(err, pfd, "cannot open", p);
    /* unlinkat never follows the last component: a symlink is removed
     * itself. A directory answers EISDIR and is removed as one (if empty). */
    if (unlinkat(pfd, base, 0) == 0)
        return 0;
    if (errno == EISDIR && unlinkat(pfd, base, AT_REMOVEDIR) == 0)
        return 0;
    return path_error(err, -errno, "cannot delete", p);
}
