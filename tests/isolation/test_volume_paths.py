"""ISOLATION.md lines 3 and 4: the agent reads, lists, writes and deletes
files in a session's volume as root, so every path there is hostile. A
symlink the session plants, or swaps in while the agent works, must never
lead the agent outside the volume.

Symlink targets are host paths: the agent resolves them, if it follows them
at all, in the host's mount namespace. The "canary" is a host directory the
session can't see; the agent must never read, list, write or delete in it."""
import hashlib
import os
import shutil
import time

import grpc
import pytest

import kfleet_harness as h
from conftest import assert_healthy, probe, record_of

SECRET = b"HOST-ONLY canary content\n"
REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED)


@pytest.fixture
def canary():
    d = f"/var/tmp/kf-canary-{os.getpid()}-{time.monotonic_ns()}"
    os.makedirs(os.path.join(d, "sub"))
    for name in ("secret.txt", "victim.txt", "sub/deep.txt"):
        with open(os.path.join(d, name), "wb") as f:
            f.write(SECRET)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def snapshot(d):
    """Every path under d with its content hash (None for directories)."""
    snap = {}
    for dirpath, dirs, files in os.walk(d):
        for n in dirs:
            snap[os.path.relpath(os.path.join(dirpath, n), d)] = None
        for n in files:
            with open(os.path.join(dirpath, n), "rb") as f:
                snap[os.path.relpath(os.path.join(dirpath, n), d)] = hashlib.sha256(f.read()).hexdigest()
    return snap


def file_digest(p):
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def plant(client, sid, links):
    """Creates the symlinks {name: target} in the session's /mnt/data."""
    probe(client, sid, "for n, t in %r.items():\n"
                       "    p = '/mnt/data/' + n\n"
                       "    _os.makedirs(_os.path.dirname(p), exist_ok=True)\n"
                       "    _os.symlink(t, p)\n" % (links,))


def refused(fn, *a):
    """The agent call must fail with a refusal; returns the status code."""
    with pytest.raises(grpc.RpcError) as ei:
        got = fn(*a)
        if hasattr(got, "__iter__") and not isinstance(got, (bytes, str)):
            list(got)
    assert ei.value.code() in REFUSED, (fn.__name__, a, ei.value.code(), ei.value.details())
    return ei.value.code()


def check_agent_refuses(client, sid, canary, sbid):
    shadow_before = file_digest("/etc/shadow")
    links = {"shadow": "/etc/shadow", "up": "../..", "up1": "..", "root": "/", "canary": canary,
             "canary_file": f"{canary}/secret.txt", "nested/d": canary}
    plant(client, sid, links)

    # download: through a final symlink, or through a symlinked directory
    for path in ("shadow", "/mnt/data/shadow", "root/etc/shadow", "up/etc/shadow", f"up/{sbid}/session.json",
                 "up1/session.json", "canary/secret.txt", "canary_file", "nested/d/secret.txt",
                 "canary/sub/deep.txt"):
        refused(client.download, sid, path)

    # list: a symlink is listed as itself, never opened
    top = {f.path: f for f in client.list_files(sid)}
    for name in ("shadow", "up", "root", "canary", "canary_file"):
        assert name in top and not top[name].is_dir, (name, top.get(name))
    for path in ("up", "root", "canary", "nested/d"):
        try:
            names = [f.path for f in client.list_files(sid, path)]
        except grpc.RpcError as e:
            assert e.code() in REFUSED, (path, e.code(), e.details())
            continue
        assert names == [os.path.basename(path)] or names == [path], (path, names)
    for path in ("canary/sub", "root/etc", f"up/{sbid}", "nested/d/sub"):
        refused(client.list_files, sid, path)

    # upload: neither through a symlinked directory nor onto a final symlink
    for path in ("canary/new.txt", "nested/d/new.txt", "canary_file", "shadow", "root/tmp/kf-new",
                 f"up/{sbid}/kf-new"):
        refused(client.upload, sid, path, b"overwritten by the agent\n")

    # delete: never through a symlinked directory; a final symlink goes alone
    for path in ("canary/victim.txt", "nested/d/victim.txt", "canary/sub/deep.txt", f"up/{sbid}/session.json"):
        refused(client.delete_file, sid, path)
    client.delete_file(sid, "canary_file")
    client.delete_file(sid, "shadow")
    assert "canary_file" not in {f.path for f in client.list_files(sid)}

    assert file_digest("/etc/shadow") == shadow_before
    assert not os.path.exists("/tmp/kf-new")


def test_03_planted_symlinks_not_followed_by_download_list_upload_delete(agent, client, session, canary):
    before = snapshot(canary)
    sbid = record_of(agent, session)["sbid"]
    check_agent_refuses(client, session, canary, sbid)
    assert snapshot(canary) == before
    assert os.path.exists(os.path.join(agent.state, "sb", sbid, "session.json"))
    assert_healthy(agent, client, session)


