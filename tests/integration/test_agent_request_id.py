"""Idempotent CreateSession by client request_id on a lone agent (no
scheduler): a repeat, a race of threads over one id, the same id with
other limits, a deleted session, bad ids, a failed create that leaves no
record, and a retry after the agent is killed with SIGKILL and restarted.
The answers are the scheduler's (test_idempotent_create.py)."""
import hashlib
import json
import os
import time

import grpc
import pytest

import kfleet_harness as h

MiB = 1 << 20
MEM = 256 * MiB


@pytest.fixture(scope="module")
def agent():
    h.require_root()
    a = h.Agent(pool=1, uid_base=410000 + (os.getpid() % 50) * 1000).start()
    yield a
    rc_logs = a.logs()
    a.close()
    assert "Sanitizer" not in rc_logs and "runtime error" not in rc_logs, rc_logs[-5000:]


create = h.create_with_request_id
code_of = h.rpc_error


def records(agent):
    """The agent's request records on disk, as parsed JSON."""
    d = os.path.join(agent.state, "requests")
    out = []
    for name in os.listdir(d):
        with open(os.path.join(d, name)) as f:
            out.append(json.load(f))
    return out


def record_of(agent, rid):
    found = [r for r in records(agent) if r["request_id"] == rid]
    assert len(found) <= 1, found
    return found[0] if found else None


def test_repeat_returns_the_same_session(agent):
    c = agent.client()
    s1 = create(c, "repeat-1")
    try:
        s2 = create(c, "repeat-1")
        assert s2.id == s1.id, (s1.id, s2.id)
        assert [s.id for s in c.list()].count(s1.id) == 1
        rec = record_of(agent, "repeat-1")
        assert rec and rec["session_id"] == s1.id and rec["done"] is True, rec
        assert len(rec["fingerprint"]) == 64 and rec["tenant"] == "", rec
        assert c.run(s1.id, "print(6*7)").strip() == "42"
        # no request id: a new session every time
        s3 = c.create(memory_bytes=MEM)
        c.delete(s3.id)
        assert s3.id != s1.id
    finally:
        c.delete(s1.id)


def test_racing_creates_make_one_session(agent):
    c = agent.client()
    before = {s.id for s in c.list()}
    results, errors = h.race(8, lambda i: create(agent.client(), "race-1").id)
    try:
        assert not errors, errors
        assert len(results) == 8 and len(set(results)) == 1, results
        made = {s.id for s in c.list()} - before
        assert made == set(results), (made, results)
    finally:
        for sid in set(results):
            c.delete(sid)


def test_same_request_id_different_limits(agent):
    c = agent.client()
    s1 = create(c, "mismatch-1")
    try:
        code, msg = code_of(lambda: create(c, "mismatch-1", memory_bytes=512 * MiB))
        assert code == grpc.StatusCode.ALREADY_EXISTS, msg
        assert "request id mismatch-1 was used for a different request" in msg and s1.id in msg, msg
        # labels count too
        code, msg = code_of(lambda: c.stub.CreateSession(c.pb.CreateSessionRequest(
            request_id="mismatch-1", limits=c.pb.Limits(memory_bytes=MEM), labels={"k": "v"}), timeout=60))
        assert code == grpc.StatusCode.ALREADY_EXISTS, msg
        assert create(c, "mismatch-1").id == s1.id
    finally:
        c.delete(s1.id)


def test_deleted_session_is_failed_precondition(agent):
    c = agent.client()
    s1 = create(c, "deleted-1")
    c.delete(s1.id)
    code, msg = code_of(lambda: create(c, "deleted-1"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION, msg
    assert "request id deleted-1 already created session %s, which no longer exists" % s1.id in msg, msg
    assert s1.id not in {s.id for s in c.list()}


@pytest.mark.parametrize("rid,what", [
    ("x" * 129, "129 bytes"),
    ("tab\there", "0x09"),
    ("caf\u00e9", "0xc3"),
])
def test_bad_request_id(agent, rid, what):
    code, msg = code_of(lambda: create(agent.client(), rid))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in msg and what in msg, msg


def test_longest_and_odd_request_ids(agent):
    c = agent.client()
    rid = "../../sb/x y%2F" + "z" * 113
    assert len(rid) == 128
    s1 = create(c, rid)
    try:
        assert create(c, rid).id == s1.id
        assert record_of(agent, rid)["session_id"] == s1.id
    finally:
        c.delete(s1.id)


def test_failed_create_leaves_no_record(agent):
    c = agent.client()
    # more than the agent's --max-timeout (1h): the create is refused
    code, msg = code_of(lambda: create(c, "fails-1", exec_timeout_ms=7200 * 1000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, msg
    assert record_of(agent, "fails-1") is None
    # a retry makes a new attempt, and one that fits works
    s1 = create(c, "fails-1")
    try:
        assert create(c, "fails-1").id == s1.id
    finally:
        c.delete(s1.id)


def test_retry_after_agent_kill9():
    h.require_root()
    a = h.Agent(pool=0, uid_base=460000 + (os.getpid() % 50) * 1000).start()
    try:
        c = a.client()
        s1 = create(c, "kill9-1")
        gone = create(c, "kill9-gone")
        c.delete(gone.id)
        a.kill9()
        # a create cut short by the crash: its record is pending and names a
        # session that was never made, so it is dropped, not "no longer exists"
        name = hashlib.sha256(b"\0" + b"kill9-cut").hexdigest()
        with open(os.path.join(a.state, "requests", name), "w") as f:
            json.dump({"tenant": "", "request_id": "kill9-cut", "session_id": "s-neverstarted",
                       "fingerprint": "0" * 64, "created_unix_ms": int(time.time() * 1000),
                       "done": False}, f)
        a.start()
        c = a.client()
        assert create(c, "kill9-1").id == s1.id
        assert [s.id for s in c.list()] == [s1.id]
        code, msg = code_of(lambda: create(c, "kill9-1", memory_bytes=512 * MiB))
        assert code == grpc.StatusCode.ALREADY_EXISTS, msg
        code, msg = code_of(lambda: create(c, "kill9-gone"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and gone.id in msg, msg
        assert c.run(s1.id, "print(1+1)").strip() == "2"
        assert not os.path.exists(os.path.join(a.state, "requests", name))
        s2 = create(c, "kill9-cut")
        c.delete(s2.id)
        assert s2.id != "s-neverstarted"
    finally:
        logs = a.logs()
        a.close()
    assert "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
