/* etcd_server.h - a real etcd server for unit tests: free loopback ports,
 * a fresh data dir under /tmp, optional https with a self-signed
 * certificate; started, killed and removed by the test. */
#ifndef KF_TEST_ETCD_SERVER_H
#define KF_TEST_ETCD_SERVER_H

#include <stdbool.h>
#include <sys/types.h>

#define ETCD_BIN "/usr/bin/etcd"
#define ETCDCTL_BIN "/usr/bin/etcdctl"
#define OPENSSL_BIN "/usr/bin/openssl"

typedef struct server {
    char dir[64];
    char data[96];
    char log[96];
    char cert[96], key[96]; /* https only */
    bool tls;
    int port, peer_port;
    char url[64];
    pid_t pid;
} server;

/* free_port - a loopback TCP port free at the time of the call. */
int free_port(void);
/* server_init - a fresh data dir and free loopback ports (and, for https,
 * a self-signed certificate for 127.0.0.1). Does not start the server. */
int server_init(server *s, bool tls);
/* etcd_spawn - start etcd and wait (up to 20 s) until /health answers. */
int etcd_spawn(server *s);
/* etcd_kill - send `sig` and reap (no-op when not running). */
void etcd_kill(server *s, int sig);
/* server_done - kill the server and remove its directory. */
void server_done(server *s);
/* run - run argv (absolute path), output discarded; its exit status. */
int run(char *const argv[]);

#endif
