/* test_volume.c - real session volumes: a 16 MiB image with 64 inodes,
 * loop-mounted; the byte and inode quotas hold (ENOSPC inside the image),
 * the kf_files layer reports them as RESOURCE_EXHAUSTED, umount frees the
 * loop device; concurrent mounts each get their own device; tmpfs. Needs
 * root and /dev/loop-control; exits 77 otherwise. */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "files.h"
#include "kf/util.h"
#include "volume.h"

static char g_dir[256];

/* The loop devices backed by `image` (sysfs), or 0. */
static int loop_backing(const char *image) {
    int found = 0;
    for (int i = 0; i < 256; i++) {
        char p[128];
        snprintf(p, sizeof(p), "/sys/block/loop%d/loop/backing_file", i);
        char *buf = NULL;
        size_t len = 0;
        if (kf_read_file(p, 4096, &buf, &len) < 0)
            continue;
        while (len && buf[len - 1] == '\n')
            buf[--len] = '\0';
        if (!strcmp(buf, image))
            found++;
        free(buf);
    }
    return found;
}

static int wait_loop_gone(const char *image) {
    for (int i = 0; i < 200; i++) {
        if (!loop_backing(image))
            return 1;
        usleep(10000);
    }
    return 0;
}

static void test_quota(void **state) {
    (void)state;
    kf_error err = {0};
    char img[512], mp[512];
    snprintf(img, sizeof(img), "%s/v.img", g_dir);
    snprintf(mp, sizeof(mp), "%s/mnt", g_dir);
    assert_int_equal(mkdir(mp, 0755), 0);

    int64_t t0 = kf_mono_us();
    if (kf_volume_create(img, 16u << 20, 64, 1234, 4321, &err) < 0)
        fail_msg("create: %s", err.msg);
    fprintf(stderr, "# mkfs 16 MiB: %.1f ms\n", (double)(kf_mono_us() - t0) / 1000.0);
    struct stat st;
    assert_int_equal(stat(img, &st), 0);
    assert_int_equal(st.st_size, 16u << 20);
    assert_true((uint64_t)st.st_blocks * 512 < (8u << 20)); /* sparse */
    /* exclusive create: an existing image is never overwritten */
    assert_int_equal(kf_volume_create(img, 16u << 20, 64, 0, 0, &err), -EEXIST);

    assert_int_equal(kf_volume_is_mounted(mp), 0);
    if (kf_volume_mount(img, mp, &err) < 0)
        fail_msg("mount: %s", err.msg);
    assert_int_equal(kf_volume_is_mounted(mp), 1);
    assert_int_equal(loop_backing(img), 1);
    assert_int_equal(stat(mp, &st), 0);
    assert_int_equal(st.st_uid, 1234);
    assert_int_equal(st.st_gid, 4321);
    struct statvfs sv;
    assert_int_equal(statvfs(mp, &sv), 0);
    assert_true(sv.f_flag & ST_NOSUID);
    assert_true(sv.f_flag & ST_NODEV);
    assert_true(sv.f_files <= 128);

    /* bytes: write through kf_files until the quota stops us */
    int root;
    assert_int_equal(kf_files_open_root(mp, &root, &err), 0);
    int fd;
    if (kf_files_open_write(root, "big.bin", 0, 1234, 4321, &fd, &err) < 0)
        fail_msg("open_write: %s", err.msg);
    static char chunk[1 << 16];
    memset(chunk, 'x', sizeof(chunk));
    uint64_t written = 0;
    int werr = 0;
    for (;;) {
        ssize_t w = write(fd, chunk, sizeof(chunk));
        if (w < 0) {
            werr = errno;
            break;
        }
        written += (uint64_t)w;
        assert_true(written <= (16u << 20));
    }
    close(fd);
    assert_int_equal(werr, ENOSPC);
    kf_error_clear(&err);
    assert_int_equal(kf_files_error(&err, -werr, "big.bin"), -ENOSPC);
    assert_int_equal(kf_error_status(&err), KF_ST_RESOURCE_EXHAUSTED);
    assert_string_equal(err.msg, "volume quota exceeded: big.bin");
    fprintf(stderr, "# wrote %" PRIu64 " bytes before ENOSPC\n", written);
    assert_true(written > (8u << 20));
    assert_int_equal(kf_files_delete(root, "big.bin", &err), 0);

    /* inodes: create files until the inode table is full; the files layer
     * maps it to RESOURCE_EXHAUSTED "volume quota exceeded" */
    int made = 0, r = 0;
    for (int i = 0; i < 1000; i++) {
        char name[32];
        snprintf(name, sizeof(name), "d%d/f%d", i % 4, i);
        kf_error_clear(&err);
        r = kf_files_open_write(root, name, 0644, 1234, 4321, &fd, &err);
        if (r < 0)
            break;
        close(fd);
        made++;
    }
    assert_int_equal(r, -ENOSPC);
    assert_int_equal(kf_error_status(&err), KF_ST_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err.msg, "volume quota exceeded"));
    assert_true(made > 40 && made < 64);
    close(root);

    assert_int_equal(kf_volume_umount(mp, &err), 0);
    assert_int_equal(kf_volume_is_mounted(mp), 0);
    assert_true(wait_loop_gone(img));
    /* not mounted: 0 */
    assert_int_equal(kf_volume_umount(mp, &err), 0);
    /* data survives a remount */
    if (kf_volume_mount(img, mp, &err) < 0)
        fail_msg("remount: %s", err.msg);
    char p[600];
    snprintf(p, sizeof(p), "%s/d0/f0", mp);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_uid, 1234);
    assert_int_equal(kf_volume_umount(mp, &err), 0);
    assert_true(wait_loop_gone(img));
    assert_int_equal(unlink(img), 0);
    assert_int_equal(rmdir(mp), 0);
}

