"""Moving a session between two real agents (node drain, the agent side):
ExportSession on A piped by the test into ImportSession on B, the way the
scheduler relays it, then ReleaseSession on A. Files (a sparse large file,
a subdirectory, the user's symlinks) arrive intact and owned by B's
session; the kernel starts anew and says so once; only data extents
travel. Also: a busy session needs force; a broken import leaves nothing
on B and the session EXPORTED on A, which survives an agent restart and
resumes; malformed imports are refused; a planted symlink does not lead
the ownership walk off the volume; a moved session can come back to the
node it left."""
import json
import os
import shutil
import tempfile
import threading

import grpc
import pytest

import kfleet_harness as h

MiB = 1 << 20
GiB = 1 << 30
BASE_UID = 300000 + (os.getpid() % 1000) * 1000
NOTICE = ("kernel restarted by a node drain (moved from node-a): files in /mnt/data were kept, "
          "in-memory state was not")

WRITE_FILES = r"""
import os, hashlib, json
os.chdir('/mnt/data')
open('a.txt', 'w').write('hello from node a\n' * 100)
os.makedirs('sub/dir', exist_ok=True)
open('sub/dir/b.bin', 'wb').write(os.urandom(3 << 20))
with open('sparse.dat', 'wb') as f:   # 200 MiB long, 1 MiB of data
    f.seek(200 << 20)
    f.write(os.urandom(1 << 20))
os.symlink('a.txt', 'link')
os.symlink(CANARY, 'escape')            # to a file on the host
os.symlink(CANARY_DIR, 'escape_dir')    # to a directory on the host
os.symlink('../../../../../../' + CANARY.lstrip('/'), 'sub/dotdot')
x = 42
print(os.getuid())
"""

MANIFEST = r"""
import os, hashlib, json
m = {}
for root, dirs, files in os.walk('/mnt/data'):
    for n in dirs + files:
        p = os.path.join(root, n)
        st = os.lstat(p)
        if os.path.islink(p):
            m[p] = ['link', os.readlink(p)]
        elif os.path.isdir(p):
            m[p] = ['dir']
        else:
            m[p] = ['file', st.st_size, hashlib.sha256(open(p, 'rb').read()).hexdigest()]
print(json.dumps(m, sort_keys=True))
"""

OWNERS = r"""
import os, json
bad = []
for root, dirs, files in os.walk('/mnt/data'):
    for n in [root] + [os.path.join(root, d) for d in dirs] + [os.path.join(root, f) for f in files]:
        if os.lstat(n).st_uid != os.getuid() or os.lstat(n).st_gid != os.getgid():
            bad.append(n)
print(json.dumps(sorted(set(bad))))
"""


@pytest.fixture(scope="module")
def agents():
    h.require_root()
    a = h.Agent(pool=0, uid_base=BASE_UID + 100, extra=["--node-name", "node-a"]).start()
    b = h.Agent(pool=0, uid_base=BASE_UID + 300,
                extra=["--node-name", "node-b", "--max-disk", "2G"]).start()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def canary():
    """A root-owned file and directory on the host that a planted symlink
    points at: the move must not change them."""
    d = tempfile.mkdtemp(prefix="kfmv-canary-", dir="/var/tmp")
    os.chmod(d, 0o755)
    f = os.path.join(d, "canary")
    with open(f, "w") as fh:
        fh.write("host file\n")
    os.chown(f, 0, 0)
    yield d, f
    shutil.rmtree(d, ignore_errors=True)


def agent_stub(agent):
    pb, grpc_mod = h.agent_stubs()
    return pb, grpc_mod.AgentStub(grpc.insecure_channel(f"unix:{agent.sock}"))


def export_chunks(src, sid, reason="node drain", force=False):
    pb, stub = agent_stub(src)
    return stub.ExportSession(pb.ExportSessionRequest(session_id=sid, reason=reason, force=force),
                              timeout=300)


