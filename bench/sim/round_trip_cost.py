"""The Python of a launch + cuStreamSynchronize on each side, without a GPU, in one process: the
worker's `Channel.receive` of the message, with the last message taken again by comparison and
without (the C module calling a driver that does nothing, compiled here); and the guest's
cuLaunchKernel + cuStreamSynchronize through the driver shim with its transport handing the
bytes to that channel, with the lean synchronise (`Session.synchronize`) and the general call.
The ways take turns in one process (best and median of 8).

    .venv/bin/python bench/sim/round_trip_cost.py     (repository root; needs cc)
"""
import ctypes
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kvmgpu.worker.channel import Channel  # noqa: E402
from kvmgpu_guest import driver as cu  # noqa: E402
from kvmgpu_guest.client import Session  # noqa: E402
from kvmgpu_wire.protocol import Op  # noqa: E402

from nodriver import NoDriver  # noqa: E402  (and the paths)
from rawguest import PTX, Host  # noqa: E402


def taking_turns(ways: dict, run) -> None:
    """`run(way)` µs, the ways in turn, 8 rounds; best and median of each."""
    times = {name: [] for name in ways}
    for _ in range(8):
        for name, way in ways.items():
            times[name].append(run(way))
    print("  " + ", ".join(f"{name} {min(t):.2f} / {sorted(t)[4]:.2f}" for name, t in times.items()))


take_again = Channel._launch_wait
AGAIN = {"taken again": take_again, "decoded and checked": lambda self, *a: None}
h = Host(Path(tempfile.mkdtemp()), region_size=64 << 20, backend=NoDriver)
REPS = 20000

# --- the worker alone: one message (a launch and a STREAM_SYNCHRONIZE) at a time
g = h.guest(window=8 << 20)
fh, _ = g.function(g.load(), "spin")
recv = g.channel.receive


def worker(way) -> float:
    Channel._launch_wait = way
    g.channel._again = None  # (what the other way left)
    msgs = [g.frame(Op.LAUNCH, fh, 1, 1, 1, 1, 1, 1, 0, 0, blob=struct.pack("<q", i), queued=True)
            + g.frame(Op.STREAM_SYNCHRONIZE, 0) for i in range(REPS)]
    t = time.perf_counter()
    for m in msgs:
        recv(m)
    return (time.perf_counter() - t) / REPS * 1e6


print("the worker's Channel.receive of a launch + synchronise, µs best / median:")
taking_turns(AGAIN, worker)


# --- the guest's driver calls and the worker, in one process (no socket between them)
class InProcess:
    """A transport whose bytes go straight to a channel; what it answers is read back."""

    def __init__(self, channel):
        self.channel, self.out = channel, b""

    def send(self, data):
        self.out += self.channel.receive(data)

    def recv_nowait(self, n):
        data, self.out = self.out, b""
        return data or None

    recv = recv_nowait


channel = h.channel()
session = Session(InProcess(channel), h.guest_region, session_id=9)
session.handshake(8 << 20)
session._box = None  # (no worker loop looks at the mailbox here: every call through the channel)
cu._session = session
cu.cuCtxCreate(0, cu.cuDeviceGet(0)[1])
spin = cu.cuModuleGetFunction(cu.cuModuleLoadData(PTX)[1], b"spin")[1]
arg = ctypes.c_longlong(0)
params = (ctypes.c_void_p * 1)(ctypes.addressof(arg))
kp = ctypes.addressof(params)
lean = cu.cuStreamSynchronize


def general(h):  # the guest's synchronise before Session.synchronize: the general call
    return (cu._call(Op.STREAM_SYNCHRONIZE, (cu._stream(h),))[0],)


def both(way) -> float:
    Channel._launch_wait, cu.cuStreamSynchronize = way
    channel._again = None
    t = time.perf_counter()
    for _ in range(REPS):
        cu.cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, 0, kp, 0)
        cu.cuStreamSynchronize(0)
    return (time.perf_counter() - t) / REPS * 1e6


print("cuLaunchKernel + cuStreamSynchronize, guest and worker in one process, µs best / median:")
taking_turns({"both new": (take_again, lean), "worker general": (AGAIN["decoded and checked"], lean),
              "guest general": (take_again, general),
              "both general": (AGAIN["decoded and checked"], general)}, both)
Channel._launch_wait, cu.cuStreamSynchronize = take_again, lean
session.close()
cu._session = None
h.close()
