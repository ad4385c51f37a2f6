"""ISOLATION.md, "Resources": lines 17-22. Bombs are kept small (256 MiB of
memory, 64 pids, 64 MiB of disk) so the suite is quick and the shared
machine is not hurt; what matters is that each limit holds and that the
agent, the other sessions and the session itself come through."""
import os
import shutil
import threading
import time

import grpc
import pytest

from conftest import (assert_bystander, assert_healthy, cgroup_pids, probe, read_cg, record_of,
                      wait_for)

MiB = 1 << 20


def test_17_fork_bomb_stops_at_pids_limit(agent, client, new_session, bystander):
    sid = new_session(pids=64, memory_bytes=256 * MiB)
    sbid = record_of(agent, sid)["sbid"]
    assert read_cg("pids", sbid, "pids.max") == "64"
    # the bomb: every process forks as fast as it can, for at most 40 s
    client.run(sid, r'''
import subprocess, sys
BOMB = """
import os, time
end = time.time() + 40
while time.time() < end:
    try:
        os.fork()
    except OSError:
        time.sleep(0.05)
os._exit(0)
"""
kf_bomb = subprocess.Popen([sys.executable, "-c", BOMB], start_new_session=True)
''')
    try:
        assert wait_for(lambda: int(read_cg("pids", sbid, "pids.current")) >= 60, 20), \
            read_cg("pids", sbid, "pids.current")
        # the session is told: its own fork fails with EAGAIN
        out = probe(client, sid, r'''
import subprocess
errs = []
for _ in range(3):
    try:
        subprocess.run(["true"])
        errs.append("OK")
    except OSError as e:
        errs.append(ename(e.errno))
out["spawn"] = errs
''', timeout_ms=60000)
        assert out["spawn"] == ["EAGAIN"] * 3, out
        assert int(read_cg("pids", sbid, "pids.current")) <= 64
        if os.path.exists(f"/sys/fs/cgroup/pids/kfleet/{sbid}/pids.events"):
            assert int(read_cg("pids", sbid, "pids.events").split()[-1]) > 0  # "max N": forks refused
        # the agent and the other session answer meanwhile
        t0 = time.time()
        assert_healthy(agent, client)
        assert_bystander(client, bystander)
        assert time.time() - t0 < 30
    finally:
        # kill the bomb's process group until nothing is left of it
        client.execute(sid, r'''
import os, signal, time
for _ in range(100):
    try:
        os.killpg(kf_bomb.pid, signal.SIGKILL)
    except ProcessLookupError:
        break
    time.sleep(0.05)
kf_bomb.wait()
''', timeout_ms=60000)
    assert wait_for(lambda: int(read_cg("pids", sbid, "pids.current")) < 20, 20)
    assert client.run(sid, "import subprocess; print(subprocess.run(['echo', 'ok'], capture_output=True, "
                           "text=True).stdout, end='')") == "ok\n"


MEMORY_BOMBS = {
    "heap": "kf_hog = []\nwhile True:\n    kf_hog.append(b'\\x01' * (16 << 20))\n",
    "mmap": ("import mmap\nkf_m = mmap.mmap(-1, 2 << 30)\n"
             "for i in range(0, 2 << 30, 4096):\n    kf_m[i] = 1\n"),
    # tmpfs pages are charged to the session too; the three tmpfs (64 MiB
    # each) + the kernel itself exceed 256 MiB; whatever survives ENOSPC goes
    # on in the heap
    "tmpfs": ("import os\nchunk = b'\\x02' * (8 << 20)\n"
              "for d in ('/dev/shm', '/tmp', '/home/sandbox'):\n"
              "    i = 0\n"
              "    while True:\n"
              "        try:\n"
              "            open('%s/kf-fill-%d' % (d, i), 'wb').write(chunk)\n"
              "        except OSError:\n"
              "            break\n"
              "        i += 1\n"
              "kf_hog = []\nwhile True:\n    kf_hog.append(b'\\x01' * (16 << 20))\n"),
}


@pytest.fixture(scope="module")
def small_memory_session(client):
    sid = client.create(memory_bytes=256 * MiB).id
    yield sid
    try:
        client.delete(sid)
    except Exception:
        pass