def relay(chunks, notice, stats, stop_after=None, tamper=None):
    """ImportChunks from ExportChunks, as the scheduler relays them."""
    pb, _ = h.agent_stubs()
    for i, ch in enumerate(chunks):
        if stop_after is not None and i >= stop_after:
            raise RuntimeError("the relay gives up")
        if ch.HasField("header"):
            stats["header"] = ch.header
            yield pb.ImportChunk(header=ch.header, notice=notice)
            continue
        assert 0 < len(ch.data) <= MiB
        stats["bytes"] += len(ch.data)
        stats["chunks"] += 1
        msg = pb.ImportChunk(offset=ch.offset, data=ch.data)
        if tamper:
            msg = tamper(msg, stats)
        yield msg


def move(src, dst, sid, notice=NOTICE, **kw):
    _, stub = agent_stub(dst)
    stats = {"bytes": 0, "chunks": 0, "header": None}
    chunks = export_chunks(src, sid)
    try:
        sess = stub.ImportSession(relay(chunks, notice, stats, **kw), timeout=300)
    finally:
        chunks.cancel()  # a relay that gave up also ends the export stream
    return sess, stats


def release(src, sid, moved_to):
    pb, stub = agent_stub(src)
    stub.ReleaseSession(pb.ReleaseSessionRequest(session_id=sid, moved_to=moved_to), timeout=60)


def resume(src, sid, notice=""):
    pb, stub = agent_stub(src)
    return stub.ResumeSession(pb.ResumeSessionRequest(session_id=sid, notice=notice), timeout=120)


def sandbox_dirs(agent):
    d = os.path.join(agent.state, "sb")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def mounts_under(agent):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(agent.dir)]


def rpc_error(fn):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value


def test_move_keeps_files_and_gives_them_to_the_new_session(agents, canary):
    a, b = agents
    ca, cb = a.client(), b.client()
    cdir, cfile = canary
    sid = ca.create().id
    uid_a = int(ca.run(sid, f"CANARY = {cfile!r}; CANARY_DIR = {cdir!r}\n" + WRITE_FILES).strip())
    before = json.loads(ca.run(sid, MANIFEST))
    assert before["/mnt/data/sub/dir/b.bin"][1] == 3 * MiB
    assert before["/mnt/data/escape"] == ["link", cfile]
    canary_before = (os.stat(cfile), os.stat(cdir))

    sess, stats = move(a, b, sid)
    release(a, sid, "node-b")

    assert sess.id == sid and sess.node == "node-b"
    assert sess.state == h.stubs()[0].SESSION_STATE_READY
    hdr = stats["header"]
    assert hdr.session_id == sid and hdr.from_node == "node-a" and hdr.image_bytes == GiB
    assert hdr.data_bytes == stats["bytes"]
    # the image is 1 GiB and holds a 200 MiB sparse file: only extents travel
    assert 4 * MiB < stats["bytes"] < 64 * MiB, stats

    # the first execution tells why the kernel is new, once
    first = cb.execute(sid, "print(os.getuid() if 'os' in dir() else 'fresh')")
    assert first.status == "EXEC_STATUS_OK", first.errors()
    assert first.notices() == [NOTICE]
    assert first.stdout.strip() == "fresh"  # in-memory state did not move
    gone = cb.execute(sid, "x")
    assert gone.notices() == []
    assert [e.ename for e in gone.errors()] == ["NameError"]

    after = json.loads(cb.run(sid, MANIFEST))
    assert after == before
    uid_b = int(cb.run(sid, "import os; print(os.getuid())").strip())
    assert uid_b != uid_a
    assert json.loads(cb.run(sid, OWNERS)) == []
    # B's session owns its files: it writes, replaces and deletes them
    cb.run(sid, "import os\n"
                "open('/mnt/data/sub/dir/new.txt', 'w').write('new')\n"
                "open('/mnt/data/a.txt', 'a').write('more')\n"
                "os.remove('/mnt/data/sub/dir/b.bin'); os.remove('/mnt/data/sparse.dat')\n"
                "os.remove('/mnt/data/link')")
    assert cb.download(sid, "sub/dir/new.txt") == b"new"

    # the symlinks planted on the volume led the walk nowhere
    canary_after = (os.stat(cfile), os.stat(cdir))
    for old, new in zip(canary_before, canary_after):
        assert (new.st_uid, new.st_gid, new.st_mode) == (old.st_uid, old.st_gid, old.st_mode) == \
            (0, 0, new.st_mode)

    # A: the id says where it went; nothing of it is left there
    assert sid not in [x.id for x in ca.list()]
    e = rpc_error(lambda: ca.get(sid))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "moved to node node-b" in e.details()
    assert sandbox_dirs(a) == [] and mounts_under(a) == []
    release(a, sid, "node-b")  # idempotent

    # B cannot take the id a second time
    pb, stub = agent_stub(b)
    e = rpc_error(lambda: stub.ImportSession(iter([pb.ImportChunk(header=hdr)]), timeout=60))
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS

    # and the session can come back to A, which it once left
    files_b = json.loads(cb.run(sid, MANIFEST))
    back, _ = move(b, a, sid, notice="back on node-a")
    release(b, sid, "node-a")
    assert back.node == "node-a"
    r = ca.execute(sid, MANIFEST)
    assert r.notices() == ["back on node-a"] and json.loads(r.stdout) == files_b
    assert json.loads(ca.run(sid, OWNERS)) == []
    e = rpc_error(lambda: cb.get(sid))
    assert e.code() == grpc.StatusCode.NOT_FOUND and "moved to node node-a" in e.details()
    ca.delete(sid)


