"""A real `kvmgpu worker --backend sim` in loopback mode, for the guest-side tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "tests" / "kernels" / "kernels.ptx"
PROGRAMS = Path(__file__).resolve().parent / "programs"


class LoopbackWorker:
    def __init__(self, gmem: str = "64M", region: str = "8M", env: dict | None = None, args: tuple = ()):
        self.dir = tempfile.mkdtemp(prefix="kvmgpu-guest-test-")
        self.socket = os.path.join(self.dir, "channel.sock")
        self.shm = os.path.join("/dev/shm", f"kvmgpu-test-{os.getpid()}-{os.path.basename(self.dir)}")
        self.log = open(os.path.join(self.dir, "worker.log"), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from kvmgpu.cli import main; main()", "worker", "--backend", "sim", "--gmem", gmem,
             "--socket", self.socket, "--shm", self.shm, "--region-size", region, *args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 20
        while not self._listening():  # (the socket file exists once bound, before listen())
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the worker did not start:\n{self.output()}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(self.socket)
            except OSError:
                return False
        return True

    @property
    def env(self) -> dict:
        return {**os.environ, "KVMGPU_SOCKET": self.socket, "KVMGPU_SHM": self.shm}

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for path in (self.socket, self.shm):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def need_kernels():
    if not KERNELS.exists():
        pytest.skip(f"{KERNELS} is not there")
    return KERNELS
