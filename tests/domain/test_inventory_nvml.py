"""The NVML path of the GPU inventory, with a stand-in for nvidia-ml-py (no GPU here)."""

import sys
import types
from types import SimpleNamespace

from kvmgpu import inventory


def fake_pynvml(util_fails=False):
    m = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def util(h):
        if util_fails:
            raise NVMLError("not supported")
        return SimpleNamespace(gpu=37, memory=5)
    m.NVMLError = NVMLError
    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: 2
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H200"
    m.nvmlDeviceGetUUID = lambda h: f"GPU-0000000{h}"
    m.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(total=143771 << 20, used=(h + 1) << 30)
    m.nvmlDeviceGetUtilizationRates = util
    return m


def test_nvml_gpus_win_over_simulated_ones(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    monkeypatch.setenv("KVMGPU_SIM_GPUS", "4x16G")
    gpus = inventory.discover(SimpleNamespace(sim_gpus=None))
    assert [(g.index, g.uuid, g.name, g.simulated) for g in gpus] == [
        (0, "GPU-00000000", "NVIDIA H200", False), (1, "GPU-00000001", "NVIDIA H200", False)]
    assert [(g.total_memory, g.memory_used, g.utilization) for g in gpus] == [
        (143771 << 20, 1 << 30, 37), (143771 << 20, 2 << 30, 37)]


def test_utilisation_is_unknown_where_nvml_cannot_say(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(util_fails=True))
    assert [g.utilization for g in inventory.discover(SimpleNamespace(sim_gpus=None))] == [None, None]
