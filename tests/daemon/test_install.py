"""The libvirt hook prepares kvmgpu's channel directory and nothing else; the installer puts the
hook and the unit in place."""

import grp
import os
import stat
import subprocess
import sys
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
