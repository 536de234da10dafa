"""The worker's checked requests.

Generated from guest-agent/kvmgpu_wire/spec.py by tools/gen_wire.py (make gen): do not edit.

For every op whose arguments their kinds fully check, a request type (the checked, resolved
arguments a handler works with) and the function that builds it from a call, or raises
CudaError with the error the kind documents (kvmgpu/worker/checks.py). `CHECKS[op]` is that
function, None for the ops whose handlers check their arguments themselves (the
specification says why). `THIN` are the ops whose handler is one backend call."""

from __future__ import annotations

from typing import NamedTuple

from kvmgpu_wire.protocol import Call, Op

from . import checks
from .session import Session


class CtxSynchronize(NamedTuple):
    """CTX_SYNCHRONIZE: wait for all of the context's work."""


def ctx_synchronize(s: Session, call: Call) -> CtxSynchronize:
    return CtxSynchronize()


class MemAlloc(NamedTuple):
    """MEM_ALLOC: allocate device memory."""

    nbytes: int  # at least 1; bounded by its ranges


def mem_alloc(s: Session, call: Call) -> MemAlloc:
    a_nbytes, = call.args
    nbytes = checks.length(a_nbytes, "nbytes", 1)
    return MemAlloc(nbytes)


class MemFree(NamedTuple):
    """MEM_FREE: free an allocation."""

    dptr: int  # as the guest sent it
    dptr_range: object  # the allocation's range (None for 0)


def mem_free(s: Session, call: Call) -> MemFree:
    a_dptr, = call.args
    dptr_range = checks.allocation(s, a_dptr, "dptr")
    return MemFree(a_dptr, dptr_range)


class MemGetInfo(NamedTuple):
    """MEM_GET_INFO: the quota's free and total bytes."""


def mem_get_info(s: Session, call: Call) -> MemGetInfo:
    return MemGetInfo()


class MemcpyHtod(NamedTuple):
    """MEMCPY_HTOD: copy window bytes to device memory."""

    dst: int  # [dst, +nbytes) is inside one of the session's ranges
    offset: int  # the region offset of the window range
    nbytes: int  # bounded by the ranges that use it
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def memcpy_htod(s: Session, call: Call) -> MemcpyHtod:
    a_dst, a_offset, a_nbytes, a_stream = call.args
    nbytes = a_nbytes
    dst = checks.device_range(s, a_dst, a_nbytes, "dst")
    offset = checks.window(s, a_offset, a_nbytes, "offset")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return MemcpyHtod(dst, offset, nbytes, stream, a_stream)


class MemcpyDtoh(NamedTuple):
    """MEMCPY_DTOH: copy device memory into the window."""

    offset: int  # the region offset of the window range
    src: int  # [src, +nbytes) is inside one of the session's ranges
    nbytes: int  # bounded by the ranges that use it
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def memcpy_dtoh(s: Session, call: Call) -> MemcpyDtoh:
    a_offset, a_src, a_nbytes, a_stream = call.args
    nbytes = a_nbytes
    offset = checks.window(s, a_offset, a_nbytes, "offset")
    src = checks.device_range(s, a_src, a_nbytes, "src")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return MemcpyDtoh(offset, src, nbytes, stream, a_stream)


class MemcpyDtod(NamedTuple):
    """MEMCPY_DTOD: copy device to device."""

    dst: int  # [dst, +nbytes) is inside one of the session's ranges
    src: int  # [src, +nbytes) is inside one of the session's ranges
    nbytes: int  # bounded by the ranges that use it
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def memcpy_dtod(s: Session, call: Call) -> MemcpyDtod:
    a_dst, a_src, a_nbytes, a_stream = call.args
    nbytes = a_nbytes
    dst = checks.device_range(s, a_dst, a_nbytes, "dst")
    src = checks.device_range(s, a_src, a_nbytes, "src")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return MemcpyDtod(dst, src, nbytes, stream, a_stream)


class MemsetD8(NamedTuple):
    """MEMSET_D8: set bytes."""

    dst: int  # [dst, +count) is inside one of the session's ranges
    value: int  # at most 0xff
    count: int  # type: ignore[assignment]  # (hides tuple.count) bounded by the ranges that use it
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def memset_d8(s: Session, call: Call) -> MemsetD8:
    a_dst, a_value, a_count, a_stream = call.args
    value = checks.value(a_value, 0xff, "value")
    count = a_count
    dst = checks.device_range(s, a_dst, a_count, "dst")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return MemsetD8(dst, value, count, stream, a_stream)


