"""The libvirt hook prepares kvmgpu's channel directory and nothing else; the installer puts the
hook and the unit in place."""

import grp
import os
import stat
import subprocess
import sys
import time
from importlib import resources

import pytest

from kvmgpu.config import load_config
from kvmgpu.daemon import install
from kvmgpu.domain import host

HOOK = str(resources.files("kvmgpu.data").joinpath("qemu-hook"))


def domain(channel_dir, target="org.kvmgpu.0"):
    return f"""<domain type='qemu'><name>vm01</name><devices>
      <channel type='pty'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
      <channel type='unix'><source mode='bind' path='{channel_dir}/vm01.sock'/>
        <target type='virtio' name='{target}'/></channel>
    </devices></domain>"""


def hook(*args, stdin=""):
    return subprocess.run([sys.executable, HOOK, *args], input=stdin, text=True, capture_output=True, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="the hook chowns to root (libvirt runs it as root)")
def test_hook_makes_the_channel_directory(tmp_path):
    d = tmp_path / "run" / "kvmgpu"
    r = hook("vm01", "prepare", "begin", "-", stdin=domain(d))
    assert r.returncode == 0, r.stderr
    st = d.stat()
    assert stat.S_IMODE(st.st_mode) == 0o2770 and st.st_uid == 0
    try:
        assert st.st_gid == grp.getgrnam(host.channel_group(load_config())).gr_gid
    except KeyError:
        pass


@pytest.mark.parametrize("args", [("vm01", "started", "begin", "-"), ("vm01", "release", "end", "-"),
                                  ("vm01",)])
def test_hook_ignores_other_operations(tmp_path, args):
    d = tmp_path / "chan"
    r = hook(*args, stdin=domain(d))
    assert r.returncode == 0 and not d.exists()


def test_hook_ignores_domains_without_kvmgpu(tmp_path):
    d = tmp_path / "chan"
    assert hook("vm01", "prepare", "begin", "-", stdin=domain(d, target="org.other.0")).returncode == 0
    assert hook("vm01", "prepare", "begin", "-", stdin="<not xml").returncode == 0
    assert not d.exists()


def test_hook_never_calls_libvirt():
    text = open(HOOK).read()
    assert "import libvirt" not in text and "virsh" not in text and "import kvmgpu" not in text


def test_install_puts_hook_and_unit_in_place(tmp_path):
    changed = install.install(tmp_path, "/opt/kvmgpu/bin/kvmgpu")
    hook_path, unit_path = tmp_path / install.HOOK, tmp_path / install.UNIT
    assert set(changed) == {hook_path, unit_path}
    assert stat.S_IMODE(hook_path.stat().st_mode) == 0o755
    unit = unit_path.read_text()
    assert "ExecStart=/opt/kvmgpu/bin/kvmgpu daemon\n" in unit
    assert "KillMode=process" in unit and "RuntimeDirectoryPreserve=yes" in unit
    assert install.install(tmp_path, "/opt/kvmgpu/bin/kvmgpu") == []        # idempotent


def _worker(tmp_path, vm, channel_dir, shm):
    """A real `kvmgpu worker --vm VM` (loopback: nothing listens on its socket), as the daemon runs it."""
    log = open(tmp_path / f"{vm}.log", "wb")
    p = subprocess.Popen([sys.executable, "-c",
                          "import sys; sys.argv[0] = 'kvmgpu'; from kvmgpu.cli import main; main()",
                          "worker", "--backend", "sim", "--gmem", "64M", "--socket", str(channel_dir / f"{vm}.sock"),
                          "--shm", str(shm), "--region-size", "1M", "--vm", vm],
                         stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not (channel_dir / f"{vm}.sock").exists():
        assert p.poll() is None and time.monotonic() < deadline, (tmp_path / f"{vm}.log").read_text()
        time.sleep(0.05)
    return p


def test_uninstall_stops_workers_and_removes_what_install_and_the_daemon_left(tmp_path):
    root, shm_dir = tmp_path / "root", tmp_path / "shm"
    channel_dir, run_dir, other = tmp_path / "kvmgpu-ch", tmp_path / "kvmgpu-run", tmp_path / "other-ch"
    for d in (shm_dir, channel_dir, run_dir / "stats", other):
        d.mkdir(parents=True)
    cfg = tmp_path / "kvmgpu.toml"
    cfg.write_text(f'channel_dir = "{channel_dir}"\napi_socket = "{tmp_path}/api.sock"\n')
    (tmp_path / "api.sock").write_text("")
    (shm_dir / "kvmgpu-stopped-vm").write_bytes(b"x")   # a region QEMU left behind
    (shm_dir / "not-kvmgpus").write_bytes(b"x")
    install.install(root, "/opt/kvmgpu/bin/kvmgpu")
    ours = _worker(tmp_path, "un-ours", channel_dir, tmp_path / "kvmgpu-un-ours")
    theirs = _worker(tmp_path, "un-theirs", other, tmp_path / "kvmgpu-un-theirs")  # another host's dirs
    try:
        r = subprocess.run([sys.executable, "-m", "kvmgpu.daemon.install", "--uninstall", "--root", str(root),
                            "--config", str(cfg), "--run-dir", str(run_dir), "--shm-dir", str(shm_dir)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert ours.wait(15) is not None
        assert f"stopped the worker of VM un-ours (pid {ours.pid})" in r.stdout
        assert theirs.poll() is None and "un-theirs" not in r.stdout
        assert not (root / install.UNIT).exists() and not (root / install.HOOK).exists()
        assert not channel_dir.exists() and not run_dir.exists() and not (tmp_path / "api.sock").exists()
        assert sorted(p.name for p in shm_dir.iterdir()) == ["not-kvmgpus"]
        assert not (tmp_path / "kvmgpu-un-ours").exists()
        # again: nothing left to do, and it says so
        r = subprocess.run([sys.executable, "-m", "kvmgpu.daemon.install", "--uninstall", "--root", str(root),
                            "--config", str(cfg), "--run-dir", str(run_dir), "--shm-dir", str(shm_dir)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "nothing of kvmgpu's was installed", r.stdout
    finally:
        for p in (ours, theirs):
            if p.poll() is None:
                p.kill()
            p.wait()


def test_uninstall_never_removes_a_shared_directory_named_as_channel_dir(tmp_path):
    shared = tmp_path / "run"
    shared.mkdir()
    (shared / "someone-elses").write_text("")
    cfg = tmp_path / "kvmgpu.toml"
    cfg.write_text(f'channel_dir = "{shared}"\napi_socket = "{shared}/daemon.sock"\n')
    done = install.uninstall(tmp_path / "root", install.load_config(str(cfg)), tmp_path / "kvmgpu-run",
                             tmp_path / "shm")
    assert (shared / "someone-elses").exists()
    assert any(line.startswith(f"left {shared}") for line in done), done


def test_uninstall_with_a_bad_configuration_changes_nothing(tmp_path):
    install.install(tmp_path, "/opt/kvmgpu/bin/kvmgpu")
    r = subprocess.run([sys.executable, "-m", "kvmgpu.daemon.install", "--uninstall", "--root", str(tmp_path),
                        "--config", str(tmp_path / "missing.toml")], capture_output=True, text=True)
    assert r.returncode != 0 and "missing.toml does not exist" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / install.UNIT).exists() and (tmp_path / install.HOOK).exists()
