"""The host and guest roles against localhost, sandboxed: everything they install goes under a
temporary directory (role variables), the Debian packages are the ones `make deps` installed, and
the daemon is not started (this machine has no systemd; the role says so). Also: site.yml's syntax
and ansible-lint's production profile on ansible/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """kvmgpu and kvmgpu_guest wheels built from a copy of this checkout (the build leaves nothing in
    the working tree)."""
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("wheels")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "kvmgpu", "guest-agent", "xml-templates",
                            "pyproject.toml", "setup.py", "README.md"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    ".", "./guest-agent", "-w", str(out)], cwd=src, check=True, capture_output=True)
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"kvmgpu", "kvmgpu_guest"}, found
    return found


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return tmp_path_factory.mktemp("sandbox")


def host_vars(sandbox: Path, wheels: dict) -> dict:
    return {
        "kvmgpu_host_install_debs": True,
        "kvmgpu_host_apt_cache_valid_time": 10 * 365 * 86400,  # never refresh apt's lists here
        "kvmgpu_host_wheels": [str(wheels["kvmgpu"]), str(wheels["kvmgpu_guest"])],
        "kvmgpu_host_wheel_dir": str(sandbox / "wheels"),
        "kvmgpu_host_venv": str(sandbox / "venv"),
        "kvmgpu_host_config_file": str(sandbox / "etc/kvmgpu.toml"),
        "kvmgpu_host_config": {"sim_gpus": "2x80G", "metrics_port": 19464, "region_size": "64M"},
        "kvmgpu_host_unit_dir": str(sandbox / "systemd"),
        "kvmgpu_host_hook_dir": str(sandbox / "hooks/qemu.d"),
        "kvmgpu_host_without_systemd": "skip",
    }


def guest_vars(sandbox: Path, wheels: dict) -> dict:
    return {
        "kvmgpu_guest_source": "wheel",
        "kvmgpu_guest_wheel": str(wheels["kvmgpu_guest"]),
        "kvmgpu_guest_wheel_dir": str(sandbox / "guest/wheels"),
        "kvmgpu_guest_venv": str(sandbox / "guest/venv"),
        "kvmgpu_guest_bin_link": str(sandbox / "guest/bin/kvmgpu-guest"),
        "kvmgpu_guest_unit_dir": str(sandbox / "guest/systemd"),
        "kvmgpu_guest_install_debs": False,
    }


def both_roles_inventory(path: Path, hostvars: dict) -> Path:
    import yaml

    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **hostvars}
    groups = {"kvmgpu_hosts": {"hosts": {"localhost": host}}, "kvmgpu_guests": {"hosts": {"localhost": {}}}}
    path.write_text(yaml.safe_dump({"all": {"children": groups}}))
    return path


def installed_cli_works(sandbox: Path) -> None:
    """The role's venv holds kvmgpu itself (the wheel, not this checkout), and its commands work,
    run from outside the checkout with nothing of the test venv on their paths."""
    venv = sandbox / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH="/usr/sbin:/usr/bin:/sbin:/bin", KVMGPU_CONFIG=str(sandbox / "etc/kvmgpu.toml"))

    def run(*argv):
        return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True,
                              env=env, cwd=sandbox, timeout=60)
    r = run("python", "-c", "import kvmgpu; print(kvmgpu.__file__)")
    assert r.returncode == 0 and r.stdout.startswith(str(venv)), r.stdout + r.stderr
    r = run("kvmgpu", "--version")
    assert r.returncode == 0 and r.stdout.startswith("kvmgpu "), r.stdout + r.stderr
    # the configuration the role wrote declares 2x80G; libvirt's test driver stands in for libvirtd
    r = run("kvmgpu", "gpus", "--json", "--connect", "test:///default")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [(g["total_memory"], g["simulated"]) for g in json.loads(r.stdout)] == [(80 << 30, True)] * 2


def test_site_installs_once_then_changes_nothing(ansible_playbook, make_inventory, wheels, sandbox):
    (sandbox / "guest/bin").mkdir(parents=True)
    inv = both_roles_inventory(sandbox / "site.yml", {**host_vars(sandbox, wheels), **guest_vars(sandbox, wheels)})

    run = ansible_playbook("site.yml", inv)
    assert run.changed > 0, run.output
    # Host: kvmgpu in its virtualenv, the unit pointing at it, the hook, the configuration.
    venv_kvmgpu = sandbox / "venv/bin/kvmgpu"
    installed_cli_works(sandbox)
    unit = (sandbox / "systemd/kvmgpu.service").read_text()
    assert f"ExecStart={venv_kvmgpu} daemon" in unit
    assert f'Environment="KVMGPU_CONFIG={sandbox}/etc/kvmgpu.toml"' in unit
    hook = sandbox / "hooks/qemu.d/kvmgpu"
    assert hook.stat().st_mode & 0o777 == 0o755
    assert f'CONFIG = "{sandbox}/etc/kvmgpu.toml"' in hook.read_text()
    config = (sandbox / "etc/kvmgpu.toml").read_text()
    assert 'sim_gpus = "2x80G"' in config and "metrics_port = 19464" in config
    # Guest: the agent in its virtualenv, on PATH, and its unit.
    out = subprocess.run([str(sandbox / "guest/bin/kvmgpu-guest"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "kvmgpu-guest" in out.stdout
    guest_unit = (sandbox / "guest/systemd/kvmgpu-guest.service").read_text()
    assert f"ExecStart={sandbox}/guest/venv/bin/kvmgpu-guest agent" in guest_unit
    # No systemd here: the units are installed, the daemons are not started, and the roles say why.
    if "systemd" not in run.output.split("service manager is", 1)[-1][:40]:
        assert "kvmgpu daemon not started" in run.output, run.output
        assert "kvmgpu-guest agent not started" in run.output, run.output

    again = ansible_playbook("site.yml", inv)
    assert again.changed == 0, again.output

    # The configuration is read by kvmgpu itself before it is installed: a value it refuses fails
    # the run and leaves the installed file alone.
    quick = {**host_vars(sandbox, wheels), "kvmgpu_host_install_debs": False}  # apt was tested above
    bad = make_inventory("bad.yml", "kvmgpu_hosts", {**quick, "kvmgpu_host_config": {"region_size": "3M"}})
    run = ansible_playbook("site.yml", bad, check=False)
    assert run.rc != 0 and "power of two" in run.output, run.output
    assert (sandbox / "etc/kvmgpu.toml").read_text() == config

    # A changed setting: check mode reports it and changes nothing; the real run changes it and
    # runs the restart handler.
    changed_vars = {**quick,
                    "kvmgpu_host_config": {"sim_gpus": "1x40G", "metrics_port": 19464, "region_size": "64M"}}
    new = make_inventory("new.yml", "kvmgpu_hosts", changed_vars)
    run = ansible_playbook("site.yml", new, "--check", "--diff")
    assert run.changed >= 1 and '+sim_gpus = "1x40G"' in run.output, run.output
    assert (sandbox / "etc/kvmgpu.toml").read_text() == config
    run = ansible_playbook("site.yml", new)
    assert run.changed == 1 and "RUNNING HANDLER" in run.output, run.output
    assert 'sim_gpus = "1x40G"' in (sandbox / "etc/kvmgpu.toml").read_text()


def test_playbooks_syntax(ansible_playbook, make_inventory):
    inv = REPO / "ansible/inventory/example/hosts.yml"
    for playbook in ("site.yml", "attach.yml"):
        ansible_playbook(playbook, inv, "--syntax-check")


def test_ansible_lint_production_profile():
    exe = BIN / "ansible-lint"
    if not exe.exists():
        pytest.skip("ansible-lint is not installed in the test venv (pip install -e '.[test]')")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "NO_COLOR": "1",
           "ANSIBLE_COLLECTIONS_PATH": str(REPO / "ansible/collections")}
    proc = subprocess.run([str(exe), "--profile", "production", "--offline", "--nocolor"],
                          cwd=REPO / "ansible", env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr
