"""Config, inventory and placement: pure, no libvirt."""

from __future__ import annotations

import pytest

from kvmgpu.config import Config, config_from_dict, load_config
from kvmgpu.errors import InvalidInput, NoRoom, NotFound
from kvmgpu.inventory import SIM_NAME, discover, parse_sim_gpus
from kvmgpu.placement import choose_gpu, usage
from kvmgpu.vgpu import VGpu

G, M = 1 << 30, 1 << 20


def vgpu(vm, gpu, gmem, uuid="GPU-x"):
    return VGpu(id=vm, vm=vm, gpu=gpu, gpu_uuid=uuid, gmem=gmem, compute=50, compute_mode="share",
                region_size=256 * M)


def test_config_defaults_and_sizes(tmp_path):
    f = tmp_path / "k.toml"
    f.write_text('sim_gpus = "2x80G"\nregion_size = "64M"\ncontext_overhead = "1G"\n')
    c = load_config(str(f))
    assert (c.sim_gpus, c.region_size, c.context_overhead, c.channel_dir) == ("2x80G", 64 * M, G, "/run/kvmgpu")
    assert Config().context_overhead == 520 * M and Config().metrics_port == 9464


@pytest.mark.parametrize("raw, word", [({"colour": "red"}, "colour"), ({"region_size": "100M"}, "power of two"),
                                       ({"metrics_port": "x"}, "metrics_port")])
def test_config_refuses(raw, word):
    with pytest.raises(InvalidInput) as e:
        config_from_dict(raw)
    assert word in str(e.value)


def test_config_env_path(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMGPU_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(InvalidInput):
        load_config()


def test_sim_gpus():
    gpus = parse_sim_gpus("2x80G,40G")
    assert [(g.index, g.total_memory, g.name, g.simulated) for g in gpus] == [
        (0, 80 * G, SIM_NAME, True), (1, 80 * G, SIM_NAME, True), (2, 40 * G, SIM_NAME, True)]
    assert gpus[0].uuid == parse_sim_gpus("2x80G")[0].uuid != gpus[1].uuid
    with pytest.raises(InvalidInput):
        parse_sim_gpus("twox80G")


def test_discover_from_env(monkeypatch):
    monkeypatch.setenv("KVMGPU_SIM_GPUS", "1x16G")
    gpus = discover(Config())
    assert gpus and (gpus[0].simulated is False or gpus[0].total_memory == 16 * G)


def test_never_promise_more_than_a_gpu_has():
    gpus = parse_sim_gpus("2x10G")
    vgpus = [vgpu("a", 0, 4 * G, gpus[0].uuid), vgpu("b", 1, 9 * G, gpus[1].uuid)]
    assert choose_gpu(gpus, vgpus, 5 * G, 512 * M).index == 0     # 4.5 + 5.5 = 10: fits exactly
    with pytest.raises(NoRoom) as e:
        choose_gpu(gpus, vgpus, 5 * G + 1, 512 * M)
    assert "GPU 0 has 5.5 GiB free" in e.value.message and "GPU 1 has 512 MiB free" in e.value.message
    with pytest.raises(NoRoom):
        choose_gpu(gpus, vgpus, 1 * G, 512 * M, want=1)
    with pytest.raises(NotFound):
        choose_gpu(gpus, vgpus, 1 * G, 0, want=2)


def test_update_does_not_count_itself_and_stays_put():
    gpus = parse_sim_gpus("2x10G")
    vgpus = [vgpu("a", 1, 9 * G, gpus[1].uuid)]
    assert choose_gpu(gpus, vgpus, 9 * G, 0, vm="a").index == 1
    assert [u.promised for u in usage(gpus, vgpus, M)] == [0, 9 * G + M]
