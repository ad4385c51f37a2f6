"""Multi-host behaviour: three agents, each in its own network namespace
("host") joined by veth pairs to a bridge, etcd and the scheduler in the
root namespace, all talking over a private /24 that exists only inside the
namespaces the test made. Placement spreads over the hosts and every call
routes to the session's host; an agent killed with -9 and restarted on its
host serves its sessions again; a host whose link is cut drops out of etcd
after the lease TTL and comes back when the link does; an etcd restart is
survived by agents and scheduler alike."""
import os
import time

import grpc
import pytest

import kfleet_harness as h
from kfleet_harness import delete_all, eventually

TTL = 2
MiB = 1 << 20
N = 3
BASE_UID = 300000 + (os.getpid() % 1000) * 1000
NODES = tuple(f"mh-{i}" for i in range(N))


@pytest.fixture(scope="module")
def hosts(netns_hosts):
    assert netns_hosts.n == N
    return netns_hosts


@pytest.fixture(scope="module")
def etcd(netns_etcd):
    return netns_etcd


def node_up(etcd, name):
    return etcd.get("/kfleet/nodes/" + name)


@pytest.fixture(scope="module")
def cluster(hosts, etcd):
    agents = [h.NetnsAgent(hosts, i, NODES[i], etcd.url, pool=0, uid_base=BASE_UID + 100 + 300 * i,
                           extra=["--lease-ttl", f"{TTL}s", "--capacity-memory", "16G",
                                  "--capacity-cpu", "8", "--max-sessions", "50"])
              for i in range(N)]
    sched = None
    try:
        for a in agents:
            a.start()
        for a in agents:
            assert etcd.wait_for(lambda: node_up(etcd, a.name), timeout=15), a.logs()[-3000:]
            rec = etcd.get_json("/kfleet/nodes/" + a.name)
            assert rec["address"] == a.tcp, rec
        # a long --node-grace: this file tests a node back within the grace
        # (its sessions survive); test_failover.py tests nodes declared lost
        sched = h.Scheduler(etcd.url, extra=["--node-grace", "600"])
        sched.start()
        yield {"agents": agents, "sched": sched, "hosts": hosts}
        rc, logs = sched.close()
        sched = None
        assert rc == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
    finally:
        if sched:
            sched.close()
        for a in agents:
            a.close()


@pytest.fixture
def sc(cluster):
    return cluster["sched"].client()


def create(client, **kw):
    kw.setdefault("memory_bytes", 256 * MiB)
    return client.create(**kw)


def usage(etcd):
    return {n: (etcd.get_json("/kfleet/usage/" + n) or {}).get("sessions") for n in NODES}


def settle(etcd, timeout=10):
    """Waits until every node's usage record says it has no sessions (the
    agents publish at most once a second) and the scheduler's watch has had
    a moment to deliver, so the next picks start from the truth."""
    etcd.wait_for(lambda: set(usage(etcd).values()) == {0}, timeout=timeout)
    # An agent checks its counters once a second, so a record for a session
    # that was alive at its last check can still arrive: let that second
    # pass, then wait for zero again.
    time.sleep(2.5)
    etcd.wait_for(lambda: set(usage(etcd).values()) == {0}, timeout=timeout)
    time.sleep(0.5)
    return usage(etcd)


def test_sessions_spread_over_hosts_and_route(cluster, sc, etcd):
    sessions = [create(sc) for _ in range(2 * N)]
    try:
        per = {n: sum(1 for s in sessions if s.node == n) for n in NODES}
        assert per == {n: 2 for n in NODES}, per
        for i, s in enumerate(sessions):
            assert etcd.get_json("/kfleet/sessions/" + s.id)["node"] == s.node
            sc.run(s.id, f"x = {i + 10}")
        for i, s in enumerate(sessions):
            assert sc.run(s.id, "print(x)").strip() == str(i + 10)
            g = sc.get(s.id)
            assert g.node == s.node and g.execution_count == 2, g
        # files go to the session's host too (and the kernel there sees them)
        for s in sessions[:N]:
            data = os.urandom(MiB + len(s.node))
            assert sc.upload(s.id, "blob.bin", data, chunk=256 * 1024).size == len(data)
            assert sc.download(s.id, "blob.bin") == data
            assert sc.run(s.id, "print(len(open('/mnt/data/blob.bin','rb').read()))").strip() == str(len(data))
        # each session really lives on the agent of its node
        by_name = {a.name: a for a in cluster["agents"]}
        for s in sessions:
            assert by_name[s.node].client().get(s.id).id == s.id
        listed = {x.id: x.node for x in sc.list()}
        for s in sessions:
            assert listed.get(s.id) == s.node
    finally:
        delete_all(sc, sessions)


def test_agent_kill9_and_restart_on_its_host(cluster, sc, etcd):
    settle(etcd)
    sessions = [create(sc) for _ in range(N)]
    try:
        victim = cluster["agents"][NODES.index(sessions[0].node)]
        mine = [s for s in sessions if s.node == victim.name]
        for i, s in enumerate(mine):
            sc.run(s.id, f"y = 'kept-{i}'")
        old_lease = node_up(etcd, victim.name)["lease"]
        victim.kill9()
        victim.start()
        rec = etcd.wait_for(lambda: (node_up(etcd, victim.name) or {}).get("lease") not in (None, old_lease),
                            timeout=15)
        assert rec, victim.logs()[-3000:]
        for i, s in enumerate(mine):
            out = eventually(lambda: sc.run(s.id, "print(y)"), timeout=30)
            assert out.strip() == f"kept-{i}"
            assert sc.get(s.id).node == victim.name
        # the other hosts were not disturbed
        for s in sessions:
            if s.node != victim.name:
                sc.run(s.id, "1")
    finally:
        delete_all(sc, sessions)


