"""The host's check of each argument kind (guest-agent/kvmgpu_wire/kinds.py), one function a kind.

The generated requests (kvmgpu/worker/requests.py) call these in the order the specification
declares the arguments; the hand-written handlers (launch, module load, staged copies) call the
same ones. A Handle's check is the session's own `Session.lookup`. Each returns what the handler
works with (a table's object, a region offset, a decoded name) or raises CudaError with the error
the kind documents.
"""

from __future__ import annotations

import struct

from kvmgpu_wire import spec
from kvmgpu_wire.cudefs import CUresult

from ..backend.base import CudaError
from .session import Range, Session

MAX_HANDLES = 65536  # per table (streams, events, modules, functions) per session
# ... but fewer graphs and executable graphs: each holds host memory in the driver (an executable
# graph device memory too) however small its handle
TABLE_LIMITS = {"graphs": 4096, "graph_execs": 4096}
INVALID_VALUE = CUresult.CUDA_ERROR_INVALID_VALUE


def invalid(detail: str):
    raise CudaError(INVALID_VALUE, detail)


def room(s: Session, table: str) -> None:
    """NewHandle: the session may hold one more handle in `table`."""
    limit = TABLE_LIMITS.get(table, MAX_HANDLES)
    if len(getattr(s, table)) >= limit:
        raise CudaError(CUresult.CUDA_ERROR_OUT_OF_MEMORY, f"more than {limit} {table} in one session")


def allocation(s: Session, ptr: int, name: str) -> Range | None:
    """Allocation: the range of the allocation starting at `ptr` (None for 0)."""
    if ptr == 0:
        return None
    r = s.ranges.get(ptr)
    if r is None or r.digest is not None:
        invalid(f"{name} 0x{ptr:x} is not the start of an allocation of this session")
    return r


def device_range(s: Session, ptr: int, nbytes: int, name: str) -> int:
    """DevicePtr: [ptr, ptr+nbytes) inside one of the session's ranges (nothing to check for 0)."""
    if nbytes:
        s.check_range(ptr, nbytes, name)
    return ptr


def rows(s: Session, ptr: int, pitch: int, width: int, height: int, name: str) -> int:
    """A 2D copy's side: `height` rows of `width` bytes, `pitch` bytes apart, all inside one of the
    session's ranges. Its extent, pitch*(height-1) + width, is computed exactly (Python's ints: a
    pitch*height that wraps a u64 in C is simply too long here)."""
    if width > pitch:
        invalid(f"{name}: rows of {width} bytes are wider than the pitch ({pitch})")
    if width and height:
        s.check_range(ptr, pitch * (height - 1) + width, name)
    return ptr


# Bits an element of each CUtensorMapDataType takes in memory (the packed 4- and 6-bit types: 16
# elements in 8, 16 and 16 bytes).
_TENSOR_BITS = (8, 16, 32, 32, 64, 64, 16, 32, 64, 16, 32, 32, 32, 4, 8, 8)


def tensor(s: Session, address: int, rank: int, dtype: int, blob: bytes) -> tuple:
    """TENSOR_MAP_ENCODE_TILED: the blob's (dims, strides, box, element strides), the first `rank`
    of each, once the tensor's bytes, ceil(dims[0]*bits/8) + sum((dims[i]-1) * strides[i-1]),
    lie inside one of the session's ranges (a map may be read by any kernel the VM launches)."""
    if len(blob) != spec.TENSOR_MAP_BYTES:
        invalid(f"the tensor map's blob is {len(blob)} bytes, not {spec.TENSOR_MAP_BYTES}")
    v = struct.unpack("<5Q4Q5I5I", blob)
    dims, strides, box, estrides = v[0:5][:rank], v[5:9][:rank - 1], v[9:14][:rank], v[14:19][:rank]
    _tensor_in(s, address, dtype, dims, strides)
    return dims, strides, box, estrides


def tensor_im2col(s: Session, address: int, rank: int, dtype: int, blob: bytes) -> tuple:
    """TENSOR_MAP_ENCODE_IM2COL: (dims, strides, lower, upper, element strides, channels, pixels),
    the corners rank - 2 long, once the tensor's bytes lie inside one of the session's ranges."""
    if len(blob) != spec.TENSOR_MAP_IM2COL_BYTES:
        invalid(f"the im2col tensor map's blob is {len(blob)} bytes, not {spec.TENSOR_MAP_IM2COL_BYTES}")
    v = struct.unpack("<5Q4Q3i3i5III", blob)
    dims, strides = v[0:5][:rank], v[5:9][:rank - 1]
    lower, upper, estrides = v[9:12][:rank - 2], v[12:15][:rank - 2], v[15:20][:rank]
    _tensor_in(s, address, dtype, dims, strides)
    return dims, strides, lower, upper, estrides, v[20], v[21]


def _tensor_in(s: Session, address: int, dtype: int, dims: tuple, strides: tuple) -> None:
    if not all(dims):
        invalid(f"tensor dims {dims}: each at least 1")
    extent = (dims[0] * _TENSOR_BITS[dtype] + 7) // 8 + sum((d - 1) * st for d, st in zip(dims[1:], strides))
    s.check_range(address, extent, "address")


def window(s: Session, offset: int, nbytes: int, name: str, align: int = 1) -> int:
    """WindowOffset: the region offset of [offset, offset+nbytes) of the session's window."""
    if offset % align:
        invalid(f"{name} offset {offset} is not {align}-aligned")
    if not nbytes:
        return 0
    return s.check_window(offset, nbytes)


def length(value: int, name: str, low: int = 0, high: int = 2**64 - 1, hint: str = "") -> int:
    if not low <= value <= high:
        invalid(f"{name} is {value}, must be {low}..{high}{': ' + hint if hint else ''}")
    return value


def flags(value: int, mask: int, name: str) -> int:
    if value & ~mask:
        invalid(f"{name} 0x{value:x} has bits outside 0x{mask:x}")
    return value


def value(v: int, high: int, name: str) -> int:
    if v > high:
        invalid(f"{name} {v} is over 0x{high:x}")
    return v


def symbol(blob: bytes) -> str:
    """Name: UTF-8, not empty, no NUL."""
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        invalid("the name is not UTF-8")
    if not text or "\0" in text:
        invalid("the name is empty or holds a NUL")
    return text


def digest(blob: bytes) -> bytes:
    """Digest: exactly a sha256."""
    if len(blob) != 32:
        invalid("the blob must be the image's 32-byte sha256")
    return blob