class MemsetD32(NamedTuple):
    """MEMSET_D32: set 32-bit words."""

    dst: int  # [dst, +count) is inside one of the session's ranges
    value: int  # at most 0xffffffff
    count: int  # type: ignore[assignment]  # (hides tuple.count) bounded by the ranges that use it
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def memset_d32(s: Session, call: Call) -> MemsetD32:
    a_dst, a_value, a_count, a_stream = call.args
    value = checks.value(a_value, 0xffffffff, "value")
    count = a_count
    dst = checks.device_range(s, a_dst, a_count * 4, "dst")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return MemsetD32(dst, value, count, stream, a_stream)


class ModuleUnload(NamedTuple):
    """MODULE_UNLOAD: unload a module."""

    module: object  # the object of handle module in the session's modules
    module_handle: int  # as the guest sent it


def module_unload(s: Session, call: Call) -> ModuleUnload:
    a_module, = call.args
    module = s.lookup("modules", a_module, "module")
    return ModuleUnload(module, a_module)


class ModuleGetFunction(NamedTuple):
    """MODULE_GET_FUNCTION: a kernel by name; the reply blob has (offset u32, size u32) per parameter."""

    module: object  # the object of handle module in the session's modules
    module_handle: int  # as the guest sent it
    name: str  # the blob: UTF-8, not empty, no NUL


def module_get_function(s: Session, call: Call) -> ModuleGetFunction:
    a_module, = call.args
    checks.room(s, "functions")
    module = s.lookup("modules", a_module, "module")
    name = checks.symbol(call.blob)
    return ModuleGetFunction(module, a_module, name)


class ModuleGetGlobal(NamedTuple):
    """MODULE_GET_GLOBAL: a module global's address and size."""

    module: object  # the object of handle module in the session's modules
    module_handle: int  # as the guest sent it
    name: str  # the blob: UTF-8, not empty, no NUL


def module_get_global(s: Session, call: Call) -> ModuleGetGlobal:
    a_module, = call.args
    module = s.lookup("modules", a_module, "module")
    name = checks.symbol(call.blob)
    return ModuleGetGlobal(module, a_module, name)


class StreamCreate(NamedTuple):
    """STREAM_CREATE: a new stream."""

    flags: int  # bits within 0x1


def stream_create(s: Session, call: Call) -> StreamCreate:
    a_flags, = call.args
    checks.room(s, "streams")
    flags = checks.flags(a_flags, 0x1, "flags")
    return StreamCreate(flags)


class StreamDestroy(NamedTuple):
    """STREAM_DESTROY: destroy a stream."""

    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def stream_destroy(s: Session, call: Call) -> StreamDestroy:
    a_stream, = call.args
    stream = s.lookup("streams", a_stream, "stream")
    return StreamDestroy(stream, a_stream)


class StreamSynchronize(NamedTuple):
    """STREAM_SYNCHRONIZE: wait for a stream's work."""

    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def stream_synchronize(s: Session, call: Call) -> StreamSynchronize:
    a_stream, = call.args
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return StreamSynchronize(stream, a_stream)


class StreamQuery(NamedTuple):
    """STREAM_QUERY: whether a stream's work is done (NOT_READY)."""

    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def stream_query(s: Session, call: Call) -> StreamQuery:
    a_stream, = call.args
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return StreamQuery(stream, a_stream)


class EventCreate(NamedTuple):
    """EVENT_CREATE: a new event."""

    flags: int  # bits within 0x3


def event_create(s: Session, call: Call) -> EventCreate:
    a_flags, = call.args
    checks.room(s, "events")
    flags = checks.flags(a_flags, 0x3, "flags")
    return EventCreate(flags)


class EventRecord(NamedTuple):
    """EVENT_RECORD: record an event on a stream."""

    event: object  # the object of handle event in the session's events
    event_handle: int  # as the guest sent it
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def event_record(s: Session, call: Call) -> EventRecord:
    a_event, a_stream = call.args
    event = s.lookup("events", a_event, "event")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return EventRecord(event, a_event, stream, a_stream)


