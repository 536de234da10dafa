"""kvmgpu's forwarded calls, each declared once.

An `OpDecl` says what crosses the channel for one op: its number, the CUDA driver function(s) it
forwards, its u64 arguments with their kinds (kvmgpu_wire/kinds.py: the host's check of each),
its blob, the results of a success reply, and how the op behaves: whether the guest may queue it
(no reply; its error surfaces at the next synchronising call), whether it reports such an error
(synchronising), whether it waits for the GPU (the compute gate meters those waits), what it
charges to or releases from the vGPU's memory quota, and which backends serve it.

From this file `make gen` (tools/gen_wire.py) writes the op tables both sides read
(kvmgpu_wire/ops.py, guest-agent/include/kvmgpu_wire.h), and the op table of docs/protocol.md;
the negative-test matrix (tests/worker/test_op_matrix.py) reads it directly. Adding a call is
adding an entry here; where the host's work is one backend call, `backend=` names it and the
worker's handler is made from it, otherwise a handler in kvmgpu/worker/dispatch.py; then the
guest's functions (docs/architecture.md, "How to add a forwarded call").
"""

from __future__ import annotations

from dataclasses import dataclass

from .kinds import (
    Allocation,
    Arg,
    Blob,
    DevicePtr,
    Digest,
    Dim,
    Flags,
    Handle,
    Length,
    Name,
    NewHandle,
    NewRange,
    Params,
    Result,
    Value,
    WindowOffset,
)

# --- frames ----------------------------------------------------------------------------------------
PROTOCOL_VERSION = 11  # 2: MEMCPY_HTOD_STAGED; 3: MEMCPY_DTOH_PIECES; 4: the mailbox, DOORBELL;
# 5: CTX_GET_FLAGS, DEVICE_GET_PCI_BUS_ID, STREAM_GET_PRIORITY; 6: HELLO's pid and role,
# VGPU_PROCESSES, VGPU_UTILIZATION (the guest's NVML); 7: stream capture and graphs (80-86);
# 8: FUNC_GET_ATTRIBUTES .. TENSOR_MAP_ENCODE_IM2COL (ops 50-59, what PyTorch's runtime and
# libraries ask of a function and a context); 9: GRAPH_GET_NODE_COUNT; 10: WINDOW_DEVICE_POINTER;
# 11: STREAM_WAIT_EVENT
MAGIC = 0x474B  # "KG"
# magic u16 | kind u8 | flags u8 | session u32 | seq u32 | length u32, little-endian; then the payload
HEADER = (("magic", "H"), ("kind", "B"), ("flags", "B"), ("session", "I"), ("seq", "I"), ("length", "I"))
KINDS = (("HELLO", 1), ("WELCOME", 2), ("CALL", 3), ("REPLY", 4), ("GOODBYE", 5), ("DOORBELL", 6))
QUEUED = 0x01  # CALL flag: no reply; an error surfaces at the next synchronising call
# A CALL's payload: op u16, nargs u16, nargs x u64, then the blob. A REPLY's: status i32, then on
# success the op's results (packed, little-endian) and a blob, on failure a short UTF-8 error text.
CALL_HEAD = (("op", "H"), ("nargs", "H"))
# The worker's packed launches (kvmgpu/backend/launcher.c reads what launcher.py packs): a launch
# and its repeats, `count` launches of one function and shape whose parameter bytes lie `stride`
# bytes apart.
LAUNCH_RECORD = (("function", "Q"), ("stream", "Q"), ("params", "Q"), ("size", "Q"), ("stride", "Q"),
                 ("grid", "3I"), ("block", "3I"), ("shared", "I"), ("count", "I"))

