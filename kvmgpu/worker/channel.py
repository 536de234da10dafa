"""One channel's host side, with no I/O in it: bytes from the guest in, bytes to send out.

A channel carries any number of sessions (guest processes). The server feeds it what it reads;
tests feed it directly. A malformed frame raises `RemoteProtocolError`: the caller closes this
channel (and only this one), and `close` ends its sessions.
"""

from __future__ import annotations

import logging

from kvmgpu_guest.cudefs import CUresult
from kvmgpu_guest.protocol import (DEFAULT_MAX_FRAME, NEED_DATA, Call, Connection, Goodbye, Hello, Op,
                                   RemoteProtocolError, Role, Welcome, negotiate)

from kvmgpu_guest.trace import ON as _TRACE, mark_at as _mark_at, perf_counter_ns as _ns

from .dispatch import dispatch, launch_run, wait
from .vgpu import VGpu

log = logging.getLogger("kvmgpu.worker")
_LAUNCH = Op.LAUNCH  # (an enum member looked up once, not per message)
_RUN = 256  # the most launches take_launches hands over at once (the gate's check comes between)


class Channel:
    def __init__(self, vgpu: VGpu, cid: int, max_frame: int = DEFAULT_MAX_FRAME):
        self.vgpu = vgpu
        self.cid = cid
        self.max_frame = max_frame
        self.conn = Connection(Role.HOST)
        self.sessions: set[int] = set()
        self.closed = False

    def receive(self, data: bytes) -> bytes:
        """Bytes to send back for `data`. Raises RemoteProtocolError on a protocol violation."""
        out = []
        conn = self.conn
        vg = self.vgpu
        try:
            conn.receive_data(data)
            take_launches, take_wait, next_event = conn.take_launches, conn.take_wait, conn.next_event
            # take_launches hands over a launch's repeats with it (checked once, launched from
            # its record by the C loop); only where the backend has that loop
            records = vg.backend.launch_records
            repeats = None if records is None else records.count_repeats
            while True:
                # The hot path: runs of QUEUED LAUNCH frames, decoded in place (take_launches
                # checks what next_event checks) and dispatched with no objects per frame. A run
                # ends at a frame that is not one, or at the end of the bytes: next_event goes on.
                launches = take_launches(_RUN, repeats)
                if launches:
                    n = launch_run(vg, self.cid, launches, conn.buffer)
                    vg.calls[_LAUNCH] += n
                    if n == _RUN:  # take_launches' limit: there may be more
                        continue
                if _TRACE:
                    t1 = _ns()
                # Its other half: a stream or context synchronise, likewise decoded in place.
                waited = take_wait()
                if waited is None:
                    event = next_event()
                    if event is NEED_DATA:
                        break
                if _TRACE:
                    _mark_at("w1", t1)
                    _mark_at("w2", _ns())
                reply = self._handle(event) if waited is None else self._wait(*waited)
                if _TRACE:
                    _mark_at("w4", _ns())
                if reply:
                    out.append(reply)
                if conn.drained():
                    break
        except RemoteProtocolError as e:
            self.vgpu.protocol_violations += 1
            log.warning("channel %s: protocol violation, closing it: %s", self.cid, e)
            self.close("protocol violation")
            raise
        return b"".join(out)

    def _wait(self, sid: int, seq: int, op: Op, stream: int) -> bytes:
        """The reply to a synchronise `Connection.take_wait` decoded (as `_handle` gives it)."""
        session = self.vgpu.sessions.get((self.cid, sid))
        if session is None:
            return self.conn.send_reply(sid, seq, CUresult.CUDA_ERROR_INVALID_CONTEXT, (), b"no such session")
        return self.conn.send_reply(sid, seq, *wait(self.vgpu, session, op, stream), op)

    def _handle(self, event) -> bytes | None:
        if type(event) is Call:
            session = self.vgpu.sessions.get((self.cid, event.session))
            if session is None:
                if event.queued:
                    return None
                return self.conn.send_reply(event.session, event.seq,
                                            CUresult.CUDA_ERROR_INVALID_CONTEXT, (), b"no such session")
            result = dispatch(self.vgpu, session, event)
            if result is None:
                return None
            status, values, blob = result
            return self.conn.send_reply(event.session, event.seq, status, values, blob, event.op)
        if isinstance(event, Hello):
            return self._hello(event)
        if isinstance(event, Goodbye):
            self.sessions.discard(event.session)
            self.vgpu.end_session((self.cid, event.session), "goodbye")
            return None
        raise RemoteProtocolError(f"unexpected {type(event).__name__}")

    def _hello(self, hello: Hello) -> bytes:
        key = (self.cid, hello.session)
        try:
            version, max_frame = negotiate(hello, self.max_frame)
        except RemoteProtocolError as e:
            log.warning("channel %s: session %s refused: %s", self.cid, hello.session, e)
            self.vgpu.end_session(key, "refused HELLO")
            self.sessions.discard(hello.session)
            return self.conn.send(Goodbye(hello.session, str(e)))
        session = self.vgpu.open_session(key, hello.window, hello.client)
        if isinstance(session, str):
            log.warning("channel %s: session %s refused: %s", self.cid, hello.session, session)
            self.sessions.discard(hello.session)
            return self.conn.send(Goodbye(hello.session, session))
        self.sessions.add(hello.session)
        w = session.window
        return self.conn.send(Welcome(hello.session, version, max_frame, w.offset, w.size,
                                      self.vgpu.device(), self.vgpu.describe()))

    def close(self, reason: str = "channel closed") -> None:
        if self.closed:
            return
        self.closed = True
        for sid in sorted(self.sessions):
            self.vgpu.end_session((self.cid, sid), reason)
        self.sessions.clear()
