"""NVIDIA's CUDA runtime on the native guest library: an unmodified cuda-samples style program
(tests/guest/programs/vector_add_runtime.cu), built by nvcc with the runtime linked static
(nvcc's default) and shared (-cudart shared), runs on libcuda.so.1 against a `kvmgpu worker
--backend sim` in loopback, its kernels reaching the host as the fatbin the runtime registers.
Needs nvcc (the CUDA toolkit); skipped, saying so, where it is not there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from loopback import PROGRAMS, ROOT
from test_libcuda import libcuda_build

SOURCE = PROGRAMS / "vector_add_runtime.cu"
PTX = ("-gencode", "arch=compute_80,code=compute_80")  # the fatbin carries PTX, which the sim reads
EVERY_CHECK = ("device: count=1 name=kvmgpu sim device", "vectorAdd (0 wrong)", "saxpy on a stream (0 wrong)",
               "elapsed time not negative", "memset (0 wrong)", "streams ordered by an event (0 wrong)",
               "streams host function and callback (11)", "stream priorities", "PCI bus id",
               "symbols (0 wrong, read back 2.5)", "cache preferences (1)", "unified copies",
               "unified pointer attributes", "managed memory refused: cudaErrorNotSupported",
               "mapped page-locked memory refused: cudaErrorNotSupported", "freeing what is not page-locked: cuda",
               "page-locked copies", "page-locked registered range", "everything freed", "after a reset")


def nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        pytest.skip("no nvcc here (the CUDA toolkit)")
    return path


def cuda_lib_dir() -> Path:
    """CUDA's lib64 (libcudart.so): beside nvcc, else CUDA_HOME's or /usr/local/cuda's."""
    import os
    for d in (Path(nvcc()).resolve().parent.parent / "lib64",
              Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "lib64"):
        if any(d.glob("libcudart.so.*")):
            return d.resolve()
    pytest.skip("no libcudart.so beside nvcc or in $CUDA_HOME/lib64")


def build(out: Path, lib_dir: Path, *flags: str, source: Path = SOURCE) -> Path:
    """The program, with CUDA's lib64 on its run path (for -cudart shared's libcudart.so). The
    runtime dlopen()s libcuda.so.1, which a shared libcudart looks for on LD_LIBRARY_PATH, not
    on the program's run path: `run` puts `lib_dir` there, as `kvmgpu-guest run` does."""
    subprocess.run([nvcc(), *flags, "-o", str(out), str(source),
                    "-Xlinker", f"-rpath={lib_dir}:{cuda_lib_dir()}"], check=True, cwd=out.parent)
    return out


@pytest.fixture(scope="module")
def lib_dir(tmp_path_factory):
    if libcuda_build.compiler() is None:
        pytest.skip("no C compiler (gcc) to build libcuda.so.1")
    nvcc()
    d = tmp_path_factory.mktemp("libcuda")
    libcuda_build.build(d)
    return d


@pytest.fixture(scope="module")
def static(lib_dir):
    return build(lib_dir / "vector_add_static", lib_dir, *PTX)


@pytest.fixture(scope="module")
def shared(lib_dir):
    return build(lib_dir / "vector_add_shared", lib_dir, "-cudart", "shared", *PTX)


def run(program, worker, *args, env=None, ok=True):
    proc = subprocess.run([str(program), *args], capture_output=True, text=True, timeout=180,
                          env={**worker.env, "LD_LIBRARY_PATH": str(program.parent), **(env or {})})
    if ok:
        assert proc.returncode == 0 and proc.stdout.rstrip().endswith("DONE") and "FAIL" not in proc.stdout, \
            f"{proc.stdout}\n{proc.stderr}\n--- worker ---\n{worker.output()}"
    return proc


def test_static_runtime_program_runs_unmodified(static, worker):
    proc = run(static, worker)
    for check in EVERY_CHECK:
        assert f"OK {check}" in proc.stdout, proc.stdout
    assert "total=67108864" in proc.stdout  # the vGPU's quota, not a GPU's memory
    # what the VM is not given is named once, when the program uses it; every table slot the
    # runtime called is provided
    assert proc.stderr.count("cuMemAllocManaged is not forwarded to the vGPU") == 1, proc.stderr
    assert "not provided" not in proc.stderr and "not a driver function" not in proc.stderr, proc.stderr
    assert "client 'kvmgpu libcuda/" in worker.output()


def test_shared_runtime_program_runs_unmodified(shared, worker):
    assert b"libcudart.so" in subprocess.run(["readelf", "-d", str(shared)], capture_output=True).stdout
    proc = run(shared, worker)
    for check in EVERY_CHECK:
        assert f"OK {check}" in proc.stdout, proc.stdout


def test_a_matrix_mul_in_cuda_samples_style(lib_dir, worker):
    """A templated shared-memory kernel (mangled MatrixMulCUDA<16>), page-locked buffers, a
    non-blocking stream, repeated launches between events."""
    prog = build(lib_dir / "matrix_mul", lib_dir, *PTX, source=PROGRAMS / "matrix_mul_runtime.cu")
    out = run(prog, worker).stdout
    assert "OK matrixMul 80x64 (0 wrong)" in out and "OK matrixMul time measured" in out, out


