"""Prometheus metrics: the text exposition format 0.0.4, written by hand, served on loopback.

`render(status)` is pure (tested on its own); `MetricsServer` serves it with http.server in a
thread. Only GET /metrics is answered.
"""

from __future__ import annotations

import errno
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from ..errors import KvmgpuError
from .status import Status

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> (type, help)
METRICS: dict[str, tuple[str, str]] = {
    "kvmgpu_vgpu_memory_used_bytes": ("gauge", "Device memory the VM's worker has allocated now."),
    "kvmgpu_vgpu_memory_limit_bytes": ("gauge", "The vGPU's device-memory quota."),
    "kvmgpu_vgpu_gpu_seconds_total": ("counter", "GPU time the VM's work has taken in this worker run."),
    "kvmgpu_vgpu_calls_total": ("counter", "Forwarded driver calls the worker has served in this run."),
    "kvmgpu_vgpu_channel_errors_total": ("counter", "Channels the VM's worker closed or refused in this "
                                         "run, by why: protocol_violation (what a guest sent), "
                                         "internal_error (a worker bug, logged), refused (over its limit)."),
    "kvmgpu_vgpu_worker_up": ("gauge", "1 when the VM's worker process is running, else 0."),
    "kvmgpu_gpu_memory_total_bytes": ("gauge", "The GPU's device memory."),
    "kvmgpu_gpu_memory_promised_bytes": ("gauge", "Sum of the memory quotas of the running vGPUs on the GPU."),
    "kvmgpu_gpu_memory_used_bytes": ("gauge", "Sum of the device memory the GPU's vGPU workers have allocated."),
    "kvmgpu_gpu_info": ("gauge", "A GPU kvmgpu places vGPUs on (value is always 1)."),
    "kvmgpu_libvirt_connected": ("gauge", "1 when the daemon is connected to libvirt, else 0."),
}


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def render(status: Status) -> str:
    """The exposition text for `status`: every metric family has its HELP and TYPE lines once,
    then its samples."""
    samples: dict[str, list[str]] = {name: [] for name in METRICS}

    def add(metric: str, value: float | int, **labels: object) -> None:
        samples[metric].append(f"{metric}{_labels(**labels) if labels else ''} {_number(value)}")

    for v in status.vgpus:
        who = {"vm": v.vm, "gpu": v.gpu}
        add("kvmgpu_vgpu_memory_used_bytes", v.used, **who)
        add("kvmgpu_vgpu_memory_limit_bytes", v.gmem, **who)
        add("kvmgpu_vgpu_gpu_seconds_total", float(v.gpu_seconds), **who)
        add("kvmgpu_vgpu_calls_total", v.calls, **who)
        for why, n in v.channel_errors.items():
            add("kvmgpu_vgpu_channel_errors_total", n, **who, why=why)
        add("kvmgpu_vgpu_worker_up", 1 if v.state == "running" else 0, **who)
    for g in status.gpus:
        add("kvmgpu_gpu_memory_total_bytes", g.total_memory, gpu=g.index)
        add("kvmgpu_gpu_memory_promised_bytes", g.promised, gpu=g.index)
        add("kvmgpu_gpu_memory_used_bytes", g.used, gpu=g.index)
        add("kvmgpu_gpu_info", 1, gpu=g.index, name=g.name, uuid=g.uuid,
            simulated="true" if g.simulated else "false")
    add("kvmgpu_libvirt_connected", 1 if status.daemon.libvirt == "connected" else 0)

    lines: list[str] = []
    for name, (kind, help_text) in METRICS.items():
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples[name])
    return "\n".join(lines) + "\n"


class MetricsServer:
    """GET /metrics on host:port (port 0 picks a free one; `address` says which)."""

    def __init__(self, host: str, port: int, current_status: Callable[[], Status]):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                try:
                    body = render(current_status()).encode()
                except Exception:  # noqa: BLE001 (a scrape must never take the daemon down)
                    log.exception("rendering metrics failed")
                    self.send_error(500, "rendering metrics failed")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("metrics: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise MetricsPortTaken(host, port, e) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="kvmgpu-metrics", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s/metrics", self.address)

    def close(self) -> None:
        if self._thread.is_alive():     # shutdown() waits for a serve_forever() that runs
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


class MetricsPortTaken(KvmgpuError):
    """The metrics port cannot be bound (another process listens there, or it is not allowed)."""

    def __init__(self, host: str, port: int, error: OSError):
        setting = ("metrics_port in kvmgpu's configuration file (/etc/kvmgpu/kvmgpu.toml, or the file "
                   "--config / KVMGPU_CONFIG names)")
        if error.errno == errno.EADDRINUSE:
            super().__init__(f"cannot serve metrics on {host}:{port}: another process listens there",
                             f"free port {port} (`ss -ltnp 'sport = :{port}'` shows who has it) or set "
                             f"another port with {setting}")
        else:
            super().__init__(f"cannot serve metrics on {host}:{port}: {error.strerror or error}",
                             f"set another port with {setting}")
