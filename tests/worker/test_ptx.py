"""The PTX reader (kvmgpu/backend/ptx.py): layouts and globals as the driver gives them, in time
linear in the image's length whatever a guest puts in it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kvmgpu.backend.base import CudaError
from kvmgpu.backend.ptx import globals_size, parse_ptx
from kvmgpu_wire.cudefs import CUresult

HEAD = b".version 8.0\n.target sm_90\n.address_size 64\n"
SAMPLE = HEAD + b"""
.global .align 8 .b8 big[200000000];
.visible .global .u32 n = 7;
.global .s64 q = -3;
.global .f64 d = 0d3FF0000000000000;
.global .u32 arr[4] = {1, 2,
  3, 4};
.visible .entry k(.param .align 8 .b8 k_param_0[24], .param .u64 .ptr .global .align 16 k_param_1,
    .param .u16 k_param_2)
{ ret; }
.visible .entry none()
{ ret; }
"""


def test_layouts_and_globals():
    entries, globals_ = parse_ptx(SAMPLE)
    assert entries == {"k": [(0, 24), (24, 8), (32, 2)], "none": []}
    assert globals_ == {"big": (200_000_000, b""), "n": (4, b"\x07\0\0\0"), "q": (8, b"\xfd" + b"\xff" * 7),
                        "d": (8, bytes.fromhex("000000000000f03f")), "arr": (16, b"")}
    assert globals_size(SAMPLE.decode()) == 200_000_000 + 4 + 8 + 8 + 16


def test_a_count_no_one_wrote_is_invalid_ptx():
    with pytest.raises(CudaError) as e:
        parse_ptx(HEAD + b".global .b8 x[" + b"9" * 5000 + b"];\n")
    assert e.value.code == CUresult.CUDA_ERROR_INVALID_PTX


# Shapes that made the regular expressions backtrack (a 180 KB image stalled them for hours):
# runs of blank lines, long parameter lists, declarations and entries that never end.
ADVERSARIAL = """
import sys, time
from kvmgpu.backend.ptx import parse_ptx
head = b".version 8.0\\n.target sm_90\\n"
parts = [b"\\n" * 500_000, b" \\t\\n" * 200_000,
         b".entry wide(" + b".param .u64 .ptr .global " * 50_000 + b".param .u32 last)\\n{ ret; }\\n",
         b".global .u32 x" + b" " * 500_000 + b";\\n",
         b".visible .entry e%d(.param .u64 p)\\n{ ret; }\\n" * 1 + b"".join(
             b".visible .entry e%d(.param .u64 p)\\n{ ret; }\\n" % i for i in range(20_000)),
         b".global .u32 g%d;\\n" * 1 + b"".join(b".global .u32 g%d;\\n" % i for i in range(20_000)),
         b".global .u32 open = 1\\n" * 50_000, b".entry never(\\n" * 50_000]
image = head + b"".join(parts)
assert len(image) > 4_000_000, len(image)
entries, globals_ = parse_ptx(image)
assert len(entries) >= 20_000 and entries["e19999"] == [(0, 8)], len(entries)
assert entries["wide"][-1][1] == 4 and len(globals_) >= 20_000
print("parsed", len(image))
"""


def test_a_large_adversarial_image_is_read_at_once():
    """Several MB of the shapes above, read in a subprocess that must finish within 60 s (it is
    linear: a fraction of a second; the old reader would take hours)."""
    r = subprocess.run([sys.executable, "-c", ADVERSARIAL], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "parsed" in r.stdout, r.stderr
