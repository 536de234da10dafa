"""attach.yml against localhost and a real libvirtd: changes once, then nothing; check mode and diff
show the change without making it; absent gives back exactly the domain that was there before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.libvirt

KVMGPU = Path(sys.executable).parent / "kvmgpu"


@pytest.fixture(scope="module")
def kvmgpu_cli():
    proc = subprocess.run([str(KVMGPU), "attach", "--help"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("this kvmgpu has no `attach` command yet")
    return KVMGPU


@pytest.fixture
def attach_env(tmp_path):
    config = tmp_path / "kvmgpu.toml"
    config.write_text('sim_gpus = "2x80G"\n')
    return {"KVMGPU_CONFIG": str(config), "KVMGPU_SIM_GPUS": "2x80G"}


@pytest.fixture
def inventory(make_inventory):
    def make(vgpus, name="inventory.yml"):
        return make_inventory(name, "kvmgpu_hosts", {
            "kvmgpu_cmd": str(KVMGPU),
            "kvmgpu_connect": "qemu:///system",
            "kvmgpu_vgpus": vgpus,
        })

    return make


def inactive_xml(dom) -> str:
    import libvirt

    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def listed(vm: str, env: dict) -> dict:
    out = subprocess.run([str(KVMGPU), "list", "--json"], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    entries = json.loads(out)
    if isinstance(entries, dict):
        entries = entries.get("vgpus", [])
    return next((e for e in entries if e.get("vm") == vm), {})


def test_attach_playbook_is_idempotent_checkable_and_reversible(
        kvmgpu_cli, ansible_playbook, scratch_domain, attach_env, inventory):
    vm = scratch_domain.name()
    original = inactive_xml(scratch_domain)
    present = inventory([{"vm": vm, "gmem": "1G", "compute": 40, "compute_mode": "limit"}])

    # Check mode with diff: reports the change, shows it, changes nothing.
    run = ansible_playbook("attach.yml", present, "--check", "--diff", env=attach_env)
    assert run.changed == 1, run.output
    assert inactive_xml(scratch_domain) == original
    assert '"gmem": 1073741824' in run.output and vm in run.output, run.output

    # First run attaches.
    run = ansible_playbook("attach.yml", present, "--diff", env=attach_env)
    assert run.changed == 1, run.output
    attached = inactive_xml(scratch_domain)
    assert attached != original
    vgpu = listed(vm, attach_env)
    assert vgpu["gmem"] == 1 << 30 and vgpu["compute"] == 40 and vgpu["compute_mode"] == "limit"

    # Second run (and its check mode): nothing to do.
    assert ansible_playbook("attach.yml", present, env=attach_env).changed == 0
    assert ansible_playbook("attach.yml", present, "--check", env=attach_env).changed == 0
    assert inactive_xml(scratch_domain) == attached

    # An update: check mode shows it and leaves the domain alone; the real run makes it, once.
    update = inventory([{"vm": vm, "gmem": "2G", "compute": 40, "compute_mode": "limit"}],
                       "update.yml")
    run = ansible_playbook("attach.yml", update, "--check", "--diff", env=attach_env)
    assert run.changed == 1 and '"gmem": 2147483648' in run.output, run.output
    assert inactive_xml(scratch_domain) == attached
    assert ansible_playbook("attach.yml", update, env=attach_env).changed == 1
    assert listed(vm, attach_env)["gmem"] == 2 << 30
    assert ansible_playbook("attach.yml", update, env=attach_env).changed == 0

    # Absent: check mode changes nothing; the real run gives back the domain exactly as it was.
    absent = inventory([{"vm": vm, "state": "absent"}], "absent.yml")
    run = ansible_playbook("attach.yml", absent, "--check", "--diff", env=attach_env)
    assert run.changed == 1, run.output
    assert listed(vm, attach_env)
    assert ansible_playbook("attach.yml", absent, env=attach_env).changed == 1
    assert inactive_xml(scratch_domain) == original
    assert listed(vm, attach_env) == {}
    assert ansible_playbook("attach.yml", absent, env=attach_env).changed == 0


def test_module_fails_with_kvmgpu_own_error(kvmgpu_cli, ansible_playbook, scratch_domain, attach_env,
                                            inventory):
    vm = scratch_domain.name()
    original = inactive_xml(scratch_domain)
    too_big = inventory([{"vm": vm, "gmem": "4096G"}])
    run = ansible_playbook("attach.yml", too_big, env=attach_env, check=False)
    assert run.rc != 0 and run.recap()["failed"] == 1, run.output
    # The message is kvmgpu's: what attach printed on stderr.
    direct = subprocess.run([str(KVMGPU), "attach", vm, "--gmem", "4096G", "--connect", "qemu:///system",
                             "--json"], capture_output=True, text=True,
                            env={**os.environ, **attach_env})
    assert direct.returncode != 0
    first_line = direct.stderr.strip().splitlines()[0]
    assert first_line.startswith("error:") and first_line in run.output, run.output
    assert inactive_xml(scratch_domain) == original

    missing = inventory([{"vm": vm + "-missing", "gmem": "1G"}], "missing.yml")
    run = ansible_playbook("attach.yml", missing, env=attach_env, check=False)
    assert run.rc != 0 and "error:" in run.output, run.output