class EventSynchronize(NamedTuple):
    """EVENT_SYNCHRONIZE: wait for an event."""

    event: object  # the object of handle event in the session's events
    event_handle: int  # as the guest sent it


def event_synchronize(s: Session, call: Call) -> EventSynchronize:
    a_event, = call.args
    event = s.lookup("events", a_event, "event")
    return EventSynchronize(event, a_event)


class EventQuery(NamedTuple):
    """EVENT_QUERY: whether an event has happened (NOT_READY)."""

    event: object  # the object of handle event in the session's events
    event_handle: int  # as the guest sent it


def event_query(s: Session, call: Call) -> EventQuery:
    a_event, = call.args
    event = s.lookup("events", a_event, "event")
    return EventQuery(event, a_event)


class EventElapsed(NamedTuple):
    """EVENT_ELAPSED: milliseconds between two events."""

    start: object  # the object of handle start in the session's events
    start_handle: int  # as the guest sent it
    end: object  # the object of handle end in the session's events
    end_handle: int  # as the guest sent it


def event_elapsed(s: Session, call: Call) -> EventElapsed:
    a_start, a_end = call.args
    start = s.lookup("events", a_start, "start")
    end = s.lookup("events", a_end, "end")
    return EventElapsed(start, a_start, end, a_end)


class EventDestroy(NamedTuple):
    """EVENT_DESTROY: destroy an event."""

    event: object  # the object of handle event in the session's events
    event_handle: int  # as the guest sent it


def event_destroy(s: Session, call: Call) -> EventDestroy:
    a_event, = call.args
    event = s.lookup("events", a_event, "event")
    return EventDestroy(event, a_event)


class Fence(NamedTuple):
    """FENCE: wait until no queued work still reads or writes this session's window."""


def fence(s: Session, call: Call) -> Fence:
    return Fence()


class MemcpyDtohPieces(NamedTuple):
    """MEMCPY_DTOH_PIECES: a DtoH in pieces of about `piece` bytes; after each the host stores the bytes landed (u32) at
    window offset `landed`."""

    offset: int  # the region offset of the window range
    src: int  # [src, +nbytes) is inside one of the session's ranges
    nbytes: int  # 0..4294967295
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it
    piece: int  # bounded by the ranges that use it
    landed: int  # the region offset of the window range


def memcpy_dtoh_pieces(s: Session, call: Call) -> MemcpyDtohPieces:
    a_offset, a_src, a_nbytes, a_stream, a_piece, a_landed = call.args
    nbytes = checks.length(a_nbytes, "nbytes", 0, 0xffffffff, hint='a u32 counts landed bytes: use MEMCPY_DTOH')
    piece = a_piece
    offset = checks.window(s, a_offset, a_nbytes, "offset")
    src = checks.device_range(s, a_src, a_nbytes, "src")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    landed = checks.window(s, a_landed, 4, "landed", 4)
    return MemcpyDtohPieces(offset, src, nbytes, stream, a_stream, piece, landed)


class CtxGetFlags(NamedTuple):
    """CTX_GET_FLAGS: the flags of the VM's context on the host."""


def ctx_get_flags(s: Session, call: Call) -> CtxGetFlags:
    return CtxGetFlags()


class DeviceGetPciBusId(NamedTuple):
    """DEVICE_GET_PCI_BUS_ID: the GPU's PCI bus id, domain:bus:device.function in hex (the guest checks the device: its
    only one is 0)."""


def device_get_pci_bus_id(s: Session, call: Call) -> DeviceGetPciBusId:
    return DeviceGetPciBusId()


class StreamGetPriority(NamedTuple):
    """STREAM_GET_PRIORITY: a stream's priority."""

    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def stream_get_priority(s: Session, call: Call) -> StreamGetPriority:
    a_stream, = call.args
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return StreamGetPriority(stream, a_stream)


class StreamWaitEvent(NamedTuple):
    """STREAM_WAIT_EVENT: make a stream's later work wait for an event's work (during a capture: a stream that waits for
    an event recorded in it joins that capture, as natively)."""

    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it
    event: object  # the object of handle event in the session's events
    event_handle: int  # as the guest sent it
    flags: int  # bits within 0x1


