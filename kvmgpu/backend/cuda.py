"""The product backend: one CUDA context on one GPU, through `cuda.bindings.driver`.

Everything here runs calls the worker has already validated. CUDA failures become
`CudaError(code, detail)`. The shared region is registered as pinned host memory once
(`attach_region`), so a forwarded copy is one DMA between the device and the shared pages.

Launches are the hot path. Each function gets, when it is looked up, a parameter buffer and an
array of pointers into it laid out by the function's own parameter table (`cuFuncGetParamInfo`);
a launch then costs one `memmove` of the argument bytes and one `cuLaunchKernel`, and the worker's
queued launches (`launch_in`, `launch_records`) not even the memmove: the driver reads the bytes where they arrived.
Parameters go as one packed buffer through `extra`, cheaper than a void*[] through `kernelParams`
(docs/performance.md, "Queued launches");
`launch_mode="params"` keeps the other way for comparison.

`launch_mode="ctypes"` makes the same `cuLaunchKernel` call (same libcuda, same context, same
thread, the same prepared `extra` buffer) through a ctypes prototype with its argument types
preset instead of through cuda-bindings. It is slower (docs/performance.md, "Queued launches"),
so it is not the default.

A sticky error (an out-of-bounds kernel: CUDA_ERROR_ILLEGAL_ADDRESS) kills the context; `reset()`
gives the VM a fresh one.
"""

from __future__ import annotations

import ctypes
import logging
import struct
from typing import NoReturn

from cuda.bindings import driver as cu

from kvmgpu.backend.base import Backend, Capabilities, CudaError, DeviceInfo
from kvmgpu.backend.images import globals_size
from kvmgpu.backend.launcher import LaunchRecords, RepeatTurn, open_module

log = logging.getLogger("kvmgpu.backend")

LAUNCH_MODES = ("ctypes", "extra", "params")


