"""A vGPU: one VM's device-memory quota and compute share on one host GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

COMPUTE_MODES = ("share", "limit")
DEFAULT_COMPUTE = 100          # a new vGPU's compute share (percent) when none is given
DEFAULT_COMPUTE_MODE = "share"
CHANNEL_NAME = "org.kvmgpu.0"  # the virtio-serial port name the guest opens
REGION_PREFIX = "kvmgpu-"       # ivshmem-plain <shmem name='kvmgpu-VM'> -> /dev/shm/kvmgpu-VM


@dataclass(frozen=True)
class VGpu:
    id: str            # uuid4, stable across updates of the same VM's vGPU
    vm: str            # libvirt domain name
    gpu: int           # GPU index on the host
    gpu_uuid: str      # GPU uuid (NVML's "GPU-..."), the stable identity of the GPU
    gmem: int          # device-memory quota in bytes
    compute: int       # compute share in percent, 1..100
    compute_mode: str  # 'share' (weighted, work-conserving) or 'limit' (hard cap)
    region_size: int   # bytes of the shared-memory region (ivshmem), a power of two


def region_name(vm: str) -> str:
    """The ivshmem <shmem name=...> of a VM's region."""
    return f"{REGION_PREFIX}{vm}"


def region_path(vm: str) -> str:
    """The host file QEMU's ivshmem-plain creates for a VM's region."""
    return f"/dev/shm/{region_name(vm)}"


def channel_path(config, vm: str) -> str:
    """The unix socket QEMU listens on for a VM's control channel (the worker connects)."""
    return os.path.join(config.channel_dir, f"{vm}.sock")


MAX_REGION = 16 << 30  # the largest shared region a vGPU may ask for (it is the VM's memory too)


def check_region_size(size: int, what: str = "--region") -> None:
    """Raise InvalidInput unless `size` can be an ivshmem region: a power of two, 1 MiB to 16 GiB."""
    from .errors import InvalidInput
    if size < (1 << 20) or size > MAX_REGION or size & (size - 1):
        raise InvalidInput(f"{what} {size} bytes is not a power of two from 1M to 16G",
                           "ivshmem needs a power-of-two size, e.g. 256M (the default); a bigger region "
                           "gives page-locked memory and bulk copies more room")


def check_settings(gmem: int, compute: int, compute_mode: str) -> None:
    """Raise InvalidInput unless the settings make a vGPU: gmem > 0, compute 1..100, a known mode."""
    from .errors import InvalidInput
    if gmem <= 0:
        raise InvalidInput(f"memory quota {gmem} bytes must be more than zero")
    if not 1 <= compute <= 100:
        raise InvalidInput(f"compute {compute} is not a percentage from 1 to 100",
                           "give --compute 1..100: the share of the GPU's time this VM gets")
    if compute_mode not in COMPUTE_MODES:
        raise InvalidInput(f"compute mode {compute_mode!r} is not one of {', '.join(COMPUTE_MODES)}",
                           "limit: a hard cap; share: a weighted share that may use idle time")
