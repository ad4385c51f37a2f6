"""Rebalance and warm pools against a real etcd, one real scheduler (short
leader lease, --pool-sizing, --rebalance with small thresholds) and real
agents: two nodes carry the load, a third joins. Its warm-pool target is
set at once from the cluster's create rate (etcd and the agent agree), new
sessions land on it, idle sessions move to it until the loads are within
the low threshold, no session moves twice, a moved session keeps its
files and shows the restart notice; when the new node becomes the busiest, the
sessions moved to it stay (the window); and once creates stop every pool
shrinks to nothing (--pool-min 0)."""
import collections
import os
import re
import time

import grpc

import kfleet_harness as h
from test_cluster_nodes import ClusterClient, closed_cleanly

TTL = 2
BASE_UID = 560000 + (os.getpid() % 1000) * 1000
SLOTS = 10  # 1 session = 10 % load (memory and cpu are ample)
PER_NODE = 6  # load: 60 % on each of the first two nodes
WINDOW = 30  # --pool-window: creates counted over this many seconds
MOVED = re.compile(r"session (\S+) moved from (\S+) to (\S+)")


def make_agent(etcd, name, i):
    port = h.free_port()
    a = h.Agent(pool=0, uid_base=BASE_UID + 100 * i, extra=[
        "--node-name", name, "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{port}",
        "--advertise", f"127.0.0.1:{port}", "--lease-ttl", f"{TTL}s", "--pool-max", "2",
        "--capacity-memory", "64G", "--capacity-cpu", "64", "--max-sessions", str(SLOTS)])
    a.name = name
    return a


def node_stats(agent):
    pb, grpc_mod = h.agent_stubs()
    with grpc.insecure_channel(f"unix:{agent.sock}") as ch:
        return grpc_mod.AgentStub(ch).GetNodeStats(pb.NodeStatsRequest(), timeout=10)


def counts(cc, names):
    by = {k: n.usage.sessions for k, n in cc.nodes().items()}
    return {n: by.get(n, 0) for n in names}


def moves(sched):
    return MOVED.findall(sched.logs())


