"""scripts/cluster.sh end to end, with the test build's binaries
(--build-dir KF_BUILD_DIR), in a temp --dir, on ports below the kernel's
ephemeral range (the other tests take theirs from it): `up` brings up a
real etcd, a kfleet-scheduler and two kfleet-agents; sessions created
through the scheduler with kfleetctl land on both agents (and really run
there); `up` again finds the running cluster; after a crash (kill -9 of an
agent and the scheduler) `up` cleans the stale cluster and starts afresh;
`down` leaves no process, mount, loop device or sandbox cgroup behind.

The tests run in file order and share one cluster directory."""
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

import kfleet_harness as h

SCRIPT = os.path.join(h.ROOT, "scripts", "cluster.sh")
NODES = {"local-1", "local-2"}
# Session uids of this cluster's agents: apart from the harness's agents
# (300000 + (pid % 1000) * 1000 ...) and from the script's default (1500000).
UID_BASE = 1600000 + (os.getpid() % 100) * 20000


def free_base(n=5):
    """A port BASE with BASE..BASE+n-1 free on 127.0.0.1, from 20000-32000:
    below the ephemeral range, where h.free_port() finds the other tests'."""
    rnd = random.Random(os.getpid())
    for _ in range(200):
        base = rnd.randrange(20000, 32000 - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no 5 consecutive free ports in 20000-32000")


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kfc-", dir="/var/tmp")
        self.port = free_base()
        self.server = f"127.0.0.1:{self.port + 2}"
        self.sbids = set()  # every sandbox seen in the agents' state dirs

    def sh(self, cmd, *extra, timeout=600):
        r = subprocess.run(
            [SCRIPT, cmd, "--dir", self.dir, "--build-dir", h.BUILD, "--port", str(self.port),
             "--uid-base", str(UID_BASE), *extra],
            capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout + r.stderr

    def ctl(self, *args, check=True):
        r = subprocess.run([h.binary("kfleetctl"), "--server", self.server, *args],
                           capture_output=True, text=True, timeout=300)
        if check:
            assert r.returncode == 0, (args, r.stdout, r.stderr, self.logs())
        return r.stdout

    def pids(self):
        out = {}
        for f in glob.glob(os.path.join(self.dir, "pids", "*.pid")):
            with open(f) as fh:
                out[os.path.basename(f)[:-4]] = int(fh.read().strip())
        return out

    def note_sandboxes(self):
        self.sbids |= {os.path.basename(d) for d in glob.glob(os.path.join(self.dir, "agent-*", "sb", "sb-*"))}

    def sessions(self):
        return json.loads(self.ctl("session", "list", "-o", "json"))["sessions"]

    def logs(self, tail=3000):
        out = []
        for f in sorted(glob.glob(os.path.join(self.dir, "logs", "*.log"))):
            with open(f, errors="replace") as fh:
                out.append(f"--- {f}\n{fh.read()[-tail:]}")
        return "\n".join(out)


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def left_behind(c):
    """Everything of the cluster still on the machine, as a list of strings."""
    left = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        cl = cmdline(pid)
        if c.dir + "/" in cl:
            left.append(f"process {pid}: {cl[:200]}")
            continue
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                cg = f.read()
        except OSError:
            continue
        for sb in c.sbids:
            if f"/kfleet/{sb}" in cg:
                left.append(f"process {pid} in the cgroup of {sb}: {cl[:200]}")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4].startswith(c.dir + "/"):
                left.append("mount " + line.split()[4])
    loops = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True,
                           text=True).stdout
    left += ["loop " + line for line in loops.splitlines() if c.dir + "/" in line]
    for sb in c.sbids:
        left += glob.glob(f"/sys/fs/cgroup/*/kfleet/{sb}") + glob.glob(f"/sys/fs/cgroup/kfleet/{sb}")
    return left


@pytest.fixture(scope="module")
def cluster():
    h.require_root()
    for tool in ("/usr/bin/etcd", "/usr/bin/etcdctl"):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} is not installed (etcd-server, etcd-client)")
    c = Cluster()
    yield c
    # whatever a failed test left: take it down, keep the dir if that fails
    rc, out = c.sh("down")
    if rc == 0 and not left_behind(c):
        shutil.rmtree(c.dir, ignore_errors=True)


