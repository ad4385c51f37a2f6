"""The agent's side of the cluster against a real etcd: the node record on a
lease (capacity, labels, address), usage published when it changes and at
most once a second, the record gone at once on SIGTERM and after the TTL on
kill -9, re-registration across etcd restarts (kept or wiped data), the
admin record left alone, the node-internal kfleet.v1.Agent service
(StartSession with a chosen id, GetNodeStats), and TLS / mTLS on the TCP
listener. Loopback only."""
import glob
import json
import os
import secrets
import shutil
import subprocess
import time

import grpc
import pytest

import kfleet_harness as h

NODE = "cl-node"
NODE_KEY = "/kfleet/nodes/" + NODE
USAGE_KEY = "/kfleet/usage/" + NODE
ADMIN_KEY = "/kfleet/admin/" + NODE
TTL = 2
MiB = 1 << 20
BASE_UID = 300000 + (os.getpid() % 1000) * 1000


@pytest.fixture(scope="module")
def node(etcd):
    port = h.free_port()
    a = h.Agent(pool=1, uid_base=BASE_UID + 500, extra=[
        "--node-name", NODE, "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{port}",
        "--lease-ttl", f"{TTL}s", "--label", "zone=z1", "--label", "disk=ssd",
        "--capacity-memory", "8G", "--capacity-cpu", "3.5", "--max-sessions", "7"])
    a.port = port
    a.start()
    yield a
    a.close()


@pytest.fixture
def up(node, etcd):
    """The shared agent, running and registered (an earlier test may have
    stopped it or restarted etcd)."""
    if not node.alive():
        node.start()
    assert etcd.wait_for(lambda: etcd.get(NODE_KEY), timeout=15), node.logs()[-3000:]
    return node


def agent_stub(agent):
    pb, grpc_mod = h.agent_stubs()
    return pb, grpc_mod.AgentStub(grpc.insecure_channel(f"unix:{agent.sock}"))


def stats(agent):
    pb, stub = agent_stub(agent)
    return stub.GetNodeStats(pb.NodeStatsRequest(), timeout=30)


def start_session_seq(agent, sid, tenant="", **limits):
    """StartSession's answer: (the Session, the node's create sequence)."""
    pb, stub = agent_stub(agent)
    spb, _ = h.stubs()
    r = stub.StartSession(pb.StartSessionRequest(session_id=sid, tenant=tenant,
                                                 limits=spb.Limits(**limits)), timeout=120)
    return r.session, r.create_seq


def start_session(agent, sid, tenant="", **limits):
    return start_session_seq(agent, sid, tenant, **limits)[0]


def usage(etcd):
    return etcd.get_json(USAGE_KEY)


def test_node_record_on_a_lease(up, etcd):
    kv = etcd.get(NODE_KEY)
    rec = json.loads(kv["value"])
    assert rec["id"] == NODE
    assert rec["address"] == f"127.0.0.1:{up.port}"
    assert rec["capacity"] == {"memory_bytes": 8 << 30, "cpu_millis": 3500, "session_slots": 7}
    assert rec["labels"] == {"zone": "z1", "disk": "ssd"}
    assert rec["version"] and rec["tls"] is False
    assert abs(rec["started_unix_ms"] / 1000 - time.time()) < 3600
    assert kv["lease"] != 0
    assert 0 < etcd.lease_ttl(kv["lease"]) <= TTL
    u = etcd.get(USAGE_KEY)
    assert u["lease"] == kv["lease"]
    assert set(json.loads(u["value"])) == {"sessions", "pool_ready", "pool_target", "memory_reserved_bytes",
                                           "cpu_reserved_millis", "creates", "updated_unix_ms"}
    # refreshed: still there well past the TTL
    time.sleep(2 * TTL + 0.5)
    assert etcd.get(NODE_KEY)["lease"] == kv["lease"]