def stream_wait_event(s: Session, call: Call) -> StreamWaitEvent:
    a_stream, a_event, a_flags = call.args
    flags = checks.flags(a_flags, 0x1, "flags")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    event = s.lookup("events", a_event, "event")
    return StreamWaitEvent(stream, a_stream, event, a_event, flags)


class VgpuProcesses(NamedTuple):
    """VGPU_PROCESSES: the VM's guest processes with CUDA sessions (not monitors), by the pid each HELLO gave, and the
    device memory each holds; at most MAX_PROCESSES."""


def vgpu_processes(s: Session, call: Call) -> VgpuProcesses:
    return VgpuProcesses()


class VgpuUtilization(NamedTuple):
    """VGPU_UTILIZATION: this VM's GPU time as a percent of the wall time over the last second or more (the compute
    gate's meter; 0 where the VM has no gate); memory: 0, not measured."""


def vgpu_utilization(s: Session, call: Call) -> VgpuUtilization:
    return VgpuUtilization()


class StreamBeginCapture(NamedTuple):
    """STREAM_BEGIN_CAPTURE: start capturing a stream's work into a graph (on the host always in relaxed mode: the guest
    keeps the modes of its threads)."""

    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def stream_begin_capture(s: Session, call: Call) -> StreamBeginCapture:
    a_stream, = call.args
    stream = s.lookup("streams", a_stream, "stream")
    return StreamBeginCapture(stream, a_stream)


class StreamEndCapture(NamedTuple):
    """STREAM_END_CAPTURE: end a stream's capture: the graph of the work captured (an invalidated capture ends with
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED and no graph)."""

    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def stream_end_capture(s: Session, call: Call) -> StreamEndCapture:
    a_stream, = call.args
    checks.room(s, "graphs")
    stream = s.lookup("streams", a_stream, "stream")
    return StreamEndCapture(stream, a_stream)


class GraphInstantiate(NamedTuple):
    """GRAPH_INSTANTIATE: an executable graph of a graph."""

    graph: object  # the object of handle graph in the session's graphs
    graph_handle: int  # as the guest sent it
    flags: int  # bits within 0x9


def graph_instantiate(s: Session, call: Call) -> GraphInstantiate:
    a_graph, a_flags = call.args
    checks.room(s, "graph_execs")
    flags = checks.flags(a_flags, 0x9, "flags")
    graph = s.lookup("graphs", a_graph, "graph")
    return GraphInstantiate(graph, a_graph, flags)


class GraphLaunch(NamedTuple):
    """GRAPH_LAUNCH: launch an executable graph on a stream (the compute gate meters it as a kernel launch: the GPU time
    it takes is charged at the wait that follows it)."""

    graph_exec: object  # the object of handle graph_exec in the session's graph_execs
    graph_exec_handle: int  # as the guest sent it
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def graph_launch(s: Session, call: Call) -> GraphLaunch:
    a_graph_exec, a_stream = call.args
    graph_exec = s.lookup("graph_execs", a_graph_exec, "graph_exec")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return GraphLaunch(graph_exec, a_graph_exec, stream, a_stream)


class GraphUpload(NamedTuple):
    """GRAPH_UPLOAD: upload an executable graph ahead of its launch."""

    graph_exec: object  # the object of handle graph_exec in the session's graph_execs
    graph_exec_handle: int  # as the guest sent it
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def graph_upload(s: Session, call: Call) -> GraphUpload:
    a_graph_exec, a_stream = call.args
    graph_exec = s.lookup("graph_execs", a_graph_exec, "graph_exec")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return GraphUpload(graph_exec, a_graph_exec, stream, a_stream)


class GraphExecDestroy(NamedTuple):
    """GRAPH_EXEC_DESTROY: destroy an executable graph."""

    graph_exec: object  # the object of handle graph_exec in the session's graph_execs
    graph_exec_handle: int  # as the guest sent it


def graph_exec_destroy(s: Session, call: Call) -> GraphExecDestroy:
    a_graph_exec, = call.args
    graph_exec = s.lookup("graph_execs", a_graph_exec, "graph_exec")
    return GraphExecDestroy(graph_exec, a_graph_exec)


