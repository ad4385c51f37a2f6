/* test_files.c - kf_files_* on a temp directory standing in for a volume:
 * planted symlinks (to /etc/shadow, to ../.., to a directory outside) are
 * never followed by read, list, write or delete; a parent swapped for a
 * symlink, even while we work, never redirects us; write creates parents
 * owned by the session uid. Ownership checks need root (skipped if not). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "files.h"
#include "kf/util.h"

static char g_dir[256];  /* temp root */
static char g_vol[300];  /* the "volume" */
static char g_out[300];  /* outside the volume */
static int g_root = -1;

static void vpath(char *buf, size_t size, const char *rel) {
    snprintf(buf, size, "%s/%s", g_vol, rel);
}

static void put(const char *path, const char *content) {
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
}

static void get(int fd, char *buf, size_t size) {
    ssize_t n = read(fd, buf, size - 1);
    assert_true(n >= 0);
    buf[n] = '\0';
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/kf-test-files-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_vol, sizeof(g_vol), "%s/vol", g_dir);
    snprintf(g_out, sizeof(g_out), "%s/outside", g_dir);
    if (mkdir(g_vol, 0755) < 0 || mkdir(g_out, 0755) < 0)
        return -1;
    char p[512];
    snprintf(p, sizeof(p), "%s/secret", g_out);
    put(p, "outside");
    /* planted links */
    vpath(p, sizeof(p), "shadow");
    if (symlink("/etc/shadow", p) < 0)
        return -1;
    vpath(p, sizeof(p), "up");
    if (symlink("../..", p) < 0)
        return -1;
    vpath(p, sizeof(p), "out");
    if (symlink(g_out, p) < 0)
        return -1;
    vpath(p, sizeof(p), "dangling");
    if (symlink("/nonexistent-kf-target", p) < 0)
        return -1;
    kf_error err = {0};
    return kf_files_open_root(g_vol, &g_root, &err);
}

static int teardown(void **state) {
    (void)state;
    if (g_root >= 0)
        close(g_root);
    kf_rm_rf(g_dir);
    return 0;
}

static void expect_symlink_refused(int r, const kf_error *err) {
    assert_int_equal(r, -ELOOP);
    assert_int_equal(kf_error_status(err), KF_ST_INVALID_ARGUMENT);
    assert_non_null(strstr(err->msg, "symlink"));
}

static void test_read_never_follows(void **state) {
    (void)state;
    kf_error err = {0};
    int fd = -1;
    struct stat st;
    expect_symlink_refused(kf_files_open_read(g_root, "shadow", &fd, &st, &err), &err);
    expect_symlink_refused(kf_files_open_read(g_root, "/mnt/data/shadow", &fd, &st, &err), &err);
    expect_symlink_refused(kf_files_open_read(g_root, "up/etc/passwd", &fd, &st, &err), &err);
    expect_symlink_refused(kf_files_open_read(g_root, "out/secret", &fd, &st, &err), &err);
    expect_symlink_refused(kf_files_open_read(g_root, "dangling", &fd, &st, &err), &err);
    assert_int_equal(fd, -1);
    /* bad client paths are refused before any I/O */
    assert_int_equal(kf_files_open_read(g_root, "../outside/secret", &fd, &st, &err), -EINVAL);
    assert_int_equal(kf_files_open_read(g_root, "/etc/passwd", &fd, &st, &err), -EINVAL);
    /* missing: NOT_FOUND with the path */
    assert_int_equal(kf_files_open_read(g_root, "nope.txt", &fd, &st, &err), -ENOENT);
    assert_int_equal(kf_error_status(&err), KF_ST_NOT_FOUND);
    assert_string_equal(err.msg, "no such file: nope.txt");
}

static void test_read_kinds(void **state) {
    (void)state;
    kf_error err = {0};
    char p[512], buf[64];
    vpath(p, sizeof(p), "plain.txt");
    put(p, "hello");
    int fd = -1;
    struct stat st;
    assert_int_equal(kf_files_open_read(g_root, "/mnt/data/plain.txt", &fd, &st, &err), 0);
    assert_int_equal(st.st_size, 5);
    get(fd, buf, sizeof(buf));
    assert_string_equal(buf, "hello");
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
    close(fd);
    /* a directory */
    assert_int_equal(kf_files_open_read(g_root, ".", &fd, &st, &err), -EISDIR);
    /* a FIFO: refused, and we do not hang opening it */
    vpath(p, sizeof(p), "fifo");
    assert_int_equal(mkfifo(p, 0644), 0);
    assert_int_equal(kf_files_open_read(g_root, "fifo", &fd, &st, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "regular"));
    fd = -1;
    assert_true(kf_files_open_write(g_root, "fifo", 0, getuid(), getgid(), &fd, &err) < 0);
    assert_int_equal(fd, -1);
    unlink(p);
}