def test_up_starts_etcd_scheduler_and_two_registered_agents(cluster):
    rc, out = cluster.sh("up")
    assert rc == 0, out + cluster.logs()
    assert set(cluster.pids()) == {"etcd", "scheduler", "agent-1", "agent-2"}, out
    rc, out = cluster.sh("status")
    assert rc == 0, out
    assert "registered nodes: local-1 local-2" in out, out
    rc, out = cluster.sh("env")
    assert rc == 0 and out.strip() == f"export KFLEET_SERVER={cluster.server}", out


def test_sessions_through_the_scheduler_land_on_both_agents(cluster):
    sids = [cluster.ctl("session", "create", "--memory", "256M").strip() for _ in range(4)]
    on = {s["id"]: s["node"] for s in cluster.sessions()}
    assert set(sids) <= set(on), (sids, on)
    assert {on[s] for s in sids} == NODES, on
    # each session is really held by the agent the scheduler names
    for i in (1, 2):
        held = {s.id for s in h.Client(f"unix:{cluster.dir}/run/agent-{i}.sock").list()}
        assert {s for s in sids if on[s] == f"local-{i}"} <= held, (i, held, on)
    # and runs code through the scheduler, on each node
    for node in sorted(NODES):
        sid = next(s for s in sids if on[s] == node)
        assert cluster.ctl("exec", sid, "print(6 * 7)").strip() == "42"
    cluster.note_sandboxes()


def test_up_again_finds_the_running_cluster(cluster):
    before = cluster.pids()
    rc, out = cluster.sh("up")
    assert rc == 0, out
    assert "already running" in out, out
    assert cluster.pids() == before
    assert len(cluster.sessions()) >= 4


def test_up_after_a_crash_cleans_the_stale_cluster(cluster):
    pids = cluster.pids()
    for name in ("agent-1", "scheduler"):
        os.kill(pids[name], signal.SIGKILL)
    h.wait_for(lambda: not os.path.exists(f"/proc/{pids['agent-1']}")
               and not os.path.exists(f"/proc/{pids['scheduler']}"), timeout=10)
    rc, out = cluster.sh("status")
    assert rc == 1 and "STOPPED" in out, out
    cluster.note_sandboxes()
    old = set(cluster.sbids)
    rc, out = cluster.sh("up")
    assert rc == 0, out + cluster.logs()
    assert "stale cluster" in out, out
    # the old sessions were purged (both agents), the new cluster is empty and works
    assert cluster.sessions() == []
    for sb in old:
        assert not glob.glob(os.path.join(cluster.dir, "agent-*", "sb", sb)), sb
    new = cluster.pids()
    assert set(new) == {"etcd", "scheduler", "agent-1", "agent-2"}
    assert all(new[n] != pids[n] for n in new), (pids, new)
    sid = cluster.ctl("session", "create", "--memory", "256M").strip()
    assert cluster.ctl("exec", sid, "print('again')").strip() == "again"
    cluster.note_sandboxes()


def test_down_leaves_nothing_behind(cluster):
    pids = cluster.pids()
    assert pids, "no cluster to take down"
    cluster.note_sandboxes()
    assert cluster.sbids
    rc, out = cluster.sh("down")
    assert rc == 0, out + cluster.logs()
    for name, pid in pids.items():
        assert cluster.dir + "/" not in cmdline(pid), (name, pid)
    assert left_behind(cluster) == []
    # state is gone, logs stay
    assert not glob.glob(os.path.join(cluster.dir, "agent-*"))
    assert not os.path.exists(os.path.join(cluster.dir, "etcd"))
    assert os.path.exists(os.path.join(cluster.dir, "logs", "agent-1.log"))
    # a clean stop of the sanitizer build: no report in any log
    logs = cluster.logs(tail=10 ** 7)
    assert "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
    rc, out = cluster.sh("status")
    assert rc == 3 and "no cluster" in out, out
