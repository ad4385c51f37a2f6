"""kfleet.v1.Cluster and `kfleetctl node ...` against a real etcd, three real
agents on loopback and two real schedulers on the same cluster (one without
tenancy, one with --tenants): nodes listed with capacity, labels and usage
that follows sessions; cordon (reason/who/when, idempotent, new sessions
avoid the node while its sessions keep executing), uncordon (placements
return), the cordon outliving an agent restart, NOT_FOUND / INVALID_ARGUMENT,
UNAUTHENTICATED / PERMISSION_DENIED with tenancy, and the CLI's table and
JSON output, including against an agent (not a scheduler)."""
import json
import os
import re
import secrets
import signal
import subprocess
import time

import grpc
import pytest

import kfleet_harness as h

TTL = 2
MiB = 1 << 20
GiB = 1 << 30
BASE_UID = 300000 + (os.getpid() % 1000) * 1000
NODES = ("cl-a", "cl-b", "cl-c")
TOKENS = {"ops": secrets.token_hex(16), "acme": secrets.token_hex(16)}


def make_agent(etcd, name, i):
    port = h.free_port()
    a = h.Agent(pool=0, uid_base=BASE_UID + 50 + 300 * i, extra=[
        "--node-name", name, "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{port}",
        "--advertise", f"127.0.0.1:{port}", "--lease-ttl", f"{TTL}s", "--label", f"zone=z{i}",
        "--capacity-memory", "16G", "--capacity-cpu", "8", "--max-sessions", "50"])
    a.name = name
    a.port = port
    return a


def closed_cleanly(sched):
    rc, logs = sched.close()
    assert rc == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
    return logs


@pytest.fixture(scope="module")
def cluster(etcd):
    agents = [make_agent(etcd, n, i) for i, n in enumerate(NODES)]
    scheds = []
    try:
        for a in agents:
            a.start()
        for a in agents:
            assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/" + a.name), timeout=15), a.logs()[-3000:]
        sched = h.Scheduler(etcd.url).start()
        scheds.append(sched)
        tsched = h.TenantScheduler(etcd.url)
        tsched.tenants_file = os.path.join(tsched.dir, "tenants.json")
        h.write_tenants(tsched.tenants_file, [
            {"name": "ops", "tokens": [TOKENS["ops"]], "admin": True},
            {"name": "acme", "tokens": [TOKENS["acme"]], "admin": False}])
        tsched.extra += ["--tenants", tsched.tenants_file]
        tsched.start()
        scheds.append(tsched)
        yield {"agents": {a.name: a for a in agents}, "sched": sched, "tsched": tsched}
        for s in scheds:
            logs = closed_cleanly(s)
            assert not any(t in logs for t in TOKENS.values()), "a token was logged"
        scheds = []
    finally:
        for s in scheds:
            s.close()
        for a in agents:
            a.close()


class ClusterClient:
    """kfleet.v1.Cluster over a channel (with a bearer token if given)."""

    def __init__(self, target, token=None):
        self.pb, grpc_mod = h.cluster_stubs()
        ch = grpc.insecure_channel(target)
        if token is not None:
            ch = grpc.intercept_channel(ch, h._BearerAuth("Bearer " + token))
        self.stub = grpc_mod.ClusterStub(ch)

    def list(self, **kw):
        return self.stub.ListNodes(self.pb.ListNodesRequest(**kw), timeout=30)

    def nodes(self):
        return {n.id: n for n in self.list().nodes}

    def get(self, node):
        return self.stub.GetNode(self.pb.GetNodeRequest(node=node), timeout=30)

    def cordon(self, node, reason, who=""):
        return self.stub.CordonNode(self.pb.CordonNodeRequest(node=node, reason=reason, who=who), timeout=30)

    def uncordon(self, node, who=""):
        return self.stub.UncordonNode(self.pb.UncordonNodeRequest(node=node, who=who), timeout=30)

    def summary(self):
        return self.stub.GetClusterSummary(self.pb.GetClusterSummaryRequest(), timeout=30)

    def state(self, node):
        return self.pb.NodeState.Name(self.get(node).state)


@pytest.fixture
def cc(cluster):
    return ClusterClient(f"unix:{cluster['sched'].sock}")