def test_what_pytorch_asks_of_the_runtime(lib_dir, worker):
    """tests/guest/programs/runtime_features.cu: device properties, function attributes and
    occupancy, cudaLaunchKernelExC, 2D/3D copies and memsets, cudaMallocAsync inside the quota,
    the memory pool, limits; the sim's answers are an H100's (kvmgpu/backend/sim.py)."""
    prog = build(lib_dir / "runtime_features", lib_dir, *PTX, source=PROGRAMS / "runtime_features.cu")
    proc = run(prog, worker)
    out = proc.stdout
    expected = [
        # every field from the WELCOME's attributes (sim.ATTRIBUTES), no call to the host
        "OK properties: cc=9.0 sms=132 warp=32 threads/block=1024 threads/sm=2048 block=1024x1024x64 "
        "grid=2147483647x65535x65535 smem/block=49152 smem/sm=233472 optin=232448 regs/block=65536 "
        "regs/sm=65536 const=65536 l2=52428800 bus=5120 pitch=2147483647 unified=1 concurrent=1 engines=2",
            "-- managed memory: 0",  # a VM is not given it (kvmgpu/worker/vgpu.py NOT_GIVEN)
        "OK function attributes: threads=1024 dynamic smem=49152",
        "OK launch with 102400 bytes of dynamic shared memory (attribute 102400, 0 wrong)",
        # 256 threads at 32 registers: 8 blocks by threads and by registers; 1024 fills a multiprocessor;
        # two blocks could have 115712 bytes each, but the kernel's own limit is now 102400
        "OK occupancy: 8 blocks of 256, best block 1024 grid 264, 102400 bytes for 2 blocks",
        # (clusters are the kernel's required cluster dimensions for that launch only)
        "OK cudaLaunchKernelExC (0 wrong; in clusters of 2: 0 wrong; then 7 blocks: 0 wrong; required cluster width 0)",
        "-- a cooperative launch: cudaErrorNotSupported",
        "OK max active clusters of 2 blocks of 128: 1056",  # (16 blocks a multiprocessor, 132 of them)
        "OK cudaMemcpy2D host->device->device->host (0 wrong)", "OK cudaMemset2D (0 wrong)",
        "OK cudaMemcpy3D (same)", "OK cudaMallocAsync(total + 1) = cudaErrorMemoryAllocation",
        # (charged at its size on the GPU: 2 MiB pages)
        "OK cudaMallocAsync charged to the quota (2097152 less, then back: 1; last byte 7)",
        "OK memory pool release threshold (67108864)",
        "OK limits: stack=1024 heap=8388608 fifo=1048576", "-- a larger malloc heap: cudaErrorNotSupported",
        "OK tensor map of a 64x64 tensor (0)", "OK tensor map moved to another tensor (0)",
        "OK im2col tensor map of an NHWC tensor (0)", "-- a tensor map past its allocation: 1",  # INVALID_VALUE
    ]
    for line in expected:
        assert line in out, out
    # what is refused is named once, on stderr
    assert "cooperative launch" in proc.stderr and "CU_LIMIT_MALLOC_HEAP_SIZE" in proc.stderr, proc.stderr
    import re
    assert not re.search(r"kvmgpu: cu\w+ is not forwarded", proc.stderr), proc.stderr  # (no stub was called)


def test_four_threads_each_with_a_stream(static, worker):
    assert "OK four threads (0 0 0 0)" in run(static, worker, "threads").stdout


