"""kvmgpu's host configuration: TOML at /etc/kvmgpu/kvmgpu.toml (env KVMGPU_CONFIG overrides)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields

from .errors import InvalidInput
from .sizes import parse_size
from .vgpu import check_region_size

DEFAULT_PATH = "/etc/kvmgpu/kvmgpu.toml"


@dataclass(frozen=True)
class Config:
    sim_gpus: str | None = None             # e.g. "2x80G": simulated GPUs where NVML finds none
    channel_dir: str = "/run/kvmgpu"        # QEMU binds <vm>.sock here; the worker connects
    region_size: int = 256 << 20            # bytes of each VM's shared region (power of two)
    context_overhead: int = 520 << 20       # device memory each worker's CUDA context costs
    state_dir: str = "/var/lib/kvmgpu"
    api_socket: str = "/run/kvmgpu/daemon.sock"
    metrics_port: int = 9464
    qemu_group: str | None = None           # channel_dir's group; None: qemu.conf's, else libvirt-qemu
                                            # (the rule: kvmgpu.domain.host.channel_group)

    def __post_init__(self) -> None:
        check_region_size(self.region_size, "region_size")
        if self.context_overhead < 0:
            raise InvalidInput("context_overhead must not be negative")
        if not 0 < self.metrics_port < 65536:
            raise InvalidInput(f"metrics_port {self.metrics_port} is not a TCP port")


_SIZES = {"region_size", "context_overhead"}
_INTS = {"metrics_port"}


def config_path(path: str | None = None) -> str:
    return path or os.environ.get("KVMGPU_CONFIG") or DEFAULT_PATH


def load_config(path: str | None = None) -> Config:
    """The configuration at `path` (or KVMGPU_CONFIG, or the default path); defaults where absent.

    A missing default file means all defaults; a missing file named explicitly is an error.
    """
    explicit = path or os.environ.get("KVMGPU_CONFIG")
    where = config_path(path)
    try:
        with open(where, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise InvalidInput(f"configuration file {where} does not exist",
                               "create it or unset KVMGPU_CONFIG") from None
        raw = {}
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"configuration file {where} is not valid TOML: {e}") from None
    except PermissionError:
        raise InvalidInput(f"configuration file {where} cannot be read (permission denied)") from None
    return config_from_dict(raw, where)


def config_from_dict(raw: dict, where: str = "configuration") -> Config:
    known = {f.name for f in fields(Config)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise InvalidInput(f"{where}: unknown key {key!r}",
                               f"known keys: {', '.join(sorted(known))}")
        if key in _SIZES:
            value = parse_size(value, key)
        elif key in _INTS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInput(f"{where}: {key} must be a whole number, not {value!r}")
        elif not isinstance(value, str):
            raise InvalidInput(f"{where}: {key} must be a string, not {value!r}")
        values[key] = value
    if values.get("sim_gpus"):
        from .inventory import parse_sim_gpus  # checked now: a bad value is an error where it is read
        try:
            parse_sim_gpus(values["sim_gpus"], "sim_gpus")
        except InvalidInput as e:
            raise InvalidInput(f"{where}: {e.message}", e.hint) from None
    return Config(**values)
