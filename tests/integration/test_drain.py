"""Node drain against a real etcd, a real scheduler and three real agents:
`kfleetctl node drain` moves every session of a node (20, each with files)
to the other nodes under the same id, the files arrive intact, the next
execution starts with the restart notice and the kernel's memory is gone;
--cancel stops a drain (the rest stay usable where they are); the deadline
leaves unmovable (busy) sessions in place, or with --force deletes them,
and both are reported; an agent asked to stop (SIGTERM, --drain-on-stop)
drains itself first."""
import concurrent.futures as cf
import hashlib
import os
import secrets
import subprocess
import threading
import time

import grpc
import pytest

import kfleet_harness as h
from test_cluster_nodes import ClusterClient, closed_cleanly

TTL = 2
BASE_UID = 500000 + (os.getpid() % 1000) * 1000
NODES = ("dr-a", "dr-b", "dr-c")
N_SESSIONS = 20

WRITE_FILES = r'''
import hashlib, os
os.makedirs("/mnt/data/sub", exist_ok=True)
blob = os.urandom(200 * 1024)
open("/mnt/data/blob.bin", "wb").write(blob)
open("/mnt/data/sub/note.txt", "w").write("session %s\n" % SID)
with open("/mnt/data/sparse.bin", "wb") as f:
    f.seek(8 << 20)
    f.write(b"end")
x = 42
'''

DIGESTS = r'''
import hashlib, os
out = []
for root, dirs, files in os.walk("/mnt/data"):
    for n in sorted(files):
        p = os.path.join(root, n)
        out.append("%s=%s" % (p, hashlib.sha256(open(p, "rb").read()).hexdigest()))
print(";".join(sorted(out)))
'''


def make_agent(etcd, name, i):
    port = h.free_port()
    a = h.Agent(pool=0, uid_base=BASE_UID + 300 * i, extra=[
        "--node-name", name, "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{port}",
        "--advertise", f"127.0.0.1:{port}", "--lease-ttl", f"{TTL}s",
        "--capacity-memory", "64G", "--capacity-cpu", "64", "--max-sessions", "60",
        "--drain-on-stop", "150s"])
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
        sched = h.Scheduler(etcd.url).start()
        yield {"agents": {a.name: a for a in agents}, "sched": sched}
        closed_cleanly(sched)
        sched = None
    finally:
        if sched:
            sched.close()
        for a in agents:
            a.close()


@pytest.fixture
def cc(cluster):
    return ClusterClient(f"unix:{cluster['sched'].sock}")


@pytest.fixture
def sc(cluster):
    return cluster["sched"].client()


@pytest.fixture(autouse=True)
def clean(etcd):
    """Every test starts with no cordon and no drain record."""
    for n in NODES:
        etcd.delete("/kfleet/admin/" + n)
        etcd.delete("/kfleet/drains/" + n)
    yield


