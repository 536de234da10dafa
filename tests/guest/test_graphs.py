"""CUDA graphs captured from a stream, on libcuda.so.1 against a `kvmgpu worker --backend sim` in
loopback: tests/guest/programs/graphs_runtime.cu (nvcc, the runtime linked static) captures a
memset and vectorAdd / saxpy launches in thread-local and global mode, asks the capture queries
during the capture, launches the graph three times and checks the bytes; the unsafe calls a
global capture forbids are refused and invalidate it, as on the driver. The capture itself is the
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
    "synchronous cudaMemcpy during global capture: cudaErrorStreamCaptureUnsupported",
    "end after it: cudaErrorStreamCaptureInvalidated",
    "cudaDeviceSynchronize during capture: cudaErrorStreamCaptureUnsupported",
    "end after that: cudaErrorStreamCaptureInvalidated", "global graph launched 3 times (0 wrong)",
    "thread-local graph again launched 3 times (0 wrong)", "everything destroyed")


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