# One kernel parameter in MODULE_GET_FUNCTION's reply blob: where it lies in the parameter bytes.
PARAM = (("offset", "I"), ("size", "I"))
# One process in VGPU_PROCESSES' reply blob: a guest process with sessions on the vGPU (its pid as
# its HELLO said) and the device memory its sessions hold (charged to the quota).
PROCESS = (("pid", "I"), ("sessions", "I"), ("memory", "Q"))
MAX_PROCESSES = 255  # entries in one reply: status, results and entries fit the smallest frame (4 KiB)
# What the guest agent sends with the region's fd (SCM_RIGHTS) to a process that connects to it.
AGENT_REGION_INFO = (("size", "Q"),)

# --- limits ----------------------------------------------------------------------------------------
MAX_ARG_BYTES = 32764  # CUDA's own limit on a kernel's parameter bytes (12.1+)
MAX_NAME = 1024  # longest symbol name
HANDSHAKE_MAX = 16 * 1024  # largest HELLO / WELCOME payload, before limits are negotiated
DEFAULT_MAX_FRAME = 64 * 1024  # largest frame payload after the handshake (a HELLO may ask less)
MAX_ERROR_TEXT = 512  # longest error text in a reply blob
WINDOW_ALIGN = 4096  # windows start on page boundaries so guests can mmap them
MAILBOX_BYTES = 4096  # a session's mailbox: the last bytes of its window (kvmgpu_wire/mailbox.py) ...
MAILBOX_MIN_WINDOW = 64 * 1024  # ... where the window is at least this big
# The mailbox's layout: its words (u32 indexes; the guest's, then the host's on a cache line of their
# own), then the request and the reply areas (mailbox.py says who writes what, and when)
MAILBOX_WORDS = (("POST", 0), ("SIZE", 1), ("ASLEEP", 2), ("ANSWER", 16), ("LENGTH", 17), ("AWAKE", 18))
MAILBOX_HEAD = 128  # the words' bytes; the request starts here ...
MAILBOX_REQUEST_MAX = (MAILBOX_BYTES - MAILBOX_HEAD) // 2  # ... and the reply this far after it
STREAM_FLAGS = 0x1  # CU_STREAM_NON_BLOCKING
EVENT_FLAGS = 0x3  # CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING (no interprocess events)
# CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH | _USE_NODE_PRIORITY (not UPLOAD, which needs
# cuGraphInstantiateWithParams's stream, nor DEVICE_LAUNCH: no graph is launched from the GPU)
GRAPH_INSTANTIATE_FLAGS = 0x9
BACKENDS = ("cuda", "sim")


@dataclass(frozen=True)
class OpDecl:
    id: int
    name: str
    cuda: str  # the driver function(s) a guest calls to send it
    doc: str
    args: tuple[Arg, ...] = ()
    results: tuple[Result, ...] = ()
    blob: Blob | None = None
    queueable: bool = False
    synchronising: bool = False
    waits_gpu: str = ""  # "": never; "always"; "if_sync": only when not queued
    # The backend call an op that waits for the GPU waits in, with its parameters' names, where it
    # is not the op's thin call (`backend`): the compute gate wraps that call (kvmgpu/worker/waits.py).
    # Its `stream` says what it waits for (None: the null stream), a `sync` whether it waits.
    waits_in: str = ""
    manual: str = ""  # why the worker's handler checks the arguments itself ("": the kinds say it all)
    backend: str = ""  # a thin call: the backend method and the request fields it takes; its return
    # value is the op's result (several results: a tuple)
    charges: str = ""  # the argument whose bytes are charged to the memory quota
    releases: str = ""  # the argument whose allocation's bytes go back to the quota
    backends: tuple[str, ...] = BACKENDS
    reply_blob: str = ""  # what a success reply's blob holds ("": none)

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)

    @property
    def result_format(self) -> str:
        return "".join(r.format for r in self.results)

    @property
    def holds(self) -> bool:
        """Whether the op adds to or takes from the session's tables (handles, ranges): the worker
        counts what such an op changes against what it keeps for the VM."""
        return bool(self.charges or self.releases
                    or any(isinstance(r, (NewHandle, NewRange)) for r in self.results)
                    or any(isinstance(a, Handle) and a.ends for a in self.args))

    @property
    def thin_call(self) -> tuple[str, tuple[str, ...]] | None:
        """(backend method, request fields) of the op's thin call, or None."""
        return backend_call(self.backend) if self.backend else None

    @property
    def wait_call(self) -> tuple[str, tuple[str, ...]] | None:
        """(backend method, its parameters' names) of the call the op waits for the GPU in, or None."""
        return backend_call(self.waits_in or self.backend) if self.waits_gpu else None


