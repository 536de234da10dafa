"""The daemon's view of libvirt and of the host's GPUs: events in, nothing decided here.

libvirt's lifecycle events and close notices, and udev's NVIDIA PCI add/remove notices, arrive on
other threads; each is turned into a small event object and put on the daemon's queue, where the
main loop acts on it. Nothing here starts or stops a worker.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

import libvirt

from ..domain.host import open_connection
from ..domain.xml import read_vgpu
from ..errors import KvmgpuError
from ..vgpu import VGpu

log = logging.getLogger(__name__)

NVIDIA_VENDOR = "10DE"


@dataclass(frozen=True)
class DomainStarted:
    vm: str


@dataclass(frozen=True)
class DomainStopped:
    vm: str
    why: str


@dataclass(frozen=True)
class LibvirtClosed:
    why: str


@dataclass(frozen=True)
class GpusChanged:
    action: str        # add | remove
    device: str        # the PCI device path in sysfs


_STARTED_DETAIL = {libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED: "booted",
                   libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED: "migrated in",
                   libvirt.VIR_DOMAIN_EVENT_STARTED_RESTORED: "restored",
                   libvirt.VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT: "started from a snapshot",
                   libvirt.VIR_DOMAIN_EVENT_STARTED_WAKEUP: "woke up"}
_STOPPED_DETAIL = {libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated out",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
                   libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "stopped for a snapshot"}
_CLOSE_REASON = {libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
                 libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "libvirtd went away",
                 libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timed out",
                 libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client"}

_event_loop_started = False
_event_loop_lock = threading.Lock()


def start_event_loop() -> None:
    """libvirt's default event loop, run in a thread; once per process, before any connection."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


class Libvirt:
    """One libvirt connection that reports lifecycle events and its own end to `events`.
    `connect()` again after a LibvirtClosed to follow a restarted libvirtd."""

    def __init__(self, uri: str | None, events: queue.Queue):
        self.uri = uri
        self.events = events
        self.conn: libvirt.virConnect | None = None
        self._callback_id: int | None = None

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def connect(self) -> None:
        """Open the connection and subscribe; raises LibvirtUnavailable / PermissionDenied."""
        start_event_loop()
        conn = open_connection(self.uri)
        for what, call in (("keepalive", lambda: conn.setKeepAlive(5, 3)),
                           ("close callback", lambda: conn.registerCloseCallback(self._on_close, None))):
            try:
                call()
            except libvirt.libvirtError as e:     # drivers without a remote daemon have neither
                log.debug("no libvirt %s on %s: %s", what, self.uri, e.get_error_message())
        try:
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None)
        except libvirt.libvirtError as e:
            _quietly_close(conn)
            raise KvmgpuError(f"cannot follow libvirt's events on {self.uri}: {e.get_error_message()}") from None
        self.conn = conn
        self.uri = conn.getURI()
        log.info("connected to libvirt at %s", self.uri)

    def disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        for undo in (lambda: conn.domainEventDeregisterAny(self._callback_id),
                     conn.unregisterCloseCallback):
            try:
                undo()
            except libvirt.libvirtError:
                pass
        _quietly_close(conn)

    def running_vgpus(self) -> dict[str, VGpu]:
        """The vGPU of every running domain that has one (from its live XML)."""
        assert self.conn is not None
        found = {}
        for dom in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            vgpu = self._vgpu_of(dom)
            if vgpu is not None:
                found[vgpu.vm] = vgpu
        return found

    def stopped_vgpu_vms(self) -> list[str]:
        """Names of the defined domains that have a vGPU and do not run."""
        assert self.conn is not None
        names = []
        for dom in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE):
            try:
                if read_vgpu(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) is not None:
                    names.append(dom.name())
            except (libvirt.libvirtError, KvmgpuError):
                continue
        return names

    def running_vgpu(self, vm: str) -> VGpu | None:
        """`vm`'s vGPU if `vm` runs and has one, else None."""
        assert self.conn is not None
        try:
            dom = self.conn.lookupByName(vm)
            if not dom.isActive():
                return None
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        return self._vgpu_of(dom)

    def is_active(self, vm: str) -> bool:
        """Whether domain `vm` runs now (False when libvirt has no such domain)."""
        assert self.conn is not None
        try:
            return bool(self.conn.lookupByName(vm).isActive())
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise

    @staticmethod
    def _vgpu_of(dom) -> VGpu | None:
        try:
            return read_vgpu(dom.XMLDesc(0))
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        except KvmgpuError as e:
            log.warning("%s: cannot read its vGPU from its metadata: %s", dom.name(), e)
            return None

    # called on the libvirt event thread: only enqueue
    def _on_lifecycle(self, conn, dom, event: int, detail: int, opaque) -> None:
        name = dom.name()
        if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            log.debug("%s %s", name, _STARTED_DETAIL.get(detail, "started"))
            self.events.put(DomainStarted(name))
        elif event == libvirt.VIR_DOMAIN_EVENT_RESUMED:
            self.events.put(DomainStarted(name))
        elif event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            self.events.put(DomainStopped(name, _STOPPED_DETAIL.get(detail, "stopped")))
        elif event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
            self.events.put(DomainStopped(name, "crashed"))

    def _on_close(self, conn, reason: int, opaque) -> None:
        self.events.put(LibvirtClosed(_CLOSE_REASON.get(reason, f"reason {reason}")))


def _quietly_close(conn) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


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
            self._observer = pyudev.MonitorObserver(monitor, callback=self._on_device, name="kvmgpu-udev")
            self._observer.daemon = True
            self._observer.start()
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