static void test_write_never_follows(void **state) {
    (void)state;
    kf_error err = {0};
    struct stat before, after;
    int have_shadow = stat("/etc/shadow", &before) == 0;
    int fd = -1;
    expect_symlink_refused(kf_files_open_write(g_root, "shadow", 0644, 1234, 1234, &fd, &err), &err);
    expect_symlink_refused(kf_files_open_write(g_root, "up/x", 0644, 1234, 1234, &fd, &err), &err);
    expect_symlink_refused(kf_files_open_write(g_root, "out/secret", 0644, 1234, 1234, &fd, &err), &err);
    expect_symlink_refused(kf_files_open_write(g_root, "out/new/deeper", 0644, 1234, 1234, &fd, &err), &err);
    /* a dangling link is not created through */
    expect_symlink_refused(kf_files_open_write(g_root, "dangling", 0644, 1234, 1234, &fd, &err), &err);
    assert_int_equal(access("/nonexistent-kf-target", F_OK), -1);
    if (have_shadow) {
        assert_int_equal(stat("/etc/shadow", &after), 0);
        assert_int_equal(before.st_size, after.st_size);
        assert_int_equal(before.st_uid, after.st_uid);
        assert_int_equal(before.st_mode, after.st_mode);
        assert_int_equal(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
        assert_int_equal(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
    }
    char p[512], buf[64];
    snprintf(p, sizeof(p), "%s/secret", g_out);
    int sfd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(sfd >= 0);
    get(sfd, buf, sizeof(buf));
    close(sfd);
    assert_string_equal(buf, "outside");
    snprintf(p, sizeof(p), "%s/new", g_out);
    assert_int_equal(access(p, F_OK), -1);
}

static void test_write_creates_parents(void **state) {
    (void)state;
    if (geteuid() != 0)
        skip();
    kf_error err = {0};
    int fd = -1;
    mode_t old = umask(077); /* our umask must not leak into the volume */
    int r = kf_files_open_write(g_root, "/mnt/data/p/q/r.txt", 04755, 1234, 4321, &fd, &err);
    umask(old);
    if (r < 0)
        fail_msg("open_write: %s", err.msg);
    assert_int_equal(write(fd, "data", 4), 4);
    close(fd);
    const char *dirs[] = {"p", "p/q"};
    for (int i = 0; i < 2; i++) {
        char p[512];
        struct stat st;
        vpath(p, sizeof(p), dirs[i]);
        assert_int_equal(lstat(p, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_uid, 1234);
        assert_int_equal(st.st_gid, 4321);
        assert_int_equal(st.st_mode & 07777, 0755);
    }
    char p[512];
    struct stat st;
    vpath(p, sizeof(p), "p/q/r.txt");
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_uid, 1234);
    assert_int_equal(st.st_gid, 4321);
    assert_int_equal(st.st_mode & 07777, 0755); /* setuid bit dropped */
    assert_int_equal(st.st_size, 4);
    /* rewrite truncates; default mode 0644 */
    assert_int_equal(kf_files_open_write(g_root, "p/q/r.txt", 0, 1234, 4321, &fd, &err), 0);
    close(fd);
    assert_int_equal(lstat(p, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    /* a file in the way of a directory */
    assert_int_equal(kf_files_open_write(g_root, "p/q/r.txt/s", 0, 1234, 4321, &fd, &err), -ENOTDIR);
    /* the root itself */
    assert_int_equal(kf_files_open_write(g_root, "/mnt/data/", 0, 1234, 4321, &fd, &err), -EISDIR);
}

static const kf_file_entry *find(const kf_file_entry *v, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].name, name))
            return &v[i];
    return NULL;
}

static void test_list(void **state) {
    (void)state;
    kf_error err = {0};
    char p[512];
    vpath(p, sizeof(p), "ldir");
    assert_int_equal(mkdir(p, 0755), 0);
    vpath(p, sizeof(p), "ldir/b.txt");
    put(p, "12345");
    vpath(p, sizeof(p), "ldir/a");
    assert_int_equal(mkdir(p, 0700), 0);
    vpath(p, sizeof(p), "ldir/bad-\xff-name");
    put(p, "x");
    kf_file_entry *v = NULL;
    size_t n = 0;
    assert_int_equal(kf_files_list(g_root, "ldir", &v, &n, 100, &err), 0);
    assert_int_equal(n, 2); /* the non-UTF-8 name is left out */
    assert_string_equal(v[0].name, "a"); /* sorted */
    assert_true(v[0].is_dir);
    assert_int_equal(v[0].mode, 0700);
    assert_string_equal(v[1].name, "b.txt");
    assert_false(v[1].is_dir);
    assert_int_equal(v[1].size, 5);
    assert_true(v[1].mtime_ms > 0);
    free(v);
    /* root: symlinks reported as such, not followed */
    assert_int_equal(kf_files_list(g_root, ".", &v, &n, 100, &err), 0);
    const kf_file_entry *e = find(v, n, "shadow");
    assert_non_null(e);
    assert_true(e->is_symlink);
    assert_false(e->is_dir);
    assert_int_equal(e->size, strlen("/etc/shadow"));
    e = find(v, n, "out");
    assert_non_null(e);
    assert_true(e->is_symlink);
    assert_false(e->is_dir);
    free(v);
    /* listing a link: the link itself, never its target's contents */
    const char *links[] = {"out", "up", "shadow"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kf_files_list(g_root, links[i], &v, &n, 100, &err), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].name, links[i]);
        assert_true(v[0].is_symlink);
        free(v);
    }
    v = NULL;
    /* "out/" is normalised to "out": still the link itself */
    assert_int_equal(kf_files_list(g_root, "out/", &v, &n, 100, &err), 0);
    assert_int_equal(n, 1);
    assert_true(v[0].is_symlink);
    free(v);
    v = NULL;
    assert_int_equal(kf_files_list(g_root, "up/etc", &v, &n, 100, &err), -ELOOP);
    assert_null(v);
    /* a file: its one entry */
    assert_int_equal(kf_files_list(g_root, "ldir/b.txt", &v, &n, 100, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].size, 5);
    free(v);
    /* over the limit */
    assert_int_equal(kf_files_list(g_root, "ldir", &v, &n, 1, &err), -E2BIG);
    assert_null(v);
    assert_int_equal(kf_files_list(g_root, "missing", &v, &n, 10, &err), -ENOENT);
    assert_int_equal(kf_error_status(&err), KF_ST_NOT_FOUND);
}

