"""The cuda backend on its own, against the same calls made natively on random data."""

import ctypes
import mmap
import struct
import time

import numpy as np
import pytest

from kvmgpu.backend.base import CudaError
from kvmgpu_wire.cudefs import CUresult

pytestmark = pytest.mark.gpu


@pytest.fixture
def backend():
    from kvmgpu.backend.cuda import CudaBackend
    b = CudaBackend(0)
    region = mmap.mmap(-1, 64 << 20)
    view = memoryview(region)
    b.attach_region(view)
    b.region = view
    yield b
    b.close()


def test_device_info(backend):
    info = backend.device_info()
    assert info.total_memory > 1 << 30 and info.compute_capability[0] >= 7
    assert info.uuid.startswith("GPU-") and len(info.attributes) > 50


def test_copies_through_the_registered_region(backend):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    r = backend.region
    r[0:len(data)] = data
    a, b = backend.mem_alloc(len(data)), backend.mem_alloc(len(data))
    backend.memcpy_htod(a, 0, len(data), None, True)
    backend.memcpy_dtod(b, a, len(data), None, True)
    backend.memcpy_dtoh(16 << 20, b, len(data), None)
    assert bytes(r[16 << 20: (16 << 20) + len(data)]) == data
    backend.memset(b, 0xAB, 1000, 1, None, False)
    backend.memset(b + 1000, 0x01020304, 10, 4, None, True)
    backend.memcpy_dtoh(0, b, 1040, None)
    assert bytes(r[0:1000]) == b"\xab" * 1000 and bytes(r[1000:1040]) == struct.pack("<I", 0x01020304) * 10
    backend.mem_free(a)
    backend.mem_free(b)


def test_device_to_host_in_pieces_says_each_piece_as_it_lands(backend):
    """The pieces of a DtoH: each reported in order, with the bytes landed so far, and those bytes
    are in the region when it is reported; the copy waits for earlier null-stream work."""
    rng = np.random.default_rng(1)
    n = (6 << 20) + 4096
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    r = backend.region
    r[0:n] = data
    a = backend.mem_alloc(n)
    backend.memcpy_htod(a, 0, n, None, False)  # queued: the DtoH must come after it
    seen = []

    def landed(k):
        seen.append((k, bytes(r[(32 << 20) + k - 4096: (32 << 20) + k]) == data[k - 4096: k]))
    backend.memcpy_dtoh(32 << 20, a, n, None, 1 << 20, landed)
    assert seen == [((i + 1) << 20, True) for i in range(6)] + [(n, True)]
    assert bytes(r[32 << 20: (32 << 20) + n]) == data
    backend.mem_free(a)


def saxpy_inputs(backend, seed: int, n: int):
    """x and y (random float32) on the host, and copied (queued) to device memory dx and dy."""
    rng = np.random.default_rng(seed)
    x, y = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    dx, dy = backend.mem_alloc(4 * n), backend.mem_alloc(4 * n)
    r = backend.region
    r[0:4 * n] = x.tobytes()
    r[4 * n: 8 * n] = y.tobytes()
    backend.memcpy_htod(dx, 0, 4 * n, None, False)
    backend.memcpy_htod(dy, 4 * n, 4 * n, None, False)
    return x, y, dx, dy


