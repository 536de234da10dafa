"""The channel directory's group is defined once (the libvirt hook's channel_group) and the hook,
attach and the daemon's workers all use it."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from kvmgpu.config import Config, load_config
from kvmgpu.daemon import workers
from kvmgpu.daemon.workers import choose_run_as
from kvmgpu.domain import host

HOOK = str(resources.files("kvmgpu.data").joinpath("qemu-hook"))
KVMGPU_CONF = Path("/etc/kvmgpu/kvmgpu.toml")


def domain(channel_dir: Path) -> str:
    return f"""<domain type='qemu'><name>vm01</name><devices>
      <channel type='unix'><source mode='bind' path='{channel_dir}/vm01.sock'/>
        <target type='virtio' name='org.kvmgpu.0'/></channel></devices></domain>"""


def test_the_rule(tmp_path):
    conf = tmp_path / "qemu.conf"
    conf.write_text('# group = "nope"\nuser = "libvirt-qemu"\n')
    assert host.channel_group(Config(), str(conf)) == "libvirt-qemu"          # Debian's default
    conf.write_text('group = "kvm"\n')
    assert host.channel_group(Config(), str(conf)) == "kvm"                   # QEMU's group
    assert host.channel_group(Config(qemu_group="wheel"), str(conf)) == "wheel"   # kvmgpu's setting
    assert host.channel_group(Config(), str(tmp_path / "none")) == "libvirt-qemu"


@pytest.mark.skipif(os.geteuid() != 0, reason="the hook and attach chown to root:<group>")
def test_hook_and_attach_give_the_directory_the_same_group(tmp_path):
    by_hook, by_attach = tmp_path / "hook" / "ch", tmp_path / "attach" / "ch"
    r = subprocess.run([sys.executable, HOOK, "vm01", "prepare", "begin", "-"], input=domain(by_hook),
                       text=True, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # attach reads the same configuration file the hook reads
    config = load_config(str(KVMGPU_CONF)) if KVMGPU_CONF.exists() else Config()
    host.prepare_channel_dir(Config(channel_dir=str(by_attach), qemu_group=config.qemu_group))
    a, b = by_hook.stat(), by_attach.stat()
    assert (a.st_uid, a.st_gid, stat.S_IMODE(a.st_mode)) == (b.st_uid, b.st_gid, stat.S_IMODE(b.st_mode))
    assert stat.S_IMODE(a.st_mode) == 0o2770
    try:
        assert a.st_gid == grp.getgrnam(host.channel_group(config)).gr_gid
    except KeyError:
        pytest.skip(f"group {host.channel_group(config)} does not exist here")


@pytest.mark.skipif(os.geteuid() != 0, reason="workers switch identity only under a root daemon")
def test_workers_are_in_the_channel_group(monkeypatch):
    try:
        gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        pytest.skip("no group kvm here")
    monkeypatch.setattr(workers, "code_paths", lambda: [])      # wherever this checkout lies
    who = choose_run_as("nobody", "kvm")
    assert who is not None and who.user == "nobody" and gid in who.groups
