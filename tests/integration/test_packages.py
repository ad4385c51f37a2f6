"""The .deb packages, end to end on this machine (root, Debian 12):
scripts/package.sh builds them from a release build (KF_PKG_BUILD_DIR, by
default the test build dir with "-pkg" appended, kept between runs), dpkg
installs them, the files land where the systemd units say, and the
installed programs run from their installed paths with the units' own
command lines and settings files (only the paths and ports are made
private): etcd from kfleet-etcd.service, an agent registered in it, a
scheduler, and the installed kfleetctl creates a session and runs code
through the scheduler. While the packages are installed, a build-tree
agent still runs the build tree's sandbox helper. dpkg -r kfleet-agent
ends the sandboxes a stopped agent left running. Finally dpkg --purge
removes them all (a finalizer purges on failure too) and nothing of them
remains.

The module is skipped when a kfleet package is already installed here (it
would not purge someone's installation)."""
import fcntl
import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kfleet_harness as h  # noqa: E402
from kfleet_deploy import env_file, expand, unit_values  # noqa: E402

PACKAGES = ["kfleet-agent", "kfleet-scheduler", "kfleetctl", "kfleet-etcd"]
UNITS = {"agent": "kfleet-agent.service", "scheduler": "kfleet-scheduler.service",
         "etcd": "kfleet-etcd.service"}
UNIT_DIR = "/lib/systemd/system"
SANDBOX = "/usr/libexec/kfleet/kfleet-sandbox"
CTL = "/usr/bin/kfleetctl"
LOCK = "/run/lock/kfleet-test-packages.lock"


