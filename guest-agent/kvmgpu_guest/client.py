"""One guest session with the host worker: handshake, queued calls sent in batches, the staging ring.

A `Session` owns one transport (control channel) and the session's window of the shared region.

- `call(op, args, blob)` sends whatever is queued, then the call, and waits for its reply. An error
  of an earlier queued call is the host's to report (at the next synchronising call); the client
  also keeps errors it met itself while the caller was not waiting (a FENCE forced by a full ring)
  and reports them at the next synchronising call.
- `queue(op, args, blob)` appends a QUEUED frame to the batch; the batch goes out in one write when
  a call needs an answer or the batch passes `KVMGPU_BATCH_BYTES`. This is the hot path: frames are packed
  with one precomputed struct per op, no objects are built per call.
- The mailbox: a synchronous call whose frames (with the batch before it) fit, sent while nothing
  sent on the channel since the last reply may still be unread, is posted to the mailbox at the
  window's end instead, and its reply read there (kvmgpu_wire/mailbox.py): no system call on
  either side while both are awake.
- The window: bulk bytes (HtoD payloads, module images, DtoH results) go through a ring in it.
  `reserve(n)` hands out the next `n` bytes; when the ring is full the session sends FENCE (the host
  waits until no queued work still uses the window) and starts again at 0. A big enough window
  also has two staging slots at its end for synchronous host-to-device copies that need not wait
  (`_htod_staged`; docs/protocol.md, "Bulk bytes").
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from kvmgpu_wire.mailbox import REQUEST_MAX, SUPPORTED as _MAILBOX_SUPPORTED, Mailbox, mailbox_at
from kvmgpu_wire.protocol import (
    MAGIC,
    NEED_DATA,
    OPS,
    QUEUED,
    Connection,
    Doorbell,
    Goodbye,
    Hello,
    Kind,
    Op,
    Reply,
    Role,
    Welcome,
)
from kvmgpu_wire.trace import ON as _TRACE, mark as _mark

from . import __version__
from .config import GuestConfig, current as _current_config

if TYPE_CHECKING:
    from kvmgpu_wire.region import Window

# The settings (batch sizes, polling, copy threads and sizes, the staging slots, the mailbox) are a
# session's GuestConfig (config.py, which says why their defaults are what they are).
try:
    from . import _copier  # type: ignore[attr-defined]  # the C extension (copier.c): mypy reads no .so
except ImportError:
    _copier = None
DTOH_IN_FLIGHT = 3  # device-to-host chunks asked for ahead of the one being copied out
DTOH_SPIN_S = 0.05  # watch for landed pieces this long at most, then wait for the reply
STAGE_ALL = 8 << 20
STAGE_WAIT_S = 0.002  # a slot not given back in this long: FENCE (all staged copies are then done)
RECV_BYTES = 64 * 1024  # under glibc's mmap threshold: a larger recv() buffer costs an mmap per call
RING_ALIGN = 64
SHARED_WINDOW_PART = 16  # through the guest agent, a session asks for 1/16 of the region (several processes share it)

_CALL = int(Kind.CALL)
# header + op header + args, per op, in one struct: one pack per queued call
_QUEUED_FRAME = {int(op): (struct.Struct("<HBBIIIHH" + "Q" * len(spec.args)), len(spec.args),
                           struct.calcsize("<HH" + "Q" * len(spec.args)))
                 for op, spec in OPS.items() if spec.queueable}
_LAUNCH_FRAME, _, _LAUNCH_BODY = _QUEUED_FRAME[int(Op.LAUNCH)]
_LAUNCH_SIZE = _LAUNCH_FRAME.size  # a launch frame before its parameter bytes
_OP_LAUNCH = int(Op.LAUNCH)
_STAGED_FRAME, _, _STAGED_BODY = _QUEUED_FRAME[int(Op.MEMCPY_HTOD_STAGED)]
_OP_STAGED = int(Op.MEMCPY_HTOD_STAGED)
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
        self.conn = Connection(Role.CLIENT)
        self.lock = threading.RLock()
        self.welcome: Welcome | None = None
        self.device: dict = {}
        self.vgpu: dict = {}
        self.window: Window | None = None
        self.view: memoryview | None = None
        self.window_size = 0
        self._batch = bytearray()
        self.configure(config if config is not None else _current_config())
        self._batch_limit = self._first_batch
        self._seq = 0
        self._head = 0  # next free byte of the ring
        self._ring_size = 0  # the ring: [0, _ring_size) of the window
        self._stage_base = -1  # the staging slots (-1: the window is too small for them)
        self._slot = 0  # the next staging slot
        self._chunk = 0  # a staging slot's bytes (0: no slots)
        self._stage_slots = 0  # how many (the config's, when the window was laid out)
        self._staged: deque = deque()  # seqs of staged copies the host may not have done, oldest first
        self._done: memoryview | None = None  # the u32 where the host stores the seq of its last staged copy
        self._done_at = 0  # its offset in the window
        self._landed: memoryview | None = None  # the u32 where the host says how much of a DtoH has landed
        self._landed_at = 0  # its offset in the window (8 past the done word)
        self._end = 0  # where the ring and the staging slots end (the mailbox, if any, is after)
        self._deferred = 0  # an error met while nobody waited, for the next synchronising call
        self._box: Mailbox | None = None  # the mailbox, where this session posts its calls
        self._posted = False  # a call is posted and its reply not read yet
        self._clean = False  # nothing written to the channel since the last reply
        self._doorbell = b""
        self.closed = False

    def configure(self, config: GuestConfig) -> None:
        """Take `config`'s settings: those the per-call paths read are bound here, once. (The
        window's layout, its staging slots and mailbox, follows at the next handshake.)"""
        with self.lock:
            self.config = config
            self._first_batch = config.first_batch
            self._batch_bytes = config.batch_bytes
            self._poll_s = config.poll_us / 1e6
            self._copies = _Copies(config)

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

    # --- handshake -------------------------------------------------------------------------------

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
                # a guest agent numbers sessions on the channel: from now on use its number (the
                # agent then passes frames on as they are), which the mailbox's frames must carry
                self.id = event.channel_session
            self._doorbell = self.conn.send(Doorbell(self.id))
            self.device = event.device
            self.vgpu = event.vgpu
            self.conn.max_frame = event.max_frame
            if self.role == MONITOR:  # the host gives a monitor no window: it copies nothing
                self.window_size = self._end = self._ring_size = 0
                return event
            self.window = shared = self.region.window(event.window_offset, event.window_size)
            self.region.populate(event.window_offset, event.window_size)
            self.view = shared.view
            self.window_size = event.window_size
            self._head = 0
            self._setup_mailbox()
            self._setup_staging()
            return event

    def _setup_mailbox(self) -> None:
        """The mailbox: the window's last MAILBOX_BYTES, where it has one (the host makes it for
        every window that size allows, whether or not this side posts to it)."""
        if self._box is not None:
            self._box.release()
            self._box = None
        at = mailbox_at(self.window_size)
        self._end = self.window_size if at is None else at  # the ring and the staging slots end here
        if at is not None and self.config.mailbox and _MAILBOX_SUPPORTED:
            assert self.view is not None  # (called by the handshake, once the window is there)
            self._box = Mailbox(self.view, at)
            self._box.wake()
            self._clean = True

    def _setup_staging(self) -> None:
        """Carve the staging slots and the host's done word out of the window's end (below the
        mailbox), if the window is big enough to spare them (four times their size); the rest is
        the ring."""
        size = self._end
        self._stage_slots = slots = self.config.stage_slots
        self._chunk = chunk = _slot_size(size, self.config.stage_chunk, slots)
        self._staged.clear()
        if self._done is not None and self._landed is not None:
            self._done.release()
            self._landed.release()
        if not chunk:
            self._ring_size, self._stage_base, self._done, self._landed = size, -1, None, None
            return
        stage = slots * chunk
        done_at = size - 64
        assert self.view is not None  # (called by the handshake, once the window is there)
        self._stage_base = (done_at - stage) & ~(RING_ALIGN - 1)
        self._ring_size = self._stage_base
        self._done = done = self.view[done_at: done_at + 4].cast("I")
        self._done_at = done_at
        at = self._landed_at = done_at + 8
        self._landed = self.view[at: at + 4].cast("I")
        done[0] = self._seq  # nothing staged yet: every seq sent from now on is newer
        self._slot = 0

    # --- calls -----------------------------------------------------------------------------------

    def call(self, op: Op, args=(), blob: bytes = b"") -> Reply:
        """Send the batch and this call; wait for and return its reply."""
        with self.lock:
            if _TRACE:
                _mark(f"g0.{int(op)}")
                seq = self._send_call(op, args, blob, True)
                _mark("g1")
                reply = self._wait(seq, op)
                _mark("g3")
                return reply
            return self._wait(self._send_call(op, args, blob, True), op)

    def _send_call(self, op: Op, args=(), blob: bytes = b"", post: bool = False) -> int:
        """Send the batch and this call (one write; with `post`, to the mailbox where it may go:
        `_deliver`); its seq, for `_wait`."""
        if self.closed:
            raise SessionError("the session is closed")
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        frame = self.conn.send_call(self.id, seq, op, args, blob)
        if post:
            self._deliver(frame)
        else:
            self._send_after_batch(frame)
        return seq

    def _deliver(self, frame: bytes) -> None:
        """Send what is queued and `frame`, a call whose reply is read next: posted to the mailbox
        where both fit, nothing written to the channel since the last reply may still be unread
        (the host takes a post as it comes, not after the channel's bytes) and the worker says it
        looks there (one that blocks is woken by the channel's bytes anyway: a post would add the
        DOORBELL's turn); otherwise written to the channel. A post rings a worker that blocked
        after all."""
        box, batch = self._box, self._batch
        if (box is not None and self._clean and len(batch) + len(frame) <= REQUEST_MAX
                and box.host_awake()):
            awake = box.post(batch, frame)
            batch.clear()
            self._posted = True
            if not awake:
                self._send(self._doorbell)
            return
        self._send_after_batch(frame)

    def _send_after_batch(self, frame: bytes) -> None:
        """Send what is queued and `frame` in one write."""
        batch = self._batch
        if batch:
            batch += frame
            self._send(batch)
            batch.clear()
        else:
            self._send(frame)

    def synchronize(self, op: Op, stream: int = 0) -> int:
        """STREAM_SYNCHRONIZE (on `stream`) or CTX_SYNCHRONIZE, as `call` makes them, on the hot
        path of a launch + synchronise: the batch and the call in one write, and the reply taken
        by one comparison where it is the plain success it nearly always is. Its status."""
        with self.lock:
            if self.closed:
                raise SessionError("the session is closed")
            if _TRACE:
                _mark(f"g0.{int(op)}")
            conn = self.conn
            seq = (self._seq + 1) & 0xFFFFFFFF
            frame = conn.send_wait(self.id, seq, op, stream)
            self._seq = seq
            self._deliver(frame)
            if _TRACE:
                _mark("g1")
            if conn.take_waited(self._recv(), self.id, seq):
                status = self._answered(op, 0)
            else:
                status = self._wait(seq, op).status
            if _TRACE:
                _mark("g3")
            return status

    def _wait(self, seq: int, op: Op) -> Reply:
        """The reply to call `seq` (calls are answered in order: wait for them in order)."""
        while True:
            event = self._next_event()
            if type(event) is Reply and event.seq == seq:
                break
            if isinstance(event, Goodbye):
                self.closed = True
                raise SessionError(f"the host ended the session: {event.reason or 'no reason given'}")
        status = self._answered(op, event.status)
        return event if status == event.status else event._replace(status=status, values=())

    def _answered(self, op: Op, status: int) -> int:
        """What the reply to a call of `op` with `status` means for this session (the status to
        report: a deferred error where the call is synchronising and succeeded)."""
        # The host answers in order and finishes a staged copy before it reads on: every staged
        # copy sent before this call is done. And the host is idle now: start small again.
        if self._staged:
            self._staged.clear()
        self._posted = False
        self._clean = True  # all that was sent before the call is done: the mailbox may be used
        self._batch_limit = self._first_batch
        if op in _SYNCHRONISING:
            if op in _DRAINING:
                self._head = 0  # nothing queued uses the window any more
            if self._deferred:
                if status == 0:
                    status = self._deferred
                self._deferred = 0
        return status

    def queue(self, op: Op, args=(), blob: bytes = b"") -> None:
        """Append a QUEUED call to the batch (no reply; errors surface at a synchronising call)."""
        st, nargs, body = _QUEUED_FRAME[op]
        if len(args) != nargs:
            raise ValueError(f"{Op(op).name} takes {nargs} args, got {len(args)}")
        with self.lock:
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            batch = self._batch
            batch += st.pack(MAGIC, _CALL, QUEUED, self.id, seq, body + len(blob), op, nargs, *args)
            if blob:
                batch += blob
            if len(batch) >= self._batch_limit and len(batch) > st.size + len(blob):
                self._send_batch()

    def queue_launch(self, function: int, gx: int, gy: int, gz: int, bx: int, by: int, bz: int,
                     shared: int, stream: int, params: bytes) -> None:
        """`queue(Op.LAUNCH, ...)` without the generic lookups: the hottest call there is."""
        with self.lock:
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            batch = self._batch
            batch += _LAUNCH_FRAME.pack(MAGIC, _CALL, QUEUED, self.id, seq, _LAUNCH_BODY + len(params),
                                        _OP_LAUNCH, 9, function, gx, gy, gz, bx, by, bz, shared, stream)
            batch += params
            if len(batch) >= self._batch_limit and len(batch) > _LAUNCH_SIZE + len(params):
                self._send_batch()

    def _send_batch(self) -> None:
        self._send(self._batch)
        self._batch.clear()
        if self._batch_limit < self._batch_bytes:
            self._batch_limit = min(self._batch_bytes, 2 * self._batch_limit)

    def flush(self) -> None:
        with self.lock:
            if self._batch:
                self._send(self._batch)
                self._batch.clear()

    # --- the staging ring ------------------------------------------------------------------------

    def reserve(self, nbytes: int) -> int:
        """Offset in the window of `nbytes` free bytes (caller holds the lock; nbytes <= window)."""
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
        if reply.status and not self._deferred:
            self._deferred = reply.status
        self._head = 0

    def defer(self, status: int) -> None:
        """Keep an error to report at the next synchronising call."""
        if status and not self._deferred:
            self._deferred = status

    # --- bulk copies -----------------------------------------------------------------------------

    def htod(self, dst: int, src: memoryview, stream: int = 0, sync: bool = True,
             wait: bool | None = None) -> int:
        """Copy `src` (bytes) to device `dst` through the ring. Status.

        Pipelined: the bytes go in chunks; each chunk's copy is sent (queued) as soon as it is in
        the window, so the host DMAs chunk k while this side fills chunk k+1.
        `sync` (cuMemcpyHtoD): the copy is sent at once. `wait` (default: `sync`): the last chunk
        waits for the host's answer (it synchronises the stream, so all chunks). A synchronous
        copy that does not wait returns once every byte is in the window, as a native copy from
        pageable memory returns once its bytes are staged: `src` may be reused, and an error of
        the copy surfaces at the next synchronising call (the ring it used is reused after a FENCE)."""
        n = len(src)
        if wait is None:
            wait = sync
        if _TRACE:
            _mark("gh")
        with self.lock:
            cfg = self.config
            if sync and not wait and not stream and self._stage_base >= 0 and (
                    n <= cfg.stage_max or self._chunk >= STAGE_ALL):
                return self._htod_staged(dst, src)
            chunk = _chunk(n, self._ring_size, cfg.pipe_min, cfg.pipe_chunk)
            view, copy = self.view, self._copies.copy
            assert view is not None  # the session is open
            pos = 0
            start = self._head  # a copy that waits gives back all of its chunks at the end
            while True:
                size = min(chunk, n - pos)
                last = pos + size >= n
                off = self.reserve(size)
                if off == 0:
                    start = 0  # the ring wrapped (or was empty): nothing before this is in use
                copy(view, off, src, pos, size)
                if last and wait:
                    # the last chunk's call synchronises the stream: every chunk has landed
                    reply = self.call(Op.MEMCPY_HTOD, (dst + pos, off, size, stream))
                    self.release(start)
                    return reply.status
                self.queue(Op.MEMCPY_HTOD, (dst + pos, off, size, stream))
                if last and not sync:
                    return 0
                self.flush()  # the host starts on this chunk now
                if last:
                    return 0
                pos += size

    def _htod_staged(self, dst: int, src: memoryview) -> int:
        """A synchronous copy that does not wait, through the staging slots (caller holds the lock):
        each slot's bytes are sent as MEMCPY_HTOD_STAGED at once, and a slot is refilled once the
        host has stored that call's seq (or a later one) in the done word."""
        n = len(src)
        pos = 0
        view, copy = self.view, self._copies.copy
        assert view is not None  # the session is open
        while pos < n:
            size = min(self._chunk, n - pos)
            off = self._free_slot()
            copy(view, off, src, pos, size)
            self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
            self._batch += _STAGED_FRAME.pack(MAGIC, _CALL, QUEUED, self.id, seq, _STAGED_BODY, _OP_STAGED,
                                              4, dst + pos, off, size, self._done_at)
            self._send(self._batch)
            self._batch.clear()
            self._staged.append(seq)
            pos += size
        return 0

    def _free_slot(self) -> int:
        """The next staging slot's offset, once the host is done with its last copy."""
        if len(self._staged) >= self._stage_slots:
            seq = self._staged[0]
            done = self._done
            assert done is not None  # copies were staged: the window has its done word
            deadline = spin_until = 0.0
            while (done[0] - seq) & 0xFFFFFFFF >= 0x80000000:  # the host's last seq is before `seq`
                now = time.perf_counter()
                if not deadline:
                    deadline, spin_until = now + STAGE_WAIT_S, now + self._poll_s
                elif now > deadline:  # the host is busy (a long kernel first) or gone: ask it
                    self.fence()
                    break
                elif now > spin_until:
                    time.sleep(0)  # let the program's other threads run meanwhile
            if self._staged:
                self._staged.popleft()
        off = self._stage_base + self._slot * self._chunk
        self._slot = (self._slot + 1) % self._stage_slots
        return off

    def dtoh(self, dst: memoryview, src: int, stream: int = 0) -> int:
        """Copy device `src` into `dst` through the ring. Synchronous. Status.

        Pipelined: up to DTOH_IN_FLIGHT chunk copies are asked for ahead; each is answered when
        its bytes are in the window, and this side copies chunk k out while the host DMAs the next."""
        n = len(dst)
        with self.lock:
            if _TRACE:
                _mark(f"g0.{int(Op.MEMCPY_DTOH)}")
            if n == 0:
                off = self.reserve(0)
                reply = self.call(Op.MEMCPY_DTOH, (off, src, 0, stream))
                self.release(off)
                return reply.status
            cfg = self.config
            piece, whole = cfg.dtoh_piece, cfg.dtoh_whole
            if (self._landed is not None and piece and 2 * piece <= n <= whole
                    and n <= self._ring_size):
                return self._dtoh_pieces(dst, src, stream)
            chunk = min(n, self._ring_size) if n <= whole else \
                _chunk(n, self._ring_size, cfg.pipe_min, cfg.pipe_chunk)
            view, copy = self.view, self._copies.copy
            start = self._head
            status = 0
            pending: deque = deque()

            def drain_one():
                nonlocal status
                seq, off, pos, size = pending.popleft()
                reply = self._wait(seq, Op.MEMCPY_DTOH)
                if reply.status:
                    status = status or reply.status
                elif not status:
                    copy(dst, pos, view, off, size)
                    if _TRACE:
                        _mark("gx")

            pos = 0
            while pos < n:
                size = min(chunk, n - pos)
                if pending and self._head + size > self._ring_size:
                    while pending:  # the ring wraps: what is in flight must land first
                        drain_one()
                    start = 0
                off = self.reserve(size)
                if not pending and off == 0:
                    start = 0
                pending.append((self._send_call(Op.MEMCPY_DTOH, (off, src + pos, size, stream)),
                                off, pos, size))
                if _TRACE:
                    _mark("g1")
                pos += size
                if len(pending) >= DTOH_IN_FLIGHT:
                    drain_one()
            while pending:
                drain_one()
            self.release(start)
            if _TRACE:
                _mark("g3")
            return status

    def _dtoh_pieces(self, dst: memoryview, src: int, stream: int) -> int:
        """`dtoh` of one window's worth, copied out piece by piece as the host says each landed
        (MEMCPY_DTOH_PIECES): the copy out runs alongside the DMA of the pieces after it."""
        n = len(dst)
        off = self.reserve(n)
        landed, view = self._landed, self.view
        assert landed is not None and view is not None  # the session is open, its window big enough
        landed[0] = 0
        seq = self._send_call(Op.MEMCPY_DTOH_PIECES,
                              (off, src, n, stream, self.config.dtoh_piece, self._landed_at))
        if _TRACE:
            _mark("g1")
        copy = _Copier(self._copies, dst, view, off)
        if self._copies.wake:
            copy.wake()
        poll = getattr(self.transport, "recv_nowait", None)
        copied, spins = 0, 0
        give_up = time.perf_counter() + DTOH_SPIN_S
        while copied < n:
            got = landed[0]
            if got > copied:
                got = min(got, n)
                copy.part(copied, got - copied, got == n)
                copied, spins = got, 0
                continue
            if poll is not None:  # a reply before the last piece: an error (or the session ended)
                data = poll(RECV_BYTES)
                if data is not None:
                    if data:
                        self.conn.receive_data(data)
                    break
            spins += 1
            if spins > 64:  # the GPU is busy with earlier work: let the program's threads run
                time.sleep(0)
                if time.perf_counter() > give_up:
                    break  # no sign for long (a transport that cannot be polled): wait for the reply
        reply = self._wait(seq, Op.MEMCPY_DTOH_PIECES)
        if _TRACE:
            _mark("g2")
        if reply.status == 0 and copied < n:
            copy.part(copied, n - copied, True)
        copy.finish()
        if _TRACE:
            _mark("gx")
        self.release(off)
        if _TRACE:
            _mark("g3")
        return reply.status

    # --- plumbing --------------------------------------------------------------------------------

    def _send(self, data) -> None:
        self._clean = False
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
            conn.receive_data(self._recv())

    def _recv(self) -> bytes:
        """The next bytes from the host: the answer in the mailbox to a posted call where it is
        there (`_answer`), else from the channel, spinning for them KVMGPU_POLL_US first where the
        transport can be polled (the answer is often a few µs away)."""
        if self._posted:
            data = self._answer()
            if data is not None:
                return data
        return self._recv_channel()

    def _answer(self):
        """The host's answer to the posted call, read in the mailbox once the host has stored its
        number: spun for KVMGPU_POLL_US, then waited for on the channel (the host rings when it answers
        and sees this side asleep). None where the answer went through the channel; bytes from the
        channel where those came meanwhile (a DOORBELL, the answer itself, a GOODBYE: the caller
        decodes them)."""
        box = self._box
        data = None
        if not box.answered():
            deadline = time.perf_counter() + self._poll_s
            while not box.answered():
                if time.perf_counter() > deadline:
                    if box.sleep():  # answered meanwhile
                        box.wake()
                        break
                    data = self._recv_channel(spin=False)
                    box.wake()
                    if not box.answered():
                        return data
                    break
        self._posted = False
        answer = box.answer_bytes()
        if data is None or answer is None:
            return answer or data
        self.conn.receive_data(data)  # (a DOORBELL: decoded and passed over before the answer)
        return answer

    def _recv_channel(self, spin: bool = True) -> bytes:
        """The next bytes from the channel (`_recv`)."""
        try:
            data = None
            poll_s = self._poll_s
            poll = getattr(self.transport, "recv_nowait", None) if poll_s > 0 and spin else None
            if poll is not None:
                data = poll(RECV_BYTES)
                if data is None:
                    deadline = time.perf_counter() + poll_s
                    while True:
                        data = poll(RECV_BYTES)
                        if data is not None or time.perf_counter() > deadline:
                            break
            if data is None:
                data = self.transport.recv(RECV_BYTES)
        except OSError as e:
            self.closed = True
            raise SessionError(f"lost the channel to the host: {e.strerror or e}") from None
        if not data:
            self.closed = True
            raise SessionError("the host closed the channel")
        if _TRACE:
            _mark("g2")
        return data

    def close(self, reason: str = "") -> None:
        """Send what is queued, say GOODBYE, and let go of the channel and the region."""
        with self.lock:
            if not self.closed:
                try:
                    if self._batch:
                        self._send(self._batch)
                        self._batch.clear()
                    self._send(self.conn.send(Goodbye(self.id, reason)))
                except SessionError:
                    pass
                self.closed = True
            self._close_io()

    def _close_io(self) -> None:
        if self._box is not None:
            self._box.release()
            self._box = None
        if self._done is not None and self._landed is not None:
            self._done.release()
            self._landed.release()
            self._done = self._landed = None
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