def backend_call(text: str) -> tuple[str, tuple[str, ...]]:
    """"method(a, b)" -> ("method", ("a", "b"))."""
    method, _, rest = text.partition("(")
    return method, tuple(f.strip() for f in rest.rstrip(")").split(",") if f.strip())


def _stream(doc: str = "the stream; 0 the null stream") -> Handle:
    return Handle("stream", doc, table="streams", null=True)


# The backend calls the copies wait in (kvmgpu/backend/base.py's signatures).
_HTOD = "memcpy_htod(dst, offset, nbytes, stream, sync)"
_DTOH = "memcpy_dtoh(offset, src, nbytes, stream, piece, landed)"
_MEMSET = "memset(dst, value, count, width, stream, sync)"


OPS: tuple[OpDecl, ...] = (
    OpDecl(1, "CTX_SYNCHRONIZE", "cuCtxSynchronize", "wait for all of the context's work",
           synchronising=True, waits_gpu="always", backend="synchronize()"),
    OpDecl(2, "MEM_ALLOC", "cuMemAlloc_v2", "allocate device memory",
           args=(Length("nbytes", "bytes to allocate", min=1),),
           results=(Result("dptr", doc="the allocation's device address"),), charges="nbytes"),
    OpDecl(3, "MEM_FREE", "cuMemFree_v2", "free an allocation",
           args=(Allocation("dptr"),), queueable=True, releases="dptr"),
    OpDecl(4, "MEM_GET_INFO", "cuMemGetInfo_v2", "the quota's free and total bytes",
           results=(Result("free"), Result("total"))),
    OpDecl(5, "MEMCPY_HTOD", "cuMemcpyHtoD_v2, cuMemcpyHtoDAsync_v2",
           "copy window bytes to device memory",
           args=(DevicePtr("dst"), WindowOffset("offset"), Length("nbytes"), _stream()),
           queueable=True, synchronising=True, waits_gpu="if_sync", waits_in=_HTOD),
    OpDecl(6, "MEMCPY_DTOH", "cuMemcpyDtoH_v2, cuMemcpyDtoHAsync_v2",
           "copy device memory into the window",
           args=(WindowOffset("offset"), DevicePtr("src"), Length("nbytes"), _stream()),
           synchronising=True, waits_gpu="always", waits_in=_DTOH),
    OpDecl(7, "MEMCPY_DTOD", "cuMemcpyDtoD_v2, cuMemcpyDtoDAsync_v2", "copy device to device",
           args=(DevicePtr("dst"), DevicePtr("src"), Length("nbytes"), _stream()),
           queueable=True, synchronising=True, waits_gpu="if_sync",
           waits_in="memcpy_dtod(dst, src, nbytes, stream, sync)"),
    OpDecl(8, "MEMSET_D8", "cuMemsetD8_v2, cuMemsetD8Async", "set bytes",
           args=(DevicePtr("dst", length="count"), Value("value", max=0xFF), Length("count"), _stream()),
           queueable=True, synchronising=True, waits_gpu="if_sync", waits_in=_MEMSET),
    OpDecl(9, "MEMSET_D32", "cuMemsetD32_v2, cuMemsetD32Async", "set 32-bit words",
           args=(DevicePtr("dst", length="count", scale=4), Value("value", max=0xFFFFFFFF),
                 Length("count"), _stream()),
           queueable=True, synchronising=True, waits_gpu="if_sync", waits_in=_MEMSET),
    OpDecl(10, "MODULE_LOAD", "cuModuleLoadData, cuModuleLoadDataEx, cuModuleLoadFatBinary",
           "load a module image from the window, known by its sha256 (nbytes 0: does the host "
           "have it already?); its globals are charged to the quota",
           args=(WindowOffset("offset"), Length("nbytes")),
           results=(NewHandle("module", table="modules"),), blob=Digest(32, "the image's sha256"),
           manual="the window range is read only when the host does not have the image"),
    OpDecl(11, "MODULE_UNLOAD", "cuModuleUnload", "unload a module",
           args=(Handle("module", table="modules", ends=True),), queueable=True),
    OpDecl(12, "MODULE_GET_FUNCTION", "cuModuleGetFunction",
           "a kernel by name; the reply blob has (offset u32, size u32) per parameter",
           args=(Handle("module", table="modules"),),
           results=(NewHandle("function", table="functions"), Result("nparams")),
           blob=Name(MAX_NAME, "the kernel's name"), reply_blob="(offset u32, size u32) per parameter"),
    OpDecl(13, "MODULE_GET_GLOBAL", "cuModuleGetGlobal_v2", "a module global's address and size",
           args=(Handle("module", table="modules"),), results=(NewRange("dptr"), Result("nbytes")),
           blob=Name(MAX_NAME, "the global's name")),
    OpDecl(14, "LAUNCH", "cuLaunchKernel", "launch a kernel",
           args=(Handle("function", table="functions"), Dim("gx", attribute=5), Dim("gy", attribute=6),
                 Dim("gz", attribute=7), Dim("bx", attribute=2), Dim("by", attribute=3),
                 Dim("bz", attribute=4),
                 Dim("shared", "dynamic shared memory bytes (the opt-in limit: the driver checks the kernel's own)",
                     attribute=97, min=0),
                 _stream()),
           blob=Params(MAX_ARG_BYTES, "the kernel's parameter bytes, laid out as its table says"),
           queueable=True, manual="one launch check for every launch path (dispatch._check_launch)"),
    OpDecl(15, "STREAM_CREATE", "cuStreamCreate", "a new stream",
           args=(Flags("flags", mask=STREAM_FLAGS),), results=(NewHandle("stream", table="streams"),)),
    OpDecl(16, "STREAM_DESTROY", "cuStreamDestroy_v2", "destroy a stream",
           args=(Handle("stream", table="streams", ends=True),), queueable=True),
    OpDecl(17, "STREAM_SYNCHRONIZE", "cuStreamSynchronize", "wait for a stream's work",
           args=(_stream(),), synchronising=True, waits_gpu="always",
           backend="stream_synchronize(stream)"),
    OpDecl(18, "STREAM_QUERY", "cuStreamQuery", "whether a stream's work is done (NOT_READY)",
           args=(_stream(),), synchronising=True),
    OpDecl(19, "EVENT_CREATE", "cuEventCreate", "a new event",
           args=(Flags("flags", mask=EVENT_FLAGS),), results=(NewHandle("event", table="events"),)),
    OpDecl(20, "EVENT_RECORD", "cuEventRecord", "record an event on a stream",
           args=(Handle("event", table="events"), _stream()), queueable=True),
    OpDecl(21, "EVENT_SYNCHRONIZE", "cuEventSynchronize", "wait for an event",
           args=(Handle("event", table="events"),), synchronising=True, waits_gpu="always",
           backend="event_synchronize(event)"),
    OpDecl(22, "EVENT_QUERY", "cuEventQuery", "whether an event has happened (NOT_READY)",
           args=(Handle("event", table="events"),), synchronising=True),
    OpDecl(23, "EVENT_ELAPSED", "cuEventElapsedTime", "milliseconds between two events",
           args=(Handle("start", table="events"), Handle("end", table="events")),
           results=(Result("ms", "f"),)),
    OpDecl(24, "EVENT_DESTROY", "cuEventDestroy_v2", "destroy an event",
           args=(Handle("event", table="events", ends=True),), queueable=True),
    OpDecl(25, "FENCE", "(the guest's staging ring)",
           "wait until no queued work still reads or writes this session's window",
           synchronising=True, waits_gpu="always", backend="synchronize()"),
    OpDecl(26, "MEMCPY_HTOD_STAGED", "cuMemcpyHtoD_v2 (staged)",
           "a synchronous HtoD the guest does not wait for: the host copies in null-stream order, "
           "waits, then stores the call's seq (u32) at window offset `done`",
           args=(DevicePtr("dst"), WindowOffset("offset"), Length("nbytes"),
                 WindowOffset("done", length=4, align=4)),
           queueable=True, waits_gpu="always", waits_in=_HTOD,
           manual="`done` is stored whatever the outcome, so it is checked first and alone"),
    OpDecl(27, "MEMCPY_DTOH_PIECES", "cuMemcpyDtoH_v2 (in pieces)",
           "a DtoH in pieces of about `piece` bytes; after each the host stores the bytes landed "
           "(u32) at window offset `landed`",
           args=(WindowOffset("offset"), DevicePtr("src"),
                 Length("nbytes", max=0xFFFFFFFF, hint="a u32 counts landed bytes: use MEMCPY_DTOH"), _stream(),
                 Length("piece", "bytes a piece, at least"),
                 WindowOffset("landed", length=4, align=4)),
           synchronising=True, waits_gpu="always", waits_in=_DTOH),
    # Forwarded as they are: each is this entry, the backends' method it names, and the guest's stub.
    OpDecl(28, "CTX_GET_FLAGS", "cuCtxGetFlags", "the flags of the VM's context on the host",
           results=(Result("flags", "I"),), backend="ctx_get_flags()"),
    OpDecl(29, "DEVICE_GET_PCI_BUS_ID", "cuDeviceGetPCIBusId",
           "the GPU's PCI bus id, domain:bus:device.function in hex (the guest checks the device: "
           "its only one is 0)",
           results=(Result("bus_id", "32s", "NUL-padded ASCII"),), backend="device_get_pci_bus_id()"),
    OpDecl(30, "STREAM_GET_PRIORITY", "cuStreamGetPriority", "a stream's priority",
           args=(_stream(),), results=(Result("priority", "i"),), backend="stream_get_priority(stream)"),
    OpDecl(31, "STREAM_WAIT_EVENT", "cuStreamWaitEvent",
           "make a stream's later work wait for an event's work (during a capture: a stream that "
           "waits for an event recorded in it joins that capture, as natively)",
           args=(_stream(), Handle("event", table="events"),
                 Flags("flags", "CU_EVENT_WAIT_DEFAULT or _EXTERNAL", mask=0x1)), queueable=True),
    # The guest's NVML (libnvidia-ml.so.1): what only the worker knows about the whole VM. Ids 40-49.
    OpDecl(40, "VGPU_PROCESSES", "nvmlDeviceGetComputeRunningProcesses",
           "the VM's guest processes with CUDA sessions (not monitors), by the pid each HELLO gave, "
           "and the device memory each holds; at most MAX_PROCESSES",
           results=(Result("count", "I", "processes in the reply blob"),),
           reply_blob="(pid u32, sessions u32, memory u64) per process"),
    OpDecl(41, "VGPU_UTILIZATION", "nvmlDeviceGetUtilizationRates",
           "this VM's GPU time as a percent of the wall time over the last second or more (the "
           "compute gate's meter; 0 where the VM has no gate); memory: 0, not measured",
           results=(Result("gpu", "I", "percent, 0..100"), Result("memory", "I", "always 0"),
                    Result("window_ms", "I", "the span measured"))),
    # Stream capture and CUDA graphs (docs/guest.md, "Stream capture and graphs"): the worker's
    # stream really captures; what the guest launches into it meanwhile is forwarded as ever (and
    # checked as ever); the graph and its executable are host objects behind the session's handle
    # tables. The guest answers the capture queries itself and keeps its threads' capture modes.
    OpDecl(80, "STREAM_BEGIN_CAPTURE", "cuStreamBeginCapture_v2",
           "start capturing a stream's work into a graph (on the host always in relaxed mode: the "
           "guest keeps the modes of its threads)",
           args=(Handle("stream", "a stream of the session, not the null stream", table="streams"),)),
    OpDecl(81, "STREAM_END_CAPTURE", "cuStreamEndCapture",
           "end a stream's capture: the graph of the work captured (an invalidated capture ends "
           "with CUDA_ERROR_STREAM_CAPTURE_INVALIDATED and no graph)",
           args=(Handle("stream", "the capturing stream", table="streams"),),
           results=(NewHandle("graph", table="graphs"),)),
    OpDecl(82, "GRAPH_INSTANTIATE", "cuGraphInstantiateWithFlags, cuGraphInstantiateWithParams",
           "an executable graph of a graph",
           args=(Handle("graph", table="graphs"), Flags("flags", mask=GRAPH_INSTANTIATE_FLAGS)),
           results=(NewHandle("graph_exec", table="graph_execs"),)),
    OpDecl(83, "GRAPH_LAUNCH", "cuGraphLaunch",
           "launch an executable graph on a stream (the compute gate meters it as a kernel launch: "
           "the GPU time it takes is charged at the wait that follows it)",
           args=(Handle("graph_exec", table="graph_execs"), _stream()), queueable=True),
    OpDecl(84, "GRAPH_UPLOAD", "cuGraphUpload", "upload an executable graph ahead of its launch",
           args=(Handle("graph_exec", table="graph_execs"), _stream()), queueable=True,
           backend="graph_upload(graph_exec, stream)"),
    OpDecl(85, "GRAPH_EXEC_DESTROY", "cuGraphExecDestroy", "destroy an executable graph",
           args=(Handle("graph_exec", table="graph_execs", ends=True),), queueable=True),
    OpDecl(86, "GRAPH_DESTROY", "cuGraphDestroy", "destroy a graph",
           args=(Handle("graph", table="graphs", ends=True),), queueable=True),
    OpDecl(87, "GRAPH_GET_NODE_COUNT", "cuGraphGetNodes (the count: nodes NULL)",
           "how many nodes a graph has (PyTorch asks after every capture; a VM is given no node handles)",
           args=(Handle("graph", table="graphs"),), results=(Result("count", "Q"),),
           backend="graph_node_count(graph)"),
    # Mapped page-locked memory: the guest carves it out of its window, which the host registered
    # with the driver as mapped (DEVICEMAP); a kernel reaches it at the window's device address.
    OpDecl(88, "WINDOW_DEVICE_POINTER", "cuMemHostGetDevicePointer (the session's window)",
           "the device address of the session's window (NOT_SUPPORTED where the backend cannot map "
           "host memory into the device's address space: the sim)",
           results=(Result("address", "Q"),), backends=("cuda",)),
)