# ---- dpkg -------------------------------------------------------------------
def dpkg(*args, check=True):
    """Runs dpkg, waiting out another dpkg/apt run holding its lock."""
    deadline = time.time() + 300
    while True:
        r = subprocess.run(["dpkg"] + list(args), capture_output=True, text=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode != 0 and "lock" in r.stderr and time.time() < deadline:
            time.sleep(2)
            continue
        if check:
            assert r.returncode == 0, f"dpkg {' '.join(args)}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        return r


def status(pkg):
    """dpkg's status of a package ("install ok installed", ...), or "" if unknown."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def purge_all():
    return dpkg("--purge", *PACKAGES, check=False)


@pytest.fixture(scope="module")
def installed(request):
    """Builds and installs the packages; yields {package: [paths]}."""
    h.require_root()
    if not os.path.isdir("/var/lib/dpkg") or shutil.which("dpkg") is None:
        pytest.skip("not a dpkg system")
    there = [p for p in PACKAGES if status(p) not in ("", "unknown ok not-installed")]
    if there:
        pytest.skip(f"kfleet packages are installed here ({', '.join(there)}): this test installs and "
                    "purges them; purge them first (dpkg --purge)")
    lock = open(LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one run of this module at a time on the machine
    request.addfinalizer(lock.close)

    build = os.environ.get("KF_PKG_BUILD_DIR") or h.BUILD.rstrip("/") + "-pkg"
    r = subprocess.run([os.path.join(h.ROOT, "scripts", "package.sh"), build], capture_output=True,
                       text=True, timeout=3600)
    assert r.returncode == 0, f"scripts/package.sh failed:\n{r.stderr[-6000:]}"
    debs = r.stdout.split()
    names = {subprocess.run(["dpkg-deb", "-f", d, "Package"], capture_output=True, text=True,
                            check=True).stdout.strip(): d for d in debs}
    assert sorted(names) == sorted(PACKAGES), names

    # From here on, whatever happens, the packages go.
    request.addfinalizer(purge_all)
    dpkg("-i", *debs)
    files = {p: dpkg("-L", p).stdout.split("\n") for p in PACKAGES}
    return {p: [f for f in fs if f] for p, fs in files.items()}


def exec_start(role, overrides):
    """The installed unit's ExecStart as argv with its EnvironmentFile's
    values (updated by overrides) put in; and that environment."""
    u = unit_values(os.path.join(UNIT_DIR, UNITS[role]))
    env = env_file(u["EnvironmentFile"][0])
    env.update(overrides)
    return expand(u["ExecStart"][0], env), env


class Proc:
    """A process with its output in a log file; stop() ends it."""

    def __init__(self, argv, log, env=None, preexec=None):
        self.log_path = log
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
                                     env=env, preexec_fn=preexec)

    def logs(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def ctl(server, *args, timeout=180):
    return subprocess.run([CTL, "--server", server] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def helpers_of(state_dir):
    """{pid: executable} of the sandbox helpers working for a state dir
    (their --volume is below it)."""
    out = {}
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(os.path.join(d, "cmdline"), "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            if "--volume" in argv and argv[argv.index("--volume") + 1].startswith(state_dir + "/"):
                out[int(d[6:])] = os.readlink(os.path.join(d, "exe"))
        except (OSError, IndexError):
            pass
    return out


# ---- tests --------------------------------------------------------------------
def test_files_land_where_the_units_say(installed):
    every = [f for fs in installed.values() for f in fs]
    for role, name in UNITS.items():
        path = os.path.join(UNIT_DIR, name)
        assert path in every, f"{name} is not in a package"
        u = unit_values(path)
        binary = shlex.split(u["ExecStart"][0])[0]
        assert os.access(binary, os.X_OK), f"{name}: {binary} is not installed"
        assert os.path.isfile(u["EnvironmentFile"][0]), f"{name}: no {u['EnvironmentFile'][0]}"
    assert os.access(SANDBOX, os.X_OK) and SANDBOX in installed["kfleet-agent"]
    assert os.access(CTL, os.X_OK)
    # the settings are conffiles: kept on upgrade, removed by purge
    for pkg, conf in (("kfleet-agent", "agent"), ("kfleet-scheduler", "scheduler"), ("kfleet-etcd", "etcd")):
        conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", pkg], capture_output=True,
                                   text=True, check=True).stdout
        assert f"/etc/kfleet/{conf}.env" in conffiles, f"{pkg}: conffiles are {conffiles!r}"
    # a release build with Debian's hardening flags, not the sanitizer build the tests use
    for b in ("/usr/sbin/kfleet-agent", "/usr/sbin/kfleet-scheduler", SANDBOX, CTL):
        libs = subprocess.run(["ldd", b], capture_output=True, text=True).stdout
        assert "libasan" not in libs and "libubsan" not in libs, f"{b} is a sanitizer build"
        dyn = subprocess.run(["readelf", "-d", b], capture_output=True, text=True).stdout
        assert "BIND_NOW" in dyn and "PIE" in dyn, f"{b} is not linked with -z now as a PIE:\n{dyn}"
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify"] + [os.path.join(UNIT_DIR, u) for u in UNITS.values()],
                           capture_output=True, text=True, timeout=120)
        ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "kfleet" in ln]
        assert r.returncode == 0 and not ours, f"systemd-analyze verify:\n{r.stdout}{r.stderr}"


def test_installed_programs_run_a_session(installed):
    """etcd, an agent and a scheduler started with their units' command
    lines and settings (private paths and ports), then a session made and
    used with the installed kfleetctl."""
    work = tempfile.mkdtemp(prefix="kfpkg-", dir="/var/tmp")
    e = h.Etcd()  # its free ports and data dir; the process is ours
    procs = []  # etcd, agent, scheduler
    agent_argv = None
    try:
        # etcd as kfleet-etcd.service runs it: its user, ETCD_* settings
        etcd_argv, etcd_env = exec_start("etcd", {
            "ETCD_DATA_DIR": e.data,
            "ETCD_LISTEN_CLIENT_URLS": e.url, "ETCD_ADVERTISE_CLIENT_URLS": e.url,
            "ETCD_LISTEN_PEER_URLS": f"http://127.0.0.1:{e.peer_port}",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://127.0.0.1:{e.peer_port}",
        })
        name = etcd_env["ETCD_NAME"]
        etcd_env["ETCD_INITIAL_CLUSTER"] = f"{name}=http://127.0.0.1:{e.peer_port}"
        user = unit_values(os.path.join(UNIT_DIR, UNITS["etcd"]))["User"][0]
        pw = pwd.getpwnam(user)
        os.chown(e.dir, pw.pw_uid, pw.pw_gid)

        def drop():
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        etcd = Proc(etcd_argv, os.path.join(work, "etcd.log"), env=dict(os.environ, **etcd_env), preexec=drop)
        procs.append(etcd)

        def etcd_up():
            try:
                e._call("/v3/kv/range", {"key": e._b64("/probe")}, timeout=1)
                return True
            except OSError:
                return etcd.proc.poll() is not None
        assert h.wait_for(etcd_up, timeout=60, step=0.2) and etcd.proc.poll() is None, \
            f"etcd from {UNITS['etcd']} did not come up:\n{etcd.logs()}"

        # the agent as kfleet-agent.service runs it, joined to that etcd
        node = f"pkg-{os.getpid()}"
        agent_port = h.free_port()
        base_args = env_file("/etc/kfleet/agent.env")["KFLEET_AGENT_ARGS"]
        agent_argv, _ = exec_start("agent", {
            "KFLEET_AGENT_STATE_DIR": os.path.join(work, "s"),
            "KFLEET_AGENT_SOCKET": os.path.join(work, "agent.sock"),
            "KFLEET_AGENT_ARGS": f"{base_args} --pool 0 --etcd {e.url} --listen-tcp 127.0.0.1:{agent_port}"
                                 f" --node-name {node} --uid-base {2000000 + (os.getpid() % 1000) * 1000}",
        })
        assert agent_argv[0] == "/usr/sbin/kfleet-agent"
        agent = Proc(agent_argv, os.path.join(work, "agent.log"))
        procs.append(agent)
        assert h.wait_for(lambda: e.get(f"/kfleet/nodes/{node}") or agent.proc.poll() is not None,
                          timeout=120, step=0.2) and agent.proc.poll() is None, \
            f"the installed agent did not register:\n{agent.logs()}"

        # the scheduler as kfleet-scheduler.service runs it
        sched_port = h.free_port()
        sched_args = env_file("/etc/kfleet/scheduler.env")["KFLEET_SCHEDULER_ARGS"]
        assert "--listen-tcp 127.0.0.1:" in sched_args, sched_args
        sched_argv, _ = exec_start("scheduler", {
            "KFLEET_SCHEDULER_ETCD": e.url,
            "KFLEET_SCHEDULER_SOCKET": os.path.join(work, "scheduler.sock"),
            "KFLEET_SCHEDULER_ARGS": re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{sched_port}", sched_args),
        })
        sched = Proc(sched_argv, os.path.join(work, "scheduler.log"))
        procs.append(sched)
        server = f"127.0.0.1:{sched_port}"
        assert h.wait_for(lambda: ctl(server, "session", "list", timeout=30).returncode == 0
                          or sched.proc.poll() is not None, timeout=60, step=0.3) and sched.proc.poll() is None, \
            f"the installed scheduler did not answer:\n{sched.logs()}"

        # a session through the scheduler, with the installed kfleetctl
        r = ctl(server, "session", "create", "--memory", "1G")
        assert r.returncode == 0, r.stderr + agent.logs()
        sid = r.stdout.strip()
        r = ctl(server, "exec", sid, "import numpy, matplotlib\nx = 41\nprint(x + 1, numpy.arange(3).sum())")
        assert r.returncode == 0 and r.stdout.strip() == "42 3", (r.returncode, r.stdout, r.stderr)
        r = ctl(server, "exec", sid, "print(x)")
        assert r.returncode == 0 and r.stdout.strip() == "41", (r.stdout, r.stderr)
        r = ctl(server, "session", "get", sid)
        assert r.returncode == 0 and re.search(rf"^\s*node:\s+{node}\s*$", r.stdout, re.M), r.stdout
        # the installed agent ran the installed helper
        helpers = helpers_of(os.path.join(work, "s"))
        assert helpers and set(helpers.values()) == {SANDBOX}, helpers
        r = ctl(server, "session", "delete", sid)
        assert r.returncode == 0, r.stderr
    finally:
        for p in reversed(procs[1:]):
            p.stop()
        if agent_argv:  # the sessions and sandboxes of the agent, if any are left
            subprocess.run(agent_argv + ["--purge"], capture_output=True, timeout=300)
        for p in procs[:1]:
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(e.dir, ignore_errors=True)


class BuildTreeAgent(h.Agent):
    """The test build's agent left to find its helper by itself."""

    def args(self):
        a = super().args()
        i = a.index("--sandbox")
        return a[:i] + a[i + 2:]


def test_build_tree_agent_runs_its_own_helper(installed):
    """An installed helper does not shadow the build tree's: the other
    tests' agents (and this one, without --sandbox) run their own."""
    a = BuildTreeAgent(pool=1).start()
    try:
        a.wait_pool(1)
        helpers = helpers_of(a.state)
        assert helpers, "no sandbox helper of the build-tree agent is running:\n" + a.logs()
        assert set(helpers.values()) == {os.path.realpath(h.binary("kfleet-sandbox"))}, helpers
    finally:
        a.close()


def test_remove_ends_the_node_sessions(installed):
    """Sandboxes outlive a stopped agent; removing kfleet-agent ends them
    (its prerm runs kfleet-agent --purge on the state dir of agent.env)
    and keeps the settings (conffiles) until a purge."""
    work = tempfile.mkdtemp(prefix="kfpkg-", dir="/var/tmp")
    state = os.path.join(work, "s")
    conf = "/etc/kfleet/agent.env"
    agent = None
    try:
        with open(conf) as f:
            text = f.read()
        # the state dir an operator chose for this node
        with open(conf, "w") as f:
            f.write(re.sub(r"^KFLEET_AGENT_STATE_DIR=.*$", f"KFLEET_AGENT_STATE_DIR={state}", text, flags=re.M))
        argv, _ = exec_start("agent", {
            "KFLEET_AGENT_SOCKET": os.path.join(work, "agent.sock"),
            "KFLEET_AGENT_ARGS": f"--pool 1 --uid-base {2000500 + (os.getpid() % 1000) * 1000}"})
        assert state in argv
        agent = Proc(argv, os.path.join(work, "agent.log"))
        # a warm sandbox recorded on disk, its helper running
        assert h.wait_for(lambda: (glob.glob(os.path.join(state, "sb", "*", "session.json")) and helpers_of(state))
                          or agent.proc.poll() is not None, timeout=180, step=0.2) and agent.proc.poll() is None, \
            agent.logs()
        agent.stop()
        assert helpers_of(state), "the warm sandbox did not outlive the agent"
        dpkg("-r", "kfleet-agent")
        assert h.wait_for(lambda: not helpers_of(state), timeout=30), \
            f"sandboxes still run after dpkg -r: {helpers_of(state)}"
        sb = os.path.join(state, "sb")
        assert not (os.path.isdir(sb) and os.listdir(sb)), f"left in {sb}: {os.listdir(sb)}"
        assert status("kfleet-agent") == "deinstall ok config-files" and os.path.exists(conf)
        assert not os.path.exists("/usr/sbin/kfleet-agent") and not os.path.exists(SANDBOX)
    finally:
        if agent:
            agent.stop()
        if helpers_of(state) and os.path.exists("/usr/sbin/kfleet-agent"):  # the test failed early
            subprocess.run(["/usr/sbin/kfleet-agent", "--state-dir", state, "--purge"], capture_output=True,
                           timeout=300)
        for pid in helpers_of(state):  # the prerm failed: at least no process is left
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


def test_purge_leaves_nothing(installed):
    r = purge_all()
    assert r.returncode == 0, r.stdout + r.stderr
    for p in PACKAGES:
        assert status(p) in ("", "unknown ok not-installed"), f"{p}: {status(p)}"
    ours = ("/etc/kfleet", "/usr/libexec/kfleet", "/usr/share/doc/kfleet")
    left = [f for fs in installed.values() for f in fs
            if os.path.lexists(f) and (not os.path.isdir(f) or f.startswith(ours))]
    assert not left, f"left after purge: {left}"
    assert not glob.glob("/etc/systemd/system/*/kfleet-*") and not glob.glob("/etc/systemd/system/kfleet-*")
    running = [p for p in glob.glob("/proc/[0-9]*/exe") if _exe(p).startswith(
        ("/usr/sbin/kfleet-", "/usr/libexec/kfleet/", "/usr/bin/kfleetctl"))]
    assert not running, running


def _exe(link):
    try:
        return os.readlink(link)
    except OSError:
        return ""
