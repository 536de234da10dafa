"""A VM's GPU utilisation as NVML reports one: the percent of wall time its work held the GPU
over the last second or more (nvmlDeviceGetUtilizationRates' `gpu`, for the guest's NVML).

The GPU time is the compute gate's (`ComputeGate.gpu_seconds`, charged as each slice ends: a
slice is 5 ms, so the figure lags by at most that). Each question leaves a sample; the answer
spans from the newest sample at least `window` seconds old (or the first, when the VM is younger)
to now, so a monitor asking once a second sees the last one to two seconds.
"""

from __future__ import annotations

import time
from collections import deque

WINDOW_S = 1.0
SPACING = 32  # samples are kept at least window/SPACING apart: a monitor asking in a tight loop
# keeps about SPACING of them


class Utilisation:
    def __init__(self, clock=time.monotonic, window: float = WINDOW_S):
        self._clock = clock
        self.window = window
        self._samples: deque[tuple[float, float]] = deque([(clock(), 0.0)])

    def percent(self, gpu_seconds: float) -> tuple[int, int]:
        """(percent 0..100, milliseconds the answer spans) with the VM's GPU time so far."""
        now = self._clock()
        samples = self._samples
        if now - samples[-1][0] >= self.window / SPACING:
            samples.append((now, gpu_seconds))
        while len(samples) > 1 and samples[1][0] <= now - self.window:
            samples.popleft()  # the next one is itself old enough to start from
        start, used = samples[0]
        span = now - start
        if span <= 0:
            return 0, 0
        share = (gpu_seconds - used) / span
        return max(0, min(100, round(100 * share))), int(span * 1000)
