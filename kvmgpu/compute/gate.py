"""What a worker calls: `ComputeGate.before_launch()` before each kernel launch, `synchronizing()`
before it waits for the GPU on the guest's behalf and `synchronized(what)` when the wait returns,
`idle()` when it has nothing to do, `close()` when the VM goes.

The gate holds the GPU for slices of `slice_s` wall seconds. While it holds the GPU a launch costs
one clock read (and, at the first launch after the GPU went idle, the meter's run start: a clock
read, or an event record, see meter.py). At a slice's end the gate drains the context, charges the
GPU's busy time in the slice (the meter's runs: never the time the GPU sat idle waiting for the
guest), and keeps the GPU if nobody else waits (and, in `limit` mode, its bucket is not empty);
otherwise it lets go and waits its turn like everyone else.
"""

from __future__ import annotations

import os
import time

from kvmgpu.compute.board import Board
from kvmgpu.compute.meter import EventMeter
from kvmgpu.compute.policy import LIMIT, MODES, NOBODY, LimitBucket, choose, hand_over, placed_vt

SLICE_S = 0.005  # how long a VM holds the GPU before the others are looked at
POLL_S = 50e-6  # how often a waiting worker looks at the board
MIN_SLICE_S = 0.0005


class ComputeGate:
    def __init__(self, board: Board, mode: str, percent: float, meter, *, clock=time.monotonic,
                 sleep=time.sleep, slice_s: float = SLICE_S, stale_s: float | None = None,
                 poll_s: float = POLL_S, pid: int | None = None):
        if mode not in MODES:
            raise ValueError(f"compute mode must be one of {MODES}, not {mode!r}")
        if not 0 < percent <= 100:
            raise ValueError(f"compute percent must be in (0, 100], not {percent}")
        self.board = board
        self.mode = mode
        self.percent = float(percent)
        self.meter = meter
        self.clock = self._clock = clock
        self._sleep = sleep
        self.slice_s = slice_s
        self.stale_s = stale_s if stale_s is not None else 5 * slice_s + 0.05
        self.poll_s = poll_s
        self.slot = board.join(pid or os.getpid(), mode, percent)
        self.bucket = LimitBucket(percent, slice_s, clock()) if mode == LIMIT else None
        self.gpu_seconds = 0.0  # GPU time charged to this VM so far
        self.held = False
        self._slice_end = 0.0
        self._vt = 0.0
        self._last_end = float("-inf")  # when this VM's last slice ended
        self._was_idle = True
        self._waiting = False  # on the board as waiting for the GPU
        # counters: slices started, slice ends where it kept the GPU / handed it to another VM,
        # returns from idle that moved its virtual time up
        self.slices = self.kept = self.handed = self.replaced = 0

    # --- the worker's calls ------------------------------------------------------------------

    def before_launch(self) -> float:
        """Return when this VM may put a launch on the GPU (may sleep); with `free_until()`, which
        the worker would ask next."""
        if self.held:
            now = self._clock()
            if now < self._slice_end:
                self.meter.work()
                return self._slice_end
            self._end_slice(still_wants=True)
            if self.held:
                self.meter.work()
                return self._slice_end
        self._acquire()
        self.meter.work()
        return self._slice_end

    def free_until(self) -> float:
        """Until when (on the gate's `clock`) `before_launch` has nothing to do: this VM holds the
        GPU and a run is open until its slice ends. 0.0 when it must be called. The worker checks
        this instead of calling `before_launch`, right before its launches go to the driver (for
        packed records: before the C loop, so records packed in one slice may go in the next)."""
        return self._slice_end if self.held and self.meter.running else 0.0

    def clocked_until(self) -> float:
        """Until when (on CLOCK_MONOTONIC, the gate's default clock) the worker may launch and wait
        without the gate, charging each launch-to-wait itself (`charge_clocked`): this VM holds the
        GPU, no run is open, and the next would be timed by the clock (meter.py). 0.0 when not
        (the worker's C turn, kvmgpu/backend/launcher.py's RepeatTurn, then stays out)."""
        if not self.held or self._clock is not time.monotonic or not self.meter.clock_timed():
            return 0.0
        return self._slice_end

    def charge_clocked(self, seconds: float) -> None:
        """Runs the worker timed itself, from each launch to its wait's return, since
        `clocked_until` (within this slice)."""
        self.meter.add_clocked(seconds)

    def synchronizing(self) -> None:
        """The worker is about to wait for the GPU (a synchronising call): the GPU's busy run ends
        there, and the time until the guest's next launch is not charged."""
        self.meter.mark_idle()

    def synchronized(self, what: str) -> None:
        """That wait returned (or failed); `what` it waited for: kvmgpu.compute.meter's CONTEXT,
        NULL_STREAM or PART (a run the meter times by the clock ends here, see meter.py)."""
        self.meter.waited(what)

    def idle(self) -> None:
        """The worker has nothing to dispatch: let the others have the GPU."""
        if self.held:
            self._end_slice(still_wants=False)
        self._was_idle = True

    def close(self) -> None:
        self.idle()
        self.board.leave(self.slot)
        self.meter.close()

    # --- slices ------------------------------------------------------------------------------

    def _slice_length(self) -> float:
        if self.bucket is None:
            return self.slice_s
        return min(self.slice_s, max(self.bucket.level, MIN_SLICE_S))

    def _acquire(self) -> None:
        """Wait for the GPU. Unless `_end_slice` already put this VM on the board as waiting (it
        let go to a VM further behind), ask for it first."""
        board = self.board
        now = self._clock()
        if not self._waiting:
            if self.bucket is not None:
                while (wait := self.bucket.wait_time(now)) > 0:
                    self._sleep(wait)
                    now = self._clock()
            with board.locked():
                slots = board.slots()
                me = next(s for s in slots if s.index == self.slot)
                if self._was_idle:  # idling banks at most two strides of credit
                    vt = placed_vt(slots, self.slot, board.owner(), self.slice_s)
                    if vt != me.vt:
                        self.replaced += 1
                    me.vt = vt
                    self._was_idle = False
                me.want_since = now
                board.write(me)
                self._waiting = True
                if choose(slots, board.owner(), board.owner_since(), now, self.stale_s) == self.slot:
                    self._claim(me, now)
                    return
        while True:
            self._sleep(self.poll_s)
            now = self._clock()
            owner = board.owner()  # a look without the lock: another VM's live slice, sleep on
            if owner != NOBODY and owner != self.slot and now - board.owner_since() < self.stale_s:
                continue
            with board.locked():
                slots = board.slots()
                if choose(slots, board.owner(), board.owner_since(), now, self.stale_s) == self.slot:
                    self._claim(next(s for s in slots if s.index == self.slot), now)
                    return

    def _claim(self, me, now: float) -> None:  # under the board's lock
        me.want_since = 0.0
        self.board.write(me)
        self.board.set_owner(self.slot, now)
        self._vt = me.vt
        self._waiting = False
        self.held = True
        self.slices += 1
        if self.bucket is not None:
            self.bucket.refill(now)
        self._slice_end = now + self._slice_length()
        self.meter.begin()

    def _end_slice(self, still_wants: bool) -> None:
        """Charge the slice, then hand the GPU over in one step: to the waiting VM furthest behind,
        this one included when it `still_wants` the GPU (it keeps it when it is furthest behind or
        alone), and put this VM on the board as waiting when it lets go with work left."""
        gpu = self.meter.finish()
        now = self._last_end = self._clock()
        self.gpu_seconds += gpu
        if self.bucket is not None:
            self.bucket.refill(now)
            self.bucket.charge(gpu)
        self._vt += gpu / self.percent
        board = self.board
        with board.locked():
            slots = board.slots()
            if board.owner() != self.slot:  # held too long, and a waiter took the GPU
                me = next(s for s in slots if s.index == self.slot)
                me.vt, me.want_since = self._vt, 0.0
                board.write(me, used=self.gpu_seconds, seen=now)
                self.held = False
                return
            wants = still_wants and (self.bucket is None or self.bucket.level > 0)
            nxt = hand_over(slots, self.slot, self._vt, wants, now)
            me = next(s for s in slots if s.index == self.slot)
            if nxt == self.slot:
                me.want_since = 0.0
                board.write(me, used=self.gpu_seconds, seen=now)
                board.set_owner(self.slot, now)
                self._slice_end = now + self._slice_length()
                self.meter.begin()
                self.kept += 1
                return
            board.write(me, used=self.gpu_seconds, seen=now)
            board.set_owner(nxt, now)  # the next VM finds itself the owner at its next look
            self.held = False
            self._waiting = wants
            if nxt != NOBODY:
                self.handed += 1


def open_gate(backend, gpu: int, percent: float, mode: str, **kw) -> ComputeGate:
    """The gate of a worker on GPU `gpu`, timing slices with the backend's CUDA events.
    `backend`: the backend, or a function returning the current one."""
    return ComputeGate(Board.for_gpu(gpu), mode, percent, EventMeter(backend), **kw)
