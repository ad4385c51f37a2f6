"""Scheduler replicas, leader failover, node loss and reconciliation, with a
real etcd, TWO kfleet-scheduler replicas and THREE agents, each agent in its
own network namespace (see test_multihost.py for the topology).

Short TTLs everywhere (agent lease, leader lease, node grace, reconcile
interval), so a node that is cut off is declared lost within seconds."""
import os
import signal
import threading
import time

import grpc
import pytest

import kfleet_harness as h
from kfleet_harness import delete_all, eventually

TTL = 2          # agents' lease
LEADER_TTL = 2   # the schedulers' leader lease
# --node-grace: longer than a loaded machine needs to restart an agent
# (re-adoption comes before registration, and a kill -9'd agent's record
# lapses after TTL), so the kill -9 + restart case stays within the grace
GRACE = 8
MiB = 1 << 20
N = 3
BASE_UID = 330000 + (os.getpid() % 1000) * 1000
NODES = tuple(f"fo-{i}" for i in range(N))
IDS = ("sched-a", "sched-b")
LEADER_KEY = "/kfleet/scheduler/leader"


@pytest.fixture(scope="module")
def etcd(netns_etcd):
    return netns_etcd


def node_up(etcd, name):
    return etcd.get("/kfleet/nodes/" + name)


def leader(etcd):
    kv = etcd.get(LEADER_KEY)
    return kv["value"] if kv else None


def record(etcd, sid):
    return etcd.get_json("/kfleet/sessions/" + sid)


def make_sched(etcd, ident):
    return h.Scheduler(etcd.url, extra=["--id", ident, "--leader-ttl", str(LEADER_TTL),
                                        "--node-grace", str(GRACE), "--reconcile-interval", "2"])


@pytest.fixture(scope="module")
def cluster(netns_hosts, etcd):
    hosts = netns_hosts
    agents = [h.NetnsAgent(hosts, i, NODES[i], etcd.url, pool=1, uid_base=BASE_UID + 100 + 300 * i,
                           extra=["--lease-ttl", f"{TTL}s", "--capacity-memory", "16G",
                                  "--capacity-cpu", "8", "--max-sessions", "50"])
              for i in range(N)]
    scheds = {}
    try:
        for a in agents:
            a.start()
        for a in agents:
            assert etcd.wait_for(lambda: node_up(etcd, a.name), timeout=15), a.logs()[-3000:]
        for ident in IDS:
            scheds[ident] = make_sched(etcd, ident).start()
        assert etcd.wait_for(lambda: leader(etcd), timeout=15), "nobody became leader"
        yield {"agents": agents, "scheds": scheds, "hosts": hosts}
        for ident, s in list(scheds.items()):
            rc, logs = s.close()
            del scheds[ident]
            assert rc == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
    finally:
        for s in scheds.values():
            s.close()
        for a in agents:
            a.close()


def clients(cluster):
    return [cluster["scheds"][i].client() for i in IDS]


def create(client, **kw):
    kw.setdefault("memory_bytes", 256 * MiB)
    return client.create(**kw)


def rpc_error(fn):
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value


def test_exactly_one_leader(cluster, etcd):
    scheds = cluster["scheds"]
    first = leader(etcd)
    assert first in IDS
    other = IDS[1 - IDS.index(first)]
    # stable: nobody takes over while the leader lives
    time.sleep(LEADER_TTL * 1.5)
    assert leader(etcd) == first
    assert "is now the leader" in scheds[first].logs()
    assert "is now the leader" not in scheds[other].logs(), scheds[other].logs()[-3000:]
    assert f"following {first}" in scheds[other].logs()


def test_both_replicas_serve_any_session(cluster):
    a, b = clients(cluster)
    made = [create(a), create(b)]
    try:
        for i, s in enumerate(made):
            # created through one replica, used through the other and back
            other, same = (b, a) if i == 0 else (a, b)
            other.run(s.id, f"x = {i + 40}")
            assert same.run(s.id, "print(x)").strip() == str(i + 40)
            data = os.urandom(300 * 1024)
            assert other.upload(s.id, "f.bin", data).size == len(data)
            assert same.download(s.id, "f.bin") == data
            assert [f.path for f in same.list_files(s.id)] == ["f.bin"]
            assert other.get(s.id).node == s.node == same.get(s.id).node
        for c in (a, b):
            ids = {x.id for x in c.list()}
            assert {s.id for s in made} <= ids
    finally:
        delete_all(b, made)
    for s in made:
        assert rpc_error(lambda: a.get(s.id)).code() == grpc.StatusCode.NOT_FOUND


