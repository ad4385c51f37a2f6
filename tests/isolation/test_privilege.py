"""ISOLATION.md, "Privilege and kernel surface": lines 10-15.

Each probe calls the syscall with arguments that would *succeed* for an
unprivileged process on a kernel without the filter, so that EPERM proves
the filter (or a missing privilege) and not a bad argument. x86_64 only."""
import os
import platform
import signal
import subprocess

import pytest

from conftest import assert_bystander, assert_healthy, cgroup_pids, probe, read_cg, record_of

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="raw syscall numbers and machine code in these probes are x86_64's")

NS_FLAGS = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
            "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
            "CLONE_NEWNET": 0x40000000, "CLONE_NEWTIME": 0x00000080}


def test_10_namespace_creation_fails(client, session):
    out = probe(client, session, r'''
import subprocess
SIGCHLD = 17
def clone(flags):
    # raw clone(2) without a new stack: if it were allowed, the child returns
    # 0 here, exactly like fork(), and leaves at once
    r, e = sysr(56, flags | SIGCHLD, 0, 0, 0, 0)
    if r == 0:
        _os._exit(0)
    if r > 0:
        _os.waitpid(r, 0)
    return e
for name, flag in %r.items():
    out["unshare " + name] = sysc(272, flag)
    out["clone " + name] = clone(flag)
    # junk in the high 32 bits must not hide the flag
    out["clone hi " + name] = clone(flag | (0xdead << 32))
out["unshare USER|NS"] = sysc(272, 0x10000000 | 0x00020000)
out["clone USER|NS|PID"] = clone(0x10000000 | 0x00020000 | 0x20000000)
# clone3 carries its flags in memory: refused whole
args = (_ct.c_uint64 * 11)(0x10000000, 0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0, 0)
r, out["clone3 CLONE_NEWUSER"] = sysr(435, _ct.byref(args), _ct.sizeof(args))
if r == 0:
    _os._exit(0)
plain = (_ct.c_uint64 * 11)(0, 0, 0, 0, SIGCHLD, 0, 0, 0, 0, 0, 0)
r, out["clone3 plain"] = sysr(435, _ct.byref(plain), _ct.sizeof(plain))
if r == 0:
    _os._exit(0)
fd = _os.open("/proc/self/ns/net", _os.O_RDONLY)
out["setns own netns"] = sysc(308, fd, 0)
_os.close(fd)
for name, argv in (("unshare -U", ["unshare", "-U", "true"]), ("unshare -r", ["unshare", "-r", "true"]),
                   ("unshare -n", ["unshare", "-n", "true"])):
    p = subprocess.run(argv, capture_output=True, text=True)
    out["cmd " + name] = [p.returncode, p.stderr.strip()]
# ordinary process creation still works
pid = _os.fork()
if pid == 0:
    _os._exit(7)
out["fork"] = _os.waitstatus_to_exitcode(_os.waitpid(pid, 0)[1])
out["ns"] = {n: _os.readlink("/proc/self/ns/" + n) for n in ("user", "mnt", "net", "pid", "ipc", "uts")}
''' % (NS_FLAGS,))
    assert out.pop("fork") == 7
    ns = out.pop("ns")
    for name in [k for k in out if k.startswith("cmd ")]:
        rc, err = out.pop(name)
        assert rc != 0 and "Operation not permitted" in err, (name, rc, err)
    assert out.pop("clone3 CLONE_NEWUSER") == "ENOSYS"
    assert out.pop("clone3 plain") == "ENOSYS"
    assert out == {k: "EPERM" for k in out}, out
    # the session does live in namespaces of its own (not the host's)
    for n in ("mnt", "net", "pid", "ipc", "uts"):
        assert ns[n] != os.readlink(f"/proc/self/ns/{n}"), (n, ns[n])


def test_11_ptrace_and_process_vm_readv_fail(client, session):
    out = probe(client, session, r'''
import signal, time
PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_SEIZE = 0, 16, 0x4206
pid = _os.fork()
if pid == 0:
    time.sleep(30)
    _os._exit(0)
try:
    secret = _ct.create_string_buffer(b"kernel-secret", 64)
    local = _ct.create_string_buffer(64)
    class iovec(_ct.Structure):
        _fields_ = [("base", _ct.c_void_p), ("len", _ct.c_size_t)]
    liov = iovec(_ct.cast(local, _ct.c_void_p), 64)
    riov = iovec(_ct.cast(secret, _ct.c_void_p), 64)
    for target, tpid in (("child", pid), ("pid1", 1), ("self", _os.getpid())):
        out["ptrace attach " + target] = sysc(101, PTRACE_ATTACH, tpid, 0, 0)
        out["ptrace seize " + target] = sysc(101, PTRACE_SEIZE, tpid, 0, 0)
        out["process_vm_readv " + target] = sysc(310, tpid, _ct.byref(liov), 1, _ct.byref(riov), 1, 0)
        out["process_vm_writev " + target] = sysc(311, tpid, _ct.byref(liov), 1, _ct.byref(riov), 1, 0)
    out["ptrace traceme"] = sysc(101, PTRACE_TRACEME, 0, 0, 0)
    pidfd = _os.pidfd_open(pid)
    out["pidfd_getfd child"] = sysc(438, pidfd, 0, 0)
    _os.close(pidfd)
    out["read pid1 mem"] = try_os(lambda: open("/proc/1/mem", "rb").read(1))
finally:
    _os.kill(pid, signal.SIGKILL)
    _os.waitpid(pid, 0)
''')
    # PID 1 (root, not dumpable) is out of reach through /proc as well
    assert out.pop("read pid1 mem") == "EACCES"
    assert out == {k: "EPERM" for k in out}, out


