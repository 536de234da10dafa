"""The interface every backend implements: one vGPU's view of one physical GPU.

A backend executes calls the worker has already validated (handles belong to the VM, copies stay
inside the VM's allocations and its window of the shared region, quota is charged). It reports
CUDA failures by raising `CudaError(code)`; the worker turns that into a reply. Handles it returns
(modules, functions, streams, events) are opaque to the worker, which maps them to guest-visible
ids; device pointers are plain ints the guest sees as they are.

The shared region is handed over once (`attach_region`): the sim backend reads and writes it as a
memoryview, the cuda backend registers it as pinned host memory so a copy is one DMA.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from kvmgpu_wire.cudefs import CUresult

if TYPE_CHECKING:
    from .launcher import LaunchRecords, RepeatTurn


class CudaError(Exception):
    """A CUDA call failed with `code` (a CUresult value)."""

    def __init__(self, code: int, detail: str = ""):
        self.code = int(code)
        self.detail = detail
        try:
            name = CUresult(self.code).name
        except ValueError:
            name = f"CUresult {self.code}"
        super().__init__(f"{name}{': ' + detail if detail else ''}")


@dataclass(frozen=True)
class DeviceInfo:
    """The physical device, as the backend sees it. The worker replaces total memory by the quota."""

    name: str
    uuid: str
    total_memory: int
    driver_version: int  # as cuDriverGetVersion: 1000 * major + 10 * minor
    compute_capability: tuple[int, int]
    attributes: dict[int, int] = field(default_factory=dict)  # CUdevice_attribute -> value


@dataclass(frozen=True)
class Capabilities:
    """What a backend has beyond the interface, declared once (`Backend.capabilities`): the worker
    binds to it when it takes the backend (VGpu.bind), the meter when it starts a slice.

    The worker's queued-launch paths (dispatch.launch_run takes the first it has): `launch_records`,
    the C launch loop (kvmgpu.backend.launcher.LaunchRecords); `launch_in(f, gx, gy, gz, bx, by, bz,
    shared, stream, buf, start, nbytes)`, the argument bytes read where they are in the bytearray
    `buf`; `launch_flat(f, gx, gy, gz, bx, by, bz, shared, stream, args)`. Without any, a queued
    launch goes through `launch`. `null_stream_recorder`: `record(event)`, cuEventRecord on the null
    stream with nothing around it (the compute meter's), else `event_record(event, None)`.
    `repeats`: the C turn that serves a mailbox's repeated launch + synchronise
    (kvmgpu.backend.launcher.RepeatTurn). Which ops a backend serves is the op specification's
    (`backends=`), not this."""

    launch_records: LaunchRecords | None = None
    launch_in: Callable | None = None
    launch_flat: Callable | None = None
    null_stream_recorder: Callable | None = None
    repeats: RepeatTurn | None = None


class Backend(abc.ABC):
    """One context on one GPU, serving one VM. Methods run on the worker's thread."""

    name: str = "?"
    # Streams of this context: alive now, and made since it was created. The compute meter reads
    # them: while there are none, a wait on the null stream is a wait for all of the VM's work.
    streams_live: int = 0
    streams_made: int = 0
    # Streams of this context capturing now (stream_begin_capture .. stream_end_capture): while
    # there are any the compute meter neither records on the null stream nor synchronises the
    # context, either of which would invalidate a capture (kvmgpu/compute/meter.py).
    capturing: int = 0
    # What it has beyond the interface (set by a backend that has more: in its __init__).
    capabilities: Capabilities = Capabilities()
    # What an allocation really takes on the GPU, as the worker charges it to the quota
    # (`allocation_size`): from half a granule up, whole granules (cuMemAlloc maps device memory in
    # pages of this size; the cuda backend asks the driver for it); below, small allocations share
    # granule-sized pages at `alloc_small`-aligned sizes but none straddles two pages, so each is
    # charged its share of a page holding as many of its size as fit (measured on an H200: 256
    # allocations of 100,000 bytes take 13 pages, 26 MiB; docs/security.md "Memory quota").
    alloc_granularity: int = 2 << 20
    alloc_small: int = 512

    def allocation_size(self, nbytes: int) -> int:
        """The device memory an allocation of `nbytes` takes: what the quota is charged."""
        page = self.alloc_granularity
        if 2 * nbytes >= page:
            return -(-nbytes // page) * page
        small = -(-max(nbytes, 1) // self.alloc_small) * self.alloc_small
        return -(-page // (page // small))  # a page's share: page / (how many fit in one)

    def module_memory(self, module, image: bytes) -> int:
        """The device memory a module just loaded from `image` takes for its `.global`
        variables (and, where the backend can see it, its code): what the quota is charged."""
        return 0

    # --- lifetime ---
    @abc.abstractmethod
    def device_info(self) -> DeviceInfo: ...

    @abc.abstractmethod
    def attach_region(self, region: memoryview) -> None:
        """The shared region for the whole channel; offsets below are into it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything: the context, its memory, the region registration."""

    # --- memory ---
    @abc.abstractmethod
    def mem_alloc(self, nbytes: int) -> int: ...

    @abc.abstractmethod
    def mem_free(self, dptr: int) -> None: ...

    @abc.abstractmethod
    def memcpy_htod(self, dst: int, offset: int, nbytes: int, stream, sync: bool) -> None:
        """Device `dst` <- region[offset:offset+nbytes]."""

    @abc.abstractmethod
    def memcpy_dtoh(self, offset: int, src: int, nbytes: int, stream, piece: int = 0,
                    landed=None) -> None:
        """region[offset:offset+nbytes] <- device `src`; complete when it returns. With `piece`
        and `landed`: copied in pieces of `piece` bytes, `landed(n)` called as soon as the first
        `n` bytes are in the region (after each piece, in order)."""

    @abc.abstractmethod
    def memcpy_dtod(self, dst: int, src: int, nbytes: int, stream, sync: bool) -> None: ...

    @abc.abstractmethod
    def memset(self, dst: int, value: int, count: int, width: int, stream, sync: bool) -> None:
        """Set `count` elements of `width` bytes (1, 2 or 4) to `value`."""

    @abc.abstractmethod
    def memcpy_2d(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int,
                  stream, sync: bool) -> None:
        """Device to device: `height` rows of `width` bytes, `dpitch` / `spitch` bytes apart."""

    # --- modules and launches ---
    @abc.abstractmethod
    def module_load(self, image: bytes):
        """A loaded module (PTX, cubin or fatbin image)."""

    @abc.abstractmethod
    def module_unload(self, module) -> None: ...

    @abc.abstractmethod
    def module_get_function(self, module, name: str):
        """(function, [(offset, size) of each parameter])."""

    @abc.abstractmethod
    def module_get_global(self, module, name: str) -> tuple[int, int]:
        """(device pointer, size) of a `__device__` variable."""

    @abc.abstractmethod
    def launch(self, function, grid: tuple[int, int, int], block: tuple[int, int, int],
               shared: int, stream, args: bytes) -> None:
        """Launch with parameter bytes laid out as the function's parameter table says."""

    # --- streams and events ---
    @abc.abstractmethod
    def stream_create(self, flags: int): ...

    @abc.abstractmethod
    def stream_destroy(self, stream) -> None: ...

    @abc.abstractmethod
    def stream_synchronize(self, stream) -> None: ...

    @abc.abstractmethod
    def stream_query(self, stream) -> bool:
        """True when all work on the stream is done."""

    @abc.abstractmethod
    def stream_wait_event(self, stream, event, flags: int) -> None:
        """The stream's later work waits for the event's (cuStreamWaitEvent; a capture's fork or
        join where the event was recorded into one)."""

    @abc.abstractmethod
    def event_create(self, flags: int): ...

    @abc.abstractmethod
    def event_record(self, event, stream) -> None: ...

    @abc.abstractmethod
    def event_synchronize(self, event) -> None: ...

    @abc.abstractmethod
    def event_query(self, event) -> bool: ...

    @abc.abstractmethod
    def event_elapsed(self, start, end) -> float:
        """Milliseconds between two recorded events."""

    @abc.abstractmethod
    def event_destroy(self, event) -> None: ...

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait for all work in the context."""

    # --- forwarded as they are: the specification's thin calls (kvmgpu_wire/spec.py `backend=`) ---
    @abc.abstractmethod
    def ctx_get_flags(self) -> int:
        """cuCtxGetFlags of the VM's context."""

    @abc.abstractmethod
    def device_get_pci_bus_id(self) -> bytes:
        """cuDeviceGetPCIBusId: b"dddd:bb:dd.f" (hex)."""

    @abc.abstractmethod
    def stream_get_priority(self, stream) -> int:
        """cuStreamGetPriority (the null stream: None)."""

    # --- stream capture and graphs (kvmgpu/worker/graphs.py) ---
    @abc.abstractmethod
    def stream_begin_capture(self, stream) -> None:
        """cuStreamBeginCapture in relaxed mode: the worker's one thread serves every session, so
        no mode may forbid its other calls (the guest keeps its own threads' modes)."""

    @abc.abstractmethod
    def stream_end_capture(self, stream):
        """cuStreamEndCapture: the graph captured. The capture ends either way; an invalidated
        one raises CudaError(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED) and gives no graph."""

    @abc.abstractmethod
    def graph_instantiate(self, graph, flags: int):
        """cuGraphInstantiateWithFlags: an executable graph."""

    @abc.abstractmethod
    def graph_launch(self, graph_exec, stream) -> None: ...

    @abc.abstractmethod
    def graph_upload(self, graph_exec, stream) -> None: ...

    def region_device_pointer(self) -> int:
        """The device address of the shared region (registered mapped): where a guest's mapped
        page-locked memory is for its kernels. A backend that cannot map host memory says so."""
        raise CudaError(CUresult.CUDA_ERROR_NOT_SUPPORTED,
                        "this backend does not map host memory into the device's address space")

    @abc.abstractmethod
    def graph_node_count(self, graph) -> int:
        """cuGraphGetNodes with no node array: how many nodes `graph` has."""

    @abc.abstractmethod
    def graph_exec_destroy(self, graph_exec) -> None: ...

    @abc.abstractmethod
    def graph_destroy(self, graph) -> None: ...
    # (`function` below is the worker's kvmgpu.worker.session.Function: its `.backend` is this
    # backend's function.)
    @abc.abstractmethod
    def func_get_attributes(self, function) -> bytes:
        """cuFuncGetAttribute of CUfunction_attribute 0..15, as 16 little-endian int32."""

    @abc.abstractmethod
    def func_set_attribute(self, function, attribute: int, value: int) -> None:
        """cuFuncSetAttribute."""

    @abc.abstractmethod
    def occupancy_max_blocks(self, function, block: int, shared: int, flags: int) -> int:
        """cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags."""

    @abc.abstractmethod
    def occupancy_available_smem(self, function, blocks: int, block: int) -> int:
        """cuOccupancyAvailableDynamicSMemPerBlock."""

    @abc.abstractmethod
    def ctx_get_limit(self, limit: int) -> int:
        """cuCtxGetLimit of the VM's context."""

    @abc.abstractmethod
    def tensor_map_encode_tiled(self, dtype: int, rank: int, address: int, dims: tuple, strides: tuple,
                                box: tuple, element_strides: tuple, interleave: int, swizzle: int,
                                l2: int, fill: int) -> bytes:
        """cuTensorMapEncodeTiled: the CUtensorMap's 128 bytes (the worker checked the tensor's
        bytes lie in the session's memory; the driver checks the rest)."""

    @abc.abstractmethod
    def occupancy_max_clusters(self, function, gx: int, gy: int, gz: int, bx: int, by: int, bz: int,
                               shared: int, cx: int, cy: int, cz: int) -> int:
        """cuOccupancyMaxActiveClusters of a launch of that shape (cx 0: no cluster attribute)."""

    @abc.abstractmethod
    def tensor_map_encode_im2col(self, dtype: int, rank: int, address: int, dims: tuple, strides: tuple,
                                 lower: tuple, upper: tuple, channels: int, pixels: int,
                                 element_strides: tuple, interleave: int, swizzle: int, l2: int,
                                 fill: int) -> bytes:
        """cuTensorMapEncodeIm2col: the CUtensorMap's 128 bytes (the tensor checked as for
        tensor_map_encode_tiled)."""
