"""Weighted shares under the deterministic simulation of tests/compute/sim.py: two (or four)
workers with batches of 200 us kernels, forwarded round trips between batches, bursts of guest CPU
work past the worker's idle time, and a cost on every board operation. No GPU, no wall clock: the
same figures every run."""

import pytest

import kvmgpu.compute.gate as gate_module
from kvmgpu.compute.gate import ComputeGate
from kvmgpu.compute.policy import NOBODY
from tests.compute.sim import share_run


class LetGoGate(ComputeGate):
    """The hand-over before the fix: at a slice's end with others waiting, let go to nobody and
    then ask again like any other waiter (one more board operation later)."""

    def _end_slice(self, still_wants):
        with self.board.locked():
            others = any(s.want_since > 0.0 for s in self.board.slots() if s.index != self.slot)
        super()._end_slice(still_wants and not others)
        if not self.held:
            self._waiting = False
            with self.board.locked():
                if self.board.owner() != self.slot and self.board.owner() != NOBODY:
                    self.board.set_owner(NOBODY, self._clock())  # nobody chosen: the GPU lies free


@pytest.fixture
def old_gate(monkeypatch):
    """Also the old placement (an idle VM resumes at the least busy virtual time, no credit kept)
    and the old 10 ms slice."""
    placed = gate_module.placed_vt
    monkeypatch.setattr(gate_module, "placed_vt", lambda slots, me, owner, slice_s=0.0: placed(slots, me, owner))
    monkeypatch.setattr(gate_module, "ComputeGate", LetGoGate)
    return {"slice_s": 0.010}


def _run(tmp_path, percents, **kw):
    import tests.compute.sim as sim
    sim.ComputeGate = gate_module.ComputeGate  # the (maybe patched) gate
    return share_run(tmp_path, percents, **kw)


SEEDS = (1, 2)


def test_the_old_hand_over_drifts(tmp_path, old_gate):
    """The reproduction: with the old hand-over the 30 VM of a 30/70 pair gets more than its share
    (on the H200: 30-34 % over whole runs, 20-42 % per 1 s window)."""
    whole, worst = [], 0.0
    for seed in SEEDS:
        shares, kernels, _ = _run(tmp_path, (30, 70), seconds=3.5, seed=seed, lock_s=20e-6, **old_gate)
        whole.append(kernels[0] / sum(kernels))
        worst = max(worst, *(abs(s - 0.30) for s in shares[0]))
    assert min(whole) > 0.32 and worst > 0.03, (whole, worst)  # seeds 1, 2: 35.5 and 33.9 %, a window 37.7 %


def test_30_70_within_3pp_in_every_window(tmp_path, burst_p=0.05):
    worst = 0.0
    for seed in SEEDS:
        shares, kernels, gates = _run(tmp_path, (30, 70), seconds=3.5, seed=seed, lock_s=20e-6, burst_p=burst_p)
        for series, target in zip(shares, (0.30, 0.70)):
            worst = max(worst, *(abs(s - target) for s in series))
        assert kernels[0] / sum(kernels) == pytest.approx(0.30, abs=0.01)
        assert gates[1].kept > 0 and gates[0].handed > 0  # the 70 VM keeps the GPU for runs of slices
    assert worst <= 0.02, worst  # seeds 1-4: 29.7-30.9 % per window


def test_equal_shares_of_four(tmp_path):
    shares, _, _ = _run(tmp_path, (25, 25, 25, 25), seconds=2.5, seed=1, lock_s=20e-6)
    for series in shares:
        for s in series:
            assert s == pytest.approx(0.25, abs=0.02)


def test_alone_it_gets_all_it_asks_for(tmp_path):
    """Work-conserving: one VM, bursts and idles included, never waits for the GPU."""
    shares, kernels, gates = _run(tmp_path, (30,), seconds=1.5, seed=1, burst_p=0.05)
    busy = sum(kernels)
    assert gates[0].handed == 0 and busy > 0.8  # the kernels fill all but the gaps of 1.5 s
