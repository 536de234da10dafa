"""The GPU machine's share and CuPy benchmarks (bench/gpu/torch_shares.py, cupy_bench.py and their
runner shares_cupy_gpu.sh), tried here where there is no GPU: the window measure's arithmetic, the
harness end to end on the sim backend with the driver-API spin step (two workers, the guests on
the native library with the GPU hidden, a graph replayed), the CuPy workload's code on numpy, and
bad input refused before anything is started. The lead runs them on the GPU (docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "gpu"
sys.path.insert(0, str(BENCH))

import cupy_bench  # noqa: E402
import torch_shares  # noqa: E402


def test_a_step_across_a_window_edge_is_split_by_its_time_on_either_side():
    marks = [(0.5, 1.5), (1.5, 1.75), (1.9, 2.3)]
    # window [1, 2): half of the first step, all of the second, a quarter of the third
    assert torch_shares.gpu_time_in(marks, 0.1, 1.0, 2.0) == pytest.approx(0.05 + 0.1 + 0.025)
    assert torch_shares.gpu_time_in(marks, 0.1, 2.0, 3.0) == pytest.approx(0.075)


def test_shares_per_window_against_the_targets():
    # VM A: a 3 ms step every 10 ms; VM B: a 7 ms step every 10 ms (30/70 of the GPU), for 5 s
    a = [{"marks": [(k * 0.01, k * 0.01 + 0.01) for k in range(500)]},
         {"marks": [(k * 0.01, k * 0.01 + 0.01) for k in range(500)]}]
    got = torch_shares.shares(a, [0.003, 0.007], [0.3, 0.7], start=0.0, seconds=5.0)
    assert len(got["windows"]) == 3  # seconds 1, 2 and 3: the first and the last left out
    assert all(w["share"] == pytest.approx([0.3, 0.7]) and w["gpu_busy"] == pytest.approx(1.0) for w in got["windows"])
    assert got["worst_error_pp"] == pytest.approx(0.0, abs=1e-6)
    # the same steps judged against 50/50: 20 points off
    assert torch_shares.shares(a, [0.003, 0.007], [0.5, 0.5], 0.0, 5.0)["worst_error_pp"] == pytest.approx(20.0)


def test_the_share_harness_runs_on_the_sim(tmp_path):
    out = tmp_path / "out"
    regions = set(Path("/dev/shm").glob("kvmgpu-bench-*"))
    proc = subprocess.run([sys.executable, str(BENCH / "torch_shares.py"), "--backend", "sim", "--workload", "spin",
                           "--cases", "graph", "--seconds", "3", "--calibrate", "0.3", "--launches", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "torch_shares.json").read_text())
    case, = report["cases"]
    assert case["steps"] == ["2 x spin(200.0 us) as a graph", "2 x spin(200.0 us)"]  # the 30 % VM replays
    assert all(c["step_gpu_s"] > 0 for c in case["calibration"]) and min(case["steps_done"]) > 0
    window, = case["windows"]
    assert sum(window["share"]) == pytest.approx(1.0, abs=1e-3)
    assert "not judged" in proc.stdout  # (the sim has no compute gate)
    assert set(Path("/dev/shm").glob("kvmgpu-bench-*")) <= regions  # the workers' regions removed


@pytest.mark.parametrize("script, args, says", [
    ("torch_shares.py", ["--cases", "eager,fair"], "unknown case fair: the cases are eager and graph"),
    ("torch_shares.py", ["--seconds", "2"], "--seconds must be at least 3"),
    ("torch_shares.py", ["--percents", "30,170"], "compute percents from 1 to 100, not '30,170'"),
    ("torch_shares.py", ["--graph-vm", "2"], "--graph-vm must name one of the 2 VMs of --percents (0 to 1)"),
    ("cupy_bench.py", ["--grid", "2"], "--grid at least 3"),
])
def test_the_benchmarks_refuse_bad_input(tmp_path, script, args, says):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH / script), "--backend", "sim", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert not out.exists()  # nothing started, nothing written


def test_the_cupy_workload_is_over_a_thousand_operations_and_finite():
    data = cupy_bench.inputs(np, 256, 64)
    out, ops = cupy_bench.workload(np, data, 100)  # the default number of iterations
    assert ops == 2680
    assert all(np.isfinite(o).all() for o in out)
    again, _ = cupy_bench.workload(np, data, 100)  # the inputs are not changed by a pass
    assert [float(o.sum()) for o in again] == [float(o.sum()) for o in out]


def test_the_runner_is_valid_shell_and_refuses_an_unknown_part(tmp_path):
    script = BENCH / "shares_cupy_gpu.sh"
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    proc = subprocess.run(["bash", str(script), "torch"], capture_output=True, text=True, timeout=30,
                          env={"OUT": str(tmp_path / "r"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "[shares|cupy|all] (not 'torch')" in proc.stderr
    assert not (tmp_path / "r").exists()
