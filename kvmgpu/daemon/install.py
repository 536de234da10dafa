"""Put kvmgpu's host files in place: `python -m kvmgpu.daemon.install [--root DIR] [--kvmgpu PATH]`.

    <root>/etc/libvirt/hooks/qemu.d/kvmgpu       the libvirt hook (0755); libvirtd reads hooks at start:
                                                 restart it once after the first install
    <root>/etc/systemd/system/kvmgpu.service     the unit, ExecStart pointing at this `kvmgpu`

The files themselves are package data (`kvmgpu/data/`), for installers that copy them their own way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import resources
from pathlib import Path

HOOK = Path("etc/libvirt/hooks/qemu.d/kvmgpu")
UNIT = Path("etc/systemd/system/kvmgpu.service")


def data_file(name: str) -> str:
    return resources.files("kvmgpu.data").joinpath(name).read_text()


def unit_text(kvmgpu: str) -> str:
    """The unit with ExecStart running `kvmgpu` at this path."""
    lines = []
    for line in data_file("kvmgpu.service").splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={kvmgpu} daemon"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mode: int) -> bool:
    """Write if different; True when it changed."""
    if path.exists() and path.read_text() == text and (path.stat().st_mode & 0o7777) == mode:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def install(root: Path, kvmgpu: str) -> list[Path]:
    """Install the hook and the unit under `root`; returns the files that changed."""
    changed = []
    for rel, text, mode in ((HOOK, data_file("qemu-hook"), 0o755), (UNIT, unit_text(kvmgpu), 0o644)):
        if _write(root / rel, text, mode):
            changed.append(root / rel)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvmgpu.daemon.install", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="install under this root (default /)")
    parser.add_argument("--kvmgpu", default=shutil.which("kvmgpu", path=os.path.dirname(sys.executable))
                        or shutil.which("kvmgpu") or "/usr/local/bin/kvmgpu",
                        help="path of the kvmgpu command for ExecStart")
    args = parser.parse_args(argv)
    for path in install(args.root, os.path.abspath(args.kvmgpu)):
        print(f"installed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
