"""A VM's utilisation as the guest's NVML reports it (kvmgpu/compute/usage.py): the GPU time its
gate charged over the last second or more, as a percent of the wall time, and the VGPU_UTILIZATION
op that carries it."""

from kvmgpu.compute.usage import SPACING, Utilisation


class Clock:
    def __init__(self):
        self.now = 50.0

    def __call__(self):
        return self.now


def test_the_share_of_the_last_second_that_the_vm_held_the_gpu():
    clock = Clock()
    u = Utilisation(clock)
    clock.now += 1.0
    assert u.percent(0.3) == (30, 1000)  # 0.3 s of GPU time in its first second
    clock.now += 1.0
    assert u.percent(1.2) == (90, 1000)  # the last second only: 0.9 s more
    clock.now += 0.5
    assert u.percent(1.2) == (60, 1500)  # asked half a second later: from the sample a second back


def test_a_busy_vm_reads_100_and_an_idle_one_0():
    clock = Clock()
    u = Utilisation(clock)
    clock.now += 2.0
    assert u.percent(2.0)[0] == 100
    clock.now += 2.0
    assert u.percent(2.0)[0] == 0


def test_out_of_range_times_are_clamped():
    clock = Clock()
    u = Utilisation(clock)
    assert u.percent(0.0) == (0, 0)  # no time has passed
    clock.now += 1.0
    assert u.percent(5.0)[0] == 100  # a slice charged late can exceed the wall time
    clock.now += 1.0
    assert u.percent(1.0)[0] == 0  # a gate that started over (a new context): never negative


def test_a_monitor_asking_in_a_tight_loop_keeps_few_samples_and_a_full_window():
    clock = Clock()
    u = Utilisation(clock)
    for i in range(1000):
        clock.now += 0.01
        gpu, span = u.percent(0.005 * (i + 1))  # half the time busy
    assert len(u._samples) <= SPACING + 2
    assert 1000 <= span <= 1100 and gpu == 50
