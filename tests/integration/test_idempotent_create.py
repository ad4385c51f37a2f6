"""Idempotent CreateSession by client request_id, against a real etcd, two
real agents and two kfleet-scheduler processes side by side on that etcd:
a repeat, a race of threads over both schedulers, a retry after a
scheduler is killed, a create that committed but never started (its
scheduler died in between), a mismatch, bad ids, a failed start that
leaves no request record, tenant separation, and kfleetctl --request-id."""
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse

import grpc
import pytest

import kfleet_harness as h

MiB = 1 << 20
BASE_UID = 300000 + (os.getpid() % 1000) * 1000
NODES = ("idem-a", "idem-b")
MEM = 256 * MiB


@pytest.fixture(scope="module")
def agents(etcd):
    out = []
    try:
        for i, name in enumerate(NODES):
            port = h.free_port()
            a = h.Agent(pool=1, uid_base=BASE_UID + 100 + 300 * i, extra=[
                "--node-name", name, "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{port}",
                "--advertise", f"127.0.0.1:{port}", "--lease-ttl", "3s",
                "--capacity-memory", "16G", "--capacity-cpu", "8", "--max-sessions", "50"])
            a.name = name
            out.append(a.start())
        for a in out:
            assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/" + a.name), timeout=15), a.logs()[-3000:]
        yield out
    finally:
        for a in out:
            a.close()


def check_clean(sched):
    rc, logs = sched.close()
    assert rc == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]


@pytest.fixture(scope="module")
def scheds(etcd, agents):
    a = h.Scheduler(etcd.url).start()
    b = h.Scheduler(etcd.url).start()
    yield [a, b]
    for s in (a, b):
        check_clean(s)


create = h.create_with_request_id
code_of = h.rpc_error


def req_key(tenant, rid):
    return "/kfleet/requests/%s/%s" % (tenant, urllib.parse.quote(rid, safe="._~-"))


def sessions_in_etcd(etcd):
    import base64
    r = etcd._call("/v3/kv/range", {"key": etcd._b64("/kfleet/sessions/"),
                                     "range_end": etcd._b64("/kfleet/sessions0")})
    return [base64.b64decode(kv["key"]).decode()[len("/kfleet/sessions/"):] for kv in r.get("kvs", [])]


