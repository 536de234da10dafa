"""The daemon's libvirt connection: lifecycle events and the connection's end in, as small event
objects on a queue; the daemon's questions about running domains answered through host.py.

libvirt calls its callbacks on its own event-loop thread; they only enqueue. libvirt's numeric
event and detail codes are turned into words here, so nothing outside kvmgpu/domain/ needs them.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

import libvirt

from ..errors import KvmgpuError
from ..vgpu import VGpu
from . import host

log = logging.getLogger(__name__)


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


def lifecycle_event(vm: str, event: int, detail: int) -> DomainStarted | DomainStopped | None:
    """What libvirt's lifecycle event (`event`, `detail`) about `vm` means to the daemon, or None."""
    if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
        log.debug("%s %s", vm, _STARTED_DETAIL.get(detail, "started"))
        return DomainStarted(vm)
    if event == libvirt.VIR_DOMAIN_EVENT_RESUMED:
        return DomainStarted(vm)
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        return DomainStopped(vm, _STOPPED_DETAIL.get(detail, "stopped"))
    if event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
        return DomainStopped(vm, "crashed")
    return None


def close_reason(reason: int) -> str:
    return _CLOSE_REASON.get(reason, f"reason {reason}")


class Libvirt:
    """One libvirt connection that reports lifecycle events and its own end to `events`.
    `connect()` again after a LibvirtClosed to follow a restarted libvirtd. The questions
    (`running_vgpus`, ...) raise KvmgpuError when libvirt fails."""

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
        conn = host.open_connection(self.uri)
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
        """The vGPU of every running domain that has one (from its live XML), by VM name; a running
        domain whose metadata cannot be read is logged and left out."""
        assert self.conn is not None
        return {v.vm: v for v in host.running_vgpus(self.conn, unreadable=_warn_unreadable)}

    def stopped_vgpu_vms(self) -> list[str]:
        """Names of the defined domains that have a vGPU and do not run."""
        assert self.conn is not None
        return host.stopped_vgpu_vms(self.conn)

    def running_vgpu(self, vm: str) -> VGpu | None:
        """`vm`'s vGPU if `vm` runs and has one, else None."""
        assert self.conn is not None
        return host.running_vgpu(self.conn, vm, unreadable=_warn_unreadable)

    def is_active(self, vm: str) -> bool:
        """Whether domain `vm` runs now (False when libvirt has no such domain)."""
        assert self.conn is not None
        return host.is_active(self.conn, vm)

    # called on the libvirt event thread: only enqueue
    def _on_lifecycle(self, conn, dom, event: int, detail: int, opaque) -> None:
        seen = lifecycle_event(dom.name(), event, detail)
        if seen is not None:
            self.events.put(seen)

    def _on_close(self, conn, reason: int, opaque) -> None:
        self.events.put(LibvirtClosed(close_reason(reason)))


def _warn_unreadable(vm: str, e: KvmgpuError) -> None:
    log.warning("%s: cannot read its vGPU from its metadata: %s", vm, e)


def _quietly_close(conn) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass
