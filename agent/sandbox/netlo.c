/* netlo.c - the loopback interface of the session's network namespace.
 *
 * A fresh network namespace holds only `lo`, and it is down: ipykernel talks
 * to nothing over it (the agent uses ipc sockets in /run/kernel), but user
 * code that binds 127.0.0.1 expects it to work. Nothing else is configured:
 * with no other interface, no route leaves the session. Egress policies, when
 * they exist, are the agent's job (veth + firewall), not the helper's.
 */
#include "sandbox.h"

#include "kf/cleanup.h"

#include <errno.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

int kf_sb_loopback_up(kf_error *err) {
    _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return kf_error_set(err, -errno, 0, "socket for bringing lo up");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
        return kf_error_set(err, -errno, 0, "get flags of lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
        return kf_error_set(err, -errno, 0, "bring lo up");
    return 0;
}