def test_export_of_a_busy_session_needs_force(agents):
    a, _ = agents
    ca = a.client()
    sid = ca.create().id
    ca.run(sid, "open('/mnt/data/kept.txt', 'w').write('kept')")
    result = {}

    def long_run():
        result["r"] = ca.execute(sid, "import time; time.sleep(120)")
    t = threading.Thread(target=long_run)
    t.start()
    pb, _ = h.stubs()
    assert h.wait_for(lambda: ca.get(sid).state == pb.SESSION_STATE_BUSY, timeout=30)

    e = rpc_error(lambda: list(export_chunks(a, sid)))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "is executing" in e.details()
    assert ca.get(sid).state == pb.SESSION_STATE_BUSY  # untouched

    chunks = list(export_chunks(a, sid, force=True))
    assert chunks[0].HasField("header") and len(chunks) > 1
    t.join(60)
    assert not t.is_alive()
    r = result["r"]
    assert r.status == "EXEC_STATUS_KERNEL_DIED" and "moved to another node" in r.result.message

    e = rpc_error(lambda: ca.execute(sid, "1"))
    assert e.code() == grpc.StatusCode.UNAVAILABLE and "being moved to another node (node drain)" in e.details()
    resume(a, sid)
    assert ca.run(sid, "print(open('/mnt/data/kept.txt').read())").strip() == "kept"
    ca.delete(sid)


