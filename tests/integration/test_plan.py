"""`kfleetctl plan`: the what-ifs against a live cluster (a real etcd, a real
scheduler, three real agents on loopback, real sessions placed through the
scheduler): can a node be drained now, what if we lose a zone or the
busiest node, how many more sessions of a shape fit, with a cordoned node
not counted as free capacity; expected answers are worked out from the
nodes' reported usage. And `plan simulate`: the simulated rejection rate of
Poisson arrivals on fixed slots against Erlang B computed here, the SVG
chart converted to PNG by rsvg-convert, and bad input named by field."""
import json
import os
import shutil
import subprocess

import pytest

import kfleet_harness as h

GiB = 1 << 30
BASE_UID = 400000 + (os.getpid() % 1000) * 1000
# Two nodes in zone za, one in zb; 2 GiB and 4 slots each.
NODES = (("pl-a", "za"), ("pl-b", "za"), ("pl-c", "zb"))


def make_agent(etcd, name, zone, i):
    port = h.free_port()
    a = h.Agent(pool=0, uid_base=BASE_UID + 300 * i, extra=[
        "--node-name", name, "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{port}",
        "--advertise", f"127.0.0.1:{port}", "--lease-ttl", "2s", "--label", f"zone={zone}",
        "--capacity-memory", "2G", "--capacity-cpu", "4", "--max-sessions", "4"])
    a.name = name
    return a


@pytest.fixture(scope="module")
def cluster(etcd):
    agents = [make_agent(etcd, n, z, i) for i, (n, z) in enumerate(NODES)]
    sched = None
    sids = []
    try:
        for a in agents:
            a.start()
        for a in agents:
            assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/" + a.name), timeout=15), a.logs()[-3000:]
        sched = h.Scheduler(etcd.url).start()
        c = sched.client()
        # Four sessions of 1 GiB: spread puts one on each node, then a second
        # on one of them.
        for _ in range(4):
            sids.append(c.create(memory_bytes=GiB, cpu_millis=500).id)
        srv = f"unix:{sched.sock}"
        assert h.wait_for(lambda: sum(n["sessions"] for n in usage(srv).values()) == 4, timeout=20)
        yield {"srv": srv, "agent": agents[0], "etcd": etcd}
        for sid in sids:
            c.delete(sid)
        rc, logs = sched.close()
        sched = None
        assert rc == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
    finally:
        if sched:
            sched.close()
        for a in agents:
            a.close()


@pytest.fixture(autouse=True)
def uncordoned(cluster):
    for n, _ in NODES:
        cluster["etcd"].delete("/kfleet/admin/" + n)
    yield
    for n, _ in NODES:
        cluster["etcd"].delete("/kfleet/admin/" + n)


def ctl(*args, check=None):
    p = subprocess.run([h.binary("kfleetctl")] + list(args), capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, USER="root"))
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p.returncode, p.stdout, p.stderr


def usage(srv):
    """{node: {sessions, memory, state, zone}} as the scheduler reports it."""
    rc, out, err = ctl("--server", srv, "-o", "json", "node", "list", check=0)
    nodes = {}
    for n in json.loads(out)["nodes"]:
        u = n.get("usage") or {}
        nodes[n["id"]] = {"sessions": int(u.get("sessions", 0)), "memory": int(u.get("memory_reserved_bytes", 0)),
                          "state": n["state"], "zone": n["labels"].get("zone")}
    return nodes


def plan(srv, *args, check=0):
    rc, out, err = ctl("--server", srv, "-o", "json", "plan", *args, "--from-cluster", check=check)
    return json.loads(out) if rc == 0 else (rc, err)


