"""The fatbin reader (kvmgpu/backend/fatbin.py): the sim backend runs the PTX a fatbin carries
(compressed or not), and a guest's malformed fatbin is a named CUDA error, never a crash or an
unbounded allocation. Fatbins are built here byte by byte, as nvcc lays them out."""

from __future__ import annotations

import ctypes
import hashlib
import struct

import pytest

from kvmgpu.backend import fatbin
from kvmgpu.backend.base import CudaError
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import Op

from rawguest import MIB, PTX

VECTOR_ADD = (b".version 9.0\n.target sm_80\n.address_size 64\n"
              b".visible .entry _Z9vectorAddPKfS0_Pfi(.param .u64 a, .param .u64 b, .param .u64 c, .param .u32 n)\n"
              b"{ ret; }\n\0")


def entry(kind: int, sm: int, payload: bytes, flags: int = 0x11, inflated: int = 0, stored: int | None = None) -> bytes:
    padded = payload + b"\0" * (-len(payload) % 8)
    head = bytearray(0x50)
    struct.pack_into("<HHIQ", head, 0, kind, 0x101, len(head), len(padded))
    struct.pack_into("<I", head, 16, len(payload) if stored is None else stored)
    struct.pack_into("<I", head, 28, sm)
    struct.pack_into("<Q", head, 40, flags)
    struct.pack_into("<Q", head, 56, inflated)
    return bytes(head) + padded


def fat(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", fatbin.MAGIC, 1, 16, len(body)) + body


def zstd(data: bytes) -> bytes:
    lib = fatbin._library("zstd")
    if lib is None:
        pytest.skip("no libzstd on this host")
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compress.restype = ctypes.c_size_t
    lib.ZSTD_compress.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
    out = ctypes.create_string_buffer(lib.ZSTD_compressBound(ctypes.c_size_t(len(data))))
    n = lib.ZSTD_compress(out, len(out), data, len(data), 3)
    return out.raw[:n]


def code(fn, *args) -> CUresult:
    with pytest.raises(CudaError) as e:
        fn(*args)
    return e.value.code


def test_the_newest_ptx_of_the_fatbin():
    image = fat(entry(2, 90, b"\x7fELF" + bytes(60)), entry(1, 75, b"old ptx\0"), entry(1, 80, VECTOR_ADD))
    assert fatbin.ptx_text(image) == VECTOR_ADD.rstrip(b"\0")


def test_a_zstd_compressed_entry_is_inflated():
    packed = zstd(VECTOR_ADD)
    image = fat(entry(1, 80, packed, flags=0x8011, inflated=len(VECTOR_ADD)))
    assert fatbin.ptx_text(image) == VECTOR_ADD.rstrip(b"\0")


def test_only_the_entry_used_is_inflated(monkeypatch):
    """Many entries declaring the largest inflated size allowed: only the newest PTX is inflated
    (each of the others would take a buffer of MAX_ENTRY_BYTES)."""
    packed = zstd(VECTOR_ADD)
    huge = entry(1, 75, packed, flags=0x8011, inflated=fatbin.MAX_ENTRY_BYTES)
    image = fat(*[huge] * 64, entry(1, 80, packed, flags=0x8011, inflated=len(VECTOR_ADD)))
    sizes = []
    inflate = fatbin._inflate
    monkeypatch.setattr(fatbin, "_inflate", lambda data, size, flags: sizes.append(size) or inflate(data, size, flags))
    assert fatbin.ptx_text(image) == VECTOR_ADD.rstrip(b"\0")
    assert sizes == [len(VECTOR_ADD)]


def test_no_ptx_names_what_the_fatbin_carries():
    image = fat(entry(2, 80, b"\x7fELF" + bytes(60)), entry(2, 90, b"\x7fELF" + bytes(60)))
    with pytest.raises(CudaError) as e:
        fatbin.ptx_text(image)
    assert e.value.code == CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU
    assert "only sm_80, sm_90" in str(e.value) and "code=compute_80" in str(e.value)


@pytest.mark.parametrize("case", ["short", "files past the end", "entry header too small", "payload past the end",
                                  "inflates past the limit", "does not inflate"])
def test_malformed_fatbins_are_invalid_images(case):
    good = entry(1, 80, VECTOR_ADD)
    image = {
        "short": fat(good)[:12],
        "files past the end": fat(good)[:-8],
        "entry header too small": fat(struct.pack("<HHIQ", 1, 0x101, 16, 0) + bytes(48)),
        "payload past the end": fat(good[:8] + struct.pack("<Q", 1 << 40) + good[16:]),
        "inflates past the limit": fat(entry(1, 80, b"x" * 16, flags=0x8011, inflated=fatbin.MAX_ENTRY_BYTES + 1)),
        "does not inflate": fat(entry(1, 80, b"\x28\xb5\x2f\xfd" + b"junk" * 4, flags=0x8011, inflated=4096)),
    }[case]
    if case == "does not inflate" and fatbin._library("zstd") is None:
        pytest.skip("no libzstd on this host")
    assert code(fatbin.ptx_text, image) == CUresult.CUDA_ERROR_INVALID_IMAGE


def test_the_sim_worker_loads_a_fatbin_and_finds_the_mangled_kernel(host):
    g = host.guest(window=1 * MIB)
    image = fat(entry(1, 80, VECTOR_ADD))
    g.window.view[:len(image)] = image
    module, = g.ok(Op.MODULE_LOAD, 0, len(image), blob=hashlib.sha256(image).digest())
    function, nparams = g.function(module, "_Z9vectorAddPKfS0_Pfi")
    assert nparams == 4
    bad = fat(entry(1, 80, VECTOR_ADD))[:-8]
    g.window.view[:len(bad)] = bad
    r = g.call(Op.MODULE_LOAD, 0, len(bad), blob=hashlib.sha256(bad).digest())
    assert r.status == CUresult.CUDA_ERROR_INVALID_IMAGE and b"fatbin:" in r.blob
    g.load(PTX)  # the worker still serves