def test_failed_import_leaves_nothing_and_the_source_resumes(agents):
    a, b = agents
    ca, cb = a.client(), b.client()
    sid = ca.create().id
    ca.run(sid, "open('/mnt/data/f.txt', 'w').write('precious'); y = 7")
    b_dirs = sandbox_dirs(b)

    # the relay gives up after the header and one piece (the client ends
    # its stream as if it were complete: the header's data_bytes tells)
    # (python grpc reports its own UNKNOWN; the agent's verdict is in its log)
    e = rpc_error(lambda: move(a, b, sid, stop_after=2))
    assert e.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INVALID_ARGUMENT), e
    assert h.wait_for(lambda: f"importing session {sid}: the image stream ended after" in b.logs(), timeout=30)
    assert h.wait_for(lambda: sandbox_dirs(b) == b_dirs and mounts_under(b) == [], timeout=30), \
        (sandbox_dirs(b), mounts_under(b))
    assert list(cb.list()) == []

    # a piece sent again over an earlier one
    def overlap(msg, stats):
        if stats["chunks"] == 2:
            msg.offset = 0
        return msg
    e = rpc_error(lambda: move(a, b, sid, tamper=overlap))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "overlaps" in e.details()

    # a piece past the image's end (the export is streamed again: a retry)
    def past_end(msg, stats):
        msg.offset = stats["header"].image_bytes
        return msg
    e = rpc_error(lambda: move(a, b, sid, tamper=past_end))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "past the image's end" in e.details()
    assert h.wait_for(lambda: sandbox_dirs(b) == b_dirs and mounts_under(b) == [], timeout=30)
    assert rpc_error(lambda: cb.get(sid)).code() == grpc.StatusCode.NOT_FOUND

    # A keeps it EXPORTED: Sessions calls say why, the node still counts it
    e = rpc_error(lambda: ca.get(sid))
    assert e.code() == grpc.StatusCode.UNAVAILABLE
    assert e.details() == f"session {sid} is being moved to another node (node drain)"
    assert sid not in [s.id for s in ca.list()]
    apb, astub = agent_stub(a)
    st = astub.GetNodeStats(apb.NodeStatsRequest(), timeout=30)
    assert st.sessions == 1 and st.memory_reserved_bytes > 0

    # releasing a session that is not exported is refused (a live one is never lost)
    other = ca.create().id
    e = rpc_error(lambda: release(a, other, "node-b"))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    ca.delete(other)

    # an agent restart keeps it EXPORTED, and resumable
    a.stop()
    a.start()
    assert rpc_error(lambda: ca.get(sid)).code() == grpc.StatusCode.UNAVAILABLE
    s = resume(a, sid)
    assert s.id == sid and s.state == h.stubs()[0].SESSION_STATE_READY
    r = ca.execute(sid, "print(open('/mnt/data/f.txt').read())")
    assert r.status == "EXEC_STATUS_OK" and r.stdout.strip() == "precious"
    assert len(r.notices()) == 1 and "move" in r.notices()[0] and "cancelled" in r.notices()[0]
    again = ca.execute(sid, "y")
    assert again.notices() == [] and [x.ename for x in again.errors()] == ["NameError"]
    assert resume(a, sid).state == h.stubs()[0].SESSION_STATE_READY  # idempotent
    ca.delete(sid)


def test_malformed_imports_are_refused(agents):
    _, b = agents
    pb, stub = agent_stub(b)
    spb, _ = h.stubs()
    b_dirs = sandbox_dirs(b)

    def imp(*msgs):
        return rpc_error(lambda: stub.ImportSession(iter(msgs), timeout=60))

    def hdr(**kw):
        base = dict(session_id="s-move-bad", image_bytes=GiB, data_bytes=0, from_node="node-a",
                    limits=spb.Limits(disk_bytes=GiB))
        base.update(kw)
        return pb.SessionImage(**base)

    cases = {
        "no header": imp(pb.ImportChunk(offset=0, data=b"x" * 10)),
        "empty stream": imp(),
        "bad id": imp(pb.ImportChunk(header=hdr(session_id="Bad/ID"))),
        "too large": imp(pb.ImportChunk(header=hdr(image_bytes=1 << 40, limits=spb.Limits(disk_bytes=1 << 40)))),
        "size mismatch": imp(pb.ImportChunk(header=hdr(image_bytes=GiB + 4096))),
        "data > image": imp(pb.ImportChunk(header=hdr(data_bytes=GiB + 1))),
        "more than promised": imp(pb.ImportChunk(header=hdr(data_bytes=4)), pb.ImportChunk(offset=0, data=b"x" * 5)),
        "second header": imp(pb.ImportChunk(header=hdr()), pb.ImportChunk(header=hdr())),
        "control chars": imp(pb.ImportChunk(header=hdr(), notice="a\x1b[2Jb")),
        "no image": imp(pb.ImportChunk(header=hdr())),  # only holes: not a file system
    }
    for what, e in cases.items():
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, e.code(), e.details())
    assert "malformed" in cases["bad id"].details()
    assert "1 to 2147483648 bytes" in cases["too large"].details()
    assert "damaged" in cases["no image"].details()
    assert h.wait_for(lambda: sandbox_dirs(b) == b_dirs and mounts_under(b) == [], timeout=30)
    # releasing an unknown id is fine; a malformed one is not
    release(b, "s-never-here", "node-x")
    assert rpc_error(lambda: release(b, "Bad/ID", "")).code() == grpc.StatusCode.INVALID_ARGUMENT
