"""A context synchronise through the mailbox and through the channel, in turn, without a GPU: one
guest session against a loopback worker on the sim backend (two processes), 3000 calls a round, 8
rounds each way (best / median µs); then calls made after 1 ms idle, when the worker has stopped
polling (the post rings it), median of 50 each way.

    .venv/bin/python tests/worker/probes/mailbox_sim_ab.py     (repository root)
"""
import sys, tempfile, time
sys.path[:0] = ["guest-agent", "."]
from kvmgpu import benchgpu as B  # noqa: E402

proc, sock, shm = B.start_worker(tempfile.mkdtemp(), 64 << 20, backend="sim")
from kvmgpu_guest.client import Session  # noqa: E402
from kvmgpu_guest.protocol import Op  # noqa: E402

try:
    s = Session.connect(sock, shm)
    box = s._box
    assert box is not None, "no mailbox: the window is too small or the machine is not x86-64"
    ways = {"mailbox": box, "channel": None}

    def calls(way) -> float:
        s._box = ways[way]
        t = time.perf_counter()
        for _ in range(3000):
            assert s.synchronize(Op.CTX_SYNCHRONIZE, 0) == 0
        return (time.perf_counter() - t) / 3000 * 1e6

    def after_idle(way) -> float:
        s._box = ways[way]
        ts = []
        for _ in range(50):
            time.sleep(0.001)
            t = time.perf_counter()
            assert s.synchronize(Op.CTX_SYNCHRONIZE, 0) == 0
            ts.append(time.perf_counter() - t)
        return sorted(ts)[25] * 1e6

    for what, run, rounds in (("back to back", calls, 8), ("after 1 ms idle", after_idle, 2)):
        times = B.in_turn(list(ways), run, rounds)
        print(what + ", µs: " + ", ".join(f"{w} {min(t):.1f} / {sorted(t)[len(t) // 2]:.1f}"
                                          for w, t in times.items()))
    s._box = box
    s.close()
finally:
    B.stop_worker(proc, sock, shm)
