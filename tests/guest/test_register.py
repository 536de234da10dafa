"""`kvmgpu-guest register`: the package's native libraries become the ones the dynamic loader
finds for every program (a file in ld.so.conf.d, then ldconfig); `unregister` undoes it. Run
against a private loader configuration and cache (ldconfig -f / -C), never the system's."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from kvmgpu_guest import cli
from kvmgpu_guest.register import RegisterError, register, unregister

pytestmark = pytest.mark.skipif(shutil.which("ldconfig") is None and not os.path.exists("/sbin/ldconfig"),
                                reason="no ldconfig here")


@pytest.fixture
def loader(tmp_path):
    """A loader configuration of our own: ld.so.conf including conf.d/*.conf, and its cache."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "ld.so.conf").write_text(f"include {tmp_path}/conf.d/*.conf\n")
    ldconfig = [shutil.which("ldconfig") or "/sbin/ldconfig", "-f", str(tmp_path / "ld.so.conf"),
                "-C", str(tmp_path / "ld.so.cache")]
    return tmp_path / "conf.d" / "kvmgpu-guest.conf", ldconfig


def test_register_puts_the_package_libraries_first_and_unregister_removes_them(loader):
    if not os.path.exists(os.path.join(cli.LIB_DIR, "libcuda.so.1")):
        pytest.skip("the guest package was built without libcuda.so.1 (no C compiler)")
    conf, ldconfig = loader
    result = register(cli.LIB_DIR, str(conf), ldconfig)
    assert result["changed"] and conf.read_text().splitlines()[-1] == cli.LIB_DIR
    assert result["resolved"]["libcuda.so.1"] == os.path.join(cli.LIB_DIR, "libcuda.so.1")
    assert result["resolved"]["libnvidia-ml.so.1"] == os.path.join(cli.LIB_DIR, "libnvidia-ml.so.1")
    assert register(cli.LIB_DIR, str(conf), ldconfig)["changed"] is False  # twice: nothing to change
    assert unregister(str(conf), ldconfig) is True and not conf.exists()
    out = subprocess.run([*ldconfig, "-p"], capture_output=True, text=True).stdout
    assert cli.LIB_DIR not in out
    assert unregister(str(conf), ldconfig) is False


def test_a_package_without_the_library_is_refused_and_writes_nothing(loader, tmp_path):
    conf, ldconfig = loader
    with pytest.raises(RegisterError) as e:
        register(str(tmp_path / "empty"), str(conf), ldconfig)
    assert "has no libcuda.so.1" in e.value.what and "install gcc" in e.value.hint
    assert not conf.exists()


def test_the_command_says_where_it_cannot_write(tmp_path, capsys):
    code = cli.main(["register", "--conf", str(tmp_path / "missing-dir" / "kvmgpu-guest.conf")])
    err = capsys.readouterr().err
    if not os.path.exists(os.path.join(cli.LIB_DIR, "libcuda.so.1")):
        assert code == 1 and "has no libcuda.so.1" in err
    else:
        assert code == 1 and "cannot write" in err and "missing-dir" in err, err
