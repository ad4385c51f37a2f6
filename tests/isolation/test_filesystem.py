"""ISOLATION.md, "Filesystem and mounts": lines 1, 2 and 5-9 (3 and 4, the
agent's own file handling, are in test_volume_paths.py).

x86_64 syscall numbers are used for the raw calls."""
import os
import platform
import shutil
import stat
import subprocess

import pytest

from conftest import assert_healthy, cgroup_pids, probe, record_of

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="raw syscall numbers in these probes are x86_64's")

WRITE_ERRNOS = {"EROFS", "EACCES", "ENOENT"}


def test_01_writes_to_system_dirs_fail(agent, client, session):
    with open("/proc/sys/kernel/hostname") as f:
        host_hostname = f.read()
    out = probe(client, session, r'''
def create(p):
    return try_os(lambda: _os.close(_os.open(p, _os.O_WRONLY | _os.O_CREAT, 0o644)))
def write(p, data=b"1"):
    def w():
        fd = _os.open(p, _os.O_WRONLY)
        try:
            _os.write(fd, data)
        finally:
            _os.close(fd)
    return try_os(w)
for d in ("/usr", "/usr/bin", "/usr/lib", "/etc", "/etc/ssl/certs", "/proc/sys", "/proc/sys/kernel",
          "/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/"):
    out["create " + d] = create(d + "/kf-probe")
    out["mkdir " + d] = try_os(_os.mkdir, d + "/kf-probe-dir")
for f in ("/usr/bin/python3", "/etc/passwd", "/etc/hosts", "/etc/ld.so.cache"):
    out["write " + f] = write(f)
    out["unlink " + f] = try_os(_os.unlink, f)
    out["rename " + f] = try_os(_os.rename, f, f + ".kf")
for f in ("/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
          "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/modprobe"):
    out["write " + f] = write(f)
for f in ("/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
          "/sys/kernel/uevent_helper"):
    out["write " + f] = write(f)
out["sys exists"] = _os.path.exists("/sys")
''')
    assert out.pop("sys exists") is False
    bad = {k: v for k, v in out.items() if v not in WRITE_ERRNOS}
    assert bad == {}, bad
    # nothing under /sys exists at all
    sys_ops = {k: v for k, v in out.items() if "/sys/" in k and "/proc/sys" not in k}
    assert set(sys_ops.values()) == {"ENOENT"}, sys_ops
    # and nothing changed on the host
    for p in ("/usr/kf-probe", "/usr/bin/kf-probe", "/etc/kf-probe", "/usr/kf-probe-dir", "/etc/passwd.kf"):
        assert not os.path.lexists(p), p
    with open("/proc/sys/kernel/hostname") as f:
        assert f.read() == host_hostname
    assert_healthy(agent, client, session)


def _host_mounts():
    """The host's mount table (mount namespace of PID 1), minus the mounts
    under /var/tmp and /tmp, where the state dirs of this and any other agent
    on the host (their sessions' volumes) come and go all the time."""
    with open("/proc/1/mountinfo") as f:
        return sorted(" ".join(line.split()[3:5]) for line in f
                      if not line.split()[4].startswith(("/var/tmp/", "/tmp/")))


