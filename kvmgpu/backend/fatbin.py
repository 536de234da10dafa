"""What a fatbin holds: the images nvcc put in it (PTX text, cubins), each with its target.

The sim backend runs PTX only, so it takes the PTX a fatbin carries (`ptx_text`); the cuda backend
hands fatbins to the driver whole and reads none of this. A fatbin is a guest's bytes: every size
in it is checked against the image before it is used, a compressed entry is inflated only when it
is the one used, only up to the size its header declares (at most MAX_ENTRY_BYTES), and anything
malformed is CUDA_ERROR_INVALID_IMAGE with what was wrong.

Layout (as public notes on the format, ZLUDA's among them, describe it; all little-endian):
  header  magic u32 0xBA55ED50 | version u16 | header size u16 | entries' size u64
  entry   kind u16 (1 PTX, 2 ELF) | version u16 | header size u32 | payload size u64 |
          ... | at 28: sm u32 | at 40: flags u64 | at 56: uncompressed size u64 | payload
          flags: 0x2000 LZ4-compressed, 0x8000 zstd-compressed (CUDA 13 compresses by default)
Compressed entries are inflated with the system's libzstd / liblz4 (ctypes) where they are
installed; without them the error names the library and the nvcc flag that avoids compression
(`-Xfatbin -compress-all=false`, or `--no-compress`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

from kvmgpu_wire.cudefs import CUresult

from .base import CudaError

MAGIC = 0xBA55ED50
_HEADER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQ")  # kind, version, header size, payload size
KIND_PTX, KIND_ELF = 1, 2
FLAG_LZ4, FLAG_ZSTD = 0x2000, 0x8000
MAX_ENTRY_BYTES = 256 << 20  # an inflated entry larger than this is refused
MAX_ENTRIES = 4096


@dataclass(frozen=True)
class Entry:
    kind: int  # KIND_PTX, KIND_ELF (others are kept, never read)
    sm: int  # e.g. 80 for compute_80 / sm_80
    flags: int
    data: bytes  # as stored (compressed or not)
    inflated_size: int  # what the header says it inflates to

    @property
    def payload(self) -> bytes:
        """The entry's bytes, inflated where compressed (only the entry asked for is: a guest's
        fatbin of many large compressed entries costs one entry's memory, at most MAX_ENTRY_BYTES)."""
        if self.flags & (FLAG_ZSTD | FLAG_LZ4) and self.kind in (KIND_PTX, KIND_ELF):
            return _inflate(self.data, self.inflated_size, self.flags)
        return self.data


def _invalid(detail: str) -> NoReturn:
    raise CudaError(CUresult.CUDA_ERROR_INVALID_IMAGE, f"fatbin: {detail}")


def is_fatbin(image) -> bool:
    return len(image) >= 4 and struct.unpack_from("<I", image)[0] == MAGIC


@lru_cache(maxsize=None)
def _library(name: str):
    path = ctypes.util.find_library(name)
    if path is None:
        return None
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


def _inflate(data: bytes, size: int, flags: int) -> bytes:
    if size <= 0 or size > MAX_ENTRY_BYTES:
        _invalid(f"a compressed entry declares {size} bytes inflated (at most {MAX_ENTRY_BYTES})")
    codec = "zstd" if flags & FLAG_ZSTD else "lz4"
    lib = _library(codec)
    if lib is None:
        raise CudaError(CUresult.CUDA_ERROR_NOT_SUPPORTED,
                        f"fatbin: the entry is {codec}-compressed and lib{codec} is not installed on the "
                        f"host; install it, or build with `nvcc -Xfatbin -compress-all=false`")
    out = ctypes.create_string_buffer(size)
    if codec == "zstd":
        lib.ZSTD_decompress.restype = ctypes.c_size_t
        lib.ZSTD_decompress.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = (ctypes.c_size_t,)
        n = lib.ZSTD_decompress(out, size, data, len(data))
        if lib.ZSTD_isError(n):
            _invalid("a zstd-compressed entry does not inflate")
    else:
        lib.LZ4_decompress_safe.restype = ctypes.c_int
        lib.LZ4_decompress_safe.argtypes = (ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
        n = lib.LZ4_decompress_safe(data, out, len(data), size)
        if n < 0:
            _invalid("an lz4-compressed entry does not inflate")
    return out.raw[:n]


def entries(image) -> list[Entry]:
    """The entries of the fatbin at the start of `image`, not inflated (CudaError when it is
    malformed)."""
    image = bytes(image)
    if len(image) < _HEADER.size or not is_fatbin(image):
        _invalid("no fatbin header (magic 0xBA55ED50)")
    _, _, header_size, files_size = _HEADER.unpack_from(image)
    if header_size < _HEADER.size or header_size + files_size > len(image):
        _invalid(f"header and entries ({header_size} + {files_size} bytes) run past the image's {len(image)}")
    found: list[Entry] = []
    pos, end = header_size, header_size + files_size
    while pos < end:
        if end - pos < 64 or len(found) >= MAX_ENTRIES:
            _invalid(f"a truncated entry at offset {pos}" if end - pos < 64 else "too many entries")
        kind, _, entry_header, payload_size = _ENTRY.unpack_from(image, pos)
        if entry_header < 64 or entry_header > end - pos or payload_size > end - pos - entry_header:
            _invalid(f"the entry at offset {pos} runs past the fatbin")
        (sm,) = struct.unpack_from("<I", image, pos + 28)
        (flags,) = struct.unpack_from("<Q", image, pos + 40)
        (inflated,) = struct.unpack_from("<Q", image, pos + 56)
        data = image[pos + entry_header: pos + entry_header + payload_size]
        if flags & (FLAG_ZSTD | FLAG_LZ4):
            (stored,) = struct.unpack_from("<I", image, pos + 16)  # the compressed bytes, unpadded
            data = data[:min(stored, len(data))]
        found.append(Entry(kind, sm, flags, data, inflated))
        pos += entry_header + payload_size
    return found


def ptx_text(image) -> bytes:
    """The PTX of the newest target the fatbin carries, NUL and padding stripped; a CudaError
    naming what the fatbin has instead when it carries none."""
    found = entries(image)
    ptx = [e for e in found if e.kind == KIND_PTX]
    if not ptx:
        targets = ", ".join(sorted({f"sm_{e.sm}" for e in found if e.kind == KIND_ELF})) or "nothing"
        raise CudaError(CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU,
                        f"the fatbin carries no PTX (only {targets}): the sim backend runs PTX; build with "
                        f"`-gencode arch=compute_80,code=compute_80` (or any code=compute_XX)")
    return max(ptx, key=lambda e: e.sm).payload.rstrip(b"\0")
