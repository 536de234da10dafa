"""PyTorch, unmodified, on libcuda.so.1 and libnvidia-ml.so.1 against a sim worker in loopback:
what a PyTorch user sees of the vGPU before any kernel runs (the device, the quota as its memory,
copies, page-locked memory, the out-of-memory error at the quota and working on after it), and
cuBLAS starting (its handle made: cuBLASLt's start-up looks the driver up with dlsym).

PyTorch's CUDA wheels are gigabytes, so they are not a test dependency: this runs where
KVMGPU_TEST_TORCH_PYTHON names a Python that has them (e.g. `python3 -m venv /tmp/t &&
/tmp/t/bin/pip install torch`), and is skipped, saying so, elsewhere. On the GPU machine the
frameworks run of bench/gpu/libcuda_gpu.sh covers the kernels too."""

from __future__ import annotations

import os
import subprocess

import pytest

from loopback import PROGRAMS, LoopbackWorker

PYTHON = os.environ.get("KVMGPU_TEST_TORCH_PYTHON")
QUOTA = 2 << 30


@pytest.mark.skipif(not PYTHON, reason="set KVMGPU_TEST_TORCH_PYTHON to a Python with PyTorch (a CUDA build)")
def test_pytorch_sees_the_vgpu_and_its_quota(tmp_path):
    from kvmgpu_guest.cli import LIB_DIR
    worker = LoopbackWorker(gmem=str(QUOTA), region="256M")
    try:
        proc = subprocess.run([PYTHON, str(PROGRAMS / "torch_vgpu.py"), str(QUOTA)], capture_output=True, text=True,
                              timeout=600, env={**worker.env, "LD_LIBRARY_PATH": LIB_DIR})
    finally:
        worker.stop()
    out = proc.stdout
    assert proc.returncode == 0 and "DONE" in out, out + proc.stderr[-3000:]
    assert "FAIL" not in out, out + proc.stderr[-3000:]
    assert out.count("OK ") == 10, out
    assert "OK cuBLAS starts" in out, out
