"""The guest's configuration: one object, every variable checked, read once, documented once."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from kvmgpu_guest import config as guest_config
from kvmgpu_guest.config import VARIABLES, ConfigError, GuestConfig

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from kvmgpu_guest.cli import main; sys.exit(main())"]


def test_no_variable_gives_the_defaults():
    assert GuestConfig.from_environ({}) == GuestConfig()
    assert GuestConfig.from_environ({v.name: "" for v in VARIABLES}) == GuestConfig()  # empty: unset


def test_every_variable_sets_its_setting():
    env = {v.name: "/x/" + v.name if v.kind is str else "0" if v.kind is bool else str(max(v.lo, 3))
           for v in VARIABLES}
    config = GuestConfig.from_environ(env)
    for v in VARIABLES:
        value = getattr(config, v.field)
        assert value == ("/x/" + v.name if v.kind is str else False if v.kind is bool else max(v.lo, 3)), v.name


@pytest.mark.parametrize("name,value,allowed", [
    ("KVMGPU_POLL_US", "fifty", "a whole number from 0 to 1000000"),
    ("KVMGPU_POLL_US", "-1", "a whole number from 0 to 1000000"),
    ("KVMGPU_COPIER_THREADS", "17", "a whole number from 1 to 16"),
    ("KVMGPU_BATCH_BYTES", "1.5", "a whole number from 1 to 16777216"),
    ("KVMGPU_COPY_SPLIT", "0", "a whole number of at least 1"),
    ("KVMGPU_WINDOW", "64M", "a whole number of at least 0"),
    ("KVMGPU_MAILBOX", "maybe", "0 or 1"),
])
def test_a_bad_value_names_the_variable_and_what_it_may_be(name, value, allowed):
    with pytest.raises(ConfigError) as e:
        GuestConfig.from_environ({name: value})
    assert str(e.value).startswith(f"{name}={value!r}: ") and str(e.value).endswith(f"it must be {allowed}")


def test_booleans_take_the_usual_words():
    assert GuestConfig.from_environ({"KVMGPU_MAILBOX": "off", "KVMGPU_COPIER": "No"}).mailbox is False
    assert GuestConfig.from_environ({"KVMGPU_MAILBOX": "yes"}).mailbox is True


def test_a_config_built_in_code_is_checked_too():
    with pytest.raises(ConfigError, match="KVMGPU_COPIER_THREADS"):
        GuestConfig(copier_threads=0)
    with pytest.raises(ConfigError, match="KVMGPU_MAILBOX"):
        replace(GuestConfig(), mailbox="0")


def test_the_process_config_is_read_once(monkeypatch):
    monkeypatch.setenv("KVMGPU_POLL_US", "7")
    guest_config.forget()
    try:
        assert guest_config.current().poll_us == 7
        monkeypatch.setenv("KVMGPU_POLL_US", "9")
        assert guest_config.current().poll_us == 7  # not read again
        guest_config.forget()
        assert guest_config.current().poll_us == 9
    finally:
        monkeypatch.delenv("KVMGPU_POLL_US")
        guest_config.forget()


def test_the_guide_lists_every_variable_as_the_code_has_it():
    """docs/guest.md's table is config.table(): every variable, its default, meaning and range."""
    assert guest_config.table() in (REPO / "docs" / "guest.md").read_text(), \
        "docs/guest.md's Configuration table differs from kvmgpu_guest.config.table(): paste the latter"


def test_run_refuses_a_bad_variable_before_the_program_starts(tmp_path):
    marker = tmp_path / "ran"
    env = {**os.environ, "KVMGPU_COPY_SPIN_US": "lots"}
    p = subprocess.run(CLI + ["run", "--socket", "/nonexistent.sock", "--shm", "/nonexistent", "--",
                              sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and not marker.exists()
    assert "KVMGPU_COPY_SPIN_US='lots'" in p.stderr and "a whole number from 0 to 1000000" in p.stderr


def test_info_refuses_a_bad_variable():
    env = {**os.environ, "KVMGPU_MAILBOX": "2"}
    p = subprocess.run(CLI + ["info", "--socket", "/nonexistent.sock", "--shm", "/nonexistent"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "KVMGPU_MAILBOX='2'" in p.stderr and "0 or 1" in p.stderr


def test_cu_init_with_a_bad_variable_says_which(guest_python):
    """The guest's library reads its variables at cuInit: a bad one is no device, and says which."""
    proc = guest_python("print(cuda.cuInit(0)[0].name)", env={"KVMGPU_BATCH_BYTES": "0"})
    assert proc.stdout.split() == ["CUDA_ERROR_NO_DEVICE"]
    assert "KVMGPU_BATCH_BYTES=0 is not a whole number from 1 to" in proc.stderr
