"""The worker's dispatch on the sim backend, in process: every bad input gets an error reply,
changes nothing, and the worker serves the next call."""

from __future__ import annotations

import hashlib
import struct

import pytest

from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import Goodbye, Op, RemoteProtocolError, Welcome

from rawguest import MIB, PTX, PTX_SHA, floats, unfloats

OOM = CUresult.CUDA_ERROR_OUT_OF_MEMORY
INVALID_VALUE = CUresult.CUDA_ERROR_INVALID_VALUE
INVALID_HANDLE = CUresult.CUDA_ERROR_INVALID_HANDLE
QUOTA = 16 * MIB


def status(reply) -> int:
    return reply.status


def vector_add_args(a, b, c, n):
    return struct.pack("<QQQi", a, b, c, n)


@pytest.fixture
def g(host):
    return host.guest(window=1 * MIB)


def still_serves(g):
    assert g.ok(Op.MEM_GET_INFO)[1] == QUOTA


# --- handshake ---------------------------------------------------------------------------------

def test_welcome_describes_the_vgpu(host):
    g = host.guest(window=64 * 1024)
    w = g.welcome
    assert w.window_size == 64 * 1024 and w.window_offset % 4096 == 0
    assert w.device["total_memory"] == QUOTA
    assert w.device["name"] == "kvmgpu sim device"
    assert w.device["compute_capability"] == [9, 0]
    assert w.device["attributes"]["1"] == 1024 and w.device["attributes"]["16"] == 132
    assert w.device["attributes"]["95"] == 0  # COOPERATIVE_LAUNCH: not given to a VM (libcuda refuses it)
    # what libraries ask before taking a path a VM is not given: managed memory (the sim's own
    # attributes say 1), virtual memory management (NCCL, expandable segments), IPC events
    assert w.device["attributes"]["83"] == 0 and w.device["attributes"]["102"] == 0
    assert w.device["attributes"]["125"] == 0
    assert w.vgpu == {"gmem": QUOTA, "compute": 100, "compute_mode": "share", "backend": "sim", "vm": "test"}


def test_windows_are_shared_first_fit(host):
    a = host.guest(window=1 * MIB)
    b = host.guest(window=100)  # rounded up to a page
    assert b.welcome.window_offset == 1 * MIB and b.welcome.window_size == 4096
    rest = host.guest(window=0)  # everything free
    assert rest.welcome.window_size == 4 * MIB - 1 * MIB - 4096
    refused = host.channel()
    from rawguest import Guest
    late = Guest(refused.receive, host.guest_region)
    assert isinstance(late.hello(window=4096), Goodbye)
    a.call(Op.MEM_GET_INFO)
    a.channel.receive(a.conn.send(Goodbye(1)))
    assert isinstance(late.hello(window=4096), Welcome)  # a's window is free again


def test_version_mismatch_is_refused_with_goodbye(host):
    from rawguest import Guest
    g = Guest(host.channel().receive, host.guest_region)
    bye = g.hello(version_min=50, version_max=60)
    assert isinstance(bye, Goodbye) and "protocol" in bye.reason


def test_hello_on_live_session_releases_the_old_one(host, g):
    g.alloc(QUOTA)
    assert isinstance(g.hello(window=4096), Welcome)
    assert host.vgpu.quota.used == 0
    g.alloc(QUOTA)


# --- quota -------------------------------------------------------------------------------------

def test_exactly_at_quota_then_one_byte_over(host, g):
    p = g.alloc(QUOTA)
    assert g.ok(Op.MEM_GET_INFO) == (0, QUOTA)
    assert status(g.call(Op.MEM_ALLOC, 1)) == OOM
    g.ok(Op.MEM_FREE, p)
    assert g.ok(Op.MEM_GET_INFO) == (QUOTA, QUOTA)
    assert status(g.call(Op.MEM_ALLOC, QUOTA + 1)) == OOM
    assert host.vgpu.quota.used == 0
    g.alloc(QUOTA)


