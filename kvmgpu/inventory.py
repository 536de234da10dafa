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
SIM_MIN_MEMORY = 1 << 20     # a simulated GPU smaller than 1 MiB is a size written without its unit


@dataclass
class Gpu:
    index: int
    uuid: str
    name: str
    total_memory: int   # bytes
    simulated: bool
    memory_used: int | None = None   # bytes in use on the GPU now, all processes (NVML); None: simulated
    utilization: int | None = None   # percent of the last sample period the GPU was busy (NVML)


def parse_sim_gpus(spec: str, where: str = "KVMGPU_SIM_GPUS") -> list[Gpu]:
    """`2x80G` -> two 80 GiB simulated GPUs; `80G,2x40G` -> three. Uuids are stable per index+size.
    `where` names the setting in errors. A GPU of less than SIM_MIN_MEMORY (1 MiB) is refused:
    `2x80` is 80 bytes, never what was meant."""
    gpus: list[Gpu] = []
    for part in spec.split(","):
        m = _SPEC.match(part)
        if not part.strip() or not m:
            raise InvalidInput(f"{where} {spec!r}: cannot read {part!r} as simulated GPUs",
                               f"write COUNTxSIZE, e.g. {_setting(where, '2x80G')} or {_setting(where, '80G,2x40G')}")
        count = int(m.group(1) or 1)
        size = parse_size(m.group(2), f"{where} {spec!r}: GPU memory")
        if size < SIM_MIN_MEMORY:
            fix = f"{m.group(1)}x{m.group(2)}G" if m.group(1) else f"{m.group(2)}G"
            raise InvalidInput(f"{where} {spec!r}: a simulated GPU of {size} bytes is too small "
                               f"(at least 1 MiB; a size without a unit is in bytes)",
                               f"give the unit, e.g. {_setting(where, fix)} for {m.group(2)} GiB")
        for _ in range(count):
            index = len(gpus)
            gid = uuid.uuid5(_SIM_NAMESPACE, f"{index}/{size}")
            gpus.append(Gpu(index, f"GPU-{gid}", SIM_NAME, size, simulated=True))
    return gpus


def _setting(where: str, value: str) -> str:
    """How to write `value` in the environment variable or configuration key `where`."""
    return f"{where}={value}" if where.isupper() else f'{where} = "{value}"'


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
    if os.environ.get("KVMGPU_SIM_GPUS"):
        return parse_sim_gpus(os.environ["KVMGPU_SIM_GPUS"])
    spec = getattr(config, "sim_gpus", None)
    return parse_sim_gpus(spec, "sim_gpus") if spec else []