def test_usage_follows_sessions_at_a_bounded_rate(up, etcd):
    assert etcd.wait_for(lambda: (usage(etcd) or {}).get("pool_ready") == 1, timeout=120), usage(etcd)
    time.sleep(1.5)  # let the last change land
    v0, t0 = etcd.get(USAGE_KEY)["version"], time.time()
    time.sleep(2.5)
    assert etcd.get(USAGE_KEY)["version"] == v0, "usage rewritten although nothing changed"
    before = usage(etcd)
    c = up.client()
    ids = []
    try:
        for mem in (256, 320, 384):
            ids.append(c.create(memory_bytes=mem * MiB, cpu_millis=250).id)
        want_mem = before["memory_reserved_bytes"] + (256 + 320 + 384) * MiB
        u = etcd.wait_for(lambda: (lambda x: x if x["sessions"] == before["sessions"] + 3 and
                                   x["memory_reserved_bytes"] == want_mem else None)(usage(etcd)), timeout=5)
        assert u, usage(etcd)
        assert u["cpu_reserved_millis"] == before["cpu_reserved_millis"] + 750
        assert u["pool_target"] == 1
        assert abs(u["updated_unix_ms"] / 1000 - time.time()) < 10
        for sid in ids:
            c.delete(sid)
        ids = []
        assert etcd.wait_for(lambda: usage(etcd)["sessions"] == before["sessions"], timeout=5)
        # at most one write a second (+1 for a write already due at t0)
        writes, elapsed = etcd.get(USAGE_KEY)["version"] - v0, time.time() - t0
        assert 1 <= writes <= int(elapsed) + 1, (writes, elapsed)
    finally:
        for sid in ids:
            c.delete(sid)


def test_node_stats_match_usage_and_config(up, etcd):
    c = up.client()
    s = c.create(memory_bytes=300 * MiB, cpu_millis=600)
    try:
        st = stats(up)
        listed = c.list()
        assert st.node == NODE and st.version
        assert st.sessions == len(listed)
        assert st.memory_reserved_bytes == sum(x.limits.memory_bytes for x in listed)
        assert st.cpu_reserved_millis == sum(x.limits.cpu_millis for x in listed)
        assert st.memory_capacity_bytes == 8 << 30 and st.cpu_capacity_millis == 3500
        assert st.session_slots == 7 and st.pool_target == 1
        assert st.registered and not st.cordoned
        u = etcd.wait_for(lambda: (lambda x: x if x["sessions"] == st.sessions else None)(usage(etcd)), timeout=5)
        assert u["memory_reserved_bytes"] == st.memory_reserved_bytes
        assert u["cpu_reserved_millis"] == st.cpu_reserved_millis
    finally:
        c.delete(s.id)


def test_start_session_with_a_chosen_id(up, etcd):
    c = up.client()
    assert h.wait_for(lambda: stats(up).pool_ready == 1, timeout=120)
    sid = "sched-" + secrets.token_hex(6)
    before = usage(etcd)["creates"]
    s, seq = start_session_seq(up, sid, tenant="team-a", memory_bytes=256 * MiB)
    try:
        assert s.id == sid and s.node == NODE and s.limits.memory_bytes == 256 * MiB
        assert s.from_warm_pool
        # the node's create sequence: past what its usage record said (which
        # may lag by a second), and the record catches up to it with the
        # session counted
        assert seq > before, (seq, before)
        u = etcd.wait_for(lambda: (lambda x: x if x["creates"] >= seq else None)(usage(etcd)), timeout=5)
        assert u and u["creates"] == seq and u["sessions"] >= 1, u
        assert c.get(sid).id == sid
        assert c.run(sid, "print(6 * 7)") == "42\n"
        assert any(x.id == sid for x in c.list())
        # the tenant is part of the session's record (and so survives restarts)
        recs = [json.load(open(p)) for p in glob.glob(os.path.join(up.state, "sb", "*", "session.json"))]
        assert [r["tenant"] for r in recs if r["id"] == sid] == ["team-a"]

        with pytest.raises(grpc.RpcError) as ei:
            start_session(up, sid)
        assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert sid in ei.value.details()
        for bad in ("", "Upper", "a/b", "a" * 65, "../x", "s p"):
            with pytest.raises(grpc.RpcError) as ei:
                start_session(up, bad)
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        with pytest.raises(grpc.RpcError) as ei:
            start_session(up, "sched-" + secrets.token_hex(6), tenant="bad tenant\n")
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as ei:
            start_session(up, "sched-" + secrets.token_hex(6), memory_bytes=1)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "memory_bytes" in ei.value.details()
    finally:
        c.delete(sid)
    # a deleted id is free again; CreateSession still makes its own ids
    s2 = c.create()
    try:
        assert s2.id.startswith("s-") and s2.id != sid
    finally:
        c.delete(s2.id)


def test_sigterm_removes_the_node_at_once(up, etcd):
    lease = etcd.get(NODE_KEY)["lease"]
    up.stop()
    assert etcd.get(NODE_KEY) is None and etcd.get(USAGE_KEY) is None
    assert etcd.lease_ttl(lease) == -1
    up.start()
    kv = etcd.wait_for(lambda: etcd.get(NODE_KEY), timeout=5)
    assert kv and kv["lease"] != lease