def test_new_node_takes_pools_placements_and_idle_sessions(etcd):
    names = ("rb-a", "rb-b", "rb-c")
    agents = [make_agent(etcd, n, i) for i, n in enumerate(names)]
    sched = None
    sids = []
    for n in names:
        etcd.delete("/kfleet/pools/" + n)
    try:
        for a in agents[:2]:
            a.start()
        for a in agents[:2]:
            assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/" + a.name), timeout=15), a.logs()[-3000:]
        sched = h.Scheduler(etcd.url, extra=[
            "--leader-ttl", str(TTL), "--pool-sizing", "--pool-min", "0", "--pool-window", str(WINDOW),
            "--rebalance", "--rebalance-high", "30", "--rebalance-low", "15", "--rebalance-idle", "3",
            "--rebalance-max-moves", "1", "--rebalance-window", "600"]).start()
        assert h.wait_for(lambda: "is now the leader" in sched.logs(), timeout=15), sched.logs()[-3000:]
        sc = sched.client()
        cc = ClusterClient(f"unix:{sched.sock}")

        # load: 2 x PER_NODE sessions, spread evenly, each with a file
        for i in range(2 * PER_NODE):
            s = sc.create()
            sids.append(s.id)
            sc.run(s.id, f"open('/mnt/data/own.txt', 'w').write({s.id!r}); x = 1")
        assert h.wait_for(lambda: counts(cc, names[:2]) == {"rb-a": PER_NODE, "rb-b": PER_NODE}, timeout=10), counts(cc, names)
        assert moves(sched) == []  # balanced: nothing moves

        # a third node joins
        agents[2].start()
        ready = cc.pb.NodeState.Value("NODE_STATE_READY")
        assert h.wait_for(lambda: getattr(cc.nodes().get("rb-c"), "state", None) == ready, timeout=15), \
            agents[2].logs()[-3000:]

        # (b) new sessions go to it (spread placement), while idle ones start moving there too
        new = [sc.create() for _ in range(2)]
        sids += [s.id for s in new]
        assert [s.node for s in new] == ["rb-c", "rb-c"], [s.node for s in new]

        # (a) its warm pool is sized from the cluster's demand at once (--pool-min 0: only
        # the share of the create rate makes it > 0), in etcd and on the agent
        rec = h.wait_for(lambda: (etcd.get_json("/kfleet/pools/rb-c") or {}).get("target", 0) > 0, timeout=10)
        assert rec, (etcd.get_json("/kfleet/pools/rb-c"), sched.logs()[-3000:])
        assert h.wait_for(lambda: node_stats(agents[2]).pool_target > 0, timeout=15), \
            (node_stats(agents[2]), agents[2].logs()[-2000:])
        assert node_stats(agents[2]).pool_target <= 2  # --pool-max bounds it

        # (c) idle sessions move until the loads are within the low threshold (15 % = 1.5 sessions)
        def balanced():
            c = counts(cc, names)
            return "rebalance: balanced" in sched.logs() and max(c.values()) - min(c.values()) <= 1 and c
        final = h.wait_for(balanced, timeout=120)
        assert final, (counts(cc, names), sched.logs()[-5000:])
        assert sum(final.values()) == 2 * PER_NODE + 2, final

        # (d) hysteresis: nothing moves once balanced, and no session moved twice
        done = moves(sched)
        time.sleep(6)
        assert moves(sched) == done, moves(sched)
        assert len(done) >= 2, done  # 6, 6, 2 -> at least 5, 5, 4
        per_id = collections.Counter(sid for sid, _, _ in done)
        assert max(per_id.values()) == 1, per_id
        assert all(src in ("rb-a", "rb-b") and dst == "rb-c" for _, src, dst in done), done
        assert "moving idle sessions" in sched.logs()

        # the window holds: rb-c becomes the busiest node, and the sessions moved there are
        # the longest idle on it (the others are used now), yet none of them moves again
        for s in new:
            sc.run(s.id, f"open('/mnt/data/own.txt', 'w').write({s.id!r}); x = 2")
        for n in ("rb-a", "rb-b"):
            cc.cordon(n, "test: load rb-c")
        try:
            more = []
            for _ in range(5):
                more.append(sc.create())
                sids.append(more[-1].id)
                sc.run(more[-1].id, f"open('/mnt/data/own.txt', 'w').write({more[-1].id!r}); x = 3")
        finally:
            for n in ("rb-a", "rb-b"):
                cc.uncordon(n)
        assert all(s.node == "rb-c" for s in more), [s.node for s in more]

        def balanced_again():
            c = counts(cc, names)
            return sched.logs().count("rebalance: balanced") >= 2 and max(c.values()) - min(c.values()) <= 1 and c
        final = h.wait_for(balanced_again, timeout=120)
        assert final, (counts(cc, names), sched.logs()[-5000:])
        assert sum(final.values()) == 2 * PER_NODE + 7, final
        later = moves(sched)[len(done):]
        assert len(later) >= 2, later  # 5, 5, 9 -> at least 6, 6, 7
        assert all(src == "rb-c" and dst in ("rb-a", "rb-b") for _, src, dst in later), later
        assert not {sid for sid, _, _ in later} & set(per_id), (later, done)
        per_id = collections.Counter(sid for sid, _, _ in done + later)
        assert max(per_id.values()) == 1, per_id

        # (e) a moved session keeps its files; its next execution shows the notice once
        for sid, src, dst in done + later:
            assert sc.get(sid).node == dst
            r = sc.execute(sid, "print(open('/mnt/data/own.txt').read(), 'x' in globals())")
            assert r.status == "EXEC_STATUS_OK", (r.status, r.stderr)
            assert r.stdout.strip() == f"{sid} False", r.stdout
            notices = [e.notice for e in r.events if e.WhichOneof("event") == "notice"]
            assert len(notices) == 1 and "rebalancing load off node " + src in notices[0], notices

        # pools shrink when demand falls: no creates for a window -> every target 0, no warm sandbox left
        def drained_pools():
            st = [node_stats(a) for a in agents]
            return all(x.pool_target == 0 and x.pool_ready == 0 for x in st) and st
        assert h.wait_for(drained_pools, timeout=WINDOW + 30, step=1), [node_stats(a) for a in agents]
        assert all(etcd.get_json("/kfleet/pools/" + n)["target"] == 0 for n in names)
        for sid in sids:
            sc.delete(sid)
        sids = []
        closed_cleanly(sched)
        sched = None
    finally:
        if sched:
            print(sched.logs()[-8000:])
            sched.close()
        for a in agents:
            a.close()
