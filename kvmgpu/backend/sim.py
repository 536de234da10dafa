"""The sim DEVELOPMENT backend: a pretend GPU in host memory, for machines with no GPU.

Not a product backend. Device memory is a bytearray per allocation at fake device addresses
(from 0x7f00_0000_0000, 256-byte aligned, never reused); a sorted index resolves a pointer inside
an allocation. Modules must be PTX, or a fatbin carrying PTX (fatbin.py takes it out): the entry
points, their parameter layouts and the `.global` variables are read from the image, as the cuda
backend reads them from the driver. A launch runs
the Python twin registered under the entry-point name in `simkernels`; test kernels only.

Everything is synchronous: streams and events exist so handles behave, and an event records the
host clock. A capturing stream records its launches, memsets, device copies, event records and
graph launches into its graph instead of running them, and a graph launch runs them in order; the
driver's capture rules that the worker could break are kept (a null-stream call while a blocking
stream captures, a synchronise of a capturing stream or of the context: each invalidates the
capture and fails as on the driver). A kernel that touches memory outside every allocation fails
with CUDA_ERROR_ILLEGAL_ADDRESS, and, as in CUDA, the error is sticky: every later call on this
context fails with it until the worker replaces the backend (see docs/security.md).
"""

from __future__ import annotations

import bisect
import logging
import struct
import time
import uuid
from typing import NoReturn

from kvmgpu_wire.cudefs import CUresult

from . import simkernels
from .base import Backend, Capabilities, CudaError, DeviceInfo
from .ptx import parse_ptx
from .simcapture import SimCapture, SimStream

log = logging.getLogger("kvmgpu.backend")

BASE_ADDRESS = 0x7F00_0000_0000
ALIGN = 256
GIB = 1 << 30

# CUdevice_attribute numbers (cuda-python's enum) -> an H100-like device.
ATTRIBUTES = {
    1: 1024,  # MAX_THREADS_PER_BLOCK
    2: 1024, 3: 1024, 4: 64,  # MAX_BLOCK_DIM_X/Y/Z
    5: 2147483647, 6: 65535, 7: 65535,  # MAX_GRID_DIM_X/Y/Z
    8: 49152,  # MAX_SHARED_MEMORY_PER_BLOCK
    9: 65536,  # TOTAL_CONSTANT_MEMORY
    10: 32,  # WARP_SIZE
    11: 2147483647,  # MAX_PITCH
    12: 65536,  # MAX_REGISTERS_PER_BLOCK
    13: 1980000,  # CLOCK_RATE (kHz)
    14: 512,  # TEXTURE_ALIGNMENT
    15: 1,  # GPU_OVERLAP
    16: 132,  # MULTIPROCESSOR_COUNT
    17: 0,  # KERNEL_EXEC_TIMEOUT
    18: 0,  # INTEGRATED
    19: 1,  # CAN_MAP_HOST_MEMORY
    20: 0,  # COMPUTE_MODE (default)
    31: 1,  # CONCURRENT_KERNELS
    32: 1,  # ECC_ENABLED
    33: 0, 34: 0, 50: 0,  # PCI_BUS_ID, PCI_DEVICE_ID, PCI_DOMAIN_ID
    35: 0,  # TCC_DRIVER
    36: 2619000,  # MEMORY_CLOCK_RATE (kHz)
    37: 5120,  # GLOBAL_MEMORY_BUS_WIDTH
    38: 52428800,  # L2_CACHE_SIZE
    39: 2048,  # MAX_THREADS_PER_MULTIPROCESSOR
    40: 2,  # ASYNC_ENGINE_COUNT
    41: 1,  # UNIFIED_ADDRESSING
    75: 9, 76: 0,  # COMPUTE_CAPABILITY_MAJOR/MINOR
    81: 233472,  # MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
    82: 65536,  # MAX_REGISTERS_PER_MULTIPROCESSOR
    83: 1,  # MANAGED_MEMORY
    97: 232448,  # MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
}

def _fail(code: CUresult, detail: str = "") -> NoReturn:
    raise CudaError(code, detail)


class SimModule:
    def __init__(self, entries: dict, globals_: dict):
        self.entries = entries
        self.globals = globals_  # name -> (ptr, size)


