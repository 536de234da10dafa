"""Fixtures for the guest side (the worker they run is in loopback.py)."""

import os
import subprocess
import sys
import textwrap

import pytest

from loopback import LoopbackWorker
from test_agent import agent  # noqa: F401 (the fixture: a guest agent in front of a sim worker, for test_libcuda too)


@pytest.fixture
def worker(request):
    w = LoopbackWorker()
    request.addfinalizer(w.stop)
    return w


@pytest.fixture
def guest_python(worker):
    """Runs Python code as a guest program in a fresh process (the guest's libcuda.so.1 holds one
    session a process, opened at cuInit): `cuda` is kvmgpu_guest.driver, pointed at the worker.
    Returns the finished process; with `check`, the test fails with its output unless it exited 0."""
    def run(code: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        program = "from kvmgpu_guest import driver as cuda\n" + textwrap.dedent(code)
        proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                              env={**worker.env, **(env or {})})
        if check:
            assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n--- worker ---\n{worker.output()}"
        return proc
    return run


SANITIZE = ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all")


def _gcc_runtime(name: str) -> str | None:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture
def sanitized_libcuda(tmp_path):
    """libcuda.so.1 built with AddressSanitizer and UBSan into the test's tmp_path, and the
    environment that runs an unsanitized program (nvcc's) on it: the sanitizers' runtimes
    preloaded (leaks not counted: NVIDIA's runtime keeps its own allocations to the end)."""
    from test_libcuda import libcuda_build
    asan, ubsan = _gcc_runtime("libasan.so"), _gcc_runtime("libubsan.so")
    if libcuda_build.compiler() is None or not (asan and ubsan):
        pytest.skip("needs gcc with libasan and libubsan (Debian: gcc)")
    libcuda_build.build(tmp_path, SANITIZE)
    return tmp_path, {"LD_PRELOAD": f"{asan}:{ubsan}", "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
                     "UBSAN_OPTIONS": "print_stacktrace=1"}