class GraphDestroy(NamedTuple):
    """GRAPH_DESTROY: destroy a graph."""

    graph: object  # the object of handle graph in the session's graphs
    graph_handle: int  # as the guest sent it


def graph_destroy(s: Session, call: Call) -> GraphDestroy:
    a_graph, = call.args
    graph = s.lookup("graphs", a_graph, "graph")
    return GraphDestroy(graph, a_graph)


class GraphGetNodeCount(NamedTuple):
    """GRAPH_GET_NODE_COUNT: how many nodes a graph has (PyTorch asks after every capture; a VM is given no node
    handles)."""

    graph: object  # the object of handle graph in the session's graphs
    graph_handle: int  # as the guest sent it


def graph_get_node_count(s: Session, call: Call) -> GraphGetNodeCount:
    a_graph, = call.args
    graph = s.lookup("graphs", a_graph, "graph")
    return GraphGetNodeCount(graph, a_graph)


class WindowDevicePointer(NamedTuple):
    """WINDOW_DEVICE_POINTER: the device address of the session's window (NOT_SUPPORTED where the backend cannot map
    host memory into the device's address space: the sim)."""


def window_device_pointer(s: Session, call: Call) -> WindowDevicePointer:
    return WindowDevicePointer()


class FuncGetAttributes(NamedTuple):
    """FUNC_GET_ATTRIBUTES: every attribute of a kernel at once (the guest keeps them: they change only by its own
    FUNC_SET_ATTRIBUTE)."""

    function: object  # the object of handle function in the session's functions
    function_handle: int  # as the guest sent it


def func_get_attributes(s: Session, call: Call) -> FuncGetAttributes:
    a_function, = call.args
    function = s.lookup("functions", a_function, "function")
    return FuncGetAttributes(function, a_function)


class FuncSetAttribute(NamedTuple):
    """FUNC_SET_ATTRIBUTE: set a kernel's attribute (max dynamic shared memory, carveout, cluster preferences)."""

    function: object  # the object of handle function in the session's functions
    function_handle: int  # as the guest sent it
    attribute: int  # at most 0xf
    value: int  # at most 0x7fffffff


def func_set_attribute(s: Session, call: Call) -> FuncSetAttribute:
    a_function, a_attribute, a_value = call.args
    attribute = checks.value(a_attribute, 0xf, "attribute")
    value = checks.value(a_value, 0x7fffffff, "value")
    function = s.lookup("functions", a_function, "function")
    return FuncSetAttribute(function, a_function, attribute, value)


class OccupancyMaxBlocks(NamedTuple):
    """OCCUPANCY_MAX_BLOCKS: how many blocks of a kernel fit one multiprocessor (the guest keeps each answer)."""

    function: object  # the object of handle function in the session's functions
    function_handle: int  # as the guest sent it
    block: int  # 1..1024
    shared: int  # at most 0xffffffff
    flags: int  # bits within 0x1


def occupancy_max_blocks(s: Session, call: Call) -> OccupancyMaxBlocks:
    a_function, a_block, a_shared, a_flags = call.args
    block = checks.length(a_block, "block", 1, 0x400)
    shared = checks.value(a_shared, 0xffffffff, "shared")
    flags = checks.flags(a_flags, 0x1, "flags")
    function = s.lookup("functions", a_function, "function")
    return OccupancyMaxBlocks(function, a_function, block, shared, flags)


class OccupancyAvailableSmem(NamedTuple):
    """OCCUPANCY_AVAILABLE_SMEM: the dynamic shared memory a block may have with `blocks` blocks a multiprocessor."""

    function: object  # the object of handle function in the session's functions
    function_handle: int  # as the guest sent it
    blocks: int  # at most 0xffff
    block: int  # 1..1024


def occupancy_available_smem(s: Session, call: Call) -> OccupancyAvailableSmem:
    a_function, a_blocks, a_block = call.args
    blocks = checks.value(a_blocks, 0xffff, "blocks")
    block = checks.length(a_block, "block", 1, 0x400)
    function = s.lookup("functions", a_function, "function")
    return OccupancyAvailableSmem(function, a_function, blocks, block)