static void test_delete(void **state) {
    (void)state;
    kf_error err = {0};
    char p[512];
    /* a link to /etc/shadow: the link goes, the target stays */
    struct stat st;
    int have_shadow = stat("/etc/shadow", &st) == 0;
    vpath(p, sizeof(p), "shadow2");
    assert_int_equal(symlink("/etc/shadow", p), 0);
    assert_int_equal(kf_files_delete(g_root, "shadow2", &err), 0);
    assert_int_equal(lstat(p, &st), -1);
    if (have_shadow)
        assert_int_equal(stat("/etc/shadow", &st), 0);
    /* a link to a directory outside: the link goes, the directory stays */
    vpath(p, sizeof(p), "out2");
    assert_int_equal(symlink(g_out, p), 0);
    assert_int_equal(kf_files_delete(g_root, "out2", &err), 0);
    assert_int_equal(lstat(p, &st), -1);
    snprintf(p, sizeof(p), "%s/secret", g_out);
    assert_int_equal(stat(p, &st), 0);
    /* through a link: refused */
    expect_symlink_refused(kf_files_delete(g_root, "out/secret", &err), &err);
    expect_symlink_refused(kf_files_delete(g_root, "up/tmp", &err), &err);
    assert_int_equal(stat(p, &st), 0);
    /* root refused */
    assert_int_equal(kf_files_delete(g_root, ".", &err), -EPERM);
    assert_int_equal(kf_files_delete(g_root, "/mnt/data", &err), -EPERM);
    /* directories: only when empty */
    vpath(p, sizeof(p), "ddir");
    assert_int_equal(mkdir(p, 0755), 0);
    vpath(p, sizeof(p), "ddir/f");
    put(p, "x");
    assert_int_equal(kf_files_delete(g_root, "ddir", &err), -ENOTEMPTY);
    assert_int_equal(kf_error_status(&err), KF_ST_FAILED_PRECONDITION);
    assert_int_equal(kf_files_delete(g_root, "ddir/f", &err), 0);
    assert_int_equal(kf_files_delete(g_root, "ddir", &err), 0);
    assert_int_equal(kf_files_delete(g_root, "ddir", &err), -ENOENT);
    assert_int_equal(kf_error_status(&err), KF_ST_NOT_FOUND);
}

