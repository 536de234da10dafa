"""The sim backend's stream capture and graphs (a mixin of SimBackend, kvmgpu/backend/sim.py).

A capturing stream keeps the work the backend is given for it (launches, memsets, device copies,
event records, graph launches: each a function of no arguments) instead of running it; its graph
is that list, and a graph launch runs it in order. The driver's capture rules that a worker could
break are kept, so that the sim fails where the GPU would: work on the null stream while a blocking
stream captures (CUDA_ERROR_STREAM_CAPTURE_IMPLICIT), a synchronise or query of a capturing stream
or of the whole context, a copy between the host and a capturing stream
(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED): each invalidates the capture, whose end is then
CUDA_ERROR_STREAM_CAPTURE_INVALIDATED.

Several streams, as natively: a stream that waits for an event recorded into a capture joins it
(its work goes into the same graph, after what came before the record: here, the list in the order
given), and the joined streams' last work must be waited for within the capture before it ends
(an event recorded after it, waited for by a stream of the capture: CUDA_ERROR_STREAM_CAPTURE_UNJOINED
otherwise); only the origin ends it
(CUDA_ERROR_STREAM_CAPTURE_UNMATCHED), and two captures do not merge
(CUDA_ERROR_STREAM_CAPTURE_MERGE).
"""

from __future__ import annotations

from typing import NoReturn

from kvmgpu_wire.cudefs import CUresult

from .base import CudaError

_STREAM_NON_BLOCKING = 0x1


def _fail(code: CUresult, detail: str = "") -> NoReturn:
    raise CudaError(code, detail)


class SimStream:
    def __init__(self, flags: int = 0):
        self.flags = flags
        self.capture: list | None = None  # the work captured, while capturing (a joined stream: its origin's)
        self.invalidated = False  # (the origin's: the capture's)
        self.origin: SimStream | None = None  # a stream that joined a capture: the stream that began it
        self.tail = 0  # work this stream put into the capture ...
        self.joined = 0  # ... and how much of it the origin waited for (an event recorded after it)


class SimGraph:
    def __init__(self, work: list):
        self.work = work  # functions of no arguments, in the order captured


class SimCapture:
    """Stream capture for SimBackend: its `_check()` and `capturing` are the backend's."""

    capturing: int

    def _check(self) -> None:  # (SimBackend's: raises where the backend is unusable)
        raise NotImplementedError

    _captures: list  # the streams capturing (SimBackend.__init__ makes it)

    def _run(self, stream, work) -> bool:
        """Run `work` (a function of no arguments) now, or record it into `stream`'s capture: True
        when captured. On the null stream while a blocking stream captures it is the driver's
        CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, and that capture is invalidated."""
        if stream is None:
            self._implicit()
        elif stream.capture is not None:
            stream.capture.append(work)
            stream.tail += 1
            return True
        work()
        return False

    @staticmethod
    def _invalidate(stream: SimStream) -> None:
        (stream.origin or stream).invalidated = True

    def _implicit(self) -> None:
        blocking = [st for st in self._captures if not st.flags & _STREAM_NON_BLOCKING]
        if blocking:
            for st in blocking:
                self._invalidate(st)
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_IMPLICIT,
                  "the null stream's work would depend on a blocking stream that is capturing")

    def _uncaptured(self, stream, what: str) -> None:
        """A copy between the host and the device has no place in a graph here (the worker
        refuses it first)."""
        if stream is None:
            self._implicit()
        elif stream.capture is not None:
            self._invalidate(stream)
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, f"{what} cannot be captured")

    def _waitable(self, stream) -> None:
        """Synchronising or querying a capturing stream invalidates its capture and fails."""
        if stream is None:
            self._implicit()
        elif stream.capture is not None:
            self._invalidate(stream)
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "the stream is capturing")

    def stream_begin_capture(self, stream: SimStream) -> None:
        self._check()
        if stream.capture is not None:
            _fail(CUresult.CUDA_ERROR_ILLEGAL_STATE, "the stream is already capturing")
        stream.capture, stream.invalidated, stream.tail = [], False, 0
        self._captures.append(stream)
        self.capturing = len(self._captures)

    def stream_end_capture(self, stream: SimStream) -> SimGraph:
        self._check()
        if stream.capture is None:
            _fail(CUresult.CUDA_ERROR_ILLEGAL_STATE, "the stream is not capturing")
        if stream.origin is not None:
            self._invalidate(stream)
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNMATCHED,
                  "the capture was begun on another stream (which this one joined)")
        work = stream.capture
        members = [st for st in self._captures if st.capture is work]
        unjoined = [st for st in members if st.origin is not None and st.tail > st.joined]
        for st in members:
            st.capture, st.origin = None, None
            self._captures.remove(st)
        self.capturing = len(self._captures)
        invalidated, stream.invalidated = stream.invalidated, False
        if invalidated:
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "the capture was invalidated")
        if unjoined:
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNJOINED,
                  f"{len(unjoined)} stream(s) that joined the capture have work not waited for in it")
        return SimGraph(work)

    def stream_wait_event(self, stream, event, flags: int) -> None:
        """Order `stream` after `event` (here everything has run already), and the captures'
        forks and joins: see the module's docstring."""
        self._check()
        into = event.capture if event.captured else None  # the capture it was recorded into
        if into is None or not any(st.capture is into for st in self._captures):
            return  # (an event of no capture going on: its work is done)
        if stream is None:
            self._implicit()
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_ISOLATION,
                  "the null stream cannot join a capture")
        if stream.capture is None:  # a fork: the stream joins the capture
            origin = next(st for st in self._captures if st.capture is into and st.origin is None)
            stream.capture, stream.origin, stream.tail, stream.joined = into, origin, 0, 0
            self._captures.append(stream)
            self.capturing = len(self._captures)
        elif stream.capture is not into:
            self._invalidate(stream)
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_MERGE, "the event was recorded into another capture")
        elif event.source is not None and event.source.capture is into:  # a join
            event.source.joined = max(event.source.joined, event.tail)

    def graph_instantiate(self, graph: SimGraph, flags: int) -> SimGraph:
        self._check()
        return SimGraph(list(graph.work))

    def graph_launch(self, graph_exec: SimGraph, stream) -> None:
        self._check()

        def replay() -> None:
            for work in graph_exec.work:
                work()
        self._run(stream, replay)

    def graph_node_count(self, graph: SimGraph) -> int:
        self._check()
        return len(graph.work)

    def graph_upload(self, graph_exec: SimGraph, stream) -> None:
        self._check()
        if stream is None:
            self._implicit()

    def graph_exec_destroy(self, graph_exec: SimGraph) -> None:
        self._check()

    def graph_destroy(self, graph: SimGraph) -> None:
        self._check()