def test_kvmgpu_guest_run_runs_a_shared_runtime_program_without_rpath(worker, tmp_path):
    """As a user runs one: nvcc's build with no run path to the library, `kvmgpu-guest run`
    putting the package's libcuda.so.1 first for the program and the libcudart.so it loads."""
    import os
    import sys

    from kvmgpu_guest import cli
    if not os.path.exists(os.path.join(cli.LIB_DIR, "libcuda.so.1")):
        pytest.skip(f"kvmgpu-guest was installed without libcuda.so.1 ({cli.LIB_DIR}; `make venv` builds it)")
    prog = tmp_path / "vector_add_shared"
    subprocess.run([nvcc(), "-cudart", "shared", *PTX, "-o", str(prog), str(SOURCE),
                    "-Xlinker", f"-rpath={cuda_lib_dir()}"], check=True, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "KVMGPU_SOCKET", "KVMGPU_SHM")}
    proc = subprocess.run([sys.executable, "-c", "import sys; from kvmgpu_guest.cli import main; sys.exit(main())",
                           "run", "--socket", worker.socket, "--shm", worker.shm, "--", str(prog), "quota"],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0 and "OK cudaMalloc(total + 1) = cudaErrorMemoryAllocation" in proc.stdout, \
        proc.stdout + proc.stderr


def test_past_the_quota_is_a_memory_allocation_error(static, worker):
    assert "OK cudaMalloc(total + 1) = cudaErrorMemoryAllocation" in run(static, worker, "quota").stdout


def test_the_fatbin_goes_to_the_host_once(lib_dir, static, worker):
    """Two runs of a program: the first sends its fatbin, the second finds it on the host by its
    sha256. (vector_add_runtime's fatbin declares a __device__ variable: its module is unloaded
    with its last handle, the memory going back to the quota, and so is sent again.) The runtime's
    context-local storage destructors run at cudaDeviceReset."""
    prog = build(lib_dir / "matrix_mul_twice", lib_dir, *PTX, source=PROGRAMS / "matrix_mul_runtime.cu")
    first = run(prog, worker, env={"KVMGPU_LOG": "trace"}).stderr
    second = run(prog, worker, env={"KVMGPU_LOG": "trace"}).stderr
    assert first.count("sent to the host") == 1 and "the host has it" not in first, first
    assert second.count("the host has it") == 1 and "sent to the host" not in second, second
    with_globals = run(static, worker, env={"KVMGPU_LOG": "trace"}).stderr
    assert "CONTEXT_LOCAL_STORAGE destructor" in with_globals
    assert "INTEGRITY_CHECK.check" in with_globals and "cuLibraryLoadData: library" in with_globals


def test_fatbins_go_to_the_host_when_first_used(static, worker):
    """As CUDA_MODULE_LOADING=LAZY: a run that launches no kernel sends no image and asks the host
    nothing about one (PyTorch registers hundreds of fatbins and uses a few: its start-up was 912
    MODULE_LOADs); EAGER loads them as the runtime registers them. (The runtime asks
    cuModuleGetLoadingMode and defers its own cuLibraryLoadData; a library loaded is still sent
    only when a kernel or global of it is asked for.)"""
    lazy = run(static, worker, "quota", env={"KVMGPU_LOG": "trace"}).stderr
    assert "module image of" not in lazy, lazy
    eager = run(static, worker, "quota", env={"KVMGPU_LOG": "trace", "CUDA_MODULE_LOADING": "EAGER"}).stderr
    assert "module image of" in eager, eager


def test_a_fatbin_without_ptx_is_a_named_error_on_sim(lib_dir, worker, tmp_path):
    """sm_80 machine code only: the sim backend cannot run it; the program gets the runtime's
    error, not a crash, and the library logs the host's reason and what to build instead."""
    prog = build(tmp_path / "cubin_only", lib_dir, "-gencode", "arch=compute_80,code=sm_80")
    proc = run(prog, worker, ok=False)
    assert proc.returncode == 1 and "cudaErrorNoKernelImageForDevice" in proc.stdout, proc.stdout + proc.stderr
    assert "the fatbin carries no PTX (only sm_80)" in proc.stderr
    assert "code=compute_80" in proc.stderr


def test_a_kernel_the_sim_cannot_run_is_an_error_naming_it(static, worker):
    proc = run(static, worker, "square")
    assert "OK square: cuda" in proc.stdout, proc.stdout
    assert "the vGPU cannot run kernel _Z6squarePfi" in proc.stderr and "use --backend cuda" in proc.stderr, \
        proc.stderr


def test_library_built_with_asan_runs_the_static_program(worker, sanitized_libcuda):
    """libcuda.so.1 built with AddressSanitizer and UBSan (the program is nvcc's, not sanitized:
    the sanitizers' runtimes are preloaded) runs the whole static program, and runtime_features
    (2D/3D copies, attributes, occupancy, pools)."""
    sanitized, env = sanitized_libcuda
    prog = build(sanitized / "vector_add_static", sanitized, *PTX)
    proc = run(prog, worker, env=env)
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    assert "OK vectorAdd (0 wrong)" in proc.stdout
    features = build(sanitized / "runtime_features", sanitized, *PTX, source=PROGRAMS / "runtime_features.cu")
    proc = run(features, worker, env=env)
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr


def test_nvidia_cuda_bindings_run_on_the_library(lib_dir, worker):
    """NVIDIA's cuda-bindings from PyPI (where this Python has them: `pip install cuda-bindings`)
    load libcuda.so.1 and run: it resolves every function it knows, those of CUDA versions after
    the library's named in one line."""
    import sys
    probe = subprocess.run([sys.executable, "-c", "import cuda.bindings.driver"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("NVIDIA's cuda-bindings are not installed in this Python (pip install cuda-bindings)")
    from loopback import need_kernels
    proc = subprocess.run([sys.executable, str(PROGRAMS / "cuda_bindings_driver.py"), str(need_kernels())],
                          capture_output=True, text=True, timeout=120,
                          env={**worker.env, "LD_LIBRARY_PATH": str(lib_dir)})
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("DONE") and "FAIL" not in proc.stdout, \
        proc.stdout + proc.stderr
    assert "OK device kvmgpu sim device total=67108864" in proc.stdout
    assert proc.stderr.count("kvmgpu: ") <= 1, proc.stderr  # (at most the newer-functions line)


def test_gpu_script_is_valid_shell():
    """bench/gpu/libcuda_gpu.sh runs these programs on the GPU machine (the lead's run)."""
    script = ROOT / "bench" / "gpu" / "libcuda_gpu.sh"
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
