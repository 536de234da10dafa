"""A plain, synchronous client of the worker's protocol: `kvmgpu-guest info`'s monitor session, and
the tests', benchmarks' and fuzz corpus's way to speak the protocol frame by frame.

It is not how programs reach the vGPU: they use the guest's libcuda.so.1 (guest-agent/libcuda), the
one guest client, with its batching, mailbox, pipelined copier and page-locked memory
(kvmgpu_guest.driver is a thin layer over it). Here every call is written when it is made:

- `call(op, args, blob)` sends the call and waits for its reply. An error of an earlier queued call
  is the host's to report (at the next synchronising call), as is one kept with `defer`.
- `queue(op, args, blob)` sends a QUEUED frame (no reply).
- The window: bulk bytes (HtoD payloads, module images, DtoH results) go through a ring in it.
  `reserve(n)` hands out the next `n` bytes; when the ring is full the session sends FENCE (the host
  waits until no queued work still uses the window) and starts again at 0. `htod` / `dtoh` copy
  through it a chunk at a time, each chunk's call waiting for its reply.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from kvmgpu_wire.mailbox import mailbox_at
from kvmgpu_wire.protocol import NEED_DATA, OPS, Connection, Goodbye, Hello, Op, Reply, Role, Welcome

from . import __version__
from .config import GuestConfig, current as _current_config

if TYPE_CHECKING:
    from kvmgpu_wire.region import Window

RECV_BYTES = 64 * 1024
RING_ALIGN = 64
SHARED_WINDOW_PART = 16  # through the guest agent, a session asks for 1/16 of the region (as libcuda's)
_SYNCHRONISING = frozenset(int(op) for op, spec in OPS.items() if spec.synchronising)
_DRAINING = frozenset((int(Op.CTX_SYNCHRONIZE), int(Op.FENCE)))  # after them no queued work is left

MONITOR = "monitor"  # a HELLO's role: the session asks about the vGPU only (the worker's vgpu.MONITOR)
MONITOR_SESSION_BIT = 0x80000000  # a monitor's session id: its pid with this bit (pids are < 2^22)


class SessionError(Exception):
    """The session could not be set up or was lost (the host went away or closed it)."""


class Session:
    def __init__(self, transport, region, client: str = "", session_id: int | None = None,
                 config: GuestConfig | None = None, role: str = ""):
        self.transport = transport
        self.region = region
        self.role = role  # "monitor": asks about the vGPU only (left out of its process list)
        if session_id is None:  # a monitor beside the process's CUDA session on one channel
            session_id = os.getpid() | (MONITOR_SESSION_BIT if role == MONITOR else 0)
        self.id = session_id & 0xFFFFFFFF
        self.client = client or f"kvmgpu-guest/{__version__} pid {os.getpid()}"
        self.config = config if config is not None else _current_config()
        self.conn = Connection(Role.CLIENT)
        self.lock = threading.RLock()
        self.welcome: Welcome | None = None
        self.device: dict = {}
        self.vgpu: dict = {}
        self.window: Window | None = None
        self.view: memoryview | None = None
        self.window_size = 0
        self._seq = 0
        self._head = 0  # next free byte of the ring
        self._ring_size = 0  # the ring: [0, _ring_size) of the window (the mailbox, if any, after it)
        self._deferred = 0  # an error met while nobody waited, for the next synchronising call
        self.closed = False

    @classmethod
    def connect(cls, socket_path: str | None = None, shm_path: str | None = None,
                client: str = "", config: GuestConfig | None = None, role: str = "") -> "Session":
        """Find the channel (loopback or VM devices), say HELLO, and return the live session.
        `config`: this process's (config.current(), read from the environment) if not given.
        `role` "monitor": a session that only asks about the vGPU (the host gives it no window)."""
        from .channel import find_channel
        cfg = config if config is not None else _current_config()
        transport, region = find_channel(socket_path or cfg.socket or None, shm_path or cfg.shm or None,
                                         agent_socket=cfg.agent_socket)
        session = cls(transport, region, client, config=cfg, role=role)
        window = cfg.window
        if not window and getattr(transport, "shared", False):
            window = region.size // SHARED_WINDOW_PART
        try:
            session.handshake(window)
        except BaseException:
            session._close_io()
            raise
        return session

    def handshake(self, window: int = 0) -> Welcome:
        with self.lock:
            self.transport.send(self.conn.send(Hello(self.id, window=window, client=self.client,
                                                     pid=os.getpid(), role=self.role)))
            while True:
                event = self._next_event()
                if isinstance(event, Welcome) and event.session == self.id:
                    break
                if isinstance(event, Goodbye):
                    raise SessionError(f"the host refused the session: {event.reason or 'no reason given'}")
            self.welcome = event
            if event.channel_session and event.channel_session != self.id:
                self.id = event.channel_session  # a guest agent numbers sessions on the channel
            self.device = event.device
            self.vgpu = event.vgpu
            self.conn.max_frame = event.max_frame
            if self.role == MONITOR:  # the host gives a monitor no window: it copies nothing
                return event
            self.window = self.region.window(event.window_offset, event.window_size)
            self.view = self.window.view
            self.window_size = event.window_size
            at = mailbox_at(self.window_size)  # (the host keeps a mailbox there; this client does not post)
            self._ring_size = self.window_size if at is None else at
            self._head = 0
            return event

    # --- calls -----------------------------------------------------------------------------------

    def call(self, op: Op, args=(), blob: bytes = b"") -> Reply:
        """Send this call; wait for and return its reply."""
        with self.lock:
            if self.closed:
                raise SessionError("the session is closed")
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            self._send(self.conn.send_call(self.id, seq, op, args, blob))
            return self._wait(seq, op)

    def synchronize(self, op: Op, stream: int = 0) -> int:
        """STREAM_SYNCHRONIZE (on `stream`) or CTX_SYNCHRONIZE: its status."""
        return self.call(op, (stream,) if op == Op.STREAM_SYNCHRONIZE else ()).status

    def _wait(self, seq: int, op: Op) -> Reply:
        """The reply to call `seq` (calls are answered in order)."""
        while True:
            event = self._next_event()
            if type(event) is Reply and event.seq == seq:
                break
            if isinstance(event, Goodbye):
                self.closed = True
                raise SessionError(f"the host ended the session: {event.reason or 'no reason given'}")
        status = event.status
        if op in _SYNCHRONISING:
            if op in _DRAINING:
                self._head = 0  # nothing queued uses the window any more
            if self._deferred:
                status = status or self._deferred
                self._deferred = 0
        return event if status == event.status else event._replace(status=status, values=())

    def queue(self, op: Op, args=(), blob: bytes = b"") -> None:
        """Send a QUEUED call (no reply; its error surfaces at a synchronising call)."""
        with self.lock:
            if self.closed:
                raise SessionError("the session is closed")
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            self._send(self.conn.send_call(self.id, seq, op, args, blob, queued=True))

    def queue_launch(self, function: int, gx: int, gy: int, gz: int, bx: int, by: int, bz: int,
                     shared: int, stream: int, params: bytes) -> None:
        self.queue(Op.LAUNCH, (function, gx, gy, gz, bx, by, bz, shared, stream), params)

    def defer(self, status: int) -> None:
        """Keep an error to report at the next synchronising call."""
        if status and not self._deferred:
            self._deferred = status

    # --- the window's ring -----------------------------------------------------------------------

    def reserve(self, nbytes: int) -> int:
        """Offset in the window of `nbytes` free bytes (caller holds the lock; nbytes <= the ring)."""
        head = self._head
        if head + nbytes > self._ring_size:
            self.fence()
            head = 0
        self._head = head + ((nbytes + RING_ALIGN - 1) & ~(RING_ALIGN - 1))
        return head

    def release(self, offset: int) -> None:
        """Give back the ring from `offset` on (only the last reservation, once the host is done)."""
        if offset < self._head:
            self._head = offset

    def fence(self) -> None:
        reply = self.call(Op.FENCE)
        self.defer(reply.status)
        self._head = 0

    def htod(self, dst: int, src: memoryview, stream: int = 0) -> int:
        """Copy `src` to device `dst` through the ring, a ring's worth at a time, each waiting for
        the host. Status."""
        src = memoryview(src).cast("B")
        n = len(src)
        with self.lock:
            assert self.view is not None, "a monitor session has no window"
            pos = 0
            while True:
                size = min(self._ring_size, n - pos)
                off = self.reserve(size)
                self.view[off: off + size] = src[pos: pos + size]
                status = self.call(Op.MEMCPY_HTOD, (dst + pos, off, size, stream)).status
                self.release(off)
                pos += size
                if status or pos >= n:
                    return status

    def dtoh(self, dst: memoryview, src: int, stream: int = 0) -> int:
        """Copy device `src` into `dst` through the ring, as `htod`. Status."""
        dst = memoryview(dst).cast("B")
        n = len(dst)
        with self.lock:
            assert self.view is not None, "a monitor session has no window"
            pos = 0
            while True:
                size = min(self._ring_size, n - pos)
                off = self.reserve(size)
                status = self.call(Op.MEMCPY_DTOH, (off, src + pos, size, stream)).status
                if status == 0:
                    dst[pos: pos + size] = self.view[off: off + size]
                self.release(off)
                pos += size
                if status or pos >= n:
                    return status

    # --- plumbing --------------------------------------------------------------------------------

    def _send(self, data) -> None:
        try:
            self.transport.send(data)
        except OSError as e:
            self.closed = True
            raise SessionError(f"lost the channel to the host: {e.strerror or e}") from None

    def _next_event(self):
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not NEED_DATA:
                return event
            try:
                data = self.transport.recv(RECV_BYTES)
            except OSError as e:
                self.closed = True
                raise SessionError(f"lost the channel to the host: {e.strerror or e}") from None
            if not data:
                self.closed = True
                raise SessionError("the host closed the channel")
            conn.receive_data(data)

    def close(self, reason: str = "") -> None:
        """Say GOODBYE, and let go of the channel and the region."""
        with self.lock:
            if not self.closed:
                try:
                    self._send(self.conn.send(Goodbye(self.id, reason)))
                except SessionError:
                    pass
                self.closed = True
            self._close_io()

    def _close_io(self) -> None:
        self.view = None
        if self.window is not None:
            try:
                self.window.view.release()
            except Exception:
                pass
            self.window = None
        for thing in (self.transport, self.region):
            try:
                thing.close()
            except Exception:
                pass
