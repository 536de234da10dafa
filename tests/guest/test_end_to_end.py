"""End to end: unmodified cuda-python programs under `kvmgpu-guest run`, against a real
`kvmgpu worker --backend sim` in loopback mode (started per test, stopped in a finalizer)."""

import ctypes
import json
import os
import subprocess
import sys
import time

import pytest

from kvmgpu_wire.protocol import PROTOCOL_VERSION

from loopback import PROGRAMS, need_kernels


def run(worker, *argv, timeout=120):
    cmd = [sys.executable, "-c", "import sys; from kvmgpu_guest.cli import main; sys.exit(main())",
           "run", "--socket", worker.socket, "--shm", worker.shm, "--", sys.executable, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n--- worker ---\n{worker.output()}"
    return proc.stdout


def test_vector_add_and_saxpy_with_every_kernel_params_form(worker):
    out = run(worker, str(PROGRAMS / "vector_add.py"), str(need_kernels()))
    for form in ("tuple form", "void** address form", "buffer form", "extra form", "saxpy", "events"):
        assert f"OK {form}" in out
    assert out.rstrip().endswith("DONE")


def test_memory_info_is_the_quota_and_past_it_is_out_of_memory(worker):
    got = json.loads(run(worker, str(PROGRAMS / "quota.py")))
    quota = 64 << 20
    assert got["total"] == got["total_mem"] == quota and got["free"] == quota
    assert got["big"] == "CUDA_ERROR_OUT_OF_MEMORY" and got["ok"] == 0
    assert got["free_after"] == quota // 2
    assert got["second"] == "CUDA_ERROR_OUT_OF_MEMORY"


def test_error_of_a_queued_launch_is_reported_at_synchronize(worker):
    out = run(worker, str(PROGRAMS / "bad_launch.py"), str(need_kernels())).split()
    assert out == ["CUDA_SUCCESS", "CUDA_ERROR_INVALID_VALUE", "CUDA_SUCCESS"]


def test_the_program_exit_status_comes_back(worker):
    cmd = [sys.executable, "-c", "import sys; from kvmgpu_guest.cli import main; sys.exit(main())",
           "run", "--socket", worker.socket, "--shm", worker.shm, "--", sys.executable, "-c",
           "from cuda.bindings import driver; import sys; sys.exit(driver.__name__ == 'kvmgpu_guest.driver' and 5)"]
    assert subprocess.run(cmd).returncode == 5


def test_info_shows_the_vgpu(worker):
    cmd = [sys.executable, "-c", "import sys; from kvmgpu_guest.cli import main; sys.exit(main())",
           "info", "--json", "--socket", worker.socket, "--shm", worker.shm]
    info = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    assert info["memory_total"] == 64 << 20 and info["memory_used"] == 0
    assert info["backend"] == "sim" and info["protocol_version"] == PROTOCOL_VERSION
    text = subprocess.run(cmd[:-5] + cmd[-4:], capture_output=True, text=True, check=True).stdout
    assert "sim (development backend" in text and "64 MiB" in text


def test_info_without_a_vgpu_is_one_line_and_fails(tmp_path):
    cmd = [sys.executable, "-c", "import sys; from kvmgpu_guest.cli import main; sys.exit(main())",
           "info", "--socket", str(tmp_path / "none.sock"), "--shm", str(tmp_path / "none")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kvmgpu-guest: ")


def test_in_process_driver_calls(fresh_driver):
    cuda = fresh_driver
    assert cuda.cuMemAlloc(16)[0] == cuda.CUresult.CUDA_ERROR_NOT_INITIALIZED
    assert cuda.cuInit(0) == (cuda.CUresult.CUDA_SUCCESS,)
    assert cuda.cuMemAlloc(16)[0] == cuda.CUresult.CUDA_ERROR_INVALID_CONTEXT
    _, dev = cuda.cuDeviceGet(0)
    _, ctx = cuda.cuCtxCreate(None, 0, dev)  # cuda-python 13's form
    assert cuda.cuCtxGetCurrent() == (cuda.CUresult.CUDA_SUCCESS, ctx)
    err, name = cuda.cuDeviceGetName(64, dev)
    assert err == 0 and name.split(b"\0")[0] == b"kvmgpu sim device" and len(name) == 64
    assert cuda.cuDeviceGetAttribute(
        cuda.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)[1] >= 1
    _, dptr = cuda.cuMemAlloc(1024)
    buf = (ctypes.c_uint32 * 256)()
    assert cuda.cuMemsetD32Async(dptr, 0xABCD, 256, cuda.CUstream(0)) == (0,)
    assert cuda.cuMemcpyDtoH(buf, dptr, 1024) == (0,)
    assert list(buf) == [0xABCD] * 256
    _, stream = cuda.cuStreamCreate(cuda.CUstream_flags.CU_STREAM_NON_BLOCKING)
    assert cuda.cuStreamQuery(stream) == (0,)
    assert cuda.cuStreamDestroy(stream) == (0,)
    assert cuda.cuGetErrorString(cuda.CUresult.CUDA_ERROR_OUT_OF_MEMORY) == (0, b"out of memory")
    with pytest.raises(AttributeError, match="kvmgpu does not forward cuGraphLaunch"):
        _ = cuda.cuGraphLaunch
    assert cuda.cuCtxDestroy(ctx) == (0,)


def test_a_synchronous_copy_into_an_allocation_returns_once_staged(fresh_driver):
    """cuMemcpyHtoD into memory the program allocated returns once its bytes are in the window
    (the caller may overwrite its buffer at once, as after a native pageable copy); a bad
    destination still fails at once, and a copy the guest cannot vouch for waits for the host."""
    cuda = fresh_driver
    cuda.cuInit(0)
    _, ctx = cuda.cuCtxCreate(0, cuda.cuDeviceGet(0)[1])
    session = cuda._session_for_tools()
    n = 3 << 20
    _, dptr = cuda.cuMemAlloc(n)
    src = bytearray(os.urandom(n))
    first = bytes(src)
    head = session._head
    assert cuda.cuMemcpyHtoD(dptr, src, n) == (0,)
    assert session._head > head  # queued: the ring is given back at the next FENCE, not now
    src[:] = bytes(n)  # the program reuses its buffer at once
    out = bytearray(n)
    assert cuda.cuMemcpyDtoH(out, dptr, n) == (0,)
    assert out == first
    # partly outside the allocation: the native error, at once
    assert cuda.cuMemcpyHtoD(int(dptr) + n - 8, src, 16) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE,)
    assert cuda.cuMemcpyHtoD(0x1234, src, 16) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE,)
    # many copies walk the whole window: the ring wraps (FENCE) and every copy lands
    chunk = 1 << 20
    for i in range(session.window_size // chunk + 3):
        src[:chunk] = bytes([i % 251]) * chunk
        assert cuda.cuMemcpyHtoD(int(dptr) + (i % 3) * chunk, src, chunk) == (0,)
    assert cuda.cuCtxSynchronize() == (0,)
    assert cuda.cuMemcpyDtoH(out, dptr, n) == (0,)
    last = session.window_size // chunk + 2
    for i in range(last - 2, last + 1):
        assert out[(i % 3) * chunk: (i % 3 + 1) * chunk] == bytes([i % 251]) * chunk
    assert cuda.cuMemFree(dptr) == (0,)
    assert cuda.cuCtxDestroy(ctx) == (0,)


@pytest.fixture
def driver_with_staging(request, monkeypatch):
    """kvmgpu_guest.driver against a worker whose region is big enough for the staging tail."""
    from kvmgpu_guest import driver

    from loopback import LoopbackWorker
    w = LoopbackWorker(region="32M")
    request.addfinalizer(w.stop)
    monkeypatch.setenv("KVMGPU_SOCKET", w.socket)
    monkeypatch.setenv("KVMGPU_SHM", w.shm)
    driver._reset_for_tests()
    yield driver
    driver._reset_for_tests()


@pytest.mark.parametrize("threads", [1, 4])
def test_device_to_host_in_pieces(driver_with_staging, monkeypatch, threads):
    """A cuMemcpyDtoH of several MiB goes as MEMCPY_DTOH_PIECES, copied out piece by piece (on one
    thread or several): the bytes come back whole; from memory the program does not own it fails
    with the native error at once (not after the 50 ms watch), also where the channel cannot be
    polled for the reply; the next copy works."""
    import kvmgpu_guest.client as client
    monkeypatch.setenv("KVMGPU_PIECE_THREADS", str(threads))  # read at cuInit
    cuda = driver_with_staging
    cuda.cuInit(0)
    _, ctx = cuda.cuCtxCreate(0, cuda.cuDeviceGet(0)[1])
    session = cuda._session_for_tools()
    n = (5 << 20) + 4100
    _, dptr = cuda.cuMemAlloc(n)
    data = os.urandom(n)
    assert cuda.cuMemcpyHtoD(dptr, data, n) == (0,)
    sent = []
    real = session._send_call
    monkeypatch.setattr(session, "_send_call", lambda op, *a: (sent.append(op), real(op, *a))[1])
    out = bytearray(n)
    assert cuda.cuMemcpyDtoH(out, dptr, n) == (0,)
    assert out == data and sent[-1] == client.Op.MEMCPY_DTOH_PIECES
    _, freed = cuda.cuMemAlloc(3 << 20)
    assert cuda.cuMemFree(freed) == (0,)
    t = time.perf_counter()
    assert cuda.cuMemcpyDtoH(out, freed, 3 << 20) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE,)
    assert time.perf_counter() - t < client.DTOH_SPIN_S
    monkeypatch.setattr(type(session.transport), "recv_nowait", None)  # as a virtio-serial port
    assert cuda.cuMemcpyDtoH(out, freed, 3 << 20) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE,)
    out[:] = bytes(n)
    assert cuda.cuMemcpyDtoH(out, dptr, n) == (0,)
    assert out == data
    assert cuda.cuCtxDestroy(ctx) == (0,)


def test_synchronous_copies_through_the_staging_slots(fresh_driver, monkeypatch):
    """Small staging slots (the ones of a real window are MiBs): copies of many slots each, the
    source overwritten as soon as each call returns, land whole; the ring is not used."""
    monkeypatch.setenv("KVMGPU_STAGE_CHUNK", str(64 << 10))  # read at cuInit
    cuda = fresh_driver
    cuda.cuInit(0)
    _, ctx = cuda.cuCtxCreate(0, cuda.cuDeviceGet(0)[1])
    session = cuda._session_for_tools()
    assert session._stage_base > 0
    n = 1 << 20  # 16 slots' worth: each of the two slots is refilled eight times a copy
    _, dptr = cuda.cuMemAlloc(n)
    src = bytearray(n)
    expect = b""
    for _ in range(5):
        src[:] = os.urandom(n)
        expect = bytes(src)
        assert cuda.cuMemcpyHtoD(dptr, src, n) == (0,)
    src[:] = bytes(n)
    assert session._head == 0  # nothing went through the ring
    out = bytearray(n)
    assert cuda.cuMemcpyDtoH(out, dptr, n) == (0,)
    assert out == expect
    assert cuda.cuCtxDestroy(ctx) == (0,)