# tmpfs last: its files (and their memory) outlive the kernel it kills
@pytest.mark.parametrize("kind", ["heap", "mmap", "tmpfs"])
def test_18_memory_bomb_oom_killed_inside_session(agent, client, small_memory_session, bystander, kind):
    sid = small_memory_session
    rec = record_of(agent, sid)
    assert int(read_cg("memory", rec["sbid"], "memory.limit_in_bytes")) == 256 * MiB
    bystander_pids = cgroup_pids(record_of(agent, bystander)["sbid"])
    client.run(sid, "kf_before = 1")
    r = client.execute(sid, MEMORY_BOMBS[kind], timeout_ms=60000)
    assert r.status == "EXEC_STATUS_OUT_OF_MEMORY", (kind, r.status, r.result)
    assert "out of memory" in r.result.message, r.result.message
    assert r.result.kernel_restarted
    # only the session's kernel went: PID 1, the agent, the other session stay
    assert rec["pid1"] in cgroup_pids(rec["sbid"])
    assert agent.alive()
    assert all(os.path.exists(f"/proc/{p}") for p in bystander_pids)
    assert_bystander(client, bystander)
    # the kernel is back and usable, with fresh state
    after = client.execute(sid, "print('usable', 'kf_before' in globals())", timeout_ms=30000)
    assert after.status == "EXEC_STATUS_OK", (
        kind, after.status, after.result.message,
        "memory still charged to the session: %s bytes of %s" % (
            read_cg("memory", rec["sbid"], "memory.usage_in_bytes"), 256 * MiB))
    assert after.stdout == "usable False\n"
    # give tmpfs memory back for the next bomb
    client.run(sid, "import glob, os\nfor p in glob.glob('/dev/shm/kf-fill-*') + glob.glob('/tmp/kf-fill-*') + "
                    "glob.glob('/home/sandbox/kf-fill-*'):\n    os.unlink(p)\n")


def test_19_volume_fill_stops_at_quota(agent, client, new_session):
    quota = 64 * MiB
    sid = new_session(disk_bytes=quota, disk_inodes=4096)
    rec = record_of(agent, sid)
    img = os.path.join(agent.state, "sb", rec["sbid"], "volume.img")
    host_free_before = shutil.disk_usage(os.path.dirname(img)).free
    out = probe(client, sid, r'''
chunk = b"\x03" * (1 << 20)
written, err = 0, None
with open("/mnt/data/kf-bytes", "wb", buffering=0) as f:
    while written < (512 << 20):
        try:
            written += f.write(chunk)
        except OSError as e:
            err = ename(e.errno)
            break
out["bytes"] = [written, err]
_os.unlink("/mnt/data/kf-bytes")
fd = _os.open("/mnt/data/kf-falloc", _os.O_WRONLY | _os.O_CREAT)
out["fallocate"] = try_os(_os.posix_fallocate, fd, 0, 1 << 30)
_os.close(fd)
_os.unlink("/mnt/data/kf-falloc")
_os.makedirs("/mnt/data/kf-inodes")
n, err = 0, None
while n < 100000:
    try:
        _os.close(_os.open("/mnt/data/kf-inodes/%d" % n, _os.O_WRONLY | _os.O_CREAT))
        n += 1
    except OSError as e:
        err = ename(e.errno)
        break
out["inodes"] = [n, err]
st = _os.statvfs("/mnt/data")
out["statvfs"] = [st.f_blocks * st.f_frsize, st.f_files]
''', timeout_ms=120000)
    written, err = out["bytes"]
    assert err in ("ENOSPC", "EDQUOT"), out
    assert 0 < written <= quota, out
    assert out["fallocate"] in ("ENOSPC", "EDQUOT"), out
    n, err = out["inodes"]
    assert err in ("ENOSPC", "EDQUOT"), out
    assert 0 < n <= 4096, out
    # the image never grew past its quota on the host
    assert os.stat(img).st_size <= quota + MiB
    assert os.stat(img).st_blocks * 512 <= quota + MiB
    # the host lost at most about the quota (other work on this host may
    # use disk too; the volume itself is bounded above)
    assert host_free_before - shutil.disk_usage(os.path.dirname(img)).free < quota + 256 * MiB
    # an upload past the quota is refused with RESOURCE_EXHAUSTED
    client.run(sid, "import shutil; shutil.rmtree('/mnt/data/kf-inodes')")
    with pytest.raises(grpc.RpcError) as ei:
        client.upload(sid, "kf-big.bin", b"\x04" * (quota + 8 * MiB))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (ei.value.code(), ei.value.details())
    assert client.run(sid, "print('fine')") == "fine\n"


