"""The compute meter: which runs it times by the worker's clock and which by CUDA events, and what
each run is charged. A stand-in backend keeps a GPU timeline the test sets, so the two ways give
different answers wherever they differ."""

import pytest

from kvmgpu.backend.base import Capabilities, CudaError
from kvmgpu.compute.meter import CONTEXT, NULL_STREAM, PART, EventMeter


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Event:
    gpu_time = None  # when the GPU reached it, seconds


class Backend:
    """Streams counted as the real backends count them; an event "completes" at `gpu_at`, which
    the test moves to play the GPU running behind the worker."""

    def __init__(self, clock):
        self.clock = clock
        self.streams_live = self.streams_made = 0
        self.capturing = 0  # streams capturing a graph
        self.synchronized = 0
        self.recorded = 0
        self.gpu_at = None  # None: the GPU is idle, an event completes at once
        self.null_idle = True
        self.fail = False

    def event_create(self, flags):
        return Event()

    @property
    def capabilities(self):
        def record(ev):
            self.recorded += 1
            ev.gpu_time = self.clock() if self.gpu_at is None else self.gpu_at
        return Capabilities(null_stream_recorder=record)

    def event_elapsed(self, start, end):
        return (end.gpu_time - start.gpu_time) * 1000.0

    def event_destroy(self, ev):
        pass

    def stream_query(self, stream):
        assert stream is None
        if self.fail:
            raise CudaError(700)
        return self.null_idle

    def stream_create(self):
        self.streams_live += 1
        self.streams_made += 1

    def synchronize(self):
        self.synchronized += 1
        if self.fail:
            raise CudaError(700)


@pytest.fixture
def meter():
    clock = Clock()
    b = Backend(clock)
    m = EventMeter(b, clock=clock)
    m.begin()
    m.clock, m.b = clock, b
    return m


def run(m, seconds, what, gpu_done=None):
    """A run: launches at now, the worker waits `seconds` later for `what`; with `gpu_done` the
    GPU's last work of the run ended that long after the start (events see that)."""
    start = m.clock.now
    m.work()
    m.clock.now += seconds
    m.b.gpu_at = None if gpu_done is None else start + gpu_done
    m.mark_idle()
    m.waited(what)
    m.b.gpu_at = None


def test_one_stream_runs_are_timed_by_the_clock_without_events(meter):
    run(meter, 0.002, NULL_STREAM)
    meter.clock.now += 0.010  # the guest's round trip: not charged
    run(meter, 0.003, CONTEXT)
    assert not meter.running
    assert meter.finish() == pytest.approx(0.005)
    assert meter.b.recorded == 0


def test_with_a_stream_runs_are_timed_by_events(meter):
    meter.b.stream_create()
    run(meter, 0.002, NULL_STREAM, gpu_done=0.0015)  # the GPU's own busy time, not the wait's
    assert meter.b.recorded == 2
    assert meter.finish() == pytest.approx(0.0015)


def test_a_stream_made_during_a_run_keeps_it_open_until_a_context_wait(meter):
    meter.work()
    meter.b.stream_create()
    meter.b.streams_live = 0  # made and already destroyed: its work may still be running
    meter.clock.now += 0.001
    meter.waited(NULL_STREAM)
    assert meter.running  # not ended: the other stream's work is not known to be done
    meter.clock.now += 0.004
    meter.waited(CONTEXT)
    assert not meter.running
    assert meter.finish() == pytest.approx(0.005)


def test_a_partial_wait_ends_the_run_only_when_the_null_stream_is_idle(meter):
    meter.work()
    meter.clock.now += 0.001
    meter.b.null_idle = False
    meter.waited(PART)  # cuEventSynchronize with work still queued behind the event
    assert meter.running
    meter.clock.now += 0.001
    meter.b.null_idle = True
    meter.waited(PART)
    assert not meter.running
    assert meter.finish() == pytest.approx(0.002)


def test_the_slice_end_charges_an_open_run_until_the_drain(meter):
    meter.work()
    meter.clock.now += 0.003  # queued work, no wait: the slice ends with it running
    assert meter.running
    assert meter.finish() == pytest.approx(0.003)
    assert not meter.running
    assert meter.finish() == 0.0


def test_a_failed_context_ends_the_run(meter):
    meter.work()
    meter.clock.now += 0.001
    meter.b.fail = True
    meter.waited(PART)  # the query fails: nothing runs in a failed context
    assert not meter.running
    assert meter.finish() == pytest.approx(0.001)


def test_while_a_stream_captures_nothing_touches_the_null_stream_or_the_context(meter):
    """On the driver a null-stream record, or a context synchronise, would invalidate a capture
    (a CUDA graph being recorded): the runs then are charged their wall time, and the slice's end
    does not drain the context."""
    meter.b.stream_create()
    meter.b.capturing = 1
    run(meter, 0.002, PART, gpu_done=0.001)
    assert meter.b.recorded == 0
    assert meter.finish() == pytest.approx(0.002)  # its wall time: never less than its busy time
    assert meter.b.synchronized == 0
    meter.b.capturing = 0  # the capture ended: events again
    run(meter, 0.002, PART, gpu_done=0.001)
    assert meter.b.recorded == 2
    assert meter.finish() == pytest.approx(0.001) and meter.b.synchronized == 1
