"""The GPUs on this host: NVIDIA's through NVML, else simulated ones from KVMGPU_SIM_GPUS / sim_gpus."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass

from .errors import InvalidInput
from .sizes import parse_size

SIM_NAME = "kvmgpu simulated GPU"
_SIM_NAMESPACE = uuid.UUID("6b766d67-7075-5369-6d00-000000000000")
_SPEC = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\S+)\s*$", re.IGNORECASE)


@dataclass
class Gpu:
    index: int
    uuid: str
    name: str
    total_memory: int   # bytes
    simulated: bool
    memory_used: int | None = None   # bytes in use on the GPU now, all processes (NVML); None: simulated
    utilization: int | None = None   # percent of the last sample period the GPU was busy (NVML)


def parse_sim_gpus(spec: str) -> list[Gpu]:
    """`2x80G` -> two 80 GiB simulated GPUs; `80G,2x40G` -> three. Uuids are stable per index+size."""
    gpus: list[Gpu] = []
    for part in spec.split(","):
        m = _SPEC.match(part)
        if not part.strip() or not m:
            raise InvalidInput(f"simulated GPUs {spec!r}: cannot read {part!r}",
                               "write COUNTxSIZE, e.g. KVMGPU_SIM_GPUS=2x80G or 80G,2x40G")
        count = int(m.group(1) or 1)
        size = parse_size(m.group(2), "simulated GPU memory")
        for _ in range(count):
            index = len(gpus)
            gid = uuid.uuid5(_SIM_NAMESPACE, f"{index}/{size}")
            gpus.append(Gpu(index, f"GPU-{gid}", SIM_NAME, size, simulated=True))
    return gpus


def _nvml_gpus() -> list[Gpu] | None:
    """NVIDIA's GPUs, or None where there is no NVIDIA driver (or no nvidia-ml-py)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            gid = pynvml.nvmlDeviceGetUUID(h)
            memory = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                busy = int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            except pynvml.NVMLError:  # not every GPU or mode reports it
                busy = None
            gpus.append(Gpu(i, gid.decode() if isinstance(gid, bytes) else gid,
                            name.decode() if isinstance(name, bytes) else name,
                            memory.total, simulated=False, memory_used=memory.used, utilization=busy))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def discover(config) -> list[Gpu]:
    """NVML's GPUs where NVIDIA's driver is present, else the simulated ones configured, else none."""
    real = _nvml_gpus()
    if real:
        return real
    spec = os.environ.get("KVMGPU_SIM_GPUS") or getattr(config, "sim_gpus", None)
    return parse_sim_gpus(spec) if spec else []
