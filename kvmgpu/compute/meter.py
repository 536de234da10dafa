"""GPU time of one slice: the GPU's busy time, not the time the VM held the GPU.

A slice is made of *runs*: a run starts when the worker puts work on an idle GPU (`work()`, called
by the gate before each launch) and ends when the worker is about to wait for the GPU on the
guest's behalf (`mark_idle()`: a synchronising call such as cuCtxSynchronize, cuStreamSynchronize,
a synchronous copy) or when the slice ends. Each run is timed by two CUDA events recorded on the
legacy null stream, which orders them after all earlier work of the context's blocking streams
(the worker creates every guest stream blocking while a gate is on, see VGpu.attach_gate): the
end event completes when the run's last work does. The time between runs (the GPU idle while the
guest's next batch makes its round trip) is charged to nobody.

Event costs on the hot path: one cuEventRecord at a run's first launch, one before the wait that
ends it. Elapsed times are read at the slice's end, not during the round trip. The records go
through the backend's `null_stream_recorder()` where it has one (the cuda backend: cuda-bindings'
cuEventRecord with the null stream bound once, no per-call wrapper or stream lookup); the driver
call itself is ~1.5 µs on the H200 whatever calls it (cuda-bindings, ctypes with or without the
GIL: tests/gpu/call_costs.py), so two records a run is the floor of this design.
"""

from __future__ import annotations

import time

from kvmgpu.backend.base import Backend, CudaError


class EventMeter:
    """Times runs with the backend's events (the cuda backend: real CUevents).

    `source` is the backend, or a function returning the current one: a worker may replace its
    backend, and the events are then made again in the new context.
    """

    def __init__(self, source, clock=time.monotonic):
        self._source = source if callable(source) else (lambda: source)
        self._clock = clock
        self.backend: Backend | None = None
        self._spare: list = []  # events ready for reuse
        self._runs: list = []  # (start event, end event, start wall, end wall) of closed runs
        self._open = None  # (start event, start wall) of the run in progress
        self._wall_only = False  # the context failed: charge wall time until the slice ends
        self._rec = None  # records an event on the null stream (bound to the backend in begin())

    def _record(self):
        """A (reused) event recorded on the null stream now."""
        ev = self._spare.pop() if self._spare else self.backend.event_create(0)
        try:
            self._rec(ev)
        except CudaError:
            self._spare.append(ev)
            raise
        return ev

    def begin(self) -> None:
        """A slice starts (the gate now holds the GPU)."""
        backend = self._source()
        if backend is not self.backend:  # a new context: the old events died with the old one
            self.backend = backend
            self._spare, self._runs, self._open = [], [], None
            fast = getattr(backend, "null_stream_recorder", None)
            self._rec = fast() if fast is not None else (lambda ev: backend.event_record(ev, None))
        self._wall_only = False

    @property
    def running(self) -> bool:
        """A run is in progress (`work()` would do nothing)."""
        return self._open is not None

    def work(self) -> None:
        """GPU work is about to be submitted: start a run if none is in progress."""
        if self._open is not None:
            return
        ev = None
        if not self._wall_only:
            try:
                ev = self._record()
            except CudaError:
                self._wall_only = True
        self._open = (ev, self._clock())

    def mark_idle(self) -> None:
        """The worker is about to wait for the GPU: the run in progress ends with that wait."""
        if self._open is None:
            return
        start, t0 = self._open
        self._open = None
        end = None
        if start is not None and not self._wall_only:
            try:
                end = self._record()
            except CudaError:
                self._wall_only = True
        self._runs.append((start, end, t0, self._clock()))

    def finish(self) -> float:
        """The slice ends: wait for the context's work; the slice's GPU busy time in seconds."""
        self.mark_idle()
        b = self.backend
        try:
            if b is not None:
                b.synchronize()
        except CudaError:
            self._wall_only = True
        busy = 0.0
        for start, end, t0, t1 in self._runs:
            if start is not None and end is not None and not self._wall_only:
                try:
                    busy += max(0.0, b.event_elapsed(start, end) / 1000.0)
                    continue
                except CudaError:
                    pass  # a dead context: the wall time of the run instead
            busy += max(0.0, t1 - t0)
        for start, end, _, _ in self._runs:
            self._spare.extend(ev for ev in (start, end) if ev is not None)
        self._runs.clear()
        return busy

    def close(self) -> None:
        if self.backend is None:
            return
        self.finish()
        for ev in self._spare:
            try:
                self.backend.event_destroy(ev)
            except CudaError:
                pass
        self._spare.clear()


class WallMeter:
    """Runs timed with a clock (CPU-only tests: the 'GPU' is the process's own work between
    `work()` and `mark_idle()`). `drain` is called at a slice's end, like the context drain."""

    def __init__(self, clock=time.monotonic, drain=None):
        self._clock = clock
        self._drain = drain
        self._open: float | None = None
        self._busy = 0.0

    def begin(self) -> None:
        pass

    @property
    def running(self) -> bool:
        return self._open is not None

    def work(self) -> None:
        if self._open is None:
            self._open = self._clock()

    def mark_idle(self) -> None:
        if self._open is not None:
            self._busy += max(0.0, self._clock() - self._open)
            self._open = None

    def finish(self) -> float:
        if self._drain is not None:
            self._drain()
        self.mark_idle()
        busy, self._busy = self._busy, 0.0
        return busy

    def close(self) -> None:
        pass
