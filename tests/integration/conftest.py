"""Fixtures for the integration suite: one shared agent per module, plus
helpers to make fresh sessions that are deleted afterwards."""
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