def test_02_mount_umount_pivot_root_chroot_unshare_fail(agent, client, session):
    host_before = _host_mounts()
    rec = record_of(agent, session)
    with open("/proc/self/mountinfo") as f:
        own_before = sorted(ln.split()[4] for ln in f if rec["sbid"] in ln)
    out = probe(client, session, r'''
import subprocess
_os.makedirs("/tmp/kfmnt", exist_ok=True)
before = open("/proc/self/mountinfo").read()
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
out["mount tmpfs"] = sysc(165, b"tmpfs", b"/tmp/kfmnt", b"tmpfs", 0, None)
out["mount bind /"] = sysc(165, b"/", b"/tmp/kfmnt", None, MS_BIND, None)
out["mount proc"] = sysc(165, b"proc", b"/tmp/kfmnt", b"proc", 0, None)
out["remount /mnt/data ro"] = sysc(165, None, b"/mnt/data", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
out["remount / rw"] = sysc(165, None, b"/", None, MS_REMOUNT, None)
out["umount /mnt/data"] = sysc(166, b"/mnt/data", 0)
out["umount -l /mnt/data"] = sysc(166, b"/mnt/data", 2)
out["umount /proc/keys (unmask)"] = sysc(166, b"/proc/keys", 2)
out["umount /proc/sys"] = sysc(166, b"/proc/sys", 2)
out["pivot_root"] = sysc(155, b"/tmp", b"/tmp/kfmnt")
out["chroot"] = sysc(161, b"/tmp")
out["unshare(CLONE_NEWNS)"] = sysc(272, 0x00020000)
out["fsopen"] = sysc(430, b"tmpfs", 0)
out["open_tree"] = sysc(428, -100, b"/usr", 1)
out["move_mount"] = sysc(429, -100, b"/usr", -100, b"/tmp/kfmnt", 0)
out["fsmount"] = sysc(432, 0, 0, 0)
out["mount_setattr"] = sysc(442, -100, b"/mnt/data", 0, None, 0)
for name, argv in (("unshare -m", ["unshare", "-m", "true"]),
                   ("mount -t tmpfs", ["mount", "-t", "tmpfs", "none", "/tmp/kfmnt"]),
                   ("umount /mnt/data", ["umount", "/mnt/data"])):
    p = subprocess.run(argv, capture_output=True, text=True)
    out["cmd " + name] = [p.returncode, p.stderr.strip()]
out["mountinfo unchanged"] = open("/proc/self/mountinfo").read() == before
out["data mounted"] = _os.path.ismount("/mnt/data")
''')
    for name in [k for k in out if k.startswith("cmd ")]:
        rc, err = out.pop(name)
        assert rc != 0, (name, err)
        if name == "cmd unshare -m":
            assert "Operation not permitted" in err, err
    assert out.pop("mountinfo unchanged") is True
    assert out.pop("data mounted") is True
    assert out == {k: "EPERM" for k in out}, out
    assert _host_mounts() == host_before
    with open("/proc/self/mountinfo") as f:
        assert sorted(ln.split()[4] for ln in f if rec["sbid"] in ln) == own_before
    assert not os.path.ismount("/tmp/kfmnt")
    assert_healthy(agent, client, session)


def _host_root(agent, sid):
    """The sandbox's root as seen from the host, through its PID 1."""
    return f"/proc/{record_of(agent, sid)['pid1']}/root"


def test_05_mknod_fails(client, session):
    out = probe(client, session, r'''
import stat
for d in ("/tmp", "/mnt/data", "/home/sandbox", "/dev/shm"):
    out["chr " + d] = try_os(_os.mknod, d + "/kf-null", stat.S_IFCHR | 0o666, _os.makedev(1, 3))
    out["blk " + d] = try_os(_os.mknod, d + "/kf-vda", stat.S_IFBLK | 0o666, _os.makedev(254, 0))
    out["mem " + d] = try_os(_os.mknod, d + "/kf-mem", stat.S_IFCHR | 0o666, _os.makedev(1, 1))
''')
    assert out == {k: "EPERM" for k in out}, out


def test_05_setuid_and_file_caps_give_no_privilege(agent, client, session):
    """A setuid-root binary and a binary with file capabilities (placed from
    the host, as a session could never create them) run without privilege
    from /tmp and from /mnt/data."""
    rec = record_of(agent, session)
    uid = rec["uid"]
    root = _host_root(agent, session)
    placed = []
    for where in ("tmp", "mnt/data"):
        suid = os.path.join(root, where, "kf-suid-cat")
        shutil.copy("/usr/bin/cat", suid)
        os.chown(suid, 0, 0)
        os.chmod(suid, 0o4755)
        placed.append(("/" + where + "/kf-suid-cat", "suid"))
        if shutil.which("setcap"):
            capf = os.path.join(root, where, "kf-cap-cat")
            shutil.copy("/usr/bin/cat", capf)
            subprocess.run(["setcap", "cap_setuid,cap_dac_override,cap_sys_admin+ep", capf], check=True)
            placed.append(("/" + where + "/kf-cap-cat", "caps"))
    out = probe(client, session, r'''
import subprocess
for path in %r:
    st = _os.stat(path)
    p = subprocess.run([path, "/proc/self/status"], capture_output=True, text=True)
    fields = dict(l.split(":\t", 1) for l in p.stdout.splitlines() if ":\t" in l)
    out[path] = {"rc": p.returncode, "err": p.stderr, "mode": st.st_mode & 0o7777, "owner": st.st_uid,
                 "Uid": fields.get("Uid", "").split(), "CapEff": fields.get("CapEff", "").strip(),
                 "CapPrm": fields.get("CapPrm", "").strip(), "NoNewPrivs": fields.get("NoNewPrivs", "").strip()}
''' % ([p for p, _ in placed],))
    for path, kind in placed:
        r = out[path]
        assert r["rc"] == 0, (path, r)
        if kind == "suid":
            assert r["owner"] == 0 and r["mode"] == 0o4755, (path, r)
        assert r["Uid"] == [str(uid)] * 4, (path, r)
        assert r["CapEff"] == "0000000000000000" and r["CapPrm"] == "0000000000000000", (path, r)
        assert r["NoNewPrivs"] == "1", (path, r)
    # a client cannot upload a setuid file either
    client.upload(session, "kf-upload-suid", b"#!/bin/sh\n", mode=0o4755)
    mode = int(client.run(session, "import os; print(os.stat('/mnt/data/kf-upload-suid').st_mode & 0o7777)"))
    assert mode & 0o7000 == 0, oct(mode)


