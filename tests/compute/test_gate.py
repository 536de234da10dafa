"""The gate a worker calls, with a fake clock and GPU time charged from it (no GPU)."""

import multiprocessing as mp
import os
import time

import pytest

from kvmgpu.compute.board import Board
from kvmgpu.compute.gate import ComputeGate
from kvmgpu.compute.meter import WallMeter
from kvmgpu.compute.policy import LIMIT, NOBODY, SHARE


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


@pytest.fixture
def board(tmp_path):
    b = Board(str(tmp_path / "kvmgpu-gpu0-compute"))
    yield b
    b.close()


def run_busy(gate, clock, seconds, kernel_s=0.0002):
    """A VM that launches back to back; every kernel runs kernel_s on the (fake) GPU."""
    end = clock.now + seconds
    while clock.now < end:
        gate.before_launch()
        clock.now += kernel_s


def test_share_alone_never_waits(board):
    clock = FakeClock()
    gate = ComputeGate(board, SHARE, 30, WallMeter(clock), clock=clock, sleep=clock.sleep)
    slept = []
    gate._sleep = slept.append
    run_busy(gate, clock, 1.0)
    assert not slept
    assert gate.gpu_seconds == pytest.approx(1.0, abs=0.02)
    gate.close()
    assert board.owner() == NOBODY


def test_limit_alone_is_capped(board):
    clock = FakeClock()
    gate = ComputeGate(board, LIMIT, 50, WallMeter(clock), clock=clock, sleep=clock.sleep)
    run_busy(gate, clock, 0.2)  # warm up past the first burst
    used0, t0 = gate.gpu_seconds, clock.now
    for _ in range(3):  # three 1 s windows
        run_busy(gate, clock, 1.0)
        share = (gate.gpu_seconds - used0) / (clock.now - t0)
        assert share == pytest.approx(0.50, abs=0.01)
        used0, t0 = gate.gpu_seconds, clock.now


def run_batches(gate, clock, seconds, kernel_s=0.0002, per_batch=4, round_trip_s=0.000058):
    """A guest that launches `per_batch` kernels, then synchronizes: the GPU is idle for a forwarded
    round trip between batches (the worker calls synchronizing() before it waits)."""
    end = clock.now + seconds
    while clock.now < end:
        for _ in range(per_batch):
            gate.before_launch()
            clock.now += kernel_s  # the GPU runs the kernel
        gate.synchronizing()
        clock.now += round_trip_s  # reply to the guest, its next batch back: the GPU is idle


def test_idle_gaps_between_batches_are_not_charged(board):
    clock = FakeClock()
    gate = ComputeGate(board, SHARE, 30, WallMeter(clock), clock=clock, sleep=clock.sleep)
    run_batches(gate, clock, 1.0)
    gate.idle()
    busy = 1.0 * 0.0008 / 0.000858  # the kernels' share of the wall time
    assert gate.gpu_seconds == pytest.approx(busy, abs=0.005)


@pytest.mark.parametrize("percent", [10, 50, 90])
def test_limit_delivers_its_percent_of_wall_time_with_gaps(board, percent):
    """The hard cap: PERCENT of the GPU's time in every 1 s window, counting only busy time, even
    though the guest leaves the GPU idle between batches."""
    clock = FakeClock()
    gate = ComputeGate(board, LIMIT, percent, WallMeter(clock), clock=clock, sleep=clock.sleep)
    run_batches(gate, clock, 0.2)
    for _ in range(3):
        used0, t0 = gate.gpu_seconds, clock.now
        run_batches(gate, clock, 1.0)
        gate.idle()
        assert (gate.gpu_seconds - used0) / (clock.now - t0) == pytest.approx(percent / 100, abs=0.01)


def test_idle_lets_go(board):
    clock = FakeClock()
    gate = ComputeGate(board, SHARE, 50, WallMeter(clock), clock=clock, sleep=clock.sleep)
    gate.before_launch()
    assert board.owner() == gate.slot
    gate.idle()
    assert board.owner() == NOBODY and not gate.held


def test_bad_settings(board):
    with pytest.raises(ValueError):
        ComputeGate(board, "fair", 50, WallMeter())
    with pytest.raises(ValueError):
        ComputeGate(board, SHARE, 0, WallMeter())


def _vm(path, mode, percent, start, seconds, kernel_s, out):
    """A worker process whose 'GPU' is this CPU: the gate makes the work exclusive."""
    board = Board(path)
    gate = ComputeGate(board, mode, percent, WallMeter())
    while time.monotonic() < start:
        time.sleep(0.001)
    marks = []
    while time.monotonic() < start + seconds:
        gate.before_launch()  # the 'GPU' run starts here...
        t = time.monotonic()
        while time.monotonic() - t < kernel_s:
            pass
        gate.synchronizing()  # ...and ends here: the loop's own overhead is not charged
        marks.append((t, time.monotonic() - t))
    gate.close()
    out.put((gate.slot, percent, marks))


