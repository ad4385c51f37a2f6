/* cleanup.h - scope-bound cleanup for kfleet C code.
 *
 * The systemd/crun idiom: a variable declared with one of these attributes
 * is released when it leaves scope; ownership is handed out with TAKE_PTR /
 * TAKE_FD, which return the value and reset the variable so the cleanup does
 * nothing. Used everywhere instead of ad-hoc goto chains.
 */
#ifndef KF_CLEANUP_H
#define KF_CLEANUP_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <dirent.h>

static inline void kf_freep(void *p) { free(*(void **)p); }
static inline void kf_closep(int *fd) { if (*fd >= 0) close(*fd); }
static inline void kf_fclosep(FILE **f) { if (*f) fclose(*f); }
static inline void kf_closedirp(DIR **d) { if (*d) closedir(*d); }

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(kf_freep)
#define _cleanup_close_ _cleanup_(kf_closep)
#define _cleanup_fclose_ _cleanup_(kf_fclosep)
#define _cleanup_closedir_ _cleanup_(kf_closedirp)

/* Returns the pointer and leaves NULL behind. */
#define TAKE_PTR(p) ({ __typeof__(p) _tp = (p); (p) = NULL; _tp; })
/* Returns the fd and leaves -1 behind. */
#define TAKE_FD(fd) ({ int _tf = (fd); (fd) = -1; _tf; })

#define KF_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
