"""The calls forwarded as they are (one specification entry each, guest-agent/kvmgpu_wire/spec.py:
CTX_GET_FLAGS, DEVICE_GET_PCI_BUS_ID, STREAM_GET_PRIORITY), through the guest's driver to a sim
worker in loopback: cuda-python's tuples, the sim device's answers, CUDA's errors."""

import subprocess
import textwrap

import pytest

SETUP = """
assert cuda.cuInit(0) == (0,)
_, ctx = cuda.cuCtxCreate(0, cuda.cuDeviceGet(0)[1])
"""


@pytest.fixture
def cuda_program(guest_python):
    """Runs code after cuInit and a context, in a guest process of its own (conftest's guest_python)."""
    return lambda code, prelude="": guest_python(SETUP + prelude + textwrap.dedent(code))


def test_cuCtxGetFlags_answers_the_host_context_s_flags(cuda_program):
    cuda_program("""
        assert cuda.cuCtxGetFlags() == (cuda.CUresult.CUDA_SUCCESS, 0)  # the sim's: CU_CTX_SCHED_AUTO
        cuda.cuCtxSetCurrent(None)
        assert cuda.cuCtxGetFlags() == (cuda.CUresult.CUDA_ERROR_INVALID_CONTEXT, None)
    """)


def test_cuDeviceGetPCIBusId_fills_the_buffer_as_cuda_python_does(cuda_program):
    cuda_program("""
        err, bus_id = cuda.cuDeviceGetPCIBusId(16, cuda.CUdevice(0))
        assert err == 0 and len(bus_id) == 16
        assert bus_id.split(b"\\0")[0] == b"0000:00:00.0"  # the sim device's PCI domain, bus, device
        assert cuda.cuDeviceGetPCIBusId(8, 0)[1].split(b"\\0")[0] == b"0000:00"  # cut to len - 1
        assert cuda.cuDeviceGetPCIBusId(16, 1) == (cuda.CUresult.CUDA_ERROR_INVALID_DEVICE, None)
        assert cuda.cuDeviceGetPCIBusId(0, 0) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE, None)
        cuda.cuCtxSetCurrent(None)  # a device query needs no context
        assert cuda.cuDeviceGetPCIBusId(16, 0)[0] == 0
    """)


def test_cuStreamGetPriority_of_a_stream_the_null_stream_and_a_destroyed_one(cuda_program):
    cuda_program("""
        _, stream = cuda.cuStreamCreate(0)
        assert cuda.cuStreamGetPriority(stream) == (0, 0)
        assert cuda.cuStreamGetPriority(cuda.CUstream(0)) == (0, 0)
        assert cuda.cuStreamDestroy(stream) == (0,)
        cuda.cuCtxSynchronize()
        assert cuda.cuStreamGetPriority(stream) == (cuda.CUresult.CUDA_ERROR_INVALID_HANDLE, None)
    """)


def test_a_session_s_first_stream_is_not_taken_for_the_null_stream(cuda_program):
    """Handles 1 and 2 are CU_STREAM_LEGACY and CU_STREAM_PER_THREAD to a guest: the host never
    hands them out, so the first stream a program makes is its own, and destroying it works."""
    cuda_program("""
        _, stream = cuda.cuStreamCreate(0)
        assert int(stream) not in (1, 2)
        assert cuda.cuStreamDestroy(stream) == (0,)
        assert cuda.cuCtxSynchronize() == (0,)
    """)


@pytest.mark.parametrize("stream", [-1, 1 << 64])
def test_cuStreamSynchronize_on_a_stream_that_is_no_u64_is_invalid_value(cuda_program, stream):
    cuda_program(f"""
        assert cuda.cuStreamSynchronize({stream}) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE,)
        assert cuda.cuStreamSynchronize(0) == (cuda.CUresult.CUDA_SUCCESS,)
    """)


C_PROGRAM = r"""
#include <cuda.h>
#include <stdio.h>
int main(void) {
    CUdevice dev; CUcontext ctx; CUstream stream; unsigned flags = 99; int priority = 99;
    char bus[16] = "x";
    if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) || cuCtxSetCurrent(ctx))
        return 1;
    int rc = cuDeviceGetPCIBusId(bus, sizeof bus, dev);
    printf("pci %d %s\n", rc, bus);
    printf("pci_bad_device %d\n", cuDeviceGetPCIBusId(bus, sizeof bus, 1));
    rc = cuCtxGetFlags(&flags);
    printf("flags %d %u\n", rc, flags);
    if (cuStreamCreate(&stream, 0))
        return 2;
    rc = cuStreamGetPriority(stream, &priority);
    printf("priority %d %d\n", rc, priority);
    cuStreamDestroy(stream);
    cuCtxSynchronize();
    printf("priority_destroyed %d\n", cuStreamGetPriority(stream, &priority));
    return 0;
}
"""


