"""GPU time of one slice: the GPU's busy time, not the time the VM held the GPU.

A slice is made of *runs*: a run starts when the worker puts work on an idle GPU (`work()`, called
by the gate before each launch) and ends where the worker waits for the GPU on the guest's behalf
(a synchronising call such as cuCtxSynchronize, cuStreamSynchronize, a synchronous copy) or when
the slice ends. The time between runs (the GPU idle while the guest's next batch makes its round
trip) is charged to nobody. A run is timed one of two ways, chosen when it starts:

- **By the worker's clock** while the VM's context has no streams of its own (the backend's
  `streams_live`): every wait the run can end with is then on the null stream or the whole
  context, and when such a wait returns none of the VM's work is left on the GPU. The run is
  charged from the first launch call to that return (`waited`): the GPU's busy time plus the
  launch's start latency and the wait's wake-up, a few µs a run. Nothing is recorded on the GPU.
  A wait that does not cover all the work (cuEventSynchronize) ends the run only if the null
  stream is idle after it (one cuStreamQuery); otherwise, and after a stream was made during the
  run, the run goes on to the next wait for the whole context or the slice's end, which drains
  the context: it can be charged more than its busy time, never less.
- **By two CUDA events** otherwise, recorded on the legacy null stream, which orders them after
  all earlier work of the context's blocking streams (the worker creates every guest stream
  blocking while a gate is on, see dispatch.stream_create): one at the run's first launch, one before
  the wait that ends it (`mark_idle`); the end event completes when the run's last work does.
  Elapsed times are read at the slice's end. The records go through the backend's
  `null_stream_recorder` where it declares one (its `capabilities`); the driver call itself costs the
  same whatever calls it (docs/performance.md, "What one record costs").

While a stream of the context captures (the backend's `capturing`: a CUDA graph being recorded)
the meter neither records on the null stream nor drains the context at a slice's end: on the
driver either would invalidate the capture (the null stream's work would depend on the capturing
stream; a context cannot be synchronised while one of its streams captures). A run that starts or
ends then is charged its wall time instead, never less than its busy time.

Why two ways: two event records, their elapsed reads at the slice's end and the meter's Python
cost more than the GPU work and driver calls of a forwarded launch + synchronise (docs/performance.md,
"What one record costs"), and the common program (one stream, synchronising the context or the
null stream) does not need them to be charged right.
"""

from __future__ import annotations

import time

from kvmgpu.backend.base import Backend, CudaError

# What a wait waited for (`waited`): the whole context, the null stream, anything less.
CONTEXT, NULL_STREAM, PART = "context", "null stream", "part"


class EventMeter:
    """Times runs with the worker's clock or with the backend's events (the cuda backend: real
    CUevents); see the module's docstring for which and why.

    `source` is the backend, or a function returning the current one: a worker may replace its
    backend, and the events are then made again in the new context.
    """

    def __init__(self, source, clock=time.monotonic):
        self._source = source if callable(source) else (lambda: source)
        self._clock = clock
        self.backend: Backend | None = None
        self._spare: list = []  # events ready for reuse
        self._runs: list = []  # (start event, end event, start wall, end wall) of closed runs
        self._open = None  # (start event, start wall) of the event-timed run in progress
        self._since: float | None = None  # start of the clock-timed run in progress
        self._made = 0  # the backend's streams_made when that run started
        self._clocked = 0.0  # clock-timed runs closed in this slice, seconds
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
            self._spare, self._runs, self._open, self._since = [], [], None, None
            fast = backend.capabilities.null_stream_recorder
            self._rec = fast if fast is not None else (lambda ev: backend.event_record(ev, None))
        self._wall_only = False

    @property
    def running(self) -> bool:
        """A run is in progress (`work()` would do nothing)."""
        return self._open is not None or self._since is not None

    def clock_timed(self) -> bool:
        """No run is open, and the next one would be timed by the clock (`work`)."""
        b = self.backend
        return self._open is None and self._since is None and b is not None and not b.streams_live

    def add_clocked(self, seconds: float) -> None:
        """Clock-timed runs the worker timed itself (each from its launch to its wait's return, as
        `work` and `waited` would), while `clock_timed`."""
        self._clocked += seconds

    def work(self) -> None:
        """GPU work is about to be submitted: start a run if none is in progress."""
        if self._open is not None or self._since is not None:
            return
        b = self.backend
        assert b is not None  # begin() came first
        if not b.streams_live:
            self._since = self._clock()
            self._made = b.streams_made
            return
        ev = None
        if not self._wall_only and not b.capturing:
            try:
                ev = self._record()
            except CudaError:
                self._wall_only = True
        self._open = (ev, self._clock())

    def mark_idle(self) -> None:
        """The worker is about to wait for the GPU: an event-timed run ends with that wait."""
        if self._open is None:
            return
        start, t0 = self._open
        self._open = None
        end = None
        if start is not None and not self._wall_only and not (self.backend is not None and self.backend.capturing):
            try:
                end = self._record()
            except CudaError:
                self._wall_only = True
        self._runs.append((start, end, t0, self._clock()))

    def waited(self, what: str) -> None:
        """The worker's wait for `what` (CONTEXT, NULL_STREAM or PART) returned, or failed: a
        clock-timed run ends now if none of the VM's work can be left on the GPU."""
        since = self._since
        if since is None:
            return
        if what != CONTEXT:
            b = self.backend
            assert b is not None  # a run started in this slice: begin() came first
            if b.streams_live or b.streams_made != self._made:
                return  # another stream's work may still run: on to a wait for the context
            if what != NULL_STREAM:
                try:
                    if not b.stream_query(None):
                        return
                except CudaError:
                    pass  # a failed context runs nothing: end the run
        self._clocked += max(0.0, self._clock() - since)
        self._since = None

    def finish(self) -> float:
        """The slice ends: wait for the context's work; the slice's GPU busy time in seconds."""
        self.mark_idle()
        b = self.backend
        try:
            if b is not None and not b.capturing:  # (a capture would be invalidated)
                b.synchronize()
        except CudaError:
            self._wall_only = True
        if self._since is not None:
            self.waited(CONTEXT)
        busy, self._clocked = self._clocked, 0.0
        for start, end, t0, t1 in self._runs:
            if b is not None and start is not None and end is not None and not self._wall_only:
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

    def waited(self, what: str) -> None:
        pass

    def clock_timed(self) -> bool:
        return False  # (runs here are wall time between work and mark_idle: no turn of its own)

    def finish(self) -> float:
        if self._drain is not None:
            self._drain()
        self.mark_idle()
        busy, self._busy = self._busy, 0.0
        return busy

    def close(self) -> None:
        pass
