"""End to end: unmodified cuda-python programs under `kvmgpu-guest run`, against a real
`kvmgpu worker --backend sim` in loopback mode (started per test, stopped in a finalizer)."""

import json
import shutil
import subprocess
import sys

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
    assert out[:3] == ["CUDA_SUCCESS", "CUDA_ERROR_INVALID_VALUE", "CUDA_SUCCESS"]  # queued, reported once
    assert out[3:] == ["CUDA_ERROR_INVALID_VALUE", "CUDA_SUCCESS"]  # wrong argument count: at once


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


def test_driver_calls_in_a_program(guest_python):
    """kvmgpu_guest.driver (on the guest's libcuda.so.1): cuda-python's tuples, handles and errors."""
    guest_python("""
        import ctypes
        assert cuda.cuMemAlloc(16)[0] == cuda.CUresult.CUDA_ERROR_NOT_INITIALIZED
        assert cuda.cuInit(0) == (cuda.CUresult.CUDA_SUCCESS,)
        assert cuda.cuMemAlloc(16)[0] == cuda.CUresult.CUDA_ERROR_INVALID_CONTEXT
        _, dev = cuda.cuDeviceGet(0)
        _, ctx = cuda.cuCtxCreate(None, 0, dev)  # cuda-python 13's form
        assert cuda.cuCtxGetCurrent() == (cuda.CUresult.CUDA_SUCCESS, ctx)
        err, name = cuda.cuDeviceGetName(64, dev)
        assert err == 0 and name.split(b"\\0")[0] == b"kvmgpu sim device" and len(name) == 64
        assert cuda.cuDeviceGetAttribute(
            cuda.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)[1] >= 1
        _, dptr = cuda.cuMemAlloc(1024)
        buf = (ctypes.c_uint32 * 256)()
        assert cuda.cuMemsetD32Async(dptr, 0xABCD, 256, cuda.CUstream(0)) == (0,)
        assert cuda.cuMemcpyDtoH(buf, dptr, 1024) == (0,)
        assert list(buf) == [0xABCD] * 256
        assert cuda.cuMemcpyDtoH(b"read-only" * 200, dptr, 1024) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE,)
        assert cuda.cuMemcpyHtoD(dptr, b"short", 1024) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE,)
        assert cuda.cuMemFree(int(dptr) + 8) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE,)  # not a base
        assert cuda.cuMemFree(dptr) == (0,)
        _, stream = cuda.cuStreamCreate(cuda.CUstream_flags.CU_STREAM_NON_BLOCKING)
        assert cuda.cuStreamQuery(stream) == (0,)
        assert cuda.cuStreamDestroy(stream) == (0,)
        assert cuda.cuGetErrorString(cuda.CUresult.CUDA_ERROR_OUT_OF_MEMORY) == (0, b"out of memory")
        assert cuda.cuGetErrorName(999999) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE, None)
        try:
            cuda.cuGraphLaunch
        except AttributeError as e:
            assert "kvmgpu does not forward cuGraphLaunch" in str(e)
        else:
            raise AssertionError("cuGraphLaunch is not in kvmgpu_guest.driver")
        assert cuda.cuCtxDestroy(ctx) == (0,)
        print("DONE")
    """)


def test_copies_bigger_than_the_window_come_back_whole(guest_python):
    """Copies of several MiB (the loopback window is a few), the source overwritten as soon as each
    cuMemcpyHtoD returns: each lands whole."""
    guest_python("""
        import os
        cuda.cuInit(0)
        _, ctx = cuda.cuCtxCreate(0, cuda.cuDeviceGet(0)[1])
        n = (5 << 20) + 4100
        _, dptr = cuda.cuMemAlloc(n)
        src = bytearray(n)
        for _ in range(3):
            src[:] = os.urandom(n)
            expect = bytes(src)
            assert cuda.cuMemcpyHtoD(dptr, src, n) == (0,)
            src[:] = bytes(n)
            out = bytearray(n)
            assert cuda.cuMemcpyDtoH(out, dptr, n) == (0,)
            assert out == expect
        assert cuda.cuMemcpyDtoH(out, int(dptr) + n - 8, 16) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE,)
        assert cuda.cuCtxDestroy(ctx) == (0,)
    """)


def test_the_library_keeps_its_own_functions_beside_another_libcuda(worker, tmp_path):
    """As kvmgpu.benchgpu runs: another libcuda.so.1 (NVIDIA's) loaded first, for everyone
    (RTLD_GLOBAL), then kvmgpu_guest.driver's: the library's calls to its own exported functions
    (cuDriverGetVersion's cuInit) stay its own, so the forwarded side is forwarded."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    (tmp_path / "other.c").write_text("int cuInit(unsigned flags) { (void)flags; return 999; }\n")
    other = tmp_path / "libcuda.so.1"
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", str(tmp_path / "other.c"), "-o", str(other)],
                   check=True)
    program = (f"import ctypes; ctypes.CDLL({str(other)!r}, mode=ctypes.RTLD_GLOBAL)\n"
               "from kvmgpu_guest import driver as cuda\n"
               "print(cuda.cuDriverGetVersion()[0].name)\n")
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, env=worker.env)
    assert proc.stdout.split() == ["CUDA_SUCCESS"], proc.stdout + proc.stderr
