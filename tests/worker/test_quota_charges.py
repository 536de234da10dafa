"""The quota is charged what the VM really takes: an allocation at its size on the GPU (its
granularity), a module's `.global` variables while it is loaded; and what the worker keeps for a
VM's allocations and handles is bounded, however little device memory each names."""

from __future__ import annotations

import hashlib
import struct

import pytest

from kvmgpu.backend.images import cubin_globals_size, globals_size
from kvmgpu.backend.sim import SimBackend
from kvmgpu.worker import dispatch
from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import Goodbye, Op

from rawguest import MIB, PTX, Host

OOM = CUresult.CUDA_ERROR_OUT_OF_MEMORY
QUOTA = 64 * MIB
BIG = 200_000_000  # a 200 MB global in an image of a few hundred bytes
BIG_PTX = PTX + b"\n.global .align 8 .b8 big[%d];\n" % BIG


@pytest.fixture
def host(tmp_path):
    """A 64 MiB vGPU on a sim device of 1 GiB: the quota, not the device, says no."""
    h = Host(tmp_path, gmem=QUOTA, backend=lambda total_memory: SimBackend(total_memory=1 << 30))
    yield h
    h.close()


def free(g) -> int:
    return g.ok(Op.MEM_GET_INFO)[0]


def test_an_allocation_is_charged_its_size_on_the_gpu(host):
    g = host.guest(window=65536)
    small = g.alloc(1)
    assert free(g) == QUOTA - 512  # small allocations: 512-byte steps
    big = g.alloc(3 * MIB)
    assert free(g) == QUOTA - 512 - 4 * MIB  # from 1 MiB up: whole 2 MiB pages
    g.ok(Op.MEM_FREE, big)
    g.ok(Op.MEM_FREE, small)
    assert free(g) == QUOTA and host.vgpu.quota.used == 0
    g.alloc(QUOTA - 4 * MIB)
    g.alloc(4096)
    assert g.call(Op.MEM_ALLOC, 3 * MIB).status == OOM  # 4 MiB on the GPU, 4 MiB - 4 KiB left
    g.alloc(2 * MIB)


def test_allocations_that_do_not_tile_a_page_are_charged_their_share_of_it(host):
    """None straddles two pages: 20 allocations of 100,000 bytes fill a 2 MiB page (an H200
    took 13 pages for 256 of them), so each is charged a twentieth of a page, not 100,352 bytes."""
    g = host.guest(window=65536)
    ptrs = [g.alloc(100_000) for _ in range(20)]
    assert QUOTA - free(g) == 20 * 104_858 >= 2 * MIB
    for p in ptrs:
        g.ok(Op.MEM_FREE, p)
    assert free(g) == QUOTA


def test_a_million_tiny_allocations_cannot_pass_the_quota(host):
    """At 512 bytes each the quota runs out after QUOTA / 512 allocations of 1 byte."""
    g = host.guest(window=65536)
    frames = [g.frame(Op.MEM_ALLOC, 1) for _ in range(QUOTA // 512)]
    replies = g.send(frames)
    assert all(r.status == 0 for r in replies)
    assert g.call(Op.MEM_ALLOC, 1).status == OOM and free(g) == 0


def test_a_modules_globals_are_charged_while_it_is_loaded(host):
    g = host.guest(window=1 << 20)
    g.window.view[:len(BIG_PTX)] = BIG_PTX
    r = g.call(Op.MODULE_LOAD, 0, len(BIG_PTX), blob=hashlib.sha256(BIG_PTX).digest())
    assert r.status == OOM and b"the module's .global variables would take" in r.blob
    assert host.vgpu.quota.used == 0 and len(host.vgpu.modules) == 0  # nothing left loaded
    small_ptx = PTX + b"\n.global .align 8 .b8 buf[%d];\n" % (40 * MIB)
    m = g.load(small_ptx)
    charged = 40 * MIB + 512  # buf and the test kernels' 4-byte scale
    assert free(g) == QUOTA - charged
    assert g.call(Op.MEM_ALLOC, 30 * MIB).status == OOM  # the globals count against allocations
    other = host.guest(window=4096, session=2)
    m2 = other.ok(Op.MODULE_LOAD, 0, 0, blob=hashlib.sha256(small_ptx).digest())[0]  # cached
    assert free(g) == QUOTA - charged  # one module loaded, charged once
    g.ok(Op.MODULE_UNLOAD, m)
    assert free(g) == QUOTA - charged  # the other session still holds it
    other.channel.receive(other.conn.send(Goodbye(2)))  # its session ends: the last handle
    assert free(g) == QUOTA and len(host.vgpu.modules) == 0
    del m2


def test_a_module_with_globals_is_loaded_afresh(host):
    """Unused, it is unloaded (not kept in the cache): the next load starts from the image's
    initial values, as a new CUDA process does, not from what a session before wrote."""
    g = host.guest(window=1 << 20)
    m = g.load()
    ptr, _ = g.ok(Op.MODULE_GET_GLOBAL, m, blob=b"scale")
    g.put(ptr, struct.pack("<f", 5.0))
    g.ok(Op.MODULE_UNLOAD, m)
    m = g.load()
    ptr, _ = g.ok(Op.MODULE_GET_GLOBAL, m, blob=b"scale")
    assert g.get(ptr, 4) == struct.pack("<f", 1.0)


def test_what_the_worker_keeps_for_a_vm_is_bounded(host, monkeypatch):
    monkeypatch.setattr(dispatch, "MAX_OBJECTS", 6)
    g = host.guest(window=65536)
    other = host.guest(window=4096, session=2)
    for _ in range(3):
        g.alloc(1)
    g.ok(Op.STREAM_CREATE, 0)
    g.ok(Op.EVENT_CREATE, 0)
    other.alloc(1)  # six: allocations and handles of every session of the VM
    for call in ((Op.MEM_ALLOC, 1), (Op.STREAM_CREATE, 0), (Op.EVENT_CREATE, 0)):
        r = other.call(*call)
        assert r.status == OOM and b"the VM holds 6 allocations and handles" in r.blob
    g.channel.receive(g.conn.send(Goodbye(1)))
    other.alloc(1)  # room again
    assert host.vgpu.objects == 2


def _cubin(sections: dict[str, int]) -> bytes:
    """A minimal ELF64 with these sections (name -> size) and a section-name table."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in sections) + b".shstrtab\0"
    shoff = 64 + len(names)
    headers = [bytes(64)]
    at = 1
    for n, size in sections.items():
        headers.append(struct.pack("<IIQQQQIIQQ", at, 8, 0, 0, 0, size, 0, 0, 1, 0))
        at += len(n) + 1
    headers.append(struct.pack("<IIQQQQIIQQ", at, 3, 0, 0, 64, len(names), 0, 0, 1, 0))
    ehdr = (b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
            + struct.pack("<HHIQQQIHHHHHH", 1, 190, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(headers),
                          len(headers) - 1))
    return ehdr + names + b"".join(headers)


def test_a_cubins_globals_are_read_from_its_sections():
    image = _cubin({".text.k": 100, ".nv.global": 3 * MIB, ".nv.global.init": 4096, ".nv.shared.k": 99})
    assert cubin_globals_size(image) == globals_size(image) == 3 * MIB + 4096
    assert cubin_globals_size(image[:100]) == 0  # cut short: not read past its end
    assert globals_size(BIG_PTX) == BIG + 4
