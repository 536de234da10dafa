"""Issue 22's proof (tests/guest/programs/torch_proof.py, run on the GPU machine by
bench/gpu/torch_gpu.sh): its comparer passes a forwarded run within the stated tolerances and fails,
naming the check and the value, one that is off, failed, cut short or missing; with PyTorch
(KVMGPU_TEST_TORCH_PYTHON, as test_torch.py), its checks run on the CPU and a run matches itself.
bench/gpu/torch_bench.py says what it needs when started without a worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopback import PROGRAMS

PROOF = PROGRAMS / "torch_proof.py"
BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "torch_bench.py"
NATIVE = """OK resnet loss0=2.49159980 loss=0.891125858 params=2634.5897 update=1.36038994
time resnet 169 ms
OK gpt loss0=6.93114996 loss=2.78192496 params=242500.78 update=2.55584161
time gpt 831 ms
DONE
"""


def compare(tmp_path, forwarded: str) -> subprocess.CompletedProcess:
    (tmp_path / "native.txt").write_text(NATIVE)
    (tmp_path / "forwarded.txt").write_text(forwarded)
    return subprocess.run([sys.executable, str(PROOF), "--compare", str(tmp_path / "native.txt"),
                           str(tmp_path / "forwarded.txt")], capture_output=True, text=True)


def test_a_forwarded_run_within_tolerance_is_the_same(tmp_path):
    # the resnet loss off by 1e-5 relative (under its 1e-3), gpt's update by 1e-2 (under bf16's 2e-2)
    r = compare(tmp_path, NATIVE.replace("loss=0.891125858", "loss=0.891134769")
                .replace("update=2.55584161", "update=2.58140003"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "same resnet" in r.stdout and "same gpt" in r.stdout, r.stdout


def test_a_value_out_of_tolerance_names_the_check_and_the_value(tmp_path):
    r = compare(tmp_path, NATIVE.replace("loss=0.891125858", "loss=0.9"))
    assert r.returncode == 1
    assert "DIFFERS resnet: loss native 0.891125858 forwarded 0.9" in r.stdout, r.stdout
    assert "same gpt" in r.stdout, r.stdout


def test_a_failed_check_and_a_run_cut_short_fail(tmp_path):
    failed = NATIVE.replace(NATIVE.splitlines()[2], "FAIL gpt AcceleratorError: CUDA error: an illegal memory access")
    r = compare(tmp_path, failed)
    assert r.returncode == 1 and "DIFFERS gpt: forwarded AcceleratorError: CUDA error: an illegal" in r.stdout, r.stdout
    r = compare(tmp_path, NATIVE[:NATIVE.index("params=242500")])  # killed while printing gpt's line
    assert r.returncode == 1, r.stdout
    assert "forwarded run did not print DONE" in r.stdout, r.stdout
    assert "DIFFERS gpt: forwarded printed no params, update" in r.stdout, r.stdout
    r = compare(tmp_path, NATIVE[:NATIVE.index("242500")])
    assert r.returncode == 1 and "DIFFERS gpt: forwarded an unreadable line" in r.stdout, r.stdout


def test_a_missing_output_file_is_named(tmp_path):
    r = subprocess.run([sys.executable, str(PROOF), "--compare", str(tmp_path / "native.txt"),
                        str(tmp_path / "none.txt")], capture_output=True, text=True)
    assert r.returncode == 1 and f"no output file {tmp_path / 'native.txt'}" in r.stdout, r.stdout + r.stderr


def test_the_benchmark_without_a_worker_says_what_it_needs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMGPU_")}
    r = subprocess.run([sys.executable, str(BENCH), "--lib", str(tmp_path)], capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "KVMGPU_SOCKET and KVMGPU_SHM unset" in r.stderr and "bench/gpu/torch_gpu.sh" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, str(BENCH), "--only", "resnet18"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "no measurement resnet18" in r.stderr, r.stderr


PYTHON = os.environ.get("KVMGPU_TEST_TORCH_PYTHON")


@pytest.mark.skipif(not PYTHON, reason="set KVMGPU_TEST_TORCH_PYTHON to a Python with PyTorch")
def test_the_checks_run_on_the_cpu_and_a_run_matches_itself(tmp_path):
    outs = []
    for name in ("a", "b"):
        proc = subprocess.run([PYTHON, str(PROOF), "--device", "cpu", "--tiny", "--only", "resnet,gpt,graph"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and proc.stdout.count("OK ") == 3, proc.stdout + proc.stderr[-3000:]
        (tmp_path / name).write_text(proc.stdout)
        outs.append(str(tmp_path / name))
    r = subprocess.run([sys.executable, str(PROOF), "--compare", *outs], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("same ") == 3, r.stdout
