"""ISOLATION.md line 28: deleting a session leaves no process, mount, loop
device, cgroup, network namespace or firewall table behind, whether the
session was idle with a daemon running or busy in an execution."""
import os
import shutil
import subprocess
import threading
import time

import grpc
import pytest

from conftest import assert_bystander, cgroup_pids, record_of, wait_for

LEFTOVER_SETUP = r'''
import os, subprocess, signal
# a daemon in its own session that ignores SIGTERM and SIGHUP
subprocess.Popen(["sh", "-c", "trap '' TERM HUP INT; exec sleep 9999"], start_new_session=True)
# a double-forked one
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.execvp("sleep", ["sleep", "9998"])
    os._exit(0)
os.waitpid(pid, 0)
open("/dev/shm/kf-left", "w").write("x")
open("/mnt/data/kf-left", "w").write("x")
'''


def netns_inodes():
    """Network namespace inode -> host pids living in it."""
    seen = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                seen.setdefault(os.stat(f"/proc/{p}/ns/net").st_ino, []).append(int(p))
            except OSError:
                pass
    return seen


def snapshot(agent, sid):
    rec = record_of(agent, sid)
    return {"rec": rec, "pids": cgroup_pids(rec["sbid"]),
            "netns": os.stat(f"/proc/{rec['pid1']}/ns/net").st_ino,
            "mntns": os.stat(f"/proc/{rec['pid1']}/ns/mnt").st_ino}


def other_sandbox(pid, sbid):
    """True if pid lives in another kfleet sandbox's cgroup: namespace inode
    numbers are recycled once a namespace is freed, so a sandbox started
    after the teardown may show up under the deleted one's numbers."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            paths = [ln.strip().split(":", 2)[-1] for ln in f]
    except OSError:
        return False
    return any("/kfleet/" in p and sbid not in p for p in paths)


def leftovers(agent, snap):
    rec = snap["rec"]
    sbid, uid = rec["sbid"], rec["uid"]
    left = []
    out = subprocess.run(["ps", "-e", "-o", "pid=,ruid=,euid=,args="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, ruid, euid, args = (line.split(None, 3) + [""])[:4]
        if int(ruid) == uid or int(euid) == uid:
            left.append(f"process {pid} of uid {uid}: {args}")
    for pid in snap["pids"]:
        if os.path.exists(f"/proc/{pid}"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = "?"
            # a recycled pid is someone else's process: only flag ours
            if os.path.exists(f"/proc/{pid}") and any(
                    s in cmd for s in ("sleep 999", "ipykernel", "kfleet-sandbox")):
                left.append(f"session process {pid} alive: {cmd}")
    with open("/proc/self/mountinfo") as f:
        left += [f"mount: {ln.strip()}" for ln in f if sbid in ln]
    for ctrl in os.listdir("/sys/fs/cgroup"):
        if os.path.exists(f"/sys/fs/cgroup/{ctrl}/kfleet/{sbid}"):
            left.append(f"cgroup {ctrl}/kfleet/{sbid}")
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    left += [f"loop device: {ln}" for ln in loops.splitlines() if sbid in ln]
    ns = netns_inodes()
    holders = [p for p in ns.get(snap["netns"], []) if not other_sandbox(p, sbid)]
    if holders:
        left.append(f"network namespace {snap['netns']} held by {holders}")
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}/ns/mnt").st_ino == snap["mntns"] and not other_sandbox(p, sbid):
                    left.append(f"mount namespace held by {p}")
                    break
            except OSError:
                pass
    if os.path.exists(os.path.join(agent.state, "sb", sbid)):
        left.append("state dir " + os.path.join(agent.state, "sb", sbid))
    if shutil.which("nft"):
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        left += [f"nft table: {ln}" for ln in tables.splitlines() if sbid in ln]
    if shutil.which("iptables-save"):
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        left += [f"iptables: {ln}" for ln in rules.splitlines() if sbid in ln]
    return left


def test_28_delete_idle_session_leaves_nothing(agent, client, bystander):
    sid = client.create().id
    client.run(sid, LEFTOVER_SETUP)
    snap = snapshot(agent, sid)
    assert len(snap["pids"]) >= 4, snap    # PID 1, kernel, two daemons
    client.delete(sid)
    assert wait_for(lambda: not leftovers(agent, snap), 10), leftovers(agent, snap)
    with pytest.raises(grpc.RpcError) as ei:
        client.get(sid)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    assert agent.alive()
    assert_bystander(client, bystander)


def test_28_delete_busy_session_leaves_nothing(agent, client, bystander):
    sid = client.create().id
    client.run(sid, LEFTOVER_SETUP)
    snap = snapshot(agent, sid)
    result = {}

    def run_long():
        try:
            r = client.execute(sid, "import time\ntime.sleep(120)", timeout_ms=150000, rpc_timeout=180)
            result["status"] = r.status
            result["message"] = r.result.message if r.result else None
        except grpc.RpcError as e:
            result["rpc"] = e.code()

    t = threading.Thread(target=run_long)
    t.start()
    assert wait_for(lambda: client.get(sid).state == client.pb.SESSION_STATE_BUSY, 10)
    t0 = time.time()
    client.delete(sid)
    t.join(60)
    assert not t.is_alive(), "the running execution did not end when its session was deleted"
    assert time.time() - t0 < 60
    # the client is told the session went away, one way or the other
    assert result.get("status") in ("EXEC_STATUS_KERNEL_DIED", "EXEC_STATUS_INTERRUPTED") or \
        result.get("rpc") in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                              grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED), result
    assert wait_for(lambda: not leftovers(agent, snap), 10), leftovers(agent, snap)
    assert agent.alive()
    assert_bystander(client, bystander)
