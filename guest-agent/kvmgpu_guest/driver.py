"""The CUDA driver API as cuda-python spells it (`cuda.bindings.driver`), forwarded to the vGPU.

Every function returns cuda-python's tuple: `(CUresult,)` or `(CUresult, value, ...)`. Calls that
return nothing the caller needs now (launches, async copies and memsets, event records, frees,
stream/event destroys, module unloads) are queued and sent in batches; their errors surface at
the next synchronising call (cuCtxSynchronize, cuStreamSynchronize, a synchronous copy, ...).

The VM has one context on the host; the contexts a program creates here are the guest's view of
it, kept in a table here so that handles, the current context and the primary context behave.
A function kvmgpu does not forward raises AttributeError naming it.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import struct
import sys
import threading

from kvmgpu_wire import spec
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
    error_text,
)
from kvmgpu_wire.protocol import Op, unpack_params

from .client import Session, SessionError
from .config import forget as forget_config
from .handles import (  # noqa: F401
    FUNCTIONS as _functions,
    Allocations as _Allocations,
    CUcontext,
    CUdevice,
    CUdeviceptr,
    CUevent,
    CUfunction,
    CUmodule,
    CUstream,
    CUuuid,
    Function as _Function,
)
from .hostargs import buffer_or_address as _buffer_or_address, host_view as _host_view, params_blob as _params_blob

# ------------------------------------------------------------------------------------------ state

_R = {int(r): r for r in CUresult}
_OK = CUresult.CUDA_SUCCESS
_OK1 = (_OK,)
_lock = threading.RLock()
_session: Session | None = None
# This process's live allocations: a bad free fails at once, as natively, and a synchronous copy
# into one of them is queued (see _htod). (The host checks again.)
_allocations = _Allocations()
_tls = threading.local()
_contexts: dict[int, dict] = {}  # guest context id -> {"device", "flags", "primary"}
_PRIMARY_ID = 0x0C0000
_next_ctx = [_PRIMARY_ID + 0x100]
_primary_refs = [0]


def _result(status: int):
    r = _R.get(status)
    return r if r is not None else CUresult.CUDA_ERROR_UNKNOWN


def _err(code: CUresult, n: int = 0):
    return (code,) + (None,) * n


def _stream(s) -> int:
    if s is None:
        return 0
    v = s if type(s) is int else int(s)
    return 0 if v in (1, 2) else v  # CU_STREAM_LEGACY / PER_THREAD: the VM's null stream


def _current():
    stack = getattr(_tls, "stack", None)
    return stack[-1] if stack else None


def _ready():
    """CUresult if no call can be made now (not initialised, lost, no current context), else None."""
    if _session is None:
        return CUresult.CUDA_ERROR_NOT_INITIALIZED
    if _session.closed:
        return CUresult.CUDA_ERROR_DEVICE_UNAVAILABLE
    stack = getattr(_tls, "stack", None)
    if not stack:
        return CUresult.CUDA_ERROR_INVALID_CONTEXT
    return None


def _lost(e: Exception):
    print(f"kvmgpu: {e}", file=sys.stderr)
    return CUresult.CUDA_ERROR_DEVICE_UNAVAILABLE


def _call(op, args=(), blob=b"", n=0, context=True):
    """A synchronous call: (CUresult, reply values or Nones). `context`: the call needs a current
    context (a device query does not)."""
    bad = _ready() if context else (CUresult.CUDA_ERROR_NOT_INITIALIZED if _session is None else
                                     CUresult.CUDA_ERROR_DEVICE_UNAVAILABLE if _session.closed else None)
    if bad is not None:
        return bad, None
    try:
        reply = _session.call(op, args, blob)
    except SessionError as e:
        return _lost(e), None
    except (struct.error, OverflowError, ValueError):
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    return _result(reply.status), reply


def _queue(op, args):
    bad = _ready()
    if bad is not None:
        return (bad,)
    try:
        _session.queue(op, args)
    except SessionError as e:
        return (_lost(e),)
    except (struct.error, OverflowError, ValueError, TypeError):
        return (CUresult.CUDA_ERROR_INVALID_VALUE,)
    return _OK1


# --------------------------------------------------------------------------- init, driver, device

def cuInit(Flags=0):
    global _session
    with _lock:
        if _session is not None and not _session.closed:
            return _OK1
        try:
            _session = Session.connect()
        except Exception as e:  # ChannelError, SessionError, RegionError, protocol errors
            print(f"kvmgpu: {e}", file=sys.stderr)
            return (CUresult.CUDA_ERROR_NO_DEVICE,)
        atexit.register(_shutdown)
        return _OK1


def _shutdown():
    global _session
    s = _session
    if s is not None:
        _session = None
        s.close("process exit")


def cuDriverGetVersion():
    if _session is None:
        return _err(CUresult.CUDA_ERROR_NOT_INITIALIZED, 1)
    return _OK, int(_session.device.get("driver_version", 0))


def cuDeviceGetCount():
    if _session is None:
        return _err(CUresult.CUDA_ERROR_NOT_INITIALIZED, 1)
    return _OK, 1


def cuDeviceGet(ordinal):
    if _session is None:
        return _err(CUresult.CUDA_ERROR_NOT_INITIALIZED, 1)
    if int(ordinal) != 0:
        return _err(CUresult.CUDA_ERROR_INVALID_DEVICE, 1)
    return _OK, CUdevice(0)


def _check_dev(dev):
    if _session is None:
        return CUresult.CUDA_ERROR_NOT_INITIALIZED
    if int(dev) != 0:
        return CUresult.CUDA_ERROR_INVALID_DEVICE
    return None


def cuDeviceGetName(length, dev):
    bad = _check_dev(dev)
    if bad is not None:
        return bad, None
    length = int(length)
    if length <= 0:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    name = str(_session.device.get("name", "kvmgpu vGPU")).encode()[: length - 1]
    # cuda-python hands back the whole buffer: the NUL-terminated name, then its fill
    return _OK, name + b"\0" + b" " * (length - len(name) - 1)


def cuDeviceTotalMem(dev):
    bad = _check_dev(dev)
    if bad is not None:
        return bad, None
    return _OK, int(_session.device.get("total_memory", 0))


_CC_MAJOR = int(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
_CC_MINOR = int(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)


def cuDeviceGetAttribute(attrib, dev):
    bad = _check_dev(dev)
    if bad is not None:
        return bad, None
    attr = int(attrib)
    if attr not in CUdevice_attribute._value2member_map_:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    dev_info = _session.device
    value = (dev_info.get("attributes") or {}).get(str(attr))
    if value is None:
        cc = dev_info.get("compute_capability") or [0, 0]
        value = cc[0] if attr == _CC_MAJOR else cc[1] if attr == _CC_MINOR else 0
    return _OK, int(value)


def cuDeviceComputeCapability(dev):
    bad = _check_dev(dev)
    if bad is not None:
        return bad, None, None
    cc = _session.device.get("compute_capability") or [0, 0]
    return _OK, int(cc[0]), int(cc[1])


def cuDeviceGetUuid(dev):
    bad = _check_dev(dev)
    if bad is not None:
        return bad, None
    text = str(_session.device.get("uuid", ""))
    digits = "".join(c for c in text.lower() if c in "0123456789abcdef")
    if text.upper().startswith("GPU-"):
        digits = "".join(c for c in text[4:].lower() if c in "0123456789abcdef")
    raw = bytes.fromhex(digits[:32].ljust(32, "0"))
    return _OK, CUuuid(raw)


cuDeviceGetUuid_v2 = cuDeviceGetUuid


def cuDeviceGetPCIBusId(length, dev):
    bad = _check_dev(dev)
    if bad is not None:
        return bad, None
    length = int(length)
    if length <= 0:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    status, reply = _call(Op.DEVICE_GET_PCI_BUS_ID, context=False)
    if status:
        return status, None
    bus_id = reply.values[0].split(b"\0", 1)[0][: length - 1]
    return _OK, bus_id + b"\0" + b" " * (length - len(bus_id) - 1)  # (the whole buffer, as cuDeviceGetName)


# ---------------------------------------------------------------------------------------- contexts

def _push(ctx_id: int) -> None:
    stack = getattr(_tls, "stack", None)
    if stack is None:
        stack = _tls.stack = []
    stack.append(ctx_id)


def _new_context(flags: int, dev) -> tuple:
    bad = _check_dev(dev)
    if bad is not None:
        return bad, None
    with _lock:
        ctx_id = _next_ctx[0]
        _next_ctx[0] += 0x100
        _contexts[ctx_id] = {"device": 0, "flags": int(flags), "primary": False}
    _push(ctx_id)
    return _OK, CUcontext(ctx_id)


def cuCtxCreate(*args):
    """cuCtxCreate(flags, dev) (cuda-python 12) or cuCtxCreate(ctxCreateParams, flags, dev) (13)."""
    if len(args) == 2:
        flags, dev = args
    elif len(args) == 3:
        _params, flags, dev = args
    else:
        raise TypeError(f"cuCtxCreate takes 2 or 3 arguments, got {len(args)}")
    return _new_context(int(flags), dev)


cuCtxCreate_v2 = cuCtxCreate


def cuCtxDestroy(ctx):
    ctx_id = int(ctx)
    with _lock:
        if ctx_id not in _contexts or _contexts[ctx_id]["primary"]:
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        del _contexts[ctx_id]
    stack = getattr(_tls, "stack", None)
    if stack:
        stack[:] = [c for c in stack if c != ctx_id]
    return _OK1


cuCtxDestroy_v2 = cuCtxDestroy


def cuCtxSetCurrent(ctx):
    ctx_id = int(ctx) if ctx is not None else 0
    stack = getattr(_tls, "stack", None)
    if stack is None:
        stack = _tls.stack = []
    if ctx_id == 0:
        if stack:
            stack.pop()
        return _OK1
    if ctx_id not in _contexts:
        return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
    if stack:
        stack[-1] = ctx_id
    else:
        stack.append(ctx_id)
    return _OK1


def cuCtxGetCurrent():
    if _session is None:
        return _err(CUresult.CUDA_ERROR_NOT_INITIALIZED, 1)
    return _OK, CUcontext(_current() or 0)


def cuCtxPushCurrent(ctx):
    ctx_id = int(ctx)
    if ctx_id not in _contexts:
        return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
    _push(ctx_id)
    return _OK1


cuCtxPushCurrent_v2 = cuCtxPushCurrent


def cuCtxPopCurrent():
    stack = getattr(_tls, "stack", None)
    if not stack:
        return CUresult.CUDA_ERROR_INVALID_CONTEXT, None
    return _OK, CUcontext(stack.pop())


cuCtxPopCurrent_v2 = cuCtxPopCurrent


def cuCtxGetDevice():
    if _current() is None:
        return CUresult.CUDA_ERROR_INVALID_CONTEXT, None
    return _OK, CUdevice(0)


def cuCtxGetFlags():
    status, reply = _call(Op.CTX_GET_FLAGS)
    if status:
        return status, None
    return _OK, reply.values[0]


def cuCtxSynchronize():
    return _synchronize(_CTX_SYNCHRONIZE, 0)


def _synchronize(op, stream) -> tuple:
    """cuCtxSynchronize / cuStreamSynchronize: `_call` for the two, through the session's lean
    path (`Session.synchronize`)."""
    bad = _ready()
    if bad is not None:
        return (bad,)
    assert _session is not None  # _ready() checked it
    try:
        status = _session.synchronize(op, stream)
    except SessionError as e:
        return (_lost(e),)
    except (struct.error, OverflowError):
        return (CUresult.CUDA_ERROR_INVALID_VALUE,)
    return (_result(status),)


_CTX_SYNCHRONIZE, _STREAM_SYNCHRONIZE = Op.CTX_SYNCHRONIZE, Op.STREAM_SYNCHRONIZE


def cuDevicePrimaryCtxRetain(dev):
    bad = _check_dev(dev)
    if bad is not None:
        return bad, None
    with _lock:
        _contexts.setdefault(_PRIMARY_ID, {"device": 0, "flags": 0, "primary": True})
        _primary_refs[0] += 1
    return _OK, CUcontext(_PRIMARY_ID)


def cuDevicePrimaryCtxRelease(dev):
    bad = _check_dev(dev)
    if bad is not None:
        return (bad,)
    with _lock:
        if _primary_refs[0] <= 0:
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        _primary_refs[0] -= 1
    return _OK1


cuDevicePrimaryCtxRelease_v2 = cuDevicePrimaryCtxRelease


def cuDevicePrimaryCtxGetState(dev):
    bad = _check_dev(dev)
    if bad is not None:
        return bad, None, None
    return _OK, 0, int(_primary_refs[0] > 0)


# ------------------------------------------------------------------------------------------ memory

def cuMemAlloc(bytesize):
    status, reply = _call(Op.MEM_ALLOC, (int(bytesize),))
    if status:
        return status, None
    _allocations.add(reply.values[0], int(bytesize))
    return _OK, CUdeviceptr(reply.values[0])


cuMemAlloc_v2 = cuMemAlloc


def cuMemFree(dptr):
    ptr = int(dptr)
    if ptr == 0:
        return _OK1
    if _session is not None and ptr not in _allocations:
        return (CUresult.CUDA_ERROR_INVALID_VALUE,)
    _allocations.discard(ptr)
    return _queue(Op.MEM_FREE, (ptr,))


cuMemFree_v2 = cuMemFree


def cuMemGetInfo():
    status, reply = _call(Op.MEM_GET_INFO)
    if status:
        return status, None, None
    return _OK, reply.values[0], reply.values[1]


cuMemGetInfo_v2 = cuMemGetInfo


def _htod(dst, src, nbytes, stream, sync: bool):
    bad = _ready()
    if bad is not None:
        return (bad,)
    assert _session is not None  # _ready() checked it
    n = int(nbytes)
    if n == 0:
        return _OK1
    try:
        view = _host_view(src, n)
        dst = int(dst)
        # A synchronous copy returns once the bytes are in the window, as a native copy from
        # pageable memory returns once they are staged, when the destination is known to be good:
        # the caller may reuse its buffer, and a later error surfaces at the next synchronising
        # call. Into anything else (a module's global, a bad pointer) it waits for the host.
        status = _session.htod(dst, view, stream, sync, wait=sync and not _allocations.covers(dst, n))
    except SessionError as e:
        return (_lost(e),)
    except (TypeError, ValueError, BufferError, struct.error, OverflowError):
        return (CUresult.CUDA_ERROR_INVALID_VALUE,)
    return (_result(status),)


def cuMemcpyHtoD(dstDevice, srcHost, ByteCount):
    return _htod(dstDevice, srcHost, ByteCount, 0, True)


def cuMemcpyHtoDAsync(dstDevice, srcHost, ByteCount, hStream):
    return _htod(dstDevice, srcHost, ByteCount, _stream(hStream), False)


def _dtoh(dst, src, nbytes, stream):
    bad = _ready()
    if bad is not None:
        return (bad,)
    n = int(nbytes)
    if n == 0:
        return _OK1
    try:
        view = _host_view(dst, n)
        if view.readonly:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        status = _session.dtoh(view, int(src), stream)
    except SessionError as e:
        return (_lost(e),)
    except (TypeError, ValueError, BufferError, struct.error, OverflowError):
        return (CUresult.CUDA_ERROR_INVALID_VALUE,)
    return (_result(status),)


def cuMemcpyDtoH(dstHost, srcDevice, ByteCount):
    return _dtoh(dstHost, srcDevice, ByteCount, 0)


def cuMemcpyDtoHAsync(dstHost, srcDevice, ByteCount, hStream):
    # Host memory in the guest is pageable, so (as in CUDA) the copy completes before it returns.
    return _dtoh(dstHost, srcDevice, ByteCount, _stream(hStream))


def cuMemcpyDtoD(dstDevice, srcDevice, ByteCount):
    status, _ = _call(Op.MEMCPY_DTOD, (int(dstDevice), int(srcDevice), int(ByteCount), 0))
    return (status,)


def cuMemcpyDtoDAsync(dstDevice, srcDevice, ByteCount, hStream):
    return _queue(Op.MEMCPY_DTOD, (int(dstDevice), int(srcDevice), int(ByteCount), _stream(hStream)))


def cuMemsetD8(dstDevice, uc, N):
    status, _ = _call(Op.MEMSET_D8, (int(dstDevice), int(uc) & 0xFF, int(N), 0))
    return (status,)


def cuMemsetD32(dstDevice, ui, N):
    status, _ = _call(Op.MEMSET_D32, (int(dstDevice), int(ui) & 0xFFFFFFFF, int(N), 0))
    return (status,)


def cuMemsetD16(dstDevice, us, N):
    status, _ = _call(Op.MEMSET_D16, (int(dstDevice), int(us) & 0xFFFF, int(N), 0))
    return (status,)


def cuMemsetD16Async(dstDevice, us, N, hStream):
    return _queue(Op.MEMSET_D16, (int(dstDevice), int(us) & 0xFFFF, int(N), _stream(hStream)))


def cuMemsetD8Async(dstDevice, uc, N, hStream):
    return _queue(Op.MEMSET_D8, (int(dstDevice), int(uc) & 0xFF, int(N), _stream(hStream)))


def cuMemsetD32Async(dstDevice, ui, N, hStream):
    return _queue(Op.MEMSET_D32, (int(dstDevice), int(ui) & 0xFFFFFFFF, int(N), _stream(hStream)))


cuMemcpyHtoD_v2, cuMemcpyDtoH_v2, cuMemcpyDtoD_v2 = cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyDtoD
cuMemcpyHtoDAsync_v2, cuMemcpyDtoHAsync_v2 = cuMemcpyHtoDAsync, cuMemcpyDtoHAsync
cuMemcpyDtoDAsync_v2 = cuMemcpyDtoDAsync
cuMemsetD8_v2, cuMemsetD16_v2, cuMemsetD32_v2 = cuMemsetD8, cuMemsetD16, cuMemsetD32


# ----------------------------------------------------------------------------------------- modules

def _image_bytes(image) -> bytes:
    """A module image: bytes / a buffer, a str of PTX, or an address (PTX text, cubin, fatbin)."""
    if isinstance(image, str):
        return image.encode()
    view, addr = _buffer_or_address(image)
    if view is None:
        head = ctypes.string_at(addr, 16)
        if head[:4] == b"\x7fELF":  # cubin: the section header table ends the file
            shoff, = struct.unpack_from("<Q", ctypes.string_at(addr + 0x28, 8))
            shentsize, shnum = struct.unpack_from("<HH", ctypes.string_at(addr + 0x3A, 4))
            return ctypes.string_at(addr, shoff + shentsize * shnum)
        if struct.unpack_from("<I", head)[0] == 0xBA55ED50:  # fatbin: header size + fat size
            hsize, = struct.unpack_from("<H", head, 6)
            fsize, = struct.unpack_from("<Q", head, 8)
            return ctypes.string_at(addr, hsize + fsize)
        return ctypes.string_at(addr)  # NUL-terminated PTX
    return bytes(view.cast("B"))


def _module_load(image):
    bad = _ready()
    if bad is not None:
        return bad, None
    try:
        data = _image_bytes(image)
    except (TypeError, ValueError, OSError):
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    digest = hashlib.sha256(data).digest()
    s = _session
    try:
        with s.lock:
            reply = s.call(Op.MODULE_LOAD, (0, 0), digest)  # does the host have it already?
            if reply.status == CUresult.CUDA_ERROR_NOT_FOUND:
                if len(data) > s.window_size:
                    return CUresult.CUDA_ERROR_OUT_OF_MEMORY, None
                off = s.reserve(len(data))
                s.view[off: off + len(data)] = data
                reply = s.call(Op.MODULE_LOAD, (off, len(data)), digest)
                s.release(off)
    except SessionError as e:
        return _lost(e), None
    if reply.status:
        return _result(reply.status), None
    return _OK, CUmodule(reply.values[0])


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
    return _queue(Op.MODULE_UNLOAD, (int(hmod),))


def _name(name) -> bytes:
    return name.encode() if isinstance(name, str) else bytes(name)


def cuModuleGetFunction(hmod, name):
    status, reply = _call(Op.MODULE_GET_FUNCTION, (int(hmod),), _name(name))
    if status:
        return status, None
    handle, count = reply.values
    info = _Function(handle, unpack_params(reply.blob, count))
    _functions[handle] = info
    fn = CUfunction(handle)
    fn._info = info
    return _OK, fn


def cuFuncGetAttribute(attrib, hfunc):
    """FUNC_GET_ATTRIBUTES (all sixteen; libcuda keeps them, this imitation asks each time)."""
    attrib = int(attrib)
    if not 0 <= attrib < spec.FUNC_ATTRIBUTES:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    status, reply = _call(Op.FUNC_GET_ATTRIBUTES, (int(hfunc),))
    if status:
        return status, None
    return _OK, struct.unpack_from("<16i", reply.values[0])[attrib]


def cuFuncSetAttribute(hfunc, attrib, value):
    if int(value) < 0:
        return (CUresult.CUDA_ERROR_INVALID_VALUE,)
    status, _ = _call(Op.FUNC_SET_ATTRIBUTE, (int(hfunc), int(attrib), int(value)))
    return (status,)


def cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(func, blockSize, dynamicSMemSize, flags):
    status, reply = _call(Op.OCCUPANCY_MAX_BLOCKS, (int(func), int(blockSize), int(dynamicSMemSize), int(flags)))
    if status:
        return status, None
    return _OK, reply.values[0]


def cuOccupancyMaxActiveBlocksPerMultiprocessor(func, blockSize, dynamicSMemSize):
    return cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(func, blockSize, dynamicSMemSize, 0)


def cuCtxGetLimit(limit):
    if not 0 <= int(limit) < spec.CTX_LIMITS:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    status, reply = _call(Op.CTX_GET_LIMIT, (int(limit),))
    if status:
        return status, None
    return _OK, reply.values[0]


def cuModuleGetGlobal(hmod, name):
    status, reply = _call(Op.MODULE_GET_GLOBAL, (int(hmod),), _name(name))
    if status:
        return status, None, None
    return _OK, CUdeviceptr(reply.values[0]), reply.values[1]


cuModuleGetGlobal_v2 = cuModuleGetGlobal


def cuFuncGetParamInfo(func, paramIndex):
    info = _function_info(func)
    if info is None:
        return CUresult.CUDA_ERROR_INVALID_HANDLE, None, None
    i = int(paramIndex)
    if not 0 <= i < len(info.params):
        return CUresult.CUDA_ERROR_INVALID_VALUE, None, None
    return _OK, info.params[i][0], info.params[i][1]


# ----------------------------------------------------------------------------------------- launches

def _function_info(f):
    info = getattr(f, "_info", None)
    if info is None:
        info = _functions.get(int(f)) if f is not None else None
    return info


def cuLaunchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,
                   sharedMemBytes, hStream, kernelParams, extra=None):
    s = _session
    if s is None or s.closed or not getattr(_tls, "stack", None):
        return (_ready(),)
    info = getattr(f, "_info", None) or _function_info(f)
    if info is None:
        return (CUresult.CUDA_ERROR_INVALID_HANDLE,)
    try:
        blob = _params_blob(info, kernelParams, extra)
        if blob is None:
            # the arguments do not match the kernel's parameters: like any launch error, it is
            # reported by the next synchronising call
            s.defer(CUresult.CUDA_ERROR_INVALID_VALUE)
            return _OK1
        s.queue_launch(info.handle, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,
                       sharedMemBytes, hStream if type(hStream) is int else _stream(hStream), blob)
    except SessionError as e:
        return (_lost(e),)
    except (struct.error, OverflowError, TypeError, ValueError):
        return (CUresult.CUDA_ERROR_INVALID_VALUE,)
    return _OK1


# ---------------------------------------------------------------------------------- streams, events

def cuStreamCreate(Flags=0):
    status, reply = _call(Op.STREAM_CREATE, (int(Flags),))
    if status:
        return status, None
    return _OK, CUstream(reply.values[0])


def cuStreamDestroy(hStream):
    return _queue(Op.STREAM_DESTROY, (_stream(hStream),))


cuStreamDestroy_v2 = cuStreamDestroy


def cuStreamSynchronize(hStream):
    return _synchronize(_STREAM_SYNCHRONIZE, _stream(hStream))


def cuStreamQuery(hStream):
    status, _ = _call(Op.STREAM_QUERY, (_stream(hStream),))
    return (status,)


def cuStreamGetPriority(hStream):
    status, reply = _call(Op.STREAM_GET_PRIORITY, (_stream(hStream),))
    if status:
        return status, None
    return _OK, reply.values[0]


def cuEventCreate(Flags=0):
    status, reply = _call(Op.EVENT_CREATE, (int(Flags),))
    if status:
        return status, None
    return _OK, CUevent(reply.values[0])


def cuEventRecord(hEvent, hStream):
    return _queue(Op.EVENT_RECORD, (int(hEvent), _stream(hStream)))


def cuEventSynchronize(hEvent):
    status, _ = _call(Op.EVENT_SYNCHRONIZE, (int(hEvent),))
    return (status,)


def cuEventQuery(hEvent):
    status, _ = _call(Op.EVENT_QUERY, (int(hEvent),))
    return (status,)


def cuEventElapsedTime(hStart, hEnd):
    status, reply = _call(Op.EVENT_ELAPSED, (int(hStart), int(hEnd)))
    if status:
        return status, None
    return _OK, reply.values[0]


cuEventElapsedTime_v2 = cuEventElapsedTime


def cuEventDestroy(hEvent):
    return _queue(Op.EVENT_DESTROY, (int(hEvent),))


cuEventDestroy_v2 = cuEventDestroy


# ------------------------------------------------------------------------------------------ errors

def cuGetErrorName(error):
    try:
        return _OK, CUresult(int(error)).name.encode()
    except ValueError:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None


def cuGetErrorString(error):
    try:
        CUresult(int(error))
    except ValueError:
        return CUresult.CUDA_ERROR_INVALID_VALUE, None
    return _OK, error_text(int(error)).encode()


# ------------------------------------------------------------------------------ what is not forwarded

FORWARDED = sorted(n for n in dir() if n.startswith("cu") and callable(globals()[n]))


def __getattr__(name: str):
    if name.startswith(("cu", "CU")):
        raise AttributeError(
            f"kvmgpu does not forward {name} yet: the vGPU's driver API covers "
            f"{len(FORWARDED)} functions (kvmgpu_guest.driver.FORWARDED; see docs/guest.md)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _session_for_tools() -> Session | None:
    """The live session (for `kvmgpu-guest info` and the benchmark), after cuInit."""
    return _session


def _reset_for_tests() -> None:
    """Close the session and forget the guest's tables and configuration (tests run many programs
    in one process, each with its own environment)."""
    global _session
    if _session is not None:
        _session.close("reset")
    _session = None
    forget_config()
    _functions.clear()
    _allocations.clear()
    _contexts.clear()
    _primary_refs[0] = 0
    _tls.__dict__.clear()

