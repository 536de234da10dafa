"""One channel's host side, with no I/O in it: bytes from the guest in, bytes to send out.

A channel carries any number of sessions (guest processes). The server feeds it what it reads
(`receive`) and what a session posted to its mailbox (`take_post`); tests feed it directly. A
malformed frame raises `RemoteProtocolError`: the caller closes this channel (and only this one),
and `close` ends its sessions.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from kvmgpu_wire.cudefs import CUresult
from kvmgpu_wire.protocol import (
    DEFAULT_MAX_FRAME,
    LAUNCH_BODY,
    NEED_DATA,
    Call,
    Connection,
    Doorbell,
    Goodbye,
    Hello,
    LaunchRun,
    LaunchWaitShape,
    Op,
    RemoteProtocolError,
    Role,
    Wait,
    Welcome,
    negotiate,
)
from kvmgpu_wire.trace import ON as _TRACE, mark_at as _mark_at, perf_counter_ns as _ns

from ..backend.base import CudaError
from ..backend.launcher import LAUNCH_FAILED, RING, SYNC_FAILED
from .dispatch import dispatch, launch_again, launch_failed, launch_run, wait, wait_failed
from .session import Function, Session
from .vgpu import VGpu

log = logging.getLogger("kvmgpu.worker")
_LAUNCH = Op.LAUNCH  # (an enum member looked up once, not per message)
_RUN = 256  # the most launches take_launches hands over at once (the gate's check comes between)
_STREAM_SYNCHRONIZE = Op.STREAM_SYNCHRONIZE
_FOREVER = float("inf")
# The C turn (serve_repeats): it gives the worker's loop back after this long with nothing posted,
# and after this long in all (the loop then looks at the channels and the other mailboxes)
REPEAT_IDLE_S = 50e-6
REPEAT_TURN_S = 1e-3


class _LaunchWait(NamedTuple):
    """A launch + synchronise message that went fine, and what its launch was checked against."""

    conn: Connection  # where it came: the channel or the session's mailbox
    shape: LaunchWaitShape
    session: Session
    function: Function
    fh: int
    st: object  # the backend stream, None for the null stream
    stream: int
    grid_block_shared: tuple
    nbytes: int
    wait_op: Op
    wait_stream: int
    info: object  # the device info the launch limits were read from
    template: bytes  # the message less its seqs and parameter bytes (zeros there), for the C turn
    reply: bytes  # the synchronise's reply, less its seq


class Channel:
    def __init__(self, vgpu: VGpu, cid: int, max_frame: int = DEFAULT_MAX_FRAME):
        self.vgpu = vgpu
        self.cid = cid
        self.max_frame = max_frame
        self.conn = Connection(Role.HOST, max_frame)  # each session's own limit: its WELCOME's
        self.sessions: set[int] = set()
        self.closed = False
        # The last message, where it was one launch and one synchronise that both went fine: a
        # loop's next one is taken by comparing its bytes (`_launch_wait_again`).
        self._again: _LaunchWait | None = None

    def receive(self, data: bytes | memoryview, conn: Connection | None = None) -> bytes:
        """Bytes to send back for `data`, read from the channel (or, with `conn`, a session's
        `posted` Connection: `take_post`). Raises RemoteProtocolError on a protocol violation."""
        out: list[bytes] = []
        if conn is None:
            conn = self.conn
        vg = self.vgpu
        try:
            conn.receive_data(data)
            again, self._again = self._again, None  # whatever comes now, it is used up
            if again is not None and again.conn is conn:
                reply = self._launch_wait_again(again)
                if reply is not None:
                    return reply
            one = None  # the message's first and only launch, while it may be a launch + wait
            next_event = conn.next_event
            # the hot paths come as events: a run of QUEUED LAUNCH frames (LaunchRun, with a
            # launch's repeats where the backend has the C loop that launches them from its
            # record) and a stream or context synchronise (Wait), decoded in place and dispatched
            # with no objects per frame; everything else as the message it is
            records = vg.capabilities.launch_records
            repeats = None if records is None else records.count_repeats
            while True:
                if _TRACE:
                    t1 = _ns()
                event = next_event(_RUN, repeats)
                kind = type(event)
                if kind is LaunchRun:
                    launches = event.launches
                    n = launch_run(vg, self.cid, launches, conn.buffer)
                    vg.calls[_LAUNCH] += n
                    one = launches[0] if (n < _RUN and not out and len(launches) == 1
                                          and not launches[0][2]) else None
                    continue
                if event is NEED_DATA:
                    break
                if _TRACE:
                    _mark_at("w1", t1)
                    _mark_at("w2", _ns())
                if kind is Wait:
                    reply, ok = self._wait(conn, *event)
                    if ok and one is not None and not out and conn.drained():
                        self._again = self._launch_wait(conn, one, tuple(event))
                else:
                    reply = self._handle(event, conn)
                one = None
                if _TRACE:
                    _mark_at("w4", _ns())
                if reply:
                    out.append(reply)
                if conn.drained():
                    break
            if conn is not self.conn and not conn.drained():
                raise RemoteProtocolError("a mailbox request ends inside a frame")
        except RemoteProtocolError as e:
            self._violation(e)
            raise
        return b"".join(out)

    def take_post(self, session: Session) -> bytes | None:
        """The reply to what `session` posted to its mailbox, or None where nothing new is there.
        A post is whole CALL frames of that session only, as they would come on the channel, and
        is taken the same way. Raises RemoteProtocolError on a protocol violation."""
        try:
            data = session.mailbox.take()  # type: ignore[union-attr]  # a session that posts has one
        except ValueError as e:
            err = RemoteProtocolError(str(e))
            self._violation(err)
            raise err from None
        if data is None:
            return None
        return self.receive(data, session.posted)

    def _violation(self, e: RemoteProtocolError) -> None:
        self.vgpu.protocol_violations += 1
        log.warning("channel %s: protocol violation, closing it: %s", self.cid, e)
        self.close("protocol violation")

    def _wait(self, conn: Connection, sid: int, seq: int, op: Op, stream: int) -> tuple[bytes, bool]:
        """The reply to a synchronise `Connection.take_wait` decoded (as `_handle` gives it), and
        whether it said success."""
        session = self.vgpu.sessions.get((self.cid, sid))
        if session is None:
            return conn.send_reply(sid, seq, CUresult.CUDA_ERROR_INVALID_CONTEXT, (),
                                   b"no such session"), False
        status, values, blob = wait(self.vgpu, session, op, stream)
        return conn.send_reply(sid, seq, status, values, blob, op), status == 0

    def _launch_wait(self, conn: Connection, launch: tuple, waited: tuple) -> _LaunchWait | None:
        """What a message of `launch` (as `take_launches` gave it) and the synchronise `waited` (as
        `take_wait` gave it), both done without an error, must be taken again by: None where the
        backend has no `launch_in`, the two are on different sessions, or it went another way."""
        t, start, _ = launch
        sid, fh, stream = t[3], t[8], t[16]
        vg = self.vgpu
        s = vg.sessions.get((self.cid, sid))
        if s is None or waited[0] != sid or vg.capabilities.launch_in is None:
            return None
        f = s.functions.get(fh)
        st = s.streams.get(stream) if stream else None
        if f is None or (stream and st is None) or t[5] - LAUNCH_BODY != f.arg_bytes:
            return None
        shape = conn.launch_wait_shape(start)
        template = b"".join((shape.launch_head, bytes(4), shape.launch_tail, bytes(f.arg_bytes),
                             shape.wait_head, bytes(4), shape.wait_tail))
        return _LaunchWait(conn, shape, s, f, fh, st, stream, t[9:16], f.arg_bytes, waited[2], waited[3],
                           vg.info, template, conn.send_reply(sid, 0, 0, (), b"", waited[2]))

    def _launch_wait_again(self, a: _LaunchWait) -> bytes | None:
        """The reply to a message that repeats the last one (`a`), a launch + synchronise, or None
        (nothing consumed) where it does not: its bytes differ in more than the two sequence
        numbers and the launch's parameter bytes (`Connection.take_launch_wait`), or the session,
        its function or stream are no longer those the launch was checked against, or the
        context broke. Such a message passes every check the last one passed; the launch goes
        through `launch_again` (the gate, then the backend; an error is kept for the wait, as
        for any queued launch) and the synchronise through `wait`, as `receive` would."""
        vg = self.vgpu
        if not self._holds(a):
            return None
        conn, shape, s, f, _, st, _, grid_block_shared, nbytes, wait_op, wait_stream = a[:11]
        taken = conn.take_launch_wait(shape)
        if taken is None:
            return None
        start, seq, wait_seq = taken
        launch_again(vg, s, seq, f, st, grid_block_shared, conn.buffer, start, nbytes)
        vg.calls[_LAUNCH] += 1
        if _TRACE:
            t = _ns()
            _mark_at("w1", t)
            _mark_at("w2", t)
        status, values, blob = wait(vg, s, wait_op, wait_stream)
        if _TRACE:
            _mark_at("w4", _ns())
        if status == 0:
            self._again = a
        return conn.send_reply(s.key[1], wait_seq, status, values, blob, wait_op)

    def _holds(self, a: _LaunchWait) -> bool:
        """Whether what the launch + synchronise `a` was checked against still holds: its session,
        function and stream are those of the tables, the context is not broken, the device's
        limits are the same."""
        vg, s = self.vgpu, a.session
        return (vg.sessions.get(s.key) is s and s.functions.get(a.fh) is a.function
                and (not a.stream or s.streams.get(a.stream) is a.st) and vg.broken is None
                and vg.info is a.info)

    def serve_repeats(self, session: Session) -> tuple[int, bool, bytes | None]:
        """Serve in C (the backend's `repeats`, launcher.RepeatTurn) the posts to `session`'s
        mailbox that repeat the last message, a launch + synchronise from that mailbox that went
        fine (`_launch_wait`), while they come: (posts served, whether the guest said it sleeps
        and must be rung, the reply to a post taken but not answered: its launch or synchronise
        failed). Entered only while everything the last one was checked against still holds (as
        `_launch_wait_again` checks), nothing of the session's is pending, and the compute gate
        lets this VM launch and wait without it until its slice ends (`clocked_until`); a post
        that is no repeat, or comes after the slice, is left in the mailbox for `take_post`. The
        turn changes no table: nothing else runs on the worker's thread meanwhile."""
        a, vg = self._again, self.vgpu
        turn = vg.capabilities.repeats
        if a is None or turn is None or a.conn is not session.posted or _TRACE:
            return 0, False, None
        s, f, st, wait_op, wait_stream = a.session, a.function, a.st, a.wait_op, a.wait_stream
        on_stream = wait_op is _STREAM_SYNCHRONIZE
        if (s is not session or not self._holds(a) or s.pending_error is not None
                or (on_stream and wait_stream and wait_stream not in s.streams)):
            return 0, False, None
        gate, deadline = vg.gate, _FOREVER
        if gate is not None:
            deadline = gate.clocked_until()
            if not deadline:
                return 0, False, None
        box = session.mailbox
        assert box is not None  # (session.posted: it has one)
        shape = a.shape
        why, served, number, seq, wait_seq, err, clocked = turn.serve(
            box.view, box.number, a.template, shape.launch_size - a.nbytes, shape.launch_size,
            f.backend.address, a.grid_block_shared, st, on_stream, s.stream(wait_stream) if on_stream else None,
            a.reply, deadline, REPEAT_IDLE_S, REPEAT_TURN_S)
        box.number = number
        vg.calls[_LAUNCH] += served
        vg.calls[wait_op] += served
        if gate is not None and clocked:
            gate.charge_clocked(clocked)
        if why != LAUNCH_FAILED and why != SYNC_FAILED:
            return served, why == RING, None
        self._again = None
        vg.calls[_LAUNCH] += 1
        if why == LAUNCH_FAILED:
            launch_failed(vg, s, seq, CudaError(err, "cuLaunchKernel"))
            status, values, blob = wait(vg, s, wait_op, wait_stream)
        else:
            vg.calls[wait_op] += 1
            status, values, blob = wait_failed(vg, s, wait_op, CudaError(
                err, "cuStreamSynchronize" if on_stream else "cuCtxSynchronize"))
        return served, False, a.conn.send_reply(s.key[1], wait_seq, status, values, blob, wait_op)

    def _handle(self, event, conn: Connection) -> bytes | None:
        if type(event) is Call:
            session = self.vgpu.sessions.get((self.cid, event.session))
            if session is None:
                if event.queued:
                    return None
                return conn.send_reply(event.session, event.seq,
                                       CUresult.CUDA_ERROR_INVALID_CONTEXT, (), b"no such session")
            result = dispatch(self.vgpu, session, event)
            if result is None:
                return None
            status, values, blob = result
            return conn.send_reply(event.session, event.seq, status, values, blob, event.op)
        if conn is not self.conn:
            raise RemoteProtocolError(f"{type(event).__name__} posted to a mailbox (only calls go there)")
        if type(event) is Doorbell:  # the guest posted while this side slept: the loop looks now
            return None
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
        session = self.vgpu.open_session(key, hello.window, hello.client, pid=hello.pid, role=hello.role)
        if isinstance(session, str):
            log.warning("channel %s: session %s refused: %s", self.cid, hello.session, session)
            self.sessions.discard(hello.session)
            return self.conn.send(Goodbye(hello.session, session))
        self.sessions.add(hello.session)
        if session.mailbox is not None:
            session.posted = Connection(Role.HOST, max_frame, (hello.session,))
            session.doorbell = self.conn.send(Doorbell(hello.session))
        w = session.window
        return self.conn.send(Welcome(hello.session, version, max_frame, w.offset, w.size,
                                      self.vgpu.device(), self.vgpu.describe(), hello.session))

    def close(self, reason: str = "channel closed") -> None:
        if self.closed:
            return
        self.closed = True
        for sid in sorted(self.sessions):
            self.vgpu.end_session((self.cid, sid), reason)
        self.sessions.clear()
