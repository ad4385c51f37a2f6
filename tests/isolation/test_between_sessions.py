"""ISOLATION.md line 16: two sessions cannot pass data to each other. Session
A sets up each channel (and checks from inside A that it works); session B
must not be able to see or use it."""
import os

import pytest

from conftest import probe, record_of


@pytest.fixture(scope="module")
def pair(client):
    a = client.create().id
    b = client.create().id
    yield a, b
    for sid in (a, b):
        try:
            client.delete(sid)
        except Exception:
            pass


def test_16_dev_shm_and_posix_shm_not_shared(client, pair):
    a, b = pair
    out_a = probe(client, a, r'''
from multiprocessing import shared_memory
open("/dev/shm/kf-chan", "w").write("from A")
kf_shm = shared_memory.SharedMemory(name="kf-posix-chan", create=True, size=4096)
kf_shm.buf[:6] = b"from A"
out["listing"] = sorted(_os.listdir("/dev/shm"))
''')
    assert out_a["listing"] == ["kf-chan", "kf-posix-chan"]
    out_b = probe(client, b, r'''
from multiprocessing import shared_memory
out["listing"] = sorted(_os.listdir("/dev/shm"))
out["open"] = try_os(open, "/dev/shm/kf-chan")
out["posix shm"] = try_os(shared_memory.SharedMemory, name="kf-posix-chan")
''')
    assert out_b == {"listing": [], "open": "ENOENT", "posix shm": "ENOENT"}, out_b


def test_16_sysv_ipc_not_shared(client, pair):
    a, b = pair
    key = 0x4B460016
    out_a = probe(client, a, r'''
IPC_CREAT = 0o1000
_libc.shmget.restype = _ct.c_int
out["shm"] = _libc.shmget(%d, 4096, IPC_CREAT | 0o666)
out["msg"] = _libc.msgget(%d, IPC_CREAT | 0o666)
out["sem"] = _libc.semget(%d, 1, IPC_CREAT | 0o666)
out["visible"] = open("/proc/sysvipc/shm").read().count("%d")
''' % (key, key, key, key))
    assert out_a["shm"] >= 0 and out_a["msg"] >= 0 and out_a["sem"] >= 0, out_a
    assert out_a["visible"] == 1
    out_b = probe(client, b, r'''
IPC_STAT = 2
def errno_of(r):
    return "OK" if r >= 0 else ename(_ct.get_errno())
buf = _ct.create_string_buffer(512)
out["shmget"] = errno_of(_libc.shmget(%d, 0, 0))
out["msgget"] = errno_of(_libc.msgget(%d, 0))
out["semget"] = errno_of(_libc.semget(%d, 0, 0))
out["shmctl A's id"] = errno_of(_libc.shmctl(%d, IPC_STAT, buf))
out["shmat A's id"] = errno_of(_ct.c_long(_libc.shmat(%d, None, 0)).value)
out["msgctl A's id"] = errno_of(_libc.msgctl(%d, IPC_STAT, buf))
out["proc shm"] = open("/proc/sysvipc/shm").read().count("%d")
''' % (key, key, key, out_a["shm"], out_a["shm"], out_a["msg"], key))
    assert out_b == {"shmget": "ENOENT", "msgget": "ENOENT", "semget": "ENOENT", "shmctl A's id": "EINVAL",
                     "shmat A's id": "EINVAL", "msgctl A's id": "EINVAL", "proc shm": 0}, out_b
    # and the host's IPC namespace holds nothing of A's either
    with open("/proc/sysvipc/shm") as f:
        assert "%d" % key not in f.read()


def test_16_abstract_unix_socket_not_reachable(client, pair):
    a, b = pair
    out_a = probe(client, a, r'''
import socket
kf_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
kf_listener.bind(b"\0kf-abstract-chan")
kf_listener.listen(8)
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
out["connect in A"] = try_os(c.connect, b"\0kf-abstract-chan")
c.close()
kf_dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
kf_dgram.bind(b"\0kf-abstract-dgram")
''')
    assert out_a == {"connect in A": "OK"}
    out_b = probe(client, b, r'''
import socket
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
out["connect"] = try_os(c.connect, b"\0kf-abstract-chan")
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
out["sendto"] = try_os(d.sendto, b"x", b"\0kf-abstract-dgram")
out["listed"] = "kf-abstract" in open("/proc/net/unix").read()
''')
    assert out_b == {"connect": "ECONNREFUSED", "sendto": "ECONNREFUSED", "listed": False}, out_b


