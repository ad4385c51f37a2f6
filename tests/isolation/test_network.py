"""ISOLATION.md line 23, for a session without an egress policy: there is
no network at all. Only `lo` exists; TCP, UDP, ICMP, IPv6 and DNS fail at
once (no route), they do not hang. Lines 24-27 (egress allow-lists) are not
covered here."""
import ipaddress
import subprocess


from conftest import probe, record_of


def host_addresses():
    """The host's own non-loopback addresses: reachable from the host's
    namespace, and so exactly what the session must not reach."""
    addrs = []
    for fam in ("-4", "-6"):
        out = subprocess.run(["ip", "-o", fam, "addr", "show"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            a = ipaddress.ip_interface(line.split()[3]).ip
            if not a.is_loopback and not a.is_link_local:
                addrs.append(str(a))
    return addrs


def test_23_only_loopback_exists(agent, client, session):
    out = probe(client, session, r'''
import socket
out["ifaces"] = [n for _, n in socket.if_nameindex()]
out["proc net dev"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
out["routes v4"] = open("/proc/net/route").read().splitlines()[1:]
out["routes v6"] = [l for l in open("/proc/net/ipv6_route").read().splitlines() if not l.endswith(" lo")]
# lo itself works
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
c = socket.create_connection(s.getsockname(), timeout=2)
out["lo"] = c.getpeername()[0]
c.close(); s.close()
''')
    assert out == {"ifaces": ["lo"], "proc net dev": ["lo"], "routes v4": [], "routes v6": [], "lo": "127.0.0.1"}, out
    # seen from the host: the session's network namespace holds lo alone
    pid1 = record_of(agent, session)["pid1"]
    with open(f"/proc/{pid1}/net/dev") as f:
        assert sorted(ln.split(":")[0].strip() for ln in f.read().splitlines()[2:]) == ["lo"]


def test_23_tcp_udp_ipv6_fail(client, session):
    v4 = ["1.1.1.1", "8.8.8.8", "10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254"]
    v6 = ["2606:4700:4700::1111", "fd00::1"]
    targets = v4 + v6 + host_addresses()
    out = probe(client, session, r'''
import socket
for addr in %r:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    out["tcp " + addr] = try_os(s.connect, (addr, 80))
    s.close()
    u = socket.socket(fam, socket.SOCK_DGRAM)
    out["udp " + addr] = try_os(u.sendto, b"x", (addr, 53))
    out["udp connect " + addr] = try_os(u.connect, (addr, 53))
    u.close()
''' % (targets,), timeout_ms=120000)
    # no route at all: immediate ENETUNREACH (a timeout would mean a route)
    assert out == {k: "ENETUNREACH" for k in out}, out


def test_23_icmp_fails(client, session):
    out = probe(client, session, r'''
import socket
IPPROTO_ICMPV6 = 58
out["raw icmp"] = try_os(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
out["raw icmpv6"] = try_os(socket.socket, socket.AF_INET6, socket.SOCK_RAW, IPPROTO_ICMPV6)
out["raw ip"] = try_os(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
echo = bytes([8, 0, 0xf7, 0xff, 0, 0, 0, 0])
for name, fam, proto, addr in (("ping", socket.AF_INET, socket.IPPROTO_ICMP, "1.1.1.1"),
                               ("ping6", socket.AF_INET6, IPPROTO_ICMPV6, "2606:4700:4700::1111")):
    try:
        s = socket.socket(fam, socket.SOCK_DGRAM, proto)
    except OSError as e:
        out[name + " socket"] = ename(e.errno)
        continue
    out[name + " socket"] = "OK"
    out[name + " send"] = try_os(s.sendto, echo, (addr, 0))
    s.close()
''')
    for raw in ("raw icmp", "raw icmpv6", "raw ip"):
        assert out.pop(raw) == "EPERM", (raw, out)
    for name in ("ping", "ping6"):
        sock = out.pop(name + " socket")
        if sock == "OK":   # ping sockets allowed for this gid: the send must fail
            assert out.pop(name + " send") == "ENETUNREACH", (name, out)
        else:
            assert sock == "EACCES", (name, sock)
    assert out == {}


def test_23_dns_fails(client, session):
    out = probe(client, session, r'''
import socket, time
servers = [l.split()[1] for l in open("/etc/resolv.conf").read().splitlines()
           if l.startswith("nameserver") and len(l.split()) > 1]
out["servers"] = servers
t0 = time.time()
for name in ("example.com", "metadata.google.internal", "kubernetes.default.svc"):
    try:
        socket.getaddrinfo(name, 80)
        out[name] = "resolved"
    except socket.gaierror as e:
        out[name] = "gaierror"
out["took"] = time.time() - t0
for srv in servers:
    fam = socket.AF_INET6 if ":" in srv else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    r = try_os(u.sendto, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01",
               (srv, 53))
    # a name server on the session's own loopback answers nothing
    if r == "OK":
        u.settimeout(1)
        try:
            u.recv(512)
            r = "answered"
        except socket.timeout:
            r = "timeout"
        except OSError as e:
            r = ename(e.errno)
    out["query " + srv] = r
    u.close()
''', timeout_ms=120000)
    servers = out.pop("servers")
    took = out.pop("took")
    for name in ("example.com", "metadata.google.internal", "kubernetes.default.svc"):
        assert out.pop(name) == "gaierror", name
    for srv in servers:
        got = out.pop("query " + srv)
        if ipaddress.ip_address(srv).is_loopback:
            assert got in ("ECONNREFUSED", "timeout"), (srv, got)
        else:
            assert got == "ENETUNREACH", (srv, got)
    assert out == {}
    assert took < 30, took
