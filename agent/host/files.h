/* files.h - client file access inside a session volume, never outside it.
 *
 * Client paths are checked by kf_path_check (pure) and then resolved
 * relative to an O_PATH fd of the volume root with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): no symlink
 * is ever followed, at any component, and a path swapped for a symlink
 * while we work fails instead of redirecting us. Errors: 0 / negative errno,
 * with a user-facing message in *err (INVALID_ARGUMENT for bad paths,
 * NOT_FOUND, RESOURCE_EXHAUSTED for quota).
 */
#ifndef KF_FILES_H
#define KF_FILES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "kf/error.h"

#define KF_PATH_MAX 1024       /* whole client path, bytes */
#define KF_PATH_COMPONENT_MAX 255

/* kf_path_check - normalise a client path to a relative one under the
 * volume: accepts "a/b.csv", "/mnt/data/a/b.csv", "./a"; the root is "." .
 * Rejects (-EINVAL, message saying why): empty, NUL bytes, invalid UTF-8,
 * ".." anywhere, an absolute path outside /mnt/data, over-long path or
 * component, control characters. out must hold KF_PATH_MAX+1 bytes. */
int kf_path_check(const char *path, size_t len, char *out, size_t out_size, kf_error *err);

typedef struct kf_file_entry {
    char name[KF_PATH_COMPONENT_MAX + 1];
    uint64_t size;
    int is_dir;
    int is_symlink;
    int64_t mtime_ms;
    uint32_t mode;
} kf_file_entry;

/* kf_files_open_root - O_PATH|O_DIRECTORY|O_CLOEXEC fd of the volume root. */
int kf_files_open_root(const char *volume_dir, int *fd_out, kf_error *err);

/* kf_files_open_read - open a regular file for reading; *fd_out is O_CLOEXEC
 * and owned by the caller. Directories, symlinks, devices -> error. */
int kf_files_open_read(int rootfd, const char *rel, int *fd_out, struct stat *st, kf_error *err);

/* kf_files_open_write - create (or truncate) a regular file, creating
 * missing parent directories (each owned by uid:gid, 0755); the file is
 * owned by uid:gid with `mode` (0 = 0644). Never follows a symlink. */
int kf_files_open_write(int rootfd, const char *rel, mode_t mode, uid_t uid, gid_t gid, int *fd_out,
                        kf_error *err);

/* kf_files_list - entries of a directory (or the one entry for a file);
 * *out is malloc'd (caller frees), at most `max` entries (-E2BIG past it). */
int kf_files_list(int rootfd, const char *rel, kf_file_entry **out, size_t *n, size_t max,
                  kf_error *err);

/* kf_files_delete - remove a file, a symlink (the link itself) or an empty
 * directory. Deleting the root is refused. */
int kf_files_delete(int rootfd, const char *rel, kf_error *err);

/* kf_files_error - the user-facing error for errno `code` (negative) met
 * while working on client path `path`, e.g. a write(2) to an fd from
 * kf_files_open_write failing with ENOSPC -> RESOURCE_EXHAUSTED "volume
 * quota exceeded". The same mapping the functions above use. Returns the
 * negative code. */
int kf_files_error(kf_error *err, int code, const char *path);

#endif
