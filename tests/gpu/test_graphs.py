"""Stream capture and CUDA graphs on the cuda backend (the lead runs these on the GPU machine):
what the worker captures on a stream replays right, and the compute meter's calls leave a capture
alone where the driver's rules say a null-stream record or a context drain would invalidate it
(kvmgpu/compute/meter.py; the sim backend keeps the same rules, tests/worker/test_capture.py)."""

import mmap
import struct
from pathlib import Path

import pytest

from kvmgpu.backend.base import CudaError
from kvmgpu.compute.meter import EventMeter
from kvmgpu_wire.cudefs import CUresult

pytestmark = pytest.mark.gpu
N = 4096
PTX = Path(__file__).resolve().parents[1] / "kernels" / "kernels.ptx"


@pytest.fixture
def backend():
    from kvmgpu.backend.cuda import CudaBackend
    b = CudaBackend(0)
    region = mmap.mmap(-1, 16 << 20)
    view = memoryview(region)
    b.attach_region(view)
    b.region = view
    yield b
    b.close()


def _saxpy(b):
    """(function, x, y): x = 1, 2, ..., y = 0, and saxpy's function."""
    fn, _ = b.module_get_function(b.module_load(PTX.read_bytes()), "saxpy")
    x, y = b.mem_alloc(4 * N), b.mem_alloc(4 * N)
    b.region[0: 4 * N] = struct.pack(f"<{N}f", *range(1, N + 1))
    b.memcpy_htod(x, 0, 4 * N, None, True)
    b.memset(y, 0, N, 4, None, True)
    return fn, x, y


def _launch(b, fn, x, y, stream):
    b.launch(fn, ((N + 255) // 256, 1, 1), (256, 1, 1), 0, stream, struct.pack("<fxxxxQQi", 2.0, x, y, N))


def test_a_captured_graph_replays_on_the_gpu(backend):
    b = backend
    fn, x, y = _saxpy(b)
    stream = b.stream_create(0)  # blocking, as every guest stream under a compute gate
    b.stream_begin_capture(stream)
    assert b.capturing == 1
    _launch(b, fn, x, y, stream)
    meter = EventMeter(b)  # the gate's calls during a capture: none may invalidate it
    meter.begin()
    meter.work()
    meter.mark_idle()
    meter.finish()
    graph = b.stream_end_capture(stream)
    assert b.capturing == 0
    exe = b.graph_instantiate(graph, 0)
    b.graph_upload(exe, stream)
    for _ in range(3):
        b.graph_launch(exe, stream)
    b.stream_synchronize(stream)
    b.memcpy_dtoh(0, y, 4 * N, None)
    assert struct.unpack(f"<{N}f", bytes(b.region[0: 4 * N])) == tuple(6.0 * i for i in range(1, N + 1))
    b.graph_exec_destroy(exe)
    b.graph_destroy(graph)
    b.stream_destroy(stream)


def test_the_driver_invalidates_a_capture_as_the_meter_assumes(backend):
    """A null-stream event record while a blocking stream captures is refused and invalidates the
    capture (why the meter records nothing then); so is a context synchronise."""
    b = backend
    fn, x, y = _saxpy(b)
    for breaker in (lambda: b.event_record(b.event_create(0), None), b.synchronize):
        stream = b.stream_create(0)
        b.stream_begin_capture(stream)
        _launch(b, fn, x, y, stream)
        with pytest.raises(CudaError):
            breaker()
        with pytest.raises(CudaError) as e:
            b.stream_end_capture(stream)
        assert e.value.code == CUresult.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        assert b.capturing == 0
        b.stream_destroy(stream)
