"""The scheduling rules on their own: who gets the GPU, and what shares come out of them."""

import pytest

from kvmgpu.compute.policy import (
    LAG_STRIDES,
    NOBODY,
    SHARE,
    LimitBucket,
    SlotState,
    choose,
    hand_over,
    placed_vt,
)


def slot(i, vt=0.0, want=0.0, weight=50.0, mode=SHARE):
    return SlotState(i, pid=1000 + i, mode=mode, weight=weight, vt=vt, want_since=want)


def test_live_owner_keeps_the_gpu():
    slots = [slot(0), slot(1, want=1.0)]
    assert choose(slots, owner=0, owner_since=1.0, now=1.005, stale_s=0.1) == 0


def test_free_gpu_goes_to_least_virtual_time():
    slots = [slot(0, vt=3.0, want=1.0), slot(1, vt=2.0, want=2.0), slot(2, vt=1.0)]
    assert choose(slots, NOBODY, 0.0, now=3.0, stale_s=0.1) == 1


def test_tie_goes_to_the_earliest_waiter():
    slots = [slot(0, vt=1.0, want=2.0), slot(1, vt=1.0, want=1.0)]
    assert choose(slots, NOBODY, 0.0, now=3.0, stale_s=0.1) == 1


def test_stale_owner_loses_to_a_waiter():
    slots = [slot(0), slot(1, want=1.0)]
    assert choose(slots, owner=0, owner_since=0.0, now=1.0, stale_s=0.1) == 1


def test_nobody_waiting():
    assert choose([slot(0), slot(1)], NOBODY, 0.0, now=1.0, stale_s=0.1) == NOBODY


def test_coming_back_from_idle_banks_no_credit():
    slots = [slot(0, vt=0.1), slot(1, vt=5.0, want=1.0), slot(2, vt=7.0)]
    assert placed_vt(slots, 0, owner=2) == 5.0
    assert placed_vt([slot(0, vt=9.0), slot(1, vt=5.0, want=1.0)], 0, owner=NOBODY) == 9.0
    assert placed_vt([slot(0, vt=0.1), slot(1, vt=5.0)], 0, owner=NOBODY) == 0.1


def test_a_short_idle_keeps_its_place_within_two_strides():
    """A stride is one slice of the lightest VM in virtual time (0.01 / 30 here): a VM back from
    idle resumes no further than LAG_STRIDES strides behind the least busy virtual time."""
    stride = 0.01 / 30
    busy = slot(1, vt=1.0, want=1.0, weight=30)
    near = slot(0, vt=1.0 - 1.5 * stride, weight=70)
    assert placed_vt([near, busy], 0, owner=NOBODY, slice_s=0.01) == near.vt  # keeps its credit
    far = slot(0, vt=0.5, weight=70)
    assert placed_vt([far, busy], 0, owner=NOBODY, slice_s=0.01) == pytest.approx(1.0 - LAG_STRIDES * stride)


def test_hand_over_includes_the_one_letting_go():
    """The VM ending its slice competes with its new virtual time, as the latest waiter."""
    slots = [slot(0, vt=1.0, weight=70), slot(1, vt=1.2, want=1.0, weight=30)]
    assert hand_over(slots, 0, new_vt=1.1, still_wants=True, now=2.0) == 0  # still behind: keeps it
    assert slots[0].vt == 1.1 and slots[0].want_since == 2.0
    assert hand_over(slots, 0, new_vt=1.3, still_wants=True, now=2.0) == 1  # ahead now: the waiter
    assert hand_over(slots, 0, new_vt=1.2, still_wants=True, now=2.0) == 1  # a tie: the earlier waiter
    assert hand_over(slots, 0, new_vt=1.0, still_wants=False, now=2.0) == 1  # done: whoever waits
    assert slots[0].want_since == 0.0
    assert hand_over([slot(0), slot(1)], 0, new_vt=3.0, still_wants=False, now=2.0) == NOBODY
    assert hand_over([slot(0), slot(1)], 0, new_vt=3.0, still_wants=True, now=2.0) == 0  # alone: keeps it


def test_bucket_fills_at_its_rate_up_to_its_burst():
    b = LimitBucket(50, burst=0.01, now=0.0)
    b.charge(0.03)
    assert b.level == pytest.approx(-0.02)
    assert b.wait_time(0.0) == pytest.approx(0.04, abs=1e-5)
    assert b.refill(0.04) == pytest.approx(0.0, abs=1e-9)
    assert b.refill(10.0) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        LimitBucket(0, 0.01, 0.0)


def simulate(weights, seconds=3.0, slice_s=0.010, jitter=(1.0, 1.3, 0.8), modes=None):
    """Busy VMs taking turns by `choose`; slice GPU times vary (drains overshoot). -> GPU shares."""
    modes = modes or [SHARE] * len(weights)
    slots = [slot(i, weight=w, mode=m) for i, (w, m) in enumerate(zip(weights, modes))]
    used = [0.0] * len(slots)
    t, k = 0.0, 0
    while t < seconds:
        for s in slots:  # all stay busy: each asks again as soon as its slice is over
            if s.want_since == 0.0:
                s.want_since = t + 1e-9 * s.index
        who = choose(slots, NOBODY, 0.0, t, 0.1)
        g = slice_s * jitter[k % len(jitter)]
        k += 1
        s = slots[who]
        s.want_since = 0.0
        s.vt += g / s.weight
        used[who] += g
        t += g
    total = sum(used)
    return [u / total for u in used]


def test_shares_follow_weights():
    a, b = simulate([30, 70])
    assert a == pytest.approx(0.30, abs=0.01)
    assert b == pytest.approx(0.70, abs=0.01)
    for share in simulate([25, 25, 25, 25]):
        assert share == pytest.approx(0.25, abs=0.01)


def test_alone_gets_everything():
    assert simulate([10]) == [1.0]
