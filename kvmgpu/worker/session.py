"""One guest session's tables: the handles it was given and the device memory it holds.

Handles a guest sees are small integers handed out here; each table belongs to one session, so
a handle from another session (or a made-up one) is simply not found. Device pointers are the
backend's own addresses; a range is accepted only inside one allocation (or module global) this
session holds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.region import Window

from ..backend.base import CudaError

if TYPE_CHECKING:
    from kvmgpu_wire.mailbox import Mailbox
    from kvmgpu_wire.protocol import Connection


@dataclass
class Function:
    module: int  # the session's module handle
    backend: Any  # the backend's function (each backend's own type)
    layout: list  # [(offset, size)] of each parameter
    arg_bytes: int  # last offset + size: a launch's blob must be exactly this long


@dataclass
class Range:
    size: int
    digest: bytes | None = None  # a module global (not freeable); None: an allocation
    charge: int = 0  # what the quota was charged for it (an allocation: its size on the GPU)


@dataclass
class Session:
    key: tuple  # (channel id, session id)
    window: Window
    client: str = ""
    pid: int = 0  # the guest process's id, as its HELLO said (0: not said)
    monitor: bool = False  # a session that only asks about the vGPU (the guest's NVML)
    modules: dict[int, bytes] = field(default_factory=dict)  # handle -> image digest
    functions: dict[int, Function] = field(default_factory=dict)
    streams: dict[int, Any] = field(default_factory=dict)
    events: dict[int, object] = field(default_factory=dict)
    graphs: dict[int, object] = field(default_factory=dict)  # captured graphs (the backend's)
    graph_execs: dict[int, object] = field(default_factory=dict)  # their executables
    captures: set[int] = field(default_factory=set)  # handles of the streams capturing (graphs.py) ...
    joined: dict[int, int] = field(default_factory=dict)  # ... those that joined one: -> its origin's
    captured_events: dict[int, int] = field(default_factory=dict)  # event -> the capture (origin) it was recorded into
    ranges: dict[int, Range] = field(default_factory=dict)  # device pointer -> range
    starts: list[int] = field(default_factory=list)  # sorted keys of `ranges`
    pending_error: tuple[int, str] | None = None  # the first failure of a queued call
    mailbox: Mailbox | None = None  # the mailbox at the window's end, if it has one
    posted: Connection | None = None  # the Connection that decodes what the guest posts there
    doorbell: bytes = b""  # the DOORBELL frame that wakes the guest when it sleeps on an answer
    # 1 and 2 are CU_STREAM_LEGACY and CU_STREAM_PER_THREAD, which a guest takes for its null stream
    _next_handle: int = 3

    def new_handle(self) -> int:
        h = self._next_handle
        self._next_handle += 1
        return h

    @property
    def allocated(self) -> int:
        return sum(r.size for r in self.ranges.values() if r.digest is None)

    @property
    def charged(self) -> int:
        """The device memory this session's allocations take from the quota."""
        return sum(r.charge for r in self.ranges.values() if r.digest is None)

    @property
    def objects(self) -> int:
        """What the worker keeps for this session, counted: allocations, globals, handles."""
        return (len(self.ranges) + len(self.modules) + len(self.functions) + len(self.streams)
                + len(self.events) + len(self.graphs) + len(self.graph_execs))

    # --- device memory ---
    def add_range(self, ptr: int, size: int, digest: bytes | None = None, charge: int = 0) -> None:
        if ptr not in self.ranges:
            bisect.insort(self.starts, ptr)
        self.ranges[ptr] = Range(size, digest, charge)

    def drop_range(self, ptr: int) -> Range:
        r = self.ranges.pop(ptr)
        del self.starts[bisect.bisect_left(self.starts, ptr)]
        return r

    def check_range(self, ptr: int, nbytes: int, what: str = "pointer") -> None:
        """[ptr, ptr+nbytes) must lie inside one range this session holds."""
        i = bisect.bisect_right(self.starts, ptr) - 1
        if i >= 0:
            start = self.starts[i]
            if ptr + nbytes <= start + self.ranges[start].size:
                return
            raise CudaError(CUresult.CUDA_ERROR_INVALID_VALUE,
                            f"{what} range [0x{ptr:x}, +{nbytes}) runs past the end of its allocation")
        raise CudaError(CUresult.CUDA_ERROR_INVALID_VALUE,
                        f"{what} 0x{ptr:x} is not in memory this session allocated")

    def check_window(self, offset: int, nbytes: int) -> int:
        """The region offset of [offset, offset+nbytes) of the window, or INVALID_VALUE."""
        if offset + nbytes > self.window.size:
            raise CudaError(CUresult.CUDA_ERROR_INVALID_VALUE,
                            f"window range [{offset}, +{nbytes}) is outside the "
                            f"{self.window.size}-byte window")
        return self.window.offset + offset

    # --- handles ---
    def lookup(self, table: str, handle: int, what: str, null: bool = False):
        """The object `handle` names in this session's `table` (modules, functions, streams,
        events, graphs, graph_execs), or INVALID_HANDLE; with `null`, stream 0 is the null stream (None)."""
        if handle == 0 and table == "streams":
            if null:
                return None
            raise CudaError(CUresult.CUDA_ERROR_INVALID_HANDLE, f"{what}: the null stream cannot be given here")
        try:
            return getattr(self, table)[handle]
        except KeyError:
            raise CudaError(CUresult.CUDA_ERROR_INVALID_HANDLE,
                            f"{what} {handle} is not a handle of this session") from None

    def module(self, handle: int) -> bytes:
        return self.lookup("modules", handle, "module")

    def function(self, handle: int) -> Function:
        return self.lookup("functions", handle, "function")

    def stream(self, handle: int):
        """The backend stream; handle 0 is the null stream (None)."""
        return self.lookup("streams", handle, "stream", null=True)

    def event(self, handle: int):
        return self.lookup("events", handle, "event")