def test_agent_kill9_and_restart_keeps_sessions(cluster, etcd):
    a, b = clients(cluster)
    sessions = [create(a) for _ in range(N)]
    try:
        victim = cluster["agents"][NODES.index(sessions[0].node)]
        mine = [s for s in sessions if s.node == victim.name]
        for i, s in enumerate(mine):
            a.run(s.id, f"y = 'kept-{i}'")
        old_lease = node_up(etcd, victim.name)["lease"]
        t0 = time.time()
        victim.kill9()
        victim.start()
        assert etcd.wait_for(lambda: (node_up(etcd, victim.name) or {}).get("lease") not in (None, old_lease),
                             timeout=30), victim.logs()[-3000:]
        back_s = time.time() - t0
        print(f"\n{victim.name}: registered again {back_s:.2f}s after kill -9 (lease TTL {TTL}s, grace {GRACE}s)")
        # back within TTL + grace: nothing was marked LOST (give the leader a few ticks)
        time.sleep(2)
        for i, s in enumerate(mine):
            assert eventually(lambda: b.run(s.id, "print(y)"), timeout=30).strip() == f"kept-{i}"
            assert record(etcd, s.id).get("state") != "LOST", (back_s, record(etcd, s.id))
            assert a.get(s.id).state != a.pb.SESSION_STATE_LOST
    finally:
        delete_all(a, sessions)


def test_cut_link_sessions_lost_and_not_resurrected(cluster, etcd):
    hosts = cluster["hosts"]
    a, b = clients(cluster)
    before = [create(a) for _ in range(N)]
    made = []
    cut = NODES.index(before[-1].node)
    name = NODES[cut]
    agent = cluster["agents"][cut]
    stranded = [s for s in before if s.node == name]
    try:
        for s in stranded:
            a.run(s.id, "v = 1")
        hosts.set_link(cut, False)
        try:
            t0 = time.time()
            assert etcd.wait_for(lambda: node_up(etcd, name) is None, timeout=TTL * 4 + 2)
            gone_s = time.time() - t0
            assert etcd.wait_for(lambda: all((record(etcd, s.id) or {}).get("state") == "LOST"
                                             for s in stranded), timeout=GRACE + 10), \
                [record(etcd, s.id) for s in stranded]
            print(f"\n{name}: record gone {gone_s:.2f}s after the cut, sessions LOST "
                  f"{time.time() - t0:.2f}s after it (lease TTL {TTL}s, grace {GRACE}s)")
            rec = record(etcd, stranded[0].id)
            assert rec["node"] == name and rec["lost_unix_ms"] > 0 and name in rec["reason"], rec
            time.sleep(0.3)  # every replica's session watch
            for c in (a, b):
                for s in stranded:
                    g = c.get(s.id)
                    assert g.state == c.pb.SESSION_STATE_LOST and g.node == name, g
                    assert "lost" in g.expiry_reason and name in g.expiry_reason, g.expiry_reason
                    e = rpc_error(lambda: c.execute(s.id, "print(v)"))
                    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, (e.code(), e.details())
                    assert "lost" in e.details() and name in e.details(), e.details()
                    listed = {x.id: x for x in c.list()}
                    assert listed[s.id].state == c.pb.SESSION_STATE_LOST
            # new sessions go elsewhere
            made = [create(b) for _ in range(3)]
            assert name not in {s.node for s in made}, [s.node for s in made]
            for s in made:
                a.run(s.id, "z = 1")
        finally:
            hosts.set_link(cut, True)
        t0 = time.time()
        assert etcd.wait_for(lambda: node_up(etcd, name), timeout=20), agent.logs()[-3000:]
        # the leader's reconcile deletes the LOST sessions on the agent that came back
        local = agent.client()

        def gone_on_agent():
            for s in stranded:
                try:
                    local.get(s.id)
                    return False
                except grpc.RpcError as e:
                    if e.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                        return False
            return True
        assert h.wait_for(gone_on_agent, timeout=20), agent.logs()[-3000:]
        print(f"{name}: back, its LOST sessions deleted on the agent {time.time() - t0:.2f}s after the link came back")
        # still LOST through the scheduler: not resurrected
        time.sleep(1)
        for c in (a, b):
            for s in stranded:
                assert c.get(s.id).state == c.pb.SESSION_STATE_LOST
                assert rpc_error(lambda: c.execute(s.id, "1")).code() == grpc.StatusCode.FAILED_PRECONDITION
        # deleting a LOST session removes its record
        for s in stranded:
            b.delete(s.id)
            assert record(etcd, s.id) is None
            assert rpc_error(lambda: a.get(s.id)).code() == grpc.StatusCode.NOT_FOUND
        # creates work again
        made.append(eventually(lambda: create(a), timeout=20))
        assert made[-1].node in NODES
    finally:
        delete_all(a, made + before)


