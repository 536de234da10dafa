"""A program's host-side arguments as C takes them: host buffers (anything with the buffer protocol,
or a plain address, as cuda-python accepts) as an address, and kernel parameters in every form
cuLaunchKernel takes (a (values, types) tuple, the address of or a buffer holding a void*[], or
`extra`) as a void*[]. Each function returns (what C takes, what must stay alive until the call
returns); a bad argument raises TypeError or ValueError."""

from __future__ import annotations

import ctypes
from typing import Callable

from .handles import Handle


def host_address(obj, nbytes: int, writable: bool) -> tuple[int, object]:
    """The address of `nbytes` bytes of host memory: a buffer (numpy, bytearray, ctypes array,
    bytes) or an address. A read-only buffer cannot be written (`writable`: a copy's destination)."""
    if type(obj) is int:
        return obj, None
    if isinstance(obj, bytes):
        if writable:
            raise ValueError("a copy cannot write into bytes (read-only)")
        if len(obj) < nbytes:
            raise ValueError(f"host buffer of {len(obj)} bytes is shorter than {nbytes}")
        return ctypes.cast(ctypes.c_char_p(obj), ctypes.c_void_p).value or 0, obj
    try:
        view = memoryview(obj)
    except TypeError:
        if hasattr(obj, "__index__"):
            return obj.__index__(), None
        raise
    if not view.c_contiguous:
        raise ValueError("host buffer is not contiguous")
    if view.nbytes < nbytes:
        raise ValueError(f"host buffer of {view.nbytes} bytes is shorter than {nbytes}")
    if view.readonly:
        if writable:
            raise ValueError("a copy cannot write into a read-only buffer")
        holder = (ctypes.c_char * view.nbytes).from_buffer_copy(view)
    else:
        holder = (ctypes.c_char * view.nbytes).from_buffer(view)
    return ctypes.addressof(holder), holder


def _param(value, ctype):
    """One (value, type) parameter as cuda-python places it: the ctypes object that holds it."""
    if ctype is None:
        if isinstance(value, Handle) or hasattr(value, "getPtr"):
            return ctypes.c_void_p.from_address(value.getPtr()), value  # (its storage: the handle's bytes)
        if isinstance(value, (ctypes._SimpleCData, ctypes.Structure, ctypes.Union, ctypes.Array)):
            return value, None
        return ctypes.c_int(int(value)), None  # an enum
    if ctype is ctypes.c_void_p:
        if isinstance(value, ctypes.c_void_p):
            return value, None
        return ctypes.c_void_p(value.getPtr() if hasattr(value, "getPtr") else int(value)), value
    return (value if isinstance(value, ctype) else ctype(value)), None


def params_array(kernelParams, count: Callable[[], int]) -> tuple[object, object]:
    """kernelParams as a void*[] for cuLaunchKernel (None: none given, then `extra` says them).
    `count()`: the kernel's number of parameters, which a (values, types) tuple must match."""
    if kernelParams is None or (type(kernelParams) is int and kernelParams == 0):
        return None, None
    if type(kernelParams) is int:
        return kernelParams, None
    if isinstance(kernelParams, tuple) and len(kernelParams) == 2 and \
            isinstance(kernelParams[0], tuple) and isinstance(kernelParams[1], tuple):
        values, types = kernelParams
        n = count()
        if len(values) != n or len(types) != n:
            raise ValueError(f"{len(values)} kernel arguments for {n} parameters")
        held = [_param(v, t) for v, t in zip(values, types)]
        return (ctypes.c_void_p * n)(*[ctypes.addressof(obj) for obj, _ in held]), held
    return host_address(kernelParams, 8 * count(), False)  # a buffer holding the void*[]


def extra_array(extra) -> tuple[object, object]:
    """`extra` (CU_LAUNCH_PARAM_BUFFER_POINTER / _SIZE / _END) as a void*[]: an address, or a
    sequence of values."""
    if extra is None or (type(extra) is int and extra == 0):
        return None, None
    if isinstance(extra, (list, tuple)):
        array = (ctypes.c_void_p * len(extra))(*[int(x) if x is not None else 0 for x in extra])
        return array, array
    return host_address(extra, 0, False)
