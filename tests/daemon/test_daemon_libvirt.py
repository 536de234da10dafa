"""The daemon against the real libvirtd: a TCG domain with kvmgpu's devices (put there by the real
attach code), the real `kvmgpu worker`, and `kvmgpu daemon` run as a process.

Each test defines a uniquely named domain with no disk (SeaBIOS finds nothing to boot, but QEMU
runs, binds the channel and creates the region) and cleans everything up even when it fails.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from kvmgpu.config import load_config  # noqa: E402
from kvmgpu.daemon import api  # noqa: E402
from kvmgpu.daemon.history import History  # noqa: E402
from kvmgpu.daemon.workers import find_worker_pids, is_worker_pid, qemu_identity  # noqa: E402
from kvmgpu.domain import host  # noqa: E402
from kvmgpu.errors import DaemonUnavailable  # noqa: E402
from kvmgpu.inventory import discover  # noqa: E402
from kvmgpu.vgpu import region_path  # noqa: E402

pytestmark = pytest.mark.libvirt

URI = "qemu:///system"
KVMGPU = Path(sys.executable).parent / "kvmgpu"
GMEM = 1 << 30

DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices><memballoon model='none'/><graphics type='vnc' autoport='yes' listen='127.0.0.1'/></devices>
</domain>"""


@pytest.fixture
def conn():
    try:
        c = libvirt.open(URI)
    except libvirt.libvirtError as e:
        pytest.skip(f"{URI} is unreachable ({e.get_error_message()}): run `make libvirtd`")
    yield c
    c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Host:
    base: Path
    config_path: Path
    run_dir: Path
    env: dict

    @property
    def config(self):
        return load_config(str(self.config_path))


@pytest.fixture
def kvmgpu_host():
    # under /tmp with open parents: QEMU (libvirt-qemu) binds the channel in here
    base = Path(tempfile.mkdtemp(prefix="kvmgpu-it-", dir="/tmp"))
    os.chmod(base, 0o755)
    cfg = base / "kvmgpu.toml"
    cfg.write_text(f'sim_gpus = "1x16G"\nchannel_dir = "{base}/ch"\nregion_size = "16M"\n'
                   f'state_dir = "{base}/state"\napi_socket = "{base}/api.sock"\nmetrics_port = {free_port()}\n')
    env = {**os.environ, "KVMGPU_SIM_GPUS": "1x16G", "KVMGPU_CONFIG": str(cfg)}
    yield Host(base, cfg, base / "run", env)
    shutil.rmtree(base, ignore_errors=True)


class Daemons:
    """`kvmgpu daemon` processes started by a test; all killed at the end."""

    def __init__(self, h: Host):
        self.h = h
        self.procs: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        log = open(self.h.base / f"daemon-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([sys.executable, str(KVMGPU), "daemon", "--config", str(self.h.config_path),
                              "--run-dir", str(self.h.run_dir), "--verbose"],
                             stdout=log, stderr=subprocess.STDOUT, env=self.h.env)
        log.close()
        self.procs.append(p)
        wait_for(lambda: self._up(p), what="the daemon's API", log=self.logs)
        return p

    def _up(self, p):
        if p.poll() is not None:
            raise AssertionError(f"the daemon exited with {p.returncode}:\n{self.logs()}")
        try:
            return api.query(self.h.config, {"op": "status"})["daemon"]["pid"] == p.pid
        except DaemonUnavailable:
            return False

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}"
                         for p in sorted(self.h.base.glob("daemon-*.log")))

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def daemons(kvmgpu_host):
    d = Daemons(kvmgpu_host)
    yield d
    d.kill_all()


