"""Files in and out of /mnt/data, the warm pool, teardown, and sessions
surviving a kill -9 of the agent."""
import hashlib
import os
import subprocess
import time

import grpc
import pytest

import kfleet_harness as h


def test_upload_download_list_delete(client, session):
    data = os.urandom(3 << 20)
    info = client.upload(session, "/mnt/data/in/blob.bin", data)
    assert info.size == len(data) and info.path == "in/blob.bin"
    out = client.run(session, "import hashlib\nprint(hashlib.sha256(open('/mnt/data/in/blob.bin','rb').read()).hexdigest())")
    assert out.strip() == hashlib.sha256(data).hexdigest()
    client.run(session, "open('/mnt/data/out.csv', 'w').write('a,b\\n1,2\\n')")
    assert client.download(session, "out.csv") == b"a,b\n1,2\n"
    names = {f.path: f for f in client.list_files(session)}
    assert names["in"].is_dir and not names["out.csv"].is_dir and names["out.csv"].size == 8
    client.delete_file(session, "out.csv")
    with pytest.raises(grpc.RpcError) as ei:
        client.download(session, "out.csv")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    # the kernel can read what we uploaded and owns it
    assert client.run(session, "import os\nprint(os.stat('/mnt/data/in/blob.bin').st_uid == os.getuid())") == "True\n"


def test_warm_pool_is_used(agent, client):
    agent.wait_pool(1)
    time.sleep(0.5)
    s = client.create()
    try:
        assert s.from_warm_pool
        assert client.run(s.id, "print('warm')") == "warm\n"
    finally:
        client.delete(s.id)


def host_leftovers(agent, sbid):
    left = []
    with open("/proc/self/mountinfo") as f:
        if sbid in f.read():
            left.append("mount")
    for ctrl in ("memory", "pids", "cpu"):
        if os.path.exists(f"/sys/fs/cgroup/{ctrl}/kfleet/{sbid}"):
            left.append(f"cgroup {ctrl}")
    if os.path.exists(os.path.join(agent.state, "sb", sbid)):
        left.append("state dir")
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    if sbid in loops:
        left.append("loop device")
    return left


def sbid_of(agent, sid):
    import json
    d = os.path.join(agent.state, "sb")
    for e in os.listdir(d):
        try:
            with open(os.path.join(d, e, "session.json")) as f:
                if json.load(f)["id"] == sid:
                    return e
        except (OSError, ValueError, KeyError):
            pass
    raise KeyError(sid)


def test_delete_leaves_nothing_behind(agent, client):
    sid = client.create().id
    sbid = sbid_of(agent, sid)
    client.run(sid, "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)")
    uid = int(client.run(sid, "import os; print(os.getuid())"))
    client.delete(sid)
    time.sleep(0.5)
    assert host_leftovers(agent, sbid) == []
    procs = subprocess.run(["ps", "-e", "-o", "uid="], capture_output=True, text=True).stdout.split()
    assert str(uid) not in procs
    with pytest.raises(grpc.RpcError) as ei:
        client.get(sid)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_sessions_survive_agent_kill9():
    h.require_root()
    a = h.Agent(pool=0, uid_base=400000).start()
    try:
        c = a.client()
        ids = [c.create().id for _ in range(5)]
        for i, sid in enumerate(ids):
            c.run(sid, f"v = {i} * 11\nopen('/mnt/data/f.txt', 'w').write('file{i}')")
        a.kill9()
        a.start()
        c = a.client()
        for i, sid in enumerate(ids):
            assert c.run(sid, "print(v)") == f"{i * 11}\n"
            assert c.download(sid, "f.txt") == f"file{i}".encode()
        assert sorted(s.id for s in c.list()) == sorted(ids)
    finally:
        a.close()
