"""Launch + cuStreamSynchronize, benchgpu's loop of 2000, with the two halves of the hot path on and
off in turn in one run: the worker taking a message that repeats the last one by comparing bytes
(on for odd channels, off for even ones, in one worker process) and the guest's lean synchronise
(`Session.synchronize`, against the general `Session.call`), with native cuda-bindings beside them.
The configurations take turns round by round, so a drift of the machine falls on all alike, and
the one worker process means one placement for all. Run on the GPU machine from the repository root:
`PYTHONPATH=guest-agent:. python3 bench/gpu/launch_wait_ab.py`"""
import os
import sys

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

B.WORKER = ("from kvmgpu.worker import channel as _ch; _on = _ch.Channel._launch_wait; "
            "_ch.Channel._launch_wait = lambda self, *a: _on(self, *a) if self.cid % 2 else None; "
            + B.WORKER)
os.environ["KVMGPU_WINDOW"] = str(64 << 20)  # two sessions in one region
_, stop = B.loopback_worker(256 << 20)
from cuda.bindings import driver as nat  # noqa: E402

from kvmgpu_guest import driver as cu  # noqa: E402
from kvmgpu_wire.protocol import Op  # noqa: E402

lean = cu.cuStreamSynchronize

ROUNDS = int(os.environ.get("ROUNDS", "7"))
try:
    B._ok(nat.cuInit(0))
    native = B.Workloads(nat, [1 << 20])
    B._ok(cu.cuInit(0))
    on = B.Workloads(cu, [1 << 20])  # channel 1: the worker takes repeats
    on_session, cu._session = cu._session, None
    B._ok(cu.cuInit(0))
    off = B.Workloads(cu, [1 << 20])  # channel 2: it decodes and checks each
    off_session = cu._session

    def general(h):  # the guest's synchronise before: the general call path
        return (cu._call(Op.STREAM_SYNCHRONIZE, (cu._stream(h),))[0],)

    configs = {"native": (native, None, None),
               "worker again + guest lean": (on, on_session, lean),
               "worker again + guest general": (on, on_session, general),
               "worker general + guest lean": (off, off_session, lean),
               "worker general + guest general": (off, off_session, general)}
    loops = {}
    for name, (w, session, _sync) in configs.items():
        if session is not None:
            cu._session = session
        loops[name] = [fn for f, fn, _ in w.figures() if f == "launch_sync_us"][0]

    def run(name):
        w, session, sync = configs[name]
        w.current()
        if session is not None:
            cu._session, cu.cuStreamSynchronize = session, sync
        return loops[name]() / 2000 * 1e6
    B.report_turns(B.in_turn(list(configs), run, ROUNDS), "µs",
                   lambda med, base: f"{med / base:4.2f}x native median")
finally:
    cu.cuStreamSynchronize = lean
    stop()
