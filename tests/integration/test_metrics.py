"""/metrics, /healthz and /readyz of kfleet-agent and kfleet-scheduler
(--metrics-listen), against a real etcd, a real agent registered in it and a
real scheduler: the counters and histograms move with what the cluster does
(a create, an execute, an execution over its time limit, a kernel restart,
an OOM kill),
`promtool check metrics` accepts both outputs, readiness follows etcd
registration and the scheduler's etcd watches, the HTTP side refuses what it
does not serve without harm to the daemon, `kfleetctl top --once` shows the
nodes, and every metric the Grafana dashboard (deploy/grafana/kfleet.json)
queries is one the daemons export."""
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

import kfleet_harness as h

BASE_UID = 300000 + (os.getpid() % 1000) * 1000 + 600
DASHBOARD = os.path.join(h.ROOT, "deploy", "grafana", "kfleet.json")


def http_get(addr, path, timeout=10):
    """(status, body) of GET http://addr/path."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_serving(addr, timeout=30):
    """Waits until addr answers /healthz (it listens just after gRPC does)."""
    def up():
        try:
            return http_get(addr, "/healthz", timeout=2)[0] == 200
        except OSError:
            return False
    assert h.wait_for(up, timeout=timeout), f"nothing serves /healthz on {addr}"


def raw_request(addr, data, timeout=10):
    """Sends raw bytes, returns what came back before the server closed or
    went quiet (b"" if it closed at once)."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
                if b"\r\n\r\n" in out:
                    break
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def parse(text):
    """{(name, frozenset(labels.items())): value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        assert m, f"unparsable line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(3))
    return out


def value(samples, name, **labels):
    """The sum of the series of `name` whose labels include `labels`."""
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert found, f"{name}{labels} not exported"
    return sum(found)


def exported_names(text):
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


def scrape(addr):
    status, body = http_get(addr, "/metrics")
    assert status == 200, body
    return body


def closed_cleanly(proc_close):
    rc, logs = proc_close()
    assert rc == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]


@pytest.fixture(scope="module")
def fleet(etcd):
    tcp, mport = h.free_port(), h.free_port()
    agent = h.Agent(pool=1, uid_base=BASE_UID, extra=[
        "--node-name", "mx-1", "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{tcp}",
        "--lease-ttl", "2s", "--metrics-listen", f"127.0.0.1:{mport}"])
    agent.metrics = f"127.0.0.1:{mport}"
    agent.tcp = f"127.0.0.1:{tcp}"
    sched = None
    try:
        agent.start()
        assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/mx-1"), timeout=20), agent.logs()[-3000:]
        sport, smport = h.free_port(), h.free_port()
        sched = h.Scheduler(etcd.url, extra=["--listen-tcp", f"127.0.0.1:{sport}",
                                             "--metrics-listen", f"127.0.0.1:{smport}"]).start()
        sched.metrics = f"127.0.0.1:{smport}"
        wait_serving(agent.metrics)
        wait_serving(sched.metrics)
        yield {"agent": agent, "sched": sched}
        closed_cleanly(sched.close)
        sched = None
        agent.stop()
        logs = agent.logs()
        assert agent.proc.returncode == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
    finally:
        if sched:
            sched.close()
        agent.close()


def test_healthz_and_readyz(fleet):
    for d in (fleet["agent"], fleet["sched"]):
        assert http_get(d.metrics, "/healthz") == (200, "ok\n")
        assert h.wait_for(lambda: http_get(d.metrics, "/readyz")[0] == 200, timeout=20), http_get(d.metrics, "/readyz")
        assert http_get(d.metrics, "/readyz")[1] == "ready\n"


def test_metrics_move(fleet):
    agent, sched = fleet["agent"], fleet["sched"]
    c = sched.client()
    a0, s0 = parse(scrape(agent.metrics)), parse(scrape(sched.metrics))

    sess = c.create(exec_timeout_ms=1000)
    a1, s1 = parse(scrape(agent.metrics)), parse(scrape(sched.metrics))
    assert value(s1, "kfleet_scheduler_session_creates_total") == value(s0, "kfleet_scheduler_session_creates_total") + 1
    assert value(a1, "kfleet_agent_session_creates_total") == value(a0, "kfleet_agent_session_creates_total") + 1
    # a lone create is a txn of its own (commit_batch.c)
    for series in ("kfleet_scheduler_session_commits_total", "kfleet_scheduler_session_commit_txns_total"):
        assert value(s1, series) == value(s0, series) + 1, series
    assert value(s1, "kfleet_scheduler_session_create_duration_seconds_count") == \
        value(s0, "kfleet_scheduler_session_create_duration_seconds_count") + 1
    assert value(a1, "kfleet_agent_sessions", state="ready") >= 1
    assert value(a1, "kfleet_agent_pool_target") == 1
    assert value(s1, "kfleet_scheduler_nodes", state="ready") == 1
    # the view learns of the new session from the agent's next usage record
    assert h.wait_for(lambda: value(parse(scrape(sched.metrics)), "kfleet_scheduler_cluster_sessions") >= 1,
                      timeout=10)
    # etcd requests were timed on both sides (registration, usage, the commit)
    assert value(a1, "kfleet_etcd_request_duration_seconds_count") > 0
    assert value(s1, "kfleet_etcd_request_duration_seconds_count", op="txn") >= 1
    assert value(s1, "kfleet_drains_in_progress") == 0

    res = c.execute(sess.id, "1 + 1")
    assert res.status == "EXEC_STATUS_OK", res.pb
    a2, s2 = parse(scrape(agent.metrics)), parse(scrape(sched.metrics))
    assert value(a2, "kfleet_agent_execute_duration_seconds_count") == \
        value(a1, "kfleet_agent_execute_duration_seconds_count") + 1
    assert value(a2, "kfleet_agent_executions_total", status="ok") == \
        value(a1, "kfleet_agent_executions_total", status="ok") + 1
    assert value(s2, "kfleet_scheduler_execute_duration_seconds_count") == \
        value(s1, "kfleet_scheduler_execute_duration_seconds_count") + 1

    res = c.execute(sess.id, "import time\ntime.sleep(30)")
    assert res.status == "EXEC_STATUS_TIMEOUT", res.pb
    a3 = parse(scrape(agent.metrics))
    assert value(a3, "kfleet_agent_execution_timeouts_total") == value(a2, "kfleet_agent_execution_timeouts_total") + 1
    assert value(a3, "kfleet_agent_executions_total", status="timeout") == \
        value(a2, "kfleet_agent_executions_total", status="timeout") + 1

    c.restart(sess.id)
    a4 = parse(scrape(agent.metrics))
    assert value(a4, "kfleet_agent_kernel_restarts_total") >= value(a3, "kfleet_agent_kernel_restarts_total") + 1
    c.delete(sess.id)

    # an OOM kill: counted, and the kernel it took is restarted
    small = c.create(memory_bytes=256 << 20)
    try:
        a5 = parse(scrape(agent.metrics))
        res = c.execute(small.id, "a = bytearray(2 << 30)")
        assert res.status == "EXEC_STATUS_OUT_OF_MEMORY", res.pb
        a6 = parse(scrape(agent.metrics))
        assert value(a6, "kfleet_agent_oom_kills_total") >= value(a5, "kfleet_agent_oom_kills_total") + 1
        assert value(a6, "kfleet_agent_executions_total", status="out_of_memory") == \
            value(a5, "kfleet_agent_executions_total", status="out_of_memory") + 1
        assert value(a6, "kfleet_agent_kernel_restarts_total") >= value(a5, "kfleet_agent_kernel_restarts_total") + 1
    finally:
        c.delete(small.id)


def test_promtool_accepts_both(fleet):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the prometheus package (scripts/deps.sh)"
    for d in (fleet["agent"], fleet["sched"]):
        body = scrape(d.metrics)
        p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), \
            f"promtool: {p.stdout}{p.stderr}\n{body}"
        status, _ = http_get(d.metrics, "/metrics")
        assert status == 200


def test_http_refuses_what_it_does_not_serve(fleet):
    for d in (fleet["agent"], fleet["sched"]):
        assert http_get(d.metrics, "/nope")[0] == 404
        assert http_get(d.metrics, "/metrics/x")[0] == 404
        req = urllib.request.Request(f"http://{d.metrics}/metrics", data=b"x=1", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 405
        # a body on GET, an oversized header, garbage: refused or dropped
        r = raw_request(d.metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 4096)
        assert not r.startswith(b"HTTP/1.1 200"), r[:200]
        r = raw_request(d.metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        assert not r.startswith(b"HTTP/1.1 200"), r[:200]
        raw_request(d.metrics, b"\x00\xff\r\n\r\n" * 100)
        # still serving, and the process is alive
        assert http_get(d.metrics, "/healthz") == (200, "ok\n")
    assert fleet["agent"].alive() and fleet["sched"].proc.poll() is None


def kfleetctl(*args):
    p = subprocess.run([h.binary("kfleetctl")] + list(args), capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_kfleetctl_top(fleet):
    srv = fleet["sched"].tcp
    rc, out, err = kfleetctl("--server", srv, "top", "--once")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"kfleet top - {srv} - "), out
    assert re.search(r"^nodes: 1 \(1 ready, 0 cordoned, 0 not ready, 0 draining\)", lines[1]), out
    assert re.search(r"^NODE\s+STATE\s+SESSIONS\s+POOL\s+MEM%\s+CPU%\s+REPORTED", out, re.M), out
    assert re.search(r"^mx-1\s+READY\s+\d+/1000\s+\d/1\s+\d+%\s+\d+%\s+", out, re.M), out

    rc, out, err = kfleetctl("--server", srv, "-o", "json", "top", "--once")
    assert rc == 0, err
    doc = json.loads(out)
    assert [n["id"] for n in doc["nodes"]] == ["mx-1"]
    assert doc["summary"]["nodes"] in (1, "1")

    rc, out, err = kfleetctl("--server", srv, "top", "--count", "2", "--interval", "100ms")
    assert rc == 0, err
    assert out.count("kfleet top - ") == 2, out

    rc, out, err = kfleetctl("--server", srv, "-o", "json", "top")
    assert rc == 2 and "--once" in err, err
    rc, out, err = kfleetctl("--server", srv, "top", "--interval", "0")
    assert rc == 2 and "--interval" in err, err
    rc, out, err = kfleetctl("--server", fleet["agent"].tcp, "top", "--once")
    assert rc == 2 and "not a scheduler" in err, err


def test_dashboard_names_exported_metrics(fleet):
    names = exported_names(scrape(fleet["agent"].metrics)) | exported_names(scrape(fleet["sched"].metrics))
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    exprs.append(v)
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(dash)
    assert len(exprs) >= 10, exprs
    for e in exprs:
        used = re.findall(r"\bkfleet_[a-zA-Z0-9_]+", e)
        assert used, f"expression names no kfleet metric: {e}"
        for n in used:
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            assert n in names or base in names, f"{n} in {e!r} is not exported by the daemons"


def test_readyz_follows_etcd(etcd):
    """An agent whose etcd is down is alive but not ready (not registered);
    a scheduler not ready until it listed the cluster, and again not ready
    while its watches have lost etcd."""
    dead = f"http://127.0.0.1:{h.free_port()}"
    mport = h.free_port()
    agent = h.Agent(pool=0, uid_base=BASE_UID + 100, extra=[
        "--node-name", "mx-dead", "--etcd", dead, "--listen-tcp", f"127.0.0.1:{h.free_port()}",
        "--metrics-listen", f"127.0.0.1:{mport}"])
    sched = None
    try:
        agent.start()
        addr = f"127.0.0.1:{mport}"
        wait_serving(addr)
        status, body = http_get(addr, "/readyz")
        assert status == 503 and "not registered in etcd" in body, body
        assert value(parse(scrape(addr)), "kfleet_agent_registered") == 0
        assert value(parse(scrape(addr)), "kfleet_etcd_request_errors_total") > 0

        smport = h.free_port()
        sched = h.Scheduler(etcd.url, extra=["--metrics-listen", f"127.0.0.1:{smport}"]).start()
        saddr = f"127.0.0.1:{smport}"
        wait_serving(saddr)
        assert h.wait_for(lambda: http_get(saddr, "/readyz")[0] == 200, timeout=20), http_get(saddr, "/readyz")
        etcd.stop()
        try:
            assert h.wait_for(lambda: http_get(saddr, "/readyz")[0] == 503, timeout=30), http_get(saddr, "/readyz")
            status, body = http_get(saddr, "/readyz")
            assert "lost etcd" in body, body
            assert http_get(saddr, "/healthz") == (200, "ok\n")
        finally:
            etcd.start()
        assert h.wait_for(lambda: http_get(saddr, "/readyz")[0] == 200, timeout=60), http_get(saddr, "/readyz")
        closed_cleanly(sched.close)
        sched = None
    finally:
        if sched:
            sched.close()
        agent.close()


def test_metrics_listen_rejected_and_in_use(etcd):
    """A malformed --metrics-listen is a usage error; an address in use stops
    the daemon at start with a message naming it."""
    p = subprocess.run([h.Scheduler.binary(), "--etcd", etcd.url, "--metrics-listen", "nohost"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--metrics-listen" in p.stderr, p.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = f"127.0.0.1:{s.getsockname()[1]}"
        sched = h.Scheduler(etcd.url, extra=["--metrics-listen", busy])
        with pytest.raises(RuntimeError) as e:
            sched.start()
        assert busy in str(e.value), str(e.value)
        sched.close()