/* The parent directory is swapped for a symlink: after the swap every call
 * fails; during a race no call ever reaches the outside directory. */
static void test_parent_swapped(void **state) {
    (void)state;
    kf_error err = {0};
    char d[512], dold[512], p[600];
    vpath(d, sizeof(d), "sw");
    vpath(dold, sizeof(dold), "sw.real");
    assert_int_equal(mkdir(d, 0755), 0);
    snprintf(p, sizeof(p), "%s/secret", d);
    put(p, "inside");
    int fd;
    struct stat st;
    assert_int_equal(kf_files_open_read(g_root, "sw/secret", &fd, &st, &err), 0);
    close(fd);
    assert_int_equal(rename(d, dold), 0);
    assert_int_equal(symlink(g_out, d), 0);
    expect_symlink_refused(kf_files_open_read(g_root, "sw/secret", &fd, &st, &err), &err);
    expect_symlink_refused(kf_files_open_write(g_root, "sw/secret", 0, 0, 0, &fd, &err), &err);
    expect_symlink_refused(kf_files_delete(g_root, "sw/secret", &err), &err);
    assert_int_equal(unlink(d), 0);
    assert_int_equal(rename(dold, d), 0);
}

static volatile int g_stop;

static void *swapper(void *arg) {
    (void)arg;
    char d[512], dold[512];
    vpath(d, sizeof(d), "race");
    vpath(dold, sizeof(dold), "race.real");
    while (!g_stop) {
        /* directory -> symlink to outside -> directory */
        if (rename(d, dold) == 0) {
            if (symlink(g_out, d) == 0) {
                sched_yield();
                unlink(d);
            }
            rename(dold, d);
        }
    }
    return NULL;
}

static void test_parent_swap_race(void **state) {
    (void)state;
    char d[512], p[600];
    vpath(d, sizeof(d), "race");
    assert_int_equal(mkdir(d, 0755), 0);
    snprintf(p, sizeof(p), "%s/secret", d);
    put(p, "inside");
    g_stop = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, swapper, NULL), 0);
    int ok_reads = 0, refused = 0;
    for (int i = 0; i < 20000; i++) {
        kf_error err = {0};
        int fd;
        struct stat st;
        if (kf_files_open_read(g_root, "race/secret", &fd, &st, &err) == 0) {
            char buf[64];
            get(fd, buf, sizeof(buf));
            close(fd);
            assert_string_equal(buf, "inside");
            ok_reads++;
        } else {
            refused++;
        }
        /* writes create race/new-N; they must never land outside */
        char name[64];
        snprintf(name, sizeof(name), "race/w%d", i % 8);
        if (kf_files_open_write(g_root, name, 0, getuid(), getgid(), &fd, &err) == 0)
            close(fd);
    }
    g_stop = 1;
    pthread_join(t, NULL);
    fprintf(stderr, "# race: %d reads ok, %d refused\n", ok_reads, refused);
    /* nothing was created outside */
    for (int i = 0; i < 8; i++) {
        snprintf(p, sizeof(p), "%s/w%d", g_out, i);
        assert_int_equal(access(p, F_OK), -1);
    }
    char buf[64];
    snprintf(p, sizeof(p), "%s/secret", g_out);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    get(fd, buf, sizeof(buf));
    close(fd);
    assert_string_equal(buf, "outside");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_never_follows),
        cmocka_unit_test(test_read_kinds),
        cmocka_unit_test(test_write_never_follows),
        cmocka_unit_test(test_write_creates_parents),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_parent_swapped),
        cmocka_unit_test(test_parent_swap_race),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
