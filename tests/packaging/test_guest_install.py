"""The guest agent installed as README and docs/guest-image.md say, on Debian 12 (whose Python
refuses `pip install` outside a venv): in the venv /opt/kvmgpu-guest/venv, which the shipped unit
runs and the Ansible guest role installs to."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV = "/opt/kvmgpu-guest/venv"
UNIT = REPO / "guest-agent/kvmgpu-guest.service"
ROLE_DEFAULTS = REPO / "ansible/collections/ansible_collections/kvmgpu/kvmgpu/roles/kvmgpu_guest/defaults/main.yml"


def exec_start() -> list[str]:
    lines = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0].split("=", 1)[1])


def test_unit_readme_docs_and_role_name_the_same_venv():
    assert exec_start() == [f"{VENV}/bin/kvmgpu-guest", "agent"]
    install = f"python3 -m venv {VENV} && {VENV}/bin/pip install kvmgpu_guest-*.whl"
    assert install in (REPO / "README.md").read_text()
    assert install in (REPO / "docs/guest-image.md").read_text()
    assert yaml.safe_load(ROLE_DEFAULTS.read_text())["kvmgpu_guest_venv"] == VENV


def test_the_units_command_runs_from_a_venv_installed_as_documented(tmp_path):
    """The wheel installed into a plain venv (no system site packages, no index: the agent has no
    dependencies); the unit's ExecStart, with /opt/kvmgpu-guest/venv mapped to it, runs."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(REPO / "guest-agent"), "-w", str(tmp_path / "wheels")], check=True, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    wheel = next((tmp_path / "wheels").glob("kvmgpu_guest-*.whl"))
    subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-index", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True)
    program = exec_start()[0].replace(VENV, str(venv))
    r = subprocess.run([program, "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and re.fullmatch(r"kvmgpu-guest \S+ \(protocol \d+\)\n", r.stdout), r
