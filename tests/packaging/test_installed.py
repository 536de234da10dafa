"""kvmgpu as an operator installs it (README, Install): both wheels built from this checkout and
installed, without extras and not editable, into a fresh `/usr/bin/python3 -m venv
--system-site-packages`; then that venv's own commands, run from outside the source tree:
attach, list and detach on a real domain on qemu:///system, the daemon started and stopped,
`kvmgpu bench`, the guest example, the installer.

The wheels' dependencies come from the package index (pip's cache is used), as on a real host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["kvmgpu", "guest-agent", "xml-templates", "pyproject.toml", "setup.py", "README.md"]


def copy_sources(dest: Path) -> Path:
    """The files git knows (committed or not, not ignored) of what the wheels are built from."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", *SOURCES], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def build_wheels(out: Path, tmp: Path) -> dict[str, Path]:
    """kvmgpu and kvmgpu_guest wheels, built from a copy of this checkout (nothing left in it)."""
    src = copy_sources(tmp)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    ".", "./guest-agent", "-w", str(out)], cwd=src, check=True, capture_output=True)
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"kvmgpu", "kvmgpu_guest"}, found
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the test venv (PATH, VIRTUAL_ENV, PYTHONPATH)."""
    test_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = ":".join(p for p in env.get("PATH", "/usr/bin:/bin").split(":") if p != test_bin)
    return {**env, **extra}


README_VENV = ("/usr/bin/python3 -m venv --system-site-packages /opt/kvmgpu && "
               "/opt/kvmgpu/bin/pip install ./guest-agent .")


def test_the_readme_installs_as_these_tests_do():
    """If the README's Install changes, `venv` below must change with it."""
    assert f"    {README_VENV}\n" in (REPO / "README.md").read_text()


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """The README's install: a fresh venv with Debian's Python, both wheels, no extras."""
    wheels = build_wheels(tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("src"))
    v = tmp_path_factory.mktemp("installed") / "kvmgpu"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(v)], check=True)
    r = subprocess.run([str(v / "bin/pip"), "install", "-q", "--disable-pip-version-check",
                        str(wheels["kvmgpu_guest"]), str(wheels["kvmgpu"])],
                       capture_output=True, text=True, env=clean_env(), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return v


def run(venv: Path, *argv: str, cwd: Path, env: dict | None = None, timeout: float = 120):
    """A command of the installed venv (kvmgpu, kvmgpu-guest, python), from a directory outside the
    source tree so that nothing of the checkout can be imported by accident."""
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, capture_output=True, text=True,
                          env=env or clean_env(), timeout=timeout)