@pytest.mark.parametrize("mode", ["params", "extra"])
def test_launch_matches_numpy(backend, ptx, mode):
    backend.launch_mode = mode
    mod = backend.module_load(ptx)
    f, params = backend.module_get_function(mod, "saxpy")
    assert params == [(0, 4), (8, 8), (16, 8), (24, 4)]
    n = 100_000
    x, y, dx, dy = saxpy_inputs(backend, 1, n)
    r = backend.region
    args = struct.pack("<f4xQQi", 2.5, dx, dy, n)
    backend.launch(f, ((n + 255) // 256, 1, 1), (256, 1, 1), 0, None, args)
    backend.memcpy_dtoh(0, dy, 4 * n, None)
    got = np.frombuffer(bytes(r[0:4 * n]), dtype=np.float32)
    np.testing.assert_allclose(got, np.float32(2.5) * x + y, rtol=1e-6)
    ptr, size = backend.module_get_global(mod, "scale")
    assert size == 4
    backend.module_unload(mod)


@pytest.mark.parametrize("path", ["C module", "cuda-bindings"])
def test_one_launch_from_the_receive_buffer_matches_numpy(backend, ptx, path):
    """The worker's launch + synchronise path: one launch whose argument bytes are read where they
    arrived in a bytearray (`launch_in`), then cuStreamSynchronize, through kvmgpu's C module and
    through cuda-bindings; a range outside the buffer launches nothing."""
    if path == "C module":
        assert backend._c is not None, "the C module is not built: launches would take cuda-bindings"
        launch_in, sync = backend.capabilities.launch_in, backend.stream_synchronize
    else:
        c, backend._c = backend._c, None
        launch_in, sync = backend._in_launcher(), type(backend).stream_synchronize.__get__(backend)
        backend._c = c
    mod = backend.module_load(ptx)
    f, _ = backend.module_get_function(mod, "saxpy")
    n = 100_000
    x, y, dx, dy = saxpy_inputs(backend, 3, n)
    received = bytearray(b"frame header" + struct.pack("<f4xQQi", 3.0, dx, dy, n) + b"next frame")
    stream = backend.stream_create(0)
    launch_in(f, (n + 255) // 256, 1, 1, 256, 1, 1, 0, stream, received, 12, 28)
    sync(stream)
    launch_in(f, (n + 255) // 256, 1, 1, 256, 1, 1, 0, None, received, 12, 28)  # the null stream
    sync(None)
    with pytest.raises((ValueError, CudaError)):
        launch_in(f, 1, 1, 1, 1, 1, 1, 0, None, received, len(received) - 8, 28)
    sync(None)
    backend.memcpy_dtoh(0, dy, 4 * n, None)
    got = np.frombuffer(bytes(backend.region[0:4 * n]), dtype=np.float32)
    np.testing.assert_allclose(got, y + np.float32(6.0) * x, rtol=1e-5)
    backend.stream_destroy(stream)
    backend.module_unload(mod)


def test_c_launch_loop_matches_numpy(backend, ptx):
    """The worker's queued launches go through kvmgpu's C loop (built by `pip install`; the GPU
    run script builds it too): three saxpy launches from records, in order, on a stream, the
    last two as one record of a launch and its repeat (their arguments one stride apart)."""
    from kvmgpu.backend.launcher import RECORD
    recs = backend.capabilities.launch_records
    assert recs is not None, "the C launch loop is not built: queued launches would take cuda-bindings"
    mod = backend.module_load(ptx)
    f, _ = backend.module_get_function(mod, "saxpy")
    n = 100_000
    x, y, dx, dy = saxpy_inputs(backend, 2, n)
    r = backend.region
    stream = backend.stream_create(0)
    args = ctypes.create_string_buffer(b"".join(struct.pack("<f4xQQi", a, dx, dy, n) + bytes(4)
                                                for a in (1.0, 2.0, -0.5)), 96)
    shape = ((n + 255) // 256, 1, 1, 256, 1, 1, 0)
    RECORD.pack_into(recs.records, 0, f.address, int(stream), ctypes.addressof(args), 28, 0, *shape, 1)
    RECORD.pack_into(recs.records, RECORD.size, f.address, int(stream), ctypes.addressof(args) + 32, 28,
                     32, *shape, 2)
    assert recs.launch(0, 2) == (2, 0, 0)
    backend.stream_synchronize(stream)
    backend.memcpy_dtoh(0, dy, 4 * n, None)
    got = np.frombuffer(bytes(r[0:4 * n]), dtype=np.float32)
    np.testing.assert_allclose(got, ((y + x) + np.float32(2.0) * x) - np.float32(0.5) * x, rtol=1e-5)
    bad = ctypes.create_string_buffer(28)  # a grid the device refuses: the driver's error, loop stops
    RECORD.pack_into(recs.records, 0, f.address, 0, ctypes.addressof(bad), 28, 0, 1, 1, 1, 4096, 1, 1, 0, 1)
    assert recs.launch(0, 1) == (0, 0, CUresult.CUDA_ERROR_INVALID_VALUE)
    backend.stream_destroy(stream)
    backend.module_unload(mod)


def test_streams_and_events(backend, ptx):
    mod = backend.module_load(ptx)
    spin, _ = backend.module_get_function(mod, "spin")
    s = backend.stream_create(1)
    e0, e1 = backend.event_create(0), backend.event_create(0)
    backend.event_record(e0, s)
    backend.launch(spin, (1, 1, 1), (1, 1, 1), 0, s, struct.pack("<q", 20_000_000))
    backend.event_record(e1, s)
    assert not backend.stream_query(s) and not backend.event_query(e1)
    backend.event_synchronize(e1)
    assert backend.event_query(e1) and backend.stream_query(s)
    assert 19.0 < backend.event_elapsed(e0, e1) < 40.0
    backend.stream_synchronize(s)
    backend.event_destroy(e0)
    backend.event_destroy(e1)
    backend.stream_destroy(s)
    backend.synchronize()


def test_out_of_memory_is_a_cuda_error(backend):
    from kvmgpu.backend.base import CudaError
    with pytest.raises(CudaError) as e:
        backend.mem_alloc(1 << 50)
    assert e.value.code == CUresult.CUDA_ERROR_OUT_OF_MEMORY


STICKY = r"""
import json, struct, sys
from kvmgpu.backend.cuda import CudaBackend
from kvmgpu.backend.base import CudaError
b = CudaBackend(0)
mod = b.module_load(open(sys.argv[1], "rb").read())
f, _ = b.module_get_function(mod, "write_oob")
p = b.mem_alloc(4)
b.launch(f, (1, 1, 1), (1, 1, 1), 0, None, struct.pack("<Qq", p, 1 << 40))
out = {}
try:
    b.synchronize()
except CudaError as e:
    out["sync"] = e.code
try:
    b.reset()
    out["reset"] = 0
except CudaError as e:
    out["reset"] = e.code
print(json.dumps(out))
"""


def test_sticky_error_and_reset(record):
    """In its own process: a sticky error poisons the process it happened in."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    ROOT = Path(__file__).resolve().parents[2]
    PTX = ROOT / "tests" / "kernels" / "kernels.ptx"
    r = subprocess.run([sys.executable, "-c", STICKY, str(PTX)], capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "PYTHONPATH": f"{ROOT / 'guest-agent'}:{ROOT}"})
    out = json.loads(r.stdout.strip().splitlines()[-1])
    record("sticky_reset", out)
    assert out["sync"] == CUresult.CUDA_ERROR_ILLEGAL_ADDRESS


def test_launch_cost(backend, ptx, record):
    """Queued empty launch through the backend (both parameter paths) against plain cuda.bindings."""
    from cuda.bindings import driver as cu
    mod = backend.module_load(ptx)
    f, _ = backend.module_get_function(mod, "spin")
    args = struct.pack("<q", 0)
    n = 20000
    out = {}
    for mode in ("params", "extra"):
        backend.launch_mode = mode
        best = 1e9
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(n):
                backend.launch(f, (1, 1, 1), (1, 1, 1), 0, None, args)
            backend.synchronize()
            best = min(best, (time.perf_counter() - t) / n * 1e6)
        out[f"backend_{mode}_us"] = best
    val = ctypes.c_longlong(0)
    ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(val))
    kp = ctypes.addressof(ptrs)
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            cu.cuLaunchKernel(f.handle, 1, 1, 1, 1, 1, 1, 0, 0, kp, 0)
        cu.cuCtxSynchronize()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    out["native_us"] = best
    record("launch_cost", out)
    backend.launch_mode = "params"


def test_the_thin_calls_answer_as_the_driver_does(backend):
    """The specification's calls forwarded as they are (ctx_get_flags, device_get_pci_bus_id,
    stream_get_priority) give what cuda.bindings gives natively in the same context."""
    from cuda.bindings import driver as cu
    assert backend.ctx_get_flags() == int(cu.cuCtxGetFlags()[1])
    native = bytes(cu.cuDeviceGetPCIBusId(32, backend.device)[1]).split(b"\0", 1)[0]
    assert backend.device_get_pci_bus_id() == native and native.count(b":") == 2
    stream = backend.stream_create(0)
    assert backend.stream_get_priority(stream) == int(cu.cuStreamGetPriority(stream)[1])
    assert backend.stream_get_priority(None) == int(cu.cuStreamGetPriority(cu.CUstream(0))[1])
    backend.stream_destroy(stream)


def test_function_occupancy_limit_and_2d_calls_answer_as_the_driver_does(backend, ptx):
    """Ops 50-57 on the cuda backend: a kernel's attributes, one set and read back, occupancy,
    a context limit and a tensor map as cuda.bindings gives them natively; a 2D copy and a 16-bit
    memset byte-exact."""
    from types import SimpleNamespace

    from cuda.bindings import driver as cu
    mod = backend.module_load(ptx)
    f, _ = backend.module_get_function(mod, "saxpy")
    fn = SimpleNamespace(backend=f)  # (what the worker passes: its Function)
    f = f.handle  # (the driver's CUfunction, for cuda.bindings' own calls)
    values = struct.unpack("<16i", backend.func_get_attributes(fn))
    assert values[0] == int(cu.cuFuncGetAttribute(cu.CUfunction_attribute(0), f)[1])
    assert values[4] == int(cu.cuFuncGetAttribute(cu.CUfunction_attribute(4), f)[1])
    backend.func_set_attribute(fn, 8, 64 * 1024)
    assert struct.unpack("<16i", backend.func_get_attributes(fn))[8] == 64 * 1024
    with pytest.raises(CudaError):
        backend.func_set_attribute(fn, 0, 1)  # MAX_THREADS_PER_BLOCK cannot be set
    native = int(cu.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(f, 256, 0, 0)[1])
    assert backend.occupancy_max_blocks(fn, 256, 0, 0) == native > 0
    assert backend.occupancy_available_smem(fn, 2, 256) == int(cu.cuOccupancyAvailableDynamicSMemPerBlock(f, 2, 256)[1])
    assert backend.ctx_get_limit(0) == int(cu.cuCtxGetLimit(cu.CUlimit(0))[1]) > 0
    assert backend.occupancy_max_clusters(fn, 2, 1, 1, 128, 1, 1, 0, 2, 1, 1) > 0  # (an H100: by its GPCs)
    r = backend.region
    r[0:4096] = bytes(i % 251 for i in range(4096))
    a, b = backend.mem_alloc(4096), backend.mem_alloc(4096)
    backend.memcpy_htod(a, 0, 4096, None, True)
    backend.memset(b, 0xEEEE, 2048, 2, None, True)
    backend.memcpy_2d(b + 1, 100, a + 3, 64, 10, 5, None, True)
    backend.memcpy_dtoh(8192, b, 500, None)
    got = bytes(r[8192:8692])
    for i in range(5):
        assert got[1 + 100 * i: 11 + 100 * i] == bytes(r[3 + 64 * i: 13 + 64 * i])
    assert got.count(b"\xee") == 450
    encoded = backend.tensor_map_encode_tiled(0, 2, a, (64, 64), (64,), (16, 4), (1, 1), 0, 0, 0, 0)
    native = cu.cuTensorMapEncodeTiled(cu.CUtensorMapDataType(0), 2, a, [64, 64], [64], [16, 4], [1, 1],
                                       cu.CUtensorMapInterleave(0), cu.CUtensorMapSwizzle(0),
                                       cu.CUtensorMapL2promotion(0), cu.CUtensorMapFloatOOBfill(0))[1]
    assert encoded == struct.pack("<16Q", *(int(q) for q in native.opaque))
    encoded = backend.tensor_map_encode_im2col(0, 4, a, (8, 4, 4, 2), (8, 32, 128), (0, 0), (0, 0), 8, 16,
                                               (1, 1, 1, 1), 0, 0, 0, 0)
    native = cu.cuTensorMapEncodeIm2col(cu.CUtensorMapDataType(0), 4, a, [8, 4, 4, 2], [8, 32, 128], [0, 0], [0, 0],
                                        8, 16, [1, 1, 1, 1], cu.CUtensorMapInterleave(0), cu.CUtensorMapSwizzle(0),
                                        cu.CUtensorMapL2promotion(0), cu.CUtensorMapFloatOOBfill(0))[1]
    assert encoded == struct.pack("<16Q", *(int(q) for q in native.opaque))
    backend.mem_free(a)
    backend.mem_free(b)
    backend.module_unload(mod)