def test_kill9_lapses_after_the_ttl_then_registers_again(up, etcd):
    lease = etcd.get(NODE_KEY)["lease"]
    up.kill9()
    t = time.time()
    assert etcd.get(NODE_KEY) is not None, "a killed agent cannot have revoked its lease"
    assert etcd.wait_for(lambda: etcd.get(NODE_KEY) is None, timeout=TTL + 5, step=0.1)
    assert time.time() - t <= TTL + 3
    assert etcd.get(USAGE_KEY) is None
    up.start()
    kv = etcd.wait_for(lambda: etcd.get(NODE_KEY), timeout=5)
    assert kv and kv["lease"] != lease
    assert json.loads(kv["value"])["address"] == f"127.0.0.1:{up.port}"


def test_kill9_and_quick_restart_takes_the_record_over(up, etcd):
    old = etcd.get(NODE_KEY)["lease"]
    up.kill9()
    up.start()
    kv = etcd.wait_for(lambda: (lambda k: k if k and k["lease"] != old else None)(etcd.get(NODE_KEY)),
                       timeout=5)
    assert kv, "the restarted agent did not take its record over"
    assert etcd.get(USAGE_KEY)["lease"] == kv["lease"], "node and usage records are written together"
    assert etcd.wait_for(lambda: etcd.lease_ttl(old) == -1, timeout=5), "the previous lease was not revoked"


def test_second_agent_with_the_same_name_does_not_steal_the_record(up, etcd):
    kv = etcd.get(NODE_KEY)
    other = h.Agent(pool=0, uid_base=BASE_UID + 700, extra=[
        "--node-name", NODE, "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{h.free_port()}",
        "--lease-ttl", f"{TTL}s"])
    try:
        other.start()
        assert etcd.wait_for(lambda: "registered by another agent" in other.logs(), timeout=10), other.logs()
        assert not stats(other).registered
        now = etcd.get(NODE_KEY)
        assert now["lease"] == kv["lease"] and now["value"] == kv["value"]
    finally:
        other.close()


