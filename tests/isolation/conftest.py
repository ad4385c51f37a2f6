"""Fixtures for the isolation suite (ISOLATION.md, one test per line).

One kfleet-agent serves the whole run; sessions a test does not damage are
shared per module. Code under test runs as real executions inside real
sessions: `probe()` runs a snippet after a small prelude of helpers (raw
syscalls through ctypes, errno names) and returns the JSON object the
snippet left in `out`. Host-side helpers look at a session from outside
(its sandbox id, uid, PID 1, cgroup, mounts) to check what the session can't
see for itself."""
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kfleet_harness as h  # noqa: E402

# Runs before every probe inside the sandbox. Errors come back as errno
# names ("EPERM"), success as "OK", so assertions print both sides readably.
PRELUDE = r'''
import ctypes as _ct, errno as _errno, json as _json, os as _os
_libc = _ct.CDLL(None, use_errno=True)
_libc.syscall.restype = _ct.c_long
def ename(e):
    return _errno.errorcode.get(e, str(e))
def try_os(f, *a, **k):
    try:
        f(*a, **k)
    except OSError as e:
        return ename(e.errno)
    return "OK"
def sysr(nr, *args):
    """Raw syscall: (return value, errno name or "OK")."""
    conv = [_ct.c_long(a) if isinstance(a, int) else a for a in args]
    _ct.set_errno(0)
    r = _libc.syscall(_ct.c_long(nr), *conv)
    return r, ("OK" if r >= 0 else ename(_ct.get_errno()))
def sysc(nr, *args):
    return sysr(nr, *args)[1]
out = {}
'''

MARK = "@@kfleet-probe@@"


def probe(client, sid, body, timeout_ms=0):
    """Runs PRELUDE + body in the session; body fills the dict `out`.
    Returns `out` (JSON round-tripped)."""
    code = PRELUDE + body + f"\nprint({MARK!r} + _json.dumps(out))\n"
    r = client.execute(sid, code, timeout_ms=timeout_ms)
    assert r.status == "EXEC_STATUS_OK", (r.status, r.result and r.result.message,
                                          [(e.ename, e.evalue, list(e.traceback)) for e in r.errors()],
                                          r.stderr)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(MARK)]
    assert lines, r.stdout
    return json.loads(lines[-1][len(MARK):])


def record_of(agent, sid):
    """The agent's record of a session (session.json) plus its sandbox id."""
    d = os.path.join(agent.state, "sb")
    for e in os.listdir(d):
        try:
            with open(os.path.join(d, e, "session.json")) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        if rec.get("id") == sid:
            rec["sbid"] = e
            # numbers are stored as strings (exact past 2^53)
            for k in ("uid", "gid", "pid1", "slot"):
                if k in rec:
                    rec[k] = int(rec[k])
            return rec
    raise KeyError(sid)


def sbid_of(agent, sid):
    return record_of(agent, sid)["sbid"]


def cgroup_dir(ctrl, sbid):
    return f"/sys/fs/cgroup/{ctrl}/kfleet/{sbid}"


def cgroup_pids(sbid):
    """Host pids in the session's cgroup (pids controller)."""
    try:
        with open(os.path.join(cgroup_dir("pids", sbid), "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def read_cg(ctrl, sbid, name):
    with open(os.path.join(cgroup_dir(ctrl, sbid), name)) as f:
        return f.read().strip()


def host_uid_pids(uid):
    """Host pids of processes whose real uid is uid."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ruid="], capture_output=True, text=True).stdout
    pids = []
    for line in out.splitlines():
        pid, ruid = line.split()
        if int(ruid) == uid:
            pids.append(int(pid))
    return pids


def assert_healthy(agent, client, *sids):
    """The agent is alive and answers; each session runs code."""
    assert agent.alive(), agent.logs()[-4000:]
    client.list()
    for sid in sids:
        assert client.run(sid, "print('still here')", timeout_ms=30000) == "still here\n"


def wait_for(cond, timeout, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


@pytest.fixture(scope="session")
def agent():
    h.require_root()
    # A uid range of its own, away from the harness's default ranges, so no
    # other agent on this host ever runs a process under one of our uids.
    a = h.Agent(pool=2, uid_base=2000000 + (os.getpid() % 1000) * 10000).start()
    yield a
    a.close()


@pytest.fixture(scope="session")
def client(agent):
    return agent.client()


@pytest.fixture
def new_session(client):
    """Factory for sessions deleted at the end of the test."""
    made = []

    def make(**limits):
        sid = client.create(**limits).id
        made.append(sid)
        return sid
    yield make
    for sid in made:
        try:
            client.delete(sid)
        except Exception:
            pass


def _delete_quietly(client, sid):
    try:
        client.delete(sid)
    except Exception:
        pass


@pytest.fixture(scope="module")
def session(client):
    """A default session shared by the non-destructive tests of a module."""
    sid = client.create().id
    yield sid
    _delete_quietly(client, sid)


@pytest.fixture(scope="module")
def bystander(client):
    """Another session that holds in-memory state: it must keep answering,
    with that state, whatever its neighbours do."""
    sid = client.create().id
    client.run(sid, "bystander_marker = 'kept'")
    yield sid
    _delete_quietly(client, sid)


def assert_bystander(client, sid):
    assert client.run(sid, "print(bystander_marker)", timeout_ms=30000) == "kept\n"
