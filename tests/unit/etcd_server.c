/* etcd_server.c - a real etcd server for the unit tests that need one
 * (test_etcd, test_commit_batch); see etcd_server.h. */
#include "etcd_server.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kf/util.h"

extern char **environ;

int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

static size_t discard(char *p, size_t s, size_t n, void *u) {
    (void)p;
    (void)u;
    return s * n;
}

static bool healthy(const server *s) {
    CURL *h = curl_easy_init();
    char url[96];
    snprintf(url, sizeof(url), "%s/health", s->url);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    if (s->tls)
        curl_easy_setopt(h, CURLOPT_CAINFO, s->cert);
    long code = 0;
    bool ok = curl_easy_perform(h) == CURLE_OK && curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
              code == 200;
    curl_easy_cleanup(h);
    return ok;
}

int etcd_spawn(server *s) {
    char lc[64], pc[64], ic[96];
    snprintf(lc, sizeof(lc), "%s://127.0.0.1:%d", s->tls ? "https" : "http", s->port);
    snprintf(pc, sizeof(pc), "http://127.0.0.1:%d", s->peer_port);
    snprintf(ic, sizeof(ic), "default=%s", pc);
    char *argv[32] = {ETCD_BIN, "--name", "default", "--data-dir", s->data, "--listen-client-urls", lc,
                      "--advertise-client-urls", lc, "--listen-peer-urls", pc, "--initial-advertise-peer-urls", pc,
                      "--initial-cluster", ic, "--experimental-watch-progress-notify-interval", "1s"};
    size_t n = 17;
    if (s->tls) {
        argv[n++] = "--cert-file";
        argv[n++] = s->cert;
        argv[n++] = "--key-file";
        argv[n++] = s->key;
    }
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int r = posix_spawn(&s->pid, ETCD_BIN, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0) {
        fprintf(stderr, "spawn etcd: %s\n", strerror(r));
        return -1;
    }
    for (int i = 0; i < 200; i++) {
        if (healthy(s))
            return 0;
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            fprintf(stderr, "etcd exited early; see %s\n", s->log);
            s->pid = -1;
            return -1;
        }
        usleep(100 * 1000);
    }
    fprintf(stderr, "etcd did not become healthy; see %s\n", s->log);
    return -1;
}

void etcd_kill(server *s, int sig) {
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    waitpid(s->pid, NULL, 0);
    s->pid = -1;
}

int server_init(server *s, bool tls) {
    memset(s, 0, sizeof(*s));
    s->pid = -1;
    s->tls = tls;
    snprintf(s->dir, sizeof(s->dir), "/tmp/kf-etcd-test-XXXXXX");
    if (!mkdtemp(s->dir))
        return -1;
    snprintf(s->data, sizeof(s->data), "%s/data", s->dir);
    snprintf(s->log, sizeof(s->log), "%s/etcd.log", s->dir);
    s->port = free_port();
    do
        s->peer_port = free_port();
    while (s->peer_port == s->port);
    snprintf(s->url, sizeof(s->url), "%s://127.0.0.1:%d", tls ? "https" : "http", s->port);
    if (tls) {
        snprintf(s->cert, sizeof(s->cert), "%s/cert.pem", s->dir);
        snprintf(s->key, sizeof(s->key), "%s/key.pem", s->dir);
        char *argv[] = {OPENSSL_BIN, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", s->key, "-out", s->cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", NULL};
        if (run(argv) != 0)
            return -1;
    }
    return 0;
}

void server_done(server *s) {
    etcd_kill(s, SIGKILL);
    if (s->dir[0])
        kf_rm_rf(s->dir);
    s->dir[0] = '\0';
}

int run(char *const argv[]) {
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return -r;
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
