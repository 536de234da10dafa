"""The host's GPUs coming and going (udev's NVIDIA PCI add/remove notices): events in, nothing decided.

The notices arrive on udev's thread; each is turned into a GpusChanged and put on the daemon's
queue, where the main loop acts on it (libvirt's events come the same way, from
kvmgpu/domain/events.py). Nothing here starts or stops a worker.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

log = logging.getLogger(__name__)

NVIDIA_VENDOR = "10DE"


@dataclass(frozen=True)
class GpusChanged:
    action: str        # add | remove
    device: str        # the PCI device path in sysfs


class GpuWatch:
    """NVIDIA PCI devices coming and going (udev), reported as GpusChanged. Where udev's netlink
    socket cannot be opened (a container), it says so and reports nothing."""

    def __init__(self, events: queue.Queue):
        self.events = events
        self._observer = None

    def start(self) -> None:
        try:
            import pyudev

            context = pyudev.Context()
            monitor = pyudev.Monitor.from_netlink(context)
            monitor.filter_by(subsystem="pci")
            observer = pyudev.MonitorObserver(monitor, callback=self._on_device, name="kvmgpu-udev")
            observer.daemon = True
            observer.start()
            self._observer = observer
            log.info("watching for NVIDIA GPUs coming and going (udev)")
        except Exception as e:  # noqa: BLE001 (no udev is not fatal: GPUs are rediscovered on restart)
            log.warning("cannot watch udev for GPUs coming and going (%s): GPUs are found at start only", e)
            self._observer = None

    def stop(self) -> None:
        if self._observer is not None:
            try:
                self._observer.send_stop()
            except Exception:  # noqa: BLE001
                pass

    def _on_device(self, device) -> None:
        if device.action not in ("add", "remove"):
            return
        if is_nvidia(dict(device.properties)):
            self.events.put(GpusChanged(device.action, device.sys_path))


def is_nvidia(properties: dict) -> bool:
    """Whether a PCI uevent's properties name an NVIDIA device (PCI_ID=10DE:xxxx)."""
    return str(properties.get("PCI_ID", "")).upper().startswith(NVIDIA_VENDOR + ":")