def settled(etcd, timeout):
    """The node record once it has sat on one live lease for 2 TTLs (so it
    is being refreshed), or None. Right after an etcd restart the agent may
    still be about to replace a lease it could not refresh in time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        kv = etcd.get(NODE_KEY)
        if kv and etcd.lease_ttl(kv["lease"]) > 0:
            time.sleep(2 * TTL)
            now = etcd.get(NODE_KEY)
            if now and now["lease"] == kv["lease"] and etcd.lease_ttl(kv["lease"]) > 0:
                return now
        else:
            time.sleep(0.1)
    return None


@pytest.mark.parametrize("wipe,down_s", [(False, 0), (False, TTL + 1.5), (True, 0)],
                         ids=["restart", "down-past-ttl", "wiped"])
def test_etcd_restart_registers_again(up, etcd, wipe, down_s):
    before = etcd.get(NODE_KEY)
    registrations = up.logs().count("registered (lease")
    etcd.restart(wipe=wipe, down_s=down_s)
    if wipe or down_s > TTL:
        # its lease is gone (wiped) or it could not refresh it in time: the
        # agent must register again (taking its record over if still there)
        assert etcd.wait_for(lambda: up.logs().count("registered (lease") > registrations, timeout=10), \
            up.logs()[-3000:]
    kv = settled(etcd, timeout=20)
    assert kv, up.logs()[-3000:]
    if wipe:
        assert kv["lease"] != before["lease"]
    # usage still flows
    c = up.client()
    s = c.create()
    try:
        assert etcd.wait_for(lambda: (usage(etcd) or {}).get("sessions") == stats(up).sessions, timeout=5)
    finally:
        c.delete(s.id)
    assert up.alive()


def test_admin_record_is_read_not_written(up, etcd):
    admin = {"cordoned": True, "reason": "disk replacement", "by": "ops@example", "at": 1700000000000}
    etcd.put(ADMIN_KEY, json.dumps(admin))
    try:
        rev = etcd.get(ADMIN_KEY)["mod_revision"]
        st = etcd.wait_for(lambda: (lambda s: s if s.cordoned else None)(stats(up)), timeout=10)
        assert st and st.cordon_reason == "disk replacement" and st.cordoned_by == "ops@example"
        up.stop()
        up.start()
        up.kill9()
        up.start()
        assert etcd.wait_for(lambda: etcd.get(NODE_KEY), timeout=5)
        kv = etcd.get(ADMIN_KEY)
        assert kv["mod_revision"] == rev and kv["lease"] == 0 and json.loads(kv["value"]) == admin
        assert etcd.wait_for(lambda: stats(up).cordoned, timeout=10)
        warned = up.logs().count("is not a valid admin record")
        etcd.put(ADMIN_KEY, "not json")
        assert etcd.wait_for(lambda: up.logs().count("is not a valid admin record") > warned, timeout=10)
        assert stats(up).cordoned, "a malformed admin record must not change what the agent reports"
        assert up.alive()
    finally:
        etcd.delete(ADMIN_KEY)
    assert etcd.wait_for(lambda: not stats(up).cordoned, timeout=10)


# ---- TLS on the TCP listener -------------------------------------------

# certs: the fixture in conftest.py


def tls_agent(certs, mtls, uid_off):
    port = h.free_port()
    extra = ["--listen-tcp", f"127.0.0.1:{port}", "--tls-cert", certs["server"], "--tls-key", certs["server_key"]]
    if mtls:
        extra += ["--tls-client-ca", certs["ca"]]
    a = h.Agent(pool=0, uid_base=BASE_UID + uid_off, extra=extra)
    a.port = port
    return a.start()


def ctl(agent, *args):
    return subprocess.run([h.binary("kfleetctl"), "--server", f"127.0.0.1:{agent.port}", "--rpc-timeout", "10s",
                           *args], capture_output=True, text=True, timeout=60)


def read(p):
    with open(p, "rb") as f:
        return f.read()


def test_tls_listener(certs):
    a = tls_agent(certs, mtls=False, uid_off=800)
    try:
        sid = a.client().create().id
        r = ctl(a, "--cacert", certs["ca"], "-o", "json", "session", "list")
        assert r.returncode == 0, r.stderr
        assert sid in r.stdout
        # not trusted without our CA, and plaintext is not spoken
        assert ctl(a, "--tls", "session", "list").returncode != 0
        assert ctl(a, "session", "list").returncode != 0
        a.client().delete(sid)
    finally:
        a.close()


def test_mtls_listener(certs):
    a = tls_agent(certs, mtls=True, uid_off=900)
    try:
        sid = a.client().create().id
        r = ctl(a, "--cacert", certs["ca"], "--cert", certs["client"], "--key", certs["client_key"],
                "-o", "json", "session", "list")
        assert r.returncode == 0, r.stderr
        assert sid in r.stdout
        r = ctl(a, "--cacert", certs["ca"], "session", "list")
        assert r.returncode != 0, "a client without a certificate must be refused"
        # the scheduler's view: kfleet.v1.Agent over mTLS from Python
        pb, grpc_mod = h.agent_stubs()
        creds = grpc.ssl_channel_credentials(read(certs["ca"]), read(certs["client_key"]), read(certs["client"]))
        with grpc.secure_channel(f"127.0.0.1:{a.port}", creds) as ch:
            st = grpc_mod.AgentStub(ch).GetNodeStats(pb.NodeStatsRequest(), timeout=10)
            assert st.sessions == 1 and not st.registered
        # a certificate from a CA the agent does not trust is refused too
        bad_key, bad_cert = certs["other_ca_key"], certs["other_ca"]
        creds = grpc.ssl_channel_credentials(read(certs["ca"]), read(bad_key), read(bad_cert))
        with grpc.secure_channel(f"127.0.0.1:{a.port}", creds) as ch:
            with pytest.raises(grpc.RpcError) as ei:
                grpc_mod.AgentStub(ch).GetNodeStats(pb.NodeStatsRequest(), timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        a.client().delete(sid)
    finally:
        a.close()


def test_tls_flags_are_checked():
    h.require_root()
    for extra, msg in ((["--tls-cert", "/x"], "go together"),
                       (["--tls-cert", "/x", "--tls-key", "/y"], "--listen-tcp"),
                       (["--etcd", "http://127.0.0.1:1"], "--advertise"),
                       (["--label", "bad label=1"], "--label")):
        a = h.Agent(pool=0, extra=extra)
        try:
            r = subprocess.run(a.args(), capture_output=True, text=True, timeout=30)
            assert r.returncode == 2 and msg in r.stderr, (extra, r.stderr)
        finally:
            shutil.rmtree(a.dir, ignore_errors=True)