def test_16_files_of_the_other_session_unreachable(agent, client, pair):
    a, b = pair
    rec_a = record_of(agent, a)
    host_data_a = os.path.join(agent.state, "sb", rec_a["sbid"], "data")
    probe(client, a, r'''
for d in ("/mnt/data", "/tmp", "/home/sandbox"):
    open(d + "/kf-a-secret", "w").write("from A")
''')
    out_b = probe(client, b, r'''
paths = ["/mnt/data/kf-a-secret", "/tmp/kf-a-secret", "/home/sandbox/kf-a-secret",
         %r + "/kf-a-secret", %r]
for p in paths:
    out[p] = try_os(open, p)
found = []
for top in ("/mnt", "/tmp", "/home", "/run", "/dev/shm", "/proc"):
    for dirpath, dirs, files in _os.walk(top):
        if dirpath.startswith("/proc/") and dirpath.count("/") > 2:
            dirs[:] = []
        if "kf-a-secret" in files:
            found.append(dirpath)
out["found"] = found
''' % (host_data_a, os.path.join(agent.state, "sb", rec_a["sbid"], "session.json")))
    assert out_b.pop("found") == []
    assert out_b == {k: "ENOENT" for k in out_b}, out_b
    # and the agent never serves one session's file through another
    names = {f.path for f in client.list_files(b)}
    assert "kf-a-secret" not in names


def test_16_keyrings_and_vsock_refused(client, pair):
    a, b = pair
    code = r'''
import socket
out["add_key"] = sysc(248, b"user", b"kf-chan", b"from A", 6, -3)
out["keyctl search"] = sysc(250, 10, -3, b"user", b"kf-chan", 0)
out["request_key"] = sysc(249, b"user", b"kf-chan", None, 0)
out["vsock stream"] = try_os(socket.socket, 40, socket.SOCK_STREAM)
out["vsock dgram"] = try_os(socket.socket, 40, socket.SOCK_DGRAM)
out["proc keys"] = open("/proc/keys").read()
'''
    for sid in (a, b):
        out = probe(client, sid, code)
        assert out.pop("proc keys") == ""
        assert out == {k: "EPERM" for k in out}, (sid, out)


def test_16_flock_on_shared_read_only_inodes(client, pair):
    """The system binds (/usr, parts of /etc) are the same inodes in every
    session. flock() needs only a read-only fd, so a lock A holds would be a
    bit B can read, unless locks on them are refused or not shared."""
    a, b = pair
    targets = ["/usr/bin/python3", "/usr/lib/os-release", "/etc/ld.so.cache", "/etc/python3",
               "/dev/null", "/dev/urandom"]
    out_a = probe(client, a, r'''
import fcntl
kf_locks = []
for p in %r:
    try:
        fd = _os.open(p, _os.O_RDONLY)
    except OSError as e:
        out[p] = ename(e.errno)
        continue
    kf_locks.append(fd)
    out[p] = try_os(fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
''' % (targets,))
    try:
        out_b = probe(client, b, r'''
import fcntl
for p in %r:
    fd = _os.open(p, _os.O_RDONLY)
    try:
        out[p] = try_os(fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        _os.close(fd)
''' % (targets,))
    finally:
        client.run(a, "import os\nfor fd in kf_locks: os.close(fd)\n")
    # either nobody can lock these files, or A's lock is invisible to B
    channel = {p: (out_a[p], out_b[p]) for p in targets if out_a[p] == "OK" and out_b[p] != "OK"}
    assert channel == {}, ("a lock held by session A on a shared read-only file blocks session B: "
                           "a cross-session channel", channel)