class MemsetD16(NamedTuple):
    """MEMSET_D16: set 16-bit words."""

    dst: int  # [dst, +count) is inside one of the session's ranges
    value: int  # at most 0xffff
    count: int  # type: ignore[assignment]  # (hides tuple.count) bounded by the ranges that use it
    stream: object  # the object of handle stream in the session's streams
    stream_handle: int  # as the guest sent it


def memset_d16(s: Session, call: Call) -> MemsetD16:
    a_dst, a_value, a_count, a_stream = call.args
    value = checks.value(a_value, 0xffff, "value")
    count = a_count
    dst = checks.device_range(s, a_dst, a_count * 2, "dst")
    stream = s.lookup("streams", a_stream, "stream", null=True)
    return MemsetD16(dst, value, count, stream, a_stream)


class CtxGetLimit(NamedTuple):
    """CTX_GET_LIMIT: a limit of the VM's context (stack size, printf FIFO, malloc heap, ...)."""

    limit: int  # at most 0x6


def ctx_get_limit(s: Session, call: Call) -> CtxGetLimit:
    a_limit, = call.args
    limit = checks.value(a_limit, 0x6, "limit")
    return CtxGetLimit(limit)


class OccupancyMaxClusters(NamedTuple):
    """OCCUPANCY_MAX_CLUSTERS: how many clusters of a launch's shape can be resident at once (Hopper's persistent
    kernels size their grids by it)."""

    function: object  # the object of handle function in the session's functions
    function_handle: int  # as the guest sent it
    gx: int  # at most 0x7fffffff
    gy: int  # at most 0xffff
    gz: int  # at most 0xffff
    bx: int  # 1..1024
    by: int  # 1..1024
    bz: int  # 1..64
    shared: int  # at most 0xffffffff
    cx: int  # at most 0xffff
    cy: int  # at most 0xffff
    cz: int  # at most 0xffff


def occupancy_max_clusters(s: Session, call: Call) -> OccupancyMaxClusters:
    a_function, a_gx, a_gy, a_gz, a_bx, a_by, a_bz, a_shared, a_cx, a_cy, a_cz = call.args
    gx = checks.value(a_gx, 0x7fffffff, "gx")
    gy = checks.value(a_gy, 0xffff, "gy")
    gz = checks.value(a_gz, 0xffff, "gz")
    bx = checks.length(a_bx, "bx", 1, 0x400)
    by = checks.length(a_by, "by", 1, 0x400)
    bz = checks.length(a_bz, "bz", 1, 0x40)
    shared = checks.value(a_shared, 0xffffffff, "shared")
    cx = checks.value(a_cx, 0xffff, "cx")
    cy = checks.value(a_cy, 0xffff, "cy")
    cz = checks.value(a_cz, 0xffff, "cz")
    function = s.lookup("functions", a_function, "function")
    return OccupancyMaxClusters(function, a_function, gx, gy, gz, bx, by, bz, shared, cx, cy, cz)


