"""The wheels carry everything the installed programs need (the Ansible role installs them)."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_host_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "kvmgpu").rglob("__init__.py")}
    assert found - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"


def test_wheels_carry_templates_unit_hook_shim_launcher_and_copier(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(REPO), str(REPO / "guest-agent"), "-w", str(tmp_path)], check=True)
    host = zipfile.ZipFile(next(tmp_path.glob("kvmgpu-*.whl"))).namelist()
    guest = zipfile.ZipFile(next(tmp_path.glob("kvmgpu_guest-*.whl"))).namelist()
    for name in ("channel.xml.j2", "shmem.xml.j2", "metadata.xml.j2", "guest-vm.xml.j2"):
        assert f"kvmgpu/xml_templates/{name}" in host
    assert "kvmgpu/data/kvmgpu.service" in host and "kvmgpu/data/qemu-hook" in host
    # the worker's launch loop, built for the host (the wheel is then a platform wheel)
    assert any(n.startswith("kvmgpu/backend/_launcher") and n.endswith(".so") for n in host)
    assert "kvmgpu_guest/shim/cuda/bindings/driver.py" in guest
    # the guest's copier, built for the Python that built the wheel (a platform wheel too)
    assert any(n.startswith("kvmgpu_guest/_copier") and n.endswith(".so") for n in guest)
