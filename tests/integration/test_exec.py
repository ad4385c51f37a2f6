"""Executions through a real agent and a real ipykernel: state, rich
outputs, errors, limits (timeout, memory, pids, disk) and bad input."""
import os
import re
import threading
import time

import grpc
import pytest


def test_state_persists_and_streams(client, session):
    assert client.run(session, "x = 41") == ""
    r = client.execute(session, "print(x + 1)\nimport sys; print('warn', file=sys.stderr)\nx + 2")
    assert r.status == "EXEC_STATUS_OK"
    assert r.stdout == "42\n"
    assert r.stderr == "warn\n"
    assert r.mime("text/plain") == b"43"
    assert r.result.execution_count >= 2


def test_png_arrives_as_bytes(client, session):
    r = client.execute(session, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    assert r.status == "EXEC_STATUS_OK", r.errors()
    png = r.mime("image/png")
    assert png is not None, [d for d in r.displays()]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 1000


def test_dataframe_as_html(client, session):
    r = client.execute(session, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert r.status == "EXEC_STATUS_OK", r.errors()
    html = r.mime("text/html")
    assert html is not None and b"<table" in html and b"<td>x</td>" in html
    assert [d.is_result for d in r.displays()] == [True]


def test_exception_with_traceback(client, session):
    r = client.execute(session, "def f():\n    return 1 / 0\nf()")
    assert r.status == "EXEC_STATUS_ERROR"
    (err,) = r.errors()
    assert err.ename == "ZeroDivisionError"
    assert "division by zero" in err.evalue
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in err.traceback]
    assert any("return 1 / 0" in line for line in plain), plain
    # the session goes on
    assert client.run(session, "print('after')") == "after\n"


def test_working_dir_and_volume(client, session):
    out = client.run(session, "import os\nprint(os.getcwd())\nprint(os.path.isdir('/mnt/data'))")
    assert out == "/home/sandbox\nTrue\n"


def test_default_limit_is_120s(client, session):
    assert client.get(session).limits.exec_timeout_ms == 120000


def test_timeout_interrupts_and_session_stays_usable(client, session):
    client.run(session, "kept = 'yes'")
    t0 = time.time()
    r = client.execute(session, "while True: pass", timeout_ms=2000)
    took = time.time() - t0
    assert r.status == "EXEC_STATUS_TIMEOUT", r.result
    assert "limit" in r.result.message
    # limit (2 s) + grace (2 s) + restart headroom; far below 120 s either way
    assert took < 2 + 2 + 15, took
    assert client.run(session, "print(1 + 1)") == "2\n"
    if not r.result.kernel_restarted:
        assert client.run(session, "print(kept)") == "yes\n"


def test_timeout_when_interrupt_is_ignored(client, session):
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: time.sleep(0.05)"
    r = client.execute(session, code, timeout_ms=1500)
    assert r.status == "EXEC_STATUS_TIMEOUT"
    assert r.result.kernel_restarted
    assert client.run(session, "print('back')") == "back\n"


def test_one_execution_at_a_time(client, session):
    errors = []

    def slow():
        try:
            client.execute(session, "import time; time.sleep(3)")
        except grpc.RpcError as e:  # pragma: no cover - should not happen
            errors.append(e)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(1.0)
    with pytest.raises(grpc.RpcError) as ei:
        client.execute(session, "1")
    assert ei.value.code() == grpc.StatusCode.ABORTED
    assert "busy" in ei.value.details()
    t.join()
    assert not errors


def test_interrupt_rpc(client, session):
    res = {}

    def run():
        res["r"] = client.execute(session, "import time\ntime.sleep(60)")

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.5)
    client.interrupt(session)
    t.join(30)
    assert res["r"].status == "EXEC_STATUS_ERROR"
    assert res["r"].errors()[0].ename == "KeyboardInterrupt"


def test_restart_kernel_loses_state(client, session):
    client.run(session, "y = 5")
    client.restart(session)
    r = client.execute(session, "y")
    assert r.status == "EXEC_STATUS_ERROR" and r.errors()[0].ename == "NameError"


def test_output_is_capped_and_says_so(agent, client, session):
    r = client.execute(session, "import sys\nfor i in range(40):\n    sys.stdout.write('x' * (1 << 20))\n    sys.stdout.flush()")
    assert r.status == "EXEC_STATUS_OK"
    assert r.result.output_truncated
    assert any("truncated" in n for n in r.notices())
    assert len(r.stdout) <= 16 << 20


def test_memory_bomb_is_oom_and_others_unaffected(client):
    victim = client.create(memory_bytes=256 << 20).id
    other = client.create().id
    try:
        client.run(other, "z = 7")
        r = client.execute(victim, "a = bytearray(2 << 30)\nprint('survived')")
        assert r.status == "EXEC_STATUS_OUT_OF_MEMORY", (r.status, r.result, r.stdout)
        assert "out of memory" in r.result.message
        assert r.result.kernel_restarted
        assert client.run(victim, "print('usable')") == "usable\n"
        assert client.run(other, "print(z)") == "7\n"
    finally:
        client.delete(victim)
        client.delete(other)


def test_fork_bomb_is_contained(client):
    victim = client.create(pids=64).id
    other = client.create().id
    try:
        code = ("import os, time\nn = 0\ntry:\n    while True:\n        pid = os.fork()\n"
                "        if pid == 0:\n            time.sleep(60)\n            os._exit(0)\n"
                "        n += 1\nexcept OSError as e:\n    print('stopped', n, e.errno)")
        r = client.execute(victim, code, timeout_ms=30000)
        assert r.status == "EXEC_STATUS_OK", (r.result, r.errors())
        words = r.stdout.split()
        assert words[0] == "stopped" and int(words[1]) < 64 and words[2] == "11", r.stdout  # EAGAIN
        assert client.run(other, "print('fine')") == "fine\n"
    finally:
        client.delete(victim)
        client.delete(other)


def test_disk_fill_stops_at_quota(client):
    sid = client.create(disk_bytes=32 << 20, disk_inodes=256).id
    try:
        code = ("import errno\nn = 0\ntry:\n    with open('/mnt/data/fill', 'wb') as f:\n"
                "        while True:\n            f.write(b'x' * (1 << 20)); f.flush(); n += 1\n"
                "except OSError as e:\n    print('bytes', n, e.errno in (errno.ENOSPC, errno.EDQUOT))\n"
                "import os\nos.remove('/mnt/data/fill')\nk = 0\ntry:\n    while True:\n"
                "        open(f'/mnt/data/i{k}', 'w').close(); k += 1\n"
                "except OSError as e:\n    print('inodes', k, e.errno in (errno.ENOSPC, errno.EDQUOT))")
        out = client.run(sid, code, timeout_ms=60000)
        lines = dict((l.split()[0], l.split()[1:]) for l in out.splitlines())
        assert int(lines["bytes"][0]) <= 32 and lines["bytes"][1] == "True", out
        assert int(lines["inodes"][0]) <= 256 and lines["inodes"][1] == "True", out
    finally:
        client.delete(sid)
