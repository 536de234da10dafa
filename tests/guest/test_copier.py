"""The guest's copier (guest-agent/include/kvmgpu_copier.h, which libcuda.so.1 copies through): a
memcpy shared by the calling thread and helper threads. Whatever the size, alignment, piece,
number of helpers or callers, the bytes land exactly where they should and nowhere else; a forked
child copies too; bad arguments are refused. It is driven through copier_module.c, built here
(gcc and python3-dev), or the module KVMGPU_TEST_COPIER names (the sanitizers' build)."""

import ctypes
import importlib.util
import os
import random
import shutil
import subprocess
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _load_copier():
    path = os.environ.get("KVMGPU_TEST_COPIER")
    if not path:
        if shutil.which("gcc") is None or not os.path.exists(os.path.join(sysconfig.get_paths()["include"],
                                                                          "Python.h")):
            pytest.skip("needs gcc and Python's headers (Debian: python3-dev)", allow_module_level=True)
        name = "_copier" + sysconfig.get_config_var("EXT_SUFFIX")
        path = os.path.join(tempfile.mkdtemp(prefix="kvmgpu-copier-"), name)
        subprocess.run(["gcc", "-std=c11", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-pthread",
                        "-I", str(HERE.parents[1] / "guest-agent" / "include"), "-I", sysconfig.get_paths()["include"],
                        str(HERE / "copier_module.c"), "-o", path], check=True)
    spec = importlib.util.spec_from_file_location("_copier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_copier = _load_copier()

MiB = 1 << 20


@pytest.fixture(autouse=True)
def restore():
    yield
    from kvmgpu_guest.config import GuestConfig
    config = GuestConfig()
    _copier.configure(max(0, min(config.copier_threads - 1, 15)), config.copy_spin_us)


def _copy_checked(rng, size: int, piece: int, shift: int = 0) -> None:
    """Copy `size` random bytes into the middle of a buffer of guard bytes with the copier, and
    check that they landed and that the guards did not change."""
    src = rng.randbytes(size)
    sbuf = ctypes.create_string_buffer(src, size + 1)
    guard = 256
    dbuf = ctypes.create_string_buffer(b"\xa5" * (size + 2 * guard + 64))
    at = guard + shift
    _copier.copy(ctypes.addressof(dbuf) + at, ctypes.addressof(sbuf), size, piece)
    raw = dbuf.raw
    assert raw[at: at + size] == src, f"{size} bytes in {piece}-byte pieces, shifted by {shift}"
    assert raw[:at] == b"\xa5" * at and raw[at + size: len(raw) - 1] == b"\xa5" * (len(raw) - 1 - at - size)


@pytest.mark.parametrize("helpers", [0, 1, 3])
def test_a_shared_copy_is_byte_exact_whatever_its_size_piece_and_alignment(helpers):
    _copier.configure(helpers, 200)
    rng = random.Random(helpers)
    sizes = [0, 1, 63, 4095, 4096, 4097, 65536, 3 * 65536 + 1, MiB, MiB + 13, 3 * MiB + 4095]
    sizes += [rng.randrange(4 * MiB) for _ in range(20)]
    for size in sizes:
        _copy_checked(rng, size, rng.choice([4096, 65536, 128 << 10, MiB]), rng.randrange(64))
    assert _copier.started() >= helpers


def test_copies_from_several_threads_at_once_each_land_whole():
    """One copy at a time has the helpers; the others copy alone meanwhile: all byte-exact."""
    _copier.configure(2, 200)
    errors = []

    def caller(seed):
        rng = random.Random(seed)
        try:
            for _ in range(40):
                _copy_checked(rng, rng.randrange(2 * MiB), 65536, rng.randrange(64))
        except AssertionError as e:
            errors.append(e)
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)


def test_helpers_that_sleep_are_woken_for_the_next_copy():
    """With no spin the helpers sleep on their futex as soon as a copy is done: every copy wakes
    them (and does not wait for them to be up)."""
    _copier.configure(2, 0)
    rng = random.Random(7)
    for _ in range(30):
        _copy_checked(rng, MiB + rng.randrange(MiB), 65536)
        time.sleep(0.001)


def test_a_forked_child_copies_with_helpers_of_its_own():
    _copier.configure(2, 200)
    rng = random.Random(3)
    _copy_checked(rng, 2 * MiB, 65536)
    pid = os.fork()
    if pid == 0:  # the child: no helper threads until its first copy starts them
        try:
            before = _copier.started()
            _copy_checked(random.Random(4), 2 * MiB, 65536)
            os._exit(0 if before == 0 and _copier.started() == 2 else 2)
        except BaseException:
            os._exit(1)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in its copy")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    _copy_checked(rng, 2 * MiB, 65536)  # and the parent's helpers still take part


@pytest.mark.parametrize("size, piece, null, message", [
    (-1, 4096, False, "size -1"),
    (10, 0, False, "piece 0"),
    (10, 4096, True, "null address"),
])
def test_bad_copy_arguments_are_refused_and_copy_nothing(size, piece, null, message):
    src = ctypes.create_string_buffer(b"x" * 64)
    dst = ctypes.create_string_buffer(b"\xa5" * 64)
    with pytest.raises(ValueError, match=message):
        _copier.copy(0 if null else ctypes.addressof(dst), ctypes.addressof(src), size, piece)
    assert dst.raw[:64] == b"\xa5" * 64  # (the 65th byte is the buffer's NUL)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="16 helpers"):
        _copier.configure(16, 100)
    with pytest.raises(ValueError, match="-1 us"):
        _copier.configure(1, -1)
