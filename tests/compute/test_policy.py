"""The scheduling rules on their own: who gets the GPU, and what shares come out of them."""

import pytest

from kvmgpu.compute.policy import LIMIT, NOBODY, SHARE, LimitBucket, SlotState, choose, placed_vt


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
