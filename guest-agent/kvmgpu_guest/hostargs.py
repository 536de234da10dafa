"""A program's host-side arguments as bytes: host buffers (anything with the buffer protocol, or a
plain address, as cuda-python accepts) and kernel parameters in every form cuLaunchKernel takes:
a (values, types) tuple, the address of (or a buffer holding) a void*[], or `extra` with
CU_LAUNCH_PARAM_BUFFER_POINTER / _SIZE. Parameters are laid out by the host's parameter table."""

from __future__ import annotations

import ctypes
import struct

from kvmgpu_wire.cudefs import CU_LAUNCH_PARAM_BUFFER_POINTER, CU_LAUNCH_PARAM_BUFFER_SIZE, CU_LAUNCH_PARAM_END

from .handles import Function, Handle


def buffer_or_address(obj):
    """(memoryview, None) for an object with the buffer protocol, else (None, its address)."""
    if type(obj) is int:
        return None, obj
    try:
        return memoryview(obj), None
    except TypeError:
        if hasattr(obj, "__index__"):
            return None, obj.__index__()
        raise


def host_view(obj, nbytes: int) -> memoryview:
    """`nbytes` bytes of host memory: a buffer (numpy, bytearray, ctypes array) or an address."""
    view, addr = buffer_or_address(obj)
    if view is None:
        return memoryview((ctypes.c_char * nbytes).from_address(addr)).cast("B")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if len(view) < nbytes:
        raise ValueError(f"host buffer of {len(view)} bytes is shorter than {nbytes}")
    return view[:nbytes]


_FORMATS = {ctypes.c_bool: "?", ctypes.c_char: "c", ctypes.c_byte: "b", ctypes.c_ubyte: "B",
            ctypes.c_short: "h", ctypes.c_ushort: "H", ctypes.c_int: "i", ctypes.c_uint: "I",
            ctypes.c_long: "q" if ctypes.sizeof(ctypes.c_long) == 8 else "i",
            ctypes.c_ulong: "Q" if ctypes.sizeof(ctypes.c_ulong) == 8 else "I",
            ctypes.c_longlong: "q", ctypes.c_ulonglong: "Q", ctypes.c_size_t: "Q",
            ctypes.c_float: "f", ctypes.c_double: "d", ctypes.c_void_p: "Q", None: "Q"}


def _packer(info: Function, types: tuple):
    """One struct that lays out a (values, types) kernelParams tuple at the function's offsets,
    or False when a type needs the generic path (sizes differ, structures, wide chars)."""
    if len(types) != len(info.params):
        return False
    fmt, pos = "<", 0
    for (off, size), t in zip(info.params, types):
        code = _FORMATS.get(t)
        if code is None or struct.calcsize("<" + code) != size or off < pos:
            return False
        if off > pos:
            fmt += f"{off - pos}x"
        fmt += code
        pos = off + size
    return struct.Struct(fmt)


def _scalar(v):
    if type(v) is int or type(v) is float:
        return v
    value = getattr(v, "value", None)  # ctypes scalars
    if value is not None and not isinstance(v, Handle):
        return value
    return int(v)  # CUdeviceptr and other handles, enums


def _param_bytes(value, ctype, size: int) -> bytes:
    """The bytes of one (value, type) parameter, as cuda-python would place them."""
    if ctype is None:
        if isinstance(value, Handle):
            raw = struct.pack("<Q", int(value))
        elif isinstance(value, ctypes.Structure):
            raw = bytes(value)
        elif hasattr(value, "getPtr"):
            raw = ctypes.string_at(value.getPtr(), size)
        else:
            raw = struct.pack("<i", int(value))  # an enum
    elif ctype is ctypes.c_void_p:
        raw = struct.pack("<Q", value.value or 0 if isinstance(value, ctypes.c_void_p)
                          else int(value) if not hasattr(value, "getPtr") else value.getPtr())
    else:
        if not isinstance(value, ctype):
            value = ctype(value)
        raw = bytes(value)
    return raw[:size].ljust(size, b"\0")


def params_blob(info: Function, kernelParams, extra) -> bytes | None:
    """The kernel's parameter bytes, or None when the arguments do not match its parameters."""
    params = info.params
    if kernelParams is None or (type(kernelParams) is int and kernelParams == 0):
        if extra:
            return extra_blob(extra)
        return b"" if not params else None
    if isinstance(kernelParams, tuple) and len(kernelParams) == 2 and \
            isinstance(kernelParams[0], tuple) and isinstance(kernelParams[1], tuple):
        values, types = kernelParams
        st = info.packers.get(types)
        if st is None:
            st = info.packers[types] = _packer(info, types)
        if st and len(values) == len(params):
            try:
                return st.pack(*[_scalar(v) for v in values])
            except (struct.error, TypeError, ValueError):
                pass
        if len(values) != len(types) or len(values) != len(params):
            return None
        blob = bytearray(info.argsize)
        for (off, size), v, t in zip(params, values, types):
            blob[off: off + size] = _param_bytes(v, t, size)
        return bytes(blob)
    # an address of (or a buffer holding) a void*[] with one pointer per parameter
    if type(kernelParams) is int and info.packed:  # the common native idiom: one read, one join
        array = info.pointers.from_address(kernelParams)
        if len(array) == 1:
            p = array[0]
            return None if p is None else info.values[0].from_address(p).raw
        pointers: list = array[:]
        if None in pointers:
            return None
        return b"".join([v.from_address(p).raw for v, p in zip(info.values, pointers)])
    view, addr = buffer_or_address(kernelParams)
    if view is None:
        pointers = [a or 0 for a in (ctypes.c_void_p * len(params)).from_address(addr)]
    else:
        view = view.cast("B")
        if len(view) < 8 * len(params):
            return None
        pointers = list(struct.unpack_from(f"<{len(params)}Q", view))
    blob = bytearray(info.argsize)
    for (off, size), ptr in zip(params, pointers):
        if not ptr:
            return None
        blob[off: off + size] = ctypes.string_at(ptr, size)
    return bytes(blob)


def extra_blob(extra) -> bytes | None:
    """CU_LAUNCH_PARAM_BUFFER_POINTER / _SIZE / _END, as an address of void*[] or a sequence."""
    if isinstance(extra, (list, tuple)):
        items = [int(x) if x is not None else 0 for x in extra]
    else:
        base = int(extra)
        items, i = [], 0
        while True:
            v = ctypes.c_void_p.from_address(base + 8 * i).value or 0
            items.append(v)
            if v == CU_LAUNCH_PARAM_END or i > 16:
                break
            i += 1
            items.append(ctypes.c_void_p.from_address(base + 8 * i).value or 0)
            i += 1
    buf = size = None
    for i in range(0, len(items) - 1, 2):
        key, val = items[i], items[i + 1]
        if key == CU_LAUNCH_PARAM_END:
            break
        if key == CU_LAUNCH_PARAM_BUFFER_POINTER:
            buf = val
        elif key == CU_LAUNCH_PARAM_BUFFER_SIZE:
            size = ctypes.c_size_t.from_address(val).value if val else 0
    if buf is None or size is None:
        return None
    return ctypes.string_at(buf, size)
