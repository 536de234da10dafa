"""The vgpu module's own logic against a stand-in for the kvmgpu CLI's --json contract
(fake_kvmgpu.py): what it compares, what it runs, what check mode and --diff report, and that it
fails with the CLI's words. The same playbook against the real CLI and libvirtd:
test_ansible_attach.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FAKE = Path(__file__).with_name("fake_kvmgpu.py")


@pytest.fixture
def fake(tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"vms": ["vm01"], "vgpus": {}, "calls": []}))

    def calls(verb):
        return [c for c in json.loads(state.read_text())["calls"] if c[0] == verb]

    return {"env": {"FAKE_KVMGPU_STATE": str(state)}, "calls": calls,
            "vgpus": lambda: json.loads(state.read_text())["vgpus"]}


@pytest.fixture
def play(ansible_playbook, make_inventory, fake):
    def run(vgpus, *args, check=True):
        inv = make_inventory("inv.yml", "kvmgpu_hosts", {"kvmgpu_cmd": str(FAKE), "kvmgpu_vgpus": vgpus})
        return ansible_playbook("attach.yml", inv, *args, env=fake["env"], check=check)

    return run


def test_present_absent_check_and_diff(play, fake):
    want = [{"vm": "vm01", "gmem": "8G", "compute": 50, "compute_mode": "limit"}]
    run = play(want, "--check", "--diff")
    assert run.changed == 1 and '"gmem": 8589934592' in run.output, run.output
    assert fake["vgpus"]() == {} and fake["calls"]("attach") == []

    assert play(want).changed == 1
    assert fake["vgpus"]()["vm01"]["gmem"] == 8 << 30
    assert play(want).changed == 0 and play(want, "--check").changed == 0
    assert len(fake["calls"]("attach")) == 1
    # The same quota written another way is the same quota.
    assert play([{**want[0], "gmem": "8192M"}]).changed == 0

    # Only what is given is compared; an update keeps the GPU the vGPU is on.
    assert play([{"vm": "vm01", "compute": 70}]).changed == 1
    assert fake["vgpus"]()["vm01"]["compute"] == 70 and fake["vgpus"]()["vm01"]["gmem"] == 8 << 30
    assert fake["calls"]("attach")[-1][fake["calls"]("attach")[-1].index("--gpu") + 1] == "0"

    # The region is compared and passed like the other settings.
    assert play([{"vm": "vm01", "region": "1024M"}]).changed == 1
    assert fake["vgpus"]()["vm01"]["region_size"] == 1 << 30 and fake["vgpus"]()["vm01"]["compute"] == 70
    assert "--region" in fake["calls"]("attach")[-1]
    assert play([{"vm": "vm01", "region": "1G"}]).changed == 0

    gone = [{"vm": "vm01", "state": "absent"}]
    run = play(gone, "--check", "--diff")
    assert run.changed == 1 and "vm01" in fake["vgpus"](), run.output
    assert play(gone).changed == 1 and fake["vgpus"]() == {}
    assert play(gone).changed == 0


def test_fails_with_the_cli_words(play, fake):
    run = play([{"vm": "nope", "gmem": "1G"}], check=False)
    assert run.rc != 0 and "error: domain 'nope' does not exist" in run.output and "hint: virsh" in run.output
    run = play([{"vm": "vm01", "gmem": "100G"}], check=False)
    assert run.rc != 0 and "error: no GPU has" in run.output
    run = play([{"vm": "vm01", "gmem": "lots"}], check=False)
    assert run.rc != 0 and "error: --gmem 'lots' is not a size" in run.output
    run = play([{"vm": "vm01"}], check=False)
    assert run.rc != 0 and "give gmem" in run.output
    assert fake["vgpus"]() == {}
