"""One VM's vGPU in the worker: the backend context, the memory quota, the module cache, the
region's windows, the live sessions and the counters the daemon reads."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.mailbox import Mailbox, mailbox_at
from kvmgpu_wire.ops import MAX_PROCESSES
from kvmgpu_wire.region import Region, Window

from ..backend.base import Backend
from ..compute.usage import Utilisation
from . import dispatch, graphs
from .modules import DEFAULT_CAPACITY, ModuleCache
from .quota import MemoryQuota
from .session import Session
from .waits import GpuWaits
from .windows import WindowAllocator

log = logging.getLogger("kvmgpu.worker")

MAX_SESSIONS = 256  # per worker: each holds a window, tables and memory
MONITOR = "monitor"  # a HELLO's role for a session that only asks about the vGPU (the guest's NVML)
ROLES = ("", "cuda", MONITOR)

# CUdevice_attribute numbers of what a VM is not given, answered 0 (the guest's library refuses
# the calls by name), so that a library that asks first takes the path it has without them: NCCL
# and PyTorch's expandable segments check VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED before cuMemCreate,
# programs check MANAGED_MEMORY before cudaMallocManaged.
NOT_GIVEN = {
    83: "managed memory", 86: "host native atomics", 88: "pageable memory access",
    89: "concurrent managed access", 91: "registered memory mapped at its host address",
    95: "cooperative launches", 96: "cooperative multi-device launches",
    100: "pageable memory through the host's page tables", 101: "managed memory read by the host directly",
    102: "virtual memory management (cuMemAddressReserve, cuMemCreate, cuMemMap)",
    103: "memory exported as a file descriptor", 104: "memory exported as a Win32 handle",
    105: "memory exported as a Win32 KMT handle", 110: "GPUDirect RDMA with VMM", 113: "read-only host registration",
    116: "GPUDirect RDMA", 117: "GPUDirect RDMA flush options", 119: "memory pool IPC handle types",
    124: "dma_buf sharing", 125: "IPC events", 128: "fabric handles", 132: "multicast",
    141: "host NUMA virtual memory management", 143: "host NUMA multinode IPC",
    145: "host virtual memory management", 146: "page-locked memory shared as dma_buf",
}

# CUDA errors after which the context is unusable until it is destroyed.
STICKY = {
    CUresult.CUDA_ERROR_ILLEGAL_ADDRESS, CUresult.CUDA_ERROR_LAUNCH_FAILED,
    714, 715, 716, 717, 718,  # hardware stack error, illegal instruction, misaligned, address space, PC
}


class VGpu:
    _launch_limits: tuple  # (device info, limits): dispatch._launch_limits's cache, set on first use

    def __init__(self, backend_factory: Callable[[], Backend], gmem: int, region: Region, *,
                 vm: str = "", compute: int = 100, compute_mode: str = "share",
                 module_capacity: int = DEFAULT_CAPACITY, gate=None):
        self._factory = backend_factory
        self.region = region
        self.quota = MemoryQuota(gmem)
        self.windows = WindowAllocator(region.size)
        self.vm = vm
        self.compute = compute
        self.compute_mode = compute_mode
        self.sessions: dict[tuple, Session] = {}
        self.boxed: list[Session] = []  # the sessions with a mailbox (the worker's loop looks at them)
        self.broken: tuple[int, str] | None = None  # (code, detail) of a sticky error
        # Called when the last session ends after a sticky error; None: restart_backend() in this
        # process (enough for the sim backend; the worker process re-executes itself instead).
        self.on_broken_idle: Callable[[], None] | None = None
        self.calls: Counter = Counter()
        self.errors: Counter = Counter()
        self.image_misses = 0  # MODULE_LOAD asked whether the host has an image it did not have
        self.bytes = {"htod": 0, "dtoh": 0, "dtod": 0}
        self.sessions_started = 0
        self.protocol_violations = 0
        self.internal_errors = 0  # channels closed by an unexpected exception (a bug: logged)
        self.objects = 0  # allocations, globals and handles of all sessions (dispatch counts them)
        self.started = time.time()
        self.usage = Utilisation()  # this VM's GPU time over the last second, for the guest's NVML
        self._module_capacity = module_capacity
        # The compute gate (kvmgpu.compute.ComputeGate or None): before_launch(), idle(), close().
        self.gate = gate
        self._start_backend()

    def _start_backend(self) -> None:
        self.backend = self._factory()
        self.backend.attach_region(self.region.view)
        self.info = self.backend.device_info()
        self.modules = ModuleCache(self.backend, self._module_capacity, self.quota)
        self.bind()

    def attach_gate(self, gate) -> None:
        """Put this VM's GPU work under a compute gate (kvmgpu.compute.ComputeGate)."""
        self.gate = gate
        self.bind()

    def bind(self) -> None:
        """The backend's calls as the worker makes them, for this backend and gate: `capabilities`,
        what it declares it has beyond the interface (its queued-launch paths); `waits`, the
        calls the specification says wait for the GPU (gated: kvmgpu/worker/waits.py), and
        `handlers`, every op's handler (dispatch.bind). The backend itself is left as it is."""
        self.capabilities = self.backend.capabilities
        self.waits = GpuWaits(self.backend, self.gate)
        self.handlers = dispatch.bind(self)

    # --- what the guest sees ---
    def device(self) -> dict:
        """The WELCOME's device: the GPU's attributes, the quota for its memory, and 0 for what a VM
        is not given (NOT_GIVEN), so that a program that asks takes the path it has without it."""
        i = self.info
        attributes = {**i.attributes, **{n: 0 for n in NOT_GIVEN}}
        return {"name": i.name, "uuid": i.uuid, "total_memory": self.quota.limit,
                "driver_version": i.driver_version, "compute_capability": list(i.compute_capability),
                "attributes": {str(k): v for k, v in attributes.items()}}

    def describe(self) -> dict:
        return {"gmem": self.quota.limit, "compute": self.compute, "compute_mode": self.compute_mode,
                "backend": self.backend.name, "vm": self.vm}

    def processes(self) -> list[tuple[int, int, int]]:
        """(pid, sessions, device memory held) of each guest process with CUDA sessions (monitors
        left out), by pid, at most MAX_PROCESSES: the guest's process list."""
        by_pid: dict[int, list[int]] = {}
        for s in self.sessions.values():
            if not s.monitor:
                entry = by_pid.setdefault(s.pid, [0, 0])
                entry[0] += 1
                entry[1] += s.charged
        return [(pid, n, used) for pid, (n, used) in sorted(by_pid.items())][:MAX_PROCESSES]

    def utilisation(self) -> tuple[int, int]:
        """(percent, milliseconds measured): this VM's GPU time over the last second or more, from
        the compute gate's meter (none without a gate: the sim backend's worker has none)."""
        return self.usage.percent(getattr(self.gate, "gpu_seconds", 0.0))

    def attribute(self, number: int, default: int) -> int:
        return self.info.attributes.get(number, default)

    # --- sessions ---
    def open_session(self, key: tuple, window: int, client: str = "", *, pid: int = 0,
                     role: str = "") -> Session | str:
        """A new session with its window, or why there is none. `pid` and `role` are the HELLO's:
        what the guest's NVML lists (a guest's claim, shown to that guest only)."""
        if role not in ROLES:
            return f"unknown session role {role!r} (one of {', '.join(repr(r) for r in ROLES)})"
        if key in self.sessions:
            self.end_session(key, "HELLO on a live session")
        if len(self.sessions) >= MAX_SESSIONS:
            return f"the worker already serves {MAX_SESSIONS} sessions"
        if role == MONITOR:  # it copies nothing: no window, so a full region never keeps it out
            placed, place = (0, 0), Window(self.region.view[0:0], 0, 0)
        else:
            found = self.windows.allocate(window)
            if found is None:
                return (f"no room for a {window or 'any'}-byte window in the {self.region.size}-byte "
                        f"region ({self.windows.used} bytes in use by {len(self.sessions)} sessions)")
            placed, place = found, self.region.window(*found)
        session = Session(key, place, client, pid=pid if pid <= 0xFFFFFFFF else 0, monitor=role == MONITOR)
        at = mailbox_at(session.window.size)
        if at is not None:
            session.mailbox = Mailbox(session.window.view, at)
            session.mailbox.reset()
            self.boxed.append(session)
        self.sessions[key] = session
        self.sessions_started += 1
        log.info("session %s:%s start (client %r, window %d+%d)", key[0], key[1], client, *placed)
        return session

    def end_session(self, key: tuple, reason: str = "") -> None:
        session = self.sessions.pop(key, None)
        if session is None:
            return
        self.objects -= session.objects
        b = self.backend
        graphs.release(self, session, _quietly)
        for event in session.events.values():
            _quietly(b.event_destroy, event)
        for stream in session.streams.values():
            _quietly(b.stream_destroy, stream)
        for ptr, r in list(session.ranges.items()):
            if r.digest is None:
                _quietly(b.mem_free, ptr)
                self.quota.release(r.charge)
        for digest in session.modules.values():
            self.modules.release(digest)
        if session.mailbox is not None:
            self.boxed.remove(session)
            session.mailbox.release()
            session.mailbox = None
        session.window.view.release()
        if not session.monitor:
            self.windows.release(session.window.offset, session.window.size)
        log.info("session %s:%s end%s", key[0], key[1], f" ({reason})" if reason else "")
        if self.broken and not self.sessions:
            (self.on_broken_idle or self.restart_backend)()

    def note_error(self, code: int, detail: str) -> None:
        if code in STICKY and not self.broken:
            self.broken = (code, detail)
            log.warning("vm %s: sticky CUDA error %d, the context is unusable until its sessions "
                        "end: %s", self.vm or "-", code, detail)

    def restart_backend(self) -> None:
        """A fresh context after a sticky error, once no session holds anything in the old one."""
        assert self.broken is not None  # (called once a sticky error broke the context)
        log.info("vm %s: new context after sticky error %d", self.vm or "-", self.broken[0])
        _quietly(self.backend.close)
        self.modules.forget()
        self.quota.used = 0
        self.broken = None
        self._start_backend()

    def close(self) -> None:
        for key in list(self.sessions):
            self.end_session(key, "worker stopping")
        if self.gate is not None:
            _quietly(self.gate.close)
        _quietly(self.backend.close)

    # --- counters ---
    def stats(self) -> dict:
        return {
            "vm": self.vm, "backend": self.backend.name, "time": round(time.time(), 3),
            "started": round(self.started, 3),
            "memory": {"used": self.quota.used, "limit": self.quota.limit, "peak": self.quota.peak},
            "sessions": {"live": len(self.sessions), "started": self.sessions_started},
            "calls": {op.name: n for op, n in sorted(self.calls.items())},
            "errors": {op.name: n for op, n in sorted(self.errors.items())},
            "bytes": dict(self.bytes),
            "modules_cached": len(self.modules), "module_images_sent": self.image_misses,
            "protocol_violations": self.protocol_violations,
            "internal_errors": self.internal_errors,
            "broken": self.broken[1] if self.broken else None,
            "compute": {"percent": self.compute, "mode": self.compute_mode,
                        "gpu_seconds": round(getattr(self.gate, "gpu_seconds", 0.0), 6)},
        }


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception as e:  # releasing on a broken context: nothing more to do
        log.debug("release %s failed: %s", getattr(fn, "__name__", fn), e)