def ctl(cluster, *args, timeout=600):
    return subprocess.run([h.binary("kfleetctl"), "--server", f"unix:{cluster['sched'].sock}"] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def sessions_on(cc, sc, node, n):
    """n sessions created while every other node is cordoned."""
    others = [x for x in NODES if x != node]
    for o in others:
        cc.cordon(o, "test: steer sessions")
    try:
        with cf.ThreadPoolExecutor(4) as ex:
            made = list(ex.map(lambda _: sc.create(), range(n)))
    finally:
        for o in others:
            cc.uncordon(o)
    assert all(s.node == node for s in made), [s.node for s in made]
    return [s.id for s in made]


def run_events(sc, sid, code):
    """(notices, stdout) of one execution."""
    r = sc.execute(sid, code)
    assert r.status == "EXEC_STATUS_OK", (r.status, r.result, r.stderr)
    return [e.notice for e in r.events if e.WhichOneof("event") == "notice"], r.stdout


def drain_status(cc, node):
    return cc.stub.GetDrain(cc.pb.GetDrainRequest(node=node), timeout=30)


def test_drain_moves_every_session_with_its_files(cluster, cc, sc):
    a = NODES[0]
    ids = sessions_on(cc, sc, a, N_SESSIONS)
    digests = {}

    def prepare(sid):
        sc.run(sid, f"SID = {sid!r}\n" + WRITE_FILES)
        return sid, sc.run(sid, DIGESTS).strip()

    with cf.ThreadPoolExecutor(4) as ex:
        digests = dict(ex.map(prepare, ids))
    assert all(d.count("=") == 3 for d in digests.values()), digests

    r = ctl(cluster, "node", "drain", a, "--parallel", "4", "--deadline", "10m", "--reason", "test drain")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.count("moved to") == N_SESSIONS, r.stdout

    st = drain_status(cc, a)
    assert cc.pb.DrainState.Name(st.state) == "DRAIN_STATE_DONE", st
    assert st.total == N_SESSIONS and st.moved == N_SESSIONS
    assert cc.get(a).admin.cordoned  # a drained node stays cordoned

    def check(sid):
        s = sc.get(sid)
        assert s.node in NODES[1:], (sid, s.node)
        notices, out = run_events(sc, sid, DIGESTS)
        assert out.strip() == digests[sid], (sid, out, digests[sid])
        assert len(notices) == 1 and "drain" in notices[0] and a in notices[0], notices
        # in-memory state is gone, and the notice comes once
        notices, out = run_events(sc, sid, "print('x' in globals())")
        assert notices == [] and out.strip() == "False", (notices, out)
        # the files belong to the session on its new node: it can change them
        assert sc.run(sid, "import os; os.remove('/mnt/data/blob.bin'); print('ok')").strip() == "ok"
        return s.node

    with cf.ThreadPoolExecutor(4) as ex:
        where = list(ex.map(check, ids))
    assert set(where) == set(NODES[1:]), where  # spread over both other nodes
    assert h.wait_for(lambda: cc.state(a) == "NODE_STATE_DRAINED", timeout=15), cc.get(a)
    for sid in ids:
        sc.delete(sid)


def test_cancel_stops_a_drain(cluster, cc, sc):
    b = NODES[1]
    ids = sessions_on(cc, sc, b, 6)
    for sid in ids:
        sc.run(sid, "open('/mnt/data/keep.txt', 'w').write('kept')")
    r = ctl(cluster, "node", "drain", b, "--parallel", "1", "--no-wait")
    assert r.returncode != 2, (r.stdout, r.stderr)
    r = ctl(cluster, "node", "drain", b, "--cancel")
    assert r.returncode == 1 and "CANCELLED" in r.stdout, (r.stdout, r.stderr)
    # the move in flight finishes (or is undone); then nothing moves any more
    moving = cc.pb.DrainSessionState.Value("DRAIN_SESSION_STATE_MOVING")
    st = h.wait_for(lambda: (lambda d: d if all(x.state != moving for x in d.sessions) else None)(
        drain_status(cc, b)), timeout=120)
    assert st, drain_status(cc, b)
    assert cc.pb.DrainState.Name(st.state) == "DRAIN_STATE_CANCELLED", st
    assert st.moved < len(ids), st
    time.sleep(2)
    assert drain_status(cc, b).moved == st.moved
    assert cc.get(b).admin.cordoned
    for sid in ids:  # every session answers, wherever it is, files intact
        assert sc.run(sid, "print(open('/mnt/data/keep.txt').read())").strip() == "kept"
    r = ctl(cluster, "node", "drain", b, "--status")
    assert r.returncode == 1 and "CANCELLED" in r.stdout, r.stdout
    for sid in ids:
        sc.delete(sid)


def busy(sc, sid, started):
    """Keeps a session executing for a while (it cannot be moved)."""
    def go():
        try:
            started.release()
            sc.execute(sid, "import time; time.sleep(100)")
        except grpc.RpcError:
            pass  # deleted by a forced drain
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("force", [False, True])
def test_deadline_leaves_or_deletes_what_could_not_move(cluster, cc, sc, force):
    c = NODES[2]
    ids = sessions_on(cc, sc, c, 3)
    stuck = ids[:2]
    started = threading.Semaphore(0)
    threads = [busy(sc, sid, started) for sid in stuck]
    for _ in stuck:
        started.acquire()
    time.sleep(1.5)  # the executions are running
    # long enough for the idle session's move on a loaded machine, well
    # short of the busy ones' executions
    args = ["node", "drain", c, "--deadline", "25s", "--parallel", "2"] + (["--force"] if force else [])
    r = ctl(cluster, *args)
    assert r.returncode == 1, (r.stdout, r.stderr)
    st = drain_status(cc, c)
    assert cc.pb.DrainState.Name(st.state) == "DRAIN_STATE_INCOMPLETE", st
    by_id = {x.session_id: x for x in st.sessions}
    assert cc.pb.DrainSessionState.Name(by_id[ids[2]].state) == "DRAIN_SESSION_STATE_MOVED", st
    want = "DRAIN_SESSION_STATE_DELETED" if force else "DRAIN_SESSION_STATE_LEFT"
    for sid in stuck:
        assert cc.pb.DrainSessionState.Name(by_id[sid].state) == want, st
        assert sid in r.stdout  # reported
    if force:
        assert st.deleted == 2
        for sid in stuck:
            with pytest.raises(grpc.RpcError) as ei:
                sc.get(sid)
            assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    else:
        assert st.left == 2
        for sid in stuck:  # still on the node, and usable once interrupted
            assert sc.get(sid).node == c
            sc.interrupt(sid)
        for t in threads:
            t.join(60)
        for sid in stuck:
            assert sc.run(sid, "print(1 + 1)").strip() == "2"
    for sid in ids:
        try:
            sc.delete(sid)
        except grpc.RpcError:
            pass


def test_bad_drain_requests(cluster, cc):
    pb = cc.pb
    for req, code in ((pb.DrainNodeRequest(node="no-such-node"), grpc.StatusCode.NOT_FOUND),
                      (pb.DrainNodeRequest(node="Bad Name"), grpc.StatusCode.INVALID_ARGUMENT),
                      (pb.DrainNodeRequest(node=NODES[0], parallel=65), grpc.StatusCode.INVALID_ARGUMENT),
                      (pb.DrainNodeRequest(node=NODES[0], deadline_s=86401), grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as ei:
            cc.stub.DrainNode(req, timeout=30)
        assert ei.value.code() == code, (req, ei.value.details())
    with pytest.raises(grpc.RpcError) as ei:
        drain_status(cc, NODES[1])
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND and "no drain" in ei.value.details()
    r = ctl(cluster, "node", "drain", NODES[0], "--parallel", "0")
    assert r.returncode == 2 and "--parallel" in r.stderr
    r = ctl(cluster, "node", "drain", NODES[0], "--status", "--force")
    assert r.returncode == 2


def test_agent_sigterm_drains_itself_first(cluster, cc, sc, etcd):
    c = NODES[2]
    agent = cluster["agents"][c]
    ids = sessions_on(cc, sc, c, 2)
    for sid in ids:
        sc.run(sid, "open('/mnt/data/keep.txt', 'w').write('kept')")
    agent.stop(timeout=170)  # SIGTERM: returns once the agent exited
    assert agent.proc.returncode == 0
    logs = agent.logs()
    assert "drain on stop: every session moved away" in logs, logs[-3000:]
    st = drain_status(cc, c)
    assert cc.pb.DrainState.Name(st.state) == "DRAIN_STATE_DONE", st
    assert st.by == "kfleet-agent" and st.moved == 2, st
    for sid in ids:
        assert sc.get(sid).node != c
        notices, out = run_events(sc, sid, "print(open('/mnt/data/keep.txt').read())")
        assert out.strip() == "kept" and len(notices) == 1 and c in notices[0], (notices, out)
        sc.delete(sid)
    # the node stays cordoned until an operator says otherwise; bring it back
    assert cc.get(c).admin.cordoned
    agent.start()
    assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/" + c), timeout=30)
