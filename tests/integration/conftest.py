"""Fixtures for the integration suite: one shared agent per module, plus
helpers to make fresh sessions that are deleted afterwards, a real etcd
per module for the cluster tests (a module may define its own), and three
network namespace "hosts" and an etcd they reach, for the multi-host
tests."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kfleet_harness as h  # noqa: E402


@pytest.fixture(scope="module")
def etcd():
    """A private single-member etcd for the module (modules may override)."""
    h.require_root()
    if not os.access(h.Etcd.BIN, os.X_OK):
        pytest.skip("etcd is not installed")
    e = h.Etcd().start()
    yield e
    e.close()


@pytest.fixture(scope="module")
def certs():
    """A throwaway CA, server and client certificates (h.make_certs)."""
    import shutil
    import tempfile
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d = tempfile.mkdtemp(prefix="kfc-")
    yield h.make_certs(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def agent():
    h.require_root()
    a = h.Agent(pool=1, extra=["--max-upload", "8M"]).start()
    yield a
    a.close()


@pytest.fixture
def client(agent):
    return agent.client()


@pytest.fixture
def session(client):
    s = client.create()
    yield s.id
    try:
        client.delete(s.id)
    except Exception:
        pass


NETNS_HOSTS = 3


@pytest.fixture(scope="module")
def netns_hosts():
    """NETNS_HOSTS hosts, each a network namespace on a private bridge
    (kfleet_harness.NetnsHosts); skips without root, ip/nsenter or etcd."""
    reason = h.netns_available()
    if reason:
        pytest.skip(reason)
    if not os.access(h.Etcd.BIN, os.X_OK):
        pytest.skip("etcd is not installed")
    hs = h.NetnsHosts(NETNS_HOSTS).start()
    try:
        yield hs
    finally:
        hs.close()


@pytest.fixture(scope="module")
def netns_etcd(netns_hosts):
    """An etcd the netns hosts reach at the root namespace's bridge address."""
    e = h.NetnsEtcd(netns_hosts.root_addr).start()
    try:
        yield e
    finally:
        e.close()
