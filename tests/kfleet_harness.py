"""kfleet test harness: builds Python gRPC stubs from the project's .proto,
starts a real kfleet-agent (as root) on a private state dir and socket, and
offers a small client for the tests. Shared by tests/integration and
tests/isolation."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("KF_BUILD_DIR", os.path.join(ROOT, "build"))

_stub_dir = None


def stubs():
    """Generates kfleet/v1/*_pb2*.py once per process and imports them."""
    global _stub_dir
    if _stub_dir is None:
        _stub_dir = tempfile.mkdtemp(prefix="kf-pb-")
        protos = [os.path.join(ROOT, "proto", "kfleet", "v1", p)
                  for p in ("sessions.proto", "agent.proto", "cluster.proto")]
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "proto"),
                        "--python_out", _stub_dir, "--grpc_python_out", _stub_dir] + protos,
                       check=True)
        for d in ("kfleet", os.path.join("kfleet", "v1")):
            open(os.path.join(_stub_dir, d, "__init__.py"), "a").close()
        sys.path.insert(0, _stub_dir)
    from kfleet.v1 import sessions_pb2, sessions_pb2_grpc  # noqa: E402
    return sessions_pb2, sessions_pb2_grpc


def agent_stubs():
    """The node-internal kfleet.v1.Agent stubs (generated with stubs())."""
    stubs()
    from kfleet.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402
    return agent_pb2, agent_pb2_grpc


def cluster_stubs():
    """The kfleet.v1.Cluster stubs (generated with stubs())."""
    stubs()
    from kfleet.v1 import cluster_pb2, cluster_pb2_grpc  # noqa: E402
    return cluster_pb2, cluster_pb2_grpc


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name):
    for cand in (os.path.join(BUILD, "agent", name), os.path.join(BUILD, "agent", "sandbox", name),
                 os.path.join(BUILD, "tools", name)):
        if os.path.exists(cand):
            return cand
    raise FileNotFoundError(f"{name} not built under {BUILD}")


class Agent:
    """A kfleet-agent process with its own state dir and unix socket."""

    def __init__(self, pool=0, extra=(), uid_base=None):
        self.dir = tempfile.mkdtemp(prefix="kfa-", dir="/var/tmp")
        self.state = os.path.join(self.dir, "s")
        self.sock = os.path.join(self.dir, "agent.sock")
        self.pool = pool
        self.extra = list(extra)
        # distinct uid ranges per agent so parallel agents never share a uid
        self.uid_base = uid_base or 300000 + (os.getpid() % 1000) * 1000
        self.proc = None
        self.log_path = os.path.join(self.dir, "agent.log")

    def args(self):
        return [binary("kfleet-agent"), "--state-dir", self.state, "--listen", self.sock,
                "--sandbox", binary("kfleet-sandbox"), "--pool", str(self.pool),
                "--uid-base", str(self.uid_base), "--node-name", "test-node"] + self.extra

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=self.log)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.logs()}")
            if os.path.exists(self.sock):
                try:
                    self.client().list()
                    return
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise TimeoutError("agent did not come up:\n" + self.logs())

    def wait_pool(self, n, timeout=120):
        """Waits until the agent reports n warm sandboxes (from its log)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.logs().count("pool: sandbox") >= n or self._pool_dirs() >= n:
                return
            time.sleep(0.1)
        raise TimeoutError("pool did not fill")

    def _pool_dirs(self):
        d = os.path.join(self.state, "sb")
        if not os.path.isdir(d):
            return 0
        import json
        n = 0
        for e in os.listdir(d):
            try:
                with open(os.path.join(d, e, "session.json")) as f:
                    if json.load(f).get("id") == "":
                        n += 1
            except (OSError, ValueError):
                pass
        return n

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def kill9(self):
        self.stop(signal.SIGKILL)

    def purge(self):
        subprocess.run(self.args() + ["--purge"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)

    def close(self):
        self.stop()
        self.purge()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self):
        return Client(f"unix:{self.sock}")


class ExecResult:
    def __init__(self, events, pb):
        self.events = events
        self.pb = pb
        results = [e.result for e in events if e.WhichOneof("event") == "result"]
        self.result = results[-1] if results else None

    @property
    def status(self):
        return self.pb.ExecStatus.Name(self.result.status) if self.result else None

    @property
    def stdout(self):
        return "".join(e.stream.text for e in self.events
                       if e.WhichOneof("event") == "stream" and e.stream.name == 1)

    @property
    def stderr(self):
        return "".join(e.stream.text for e in self.events
                       if e.WhichOneof("event") == "stream" and e.stream.name == 2)

    def displays(self):
        return [e.display for e in self.events if e.WhichOneof("event") == "display"]

    def mime(self, mime_type):
        for d in self.displays():
            for it in d.items:
                if it.mime_type == mime_type:
                    return it.data
        return None

    def errors(self):
        return [e.error for e in self.events if e.WhichOneof("event") == "error"]

    def notices(self):
        return [e.notice for e in self.events if e.WhichOneof("event") == "notice"]


class Client:
    def __init__(self, target):
        self.pb, grpc_mod = stubs()
        self.channel = grpc.insecure_channel(target)
        self.stub = grpc_mod.SessionsStub(self.channel)

    def create(self, timeout=120, **limits):
        return self.stub.CreateSession(
            self.pb.CreateSessionRequest(limits=self.pb.Limits(**limits)), timeout=timeout)

    def get(self, sid):
        return self.stub.GetSession(self.pb.GetSessionRequest(session_id=sid), timeout=30)

    def list(self):
        return self.stub.ListSessions(self.pb.ListSessionsRequest(), timeout=30).sessions

    def delete(self, sid):
        return self.stub.DeleteSession(self.pb.DeleteSessionRequest(session_id=sid), timeout=60)

    def execute(self, sid, code, timeout_ms=0, rpc_timeout=300):
        events = list(self.stub.Execute(
            self.pb.ExecuteRequest(session_id=sid, code=code, timeout_ms=timeout_ms),
            timeout=rpc_timeout))
        return ExecResult(events, self.pb)

    def run(self, sid, code, **kw):
        """Executes and asserts success; returns stdout."""
        r = self.execute(sid, code, **kw)
        assert r.status == "EXEC_STATUS_OK", (r.status, r.result, r.errors(), r.stderr)
        return r.stdout

    def interrupt(self, sid):
        return self.stub.Interrupt(self.pb.InterruptRequest(session_id=sid), timeout=30)

    def restart(self, sid):
        return self.stub.RestartKernel(self.pb.RestartKernelRequest(session_id=sid), timeout=120)

    def upload(self, sid, path, data, chunk=1 << 20, mode=0):
        def gen():
            yield self.pb.UploadFileRequest(
                header=self.pb.UploadFileHeader(session_id=sid, path=path, mode=mode))
            for i in range(0, len(data), chunk):
                yield self.pb.UploadFileRequest(chunk=data[i:i + chunk])
        return self.stub.UploadFile(gen(), timeout=120)

    def download(self, sid, path):
        return b"".join(c.data for c in self.stub.DownloadFile(
            self.pb.DownloadFileRequest(session_id=sid, path=path), timeout=120))

    def list_files(self, sid, path=""):
        return self.stub.ListFiles(self.pb.ListFilesRequest(session_id=sid, path=path), timeout=30).files

    def delete_file(self, sid, path):
        return self.stub.DeleteFile(self.pb.DeleteFileRequest(session_id=sid, path=path), timeout=30)


class Etcd:
    """A single-member etcd on free loopback ports with a private data dir.
    restart() keeps the ports (and, unless wipe=True, the data), so clients
    configured with url() reconnect to the same address. get/put/delete
    speak etcd's JSON gateway (values are str)."""

    BIN = "/usr/bin/etcd"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kfe-", dir="/var/tmp")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.port:
            self.peer_port = free_port()
        self.proc = None
        self.log_path = os.path.join(self.dir, "etcd.log")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=30):
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.BIN, "--name", "default", "--data-dir", self.data,
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"default={peer}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("etcd exited:\n" + open(self.log_path, errors="replace").read()[-3000:])
            try:
                self._call("/v3/kv/range", {"key": self._b64("/health-probe")}, timeout=1)
                return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("etcd did not come up")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def restart(self, wipe=False, down_s=0.0):
        self.stop()
        if wipe:
            shutil.rmtree(self.data, ignore_errors=True)
        time.sleep(down_s)
        return self.start()

    def close(self):
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _b64(s):
        import base64
        return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()

    def _call(self, path, body, timeout=5):
        import json
        import urllib.request
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def get(self, key):
        """The pair at key as a dict (value: str, lease/version/mod_revision:
        int), or None."""
        import base64
        kvs = self._call("/v3/kv/range", {"key": self._b64(key)}).get("kvs", [])
        if not kvs:
            return None
        kv = kvs[0]
        return {"value": base64.b64decode(kv.get("value", "")).decode(),
                "lease": int(kv.get("lease", 0)), "version": int(kv.get("version", 0)),
                "mod_revision": int(kv.get("mod_revision", 0))}

    def get_json(self, key):
        import json
        kv = self.get(key)
        return None if kv is None else json.loads(kv["value"])

    def put(self, key, value):
        self._call("/v3/kv/put", {"key": self._b64(key), "value": self._b64(value)})

    def delete(self, key):
        self._call("/v3/kv/deleterange", {"key": self._b64(key)})

    def lease_ttl(self, lease):
        """Remaining TTL of a lease in seconds, -1 if it is gone."""
        return int(self._call("/v3/lease/timetolive", {"ID": str(lease)}).get("TTL", -1))

    @staticmethod
    def wait_for(pred, timeout=10, step=0.05):
        return wait_for(pred, timeout, step)


def wait_for(pred, timeout=10, step=0.05):
    """Polls pred() until it returns something truthy (or the time is up);
    returns its last value."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def eventually(fn, timeout=30, step=0.25):
    """fn() until it stops raising grpc.RpcError; returns its value or
    re-raises the last error when the time is up."""
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except grpc.RpcError:
            if time.time() > deadline:
                raise
            time.sleep(step)


def delete_all(client, sessions):
    """Deletes every session (objects with .id), ignoring errors."""
    for s in sessions:
        try:
            client.delete(s.id)
        except grpc.RpcError:
            pass


def make_certs(d):
    """A throwaway CA, a server certificate for 127.0.0.1 and a client
    certificate, all signed by the CA, and a second CA that signed nothing
    of ours. Returns a dict of PEM paths."""
    p = {k: os.path.join(d, k + ".pem") for k in
         ("ca", "ca_key", "server", "server_key", "client", "client_key", "other_ca", "other_ca_key")}

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca, key, cn in (("ca", "ca_key", "kfleet test CA"), ("other_ca", "other_ca_key", "other CA")):
        run("req", "-x509", *ec, "-keyout", p[key], "-out", p[ca], "-days", "1", "-subj", f"/CN={cn}")
    for leaf, key, cn, ext in (("server", "server_key", "127.0.0.1",
                                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                               ("client", "client_key", "kfleet-scheduler",
                                "extendedKeyUsage=clientAuth")):
        csr = os.path.join(d, leaf + ".csr")
        extf = os.path.join(d, leaf + ".ext")
        with open(extf, "w") as f:
            f.write(ext + "\n")
        run("req", *ec, "-keyout", p[key], "-out", csr, "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", csr, "-CA", p["ca"], "-CAkey", p["ca_key"], "-CAcreateserial",
            "-out", p[leaf], "-days", "1", "-extfile", extf)
    return p


def require_root():
    import pytest
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, cgroups, loop devices)")


class Scheduler:
    """A kfleet-scheduler process on a private unix socket (and optionally
    TCP), pointed at an etcd. client() speaks kfleet.v1.Sessions to it."""

    def __init__(self, etcd_url, extra=()):
        self.dir = tempfile.mkdtemp(prefix="kfs-", dir="/var/tmp")
        self.sock = os.path.join(self.dir, "scheduler.sock")
        self.etcd_url = etcd_url
        self.extra = list(extra)
        self.proc = None
        self.log = None
        self.log_path = os.path.join(self.dir, "scheduler.log")

    @staticmethod
    def binary():
        p = os.path.join(BUILD, "scheduler", "src", "kfleet-scheduler")
        if not os.path.exists(p):
            raise FileNotFoundError(f"kfleet-scheduler not built under {BUILD}")
        return p

    def args(self):
        return [self.binary(), "--etcd", self.etcd_url, "--listen", self.sock] + self.extra

    @property
    def tcp(self):
        """The --listen-tcp address given in extra, or None."""
        if "--listen-tcp" in self.extra:
            return self.extra[self.extra.index("--listen-tcp") + 1]
        return None

    def start(self, timeout=30):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=self.log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scheduler exited with {self.proc.returncode}:\n{self.logs()}")
            if os.path.exists(self.sock):
                try:
                    self.client().list()
                    return self
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise TimeoutError("scheduler did not come up:\n" + self.logs())

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None

    def close(self):
        """Stops the scheduler and returns (exit code, log)."""
        self.stop()
        rc, logs = (self.proc.returncode if self.proc else None), self.logs()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc, logs

    def client(self):
        return Client(f"unix:{self.sock}")


def create_with_request_id(client, rid, timeout=120, memory_bytes=256 << 20, **limits):
    """CreateSession with request_id `rid` and these limits (256 MiB of
    memory unless given) through a Client (agent or scheduler)."""
    return client.stub.CreateSession(
        client.pb.CreateSessionRequest(request_id=rid, limits=client.pb.Limits(memory_bytes=memory_bytes, **limits)),
        timeout=timeout)


def rpc_error(fn):
    """Calls fn, which must fail with a gRPC error: (code, details)."""
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    raise AssertionError("the call succeeded; an error was expected")


def race(n, fn, timeout=180):
    """Runs fn(i) for i in range(n) on n threads at once: (results, errors),
    errors as (code, details) of the calls that failed with a gRPC error."""
    results, errors = [], []

    def go(i):
        try:
            results.append(fn(i))
        except grpc.RpcError as e:
            errors.append((e.code(), e.details()))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results, errors


def netns_available():
    """None if network namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs)"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"kf-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return "ip netns is unavailable: " + (r.stderr.strip() or f"exit {r.returncode}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class NetnsHosts:
    """n "hosts", each a network namespace with one veth (eth0) into a
    bridge that lives in a namespace of its own, plus one veth from the
    root namespace into that bridge, so processes in the root namespace
    (etcd, the scheduler) and in the hosts reach each other over a private
    /24 that exists only inside these namespaces (root side: .1, host i:
    .10+i). Names carry the pid and a per-process counter, so parallel runs
    don't collide; close() (also registered with atexit) kills what
    run_in() started and removes the namespaces and the root veth.

    run_in() switches only the network namespace (nsenter --net): `ip netns
    exec` would also remount /sys in a private mount namespace, which hides
    the cgroup hierarchy under /sys/fs/cgroup from the agent."""

    _seq = 0

    def __init__(self, n=3, subnet=None):
        NetnsHosts._seq += 1
        self.tag = f"{os.getpid()}{'' if NetnsHosts._seq == 1 else chr(ord('a') + NetnsHosts._seq - 2)}"
        self.n = n
        self.bridge_ns = f"kf-br-{self.tag}"
        self.hosts = [f"kf-h{i}-{self.tag}" for i in range(n)]
        self.root_if = f"kfr{self.tag}"[:15]
        self.subnet = subnet  # "10.213.X" (the first three octets) or None: pick one
        self.procs = []
        self._made_ns = []
        self._closed = False

    # -- addresses and names ------------------------------------------------
    @property
    def root_addr(self):
        return f"{self.subnet}.1"

    def addr(self, i):
        return f"{self.subnet}.{10 + i}"

    def host_port_if(self, i):
        """The bridge-side end of host i's veth (in bridge_ns)."""
        return f"h{i}"

    @staticmethod
    def _ip(*args, ns=None, check=True):
        cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r

    def _pick_subnet(self):
        used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
        start = os.getpid() % 200
        for k in range(200):
            third = (start + k) % 200 + 20
            pre = f"10.213.{third}."
            if pre not in used and pre not in routes:
                return f"10.213.{third}"
        raise RuntimeError("no free 10.213.X.0/24 test subnet")

    # -- set-up / tear-down -------------------------------------------------
    def start(self):
        import atexit
        atexit.register(self.close)
        try:
            if self.subnet is None:
                self.subnet = self._pick_subnet()
            for ns in [self.bridge_ns] + self.hosts:
                self._ip("netns", "add", ns)
                self._made_ns.append(ns)
                self._ip("link", "set", "lo", "up", ns=ns)
            self._ip("link", "add", "br0", "type", "bridge", ns=self.bridge_ns)
            self._ip("link", "set", "br0", "up", ns=self.bridge_ns)
            # root <-> bridge
            self._ip("link", "add", self.root_if, "type", "veth", "peer", "name", "root",
                     "netns", self.bridge_ns)
            self._ip("link", "set", "root", "master", "br0", ns=self.bridge_ns)
            self._ip("link", "set", "root", "up", ns=self.bridge_ns)
            self._ip("addr", "add", f"{self.root_addr}/24", "dev", self.root_if)
            self._ip("link", "set", self.root_if, "up")
            # host i <-> bridge
            for i, ns in enumerate(self.hosts):
                port = self.host_port_if(i)
                self._ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
                         ns=self.bridge_ns)
                self._ip("link", "set", port, "master", "br0", ns=self.bridge_ns)
                self._ip("link", "set", port, "up", ns=self.bridge_ns)
                self._ip("addr", "add", f"{self.addr(i)}/24", "dev", "eth0", ns=ns)
                self._ip("link", "set", "eth0", "up", ns=ns)
            self.wait_reachable()
        except BaseException:
            self.close()
            raise
        return self

    def reachable(self, i, wait=0.5):
        """Whether host i answers from the root namespace: a TCP connect to
        a port nobody listens on there comes back refused (reachable) or
        times out (not)."""
        import socket
        with socket.socket() as s:
            s.settimeout(wait)
            try:
                s.connect((self.addr(i), 9))
                return True
            except ConnectionRefusedError:
                return True
            except OSError:
                return False

    def wait_reachable(self, timeout=10):
        """Waits until every host answers from the root namespace (the
        bridge ports need a moment to forward)."""
        for i in range(self.n):
            if not wait_for(lambda: self.reachable(i), timeout=timeout, step=0.1):
                raise RuntimeError(f"host {i} ({self.addr(i)}) not reachable from the root namespace")

    def set_link(self, i, up):
        """Cuts (up=False) or restores host i's link, at the bridge port."""
        self._ip("link", "set", self.host_port_if(i), "up" if up else "down", ns=self.bridge_ns)

    def run_in(self, ns, argv, **popen_kw):
        """Starts argv inside network namespace ns (a name from hosts or
        bridge_ns, or an index into hosts); the Popen is tracked and killed
        at close(). nsenter execs argv, so the Popen's pid is argv's."""
        if isinstance(ns, int):
            ns = self.hosts[ns]
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", "--"] + list(argv), **popen_kw)
        self.procs.append(p)
        return p

    def close(self):
        if self._closed:
            return
        self._closed = True
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        for ns in reversed(self._made_ns):
            # whatever else still runs in the namespace would keep it alive
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            self._ip("netns", "del", ns, check=False)
        self._ip("link", "del", self.root_if, check=False)  # gone with the bridge ns, normally
        self._made_ns = []


class NetnsEtcd(Etcd):
    """An Etcd whose clients reach it at host (e.g. NetnsHosts.root_addr);
    its peer URL stays on loopback."""

    def __init__(self, host):
        super().__init__()
        self.host = host

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"


class NetnsAgent(Agent):
    """An Agent started inside host i of a NetnsHosts, registered in etcd
    as node `name` with its TCP listener and advertised address on that
    host's namespace address. Its unix socket is on the shared filesystem,
    so client() still works from the root namespace."""

    def __init__(self, hosts, i, name, etcd_url, port=None, pool=0, uid_base=None, extra=()):
        self.hosts, self.host_index, self.name = hosts, i, name
        self.port = port or free_port()
        self.tcp = f"{hosts.addr(i)}:{self.port}"
        super().__init__(pool=pool, uid_base=uid_base, extra=[
            "--node-name", name, "--etcd", etcd_url, "--listen-tcp", self.tcp,
            "--advertise", self.tcp] + list(extra))

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = self.hosts.run_in(self.host_index, self.args(), stdout=self.log, stderr=self.log)
        if wait:
            self.wait_ready()
        return self


# ---- tenancy: bearer tokens (kfleet-scheduler --tenants) -------------------

class _BearerAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: <value>` to every call."""

    def __init__(self, value):
        self.value = value

    def _details(self, d):
        import collections

        class Details(collections.namedtuple(
                "Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                            "compression")), grpc.ClientCallDetails):
            pass
        md = list(d.metadata or []) + [("authorization", self.value)]
        return Details(d.method, d.timeout, md, d.credentials, getattr(d, "wait_for_ready", None),
                       getattr(d, "compression", None))

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_unary_stream(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_stream_unary(self, cont, d, reqs):
        return cont(self._details(d), reqs)

    def intercept_stream_stream(self, cont, d, reqs):
        return cont(self._details(d), reqs)


class TokenClient(Client):
    """A Client that sends `authorization: Bearer <token>` with every call
    (raw=True: `authorization: <token>` as given, for malformed headers)."""

    def __init__(self, target, token, raw=False):
        super().__init__(target)
        _, grpc_mod = stubs()
        self.channel = grpc.intercept_channel(self.channel, _BearerAuth(token if raw else "Bearer " + token))
        self.stub = grpc_mod.SessionsStub(self.channel)


class TenantScheduler(Scheduler):
    """A Scheduler started with --tenants FILE: ready once it answers at all
    (UNAUTHENTICATED without a token); client(token) sends the token."""

    def start(self, timeout=30):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=self.log)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scheduler exited with {self.proc.returncode}:\n{self.logs()}")
            if os.path.exists(self.sock):
                try:
                    Client(f"unix:{self.sock}").list()
                    return self
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                        return self
            time.sleep(0.05)
        raise TimeoutError("scheduler did not come up:\n" + self.logs())

    def client(self, token=None):
        if token is None:
            return Client(f"unix:{self.sock}")
        return TokenClient(f"unix:{self.sock}", token)


def write_tenants(path, tenants, mode=0o600):
    """Writes a --tenants file: tenants is a list of dicts (name, tokens,
    max_sessions, max_memory_bytes), created with `mode`."""
    import json
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump({"tenants": tenants}, f)
    os.chmod(path + ".tmp", mode)
    os.replace(path + ".tmp", path)
