"""The real `kvmgpu` entry point: exit codes, messages on stderr, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KVMGPU = str(Path(sys.executable).with_name("kvmgpu"))
G = 1 << 30


def run(*args, env=None, user=None):
    e = {**os.environ, "KVMGPU_SIM_GPUS": "2x80G", "KVMGPU_CONFIG": "/dev/null", **(env or {})}
    cmd = [KVMGPU, *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=60)


def test_bad_size_exits_2():
    r = run("attach", "test", "--gmem", "8Q", "--connect", "test:///default")
    assert r.returncode == 2 and r.stderr.startswith("error: --gmem '8Q'") and "hint:" in r.stderr


@pytest.mark.parametrize("args", [["--compute", "0"], ["--compute", "101"], ["--compute-mode", "fair"],
                                  ["--gpu", "first"]])
def test_bad_settings_exit_2(args):
    r = run("attach", "test", "--gmem", "8G", *args, "--connect", "test:///default")
    assert r.returncode == 2 and r.stderr.startswith("error: ")


def test_no_such_vm_exits_3():
    r = run("attach", "nosuch", "--gmem", "8G", "--connect", "test:///default")
    assert r.returncode == 3 and "no VM 'nosuch'" in r.stderr and "libvirt:" not in r.stderr


def test_no_room_exits_4():
    r = run("attach", "test", "--gmem", "80G", "--connect", "test:///default")
    assert r.returncode == 4 and "free to promise" in r.stderr


def test_unreachable_libvirt_exits_5():
    r = run("list", "--connect", "qemu+unix:///system?socket=/nonexistent/sock")
    assert r.returncode == 5 and "make libvirtd" in r.stderr


def test_no_gpus_hints_sim(tmp_path):
    r = run("attach", "test", "--gmem", "8G", "--connect", "test:///default", env={"KVMGPU_SIM_GPUS": ""})
    assert r.returncode == 3 and "KVMGPU_SIM_GPUS" in r.stderr or r.returncode == 0  # a real GPU host


def test_attach_test_driver_json(tmp_path):
    env = {"KVMGPU_CONFIG": str(tmp_path / "k.toml")}
    (tmp_path / "k.toml").write_text(f'channel_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n')
    r = run("attach", "test", "--gmem", "8G", "--compute", "30", "--connect", "test:///default", "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["changed"] and out["restart_needed"] and out["vgpu"]["gmem"] == 8 * G


def test_detach_without_vgpu_exits_0():
    r = run("detach", "test", "--connect", "test:///default", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["changed"] is False


def test_gpus_json_says_simulated():
    r = run("gpus", "--connect", "test:///default", "--json")
    assert r.returncode == 0
    gpus = json.loads(r.stdout)
    assert gpus and all(g["simulated"] for g in gpus if g["name"] == "kvmgpu simulated GPU")
    assert "simulated" in run("gpus", "--connect", "test:///default").stdout


@pytest.mark.libvirt
def test_attach_list_detach_on_system(make_domain, tmp_path):
    dom = make_domain()
    vm = dom.name()
    before = dom.XMLDesc(0x1 | 0x2)
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'channel_dir = "{tmp_path}/run"\nstate_dir = "{tmp_path}/state"\n')
    env = {"KVMGPU_CONFIG": str(cfg)}
    r = run("attach", vm, "--gmem", "4G", "--compute", "40", "--compute-mode", "limit", env=env)
    assert r.returncode == 0 and "attached" in r.stdout, r.stderr
    r = run("attach", vm, "--gmem", "4G", "--compute", "40", "--compute-mode", "limit", env=env)
    assert r.returncode == 0 and "nothing changed" in r.stdout
    listed = json.loads(run("list", "--json", env=env).stdout)
    mine = [v for v in listed if v["vm"] == vm]
    assert mine and mine[0]["state"] == "shut off" and mine[0]["used"] is None
    assert "unknown (daemon not running)" in run("list", env=env).stdout
    r = run("detach", vm, env=env)
    assert r.returncode == 0 and "detached" in r.stdout
    assert dom.XMLDesc(0x1 | 0x2) == before
    r = run("detach", vm, env=env)
    assert r.returncode == 0 and "no vGPU" in r.stdout


@pytest.mark.libvirt
def test_permission_denied_exits_6(make_domain):
    dom = make_domain()
    before = dom.XMLDesc(0x1 | 0x2)
    r = run("attach", dom.name(), "--gmem", "4G", user="nobody")
    assert r.returncode == 6 and r.stderr.startswith("error: ") and "hint: run as root" in r.stderr, r.stderr
    print(r.stderr)
    assert dom.XMLDesc(0x1 | 0x2) == before


def test_gpus_says_what_is_unknown_without_a_daemon(tmp_path):
    config = tmp_path / "kvmgpu.toml"
    config.write_text(f'api_socket = "{tmp_path / "no-daemon.sock"}"\n')
    env = {"KVMGPU_CONFIG": str(config)}
    r = run("gpus", "--connect", "test:///default", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [g["used"] for g in json.loads(r.stdout)] == [None, None]
    assert "unknown (daemon not running)" in run("gpus", "--connect", "test:///default", env=env).stdout
