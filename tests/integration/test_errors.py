"""Bad input of every kind gets a clear gRPC error, and the agent keeps
running: malformed messages, unknown or malformed ids, invalid UTF-8,
path traversal, oversize uploads, expired sessions."""
import time

import grpc
import pytest


def raw_call(agent, method, payload, stream=False):
    ch = grpc.insecure_channel(f"unix:{agent.sock}")
    ident = lambda b: b  # noqa: E731
    if stream:
        call = ch.unary_stream(method, request_serializer=ident, response_deserializer=ident)
        return list(call(payload, timeout=30))
    call = ch.unary_unary(method, request_serializer=ident, response_deserializer=ident)
    return call(payload, timeout=30)


def field(num, data):
    """A length-delimited protobuf field."""
    assert len(data) < 128
    return bytes([(num << 3) | 2, len(data)]) + data


def test_malformed_message(agent):
    with pytest.raises(grpc.RpcError) as ei:
        raw_call(agent, "/kfleet.v1.Sessions/CreateSession", b"\xff\xff\xff\xff\x0f")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as ei:
        raw_call(agent, "/kfleet.v1.Sessions/Execute", b"\x0a\x50abc", stream=True)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert agent.alive()


def test_unknown_method(agent):
    with pytest.raises(grpc.RpcError) as ei:
        raw_call(agent, "/kfleet.v1.Sessions/Nope", b"")
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unknown_and_malformed_ids(client):
    for call in (client.get, client.delete, lambda s: client.execute(s, "1"),
                 lambda s: client.list_files(s), lambda s: client.download(s, "a")):
        with pytest.raises(grpc.RpcError) as ei:
            call("s-doesnotexist")
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        assert "s-doesnotexist" in ei.value.details()
    with pytest.raises(grpc.RpcError) as ei:
        client.get("../../etc")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_invalid_utf8_code(agent, session):
    payload = field(1, session.encode()) + field(2, b"print('\xff\xfe')")
    with pytest.raises(grpc.RpcError) as ei:
        raw_call(agent, "/kfleet.v1.Sessions/Execute", payload, stream=True)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in ei.value.details()
    assert agent.alive()


def test_bad_limits(client):
    with pytest.raises(grpc.RpcError) as ei:
        client.create(memory_bytes=1 << 50)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "memory_bytes" in ei.value.details()


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "/mnt/database/x", "", "a\x01b"])
def test_path_traversal_rejected(client, session, path):
    for call in (lambda: client.upload(session, path, b"data"), lambda: client.download(session, path)):
        with pytest.raises(grpc.RpcError) as ei:
            call()
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, ei.value.details())


def test_symlinks_are_never_followed(client, session):
    client.run(session, "import os\nos.symlink('/etc/shadow', '/mnt/data/shadow')\n"
                        "os.symlink('../..', '/mnt/data/up')\nos.mkdir('/mnt/data/d')\n"
                        "os.symlink('/etc', '/mnt/data/d/etc')")
    for p in ("shadow", "up/etc/passwd", "d/etc/passwd"):
        with pytest.raises(grpc.RpcError) as ei:
            client.download(session, p)
        assert ei.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
                                   grpc.StatusCode.NOT_FOUND), p
    with pytest.raises(grpc.RpcError):
        client.upload(session, "up/owned", b"x")
    # listing a link shows the link itself, never what it points at
    try:
        listed = [(f.path, f.is_symlink) for f in client.list_files(session, "up")]
        assert listed == [("up", True)], listed
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    # deleting a link removes the link, not its target
    client.delete_file(session, "shadow")
    assert "shadow" not in [f.path for f in client.list_files(session)]
    import os
    assert os.path.exists("/etc/shadow")


def test_oversize_upload(agent, client, session):
    big = b"x" * ((8 << 20) + 1)
    with pytest.raises(grpc.RpcError) as ei:
        client.upload(session, "big.bin", big)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit" in ei.value.details()
    assert "big.bin" not in [f.path for f in client.list_files(session)]


def test_upload_over_quota(client):
    sid = client.create(disk_bytes=4 << 20).id
    try:
        with pytest.raises(grpc.RpcError) as ei:
            client.upload(sid, "fill.bin", b"y" * (6 << 20))
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "quota" in ei.value.details()
    finally:
        client.delete(sid)


def test_expired_session_says_expired(client):
    sid = client.create(idle_timeout_s=2).id
    time.sleep(4.5)
    with pytest.raises(grpc.RpcError) as ei:
        client.execute(sid, "1")
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in ei.value.details() and "idle" in ei.value.details()