static void test_lazy_umount(void **state) {
    (void)state;
    kf_error err = {0};
    char img[512], mp[512], f[600];
    snprintf(img, sizeof(img), "%s/l.img", g_dir);
    snprintf(mp, sizeof(mp), "%s/lmnt", g_dir);
    assert_int_equal(mkdir(mp, 0755), 0);
    assert_int_equal(kf_volume_create(img, 8u << 20, 0, 0, 0, &err), 0);
    assert_int_equal(kf_volume_mount(img, mp, &err), 0);
    snprintf(f, sizeof(f), "%s/held", mp);
    int fd = open(f, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(kf_volume_umount(mp, &err), 0); /* EBUSY -> detach */
    assert_int_equal(kf_volume_is_mounted(mp), 0);
    assert_int_equal(loop_backing(img), 1); /* held by the open file */
    close(fd);
    assert_true(wait_loop_gone(img));
    unlink(img);
    rmdir(mp);
}

static void test_errors(void **state) {
    (void)state;
    kf_error err = {0};
    char img[512], mp[512];
    snprintf(img, sizeof(img), "%s/bad.img", g_dir);
    snprintf(mp, sizeof(mp), "%s/none", g_dir);
    /* too many inodes for the size: mkfs fails, its message is reported,
     * no image is left */
    int r = kf_volume_create(img, 1u << 20, 4000000, 0, 0, &err);
    assert_true(r < 0);
    fprintf(stderr, "# mkfs error: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "mkfs.ext4"));
    assert_int_equal(access(img, F_OK), -1);
    assert_int_equal(kf_volume_create(img, 100, 0, 0, 0, &err), -EINVAL);
    assert_true(kf_volume_mount("/nonexistent.img", g_dir, &err) == -ENOENT);
    /* a file that is not ext4: mount fails, no loop device left */
    int fd = open(img, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 4u << 20), 0);
    close(fd);
    assert_int_equal(mkdir(mp, 0755), 0);
    assert_true(kf_volume_mount(img, mp, &err) < 0);
    assert_true(wait_loop_gone(img));
    assert_int_equal(kf_volume_is_mounted(mp), 0);
    unlink(img);
    rmdir(mp);
}

#define NTHREADS 6
struct job {
    int idx;
    int rc;
    char msg[KF_ERROR_MSG_MAX];
};

static void *mount_job(void *arg) {
    struct job *j = arg;
    kf_error err = {0};
    char img[512], mp[512];
    snprintf(img, sizeof(img), "%s/c%d.img", g_dir, j->idx);
    snprintf(mp, sizeof(mp), "%s/c%d", g_dir, j->idx);
    j->rc = kf_volume_create(img, 4u << 20, 32, 0, 0, &err);
    if (j->rc == 0)
        j->rc = kf_volume_mount(img, mp, &err);
    if (j->rc < 0)
        snprintf(j->msg, sizeof(j->msg), "%s", err.msg);
    return NULL;
}

static void test_concurrent(void **state) {
    (void)state;
    pthread_t t[NTHREADS];
    struct job jobs[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        char mp[512];
        snprintf(mp, sizeof(mp), "%s/c%d", g_dir, i);
        assert_int_equal(mkdir(mp, 0755), 0);
        jobs[i] = (struct job){.idx = i};
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, mount_job, &jobs[i]);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    int failed = 0;
    for (int i = 0; i < NTHREADS; i++) {
        char mp[512], img[512];
        snprintf(mp, sizeof(mp), "%s/c%d", g_dir, i);
        snprintf(img, sizeof(img), "%s/c%d.img", g_dir, i);
        if (jobs[i].rc < 0) {
            fprintf(stderr, "job %d: %s\n", i, jobs[i].msg);
            failed++;
        } else {
            failed += kf_volume_is_mounted(mp) != 1;
            failed += loop_backing(img) != 1;
        }
        kf_error err = {0};
        kf_volume_umount(mp, &err);
        failed += !wait_loop_gone(img);
        unlink(img);
        rmdir(mp);
    }
    assert_int_equal(failed, 0);
}

static void test_tmpfs(void **state) {
    (void)state;
    kf_error err = {0};
    char mp[512];
    snprintf(mp, sizeof(mp), "%s/tmp", g_dir);
    assert_int_equal(mkdir(mp, 0755), 0);
    assert_int_equal(kf_tmpfs_mount(mp, 0, 0, 0, 0700, &err), -EINVAL);
    if (kf_tmpfs_mount(mp, 1u << 20, 1234, 4321, 0700, &err) < 0)
        fail_msg("tmpfs: %s", err.msg);
    struct stat st;
    assert_int_equal(stat(mp, &st), 0);
    assert_int_equal(st.st_uid, 1234);
    assert_int_equal(st.st_gid, 4321);
    assert_int_equal(st.st_mode & 07777, 0700);
    struct statvfs sv;
    assert_int_equal(statvfs(mp, &sv), 0);
    assert_true(sv.f_flag & ST_NOEXEC);
    assert_true(sv.f_flag & ST_NOSUID);
    assert_true(sv.f_flag & ST_NODEV);
    assert_true((uint64_t)sv.f_blocks * sv.f_frsize <= (1u << 20));
    assert_int_equal(kf_volume_is_mounted(mp), 1);
    assert_int_equal(kf_volume_umount(mp, &err), 0);
    assert_int_equal(kf_volume_is_mounted(mp), 0);
    rmdir(mp);
}

static void bench_1g(void **state) {
    (void)state;
    kf_error err = {0};
    char img[512];
    snprintf(img, sizeof(img), "%s/bench.img", g_dir);
    int64_t t0 = kf_mono_us();
    assert_int_equal(kf_volume_create(img, 1ull << 30, 65536, 1000, 1000, &err), 0);
    fprintf(stderr, "# mkfs 1 GiB / 65536 inodes: %.1f ms\n", (double)(kf_mono_us() - t0) / 1000.0);
    unlink(img);
}

int main(void) {
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: needs root\n");
        return 77;
    }
    if (access("/dev/loop-control", R_OK | W_OK) < 0) {
        fprintf(stderr, "skipped: no /dev/loop-control\n");
        return 77;
    }
    if (access("/usr/sbin/mkfs.ext4", X_OK) < 0 && access("/sbin/mkfs.ext4", X_OK) < 0) {
        fprintf(stderr, "skipped: no mkfs.ext4\n");
        return 77;
    }
    snprintf(g_dir, sizeof(g_dir), "/tmp/kf-test-volume-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quota),  cmocka_unit_test(test_lazy_umount),
        cmocka_unit_test(test_errors), cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_tmpfs),  cmocka_unit_test(bench_1g),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    /* a failed test may leave mounts behind: detach them before removing */
    const char *mps[] = {"mnt", "lmnt", "none", "tmp", "c0", "c1", "c2", "c3", "c4", "c5"};
    for (size_t i = 0; i < sizeof(mps) / sizeof(mps[0]); i++) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", g_dir, mps[i]);
        umount2(p, MNT_DETACH);
    }
    kf_rm_rf(g_dir);
    return r;
}