# --------------------------------------------------------------------------------- bulk memory copy

def _slot_size(end: int, stage_chunk: int, slots: int) -> int:
    """The staging slots' size in a window whose ring and slots end at `end`: `stage_chunk`, halved
    (not below 1 MiB) until the window holds four times the slots; 0 where it cannot (no slots)."""
    chunk = stage_chunk
    while chunk > 1 << 20 and end < 4 * slots * chunk + 4096:
        chunk = max(1 << 20, chunk // 2)
    return chunk if slots >= 2 and end >= 4 * slots * chunk + 4096 else 0


def _chunk(n: int, window: int, pipe_min: int, pipe_max: int) -> int:
    return max(1, min(window, n, max(pipe_min, min(pipe_max, (n // 4 + 0xFFFF) & ~0xFFFF))))


_pools: dict = {}  # number of workers -> a ThreadPoolExecutor of kvmgpu-copy threads
_pool_lock = threading.Lock()


def _address(view: memoryview) -> int | None:
    """The address of a writable buffer, or None (read-only: it is copied the plain way)."""
    try:
        holder = ctypes.c_char.from_buffer(view)
    except (TypeError, ValueError, BufferError):
        return None
    addr = ctypes.addressof(holder)
    del holder  # let the buffer's owner (an mmap) close later
    return addr


def _get_pool(workers: int):
    pool = _pools.get(workers)
    if pool is None:
        with _pool_lock:
            pool = _pools.get(workers)
            if pool is None:
                from concurrent.futures import ThreadPoolExecutor
                pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="kvmgpu-copy")
    return pool


class _Copies:
    """The bulk copies into and out of the window, as a session's configuration has them (its
    settings bound here once: `copy` runs for every chunk of every bulk copy)."""

    def __init__(self, cfg: GuestConfig, copier=None):
        copier = _copier if copier is None else copier
        self.copier = copier if cfg.copier else None
        if self.copier is not None:
            self.copier.configure(max(0, min(cfg.copier_threads - 1, 15)), cfg.copy_spin_us)
        self.split_size = cfg.copy_split
        self.threads, self.piece = cfg.copy_threads, cfg.copy_piece
        self.piece_threads, self.part = cfg.piece_threads, cfg.copy_part
        self.wake, self.steal = cfg.copy_wake, cfg.copy_steal
        self.dtoh_split = self.copier is not None and cfg.copier_dtoh  # a DtoH's parts by the copier

    def copy(self, dst: memoryview, dpos: int, src: memoryview, spos: int, n: int) -> None:
        """dst[dpos:dpos+n] = src[spos:spos+n]; large copies shared among threads: by the copier
        from two KVMGPU_COPY_SPLITs, or else in pieces on KVMGPU_COPY_THREADS threads
        (ctypes.memmove releases the GIL, so the pieces run at once)."""
        copier, threads = self.copier, self.threads
        split = copier is not None and n >= 2 * self.split_size
        pieces = min(threads, n // self.piece)
        if (split or pieces > 1) and dpos + n <= len(dst) and spos + n <= len(src):
            d, s = _address(dst), _address(src)
            if d is not None and s is not None and split and copier is not None:
                copier.copy(d + dpos, s + spos, n, self.split_size)
                return
            if d is not None and s is not None and pieces > 1:
                pool = _get_pool(threads - 1)
                d += dpos
                s += spos
                step = (n // pieces + 4095) & ~4095
                futures = [pool.submit(ctypes.memmove, d + i, s + i, min(step, n - i))
                           for i in range(step, n, step)]
                ctypes.memmove(d, s, min(step, n))
                for f in futures:
                    f.result()
                return
        dst[dpos: dpos + n] = src[spos: spos + n]


class _Copier:
    """Copies spans of `src` (from offset `base`) to the same offsets of `dst` as they become
    ready, on the copy threads, not waited for until `finish` (ctypes.memmove releases the GIL:
    the caller goes on watching meanwhile)."""

    def __init__(self, copies: _Copies, dst: memoryview, src: memoryview, base: int):
        self.copies = copies
        self.dst, self.src, self.base = dst, src, base
        self.d, self.s = _address(dst), _address(src)
        self.split = copies.dtoh_split  # each part at once, by the copier
        self.futures: list = []  # (future, its memmove's arguments or None)

    def part(self, pos: int, n: int, last: bool = False) -> None:
        """Copy [pos, pos+n): handed to the pool in KVMGPU_COPY_PART parts (this thread goes back
        to watching), but the `last` part, which this thread copies itself."""
        copies = self.copies
        if self.d is None or self.s is None or copies.piece_threads < 2:
            self.dst[pos: pos + n] = self.src[self.base + pos: self.base + pos + n]
            return
        if self.split:
            copies.copy(self.dst, pos, self.src, self.base + pos, n)
            return
        d, s = self.d + pos, self.s + self.base + pos
        part = copies.part
        end = n if not last else max(0, n - part)
        if end:
            pool = _get_pool(copies.piece_threads - 1)
            for i in range(0, end, part):
                args = (d + i, s + i, min(part, end - i))
                self.futures.append((pool.submit(ctypes.memmove, *args), args))
        if end < n:
            ctypes.memmove(d + end, s + end, n - end)

    def wake(self) -> None:
        """Wake the copy threads now, so that they are up when the first piece lands."""
        threads = self.copies.piece_threads
        if threads > 1 and self.d is not None and self.s is not None and not self.split:
            pool = _get_pool(threads - 1)
            self.futures += [(pool.submit(int), None) for _ in range(threads - 1)]

    def finish(self) -> None:
        """Wait until every part is copied: those the pool has not started yet this thread copies
        itself (the latest first), instead of waiting for a pool thread to come to them."""
        if self.copies.steal:
            for f, args in reversed(self.futures):
                if args is not None and f.cancel():
                    ctypes.memmove(*args)
        for f, _ in self.futures:
            if not f.cancelled():
                f.result()
        self.futures.clear()
