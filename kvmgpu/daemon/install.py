"""Put kvmgpu's host files in place: `python -m kvmgpu.daemon.install [--root DIR] [--kvmgpu PATH]`,
and take them and what they left away again: `python -m kvmgpu.daemon.install --uninstall`.

    <root>/etc/libvirt/hooks/qemu.d/kvmgpu       the libvirt hook (0755); libvirtd reads hooks at start:
                                                 restart it once after the first install
    <root>/etc/systemd/system/kvmgpu.service     the unit, ExecStart pointing at this `kvmgpu`

--uninstall stops the daemon (systemd's kvmgpu.service, where systemd runs and the root is /) and
every worker it started (a `kvmgpu worker --vm VM` whose channel is in the configured channel_dir
or whose stats file is in --run-dir), removes the unit and the hook, the runtime directories
(channel_dir, --run-dir, the API socket) and the VMs' shared regions (<shm-dir>/kvmgpu-*). It leaves
the configuration, the state directory (usage history, worker logs) and the virtualenv alone.

The files themselves are package data (`kvmgpu/data/`), for installers that copy them their own way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from ..config import Config, load_config
from ..errors import KvmgpuError
from ..vgpu import REGION_PREFIX
from .workers import proc_argv

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


# --- uninstall --------------------------------------------------------------------------------

def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _under(path: str | None, directory: Path) -> bool:
    return path is not None and Path(os.path.abspath(path)).parent == Path(os.path.abspath(directory))


def find_workers(config: Config, run_dir: Path, proc: Path = Path("/proc")) -> dict[int, list[str]]:
    """The daemon's workers: `kvmgpu worker --vm VM` processes whose channel is in channel_dir or whose
    stats file is in <run_dir>/stats (pid -> argv). Loopback workers (no --vm) are not the daemon's."""
    found = {}
    for entry in proc.iterdir():
        argv = proc_argv(int(entry.name)) if entry.name.isdigit() else None
        if (argv is None or "worker" not in argv or not any("kvmgpu" in a for a in argv)
                or not _option(argv, "--vm")):
            continue
        if (_under(_option(argv, "--socket"), Path(config.channel_dir))
                or _under(_option(argv, "--stats-file"), run_dir / "stats")):
            found[int(entry.name)] = argv
    return found


def _stop(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL for any still there after `timeout` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and proc_argv(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc_argv(pid) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _systemd_running(root: Path) -> bool:
    return root == Path("/") and Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def uninstall(root: Path, config: Config, run_dir: Path, shm_dir: Path) -> list[str]:
    """Undo install and what the daemon left behind; returns what was done, one line each."""
    done = []
    if _systemd_running(root):
        r = subprocess.run(["systemctl", "disable", "--now", "kvmgpu.service"], capture_output=True, text=True)
        if r.returncode == 0:
            done.append("stopped and disabled kvmgpu.service")
    workers = find_workers(config, run_dir)
    _stop(sorted(workers))
    regions = set()
    for pid, argv in sorted(workers.items()):
        done.append(f"stopped the worker of VM {_option(argv, '--vm')} (pid {pid})")
        shm = _option(argv, "--shm")
        if shm:
            regions.add(Path(shm))
    for rel in (UNIT, HOOK):
        with contextlib.suppress(FileNotFoundError):
            (root / rel).unlink()
            done.append(f"removed {root / rel}")
    if _systemd_running(root):
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    regions.update(shm_dir.glob(f"{REGION_PREFIX}*"))
    for region in sorted(regions):
        with contextlib.suppress(FileNotFoundError):
            region.unlink()
            done.append(f"removed {region}")
    api = Path(config.api_socket)
    for directory in dict.fromkeys((Path(config.channel_dir), run_dir)):
        if not directory.is_dir():
            continue
        if "kvmgpu" not in directory.name:  # a configured /run or /tmp: never the whole of it
            done.append(f"left {directory} (not a directory of kvmgpu's own): remove what is kvmgpu's in it")
            continue
        shutil.rmtree(directory)
        done.append(f"removed {directory}")
    with contextlib.suppress(FileNotFoundError):
        api.unlink()
        done.append(f"removed {api}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvmgpu.daemon.install", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="install under this root (default /)")
    parser.add_argument("--kvmgpu", default=shutil.which("kvmgpu", path=os.path.dirname(sys.executable))
                        or shutil.which("kvmgpu") or "/usr/local/bin/kvmgpu",
                        help="path of the kvmgpu command for ExecStart")
    parser.add_argument("--uninstall", action="store_true",
                        help="stop the daemon and its workers; remove the unit, the hook, the runtime "
                             "directories and the VMs' shared regions")
    parser.add_argument("--config", help="kvmgpu's configuration, for channel_dir and api_socket "
                                         "(default /etc/kvmgpu/kvmgpu.toml or $KVMGPU_CONFIG)")
    parser.add_argument("--run-dir", type=Path, default=Path("/run/kvmgpu"),
                        help="the daemon's --run-dir (default /run/kvmgpu)")
    parser.add_argument("--shm-dir", type=Path, default=Path("/dev/shm"),
                        help="where the VMs' regions kvmgpu-VM are (default /dev/shm)")
    args = parser.parse_args(argv)
    if not args.uninstall:
        for path in install(args.root, os.path.abspath(args.kvmgpu)):
            print(f"installed {path}")
        return 0
    try:
        config = load_config(args.config)
    except KvmgpuError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    done = uninstall(args.root, config, args.run_dir, args.shm_dir)
    print("\n".join(done) if done else "nothing of kvmgpu's was installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