def test_11_kill_minus_one_stays_in_the_session(agent, client, new_session, bystander):
    """kill(-1, SIGKILL) from a forked child of the kernel: it kills every
    process of the session's uid *in the session* (the kernel too), and
    nothing else: not the agent, not another session, not a host process
    that happens to run under the very same uid."""
    sid = new_session()
    rec = record_of(agent, sid)
    uid = rec["uid"]
    client.run(sid, "before = 1")
    # a host process under the session's uid, outside its pid namespace
    host_same_uid = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: (os.setgid(uid), os.setuid(uid)))
    bystander_pids = cgroup_pids(record_of(agent, bystander)["sbid"])
    try:
        r = client.execute(sid, r'''
import os, signal, time
pid = os.fork()
if pid == 0:
    os.kill(-1, signal.SIGKILL)
    os._exit(0)
time.sleep(10)
print("kernel survived")
''', timeout_ms=30000)
        assert r.status == "EXEC_STATUS_KERNEL_DIED", (r.status, r.result, r.stdout)
        assert r.result.kernel_restarted
        assert "kernel survived" not in r.stdout
        # the sandbox (PID 1, root) survived and restarted the kernel
        assert rec["pid1"] in cgroup_pids(rec["sbid"])
        assert host_same_uid.poll() is None, "a host process of the same uid was killed"
        assert agent.alive()
        assert all(os.path.exists(f"/proc/{p}") for p in bystander_pids), "the other session lost processes"
        assert_bystander(client, bystander)
        out = client.execute(sid, "print('back')")
        assert out.status == "EXEC_STATUS_OK" and out.stdout == "back\n", (out.status, out.result)
        assert "before" not in client.run(sid, "print(sorted(globals()))")
    finally:
        host_same_uid.kill()
        host_same_uid.wait()


def test_12_cgroup_mount_and_writes_fail(agent, client, session):
    sbid = record_of(agent, session)["sbid"]
    limit_before = read_cg("memory", sbid, "memory.limit_in_bytes")
    pids_before = read_cg("pids", sbid, "pids.max")
    out = probe(client, session, r'''
_os.makedirs("/tmp/kfcg", exist_ok=True)
out["mount cgroup2"] = sysc(165, b"cgroup2", b"/tmp/kfcg", b"cgroup2", 0, None)
out["mount cgroup v1 memory"] = sysc(165, b"cgroup", b"/tmp/kfcg", b"cgroup", 0, b"memory")
out["mount cgroup v1 release_agent"] = sysc(165, b"cgroup", b"/tmp/kfcg", b"cgroup", 0,
                                            b"none,name=kf,release_agent=/tmp/x")
def write(p, data=b"1"):
    def w():
        fd = _os.open(p, _os.O_WRONLY)
        try:
            _os.write(fd, data)
        finally:
            _os.close(fd)
    return try_os(w)
own = {}
for line in open("/proc/self/cgroup").read().splitlines():
    _, ctrls, path = line.split(":", 2)
    own[ctrls] = path
mem = own.get("memory", "/")
for p in ("/sys/fs/cgroup/memory/release_agent", "/sys/fs/cgroup/memory/notify_on_release",
          "/sys/fs/cgroup/memory%s/cgroup.procs" % mem, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes" % mem,
          "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/pids/pids.max",
          "/sys/fs/cgroup/unified/cgroup.procs"):
    out["write " + p] = write(p)
''')
    mounts = {k: v for k, v in out.items() if k.startswith("mount")}
    writes = {k: v for k, v in out.items() if k.startswith("write")}
    assert mounts == {k: "EPERM" for k in mounts}, mounts
    assert writes == {k: "ENOENT" for k in writes}, writes   # no /sys in the sandbox
    assert read_cg("memory", sbid, "memory.limit_in_bytes") == limit_before
    assert read_cg("pids", sbid, "pids.max") == pids_before
    assert os.path.exists(f"/proc/{record_of(agent, session)['pid1']}")
    assert_healthy(agent, client, session)