def shares_in_window(results, lo, hi):
    return {slot: (pct, sum(d for t, d in marks if lo <= t < hi) / (hi - lo)) for slot, pct, marks in results}


@pytest.mark.parametrize("percents", [(30, 70), (25, 25, 25, 25)])
def test_processes_share_by_weight(tmp_path, percents):
    if (os.cpu_count() or 1) < len(percents) + 2:
        pytest.skip(f"needs {len(percents)} CPUs to run the VMs side by side")
    path = str(tmp_path / "board")
    Board(path).close()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = time.monotonic() + 1.0
    procs = [ctx.Process(target=_vm, args=(path, SHARE, p, start, 2.0, 0.0002, out)) for p in percents]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join()
    # Shares of the work done (the CPU model has no idle gaps to publish), over the middle second.
    got = shares_in_window(results, start + 0.5, start + 1.5)
    total = sum(w for _, w in got.values())
    for pct, work in got.values():
        assert work / total == pytest.approx(pct / 100, abs=0.03), got


def test_slice_end_hands_over_in_one_step(board):
    """At a slice's end the holder picks the next owner under the lock, itself included while it
    has work: the GPU never lies free for a polling waiter to take out of turn."""
    clock = FakeClock()
    a = ComputeGate(board, SHARE, 70, WallMeter(clock), clock=clock, sleep=clock.sleep, pid=os.getpid())
    b = ComputeGate(board, SHARE, 30, WallMeter(clock), clock=clock, sleep=clock.sleep, pid=os.getpid())
    a.before_launch()
    assert board.owner() == a.slot
    s = board.slot(b.slot)  # B asks for the GPU (as its _acquire does) at vt 0
    s.want_since = clock.now
    board.write(s)
    b._was_idle, b._waiting = False, True
    clock.now += 0.002
    a.before_launch()  # A ran 2 ms of its slice: vt 0.002/70 still in the slice
    clock.now += a.slice_s
    a._end_slice(still_wants=True)  # what A's next before_launch does first (it would then wait)
    # A is ahead of B (vt 0 < A's): B gets the GPU directly
    assert not a.held and board.owner() == b.slot and a.handed == 1
    assert board.slot(a.slot).want_since > 0  # A is on the board as waiting, in the same step
    b.before_launch()  # B finds itself the owner at its next look
    assert b.held and board.owner() == b.slot
    clock.now += b.slice_s
    b._end_slice(still_wants=True)  # B's slice (5 ms / 30) puts it ahead of A: A gets it back
    assert board.owner() == a.slot and not b.held
    a.before_launch()
    assert a.held


def test_alone_it_keeps_the_gpu_slice_after_slice(board):
    clock = FakeClock()
    gate = ComputeGate(board, SHARE, 30, WallMeter(clock), clock=clock, sleep=clock.sleep)
    run_batches(gate, clock, 0.1)
    assert gate.held and gate.slices == 1 and gate.kept >= 15 and gate.handed == 0


def run_busy_as_the_worker(gate, clock, seconds, kernel_s=0.0002):
    """`run_busy` as the worker's queued-launch loop does it: before_launch only when free_until
    says it has something to do."""
    end = clock.now + seconds
    until = gate.free_until()
    calls = 0
    while clock.now < end:
        if gate.clock() >= until:
            gate.before_launch()
            until = gate.free_until()
            calls += 1
        clock.now += kernel_s
    return calls


def test_free_until_skips_only_calls_that_do_nothing(board):
    clock = FakeClock()
    gate = ComputeGate(board, LIMIT, 50, WallMeter(clock), clock=clock, sleep=clock.sleep)
    assert gate.free_until() == 0.0  # not held: before_launch must ask for the GPU
    gate.before_launch()
    assert gate.free_until() == gate._slice_end > clock.now
    gate.synchronizing()
    assert gate.free_until() == 0.0  # the run ended: the next launch opens one
    calls = run_busy_as_the_worker(gate, clock, 0.2)
    assert calls < 1000 / 4  # about once a slice (short ones while the bucket is low), not 1000
    used0, t0 = gate.gpu_seconds, clock.now
    for _ in range(3):  # the limit holds as when before_launch is called at every launch
        run_busy_as_the_worker(gate, clock, 1.0)
        share = (gate.gpu_seconds - used0) / (clock.now - t0)
        assert share == pytest.approx(0.5, abs=0.03)
        used0, t0 = gate.gpu_seconds, clock.now
    gate.close()