def test_20_cpu_burn_held_to_its_limit(agent, client, new_session, bystander):
    sid = new_session(cpu_millis=200)
    sbid = record_of(agent, sid)["sbid"]
    assert read_cg("cpu", sbid, "cpu.cfs_quota_us") == "20000"
    assert read_cg("cpu", sbid, "cpu.cfs_period_us") == "100000"
    latencies = []

    def ping_bystander():
        for _ in range(3):
            t0 = time.time()
            assert_bystander(client, bystander)
            latencies.append(time.time() - t0)
            time.sleep(0.5)

    pinger = threading.Thread(target=ping_bystander)
    pinger.start()
    # the kernel and two children burn for 3 s of wall time each
    out = probe(client, sid, r'''
import time
def burn(seconds):
    end = time.time() + seconds
    while time.time() < end:
        pass
t0 = time.time()
c0 = time.process_time()
kids = []
for _ in range(2):
    pid = _os.fork()
    if pid == 0:
        burn(3.0)
        _os._exit(0)
    kids.append(pid)
burn(3.0)
cpu = time.process_time() - c0
for pid in kids:
    _, _, ru = _os.wait4(pid, 0)
    cpu += ru.ru_utime + ru.ru_stime
out["wall"] = time.time() - t0
out["cpu"] = cpu
''', timeout_ms=60000)
    pinger.join(60)
    ratio = out["cpu"] / out["wall"]
    # 0.2 cores allowed; generous margin for accounting granularity
    assert ratio <= 0.35, out
    assert out["wall"] >= 3.0
    # the other session answered all along (no tight bound: shared machine)
    assert len(latencies) == 3 and max(latencies) < 15, latencies
    print("cpu/wall", round(ratio, 3), "bystander latencies", [round(x, 3) for x in latencies])


def test_21_double_forked_daemon_stays_and_dies_with_session(agent, client, new_session):
    sid = new_session()
    rec = record_of(agent, sid)
    sbid, uid = rec["sbid"], rec["uid"]
    client.run(sid, r'''
import os
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.closerange(0, 1024)
        os.execvp("sleep", ["sleep", "7777.25"])
    os._exit(0)
os.waitpid(pid, 0)
''')

    def daemons():
        found = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if f.read() == b"sleep\x007777.25\x00":
                        found.append(int(p))
            except OSError:
                pass
        return found

    pids = wait_for(daemons, 10)
    assert len(pids) == 1, pids
    d = pids[0]
    with open(f"/proc/{d}/status") as f:
        assert f"Uid:\t{uid}\t" in f.read()
    # in the session's cgroup for every controller the agent sets
    with open(f"/proc/{d}/cgroup") as f:
        cg = f.read()
    for ctrl in ("memory", "pids", "cpu"):
        assert any(ctrl in line.split(":")[1].split(",") and line.endswith(f"/kfleet/{sbid}")
                   for line in cg.splitlines()), cg
    assert d in cgroup_pids(sbid)
    # reparented inside the session (to its PID 1), not to the host's init
    with open(f"/proc/{d}/status") as f:
        ppid = int([ln for ln in f.read().splitlines() if ln.startswith("PPid:")][0].split()[1])
    assert ppid == rec["pid1"], (ppid, rec["pid1"])
    client.delete(sid)
    assert wait_for(lambda: not daemons(), 10), daemons()


def test_22_busy_loop_stopped_at_time_limit(client, session):
    client.run(session, "kf_kept = 'yes'")
    t0 = time.time()
    r = client.execute(session, "while True: pass", timeout_ms=2000)
    took = time.time() - t0
    assert r.status == "EXEC_STATUS_TIMEOUT", (r.status, r.result)
    assert "limit" in r.result.message, r.result.message
    assert 2.0 <= took < 2 + 2 + 15, took
    assert client.run(session, "print(1 + 1)") == "2\n"
    if r.result.kernel_restarted:
        pytest.fail("the interrupt should stop a pure-Python loop; the kernel was restarted instead: "
                    + r.result.message)
    assert client.run(session, "print(kf_kept)") == "yes\n"


def test_22_loop_ignoring_interrupt_restarts_kernel(client, session):
    code = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "while True: pass\n")
    t0 = time.time()
    r = client.execute(session, code, timeout_ms=1500)
    took = time.time() - t0
    assert r.status == "EXEC_STATUS_TIMEOUT", (r.status, r.result)
    assert r.result.kernel_restarted, r.result
    assert "restarted" in r.result.message, r.result.message
    assert took < 1.5 + 2 + 20, took
    assert client.run(session, "print('back')") == "back\n"
