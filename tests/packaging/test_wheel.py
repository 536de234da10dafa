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


def test_wheels_carry_templates_unit_hook_shim_launcher_and_guest_libraries(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(REPO), str(REPO / "guest-agent"), "-w", str(tmp_path)], check=True)
    host = zipfile.ZipFile(next(tmp_path.glob("kvmgpu-*.whl"))).namelist()
    guest = zipfile.ZipFile(next(tmp_path.glob("kvmgpu_guest-*.whl"))).namelist()
    for name in ("channel.xml.j2", "shmem.xml.j2", "guest-vm.xml.j2"):  # metadata: kvmgpu/domain/metadata.py
        assert f"kvmgpu/xml_templates/{name}" in host
    assert "kvmgpu/data/kvmgpu.service" in host and "kvmgpu/data/qemu-hook" in host
    # the worker's launch loop, built for the host (the wheel is then a platform wheel)
    assert any(n.startswith("kvmgpu/backend/_launcher") and n.endswith(".so") for n in host)
    assert "kvmgpu/xml_templates/__init__.py" in host          # a real package: importlib.resources finds it
    assert "kvmgpu_guest/shim/cuda/bindings/driver.py" in guest
    assert "kvmgpu_guest/kernels.ptx" in guest                 # `kvmgpu bench` and examples/ run it
    # the native guest libraries, side by side where `kvmgpu-guest run` puts them on the path (and
    # kvmgpu_guest.driver loads libcuda.so.1): a platform wheel too
    assert "kvmgpu_guest/lib/libcuda.so.1" in guest and "kvmgpu_guest/lib/libnvidia-ml.so.1" in guest
    assert not any(n.startswith("kvmgpu_guest/_copier") for n in guest)  # (the copier is the library's)


# Modules the host package imports that no pip requirement provides, and where they come from.
NOT_FROM_PIP = {"libvirt": "Debian's python3-libvirt, through the venv's system site packages"}
# Where the test venv lacks a module's distribution (GPU-only ones), which distribution provides it.
PROVIDED_BY = {"cuda": "cuda-bindings", "pynvml": "nvidia-ml-py"}


def test_every_module_the_host_package_imports_is_declared():
    """Each third-party module imported anywhere in kvmgpu/ is provided by a distribution named in
    pyproject's dependencies or an extra (or is in NOT_FROM_PIP): the test venv has more installed
    than an operator's, so `make test` alone would not notice an undeclared one."""
    import ast
    from importlib.metadata import packages_distributions

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_dist_name(r) for r in project["dependencies"]}
    for extra, reqs in project["optional-dependencies"].items():
        if extra != "test":
            declared |= {_dist_name(r) for r in reqs}
    providers = packages_distributions()
    missing = {}
    for path in (REPO / "kvmgpu").rglob("*.py"):
        if path.name == "demo.py":      # `make demo`: runs from the source tree with the test venv
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for top in {n.split(".")[0] for n in names}:
                if top in sys.stdlib_module_names or top in ("kvmgpu", "__future__") or top in NOT_FROM_PIP:
                    continue
                dists = {_dist_name(d) for d in providers.get(top, [PROVIDED_BY.get(top, top)])}
                if not dists & declared:
                    missing.setdefault(top, []).append(str(path.relative_to(REPO)))
    assert missing == {}, f"declare these in pyproject.toml's dependencies (or an extra): {missing}"


def _dist_name(requirement: str) -> str:
    import re
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
