"""A real `kvmgpu worker --backend sim` process, spoken to with the raw protocol over its socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import HEADER, HEADER_SIZE, QUEUED, Goodbye, Kind, Op, Welcome
from kvmgpu_wire.region import Region

from rawguest import Guest, floats, unfloats

KVMGPU = [sys.executable, "-c", "from kvmgpu.cli import main; main()"]


def socket_transport(sock: socket.socket):
    def transport(data: bytes) -> bytes:
        sock.sendall(data)
        _, kind, flags, *_ = HEADER.unpack_from(data)
        if kind == Kind.GOODBYE or (kind == Kind.CALL and flags & QUEUED):
            return b""
        head = _read(sock, HEADER_SIZE)
        return head + _read(sock, HEADER.unpack(head)[-1])
    return transport


def _read(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the worker closed the connection")
        buf += chunk
    return buf


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class WorkerProcess:
    def __init__(self, *extra: str, gmem: str = "64M", socket_path: str | None = None,
                 shm_path: str | None = None, command: list[str] = KVMGPU):
        self.dir = Path(tempfile.mkdtemp(prefix="kvw", dir="/tmp"))  # short: unix socket paths
        self.socket = socket_path or str(self.dir / "ch.sock")
        self.shm = shm_path or str(self.dir / "region")
        self.stats = str(self.dir / "stats.json")
        self.stderr = open(self.dir / "stderr", "w+")
        self.proc = subprocess.Popen(
            [*command, "worker", "--backend", "sim", "--gmem", gmem, "--socket", self.socket,
             "--shm", self.shm, "--region-size", "8M", "--vm", "t", "--stats-file", self.stats, *extra],
            stderr=self.stderr, stdout=subprocess.DEVNULL)

    def wait_listening(self):
        wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None, "the socket")
        assert self.proc.poll() is None, self.log()

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(15)
        s.connect(self.socket)
        return s

    def guest(self, sock: socket.socket, window: int = 1 << 20) -> Guest:
        g = Guest(socket_transport(sock), self.region(), 1)
        assert isinstance(g.hello(window=window), Welcome)
        return g

    def region(self) -> Region:
        if not hasattr(self, "_region"):
            self._region = Region.open_file(self.shm)
        return self._region

    def log(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def worker():
    procs = []

    def start(*extra, **kw) -> WorkerProcess:
        w = WorkerProcess(*extra, **kw)
        procs.append(w)
        return w
    yield start
    for w in procs:
        w.kill()


def test_vector_add_over_the_socket(worker):
    w = worker()
    w.wait_listening()
    with w.connect() as sock:
        g = w.guest(sock)
        assert g.welcome.device["total_memory"] == 64 << 20
        n = 1000
        a, b, c = g.alloc(4 * n), g.alloc(4 * n), g.alloc(4 * n)
        g.put(a, floats(range(n)))
        g.put(b, floats(range(0, 2 * n, 2)))
        m = g.load(offset=256 * 1024)
        f, nparams = g.function(m, "vector_add")
        assert nparams == 4
        g.call(Op.LAUNCH, f, (n + 255) // 256, 1, 1, 256, 1, 1, 0, 0,
               blob=struct.pack("<QQQi", a, b, c, n), queued=True)
        assert unfloats(g.get(c, 4 * n)) == [3.0 * i for i in range(n)]
        g.window.view.release()


def test_malformed_frame_closes_only_that_connection(worker):
    w = worker()
    w.wait_listening()
    with w.connect() as good, w.connect() as bad:
        g = w.guest(good, window=4096)
        p = g.alloc(64)
        bad.sendall(b"\xde\xad" + bytes(30))
        assert bad.recv(100) == b""  # closed by the worker
        g.put(p, b"x" * 64)
        assert g.get(p, 64) == b"x" * 64
        with w.connect() as again:
            g2 = w.guest(again, window=4096)
            assert g2.ok(Op.MEM_GET_INFO) == ((64 << 20) - 512, 64 << 20)  # 64 bytes, charged 512
            g2.window.view.release()
        g.window.view.release()
    assert "protocol violation" in w.log()


def test_sigterm_exits_cleanly_and_removes_what_it_created(worker):
    w = worker()
    w.wait_listening()
    with w.connect() as sock:
        g = w.guest(sock, window=4096)
        g.alloc(1024)
        g.window.view.release()
        w._region.close()
        wait_for(lambda: os.path.exists(w.stats) and
                 json.loads(Path(w.stats).read_text())["memory"]["used"] == 1024, "stats")
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(15) == 0, w.log()
    assert not os.path.exists(w.socket) and not os.path.exists(w.shm)
    stats = json.loads(Path(w.stats).read_text())
    assert stats["memory"]["used"] == 0 and stats["memory"]["limit"] == 64 << 20
    assert stats["calls"]["MEM_ALLOC"] == 1 and stats["sessions"]["started"] == 1
    log = w.log()
    assert "session 1:1 start" in log and "session 1:1 end" in log


@pytest.fixture
def qemu_chardev():
    """(path, listening socket): plays QEMU's chardev in bind mode, for a worker that connects."""
    d = Path(tempfile.mkdtemp(prefix="kvq", dir="/tmp"))
    path = str(d / "qemu.sock")
    qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qemu.bind(path)
    qemu.listen(1)
    qemu.settimeout(15)
    yield path, qemu
    qemu.close()
    shutil.rmtree(d, ignore_errors=True)


