"""The scheduler relays forwarded calls as bytes, untouched: only the first
request message is decoded (for its session id). Seen from outside: a
client-stream message the scheduler never decodes reaches the agent, which
gives the same answer as when called directly; unknown fields pass
through; every call shape still works (unary, server and client streams)."""
import os

import grpc
import pytest

import kfleet_harness as h

MiB = 1 << 20
BASE_UID = 300000 + (os.getpid() % 1000) * 1000


@pytest.fixture(scope="module")
def cluster(etcd):
    port = h.free_port()
    a = h.Agent(pool=1, uid_base=BASE_UID + 2600, extra=[
        "--node-name", "relay-a", "--etcd", etcd.url, "--listen-tcp", f"127.0.0.1:{port}",
        "--advertise", f"127.0.0.1:{port}", "--lease-ttl", "3s"])
    try:
        a.start()
        assert etcd.wait_for(lambda: etcd.get("/kfleet/nodes/relay-a"), timeout=15), a.logs()[-3000:]
        s = h.Scheduler(etcd.url).start()
        yield a, s
        rc, logs = s.close()
        assert rc == 0 and "Sanitizer" not in logs and "runtime error" not in logs, logs[-5000:]
    finally:
        a.close()


def raw_upload(target, messages):
    """UploadFile with each message given as bytes (no encoding)."""
    with grpc.insecure_channel(target) as ch:
        call = ch.stream_unary("/kfleet.v1.Sessions/UploadFile",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as ei:
            call(iter(messages), timeout=60)
        return ei.value.code(), ei.value.details()


def test_undecoded_messages_reach_the_agent(cluster):
    agent, sched = cluster
    pb, _ = h.stubs()
    c = sched.client()
    s = c.create(memory_bytes=256 * MiB)
    try:
        header = pb.UploadFileRequest(
            header=pb.UploadFileHeader(session_id=s.id, path="x.bin")).SerializeToString()
        garbage = b"\xff\xff\xff\xff"  # not a valid UploadFileRequest
        direct = raw_upload("unix:" + agent.sock, [header, garbage])
        relayed = raw_upload("unix:" + sched.sock, [header, garbage])
        assert direct[0] == grpc.StatusCode.INVALID_ARGUMENT, direct
        assert relayed == direct, (relayed, direct)
    finally:
        c.delete(s.id)


def test_unknown_fields_pass_and_every_shape_works(cluster):
    _, sched = cluster
    pb, _ = h.stubs()
    c = sched.client()
    s = c.create(memory_bytes=256 * MiB)
    try:
        # field 99 (unknown to every kfleet message) appended to an ExecuteRequest
        req = pb.ExecuteRequest(session_id=s.id, code="print(1+1)").SerializeToString() + b"\x9a\x06\x03abc"
        with grpc.insecure_channel("unix:" + sched.sock) as ch:
            call = ch.unary_stream("/kfleet.v1.Sessions/Execute", request_serializer=lambda b: b,
                                   response_deserializer=pb.ExecuteEvent.FromString)
            events = list(call(req, timeout=60))
        assert "".join(e.stream.text for e in events if e.WhichOneof("event") == "stream") == "2\n"
        assert events[-1].result.status == pb.EXEC_STATUS_OK
        data = os.urandom(2 * MiB + 3)
        assert c.upload(s.id, "big.bin", data, chunk=128 * 1024).size == len(data)
        assert c.download(s.id, "big.bin") == data
        assert c.get(s.id).execution_count == 1
        with pytest.raises(grpc.RpcError) as ei:
            c.get("s-does-not-exist")
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        c.delete(s.id)
