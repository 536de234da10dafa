"""`kvmgpu daemon` as a process, as an operator runs it: a metrics port in use is a clear error and
a non-zero exit, and SIGTERM stops the daemon in every phase (while it starts, even stuck on a
libvirtd that never answers, and while it runs). libvirt's test driver stands in for libvirtd."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmgpu.config import load_config
from kvmgpu.daemon import api
from kvmgpu.errors import DaemonUnavailable

pytest.importorskip("libvirt")

KVMGPU = Path(sys.executable).parent / "kvmgpu"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "kvmgpu.toml"
    cfg.write_text(f'sim_gpus = "1x16G"\nchannel_dir = "{tmp_path}/ch"\nstate_dir = "{tmp_path}/state"\n'
                   f'api_socket = "{tmp_path}/api.sock"\nmetrics_port = {port}\n')
    return cfg


def start(tmp_path: Path, cfg: Path, uri: str = "test:///default") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("KVMGPU_SIM_GPUS", "KVMGPU_CONFIG")}
    log = open(tmp_path / "daemon.log", "wb")
    p = subprocess.Popen([sys.executable, str(KVMGPU), "daemon", "--config", str(cfg), "--connect", uri,
                          "--run-dir", str(tmp_path / "run"), "--worker-user", "root"],
                         stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    return p


def output(tmp_path: Path) -> str:
    return (tmp_path / "daemon.log").read_text(errors="replace")


def finish(p: subprocess.Popen, tmp_path: Path, timeout: float = 20) -> int:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError(f"the daemon did not exit within {timeout} s:\n{output(tmp_path)}") from None


def wait_for(check, what: str, tmp_path: Path, timeout: float = 20):
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{output(tmp_path)}")
        time.sleep(0.1)


def answers(cfg: Path) -> bool:
    try:
        api.query(load_config(str(cfg)), {"op": "status"}, timeout=2)
        return True
    except DaemonUnavailable:
        return False


def test_a_metrics_port_in_use_is_an_error_that_names_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path, port)
        p = start(tmp_path, cfg)
        code = finish(p, tmp_path)
    text = output(tmp_path)
    assert code != 0, text
    assert f"error: cannot serve metrics on 127.0.0.1:{port}: another process listens there" in text
    assert "metrics_port" in text and "kvmgpu.toml" in text
    assert "Traceback" not in text
    assert not (tmp_path / "api.sock").exists()          # nothing left serving


def test_sigterm_stops_a_running_daemon(tmp_path):
    cfg = write_config(tmp_path, free_port())
    p = start(tmp_path, cfg)
    wait_for(lambda: answers(cfg), "the daemon's API", tmp_path)
    p.send_signal(signal.SIGTERM)
    assert finish(p, tmp_path) == 0, output(tmp_path)
    assert "SIGTERM: stopping" in output(tmp_path)
    assert not (tmp_path / "api.sock").exists()


def test_sigterm_stops_a_daemon_stuck_starting_on_a_libvirtd_that_never_answers(tmp_path):
    """The main thread sits in libvirt's open, where Python runs no signal handler."""
    cfg = write_config(tmp_path, free_port())
    path = tmp_path / "libvirt-sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen()
        mute.settimeout(30)
        p = start(tmp_path, cfg, uri=f"qemu+unix:///system?socket={path}")
        conn, _ = mute.accept()                          # the daemon is connecting: it is starting
        with conn:
            time.sleep(0.5)
            p.send_signal(signal.SIGTERM)
            code = finish(p, tmp_path)
    text = output(tmp_path)
    assert "SIGTERM: still not stopped 5 s after it" in text and "exiting now" in text, text
    assert code == 1, text
    assert not answers(cfg)


@pytest.mark.parametrize("delay", [0.0, 0.3, 0.6, 1.0])
def test_sigterm_at_any_moment_of_start_up(tmp_path, delay):
    cfg = write_config(tmp_path, free_port())
    p = start(tmp_path, cfg)
    time.sleep(delay)
    p.send_signal(signal.SIGTERM)
    code = finish(p, tmp_path)
    assert code in (0, -signal.SIGTERM), output(tmp_path)      # -SIGTERM: before Python's handler was set
    assert "Traceback" not in output(tmp_path)
    assert not answers(cfg)