def test_06_kernel_info_files_are_masked(client, session):
    host_has = {p: os.path.exists(p) for p in
                ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")}
    out = probe(client, session, r'''
import stat
for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"):
    try:
        st = _os.stat(p)
    except OSError as e:
        out[p] = {"stat": ename(e.errno)}
        continue
    try:
        with open(p, "rb") as f:
            data = f.read(4096)
        read = len(data)
    except OSError as e:
        read = ename(e.errno)
    out[p] = {"stat": "OK", "chr": stat.S_ISCHR(st.st_mode), "rdev": [_os.major(st.st_rdev), _os.minor(st.st_rdev)],
              "read": read}
''')
    for p, r in out.items():
        if r["stat"] == "ENOENT":
            continue  # absent from this kernel's procfs: nothing to mask
        # masked by /dev/null: a char device 1:3 that reads nothing
        assert r == {"stat": "OK", "chr": True, "rdev": [1, 3], "read": 0}, (p, r)
    # the files that exist on the host are the ones that matter
    assert any(host_has.values())
    for p, there in host_has.items():
        if there:
            assert out[p]["stat"] in ("OK", "ENOENT"), (p, out[p])


def test_06_proc_shows_only_the_sessions_pids(agent, client, session, bystander):
    # a process with a recognisable command line in the other session
    client.run(bystander, "import subprocess\nkf_sleeper = subprocess.Popen(['sleep', '4242.5'])")
    try:
        uid = record_of(agent, session)["uid"]
        out = probe(client, session, r'''
procs = {}
for p in _os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        status = dict(l.split(":\t", 1) for l in open("/proc/%s/status" % p).read().splitlines() if ":\t" in l)
        cmd = open("/proc/%s/cmdline" % p, "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        continue
    procs[p] = {"uid": status["Uid"].split()[0], "cmd": cmd}
out["procs"] = procs
out["self"] = _os.getpid()
''')
        procs = out["procs"]
        assert str(out["self"]) in procs
        assert "1" in procs and procs["1"]["uid"] == "0"
        # PID 1 is the only root process; everything else runs as the session's uid
        others = {p: v for p, v in procs.items() if p != "1"}
        assert all(v["uid"] == str(uid) for v in others.values()), procs
        assert not any("4242.5" in v["cmd"] or "kfleet-agent" in v["cmd"] for v in procs.values()), procs
        # the host sees many more processes than the session does
        assert len([p for p in os.listdir("/proc") if p.isdigit()]) > len(procs)
    finally:
        client.run(bystander, "kf_sleeper.kill(); kf_sleeper.wait()")


DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9)}


def test_07_dev_holds_only_the_harmless_nodes(client, session):
    out = probe(client, session, r'''
import stat
nodes = {}
for dirpath, dirs, files in _os.walk("/dev"):
    for n in dirs + files:
        p = _os.path.join(dirpath, n)
        st = _os.lstat(p)
        kind = ("chr" if stat.S_ISCHR(st.st_mode) else "blk" if stat.S_ISBLK(st.st_mode) else
                "dir" if stat.S_ISDIR(st.st_mode) else "lnk" if stat.S_ISLNK(st.st_mode) else "other")
        nodes[p] = [kind, _os.major(st.st_rdev), _os.minor(st.st_rdev)]
out["nodes"] = nodes
for p in ("/dev/mem", "/dev/kmem", "/dev/port", "/dev/kvm", "/dev/vda", "/dev/sda", "/dev/loop0",
          "/dev/loop-control", "/dev/tty", "/dev/console", "/dev/ptmx", "/dev/net/tun", "/dev/fuse",
          "/dev/vsock", "/dev/vhost-vsock", "/dev/mapper/control"):
    out[p] = try_os(_os.open, p, _os.O_RDONLY)
out["full write"] = try_os(lambda: open("/dev/full", "wb", buffering=0).write(b"x"))
''')
    nodes = out.pop("nodes")
    devices = {p: v for p, v in nodes.items() if v[0] in ("chr", "blk", "other")}
    assert devices == {f"/dev/{n}": ["chr", *mm] for n, mm in DEV_NODES.items()}, devices
    # everything else: /dev/shm (a directory, nothing in it but this session's
    # files) and the fd/stdin/stdout/stderr symlinks
    rest = {p for p in nodes if p not in devices and not p.startswith("/dev/shm/")}
    assert rest <= {"/dev/shm", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/pts"}, rest
    assert out.pop("full write") == "ENOSPC"
    assert out == {k: "ENOENT" for k in out}, out


ALLOWED_FD_PREFIXES = ("socket:[", "pipe:[", "anon_inode:", "/dev/", "/run/kernel/", "/usr/", "/tmp/",
                       "/home/sandbox/", "/mnt/data/", "/proc/")


def test_08_fds_lead_nowhere_outside(agent, client, session):
    code = r'''
import stat, subprocess, sys
def fds_of(pid="self"):
    res = {}
    for fd in _os.listdir("/proc/%s/fd" % pid):
        p = "/proc/%s/fd/%s" % (pid, fd)
        try:
            target = _os.readlink(p)
            st = _os.stat(p)
        except OSError:
            continue  # the fd of the listing itself, closed by now
        same = None
        if target.startswith("/"):
            try:
                st2 = _os.stat(target)
                same = (st.st_dev, st.st_ino) == (st2.st_dev, st2.st_ino)
            except OSError:
                same = False
        res[fd] = {"target": target, "dir": stat.S_ISDIR(st.st_mode), "same": same}
    return res
out["kernel"] = fds_of()
CHILD = """
import os, json
res = {}
for f in os.listdir('/proc/self/fd'):
    try:
        res[f] = os.readlink('/proc/self/fd/' + f)
    except OSError:
        pass
print(json.dumps(res))
"""
child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)
out["child"] = _json.loads(child.stdout)
out["pid1 fds"] = try_os(_os.listdir, "/proc/1/fd")
out["pid1 root"] = try_os(_os.listdir, "/proc/1/root/")
'''
    out = probe(client, session, code)
    for fd, v in out["kernel"].items():
        assert v["target"].startswith(ALLOWED_FD_PREFIXES), (fd, v)
        # a path that names, inside the sandbox, the very file the fd holds
        assert v["same"] in (None, True), (fd, v)
        assert not v["dir"], (fd, v)
    # a child started with default close_fds sees only its stdio and the
    # directory it is listing
    child = out["child"]
    assert set(child) <= {"0", "1", "2", "3"}, child
    assert all(t.startswith(ALLOWED_FD_PREFIXES) for t in child.values()), child
    # PID 1 is root and not dumpable: its fds and root are closed to the kernel
    assert out["pid1 fds"] == "EACCES"
    assert out["pid1 root"] == "EACCES"
    # from the host: no fd of any session process is a host directory
    rec = record_of(agent, session)
    for pid in cgroup_pids(rec["sbid"]):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            assert not stat.S_ISDIR(st.st_mode), (pid, fd, target)


STATUS_WANT = {"CapInh": "0000000000000000", "CapPrm": "0000000000000000",
               "CapEff": "0000000000000000", "CapBnd": "0000000000000000",
               "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}


def test_09_status_no_caps_no_new_privs_seccomp(client, session):
    out = probe(client, session, r'''
import subprocess, sys
def status(text):
    return {k: v.strip() for k, v in (l.split(":", 1) for l in text.splitlines() if ":" in l)}
out["kernel"] = status(open("/proc/self/status").read())
out["child"] = status(subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True).stdout)
out["uid"] = [_os.getuid(), _os.geteuid(), _os.getgid(), _os.getegid(), _os.getgroups()]
''')
    for who in ("kernel", "child"):
        got = {k: out[who].get(k) for k in STATUS_WANT}
        assert got == STATUS_WANT, (who, got)
        assert int(out[who]["Seccomp_filters"]) >= 1, out[who]
    uid, euid, gid, egid, groups = out["uid"]
    assert uid == euid != 0 and gid == egid != 0 and groups == [], out["uid"]