def test_expired_session_record_is_removed(cluster, etcd):
    a, _ = clients(cluster)
    s = create(a, idle_timeout_s=1)
    assert record(etcd, s.id)
    # the agent expires it after 1 s idle; the leader's reconcile (every 2 s) removes the record
    assert etcd.wait_for(lambda: record(etcd, s.id) is None, timeout=30), record(etcd, s.id)
    assert rpc_error(lambda: a.get(s.id)).code() == grpc.StatusCode.NOT_FOUND


def test_kill9_leader_failover_and_creates_not_doubled(cluster, etcd):
    scheds = cluster["scheds"]
    old = leader(etcd)
    new = IDS[1 - IDS.index(old)]
    got, errors = [], []
    stop = threading.Event()

    def creator(c):
        while not stop.is_set():
            try:
                got.append(create(c, timeout=60).id)
            except grpc.RpcError as e:
                errors.append(e.code())
                time.sleep(0.1)

    def held_now():
        return {x.id for ag in cluster["agents"] for x in ag.client().list()}
    before = held_now()  # what earlier tests left (nothing, normally) is not counted
    threads = [threading.Thread(target=creator, args=(scheds[i].client(),)) for i in IDS]
    for t in threads:
        t.start()
    try:
        h.wait_for(lambda: len(got) >= 2, timeout=60)
        t0 = time.time()
        scheds[old].proc.send_signal(signal.SIGKILL)
        scheds[old].proc.wait()
        assert etcd.wait_for(lambda: leader(etcd) == new, timeout=LEADER_TTL * 5), leader(etcd)
        took = time.time() - t0
        print(f"\nfailover: {new} leader {took:.2f}s after the leader was killed (lease TTL {LEADER_TTL}s)")
        n_at_kill = len(got)
        h.wait_for(lambda: len(got) >= n_at_kill + 2, timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert "is now the leader" in scheds[new].logs()
    ids = list(got)
    assert len(ids) == len(set(ids)), ids
    held = {}
    for ag in cluster["agents"]:
        for x in ag.client().list():
            if x.id not in before:
                held.setdefault(x.id, []).append(ag.name)
    records = {}
    for sid in set(held) | set(ids):
        r = record(etcd, sid)
        if r:
            records[sid] = r
    try:
        for sid in ids:
            # every create that returned an id: one record, one agent, the same node
            assert sid in records, sid
            assert len(held.get(sid, [])) == 1, (sid, held.get(sid))
            assert records[sid]["node"] == held[sid][0]
        # no session on an agent without its record (nothing orphaned or doubled)
        assert set(held) <= set(records), set(held) - set(records)
        # at most one per replica was in flight when the leader died: its
        # record and session may exist although the client never heard back
        assert len(records) <= len(ids) + 1, sorted(set(records) - set(ids))
        print(f"creates: {len(ids)} returned an id, {len(records)} records, "
              f"errors during the failover: {len(errors)}")
    finally:
        sc = scheds[new].client()
        for sid in records:
            try:
                sc.delete(sid)
            except grpc.RpcError:
                pass
        # the killed replica comes back (same id) as a follower
        scheds[old].start()
    time.sleep(1)
    assert leader(etcd) == new
    assert scheds[old].client().list() is not None


def test_etcd_restart(cluster, etcd):
    a, b = clients(cluster)
    old = [create(a)]
    try:
        a.run(old[0].id, "w = 'pre-restart'")
        etcd.restart(down_s=TTL + 1)
        for n in NODES:
            assert etcd.wait_for(lambda: node_up(etcd, n), timeout=20), n
        assert etcd.wait_for(lambda: leader(etcd) in IDS, timeout=LEADER_TTL * 6 + 5), leader(etcd)
        for c in (a, b):
            fresh = eventually(lambda: create(c), timeout=30)
            old.append(fresh)
            assert c.run(fresh.id, "print(1 + 1)").strip() == "2"
        assert eventually(lambda: b.run(old[0].id, "print(w)"), timeout=15).strip() == "pre-restart"
        # the old session was not declared lost across the restart
        assert record(etcd, old[0].id).get("state") != "LOST"
        time.sleep(LEADER_TTL)
        assert leader(etcd) in IDS
        logs = [cluster["scheds"][i].logs() for i in IDS]
        assert sum(lg.count("is now the leader") for lg in logs) >= 1
    finally:
        delete_all(a, old)