def free_gib(nodes, names):
    return sum((2 * GiB - nodes[n]["memory"]) // GiB for n in names)


def busiest(nodes):
    return max(nodes, key=lambda n: (nodes[n]["sessions"], nodes[n]["memory"]))


def test_drain_fits_then_not_with_a_cordon(cluster):
    srv = cluster["srv"]
    nodes = usage(srv)
    x = busiest(nodes)
    others = [n for n in nodes if n != x]
    assert nodes[x]["sessions"] == 2
    # The other two have 1 GiB free each: both of x's 1 GiB sessions fit.
    a = plan(srv, "drain", x)
    assert a["question"] == "drain" and a["nodes"] == [x]
    assert (a["sessions"], a["placed"], a["unplaced"], a["fits"]) == (2, 2, 0, True)
    assert a["free_after"]["memory_bytes"] == 0
    assert a["free_after"]["session_slots"] == 8 - 4

    # Cordon one of them: it no longer counts as free capacity.
    ctl("--server", srv, "node", "cordon", others[0], "--reason", "plan test", check=0)
    assert h.wait_for(lambda: usage(srv)[others[0]]["state"].endswith("CORDONED"), timeout=10)
    a = plan(srv, "drain", x)
    assert (a["placed"], a["unplaced"], a["fits"]) == (1, 1, False)
    assert "cordoned" in a["why"], a["why"]
    rc, out, err = ctl("--server", srv, "plan", "drain", x)
    assert rc == 0 and "no: " in out and "1 placed elsewhere, 1 not" in out, out


def test_lose_a_zone_and_the_busiest_node(cluster):
    srv = cluster["srv"]
    nodes = usage(srv)
    for zone in ("za", "zb"):
        lost = sorted(n for n in nodes if nodes[n]["zone"] == zone)
        rest = [n for n in nodes if n not in lost]
        sessions = sum(nodes[n]["sessions"] for n in lost)
        fit = min(sessions, free_gib(nodes, rest))  # every session is 1 GiB
        a = plan(srv, "lose", "--zone", zone)
        assert sorted(a["nodes"]) == lost
        assert (a["sessions"], a["placed"], a["unplaced"]) == (sessions, fit, sessions - fit), (zone, nodes, a)
        assert a["fits"] == (fit == sessions)
    a = plan(srv, "lose", "--count", "1")
    assert a["nodes"] == [busiest(nodes)] and a["sessions"] == 2
    rc, err = plan(srv, "lose", "--zone", "nowhere", check=2)
    assert "no node has the label zone=nowhere" in err
    rc, err = plan(srv, "drain", "no-such-node", check=2)
    assert "no node 'no-such-node'" in err
    rc, err = plan(srv, "lose", check=2)
    assert "exactly one" in err


def test_fit_counts_free_capacity_but_not_cordoned_nodes(cluster):
    srv = cluster["srv"]
    nodes = usage(srv)
    free = free_gib(nodes, nodes)
    assert free == 2
    a = plan(srv, "fit", "--memory", "1G", "--cpu", "0.5")
    assert a["sessions"] == free and "memory" in a["stopped_by"], a
    a = plan(srv, "fit", "--memory", "512M", "--cpu", "500m")
    assert a["sessions"] == 4, a  # 2 GiB free, 512 MiB each
    with_room = [n for n in nodes if nodes[n]["memory"] < 2 * GiB]
    ctl("--server", srv, "node", "cordon", with_room[0], "--reason", "plan test", check=0)
    assert h.wait_for(lambda: usage(srv)[with_room[0]]["state"].endswith("CORDONED"), timeout=10)
    a = plan(srv, "fit", "--memory", "1G", "--cpu", "0.5")
    assert a["sessions"] == free - 1, a
    rc, out, err = ctl("--server", srv, "plan", "fit", "--memory", "1G", "--cpu", "0.5")
    assert rc == 0 and out.startswith(f"{free - 1} more sessions of 1G memory, 0.5 cpu fit."), out
    rc, err = plan(srv, "fit", "--memory", "lots", "--cpu", "1", check=2)
    assert "bad --memory 'lots'" in err
    rc, err = plan(srv, "fit", "--memory", "1G", check=2)
    assert "--cpu CORES are required" in err


def test_what_ifs_need_a_scheduler(cluster):
    agent = cluster["agent"]
    rc, out, err = ctl("--server", f"unix:{agent.sock}", "plan", "drain", "pl-a")
    assert rc == 2 and "not a scheduler" in err, err


# ---- plan simulate ------------------------------------------------------------------

def erlang_b(a, m):
    b = 1.0
    for k in range(1, m + 1):
        b = a * b / (k + a * b)
    return b


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


FIXED_SLOTS = """\
seed: 5
duration: 366d
step: 1d
sessions: 100000
arrivals: {{rate: {rate}/m}}
session: {{duration: {{dist: exponential, mean: 1m}}, memory: 256M, cpu: 100m}}
nodes: [{{name: n, count: 3, memory: 1T, cpu: 1000, slots: 6}}]
"""


@pytest.mark.parametrize("load", [12, 18, 24])
def test_simulate_matches_erlang_b(tmp_path, load):
    path = write(tmp_path, "fixed.yaml", FIXED_SLOTS.format(rate=load))
    rc, out, err = ctl("-o", "json", "plan", "simulate", path, check=0)
    j = json.loads(out)
    assert j["erlang_b"]["servers"] == 18
    b = erlang_b(load, 18)
    assert abs(j["erlang_b"]["blocking"] - b) < 1e-9
    sim = j["result"]["rejection_rate"]
    assert abs(sim - b) <= 0.01, (load, sim, b)
    assert j["result"]["arrived"] == 100000


DAY = """\
seed: 3
duration: 24h
step: 10m
arrivals:
  curve: [{at: 0h, rate: 5/m}, {at: 12h, rate: 60/m}]
session:
  duration: {dist: lognormal, mean: 10m, sigma: 1}
  idle_expiry: {dist: uniform, min: 5m, max: 20m}
  abandon: 50%
  shapes: [{memory: 512M, cpu: 500m, weight: 3}, {memory: 2G, cpu: 1}]
nodes: [{name: std, count: 4, memory: 32G, cpu: 16, slots: 40, labels: {zone: a}}]
queue: {max_wait: 1m}
target: {rejection: 1%}
search: {max_nodes: 200}
"""


def test_simulate_finds_nodes_and_renders_svg(tmp_path):
    if not shutil.which("rsvg-convert"):
        pytest.skip("rsvg-convert (librsvg2-bin) is not installed")
    path = write(tmp_path, "day.yaml", DAY)
    svg = str(tmp_path / "day.svg")
    rc, out, err = ctl("-o", "json", "plan", "simulate", path, "--svg", svg, check=0)
    j = json.loads(out)
    assert j["target_met"] and j["nodes_needed"] == j["result"]["nodes"]
    assert j["result"]["rejection_rate"] <= 0.01
    assert j["one_node_fewer"]["nodes"] == j["nodes_needed"] - 1
    assert j["one_node_fewer"]["rejection_rate"] > 0.01
    assert len(j["result"]["samples"]) == 24 * 6 + 1
    png = str(tmp_path / "day.png")
    subprocess.run(["rsvg-convert", "-o", png, svg], check=True, timeout=60)
    with open(png, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (960, 480)
    # The table form says the same.
    rc, out, err = ctl("plan", "simulate", path, check=0)
    assert f"Nodes needed: {j['nodes_needed']} (target: rejection <= 1.000%)" in out
    assert "Erlang-B cross-check" in out and "HEADROOM" in out


@pytest.mark.parametrize("text,needle", [
    ("arrivals: {rate: 1/s}\nsession: {duration: 1m, memory: 1G, cpu: 1}\n", "nodes: missing"),
    (FIXED_SLOTS.format(rate=1).replace("slots: 6", "slots: many"), "nodes[0].slots: 'many' is not a number"),
    (FIXED_SLOTS.format(rate=1).replace("memory: 256M", "memory: 256Q"), "session.memory: '256Q' is not a size"),
    (FIXED_SLOTS.format(rate=1) + "colour: blue\n", "unknown field 'colour'"),
])
def test_simulate_bad_input_names_the_field(tmp_path, text, needle):
    path = write(tmp_path, "bad.yaml", text)
    rc, out, err = ctl("plan", "simulate", path, check=2)
    assert needle in err, err
