"""kfleet-scheduler --tenants against a real etcd and two real agents on
loopback: bearer tokens (missing / unknown -> UNAUTHENTICATED), tenants
isolated from each other (another tenant's session is NOT_FOUND exactly like
an unknown id, and absent from ListSessions), per-tenant quotas
(max_sessions, max_memory_bytes -> RESOURCE_EXHAUSTED naming the quota,
freed by deletes), kfleetctl --token, the tenants file's mode check and its
reload on SIGHUP."""
import os
import secrets
import signal
import subprocess

import grpc
import pytest

import kfleet_harness as h

TTL = 2
MiB = 1 << 20
BASE_UID = 300000 + (os.getpid() % 1000) * 1000
NODES = ("ten-a", "ten-b")
TOKENS = {name: secrets.token_hex(16) for name in ("acme", "beta", "small", "mem", "late")}
UNKNOWN = "s-doesnotexist"


def tenants(with_late=False):
    t = [{"name": "acme", "tokens": [TOKENS["acme"]]},
         {"name": "beta", "tokens": [TOKENS["beta"]], "max_sessions": 10},
         {"name": "small", "tokens": [TOKENS["small"]], "max_sessions": 2},
         {"name": "mem", "tokens": [TOKENS["mem"]], "max_memory_bytes": 768 * MiB}]
    if with_late:
        t.append({"name": "late", "tokens": [TOKENS["late"]]})
    return t


def make_agent(etcd, name, i):
    port = h.free_port()
    a = h.Agent(pool=0, uid_base=BASE_UID + 700 + 150 * i, extra=[
        "--node-name", name, "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{port}",
        "--advertise", f"127.0.0.1:{port}", "--lease-ttl", f"{TTL}s",
        "--capacity-memory", "16G", "--capacity-cpu", "8", "--max-sessions", "50"])
    a.name = name
    return a


@pytest.fixture(scope="module")
def cluster(etcd):
    agents = [make_agent(etcd, n, i) for i, n in enumerate(NODES)]
    sched = None
    try:
        for a in agents:
            a.start()
        for a in agents:
            assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/" + a.name), timeout=15), a.logs()[-3000:]
        sched = h.TenantScheduler(etcd.url, extra=["--listen-tcp", f"127.0.0.1:{h.free_port()}"])
        sched.tenants_file = os.path.join(sched.dir, "tenants.json")
        h.write_tenants(sched.tenants_file, tenants(), mode=0o640)
        sched.extra += ["--tenants", sched.tenants_file]
        sched.start()
        yield sched
        rc, logs = sched.close()
        sched = None
        # a clean stop: exit 0, no sanitizer report (leaks included)
        assert rc == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
        assert not any(t in logs for t in TOKENS.values()), "a token was logged"
    finally:
        if sched:
            sched.close()
        for a in agents:
            a.close()


def client(cluster, tenant):
    return cluster.client(TOKENS[tenant])


def code_of(fn):
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value.code(), ei.value.details()


def create(c, **kw):
    kw.setdefault("memory_bytes", 256 * MiB)
    return c.create(**kw)


def every_call(c, sid):
    return {"get": lambda: c.get(sid), "execute": lambda: c.execute(sid, "print(1)"),
            "interrupt": lambda: c.interrupt(sid), "restart": lambda: c.restart(sid),
            "upload": lambda: c.upload(sid, "f.txt", b"x"), "download": lambda: c.download(sid, "f.txt"),
            "list_files": lambda: c.list_files(sid), "delete_file": lambda: c.delete_file(sid, "f.txt"),
            "delete": lambda: c.delete(sid)}


def test_no_token_is_unauthenticated(cluster):
    c = cluster.client()
    for name, call in list(every_call(c, UNKNOWN).items()) + [("list", c.list), ("create", lambda: create(c))]:
        code, msg = code_of(call)
        assert code == grpc.StatusCode.UNAUTHENTICATED and msg == "missing bearer token", (name, code, msg)


def test_bad_token_is_unauthenticated(cluster):
    target = f"unix:{cluster.sock}"
    for c in (h.TokenClient(target, "x" * 32), h.TokenClient(target, TOKENS["acme"][:-1]),
              h.TokenClient(target, TOKENS["acme"] + "0"),
              h.TokenClient(target, "Basic " + TOKENS["acme"], raw=True),
              h.TokenClient(target, TOKENS["acme"], raw=True)):
        for name, call in (("list", c.list), ("create", lambda: create(c)), ("get", lambda: c.get(UNKNOWN))):
            code, msg = code_of(call)
            assert code == grpc.StatusCode.UNAUTHENTICATED and msg == "invalid token", (name, code, msg)
    # the scheme is case-insensitive
    assert h.TokenClient(target, "bearer " + TOKENS["acme"], raw=True).list() is not None


