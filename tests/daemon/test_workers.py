"""Worker identity and bookkeeping: argv recognition, pidfiles, stats files, who runs them."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kvmgpu.daemon import workers as w


def spec(tmp_path, vm="vm01"):
    return w.WorkerSpec(vm=vm, backend="sim", gmem=1 << 30, gpu=0, compute=50, compute_mode="share",
                        socket=tmp_path / f"{vm}.sock", shm=tmp_path / f"kvmgpu-{vm}",
                        stats_file=tmp_path / f"{vm}.json")


def test_argv_is_the_worker_cli(tmp_path):
    argv = spec(tmp_path).argv()
    i = argv.index("worker")
    assert argv[i:] == ["worker", "--backend", "sim", "--gmem", str(1 << 30), "--socket", str(tmp_path / "vm01.sock"),
                        "--shm", str(tmp_path / "kvmgpu-vm01"), "--region-size", str(64 << 20), "--vm", "vm01",
                        "--gpu", "0", "--compute", "50",
                        "--compute-mode", "share", "--stats-file", str(tmp_path / "vm01.json"), "--connect"]
    assert w.is_worker_argv(argv, "vm01")
    assert not w.is_worker_argv(argv, "vm0")
    assert not w.is_worker_argv(["python", "kvmgpu", "daemon", "--vm", "vm01"], "vm01")
    assert not w.is_worker_argv(["sleep", "worker", "--vm", "vm01"], "vm01")
    assert w.is_worker_argv(["/x/kvmgpu", "worker", "--vm=vm01"], "vm01")


def test_only_a_real_worker_pid_is_believed(tmp_path):
    # a process whose argv looks like a worker's for vm-x (python ignores the extra args)
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "kvmgpu", "worker",
                          "--vm", "vm-x"])
    try:
        deadline = time.time() + 10
        while not w.is_worker_pid(p.pid, "vm-x") and time.time() < deadline:
            time.sleep(0.05)              # until it has exec'd
        assert w.is_worker_pid(p.pid, "vm-x")
        assert not w.is_worker_pid(p.pid, "vm-y")
        assert not w.is_worker_pid(os.getpid(), "vm-x")
        assert p.pid in w.find_worker_pids("vm-x")
        workers = w.Workers(tmp_path / "run", tmp_path / "logs", None)
        s = spec(tmp_path, "vm-x")
        (tmp_path / "run" / "workers" / "vm-x.pid").write_text("1\n")     # stale: pid 1 is no worker
        adopted = workers.adopt(s)
        assert adopted is not None and adopted.pid == p.pid and adopted.adopted
        assert (tmp_path / "run" / "workers" / "vm-x.pid").read_text().strip() == str(p.pid)
        assert adopted.poll()
        p.kill()
        p.wait()
        assert not adopted.poll() and adopted.ended and adopted.exit_status is None
        workers.forget(adopted)
        assert not (tmp_path / "run" / "workers" / "vm-x.pid").exists()
        assert workers.adopt(s) is None
    finally:
        p.kill()
        p.wait()


def test_stats_file_shapes(tmp_path):
    path = tmp_path / "s.json"
    assert w.read_stats(path) is None
    path.write_text("{not json")
    assert w.read_stats(path) is None
    path.write_text(json.dumps({"memory": {"used": 10, "limit": 100}, "calls": {"MEM_ALLOC": 3, "LAUNCH": 4},
                                "bytes": {"h2d": 5, "d2h": 6}, "compute": {"gpu_seconds": 0.25}}))
    assert w.read_stats(path) == w.WorkerStats(memory_used=10, memory_limit=100, calls=7, bytes=11,
                                               gpu_seconds=0.25)
    path.write_text(json.dumps({"memory_used": 1, "calls": 2, "gpu_seconds": 3}))
    assert w.read_stats(path) == w.WorkerStats(memory_used=1, calls=2, gpu_seconds=3.0)


def test_peak_is_the_workers_own_high_water_mark(tmp_path):
    # the daemon samples the stats file about once a second: a short-lived allocation is only
    # seen through the worker's own peak (kvmgpu.worker.quota.MemoryQuota.peak)
    from kvmgpu.worker.quota import MemoryQuota
    q = MemoryQuota(100)
    assert q.charge(60) and not q.charge(50)
    q.release(60)
    assert q.charge(10)
    assert (q.used, q.peak) == (10, 60)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"memory": {"used": q.used, "limit": q.limit, "peak": q.peak}}))
    assert w.read_stats(path).memory_peak == 60
    spec = w.WorkerSpec(vm="vm", backend="sim", gmem=100, gpu=0, compute=100, compute_mode="share",
                        socket=tmp_path / "s.sock", shm=tmp_path / "shm", stats_file=path)
    worker = w.Worker(spec=spec, pid=1, started=0.0)
    assert worker.refresh_stats() and worker.peak == 60 and worker.stats.memory_used == 10


def test_qemu_identity_reads_qemu_conf(tmp_path):
    conf = tmp_path / "qemu.conf"
    assert w.qemu_identity(conf) == ("libvirt-qemu", "libvirt-qemu")
    assert w.qemu_identity(conf, default_group="kvm") == ("libvirt-qemu", "kvm")
    conf.write_text('#user = "nobody"\nuser = "qemu"\n  group = "+107"\n')
    assert w.qemu_identity(conf) == ("qemu", "+107")


def test_may_read_follows_mode_bits():
    tmp_path = Path(tempfile.mkdtemp(prefix="kvmgpu-test-", dir="/tmp"))
    try:
        _may_read_checks(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _may_read_checks(tmp_path):
    nobody = w.resolve_run_as("nobody")
    root = w.resolve_run_as("root")
    d = tmp_path / "d"
    d.mkdir()
    f = d / "f"
    f.write_text("x")
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o755)
    os.chmod(f, 0o644)
    if not w.may_read(tmp_path, nobody):
        pytest.skip("the temp directory's parents are closed to nobody")
    assert w.may_read(f, nobody) and w.may_read(d, nobody)
    os.chmod(f, 0o600)
    assert not w.may_read(f, nobody) and w.may_read(f, root)
    os.chmod(f, 0o644)
    os.chmod(d, 0o700)
    assert not w.may_read(f, nobody)
    link = tmp_path / "link"
    link.symlink_to(f)
    assert not w.may_read(link, nobody)      # the target is behind a closed directory
    assert not w.may_read(tmp_path / "missing", nobody)


def test_a_started_worker_is_tracked(tmp_path, monkeypatch):
    # the command is real Popen machinery; the program is a stand-in that just exits 3
    monkeypatch.setattr(w, "worker_program", lambda: [sys.executable, "-c", "import sys; sys.exit(3)"])
    workers = w.Workers(tmp_path / "run", tmp_path / "logs", None)
    worker = workers.start(spec(tmp_path))
    assert workers.pidfile("vm01").read_text().strip() == str(worker.pid)
    worker.process.wait(10)
    assert not worker.poll() and worker.exit_status == 3
    workers.forget(worker)
    assert not workers.pidfile("vm01").exists()
    assert "kvmgpu worker for vm01" in (tmp_path / "logs" / "vm01.log").read_text()
    assert os.getsid(0) != worker.pid   # it had its own session (sid == its pid)
