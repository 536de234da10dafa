"""The scheduling rules, with no clock, no files and no GPU in them.

Each VM of a GPU has a slot: its mode, its weight (the PERCENT it was given), its virtual time
(GPU seconds used / weight) and whether it is waiting for the GPU. One VM holds the GPU at a time.

- `share`: the GPU goes to the waiting VM with the least virtual time, so busy VMs get GPU time in
  proportion to their weights; a VM that is alone gets the whole GPU (work-conserving). A VM that
  comes back from idle starts no further behind the least virtual time of those busy than two
  strides (a stride: one slice of the lightest VM, in virtual time): idling banks at most that,
  and a short idle loses none of the credit it had.
- The hand-over is decided by the VM that ends its slice, in one step under the board's lock:
  `hand_over` picks the next owner among the waiting VMs *and the one letting go, if it still has
  work*, and the board's owner is set to that VM directly. (Letting go to nobody and asking again
  left a gap in which a waiter polling the board took the GPU whatever its virtual time: with
  unequal weights that favoured the smaller VM, 30/70 came out as 33-39/61-67.)
- `limit`: a hard cap. A token bucket filled at PERCENT of one GPU-second per second; a VM with an
  empty bucket does not ask for the GPU, even when nobody else wants it.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARE = "share"
LIMIT = "limit"
MODES = (SHARE, LIMIT)
NOBODY = -1
LAG_STRIDES = 2  # how far behind the busy VMs one back from idle may resume, in strides


@dataclass
class SlotState:
    index: int
    pid: int
    mode: str
    weight: float  # percent, 0 < weight <= 100
    vt: float  # virtual time: GPU seconds used / weight
    want_since: float  # when it started waiting for the GPU; 0.0 when it is not waiting


def choose(slots: list[SlotState], owner: int, owner_since: float, now: float, stale_s: float) -> int:
    """Who should hold the GPU now: the current owner while its slice is live, else the waiting
    slot with the least virtual time (earliest waiter on a tie). NOBODY when nobody waits.

    An owner that has held the GPU longer than `stale_s` (it stopped launching without letting go,
    or died) loses it to a waiter.
    """
    waiting = [s for s in slots if s.pid and s.want_since > 0.0]
    if owner != NOBODY and (now - owner_since) < stale_s:
        return owner
    if not waiting:
        return NOBODY
    best = min(waiting, key=lambda s: (s.vt, s.want_since, s.index))
    return best.index


def hand_over(slots: list[SlotState], me: int, new_vt: float, still_wants: bool, now: float) -> int:
    """Who gets the GPU when slot `me` ends its slice (its virtual time now `new_vt`): the waiting
    slot with the least virtual time, `me` included when it still has work (as the latest waiter,
    so it loses ties). NOBODY when nobody wants it. Updates `me` in `slots` to match."""
    mine = next(s for s in slots if s.index == me)
    mine.vt = new_vt
    mine.want_since = now if still_wants else 0.0
    waiting = [s for s in slots if s.pid and s.want_since > 0.0]
    if not waiting:
        return NOBODY
    return min(waiting, key=lambda s: (s.vt, s.want_since, s.index)).index


def placed_vt(slots: list[SlotState], me: int, owner: int, slice_s: float = 0.0) -> float:
    """The virtual time slot `me` resumes at after being idle: no less than the least virtual time
    of the VMs that are busy (waiting or holding the GPU), less LAG_STRIDES *strides*: a stride is
    the virtual time one slice adds to the lightest of them and `me` (slice_s / least weight).
    Busy VMs' virtual times lie up to a stride apart as they take turns (more while one of them
    holds a slice), so a VM whose short idle leaves it within that of the others keeps its place
    (its credit: re-placing it there cost the 70 VM of a 30/70 pair part of its share whenever its guest
    paused past the worker's idle time; docs/compute.md), and a longer idle banks at most two strides."""
    mine = next(s for s in slots if s.index == me)
    busy = [s for s in slots if s.pid and s.index != me and (s.want_since > 0.0 or s.index == owner)]
    if not busy:
        return mine.vt
    stride = slice_s / min(s.weight for s in (*busy, mine))
    return max(mine.vt, min(s.vt for s in busy) - LAG_STRIDES * stride)


class LimitBucket:
    """GPU-seconds a `limit` VM may still use. Filled at `rate` (percent / 100) per second, up to
    `burst` seconds; charged with the GPU time each slice measured (it may go negative)."""

    def __init__(self, percent: float, burst: float, now: float):
        if not 0 < percent <= 100:
            raise ValueError(f"compute percent must be in (0, 100], not {percent}")
        self.rate = percent / 100.0
        self.burst = burst
        self.level = burst
        self._last = now

    def refill(self, now: float) -> float:
        if now > self._last:
            self.level = min(self.burst, self.level + (now - self._last) * self.rate)
            self._last = now
        return self.level

    def charge(self, gpu_seconds: float) -> None:
        self.level -= gpu_seconds

    def wait_time(self, now: float) -> float:
        """Seconds until the bucket holds something again (0 when it does now)."""
        level = self.refill(now)
        return 0.0 if level > 0 else (-level) / self.rate + 1e-6
