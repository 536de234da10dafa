"""Fixtures for kvmgpu's libvirt side: connections handed in, unique domains always undefined."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest

from kvmgpu.config import Config
from kvmgpu.inventory import parse_sim_gpus

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SYSTEM_URI = "qemu:///system"
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def compare_golden(name: str, text: str) -> None:
    """Compare with tests/golden/<name>; KVMGPU_REGEN_GOLDEN=1 rewrites it, a missing one is written
    and the test fails saying so."""
    path = GOLDEN / name
    if os.environ.get("KVMGPU_REGEN_GOLDEN") == "1" or not path.exists():
        existed = path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not existed:
            pytest.fail(f"golden file {path} did not exist: written now, check it and run again")
        return
    assert text == path.read_text(), f"{name} differs from {path} (KVMGPU_REGEN_GOLDEN=1 to accept)"


def validate_domain(text: str, tmp_path: Path) -> None:
    """libvirt's own schema check of a whole domain document."""
    f = tmp_path / f"domain-{uuid.uuid4().hex[:8]}.xml"
    f.write_text(text)
    r = subprocess.run(["virt-xml-validate", str(f), "domain"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(channel_dir=str(tmp_path / "run"), state_dir=str(tmp_path / "state"))


@pytest.fixture
def gpus():
    return parse_sim_gpus("2x80G")


@pytest.fixture
def test_conn():
    """libvirt's test driver; its default domain `test` (running) is left without a vGPU after."""
    conn = libvirt.open("test:///default")
    yield conn
    from kvmgpu.domain import host
    host.detach(conn, "test")
    conn.close()


def _system_conn():
    try:
        return libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as e:
        pytest.skip(f"{SYSTEM_URI} is unreachable ({e.get_error_message()}): start libvirtd (`make libvirtd`)")


@pytest.fixture
def system_conn():
    conn = _system_conn()
    yield conn
    conn.close()


def domain_xml(name: str, machine: str = "pc", extra_devices: str = "", extra: str = "") -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>{extra}
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='{machine}'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>{extra_devices}
  </devices>
</domain>"""


@pytest.fixture
def make_domain(system_conn):
    """Define domains kvmgpu-test-<uuid8> on qemu:///system; destroyed and undefined afterwards,
    whatever the test did."""
    made = []

    def make(**kw):
        name = f"kvmgpu-test-{uuid.uuid4().hex[:8]}"
        made.append(name)
        return system_conn.defineXML(domain_xml(name, **kw))

    yield make
    for name in made:
        try:
            dom = system_conn.lookupByName(name)
        except libvirt.libvirtError:
            continue
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        with contextlib.suppress(FileNotFoundError):  # QEMU leaves the region file behind
            os.unlink(f"/dev/shm/kvmgpu-{name}")


@pytest.fixture
def golden():
    return compare_golden


@pytest.fixture
def validate(tmp_path):
    return lambda text: validate_domain(text, tmp_path)