def _libcuda_launch():
    """libcuda's cuLaunchKernel as a ctypes function (argument types preset), or None."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        fn = lib.cuLaunchKernel
        u = ctypes.c_uint
        fn.argtypes = [ctypes.c_void_p, u, u, u, u, u, u, u, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_void_p]
        fn.restype = ctypes.c_int
        return fn
    return None

_LAUNCH = cu.cuLaunchKernel
_NOT_READY = cu.CUresult.CUDA_ERROR_NOT_READY
_INVALID_VALUE = cu.CUresult.CUDA_ERROR_INVALID_VALUE
_REGISTER_FLAGS = (cu.CU_MEMHOSTREGISTER_PORTABLE | cu.CU_MEMHOSTREGISTER_DEVICEMAP)
_NO_TIMING = cu.CUevent_flags.CU_EVENT_DISABLE_TIMING


def _u32s(values) -> list:
    """A list argument cuda-bindings types as cuuint32_t (it takes no plain ints there)."""
    return [cu.cuuint32_t(int(v)) for v in values]


def _u64s(values) -> list:
    return [cu.cuuint64_t(int(v)) for v in values]
# Attributes whose query is documented to fail or that are markers, not attributes.
_SKIP_ATTRIBUTES = {"CU_DEVICE_ATTRIBUTE_MAX"}
_BINARY_MAGIC = (b"\x7fELF", b"\x50\xed\x55\xba")  # cubin (ELF), fatbin
_CAPTURE_RELAXED = cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED
_ILLEGAL_STATE = cu.CUresult.CUDA_ERROR_ILLEGAL_STATE


def _fail(err, what: str) -> NoReturn:
    raise CudaError(int(err), what)


def _check(result, what: str):
    """Unpack a `(CUresult, *values)` tuple; raise CudaError on failure."""
    err = result[0]
    if err:
        _fail(err, what)
    if len(result) == 1:
        return None
    if len(result) == 2:
        return result[1]
    return result[1:]


class Function:
    """A loaded kernel with everything a launch needs precomputed."""

    __slots__ = ("handle", "address", "params", "arg_size", "_buf", "_buf_addr", "_ptrs",
                 "kernel_params", "_extra", "extra", "_size", "extra_or_null", "extra_or_zero", "_mv",
                 "_extra_at", "extra_at")

    def __init__(self, handle, params: list[tuple[int, int]]):
        self.handle = handle
        self.address = int(handle)  # the CUfunction as an integer, for the ctypes launch
        self.params = params
        self.arg_size = max((off + size for off, size in params), default=0)
        self._buf = ctypes.create_string_buffer(max(self.arg_size, 8))
        self._buf_addr = ctypes.addressof(self._buf)
        self._mv = memoryview(self._buf).cast("B")  # takes the argument bytes from any buffer
        if params:
            self._ptrs: ctypes.Array | None = (ctypes.c_void_p * len(params))(
                *(self._buf_addr + off for off, _ in params))
            self.kernel_params = ctypes.addressof(self._ptrs)
        else:
            self._ptrs = None
            self.kernel_params = 0
        self._size = ctypes.c_size_t(self.arg_size)
        self._extra = (ctypes.c_void_p * 5)(
            cu.CU_LAUNCH_PARAM_BUFFER_POINTER, self._buf_addr,
            cu.CU_LAUNCH_PARAM_BUFFER_SIZE, ctypes.addressof(self._size),
            cu.CU_LAUNCH_PARAM_END)
        self.extra = ctypes.addressof(self._extra)
        self.extra_or_null = self.extra if self.arg_size else None
        self.extra_or_zero = self.extra if self.arg_size else 0
        # the same, pointing at parameter bytes that stay where they were received (launch_in)
        self._extra_at = (ctypes.c_void_p * 5)(
            cu.CU_LAUNCH_PARAM_BUFFER_POINTER, 0,
            cu.CU_LAUNCH_PARAM_BUFFER_SIZE, ctypes.addressof(self._size),
            cu.CU_LAUNCH_PARAM_END)
        self.extra_at = ctypes.addressof(self._extra_at) if self.arg_size else 0


class CudaBackend(Backend):
    """One context on GPU `index` for one VM (one worker process)."""

    name = "cuda"

    def __init__(self, gpu: int = 0, launch_mode: str = "extra"):
        index = gpu
        if launch_mode not in LAUNCH_MODES:
            raise ValueError(f"launch_mode must be one of {LAUNCH_MODES}, not {launch_mode!r}")
        self._launch_c = _libcuda_launch()
        if launch_mode == "ctypes" and self._launch_c is None:
            launch_mode = "extra"
        self.index = index
        self.launch_mode = launch_mode
        _check(cu.cuInit(0), "cuInit")
        # The worker's hot driver calls in C where the module is built (launcher.py): queued
        # launches as packed records, one launch from the receive buffer, cuStreamSynchronize, and
        # the turn that serves a repeated launch + synchronise.
        self._c = open_module() if launch_mode == "extra" else None
        records = repeats = None
        if self._c is not None:
            self._launch_fn = self._driver_function(b"cuLaunchKernel")
            self._sync_fn = self._driver_function(b"cuStreamSynchronize")
            records = LaunchRecords(self._launch_fn)
            repeats = RepeatTurn(self._launch_fn, self._driver_function(b"cuCtxSynchronize"), self._sync_fn,
                                 self._context_address)
            self.stream_synchronize = self._c_synchronizer()  # type: ignore[method-assign]  # the C one, bound once
        # (nothing here binds a context: made once, they serve a reset context too)
        self.capabilities = Capabilities(
            launch_records=records, launch_in=self._in_launcher() if launch_mode == "extra" else None,
            launch_flat=self.launch_flat, null_stream_recorder=self._null_stream_recorder(), repeats=repeats)
        log.info("the worker's launches and stream waits go through %s", "kvmgpu's C module"
                 if self._c is not None else f"cuda-bindings ({launch_mode})")
        self.device = _check(cu.cuDeviceGet(index), f"cuDeviceGet({index})")
        self.alloc_granularity = self._read_granularity()
        self._load_costs: dict[int, int] = {}  # module -> device memory its load took (module_load)
        self._region: memoryview | None = None
        self._region_addr = 0
        self._region_size = 0
        self._registered = False
        self._info: DeviceInfo | None = None
        self._open_context()

    def _read_granularity(self) -> int:
        """The page size the driver maps this device's memory in (cuMemGetAllocationGranularity,
        recommended, for device memory): what an allocation is rounded up to in the quota."""
        prop = cu.CUmemAllocationProp()
        prop.type = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
        prop.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
        prop.location.id = self.index
        err, granularity = cu.cuMemGetAllocationGranularity(
            prop, cu.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)
        if err or not granularity:
            log.warning("cuMemGetAllocationGranularity failed (%s): allocations are charged in "
                        "%d-byte pages", err, Backend.alloc_granularity)
            return Backend.alloc_granularity
        return int(granularity)

    def _context_address(self) -> int:
        """The context as the driver's CUcontext value (0: none), for the C turn's cuCtxSynchronize."""
        return int(self.context) if self.context is not None else 0

    @staticmethod
    def _driver_function(name: bytes) -> int:
        """The address of a libcuda function, in the version this driver gives by default
        (cuGetProcAddress refused CUDA versions below the driver's major on the H200)."""
        version = _check(cu.cuDriverGetVersion(), "cuDriverGetVersion")
        flags = 0  # CU_GET_PROC_ADDRESS_DEFAULT: the legacy null stream, as cuda-bindings' calls
        return int(_check(cu.cuGetProcAddress(name, version, flags),
                          f"cuGetProcAddress({name.decode()})")[0])

    # --- lifetime ----------------------------------------------------------------------------

    def _open_context(self) -> None:
        self.context = _check(cu.cuDevicePrimaryCtxRetain(self.device), "cuDevicePrimaryCtxRetain")
        _check(cu.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        self.null_stream = cu.CUstream(0)
        self.streams_live = 0  # (a reset context has none; made keeps counting)
        self._piece_events: list = []  # marks after the pieces of a DtoH (memcpy_dtoh), made once
        if self._region is not None:
            self._register_region()

    def device_info(self) -> DeviceInfo:
        if self._info is None:
            self._info = self._read_device_info()
        return self._info

    def _read_device_info(self) -> DeviceInfo:
        dev = self.device
        name = _check(cu.cuDeviceGetName(256, dev), "cuDeviceGetName")
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
        total = _check(cu.cuDeviceTotalMem(dev), "cuDeviceTotalMem")
        version = _check(cu.cuDriverGetVersion(), "cuDriverGetVersion")
        uuid_raw = bytes(_check(cu.cuDeviceGetUuid(dev), "cuDeviceGetUuid").bytes)
        h = uuid_raw.hex()
        uuid = f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        attributes: dict[int, int] = {}
        for attr in cu.CUdevice_attribute:
            if attr.name in _SKIP_ATTRIBUTES:
                continue
            err, value = cu.cuDeviceGetAttribute(attr, dev)
            if not err:
                attributes[int(attr)] = int(value)
        major = attributes.get(int(cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR), 0)
        minor = attributes.get(int(cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR), 0)
        return DeviceInfo(name=name, uuid=uuid, total_memory=int(total), driver_version=int(version),
                          compute_capability=(major, minor), attributes=attributes)

    def attach_region(self, region: memoryview) -> None:
        """Register the shared region as pinned host memory (PORTABLE | DEVICEMAP)."""
        if self._region is not None:
            self._unregister_region()
        # The address of the mapping: a ctypes view of it, dropped at once so the mmap can close.
        holder = (ctypes.c_char * len(region)).from_buffer(region)
        self._region_addr = ctypes.addressof(holder)
        del holder
        self._region = region
        self._region_size = len(region)
        self._register_region()

    def _register_region(self) -> None:
        _check(cu.cuMemHostRegister(self._region_addr, self._region_size, _REGISTER_FLAGS),
               f"cuMemHostRegister of the {self._region_size}-byte shared region")
        self._registered = True

    def _unregister_region(self) -> None:
        if self._registered:
            cu.cuMemHostUnregister(self._region_addr)  # may fail in a dead context: nothing to do
            self._registered = False

    def reset(self) -> None:
        """Throw the context away and start a fresh one on the same GPU.

        Everything the VM had (memory, modules, streams, events) is gone; handles from before are
        invalid. The shared region, if attached, is registered again. For after a sticky error
        (CUDA_ERROR_ILLEGAL_ADDRESS, CUDA_ERROR_LAUNCH_FAILED...), which leaves the context unusable.
        Raises CudaError if the device cannot give a working context again; the worker should then
        exit so that a new process (and a new context) takes its place.
        """
        self._unregister_region()
        self._load_costs.clear()
        cu.cuCtxSetCurrent(cu.CUcontext(0))
        cu.cuDevicePrimaryCtxRelease(self.device)
        _check(cu.cuDevicePrimaryCtxReset(self.device), "cuDevicePrimaryCtxReset")
        self._open_context()
        # Prove the new context works before a VM is handed it.
        dptr = self.mem_alloc(4)
        self.mem_free(dptr)
        self.synchronize()

    def close(self) -> None:
        if self.context is None:
            return
        cu.cuCtxSynchronize()
        self._unregister_region()
        self._region = None
        cu.cuCtxSetCurrent(cu.CUcontext(0))
        cu.cuDevicePrimaryCtxRelease(self.device)
        cu.cuDevicePrimaryCtxReset(self.device)  # frees what the VM left behind
        self.context = None

    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) of the physical device, for placement and tests (the worker reports the
        quota to the guest, not this)."""
        free, total = _check(cu.cuMemGetInfo(), "cuMemGetInfo")
        return int(free), int(total)

    # --- memory ------------------------------------------------------------------------------

    def mem_alloc(self, nbytes: int) -> int:
        return int(_check(cu.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes})"))

    def mem_free(self, dptr: int) -> None:
        _check(cu.cuMemFree(dptr), "cuMemFree")

    def _stream(self, stream):
        return self.null_stream if stream is None or stream == 0 else stream

    def _capture_safe_null(self, stream) -> bool:
        """A copy on the null stream while a stream captures: the driver's synchronous copy, as the
        guest's program made it (the legacy stream's *asynchronous* work is
        CUDA_ERROR_STREAM_CAPTURE_IMPLICIT during any capture on the H100's driver, its synchronous
        copy is not where the capturing stream is non-blocking; the guest library refused it where
        the capturing stream is blocking)."""
        return self.capturing > 0 and (stream is None or stream == 0)

    def memcpy_htod(self, dst: int, offset: int, nbytes: int, stream, sync: bool) -> None:
        if sync and self._capture_safe_null(stream):
            _check(cu.cuMemcpyHtoD(dst, self._region_addr + offset, nbytes), "cuMemcpyHtoD")
            return
        stream = self._stream(stream)
        err, = cu.cuMemcpyHtoDAsync(dst, self._region_addr + offset, nbytes, stream)
        if err:
            _fail(err, "cuMemcpyHtoDAsync")
        if sync:
            _check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize after cuMemcpyHtoDAsync")

    def memcpy_dtoh(self, offset: int, src: int, nbytes: int, stream, piece: int = 0,
                    landed=None) -> None:
        if self._capture_safe_null(stream):
            _check(cu.cuMemcpyDtoH(self._region_addr + offset, src, nbytes), "cuMemcpyDtoH")
            if landed is not None:
                landed(nbytes)
            return
        stream = self._stream(stream)
        dst = self._region_addr + offset
        if landed is None or piece <= 0 or piece >= nbytes:
            err, = cu.cuMemcpyDtoHAsync(dst, src, nbytes, stream)
            if err:
                _fail(err, "cuMemcpyDtoHAsync")
            _check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize after cuMemcpyDtoHAsync")
            if landed is not None:
                landed(nbytes)
            return
        # Every piece's copy goes to the GPU at once, each followed by an event; waiting on the
        # events in turn, the caller hears of each piece as it lands (the copies go on meanwhile).
        ends = list(range(piece, nbytes, piece)) + [nbytes]
        events = self._piece_events
        while len(events) < len(ends):
            events.append(_check(cu.cuEventCreate(_NO_TIMING), "cuEventCreate"))
        try:
            pos = 0
            for event, end in zip(events, ends):
                err, = cu.cuMemcpyDtoHAsync(dst + pos, src + pos, end - pos, stream)
                if err:
                    _fail(err, "cuMemcpyDtoHAsync")
                _check(cu.cuEventRecord(event, stream), "cuEventRecord after cuMemcpyDtoHAsync")
                pos = end
            for event, end in zip(events, ends):
                _check(cu.cuEventSynchronize(event), "cuEventSynchronize after cuMemcpyDtoHAsync")
                landed(end)
        except CudaError:
            cu.cuStreamSynchronize(stream)  # no piece may still land in the window after the reply
            raise

    def memcpy_dtod(self, dst: int, src: int, nbytes: int, stream, sync: bool) -> None:
        stream = self._stream(stream)
        _check(cu.cuMemcpyDtoDAsync(dst, src, nbytes, stream), "cuMemcpyDtoDAsync")
        if sync:
            _check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize after cuMemcpyDtoDAsync")

    def memcpy_2d(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int,
                  stream, sync: bool) -> None:
        stream = self._stream(stream)
        p = cu.CUDA_MEMCPY2D()
        p.srcMemoryType = p.dstMemoryType = cu.CUmemorytype.CU_MEMORYTYPE_DEVICE
        p.srcDevice, p.srcPitch, p.dstDevice, p.dstPitch = src, spitch, dst, dpitch
        p.WidthInBytes, p.Height = width, height
        _check(cu.cuMemcpy2DAsync(p, stream), "cuMemcpy2DAsync")
        if sync:
            _check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize after cuMemcpy2DAsync")

    def memset(self, dst: int, value: int, count: int, width: int, stream, sync: bool) -> None:
        stream = self._stream(stream)
        if width == 2:
            _check(cu.cuMemsetD16Async(dst, value & 0xFFFF, count, stream), "cuMemsetD16Async")
        elif width == 1:
            _check(cu.cuMemsetD8Async(dst, value & 0xFF, count, stream), "cuMemsetD8Async")
        elif width == 4:
            _check(cu.cuMemsetD32Async(dst, value & 0xFFFFFFFF, count, stream), "cuMemsetD32Async")
        else:
            raise CudaError(int(_INVALID_VALUE), f"memset width {width}")
        if sync:
            _check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize after memset")

    # --- modules and launches ----------------------------------------------------------------

    def _free_memory(self) -> int:
        err, free, _ = cu.cuMemGetInfo()
        return 0 if err else int(free)

    def module_load(self, image: bytes):
        image = bytes(image)
        if not image.startswith(_BINARY_MAGIC) and not image.endswith(b"\0"):
            image += b"\0"  # PTX is text and must be NUL-terminated
        before = self._free_memory()
        module = _check(cu.cuModuleLoadData(image), "cuModuleLoadData")
        # what the load took on the device (its globals and code): the GPU's free memory before
        # and after; another process's allocation or free in between moves it too (module_memory)
        self._load_costs[int(module)] = max(0, before - self._free_memory()) if before else 0
        return module

    def module_memory(self, module, image: bytes) -> int:
        """The globals the image declares where they can be read (PTX, a cubin:
        kvmgpu/backend/images.py); for a fatbin, whose images are not read, what the load was
        measured to take (module_load: its code too, and whatever else the driver set up then)."""
        measured = self._load_costs.pop(int(module), 0)
        if bytes(image[:4]) == _BINARY_MAGIC[1]:
            return measured
        return globals_size(image)

    def module_unload(self, module) -> None:
        self._load_costs.pop(int(module), None)
        _check(cu.cuModuleUnload(module), "cuModuleUnload")

    def module_get_function(self, module, name: str):
        handle = _check(cu.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction({name!r})")
        params: list[tuple[int, int]] = []
        while True:
            err, offset, size = cu.cuFuncGetParamInfo(handle, len(params))
            if err == _INVALID_VALUE:
                break
            if err:
                _fail(err, f"cuFuncGetParamInfo({name!r}, {len(params)})")
            params.append((int(offset), int(size)))
        # Loaded now, not at its first launch (the driver's lazy loading): a first launch inside a
        # capture would load it then, and the worker's streams are blocking under a compute gate,
        # where the load's own work on the legacy stream breaks the capture (seen on the H100).
        err, = cu.cuFuncLoad(handle)
        if err:
            _fail(err, f"cuFuncLoad({name!r})")
        return Function(handle, params), params

    def module_get_global(self, module, name: str) -> tuple[int, int]:
        dptr, size = _check(cu.cuModuleGetGlobal(module, name.encode()), f"cuModuleGetGlobal({name!r})")
        return int(dptr), int(size)

    def launch(self, function, grid, block, shared, stream, args: bytes) -> None:
        f = function
        n = len(args)
        if n:
            f._mv[:n] = args
        if self.launch_mode == "ctypes":
            err = self._launch_c(f.address, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                                 shared, None if stream is None or stream == 0 else int(stream),
                                 None, f.extra_or_null)
            if err:
                _fail(err, "cuLaunchKernel")
            return
        if stream is None or stream == 0:
            stream = self.null_stream
        if self.launch_mode == "params":
            err, = cu.cuLaunchKernel(f.handle, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                                     shared, stream, f.kernel_params, 0)
        else:
            err, = cu.cuLaunchKernel(f.handle, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                                     shared, stream, 0, f.extra if f.arg_size else 0)
        if err:
            _fail(err, "cuLaunchKernel")

    def launch_flat(self, f, gx, gy, gz, bx, by, bz, shared, stream, args) -> None:
        """`launch` with the shape as nine plain arguments and `stream` None or a backend stream:
        the worker's queued-launch path where there is no `launch_in` (the modes other than
        "extra", kept for comparison)."""
        self.launch(f, (gx, gy, gz), (bx, by, bz), shared, stream, args)

    def _in_launcher(self):
        """`launch_in(f, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes)`: the worker's
        queued-launch path for a launch on its own (a launch + synchronise in one message): the
        argument bytes are `buf[start:start + nbytes]` (a bytearray, the channel's receive buffer),
        read where they are, not copied into the function's buffer first; `stream` None is the
        null stream. Through the C module where it is built, else cuda-bindings with the bytes'
        address in the function's `extra`. A closure with what it needs bound once: a method's
        lookups and branches cost a good part of a launch (docs/performance.md, "Queued launches")."""
        fail = _fail
        if self._c is not None:
            c_launch, fn = self._c.launch, self._launch_fn

            def launch_in(f, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes) -> None:
                err = c_launch(fn, f.address, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes)
                if err:
                    fail(err, "cuLaunchKernel")
            return launch_in
        launch = _LAUNCH

        def launch_in(f, gx, gy, gz, bx, by, bz, shared, stream, buf, start, nbytes) -> None:
            if nbytes != f.arg_size or start + nbytes > len(buf):
                fail(_INVALID_VALUE, "cuLaunchKernel: argument bytes outside the buffer")
            holder = ctypes.c_char.from_buffer(buf, start) if nbytes else None
            f._extra_at[1] = ctypes.addressof(holder) if holder is not None else 0
            del holder  # no export left: the buffer may grow again
            err, = launch(f.handle, gx, gy, gz, bx, by, bz, shared, stream, 0, f.extra_at)
            if err:
                fail(err, "cuLaunchKernel")
        return launch_in

    def _c_synchronizer(self):
        """`stream_synchronize(stream)` through the C module (the null stream: None or 0)."""
        c_sync, fn, fail = self._c.stream_synchronize, self._sync_fn, _fail

        def stream_synchronize(stream) -> None:
            err = c_sync(fn, stream)
            if err:
                fail(err, "cuStreamSynchronize")
        return stream_synchronize

    # --- streams and events ------------------------------------------------------------------

    def stream_create(self, flags: int):
        stream = _check(cu.cuStreamCreate(flags), "cuStreamCreate")
        self.streams_live += 1
        self.streams_made += 1
        return stream

    def stream_destroy(self, stream) -> None:
        _check(cu.cuStreamDestroy(stream), "cuStreamDestroy")
        self.streams_live -= 1

    def stream_synchronize(self, stream) -> None:
        _check(cu.cuStreamSynchronize(self._stream(stream)), "cuStreamSynchronize")

    def stream_query(self, stream) -> bool:
        err, = cu.cuStreamQuery(self._stream(stream))
        if err == _NOT_READY:
            return False
        if err:
            _fail(err, "cuStreamQuery")
        return True

    def stream_wait_event(self, stream, event, flags: int) -> None:
        _check(cu.cuStreamWaitEvent(self._stream(stream), event, flags), "cuStreamWaitEvent")

    def event_create(self, flags: int):
        return _check(cu.cuEventCreate(flags), "cuEventCreate")

    def event_record(self, event, stream) -> None:
        _check(cu.cuEventRecord(event, self._stream(stream)), "cuEventRecord")

    @staticmethod
    def _null_stream_recorder():
        """`record(event)`: cuEventRecord on the null stream with nothing around it (the compute
        meter's two records a run). The null stream is the handle 0 in any context."""
        rec, null = cu.cuEventRecord, cu.CUstream(0)

        def record(event) -> None:
            err, = rec(event, null)
            if err:
                _fail(err, "cuEventRecord")
        return record

    def event_synchronize(self, event) -> None:
        _check(cu.cuEventSynchronize(event), "cuEventSynchronize")

    def event_query(self, event) -> bool:
        err, = cu.cuEventQuery(event)
        if err == _NOT_READY:
            return False
        if err:
            _fail(err, "cuEventQuery")
        return True

    def event_elapsed(self, start, end) -> float:
        return float(_check(cu.cuEventElapsedTime(start, end), "cuEventElapsedTime"))

    def event_destroy(self, event) -> None:
        _check(cu.cuEventDestroy(event), "cuEventDestroy")

    def synchronize(self) -> None:
        _check(cu.cuCtxSynchronize(), "cuCtxSynchronize")

    # --- forwarded as they are (the specification's thin calls) ------------------------------

    def ctx_get_flags(self) -> int:
        return int(_check(cu.cuCtxGetFlags(), "cuCtxGetFlags"))

    def device_get_pci_bus_id(self) -> bytes:
        bus_id = _check(cu.cuDeviceGetPCIBusId(32, self.device), "cuDeviceGetPCIBusId")
        return bytes(bus_id).split(b"\0", 1)[0]

    def stream_get_priority(self, stream) -> int:
        return int(_check(cu.cuStreamGetPriority(self._stream(stream)), "cuStreamGetPriority"))

    # --- stream capture and graphs ----------------------------------------------------------

    def stream_begin_capture(self, stream) -> None:
        _check(cu.cuStreamBeginCapture(stream, _CAPTURE_RELAXED), "cuStreamBeginCapture")
        self.capturing += 1

    def stream_end_capture(self, stream):
        err, graph = cu.cuStreamEndCapture(stream)
        if err != _ILLEGAL_STATE:  # ended, whatever else it says (ILLEGAL_STATE: it was not capturing)
            self.capturing -= 1
        if err:
            _fail(err, "cuStreamEndCapture")
        return graph

    def graph_instantiate(self, graph, flags: int):
        return _check(cu.cuGraphInstantiate(graph, flags), "cuGraphInstantiateWithFlags")

    def graph_launch(self, graph_exec, stream) -> None:
        _check(cu.cuGraphLaunch(graph_exec, self._stream(stream)), "cuGraphLaunch")

    def graph_upload(self, graph_exec, stream) -> None:
        _check(cu.cuGraphUpload(graph_exec, self._stream(stream)), "cuGraphUpload")

    def region_device_pointer(self) -> int:
        if not self._region_addr:
            _fail(cu.CUresult.CUDA_ERROR_NOT_SUPPORTED, "no shared region is registered")
        return int(_check(cu.cuMemHostGetDevicePointer(self._region_addr, 0), "cuMemHostGetDevicePointer"))

    def graph_node_count(self, graph) -> int:
        _, count = _check(cu.cuGraphGetNodes(graph, 0), "cuGraphGetNodes")
        return int(count)

    def graph_exec_destroy(self, graph_exec) -> None:
        _check(cu.cuGraphExecDestroy(graph_exec), "cuGraphExecDestroy")

    def graph_destroy(self, graph) -> None:
        _check(cu.cuGraphDestroy(graph), "cuGraphDestroy")
    def func_get_attributes(self, function) -> bytes:
        values = []
        for a in range(16):
            err, value = cu.cuFuncGetAttribute(cu.CUfunction_attribute(a), function.backend.handle)
            if err and a <= 8:  # the attributes every driver since CUDA 9 answers
                _fail(err, f"cuFuncGetAttribute({a})")
            values.append(int(value) if not err else 0)  # (a newer attribute an older driver lacks)
        return struct.pack("<16i", *values)

    def func_set_attribute(self, function, attribute: int, value: int) -> None:
        _check(cu.cuFuncSetAttribute(function.backend.handle, cu.CUfunction_attribute(attribute), value),
               f"cuFuncSetAttribute({attribute}, {value})")

    def occupancy_max_blocks(self, function, block: int, shared: int, flags: int) -> int:
        return int(_check(cu.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
            function.backend.handle, block, shared, flags),
            "cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags"))

    def occupancy_available_smem(self, function, blocks: int, block: int) -> int:
        return int(_check(cu.cuOccupancyAvailableDynamicSMemPerBlock(function.backend.handle, blocks, block),
                          "cuOccupancyAvailableDynamicSMemPerBlock"))

    def ctx_get_limit(self, limit: int) -> int:
        return int(_check(cu.cuCtxGetLimit(cu.CUlimit(limit)), f"cuCtxGetLimit({limit})"))

    def tensor_map_encode_tiled(self, dtype, rank, address, dims, strides, box, element_strides,
                                interleave, swizzle, l2, fill) -> bytes:
        m = _check(cu.cuTensorMapEncodeTiled(
            cu.CUtensorMapDataType(dtype), cu.cuuint32_t(rank), address, _u64s(dims), _u64s(strides), _u32s(box),
            _u32s(element_strides), cu.CUtensorMapInterleave(interleave), cu.CUtensorMapSwizzle(swizzle),
            cu.CUtensorMapL2promotion(l2), cu.CUtensorMapFloatOOBfill(fill)), "cuTensorMapEncodeTiled")
        return struct.pack("<16Q", *(int(q) for q in m.opaque))

    def occupancy_max_clusters(self, function, gx, gy, gz, bx, by, bz, shared, cx, cy, cz) -> int:
        config = cu.CUlaunchConfig()
        config.gridDimX, config.gridDimY, config.gridDimZ = gx, gy, gz
        config.blockDimX, config.blockDimY, config.blockDimZ = bx, by, bz
        config.sharedMemBytes = shared
        if cx:
            attr = cu.CUlaunchAttribute()
            attr.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
            attr.value.clusterDim.x, attr.value.clusterDim.y, attr.value.clusterDim.z = cx, cy, cz
            config.attrs = [attr]
            config.numAttrs = 1
        return int(_check(cu.cuOccupancyMaxActiveClusters(function.backend.handle, config),
                          "cuOccupancyMaxActiveClusters"))

    def tensor_map_encode_im2col(self, dtype, rank, address, dims, strides, lower, upper, channels, pixels,
                                 element_strides, interleave, swizzle, l2, fill) -> bytes:
        m = _check(cu.cuTensorMapEncodeIm2col(
            cu.CUtensorMapDataType(dtype), cu.cuuint32_t(rank), address, _u64s(dims), _u64s(strides), list(lower),
            list(upper), cu.cuuint32_t(channels), cu.cuuint32_t(pixels), _u32s(element_strides),
            cu.CUtensorMapInterleave(interleave),
            cu.CUtensorMapSwizzle(swizzle), cu.CUtensorMapL2promotion(l2), cu.CUtensorMapFloatOOBfill(fill)),
            "cuTensorMapEncodeIm2col")
        return struct.pack("<16Q", *(int(q) for q in m.opaque))
