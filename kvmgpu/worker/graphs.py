"""Stream capture and CUDA graphs: the handlers of the specification's ops 80-86.

The capture happens on the host: STREAM_BEGIN_CAPTURE puts the worker's stream into capture mode
(relaxed: the worker's one thread serves every session of the VM, so no mode may forbid its other
calls; the guest library keeps its own threads' modes), and what the guest then launches, sets
or copies on that stream arrives as ever, is checked as ever (dispatch.py) and is captured by the
driver instead of run. STREAM_END_CAPTURE gives the graph, GRAPH_INSTANTIATE its executable: both
are host objects behind the session's `graphs` and `graph_execs` handle tables, so another
session's graph (or one destroyed) is not found (INVALID_HANDLE), and they go when the session
ends (`release`).

Several streams: a stream that waits for an event recorded into a capture (STREAM_WAIT_EVENT)
joins it, as natively (the driver forks the capture onto it); it is then a capturing stream here
too (`captures`, `joined`) until its origin's capture ends, which only the origin may end.

A copy between the window and a capturing stream is refused (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED):
a graph would replay it from or into the window as it is then, not the guest memory the program
named.

A graph launch is metered like a kernel launch: the compute gate's `before_launch` comes first
(it may wait for the VM's turn on the GPU, and opens the meter's run), and the GPU time the graph
takes is charged when the worker next waits for the GPU (kvmgpu/compute/meter.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import Op

from ..backend.base import CudaError
from .session import Session

if TYPE_CHECKING:
    from .vgpu import VGpu

log = logging.getLogger("kvmgpu.worker")
OK = ((), b"")


def refuse_captured(s: Session, stream: int, what: str) -> None:
    """A copy between the window and stream handle `stream` while it captures: refused."""
    if stream in s.captures:
        raise CudaError(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                        f"{what} on a capturing stream cannot be part of a graph on the vGPU "
                        "(copy before the capture, or from device memory)")


def stream_begin_capture(vg: VGpu, s: Session, r, call):
    vg.backend.stream_begin_capture(r.stream)
    s.captures.add(r.stream_handle)
    return OK


def stream_end_capture(vg: VGpu, s: Session, r, call):
    if r.stream_handle not in s.captures:
        raise CudaError(CUresult.CUDA_ERROR_ILLEGAL_STATE, "the stream is not capturing")
    if r.stream_handle in s.joined:  # the driver's refusal (that capture invalidated, as natively)
        vg.backend.graph_destroy(vg.backend.stream_end_capture(r.stream))
        raise CudaError(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNMATCHED,
                        "the capture was begun on another stream, which this one joined")
    _ended(s, r.stream_handle)  # the capture ends whatever the driver says
    graph = vg.backend.stream_end_capture(r.stream)
    try:
        _vm_room(vg)
    except CudaError:
        vg.backend.graph_destroy(graph)
        raise
    h = s.new_handle()
    s.graphs[h] = graph
    return (h,), b""


def _ended(s: Session, origin: int) -> None:
    """The capture begun on stream handle `origin` ends: it and the streams that joined it are no
    longer capturing, and the events recorded into it belong to no capture going on."""
    s.captures.discard(origin)
    for h in [h for h, o in s.joined.items() if o == origin]:
        del s.joined[h]
        s.captures.discard(h)
    for e in [e for e, o in s.captured_events.items() if o == origin]:
        del s.captured_events[e]


def _capture_of(s: Session, stream: int) -> int | None:
    """The origin of the capture stream handle `stream` is part of, or None."""
    if stream not in s.captures:
        return None
    return s.joined.get(stream, stream)


def event_record(vg: VGpu, s: Session, r, call):
    vg.backend.event_record(r.event, r.stream)
    origin = _capture_of(s, r.stream_handle)
    if origin is None:
        s.captured_events.pop(r.event_handle, None)
    else:
        s.captured_events[r.event_handle] = origin
    return OK


def stream_wait_event(vg: VGpu, s: Session, r, call):
    vg.backend.stream_wait_event(r.stream, r.event, r.flags)
    origin = s.captured_events.get(r.event_handle)
    if origin is not None and r.stream_handle and r.stream_handle not in s.captures:
        s.captures.add(r.stream_handle)  # a fork: the stream joined that capture
        s.joined[r.stream_handle] = origin
    return OK


def graph_instantiate(vg: VGpu, s: Session, r, call):
    _vm_room(vg)
    graph_exec = vg.backend.graph_instantiate(r.graph, r.flags)
    h = s.new_handle()
    s.graph_execs[h] = graph_exec
    return (h,), b""


def graph_launch(vg: VGpu, s: Session, r, call):
    if vg.gate is not None:
        vg.gate.before_launch()  # may wait for this VM's turn on the GPU; opens the meter's run
    vg.backend.graph_launch(r.graph_exec, r.stream)
    return OK


def graph_exec_destroy(vg: VGpu, s: Session, r, call):
    del s.graph_execs[r.graph_exec_handle]
    vg.backend.graph_exec_destroy(r.graph_exec)
    return OK


def graph_destroy(vg: VGpu, s: Session, r, call):
    del s.graphs[r.graph_handle]
    vg.backend.graph_destroy(r.graph)
    return OK


def end_capture(vg: VGpu, s: Session, handle: int) -> None:
    """End the capture of stream `handle` and drop its graph (the stream is being destroyed; one
    that joined a capture leaves it to its origin)."""
    if handle in s.joined:
        del s.joined[handle]
        s.captures.discard(handle)
    elif handle in s.captures:
        _ended(s, handle)
        try:
            vg.backend.graph_destroy(vg.backend.stream_end_capture(s.streams[handle]))
        except CudaError as e:  # an invalidated capture: no graph to drop
            log.debug("capture of stream %d ended: %s", handle, e)


def release(vg: VGpu, s: Session, quietly) -> None:
    """The session ends: its executables, graphs and captures go (before its streams)."""
    b = vg.backend
    for graph_exec in s.graph_execs.values():
        quietly(b.graph_exec_destroy, graph_exec)
    for graph in s.graphs.values():
        quietly(b.graph_destroy, graph)
    s.graph_execs.clear()
    s.graphs.clear()
    for handle in [h for h in s.captures if h not in s.joined]:
        end_capture(vg, s, handle)


def _vm_room(vg: VGpu) -> None:
    from .dispatch import _vm_room as room  # (dispatch imports this module)
    room(vg)


HANDLERS = {
    Op.STREAM_BEGIN_CAPTURE: stream_begin_capture,
    Op.STREAM_END_CAPTURE: stream_end_capture,
    Op.EVENT_RECORD: event_record,
    Op.STREAM_WAIT_EVENT: stream_wait_event,
    Op.GRAPH_INSTANTIATE: graph_instantiate,
    Op.GRAPH_LAUNCH: graph_launch,
    Op.GRAPH_EXEC_DESTROY: graph_exec_destroy,
    Op.GRAPH_DESTROY: graph_destroy,
}