@pytest.fixture
def vm(conn, kvmgpu_host):
    """A defined TCG domain with a 1 GiB vGPU attached by kvmgpu's own attach code."""
    name = f"kvmgpu-it-{uuid.uuid4().hex[:8]}"
    dom = conn.defineXML(DOMAIN.format(name=name))
    try:
        config = kvmgpu_host.config
        host.attach(conn, config, discover(config), name, GMEM, compute=50)
        yield name
    finally:
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError:
            pass
        try:
            dom.undefineFlags(0)
        except libvirt.libvirtError:
            pass
        for pid in find_worker_pids(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for path in (region_path(name),):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def wait_for(check, what: str, timeout: float = 30.0, log=None):
    deadline = time.time() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{log()}" if log else ""))
        time.sleep(0.2)


def status(h: Host) -> dict:
    return api.query(h.config, {"op": "status"})


def live_vgpu(h: Host, name: str) -> dict | None:
    return next((v for v in status(h)["vgpus"] if v["vm"] == name), None)


def metrics(h: Host) -> str:
    address = status(h)["daemon"]["metrics"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        return r.read().decode()


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def running_worker(h: Host, name: str, daemons: Daemons) -> dict:
    return wait_for(lambda: (v := live_vgpu(h, name)) and v["state"] == "running" and v["worker_pid"] and v,
                    what=f"{name}'s worker", log=daemons.logs)


def test_worker_follows_the_vm(conn, kvmgpu_host, daemons, vm):
    h = kvmgpu_host
    daemons.start()
    s = status(h)
    assert [(g["index"], g["total_memory"], g["simulated"]) for g in s["gpus"]] == [(0, 16 << 30, True)]
    assert s["daemon"]["libvirt"] == "connected" and s["vgpus"] == []
    assert (Path(h.config.state_dir) / "history.db").exists()

    conn.lookupByName(vm).create()
    v = running_worker(h, vm, daemons)
    pid = v["worker_pid"]
    assert (v["gmem"], v["gpu"], v["compute"], v["backend"], v["adopted"]) == (GMEM, 0, 50, "sim", False)
    assert is_worker_pid(pid, vm)
    if os.geteuid() == 0:   # unprivileged, as QEMU's user
        assert uid_of(pid) == pwd.getpwnam(qemu_identity()[0]).pw_uid
    # the worker's counters reach the API and the metrics
    stats = h.run_dir / "stats" / f"{vm}.json"
    wait_for(stats.exists, what="the worker's stats file", log=daemons.logs)
    assert json.loads(stats.read_text())["memory"]["limit"] == GMEM
    assert api.query(h.config, {"op": "vgpu", "vm": vm})["vgpu"]["worker_pid"] == pid
    text = metrics(h)
    assert f'kvmgpu_vgpu_memory_limit_bytes{{vm="{vm}",gpu="0"}} {GMEM}' in text
    assert f'kvmgpu_vgpu_memory_used_bytes{{vm="{vm}",gpu="0"}} 0' in text
    assert f'kvmgpu_gpu_memory_promised_bytes{{gpu="0"}} {GMEM}' in text
    assert (h.run_dir / "workers" / f"{vm}.pid").read_text().strip() == str(pid)

    conn.lookupByName(vm).destroy()
    wait_for(lambda: live_vgpu(h, vm) is None, what="the vGPU to be released", log=daemons.logs)
    wait_for(lambda: not is_worker_pid(pid, vm), what="the worker to end", log=daemons.logs)
    assert status(h)["gpus"][0]["promised"] == 0
    assert 'kvmgpu_gpu_memory_promised_bytes{gpu="0"} 0' in metrics(h)
    runs = wait_for(lambda: [r for r in api.query(h.config, {"op": "history", "vm": vm})["runs"]
                             if r["ended"] is not None], what="the run to be closed", log=daemons.logs)
    assert runs[0]["worker_pid"] == pid and runs[0]["exit_status"] is not None
    assert not (h.run_dir / "workers" / f"{vm}.pid").exists()
    assert "Traceback" not in daemons.logs() and " ERROR " not in daemons.logs(), daemons.logs()
    if os.environ.get("KVMGPU_TEST_SHOW_LOGS"):
        print(daemons.logs(), (Path(h.config.state_dir) / "logs" / f"{vm}.log").read_text())


def test_a_restarted_daemon_adopts_the_worker(conn, kvmgpu_host, daemons, vm):
    h = kvmgpu_host
    first = daemons.start()
    conn.lookupByName(vm).create()
    pid = running_worker(h, vm, daemons)["worker_pid"]

    # SIGTERM: the daemon goes cleanly; the VM and its worker stay
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0, daemons.logs()
    assert not Path(h.config.api_socket).exists()
    with pytest.raises(DaemonUnavailable):
        status(h)
    assert conn.lookupByName(vm).isActive()
    assert is_worker_pid(pid, vm)

    # the next daemon adopts that same worker and carries on with its history run
    daemons.start()
    v = running_worker(h, vm, daemons)
    assert (v["worker_pid"], v["adopted"]) == (pid, True)
    runs = api.query(h.config, {"op": "history", "vm": vm})["runs"]
    assert len(runs) == 1 and runs[0]["worker_pid"] == pid and runs[0]["ended"] is None

    conn.lookupByName(vm).destroy()
    wait_for(lambda: live_vgpu(h, vm) is None and not is_worker_pid(pid, vm), what="the worker to end",
             log=daemons.logs)
    wait_for(lambda: api.query(h.config, {"op": "history", "vm": vm})["runs"][0]["ended"] is not None,
             what="the run to be closed", log=daemons.logs)
    assert "Traceback" not in daemons.logs() and " ERROR " not in daemons.logs(), daemons.logs()
    if os.environ.get("KVMGPU_TEST_SHOW_LOGS"):
        print(daemons.logs())


def test_a_daemon_started_while_the_vm_runs_starts_its_worker(conn, kvmgpu_host, daemons, vm):
    h = kvmgpu_host
    conn.lookupByName(vm).create()          # no daemon yet: no worker
    assert find_worker_pids(vm) == []
    daemons.start()
    v = running_worker(h, vm, daemons)
    assert v["adopted"] is False and is_worker_pid(v["worker_pid"], vm)
    assert api.live_usage(h.config, vm) == 0 and api.live_usages(h.config) == {vm: 0}

    # a worker that dies while its VM runs is replaced
    os.kill(v["worker_pid"], signal.SIGKILL)
    again = wait_for(lambda: (n := live_vgpu(h, vm)) and n["worker_pid"] not in (None, v["worker_pid"]) and n,
                     what="a new worker", log=daemons.logs)
    assert is_worker_pid(again["worker_pid"], vm)
    runs = api.query(h.config, {"op": "history", "vm": vm})["runs"]
    assert [r["exit_status"] for r in runs] == [None, -signal.SIGKILL]


def test_history_db_is_wal(kvmgpu_host, daemons):
    daemons.start()
    assert api.live_usage(kvmgpu_host.config, "no-such-vm") is None
    h = History(Path(kvmgpu_host.config.state_dir) / "history.db")
    try:
        assert h.journal_mode() == "wal"
    finally:
        h.close()


@pytest.mark.parametrize("times", [3])
def test_a_normal_start_and_stop_logs_no_warning(conn, kvmgpu_host, daemons, vm, times):
    """QEMU ending by itself (QMP quit, as after a guest's poweroff), a few times over: the daemon
    logs each start and stop at info, and nothing at warning or above."""
    import libvirt_qemu

    h = kvmgpu_host
    daemons.start()
    dom = conn.lookupByName(vm)
    runs = 0
    for _ in range(times):
        dom.create()
        pid = running_worker(h, vm, daemons)["worker_pid"]
        worker_log = Path(h.config.state_dir) / "logs" / f"{vm}.log"
        wait_for(lambda log=worker_log, n=runs: log.read_text().count("connected to the VM's channel") == n + 1,
                 what="the worker to connect to QEMU", log=daemons.logs)
        runs += 1
        try:
            libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"quit"}', 0)
        except libvirt.libvirtError:
            pass                    # QEMU may go before it answers
        wait_for(lambda pid=pid: live_vgpu(h, vm) is None and not is_worker_pid(pid, vm), what="the VM's stop",
                 log=daemons.logs)
        wait_for(lambda: not dom.isActive(), what="libvirt to say the VM stopped", log=daemons.logs)
    time.sleep(2)                   # a restart due after a stop would have been tried by now
    logs = daemons.logs()
    assert " WARNING " not in logs and " ERROR " not in logs and "Traceback" not in logs, \
        logs + (Path(h.config.state_dir) / "logs" / f"{vm}.log").read_text()
    assert logs.count("vGPU released") == times, logs
