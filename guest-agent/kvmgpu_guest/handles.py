"""The driver API's handle types, with cuda-python's behaviour (int(h), h.getPtr())."""

from __future__ import annotations

import ctypes

_U64 = 1 << 64


def handle(value) -> int:
    """A handle or pointer argument (a handle object, an int, None) as the u64 C takes; ValueError
    for one that is no u64."""
    v = value if type(value) is int else 0 if value is None else int(value)
    if not 0 <= v < _U64:
        raise ValueError(f"{v} is not a handle (a 64-bit unsigned value)")
    return v


class Handle:
    """An opaque handle with cuda-python's behaviour: int(h), h.getPtr() (the address of its value)."""

    __slots__ = ("_v",)
    _ctype: type[ctypes.c_uint64 | ctypes.c_int] = ctypes.c_uint64  # (CUdevice's is a c_int)

    def __init__(self, init_value=0):
        self._v = self._ctype(int(init_value) if init_value else 0)

    def __int__(self):
        return self._v.value

    def getPtr(self):
        return ctypes.addressof(self._v)

    def __eq__(self, other):
        return type(other) is type(self) and other._v.value == self._v.value

    def __hash__(self):
        return hash(self._v.value)

    def __repr__(self):
        return f"<{type(self).__name__} 0x{self._v.value:x}>"


class CUdeviceptr(Handle):
    __slots__ = ()

    def __repr__(self):
        return f"<CUdeviceptr {self._v.value}>"


class CUdevice(Handle):
    __slots__ = ()
    _ctype = ctypes.c_int

    def __repr__(self):
        return f"<CUdevice {self._v.value}>"


class CUcontext(Handle):
    __slots__ = ()


class CUmodule(Handle):
    __slots__ = ()


class CUfunction(Handle):
    __slots__ = ()


class CUstream(Handle):
    __slots__ = ()


class CUevent(Handle):
    __slots__ = ()


class CUuuid:
    __slots__ = ("bytes",)

    def __init__(self, data: bytes = b"\0" * 16):
        self.bytes = bytes(data)

    def getPtr(self):
        raise NotImplementedError("kvmgpu's CUuuid has no C storage")

    def __repr__(self):
        return f"<CUuuid {self.bytes.hex()}>"
