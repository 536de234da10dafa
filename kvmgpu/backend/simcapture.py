"""The sim backend's stream capture and graphs (a mixin of SimBackend, kvmgpu/backend/sim.py).

A capturing stream keeps the work the backend is given for it (launches, memsets, device copies,
event records, graph launches: each a function of no arguments) instead of running it; its graph
is that list, and a graph launch runs it in order. The driver's capture rules that a worker could
break are kept, so that the sim fails where the GPU would: work on the null stream while a blocking
stream captures (CUDA_ERROR_STREAM_CAPTURE_IMPLICIT), a synchronise or query of a capturing stream
or of the whole context, a copy between the host and a capturing stream
(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED): each invalidates the capture, whose end is then
CUDA_ERROR_STREAM_CAPTURE_INVALIDATED.
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
        self.capture: list | None = None  # the work captured, while capturing
        self.invalidated = False


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
            return True
        work()
        return False

    def _implicit(self) -> None:
        blocking = [st for st in self._captures if not st.flags & _STREAM_NON_BLOCKING]
        if blocking:
            for st in blocking:
                st.invalidated = True
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_IMPLICIT,
                  "the null stream's work would depend on a blocking stream that is capturing")

    def _uncaptured(self, stream, what: str) -> None:
        """A copy between the host and the device has no place in a graph here (the worker
        refuses it first)."""
        if stream is None:
            self._implicit()
        elif stream.capture is not None:
            stream.invalidated = True
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, f"{what} cannot be captured")

    def _waitable(self, stream) -> None:
        """Synchronising or querying a capturing stream invalidates its capture and fails."""
        if stream is None:
            self._implicit()
        elif stream.capture is not None:
            stream.invalidated = True
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "the stream is capturing")

    def stream_begin_capture(self, stream: SimStream) -> None:
        self._check()
        if stream.capture is not None:
            _fail(CUresult.CUDA_ERROR_ILLEGAL_STATE, "the stream is already capturing")
        stream.capture, stream.invalidated = [], False
        self._captures.append(stream)
        self.capturing = len(self._captures)

    def stream_end_capture(self, stream: SimStream) -> SimGraph:
        self._check()
        if stream.capture is None:
            _fail(CUresult.CUDA_ERROR_ILLEGAL_STATE, "the stream is not capturing")
        work, stream.capture = stream.capture, None
        self._captures.remove(stream)
        self.capturing = len(self._captures)
        if stream.invalidated:
            stream.invalidated = False
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "the capture was invalidated")
        return SimGraph(work)

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