# CUfunction_attribute 0..15 of every sim kernel as the sim compiled it (its PTX was compute_80,
# for this sm_90 device); 8 and 9 and the cluster preferences (11..15) are the settable ones.
FUNC_ATTRIBUTES = (1024, 0, 0, 0, 32, 80, 90, 0, 49152, -1, 0, 0, 0, 0, 0, 0)
# CUlimit 0..6 of an H100's context as it starts: stack bytes a thread, printf FIFO, malloc heap,
# device runtime sync depth, pending launches, L2 fetch granularity, persisting L2.
LIMITS = (1024, 1 << 20, 8 << 20, 2, 2048, 64, 0)
SM_SHARED_RESERVED = 1024  # shared memory the device keeps per block (sm_80 and later)


class SimFunction:
    def __init__(self, module: SimModule, name: str, layout: list):
        self.module, self.name, self.layout = module, name, layout
        self.attributes = list(FUNC_ATTRIBUTES)


class SimEvent:
    def __init__(self):
        self.time: float | None = None
        self.captured = False  # last recorded into a capture ...
        self.capture: list | None = None  # ... that one (its work) ...
        self.source: SimStream | None = None  # ... on that stream ...
        self.tail = 0  # ... after that much of the stream's captured work




class SimBackend(SimCapture, Backend):
    """The sim development backend. `total_memory` is the pretend GPU's size."""

    name = "sim"

    def __init__(self, total_memory: int = 80 * GIB, **_ignored):
        self.total_memory = total_memory
        self._uuid = str(uuid.uuid4())
        self._allocs: dict[int, bytearray] = {}
        self._starts: list[int] = []  # sorted
        self._next = BASE_ADDRESS
        self._used = 0
        self._region: memoryview | None = None
        self._sticky: CudaError | None = None
        self._captures: list[SimStream] = []  # the streams capturing
        self.capabilities = Capabilities(launch_flat=self.launch_flat)

    # --- lifetime ---
    def device_info(self) -> DeviceInfo:
        return DeviceInfo("kvmgpu sim device", "GPU-" + self._uuid, self.total_memory, 13000,
                          (9, 0), dict(ATTRIBUTES))

    def attach_region(self, region: memoryview) -> None:
        self._region = region

    def close(self) -> None:
        self._captures.clear()
        self.capturing = 0
        self._allocs.clear()
        self._starts.clear()
        self._used = 0
        self._region = None

    # --- device memory ---
    def _check(self) -> None:
        if self._sticky is not None:
            raise self._sticky

    def _allocate(self, nbytes: int) -> int:
        taken = self.allocation_size(nbytes)  # as the GPU takes it (and the worker charges it)
        if self._used + taken > self.total_memory:
            _fail(CUresult.CUDA_ERROR_OUT_OF_MEMORY, f"{taken} bytes more would pass the sim device's "
                  f"{self.total_memory} ({self._used} in use)")
        ptr = self._next
        self._next += (nbytes + ALIGN - 1) // ALIGN * ALIGN or ALIGN
        self._allocs[ptr] = bytearray(nbytes)
        bisect.insort(self._starts, ptr)
        self._used += taken
        return ptr

    def _release(self, ptr: int) -> None:
        buf = self._allocs.pop(ptr, None)
        if buf is None:
            _fail(CUresult.CUDA_ERROR_INVALID_VALUE, f"0x{ptr:x} is not an allocation")
        del self._starts[bisect.bisect_left(self._starts, ptr)]
        self._used -= self.allocation_size(len(buf))

    def resolve(self, ptr: int, nbytes: int) -> memoryview | None:
        """A view of [ptr, ptr+nbytes) when it lies inside one allocation, else None."""
        i = bisect.bisect_right(self._starts, ptr) - 1
        if i < 0:
            return None
        start = self._starts[i]
        buf = self._allocs[start]
        off = ptr - start
        if off + nbytes > len(buf):
            return None
        return memoryview(buf)[off: off + nbytes]

    def _view(self, ptr: int, nbytes: int) -> memoryview:
        v = self.resolve(ptr, nbytes)
        if v is None:
            _fail(CUresult.CUDA_ERROR_INVALID_VALUE, f"[0x{ptr:x}, +{nbytes}) is not device memory")
        return v

    def _host(self, offset: int, nbytes: int) -> memoryview:
        if self._region is None or offset < 0 or offset + nbytes > len(self._region):
            _fail(CUresult.CUDA_ERROR_INVALID_VALUE, "host range outside the shared region")
        return self._region[offset: offset + nbytes]

    def mem_alloc(self, nbytes: int) -> int:
        self._check()
        if nbytes <= 0:
            _fail(CUresult.CUDA_ERROR_INVALID_VALUE, "cannot allocate 0 bytes")
        return self._allocate(nbytes)

    def mem_free(self, dptr: int) -> None:
        self._check()
        self._release(dptr)

    def memcpy_htod(self, dst, offset, nbytes, stream, sync) -> None:
        self._check()
        self._uncaptured(stream, "a copy from the host")
        self._view(dst, nbytes)[:] = self._host(offset, nbytes)

    def memcpy_dtoh(self, offset, src, nbytes, stream, piece=0, landed=None) -> None:
        self._check()
        self._uncaptured(stream, "a copy to the host")
        step = piece if landed is not None and piece > 0 else max(nbytes, 1)
        for pos in range(0, nbytes, step):
            size = min(step, nbytes - pos)
            self._host(offset + pos, size)[:] = self._view(src + pos, size)
            if landed is not None:
                landed(pos + size)

    def memcpy_dtod(self, dst, src, nbytes, stream, sync) -> None:
        self._check()
        self._view(src, nbytes), self._view(dst, nbytes)

        def copy() -> None:
            data = bytes(self._view(src, nbytes))
            self._view(dst, nbytes)[:] = data
        self._run(stream, copy)

    def memset(self, dst, value, count, width, stream, sync) -> None:
        self._check()
        pattern = struct.pack({1: "<B", 2: "<H", 4: "<I"}[width], value)
        self._view(dst, count * width)

        def fill() -> None:
            self._view(dst, count * width)[:] = pattern * count
        self._run(stream, fill)

    def memcpy_2d(self, dst, dpitch, src, spitch, width, height, stream, sync) -> None:
        self._check()
        rows = [bytes(self._view(src + i * spitch, width)) for i in range(height)]  # (overlap: as read first)
        for i, row in enumerate(rows):
            self._view(dst + i * dpitch, width)[:] = row

    # --- modules and launches ---
    def module_load(self, image: bytes) -> SimModule:
        self._check()
        entries, globals_ = parse_ptx(image)
        placed = {}
        try:
            for name, (size, initial) in globals_.items():
                ptr = self._allocate(max(size, 1))
                self._allocs[ptr][:len(initial)] = initial
                placed[name] = (ptr, size)
        except CudaError:
            for ptr, _ in placed.values():
                self._release(ptr)
            raise
        return SimModule(entries, placed)

    def module_memory(self, module: SimModule, image: bytes) -> int:
        """Its globals, each an allocation of its own here."""
        return sum(self.allocation_size(max(size, 1)) for _, size in module.globals.values())

    def module_unload(self, module: SimModule) -> None:
        for ptr, _ in module.globals.values():
            if ptr in self._allocs:
                self._release(ptr)
        module.globals = {}
        self._check()

    def module_get_function(self, module: SimModule, name: str):
        """The function, where the module has the entry point and this backend a Python twin
        of it with as many parameters: a kernel the sim backend cannot run fails here, at the
        call that names it, not at a later launch or synchronise."""
        self._check()
        layout = module.entries.get(name)
        if layout is None:
            _fail(CUresult.CUDA_ERROR_NOT_FOUND, f"no entry point {name!r} in the module")
        twin = simkernels.KERNELS.get(name)
        if twin is None:
            why = (f"the sim development backend cannot run kernel {name!r}: it runs only its test "
                   f"kernels ({', '.join(sorted(simkernels.KERNELS))}); use --backend cuda")
        elif len(twin.params) != len(layout):
            why = (f"kernel {name!r} has {len(layout)} parameters in the image, "
                   f"{len(twin.params)} in the sim backend's twin of it")
        else:
            return SimFunction(module, name, layout), list(layout)
        log.warning("%s", why)
        _fail(CUresult.CUDA_ERROR_NOT_SUPPORTED, why)

    def module_get_global(self, module: SimModule, name: str) -> tuple[int, int]:
        self._check()
        if name not in module.globals:
            _fail(CUresult.CUDA_ERROR_NOT_FOUND, f"no global {name!r} in the module")
        return module.globals[name]

    def launch(self, function: SimFunction, grid, block, shared, stream, args: bytes) -> None:
        self._check()
        twin = simkernels.KERNELS[function.name]  # (module_get_function made sure)
        try:
            values = simkernels.decode_args(twin, function.layout, args)
        except (ValueError, struct.error) as e:
            _fail(CUresult.CUDA_ERROR_NOT_SUPPORTED, f"{function.name}: {e}")

        def resolve(ptr: int, nbytes: int) -> memoryview:
            v = self.resolve(ptr, nbytes)
            if v is None:
                raise simkernels.IllegalAddress(f"[0x{ptr:x}, +{nbytes})")
            return v

        launch = simkernels.SimLaunch(tuple(grid), tuple(block), resolve, function.module.globals)

        def run() -> None:
            try:
                twin.run(launch, *values)
            except simkernels.IllegalAddress as e:
                self._sticky = CudaError(CUresult.CUDA_ERROR_ILLEGAL_ADDRESS,
                                         f"{function.name} accessed {e}, outside every allocation")
                raise self._sticky from None
        self._run(stream, run)

    def launch_flat(self, function: SimFunction, gx, gy, gz, bx, by, bz, shared, stream, args) -> None:
        """The worker's queued-launch form (see CudaBackend.launch_flat)."""
        self.launch(function, (gx, gy, gz), (bx, by, bz), shared, stream, args)

    # --- streams and events ---
    def stream_create(self, flags: int) -> SimStream:
        self._check()
        self.streams_live += 1
        self.streams_made += 1
        return SimStream(flags)

    def stream_destroy(self, stream) -> None:
        self._check()
        if stream.capture is not None:
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "the stream is capturing")
        self.streams_live -= 1

    def stream_synchronize(self, stream) -> None:
        self._check()
        self._waitable(stream)

    def stream_query(self, stream) -> bool:
        self._check()
        self._waitable(stream)
        return True

    def event_create(self, flags: int) -> SimEvent:
        self._check()
        return SimEvent()

    def event_record(self, event: SimEvent, stream) -> None:
        self._check()

        if stream is not None and stream.capture is not None:  # (no node: it marks where a fork
            event.captured, event.capture, event.source = True, stream.capture, stream  # or join is)
            event.tail = stream.tail
            return

        def record() -> None:
            event.time = time.perf_counter()
        event.captured = self._run(stream, record)
        event.capture, event.source = None, None

    def _recorded(self, event: SimEvent) -> None:
        if event.captured:
            _fail(CUresult.CUDA_ERROR_CAPTURED_EVENT, "the event was last recorded into a capture")

    def event_synchronize(self, event) -> None:
        self._check()
        self._recorded(event)

    def event_query(self, event) -> bool:
        self._check()
        self._recorded(event)
        return True

    def event_elapsed(self, start: SimEvent, end: SimEvent) -> float:
        self._check()
        if start.time is None or end.time is None:
            _fail(CUresult.CUDA_ERROR_INVALID_HANDLE, "event has not been recorded")
        return (end.time - start.time) * 1000.0

    def event_destroy(self, event) -> None:
        self._check()

    def synchronize(self) -> None:
        self._check()
        if self._captures:
            for st in self._captures:
                self._invalidate(st)
            _fail(CUresult.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                  f"the context cannot be synchronised while {len(self._captures)} of its streams capture")

    # --- forwarded as they are (the specification's thin calls) ---
    def ctx_get_flags(self) -> int:
        self._check()
        return 0  # CU_CTX_SCHED_AUTO, as a primary context nobody set flags on

    def device_get_pci_bus_id(self) -> bytes:
        a = ATTRIBUTES
        return f"{a[50]:04x}:{a[33]:02x}:{a[34]:02x}.0".encode()  # PCI domain, bus, device

    def stream_get_priority(self, stream) -> int:
        self._check()
        return 0  # every stream is made with the default priority (cuStreamCreate)

    # --- functions, occupancy and limits: an H100's arithmetic over the sim's attributes ---
    def func_get_attributes(self, function) -> bytes:
        self._check()
        return struct.pack("<16i", *function.backend.attributes)

    def func_set_attribute(self, function, attribute: int, value: int) -> None:
        self._check()
        attrs = function.backend.attributes
        if attribute == 8 and value > ATTRIBUTES[97] - attrs[1]:
            _fail(CUresult.CUDA_ERROR_INVALID_VALUE, f"{value} bytes of dynamic shared memory: the "
                  f"device's opt-in limit is {ATTRIBUTES[97]} less the kernel's static {attrs[1]}")
        if attribute == 9 and not -1 <= value <= 100:
            _fail(CUresult.CUDA_ERROR_INVALID_VALUE, f"carveout {value}: -1 or 0..100 percent")
        if attribute not in (8, 9, 11, 12, 13, 14, 15):
            _fail(CUresult.CUDA_ERROR_INVALID_VALUE, f"function attribute {attribute} cannot be set")
        attrs[attribute] = value

    def occupancy_max_blocks(self, function, block: int, shared: int, flags: int) -> int:
        self._check()
        attrs = function.backend.attributes
        if block > attrs[0]:
            return 0
        warps = -(-block // ATTRIBUTES[10])
        by_threads = ATTRIBUTES[39] // (warps * ATTRIBUTES[10])
        by_regs = ATTRIBUTES[82] // (attrs[4] * warps * ATTRIBUTES[10])
        smem = attrs[1] + shared + SM_SHARED_RESERVED
        by_smem = ATTRIBUTES[81] // smem
        return min(32, by_threads, by_regs, by_smem)  # (32: an sm_90 multiprocessor's blocks)

    def occupancy_available_smem(self, function, blocks: int, block: int) -> int:
        self._check()
        attrs = function.backend.attributes
        if blocks == 0 or self.occupancy_max_blocks(function, block, 0, 0) < blocks:
            return 0
        per_block = ATTRIBUTES[81] // blocks - SM_SHARED_RESERVED - attrs[1]
        return max(0, min(per_block, attrs[8]))

    def ctx_get_limit(self, limit: int) -> int:
        self._check()
        return LIMITS[limit]

    def tensor_map_encode_tiled(self, dtype, rank, address, dims, strides, box, element_strides,
                                interleave, swizzle, l2, fill) -> bytes:
        """Its inputs, packed (no kernel of the sim reads a tensor map): a box must fit the
        hardware's 256 elements a dimension, as the driver checks."""
        self._check()
        if not all(1 <= b <= 256 for b in box):
            _fail(CUresult.CUDA_ERROR_INVALID_VALUE, f"tensor map box {box}: 1..256 a dimension")
        pad = lambda t, n: tuple(t) + (0,) * (n - len(t))  # noqa: E731
        return struct.pack("<QI5Q4Q5I5I4B", address, dtype, *pad(dims, 5), *pad(strides, 4),
                           *pad(box, 5), *pad(element_strides, 5), interleave, swizzle, l2, fill)

    def occupancy_max_clusters(self, function, gx, gy, gz, bx, by, bz, shared, cx, cy, cz) -> int:
        """The blocks resident on all multiprocessors over a cluster's blocks (an H100 places a
        cluster within one of its GPCs, which this does not model)."""
        self._check()
        attrs = function.backend.attributes
        size = (cx * cy * cz) if cx else max(1, attrs[11] * attrs[12] * attrs[13])
        if size == 0 or size > (16 if attrs[14] else 8) or (cx and (gx % cx or gy % cy or gz % cz)):
            _fail(CUresult.CUDA_ERROR_INVALID_CLUSTER_SIZE,
                  f"clusters of {size} blocks in a {gx}x{gy}x{gz} grid")
        return self.occupancy_max_blocks(function, bx * by * bz, shared, 0) * ATTRIBUTES[16] // size

    def tensor_map_encode_im2col(self, dtype, rank, address, dims, strides, lower, upper, channels, pixels,
                                 element_strides, interleave, swizzle, l2, fill) -> bytes:
        """Its inputs, packed, as tensor_map_encode_tiled's."""
        self._check()
        if not 1 <= channels <= 256 or not 1 <= pixels <= 1024:
            _fail(CUresult.CUDA_ERROR_INVALID_VALUE, f"im2col: {channels} channels, {pixels} pixels a column")
        pad = lambda t, n: tuple(t) + (0,) * (n - len(t))  # noqa: E731
        return struct.pack("<QI5Q4Q3i3iII4B", address, dtype, *pad(dims, 5), *pad(strides, 4), *pad(lower, 3),
                           *pad(upper, 3), channels, pixels, interleave, swizzle, l2, fill).ljust(128, b"\0")