# The CUfunction_attribute values FUNC_GET_ATTRIBUTES answers, in order (MAX_THREADS_PER_BLOCK ..
# CLUSTER_SCHEDULING_POLICY_PREFERENCE), and those FUNC_SET_ATTRIBUTE may set: the dynamic shared
# memory a launch may ask for, the carveout, and the cluster preferences.
FUNC_ATTRIBUTES = 16
FUNC_SETTABLE = (8, 9, 11, 12, 13, 14, 15)
CTX_LIMITS = 7  # CUlimit values CTX_GET_LIMIT answers: STACK_SIZE .. PERSISTING_L2_CACHE_SIZE
# TENSOR_MAP_ENCODE_TILED's blob: globalDim u64[5], globalStrides u64[4] (bytes, of dims 1..),
# boxDim u32[5], elementStrides u32[5]; the ranks past `rank` zero.
TENSOR_MAP = (("dims", "5Q"), ("strides", "4Q"), ("box", "5I"), ("element_strides", "5I"))
TENSOR_MAP_BYTES = 112
# TENSOR_MAP_ENCODE_IM2COL's: globalDim u64[5], globalStrides u64[4], pixelBoxLowerCorner i32[3],
# pixelBoxUpperCorner i32[3], elementStrides u32[5], channelsPerPixel u32, pixelsPerColumn u32.
TENSOR_MAP_IM2COL = (("dims", "5Q"), ("strides", "4Q"), ("lower", "3i"), ("upper", "3i"),
                     ("element_strides", "5I"), ("channels", "I"), ("pixels", "I"))
