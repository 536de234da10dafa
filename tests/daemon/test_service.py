"""The daemon's main loop in-process on libvirt's test driver: it reconnects after losing libvirt
and stops cleanly, leaving its sockets closed."""

import threading
import time

import pytest

from kvmgpu.config import Config
from kvmgpu.daemon import api
from kvmgpu.daemon.service import Daemon, Options
from kvmgpu.daemon.udev import is_nvidia
from kvmgpu.domain.events import LibvirtClosed
from kvmgpu.errors import DaemonUnavailable


def wait_for(check, timeout=10.0):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMGPU_SIM_GPUS", "2x8G")
    config = Config(channel_dir=str(tmp_path / "ch"), state_dir=str(tmp_path / "state"),
                    api_socket=str(tmp_path / "api.sock"), metrics_port=_free_port())
    d = Daemon(config, Options(uri="test:///default", run_dir=tmp_path / "run", worker_user="root"))
    d.open()
    loop = threading.Thread(target=d.run, daemon=True)
    loop.start()
    yield d
    d.stop()
    loop.join(10)
    d.close()


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_status_and_reconnect(daemon):
    s = api.query(daemon.config, {"op": "status"})
    assert s["daemon"]["libvirt"] == "connected" and s["daemon"]["uri"] == "test:///default"
    assert [g["total_memory"] for g in s["gpus"]] == [8 << 30, 8 << 30]
    assert s["vgpus"] == []                     # the test driver's running domain has no vGPU

    old = daemon.libvirt.conn
    daemon.events.put(LibvirtClosed("test"))   # as the close callback reports a dead libvirtd
    wait_for(lambda: daemon.libvirt.conn is not None and daemon.libvirt.conn is not old)
    wait_for(lambda: api.query(daemon.config, {"op": "status"})["daemon"]["libvirt"] == "connected")


def test_stop_closes_the_sockets(tmp_path, daemon):
    daemon.stop()
    time.sleep(1.5)
    daemon.close()
    with pytest.raises(DaemonUnavailable):
        api.query(daemon.config, {"op": "status"})


def test_nvidia_uevents():
    assert is_nvidia({"PCI_ID": "10DE:2335"})
    assert is_nvidia({"PCI_ID": "10de:2335"})
    assert not is_nvidia({"PCI_ID": "8086:1234"})
    assert not is_nvidia({})


def test_region_removed_only_once_the_vm_is_not_running(daemon):
    # QEMU leaves /dev/shm/kvmgpu-<vm> behind (it holds the guest's data): the daemon unlinks it
    # when the VM stopped, never while it runs (test:///default's domain "test" runs)
    import os
    import uuid

    from kvmgpu.vgpu import region_path
    gone = region_path(f"kvmgpu-nosuch-{uuid.uuid4().hex[:8]}")
    running = region_path("test")
    made = []
    try:
        for path in (gone, running):
            if not os.path.exists(path):
                open(path, "wb").close()
                made.append(path)
        daemon.release(os.path.basename(gone)[len("kvmgpu-"):])
        assert not os.path.exists(gone)
        if running in made:
            daemon.remove_region("test")
            assert os.path.exists(running)
    finally:
        for path in made:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def test_a_region_left_by_a_vm_that_stopped_while_no_daemon_ran_is_swept(daemon):
    import os
    import uuid

    from kvmgpu.domain import host
    from kvmgpu.vgpu import region_path
    conn = daemon.libvirt.conn
    name = f"kvmgpu-sweep-{uuid.uuid4().hex[:8]}"
    loopback = region_path(f"dev-{uuid.uuid4().hex[:8]}")  # not a domain: never the daemon's to remove
    dom = conn.defineXML(f"<domain type='test'><name>{name}</name><memory>65536</memory>"
                         "<os><type>hvm</type></os></domain>")
    try:
        host.attach(conn, daemon.config, daemon.gpus, name, 256 << 20)
        for path in (region_path(name), loopback):
            open(path, "wb").close()
        with daemon.lock:
            daemon._swept = False
        daemon.reconcile()
        assert not os.path.exists(region_path(name)) and os.path.exists(loopback)
    finally:
        dom.undefine()
        for path in (region_path(name), loopback):
            if os.path.exists(path):
                os.unlink(path)


def _vgpu(daemon, vm):
    from kvmgpu.vgpu import VGpu
    return VGpu(id="6f1c7f7e-0000-4000-8000-000000000000", vm=vm, gpu=0, gpu_uuid=daemon.gpus[0].uuid,
                gmem=1 << 30, compute=100, compute_mode="share", region_size=1 << 20)


def test_a_channel_missing_for_a_moment_is_no_warning_but_one_that_stays_is(daemon, caplog):
    """While QEMU starts or goes, libvirt says the VM runs and its channel is not there: normal."""
    import logging

    from kvmgpu.daemon import service
    vm = "kvmgpu-starting"
    with caplog.at_level(logging.INFO, logger="kvmgpu.daemon"), daemon.lock:
        daemon.ensure(vm, _vgpu(daemon, vm))
        assert [r.levelname for r in caplog.records if "not starting its worker" in r.message] == ["INFO"]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        live = daemon.live[vm]
        live.not_ready_since -= service.NOT_READY_WARN_AFTER       # as if it had lasted
        live.restart_at = 0
        daemon.ensure(vm, _vgpu(daemon, vm))
        warned = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warned) == 1 and "has not bound the channel" in warned[0] and "for 30 s" in warned[0]
        daemon.live.pop(vm)


@pytest.mark.parametrize("adopted", [False, True])
def test_a_worker_whose_channel_closed_before_libvirt_said_the_vm_stopped_is_no_warning(
        daemon, caplog, monkeypatch, adopted):
    """A normal stop: QEMU goes, the worker sees its channel close and exits 0 (an adopted one's
    status is unknown), and libvirt still says the VM runs for a moment."""
    import logging
    import subprocess

    from kvmgpu.daemon.service import LiveVgpu
    from kvmgpu.daemon.workers import Worker
    vm = "kvmgpu-stopping"
    vgpu = _vgpu(daemon, vm)
    ended = subprocess.Popen(["true"])
    ended.wait()
    worker = Worker(spec=daemon._spec(vgpu, daemon.gpus[0], "sim"), pid=ended.pid, started=time.time(),
                    process=None if adopted else ended)
    monkeypatch.setattr(daemon, "_still_runs", lambda name: True)
    with caplog.at_level(logging.INFO, logger="kvmgpu.daemon"), daemon.lock:
        daemon.live[vm] = LiveVgpu(vgpu=vgpu, backend="sim", worker=worker)
        daemon.tick()
        daemon.live.pop(vm)
    assert not [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("its channel closed" in r.message for r in caplog.records)
