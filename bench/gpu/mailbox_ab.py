"""Launch + cuStreamSynchronize, benchgpu's loop of 2000, through the session's mailbox and through
the channel in turn, in one guest process against one worker process (one placement for both), with
native cuda-bindings beside them. The guest's mailbox is switched off and on between rounds (the
worker serves both ways as they come); the ways take turns round by round, so a drift of the
machine falls on all alike. Run on the GPU machine from the repository root:
`PYTHONPATH=guest-agent:. python3 bench/gpu/mailbox_ab.py`"""
import os
import sys

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B

_, stop = B.loopback_worker(256 << 20)
from cuda.bindings import driver as nat  # noqa: E402

from kvmgpu_guest import driver as cu  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "9"))
try:
    B._ok(nat.cuInit(0))
    native = B.Workloads(nat, [1 << 20])
    B._ok(cu.cuInit(0))
    forwarded = B.Workloads(cu, [1 << 20])
    session = cu._session
    box = session._box
    assert box is not None, "no mailbox: the window is too small or the machine is not x86-64"
    configs = {"native": (native, None), "mailbox": (forwarded, box), "channel": (forwarded, False)}
    loops = {name: [fn for f, fn, _ in w.figures() if f == "launch_sync_us"][0]
             for name, (w, _) in configs.items()}

    def run(name):
        w, way = configs[name]
        w.current()
        if way is not None:
            session._box = way or None
        return loops[name]() / 2000 * 1e6
    times = B.in_turn(list(configs), run, ROUNDS)
    session._box = box
    B.report_turns(times, "µs", lambda med, base: f"{med / base:4.2f}x native median")
finally:
    stop()
