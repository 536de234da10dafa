"""What a module image declares for its `.global` variables, read before (or beside) the driver.

PTX text is read by `ptx.py`; a cubin is an ELF file whose `.nv.global` section (zeroed globals)
and `.nv.global.init` section (initialised ones) hold them, so their sizes are read from its section
headers. A fatbin holds several images (often compressed), one of which the driver picks: none is
read here, and the cuda backend measures what its load took instead (CudaBackend.module_memory).
Every offset and size is the guest's: each is checked against the image before it is used, and a
malformed image declares 0 here (the driver refuses it, or the measure counts it).
"""

from __future__ import annotations

import struct

from .base import CudaError
from .ptx import decode, globals_size as ptx_globals_size

_ELF_MAGIC = b"\x7fELF"
_FATBIN_MAGIC = b"\x50\xed\x55\xba"
_EHDR = struct.Struct("<40xQ10xHHH")  # e_shoff, e_shentsize, e_shnum, e_shstrndx (ELF64)
_SHDR = struct.Struct("<II16xQQ")  # sh_name, sh_type, sh_offset, sh_size (of a 64-byte header)
_GLOBALS = ".nv.global"


def cubin_globals_size(image: bytes) -> int:
    """Bytes of a 64-bit little-endian cubin's `.nv.global*` sections (0 if it is not one)."""
    if len(image) < 64 or image[:4] != _ELF_MAGIC or image[4] != 2 or image[5] != 1:
        return 0
    shoff, shentsize, shnum, shstrndx = _EHDR.unpack_from(image)
    if shentsize < 64 or shstrndx >= shnum or shoff + shnum * shentsize > len(image):
        return 0
    headers = [_SHDR.unpack_from(image, shoff + i * shentsize) for i in range(shnum)]
    _, _, str_off, str_size = headers[shstrndx]
    if str_off + str_size > len(image):
        return 0
    names = image[str_off: str_off + str_size]
    total = 0
    for name_at, _kind, _offset, size in headers:
        end = names.find(b"\0", name_at)
        if name_at >= len(names) or end < 0:
            continue
        name = names[name_at: end].decode("ascii", "replace")
        if name == _GLOBALS or name.startswith(_GLOBALS + "."):
            total += size  # (a NOBITS section's size is not in the file: that is the point)
    return total


def globals_size(image: bytes) -> int:
    """Bytes of device memory the image's `.global` variables take, as far as it can be read: PTX
    and cubins; 0 for a fatbin or anything else (see the module's docstring)."""
    head = bytes(image[:4])
    if head == _ELF_MAGIC:
        return cubin_globals_size(bytes(image))
    if head == _FATBIN_MAGIC:
        return 0
    try:
        return ptx_globals_size(decode(image))
    except CudaError:
        return 0
