"""A deterministic simulation of several workers sharing one GPU through the real gate and board.

Each simulated worker is a thread, but only one runs at a time: a scheduler hands the turn to the
thread with the earliest wake-up on a virtual clock, so a run is the same every time for a seed.
The gates are the real `ComputeGate`s on a real (temporary) board; their clock and sleep are the
simulation's. What costs time:

- a board operation (`lock_s` before each flock: the Python around it, os.kill per slot, ...),
  so a worker that lets go and comes back to the board takes a few microseconds, during which the
  others may look at the board;
- a waiting worker's poll sleep, stretched by a random factor as the OS stretches a short sleep;
- the guest's kernels (the GPU work between `before_launch` and `synchronizing`, which the gate makes
  exclusive), the forwarded round trip between batches (GPU idle), and bursts of guest CPU work
  (longer gaps; past `idle_s` the worker calls `gate.idle()`, as kvmgpu/worker/server.py does).

`achieved` gives each VM's share of the kernel time that ran in each whole window, like the GPU
test tests/gpu/test_vms.py::test_compute_share_accuracy.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import random
import threading

from kvmgpu.compute.board import Board
from kvmgpu.compute.gate import ComputeGate
from kvmgpu.compute.meter import WallMeter
from kvmgpu.compute.policy import SHARE


class Sim:
    def __init__(self, seed: int = 1):
        self.now = 0.0
        self._cv = threading.Condition()
        self._queue: list = []  # (wake time, sequence, thread name)
        self._seq = 0
        self._running: str | None = None
        self.rng = random.Random(seed)

    def clock(self) -> float:
        return self.now

    def _me(self) -> str:
        return threading.current_thread().name

    def _next(self) -> None:  # under _cv
        if self._queue:
            wake, _, name = heapq.heappop(self._queue)
            self.now = max(self.now, wake)
            self._running = name
        else:
            self._running = None
        self._cv.notify_all()

    def sleep(self, s: float) -> None:
        me = self._me()
        with self._cv:
            self._seq += 1
            heapq.heappush(self._queue, (self.now + max(0.0, s), self._seq, me))
            self._next()
            while self._running != me:
                self._cv.wait()

    def run(self, bodies: dict) -> None:
        """Run each body (name -> function) in its own simulated thread until all have returned."""
        errors = []

        def wrap(name, body):
            with self._cv:
                while self._running != name:
                    self._cv.wait()
            try:
                body()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
            finally:
                with self._cv:
                    self._next()

        threads = [threading.Thread(target=wrap, args=(n, b), name=n, daemon=True) for n, b in bodies.items()]
        with self._cv:
            for n in bodies:
                self._seq += 1
                heapq.heappush(self._queue, (self.now, self._seq, n))
        for t in threads:
            t.start()
        with self._cv:
            self._next()
        for t in threads:
            t.join(timeout=600)
        if errors:
            raise errors[0]


class SimBoard(Board):
    """The real board; each locked section costs `lock_s` of the worker's time first."""

    def __init__(self, path: str, sim: Sim, lock_s: float):
        super().__init__(path)
        self._sim = sim
        self._lock_s = lock_s

    @contextlib.contextmanager
    def locked(self):
        self._sim.sleep(self._lock_s)
        with self._flock():
            yield


def share_run(tmp_path, percents, *, seconds=3.0, seed=1, kernel_s=200e-6, per_batch=4,
              round_trip_s=(40e-6, 90e-6), burst_p=0.02, burst_s=(0.2e-3, 4e-3), idle_s=0.002,
              lock_s=8e-6, poll_jitter=1.0, mode=SHARE, window_s=1.0, **gate_kw):
    """Simulated VMs (one per percent) running spin-kernel batches for `seconds`; returns
    (per-window shares [vm][window], kernel seconds per VM, gates)."""
    sim = Sim(seed)
    path = str(tmp_path / f"sim-board-{seed}")
    if os.path.exists(path):
        os.unlink(path)
    rngs = [random.Random(seed * 1000 + i) for i in range(len(percents))]
    runs: list[list[tuple[float, float]]] = [[] for _ in percents]
    gates = []

    def sleeper(rng):
        def sleep(s):  # a waiter's poll: the OS stretches short sleeps
            sim.sleep(s * (1.0 + poll_jitter * rng.random()))
        return sleep

    for i, p in enumerate(percents):
        board = SimBoard(path, sim, lock_s)
        gates.append(ComputeGate(board, mode, p, WallMeter(sim.clock), clock=sim.clock, sleep=sleeper(rngs[i]),
                                 pid=os.getpid(), **gate_kw))

    def vm(i):
        gate, rng, mine = gates[i], rngs[i], runs[i]

        def body():
            sim.sleep(rng.random() * 1e-3)
            while sim.now < seconds:
                for _ in range(per_batch):
                    gate.before_launch()
                    mine.append((sim.now, kernel_s))
                    sim.sleep(kernel_s)  # the GPU runs the kernel (exclusively: the gate holds)
                gate.synchronizing()
                gap = rng.uniform(*round_trip_s)
                if rng.random() < burst_p:
                    gap += rng.uniform(*burst_s)  # the guest computes on its CPU a while
                if gate.held and gap > idle_s:  # the worker's loop: no message for idle_s
                    sim.sleep(idle_s)
                    gate.idle()
                    gap -= idle_s
                sim.sleep(gap)
            gate.close()
            gate.board.close()
        return body

    sim.run({f"vm{i}": vm(i) for i in range(len(percents))})
    windows = []
    t = window_s * 0.5  # skip the start
    while t + window_s <= seconds:
        got = [sum(d for s, d in r if t <= s < t + window_s) for r in runs]
        windows.append(got)
        t += window_s
    if mode == SHARE:
        shares = [[w[i] / sum(w) for w in windows] for i in range(len(percents))]
    else:
        shares = [[w[i] / window_s for w in windows] for i in range(len(percents))]
    return shares, [sum(d for _, d in r) for r in runs], gates
