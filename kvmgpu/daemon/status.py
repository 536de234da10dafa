"""What the daemon reports: a frozen picture of its GPUs and live vGPUs, taken under its lock.

The API serves it as JSON and the metrics endpoint renders it as Prometheus text; neither looks
at the daemon's live objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GpuStatus:
    index: int
    uuid: str
    name: str
    total_memory: int
    simulated: bool
    promised: int          # sum of the quotas of the running vGPUs on this GPU
    used: int              # sum of what their workers have allocated now
    vgpus: int             # running vGPUs on this GPU


@dataclass(frozen=True)
class VgpuStatus:
    vm: str
    id: str
    gpu: int
    gpu_uuid: str
    gmem: int              # the memory quota, bytes
    compute: int
    compute_mode: str
    state: str             # running | restarting | no-gpu
    backend: str           # cuda | sim
    worker_pid: int | None
    adopted: bool          # the worker was started by an earlier daemon
    started: float | None  # when the worker started (epoch seconds)
    used: int              # device memory allocated now, bytes
    peak: int              # most allocated at once in this run
    calls: int
    bytes: int             # bytes moved through the region
    gpu_seconds: float
    channel_errors: dict[str, int] = field(default_factory=dict)  # why -> channels closed or refused


@dataclass(frozen=True)
class DaemonStatus:
    pid: int
    started: float
    libvirt: str           # connected | disconnected
    uri: str
    metrics: str | None    # host:port of /metrics, None when disabled


@dataclass(frozen=True)
class Status:
    daemon: DaemonStatus
    gpus: tuple[GpuStatus, ...] = field(default_factory=tuple)
    vgpus: tuple[VgpuStatus, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        return {"daemon": asdict(self.daemon),
                "gpus": [asdict(g) for g in self.gpus],
                "vgpus": [asdict(v) for v in self.vgpus]}