def test_connects_to_a_listening_channel_and_exits_when_it_closes(worker, qemu_chardev):
    path, qemu = qemu_chardev
    w2 = worker(socket_path=path)
    conn, _ = qemu.accept()  # the worker maps its region before it connects
    conn.settimeout(15)
    g = w2.guest(conn, window=4096)
    g.alloc(16)
    g.window.view.release()
    w2._region.close()
    conn.close()
    assert w2.proc.wait(15) == 0, w2.log()
    assert os.path.exists(path)  # not the worker's to remove


@pytest.mark.parametrize("args, text", [
    (["--gmem", "12X"], "unknown unit"),
    (["--gmem", "0"], "more than zero"),
    (["--backend", "opencl"], "unknown backend"),
    (["--compute", "0"], "between 1 and 100"),
])
def test_bad_options_exit_non_zero(tmp_path, args, text):
    base = {"--backend": "sim", "--gmem": "1G", "--socket": str(tmp_path / "s"), "--shm": str(tmp_path / "r")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    r = subprocess.run([*KVMGPU, "worker", *[x for kv in base.items() for x in kv]],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and text in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "s") and not os.path.exists(tmp_path / "r")


def _trigger_sticky(g: Guest) -> None:
    """Write far out of bounds (the sim: CUDA_ERROR_ILLEGAL_ADDRESS, sticky like CUDA's)."""
    p = g.alloc(64)
    m = g.load(offset=256 * 1024)
    f, _ = g.function(m, "write_oob")
    g.call(Op.LAUNCH, f, 1, 1, 1, 1, 1, 1, 0, 0, blob=struct.pack("<Qq", p, 1 << 40), queued=True)
    assert g.call(Op.CTX_SYNCHRONIZE).status == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    assert g.call(Op.MEM_ALLOC, 64).status == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS  # sticky


def _vector_add_works(g: Guest) -> None:
    n = 1000
    a, b, c = g.alloc(4 * n), g.alloc(4 * n), g.alloc(4 * n)
    g.put(a, floats(range(n)))
    g.put(b, floats(range(0, 2 * n, 2)))
    m = g.load(offset=256 * 1024)
    f, _ = g.function(m, "vector_add")
    g.call(Op.LAUNCH, f, (n + 255) // 256, 1, 1, 256, 1, 1, 0, 0,
           blob=struct.pack("<QQQi", a, b, c, n), queued=True)
    assert unfloats(g.get(c, 4 * n)) == [3.0 * i for i in range(n)]


def test_sticky_error_restarts_the_worker_process_and_the_vm_starts_again(worker):
    """After a sticky error the context is dead for the life of the process (CUDA: a reset primary
    context still returns 700). When the VM's last session ends the worker re-executes itself:
    same pid, same socket and region, a new context; a new session works."""
    w = worker()
    w.wait_listening()
    pid = w.proc.pid
    with w.connect() as sock:
        g = w.guest(sock)
        _trigger_sticky(g)
        g.window.view.release()
    wait_for(lambda: "re-executing the worker" in w.log(), "the re-exec")
    assert w.proc.poll() is None and w.proc.pid == pid
    with w.connect() as sock:  # at once: the listening socket was handed over, nothing refused
        g = w.guest(sock)
        _vector_add_works(g)
        g.window.view.release()
        wait_for(lambda: json.loads(Path(w.stats).read_text())["sessions"] == {"live": 1, "started": 1},
                 "the new process's stats")
        assert json.loads(Path(w.stats).read_text())["broken"] is None
    w._region.close()
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(15) == 0, w.log()
    assert not os.path.exists(w.socket) and not os.path.exists(w.shm)  # still its own to remove


def test_sticky_error_in_connect_mode_reconnects_to_the_channel(worker, qemu_chardev):
    path, qemu = qemu_chardev
    w = worker(socket_path=path)
    conn, _ = qemu.accept()
    conn.settimeout(15)
    g = w.guest(conn)
    _trigger_sticky(g)
    conn.sendall(g.conn.send(Goodbye(1, "done")))  # the session ends; the channel stays
    g.window.view.release()
    again, _ = qemu.accept()  # the new process connects again
    again.settimeout(15)
    assert conn.recv(100) == b""  # the old connection was closed
    g = w.guest(again)
    _vector_add_works(g)
    g.window.view.release()
    w._region.close()
    again.close()
    assert w.proc.wait(15) == 0, w.log()  # the VM's channel closed: the worker exits
    conn.close()


def test_a_guests_bad_frame_reaches_the_daemons_metrics(worker):
    """The worker counts the channel it closed for a protocol violation in its stats file; the
    daemon reads it from there and exports it as kvmgpu_vgpu_channel_errors_total."""
    from kvmgpu.daemon import service
    from kvmgpu.daemon.metrics import render
    from kvmgpu.daemon.status import DaemonStatus, Status, VgpuStatus
    from kvmgpu.daemon.workers import read_stats

    w = worker()
    w.wait_listening()
    with w.connect() as sock:
        sock.sendall(b"\xff" * 64)  # no frame starts so
        sock.settimeout(10)
        while sock.recv(4096):  # the worker closes the channel (after a GOODBYE)
            pass
    wait_for(lambda: (s := read_stats(Path(w.stats))) and s.protocol_violations,
             "the violation in the stats file")
    stats = read_stats(Path(w.stats))
    assert (stats.protocol_violations, stats.internal_errors, stats.channels_refused) == (1, 0, 0)
    v = VgpuStatus(vm="t", id="i", gpu=0, gpu_uuid="GPU-x", gmem=64 << 20, compute=100,
                   compute_mode="share", state="running", backend="sim", worker_pid=w.proc.pid,
                   adopted=False, started=0.0, used=0, peak=0, calls=0, bytes=0, gpu_seconds=0.0,
                   channel_errors=service._channel_errors(stats))
    text = render(Status(DaemonStatus(pid=1, started=0.0, libvirt="connected", uri="x", metrics="x"),
                         (), (v,)))
    assert 'kvmgpu_vgpu_channel_errors_total{vm="t",gpu="0",why="protocol_violation"} 1' in text
    assert 'kvmgpu_vgpu_channel_errors_total{vm="t",gpu="0",why="internal_error"} 0' in text
