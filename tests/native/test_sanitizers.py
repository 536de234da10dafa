"""kvmgpu's C pieces, built with AddressSanitizer and UndefinedBehaviorSanitizer, pass the tests
that use them: the worker's launch loop (kvmgpu/backend/launcher.c, tests/worker/test_launcher.py)
and the guest's copier (guest-agent/include/kvmgpu_copier.h through tests/guest/copier_module.c,
tests/guest/test_copier.py). An
out-of-bounds access, a use after free or undefined behaviour anywhere in them stops that run
with the sanitizer's report.

The packages are copied to a scratch tree, the two extension modules built there with the
sanitizers, and the tests run in a child Python with that tree first on its path and the
sanitizers' runtimes preloaded (leak checking off: CPython keeps memory to its exit), pytest
capturing at the sys level only so that a sanitizer's report on fd 2 reaches this test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLAGS = ["-std=c11", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-Wall", "-Werror", "-shared", "-fPIC"]
PIECES = [  # (source, module path in the tree, extra flags)
    ("kvmgpu/backend/launcher.c", "kvmgpu/backend/_launcher", ["-I", str(REPO / "guest-agent" / "include")]),
    ("tests/guest/copier_module.c", "_copier",
     ["-pthread", "-I", str(REPO / "guest-agent" / "include")]),
]


def _runtime(name: str) -> str | None:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    if shutil.which("gcc") is None or not (_runtime("libasan.so") and _runtime("libubsan.so")):
        pytest.skip("needs gcc with libasan and libubsan (Debian: gcc)")
    root = tmp_path_factory.mktemp("sanitized")
    skip = shutil.ignore_patterns("*.so", "__pycache__")
    for src, dst in (("kvmgpu", "kvmgpu"), ("guest-agent/kvmgpu_guest", "kvmgpu_guest"),
                     ("guest-agent/kvmgpu_wire", "kvmgpu_wire")):
        shutil.copytree(REPO / src, root / dst, ignore=skip)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    include = sysconfig.get_paths()["include"]
    for source, module, extra in PIECES:
        subprocess.run(["gcc", *FLAGS, *extra, "-I", include, str(REPO / source), "-o",
                        str(root / (module + suffix))], check=True)
    return root


def test_c_pieces_pass_their_tests_under_asan_and_ubsan(tree):
    copier = str(tree / ("_copier" + sysconfig.get_config_var("EXT_SUFFIX")))
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", KVMGPU_TEST_COPIER=copier,
               LD_PRELOAD=f"{_runtime('libasan.so')}:{_runtime('libubsan.so')}",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
    which = subprocess.run(
        [sys.executable, "-c", "import kvmgpu.backend.launcher as l, os; "
                               "print(l.library_path()); print(os.environ['KVMGPU_TEST_COPIER'])"],
        env=env, capture_output=True, text=True, cwd=tree)
    assert which.returncode == 0, which.stderr
    assert all(line.startswith(str(tree)) for line in which.stdout.split()), which.stdout
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--capture=sys", "-p", "no:cacheprovider", "--rootdir", str(REPO),
         str(REPO / "tests" / "worker" / "test_launcher.py"), str(REPO / "tests" / "guest" / "test_copier.py")],
        env=env, capture_output=True, text=True, cwd=tree, timeout=600)
    out = run.stdout + run.stderr
    found = [out.find(s) for s in ("ERROR: AddressSanitizer", "runtime error") if s in out]
    report = out[min(found):][:6000] if found else out[-6000:]  # the sanitizer's own report first
    assert run.returncode == 0 and not found, report


def test_native_libcuda_runs_a_driver_api_program_under_asan_and_ubsan(tmp_path):
    """guest-agent/libcuda built with the sanitizers, and the C test program with them, run
    against a sim worker: every mode of tests/guest/programs/driver_api.c, a killed worker too."""
    if shutil.which("gcc") is None or not (_runtime("libasan.so") and _runtime("libubsan.so")):
        pytest.skip("needs gcc with libasan and libubsan (Debian: gcc)")
    sys.path.insert(0, str(REPO / "tests" / "guest"))
    import test_libcuda as t
    from loopback import KERNELS, LoopbackWorker
    sanitize = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    t.libcuda_build.build(tmp_path, tuple(sanitize))
    prog = t.build_program(tmp_path, tmp_path / "driver_api", sanitize)
    worker = LoopbackWorker()
    try:
        env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1",
               "KVMGPU_WINDOW": str(1 << 20)}
        for args in (("main", str(KERNELS)), ("quota",), ("bad",), ("procaddr",)):
            proc = t.run(prog, worker, *args, env=env)
            assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
        lost = subprocess.Popen([str(prog), "lost"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**worker.env, **env})
        assert lost.stdout.readline().strip() == "READY"
        worker.proc.kill()
        out, err = lost.communicate("go\n", timeout=60)
        assert lost.returncode == 0 and "DEVICE_UNAVAILABLE" in out and "Sanitizer" not in err, out + err
    finally:
        worker.stop()