def test_repeat_returns_the_same_session(scheds, etcd):
    c = scheds[0].client()
    s1 = create(c, "repeat-1")
    try:
        s2 = create(c, "repeat-1")
        assert s2.id == s1.id and s2.node == s1.node
        rec = etcd.get_json(req_key("", "repeat-1"))
        assert rec and rec["session_id"] == s1.id and len(rec["fingerprint"]) == 64, rec
        kv = etcd.get(req_key("", "repeat-1"))
        ttl = etcd.lease_ttl(kv["lease"])
        assert 23 * 3600 < ttl <= 25 * 3600, ttl  # kept for a bounded time, about a day
        assert [s.id for s in c.list()].count(s1.id) == 1
        # and the session is a working one
        assert c.run(s1.id, "print(6*7)").strip() == "42"
    finally:
        c.delete(s1.id)
    # the request id still names that session: a late retry is told it is gone
    code, msg = code_of(lambda: create(c, "repeat-1"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and s1.id in msg and "no longer exists" in msg, msg


def test_retry_on_the_other_replica(scheds):
    a, b = scheds[0].client(), scheds[1].client()
    s1 = create(a, "other-replica")
    try:
        assert create(b, "other-replica").id == s1.id
    finally:
        a.delete(s1.id)


def test_racing_creates_make_one_session(scheds, etcd):
    before = set(sessions_in_etcd(etcd))
    results, errors = h.race(8, lambda i: create(scheds[i % 2].client(), "race-1").id)
    try:
        assert not errors, errors
        assert len(results) == 8 and len(set(results)) == 1, results
        made = set(sessions_in_etcd(etcd)) - before
        assert made == set(results), (made, results)
        # exactly one session on the agents too
        on_agents = [s.id for s in scheds[0].client().list() if s.id not in before]
        assert on_agents == results[:1], on_agents
    finally:
        for sid in set(results):
            scheds[0].client().delete(sid)


def test_retry_after_the_scheduler_is_killed(scheds, etcd):
    s = h.Scheduler(etcd.url).start()
    try:
        first = create(s.client(), "after-crash")
        s.proc.kill()
        s.proc.wait(30)
        s.start()
        assert create(s.client(), "after-crash").id == first.id
        assert create(scheds[1].client(), "after-crash").id == first.id
        s.client().delete(first.id)
    finally:
        s.close()


def test_committed_but_never_started_is_started_by_the_retry(scheds, etcd):
    """A scheduler that died between its commit and its StartSession left
    both records and no session: once the records are older than any start
    could take, a retry starts the session under the committed id."""
    c = scheds[0].client()
    # the fingerprint of these limits, as a real create records it
    probe = create(c, "fp-probe")
    fp = etcd.get_json(req_key("", "fp-probe"))["fingerprint"]
    c.delete(probe.id)
    sid = "s-00000000000000c0ffee"
    old = int(time.time() * 1000) - 300000
    etcd.put("/kfleet/sessions/" + sid, json.dumps({
        "id": sid, "node": NODES[1], "tenant": "", "created_unix_ms": old,
        "limits": {"memory_bytes": MEM}}))
    etcd.put(req_key("", "half-done"), json.dumps({
        "session_id": sid, "fingerprint": fp, "created_unix_ms": old}))
    s = create(scheds[1].client(), "half-done")
    try:
        assert s.id == sid and s.node == NODES[1]
        assert c.run(sid, "print('up')").strip() == "up"
        assert create(c, "half-done").id == sid
    finally:
        c.delete(sid)


def test_same_request_id_different_limits(scheds):
    c = scheds[0].client()
    s1 = create(c, "mismatch-1")
    try:
        code, msg = code_of(lambda: create(scheds[1].client(), "mismatch-1", memory_bytes=512 * MiB))
        assert code == grpc.StatusCode.ALREADY_EXISTS, msg
        assert "request id mismatch-1 was used for a different request" in msg, msg
        assert create(c, "mismatch-1").id == s1.id
    finally:
        c.delete(s1.id)


@pytest.mark.parametrize("rid,what", [
    ("x" * 129, "129 bytes"),
    ("tab\there", "0x09"),
    ("caf\u00e9", "0xc3"),
])
def test_bad_request_id(scheds, rid, what):
    code, msg = code_of(lambda: create(scheds[0].client(), rid))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in msg and what in msg, msg


def test_odd_characters_stay_in_the_tenant_prefix(scheds, etcd):
    c = scheds[0].client()
    rid = "../../sessions/x y%2F" + "z" * 100
    assert len(rid) <= 128
    s1 = create(c, rid)
    try:
        assert etcd.get_json(req_key("", rid))["session_id"] == s1.id
        assert create(c, rid).id == s1.id
    finally:
        c.delete(s1.id)


def test_failed_start_leaves_no_request_record(scheds, etcd):
    c = scheds[0].client()
    # more than the agents' --max-timeout (1h): the agent refuses the start
    code, msg = code_of(lambda: create(c, "fails-1", exec_timeout_ms=7200 * 1000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, msg
    assert etcd.get(req_key("", "fails-1")) is None
    # a retry makes a new attempt (which fails the same way, cleanly)
    code, msg2 = code_of(lambda: create(c, "fails-1", exec_timeout_ms=7200 * 1000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, msg2
    # and the id is free for a request that works
    s = create(c, "fails-1")
    c.delete(s.id)


@contextlib.contextmanager
def tenant_scheduler(etcd, tenants):
    """A scheduler of its own started with --tenants (a list of dicts)."""
    d = tempfile.mkdtemp(prefix="kft-")
    try:
        path = os.path.join(d, "tenants.json")
        h.write_tenants(path, tenants)
        s = h.TenantScheduler(etcd.url, extra=["--tenants", path]).start()
        try:
            yield s
        finally:
            check_clean(s)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tenants_do_not_share_request_ids(etcd, agents):
    with tenant_scheduler(etcd, [{"name": "acme", "tokens": ["tok-acme-0123456789abcdef"]},
                                 {"name": "globex", "tokens": ["tok-globex-0123456789abcdef"]}]) as s:
        a = s.client("tok-acme-0123456789abcdef")
        g = s.client("tok-globex-0123456789abcdef")
        sa, sg = create(a, "shared-rid"), create(g, "shared-rid")
        assert sa.id != sg.id
        assert create(a, "shared-rid").id == sa.id and create(g, "shared-rid").id == sg.id
        assert etcd.get_json(req_key("acme", "shared-rid"))["session_id"] == sa.id
        assert etcd.get_json(req_key("globex", "shared-rid"))["session_id"] == sg.id
        a.delete(sa.id)
        g.delete(sg.id)


def test_retry_is_answered_at_the_quota(etcd, agents):
    """No read precedes the commit: a create that its tenant's quota would
    refuse is answered from the request record when it is a retry."""
    with tenant_scheduler(etcd, [{"name": "one", "tokens": ["tok-one-0123456789abcdef"], "max_sessions": 1}]) as s:
        c = s.client("tok-one-0123456789abcdef")
        s1 = create(c, "quota-rid")
        try:
            assert create(c, "quota-rid").id == s1.id  # at the quota, the retry gets its session
            code, msg = code_of(lambda: create(c, "quota-other"))  # a new request is refused
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_sessions=1" in msg, msg
            assert etcd.get(req_key("one", "quota-other")) is None
        finally:
            c.delete(s1.id)


def test_retry_is_answered_when_no_node_has_room(scheds, etcd):
    c = scheds[0].client()
    s1 = create(c, "room-rid")

    def view_cordoned():  # the scheduler's view follows the admin records
        out = subprocess.run([h.binary("kfleetctl"), "--server", "unix:" + scheds[0].sock, "-o", "json",
                              "node", "list"], capture_output=True, text=True, timeout=30)
        nodes = json.loads(out.stdout) if out.returncode == 0 else []
        nodes = nodes.get("nodes", []) if isinstance(nodes, dict) else nodes
        mine = [n for n in nodes if n.get("id") in NODES]
        return len(mine) == len(NODES) and all(n.get("admin", {}).get("cordoned") for n in mine)
    try:
        for n in NODES:
            etcd.put("/kfleet/admin/" + n, json.dumps({"cordoned": True, "reason": "test", "by": "t", "at": 1}))
        assert etcd.wait_for(view_cordoned, timeout=15)
        assert create(c, "room-rid").id == s1.id  # placement would refuse: the record answers
        code, msg = code_of(lambda: create(c, "room-other"))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "cordon" in msg, msg
    finally:
        for n in NODES:
            etcd.delete("/kfleet/admin/" + n)
        c.delete(s1.id)


def test_kfleetctl_request_id(scheds):
    def ctl(*args):
        return subprocess.run([h.binary("kfleetctl"), "--server", "unix:" + scheds[0].sock, *args],
                              capture_output=True, text=True, timeout=120)
    r1 = ctl("session", "create", "--memory", "256M", "--request-id", "ctl-1")
    assert r1.returncode == 0, r1.stderr
    try:
        r2 = ctl("session", "create", "--memory", "256M", "--request-id", "ctl-1")
        assert r2.returncode == 0 and r2.stdout == r1.stdout, (r1.stdout, r2.stdout, r2.stderr)
        r3 = ctl("session", "create", "--memory", "512M", "--request-id", "ctl-1")
        assert r3.returncode == 2 and "ALREADY_EXISTS" in r3.stderr, r3.stderr
    finally:
        ctl("session", "delete", r1.stdout.strip())


def test_fingerprint_is_the_documented_hash(scheds, etcd):
    """The record's fingerprint is SHA-256 of the canonical limits text
    (what an operator or a migration tool can recompute)."""
    c = scheds[0].client()
    s1 = create(c, "fp-doc", memory_bytes=MEM, cpu_millis=500)
    try:
        text = ("memory_bytes=%d;cpu_millis=500;pids=0;exec_timeout_ms=0;disk_bytes=0;disk_inodes=0;"
                "idle_timeout_s=0;max_lifetime_s=0" % MEM)
        assert etcd.get_json(req_key("", "fp-doc"))["fingerprint"] == hashlib.sha256(text.encode()).hexdigest()
    finally:
        c.delete(s1.id)


def test_failed_retry_keeps_the_original_record(scheds, etcd):
    """A retry whose commit ends with its outcome unknown (etcd stopped past
    the scheduler's 3 s request timeout) cleans up after itself, but never
    deletes the request record of the create it retried: a later retry
    still gets the original session. Last in the module: the pause lapses
    the agents' 3 s leases (they re-register)."""
    c = scheds[0].client()
    s1 = create(c, "stall-rid")
    errors = []

    def stalled_retry():
        try:
            create(c, "stall-rid", timeout=30)
        except grpc.RpcError as e:
            errors.append(e.code())
    etcd.proc.send_signal(signal.SIGSTOP)
    try:
        t = threading.Thread(target=stalled_retry)
        t.start()
        time.sleep(4.5)  # the commit times out at 3 s; the clean-up txn waits for etcd
    finally:
        etcd.proc.send_signal(signal.SIGCONT)
    t.join(60)
    assert errors == [grpc.StatusCode.UNAVAILABLE], errors  # the path under test ran
    rec = etcd.get_json(req_key("", "stall-rid"))
    assert rec and rec["session_id"] == s1.id, rec
    # once the nodes are back, the retry is answered with the original session
    assert h.eventually(lambda: create(c, "stall-rid", timeout=30), timeout=60).id == s1.id
    c.delete(s1.id)
