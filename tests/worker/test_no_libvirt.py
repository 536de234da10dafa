"""`kvmgpu worker` and `kvmgpu bench` run where libvirt-python is absent (the GPU machine)."""

import subprocess
import sys

HIDE_LIBVIRT = "import sys; sys.modules['libvirt'] = None  # `import libvirt` now raises ImportError\n"


def test_cli_imports_without_libvirt():
    r = subprocess.run([sys.executable, "-c", HIDE_LIBVIRT + "import kvmgpu.cli\n"
                        "assert 'kvmgpu.domain.host' not in sys.modules"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_worker_help_runs_without_libvirt():
    r = subprocess.run([sys.executable, "-c", HIDE_LIBVIRT + "sys.argv = ['kvmgpu', 'worker', '--help']\n"
                        "from kvmgpu.cli import main; main()"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--gmem" in r.stdout