def test_13_tiocsti_fails_even_with_high_bits(client, session):
    out = probe(client, session, r'''
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
c = _ct.c_char(b"x")
fd = _os.open("/dev/null", _os.O_RDWR)
for name, req in (("TIOCSTI", TIOCSTI), ("TIOCSTI hi", TIOCSTI | (1 << 32)),
                  ("TIOCSTI junk", TIOCSTI | (0xdeadbeef << 32)), ("TIOCLINUX", TIOCLINUX),
                  ("TIOCLINUX hi", TIOCLINUX | (0xffffffff << 32))):
    for fdname, f in (("devnull", fd), ("stdin", 0)):
        out[name + " " + fdname] = sysc(16, f, req, _ct.byref(c))
# a harmless ioctl on a non-tty still gets the kernel's own answer: the
# filter is narrow (TCGETS -> ENOTTY)
buf = _ct.create_string_buffer(64)
out["TCGETS"] = sysc(16, fd, 0x5401, buf)
_os.close(fd)
''')
    assert out.pop("TCGETS") == "ENOTTY"
    assert out == {k: "EPERM" for k in out}, out


# mov eax, NR ; mov ebx, ARG ; int 0x80 ; ret
def _int80(nr, arg=0):
    return (b"\xb8" + nr.to_bytes(4, "little") + b"\xbb" + arg.to_bytes(4, "little") + b"\xcd\x80\xc3")


INT80_CHILD = r'''
import ctypes, mmap, sys
code = bytes.fromhex(sys.argv[1])
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
f = ctypes.CFUNCTYPE(ctypes.c_int)(addr)
print(f())
'''


def test_14_int80_32bit_syscalls_blocked(client, session):
    calls = {"getpid": _int80(20), "unshare CLONE_NEWUSER": _int80(310, 0x10000000),
             "getuid": _int80(24), "keyctl": _int80(288, 0)}
    out = probe(client, session, r'''
import subprocess, sys
for name, code in %r.items():
    p = subprocess.run([sys.executable, "-c", %r, code], capture_output=True, text=True)
    out[name] = [p.returncode, p.stdout.strip(), p.stderr.strip()[-300:]]
# x32 ABI (syscall number with bit 30 set) on the native instruction
out["x32 getpid"] = sysc(0x40000000 | 39)
''' % ({k: v.hex() for k, v in calls.items()}, INT80_CHILD))
    assert out.pop("x32 getpid") == "ENOSYS"
    if all(v[0] == -signal.SIGSEGV for v in out.values()):
        pytest.skip("this kernel has no IA-32 emulation: int 0x80 faults before any syscall runs, "
                    "so the filter's bad-arch action can't be exercised")
    assert out == {k: [0, "-38", ""] for k in out}, out   # -ENOSYS for each


def test_15_kernel_surface_syscalls_fail(client, session):
    out = probe(client, session, r'''
import mmap
KEY_SPEC_SESSION_KEYRING, KEY_SPEC_PROCESS_KEYRING = -3, -2
out["keyctl get session keyring"] = sysc(250, 0, KEY_SPEC_SESSION_KEYRING, 1)
out["keyctl join session keyring"] = sysc(250, 1, None)
out["add_key"] = sysc(248, b"user", b"kf", b"data", 4, KEY_SPEC_PROCESS_KEYRING)
out["request_key"] = sysc(249, b"user", b"kf", None, 0)
# a trivial socket filter program: "return 0"
insns = (_ct.c_uint64 * 2)(0x00000000000000b7, 0x0000000000000095)
lic = _ct.create_string_buffer(b"GPL")
attr = (_ct.c_uint8 * 128)()
_ct.memmove(attr, (_ct.c_uint32 * 2)(1, 2), 8)                  # prog_type SOCKET_FILTER, insn_cnt 2
_ct.memmove(_ct.addressof(attr) + 8, _ct.byref(_ct.c_uint64(_ct.addressof(insns))), 8)
_ct.memmove(_ct.addressof(attr) + 16, _ct.byref(_ct.c_uint64(_ct.addressof(lic))), 8)
out["bpf prog load"] = sysc(321, 5, attr, 128)
out["bpf map create"] = sysc(321, 0, (_ct.c_uint32 * 8)(2, 4, 4, 1), 32)
# perf_event_open: software task-clock on ourselves (allowed at paranoid <= 2)
pattr = (_ct.c_uint8 * 128)()
_ct.memmove(pattr, (_ct.c_uint32 * 4)(1, 128, 1, 0), 16)           # type SOFTWARE, size, config TASK_CLOCK
out["perf_event_open"] = sysc(298, pattr, 0, -1, -1, 0)
UFFD_USER_MODE_ONLY = 1
out["userfaultfd"] = sysc(323, _os.O_CLOEXEC | UFFD_USER_MODE_ONLY)
params = (_ct.c_uint8 * 120)()
out["io_uring_setup"] = sysc(425, 4, params)
out["io_uring_enter"] = sysc(426, 0, 0, 0, 0, None, 0)
out["io_uring_register"] = sysc(427, 0, 0, None, 0)
out["kexec_load"] = sysc(246, 0, 0, None, 0)
out["kexec_file_load"] = sysc(320, -1, -1, 0, None, 0)
out["init_module"] = sysc(175, None, 0, b"")
fd = _os.open("/dev/null", _os.O_RDONLY)
out["finit_module"] = sysc(313, fd, b"", 0)
_os.close(fd)
out["delete_module"] = sysc(176, b"loop", 0)
''')
    assert out == {k: "EPERM" for k in out}, out