def test_the_native_library_forwards_them_too(worker, tmp_path):
    """libcuda.so.1's three exports, from a C program built against CUDA's cuda.h."""
    from test_libcuda import cuda_include, libcuda_build
    include = cuda_include()
    if include is None or libcuda_build.compiler() is None:
        pytest.skip("needs gcc and CUDA's cuda.h")
    libcuda_build.build(tmp_path)
    (tmp_path / "thin.c").write_text(C_PROGRAM)
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-I", str(include), str(tmp_path / "thin.c"),
                    "-L", str(tmp_path), "-lcuda", f"-Wl,-rpath,{tmp_path}", "-o", str(tmp_path / "thin")],
                   check=True)
    out = subprocess.run([str(tmp_path / "thin")], capture_output=True, text=True, timeout=60,
                         env=worker.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["pci 0 0000:00:00.0", "pci_bad_device 101", "flags 0 0",
                                       "priority 0 0", "priority_destroyed 400"]


def test_function_attributes_occupancy_limits_and_16_bit_memsets(cuda_program):
    """Ops 50-55 through the Python guest: the sim's H100 answers (kvmgpu/backend/sim.py), an
    attribute set and read back, a limit, a 16-bit memset byte for byte; a kernel's parameter
    table; module images in every form."""
    from loopback import need_kernels
    cuda_program(prelude=f"KERNELS = {str(need_kernels())!r}\n", code="""
    _, mod = cuda.cuModuleLoadData(open(KERNELS, "rb").read())
    err, f = cuda.cuModuleGetFunction(mod, b"saxpy")
    assert err == 0
    assert cuda.cuFuncGetAttribute(0, f) == (0, 1024)  # MAX_THREADS_PER_BLOCK
    assert cuda.cuFuncGetAttribute(16, f) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE, None)
    assert cuda.cuFuncSetAttribute(f, 8, 100 * 1024) == (0,)  # MAX_DYNAMIC_SHARED_SIZE_BYTES
    assert cuda.cuFuncGetAttribute(8, f) == (0, 100 * 1024)
    assert cuda.cuFuncSetAttribute(f, 8, 1 << 20)[0] == cuda.CUresult.CUDA_ERROR_INVALID_VALUE  # past the opt-in
    assert cuda.cuFuncSetAttribute(f, 0, 1)[0] == cuda.CUresult.CUDA_ERROR_INVALID_VALUE  # read-only
    assert cuda.cuOccupancyMaxActiveBlocksPerMultiprocessor(f, 256, 0) == (0, 8)
    assert cuda.cuCtxGetLimit(2) == (0, 8 << 20)  # CU_LIMIT_MALLOC_HEAP_SIZE
    assert cuda.cuCtxGetLimit(9) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE, None)
    _, p = cuda.cuMemAlloc(64)
    assert cuda.cuMemsetD8(p, 0x11, 64) == (0,)
    assert cuda.cuMemsetD16(int(p) + 2, 0xBEEF, 3) == (0,)
    got = bytearray(64)
    assert cuda.cuMemcpyDtoH(got, p, 64) == (0,)
    assert bytes(got[:10]) == b"\\x11\\x11" + b"\\xef\\xbe" * 3 + b"\\x11\\x11"
    assert cuda.cuMemsetD16(int(p) + 60, 0, 3)[0] == cuda.CUresult.CUDA_ERROR_INVALID_VALUE  # past the end
    cuda.cuMemFree(p)
    assert cuda.cuFuncGetParamInfo(f, 1) == (0, 8, 8)  # saxpy(float a, const float* x, ...): x
    assert cuda.cuFuncGetParamInfo(f, 3) == (0, 24, 4)
    assert cuda.cuFuncGetParamInfo(f, 4) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE, None, None)
    cuda.cuModuleUnload(mod)
    # an image in each form cuda-python takes: bytes, a buffer, a str, an address, a file
    import ctypes
    ptx = open(KERNELS, "rb").read()
    held = ctypes.create_string_buffer(ptx)
    for image in (bytearray(ptx), ptx.decode(), ctypes.addressof(held)):
        err, m = cuda.cuModuleLoadData(image)
        assert err == 0 and cuda.cuModuleGetFunction(m, b"saxpy")[0] == 0, (type(image), err)
    assert cuda.cuModuleLoad(KERNELS)[0] == 0
    assert cuda.cuModuleLoad("/nonexistent.ptx") == (cuda.CUresult.CUDA_ERROR_FILE_NOT_FOUND, None)
    assert cuda.cuModuleLoadData(object()) == (cuda.CUresult.CUDA_ERROR_INVALID_VALUE, None)
    """)
