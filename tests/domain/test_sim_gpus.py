"""Simulated GPUs as an operator declares them: a size without a unit that would make a GPU of a
few bytes is refused, by the environment variable and by the configuration file alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmgpu.errors import InvalidInput
from kvmgpu.inventory import parse_sim_gpus

KVMGPU = str(Path(sys.executable).with_name("kvmgpu"))


def gpus_command(env: dict) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("KVMGPU_SIM_GPUS", "KVMGPU_CONFIG")}
    return subprocess.run([KVMGPU, "gpus", "--connect", "test:///default"], capture_output=True, text=True,
                          env={**e, "KVMGPU_CONFIG": "/dev/null", **env}, timeout=60)


def test_kvmgpu_sim_gpus_without_a_unit_is_refused():
    r = gpus_command({"KVMGPU_SIM_GPUS": "2x80"})
    assert r.returncode == 2, r.stdout
    assert r.stderr.startswith("error: KVMGPU_SIM_GPUS '2x80': a simulated GPU of 80 bytes is too small")
    assert "hint: give the unit, e.g. KVMGPU_SIM_GPUS=2x80G" in r.stderr


def test_sim_gpus_in_the_config_file_without_a_unit_is_refused(tmp_path):
    cfg = tmp_path / "kvmgpu.toml"
    cfg.write_text('sim_gpus = "40G,80"\n')
    r = gpus_command({"KVMGPU_CONFIG": str(cfg)})
    assert r.returncode == 2, r.stdout
    assert r.stderr.startswith(f"error: {cfg}: sim_gpus '40G,80': a simulated GPU of 80 bytes is too small")
    assert 'hint: give the unit, e.g. sim_gpus = "80G"' in r.stderr


@pytest.mark.parametrize("spec", ["2x80", "1023K", "1048575"])
def test_below_one_mib_is_refused(spec):
    with pytest.raises(InvalidInput, match="too small"):
        parse_sim_gpus(spec)


@pytest.mark.parametrize("spec, total", [("1M", 1 << 20), ("2x80G", 80 << 30), ("1048576", 1 << 20)])
def test_one_mib_and_more_is_a_gpu(spec, total):
    assert parse_sim_gpus(spec)[-1].total_memory == total
