"""GPU time of one slice: CUDA events around the work a worker dispatched while it held the GPU.

A slice starts with an event recorded on the null stream and ends, once the context is drained,
with another; their elapsed time is the VM's GPU time. Only the owner runs work on the GPU during
its slice, so the figure is the VM's own.
"""

from __future__ import annotations

import time

from kvmgpu.backend.base import Backend, CudaError


class EventMeter:
    """Times slices with the backend's events (the cuda backend: real CUevents).

    `source` is the backend, or a function returning the current one: a worker replaces its
    backend after a sticky error, and the events are made again in the new context.
    """

    def __init__(self, source, clock=time.monotonic):
        self._source = source if callable(source) else (lambda: source)
        self._clock = clock
        self.backend: Backend | None = None
        self._t0 = 0.0

    def _events(self) -> None:
        backend = self._source()
        if backend is not self.backend:
            self.backend = backend
            self._start = backend.event_create(0)
            self._end = backend.event_create(0)

    def begin(self) -> None:
        self._t0 = self._clock()
        try:
            self._events()
            self.backend.event_record(self._start, None)
        except CudaError:
            pass  # a dead context: finish() falls back to the wall clock

    def finish(self) -> float:
        """Wait for the context's work; the slice's GPU time in seconds."""
        b = self.backend
        try:
            b.synchronize()
            b.event_record(self._end, None)
            b.event_synchronize(self._end)
            return max(0.0, b.event_elapsed(self._start, self._end) / 1000.0)
        except CudaError:
            # The error stays in the context (sticky) or comes back at the worker's next
            # synchronising call; charge the wall time the VM held the GPU.
            return max(0.0, self._clock() - self._t0)

    def close(self) -> None:
        if self.backend is None:
            return
        for ev in (self._start, self._end):
            try:
                self.backend.event_destroy(ev)
            except CudaError:
                pass


class WallMeter:
    """Charges the wall time a slice held the GPU (for CPU-only tests and the sim backend)."""

    def __init__(self, clock=time.monotonic, drain=None):
        self._clock = clock
        self._drain = drain
        self._t0 = 0.0

    def begin(self) -> None:
        self._t0 = self._clock()

    def finish(self) -> float:
        if self._drain is not None:
            self._drain()
        return max(0.0, self._clock() - self._t0)

    def close(self) -> None:
        pass
