"""What an operator sees when a piece outside kvmgpu's wheels is missing: libvirt's Python binding
(Debian's python3-libvirt) or NVIDIA's driver and cuda-bindings. One error, its hint, a non-zero
exit; never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KVMGPU = Path(sys.executable).parent / "kvmgpu"


def kvmgpu(*argv: str, tmp_path: Path, shadow: str | None = None) -> subprocess.CompletedProcess:
    """The kvmgpu command; `shadow`: the body of a module `libvirt` put first on its path."""
    env = {**os.environ, "KVMGPU_SIM_GPUS": "1x16G", "KVMGPU_CONFIG": str(tmp_path / "kvmgpu.toml")}
    (tmp_path / "kvmgpu.toml").write_text(f'channel_dir = "{tmp_path}/ch"\nstate_dir = "{tmp_path}/state"\n'
                                          f'api_socket = "{tmp_path}/api.sock"\n')
    if shadow is not None:
        (tmp_path / "shadow").mkdir(exist_ok=True)
        (tmp_path / "shadow/libvirt.py").write_text(shadow)
        env["PYTHONPATH"] = str(tmp_path / "shadow")
    return subprocess.run([str(KVMGPU), *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)


NO_BINDING = {
    "not installed": "raise ModuleNotFoundError(\"No module named 'libvirt'\", name='libvirt')\n",
    "broken": "raise ImportError('libvirtmod: libvirt.so.0: cannot open shared object file')\n",
}


@pytest.mark.parametrize("binding", sorted(NO_BINDING))
@pytest.mark.parametrize("command", [["list"], ["gpus"], ["attach", "vm01", "--gmem", "1G"], ["detach", "vm01"],
                                     ["daemon", "--run-dir", "RUN"]])
def test_no_libvirt_binding_is_one_error(tmp_path, command, binding):
    command = [str(tmp_path / "run") if a == "RUN" else a for a in command]
    r = kvmgpu(*command, tmp_path=tmp_path, shadow=NO_BINDING[binding])
    assert r.returncode == 5, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: libvirt's Python binding cannot be imported"), r.stderr
    assert "python3-libvirt" in r.stderr and "--system-site-packages" in r.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "ch").exists()


def test_commands_without_libvirt_still_work(tmp_path):
    r = kvmgpu("--version", tmp_path=tmp_path, shadow=NO_BINDING["not installed"])
    assert r.returncode == 0 and r.stdout.startswith("kvmgpu "), r.stderr


def _has_libcuda() -> bool:
    import ctypes
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_has_libcuda(), reason="this host has NVIDIA's driver")
def test_cuda_backend_without_a_driver_is_one_error(tmp_path):
    shm = f"/dev/shm/kvmgpu-nodriver-{os.getpid()}"
    r = kvmgpu("worker", "--backend", "cuda", "--gmem", "1G", "--socket", str(tmp_path / "w.sock"), "--shm", shm,
               tmp_path=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    first, *rest = r.stderr.strip().splitlines()
    assert first.startswith("error: the cuda backend is not available here: no NVIDIA driver"), r.stderr
    assert [line.lstrip() for line in rest] == ["hint: install NVIDIA's driver and kvmgpu[cuda] (cuda-bindings), "
                                                "or use --backend sim for development"]
    assert not os.path.exists(shm) and not (tmp_path / "w.sock").exists()