def test_cut_link_drops_host_and_it_comes_back(cluster, sc, etcd):
    hosts = cluster["hosts"]
    settle(etcd)
    before = [create(sc) for _ in range(N)]
    made = []
    try:
        # cut the host of the last session (placement itself is tested elsewhere)
        cut = NODES.index(before[-1].node)
        name = NODES[cut]
        agent = cluster["agents"][cut]
        stranded = [s for s in before if s.node == name]
        for s in stranded:
            sc.run(s.id, "v = 'across the cut'")
        hosts.set_link(cut, False)
        try:
            assert not hosts.reachable(cut)
            t0 = time.time()
            assert etcd.wait_for(lambda: node_up(etcd, name) is None, timeout=TTL * 4 + 2), \
                f"{name} still registered {time.time() - t0:.1f}s after its link was cut"
            print(f"\n{name}: record gone {time.time() - t0:.2f}s after the cut")
            time.sleep(0.3)  # the scheduler's watch
            made = [create(sc) for _ in range(4)]
            assert name not in {s.node for s in made}, [s.node for s in made]
            for s in made:
                sc.run(s.id, "z = 1")
            for s in stranded:
                with pytest.raises(grpc.RpcError) as ei:
                    sc.get(s.id)
                assert ei.value.code() == grpc.StatusCode.UNAVAILABLE and name in ei.value.details(), \
                    (ei.value.code(), ei.value.details())
        finally:
            hosts.set_link(cut, True)
        t0 = time.time()
        assert etcd.wait_for(lambda: node_up(etcd, name), timeout=20), \
            "not re-registered after the link came back:\n" + agent.logs()[-3000:]
        rejoin_s = time.time() - t0
        print(f"{name}: registered again {rejoin_s:.2f}s after the link came back")
        time.sleep(0.3)
        # the sessions on the host that was cut off answer again, state intact
        for s in stranded:
            out = eventually(lambda: sc.run(s.id, "print(v)"), timeout=15)
            assert out.strip() == "across the cut"
        # the others carry the 4 sessions made meanwhile, so the next land on the host that came back
        again = [create(sc) for _ in range(2)]
        made += again
        assert name in {s.node for s in again}, ([s.node for s in again], rejoin_s, usage(etcd))
        for s in again:
            assert sc.run(s.id, "print(6 * 7)").strip() == "42"
    finally:
        delete_all(sc, made + before)


def test_etcd_restart(cluster, sc, etcd):
    settle(etcd)
    old = [create(sc) for _ in range(N)]
    try:
        for s in old:
            sc.run(s.id, "w = 'pre-restart'")
        leases = {n: node_up(etcd, n)["lease"] for n in NODES}
        # down for longer than the lease TTL, so every agent's keeper sees its lease lapse
        etcd.restart(down_s=TTL + 1)
        for n in NODES:
            assert etcd.wait_for(lambda: node_up(etcd, n), timeout=20), n
        # and they stay registered (no old lease expiring under a new record)
        time.sleep(TTL * 1.5)
        for n in NODES:
            assert node_up(etcd, n), (n, leases)
        # a create + execute works again (the scheduler's view and table reconnected)
        fresh = eventually(lambda: create(sc), timeout=30)
        old.append(fresh)
        assert sc.run(fresh.id, "print(1 + 1)").strip() == "2"
        assert sc.get(fresh.id).node in NODES
        for s in old[:N]:
            assert eventually(lambda: sc.run(s.id, "print(w)"), timeout=15).strip() == "pre-restart"
        # more creates keep working and land on registered hosts
        more = [create(sc) for _ in range(N)]
        old += more
        for s in more:
            assert s.node in NODES and sc.run(s.id, "print('ok')").strip() == "ok", (s.node, leases)
    finally:
        delete_all(sc, old)


def test_short_lived_sessions_do_not_skew_spread(cluster, sc, etcd):
    """A session created and deleted within the agents' one-second usage
    period never shows in a usage record, so the pick's reservation in the
    scheduler's view must not outlive it: afterwards an idle cluster still
    takes one session per host."""
    import json
    x = NODES[0]
    settle(etcd)
    cordons = ["/kfleet/admin/" + n for n in NODES if n != x]
    for key in cordons:
        etcd.put(key, json.dumps({"cordoned": True, "reason": "test", "by": "pytest", "at": 1}))
    try:
        time.sleep(0.5)
        for _ in range(3):  # each lives well under a second
            s = create(sc)
            sc.delete(s.id)
            assert s.node == x
    finally:
        for key in cordons:
            etcd.delete(key)
    seen = settle(etcd)
    made = [create(sc) for _ in range(N)]
    try:
        assert sorted(s.node for s in made) == list(NODES), ([s.node for s in made], seen)
    finally:
        delete_all(sc, made)
