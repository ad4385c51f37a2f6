/* test_volume_io.c - the pieces of a session move that touch a volume:
 * kf_volume_data_extent finds exactly the written stretches of a sparse
 * file; kf_volume_chown_all changes every inode of a tree (symlinks
 * themselves, never their targets outside the tree), survives a tree far
 * deeper than any fd budget, counts hard links once and stops at its inode
 * bound. The walk runs on a plain directory (it never needs a mount).
 * Needs root (chown); exits 77 otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "kf/util.h"
#include "volume_io.h"

#define UID 424242
#define GID 424243

static char g_dir[256];

static void path(char *out, size_t size, const char *leaf) { snprintf(out, size, "%s/%s", g_dir, leaf); }

static void write_at(int fd, off_t off, size_t len) {
    char *buf = malloc(len);
    assert_non_null(buf);
    memset(buf, 'x', len);
    assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
    free(buf);
}

static void test_extents(void **state) {
    (void)state;
    char f[300];
    path(f, sizeof(f), "sparse");
    int fd = open(f, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    const uint64_t size = 64u << 20;
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    write_at(fd, 1 << 20, 8192);
    write_at(fd, 40 << 20, 4096);
    uint64_t off = 0, start, stop, total = 0;
    int n = 0;
    while (kf_volume_data_extent(fd, off, size, &start, &stop) == 0) {
        assert_true(start >= off && stop > start && stop <= size);
        total += stop - start;
        off = stop;
        n++;
    }
    assert_int_equal(n, 2);
    assert_int_equal(total, 8192 + 4096);
    /* clipped to `end`; nothing past it */
    assert_int_equal(kf_volume_data_extent(fd, 0, (1 << 20) + 4096, &start, &stop), 0);
    assert_int_equal(start, 1 << 20);
    assert_int_equal(stop, (1 << 20) + 4096);
    assert_int_equal(kf_volume_data_extent(fd, (40 << 20) + 4096, size, &start, &stop), -ENXIO);
    close(fd);
    unlink(f);
}

static void test_chown_stays_inside(void **state) {
    (void)state;
    char vol[300], outside[300], p[600];
    path(vol, sizeof(vol), "vol");
    path(outside, sizeof(outside), "outside");
    assert_int_equal(mkdir(vol, 0755), 0);
    assert_int_equal(mkdir(outside, 0755), 0);
    snprintf(p, sizeof(p), "%s/host-file", outside);
    assert_int_equal(kf_write_file_atomic(p, "host", 4, 0644, 0), 0);
    /* what a session leaves on its volume: files, a subdirectory, links
     * to the host by absolute path and by ../.., a hard link */
    snprintf(p, sizeof(p), "%s/a.txt", vol);
    assert_int_equal(kf_write_file_atomic(p, "a", 1, 0644, 0), 0);
    char p2[600];
    snprintf(p2, sizeof(p2), "%s/hard", vol);
    assert_int_equal(link(p, p2), 0);
    snprintf(p, sizeof(p), "%s/sub", vol);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/sub/abs", vol);
    snprintf(p2, sizeof(p2), "%s/host-file", outside);
    assert_int_equal(symlink(p2, p), 0);
    snprintf(p, sizeof(p), "%s/sub/dir", vol);
    assert_int_equal(symlink(outside, p), 0);
    snprintf(p, sizeof(p), "%s/sub/up", vol);
    assert_int_equal(symlink("../../outside", p), 0);

    kf_error err = {0};
    assert_int_equal(kf_volume_chown_all(vol, UID, GID, 100, &err), 0);
    const char *inside[] = {"", "/a.txt", "/hard", "/sub", "/sub/abs", "/sub/dir", "/sub/up"};
    for (size_t i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
        struct stat st;
        snprintf(p, sizeof(p), "%s%s", vol, inside[i]);
        assert_int_equal(lstat(p, &st), 0);
        assert_int_equal(st.st_uid, UID);
        assert_int_equal(st.st_gid, GID);
    }
    struct stat st;
    assert_int_equal(stat(outside, &st), 0);
    assert_int_equal(st.st_uid, 0);
    snprintf(p, sizeof(p), "%s/host-file", outside);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_uid, 0);
    assert_int_equal(st.st_gid, 0);

    /* a symlink as the root itself is refused, not followed */
    snprintf(p, sizeof(p), "%s/rootlink", g_dir);
    assert_int_equal(symlink(outside, p), 0);
    assert_true(kf_volume_chown_all(p, UID, GID, 100, &err) < 0);
    assert_int_equal(stat(outside, &st), 0);
    assert_int_equal(st.st_uid, 0);
    unlink(p);
    kf_rm_rf(vol);
    kf_rm_rf(outside);
}

static void test_chown_deep_and_bounded(void **state) {
    (void)state;
    char vol[300];
    path(vol, sizeof(vol), "deep");
    assert_int_equal(mkdir(vol, 0755), 0);
    /* 3000 levels deep */
    int fd = open(vol, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(fd >= 0);
    for (int i = 0; i < 3000; i++) {
        assert_int_equal(mkdirat(fd, "d", 0755), 0);
        int next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(next >= 0);
        if (i % 500 == 0) {
            int f = openat(fd, "f", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            assert_true(f >= 0);
            close(f);
        }
        close(fd);
        fd = next;
    }
    int f = openat(fd, "bottom", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(f >= 0);
    close(f);
    kf_error err = {0};
    /* with 64 fds a walk that keeps one open per level could not finish */
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 64;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int r = kf_volume_chown_all(vol, UID, GID, 4000, &err);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(r, 0);
    struct stat st;
    assert_int_equal(fstatat(fd, "bottom", &st, AT_SYMLINK_NOFOLLOW), 0);
    assert_int_equal(st.st_uid, UID);
    close(fd);
    /* 3000 dirs + 7 files + the root: a bound below that is refused */
    err = (kf_error){0};
    assert_int_equal(kf_volume_chown_all(vol, 0, 0, 3000, &err), -EFBIG);
    assert_non_null(strstr(err.msg, "inode quota"));
    /* kf_rm_rf may not cope with 3000 levels: unwind from the bottom */
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", vol);
    assert_int_equal(system(cmd), 0);
}

static void test_hard_links_count_once(void **state) {
    (void)state;
    char vol[300], p[400], q[400];
    path(vol, sizeof(vol), "links");
    assert_int_equal(mkdir(vol, 0755), 0);
    snprintf(p, sizeof(p), "%s/file", vol);
    assert_int_equal(kf_write_file_atomic(p, "x", 1, 0644, 0), 0);
    for (int i = 0; i < 50; i++) {
        snprintf(q, sizeof(q), "%s/l%d", vol, i);
        assert_int_equal(link(p, q), 0);
    }
    kf_error err = {0};
    /* 51 entries, 2 inodes (the root and the file) */
    assert_int_equal(kf_volume_chown_all(vol, UID, GID, 3, &err), 0);
    kf_rm_rf(vol);
}

int main(void) {
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: needs root\n");
        return 77;
    }
    snprintf(g_dir, sizeof(g_dir), "/var/tmp/kf-test-volume-io-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extents),
        cmocka_unit_test(test_chown_stays_inside),
        cmocka_unit_test(test_chown_deep_and_bounded),
        cmocka_unit_test(test_hard_links_count_once),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return r;
}