CHECKS = {
    Op.CTX_SYNCHRONIZE: ctx_synchronize,
    Op.MEM_ALLOC: mem_alloc,
    Op.MEM_FREE: mem_free,
    Op.MEM_GET_INFO: mem_get_info,
    Op.MEMCPY_HTOD: memcpy_htod,
    Op.MEMCPY_DTOH: memcpy_dtoh,
    Op.MEMCPY_DTOD: memcpy_dtod,
    Op.MEMSET_D8: memset_d8,
    Op.MEMSET_D32: memset_d32,
    Op.MODULE_LOAD: None,  # the window range is read only when the host does not have the image
    Op.MODULE_UNLOAD: module_unload,
    Op.MODULE_GET_FUNCTION: module_get_function,
    Op.MODULE_GET_GLOBAL: module_get_global,
    Op.LAUNCH: None,  # one launch check for every launch path (dispatch._check_launch)
    Op.STREAM_CREATE: stream_create,
    Op.STREAM_DESTROY: stream_destroy,
    Op.STREAM_SYNCHRONIZE: stream_synchronize,
    Op.STREAM_QUERY: stream_query,
    Op.EVENT_CREATE: event_create,
    Op.EVENT_RECORD: event_record,
    Op.EVENT_SYNCHRONIZE: event_synchronize,
    Op.EVENT_QUERY: event_query,
    Op.EVENT_ELAPSED: event_elapsed,
    Op.EVENT_DESTROY: event_destroy,
    Op.FENCE: fence,
    Op.MEMCPY_HTOD_STAGED: None,  # `done` is stored whatever the outcome, so it is checked first and alone
    Op.MEMCPY_DTOH_PIECES: memcpy_dtoh_pieces,
    Op.CTX_GET_FLAGS: ctx_get_flags,
    Op.DEVICE_GET_PCI_BUS_ID: device_get_pci_bus_id,
    Op.STREAM_GET_PRIORITY: stream_get_priority,
    Op.STREAM_WAIT_EVENT: stream_wait_event,
    Op.VGPU_PROCESSES: vgpu_processes,
    Op.VGPU_UTILIZATION: vgpu_utilization,
    Op.STREAM_BEGIN_CAPTURE: stream_begin_capture,
    Op.STREAM_END_CAPTURE: stream_end_capture,
    Op.GRAPH_INSTANTIATE: graph_instantiate,
    Op.GRAPH_LAUNCH: graph_launch,
    Op.GRAPH_UPLOAD: graph_upload,
    Op.GRAPH_EXEC_DESTROY: graph_exec_destroy,
    Op.GRAPH_DESTROY: graph_destroy,
    Op.GRAPH_GET_NODE_COUNT: graph_get_node_count,
    Op.WINDOW_DEVICE_POINTER: window_device_pointer,
    Op.FUNC_GET_ATTRIBUTES: func_get_attributes,
    Op.FUNC_SET_ATTRIBUTE: func_set_attribute,
    Op.OCCUPANCY_MAX_BLOCKS: occupancy_max_blocks,
    Op.OCCUPANCY_AVAILABLE_SMEM: occupancy_available_smem,
    Op.MEMSET_D16: memset_d16,
    Op.CTX_GET_LIMIT: ctx_get_limit,
    Op.MEMCPY_2D: None,  # each side's rows [ptr, ptr + pitch*(height-1) + width) inside one allocation, computed without overflow (checks.rows)
    Op.TENSOR_MAP_ENCODE_TILED: None,  # the tensor's bytes, from the blob's dims and strides, inside one allocation (checks.tensor)
    Op.OCCUPANCY_MAX_CLUSTERS: occupancy_max_clusters,
    Op.TENSOR_MAP_ENCODE_IM2COL: None,  # the tensor's bytes, from the blob's dims and strides, inside one allocation (checks.tensor)
}

# op: (the backend method, the request fields it takes, how many results it returns)
THIN = {
    Op.CTX_SYNCHRONIZE: ('synchronize', (), 0),
    Op.STREAM_SYNCHRONIZE: ('stream_synchronize', ('stream',), 0),
    Op.EVENT_SYNCHRONIZE: ('event_synchronize', ('event',), 0),
    Op.FENCE: ('synchronize', (), 0),
    Op.CTX_GET_FLAGS: ('ctx_get_flags', (), 1),
    Op.DEVICE_GET_PCI_BUS_ID: ('device_get_pci_bus_id', (), 1),
    Op.STREAM_GET_PRIORITY: ('stream_get_priority', ('stream',), 1),
    Op.GRAPH_UPLOAD: ('graph_upload', ('graph_exec', 'stream'), 0),
    Op.GRAPH_GET_NODE_COUNT: ('graph_node_count', ('graph',), 1),
    Op.FUNC_GET_ATTRIBUTES: ('func_get_attributes', ('function',), 1),
    Op.FUNC_SET_ATTRIBUTE: ('func_set_attribute', ('function', 'attribute', 'value'), 0),
    Op.OCCUPANCY_MAX_BLOCKS: ('occupancy_max_blocks', ('function', 'block', 'shared', 'flags'), 1),
    Op.OCCUPANCY_AVAILABLE_SMEM: ('occupancy_available_smem', ('function', 'blocks', 'block'), 1),
    Op.CTX_GET_LIMIT: ('ctx_get_limit', ('limit',), 1),
    Op.OCCUPANCY_MAX_CLUSTERS: ('occupancy_max_clusters', ('function', 'gx', 'gy', 'gz', 'bx', 'by', 'bz', 'shared', 'cx', 'cy', 'cz'), 1),
}
