/* test_sandbox_scratch.c - kf_sb_clear_dir(): what a new kernel's process
 * does to /tmp, /dev/shm and the home before it execs. Each test builds a tree
 * in a fresh temp dir and empties it in a forked child; when run as root the
 * child (and the tree's builder) is uid/gid 65534, like a session's kernel,
 * so the permission repairs are exercised for real. Checks that the top dir
 * stays, that everything below it goes (odd modes, deep nesting), and that
 * nothing reached through a symlink or on another file system is touched. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox.h"

#define NOBODY 65534
#define DEEP 1500 /* above RLIMIT_NOFILE: a walk holding an fd per level fails */

static char base[64];
static char top[256];
static char outside[256];

static bool as_root(void) { return geteuid() == 0; }

/* Run fn(arg) in a child, as NOBODY when root; returns its exit status or
 * 128 + signal. */
static int in_child(int (*fn)(void *), void *arg) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (as_root() && (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
                          setresuid(NOBODY, NOBODY, NOBODY) < 0))
            _exit(120);
        _exit(fn(arg) & 0xff);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int write_file(const char *path, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int ok = write(fd, "x", 1) == 1;
    close(fd);
    return ok && chmod(path, mode) == 0 ? 0 : -1;
}

/* The tree a kernel might leave behind, built as the session's uid. */
static int build_tree(void *arg) {
    (void)arg;
    char p[512];
#define P(...) (snprintf(p, sizeof(p), __VA_ARGS__), p)
    if (write_file(P("%s/f1", top), 0644) || write_file(P("%s/.hidden", top), 0000))
        return 1;
    char target[512];
    snprintf(target, sizeof(target), "%s/keep.txt", outside);
    if (symlink(target, P("%s/link-file", top)) < 0 || symlink(outside, P("%s/link-dir", top)) < 0 ||
        symlink("/nonexistent", P("%s/dangling", top)) < 0)
        return 2;
    if (mkdir(P("%s/d1", top), 0755) || mkdir(P("%s/d1/d2", top), 0755) ||
        write_file(P("%s/d1/d2/f", top), 0644) || symlink("..", P("%s/d1/d2/up", top)) < 0)
        return 3;
    /* unreadable and unwritable directories of the uid, with contents */
    if (mkdir(P("%s/locked", top), 0755) || mkdir(P("%s/locked/sub", top), 0755) ||
        write_file(P("%s/locked/sub/f", top), 0644) || chmod(P("%s/locked/sub", top), 0000) ||
        chmod(P("%s/locked", top), 0000))
        return 4;
    if (mkdir(P("%s/ro", top), 0755) || write_file(P("%s/ro/f", top), 0644) ||
        chmod(P("%s/ro", top), 0500))
        return 5;
    if (mkfifo(P("%s/fifo", top), 0600) < 0)
        return 6;
    /* deeper than any fd-per-level walk can go */
    int fd = open(top, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (int i = 0; i < DEEP && fd >= 0; i++) {
        int nfd = mkdirat(fd, "n", 0700) < 0 ? -1 : openat(fd, "n", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        close(fd);
        fd = nfd;
    }
    if (fd < 0)
        return 7;
    int ffd = openat(fd, "bottom", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    close(fd);
    if (ffd < 0)
        return 8;
    close(ffd);
    return 0;
#undef P
}

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int clear_top(void *arg) {
    (void)arg;
    int r = kf_sb_clear_dir(top, mono_ms() + 60000);
    if (r < 0)
        fprintf(stderr, "kf_sb_clear_dir: %s\n", strerror(-r));
    return r < 0 ? 1 : 0;
}

static bool is_empty(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "test \"$(ls -A '%s' | wc -l)\" -eq 0", dir);
    return system(cmd) == 0;
}

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb;
    (void)type;
    (void)ftw;
    chmod(path, 0700);
    remove(path);
    return 0;
}

static int setup(void **state) {
    (void)state;
    snprintf(base, sizeof(base), "/tmp/kf-scratch-XXXXXX");
    assert_non_null(mkdtemp(base));
    assert_int_equal(chmod(base, 0755), 0);
    snprintf(top, sizeof(top), "%s/top", base);
    snprintf(outside, sizeof(outside), "%s/outside", base);
    assert_int_equal(mkdir(top, 0700), 0);
    assert_int_equal(mkdir(outside, 0755), 0);
    char keep[320];
    snprintf(keep, sizeof(keep), "%s/keep.txt", outside);
    assert_int_equal(write_file(keep, 0666), 0);
    if (as_root())
        assert_int_equal(chown(top, NOBODY, NOBODY), 0);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", base, base);
    if (system(cmd) != 0)
        nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void assert_outside_intact(void) {
    char keep[320];
    struct stat st;
    snprintf(keep, sizeof(keep), "%s/keep.txt", outside);
    if (stat(keep, &st) < 0)
        fail_msg("%s was removed through a symlink", keep);
    assert_int_equal(st.st_size, 1);
    assert_int_equal(st.st_mode & 07777, 0666);
}

static void test_empties_tree(void **state) {
    (void)state;
    assert_int_equal(in_child(build_tree, NULL), 0);
    assert_int_equal(in_child(clear_top, NULL), 0);
    struct stat st;
    assert_int_equal(lstat(top, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    if (!is_empty(top))
        fail_msg("%s is not empty after clearing", top);
    assert_outside_intact();
    /* and a second run on the empty dir is a no-op */
    assert_int_equal(in_child(clear_top, NULL), 0);
}

/* /tmp-like: a root-owned sticky 1777 top; the uid's files go, a file of
 * another user stops the walk with an error (and it ends, no retry loop). */
static void test_sticky_top(void **state) {
    (void)state;
    if (!as_root())
        skip();
    assert_int_equal(chown(top, 0, 0), 0);
    assert_int_equal(chmod(top, 01777), 0);
    assert_int_equal(in_child(build_tree, NULL), 0);
    assert_int_equal(in_child(clear_top, NULL), 0);
    assert_true(is_empty(top));

    char rootfile[320];
    snprintf(rootfile, sizeof(rootfile), "%s/root-owned", top);
    assert_int_equal(write_file(rootfile, 0644), 0);
    assert_int_equal(in_child(clear_top, NULL), 1);
    assert_int_equal(access(rootfile, F_OK), 0);
    assert_outside_intact();
}

static void test_symlink_top_refused(void **state) {
    (void)state;
    char link[320];
    snprintf(link, sizeof(link), "%s/top-link", base);
    assert_int_equal(symlink(outside, link), 0);
    int r = kf_sb_clear_dir(link, mono_ms() + 60000);
    assert_true(r == -ELOOP || r == -ENOTDIR);
    assert_outside_intact();
}

/* Past the deadline the walk stops with -ETIMEDOUT, leaving the rest. */
static int clear_expired(void *arg) {
    (void)arg;
    return kf_sb_clear_dir(top, mono_ms() - 1) == -ETIMEDOUT ? 0 : 1;
}

static void test_deadline(void **state) {
    (void)state;
    assert_int_equal(in_child(build_tree, NULL), 0);
    assert_int_equal(in_child(clear_expired, NULL), 0);
    assert_false(is_empty(top));
    assert_int_equal(in_child(clear_top, NULL), 0);
    assert_true(is_empty(top));
}

/* A mount below the top (impossible for a session, which can't mount) is
 * neither entered nor removed. */
static int clear_with_mount(void *arg) {
    (void)arg;
    return clear_top(NULL);
}

static void test_other_fs_untouched(void **state) {
    (void)state;
    if (!as_root())
        skip();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char sub[320], inner[400];
        snprintf(sub, sizeof(sub), "%s/mnt", top);
        snprintf(inner, sizeof(inner), "%s/inner", sub);
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            _exit(77);
        if (mkdir(sub, 0777) < 0 || mount("tmpfs", sub, "tmpfs", 0, "size=64k,mode=0777") < 0)
            _exit(10);
        if (write_file(inner, 0666) < 0)
            _exit(11);
        int r = in_child(clear_with_mount, NULL);
        if (r != 1) /* refused: the mount point can't go */
            _exit(12);
        _exit(access(inner, F_OK) == 0 ? 0 : 13);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77)
        skip();
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empties_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_top, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink_top_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_fs_untouched, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
