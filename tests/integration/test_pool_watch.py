"""The agent follows its pool and admin records through etcd watches: a new
pool target reaches the pool at once (bounded by --pool-max), a malformed
record is logged and the current target kept, a deleted one means --pool
again; a cordon written to the admin record shows in GetNodeStats at once.
Changes keep arriving after etcd restarts, and after a wipe (the agent
registers again and reads both records afresh). It stops cleanly with both
watches running. Real etcd, one agent, loopback only.

Each change is written right after the previous one was seen, and must be
seen within CHANGE_S: an agent that re-read its records every 5 s (as it
once did) would miss the second change's deadline."""
import json
import os
import time

import grpc
import pytest

import kfleet_harness as h

NODE = "pw-node"
NODE_KEY = "/kfleet/nodes/" + NODE
POOL_KEY = "/kfleet/pools/" + NODE
ADMIN_KEY = "/kfleet/admin/" + NODE
TTL = 2
POOL = 0      # --pool: the target without a record
POOL_MAX = 2  # --pool-max
CHANGE_S = 3  # a change must reach the agent within this
BASE_UID = 610000 + (os.getpid() % 1000) * 1000


@pytest.fixture(scope="module")
def node(etcd):
    etcd.delete(POOL_KEY)
    etcd.delete(ADMIN_KEY)
    a = h.Agent(pool=POOL, uid_base=BASE_UID, extra=[
        "--node-name", NODE, "--etcd", etcd.url, "--lease-ttl", f"{TTL}s",
        "--listen-tcp", f"127.0.0.1:{h.free_port()}",
        "--pool-max", str(POOL_MAX)])
    a.start()
    assert etcd.wait_for(lambda: etcd.get(NODE_KEY), timeout=15), a.logs()[-3000:]
    yield a
    a.close()
    etcd.delete(POOL_KEY)
    etcd.delete(ADMIN_KEY)


def stats(agent):
    pb, grpc_mod = h.agent_stubs()
    with grpc.insecure_channel(f"unix:{agent.sock}") as ch:
        return grpc_mod.AgentStub(ch).GetNodeStats(pb.NodeStatsRequest(), timeout=10)


def put_target(etcd, n):
    etcd.put(POOL_KEY, json.dumps({"target": n, "updated_unix_ms": int(time.time() * 1000)}))


def target_becomes(agent, want, timeout=CHANGE_S):
    return h.wait_for(lambda: stats(agent).pool_target == want, timeout=timeout, step=0.05)


def test_pool_record_changes_apply_at_once(node, etcd):
    assert target_becomes(node, POOL, timeout=10), node.logs()[-3000:]
    put_target(etcd, 2)
    assert target_becomes(node, 2), node.logs()[-3000:]
    put_target(etcd, 1)
    assert target_becomes(node, 1), node.logs()[-3000:]
    put_target(etcd, 50)
    assert target_becomes(node, POOL_MAX), "--pool-max must bound the target"
    # malformed: logged, the current target kept
    warned = node.logs().count("is not a valid pool record")
    etcd.put(POOL_KEY, "not json")
    assert h.wait_for(lambda: node.logs().count("is not a valid pool record") > warned, timeout=CHANGE_S), \
        node.logs()[-3000:]
    assert stats(node).pool_target == POOL_MAX
    etcd.put(POOL_KEY, json.dumps({"target": -1}))
    assert h.wait_for(lambda: node.logs().count("is not a valid pool record") > warned + 1, timeout=CHANGE_S)
    assert stats(node).pool_target == POOL_MAX
    # deleted: back to --pool
    etcd.delete(POOL_KEY)
    assert target_becomes(node, POOL), node.logs()[-3000:]
    # and the usage record follows (published at most once a second)
    assert etcd.wait_for(lambda: (etcd.get_json("/kfleet/usage/" + NODE) or {}).get("pool_target") == POOL,
                         timeout=5)
    assert node.alive()


def test_admin_record_changes_apply_at_once(node, etcd):
    assert h.wait_for(lambda: not stats(node).cordoned, timeout=10)
    try:
        etcd.put(ADMIN_KEY, json.dumps({"cordoned": True, "reason": "disk swap", "by": "ops", "at": 1}))
        st = h.wait_for(lambda: (lambda s: s if s.cordoned else None)(stats(node)), timeout=CHANGE_S)
        assert st and st.cordon_reason == "disk swap" and st.cordoned_by == "ops"
        etcd.put(ADMIN_KEY, json.dumps({"cordoned": True, "reason": "disk swap 2", "by": "ops", "at": 2}))
        assert h.wait_for(lambda: stats(node).cordon_reason == "disk swap 2", timeout=CHANGE_S)
        etcd.put(ADMIN_KEY, "[1, 2")
        assert h.wait_for(lambda: "is not a valid admin record" in node.logs(), timeout=CHANGE_S)
        assert stats(node).cordoned, "a malformed admin record must not change what the agent reports"
    finally:
        etcd.delete(ADMIN_KEY)
    assert h.wait_for(lambda: not stats(node).cordoned, timeout=CHANGE_S)


@pytest.mark.parametrize("wipe", [False, True], ids=["restart", "wiped"])
def test_changes_arrive_after_etcd_restarts(node, etcd, wipe):
    put_target(etcd, 1)
    assert target_becomes(node, 1), node.logs()[-3000:]
    registrations = node.logs().count("registered (lease")
    etcd.restart(wipe=wipe)
    if wipe:
        # the record went with the data: registering again reads it afresh
        assert etcd.wait_for(lambda: node.logs().count("registered (lease") > registrations, timeout=15), \
            node.logs()[-3000:]
        assert target_becomes(node, POOL, timeout=10), node.logs()[-3000:]
    else:
        assert stats(node).pool_target == 1, "etcd restarting must not change the target"
    # the watch reconnects by itself (backoff up to 3 s)
    put_target(etcd, 2)
    assert target_becomes(node, 2, timeout=10), node.logs()[-3000:]
    etcd.delete(POOL_KEY)
    assert target_becomes(node, POOL), node.logs()[-3000:]
    assert node.alive()


def test_stops_cleanly(node, etcd):
    """SIGTERM with both watches running: exit 0, the node record gone, and
    no sanitizer report (a watch thread left running would leak)."""
    node.stop()
    logs = node.logs()
    assert node.proc.returncode == 0, logs[-5000:]
    assert "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
    assert etcd.get(NODE_KEY) is None
