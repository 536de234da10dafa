"""Fixtures for the Ansible tests: ansible-playbook from the test venv, run against localhost."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class PlaybookRun:
    rc: int
    output: str

    def recap(self, host: str = "localhost") -> dict[str, int]:
        for m in _RECAP.finditer(self.output):
            if m.group(1) == host:
                return {"ok": int(m.group(2)), "changed": int(m.group(3)),
                        "unreachable": int(m.group(4)), "failed": int(m.group(5))}
        raise AssertionError(f"no PLAY RECAP line for {host} in:\n{self.output}")

    @property
    def changed(self) -> int:
        return self.recap()["changed"]


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ANSIBLE_DIR / "collections"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    })
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def ansible_playbook():
    """Run ansible-playbook on one of ansible/'s playbooks with an inventory file; returns PlaybookRun."""
    exe = BIN / "ansible-playbook"
    if not exe.exists():
        pytest.skip("ansible-core is not installed in the test venv (pip install -e '.[test]')")

    def run(playbook: str, inventory: Path, *args: str, env: dict[str, str] | None = None,
            check: bool = True) -> PlaybookRun:
        cmd = [str(exe), "-i", str(inventory), str(ANSIBLE_DIR / playbook), *args]
        proc = subprocess.run(cmd, cwd=ANSIBLE_DIR, env=ansible_env(env), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        result = PlaybookRun(proc.returncode, proc.stdout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}")
        return result

    return run


@pytest.fixture
def make_inventory(tmp_path):
    """make_inventory(name, group, hostvars): a YAML inventory with localhost (local connection,
    this venv's Python) in `group`."""
    import yaml

    def make(name: str, group: str, hostvars: dict) -> Path:
        host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **hostvars}
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"all": {"children": {group: {"hosts": {"localhost": host}}}}}))
        return path

    return make


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    return BIN


@pytest.fixture
def unique_name():
    return f"kvmgpu-ans-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def libvirt_conn():
    libvirt = pytest.importorskip("libvirt")
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as e:
        pytest.skip(f"no libvirtd on qemu:///system ({e}); `make libvirtd` starts one")
    yield conn
    conn.close()


@pytest.fixture
def scratch_domain(libvirt_conn, unique_name, tmp_path):
    """A uniquely named, defined (not started) TCG domain with no disk; undefined afterwards."""
    emulator = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    xml = f"""<domain type='qemu'>
  <name>{unique_name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>{emulator}</emulator></devices>
</domain>"""
    dom = libvirt_conn.defineXML(xml)
    try:
        yield dom
    finally:
        import libvirt

        try:
            dom = libvirt_conn.lookupByName(unique_name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass
        for leftover in (Path(f"/dev/shm/kvmgpu-{unique_name}"),):
            if leftover.exists():
                leftover.unlink()
