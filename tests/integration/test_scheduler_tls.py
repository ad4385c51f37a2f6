"""TLS on kfleet-scheduler's public TCP port (--tls-cert/--tls-key, and
--tls-client-ca for client certificates) and mTLS from the scheduler to
the agents (--node-tls-*), with certificates made by the harness: kfleetctl
and Python gRPC over TLS, a plaintext client and a wrong CA refused, a
scheduler without a client certificate refused by an mTLS agent, and the
flags checked."""
import os
import shutil
import subprocess

import grpc
import pytest

import kfleet_harness as h

MiB = 1 << 20
BASE_UID = 300000 + (os.getpid() % 1000) * 1000


@pytest.fixture(scope="module")
def agent(etcd, certs):
    """An agent whose TCP listener requires a client certificate from our CA."""
    port = h.free_port()
    a = h.Agent(pool=1, uid_base=BASE_UID + 2000, extra=[
        "--node-name", "tls-a", "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{port}",
        "--advertise", f"127.0.0.1:{port}", "--lease-ttl", "3s",
        "--tls-cert", certs["server"], "--tls-key", certs["server_key"], "--tls-client-ca", certs["ca"]])
    try:
        a.start()
        assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/tls-a"), timeout=15), a.logs()[-3000:]
        yield a
    finally:
        a.close()


def node_mtls(certs):
    return ["--node-tls-ca", certs["ca"], "--node-tls-cert", certs["client"], "--node-tls-key", certs["client_key"]]


def start_sched(etcd, certs, extra):
    port = h.free_port()
    s = h.Scheduler(etcd.url, extra=["--listen-tcp", f"127.0.0.1:{port}"] + list(extra)).start()
    s.port = port
    return s


def close_clean(s):
    rc, logs = s.close()
    assert rc == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]


@pytest.fixture(scope="module")
def sched(etcd, agent, certs):
    s = start_sched(etcd, certs, ["--tls-cert", certs["server"], "--tls-key", certs["server_key"]]
                    + node_mtls(certs))
    yield s
    close_clean(s)


def ctl(port, *args):
    return subprocess.run([h.binary("kfleetctl"), "--server", f"127.0.0.1:{port}", "--rpc-timeout", "60s",
                           *args], capture_output=True, text=True, timeout=120)


def read(p):
    with open(p, "rb") as f:
        return f.read()


def tls_client(port, ca, key=None, cert=None):
    c = h.Client(f"127.0.0.1:{port}")
    creds = grpc.ssl_channel_credentials(read(ca), read(key) if key else None, read(cert) if cert else None)
    c.channel = grpc.secure_channel(f"127.0.0.1:{port}", creds)
    _, grpc_mod = h.stubs()
    c.stub = grpc_mod.SessionsStub(c.channel)
    return c


def test_kfleetctl_over_tls_through_mtls_to_the_agent(sched, certs):
    r = ctl(sched.port, "--tls-ca", certs["ca"], "session", "create", "--memory", "256M")
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip()
    try:
        r = ctl(sched.port, "--tls-ca", certs["ca"], "exec", sid, "print(40 + 2)")
        assert r.returncode == 0 and r.stdout.strip() == "42", (r.stdout, r.stderr)
        r = ctl(sched.port, "--tls-ca", certs["ca"], "-o", "json", "session", "list")
        assert r.returncode == 0 and sid in r.stdout, r.stderr
    finally:
        ctl(sched.port, "--tls-ca", certs["ca"], "session", "delete", sid)


def test_python_grpc_over_tls(sched, certs):
    c = tls_client(sched.port, certs["ca"])
    s = c.create(memory_bytes=256 * MiB)
    try:
        assert s.node == "tls-a"
        assert c.run(s.id, "print('over tls')").strip() == "over tls"
        data = os.urandom(300 * 1024)
        assert c.upload(s.id, "x.bin", data, chunk=64 * 1024).size == len(data)
        assert c.download(s.id, "x.bin") == data
    finally:
        c.delete(s.id)


def test_plaintext_and_wrong_ca_are_refused(sched, certs):
    r = ctl(sched.port, "session", "list")
    assert r.returncode == 2 and "UNAVAILABLE" in r.stderr, r.stderr
    r = ctl(sched.port, "--tls-ca", certs["other_ca"], "session", "list")
    assert r.returncode == 2 and "UNAVAILABLE" in r.stderr, r.stderr
    with pytest.raises(grpc.RpcError) as ei:
        h.Client(f"127.0.0.1:{sched.port}").stub.ListSessions(h.stubs()[0].ListSessionsRequest(), timeout=10)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as ei:
        tls_client(sched.port, certs["other_ca"]).list()
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    # the unix socket stays plaintext (guarded by its mode)
    assert isinstance(list(sched.client().list()), list)


def test_client_certificates_on_the_public_port(etcd, agent, certs):
    s = start_sched(etcd, certs, ["--tls-cert", certs["server"], "--tls-key", certs["server_key"],
                                  "--tls-client-ca", certs["ca"]] + node_mtls(certs))
    try:
        r = ctl(s.port, "--tls-ca", certs["ca"], "session", "list")
        assert r.returncode == 2 and "UNAVAILABLE" in r.stderr, "no client certificate must be refused"
        r = ctl(s.port, "--tls-ca", certs["ca"], "--tls-cert", certs["client"], "--tls-key", certs["client_key"],
                "session", "list")
        assert r.returncode == 0, r.stderr
        # a certificate from a CA the scheduler does not trust
        with pytest.raises(grpc.RpcError) as ei:
            tls_client(s.port, certs["ca"], certs["other_ca_key"], certs["other_ca"]).list()
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        close_clean(s)


def test_scheduler_without_a_node_certificate_cannot_start_sessions(etcd, agent, certs):
    """The agent requires mTLS: a scheduler that trusts its CA but has no
    client certificate fails the handshake, and the create says so."""
    s = start_sched(etcd, certs, ["--node-tls-ca", certs["ca"]])
    try:
        with pytest.raises(grpc.RpcError) as ei:
            s.client().create(memory_bytes=256 * MiB, timeout=60)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value.details()
        assert "tls-a" in ei.value.details()
        left = etcd._call("/v3/kv/range", {"key": etcd._b64("/kfleet/sessions/"),
                                            "range_end": etcd._b64("/kfleet/sessions0")})
        assert not left.get("kvs"), "the failed create must leave no session record"
    finally:
        close_clean(s)


@pytest.mark.parametrize("extra,msg", [
    (["--listen-tcp", "127.0.0.1:1", "--tls-cert", "/x"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "/x", "--tls-key", "/y"], "--listen-tcp"),
    (["--listen-tcp", "127.0.0.1:1", "--tls-client-ca", "/x"], "--tls-client-ca needs"),
])
def test_tls_flags_are_checked(etcd, extra, msg):
    s = h.Scheduler(etcd.url, extra=extra)
    try:
        r = subprocess.run(s.args(), capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    finally:
        shutil.rmtree(s.dir, ignore_errors=True)


def test_unreadable_certificate_is_named(etcd, certs):
    port = h.free_port()
    s = h.Scheduler(etcd.url, extra=["--listen-tcp", f"127.0.0.1:{port}", "--tls-cert", "/nonexistent.pem",
                                     "--tls-key", certs["server_key"]])
    try:
        r = subprocess.run(s.args(), capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "/nonexistent.pem" in r.stderr, r.stderr
    finally:
        shutil.rmtree(s.dir, ignore_errors=True)