@pytest.fixture
def sc(cluster):
    return cluster["sched"].client()


@pytest.fixture(autouse=True)
def uncordoned(etcd):
    """Every test starts and ends with no admin records."""
    for n in NODES:
        etcd.delete("/kfleet/admin/" + n)
    yield
    for n in NODES:
        etcd.delete("/kfleet/admin/" + n)


def code_of(fn):
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value.code(), ei.value.details()


def create(sc, **kw):
    kw.setdefault("memory_bytes", 256 * MiB)
    kw.setdefault("cpu_millis", 500)
    return sc.create(**kw)


def settle(cc):
    """Waits until the agents' usage records show no sessions (they write at
    most once a second), so placement starts from the truth."""
    assert h.wait_for(lambda: all(n.usage.sessions == 0 for n in cc.list().nodes), timeout=15)


def test_list_and_get_show_every_node(cluster, cc):
    pb = cc.pb
    nodes = cc.nodes()
    assert sorted(nodes) == sorted(NODES)
    assert [n.id for n in cc.list().nodes] == sorted(NODES)  # sorted by id
    for i, name in enumerate(NODES):
        n = nodes[name]
        assert n.state == pb.NODE_STATE_READY, n
        assert n.address == f"127.0.0.1:{cluster['agents'][name].port}" and not n.tls
        assert n.capacity.memory_bytes == 16 * GiB and n.capacity.cpu_millis == 8000
        assert n.capacity.session_slots == 50
        assert dict(n.labels) == {"zone": f"z{i}"}
        assert n.version and n.started_unix_ms > 0 and n.usage_updated_unix_ms > 0
        assert not n.admin.cordoned and n.admin.reason == "" and n.admin.by == ""
        assert cc.get(name) == n
    s = cc.summary()
    assert (s.nodes, s.ready, s.cordoned, s.not_ready, s.draining, s.drained) == (3, 3, 0, 0, 0, 0)
    assert s.capacity.memory_bytes == 48 * GiB and s.capacity.cpu_millis == 24000
    assert s.capacity.session_slots == 150 and s.schedulable_capacity == s.capacity
    # paging: one node per page, in order, then the end
    seen, token = [], ""
    for _ in range(5):
        page = cc.list(page_size=1, page_token=token)
        seen += [n.id for n in page.nodes]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(NODES)
    code, msg = code_of(lambda: cc.list(page_size=5000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_size 5000" in msg, msg


def test_usage_follows_sessions(cc, sc):
    settle(cc)
    s = create(sc)
    try:
        def on_node():
            n = cc.get(s.node)
            return n if n.usage.sessions == 1 else None
        n = h.wait_for(on_node, timeout=15)
        assert n, cc.get(s.node)
        n = cc.get(s.node)
        assert n.usage.memory_reserved_bytes == 256 * MiB and n.usage.cpu_reserved_millis == 500, n.usage
        sm = cc.summary()
        assert sm.usage.sessions == 1 and sm.usage.memory_reserved_bytes == 256 * MiB, sm
    finally:
        sc.delete(s.id)
    assert h.wait_for(lambda: cc.get(s.node).usage.sessions == 0, timeout=15)
    assert cc.summary().usage.sessions == 0


def test_cordon_steers_placement_and_keeps_sessions(cc, sc, etcd):
    pb = cc.pb
    settle(cc)
    s = create(sc)
    target = s.node
    others = []
    try:
        sc.run(s.id, "x = 41")
        before = int(time.time() * 1000)
        n = cc.cordon(target, "disk replacement \u2014 ticket 42", who="alice")
        after = int(time.time() * 1000)
        assert n.id == target and n.state == pb.NODE_STATE_CORDONED
        assert n.admin.cordoned and n.admin.reason == "disk replacement \u2014 ticket 42"
        assert n.admin.by == "alice" and before <= n.admin.at_unix_ms <= after, n.admin
        rec = etcd.get_json("/kfleet/admin/" + target)
        assert rec == {"cordoned": True, "reason": "disk replacement \u2014 ticket 42", "by": "alice",
                       "at": n.admin.at_unix_ms}, rec
        listed = cc.nodes()[target]
        assert listed.state == pb.NODE_STATE_CORDONED and listed.admin == n.admin
        sm = cc.summary()
        assert (sm.ready, sm.cordoned) == (2, 1)
        assert sm.schedulable_capacity.memory_bytes == 32 * GiB and sm.capacity.memory_bytes == 48 * GiB

        # new sessions avoid the node at once; the one already there still runs
        others = [create(sc) for _ in range(4)]
        assert target not in {o.node for o in others}, [o.node for o in others]
        assert sc.run(s.id, "print(x + 1)").strip() == "42"
        assert sc.get(s.id).node == target

        # idempotent: the same reason changes nothing, not even who and when
        rev = etcd.get("/kfleet/admin/" + target)
        time.sleep(0.01)
        again = cc.cordon(target, "disk replacement \u2014 ticket 42", who="bob")
        assert again.admin == n.admin and etcd.get("/kfleet/admin/" + target) == rev
        # a new reason is a new decision
        changed = cc.cordon(target, "memory errors", who="bob")
        assert changed.admin.reason == "memory errors" and changed.admin.by == "bob"
        assert changed.admin.at_unix_ms >= n.admin.at_unix_ms

        # uncordon: the record goes, and the node gets placements again
        u = cc.uncordon(target, who="bob")
        assert u.state == pb.NODE_STATE_READY and not u.admin.cordoned and u.admin.by == ""
        assert etcd.get("/kfleet/admin/" + target) is None
        assert cc.uncordon(target).state == pb.NODE_STATE_READY  # idempotent
        # the target holds 1 session, the others 2 each: spread comes back to it
        # (within a few creates: the usage estimate can lag by one, ARCHITECTURE.md)
        for _ in range(3):
            others.append(create(sc))
            if others[-1].node == target:
                break
        assert others[-1].node == target, [o.node for o in others]
    finally:
        for o in others + [s]:
            sc.delete(o.id)


def test_cordon_seen_by_every_scheduler_and_agent(cluster, cc):
    """The other scheduler's view follows the record; the agent reads it."""
    pb = cc.pb
    tc = ClusterClient(f"unix:{cluster['tsched'].sock}", TOKENS["acme"])
    cc.cordon(NODES[1], "rack move", who="dave")
    assert h.wait_for(lambda: tc.get(NODES[1]).state == pb.NODE_STATE_CORDONED, timeout=10)
    assert tc.get(NODES[1]).admin.by == "dave"
    apb, agrpc = h.agent_stubs()
    stub = agrpc.AgentStub(grpc.insecure_channel(f"unix:{cluster['agents'][NODES[1]].sock}"))
    # the agent re-reads its admin record every few seconds: wait for this one
    # (an earlier test may have left the node cordoned for another reason)
    stats = h.wait_for(lambda: (lambda st: st if st.cordon_reason == "rack move" else None)(
        stub.GetNodeStats(apb.NodeStatsRequest(), timeout=10)), timeout=15)
    assert stats and stats.cordoned and stats.cordoned_by == "dave", stats


def test_cordon_survives_agent_restart(cluster, cc, etcd):
    pb = cc.pb
    name = NODES[2]
    agent = cluster["agents"][name]
    n = cc.cordon(name, "kernel upgrade", who="erin")
    agent.stop(signal.SIGTERM)
    try:
        # a clean stop revokes the lease: the node is known from its cordon only
        assert h.wait_for(lambda: cc.get(name).state == pb.NODE_STATE_NOT_READY, timeout=15)
        down = cc.get(name)
        assert down.admin == n.admin and down.address == "" and down.capacity.memory_bytes == 0
        sm = cc.summary()
        assert (sm.nodes, sm.ready, sm.not_ready) == (3, 2, 1) and sm.capacity.memory_bytes == 32 * GiB
    finally:
        agent.start()
    assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/" + name), timeout=15)
    assert h.wait_for(lambda: cc.get(name).state == pb.NODE_STATE_CORDONED, timeout=15)
    back = cc.get(name)
    assert back.admin == n.admin and back.address, back
    # and it is uncordoned like any other
    assert cc.uncordon(name).state == pb.NODE_STATE_READY


def test_unknown_and_malformed_nodes(cc, etcd):
    for call in (lambda: cc.get("nope"), lambda: cc.cordon("nope", "x"), lambda: cc.uncordon("nope")):
        code, msg = code_of(call)
        assert code == grpc.StatusCode.NOT_FOUND and msg == "no node nope", (code, msg)
    assert etcd.get("/kfleet/admin/nope") is None  # a typo creates no record
    for bad in ("", "../x", ".hidden", "a b", "x" * 64):
        for call in (lambda: cc.get(bad), lambda: cc.cordon(bad, "x"), lambda: cc.uncordon(bad)):
            code, msg = code_of(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("node"), (bad, code, msg)


def test_bad_reason_or_who_is_invalid_argument(cc, etcd):
    cases = {"": "reason is required",
             "a\nb": "reason contains a control character (byte 1)",
             "\x1b[31mred": "reason contains a control character (byte 0)",
             "c1 \u0085": "reason contains a control character (byte 3)",
             "r" * 256: "reason is too long (256 bytes, max 255)",
             "\u00e9" * 128: "reason is too long (256 bytes, max 255)"}
    for reason, want in cases.items():
        code, msg = code_of(lambda: cc.cordon(NODES[0], reason))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and msg == want, (reason, code, msg)
    for who in ("a b", "x" * 64, "\u00e9"):
        code, msg = code_of(lambda: cc.cordon(NODES[0], "ok", who=who))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("who must be"), (who, msg)
    assert etcd.get("/kfleet/admin/" + NODES[0]) is None
    # at the limit it is accepted; no who is "anonymous"
    n = cc.cordon(NODES[0], "r" * 255)
    assert n.admin.reason == "r" * 255 and n.admin.by == "anonymous"


def test_tenancy(cluster, etcd):
    target = f"unix:{cluster['tsched'].sock}"
    pb = h.cluster_stubs()[0]
    calls = lambda c: {"list": c.list, "get": lambda: c.get(NODES[0]), "summary": c.summary,  # noqa: E731
                       "cordon": lambda: c.cordon(NODES[0], "x"), "uncordon": lambda: c.uncordon(NODES[0])}
    for name, call in calls(ClusterClient(target)).items():
        code, msg = code_of(call)
        assert code == grpc.StatusCode.UNAUTHENTICATED and msg == "missing bearer token", (name, msg)
    for name, call in calls(ClusterClient(target, "y" * 32)).items():
        code, msg = code_of(call)
        assert code == grpc.StatusCode.UNAUTHENTICATED and msg == "invalid token", (name, msg)
    acme = ClusterClient(target, TOKENS["acme"])
    assert sorted(acme.nodes()) == sorted(NODES) and acme.summary().nodes == 3
    for name in ("cordon", "uncordon"):
        code, msg = code_of(calls(acme)[name])
        assert code == grpc.StatusCode.PERMISSION_DENIED and "tenant acme may not change the cluster" in msg, msg
    assert etcd.get("/kfleet/admin/" + NODES[0]) is None
    ops = ClusterClient(target, TOKENS["ops"])
    n = ops.cordon(NODES[0], "maintenance", who="mallory")
    assert n.state == pb.NODE_STATE_CORDONED and n.admin.by == "ops"  # the tenant, not the claim
    assert etcd.get_json("/kfleet/admin/" + NODES[0])["by"] == "ops"
    assert ops.uncordon(NODES[0]).state == pb.NODE_STATE_READY


def kfleetctl(server, *args, token=None):
    cmd = [h.binary("kfleetctl"), "--server", server] + (["--token", token] if token else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dict(os.environ, USER="root"))
    return p.returncode, p.stdout, p.stderr


def test_kfleetctl_node(cluster, etcd):
    srv = f"unix:{cluster['sched'].sock}"
    node = NODES[0]
    rc, out, err = kfleetctl(srv, "node", "list")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "STATE", "SESSIONS", "POOL", "MEMORY", "CPU", "REASON", "BY", "SINCE"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:4]}
    assert sorted(rows) == sorted(NODES), out
    for r in rows.values():
        assert r[1] == "READY" and r[2].endswith("/50") and r[4].endswith("/16G") and r[5].endswith("/8"), r
    total = [ln for ln in lines if ln.startswith("TOTAL:")]
    assert total and "3 nodes (3 ready, 0 cordoned, 0 not ready)" in total[0], out
    assert re.search(r"sessions \d+/150, pool 0/0, memory \S+/48G, cpu \S+/24$", total[0]), total[0]

    rc, out, err = kfleetctl(srv, "node", "cordon", node, "--reason", "kernel upgrade", "--who", "carol")
    assert rc == 0 and out == f"node {node} cordoned by carol: kernel upgrade\n", (rc, out, err)
    rc, out, err = kfleetctl(srv, "node", "list")
    row = next(ln for ln in out.splitlines() if ln.startswith(node + " "))
    assert re.match(rf"{node}\s+CORDONED\s+.*\s+kernel upgrade\s+carol\s+\S+$", row), row
    assert "(2 ready, 1 cordoned, 0 not ready)" in out
    rc, out, err = kfleetctl(srv, "-o", "json", "node", "list")
    j = json.loads(out)
    assert [n["id"] for n in j["nodes"]] == sorted(NODES)
    jn = next(n for n in j["nodes"] if n["id"] == node)
    assert jn["state"] == "NODE_STATE_CORDONED" and jn["admin"]["reason"] == "kernel upgrade"
    assert jn["admin"]["by"] == "carol" and jn["capacity"]["memory_bytes"] == 16 * GiB
    assert jn["labels"] == {"zone": "z0"}
    assert j["summary"]["nodes"] == 3 and j["summary"]["cordoned"] == 1

    rc, out, err = kfleetctl(srv, "node", "get", node)
    assert rc == 0, err
    kv = {ln.split(":", 1)[0]: ln.split(":", 1)[1].strip() for ln in out.splitlines()}
    assert kv["state"] == "CORDONED" and kv["reason"] == "kernel upgrade" and kv["by"] == "carol", out
    assert kv["labels"] == "zone=z0" and kv["memory (reserved/capacity)"].endswith("/16G"), out
    rc, out, err = kfleetctl(srv, "node", "get", node, "-o", "json")
    assert json.loads(out)["admin"]["cordoned"] is True

    # without --who the login name is sent
    kfleetctl(srv, "node", "uncordon", node)
    rc, out, err = kfleetctl(srv, "node", "cordon", node, "--reason", "again")
    assert rc == 0 and "cordoned by root: again" in out, (out, err)
    rc, out, err = kfleetctl(srv, "node", "uncordon", node)
    assert rc == 0 and out == f"node {node} uncordoned (READY)\n", (out, err)
    rc, out, err = kfleetctl(srv, "-o", "json", "node", "uncordon", node)
    assert rc == 0 and json.loads(out)["state"] == "NODE_STATE_READY"

    # errors: the server's status and message, exit code 2
    rc, out, err = kfleetctl(srv, "node", "get", "nope")
    assert rc == 2 and err.strip() == "kfleetctl: NOT_FOUND: no node nope", err
    rc, out, err = kfleetctl(srv, "node", "cordon", node)
    assert rc == 2 and "--reason TEXT is required" in err, err
    rc, out, err = kfleetctl(srv, "node", "cordon", node, "--reason", "a\tb")
    assert rc == 2 and "INVALID_ARGUMENT: reason contains a control character" in err, err
    tsrv = f"unix:{cluster['tsched'].sock}"
    rc, out, err = kfleetctl(tsrv, "node", "cordon", node, "--reason", "x", token=TOKENS["acme"])
    assert rc == 2 and "PERMISSION_DENIED" in err, err
    rc, out, err = kfleetctl(tsrv, "node", "list")
    assert rc == 2 and "UNAUTHENTICATED" in err, err
    rc, out, err = kfleetctl(tsrv, "node", "list", token=TOKENS["acme"])
    assert rc == 0 and "TOTAL: 3 nodes" in out, err

    # an agent serves no kfleet.v1.Cluster
    agent = cluster["agents"][NODES[1]]
    rc, out, err = kfleetctl(f"unix:{agent.sock}", "node", "list")
    assert rc == 2 and "it is not a scheduler" in err, err
