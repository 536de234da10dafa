"""A fake host for client tests: protocol.Connection(Role.HOST) over one end of a socketpair.

It answers the few ops the tests use from a dict of "device" bytearrays and records every call
it saw (queued or not), so tests can check what the client put on the wire and in which order.
It serves the session's mailbox as the worker does: asleep (the default; the guest rings a
DOORBELL with each post) or, with `awake`, looking at it every millisecond.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from kvmgpu_wire.mailbox import REPLY_MAX, Mailbox, mailbox_at
from kvmgpu_wire.protocol import (
    NEED_DATA,
    Call,
    Connection,
    Doorbell,
    Goodbye,
    Hello,
    Op,
    Role,
    Welcome,
    negotiate,
    pack_params,
)
from kvmgpu_wire.region import Region

DEVICE = {"name": "fake vGPU", "uuid": "GPU-00000000-1111-2222-3333-444444444444",
          "total_memory": 1 << 20, "driver_version": 12080, "compute_capability": [8, 0],
          "attributes": {"16": 132}}
VGPU = {"gmem": 1 << 20, "compute": 50, "compute_mode": "limit", "backend": "fake", "vm": "test"}


class FakeHost(threading.Thread):
    def __init__(self, sock: socket.socket, region: Region, window: tuple[int, int]):
        super().__init__(daemon=True)
        self.sock, self.region, self.window = sock, region, window
        self.conn = Connection(Role.HOST)
        self.calls: list[Call] = []
        self.memory: dict[int, bytearray] = {}
        self.modules: dict[bytes, int] = {}
        self.images: list[bytes] = []
        self.pending_error = 0  # error of a queued call, for the next synchronising one
        self.fail_queued: set[Op] = set()
        self.next_ptr = 0x1000
        self.say_staged_done = True  # False: never store a staged copy's seq (a host that is stuck)
        self.awake = False  # True: look at the mailbox every millisecond (no DOORBELL needed)
        self.box: Mailbox | None = None
        self.posted: Connection | None = None  # decodes the mailbox's requests
        self.posts = 0  # requests taken from the mailbox
        self.rung = 0  # DOORBELLs sent to the guest
        self.doorbells = 0  # DOORBELLs the guest sent
        self.answer_after = 0.0  # seconds to take before answering a post (the guest goes to sleep)
        self.answer_on_channel = False  # answer posts through the channel (as a worker with replies unsent)

    def run(self):
        try:
            while True:
                ready, _, _ = select.select([self.sock], [], [], 0.001 if self.awake else None)
                if ready:
                    data = self.sock.recv(1 << 20)
                    if not data:
                        return
                    self.conn.receive_data(data)
                    while (event := self.conn.next_event()) is not NEED_DATA:
                        out = self.handle(event)
                        if out:
                            self.sock.sendall(out)
                if self.box is not None:
                    self._serve_mailbox()
        except (OSError, ValueError):  # the test closed the socket
            return
        finally:
            if self.box is not None:
                self.box.release()

    def _serve_mailbox(self):
        data = self.box.take()
        if data is None:
            return
        self.posts += 1
        self.posted.receive_data(data)
        out = b""
        while (event := self.posted.next_event()) is not NEED_DATA:
            out += self.handle(event) or b""
        time.sleep(self.answer_after)
        if len(out) > REPLY_MAX or self.answer_on_channel:
            self.sock.sendall(out)
            out = b""
        if self.box.answer(out):
            self.rung += 1
            self.sock.sendall(self.conn.send(Doorbell(self.session)))

    def handle(self, ev):
        if isinstance(ev, Hello):
            version, max_frame = negotiate(ev)
            off, size = self.window
            at = mailbox_at(size)
            if at is not None:
                self.box = Mailbox(self.region.view[off: off + size], at)
                self.box.reset()
                self.box.set_awake(self.awake)
                self.posted = Connection(Role.HOST, max_frame, (ev.session,))
            self.session = ev.session
            return self.conn.send(Welcome(ev.session, version, max_frame, off, size, DEVICE, VGPU,
                                          ev.session))
        if isinstance(ev, Doorbell):
            self.doorbells += 1
            return None
        if isinstance(ev, Goodbye):
            return None
        self.calls.append(ev)
        status, values, blob = self.execute(ev)
        if ev.queued:
            if status and not self.pending_error:
                self.pending_error = status
            return None
        from kvmgpu_wire.protocol import OPS
        if status == 0 and OPS[ev.op].synchronising and self.pending_error:
            status, self.pending_error = self.pending_error, 0
        return self.conn.send_reply(ev.session, ev.seq, status, values, blob, ev.op if status == 0 else None)

    def _window(self, offset, n):
        base = self.window[0] + offset
        return self.region.view[base: base + n]

    def execute(self, c: Call):
        op, a = c.op, c.args
        if op in self.fail_queued and c.queued:
            return 1, (), b""
        if op == Op.MEM_ALLOC:
            ptr = self.next_ptr
            self.next_ptr += max(a[0], 1) + 0x1000
            self.memory[ptr] = bytearray(a[0])
            return 0, (ptr,), b""
        if op == Op.MEM_GET_INFO:
            used = sum(len(m) for m in self.memory.values())
            return 0, (DEVICE["total_memory"] - used, DEVICE["total_memory"]), b""
        if op == Op.MEMCPY_HTOD:
            dst, off, n, _ = a
            base, mem = self._find(dst)
            mem[dst - base: dst - base + n] = self._window(off, n)
            return 0, (), b""
        if op == Op.MEMCPY_HTOD_STAGED:
            dst, off, n, done = a
            base, mem = self._find(dst)
            mem[dst - base: dst - base + n] = self._window(off, n)
            if self.say_staged_done:
                self._window(done, 4).cast("I")[0] = c.seq
            return 0, (), b""
        if op == Op.MEMCPY_DTOH:
            off, src, n, _ = a
            base, mem = self._find(src)
            self._window(off, n)[:] = mem[src - base: src - base + n]
            return 0, (), b""
        if op == Op.MODULE_LOAD:
            off, n = a
            if c.blob in self.modules:
                return 0, (self.modules[c.blob],), b""
            if n == 0:
                return 500, (), b""  # CUDA_ERROR_NOT_FOUND: send the image
            self.images.append(bytes(self._window(off, n)))
            self.modules[c.blob] = len(self.modules) + 1
            return 0, (self.modules[c.blob],), b""
        if op == Op.MODULE_GET_FUNCTION:
            layout = [(0, 8), (8, 8), (16, 4)]
            return 0, (77, len(layout)), pack_params(layout)
        return 0, (), b""  # everything else succeeds and returns nothing

    def _find(self, ptr):
        for base, mem in self.memory.items():
            if base <= ptr < base + len(mem):
                return base, mem
        raise KeyError(hex(ptr))
