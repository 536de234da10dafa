"""A hostile guest against a real `kvmgpu worker --backend sim` process: what it sends closes its
own connection at most; the worker goes on serving the others."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from kvmgpu_guest.protocol import HEADER, MAGIC, Kind, Op, Welcome
from test_process import KVMGPU, WorkerProcess, wait_for, worker  # noqa: F401 (a fixture)


def hello_frame(payload: bytes, session: int = 1) -> bytes:
    return HEADER.pack(MAGIC, Kind.HELLO, 0, session, 0, len(payload)) + payload


def closed(sock: socket.socket) -> bool:
    """Whether the worker closed `sock` (its reads end)."""
    while True:
        data = sock.recv(65536)
        if not data:
            return True


def serves(w: WorkerProcess) -> None:
    """A new connection gets a session and an answer."""
    with w.connect() as sock:
        g = w.guest(sock, window=4096)
        assert g.ok(Op.MEM_GET_INFO)[1] == 64 << 20
        g.window.view.release()


def test_a_hello_nested_too_deep_closes_its_connection_only(worker):
    w = worker()
    w.wait_listening()
    with w.connect() as other:
        g = w.guest(other, window=4096)
        with w.connect() as bad:
            bad.sendall(hello_frame(b"[" * 1000 + b"]" * 1000))
            assert closed(bad)
        with w.connect() as bad:
            bad.sendall(hello_frame(b"[" * 16000))
            assert closed(bad)
        assert w.proc.poll() is None, w.log()
        assert g.ok(Op.MEM_GET_INFO)[1] == 64 << 20  # the connection that was there goes on
        g.window.view.release()
    serves(w)
    assert "nests too deep" in w.log()


def test_an_unexpected_error_is_logged_and_closes_that_channel_only(tmp_path):
    """A bug that a guest's bytes reach (here: opening a session raises) is logged with its
    traceback and counted; that channel closes and the worker serves the next one."""
    boom = ("import kvmgpu.worker.vgpu as v\n"
            "def open_session(self, key, window, client=''):\n"
            "    if client == 'boom':\n"
            "        raise RuntimeError('a bug')\n"
            "    return real(self, key, window, client)\n"
            "real = v.VGpu.open_session\n"
            "v.VGpu.open_session = open_session\n"
            "from kvmgpu.cli import main; main()\n")
    w = WorkerProcess.__new__(WorkerProcess)
    w.dir = Path(__import__("tempfile").mkdtemp(prefix="kvw", dir="/tmp"))
    w.socket, w.shm, w.stats = str(w.dir / "ch.sock"), str(w.dir / "region"), str(w.dir / "stats.json")
    w.stderr = open(w.dir / "stderr", "w+")
    w.proc = subprocess.Popen([sys.executable, "-c", boom, "worker", "--backend", "sim", "--gmem", "64M",
                               "--socket", w.socket, "--shm", w.shm, "--region-size", "8M",
                               "--stats-file", w.stats], stderr=w.stderr, stdout=subprocess.DEVNULL)
    try:
        w.wait_listening()
        with w.connect() as bad:
            bad.sendall(hello_frame(json.dumps({"version_min": 4, "version_max": 4,
                                                "client": "boom"}).encode()))
            assert closed(bad)
        serves(w)
        log = w.log()
        assert "unexpected error while serving it (a bug): closing it" in log
        assert "RuntimeError: a bug" in log  # the traceback
        wait_for(lambda: json.loads(Path(w.stats).read_text()).get("internal_errors") == 1, "the count")
    finally:
        w.kill()
