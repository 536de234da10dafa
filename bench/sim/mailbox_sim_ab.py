"""A context synchronise through the mailbox and through the channel, in turn, without a GPU: one
guest session against a loopback worker on the sim backend (two processes), 3000 calls a round, 6
rounds each way (best / median µs); then calls made after 2 ms idle, when the worker has stopped
polling, median of 50 a round. Three ways: the mailbox as the guest uses it (the channel when the
worker says it sleeps), the mailbox posting whatever the worker says (the ninth session's way: a
post to a sleeping worker rings it), the channel alone.

    .venv/bin/python bench/sim/mailbox_sim_ab.py     (repository root)
"""
import sys
import tempfile
import time

sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B  # noqa: E402

proc, sock, shm = B.start_worker(tempfile.mkdtemp(), 64 << 20, backend="sim")
from kvmgpu_guest.client import Session  # noqa: E402
from kvmgpu_wire.mailbox import Mailbox  # noqa: E402
from kvmgpu_wire.protocol import Op  # noqa: E402

looks = Mailbox.host_awake
try:
    s = Session.connect(sock, shm)
    box = s._box
    assert box is not None, "no mailbox: the window is too small or the machine is not x86-64"
    ways = {"mailbox": (box, looks), "mailbox, posts to a sleeper": (box, lambda self: True),
            "channel": (None, looks)}

    def use(way) -> None:
        s._box, Mailbox.host_awake = ways[way]

    def calls(way) -> float:
        use(way)
        t = time.perf_counter()
        for _ in range(3000):
            assert s.synchronize(Op.CTX_SYNCHRONIZE, 0) == 0
        return (time.perf_counter() - t) / 3000 * 1e6

    def after_idle(way) -> float:
        use(way)
        ts = []
        for _ in range(50):
            time.sleep(0.002)
            t = time.perf_counter()
            assert s.synchronize(Op.CTX_SYNCHRONIZE, 0) == 0
            ts.append(time.perf_counter() - t)
        return sorted(ts)[25] * 1e6

    for what, run, rounds in (("back to back", calls, 6), ("after 2 ms idle", after_idle, 6)):
        times = B.in_turn(list(ways), run, rounds)
        print(what + ", µs best / median: " + ", ".join(
            f"{w} {min(t):.1f} / {sorted(t)[len(t) // 2]:.1f}" for w, t in times.items()))
    use("mailbox")
    s.close()
finally:
    B.stop_worker(proc, sock, shm)
