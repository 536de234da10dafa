"""The driver API's handle types, with cuda-python's behaviour (int(h), h.getPtr()), and what the
guest knows of each kernel it looked up (`Function`: the host's handle and parameter table)."""

from __future__ import annotations

import bisect
import ctypes

FUNCTIONS: dict = {}  # host function handle -> Function, for CUfunction(int) made by a program


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
    """A kernel. Carries the parameter table the host read from the loaded function."""

    __slots__ = ("_info",)

    def __init__(self, init_value=0):
        super().__init__(init_value)
        self._info = FUNCTIONS.get(self._v.value)


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


class Function:
    """What the guest knows of a kernel: the host's handle and its parameter layout."""

    __slots__ = ("handle", "params", "argsize", "packers", "pointers", "sizes", "packed", "values")

    def __init__(self, handle: int, params: list[tuple[int, int]]):
        self.handle = handle
        self.params = params
        self.argsize = max((off + size for off, size in params), default=0)
        self.packers: dict = {}  # types tuple -> struct.Struct (or False: use the generic path)
        # a void*[] at an address, read in one go; `packed`: the parameters leave no gaps
        self.pointers = ctypes.c_void_p * len(params)
        self.sizes = [size for _, size in params]
        # one char array type per parameter: `values[i].from_address(p).raw` reads its bytes
        self.values = [ctypes.c_char * size for size in self.sizes]
        pos, packed = 0, True
        for off, size in params:
            packed = packed and off == pos
            pos = off + size
        self.packed = packed


class Allocations:
    """This process's live device allocations (base -> size), as the host gave them out.

    A free of anything that is not a base fails at once, as cuMemFree does natively; a synchronous
    host-to-device copy whose destination lies inside one allocation need not wait for the host's
    answer (see `Session.htod`). The host checks both again: this is for speed and native errors,
    not for safety."""

    def __init__(self):
        self._size: dict[int, int] = {}
        self._starts: list[int] = []  # sorted bases

    def add(self, base: int, size: int) -> None:
        if base not in self._size:
            bisect.insort(self._starts, base)
        self._size[base] = size

    def discard(self, base: int) -> None:
        if self._size.pop(base, None) is not None:
            del self._starts[bisect.bisect_left(self._starts, base)]

    def __contains__(self, base: int) -> bool:
        return base in self._size

    def covers(self, ptr: int, nbytes: int) -> bool:
        """[ptr, ptr + nbytes) lies inside one allocation."""
        i = bisect.bisect_right(self._starts, ptr) - 1
        if i < 0:
            return False
        base = self._starts[i]
        return ptr + nbytes <= base + self._size[base]

    def clear(self) -> None:
        self._size.clear()
        self._starts.clear()