def test_tenants_do_not_see_each_other(cluster, etcd):
    a, b = client(cluster, "acme"), client(cluster, "beta")
    sa = create(a)
    sb = create(b)
    try:
        rec = etcd.get_json("/kfleet/sessions/" + sa.id)
        assert rec["tenant"] == "acme" and rec["node"] == sa.node, rec
        assert etcd.get_json("/kfleet/sessions/" + sb.id)["tenant"] == "beta"
        a.run(sa.id, "x = 41")
        a.upload(sa.id, "f.txt", b"secret")
        _, unknown_msg = code_of(lambda: b.get(UNKNOWN))
        for name, call in every_call(b, sa.id).items():
            code, msg = code_of(call)
            assert code == grpc.StatusCode.NOT_FOUND, (name, code, msg)
            # the same answer as an unknown id: nothing says the session exists
            assert msg.replace(sa.id, "<id>") == unknown_msg.replace(UNKNOWN, "<id>"), (name, msg, unknown_msg)
        for name, call in every_call(b, UNKNOWN).items():
            code, msg = code_of(call)
            assert code == grpc.StatusCode.NOT_FOUND and msg == unknown_msg, (name, code, msg)
        listed_a = {s.id for s in a.list()}
        listed_b = {s.id for s in b.list()}
        assert sa.id in listed_a and sb.id not in listed_a, listed_a
        assert sb.id in listed_b and sa.id not in listed_b, listed_b
        # acme's session survived beta's attempts, state and files intact
        assert a.run(sa.id, "print(x + 1)").strip() == "42"
        assert a.download(sa.id, "f.txt") == b"secret"
        assert etcd.get("/kfleet/sessions/" + sa.id) is not None
    finally:
        a.delete(sa.id)
        b.delete(sb.id)
    code, _ = code_of(lambda: a.get(sa.id))
    assert code == grpc.StatusCode.NOT_FOUND


def test_max_sessions_quota(cluster):
    c = client(cluster, "small")
    made = [create(c), create(c)]
    try:
        code, msg = code_of(lambda: create(c))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, msg)
        assert msg == "tenant small: quota max_sessions=2 reached (2 sessions)", msg
        # another tenant is not held to small's quota
        other = create(client(cluster, "acme"))
        client(cluster, "acme").delete(other.id)
        c.delete(made.pop().id)  # deleting frees quota
        made.append(create(c))
        assert len({s.id for s in made}) == 2
    finally:
        for s in made:
            c.delete(s.id)


def test_max_memory_quota(cluster):
    c = client(cluster, "mem")
    made = [create(c, memory_bytes=512 * MiB)]
    try:
        code, msg = code_of(lambda: create(c, memory_bytes=512 * MiB))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, msg)
        assert msg.startswith("tenant mem: quota max_memory_bytes=%d would be exceeded" % (768 * MiB)), msg
        assert "%d bytes in use" % (512 * MiB) in msg and "%d requested" % (512 * MiB) in msg, msg
        # no memory limit asked for = the agents' default (1 GiB), counted so
        code, msg = code_of(lambda: c.create())
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_memory_bytes" in msg, msg
        made.append(create(c, memory_bytes=256 * MiB))  # exactly at the quota
        code, msg = code_of(lambda: create(c, memory_bytes=1 * MiB))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_memory_bytes" in msg, msg
        c.delete(made.pop(0).id)  # deleting frees quota
        made.append(create(c, memory_bytes=512 * MiB))
    finally:
        for s in made:
            c.delete(s.id)


def test_kfleetctl_with_token(cluster):
    try:
        ctl = h.binary("kfleetctl")
    except FileNotFoundError:
        pytest.skip("kfleetctl not built")

    def run(*args, token=TOKENS["acme"], ok=True):
        pre = [ctl] + (["--token", token] if token else []) + ["--server", cluster.tcp, "--rpc-timeout", "120s"]
        env = {k: v for k, v in os.environ.items() if k != "KFLEET_TOKEN"}
        r = subprocess.run(pre + list(args), capture_output=True, text=True, timeout=180, env=env)
        assert (r.returncode == 0) == ok, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout + r.stderr

    import json
    sid = json.loads(run("-o", "json", "session", "create", "--memory", "256M"))["id"]
    try:
        assert sid in run("session", "list")
        assert "42" in run("exec", sid, "print(6 * 7)")
        assert sid not in run("session", "list", token=TOKENS["beta"])
        assert "missing bearer token" in run("session", "list", token=None, ok=False)
        assert "invalid token" in run("session", "list", token="y" * 32, ok=False)
    finally:
        run("session", "delete", sid)


def test_tenants_file_readable_by_others_is_refused(cluster, tmp_path):
    p = str(tmp_path / "tenants.json")
    for mode in (0o644, 0o606):
        h.write_tenants(p, tenants(), mode=mode)
        r = subprocess.run([h.Scheduler.binary(), "--etcd", "http://127.0.0.1:1", "--listen",
                            str(tmp_path / "s.sock"), "--tenants", p], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "other users" in r.stderr and p in r.stderr, (mode, r.returncode, r.stderr)
    h.write_tenants(p, [{"name": "bad name!", "tokens": ["z" * 32]}])
    r = subprocess.run([h.Scheduler.binary(), "--etcd", "http://127.0.0.1:1", "--listen",
                        str(tmp_path / "s.sock"), "--tenants", p], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "name must be" in r.stderr, r.stderr


def test_sighup_reloads_tenants(cluster):
    late = client(cluster, "late")
    code, msg = code_of(late.list)
    assert code == grpc.StatusCode.UNAUTHENTICATED and msg == "invalid token"
    h.write_tenants(cluster.tenants_file, tenants(with_late=True), mode=0o640)
    cluster.proc.send_signal(signal.SIGHUP)

    def works():
        try:
            late.list()
            return True
        except grpc.RpcError:
            return False
    assert h.wait_for(works, timeout=10), cluster.logs()[-2000:]
    # a broken file keeps the previous set
    with open(cluster.tenants_file, "w") as f:
        f.write("{not json")
    cluster.proc.send_signal(signal.SIGHUP)
    assert h.wait_for(lambda: "tenants not reloaded" in cluster.logs(), timeout=10)
    assert works()
    h.write_tenants(cluster.tenants_file, tenants(), mode=0o640)
    cluster.proc.send_signal(signal.SIGHUP)
    assert h.wait_for(lambda: not works(), timeout=10)
    assert client(cluster, "acme").list() is not None
