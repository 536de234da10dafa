"""The worker's own cost of one launch + synchronise message, piece by piece, in one process: the
frames go straight into a channel (no guest process, no socket) of a VGpu on the cuda backend,
with the compute gate on and off, and the pieces are timed by wrapping them.
Usage (repository root, on a GPU machine): python3 bench/gpu/worker_round_trip.py
(--sim: the sim backend, to try the probe where there is no GPU)."""

import dataclasses
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "guest-agent"), str(ROOT), str(ROOT / "tests" / "worker")]

import kvmgpu.worker.channel as channel_mod  # noqa: E402
from kvmgpu.compute import open_gate  # noqa: E402
from kvmgpu_wire.protocol import Op  # noqa: E402

from rawguest import Host  # noqa: E402

if "--sim" in sys.argv:  # a dry run of the probe itself where there is no GPU
    from kvmgpu.backend.sim import SimBackend as BACKEND  # noqa: E402
else:
    from kvmgpu.backend.cuda import CudaBackend  # noqa: E402

    def BACKEND(**kw):
        return CudaBackend(0)

N = 3000
ns = time.perf_counter_ns


def timed(fn, into: list):
    def wrapper(*a):
        t = ns()
        try:
            return fn(*a)
        finally:
            into.append(ns() - t)
    return wrapper


def measure(gate: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(dir="/dev/shm"))
    host = Host(tmp, gmem=1 << 30, backend=BACKEND)
    try:
        if gate:
            host.vgpu.attach_gate(open_gate(lambda: host.vgpu.backend, 0, 100, "share"))
        g = host.guest(window=1 << 20)
        f, _ = g.function(g.load(), "spin")
        b = host.vgpu.backend
        pieces = {k: [] for k in ("receive", "launch_run", "launch_in", "cuStreamSynchronize",
                                  "before_launch")}
        if b.capabilities.launch_in is not None:  # the sim backend has none
            b.capabilities = dataclasses.replace(b.capabilities,
                                                 launch_in=timed(b.capabilities.launch_in, pieces["launch_in"]))
        b.stream_synchronize = timed(b.stream_synchronize, pieces["cuStreamSynchronize"])
        host.vgpu.bind()  # the worker binds the backend's calls (and the gate around them) at setup
        if gate:
            gt = host.vgpu.gate
            gt.before_launch = timed(gt.before_launch, pieces["before_launch"])
        real_run = channel_mod.launch_run
        channel_mod.launch_run = timed(real_run, pieces["launch_run"])
        receive = timed(g.channel.receive, pieces["receive"])
        msgs = [g.frame(Op.LAUNCH, f, 1, 1, 1, 1, 1, 1, 0, 0, blob=struct.pack("<q", 0), queued=True)
                + g.frame(Op.STREAM_SYNCHRONIZE, 0) for _ in range(N)]
        for m in msgs:
            receive(m)
        channel_mod.launch_run = real_run
        # each piece's first tenth left out (the warm-up); on the sim backend some pieces run fewer times
        return {k: round(statistics.median(v[len(v) // 10:]) / 1e3, 2) for k, v in pieces.items() if v}
    finally:
        host.close()


if __name__ == "__main__":
    for _rnd in range(2):
        for gate in (True, False):
            print(f"gate {'on ' if gate else 'off'} (median µs):", measure(gate))