def test_the_installed_package_is_the_wheel_not_the_checkout(venv, tmp_path):
    r = run(venv, "python", "-c", "import kvmgpu, kvmgpu_guest, kvmgpu_wire; "
            "print(kvmgpu.__file__, kvmgpu_guest.__file__, kvmgpu_wire.__file__)",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert all(p.startswith(str(venv)) for p in r.stdout.split()), r.stdout


def test_version(venv, tmp_path):
    from kvmgpu import __version__
    from kvmgpu_wire.protocol import PROTOCOL_VERSION

    r = run(venv, "kvmgpu", "--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"kvmgpu {__version__} (protocol {PROTOCOL_VERSION})", r


def test_bench_runs_from_the_wheel_and_leaves_nothing_behind(venv, tmp_path):
    """The default kernels are in the wheel; the temporary directory and the region go at the end."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = subprocess.Popen([str(venv / "bin/kvmgpu"), "bench", "--launches", "100", "--region-size", "64M",
                             "--json"], cwd=tmp_path, env=clean_env(TMPDIR=str(tmpdir)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert json.loads(out)["queued_launch_us"] > 0
    assert list(tmpdir.iterdir()) == []
    assert not Path(f"/dev/shm/kvmgpu-bench-{proc.pid}").exists()


def test_guest_example_finds_its_kernels_in_the_agent(venv, tmp_path):
    """examples/vector_demo.py with no PTX named uses the one the guest agent's wheel carries."""
    sock, shm = tmp_path / "kg.sock", Path(f"/dev/shm/kvmgpu-pkgtest-{uuid.uuid4().hex[:8]}")
    demo = shutil.copy(REPO / "guest-agent/examples/vector_demo.py", tmp_path / "vector_demo.py")
    worker = subprocess.Popen([str(venv / "bin/kvmgpu"), "worker", "--backend", "sim", "--gmem", "256M",
                               "--socket", str(sock), "--shm", str(shm), "--region-size", "16M"],
                              cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert worker.poll() is None and time.monotonic() < deadline, worker.stderr.read().decode()
            time.sleep(0.05)
        r = run(venv, "kvmgpu-guest", "run", "--socket", str(sock), "--shm", str(shm), "--",
                str(venv / "bin/python"), str(demo), "4096", cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.rstrip().endswith(": PASS"), r.stdout + r.stderr
    finally:
        worker.terminate()
        worker.wait(15)
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()


def test_installer_points_the_unit_at_the_venv(venv, tmp_path):
    r = run(venv, "python", "-m", "kvmgpu.daemon.install", "--root", str(tmp_path / "root"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    unit = (tmp_path / "root/etc/systemd/system/kvmgpu.service").read_text()
    assert f"ExecStart={venv}/bin/kvmgpu daemon\n" in unit
    assert (tmp_path / "root/etc/libvirt/hooks/qemu.d/kvmgpu").stat().st_mode & 0o111


# --- on the real libvirtd --------------------------------------------------------------------------

URI = "qemu:///system"
DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host_config():
    """A kvmgpu.toml whose every path is in a fresh directory under /tmp (QEMU's user reaches it)."""
    base = Path(tempfile.mkdtemp(prefix="kvmgpu-pkg-", dir="/tmp"))
    os.chmod(base, 0o755)
    cfg = base / "kvmgpu.toml"
    cfg.write_text(f'sim_gpus = "1x16G"\nchannel_dir = "{base}/ch"\nregion_size = "16M"\n'
                   f'state_dir = "{base}/state"\napi_socket = "{base}/api.sock"\nmetrics_port = {free_port()}\n')
    yield cfg
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def conn():
    libvirt = pytest.importorskip("libvirt")
    try:
        c = libvirt.open(URI)
    except libvirt.libvirtError as e:
        pytest.skip(f"{URI} is unreachable ({e.get_error_message()}): run `make libvirtd`")
    yield c
    c.close()


@pytest.fixture
def domain(conn):
    """A small domain, kvmgpu-pkg-<uuid8>, on qemu:///system; undefined afterwards whatever happened."""
    import libvirt

    name = f"kvmgpu-pkg-{uuid.uuid4().hex[:8]}"
    dom = conn.defineXML(DOMAIN.format(name=name))
    try:
        yield dom
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/kvmgpu-{name}")


@pytest.mark.libvirt
def test_attach_list_detach_a_real_domain(venv, tmp_path, host_config, domain):
    name = domain.name()
    env = clean_env(KVMGPU_CONFIG=str(host_config))
    r = run(venv, "kvmgpu", "attach", name, "--gmem", "1G", "--compute", "50", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["vgpu"]["gmem"] == 1 << 30
    assert "org.kvmgpu.0" in domain.XMLDesc(0)

    r = run(venv, "kvmgpu", "list", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    mine = [v for v in json.loads(r.stdout) if v["vm"] == name]
    assert len(mine) == 1 and mine[0]["compute"] == 50, r.stdout

    r = run(venv, "kvmgpu", "gpus", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)[0]["simulated"], r.stdout + r.stderr

    r = run(venv, "kvmgpu", "detach", name, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    xml = domain.XMLDesc(0)
    assert "org.kvmgpu.0" not in xml and "<shmem" not in xml and "kvmgpu.org/xmlns" not in xml, xml


@pytest.mark.libvirt
def test_daemon_starts_and_stops(venv, tmp_path, host_config, conn):
    """`kvmgpu daemon` in the foreground answers on its API socket and ends on SIGTERM, removing it."""
    from kvmgpu.config import load_config
    from kvmgpu.daemon import api
    from kvmgpu.errors import DaemonUnavailable

    config = load_config(str(host_config))
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen([str(venv / "bin/kvmgpu"), "daemon", "--config", str(host_config),
                                   "--run-dir", str(host_config.parent / "run")],
                                  cwd=tmp_path, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert daemon.poll() is None, f"the daemon exited with {daemon.returncode}:\n{log.read_text()}"
            try:
                if api.query(config, {"op": "status"})["daemon"]["pid"] == daemon.pid:
                    break
            except DaemonUnavailable:
                pass
            assert time.monotonic() < deadline, f"the daemon's API did not answer:\n{log.read_text()}"
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, log.read_text()
        assert not Path(config.api_socket).exists()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
