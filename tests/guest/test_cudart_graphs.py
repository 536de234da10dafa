"""CUDA graphs captured from a stream, on libcuda.so.1 against a `kvmgpu worker --backend sim` in
loopback: tests/guest/programs/graphs_runtime.cu (nvcc, the runtime linked static) captures a
memset and vectorAdd / saxpy launches in thread-local and global mode, asks the capture queries
during the capture, launches the graph three times and checks the bytes; the unsafe calls a
global capture forbids are refused and invalidate it, as on the driver (a synchronous copy only
where it would wait for the capturing stream: a blocking one). The capture itself is the
worker's (kvmgpu/worker/graphs.py). Needs nvcc; skipped, saying so, where it is not there."""

from __future__ import annotations

import pytest

from loopback import PROGRAMS
from test_cudart import PTX, build, lib_dir, run  # noqa: F401 (lib_dir: the fixture)

SOURCE = PROGRAMS / "graphs_runtime.cu"
EVERY_CHECK = (
    "not capturing before", "capture info: active, id set", "the null stream is not capturing",
    "relaxed thread's cudaMalloc during capture", "another thread's cudaMalloc during a thread-local capture",
    "not capturing after", "thread-local graph launched 3 times (0 wrong)",
    "another thread's cudaMalloc during a global capture: cudaErrorStreamCaptureUnsupported",
    "cudaMalloc during global capture: cudaErrorStreamCaptureUnsupported", "invalidated",
    "end of an invalidated capture: cudaErrorStreamCaptureInvalidated", "no graph from it",
    "synchronous cudaMemcpy during a global capture of a non-blocking stream: cudaSuccess", "end after it: cudaSuccess",
    "a stream's flags", "the capturing stream's flags",
    "synchronous cudaMemcpy while a blocking stream captures: cudaErrorStreamCaptureImplicit",
    "end of that capture: cudaErrorStreamCaptureInvalidated",
    "cudaDeviceSynchronize during capture: cudaErrorStreamCaptureUnsupported",
    "end after that: cudaErrorStreamCaptureInvalidated",
    "another stream waits for an event during a global capture: cudaSuccess", "global graph launched 3 times (0 wrong)",
    "thread-local graph again launched 3 times (0 wrong)", "everything destroyed")

DRIVER_CHECKS = (
    "the graph's node count is the one launch captured", "the nodes themselves: CUDA_ERROR_NOT_SUPPORTED",
    "cuGetProcAddress gives each version its variant", "a graph built by hand: CUDA_ERROR_NOT_SUPPORTED",
    "end of a stream not capturing: CUDA_ERROR_ILLEGAL_STATE",
    "capture of the legacy stream: CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
    "a bad mode: CUDA_ERROR_INVALID_VALUE", "a bad thread mode: CUDA_ERROR_INVALID_VALUE",
    "a second capture of the stream: CUDA_ERROR_ILLEGAL_STATE",
    "a copy from the host into the capture: CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
    "a global capture ended on another thread: CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD",
    "capture info: active, an id, a graph, no dependencies",
    "the graph under capture is not the program's to instantiate: CUDA_ERROR_INVALID_HANDLE",
    "the capture ended as it went on", "instantiated with params", "launched (0 wrong)",
    "instantiated the CUDA 11 way",
    "a synchronise of the capturing stream: CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "invalidated by it",
    "a relaxed capture ended on another thread: CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
    "no capture left to end: CUDA_ERROR_ILLEGAL_STATE",
    "an allocation once the capturing stream is destroyed: CUDA_SUCCESS",
    "an executable graph destroyed twice: CUDA_ERROR_INVALID_HANDLE",
    "fork: the side stream is not capturing before it waits", "fork: the side stream joined the capture",
    "fork: the capture's end ends the side stream's", "fork: the graph has the two launches",
    "fork: nothing ran while captured", "fork: the graph launched both streams' work (0 wrong)",
    "fork: a fork not joined back: CUDA_ERROR_STREAM_CAPTURE_UNJOINED",
    "fork: ... ends the side stream's capture too",
    "fork: the capture ended on the stream that joined it: CUDA_ERROR_STREAM_CAPTURE_UNMATCHED",
    "fork: ... invalidates it: CUDA_ERROR_STREAM_CAPTURE_INVALIDATED", "fork: a wait outside a capture (0 wrong)")


@pytest.fixture(scope="module")
def graphs(lib_dir):  # noqa: F811
    return build(lib_dir / "graphs_runtime", lib_dir, *PTX, source=SOURCE)


def test_graphs_are_captured_and_replayed(graphs, worker):
    out = run(graphs, worker).stdout
    for check in EVERY_CHECK:
        assert f"OK graphs: {check}" in out, out


def test_a_destroyed_executable_graph_is_an_invalid_handle(graphs, worker):
    out = run(graphs, worker, "destroyed").stdout
    assert "graphs: destroyed executable graph launched: cudaErrorInvalidResourceHandle" in out, out


def test_the_driver_api_s_capture_and_graph_calls(lib_dir, worker):  # noqa: F811
    """tests/guest/programs/graphs_driver.c (gcc, CUDA's cuda.h, -lcuda): the variants
    cuGetProcAddress gives by version, cuGraphInstantiateWithParams with an upload, the capture's
    own errors, the graph cuStreamGetCaptureInfo names."""
    import subprocess

    from loopback import need_kernels
    from test_libcuda import cuda_include
    include = cuda_include()
    if include is None:
        pytest.skip("CUDA's cuda.h is not here (install the CUDA toolkit's headers or set CUDA_HOME)")
    prog = lib_dir / "graphs_driver"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-I", str(include), str(PROGRAMS / "graphs_driver.c"),
                    "-L", str(lib_dir), "-lcuda", "-lpthread", "-o", str(prog), f"-Wl,-rpath,{lib_dir}"],
                   check=True)
    proc = run(prog, worker, str(need_kernels()))
    out = proc.stdout
    assert "cuGraphCreate is not forwarded to the vGPU (CUDA_ERROR_NOT_SUPPORTED)" in proc.stderr, proc.stderr
    for check in DRIVER_CHECKS:
        assert f"OK {check}" in out, out


def test_graphs_with_the_library_built_with_asan(worker, sanitized_libcuda):
    """capture.c's tables and threads under AddressSanitizer and UBSan (as test_cudart's run)."""
    sanitized, env = sanitized_libcuda
    prog = build(sanitized / "graphs_runtime", sanitized, *PTX, source=SOURCE)
    proc = run(prog, worker, env=env)
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    assert "OK graphs: global graph launched 3 times (0 wrong)" in proc.stdout
