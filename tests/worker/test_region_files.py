"""What a worker does with its files: the region's space is reserved when it is opened (or it says
there is none), a loopback worker removes what it served, and a bad socket path is said clearly."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from kvmgpu_wire.region import Region, RegionError

from test_process import KVMGPU, wait_for


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only: skipped elsewhere)."""
    d = tmp_path / "tfs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield d
    subprocess.run(["umount", str(d)], check=True)


def run_worker(*args):
    return subprocess.run([*KVMGPU, "worker", "--backend", "sim", "--gmem", "64M", *args],
                          capture_output=True, text=True, timeout=30)


def test_no_room_for_the_region_is_said_and_nothing_is_left(small_tmpfs, tmp_path):
    shm, sock = small_tmpfs / "region", tmp_path / "s"
    r = run_worker("--socket", str(sock), "--shm", str(shm), "--region-size", "8M")
    assert r.returncode == 1, r.stderr
    assert f"no room for the 8388608-byte shared region {shm}: {small_tmpfs} (tmpfs) has" in r.stderr
    assert "ask for a smaller region" in r.stderr and "Traceback" not in r.stderr
    assert not shm.exists() and not sock.exists()


def test_a_sparse_region_found_is_reserved_or_refused(small_tmpfs, tmp_path):
    """A region file found (QEMU's, sparse) is reserved before anything maps it: no room is an
    error now, not a SIGBUS later; the file is not the worker's, so it stays."""
    shm = small_tmpfs / "region"
    with open(shm, "wb") as f:
        f.truncate(8 << 20)  # sparse: the tmpfs holds 1 MiB
    r = run_worker("--socket", str(tmp_path / "s"), "--shm", str(shm))
    assert r.returncode == 1 and "no room for the 8388608-byte shared region" in r.stderr, r.stderr
    assert shm.exists()


def test_region_open_file_reserves_its_space(small_tmpfs, tmp_path):
    with pytest.raises(RegionError, match="no room for the 2097152-byte") as e:
        Region.open_file(str(small_tmpfs / "r"), 2 << 20, create=True)
    assert "mount -o remount,size=" in e.value.hint
    assert not (small_tmpfs / "r").exists()
    region = Region.open_file(str(tmp_path / "r"), 1 << 20, create=True)
    try:
        assert os.stat(tmp_path / "r").st_blocks * 512 >= 1 << 20  # not sparse
    finally:
        region.close()


def test_a_worker_restarted_on_a_reused_region_removes_it(worker, tmp_path):
    """A loopback worker killed leaves its socket and region; the next one on the same paths takes
    both over and removes both when it stops."""
    w = worker()
    w.wait_listening()
    w.proc.kill()
    w.proc.wait(10)
    assert os.path.exists(w.shm) and os.path.exists(w.socket)
    w2 = worker(socket_path=w.socket, shm_path=w.shm)
    wait_for(lambda: "listening on" in w2.log() or w2.proc.poll() is not None, "the second worker")
    with w2.connect() as sock:
        g = w2.guest(sock, window=4096)
        g.window.view.release()
    w2._region.close()
    w2.proc.send_signal(signal.SIGTERM)
    assert w2.proc.wait(15) == 0, w2.log()
    assert not os.path.exists(w.shm) and not os.path.exists(w.socket)


def test_a_socket_path_too_long_is_said(tmp_path):
    path = "/tmp/" + "s" * 110
    r = run_worker("--socket", path, "--shm", str(tmp_path / "r"))
    assert r.returncode == 2, r.stderr
    assert f"socket path {path} is 115 bytes, over the 107-byte limit" in r.stderr
    assert "None" not in r.stderr and not (tmp_path / "r").exists()


def test_a_second_worker_on_a_loopback_workers_socket_refuses(worker, tmp_path):
    """It does not connect to the first as if it were QEMU's channel: the first holds
    `<socket>.lock` while it listens, the second names it and exits non-zero, the first serves on."""
    w = worker()
    w.wait_listening()
    r = run_worker("--socket", w.socket, "--shm", str(tmp_path / "r2"))
    assert r.returncode == 1, r.stderr
    assert f"a kvmgpu worker (pid {w.proc.pid}) already listens on {w.socket}" in r.stderr
    assert "not a VM's channel" in r.stderr and not (tmp_path / "r2").exists()
    with w.connect() as sock:
        g = w.guest(sock, window=4096)
        g.window.view.release()
    assert "session 1:1 start" in w.log()  # the first connection it had (no second worker's)
    w._region.close()
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(15) == 0, w.log()
    assert not os.path.exists(w.socket + ".lock") and not os.path.exists(w.socket)


def test_a_connect_only_worker_never_takes_over_the_vms_channel(tmp_path):
    """The daemon's workers run with --connect: a channel socket QEMU left behind (nobody listens)
    or one not bound yet is an error naming it, and the socket is left as it was, never replaced
    by a loopback listener that the next QEMU could not bind."""
    import socket as so
    stale = tmp_path / "vm.sock"
    s = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # bound, never listened on: connect() is refused
    region = tmp_path / "region"
    r = run_worker("--socket", str(stale), "--shm", str(region), "--connect")
    assert r.returncode == 1, r.stderr
    assert f"nobody listens on the VM's channel {stale}" in r.stderr
    assert "is the VM running?" in r.stderr and "Traceback" not in r.stderr
    assert stale.is_socket() and not region.exists()

    missing = tmp_path / "none.sock"
    r = run_worker("--socket", str(missing), "--shm", str(region), "--connect")
    assert r.returncode == 1, r.stderr
    assert f"the VM's channel {missing} does not exist: QEMU has not bound it" in r.stderr
    assert not missing.exists() and not region.exists()
