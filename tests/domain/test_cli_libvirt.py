"""The real `kvmgpu` command against the real libvirtd: what an operator reads after a re-attach,
and what `list` / `gpus` say about a running VM whose vGPU was changed for its next boot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.libvirt

KVMGPU = str(Path(sys.executable).with_name("kvmgpu"))
G = 1 << 30


@pytest.fixture
def kvmgpu(tmp_path, system_conn):
    """Run `kvmgpu ... --connect qemu:///system` with a temporary configuration and no daemon."""
    cfg = tmp_path / "kvmgpu.toml"
    cfg.write_text(f'channel_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n'
                   f'api_socket = "{tmp_path}/no-daemon.sock"\n')
    env = {**os.environ, "KVMGPU_SIM_GPUS": "1x80G", "KVMGPU_CONFIG": str(cfg)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([KVMGPU, *args, "--connect", "qemu:///system"], capture_output=True, text=True,
                              env=env, timeout=60)
    return run


def test_a_reattach_with_only_gmem_keeps_compute_and_mode(make_domain, kvmgpu):
    name = make_domain().name()
    r = kvmgpu("attach", name, "--gmem", "4G", "--compute", "30", "--compute-mode", "limit")
    assert r.returncode == 0, r.stderr
    r = kvmgpu("attach", name, "--gmem", "8G")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"updated {name}'s vGPU: 8 GiB, compute 30% (limit) on GPU 0, region 256 MiB "
                               f"(was 4 GiB, compute 30% (limit) on GPU 0, region 256 MiB)"), r.stdout
    r = kvmgpu("attach", name, "--compute", "60", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["vgpu"]["gmem"], out["vgpu"]["compute"], out["vgpu"]["compute_mode"]) == (8 * G, 60, "limit")
    assert out["vgpu"]["id"] == out["previous"]["id"]
    listed = json.loads(kvmgpu("list", "--json").stdout)
    mine = [v for v in listed if v["vm"] == name]
    assert [(v["gmem"], v["compute"], v["compute_mode"]) for v in mine] == [(8 * G, 60, "limit")]


def test_region_is_a_vgpu_setting_kept_on_reattach(make_domain, kvmgpu):
    dom = make_domain()
    name = dom.name()
    r = kvmgpu("attach", name, "--gmem", "4G", "--region", "1G", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["vgpu"]["region_size"] == G
    shmem = "<shmem name='kvmgpu-" + name + "'>"
    xml = dom.XMLDesc(0)
    assert shmem in xml and "<size unit='M'>1024</size>" in xml, xml
    r = kvmgpu("attach", name, "--gmem", "8G")          # not named: kept
    assert r.returncode == 0 and r.stdout.rstrip().endswith("region 1 GiB (was 4 GiB, compute 100% (share) "
                                                            "on GPU 0, region 1 GiB)"), r.stdout
    assert "<size unit='M'>1024</size>" in dom.XMLDesc(0)
    listed = [v for v in json.loads(kvmgpu("list", "--json").stdout) if v["vm"] == name]
    assert [v["region_size"] for v in listed] == [G]


@pytest.mark.parametrize("region", ["300M", "32G", "512K"])
def test_a_bad_region_is_refused_and_changes_nothing(make_domain, kvmgpu, region):
    dom = make_domain()
    before = dom.XMLDesc(0)
    r = kvmgpu("attach", dom.name(), "--gmem", "4G", "--region", region)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: --region ") and "power of two from 1M to 16G" in r.stderr, r.stderr
    assert "hint: ivshmem needs a power-of-two size" in r.stderr, r.stderr
    assert dom.XMLDesc(0) == before


def test_a_new_vgpu_needs_gmem(make_domain, kvmgpu):
    name = make_domain().name()
    r = kvmgpu("attach", name, "--compute", "50")
    assert r.returncode == 2 and f"VM '{name}' has no vGPU yet" in r.stderr and "--gmem" in r.stderr
    assert json.loads(kvmgpu("list", "--json").stdout) == [] or \
        name not in [v["vm"] for v in json.loads(kvmgpu("list", "--json").stdout)]


def _item(kvmgpu, name):
    r = kvmgpu("list", "--json")
    assert r.returncode == 0, r.stderr
    return next(v for v in json.loads(r.stdout) if v["vm"] == name)


def test_a_running_vm_counts_with_what_it_runs_until_it_restarts(make_domain, system_conn, kvmgpu):
    """16G running, changed to 4G for its next boot: 16G stays promised, list says both."""
    dom = make_domain()
    name = dom.name()
    assert kvmgpu("attach", name, "--gmem", "16G", "--compute", "30").returncode == 0
    dom.create()
    r = kvmgpu("attach", name, "--gmem", "4G")
    assert r.returncode == 0 and "takes effect at its next boot" in r.stdout, r.stderr

    item = _item(kvmgpu, name)
    assert (item["gmem"], item["live"]["gmem"], item["next_boot"]["gmem"]) == (4 * G, 16 * G, 4 * G)
    assert item["pending_restart"] is True and item["state"] == "running"
    row = next(line for line in kvmgpu("list").stdout.splitlines() if line.startswith(name))
    assert "16 GiB (4 GiB at next boot)" in row and "(vGPU changes at next boot)" in row

    gpu = json.loads(kvmgpu("gpus", "--json").stdout)[0]
    assert gpu["promised"] >= 16 * G, gpu            # others' running vGPUs may add to it

    # another VM cannot be promised the 12G the first still uses
    other = make_domain().name()
    free = gpu["free"]
    r = kvmgpu("attach", other, "--gmem", f"{(free >> 30) + 1}G")
    assert r.returncode == 4, r.stdout
    assert f"running VMs with a change pending serve until they restart: {name} 16 GiB" in r.stderr

    # once it restarts, it runs with 4G and nothing is pending
    dom.destroy()
    dom.create()
    item = _item(kvmgpu, name)
    assert (item["gmem"], item["live"]["gmem"], item["pending_restart"]) == (4 * G, 4 * G, False)
    row = next(line for line in kvmgpu("list").stdout.splitlines() if line.startswith(name))
    assert "at next boot" not in row


def test_a_vgpu_detached_while_running_still_counts(make_domain, system_conn, kvmgpu):
    dom = make_domain()
    name = dom.name()
    assert kvmgpu("attach", name, "--gmem", "8G").returncode == 0
    dom.create()
    before = json.loads(kvmgpu("gpus", "--json").stdout)[0]["promised"]
    assert kvmgpu("detach", name).returncode == 0
    item = _item(kvmgpu, name)
    assert (item["live"]["gmem"], item["next_boot"], item["pending_restart"]) == (8 * G, None, True)
    assert json.loads(kvmgpu("gpus", "--json").stdout)[0]["promised"] == before
    row = next(line for line in kvmgpu("list").stdout.splitlines() if line.startswith(name))
    assert "(no vGPU at next boot)" in row
