"""The CUDA driver API as cuda-python spells it (`cuda.bindings.driver`), on the guest's libcuda.so.1.

A thin layer: each function converts cuda-python's arguments (handles, buffers, kernel parameters
in every form cuLaunchKernel takes: hostargs.py) to C, calls the library the guest package ships
(kvmgpu_guest/lib/libcuda.so.1, the one `kvmgpu-guest run` puts first on the loader's path), and
returns cuda-python's tuple: `(CUresult,)` or `(CUresult, value, ...)`. Everything else, the
channel, batching, the mailbox, the window and its copier, contexts, is the library's (docs/guest.md):
there is one guest client. The library reads its settings (KVMGPU_SOCKET, KVMGPU_SHM, ...) at cuInit.

A function kvmgpu does not forward raises AttributeError naming it.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, byref, c_char_p, c_float, c_int, c_size_t, c_uint, c_uint64, c_void_p

from kvmgpu_wire.cudefs import (  # noqa: F401
    CU_LAUNCH_PARAM_BUFFER_POINTER,
    CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT,
    CU_LAUNCH_PARAM_BUFFER_SIZE,
    CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT,
    CU_LAUNCH_PARAM_END,
    CU_LAUNCH_PARAM_END_AS_INT,
    CUctx_flags,
    CUdevice_attribute,
    CUevent_flags,
    CUjit_option,
    CUresult,
    CUstream_flags,
)

from .handles import (  # noqa: F401
    CUcontext,
    CUdevice,
    CUdeviceptr,
    CUevent,
    CUfunction,
    CUmodule,
    CUstream,
    CUuuid,
    handle as _handle,
)
from .hostargs import extra_array as _extra_array, host_address as _host_address, params_array as _params_array

LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib", "libcuda.so.1")


def _load() -> ctypes.CDLL:
    try:
        return ctypes.CDLL(LIBRARY)
    except OSError as e:
        raise ImportError(f"kvmgpu_guest.driver needs the guest's libcuda.so.1 ({e}): reinstall the guest "
                          "package where a C compiler exists (pip install kvmgpu-guest), or `make libcuda` "
                          "in a checkout") from None


_lib = _load()
_u64 = c_uint64
_P = POINTER


def _fn(name: str, *argtypes):
    f = getattr(_lib, name)
    f.argtypes = list(argtypes)
    f.restype = c_int
    return f


# The C functions (the exported symbol of each: cuda.h's #define cuX cuX_v2).
_c = {name: _fn(symbol, *args) for name, symbol, args in (
    ("init", "cuInit", (c_uint,)),
    ("version", "cuDriverGetVersion", (_P(c_int),)),
    ("count", "cuDeviceGetCount", (_P(c_int),)),
    ("device", "cuDeviceGet", (_P(c_int), c_int)),
    ("name", "cuDeviceGetName", (c_char_p, c_int, c_int)),
    ("total", "cuDeviceTotalMem_v2", (_P(c_size_t), c_int)),
    ("attribute", "cuDeviceGetAttribute", (_P(c_int), c_int, c_int)),
    ("cc", "cuDeviceComputeCapability", (_P(c_int), _P(c_int), c_int)),
    ("uuid", "cuDeviceGetUuid", (c_char_p, c_int)),
    ("bus_id", "cuDeviceGetPCIBusId", (c_char_p, c_int, c_int)),
    ("ctx_create", "cuCtxCreate_v2", (_P(_u64), c_uint, c_int)),
    ("ctx_destroy", "cuCtxDestroy_v2", (_u64,)),
    ("ctx_set", "cuCtxSetCurrent", (_u64,)),
    ("ctx_get", "cuCtxGetCurrent", (_P(_u64),)),
    ("ctx_push", "cuCtxPushCurrent_v2", (_u64,)),
    ("ctx_pop", "cuCtxPopCurrent_v2", (_P(_u64),)),
    ("ctx_device", "cuCtxGetDevice", (_P(c_int),)),
    ("ctx_flags", "cuCtxGetFlags", (_P(c_uint),)),
    ("ctx_sync", "cuCtxSynchronize", ()),
    ("ctx_limit", "cuCtxGetLimit", (_P(c_size_t), c_int)),
    ("primary_retain", "cuDevicePrimaryCtxRetain", (_P(_u64), c_int)),
    ("primary_release", "cuDevicePrimaryCtxRelease_v2", (c_int,)),
    ("primary_state", "cuDevicePrimaryCtxGetState", (c_int, _P(c_uint), _P(c_int))),
    ("alloc", "cuMemAlloc_v2", (_P(_u64), c_size_t)),
    ("free", "cuMemFree_v2", (_u64,)),
    ("info", "cuMemGetInfo_v2", (_P(c_size_t), _P(c_size_t))),
    ("htod", "cuMemcpyHtoD_v2", (_u64, c_void_p, c_size_t)),
    ("htod_async", "cuMemcpyHtoDAsync_v2", (_u64, c_void_p, c_size_t, _u64)),
    ("dtoh", "cuMemcpyDtoH_v2", (c_void_p, _u64, c_size_t)),
    ("dtoh_async", "cuMemcpyDtoHAsync_v2", (c_void_p, _u64, c_size_t, _u64)),
    ("dtod", "cuMemcpyDtoD_v2", (_u64, _u64, c_size_t)),
    ("dtod_async", "cuMemcpyDtoDAsync_v2", (_u64, _u64, c_size_t, _u64)),
    ("d8", "cuMemsetD8_v2", (_u64, ctypes.c_ubyte, c_size_t)),
    ("d16", "cuMemsetD16_v2", (_u64, ctypes.c_ushort, c_size_t)),
    ("d32", "cuMemsetD32_v2", (_u64, c_uint, c_size_t)),
    ("d8_async", "cuMemsetD8Async", (_u64, ctypes.c_ubyte, c_size_t, _u64)),
    ("d16_async", "cuMemsetD16Async", (_u64, ctypes.c_ushort, c_size_t, _u64)),
    ("d32_async", "cuMemsetD32Async", (_u64, c_uint, c_size_t, _u64)),
    ("load", "cuModuleLoadData", (_P(_u64), c_void_p)),
    ("unload", "cuModuleUnload", (_u64,)),
    ("function", "cuModuleGetFunction", (_P(_u64), _u64, c_char_p)),
    ("global", "cuModuleGetGlobal_v2", (_P(_u64), _P(c_size_t), _u64, c_char_p)),
    ("func_attr", "cuFuncGetAttribute", (_P(c_int), c_int, _u64)),
    ("func_set_attr", "cuFuncSetAttribute", (_u64, c_int, c_int)),
    ("param_info", "cuFuncGetParamInfo", (_u64, c_size_t, _P(c_size_t), _P(c_size_t))),
    ("occupancy", "cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags", (_P(c_int), _u64, c_int, c_size_t, c_uint)),
    ("launch", "cuLaunchKernel", (_u64, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, _u64, c_void_p,
                                  c_void_p)),
    ("stream_create", "cuStreamCreate", (_P(_u64), c_uint)),
    ("stream_destroy", "cuStreamDestroy_v2", (_u64,)),
    ("stream_sync", "cuStreamSynchronize", (_u64,)),
    ("stream_query", "cuStreamQuery", (_u64,)),
    ("stream_priority", "cuStreamGetPriority", (_u64, _P(c_int))),
    ("event_create", "cuEventCreate", (_P(_u64), c_uint)),
    ("event_record", "cuEventRecord", (_u64, _u64)),
    ("event_sync", "cuEventSynchronize", (_u64,)),
    ("event_query", "cuEventQuery", (_u64,)),
    ("event_elapsed", "cuEventElapsedTime", (_P(c_float), _u64, _u64)),
    ("event_destroy", "cuEventDestroy_v2", (_u64,)),
    ("error_name", "cuGetErrorName", (c_int, _P(c_char_p))),
    ("error_string", "cuGetErrorString", (c_int, _P(c_char_p))),
)}

_R = {int(r): r for r in CUresult}
_OK = CUresult.CUDA_SUCCESS
_OK1 = (_OK,)
_BAD = (CUresult.CUDA_ERROR_INVALID_VALUE,)
_ARGS = (TypeError, ValueError, OverflowError, BufferError, ctypes.ArgumentError)  # not an argument C takes


def _result(status: int) -> CUresult:
    r = _R.get(status)
    return r if r is not None else CUresult.CUDA_ERROR_UNKNOWN


def _status(f, *args) -> tuple:
    """(CUresult,) of a C call that returns nothing else; a bad argument is INVALID_VALUE."""
    try:
        status = f(*args)
    except _ARGS:
        return _BAD
    return _OK1 if status == 0 else (_result(status),)


def _out(f, out, *args) -> tuple[CUresult, bool]:
    """A C call whose first argument is `out` (given by reference): (CUresult, whether it is good)."""
    try:
        status = f(byref(out), *args)
    except _ARGS:
        return CUresult.CUDA_ERROR_INVALID_VALUE, False
    return (_OK, True) if status == 0 else (_result(status), False)


def _value(f, ctype, *args, wrap=None) -> tuple:
    """(CUresult, value or None) of a C call with one output first."""
    out = ctype()
    status, ok = _out(f, out, *args)
    if not ok:
        return status, None
    return _OK, out.value if wrap is None else wrap(out.value or 0)


_NOT_A_HANDLE = object()  # what C is handed for a handle that is no u64: ctypes refuses it (INVALID_VALUE)


def _h(value):
    try:
        return _handle(value)
    except (TypeError, ValueError):
        return _NOT_A_HANDLE


_stream = _h  # (None: the null stream; CU_STREAM_LEGACY / PER_THREAD, 1 and 2, the library maps)


# --------------------------------------------------------------------------- init, driver, device

def cuInit(Flags=0):
    return _status(_c["init"], int(Flags))


def cuDriverGetVersion():
    return _value(_c["version"], c_int)  # (as the driver's, before cuInit too)


def cuDeviceGetCount():
    return _value(_c["count"], c_int)


def cuDeviceGet(ordinal):
    return _value(_c["device"], c_int, int(ordinal), wrap=CUdevice)


def _text(f, length, dev) -> tuple:
    """cuDeviceGetName / cuDeviceGetPCIBusId: cuda-python hands back the whole buffer, the
    NUL-terminated text then its fill."""
    length = int(length)
    buf = ctypes.create_string_buffer(max(length, 1))
    try:
        status = f(buf, length, _h(dev))
    except _ARGS:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    if status:
        return _result(status), None
    text = buf.value[: length - 1]
    return _OK, text + b"\0" + b" " * (length - len(text) - 1)


def cuDeviceGetName(length, dev):
    return _text(_c["name"], length, dev)


def cuDeviceGetPCIBusId(length, dev):
    return _text(_c["bus_id"], length, dev)


def cuDeviceTotalMem(dev):
    return _value(_c["total"], c_size_t, _h(dev))


def cuDeviceGetAttribute(attrib, dev):
    return _value(_c["attribute"], c_int, int(attrib), _h(dev))


def cuDeviceComputeCapability(dev):
    major, minor = c_int(), c_int()
    status, ok = _out(_c["cc"], major, byref(minor), _h(dev))
    return (_OK, major.value, minor.value) if ok else (status, None, None)


def cuDeviceGetUuid(dev):
    buf = ctypes.create_string_buffer(16)
    try:
        status = _c["uuid"](buf, _h(dev))
    except _ARGS:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    return (_OK, CUuuid(buf.raw[:16])) if status == 0 else (_result(status), None)


cuDeviceGetUuid_v2 = cuDeviceGetUuid


# ---------------------------------------------------------------------------------------- contexts

def cuCtxCreate(*args):
    """cuCtxCreate(flags, dev) (cuda-python 12) or cuCtxCreate(ctxCreateParams, flags, dev) (13)."""
    if len(args) == 2:
        flags, dev = args
    elif len(args) == 3:
        _params, flags, dev = args
    else:
        raise TypeError(f"cuCtxCreate takes 2 or 3 arguments, got {len(args)}")
    return _value(_c["ctx_create"], _u64, int(flags), _h(dev), wrap=CUcontext)


def cuCtxDestroy(ctx):
    return _status(_c["ctx_destroy"], _h(ctx))


def cuCtxSetCurrent(ctx):
    return _status(_c["ctx_set"], 0 if ctx is None else _h(ctx))


def cuCtxGetCurrent():
    return _value(_c["ctx_get"], _u64, wrap=CUcontext)


def cuCtxPushCurrent(ctx):
    return _status(_c["ctx_push"], _h(ctx))


def cuCtxPopCurrent():
    return _value(_c["ctx_pop"], _u64, wrap=CUcontext)


def cuCtxGetDevice():
    return _value(_c["ctx_device"], c_int, wrap=CUdevice)


def cuCtxGetFlags():
    return _value(_c["ctx_flags"], c_uint)


def cuCtxSynchronize():
    status = _c["ctx_sync"]()
    return _OK1 if status == 0 else (_result(status),)


def cuCtxGetLimit(limit):
    return _value(_c["ctx_limit"], c_size_t, int(limit))


def cuDevicePrimaryCtxRetain(dev):
    return _value(_c["primary_retain"], _u64, _h(dev), wrap=CUcontext)


def cuDevicePrimaryCtxRelease(dev):
    return _status(_c["primary_release"], _h(dev))


def cuDevicePrimaryCtxGetState(dev):
    flags, active = c_uint(), c_int()
    try:
        status = _c["primary_state"](_h(dev), byref(flags), byref(active))
    except _ARGS:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None, None
    return (_OK, flags.value, active.value) if status == 0 else (_result(status), None, None)


cuCtxCreate_v2, cuCtxDestroy_v2 = cuCtxCreate, cuCtxDestroy
cuCtxPushCurrent_v2, cuCtxPopCurrent_v2 = cuCtxPushCurrent, cuCtxPopCurrent
cuDevicePrimaryCtxRelease_v2 = cuDevicePrimaryCtxRelease


# ------------------------------------------------------------------------------------------ memory

def cuMemAlloc(bytesize):
    return _value(_c["alloc"], _u64, int(bytesize), wrap=CUdeviceptr)


def cuMemFree(dptr):
    return _status(_c["free"], _h(dptr))


def cuMemGetInfo():
    free, total = c_size_t(), c_size_t()
    status, ok = _out(_c["info"], free, byref(total))
    return (_OK, free.value, total.value) if ok else (status, None, None)


def _htod(f, dst, src, nbytes, *stream) -> tuple:
    """A copy from host memory: `src` a buffer (numpy, bytearray, ctypes, bytes) or an address."""
    try:
        n = int(nbytes)
        addr, keep = _host_address(src, n, False) if n else (0, None)
        status = f(_h(dst), addr, n, *stream)
    except _ARGS:
        return _BAD
    del keep
    return _OK1 if status == 0 else (_result(status),)


def _dtoh(f, dst, src, nbytes, *stream) -> tuple:
    """A copy into host memory (a writable buffer or an address)."""
    try:
        n = int(nbytes)
        addr, keep = _host_address(dst, n, True) if n else (0, None)
        status = f(addr, _h(src), n, *stream)
    except _ARGS:
        return _BAD
    del keep
    return _OK1 if status == 0 else (_result(status),)


def cuMemcpyHtoD(dstDevice, srcHost, ByteCount):
    return _htod(_c["htod"], dstDevice, srcHost, ByteCount)


def cuMemcpyHtoDAsync(dstDevice, srcHost, ByteCount, hStream):
    return _htod(_c["htod_async"], dstDevice, srcHost, ByteCount, _stream(hStream))


def cuMemcpyDtoH(dstHost, srcDevice, ByteCount):
    return _dtoh(_c["dtoh"], dstHost, srcDevice, ByteCount)


def cuMemcpyDtoHAsync(dstHost, srcDevice, ByteCount, hStream):
    return _dtoh(_c["dtoh_async"], dstHost, srcDevice, ByteCount, _stream(hStream))


def cuMemcpyDtoD(dstDevice, srcDevice, ByteCount):
    return _status(_c["dtod"], _h(dstDevice), _h(srcDevice), int(ByteCount))


def cuMemcpyDtoDAsync(dstDevice, srcDevice, ByteCount, hStream):
    return _status(_c["dtod_async"], _h(dstDevice), _h(srcDevice), int(ByteCount), _stream(hStream))


def cuMemsetD8(dstDevice, uc, N):
    return _status(_c["d8"], _h(dstDevice), int(uc) & 0xFF, int(N))


def cuMemsetD16(dstDevice, us, N):
    return _status(_c["d16"], _h(dstDevice), int(us) & 0xFFFF, int(N))


def cuMemsetD32(dstDevice, ui, N):
    return _status(_c["d32"], _h(dstDevice), int(ui) & 0xFFFFFFFF, int(N))


def cuMemsetD8Async(dstDevice, uc, N, hStream):
    return _status(_c["d8_async"], _h(dstDevice), int(uc) & 0xFF, int(N), _stream(hStream))


def cuMemsetD16Async(dstDevice, us, N, hStream):
    return _status(_c["d16_async"], _h(dstDevice), int(us) & 0xFFFF, int(N), _stream(hStream))


def cuMemsetD32Async(dstDevice, ui, N, hStream):
    return _status(_c["d32_async"], _h(dstDevice), int(ui) & 0xFFFFFFFF, int(N), _stream(hStream))


cuMemAlloc_v2, cuMemFree_v2, cuMemGetInfo_v2 = cuMemAlloc, cuMemFree, cuMemGetInfo
cuMemcpyHtoD_v2, cuMemcpyDtoH_v2, cuMemcpyDtoD_v2 = cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyDtoD
cuMemcpyHtoDAsync_v2, cuMemcpyDtoHAsync_v2 = cuMemcpyHtoDAsync, cuMemcpyDtoHAsync
cuMemcpyDtoDAsync_v2 = cuMemcpyDtoDAsync
cuMemsetD8_v2, cuMemsetD16_v2, cuMemsetD32_v2 = cuMemsetD8, cuMemsetD16, cuMemsetD32


# ----------------------------------------------------------------------------------------- modules

def _module_load(image):
    """A module image: bytes / a buffer, a str of PTX, or an address (the library reads a PTX's,
    cubin's or fatbin's size from it)."""
    if isinstance(image, str):
        image = image.encode()
    keep: object = image
    try:
        if isinstance(image, bytes):  # (a bytes object ends in a NUL, as PTX must)
            addr = ctypes.cast(c_char_p(image), c_void_p).value
        elif type(image) is int:
            addr = image
        else:
            try:
                keep = ctypes.create_string_buffer(bytes(memoryview(image).cast("B")))  # + the NUL
                addr = ctypes.addressof(keep)
            except TypeError:
                addr = image.__index__()
    except _ARGS + (AttributeError,):
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    result = _value(_c["load"], _u64, addr, wrap=CUmodule)
    del keep
    return result


def cuModuleLoadData(image):
    return _module_load(image)


def cuModuleLoadDataEx(image, numOptions=0, options=None, optionValues=None):
    # JIT options tune or report on the host's compilation; the host compiles with its own.
    return _module_load(image)


def cuModuleLoad(fname):
    path = fname.decode() if isinstance(fname, bytes) else str(fname)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return CUresult.CUDA_ERROR_FILE_NOT_FOUND, None
    return _module_load(data)


def cuModuleUnload(hmod):
    return _status(_c["unload"], _h(hmod))


def _name(name) -> bytes:
    return name.encode() if isinstance(name, str) else bytes(name)


def cuModuleGetFunction(hmod, name):
    return _value(_c["function"], _u64, _h(hmod), _name(name), wrap=CUfunction)


def cuModuleGetGlobal(hmod, name):
    dptr, size = _u64(), c_size_t()
    status, ok = _out(_c["global"], dptr, byref(size), _h(hmod), _name(name))
    return (_OK, CUdeviceptr(dptr.value), size.value) if ok else (status, None, None)


cuModuleGetGlobal_v2 = cuModuleGetGlobal


def cuFuncGetAttribute(attrib, hfunc):
    return _value(_c["func_attr"], c_int, int(attrib), _h(hfunc))


def cuFuncSetAttribute(hfunc, attrib, value):
    return _status(_c["func_set_attr"], _h(hfunc), int(attrib), int(value))


def cuFuncGetParamInfo(func, paramIndex):
    offset, size = c_size_t(), c_size_t()
    try:
        status = _c["param_info"](_h(func), int(paramIndex), byref(offset), byref(size))
    except _ARGS:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None, None
    return (_OK, offset.value, size.value) if status == 0 else (_result(status), None, None)


def cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(func, blockSize, dynamicSMemSize, flags):
    return _value(_c["occupancy"], c_int, _h(func), int(blockSize), int(dynamicSMemSize), int(flags))


def cuOccupancyMaxActiveBlocksPerMultiprocessor(func, blockSize, dynamicSMemSize):
    return cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(func, blockSize, dynamicSMemSize, 0)


# ----------------------------------------------------------------------------------------- launches

def _param_count(f: int) -> int:
    """How many parameters the kernel has (the library's table, asked once per kernel)."""
    n = _counts.get(f)
    if n is None:
        offset, size = c_size_t(), c_size_t()
        n = 0
        while _c["param_info"](f, n, byref(offset), byref(size)) == 0:
            n += 1
        _counts[f] = n
    return n


_counts: dict[int, int] = {}
_launch = _c["launch"]
_U64_END = 1 << 64


def cuLaunchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,
                   sharedMemBytes, hStream, kernelParams, extra=None):
    try:  # (the hot path: the common argument types taken without a call each)
        fn = f._v.value if type(f) is CUfunction else _h(f)
        stream = hStream if type(hStream) is int and 0 <= hStream < _U64_END else _stream(hStream)
        if type(kernelParams) is int and kernelParams:  # the native idiom, a void*[]'s address: as it is
            params, keep = kernelParams, None
        else:
            params, keep = _params_array(kernelParams, lambda: _param_count(fn))
        extras, keep_extra = _extra_array(extra) if params is None else (None, None)
        status = _launch(fn, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                         stream, params, extras)
    except _ARGS:
        return _BAD
    del keep, keep_extra
    return _OK1 if status == 0 else (_result(status),)