def test_03_planted_symlinks_not_followed_by_cleanup(agent, client, new_session, bystander, canary):
    """Deleting a session removes its volume without following a link the
    session left in it: the canary, the agent's state and the other sessions
    stay."""
    before = snapshot(canary)
    sid = new_session()
    other_sbid = record_of(agent, bystander)["sbid"]
    plant(client, sid, {"canary": canary, "canary_file": f"{canary}/secret.txt", "state": agent.state,
                        "up": "../..", "other": os.path.join(agent.state, "sb", other_sbid),
                        "deep/er/link": canary})
    client.delete(sid)
    assert snapshot(canary) == before
    assert os.path.exists(os.path.join(agent.state, "sb", other_sbid, "session.json"))
    assert_healthy(agent, client, bystander)


def test_03_planted_symlinks_not_followed_after_agent_restart(canary):
    """An agent that restarts re-adopts its sessions from disk; links the
    sessions left in their volumes still lead nowhere."""
    h.require_root()
    before = snapshot(canary)
    a = h.Agent(pool=0, uid_base=3000000 + (os.getpid() % 1000) * 100).start()
    try:
        c = a.client()
        sid = c.create().id
        plant(c, sid, {"canary": canary, "state": a.state, "up": "../.."})
        c.run(sid, "kept = 7")
        a.kill9()
        a.start()
        c = a.client()
        assert c.run(sid, "print(kept)") == "7\n"
        sbid = record_of(a, sid)["sbid"]
        for path in ("canary/secret.txt", f"up/{sbid}/session.json", "state/sb"):
            refused(c.download, sid, path)
        refused(c.upload, sid, "canary/new.txt", b"x")
        refused(c.delete_file, sid, "canary/victim.txt")
        c.delete(sid)
        assert snapshot(canary) == before
    finally:
        a.close()
    assert snapshot(canary) == before


def test_03_planted_symlinks_not_followed_by_migration():
    pytest.skip("kfleet-agent has no session migration between nodes yet: nothing to test")


SWAPPER = r'''
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
os.chdir("/mnt/data/race")
end = time.time() + float(sys.argv[1])
n = 0
# renameat2(RENAME_EXCHANGE): atomically swap a real directory (file) with a
# symlink to the host canary, as fast as we can
while time.time() < end:
    libc.syscall(316, -100, b"sw", -100, b"sw_alt", 2)
    libc.syscall(316, -100, b"f.txt", -100, b"f_alt", 2)
    n += 1
open("/mnt/data/race/swaps", "w").write(str(n))
'''


def test_04_path_swapped_for_symlink_during_agent_io(agent, client, session, canary):
    before = snapshot(canary)
    seconds = 4.0
    probe(client, session, r'''
import subprocess, sys
_os.makedirs("/mnt/data/race/sw/sub", exist_ok=True)
for n in ("secret.txt", "victim.txt", "sub/deep.txt"):
    open("/mnt/data/race/sw/" + n, "w").write("inside\n")
open("/mnt/data/race/f.txt", "w").write("inside\n")
_os.symlink(%r, "/mnt/data/race/sw_alt")
_os.symlink(%r, "/mnt/data/race/f_alt")
kf_swapper = subprocess.Popen([sys.executable, "-c", %r, %r])
''' % (canary, f"{canary}/secret.txt", SWAPPER, str(seconds)))
    seen = {"inside": 0, "refused": 0, "missing": 0}
    leaked = []

    def outcome(fn, *a):
        try:
            got = fn(*a)
            if hasattr(got, "__iter__") and not isinstance(got, (bytes, str)):
                got = list(got)
            return got
        except grpc.RpcError as e:
            if e.code() in REFUSED:
                seen["refused"] += 1
            elif e.code() == grpc.StatusCode.NOT_FOUND:
                seen["missing"] += 1
            else:
                raise
            return None

    end = time.time() + seconds - 0.5
    i = 0
    while time.time() < end:
        i += 1
        for path in ("race/sw/secret.txt", "race/f.txt", "race/sw/sub/deep.txt"):
            data = outcome(client.download, session, path)
            if data is not None:
                if SECRET in data:
                    leaked.append(("download", path))
                else:
                    seen["inside"] += 1
        for path in ("race/sw", "race/sw/sub"):
            files = outcome(client.list_files, session, path)
            # the canary and the real directory hold the same names; a listing
            # of the canary shows the host's sizes, the real one "inside\n"
            if files and any(f.size == len(SECRET) for f in files):
                leaked.append(("list", path))
        outcome(client.upload, session, f"race/sw/up{i}.txt", b"uploaded\n")
        outcome(client.upload, session, "race/f.txt", b"inside\n")
        outcome(client.delete_file, session, "race/sw/victim.txt")
        outcome(client.delete_file, session, "race/sw/sub/deep.txt")
    swaps = probe(client, session, r'''
kf_swapper.wait()
out["swaps"] = int(open("/mnt/data/race/swaps").read())
''')["swaps"]
    assert swaps > 100, swaps
    assert leaked == [], (leaked, seen)
    assert snapshot(canary) == before, seen
    assert seen["inside"] + seen["refused"] > 0, seen
    assert_healthy(agent, client, session)