def test_many_small_allocations(host, g):
    ptrs = [g.alloc(QUOTA // 64) for _ in range(64)]
    assert len(set(ptrs)) == 64 and all(p % 256 == 0 for p in ptrs)
    assert status(g.call(Op.MEM_ALLOC, 1)) == OOM
    for p in ptrs[::2]:
        g.ok(Op.MEM_FREE, p)
    assert g.ok(Op.MEM_GET_INFO)[0] == QUOTA // 2
    g.alloc(QUOTA // 2)


def test_quota_is_shared_by_the_vms_sessions(host, g):
    other = host.guest(window=4096, session=2)
    g.alloc(QUOTA - 4 * MIB)
    assert status(other.call(Op.MEM_ALLOC, 4 * MIB + 1)) == OOM  # (charged 6 MiB: 2 MiB pages)
    other.alloc(4 * MIB)


def test_alloc_zero_and_huge(host, g):
    assert status(g.call(Op.MEM_ALLOC, 0)) == INVALID_VALUE
    assert status(g.call(Op.MEM_ALLOC, (1 << 64) - 1)) == OOM
    assert host.vgpu.quota.used == 0


def test_session_end_releases_memory(host, g):
    g.alloc(QUOTA)
    g.channel.receive(g.conn.send(Goodbye(1)))
    assert host.vgpu.quota.used == 0 and not host.vgpu.sessions


def test_closed_channel_releases_memory(host, g):
    g.alloc(QUOTA)
    g.channel.close()
    assert host.vgpu.quota.used == 0 and not host.vgpu.sessions


# --- copies ------------------------------------------------------------------------------------

def test_copies_and_memset(g):
    p = g.alloc(4096)
    g.put(p, bytes(range(256)) * 16)
    assert g.get(p + 10, 5) == bytes(range(10, 15))  # pointer arithmetic inside an allocation
    q = g.alloc(4096)
    g.ok(Op.MEMCPY_DTOD, q, p, 4096, 0)
    assert g.get(q, 4096) == bytes(range(256)) * 16
    g.ok(Op.MEMSET_D8, q, 0xAB, 10, 0)
    g.ok(Op.MEMSET_D32, q + 16, 0x01020304, 2, 0)
    assert g.get(q, 24) == b"\xab" * 10 + bytes(range(10, 16)) + b"\x04\x03\x02\x01" * 2
    g.ok(Op.MEMCPY_HTOD, p, 0, 0, 0)  # nbytes 0: no-op


def test_2d_copy_and_16_bit_memset(g):
    """MEMCPY_2D (cuMemcpy2D between device ranges): rows of `width` bytes at each side's pitch;
    the bytes between the rows are not touched. MEMSET_D16 sets 16-bit words."""
    p, q = g.alloc(4096), g.alloc(4096)
    g.put(p, bytes(range(256)) * 16)
    g.put(q, b"\xee" * 4096)
    g.ok(Op.MEMCPY_2D, q + 1, 100, p + 3, 64, 10, 5, 0)  # 5 rows of 10 bytes
    got = g.get(q, 500)
    for i in range(5):
        assert got[1 + 100 * i: 11 + 100 * i] == bytes(b % 256 for b in range(3 + 64 * i, 13 + 64 * i))
    assert got.count(b"\xee") == 500 - 50
    g.ok(Op.MEMSET_D16, q, 0xBEEF, 3, 0)
    assert g.get(q, 8) == b"\xef\xbe" * 3 + got[6:8]
    g.ok(Op.MEMCPY_2D, q, 16, p, 16, 0, 1 << 62, 0)  # width 0: nothing to copy


@pytest.mark.parametrize("case", ["pitch*height wraps a u64", "rows past the allocation",
                                  "source outside the VM's allocations", "rows wider than the pitch"])
def test_bad_2d_copies_are_refused(g, case):
    p, q = g.alloc(4096), g.alloc(4096)
    g.put(q, b"\x11" * 4096)
    args = {"pitch*height wraps a u64": (q, 1 << 60, p, 16, 16, 17),  # (1<<60)*16 == 0 in a u64
            "rows past the allocation": (q, 1024, p, 16, 16, 5),
            "source outside the VM's allocations": (q, 16, 0xDEAD0000, 16, 16, 2),
            "rows wider than the pitch": (q, 8, p, 16, 16, 2)}[case]
    r = g.call(Op.MEMCPY_2D, *args, 0)
    assert status(r) == INVALID_VALUE
    assert (b"src" if "source" in case else b"dst") in r.blob, r.blob
    assert g.get(q, 4096) == b"\x11" * 4096  # nothing changed
    still_serves(g)


def tensor_blob(dims, strides, box=(16, 4), estrides=(1, 1)):
    pad = lambda t, n: tuple(t) + (0,) * (n - len(t))  # noqa: E731
    return struct.pack("<5Q4Q5I5I", *pad(dims, 5), *pad(strides, 4), *pad(box, 5), *pad(estrides, 5))


def test_tensor_map_of_a_tensor_in_the_sessions_memory(g):
    p = g.alloc(4096)
    values = g.ok(Op.TENSOR_MAP_ENCODE_TILED, 0, 2, p, 0, 0, 0, 0, blob=tensor_blob((64, 64), (64,)))
    assert len(values[0]) == 128 and struct.unpack_from("<Q", values[0])[0] == p  # (the sim packs its inputs)


@pytest.mark.parametrize("case", ["past the allocation", "outside the VM's allocations", "strides wrap a u64",
                                  "a dimension of 0", "short blob"])
def test_bad_tensor_maps_are_refused(g, case):
    """A tensor map lets any kernel of the VM read and write the tensor: its bytes, from dims and
    strides computed exactly, must lie inside one allocation of the session."""
    p = g.alloc(4096)
    address, blob = {
        "past the allocation": (p, tensor_blob((64, 65), (64,))),  # 64 rows of 64 bytes + 1
        "outside the VM's allocations": (0xDEAD0000, tensor_blob((16, 4), (16,))),
        "strides wrap a u64": (p, tensor_blob((16, 1 << 33), (1 << 31,))),  # (1<<33)*(1<<31) wraps
        "a dimension of 0": (p, tensor_blob((16, 0), (16,))),
        "short blob": (p, tensor_blob((16, 4), (16,))[:100]),
    }[case]
    r = g.call(Op.TENSOR_MAP_ENCODE_TILED, 0, 2, address, 0, 0, 0, 0, blob=blob)
    assert status(r) == INVALID_VALUE, r.blob
    assert b"TENSOR_MAP_ENCODE_TILED" in r.blob
    still_serves(g)


def test_im2col_tensor_map_checks_the_tensor_too(g):
    """An NHWC tensor of 8 channels, 4x4 pixels, batch 2 (256 bytes): inside a 4 KiB allocation a
    map; a batch of 32 (4 KiB + 1 row) past it is INVALID_VALUE."""
    p = g.alloc(4096)
    def blob(n):
        return struct.pack("<5Q4Q3i3i5III", 8, 4, 4, n, 0, 8, 32, 128, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 8, 16)
    assert len(g.ok(Op.TENSOR_MAP_ENCODE_IM2COL, 0, 4, p, 0, 0, 0, 0, blob=blob(2))[0]) == 128
    r = g.call(Op.TENSOR_MAP_ENCODE_IM2COL, 0, 4, p, 0, 0, 0, 0, blob=blob(33))
    assert status(r) == INVALID_VALUE and b"TENSOR_MAP_ENCODE_IM2COL" in r.blob, r.blob
    still_serves(g)


def done_word(g, at: int) -> int:
    return struct.unpack_from("<I", g.window.view, at)[0]


def test_staged_copy_lands_then_says_done(g):
    p = g.alloc(8192)
    done = g.welcome.window_size - 64
    g.window.view[:8192] = bytes(range(256)) * 32
    g.window.view[done: done + 4] = b"\0" * 4
    g.call(Op.MEMCPY_HTOD_STAGED, p, 0, 8192, done, queued=True)
    assert done_word(g, done) == g.conn._seq != 0  # the staged call's own seq
    assert g.get(p, 8192) == bytes(range(256)) * 32


@pytest.mark.parametrize("case", ["unaligned done", "done outside the window", "bad destination",
                                  "window range past the end"])
def test_bad_staged_copies_fail_at_the_next_synchronising_call(g, case):
    p = g.alloc(4096)
    g.put(p, b"\x11" * 4096)
    win = g.welcome.window_size
    args, says = {"unaligned done": ((p, 0, 16, win - 62), "not 4-aligned"),
                  "done outside the window": ((p, 0, 16, win), "outside the"),
                  "bad destination": ((0xDEAD0000, 0, 16, win - 64), "not in memory this session allocated"),
                  "window range past the end": ((p, win - 8, 16, win - 64), "outside the")}[case]
    g.window.view[win - 64: win - 60] = b"\0" * 4
    g.call(Op.MEMCPY_HTOD_STAGED, *args, queued=True)
    reply = g.call(Op.CTX_SYNCHRONIZE)
    assert status(reply) == INVALID_VALUE
    assert reply.blob.startswith(b"MEMCPY_HTOD_STAGED (queued, seq ") and says.encode() in reply.blob
    if case in ("bad destination", "window range past the end"):
        assert done_word(g, win - 64) != 0  # said done all the same: the guest may reuse its slot
    assert g.get(p, 4096) == b"\x11" * 4096  # nothing changed
    still_serves(g)


def test_dtoh_in_pieces_says_each_piece_landed(host):
    """MEMCPY_DTOH_PIECES: the bytes land whole, the landed word is stored after every piece with
    the bytes landed so far (its last value all of them), and a piece asked smaller than the
    worker's least is made bigger."""
    g = host.guest(window=3 * MIB)
    n = 256 * 1024 + 100
    p = g.alloc(n)
    data = bytes(range(256)) * (n // 256) + bytes(100)
    g.put(p, data)
    b = host.vgpu.backend
    real, seen = b.memcpy_dtoh, []

    def watched(off, src, nbytes, stream, piece=0, landed=None):
        def tell(k):
            landed(k)
            seen.append(done_word(g, at[0]))
        return real(off, src, nbytes, stream, piece, tell)
    b.memcpy_dtoh = watched
    host.vgpu.bind()  # the worker binds the backend's calls at setup
    at = [512 * 1024]
    g.window.view[512 * 1024: 512 * 1024 + 4] = b"\xff" * 4
    g.ok(Op.MEMCPY_DTOH_PIECES, 0, p, n, 0, 1024, 512 * 1024)  # 1 KiB asked: 64 KiB pieces
    assert bytes(g.window.view[:n]) == data
    assert seen == [64 * 1024, 128 * 1024, 192 * 1024, 256 * 1024, n]
    # at most MAX_PIECES pieces, however small the piece asked
    seen.clear()
    at[0] = 2 * MIB + 64
    big = g.alloc(2 * MIB)
    g.ok(Op.MEMCPY_DTOH_PIECES, 0, big, 2 * MIB, 0, 64 * 1024, 2 * MIB + 64)
    assert len(seen) == 16 and seen[-1] == 2 * MIB


@pytest.mark.parametrize("case", ["unaligned landed", "landed outside the window", "bad source",
                                  "window range past the end", "more bytes than a u32 counts"])
def test_bad_dtoh_in_pieces_is_refused_and_says_nothing(g, case):
    p = g.alloc(4096)
    g.put(p, b"\x11" * 4096)
    win = g.welcome.window_size
    args, says = {"unaligned landed": ((0, p, 4096, 0, 1024, win - 62), "not 4-aligned"),
                  "landed outside the window": ((0, p, 4096, 0, 1024, win), "outside the"),
                  "bad source": ((0, 0xDEAD0000, 16, 0, 1024, win - 64), "not in memory this session allocated"),
                  "window range past the end": ((win - 8, p, 16, 0, 1024, win - 64), "outside the"),
                  "more bytes than a u32 counts": ((0, p, 1 << 32, 0, 1024, win - 64), "use MEMCPY_DTOH")}[case]
    g.window.view[:4096] = b"\x22" * 4096
    g.window.view[win - 64: win - 60] = b"\x07\0\0\0"
    reply = g.call(Op.MEMCPY_DTOH_PIECES, *args)
    assert status(reply) == INVALID_VALUE and says.encode() in reply.blob
    assert done_word(g, win - 64) == 7  # nothing said landed
    assert bytes(g.window.view[:4096]) == b"\x22" * 4096  # nothing landed
    still_serves(g)


@pytest.mark.parametrize("case", [
    "window offset past the end", "window range past the end", "huge nbytes",
    "pointer not owned", "range past the allocation end", "range spans two allocations",
    "pointer before every allocation"])
def test_bad_copies_are_refused(g, case):
    p = g.alloc(4096)
    q = g.alloc(4096)
    g.put(p, b"\x11" * 4096)
    win = g.welcome.window_size
    htod, dtoh = {
        "window offset past the end": ((p, win, 1, 0), (win, p, 1, 0)),
        "window range past the end": ((p, win - 10, 11, 0), (win - 10, p, 11, 0)),
        "huge nbytes": ((p, 0, 1 << 63, 0), (0, p, 1 << 63, 0)),
        "pointer not owned": ((0xDEAD0000, 0, 4, 0), (0, 0xDEAD0000, 4, 0)),
        "range past the allocation end": ((p + 4000, 0, 97, 0), (0, p + 4000, 97, 0)),
        "range spans two allocations": ((p, 0, q - p + 16, 0), (0, p, q - p + 16, 0)),
        "pointer before every allocation": ((p - 1, 0, 4, 0), (0, p - 1, 4, 0)),
    }[case]
    g.window.view[:16] = b"\x22" * 16
    assert status(g.call(Op.MEMCPY_HTOD, *htod)) == INVALID_VALUE
    assert status(g.call(Op.MEMCPY_DTOH, *dtoh)) == INVALID_VALUE
    assert status(g.call(Op.MEMCPY_DTOD, htod[0], p, htod[2], 0)) == INVALID_VALUE or case.startswith("window")
    assert g.get(p, 4096) == b"\x11" * 4096  # nothing changed
    still_serves(g)


def test_another_sessions_pointer_is_not_yours(host, g):
    other = host.guest(window=4096, session=2)
    p = other.alloc(64)
    assert status(g.call(Op.MEMCPY_DTOH, 0, p, 4, 0)) == INVALID_VALUE
    assert status(g.call(Op.MEM_FREE, p)) == INVALID_VALUE
    assert status(g.call(Op.MEMSET_D8, p, 0, 4, 0)) == INVALID_VALUE
    other.get(p, 64)


def test_bad_frees_and_memsets(host, g):
    p = g.alloc(64)
    assert status(g.call(Op.MEM_FREE, p + 4)) == INVALID_VALUE
    assert status(g.call(Op.MEMSET_D8, p, 256, 1, 0)) == INVALID_VALUE
    assert status(g.call(Op.MEMSET_D32, p, 1 << 32, 1, 0)) == INVALID_VALUE
    assert status(g.call(Op.MEMSET_D32, p, 0, 17, 0)) == INVALID_VALUE  # 68 bytes > 64
    g.ok(Op.MEM_FREE, p)
    assert status(g.call(Op.MEM_FREE, p)) == INVALID_VALUE  # double free
    assert host.vgpu.quota.used == 0


# --- handles -----------------------------------------------------------------------------------

def test_unknown_and_foreign_handles(host, g):
    other = host.guest(window=4096, session=2)
    s = other.ok(Op.STREAM_CREATE, 0)[0]
    e = other.ok(Op.EVENT_CREATE, 0)[0]
    p = g.alloc(64)
    for h in (s, e, 12345):
        assert status(g.call(Op.STREAM_SYNCHRONIZE, h)) == INVALID_HANDLE
        assert status(g.call(Op.EVENT_QUERY, h)) == INVALID_HANDLE
        assert status(g.call(Op.MEMCPY_DTOH, 0, p, 4, h)) == INVALID_HANDLE
        assert status(g.call(Op.MODULE_GET_FUNCTION, h, blob=b"vector_add")) == INVALID_HANDLE
        assert status(g.call(Op.LAUNCH, h, 1, 1, 1, 1, 1, 1, 0, 0)) == INVALID_HANDLE
    assert status(g.call(Op.STREAM_DESTROY, 0)) == INVALID_HANDLE
    other.ok(Op.STREAM_SYNCHRONIZE, s)
    other.ok(Op.EVENT_QUERY, e)


def test_streams_and_events(g):
    s = g.ok(Op.STREAM_CREATE, 1)[0]
    a, b = g.ok(Op.EVENT_CREATE, 0)[0], g.ok(Op.EVENT_CREATE, 0)[0]
    assert status(g.call(Op.EVENT_ELAPSED, a, b)) == INVALID_HANDLE  # not recorded yet
    g.ok(Op.EVENT_RECORD, a, s)
    m = g.load()
    f, _ = g.function(m, "spin")
    g.ok(Op.LAUNCH, f, 1, 1, 1, 1, 1, 1, 0, s, blob=struct.pack("<q", 20_000_000))
    g.ok(Op.EVENT_RECORD, b, s)
    g.ok(Op.EVENT_SYNCHRONIZE, b)
    ms = g.ok(Op.EVENT_ELAPSED, a, b)[0]
    assert 15 < ms < 500
    g.ok(Op.STREAM_QUERY, s)
    assert status(g.call(Op.STREAM_CREATE, 4)) == INVALID_VALUE
    assert status(g.call(Op.EVENT_CREATE, 4)) == INVALID_VALUE  # no interprocess events
    g.ok(Op.STREAM_DESTROY, s)
    g.ok(Op.EVENT_DESTROY, a)
    assert status(g.call(Op.STREAM_SYNCHRONIZE, s)) == INVALID_HANDLE
    assert status(g.call(Op.EVENT_DESTROY, a)) == INVALID_HANDLE


# --- modules -----------------------------------------------------------------------------------

# The test kernels without their .global (a module with globals is not kept once unused)
NO_GLOBALS = PTX.replace(b".global .align 4 .f32 scale = 0f3F800000;", b"")
assert NO_GLOBALS != PTX


def test_module_cache(host, g):
    sha = hashlib.sha256(NO_GLOBALS).digest()
    assert status(g.call(Op.MODULE_LOAD, 0, 0, blob=sha)) == CUresult.CUDA_ERROR_NOT_FOUND
    m = g.load(NO_GLOBALS)
    g.ok(Op.MODULE_UNLOAD, m)
    assert status(g.call(Op.MODULE_GET_FUNCTION, m, blob=b"vector_add")) == INVALID_HANDLE
    other = host.guest(window=4096, session=2)
    m2 = other.ok(Op.MODULE_LOAD, 0, 0, blob=sha)[0]  # still loaded: no need to send it
    other.function(m2, "saxpy")
    assert len(host.vgpu.modules) == 1
    # the question "do you have it?" answered no is not a failed call (the stats showed half of
    # PyTorch's loads as errors): it is counted as an image sent
    stats = host.vgpu.stats()
    assert "MODULE_LOAD" not in stats["errors"] and stats["module_images_sent"] == 1


def test_module_cache_is_bounded(host, g):
    host.vgpu.modules.capacity = 2
    images = [NO_GLOBALS + f"\n// variant {i}\n".encode() for i in range(4)]
    handles = [g.load(img) for img in images]
    assert len(host.vgpu.modules) == 4  # all in use: none evicted
    for h in handles:
        g.ok(Op.MODULE_UNLOAD, h)
    assert len(host.vgpu.modules) == 2
    assert status(g.call(Op.MODULE_LOAD, 0, 0, blob=hashlib.sha256(images[0]).digest())) == \
        CUresult.CUDA_ERROR_NOT_FOUND  # the least recently used went first
    g.ok(Op.MODULE_LOAD, 0, 0, blob=hashlib.sha256(images[3]).digest())


@pytest.mark.parametrize("case", ["hash mismatch", "short hash", "outside window", "not ptx", "cubin"])
def test_bad_module_loads(host, g, case):
    image, digest, offset, code = PTX, PTX_SHA, 0, INVALID_VALUE
    if case == "hash mismatch":
        digest = hashlib.sha256(b"something else").digest()
    elif case == "short hash":
        digest = PTX_SHA[:31]
    elif case == "outside window":
        offset = g.welcome.window_size - 10
    elif case == "not ptx":
        image, code = b"\xff\xfe garbage", CUresult.CUDA_ERROR_INVALID_IMAGE
        digest = hashlib.sha256(image).digest()
    elif case == "cubin":
        image, code = b"\x7fELF" + bytes(60), CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU
        digest = hashlib.sha256(image).digest()
    if offset + len(image) <= g.welcome.window_size:
        g.window.view[offset: offset + len(image)] = image
    r = g.call(Op.MODULE_LOAD, offset, len(image), blob=digest)
    assert r.status == code, r.blob
    assert len(host.vgpu.modules) == 0
    g.load()


def test_function_lookup(g):
    m = g.load()
    f, n = g.function(m, "saxpy")
    r = g.call(Op.MODULE_GET_FUNCTION, m, blob=b"saxpy")
    from kvmgpu_wire.protocol import unpack_params
    assert unpack_params(r.blob, 4) == [(0, 4), (8, 8), (16, 8), (24, 4)]
    assert status(g.call(Op.MODULE_GET_FUNCTION, m, blob=b"nope")) == CUresult.CUDA_ERROR_NOT_FOUND
    assert status(g.call(Op.MODULE_GET_FUNCTION, m, blob=b"\xff")) == INVALID_VALUE
    assert status(g.call(Op.MODULE_GET_FUNCTION, m, blob=b"")) == INVALID_VALUE


# --- launches ----------------------------------------------------------------------------------

@pytest.fixture
def vadd(g):
    n = 64
    a, b, c = (g.alloc(4 * n) for _ in range(3))
    g.put(a, floats(range(n)))
    g.put(b, floats([1.0] * n))
    m = g.load(offset=64 * 1024)
    f, _ = g.function(m, "vector_add")
    return f, a, b, c, n


def test_vector_add(g, vadd):
    f, a, b, c, n = vadd
    g.ok(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vector_add_args(a, b, c, n))
    assert unfloats(g.get(c, 4 * n)) == [i + 1.0 for i in range(n)]


def test_launch_respects_the_grid(g, vadd):
    f, a, b, c, n = vadd
    g.ok(Op.LAUNCH, f, 2, 1, 1, 16, 1, 1, 0, 0, blob=vector_add_args(a, b, c, n))  # 32 threads
    assert unfloats(g.get(c, 4 * n)) == [i + 1.0 for i in range(32)] + [0.0] * 32


@pytest.mark.parametrize("shape", [
    (0, 1, 1, 1, 1, 1, 0), (1, 0, 1, 1, 1, 1, 0), (1, 1, 65536, 1, 1, 1, 0), (1, 1, 1, 0, 1, 1, 0),
    (1, 1, 1, 1025, 1, 1, 0), (1, 1, 1, 1, 1, 65, 0), (1, 1, 1, 32, 32, 2, 0), (1 << 31, 1, 1, 1, 1, 1, 0),
    (1, 1, 1, 1, 1, 1, 1 << 20)])
def test_bad_launch_shapes(g, vadd, shape):
    f, a, b, c, n = vadd
    assert status(g.call(Op.LAUNCH, f, *shape, 0, blob=vector_add_args(a, b, c, n))) == INVALID_VALUE
    assert g.get(c, 4 * n) == bytes(4 * n)
    still_serves(g)


@pytest.mark.parametrize("blob_len", [0, 27, 29, 32])
def test_argument_bytes_must_match(g, vadd, blob_len):
    f, a, b, c, n = vadd
    blob = (vector_add_args(a, b, c, n) + bytes(8))[:blob_len]
    assert status(g.call(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=blob)) == INVALID_VALUE
    assert g.get(c, 4 * n) == bytes(4 * n)


def test_saxpy_stencil_and_global(g):
    m = g.load()
    x, y = g.alloc(16), g.alloc(16)
    g.put(x, floats([1, 2, 3, 4]))
    g.put(y, floats([10, 20, 30, 40]))
    f, _ = g.function(m, "saxpy")
    g.ok(Op.LAUNCH, f, 1, 1, 1, 4, 1, 1, 0, 0, blob=struct.pack("<fxxxxQQi", 2.0, x, y, 4))
    assert unfloats(g.get(y, 16)) == [12, 24, 36, 48]
    f, _ = g.function(m, "stencil1d")
    g.ok(Op.LAUNCH, f, 1, 1, 1, 4, 1, 1, 0, 0, blob=struct.pack("<QQi", y, x, 4))
    assert unfloats(g.get(x, 16)) == pytest.approx([12, 24, 36, 48])
    ptr, size = g.ok(Op.MODULE_GET_GLOBAL, m, blob=b"scale")
    assert size == 4 and unfloats(g.get(ptr, 4)) == [1.0]
    g.put(ptr, floats([0.5]))
    f, _ = g.function(m, "scale_by_global")
    g.ok(Op.LAUNCH, f, 1, 1, 1, 4, 1, 1, 0, 0, blob=struct.pack("<Qi", y, 4))
    assert unfloats(g.get(y, 16)) == [6, 12, 18, 24]
    assert status(g.call(Op.MEM_FREE, ptr)) == INVALID_VALUE  # a global is not an allocation
    g.ok(Op.MODULE_UNLOAD, m)
    assert status(g.call(Op.MEMCPY_DTOH, 0, ptr, 4, 0)) == INVALID_VALUE


def test_a_kernel_the_sim_backend_lacks_fails_where_it_is_named(g, caplog):
    """At cuModuleGetFunction, with the kernel's name and why, logged in the worker too: not at
    a later launch or synchronise with no word of why."""
    ptx = PTX.replace(b"vector_add", b"mystery_kernel")
    m = g.load(ptx)
    r = g.call(Op.MODULE_GET_FUNCTION, m, blob=b"mystery_kernel")
    assert r.status == CUresult.CUDA_ERROR_NOT_SUPPORTED
    text = r.blob.decode()
    assert "cannot run kernel 'mystery_kernel'" in text and "only its test kernels" in text
    assert "vector_add" in text and "--backend cuda" in text
    assert "cannot run kernel 'mystery_kernel'" in caplog.text
    g.ok(Op.CTX_SYNCHRONIZE)  # nothing left to fail later
    assert g.function(m, "saxpy")[1] == 4  # the module's other kernels are there


# --- queued calls and sticky errors -------------------------------------------------------------

def test_queued_error_surfaces_at_next_synchronising_call(g, vadd):
    f, a, b, c, n = vadd
    assert g.call(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=b"short", queued=True) is None
    assert g.call(Op.MEM_FREE, 0xBAD, queued=True) is None  # a second failure: not reported
    still_serves(g)  # MEM_GET_INFO is not synchronising: nothing reported
    r = g.call(Op.CTX_SYNCHRONIZE)
    assert r.status == INVALID_VALUE and r.blob.startswith(b"LAUNCH (queued")
    g.ok(Op.CTX_SYNCHRONIZE)  # reported once, then cleared


def test_queued_calls_run(g, vadd):
    f, a, b, c, n = vadd
    g.call(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vector_add_args(a, b, c, n), queued=True)
    g.call(Op.MEMSET_D8, a, 0, 4 * n, 0, queued=True)
    g.ok(Op.FENCE)
    assert unfloats(g.get(c, 4 * n)) == [i + 1.0 for i in range(n)]
    assert g.get(a, 4 * n) == bytes(4 * n)


def test_illegal_address_is_sticky_until_the_sessions_end(host, g):
    p = g.alloc(64)
    m = g.load()
    f, _ = g.function(m, "write_oob")
    g.call(Op.LAUNCH, f, 1, 1, 1, 1, 1, 1, 0, 0, blob=struct.pack("<Qq", p, 1 << 20), queued=True)
    r = g.call(Op.CTX_SYNCHRONIZE)
    assert r.status == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS and b"write_oob" in r.blob
    assert status(g.call(Op.MEM_ALLOC, 64)) == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    assert status(g.call(Op.STREAM_SYNCHRONIZE, 0)) == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    assert status(g.call(Op.CTX_SYNCHRONIZE)) == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
    assert host.vgpu.stats()["broken"]
    g.channel.close()
    fresh = host.guest(window=4096)  # a new context: the VM can start again
    q = fresh.alloc(64)
    fresh.put(q, b"\x01" * 64)
    assert fresh.get(q, 64) == b"\x01" * 64
    assert host.vgpu.quota.used == 512 and not host.vgpu.stats()["broken"]  # 64 bytes, charged 512


def test_in_bounds_write_oob_is_fine(g):
    p = g.alloc(64)
    m = g.load()
    f, _ = g.function(m, "write_oob")
    g.ok(Op.LAUNCH, f, 1, 1, 1, 1, 1, 1, 0, 0, blob=struct.pack("<Qq", p, 3))
    assert unfloats(g.get(p + 12, 4)) == [42.0]


def test_backend_bug_is_unknown_error_and_worker_goes_on(host, g, monkeypatch):
    def boom(*a):
        raise RuntimeError("bug")
    monkeypatch.setattr(host.vgpu.backend, "synchronize", boom)
    monkeypatch.setattr(host.vgpu.backend, "stream_synchronize", boom)
    host.vgpu.bind()
    assert status(g.call(Op.CTX_SYNCHRONIZE)) == CUresult.CUDA_ERROR_UNKNOWN
    assert status(g.call(Op.STREAM_SYNCHRONIZE, 0)) == CUresult.CUDA_ERROR_UNKNOWN
    assert host.vgpu.stats()["errors"] == {"CTX_SYNCHRONIZE": 1, "STREAM_SYNCHRONIZE": 1}
    still_serves(g)


def test_an_op_the_backend_does_not_serve_is_not_supported_and_named(host, g):
    """The specification's `backends` says which backends serve an op: on another, the guest gets
    CUDA_ERROR_NOT_SUPPORTED naming the op and the driver call, and the session goes on."""
    import dataclasses

    from kvmgpu.worker import dispatch
    from kvmgpu_wire import spec
    ops = [dataclasses.replace(d, backends=("cuda",)) if d.name == "STREAM_GET_PRIORITY" else d
           for d in spec.OPS]
    host.vgpu.handlers = dispatch.bind(host.vgpu, ops)
    r = g.call(Op.STREAM_GET_PRIORITY, 0)
    assert status(r) == CUresult.CUDA_ERROR_NOT_SUPPORTED
    assert r.blob.decode() == ("STREAM_GET_PRIORITY: cuStreamGetPriority is not supported by the sim "
                               "backend (it serves cuda)")
    still_serves(g)


# --- channels ----------------------------------------------------------------------------------

def test_protocol_violation_closes_only_that_channel(host, g):
    bad = host.guest(window=4096)
    bad.alloc(1024)
    with pytest.raises(RemoteProtocolError):
        bad.channel.receive(b"\x00" * 16)
    assert host.vgpu.quota.used == 0 and host.vgpu.protocol_violations == 1
    assert len(host.vgpu.sessions) == 1
    still_serves(g)


def test_stats(host, g, vadd):
    f, a, b, c, n = vadd
    g.ok(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vector_add_args(a, b, c, n))
    g.get(c, 4 * n)
    g.call(Op.MEM_ALLOC, 1 << 40)
    s = host.vgpu.stats()
    assert s["calls"]["LAUNCH"] == 1 and s["calls"]["MEM_ALLOC"] == 4
    assert s["errors"] == {"MEM_ALLOC": 1}
    assert s["bytes"]["htod"] == 8 * n and s["bytes"]["dtoh"] == 4 * n
    charged = 3 * 512 + 512  # three allocations of 4n = 256 bytes and the module's 4-byte global
    assert s["memory"] == {"used": charged, "limit": QUOTA, "peak": charged}
    assert s["sessions"] == {"live": 1, "started": 1}


def test_compute_gate_is_asked_before_each_valid_launch(host, g, vadd):
    class Gate:
        held, gpu_seconds, launches = False, 1.25, 0

        def before_launch(self):
            self.launches += 1

        def close(self):
            pass
    host.vgpu.gate = gate = Gate()
    f, a, b, c, n = vadd
    g.ok(Op.LAUNCH, f, 1, 1, 1, n, 1, 1, 0, 0, blob=vector_add_args(a, b, c, n))
    g.call(Op.LAUNCH, f, 0, 1, 1, n, 1, 1, 0, 0, blob=vector_add_args(a, b, c, n))
    assert gate.launches == 1
    assert host.vgpu.stats()["compute"]["gpu_seconds"] == 1.25