TENSOR_MAP_IM2COL_BYTES = 124
TENSOR_MAP_TYPES = 16  # CUtensorMapDataType: UINT8 .. 16U6_ALIGN16B

_FUNCTION = Handle("function", "the kernel", table="functions")
# Ops 50-79: the function, occupancy, limit and 2D-copy calls of PyTorch's runtime and libraries.
OPS += (
    OpDecl(50, "FUNC_GET_ATTRIBUTES", "cuFuncGetAttribute, cuKernelGetAttribute",
           "every attribute of a kernel at once (the guest keeps them: they change only by its own "
           "FUNC_SET_ATTRIBUTE)", args=(_FUNCTION,),
           results=(Result("values", f"{4 * FUNC_ATTRIBUTES}s",
                           f"{FUNC_ATTRIBUTES} int32, little-endian: CUfunction_attribute 0..{FUNC_ATTRIBUTES - 1}"),),
           backend="func_get_attributes(function)"),
    OpDecl(51, "FUNC_SET_ATTRIBUTE", "cuFuncSetAttribute, cuKernelSetAttribute",
           "set a kernel's attribute (max dynamic shared memory, carveout, cluster preferences)",
           args=(_FUNCTION, Value("attribute", "a CUfunction_attribute the driver lets a program set",
                                  max=FUNC_ATTRIBUTES - 1),
                 Value("value", "the attribute's value (int32)", max=0x7FFFFFFF)),
           backend="func_set_attribute(function, attribute, value)"),
    OpDecl(52, "OCCUPANCY_MAX_BLOCKS", "cuOccupancyMaxActiveBlocksPerMultiprocessor(WithFlags)",
           "how many blocks of a kernel fit one multiprocessor (the guest keeps each answer)",
           args=(_FUNCTION, Length("block", "threads a block", min=1, max=1024),
                 Value("shared", "dynamic shared memory bytes a block", max=0xFFFFFFFF),
                 Flags("flags", mask=0x1)),  # CU_OCCUPANCY_DISABLE_CACHING_OVERRIDE
           results=(Result("blocks", "i"),),
           backend="occupancy_max_blocks(function, block, shared, flags)"),
    OpDecl(53, "OCCUPANCY_AVAILABLE_SMEM", "cuOccupancyAvailableDynamicSMemPerBlock",
           "the dynamic shared memory a block may have with `blocks` blocks a multiprocessor",
           args=(_FUNCTION, Value("blocks", "blocks a multiprocessor", max=0xFFFF),
                 Length("block", "threads a block", min=1, max=1024)),
           results=(Result("bytes"),), backend="occupancy_available_smem(function, blocks, block)"),
    OpDecl(54, "MEMSET_D16", "cuMemsetD16_v2, cuMemsetD16Async", "set 16-bit words",
           args=(DevicePtr("dst", length="count", scale=2), Value("value", max=0xFFFF),
                 Length("count"), _stream()),
           queueable=True, synchronising=True, waits_gpu="if_sync", waits_in=_MEMSET),
    OpDecl(55, "CTX_GET_LIMIT", "cuCtxGetLimit", "a limit of the VM's context (stack size, printf "
           "FIFO, malloc heap, ...)", args=(Value("limit", "a CUlimit", max=CTX_LIMITS - 1),),
           results=(Result("value"),), backend="ctx_get_limit(limit)"),
    OpDecl(56, "MEMCPY_2D", "cuMemcpy2D(Async)_v2, cuMemcpy3D(Async)_v2 (device to device)",
           "copy `height` rows of `width` bytes between device ranges `pitch` bytes apart",
           args=(Value("dst"), Value("dpitch"), Value("src"), Value("spitch"), Value("width"),
                 Value("height"), _stream()),
           queueable=True, synchronising=True, waits_gpu="if_sync",
           waits_in="memcpy_2d(dst, dpitch, src, spitch, width, height, stream, sync)",
           manual="each side's rows [ptr, ptr + pitch*(height-1) + width) inside one allocation, "
                  "computed without overflow (checks.rows)"),
    OpDecl(57, "TENSOR_MAP_ENCODE_TILED", "cuTensorMapEncodeTiled",
           "a tiled tensor's map (the 128-byte TMA descriptor Hopper's cuBLAS kernels take), of a "
           "tensor in the session's memory",
           args=(Value("dtype", "a CUtensorMapDataType", max=TENSOR_MAP_TYPES - 1),
                 Length("rank", "the tensor's dimensions", min=1, max=5), Value("address"),
                 Value("interleave", max=2), Value("swizzle", max=6), Value("l2", "L2 promotion", max=3),
                 Value("fill", "out-of-bounds fill", max=1)),
           blob=Blob(TENSOR_MAP_BYTES, "dims u64[5], strides u64[4], box u32[5], element strides u32[5]"),
           results=(Result("map", "128s", "the CUtensorMap"),),
           manual="the tensor's bytes, from the blob's dims and strides, inside one allocation "
                  "(checks.tensor)"),
    OpDecl(58, "OCCUPANCY_MAX_CLUSTERS", "cuOccupancyMaxActiveClusters",
           "how many clusters of a launch's shape can be resident at once (Hopper's persistent "
           "kernels size their grids by it)",
           args=(_FUNCTION, Value("gx", max=0x7FFFFFFF), Value("gy", max=0xFFFF), Value("gz", max=0xFFFF),
                 Length("bx", min=1, max=1024), Length("by", min=1, max=1024), Length("bz", min=1, max=64),
                 Value("shared", "dynamic shared memory bytes a block", max=0xFFFFFFFF),
                 Value("cx", "cluster x (0: the kernel's own)", max=0xFFFF), Value("cy", max=0xFFFF),
                 Value("cz", max=0xFFFF)),
           results=(Result("clusters", "i"),),
           backend="occupancy_max_clusters(function, gx, gy, gz, bx, by, bz, shared, cx, cy, cz)"),
    OpDecl(59, "TENSOR_MAP_ENCODE_IM2COL", "cuTensorMapEncodeIm2col",
           "an im2col tensor map (the TMA descriptor of Hopper's convolution kernels), of a tensor in "
           "the session's memory",
           args=(Value("dtype", "a CUtensorMapDataType", max=TENSOR_MAP_TYPES - 1),
                 Length("rank", "the tensor's dimensions", min=3, max=5), Value("address"),
                 Value("interleave", max=2), Value("swizzle", max=6), Value("l2", "L2 promotion", max=3),
                 Value("fill", "out-of-bounds fill", max=1)),
           blob=Blob(TENSOR_MAP_IM2COL_BYTES, "dims u64[5], strides u64[4], lower i32[3], upper i32[3], "
                                             "element strides u32[5], channels u32, pixels u32"),
           results=(Result("map", "128s", "the CUtensorMap"),),
           manual="the tensor's bytes, from the blob's dims and strides, inside one allocation "
                  "(checks.tensor)"),
)

BY_NAME = {op.name: op for op in OPS}
assert len(BY_NAME) == len(OPS) and len({op.id for op in OPS}) == len(OPS), "op names and ids are unique"