# ---------------------------------------------------------------------------------- streams, events

def cuStreamCreate(Flags=0):
    return _value(_c["stream_create"], _u64, int(Flags), wrap=CUstream)


def cuStreamDestroy(hStream):
    return _status(_c["stream_destroy"], _stream(hStream))


def cuStreamSynchronize(hStream):
    return _status(_c["stream_sync"], _stream(hStream))


def cuStreamQuery(hStream):
    return _status(_c["stream_query"], _stream(hStream))


def cuStreamGetPriority(hStream):
    priority = c_int()
    try:
        status = _c["stream_priority"](_stream(hStream), byref(priority))
    except _ARGS:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    return (_OK, priority.value) if status == 0 else (_result(status), None)


def cuEventCreate(Flags=0):
    return _value(_c["event_create"], _u64, int(Flags), wrap=CUevent)


def cuEventRecord(hEvent, hStream):
    return _status(_c["event_record"], _h(hEvent), _stream(hStream))


def cuEventSynchronize(hEvent):
    return _status(_c["event_sync"], _h(hEvent))


def cuEventQuery(hEvent):
    return _status(_c["event_query"], _h(hEvent))


def cuEventElapsedTime(hStart, hEnd):
    return _value(_c["event_elapsed"], c_float, _h(hStart), _h(hEnd))


def cuEventDestroy(hEvent):
    return _status(_c["event_destroy"], _h(hEvent))


cuStreamDestroy_v2, cuEventDestroy_v2, cuEventElapsedTime_v2 = cuStreamDestroy, cuEventDestroy, cuEventElapsedTime


# ------------------------------------------------------------------------------------------ errors

def _error_text(f, error) -> tuple:
    try:
        code = CUresult(int(error))
    except ValueError:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    text = c_char_p()
    status = f(int(code), byref(text))
    return (_OK, text.value) if status == 0 and text.value is not None else (_result(status or 1), None)


def cuGetErrorName(error):
    return _error_text(_c["error_name"], error)


def cuGetErrorString(error):
    return _error_text(_c["error_string"], error)


# ------------------------------------------------------------------------------ what is not forwarded

FORWARDED = sorted(n for n in dir() if n.startswith("cu") and callable(globals()[n]))


def __getattr__(name: str):
    if name.startswith(("cu", "CU")):
        raise AttributeError(
            f"kvmgpu does not forward {name} yet: the vGPU's driver API covers "
            f"{len(FORWARDED)} functions (kvmgpu_guest.driver.FORWARDED; see docs/guest.md)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
