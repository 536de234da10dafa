"""domain.host on libvirt's test driver (test:///default): attach, update, detach, and every
refusal leaving the domain's XML as it was."""

from __future__ import annotations

import pytest

from kvmgpu.config import Config
from kvmgpu.domain import host, xml
from kvmgpu.errors import InvalidInput, NoRoom, NotFound

G = 1 << 30


def inactive(conn, vm="test"):
    return conn.lookupByName(vm).XMLDesc(host.XML_FLAGS)


def test_attach_then_detach_restores_the_xml(test_conn, config, gpus):
    before = inactive(test_conn)
    change = host.attach(test_conn, config, gpus, "test", 8 * G, 50, "limit")
    assert change.changed and change.previous is None and change.running
    after = xml.parse(inactive(test_conn))
    assert xml.read_vgpu(after) == change.vgpu
    assert xml.find_shmem(after)[0].get("name") == "kvmgpu-test"
    assert xml.find_channel(after)[0].find("source").get("path") == f"{config.channel_dir}/test.sock"
    assert host.list_vgpus(test_conn) == [change.vgpu]
    gone = host.detach(test_conn, "test")
    assert gone.changed and gone.vgpu == change.vgpu
    assert inactive(test_conn) == before


def test_attach_again_same_settings_changes_nothing(test_conn, config, gpus):
    first = host.attach(test_conn, config, gpus, "test", 8 * G, 50, "share")
    xml_then = inactive(test_conn)
    again = host.attach(test_conn, config, gpus, "test", 8 * G, 50, "share")
    assert not again.changed and again.vgpu == first.vgpu
    assert inactive(test_conn) == xml_then


def test_other_settings_update_the_same_vgpu(test_conn, config, gpus):
    first = host.attach(test_conn, config, gpus, "test", 8 * G, 50, "share")
    second = host.attach(test_conn, config, gpus, "test", 16 * G, 30, "limit")
    assert second.changed and second.previous == first.vgpu
    assert second.vgpu.id == first.vgpu.id and second.vgpu.gpu == first.vgpu.gpu
    root = xml.parse(inactive(test_conn))
    assert len(xml.find_shmem(root)) == 1 and len(xml.find_channel(root)) == 1
    assert xml.read_vgpu(root).gmem == 16 * G


def test_detach_without_vgpu_changes_nothing(test_conn):
    before = inactive(test_conn)
    assert not host.detach(test_conn, "test").changed
    assert inactive(test_conn) == before


def test_auto_placement_takes_the_freest_gpu(test_conn, config, gpus):
    assert host.attach(test_conn, config, gpus, "test", 8 * G).vgpu.gpu == 0  # tie: lowest index
    host.detach(test_conn, "test")
    assert host.attach(test_conn, config, gpus, "test", 8 * G, gpu=1).vgpu.gpu == 1


@pytest.mark.parametrize("kwargs, error", [
    (dict(vm="nosuch", gmem=8 * G), NotFound),
    (dict(vm="test", gmem=8 * G, compute=0), InvalidInput),
    (dict(vm="test", gmem=8 * G, compute=101), InvalidInput),
    (dict(vm="test", gmem=8 * G, compute_mode="fair"), InvalidInput),
    (dict(vm="test", gmem=80 * G), NoRoom),                 # 80G + context overhead > 80G
    (dict(vm="test", gmem=8 * G, gpu=7), NotFound),
    (dict(vm="a/b", gmem=8 * G), InvalidInput),
])
def test_refusals_leave_the_domain_unchanged(test_conn, config, gpus, kwargs, error):
    before = inactive(test_conn)
    with pytest.raises(error):
        host.attach(test_conn, config, gpus, **kwargs)
    assert inactive(test_conn) == before


def test_no_room_says_what_is_free_where(test_conn, config, gpus):
    with pytest.raises(NoRoom) as e:
        host.attach(test_conn, config, gpus, "test", 80 * G)
    assert "GPU 0 has 80 GiB free" in e.value.message and "GPU 1 has 80 GiB free" in e.value.message


def test_no_gpus_hints_at_simulated_ones(test_conn, config):
    before = inactive(test_conn)
    with pytest.raises(NotFound) as e:
        host.attach(test_conn, config, [], "test", 8 * G)
    assert "KVMGPU_SIM_GPUS" in e.value.hint
    assert inactive(test_conn) == before


def test_long_channel_path_is_refused(test_conn, tmp_path, gpus):
    config = Config(channel_dir=str(tmp_path / ("d" * 120)), state_dir=str(tmp_path / "s"))
    before = inactive(test_conn)
    with pytest.raises(InvalidInput):
        host.attach(test_conn, config, gpus, "test", 8 * G)
    assert inactive(test_conn) == before


def test_unreachable_libvirt_has_a_hint():
    from kvmgpu.errors import LibvirtUnavailable
    with pytest.raises(LibvirtUnavailable) as e:
        host.open_connection("qemu+unix:///system?socket=/nonexistent/sock")
    assert "make libvirtd" in e.value.hint
