"""Fixtures for the guest side (the worker they run is in loopback.py)."""

import pytest

from loopback import LoopbackWorker
from test_agent import agent  # noqa: F401 (the fixture: a guest agent in front of a sim worker, for test_libcuda too)


@pytest.fixture
def worker(request):
    w = LoopbackWorker()
    request.addfinalizer(w.stop)
    return w


@pytest.fixture
def fresh_driver(worker, monkeypatch):
    """kvmgpu_guest.driver in this process, pointed at the worker, reset before and after."""
    from kvmgpu_guest import driver
    monkeypatch.setenv("KVMGPU_SOCKET", worker.socket)
    monkeypatch.setenv("KVMGPU_SHM", worker.shm)
    driver._reset_for_tests()
    yield driver
    driver._reset_for_tests()
